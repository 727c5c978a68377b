/*
 * AVX2 kernel for the PoUW mining contract (kernels/base.py), for x86-64 CPUs without AVX512-VNNI (AMD Zen 1-3,
 * Intel Haswell .. Alder Lake): the same outputs, bit for bit, as the AVX512-VNNI kernel of vnni_gemm.c.
 *
 *   S_c = sum_{c' <= c} A[:, c'r:(c'+1)r] @ B[c'r:(c'+1)r, :]   (exact int32), x = XOR of each h x w tile of S_c,
 *   msg[c % 16] = rotl32(msg[c % 16], 13) ^ x;   outputs C = S_{k/r-1} and the messages.
 *
 * Two inner loops (measured in benchmarks/RESULTS.md; pouw_avx2_default_variant() says which one runs):
 *
 *  - "int": int32 accumulators, 4 rows x 16 columns (8 ymm) over the whole k. Per 4 k entries of a row:
 *    vpabsb |a| once, then per 8 columns vpsignb (b * sign(a)), vpmaddubsw (|a| u8 x signed b, pairs into s16:
 *    |a b| <= 127 * 127, a pair <= 32258, no saturation), vpmaddwd by ones (s16 pairs -> s32), vpaddd.
 *    Needs r % 4 == 0, and neither operand holding -128 (sign(-128) wraps; checked, the "fp32" loop then runs).
 *  - "fp32": fp32 FMA accumulators, 4 rows x 24 columns (12 ymm), zeroed at every chunk start. Within a chunk
 *    every partial sum is an integer of magnitude <= 128 * 128 * r <= 2^24 (r <= 1024), so fp32 is exact; at the
 *    chunk end the accumulators are converted and added into the int32 running sums (in L1), exactly where the
 *    fold happens. Exact for -128 too. Needs r <= 1024.
 *
 * The transcript: per 4-row group (a tile is h >= 4 rows, h % 4 == 0) and ymm column a vector state of 16 slots,
 * M[slot] = rotl(M[slot], 13) ^ XOR_{4 rows} S_c, kept in L1. rotl and XOR are GF(2)-linear and lane-wise, so a
 * tile's word is the XOR of the lanes (and row groups) of its state vectors: reduced after the k loop and XORed
 * into the messages, which the owner of the tile row zeroes first. Any tile width w works (w % 8 == 0 and w == 4
 * by vector shuffles, others lane by lane); the rows of a tile belong to one thread (blocks of whole tile rows).
 *
 * B is packed once per call (panels handed out to the threads dynamically), then blocks of whole tile rows; the
 * fp32 loop converts each block's A to fp32 (4-row interleaved) first. FLAG_NO_TRANSCRIPT: C only (the engine's
 * plain GEMM). The file is compiled without AVX-512 (target no-avx512f), so on an AVX-512 machine it runs the same
 * instructions as on an AVX2-only one.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define A2_OK 0
#define A2_EINVAL (-1)
#define A2_ENOMEM (-2)
#define A2_MSG_WORDS 16
#define A2_ROT 13

#define A2_FLAG_NO_TRANSCRIPT 2
#define A2_FLAG_FP32 16 /* force the fp32 inner loop */
#define A2_FLAG_INT 32  /* force the int (vpmaddubsw) inner loop */
/* pouw_avx2_sub_correction: chunks are digits, highest first: S = 128 * S + chunk product (Horner), and
 * C -= S instead of C = S; no transcript */
#define A2_FLAG_HORNER_SUB 64

/* the faster inner loop on the CPUs measured (benchmarks/RESULTS.md): 0 = int, 1 = fp32 */
#ifndef POUW_AVX2_DEFAULT_FP32
#define POUW_AVX2_DEFAULT_FP32 0
#endif

typedef void (*a2_worker_fn)(void* ctx, int tid, int nthreads);
int pouw_internal_run_team(a2_worker_fn fn, void* ctx, int n); /* pool.c's pool */

int pouw_avx2_default_variant(void) { return POUW_AVX2_DEFAULT_FP32 ? 1 : 0; }

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

#define MR 4
#define NRV_INT 2
#define NRV_F32 3
#ifndef A2_PACK_ABS
#define A2_PACK_ABS 1 /* int loop: |b| packed beside b (else vpabsb per k step) */
#endif
#define A2_INT_STEP_BYTES (A2_PACK_ABS ? 128 : 64)
#ifndef POUW_AVX2_A_BLOCK_BYTES
#define POUW_AVX2_A_BLOCK_BYTES (256 * 1024)
#endif

typedef int32_t __attribute__((may_alias, aligned(1))) a2_i32u;
typedef int64_t __attribute__((may_alias, aligned(1))) a2_i64u;

typedef struct {
    const int8_t* a;
    const int8_t* b;
    int64_t m, k, n;
    int r, th, tw;
    int32_t* c;
    uint32_t* msgs;
    int transcript, fp32, horner_sub;
    int i16;              /* pouw_avx2_sub_i16: int16 operands (vpmaddwd), one chunk, C -= A B */
    int nrv;              /* ymm columns per panel */
    int64_t nv;           /* ymm columns in all: ceil(n / 8) */
    int64_t npanels;
    int64_t panel_bytes;  /* bytes of one packed panel */
    char* bpack;
    int64_t a_rows, nblocks;
    int64_t npg, ppg;     /* panel groups per block (several only without the transcript), panels per group */
    char* scratch;        /* per thread: packed fp32 A block, running sums, message state */
    int64_t scratch_stride;
    int64_t next_panel, next_block; /* atomic work counters */
} a2_ctx;

static inline int64_t a2_round64(int64_t x) { return (x + 63) & ~(int64_t)63; }

/* ---- B packing ------------------------------------------------------------------------------------------- */

/* int: panel p, k step q (4 k entries): 2 ymm of 8 columns x 4 consecutive k bytes (column-major quads), then
 * the same 2 ymm of |b| (the vpmaddubsw u8 operand, 128 for -128). */
static void pack_panel_int(const a2_ctx* X, int64_t p) {
    const int64_t k = X->k, n = X->n, v0 = p * 16;
    int8_t* dst = (int8_t*)(X->bpack + p * X->panel_bytes);
    for (int64_t q = 0; q < k / 4; q++, dst += A2_INT_STEP_BYTES) {
        const int8_t* s = X->b + 4 * q * n + v0;
        if (v0 + 16 <= n) {
            const __m128i r0 = _mm_loadu_si128((const __m128i*)s), r1 = _mm_loadu_si128((const __m128i*)(s + n));
            const __m128i r2 = _mm_loadu_si128((const __m128i*)(s + 2 * n));
            const __m128i r3 = _mm_loadu_si128((const __m128i*)(s + 3 * n));
            const __m128i t0 = _mm_unpacklo_epi8(r0, r1), t1 = _mm_unpackhi_epi8(r0, r1);
            const __m128i t2 = _mm_unpacklo_epi8(r2, r3), t3 = _mm_unpackhi_epi8(r2, r3);
            _mm_store_si128((__m128i*)dst, _mm_unpacklo_epi16(t0, t2));  /* 32-byte aligned: dst is */
            _mm_store_si128((__m128i*)(dst + 16), _mm_unpackhi_epi16(t0, t2));
            _mm_store_si128((__m128i*)(dst + 32), _mm_unpacklo_epi16(t1, t3));
            _mm_store_si128((__m128i*)(dst + 48), _mm_unpackhi_epi16(t1, t3));
        } else {
            for (int64_t v = 0; v < 16; v++)
                for (int64_t i = 0; i < 4; i++) dst[4 * v + i] = v0 + v < n ? s[i * n + v] : 0;
        }
#if A2_PACK_ABS
        _mm256_store_si256((__m256i*)(dst + 64), _mm256_abs_epi8(_mm256_load_si256((const __m256i*)dst)));
        _mm256_store_si256((__m256i*)(dst + 96), _mm256_abs_epi8(_mm256_load_si256((const __m256i*)(dst + 32))));
#endif
    }
}

/* fp32: panel p, k entry l: nrv ymm of 8 fp32 columns. */
static void pack_panel_f32(const a2_ctx* X, int64_t p) {
    const int64_t k = X->k, n = X->n, w = 8 * X->nrv, v0 = p * w;
    float* dst = (float*)(X->bpack + p * X->panel_bytes);
    for (int64_t l = 0; l < k; l++, dst += w) {
        const int8_t* s = X->b + l * n + v0;
        for (int j = 0; j < X->nrv; j++) {
            if (v0 + 8 * j + 8 <= n) {
                const __m128i x = _mm_loadl_epi64((const __m128i*)(s + 8 * j));
                _mm256_store_ps(dst + 8 * j, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(x)));
            } else {
                for (int64_t v = 8 * j; v < 8 * j + 8; v++) dst[v] = v0 + v < n ? (float)s[v] : 0.0f;
            }
        }
    }
}

/* int16 (pouw_avx2_sub_i16): panel p, k step q (2 k entries): 2 ymm of 8 columns x 2 consecutive int16. */
static void pack_panel_i16(const a2_ctx* X, int64_t p) {
    const int64_t k = X->k, n = X->n, v0 = p * 16;
    const int16_t* b = (const int16_t*)X->b;
    int16_t* dst = (int16_t*)(X->bpack + p * X->panel_bytes);
    for (int64_t q = 0; q < k / 2; q++, dst += 32) {
        const int16_t* s0 = b + 2 * q * n + v0;
        for (int64_t v = 0; v < 16; v++) {
            dst[2 * v] = v0 + v < n ? s0[v] : 0;
            dst[2 * v + 1] = v0 + v < n ? s0[n + v] : 0;
        }
    }
}

static void pack_worker(void* vctx, int tid, int nthreads) {
    a2_ctx* X = (a2_ctx*)vctx;
    (void)tid;
    (void)nthreads;
    for (;;) {
        const int64_t p = __atomic_fetch_add(&X->next_panel, 1, __ATOMIC_RELAXED);
        if (p >= X->npanels) break;
        if (X->i16)
            pack_panel_i16(X, p);
        else if (X->fp32)
            pack_panel_f32(X, p);
        else
            pack_panel_int(X, p);
    }
}

/* fp32 A: rows [row, row + 4) -> dst[4 l + u] = a[row + u][l] */
static void pack_a_quad_f32(const int8_t* a, int64_t lda, int64_t k, float* dst) {
    int64_t l = 0;
    for (; l + 8 <= k; l += 8, dst += 32) {
        __m256 v[4];
        for (int u = 0; u < 4; u++)
            v[u] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(a + u * lda + l))));
        const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
        const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
        const __m256d s0 = _mm256_unpacklo_pd(_mm256_castps_pd(t0), _mm256_castps_pd(t2));  /* l0 | l4 */
        const __m256d s1 = _mm256_unpackhi_pd(_mm256_castps_pd(t0), _mm256_castps_pd(t2));  /* l1 | l5 */
        const __m256d s2 = _mm256_unpacklo_pd(_mm256_castps_pd(t1), _mm256_castps_pd(t3));  /* l2 | l6 */
        const __m256d s3 = _mm256_unpackhi_pd(_mm256_castps_pd(t1), _mm256_castps_pd(t3));  /* l3 | l7 */
        _mm256_storeu_pd((double*)dst, _mm256_permute2f128_pd(s0, s1, 0x20));
        _mm256_storeu_pd((double*)(dst + 8), _mm256_permute2f128_pd(s2, s3, 0x20));
        _mm256_storeu_pd((double*)(dst + 16), _mm256_permute2f128_pd(s0, s1, 0x31));
        _mm256_storeu_pd((double*)(dst + 24), _mm256_permute2f128_pd(s2, s3, 0x31));
    }
    for (; l < k; l++, dst += 4)
        for (int u = 0; u < 4; u++) dst[u] = (float)a[u * lda + l];
}

/* ---- transcript ------------------------------------------------------------------------------------------ */

static inline __m256i rotl13(__m256i x) {
    return _mm256_or_si256(_mm256_slli_epi32(x, A2_ROT), _mm256_srli_epi32(x, 32 - A2_ROT));
}

/* M[slot] = rotl(M[slot]) ^ x (the slot's first chunk when fresh: M[slot] = x) */
static inline void fold(__m256i* mslot, __m256i x, int fresh) {
    *mslot = fresh ? x : _mm256_xor_si256(rotl13(*mslot), x);
}

static inline __m256i f1(__m256i x, __m256i y) {
    return _mm256_xor_si256(_mm256_permute2x128_si256(x, y, 0x20), _mm256_permute2x128_si256(x, y, 0x31));
}
static inline __m256i f2(__m256i x, __m256i y) {
    return _mm256_xor_si256(_mm256_unpacklo_epi64(x, y), _mm256_unpackhi_epi64(x, y));
}
static inline __m256i f3(__m256i x, __m256i y) {
    const __m256 xf = _mm256_castsi256_ps(x), yf = _mm256_castsi256_ps(y);
    return _mm256_xor_si256(_mm256_castps_si256(_mm256_shuffle_ps(xf, yf, 0x88)),
                            _mm256_castps_si256(_mm256_shuffle_ps(xf, yf, 0xDD)));
}

/*
 * XOR the state of one 4-row group into the messages. st: nrv x 16 slot vectors (lane = column zv * 8 + lane).
 * w % 8 == 0: f1, f2, f3 reduce 16 slot vectors (fed in the order below) to 2 vectors holding slots 0..15 of the
 * ymm's tile in order; w == 4: f2, f3 give 4 vectors whose low / high halves hold slots 0..15 of the two tiles.
 */
static const int k_ord8[16] = {0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15};

static void flush_state(const a2_ctx* X, const __m256i* st, int nrv, int64_t ti, int64_t zv0) {
    const int64_t n = X->n, tw = X->tw, ntj = n / tw;
    uint32_t* mrow = X->msgs + ti * ntj * A2_MSG_WORDS;
    for (int j = 0; j < nrv; j++) {
        const int64_t c0 = (zv0 + j) * 8; /* first column of this ymm */
        if (c0 >= n) break;
        const __m256i* s = st + j * 16;
        if (tw % 8 == 0) {
            __m256i v[8];
            for (int i = 0; i < 8; i++) v[i] = f1(s[k_ord8[2 * i]], s[k_ord8[2 * i + 1]]);
            for (int i = 0; i < 4; i++) v[i] = f2(v[2 * i], v[2 * i + 1]);
            for (int i = 0; i < 2; i++) v[i] = f3(v[2 * i], v[2 * i + 1]);
            __m256i* dst = (__m256i*)(mrow + (c0 / tw) * A2_MSG_WORDS);
            _mm256_storeu_si256(dst, _mm256_xor_si256(_mm256_loadu_si256(dst), v[0]));
            _mm256_storeu_si256(dst + 1, _mm256_xor_si256(_mm256_loadu_si256(dst + 1), v[1]));
        } else if (tw == 4) {
            __m256i v[8];
            for (int i = 0; i < 8; i++) v[i] = f2(s[2 * i], s[2 * i + 1]);
            for (int i = 0; i < 4; i++) v[i] = f3(v[2 * i], v[2 * i + 1]);
            for (int half = 0; half < 2; half++) {
                if (c0 + 4 * half >= n) break;
                __m128i* dst = (__m128i*)(mrow + ((c0 + 4 * half) / 4) * A2_MSG_WORDS);
                for (int i = 0; i < 4; i++) {
                    const __m128i x = half ? _mm256_extracti128_si256(v[i], 1) : _mm256_castsi256_si128(v[i]);
                    _mm_storeu_si128(dst + i, _mm_xor_si128(_mm_loadu_si128(dst + i), x));
                }
            }
        } else {
            uint32_t lanes[8] __attribute__((aligned(32)));
            for (int sl = 0; sl < 16; sl++) {
                _mm256_store_si256((__m256i*)lanes, s[sl]);
                for (int64_t e = 0; e < 8 && c0 + e < n; e++) mrow[((c0 + e) / tw) * A2_MSG_WORDS + sl] ^= lanes[e];
            }
        }
    }
}

/* ---- microkernels: 4 rows x one panel, the whole k ------------------------------------------------------ */

typedef struct {
    const int8_t* a;   /* int: A rows (stride lda); fp32: packed fp32 quad (4 floats per k) */
    const float* af;
    int64_t lda;
    const char* bp;    /* packed panel */
    int64_t nchunks, r;
    int32_t* cp;       /* C, row stride ldc */
    int64_t ldc;
    int64_t cols;      /* valid columns of this panel (<= 8 * nrv) */
    __m256i* mst;      /* nrv x 16 state vectors */
    __m256i* run;      /* fp32: 4 x nrv int32 running sums */
    int transcript;
    int horner_sub;    /* S = 128 S + chunk product at chunk boundaries; C -= S */
    const char* pf;    /* a slice of the next panel to pull towards L2, pf_lines lines per chunk */
    int64_t pf_lines;
} a2_uk;

static inline void a2_prefetch_l2(const a2_uk* U, int64_t c) {
    const char* p = U->pf + c * U->pf_lines * 64;
    for (int64_t i = 0; i < U->pf_lines; i++) _mm_prefetch(p + 64 * i, _MM_HINT_T1);
}

/* C = v (sub: C -= v, wrapping) for the valid columns of ymm column j of row u */
static inline void store_c(int32_t* cp, int64_t ldc, int u, int j, __m256i v, int64_t cols, int sub) {
    int32_t* dst = cp + u * ldc + 8 * j;
    if (8 * j + 8 <= cols) {
        if (sub) v = _mm256_sub_epi32(_mm256_loadu_si256((const __m256i*)dst), v);
        _mm256_storeu_si256((__m256i*)dst, v);
    } else if (8 * j < cols) {
        int32_t tmp[8] __attribute__((aligned(32)));
        _mm256_store_si256((__m256i*)tmp, v);
        for (int64_t e = 0; e < cols - 8 * j; e++)
            dst[e] = sub ? (int32_t)((uint32_t)dst[e] - (uint32_t)tmp[e]) : tmp[e];
    }
}

static void ukern_int(const a2_uk* U) {
    const int8_t* a0 = U->a;
    const int8_t* a1 = a0 + U->lda;
    const int8_t* a2 = a1 + U->lda;
    const int8_t* a3 = a2 + U->lda;
    const __m256i* bp = (const __m256i*)U->bp;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
            c31 = c00;
    const int64_t spc = U->r / 4;
    int64_t l = 0;
    for (int64_t c = 0; c < U->nchunks; c++) {
        for (int64_t q = 0; q < spc; q++, l += 4, bp += A2_INT_STEP_BYTES / 32) {
            const __m256i b0 = _mm256_load_si256(bp), b1 = _mm256_load_si256(bp + 1);
#if A2_PACK_ABS
            const __m256i ab0 = _mm256_load_si256(bp + 2), ab1 = _mm256_load_si256(bp + 3);
#else
            const __m256i ab0 = _mm256_abs_epi8(b0), ab1 = _mm256_abs_epi8(b1);
#endif
            _mm_prefetch((const char*)(bp + 4 * A2_INT_STEP_BYTES / 32), _MM_HINT_T0);
            _mm_prefetch((const char*)(bp + 4 * A2_INT_STEP_BYTES / 32) + 64, _MM_HINT_T0);
            /* |b| (u8) x a * sign(b) (s8) = a b; pairs of products sum into s16 without saturating */
#define A2_ROW(AP, C0, C1)                                                                         \
    do {                                                                                           \
        const __m256i av = _mm256_set1_epi32(*(const a2_i32u*)((AP) + l));                         \
        C0 = _mm256_add_epi32(C0, _mm256_madd_epi16(_mm256_maddubs_epi16(ab0, _mm256_sign_epi8(av, b0)), ones)); \
        C1 = _mm256_add_epi32(C1, _mm256_madd_epi16(_mm256_maddubs_epi16(ab1, _mm256_sign_epi8(av, b1)), ones)); \
    } while (0)
            A2_ROW(a0, c00, c01);
            A2_ROW(a1, c10, c11);
            A2_ROW(a2, c20, c21);
            A2_ROW(a3, c30, c31);
#undef A2_ROW
        }
        a2_prefetch_l2(U, c);
        if (U->transcript) {
            const int slot = (int)(c & 15);
            const int fresh = c < 16;
            fold(U->mst + slot, _mm256_xor_si256(_mm256_xor_si256(c00, c10), _mm256_xor_si256(c20, c30)), fresh);
            fold(U->mst + 16 + slot, _mm256_xor_si256(_mm256_xor_si256(c01, c11), _mm256_xor_si256(c21, c31)), fresh);
        } else if (U->horner_sub && c + 1 < U->nchunks) {
            c00 = _mm256_slli_epi32(c00, 7); c01 = _mm256_slli_epi32(c01, 7);
            c10 = _mm256_slli_epi32(c10, 7); c11 = _mm256_slli_epi32(c11, 7);
            c20 = _mm256_slli_epi32(c20, 7); c21 = _mm256_slli_epi32(c21, 7);
            c30 = _mm256_slli_epi32(c30, 7); c31 = _mm256_slli_epi32(c31, 7);
        }
    }
    if (U->transcript && U->nchunks < 16) /* slots that never got a chunk read as zero */
        for (int64_t s = U->nchunks; s < 16; s++) U->mst[s] = U->mst[16 + s] = _mm256_setzero_si256();
    const int sub = U->horner_sub;
    store_c(U->cp, U->ldc, 0, 0, c00, U->cols, sub);
    store_c(U->cp, U->ldc, 0, 1, c01, U->cols, sub);
    store_c(U->cp, U->ldc, 1, 0, c10, U->cols, sub);
    store_c(U->cp, U->ldc, 1, 1, c11, U->cols, sub);
    store_c(U->cp, U->ldc, 2, 0, c20, U->cols, sub);
    store_c(U->cp, U->ldc, 2, 1, c21, U->cols, sub);
    store_c(U->cp, U->ldc, 3, 0, c30, U->cols, sub);
    store_c(U->cp, U->ldc, 3, 1, c31, U->cols, sub);
}

/* int16: 4 rows x 16 columns, pairs of k entries per vpmaddwd (products and pair sums fit int32) */
static void ukern_i16(const a2_uk* U, int64_t k) {
    const int16_t* a0 = (const int16_t*)U->a;
    const int16_t* a1 = a0 + U->lda;
    const int16_t* a2 = a1 + U->lda;
    const int16_t* a3 = a2 + U->lda;
    const __m256i* bp = (const __m256i*)U->bp;
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
            c31 = c00;
    for (int64_t l = 0; l < k; l += 2, bp += 2) {
        const __m256i b0 = _mm256_load_si256(bp), b1 = _mm256_load_si256(bp + 1);
        _mm_prefetch((const char*)(bp + 8), _MM_HINT_T0);
#define A2_ROW16(AP, C0, C1)                                                    \
    do {                                                                        \
        const __m256i av = _mm256_set1_epi32(*(const a2_i32u*)((AP) + l));      \
        C0 = _mm256_add_epi32(C0, _mm256_madd_epi16(av, b0));                   \
        C1 = _mm256_add_epi32(C1, _mm256_madd_epi16(av, b1));                   \
    } while (0)
        A2_ROW16(a0, c00, c01);
        A2_ROW16(a1, c10, c11);
        A2_ROW16(a2, c20, c21);
        A2_ROW16(a3, c30, c31);
#undef A2_ROW16
    }
    store_c(U->cp, U->ldc, 0, 0, c00, U->cols, 1);
    store_c(U->cp, U->ldc, 0, 1, c01, U->cols, 1);
    store_c(U->cp, U->ldc, 1, 0, c10, U->cols, 1);
    store_c(U->cp, U->ldc, 1, 1, c11, U->cols, 1);
    store_c(U->cp, U->ldc, 2, 0, c20, U->cols, 1);
    store_c(U->cp, U->ldc, 2, 1, c21, U->cols, 1);
    store_c(U->cp, U->ldc, 3, 0, c30, U->cols, 1);
    store_c(U->cp, U->ldc, 3, 1, c31, U->cols, 1);
}

static void ukern_f32(const a2_uk* U) {
    const float* ap = U->af;
    const float* bp = (const float*)U->bp;
    __m256i* run = U->run;
    for (int i = 0; i < 4 * NRV_F32; i++) run[i] = _mm256_setzero_si256();
    for (int64_t c = 0; c < U->nchunks; c++) {
        __m256 f00 = _mm256_setzero_ps(), f01 = f00, f02 = f00, f10 = f00, f11 = f00, f12 = f00, f20 = f00,
               f21 = f00, f22 = f00, f30 = f00, f31 = f00, f32 = f00;
        for (int64_t l = 0; l < U->r; l++, ap += 4, bp += 24) {
            const __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8), b2 = _mm256_load_ps(bp + 16);
            __m256 av = _mm256_broadcast_ss(ap);
            f00 = _mm256_fmadd_ps(av, b0, f00); f01 = _mm256_fmadd_ps(av, b1, f01); f02 = _mm256_fmadd_ps(av, b2, f02);
            av = _mm256_broadcast_ss(ap + 1);
            f10 = _mm256_fmadd_ps(av, b0, f10); f11 = _mm256_fmadd_ps(av, b1, f11); f12 = _mm256_fmadd_ps(av, b2, f12);
            av = _mm256_broadcast_ss(ap + 2);
            f20 = _mm256_fmadd_ps(av, b0, f20); f21 = _mm256_fmadd_ps(av, b1, f21); f22 = _mm256_fmadd_ps(av, b2, f22);
            av = _mm256_broadcast_ss(ap + 3);
            f30 = _mm256_fmadd_ps(av, b0, f30); f31 = _mm256_fmadd_ps(av, b1, f31); f32 = _mm256_fmadd_ps(av, b2, f32);
        }
        /* exact integers: convert, add into the int32 running sums, fold */
#define A2_ADD(I, F) \
    run[I] = _mm256_add_epi32(U->horner_sub ? _mm256_slli_epi32(run[I], 7) : run[I], _mm256_cvtps_epi32(F))
        A2_ADD(0, f00); A2_ADD(1, f01); A2_ADD(2, f02);
        A2_ADD(3, f10); A2_ADD(4, f11); A2_ADD(5, f12);
        A2_ADD(6, f20); A2_ADD(7, f21); A2_ADD(8, f22);
        A2_ADD(9, f30); A2_ADD(10, f31); A2_ADD(11, f32);
#undef A2_ADD
        a2_prefetch_l2(U, c);
        if (U->transcript) {
            const int slot = (int)(c & 15);
            const int fresh = c < 16;
            for (int j = 0; j < NRV_F32; j++) {
                const __m256i x = _mm256_xor_si256(_mm256_xor_si256(run[j], run[3 + j]),
                                                   _mm256_xor_si256(run[6 + j], run[9 + j]));
                fold(U->mst + 16 * j + slot, x, fresh);
            }
        }
    }
    if (U->transcript && U->nchunks < 16)
        for (int j = 0; j < NRV_F32; j++)
            for (int64_t s = U->nchunks; s < 16; s++) U->mst[16 * j + s] = _mm256_setzero_si256();
    for (int u = 0; u < 4; u++)
        for (int j = 0; j < NRV_F32; j++) store_c(U->cp, U->ldc, u, j, run[NRV_F32 * u + j], U->cols, U->horner_sub);
}

/* ---- driver ---------------------------------------------------------------------------------------------- */

static void block_worker(void* vctx, int tid, int nthreads) {
    a2_ctx* X = (a2_ctx*)vctx;
    (void)nthreads;
    const int64_t k = X->k, n = X->n, nrv = X->nrv;
    char* scr = X->scratch + tid * X->scratch_stride;
    float* afp = (float*)scr;                                      /* fp32: a_rows x k floats */
    __m256i* mst = (__m256i*)(scr + (X->fp32 ? a2_round64(X->a_rows * k * 4) : 0));
    __m256i* run = mst + nrv * 16;
    for (;;) {
        const int64_t item = __atomic_fetch_add(&X->next_block, 1, __ATOMIC_RELAXED);
        if (item >= X->nblocks * X->npg) break;
        const int64_t blk = item / X->npg, p0 = (item % X->npg) * X->ppg;
        const int64_t p1 = p0 + X->ppg < X->npanels ? p0 + X->ppg : X->npanels;
        const int64_t ib = blk * X->a_rows;
        const int64_t ie = ib + X->a_rows < X->m ? ib + X->a_rows : X->m;
        if (X->transcript) /* this block's tile rows, XORed into below */
            memset(X->msgs + (ib / X->th) * (n / X->tw) * A2_MSG_WORDS, 0,
                   sizeof(uint32_t) * (size_t)(((ie - ib) / X->th) * (n / X->tw) * A2_MSG_WORDS));
        if (X->fp32)
            for (int64_t row = ib; row < ie; row += MR) pack_a_quad_f32(X->a + row * k, k, k, afp + (row - ib) * k);
        const int64_t nquads = (ie - ib) / MR, nchunks = k / X->r;
        /* each quad's call pulls 1 / nquads of the next panel towards L2, spread over its chunks */
        const int64_t pf_lines = (X->panel_bytes / 64 + nquads * nchunks - 1) / (nquads * nchunks);
        for (int64_t p = p0; p < p1; p++) {
            const int64_t zv0 = p * nrv;
            const int64_t cols = n - zv0 * 8 < 8 * nrv ? n - zv0 * 8 : 8 * nrv;
            const char* pf = X->bpack + ((p + 1) % X->npanels) * X->panel_bytes;
            for (int64_t row = ib; row < ie; row += MR, pf += pf_lines * nchunks * 64) {
                a2_uk U;
                U.a = X->i16 ? (const int8_t*)((const int16_t*)X->a + row * k) : X->a + row * k;
                U.af = afp + (row - ib) * k;
                U.lda = k;
                U.bp = X->bpack + p * X->panel_bytes;
                U.nchunks = k / X->r;
                U.r = X->r;
                U.cp = X->c + row * n + zv0 * 8;
                U.ldc = n;
                U.cols = cols;
                U.mst = mst;
                U.run = run;
                U.transcript = X->transcript;
                U.horner_sub = X->horner_sub;
                U.pf = pf;
                U.pf_lines = pf_lines;
                if (X->i16)
                    ukern_i16(&U, k);
                else if (X->fp32)
                    ukern_f32(&U);
                else
                    ukern_int(&U);
                if (X->transcript) flush_state(X, mst, (int)nrv, row / X->th, zv0);
            }
        }
    }
}

static int a2_has_m128(const int8_t* x, int64_t len) {
    const __m256i m = _mm256_set1_epi8((char)-128);
    __m256i any = _mm256_setzero_si256();
    int64_t i = 0;
    for (; i + 32 <= len; i += 32)
        any = _mm256_or_si256(any, _mm256_cmpeq_epi8(_mm256_loadu_si256((const __m256i*)(x + i)), m));
    int hit = !_mm256_testz_si256(any, any);
    for (; i < len && !hit; i++) hit = x[i] == -128;
    return hit;
}

int pouw_avx2_supported(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached;
}

/* 1 when the AVX2 kernel takes these parameters (any inner loop): h % 4 == 0, and r % 4 == 0 or r <= 1024. */
int pouw_avx2_params_ok(int64_t m, int64_t k, int64_t n, int r, int th, int tw) {
    (void)m; (void)k; (void)n; (void)tw;
    if (th % 4) return 0;
    return r % 4 == 0 || r <= 1024;
}

int pouw_avx2_gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw,
                   int32_t* c, uint32_t* msgs, int threads, int flags) {
    if (!pouw_avx2_supported() || !pouw_avx2_params_ok(m, k, n, r, th, tw)) return A2_EINVAL;
    int fp32 = POUW_AVX2_DEFAULT_FP32;
    if (flags & A2_FLAG_FP32) fp32 = 1;
    if (flags & A2_FLAG_INT) fp32 = 0;
    if (r > 1024) fp32 = 0;
    if (r % 4) fp32 = 1;
    if (!fp32 && (a2_has_m128(a, m * k) || a2_has_m128(b, k * n))) {
        if (r > 1024) return A2_EINVAL; /* neither loop is exact here: the caller runs the portable path */
        fp32 = 1;
    }
    a2_ctx X;
    memset(&X, 0, sizeof X);
    X.a = a; X.b = b; X.m = m; X.k = k; X.n = n; X.r = r; X.th = th; X.tw = tw; X.c = c; X.msgs = msgs;
    X.horner_sub = (flags & A2_FLAG_HORNER_SUB) != 0;
    X.transcript = !(flags & A2_FLAG_NO_TRANSCRIPT) && !X.horner_sub;
    X.fp32 = fp32;
    X.nrv = fp32 ? NRV_F32 : NRV_INT;
    X.nv = (n + 7) / 8;
    X.npanels = (X.nv + X.nrv - 1) / X.nrv;
    X.panel_bytes = a2_round64(fp32 ? k * 32 * X.nrv : k / 4 * A2_INT_STEP_BYTES);
    /* work items: blocks of whole tile rows (th, a multiple of 4); without the transcript (no messages shared by
     * the columns of a tile row) a block's panels may be split into groups too, for short wide products (P·B') */
    const int64_t unit = th;
    const int64_t nunits = m / unit;
    if (X.transcript && threads > nunits) threads = (int)nunits;
    if (threads < 1) threads = 1;
    int64_t ar = POUW_AVX2_A_BLOCK_BYTES / (k * (fp32 ? 4 : 1));
    const int64_t per_thread = (m + 4 * threads - 1) / (4 * threads);
    if (X.transcript && threads > 1 && ar > per_thread) ar = per_thread;
    if (ar > m) ar = m;
    ar = (ar / unit) * unit;
    if (ar < unit) ar = unit;
    X.a_rows = ar;
    X.nblocks = (m + ar - 1) / ar;
    X.npg = 1;
    if (!X.transcript && X.nblocks < 4 * threads) {
        X.npg = (4 * threads + X.nblocks - 1) / X.nblocks;
        if (X.npg > X.npanels) X.npg = X.npanels;
    }
    X.ppg = (X.npanels + X.npg - 1) / X.npg;
    X.npg = (X.npanels + X.ppg - 1) / X.ppg;
    if (threads > X.nblocks * X.npg) threads = (int)(X.nblocks * X.npg);
    X.scratch_stride = a2_round64((fp32 ? ar * k * 4 : 0) + (int64_t)sizeof(__m256i) * (X.nrv * 16 + 4 * X.nrv) + 64);
    const int64_t off_s = a2_round64(X.npanels * X.panel_bytes);
    char* ws = (char*)aligned_alloc(64, (size_t)a2_round64(off_s + threads * X.scratch_stride));
    if (!ws) return A2_ENOMEM;
    X.bpack = ws;
    X.scratch = ws + off_s;
    pouw_internal_run_team(pack_worker, &X, threads);
    pouw_internal_run_team(block_worker, &X, threads);
    free(ws);
    return A2_OK;
}

/*
 * The recovery's one pass on the AVX2 kernel: c -= sum_i 128^i U_i V_i (wrapping int32) with U = [U_{d-1} | .. |
 * U_0] (m x d w int8, the highest digit first) and V = [V_{d-1} ; .. ; V_0] (d w x n): chunks of width w are the
 * digits, S = 128 S + U_i V_i at every chunk boundary (Horner). m % 4 == 0; w % 4 == 0 or w <= 1024.
 */
int pouw_avx2_sub_correction(int32_t* c, const int8_t* u, const int8_t* v, int64_t m, int64_t n, int64_t d,
                             int64_t w, int threads) {
    if (!c || !u || !v || m <= 0 || n <= 0 || d <= 0 || w <= 0 || m % 4 || w > 65536) return A2_EINVAL;
    uint32_t dummy[A2_MSG_WORDS];
    return pouw_avx2_gemm(u, v, m, d * w, n, (int)w, 4, 1, c, dummy, threads,
                          A2_FLAG_NO_TRANSCRIPT | A2_FLAG_HORNER_SUB);
}

/*
 * c -= u v (wrapping int32) for int16 u (m x k) and v (k x n), k even, m % 4 == 0: the recovery with A·Q and P·B'
 * whole (|entries| < 2^15) instead of in base-128 digits, half the multiply-adds of two digits.
 */
int pouw_avx2_sub_i16(int32_t* c, const int16_t* u, const int16_t* v, int64_t m, int64_t k, int64_t n,
                      int threads) {
    if (!pouw_avx2_supported()) return A2_EINVAL;
    if (!c || !u || !v || m <= 0 || n <= 0 || k <= 0 || (k & 1) || (m & 3)) return A2_EINVAL;
    a2_ctx X;
    memset(&X, 0, sizeof X);
    X.a = (const int8_t*)u; X.b = (const int8_t*)v; X.m = m; X.k = k; X.n = n; X.r = (int)k; X.th = 4; X.tw = 1;
    X.c = c;
    X.i16 = 1;
    X.horner_sub = 1;
    X.nrv = NRV_INT;
    X.nv = (n + 7) / 8;
    X.npanels = (X.nv + X.nrv - 1) / X.nrv;
    X.panel_bytes = a2_round64(k / 2 * 64);
    int64_t ar = POUW_AVX2_A_BLOCK_BYTES / (2 * k);
    if (ar > m) ar = m;
    ar = (ar / 4) * 4;
    if (ar < 4) ar = 4;
    X.a_rows = ar;
    X.nblocks = (m + ar - 1) / ar;
    if (threads < 1) threads = 1;
    X.npg = 1;
    if (X.nblocks < 4 * threads) {
        X.npg = (4 * threads + X.nblocks - 1) / X.nblocks;
        if (X.npg > X.npanels) X.npg = X.npanels;
    }
    X.ppg = (X.npanels + X.npg - 1) / X.npg;
    X.npg = (X.npanels + X.ppg - 1) / X.ppg;
    if (threads > X.nblocks * X.npg) threads = (int)(X.nblocks * X.npg);
    X.scratch_stride = a2_round64((int64_t)sizeof(__m256i) * (X.nrv * 16 + 4 * X.nrv) + 64);
    const int64_t off_s = a2_round64(X.npanels * X.panel_bytes);
    char* ws = (char*)aligned_alloc(64, (size_t)a2_round64(off_s + threads * X.scratch_stride));
    if (!ws) return A2_ENOMEM;
    X.bpack = ws;
    X.scratch = ws + off_s;
    pouw_internal_run_team(pack_worker, &X, threads);
    pouw_internal_run_team(block_worker, &X, threads);
    free(ws);
    return A2_OK;
}

/*
 * P·B' of the recovery without a GEMM: out (r x n int32) = sum over l of row l of b (k x n int8) added to row
 * idx[l] (idx in [0, r)). Column slabs of 64 (r x 64 int32 in L1) are handed out to the threads.
 */
typedef struct {
    const int8_t* b;
    const int32_t* idx;
    int64_t k, n, r;
    int32_t* out;
    int32_t* slabs;
    int64_t next;
} a2_scatter_ctx;

static void scatter_worker(void* vctx, int tid, int nthreads) {
    a2_scatter_ctx* X = (a2_scatter_ctx*)vctx;
    (void)nthreads;
    const int64_t n = X->n, r = X->r, k = X->k, nslabs = (n + 63) / 64;
    int32_t* slab = X->slabs + (int64_t)tid * r * 64;
    for (;;) {
        const int64_t s = __atomic_fetch_add(&X->next, 1, __ATOMIC_RELAXED);
        if (s >= nslabs) break;
        const int64_t c0 = s * 64, width = n - c0 < 64 ? n - c0 : 64;
        memset(slab, 0, (size_t)r * 64 * sizeof(int32_t));
        const int8_t* src = X->b + c0;
        if (width == 64) {
            for (int64_t l = 0; l < k; l++, src += n) {
                _mm_prefetch((const char*)(src + 16 * n), _MM_HINT_T0);
                __m256i* sp = (__m256i*)(slab + (int64_t)X->idx[l] * 64);
                for (int t = 0; t < 8; t++) {
                    const __m256i w = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(src + 8 * t)));
                    _mm256_store_si256(sp + t, _mm256_add_epi32(_mm256_load_si256(sp + t), w));
                }
            }
        } else {
            for (int64_t l = 0; l < k; l++, src += n) {
                int32_t* sp = slab + (int64_t)X->idx[l] * 64;
                for (int64_t v = 0; v < width; v++) sp[v] += src[v];
            }
        }
        for (int64_t j = 0; j < r; j++) memcpy(X->out + j * n + c0, slab + j * 64, (size_t)width * sizeof(int32_t));
    }
}

int pouw_avx2_scatter_rows(const int8_t* b, const int32_t* idx, int64_t k, int64_t n, int64_t r, int32_t* out,
                           int threads) {
    if (!b || !idx || !out || k < 0 || n < 1 || r < 1) return A2_EINVAL;
    for (int64_t l = 0; l < k; l++)
        if (idx[l] < 0 || idx[l] >= r) return A2_EINVAL;
    const int64_t nslabs = (n + 63) / 64;
    if (threads > nslabs) threads = (int)nslabs;
    if (threads < 1) threads = 1;
    a2_scatter_ctx X = {b, idx, k, n, r, out, NULL, 0};
    X.slabs = (int32_t*)aligned_alloc(64, (size_t)(threads * r * 64 * (int64_t)sizeof(int32_t)));
    if (!X.slabs) return A2_ENOMEM;
    pouw_internal_run_team(scatter_worker, &X, threads);
    free(X.slabs);
    return A2_OK;
}

/* A·Q of the recovery without a GEMM: out (m x r int32), out[u][j] = sum of a[u][l] (a: m x k int8) over the l
 * with idx[l] == j; rows handed out to the threads in blocks of 16. */
typedef struct {
    const int8_t* a;
    const int32_t* idx;
    int64_t m, k, r;
    int32_t* out;
    int64_t next;
} a2_colsum_ctx;

static void colsum_worker(void* vctx, int tid, int nthreads) {
    a2_colsum_ctx* X = (a2_colsum_ctx*)vctx;
    (void)tid;
    (void)nthreads;
    const int64_t m = X->m, k = X->k, r = X->r;
    const int32_t* restrict idx = X->idx;
    for (;;) {
        const int64_t u0 = __atomic_fetch_add(&X->next, 16, __ATOMIC_RELAXED);
        if (u0 >= m) break;
        const int64_t u1 = u0 + 16 < m ? u0 + 16 : m;
        for (int64_t u = u0; u < u1; u++) {
            int32_t* restrict acc = X->out + u * r;
            const int8_t* restrict row = X->a + u * k;
            memset(acc, 0, (size_t)r * sizeof(int32_t));
            for (int64_t l = 0; l < k; l++) acc[idx[l]] += row[l];
        }
    }
}

int pouw_avx2_gather_cols(const int8_t* a, const int32_t* idx, int64_t m, int64_t k, int64_t r, int32_t* out,
                          int threads) {
    if (!a || !idx || !out || m < 0 || k < 0 || r < 1) return A2_EINVAL;
    for (int64_t l = 0; l < k; l++)
        if (idx[l] < 0 || idx[l] >= r) return A2_EINVAL;
    if (threads > (m + 15) / 16) threads = (int)((m + 15) / 16);
    if (threads < 1) threads = 1;
    a2_colsum_ctx X = {a, idx, m, k, r, out, 0};
    pouw_internal_run_team(colsum_worker, &X, threads);
    return A2_OK;
}

#pragma GCC pop_options

#else /* not x86-64 */

int pouw_avx2_gather_cols(const int8_t* a, const int32_t* idx, int64_t m, int64_t k, int64_t r, int32_t* out,
                          int threads) {
    (void)a; (void)idx; (void)m; (void)k; (void)r; (void)out; (void)threads;
    return A2_EINVAL;
}

int pouw_avx2_scatter_rows(const int8_t* b, const int32_t* idx, int64_t k, int64_t n, int64_t r, int32_t* out,
                           int threads) {
    (void)b; (void)idx; (void)k; (void)n; (void)r; (void)out; (void)threads;
    return A2_EINVAL;
}
int pouw_avx2_sub_i16(int32_t* c, const int16_t* u, const int16_t* v, int64_t m, int64_t k, int64_t n,
                      int threads) {
    (void)c; (void)u; (void)v; (void)m; (void)k; (void)n; (void)threads;
    return A2_EINVAL;
}

int pouw_avx2_sub_correction(int32_t* c, const int8_t* u, const int8_t* v, int64_t m, int64_t n, int64_t d,
                             int64_t w, int threads) {
    (void)c; (void)u; (void)v; (void)m; (void)n; (void)d; (void)w; (void)threads;
    return A2_EINVAL;
}

int pouw_avx2_supported(void) { return 0; }
int pouw_avx2_params_ok(int64_t m, int64_t k, int64_t n, int r, int th, int tw) {
    (void)m; (void)k; (void)n; (void)r; (void)th; (void)tw;
    return 0;
}
int pouw_avx2_gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw,
                   int32_t* c, uint32_t* msgs, int threads, int flags) {
    (void)a; (void)b; (void)m; (void)k; (void)n; (void)r; (void)th; (void)tw; (void)c; (void)msgs; (void)threads;
    (void)flags;
    return A2_EINVAL;
}

#endif
