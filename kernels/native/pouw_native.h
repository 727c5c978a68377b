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
/* 16, 32: avx2_gemm.c's choice of inner loop (fp32 / int); 64: its recovery mode (internal) */
#define FLAG_KERNEL_NEON 128     /* only the NEON kernel (or the portable path) */
#define FLAG_NEON_DOT 256        /* neon_gemm.c's SDOT loop (the portable path on a CPU without dotprod) */
#define FLAG_NEON_MULL 512       /* neon_gemm.c's vmull_s8 loop (any aarch64 CPU) */
#define FLAG_NEON_HORNER_SUB 1024 /* internal: pouw_neon_sub_correction's mode */

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

/* neon_gemm.c: aarch64 Advanced SIMD (SDOT where the CPU has dotprod; stubs returning 0 / POUW_EINVAL elsewhere) */
int pouw_neon_supported(void);
int pouw_neon_params_ok(int64_t m, int64_t k, int64_t n, int r, int th, int tw);
int pouw_neon_gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw,
                   int32_t* c, uint32_t* msgs, int threads, int flags);
/* 1 when the SDOT loop runs by default (the CPU has dotprod), 0 for the vmull_s8 loop */
int pouw_neon_default_variant(void);
/* c -= sum_i 128^i U_i V_i: see neon_gemm.c */
int pouw_neon_sub_correction(int32_t* c, const int8_t* u, const int8_t* v, int64_t m, int64_t n, int64_t d,
                             int64_t w, int threads);

#endif /* POUW_NATIVE_H */
