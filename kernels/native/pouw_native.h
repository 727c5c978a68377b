/*
 * What every file of the native library shares (one .so; see kernels/native_loader.py's SOURCES): the error
 * codes, the transcript constants, the flags of pouw_noisy_gemm_ex, and each GEMM kernel's three entry points
 * (supported on this CPU / takes these parameters / run). A new instruction set is one new file defining its
 * three functions, plus one row in fused_gemm.c's kernel table.
 */
#ifndef POUW_NATIVE_H
#define POUW_NATIVE_H

#include <stdint.h>

#define POUW_INTERNAL __attribute__((visibility("hidden")))

#define POUW_OK 0
#define POUW_EINVAL (-1)
#define POUW_ENOMEM (-2)

#define MSG_WORDS 16
#define ROT 13

#define FLAG_FORCE_PORTABLE 1
#define FLAG_NO_TRANSCRIPT 2 /* VNNI / AVX2 paths: skip the messages (left unwritten): the engine's plain GEMM */
#define FLAG_KERNEL_AVX2 4   /* only the AVX2 kernel (or the portable path where it does not fit) */
#define FLAG_KERNEL_VNNI 8   /* only the AVX512-VNNI kernel (or the portable path) */
/* 16, 32: avx2_gemm.c's choice of inner loop (fp32 / int) */

static inline uint32_t rotl32(uint32_t x) { return (x << ROT) | (x >> (32 - ROT)); }

static inline int is_pow2(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

/* portable_gemm.c: any CPU, any parameters check_args accepts */
POUW_INTERNAL int pouw_portable_gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r,
                                     int th, int tw, int32_t* c, uint32_t* msgs, int threads);

/* vnni_gemm.c: AVX512-VNNI (stubs returning 0 / POUW_EINVAL off x86-64) */
POUW_INTERNAL int pouw_vnni_supported(void);
POUW_INTERNAL int pouw_vnni_params_ok(int64_t m, int64_t k, int64_t n, int r, int th, int tw);
POUW_INTERNAL int pouw_vnni_gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th,
                                 int tw, int32_t* c, uint32_t* msgs, int threads, int flags);

/* avx2_gemm.c: AVX2 + FMA */
int pouw_avx2_supported(void);
int pouw_avx2_params_ok(int64_t m, int64_t k, int64_t n, int r, int th, int tw);
int pouw_avx2_gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw,
                   int32_t* c, uint32_t* msgs, int threads, int flags);

#endif /* POUW_NATIVE_H */
