/*
 * pouw_sub_correction(): the optional Backend.sub_correction of kernels/base.py, in one pass over C:
 *
 *     c -= sum_i 128^i * U_i @ V_i        (int32, wrapping mod 2^32; U_i m x w_i, V_i w_i x n int8)
 *
 * Per block of 8 rows x 48 columns of C the products are accumulated in 24 zmm registers with vpdpbusd, pair
 * after pair from the last one down (Horner: acc = (acc << 7) + U_i V_i, exact mod 2^32), then the C block is
 * loaded, corrected and stored once.
 *
 * Signedness: vpdpbusd multiplies u8 x s8. V is packed (once per call, in parallel) as v ^ 0x80 = v + 128 (u8),
 * U is broadcast straight from its rows (s8), so each dot product picks up 128 * sum_l U[u][l]. Those row sums,
 * Horner-combined over the pairs the same way, R[u] = sum_i 128^i * 128 * rowsum(U_i[u]), are subtracted per row:
 * c = c - (acc - R[u]). Exact for any int8 input (everything wraps mod 2^32).
 *
 * Packed V of pair i: panels of 48 columns (3 zmm); per k step of 4, 3 x 64 bytes (16 columns x 4 k entries, the
 * vpdpbusd layout), i.e. panel p at vpack_i + p * (w_i / 4) * 192. Columns past n are packed as garbage-free
 * zeros and masked off on the store. w_i must be a multiple of 4 (kernels/native_loader.py pads).
 *
 * Threads: the pool of fused_gemm.c (pouw_internal_run_team): phase 1 packs V and computes R, phase 2 hands out
 * blocks of rows dynamically; within a block, 8-row strips sweep all panels (C is streamed row-wise, the packed
 * V of all pairs stays in L2).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#define SC_OK 0
#define SC_EINVAL (-1)
#define SC_ENOMEM (-2)
#define SC_ENOTSUP (-3)
#define SC_MAX_PAIRS 8

typedef void (*sc_worker_fn)(void* ctx, int tid, int nthreads);
int pouw_internal_run_team(sc_worker_fn fn, void* ctx, int n);

#if defined(__x86_64__) && defined(__GNUC__) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VNNI__)
#define SC_HAVE_VNNI 1
#include <immintrin.h>
#include "vnni_pack.h"

typedef int32_t sc_i32u __attribute__((aligned(1), may_alias));

#define SC_ROWS_PER_ITEM 32
#define SC_PACK_Q_PER_ITEM 8
#define SC_ROWSUM_ROWS_PER_ITEM 256

typedef struct {
    int npairs;
    int64_t m, n;
    int64_t w[SC_MAX_PAIRS];
    const int8_t* u[SC_MAX_PAIRS];
    const int8_t* v[SC_MAX_PAIRS];
    int8_t* vpack[SC_MAX_PAIRS];
    int64_t panel_stride[SC_MAX_PAIRS]; /* bytes per panel: (w / 4) * 192 */
    int32_t* c;
    uint32_t* rcorr;                    /* m words */
    int64_t nz, npanels;
    /* phase 1 items: pack items of every pair, then row-sum items */
    int64_t pack_items[SC_MAX_PAIRS];
    int64_t pack_total, rowsum_items;
    int64_t next1;
    /* phase 2 */
    int64_t items2;
    int64_t next2;
} sc_ctx;

/* pack k steps [q0, q1) of pair i (4 rows of V each) into the panel layout, as v ^ 0x80 */
static void sc_pack(const sc_ctx* X, int i, int64_t q0, int64_t q1) {
    const int64_t n = X->n, nz = X->nz;
    const int64_t nblk = (n + 63) / 64;
    const __mmask64 tailmask = (n & 63) ? (((__mmask64)1 << (n & 63)) - 1) : ~(__mmask64)0;
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    for (int64_t q = q0; q < q1; q++) {
        const int8_t* src = X->v[i] + 4 * q * n;
        for (int64_t blk = 0; blk < nblk; blk++) {
            const __mmask64 mk = blk == nblk - 1 ? tailmask : ~(__mmask64)0;
            const int8_t* s0 = src + 64 * blk;
            const __m512i r0 = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mk, s0), x80);
            const __m512i r1 = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mk, s0 + n), x80);
            const __m512i r2 = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mk, s0 + 2 * n), x80);
            const __m512i r3 = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mk, s0 + 3 * n), x80);
            __m512i o[4];
            pouw_vnni_quads(r0, r1, r2, r3, o);
            const int nl = (int)(nz - 4 * blk < 4 ? nz - 4 * blk : 4);
            for (int L = 0; L < nl; L++) {
                const int64_t z = 4 * blk + L;
                int8_t* dst = X->vpack[i] + (z / 3) * X->panel_stride[i] + q * 192 + (z % 3) * 64;
                _mm512_store_si512((void*)dst, o[L]);
            }
        }
    }
}

/* R[u] = sum_i 128^i * 128 * rowsum(U_i[u]) (mod 2^32) for rows [u0, u1) */
static void sc_rowsums(const sc_ctx* X, int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; u++) {
        uint32_t acc = 0;
        for (int i = X->npairs - 1; i >= 0; i--) {
            const int8_t* row = X->u[i] + u * X->w[i];
            int32_t s = 0;
            for (int64_t l = 0; l < X->w[i]; l++) s += row[l];
            acc = (acc << 7) + ((uint32_t)s << 7);
        }
        X->rcorr[u] = acc;
    }
}

static void sc_phase1(void* vctx, int tid, int nthreads) {
    (void)tid; (void)nthreads;
    sc_ctx* X = (sc_ctx*)vctx;
    for (;;) {
        int64_t it = __atomic_fetch_add(&X->next1, 1, __ATOMIC_RELAXED);
        if (it >= X->pack_total + X->rowsum_items) break;
        if (it < X->pack_total) {
            int i = 0;
            while (it >= X->pack_items[i]) it -= X->pack_items[i++];
            const int64_t q0 = it * SC_PACK_Q_PER_ITEM, qn = X->w[i] / 4;
            sc_pack(X, i, q0, q0 + SC_PACK_Q_PER_ITEM < qn ? q0 + SC_PACK_Q_PER_ITEM : qn);
        } else {
            const int64_t u0 = (it - X->pack_total) * SC_ROWSUM_ROWS_PER_ITEM;
            sc_rowsums(X, u0, u0 + SC_ROWSUM_ROWS_PER_ITEM < X->m ? u0 + SC_ROWSUM_ROWS_PER_ITEM : X->m);
        }
    }
}

/* MRK rows x NRK zmm columns of C at (row, panel p) */
static inline __attribute__((always_inline)) void sc_body(const int MRK, const int NRK, const sc_ctx* X,
                                                          int64_t row, int64_t p, __mmask16 lastmask) {
    __m512i acc[8][3];
#pragma GCC unroll 8
    for (int r = 0; r < MRK; r++)
#pragma GCC unroll 3
        for (int j = 0; j < NRK; j++) acc[r][j] = _mm512_setzero_si512();
    for (int i = X->npairs - 1; i >= 0; i--) {
        if (i != X->npairs - 1) {
#pragma GCC unroll 8
            for (int r = 0; r < MRK; r++)
#pragma GCC unroll 3
                for (int j = 0; j < NRK; j++) acc[r][j] = _mm512_slli_epi32(acc[r][j], 7);
        }
        const int64_t w = X->w[i];
        const int8_t* restrict a0 = X->u[i] + row * w;
        const int8_t* restrict bp = X->vpack[i] + p * X->panel_stride[i];
        const int64_t qn = w / 4;
        for (int64_t q = 0; q < qn; q++) {
            __m512i bv[3];
#pragma GCC unroll 3
            for (int j = 0; j < NRK; j++) bv[j] = _mm512_load_si512((const void*)(bp + 64 * j));
#pragma GCC unroll 8
            for (int r = 0; r < MRK; r++) {
                const __m512i av = _mm512_set1_epi32(*(const sc_i32u*)(a0 + r * w));
#pragma GCC unroll 3
                for (int j = 0; j < NRK; j++) acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], bv[j], av);
            }
            bp += 192;
            a0 += 4;
        }
    }
    int32_t* cp = X->c + row * X->n + p * 48;
    const int64_t ldc = X->n;
#pragma GCC unroll 8
    for (int r = 0; r < MRK; r++) {
        const __m512i rc = _mm512_set1_epi32((int)X->rcorr[row + r]);
#pragma GCC unroll 3
        for (int j = 0; j < NRK; j++) {
            int32_t* dst = cp + r * ldc + 16 * j;
            const __m512i t = _mm512_sub_epi32(acc[r][j], rc);
            if (j == NRK - 1) {
                const __m512i cv = _mm512_maskz_loadu_epi32(lastmask, dst);
                _mm512_mask_storeu_epi32((void*)dst, lastmask, _mm512_sub_epi32(cv, t));
            } else {
                _mm512_storeu_si512((void*)dst, _mm512_sub_epi32(_mm512_loadu_si512((const void*)dst), t));
            }
        }
    }
}

typedef void (*sc_kern)(const sc_ctx*, int64_t, int64_t, __mmask16);
#define SC_DEF(M_, N_) \
    static void sc_k_##M_##_##N_(const sc_ctx* X, int64_t row, int64_t p, __mmask16 lm) { sc_body(M_, N_, X, row, p, lm); }
SC_DEF(8, 1) SC_DEF(8, 2) SC_DEF(8, 3)
SC_DEF(4, 1) SC_DEF(4, 2) SC_DEF(4, 3)
SC_DEF(2, 1) SC_DEF(2, 2) SC_DEF(2, 3)
SC_DEF(1, 1) SC_DEF(1, 2) SC_DEF(1, 3)
static const sc_kern sc_kerns[4][3] = {
    {sc_k_8_1, sc_k_8_2, sc_k_8_3}, {sc_k_4_1, sc_k_4_2, sc_k_4_3},
    {sc_k_2_1, sc_k_2_2, sc_k_2_3}, {sc_k_1_1, sc_k_1_2, sc_k_1_3}};

static void sc_phase2(void* vctx, int tid, int nthreads) {
    (void)tid; (void)nthreads;
    sc_ctx* X = (sc_ctx*)vctx;
    for (;;) {
        const int64_t it = __atomic_fetch_add(&X->next2, 1, __ATOMIC_RELAXED);
        if (it >= X->items2) break;
        const int64_t r0 = it * SC_ROWS_PER_ITEM;
        const int64_t r1 = r0 + SC_ROWS_PER_ITEM < X->m ? r0 + SC_ROWS_PER_ITEM : X->m;
        for (int64_t row = r0; row < r1;) {
            const int64_t left = r1 - row;
            const int mi = left >= 8 ? 0 : left >= 4 ? 1 : left >= 2 ? 2 : 3;
            const int mrk = 8 >> mi;
            for (int64_t p = 0; p < X->npanels; p++) {
                const int64_t z0 = 3 * p;
                const int nrk = (int)(X->nz - z0 < 3 ? X->nz - z0 : 3);
                const int64_t lastvalid = X->n - (z0 + nrk - 1) * 16;
                const __mmask16 lm = lastvalid >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << lastvalid) - 1);
                sc_kerns[mi][nrk - 1](X, row, p, lm);
            }
            row += mrk;
        }
    }
}

/* a small cached workspace (one caller at a time; others allocate their own) */
static pthread_mutex_t g_sc_lock = PTHREAD_MUTEX_INITIALIZER;
static void* g_sc_ws = NULL;
static size_t g_sc_size = 0;
static int g_sc_busy = 0;

static void* sc_ws_acquire(size_t size, int* cached) {
    *cached = 0;
    pthread_mutex_lock(&g_sc_lock);
    if (!g_sc_busy) {
        if (g_sc_size < size) {
            free(g_sc_ws);
            g_sc_ws = aligned_alloc(64, (size + 63) / 64 * 64);
            g_sc_size = g_sc_ws ? size : 0;
        }
        if (g_sc_ws) {
            g_sc_busy = 1;
            *cached = 1;
            void* p = g_sc_ws;
            pthread_mutex_unlock(&g_sc_lock);
            return p;
        }
    }
    pthread_mutex_unlock(&g_sc_lock);
    return aligned_alloc(64, (size + 63) / 64 * 64);
}

static void sc_ws_release(void* p, int cached) {
    if (!cached) {
        free(p);
        return;
    }
    pthread_mutex_lock(&g_sc_lock);
    g_sc_busy = 0;
    pthread_mutex_unlock(&g_sc_lock);
}
#endif /* SC_HAVE_VNNI */

/* 1 when pouw_sub_correction can run on this CPU (AVX512-VNNI) */
int pouw_has_sub_correction(void) {
#ifdef SC_HAVE_VNNI
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

/*
 * c (m x n int32, row-major) -= sum_{i < npairs} 128^i * u[i] (m x w[i] int8) @ v[i] (w[i] x n int8), in place,
 * wrapping mod 2^32. Every w[i] must be a multiple of 4 (0 allowed). Returns 0, SC_EINVAL, SC_ENOMEM or SC_ENOTSUP.
 */
int pouw_sub_correction(int32_t* c, int64_t m, int64_t n, int npairs, const int8_t* const* u,
                        const int8_t* const* v, const int64_t* w, int threads) {
    if (m < 0 || n < 0 || npairs < 0 || npairs > SC_MAX_PAIRS) return SC_EINVAL;
    for (int i = 0; i < npairs; i++)
        if (w[i] < 0 || (w[i] & 3)) return SC_EINVAL;
    if (m == 0 || n == 0 || npairs == 0) return SC_OK;
    if (!c) return SC_EINVAL;
#ifdef SC_HAVE_VNNI
    if (!pouw_has_sub_correction()) return SC_ENOTSUP;
    sc_ctx X;
    memset(&X, 0, sizeof X);
    X.npairs = npairs;
    X.m = m;
    X.n = n;
    X.c = c;
    X.nz = (n + 15) / 16;
    X.npanels = (X.nz + 2) / 3;
    int64_t off = 0, offs[SC_MAX_PAIRS];
    for (int i = 0; i < npairs; i++) {
        if (w[i] > 0 && (!u[i] || !v[i])) return SC_EINVAL;
        X.w[i] = w[i];
        X.u[i] = u[i];
        X.v[i] = v[i];
        X.panel_stride[i] = (w[i] / 4) * 192;
        offs[i] = off;
        off += X.npanels * X.panel_stride[i];
        X.pack_items[i] = (w[i] / 4 + SC_PACK_Q_PER_ITEM - 1) / SC_PACK_Q_PER_ITEM;
        X.pack_total += X.pack_items[i];
    }
    const int64_t off_r = off;
    const size_t total = (size_t)(off_r + ((m * 4 + 63) & ~(int64_t)63));
    int cached = 0;
    char* ws = (char*)sc_ws_acquire(total, &cached);
    if (!ws) return SC_ENOMEM;
    for (int i = 0; i < npairs; i++) X.vpack[i] = (int8_t*)(ws + offs[i]);
    X.rcorr = (uint32_t*)(ws + off_r);
    X.rowsum_items = (m + SC_ROWSUM_ROWS_PER_ITEM - 1) / SC_ROWSUM_ROWS_PER_ITEM;
    if (threads < 1) threads = 1;
    int t1 = threads;
    if (t1 > X.pack_total + X.rowsum_items) t1 = (int)(X.pack_total + X.rowsum_items);
    pouw_internal_run_team(sc_phase1, &X, t1);
    X.items2 = (m + SC_ROWS_PER_ITEM - 1) / SC_ROWS_PER_ITEM;
    int t2 = threads;
    if (t2 > X.items2) t2 = (int)X.items2;
    pouw_internal_run_team(sc_phase2, &X, t2);
    sc_ws_release(ws, cached);
    return SC_OK;
#else
    (void)u; (void)v; (void)threads;
    return SC_ENOTSUP;
#endif
}
