/*
 * Auxiliary mining kernels, compiled into the same library as fused_gemm.c (see kernels/native_loader.py):
 *
 *  - pouw_tile_tickets(): every tile's lottery ticket, SHA-256(prefix || u32le ti || u32le tj || 16 words u32le)
 *    (kernels.base.tile_tickets_reference). Only built with OpenSSL's libcrypto (-DPOUW_WITH_OPENSSL -lcrypto):
 *    the prefix's whole 64-byte blocks are hashed once; per tile the (2 or 3) padded tail blocks are built in a
 *    per-thread buffer from a template and compressed with SHA256_Transform, which runs OpenSSL's SHA-NI / AVX2
 *    block function when the CPU has it. Tiles are split across the thread pool of pool.c.
 *
 *  - pouw_add_noise(): A' = A + E_L·P and B' = B + Q·F_R as gathers (kernels/base.py, optional add_noise):
 *        A'[u][l] = a[u][l] + e_l[u][p_a[l]],  B'[l][v] = b[l][v] + f_r[p_b[l]][v]
 *    in wrapping int8 arithmetic, which equals the exact sum truncated to int8 (so it is bit-identical to the
 *    int32 GEMM + int32->int8 path for any input, and exact whenever the sums lie in [-128, 127]).
 *    With AVX512-VBMI a whole E_L row (r <= 256) sits in 1-4 zmm registers and vpermb / vpermt2b gather 64 columns
 *    at once; otherwise plain C. B' is row gathers and byte adds (auto-vectorised). Row blocks of both outputs
 *    are handed out dynamically to the pool's threads.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define AUX_OK 0
#define AUX_EINVAL (-1)
#define AUX_ENOMEM (-2)
#define AUX_FLAG_FORCE_PORTABLE 1

typedef void (*aux_worker_fn)(void* ctx, int tid, int nthreads);
/* pool.c: runs fn(ctx, tid, count) on up to n threads of its persistent pool; returns count */
int pouw_internal_run_team(aux_worker_fn fn, void* ctx, int n);

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define AUX_BIG_ENDIAN 1
#endif

static inline void store_le32(uint8_t* p, uint32_t x) {
    p[0] = (uint8_t)x;
    p[1] = (uint8_t)(x >> 8);
    p[2] = (uint8_t)(x >> 16);
    p[3] = (uint8_t)(x >> 24);
}

static inline void store_be32(uint8_t* p, uint32_t x) {
    p[0] = (uint8_t)(x >> 24);
    p[1] = (uint8_t)(x >> 16);
    p[2] = (uint8_t)(x >> 8);
    p[3] = (uint8_t)x;
}

/* ------------------------------------------------------------------------------------------ */
/* Tile tickets (OpenSSL)                                                                      */
/* ------------------------------------------------------------------------------------------ */

#ifdef POUW_WITH_OPENSSL
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/sha.h>

#define TK_TAIL 72   /* u32 ti, u32 tj, 16 words */
#define TK_CHUNK 256 /* tiles per work item */

typedef struct {
    SHA256_CTX base;     /* state after the prefix's whole blocks */
    uint8_t tmpl[192];   /* the padded tail: prefix remainder, 72 tile bytes, 0x80, zeros, bit length */
    int rem;             /* prefix remainder length (< 64) */
    int nblocks;         /* tail blocks: 2 or 3 */
    const uint32_t* msgs;
    int64_t tj_n;
    int64_t total;
    uint8_t* out;
    int64_t next;        /* atomic work counter */
} tk_ctx;

static void tk_worker(void* vctx, int tid, int nthreads) {
    (void)tid; (void)nthreads;
    tk_ctx* X = (tk_ctx*)vctx;
    uint8_t buf[192] __attribute__((aligned(64)));
    const int nb = X->nblocks;
    memcpy(buf, X->tmpl, (size_t)nb * 64);
    uint8_t* const slot = buf + X->rem;
    SHA256_CTX c;
    for (;;) {
        const int64_t t0 = __atomic_fetch_add(&X->next, TK_CHUNK, __ATOMIC_RELAXED);
        if (t0 >= X->total) break;
        const int64_t t1 = t0 + TK_CHUNK < X->total ? t0 + TK_CHUNK : X->total;
        int64_t ti = t0 / X->tj_n, tj = t0 % X->tj_n;
        for (int64_t t = t0; t < t1; t++) {
            store_le32(slot, (uint32_t)ti);
            store_le32(slot + 4, (uint32_t)tj);
            const uint32_t* w = X->msgs + 16 * t;
#ifdef AUX_BIG_ENDIAN
            for (int i = 0; i < 16; i++) store_le32(slot + 8 + 4 * i, w[i]);
#else
            memcpy(slot + 8, w, 64);
#endif
            memcpy(c.h, X->base.h, sizeof c.h);
            for (int b = 0; b < nb; b++) SHA256_Transform(&c, buf + 64 * b);
            uint8_t* o = X->out + 32 * t;
            for (int i = 0; i < 8; i++) store_be32(o + 4 * i, (uint32_t)c.h[i]);
            if (++tj == X->tj_n) {
                tj = 0;
                ti++;
            }
        }
    }
}

int pouw_has_tickets(void) { return 1; }

/* out (ti_n x tj_n x 32 bytes) = SHA-256(prefix || u32le ti || u32le tj || msgs[ti][tj][0..15] u32le). */
int pouw_tile_tickets(const uint8_t* prefix, int64_t prefix_len, const uint32_t* msgs, int64_t ti_n, int64_t tj_n,
                      uint8_t* out, int threads) {
    if (prefix_len < 0 || ti_n < 0 || tj_n < 0 || (prefix_len > 0 && !prefix)) return AUX_EINVAL;
    if (ti_n > 0xFFFFFFFFLL || tj_n > 0xFFFFFFFFLL) return AUX_EINVAL;
    const int64_t total = ti_n * tj_n;
    if (total == 0) return AUX_OK;
    if (!msgs || !out) return AUX_EINVAL;
    tk_ctx* X = (tk_ctx*)aligned_alloc(64, (sizeof(tk_ctx) + 63) / 64 * 64);
    if (!X) return AUX_ENOMEM;
    memset(X, 0, sizeof *X);
    SHA256_Init(&X->base);
    const int64_t full = prefix_len / 64 * 64;
    for (int64_t off = 0; off < full; off += 64) SHA256_Transform(&X->base, prefix + off);
    X->rem = (int)(prefix_len - full);
    X->nblocks = (X->rem + TK_TAIL + 9 + 63) / 64;
    if (X->rem) memcpy(X->tmpl, prefix + full, (size_t)X->rem);
    X->tmpl[X->rem + TK_TAIL] = 0x80;
    const uint64_t bits = (uint64_t)(prefix_len + TK_TAIL) * 8u;
    uint8_t* len_at = X->tmpl + 64 * X->nblocks - 8;
    store_be32(len_at, (uint32_t)(bits >> 32));
    store_be32(len_at + 4, (uint32_t)bits);
    X->msgs = msgs;
    X->tj_n = tj_n;
    X->total = total;
    X->out = out;
    X->next = 0;
    if (threads < 1) threads = 1;
    const int64_t max_useful = (total + TK_CHUNK - 1) / TK_CHUNK;
    if (threads > max_useful) threads = (int)max_useful;
    pouw_internal_run_team(tk_worker, X, threads);
    free(X);
    return AUX_OK;
}
#else
int pouw_has_tickets(void) { return 0; }
#endif /* POUW_WITH_OPENSSL */

/* ------------------------------------------------------------------------------------------ */
/* Fused noise                                                                                 */
/* ------------------------------------------------------------------------------------------ */

#if defined(__x86_64__) && defined(__GNUC__) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VBMI__)
#define AUX_HAVE_VBMI 1
#include <immintrin.h>
#endif

#define NZ_ITEM_BYTES (64 * 1024) /* bytes of output per work item */

typedef struct {
    const int8_t *a, *b, *e_l, *f_r;
    const int32_t *p_a, *p_b;
    const uint8_t* pa8;       /* p_a as bytes, padded to a multiple of 64 (r <= 256), else NULL */
    int vbmi;                 /* gather A' with AVX512-VBMI */
    int64_t m, k, n, r;
    int8_t *a_out, *b_out;
    int64_t rows_a, rows_b;   /* rows per work item */
    int64_t items_a, items_total;
    int64_t next;             /* atomic */
} nz_ctx;

/* scalar on purpose: auto-vectorised it becomes vpgatherdd, slower than byte loads */
__attribute__((optimize("no-tree-vectorize"))) static void nz_rows_a_portable(const nz_ctx* X, int64_t u0,
                                                                             int64_t u1) {
    const int64_t k = X->k, r = X->r;
    for (int64_t u = u0; u < u1; u++) {
        const uint8_t* a = (const uint8_t*)X->a + u * k;
        const uint8_t* e = (const uint8_t*)X->e_l + u * r;
        uint8_t* o = (uint8_t*)X->a_out + u * k;
        if (X->pa8) { /* byte indices (r <= 256): a quarter of the index traffic, scalar loads (no vector gathers) */
            const uint8_t* p = X->pa8;
            for (int64_t l = 0; l < k; l++) o[l] = (uint8_t)(a[l] + e[p[l]]);
        } else {
            for (int64_t l = 0; l < k; l++) o[l] = (uint8_t)(a[l] + e[X->p_a[l]]);
        }
    }
}

#ifdef AUX_HAVE_VBMI
/* vpermb over an E_L row held in NE zmm registers (NE = 1: r <= 64, 2: r <= 128, 4: r <= 256) */
static inline __attribute__((always_inline)) __m512i gather_row(const int NE, const __m512i* e, __m512i idx) {
    if (NE == 1) return _mm512_permutexvar_epi8(idx, e[0]);
    if (NE == 2) return _mm512_permutex2var_epi8(e[0], idx, e[1]);
    const __m512i lo = _mm512_permutex2var_epi8(e[0], idx, e[1]);
    const __m512i hi = _mm512_permutex2var_epi8(e[2], idx, e[3]);
    return _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi);
}

static inline __attribute__((always_inline)) void nz_rows_a_vbmi_body(const int NE, const nz_ctx* X, int64_t u0,
                                                                        int64_t u1) {
    const int64_t k = X->k, r = X->r;
    const int64_t kfull = k & ~(int64_t)63;
    const __mmask64 tail = (k & 63) ? (~(__mmask64)0 >> (64 - (k & 63))) : 0;
    for (int64_t u = u0; u < u1; u++) {
        const int8_t* erow = X->e_l + u * r;
        __m512i e[4];
        for (int i = 0; i < NE; i++) {
            const int64_t left = r - 64 * i;
            const __mmask64 em = left >= 64 ? ~(__mmask64)0 : (left > 0 ? (~(__mmask64)0 >> (64 - left)) : 0);
            e[i] = _mm512_maskz_loadu_epi8(em, erow + 64 * i);
        }
        const int8_t* a = X->a + u * k;
        int8_t* o = X->a_out + u * k;
        int64_t l = 0;
        for (; l < kfull; l += 64) {
            const __m512i vp = gather_row(NE, e, _mm512_loadu_si512((const void*)(X->pa8 + l)));
            const __m512i va = _mm512_loadu_si512((const void*)(a + l));
            _mm512_storeu_si512((void*)(o + l), _mm512_add_epi8(va, vp));
        }
        if (tail) {
            const __m512i vp = gather_row(NE, e, _mm512_loadu_si512((const void*)(X->pa8 + l)));
            const __m512i va = _mm512_maskz_loadu_epi8(tail, a + l);
            _mm512_mask_storeu_epi8(o + l, tail, _mm512_add_epi8(va, vp));
        }
    }
}

static void nz_rows_a_vbmi1(const nz_ctx* X, int64_t u0, int64_t u1) { nz_rows_a_vbmi_body(1, X, u0, u1); }
static void nz_rows_a_vbmi2(const nz_ctx* X, int64_t u0, int64_t u1) { nz_rows_a_vbmi_body(2, X, u0, u1); }
static void nz_rows_a_vbmi4(const nz_ctx* X, int64_t u0, int64_t u1) { nz_rows_a_vbmi_body(4, X, u0, u1); }
#endif

static void nz_rows_a(const nz_ctx* X, int64_t u0, int64_t u1) {
#ifdef AUX_HAVE_VBMI
    if (X->vbmi) {
        if (X->r <= 64) nz_rows_a_vbmi1(X, u0, u1);
        else if (X->r <= 128) nz_rows_a_vbmi2(X, u0, u1);
        else nz_rows_a_vbmi4(X, u0, u1);
        return;
    }
#endif
    nz_rows_a_portable(X, u0, u1);
}

static void nz_rows_b(const nz_ctx* X, int64_t l0, int64_t l1) {
    const int64_t n = X->n;
    for (int64_t l = l0; l < l1; l++) {
        const uint8_t* __restrict b = (const uint8_t*)X->b + l * n;
        const uint8_t* __restrict fp = (const uint8_t*)X->f_r + (int64_t)X->p_b[l] * n;
        uint8_t* __restrict o = (uint8_t*)X->b_out + l * n;
        for (int64_t v = 0; v < n; v++) o[v] = (uint8_t)(b[v] + fp[v]);
    }
}

static void nz_worker(void* vctx, int tid, int nthreads) {
    (void)tid; (void)nthreads;
    nz_ctx* X = (nz_ctx*)vctx;
    for (;;) {
        const int64_t it = __atomic_fetch_add(&X->next, 1, __ATOMIC_RELAXED);
        if (it >= X->items_total) break;
        if (it < X->items_a) {
            const int64_t u0 = it * X->rows_a;
            const int64_t u1 = u0 + X->rows_a < X->m ? u0 + X->rows_a : X->m;
            nz_rows_a(X, u0, u1);
        } else {
            const int64_t l0 = (it - X->items_a) * X->rows_b;
            const int64_t l1 = l0 + X->rows_b < X->k ? l0 + X->rows_b : X->k;
            nz_rows_b(X, l0, l1);
        }
    }
}

/* 1 when pouw_add_noise gathers A' with AVX512-VBMI (for this r) */
int pouw_noise_path(int64_t r, int flags) {
#ifdef AUX_HAVE_VBMI
    if (!(flags & AUX_FLAG_FORCE_PORTABLE) && r >= 1 && r <= 256 && __builtin_cpu_supports("avx512vbmi")) return 1;
#else
    (void)r; (void)flags;
#endif
    return 0;
}

/*
 * a: m x k, b: k x n, e_l: m x r, f_r: r x n (int8, row-major, contiguous); p_a, p_b: k indices in [0, r).
 * a_out: m x k, b_out: k x n (must not overlap the inputs). Returns 0, or AUX_EINVAL (bad sizes or an index out
 * of range: nothing is written), AUX_ENOMEM.
 */
int pouw_add_noise(const int8_t* a, const int8_t* b, const int8_t* e_l, const int8_t* f_r, const int32_t* p_a,
                   const int32_t* p_b, int64_t m, int64_t k, int64_t n, int64_t r, int8_t* a_out, int8_t* b_out,
                   int threads, int flags) {
    if (m < 0 || k < 0 || n < 0 || r < 1) return AUX_EINVAL;
    if (k > 0 && (!p_a || !p_b)) return AUX_EINVAL;
    if ((m > 0 && k > 0) && (!a || !e_l || !a_out)) return AUX_EINVAL;
    if ((k > 0 && n > 0) && (!b || !f_r || !b_out)) return AUX_EINVAL;
    for (int64_t l = 0; l < k; l++) {
        if (p_a[l] < 0 || p_a[l] >= r || p_b[l] < 0 || p_b[l] >= r) return AUX_EINVAL;
    }
    if (k == 0) return AUX_OK;
    nz_ctx X;
    memset(&X, 0, sizeof X);
    X.a = a; X.b = b; X.e_l = e_l; X.f_r = f_r;
    X.p_a = p_a; X.p_b = p_b;
    X.m = m; X.k = k; X.n = n; X.r = r;
    X.a_out = a_out; X.b_out = b_out;
    uint8_t* idx8 = NULL;
    if (m > 0 && r <= 256) {
        const int64_t kp = (k + 63) & ~(int64_t)63;
        idx8 = (uint8_t*)aligned_alloc(64, (size_t)kp);
        if (!idx8) return AUX_ENOMEM;
        memset(idx8, 0, (size_t)kp);
        for (int64_t l = 0; l < k; l++) idx8[l] = (uint8_t)p_a[l];
        X.pa8 = idx8;
        X.vbmi = pouw_noise_path(r, flags);
    }
    X.rows_a = k > 0 ? NZ_ITEM_BYTES / k : 1;
    if (X.rows_a < 1) X.rows_a = 1;
    X.rows_b = n > 0 ? NZ_ITEM_BYTES / n : k;
    if (X.rows_b < 1) X.rows_b = 1;
    X.items_a = m > 0 ? (m + X.rows_a - 1) / X.rows_a : 0;
    const int64_t items_b = n > 0 ? (k + X.rows_b - 1) / X.rows_b : 0;
    X.items_total = X.items_a + items_b;
    X.next = 0;
    if (threads < 1) threads = 1;
    if (threads > X.items_total) threads = (int)(X.items_total > 0 ? X.items_total : 1);
    if (X.items_total > 0) pouw_internal_run_team(nz_worker, &X, threads);
    free(idx8);
    return AUX_OK;
}
