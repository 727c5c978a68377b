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
 * Threads: the pool of pool.c (pouw_internal_run_team): phase 1 packs V and computes R, phase 2 hands out
 * blocks of rows dynamically; within a block, 8-row strips sweep all panels (C is streamed row-wise, the packed
 * V of all pairs stays in L2).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "workspace.h"

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
    char* ws = (char*)ws_acquire(WS_RECOVER, total, &cached);
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
    ws_release(WS_RECOVER, ws, cached);
    return SC_OK;
#else
    (void)u; (void)v; (void)threads;
    return SC_ENOTSUP;
#endif
}

/* ------------------------------------------------------------------------------------------ */
/* pouw_correction_operands(): the optional Backend.correction_operands                        */
/* ------------------------------------------------------------------------------------------ */
/*
 * For A (m x k) and B' (k x n) int8, the noise maps (k indices each, in [0, r)) and the factors E_L (m x r),
 * F_R (r x n):
 *     AQ = A·Q  (m x r),   Q[l][j] = [p_b(l) == j]
 *     PB = P·B' (r x n),   P[j][l] = [p_a(l) == j]
 * are split into D signed base-128 digits (each in [-64, 63]; D >= 1, the fewest that hold every entry of both)
 * and written as  U_i = [AQ_i | E_L]  (m x 2r)  and  V_i = [F_R ; PB_i]  (2r x n)  for i < D: bit for bit the
 * operands of pouw.recover.correction_operands, without a torch GEMM (whose OpenMP workers, spinning after every
 * parallel region, slow down the native kernels that run next).
 *
 * AQ: vpdpbusd with Q (in {0, 1}) as the u8 operand, packed once (k/4 steps of ceil(r/16) vectors), and 4-byte
 * pieces of A's rows broadcast as the s8 operand. The k loop runs in blocks of CO_KB columns (that block of packed
 * Q stays in L1), partial sums kept in AQ.
 * PB: every row l of B' is widened to int32 and added to row p_a(l), in slabs of 64 columns (one slab of PB,
 * r x 64 int32, stays in L1).
 * Threads: phase 1 hands out AQ row blocks and PB slabs, phase 2 writes the digits (row blocks of U, rows of V).
 */
#define CO_EDIGITS (-4)        /* D would exceed the caller's dmax */
#define CO_MAX_THREADS 256
#define CO_ROWS_PER_ITEM 32
#define CO_KB 256               /* k columns per block of the AQ loop */
#define CO_PREFETCH_ROWS 32     /* rows of B' the PB loop prefetches ahead */

#ifdef SC_HAVE_VNNI
typedef struct {
    const int8_t *a, *b2, *e_l, *f_r;
    const int32_t *p_a, *p_b;
    int64_t m, k, n, r, rz;      /* rz = ceil(r / 16) zmm columns of AQ */
    int8_t* qpack;               /* (k / 4) x rz vectors of 64 bytes: Q in the vpdpbusd layout */
    int32_t* aq;                 /* m x (16 rz) */
    int32_t* pb;                 /* r x n */
    int32_t* slabs;              /* per thread: r x 64 int32 */
    int32_t lo[CO_MAX_THREADS], hi[CO_MAX_THREADS];
    int8_t *u, *v;               /* outputs: D x m x 2r, D x 2r x n */
    int64_t digits;
    int64_t items_a, items_b, next1;
    int64_t items_u, items_v, next2;
} co_ctx;

/* rows [row, row + MRK) x zmm columns [z0, z0 + G) of AQ, k columns [kb0, kb1); first: start from zero */
static inline __attribute__((always_inline)) void co_aq_body(const int MRK, const int G, const co_ctx* X,
                                                             int64_t row, int64_t z0, int64_t kb0, int64_t kb1,
                                                             int first) {
    const int64_t k = X->k, rzs = 16 * X->rz;
    int32_t* out = X->aq + row * rzs + 16 * z0;
    __m512i acc[4][4];
#pragma GCC unroll 4
    for (int u = 0; u < MRK; u++)
#pragma GCC unroll 4
        for (int g = 0; g < G; g++)
            acc[u][g] = first ? _mm512_setzero_si512() : _mm512_load_si512((const void*)(out + u * rzs + 16 * g));
    const int8_t* restrict a0 = X->a + row * k + kb0;
    const int8_t* restrict bp = X->qpack + ((kb0 / 4) * X->rz + z0) * 64;
    const int64_t bstride = X->rz * 64;
    /* the same rows' next k block (4 lines each: the k-block order reads A with a stride of k bytes) */
#pragma GCC unroll 4
    for (int u = 0; u < MRK; u++)
        for (int t = 0; t < CO_KB; t += 64) _mm_prefetch((const char*)(a0 + u * k + CO_KB + t), _MM_HINT_T0);
    for (int64_t q = kb0 / 4; q < kb1 / 4; q++) {
        __m512i bv[4];
#pragma GCC unroll 4
        for (int g = 0; g < G; g++) bv[g] = _mm512_load_si512((const void*)(bp + 64 * g));
#pragma GCC unroll 4
        for (int u = 0; u < MRK; u++) {
            const __m512i av = _mm512_set1_epi32(*(const sc_i32u*)(a0 + u * k));
#pragma GCC unroll 4
            for (int g = 0; g < G; g++) acc[u][g] = _mm512_dpbusd_epi32(acc[u][g], bv[g], av);
        }
        bp += bstride;
        a0 += 4;
    }
#pragma GCC unroll 4
    for (int u = 0; u < MRK; u++)
#pragma GCC unroll 4
        for (int g = 0; g < G; g++) _mm512_store_si512((void*)(out + u * rzs + 16 * g), acc[u][g]);
}

typedef void (*co_aq_kern)(const co_ctx*, int64_t, int64_t, int64_t, int64_t, int);
#define CO_DEF(M_, G_)                                                                                  \
    static void co_aq_##M_##_##G_(const co_ctx* X, int64_t row, int64_t z0, int64_t kb0, int64_t kb1, \
                                  int first) {                                                          \
        co_aq_body(M_, G_, X, row, z0, kb0, kb1, first);                                                \
    }
CO_DEF(4, 1) CO_DEF(4, 2) CO_DEF(4, 3) CO_DEF(4, 4)
CO_DEF(3, 1) CO_DEF(3, 2) CO_DEF(3, 3) CO_DEF(3, 4)
CO_DEF(2, 1) CO_DEF(2, 2) CO_DEF(2, 3) CO_DEF(2, 4)
CO_DEF(1, 1) CO_DEF(1, 2) CO_DEF(1, 3) CO_DEF(1, 4)
static const co_aq_kern co_aq_kerns[4][4] = {
    {co_aq_1_1, co_aq_1_2, co_aq_1_3, co_aq_1_4}, {co_aq_2_1, co_aq_2_2, co_aq_2_3, co_aq_2_4},
    {co_aq_3_1, co_aq_3_2, co_aq_3_3, co_aq_3_4}, {co_aq_4_1, co_aq_4_2, co_aq_4_3, co_aq_4_4}};

/* AQ rows [r0, r1): every k block, 4-row strips, groups of up to 4 zmm columns; then their range */
static void co_aq_rows(const co_ctx* X, int64_t r0, int64_t r1, int32_t* lo, int32_t* hi) {
    const int64_t k = X->k, rz = X->rz, rzs = 16 * rz;
    for (int64_t kb0 = 0; kb0 < k; kb0 += CO_KB) {
        const int64_t kb1 = kb0 + CO_KB < k ? kb0 + CO_KB : k;
        for (int64_t row = r0; row < r1; row += 4) {
            const int mrk = (int)(r1 - row < 4 ? r1 - row : 4);
            for (int64_t z0 = 0; z0 < rz; z0 += 4) {
                const int g = (int)(rz - z0 < 4 ? rz - z0 : 4);
                co_aq_kerns[mrk - 1][g - 1](X, row, z0, kb0, kb1, kb0 == 0);
            }
        }
    }
    const __mmask16 lastmask = (X->r & 15) ? (__mmask16)((1u << (X->r & 15)) - 1) : (__mmask16)0xFFFF;
    __m512i vlo = _mm512_set1_epi32(*lo), vhi = _mm512_set1_epi32(*hi);
    for (int64_t u = r0; u < r1; u++) {
        const int32_t* p = X->aq + u * rzs;
        for (int64_t z = 0; z < rz; z++) {
            const __mmask16 mk = z == rz - 1 ? lastmask : (__mmask16)0xFFFF;
            const __m512i x = _mm512_load_si512((const void*)(p + 16 * z));
            vlo = _mm512_mask_min_epi32(vlo, mk, vlo, x);
            vhi = _mm512_mask_max_epi32(vhi, mk, vhi, x);
        }
    }
    *lo = _mm512_reduce_min_epi32(vlo);
    *hi = _mm512_reduce_max_epi32(vhi);
}

/* PB columns [c0, c0 + 64) (fewer at the end), accumulated in slab (r x 64 int32) */
static void co_pb_slab(const co_ctx* X, int64_t c0, int32_t* slab, int32_t* lo, int32_t* hi) {
    const int64_t n = X->n, r = X->r, k = X->k;
    const int64_t width = n - c0 < 64 ? n - c0 : 64;
    const __mmask64 mk = width == 64 ? ~(__mmask64)0 : (((__mmask64)1 << width) - 1);
    memset(slab, 0, (size_t)r * 64 * sizeof(int32_t));
    const int8_t* src = X->b2 + c0;
    for (int64_t l = 0; l < k; l++, src += n) {
        /* rows of B' are n bytes apart, too far for the hardware prefetchers: halves this loop's time */
        _mm_prefetch((const char*)(src + CO_PREFETCH_ROWS * n), _MM_HINT_T0);
        const __m512i bv = _mm512_maskz_loadu_epi8(mk, src);
        const __m512i w0 = _mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(bv, 0));
        const __m512i w1 = _mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(bv, 1));
        const __m512i w2 = _mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(bv, 2));
        const __m512i w3 = _mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(bv, 3));
        int32_t* sp = slab + (int64_t)X->p_a[l] * 64;
        _mm512_store_si512((void*)sp, _mm512_add_epi32(_mm512_load_si512((const void*)sp), w0));
        _mm512_store_si512((void*)(sp + 16), _mm512_add_epi32(_mm512_load_si512((const void*)(sp + 16)), w1));
        _mm512_store_si512((void*)(sp + 32), _mm512_add_epi32(_mm512_load_si512((const void*)(sp + 32)), w2));
        _mm512_store_si512((void*)(sp + 48), _mm512_add_epi32(_mm512_load_si512((const void*)(sp + 48)), w3));
    }
    __m512i vlo = _mm512_set1_epi32(*lo), vhi = _mm512_set1_epi32(*hi);
    for (int64_t j = 0; j < r; j++) {
        for (int t = 0; t < 4; t++) {
            const int64_t left = width - 16 * t;
            if (left <= 0) break;
            const __mmask16 m16 = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
            const __m512i x = _mm512_load_si512((const void*)(slab + j * 64 + 16 * t));
            _mm512_mask_storeu_epi32((void*)(X->pb + j * n + c0 + 16 * t), m16, x);
            vlo = _mm512_mask_min_epi32(vlo, m16, vlo, x);
            vhi = _mm512_mask_max_epi32(vhi, m16, vhi, x);
        }
    }
    *lo = _mm512_reduce_min_epi32(vlo);
    *hi = _mm512_reduce_max_epi32(vhi);
}

static void co_phase1(void* vctx, int tid, int nthreads) {
    (void)nthreads;
    co_ctx* X = (co_ctx*)vctx;
    int32_t lo = 0, hi = 0; /* zero is always an entry's value or harmless: it needs one digit */
    for (;;) {
        const int64_t it = __atomic_fetch_add(&X->next1, 1, __ATOMIC_RELAXED);
        if (it >= X->items_a + X->items_b) break;
        if (it < X->items_a) {
            const int64_t r0 = it * CO_ROWS_PER_ITEM;
            co_aq_rows(X, r0, r0 + CO_ROWS_PER_ITEM < X->m ? r0 + CO_ROWS_PER_ITEM : X->m, &lo, &hi);
        } else {
            co_pb_slab(X, (it - X->items_a) * 64, X->slabs + (int64_t)tid * X->r * 64, &lo, &hi);
        }
    }
    X->lo[tid] = lo;
    X->hi[tid] = hi;
}

/* signed base-128 digits of 16 int32 lanes: x -> digits 0 .. D-1 (int8) at dst + i * dstride, masked */
static inline void co_digits16(__m512i x, int64_t D, int8_t* dst, int64_t dstride, __mmask16 mk) {
    const __m512i c64 = _mm512_set1_epi32(64), c127 = _mm512_set1_epi32(127);
    for (int64_t i = 0; i < D; i++) {
        const __m512i d = _mm512_sub_epi32(_mm512_and_si512(_mm512_add_epi32(x, c64), c127), c64);
        _mm_mask_storeu_epi8((void*)(dst + i * dstride), mk, _mm512_cvtepi32_epi8(d));
        x = _mm512_srai_epi32(_mm512_sub_epi32(x, d), 7);
    }
}

static void co_phase2(void* vctx, int tid, int nthreads) {
    (void)tid; (void)nthreads;
    co_ctx* X = (co_ctx*)vctx;
    const int64_t m = X->m, n = X->n, r = X->r, D = X->digits, rz = X->rz;
    const int64_t ustride = m * 2 * r, vstride = 2 * r * n; /* bytes between digits */
    const __mmask16 lastmask = (r & 15) ? (__mmask16)((1u << (r & 15)) - 1) : (__mmask16)0xFFFF;
    for (;;) {
        const int64_t it = __atomic_fetch_add(&X->next2, 1, __ATOMIC_RELAXED);
        if (it >= X->items_u + X->items_v) break;
        if (it < X->items_u) {
            const int64_t r0 = it * CO_ROWS_PER_ITEM, r1 = r0 + CO_ROWS_PER_ITEM < m ? r0 + CO_ROWS_PER_ITEM : m;
            for (int64_t u = r0; u < r1; u++) {
                int8_t* dst = X->u + u * 2 * r;
                for (int64_t z = 0; z < rz; z++)
                    co_digits16(_mm512_load_si512((const void*)(X->aq + u * 16 * rz + 16 * z)), D, dst + 16 * z,
                                ustride, z == rz - 1 ? lastmask : (__mmask16)0xFFFF);
                for (int64_t i = 0; i < D; i++) memcpy(dst + i * ustride + r, X->e_l + u * r, (size_t)r);
            }
        } else {
            const int64_t j = it - X->items_u;
            for (int64_t i = 0; i < D; i++) memcpy(X->v + i * vstride + j * n, X->f_r + j * n, (size_t)n);
            int8_t* dst = X->v + (r + j) * n;
            const int32_t* src = X->pb + j * n;
            for (int64_t c = 0; c < n; c += 16) {
                const int64_t left = n - c;
                const __mmask16 mk = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
                co_digits16(_mm512_maskz_loadu_epi32(mk, src + c), D, dst + c, vstride, mk);
            }
        }
    }
}

static int64_t co_digit_count(int64_t lo, int64_t hi) {
    int64_t d = 1, top = 63, bot = -64;
    while (hi > top || lo < bot) {
        d++;
        top = top * 128 + 63;
        bot = bot * 128 - 64;
    }
    return d;
}
#endif /* SC_HAVE_VNNI */

/*
 * Writes the correction operands described above into u_out (dmax x m x 2r int8) and v_out (dmax x 2r x n int8)
 * and their count D into *digits_out. k must be a multiple of 4 and every index in [0, r).
 * Returns 0, SC_EINVAL, SC_ENOMEM, SC_ENOTSUP or CO_EDIGITS (D > dmax; nothing useful written).
 */
int pouw_correction_operands(const int8_t* a, const int8_t* b2, const int8_t* e_l, const int8_t* f_r,
                             const int32_t* p_a, const int32_t* p_b, int64_t m, int64_t k, int64_t n, int64_t r, int8_t* u_out, int8_t* v_out, int64_t dmax,
                             int64_t* digits_out, int threads) {
    if (m < 1 || n < 1 || k < 4 || (k & 3) || r < 1 || dmax < 1 || !digits_out) return SC_EINVAL;
    if (!a || !b2 || !e_l || !f_r || !p_a || !p_b || !u_out || !v_out) return SC_EINVAL;
    for (int64_t l = 0; l < k; l++)
        if (p_a[l] < 0 || p_a[l] >= r || p_b[l] < 0 || p_b[l] >= r) return SC_EINVAL;
#ifdef SC_HAVE_VNNI
    if (!pouw_has_sub_correction()) return SC_ENOTSUP;
    if (threads < 1) threads = 1;
    if (threads > CO_MAX_THREADS) threads = CO_MAX_THREADS;
    co_ctx X;
    memset(&X, 0, sizeof X);
    X.a = a; X.b2 = b2; X.e_l = e_l; X.f_r = f_r;
    X.p_a = p_a; X.p_b = p_b;
    X.m = m; X.k = k; X.n = n; X.r = r;
    X.rz = (r + 15) / 16;
    const int64_t qbytes = (k / 4) * X.rz * 64;
    const int64_t aqbytes = m * 16 * X.rz * 4;
    const int64_t pbbytes = ((r * n * 4) + 63) & ~(int64_t)63;
    const int64_t slabbytes = (int64_t)threads * r * 64 * 4;
    int cached = 0;
    char* ws = (char*)ws_acquire(WS_RECOVER, (size_t)(qbytes + aqbytes + pbbytes + slabbytes), &cached);
    if (!ws) return SC_ENOMEM;
    X.qpack = (int8_t*)ws;
    X.aq = (int32_t*)(ws + qbytes);
    X.pb = (int32_t*)(ws + qbytes + aqbytes);
    X.slabs = (int32_t*)(ws + qbytes + aqbytes + pbbytes);
    /* Q: byte t of lane j of vector (l / 4, j / 16) holds Q[l][j] for l = 4 (l / 4) + t */
    memset(X.qpack, 0, (size_t)qbytes);
    for (int64_t l = 0; l < k; l++)
        X.qpack[(l / 4) * X.rz * 64 + (l & 3) + (p_b[l] / 16) * 64 + (p_b[l] % 16) * 4] = 1;
    X.items_a = (m + CO_ROWS_PER_ITEM - 1) / CO_ROWS_PER_ITEM;
    X.items_b = (n + 63) / 64;
    int t1 = threads;
    if (t1 > X.items_a + X.items_b) t1 = (int)(X.items_a + X.items_b);
    const int ran = pouw_internal_run_team(co_phase1, &X, t1);
    int64_t lo = 0, hi = 0;
    for (int t = 0; t < ran && t < CO_MAX_THREADS; t++) {
        if (X.lo[t] < lo) lo = X.lo[t];
        if (X.hi[t] > hi) hi = X.hi[t];
    }
    X.digits = co_digit_count(lo, hi);
    *digits_out = X.digits;
    if (X.digits > dmax) {
        ws_release(WS_RECOVER, ws, cached);
        return CO_EDIGITS;
    }
    X.u = u_out;
    X.v = v_out;
    X.items_u = (m + CO_ROWS_PER_ITEM - 1) / CO_ROWS_PER_ITEM;
    X.items_v = r;
    int t2 = threads;
    if (t2 > X.items_u + X.items_v) t2 = (int)(X.items_u + X.items_v);
    pouw_internal_run_team(co_phase2, &X, t2);
    ws_release(WS_RECOVER, ws, cached);
    return SC_OK;
#else
    (void)threads;
    return SC_ENOTSUP;
#endif
}
