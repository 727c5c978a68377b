/* The portable path of the fused GEMM (pouw_noisy_gemm_ex on any CPU, or parameters no SIMD kernel takes): plain
 * C, per tile row. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "pouw_native.h"

/* ------------------------------------------------------------------------------------------ */
/* Portable path                                                                              */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const int8_t* a;
    const int8_t* b;
    int64_t m, k, n;
    int r, th, tw;
    int32_t* c;
    uint32_t* msgs;
    int64_t next_tile_row; /* atomic work counter */
    int failed;            /* a worker could not allocate its scratch */
    int has_m128;          /* an operand holds -128 (outside the contract): use the plain int32 loop */
} portable_ctx;

/* One tile row (th rows), column block by column block so the partial sums and the B chunk stay in L1/L2. */
#define PORTABLE_NB 256
static void portable_tile_row(const portable_ctx* P, int64_t ti, int32_t* acc /* th * PORTABLE_NB */) {
    const int64_t k = P->k, n = P->n, th = P->th, tw = P->tw, r = P->r;
    const int64_t ntj = n / tw;
    const int64_t nchunks = k / r;
    int64_t nb = (PORTABLE_NB / tw) * tw;
    if (nb < tw) nb = tw;
    uint32_t* msg = P->msgs + ti * ntj * MSG_WORDS;
    memset(msg, 0, sizeof(uint32_t) * (size_t)(ntj * MSG_WORDS));
    for (int64_t v0 = 0; v0 < n; v0 += nb) {
        const int64_t cols = n - v0 < nb ? n - v0 : nb;
        memset(acc, 0, sizeof(int32_t) * (size_t)(th * cols));
        for (int64_t c = 0; c < nchunks; c++) {
            for (int64_t u = 0; u < th; u++) {
                uint32_t* restrict arow_acc = (uint32_t*)acc + u * cols;
                const int8_t* arow = P->a + (ti * th + u) * k;
                int64_t l = c * r;
                const int64_t lend = (c + 1) * r;
                if (!P->has_m128) {
                    /* 4 k entries at a time, pairs of products summed in int16 (|a b| <= 127^2, so a pair fits):
                     * about twice the speed of widening every product to int32 */
                    for (; l + 4 <= lend; l += 4) {
                        const int16_t a0 = arow[l], a1 = arow[l + 1], a2 = arow[l + 2], a3 = arow[l + 3];
                        const int8_t* restrict b0 = P->b + l * n + v0;
                        const int8_t* restrict b1 = b0 + n;
                        const int8_t* restrict b2 = b1 + n;
                        const int8_t* restrict b3 = b2 + n;
                        for (int64_t v = 0; v < cols; v++)
                            arow_acc[v] += (uint32_t)(int32_t)(int16_t)((int16_t)(a0 * b0[v]) + (int16_t)(a1 * b1[v])) +
                                           (uint32_t)(int32_t)(int16_t)((int16_t)(a2 * b2[v]) + (int16_t)(a3 * b3[v]));
                    }
                }
                for (; l < lend; l++) {
                    const int32_t av = arow[l];
                    const int8_t* restrict brow = P->b + l * n + v0;
                    /* uint32 arithmetic: wraps (defined) instead of overflowing; exact while |S| < 2^31 */
                    for (int64_t v = 0; v < cols; v++) arow_acc[v] += (uint32_t)(av * (int32_t)brow[v]);
                }
            }
            const int slot = (int)(c % MSG_WORDS);
            for (int64_t t = 0; t < cols / tw; t++) {
                uint32_t x = 0;
                for (int64_t u = 0; u < th; u++) {
                    const uint32_t* cr = (const uint32_t*)acc + u * cols + t * tw;
                    for (int64_t v = 0; v < tw; v++) x ^= cr[v];
                }
                uint32_t* w = msg + (v0 / tw + t) * MSG_WORDS + slot;
                *w = rotl32(*w) ^ x;
            }
        }
        for (int64_t u = 0; u < th; u++)
            memcpy(P->c + (ti * th + u) * n + v0, acc + u * cols, sizeof(int32_t) * (size_t)cols);
    }
}

static void portable_worker(void* vctx, int tid, int nthreads) {
    portable_ctx* P = (portable_ctx*)vctx;
    (void)tid;
    (void)nthreads;
    const int64_t nti = P->m / P->th;
    int64_t nb = (PORTABLE_NB / P->tw) * P->tw;
    if (nb < P->tw) nb = P->tw;
    int32_t* acc = (int32_t*)malloc(sizeof(int32_t) * (size_t)(P->th * nb));
    if (!acc) {
        __atomic_store_n(&P->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    for (;;) {
        const int64_t ti = __atomic_fetch_add(&P->next_tile_row, 1, __ATOMIC_RELAXED);
        if (ti >= nti) break;
        portable_tile_row(P, ti, acc);
    }
    free(acc);
}

int pouw_portable_gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw,
                       int32_t* c, uint32_t* msgs, int threads) {
    portable_ctx P = {a, b, m, k, n, r, th, tw, c, msgs, 0, 0, 0};
    for (int64_t i = 0; i < m * k && !P.has_m128; i++) P.has_m128 = a[i] == -128;
    for (int64_t i = 0; i < k * n && !P.has_m128; i++) P.has_m128 = b[i] == -128;
    const int64_t nti = m / th;
    if (threads > nti) threads = (int)(nti > 0 ? nti : 1);
    pouw_run_team(portable_worker, &P, threads, NULL);
    if (P.failed) { /* some rows may be missing: redo on this thread if it can allocate */
        P.next_tile_row = 0;
        P.failed = 0;
        portable_worker(&P, 0, 1);
        if (P.failed) return POUW_ENOMEM;
    }
    return POUW_OK;
}
