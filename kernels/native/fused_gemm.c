/*
 * Native CPU kernel for the PoUW mining contract (see kernels/base.py):
 *
 *   S_c = sum_{c' <= c} A[:, c'r:(c'+1)r] @ B[c'r:(c'+1)r, :]        (exact int32)
 *   for every h x w tile and every chunk c:  x = XOR of the tile's entries of S_c (as uint32),
 *       msg[c % 16] = rotl32(msg[c % 16], 13) ^ x                    (msg starts as 16 zeros)
 *   outputs: C = S_{k/r-1} (int32, m x n) and msgs (uint32, (m/h) x (n/w) x 16).
 *
 * This file is the library's ABI and the dispatch; the kernels live one instruction set a file, best first in
 * g_kernels below, each taking the parameters it can and the CPU permitting:
 *
 *  - vnni_gemm.c: AVX512-VNNI (r % 4 == 0, w in {4, 8, 16}, h a power of two >= 4).
 *  - avx2_gemm.c: AVX2 + FMA (h % 4 == 0; stands in for CPUs without AVX-512).
 *  - neon_gemm.c: aarch64 NEON, SDOT where the CPU has dotprod (r % 4 == 0, h % 4 == 0).
 *  - portable_gemm.c: plain C, per tile row (any CPU, any valid parameters): the fallback.
 *
 * Shared: pool.c (the thread pool and barrier; no OpenMP runtime), workspace.c (cached workspaces, also used by
 * recover.c), pouw_native.h (error codes, flags, each kernel's entry points). kernels/native/aux.c and recover.c
 * (same library) add tile tickets, the fused noise and the recovery on the same pool.
 *
 * Entry points (plain C ABI): pouw_noisy_gemm() / pouw_noisy_gemm_ex(); 0 or a negative error code.
 * pouw_noisy_gemm_ex's FLAG_NO_TRANSCRIPT leaves the messages unwritten on the SIMD paths: with one wide chunk
 * (r a large divisor of k) it is the engine's plain GEMM, the baseline the mining benchmark compares against.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stddef.h>

#include "pouw_native.h"

/* A SIMD kernel: pouw_path()'s number for it, the FLAG_KERNEL_* bit that selects it alone, and its entry points. */
typedef struct {
    int path;
    int only_flag;
    int (*supported)(void);
    int (*params_ok)(int64_t m, int64_t k, int64_t n, int r, int th, int tw);
    int (*gemm)(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw, int32_t* c,
                uint32_t* msgs, int threads, int flags);
} pouw_kernel;

/* best first; path 0 is the portable fallback */
static const pouw_kernel g_kernels[] = {
    {1, FLAG_KERNEL_VNNI, pouw_vnni_supported, pouw_vnni_params_ok, pouw_vnni_gemm},
    {2, FLAG_KERNEL_AVX2, pouw_avx2_supported, pouw_avx2_params_ok, pouw_avx2_gemm},
    {3, FLAG_KERNEL_NEON, pouw_neon_supported, pouw_neon_params_ok, pouw_neon_gemm},
};
#define N_KERNELS ((int)(sizeof g_kernels / sizeof g_kernels[0]))
#define ALL_KERNEL_FLAGS (FLAG_KERNEL_VNNI | FLAG_KERNEL_AVX2 | FLAG_KERNEL_NEON)

/* 1 when the AVX512-VNNI path can run on this CPU. */
int pouw_has_vnni(void) { return pouw_vnni_supported(); }

/* 1 when the AVX2 path can run on this CPU. */
int pouw_has_avx2(void) { return pouw_avx2_supported(); }

/* 1 when the NEON path can run on this CPU (any aarch64). */
int pouw_has_neon(void) { return pouw_neon_supported(); }

static int check_args(int64_t m, int64_t k, int64_t n, int r, int th, int tw) {
    if (m <= 0 || k <= 0 || n <= 0 || r <= 0 || th <= 0 || tw <= 0) return POUW_EINVAL;
    if (k % r || m % th || n % tw) return POUW_EINVAL;
    return POUW_OK;
}

/* The kernel pouw_noisy_gemm_ex runs, or NULL for the portable path. A FLAG_KERNEL_* bit rules out every other
 * kernel (none set: any). */
static const pouw_kernel* pick_kernel(int64_t m, int64_t k, int64_t n, int r, int th, int tw, int flags) {
    if (flags & FLAG_FORCE_PORTABLE) return NULL;
    const int only = flags & ALL_KERNEL_FLAGS;
    for (int i = 0; i < N_KERNELS; i++) {
        const pouw_kernel* K = &g_kernels[i];
        if (only & ~K->only_flag) continue; /* another kernel's flag: not this one */
        if (K->supported() && K->params_ok(m, k, n, r, th, tw)) return K;
    }
    return NULL;
}

/* Which path pouw_noisy_gemm_ex would take: 1 = VNNI, 2 = AVX2, 3 = NEON, 0 = portable, negative = invalid arguments. */
int pouw_path(int64_t m, int64_t k, int64_t n, int r, int th, int tw, int flags) {
    const int rc = check_args(m, k, n, r, th, tw);
    if (rc) return rc;
    const pouw_kernel* K = pick_kernel(m, k, n, r, th, tw, flags);
    return K ? K->path : 0;
}

int pouw_noisy_gemm_ex(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw,
                       int32_t* c_out, uint32_t* msgs_out, int threads, int flags) {
    if (!a || !b || !c_out || !msgs_out) return POUW_EINVAL;
    const int rc = check_args(m, k, n, r, th, tw);
    if (rc) return rc;
    if (threads < 1) threads = 1;
    const pouw_kernel* K = pick_kernel(m, k, n, r, th, tw, flags);
    if (K) {
        const int krc = K->gemm(a, b, m, k, n, r, th, tw, c_out, msgs_out, threads, flags);
        /* EINVAL: operands the kernel turns down after looking at them (AVX2: -128 with r > 1024), which the
         * portable path takes; NEON: the SDOT loop forced onto a CPU without dotprod) */
        if (krc != POUW_EINVAL) return krc;
    }
    return pouw_portable_gemm(a, b, m, k, n, r, th, tw, c_out, msgs_out, threads);
}

int pouw_noisy_gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw,
                    int32_t* c_out, uint32_t* msgs_out, int threads) {
    return pouw_noisy_gemm_ex(a, b, m, k, n, r, th, tw, c_out, msgs_out, threads, 0);
}

/* ABI version, bumped whenever a signature changes (2: aux.c's tile tickets and add_noise; 3: one noise map per
 * operand in add_noise and correction_operands; 4: the AVX2 kernel, pouw_path() == 2, FLAG_KERNEL_*; 5: the NEON kernel, pouw_path() == 3). */
int pouw_abi_version(void) { return 5; }
