/*
 * NEON kernel for the PoUW mining contract (kernels/base.py), for aarch64 CPUs (ARM servers: Graviton, Ampere,
 * Neoverse; Apple M-series under Linux; Cortex-A7x boards): the same outputs, bit for bit, as the other kernels.
 *
 *   S_c = sum_{c' <= c} A[:, c'r:(c'+1)r] @ B[c'r:(c'+1)r, :]   (exact int32), x = XOR of each h x w tile of S_c,
 *   msg[c % 16] = rotl32(msg[c % 16], 13) ^ x;   outputs C = S_{k/r-1} and the messages.
 *
 * B is packed once per call into panels of 16 columns: per 4 k entries (a "quad"), 64 bytes = 16 columns x 4
 * consecutive k bytes (column-major quads, the operand layout of SDOT). Two inner loops on that one packing
 * (pouw_neon_default_variant() says which runs; FLAG_NEON_DOT / FLAG_NEON_MULL force one):
 *
 *  - "dot" (ARMv8.2 dotprod, HWCAP_ASIMDDP / "asimddp" in /proc/cpuinfo): 4 rows x 16 columns, 16 int32x4
 *    accumulators. SDOT (vdotq_lane_s32) adds 4 exact int8 products into each int32 lane: with A's row loaded 8
 *    k entries at a time, one SDOT per row and 4-column vector per quad.
 *  - "mull" (any ARMv8 NEON): 4 rows x 8 columns. vmull_s8 / vmull_high_s8 multiply a quad of A (broadcast)
 *    with two columns' quads into int16 (every single product fits, -128 * -128 included), vpadalq_s16 adds
 *    adjacent pairs into int32 lanes (column, k-half); vpaddq_s32 gives the column sums at each chunk end.
 *
 * Both are exact for every int8 operand (-128 included) and any k up to 65536 (|S| <= 2^30): no fallback.
 * Parameters: r % 4 == 0 (a quad never straddles a chunk) and h % 4 == 0 (a 4-row group lies in one tile row).
 *
 * The transcript (as in avx2_gemm.c): per 4-row group and 4-column vector a state of 16 slot vectors,
 * M[slot] = rotl(M[slot], 13) ^ XOR_{4 rows} S_c, kept in L1 (rotl and XOR are GF(2)-linear and lane-wise, so a
 * tile's word is the XOR of the lanes and row groups of its state vectors): reduced after the k loop and XORed
 * into the messages, which the owner of the tile row zeroes first. Blocks of whole tile rows go to the threads
 * (pool.c); FLAG_NO_TRANSCRIPT: C only (the engine's plain GEMM), where a block's panels may be split too.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "pouw_native.h"
#include "workspace.h"

#if defined(__aarch64__) && defined(__GNUC__)
#include <arm_neon.h>
#ifdef __linux__
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

/* the SDOT loop's functions: built for dotprod whatever -march says, run only where the CPU has it */
#ifdef __clang__
#define NE_DOT_TARGET __attribute__((target("dotprod")))
#else
#define NE_DOT_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

#define NE_MR 4          /* rows per microkernel call */
#define NE_NRV 4         /* 4-column vectors per panel */
#define NE_PANEL 16      /* columns per panel */
#define NE_QUAD 64       /* packed bytes per k quad of one panel */
#ifndef POUW_NEON_A_BLOCK_BYTES
#define POUW_NEON_A_BLOCK_BYTES (256 * 1024)
#endif

/* 1 when the CPU has ARMv8.2 dotprod (Linux: HWCAP_ASIMDDP, "asimddp" in /proc/cpuinfo; elsewhere: what the
 * compiler was told) */
static int ne_cpu_has_dot(void) {
#ifdef __linux__
    static int cached = -1;
    if (cached < 0) cached = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
    return cached;
#elif defined(__ARM_FEATURE_DOTPROD)
    return 1;
#else
    return 0;
#endif
}

typedef struct {
    const int8_t* a;
    const int8_t* b;
    int64_t m, k, n;
    int r, th, tw;
    int32_t* c;
    uint32_t* msgs;
    int transcript, dot, horner_sub;
    int64_t npanels, panel_bytes;
    int8_t* bpack;
    int64_t unit, a_rows, nblocks;
    int64_t npg, ppg;                 /* panel groups per block (several only without the transcript) */
    int64_t next_panel, next_block;   /* atomic work counters */
} ne_ctx;

/* ---- B packing ------------------------------------------------------------------------------------------- */

static void ne_pack_panel(const ne_ctx* X, int64_t p) {
    const int64_t k = X->k, n = X->n, v0 = p * NE_PANEL;
    int8_t* dst = X->bpack + p * X->panel_bytes;
    for (int64_t q = 0; q < k / 4; q++, dst += NE_QUAD) {
        const int8_t* s = X->b + 4 * q * n + v0;
        if (v0 + NE_PANEL <= n) {
            const int8x16_t r0 = vld1q_s8(s), r1 = vld1q_s8(s + n), r2 = vld1q_s8(s + 2 * n),
                            r3 = vld1q_s8(s + 3 * n);
            const int16x8_t t0 = vreinterpretq_s16_s8(vzip1q_s8(r0, r1)), t1 = vreinterpretq_s16_s8(vzip2q_s8(r0, r1));
            const int16x8_t t2 = vreinterpretq_s16_s8(vzip1q_s8(r2, r3)), t3 = vreinterpretq_s16_s8(vzip2q_s8(r2, r3));
            vst1q_s8(dst, vreinterpretq_s8_s16(vzip1q_s16(t0, t2)));      /* columns 0..3 */
            vst1q_s8(dst + 16, vreinterpretq_s8_s16(vzip2q_s16(t0, t2))); /* 4..7 */
            vst1q_s8(dst + 32, vreinterpretq_s8_s16(vzip1q_s16(t1, t3))); /* 8..11 */
            vst1q_s8(dst + 48, vreinterpretq_s8_s16(vzip2q_s16(t1, t3))); /* 12..15 */
        } else {
            for (int64_t v = 0; v < NE_PANEL; v++)
                for (int64_t i = 0; i < 4; i++) dst[4 * v + i] = v0 + v < n ? s[i * n + v] : 0;
        }
    }
}

static void ne_pack_worker(void* vctx, int tid, int nthreads) {
    ne_ctx* X = (ne_ctx*)vctx;
    (void)tid;
    (void)nthreads;
    for (;;) {
        const int64_t p = __atomic_fetch_add(&X->next_panel, 1, __ATOMIC_RELAXED);
        if (p >= X->npanels) break;
        ne_pack_panel(X, p);
    }
}

/* ---- transcript ------------------------------------------------------------------------------------------ */

static inline uint32x4_t ne_rotl13(uint32x4_t x) { return vsriq_n_u32(vshlq_n_u32(x, ROT), x, 32 - ROT); }

/* M[slot] = rotl(M[slot]) ^ x (the slot's first chunk: M[slot] = x) */
static inline void ne_fold(uint32x4_t* mslot, int32x4_t x, int fresh) {
    const uint32x4_t xu = vreinterpretq_u32_s32(x);
    *mslot = fresh ? xu : veorq_u32(ne_rotl13(*mslot), xu);
}

static inline int32x4_t ne_xor4(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
    return veorq_s32(veorq_s32(a, b), veorq_s32(c, d));
}

/* XOR one 4-row group's state (NE_NRV x 16 slot vectors, lane = column) into the messages of tile row ti, for the
 * panel whose first column is zc0. */
static void ne_flush_state(const ne_ctx* X, const uint32x4_t* st, int64_t ti, int64_t zc0) {
    const int64_t n = X->n, tw = X->tw, ntj = n / tw;
    uint32_t* mrow = X->msgs + ti * ntj * MSG_WORDS;
    for (int j = 0; j < NE_NRV; j++) {
        const int64_t c0 = zc0 + 4 * j; /* first column of this vector */
        if (c0 >= n) break;
        const uint32x4_t* s = st + j * MSG_WORDS;
        if (tw % 4 == 0) { /* the 4 lanes lie in one tile: a 4 x 4 transpose-and-XOR per 4 slots */
            uint32_t* dst = mrow + (c0 / tw) * MSG_WORDS;
            for (int g = 0; g < MSG_WORDS; g += 4) {
                const uint32x4_t t0 = veorq_u32(vzip1q_u32(s[g], s[g + 1]), vzip2q_u32(s[g], s[g + 1]));
                const uint32x4_t t1 = veorq_u32(vzip1q_u32(s[g + 2], s[g + 3]), vzip2q_u32(s[g + 2], s[g + 3]));
                const uint64x2_t u0 = vreinterpretq_u64_u32(t0), u1 = vreinterpretq_u64_u32(t1);
                const uint32x4_t x = vreinterpretq_u32_u64(veorq_u64(vzip1q_u64(u0, u1), vzip2q_u64(u0, u1)));
                vst1q_u32(dst + g, veorq_u32(vld1q_u32(dst + g), x));
            }
        } else {
            uint32_t lanes[4];
            for (int sl = 0; sl < MSG_WORDS; sl++) {
                vst1q_u32(lanes, s[sl]);
                for (int64_t e = 0; e < 4 && c0 + e < n; e++) mrow[((c0 + e) / tw) * MSG_WORDS + sl] ^= lanes[e];
            }
        }
    }
}

/* ---- microkernels: 4 rows x one panel (dot) or half a panel (mull), the whole k -------------------------- */

typedef struct {
    const int8_t* a[NE_MR]; /* the rows (a missing row of a tail repeats a valid one: computed, never stored) */
    int rows;               /* valid rows */
    const int8_t* bp;       /* packed panel */
    int64_t nchunks, r;
    int32_t* cp;            /* C at (first row, first column of the panel), row stride ldc */
    int64_t ldc;
    int64_t cols;           /* valid columns of this panel (<= 16) */
    uint32x4_t* mst;        /* NE_NRV x 16 state vectors */
    int transcript, horner_sub;
} ne_uk;

/* C = v (sub: C -= v, wrapping) for the valid columns of vector j of row u */
static inline void ne_store(const ne_uk* U, int u, int j, int32x4_t v) {
    if (u >= U->rows || 4 * j >= U->cols) return;
    int32_t* dst = U->cp + u * U->ldc + 4 * j;
    if (4 * j + 4 <= U->cols) {
        if (U->horner_sub) v = vsubq_s32(vld1q_s32(dst), v);
        vst1q_s32(dst, v);
    } else {
        int32_t tmp[4];
        vst1q_s32(tmp, v);
        for (int64_t e = 0; e < U->cols - 4 * j; e++)
            dst[e] = U->horner_sub ? (int32_t)((uint32_t)dst[e] - (uint32_t)tmp[e]) : tmp[e];
    }
}

/* slots that never got a chunk read as zero */
static inline void ne_zero_unused(const ne_uk* U, int j0, int nj) {
    if (U->transcript && U->nchunks < MSG_WORDS)
        for (int j = j0; j < j0 + nj; j++)
            for (int64_t s = U->nchunks; s < MSG_WORDS; s++) U->mst[j * MSG_WORDS + s] = vdupq_n_u32(0);
}

static inline int32x4_t ne_load_quad(const int8_t* p) {
    int32_t x;
    memcpy(&x, p, 4);
    return vdupq_n_s32(x);
}

NE_DOT_TARGET static void ne_ukern_dot(const ne_uk* U) {
    const int8_t *a0 = U->a[0], *a1 = U->a[1], *a2 = U->a[2], *a3 = U->a[3];
    const int8_t* bp = U->bp;
    int32x4_t c00 = vdupq_n_s32(0), c01 = c00, c02 = c00, c03 = c00, c10 = c00, c11 = c00, c12 = c00, c13 = c00,
              c20 = c00, c21 = c00, c22 = c00, c23 = c00, c30 = c00, c31 = c00, c32 = c00, c33 = c00;
    int64_t l = 0;
    for (int64_t c = 0; c < U->nchunks; c++) {
        const int64_t lend = l + U->r;
        /* 8 k entries of each A row at a time, quad t of them in lane t: 16 accumulators, 8 B and 4 A registers
         * (with 16 k at a time the compiler keeps 16 B registers live and spills) */
        for (; l + 8 <= lend; l += 8, bp += 2 * NE_QUAD) {
            const int8x8_t A0 = vld1_s8(a0 + l), A1 = vld1_s8(a1 + l), A2 = vld1_s8(a2 + l), A3 = vld1_s8(a3 + l);
            __builtin_prefetch(bp + 8 * NE_QUAD);
            __builtin_prefetch(bp + 9 * NE_QUAD);
#define NE_DOT_QUAD(T)                                                                                          \
    do {                                                                                                        \
        const int8x16_t b0 = vld1q_s8(bp + (T) * NE_QUAD), b1 = vld1q_s8(bp + (T) * NE_QUAD + 16),              \
                        b2 = vld1q_s8(bp + (T) * NE_QUAD + 32), b3 = vld1q_s8(bp + (T) * NE_QUAD + 48);         \
        c00 = vdotq_lane_s32(c00, b0, A0, T); c01 = vdotq_lane_s32(c01, b1, A0, T);                           \
        c02 = vdotq_lane_s32(c02, b2, A0, T); c03 = vdotq_lane_s32(c03, b3, A0, T);                           \
        c10 = vdotq_lane_s32(c10, b0, A1, T); c11 = vdotq_lane_s32(c11, b1, A1, T);                           \
        c12 = vdotq_lane_s32(c12, b2, A1, T); c13 = vdotq_lane_s32(c13, b3, A1, T);                           \
        c20 = vdotq_lane_s32(c20, b0, A2, T); c21 = vdotq_lane_s32(c21, b1, A2, T);                           \
        c22 = vdotq_lane_s32(c22, b2, A2, T); c23 = vdotq_lane_s32(c23, b3, A2, T);                           \
        c30 = vdotq_lane_s32(c30, b0, A3, T); c31 = vdotq_lane_s32(c31, b1, A3, T);                           \
        c32 = vdotq_lane_s32(c32, b2, A3, T); c33 = vdotq_lane_s32(c33, b3, A3, T);                           \
    } while (0)
            NE_DOT_QUAD(0);
            NE_DOT_QUAD(1);
#undef NE_DOT_QUAD
        }
        /* the chunk's last quad (r % 8 != 0): A's quad broadcast */
        for (; l < lend; l += 4, bp += NE_QUAD) {
            const int8x16_t A0 = vreinterpretq_s8_s32(ne_load_quad(a0 + l)), A1 = vreinterpretq_s8_s32(ne_load_quad(a1 + l)),
                            A2 = vreinterpretq_s8_s32(ne_load_quad(a2 + l)), A3 = vreinterpretq_s8_s32(ne_load_quad(a3 + l));
            const int8x16_t b0 = vld1q_s8(bp), b1 = vld1q_s8(bp + 16), b2 = vld1q_s8(bp + 32), b3 = vld1q_s8(bp + 48);
            c00 = vdotq_s32(c00, b0, A0); c01 = vdotq_s32(c01, b1, A0); c02 = vdotq_s32(c02, b2, A0); c03 = vdotq_s32(c03, b3, A0);
            c10 = vdotq_s32(c10, b0, A1); c11 = vdotq_s32(c11, b1, A1); c12 = vdotq_s32(c12, b2, A1); c13 = vdotq_s32(c13, b3, A1);
            c20 = vdotq_s32(c20, b0, A2); c21 = vdotq_s32(c21, b1, A2); c22 = vdotq_s32(c22, b2, A2); c23 = vdotq_s32(c23, b3, A2);
            c30 = vdotq_s32(c30, b0, A3); c31 = vdotq_s32(c31, b1, A3); c32 = vdotq_s32(c32, b2, A3); c33 = vdotq_s32(c33, b3, A3);
        }
        if (U->transcript) {
            const int slot = (int)(c & (MSG_WORDS - 1));
            const int fresh = c < MSG_WORDS;
            ne_fold(U->mst + slot, ne_xor4(c00, c10, c20, c30), fresh);
            ne_fold(U->mst + MSG_WORDS + slot, ne_xor4(c01, c11, c21, c31), fresh);
            ne_fold(U->mst + 2 * MSG_WORDS + slot, ne_xor4(c02, c12, c22, c32), fresh);
            ne_fold(U->mst + 3 * MSG_WORDS + slot, ne_xor4(c03, c13, c23, c33), fresh);
        } else if (U->horner_sub && c + 1 < U->nchunks) {
            c00 = vshlq_n_s32(c00, 7); c01 = vshlq_n_s32(c01, 7); c02 = vshlq_n_s32(c02, 7); c03 = vshlq_n_s32(c03, 7);
            c10 = vshlq_n_s32(c10, 7); c11 = vshlq_n_s32(c11, 7); c12 = vshlq_n_s32(c12, 7); c13 = vshlq_n_s32(c13, 7);
            c20 = vshlq_n_s32(c20, 7); c21 = vshlq_n_s32(c21, 7); c22 = vshlq_n_s32(c22, 7); c23 = vshlq_n_s32(c23, 7);
            c30 = vshlq_n_s32(c30, 7); c31 = vshlq_n_s32(c31, 7); c32 = vshlq_n_s32(c32, 7); c33 = vshlq_n_s32(c33, 7);
        }
    }
    ne_zero_unused(U, 0, NE_NRV);
    ne_store(U, 0, 0, c00); ne_store(U, 0, 1, c01); ne_store(U, 0, 2, c02); ne_store(U, 0, 3, c03);
    ne_store(U, 1, 0, c10); ne_store(U, 1, 1, c11); ne_store(U, 1, 2, c12); ne_store(U, 1, 3, c13);
    ne_store(U, 2, 0, c20); ne_store(U, 2, 1, c21); ne_store(U, 2, 2, c22); ne_store(U, 2, 3, c23);
    ne_store(U, 3, 0, c30); ne_store(U, 3, 1, c31); ne_store(U, 3, 2, c32); ne_store(U, 3, 3, c33);
}

/* columns 8 hf .. 8 hf + 7 of the panel (vectors 2 hf, 2 hf + 1). Accumulator lanes: (column, k half) pairs. */
static void ne_ukern_mull(const ne_uk* U, int hf) {
    const int8_t* ar[NE_MR] = {U->a[0], U->a[1], U->a[2], U->a[3]};
    const int8_t* bp = U->bp + 32 * hf;
    int32x4_t acc[NE_MR][2][2];
    for (int u = 0; u < NE_MR; u++)
        for (int j = 0; j < 2; j++) acc[u][j][0] = acc[u][j][1] = vdupq_n_s32(0);
    int64_t l = 0;
    for (int64_t c = 0; c < U->nchunks; c++) {
        const int64_t lend = l + U->r;
        for (; l < lend; l += 4, bp += NE_QUAD) {
            const int8x16_t b0 = vld1q_s8(bp), b1 = vld1q_s8(bp + 16);
            __builtin_prefetch(bp + 8 * NE_QUAD);
            for (int u = 0; u < NE_MR; u++) { /* unrolled by the compiler: all indices are constants */
                const int8x16_t av = vreinterpretq_s8_s32(ne_load_quad(ar[u] + l));
                acc[u][0][0] = vpadalq_s16(acc[u][0][0], vmull_s8(vget_low_s8(av), vget_low_s8(b0)));
                acc[u][0][1] = vpadalq_s16(acc[u][0][1], vmull_high_s8(av, b0));
                acc[u][1][0] = vpadalq_s16(acc[u][1][0], vmull_s8(vget_low_s8(av), vget_low_s8(b1)));
                acc[u][1][1] = vpadalq_s16(acc[u][1][1], vmull_high_s8(av, b1));
            }
        }
        if (U->transcript) {
            const int slot = (int)(c & (MSG_WORDS - 1));
            const int fresh = c < MSG_WORDS;
            for (int j = 0; j < 2; j++) {
                int32x4_t s[NE_MR];
                for (int u = 0; u < NE_MR; u++) s[u] = vpaddq_s32(acc[u][j][0], acc[u][j][1]);
                ne_fold(U->mst + (2 * hf + j) * MSG_WORDS + slot, ne_xor4(s[0], s[1], s[2], s[3]), fresh);
            }
        } else if (U->horner_sub && c + 1 < U->nchunks) {
            for (int u = 0; u < NE_MR; u++)
                for (int j = 0; j < 2; j++)
                    for (int h = 0; h < 2; h++) acc[u][j][h] = vshlq_n_s32(acc[u][j][h], 7);
        }
    }
    ne_zero_unused(U, 2 * hf, 2);
    for (int u = 0; u < NE_MR; u++)
        for (int j = 0; j < 2; j++) ne_store(U, u, 2 * hf + j, vpaddq_s32(acc[u][j][0], acc[u][j][1]));
}

/* ---- driver ---------------------------------------------------------------------------------------------- */

static void ne_block_worker(void* vctx, int tid, int nthreads) {
    ne_ctx* X = (ne_ctx*)vctx;
    (void)tid;
    (void)nthreads;
    const int64_t k = X->k, n = X->n, m = X->m;
    uint32x4_t mst[NE_NRV * MSG_WORDS];
    for (;;) {
        const int64_t item = __atomic_fetch_add(&X->next_block, 1, __ATOMIC_RELAXED);
        if (item >= X->nblocks * X->npg) break;
        const int64_t blk = item / X->npg, p0 = (item % X->npg) * X->ppg;
        const int64_t p1 = p0 + X->ppg < X->npanels ? p0 + X->ppg : X->npanels;
        const int64_t ib = blk * X->a_rows;
        const int64_t ie = ib + X->a_rows < m ? ib + X->a_rows : m;
        if (X->transcript) /* this block's tile rows, XORed into below */
            memset(X->msgs + (ib / X->th) * (n / X->tw) * MSG_WORDS, 0,
                   sizeof(uint32_t) * (size_t)(((ie - ib) / X->th) * (n / X->tw) * MSG_WORDS));
        for (int64_t p = p0; p < p1; p++) {
            const int64_t zc0 = p * NE_PANEL;
            for (int64_t row = ib; row < ie; row += NE_MR) {
                ne_uk U;
                U.rows = ie - row < NE_MR ? (int)(ie - row) : NE_MR;
                for (int u = 0; u < NE_MR; u++) U.a[u] = X->a + (row + (u < U.rows ? u : 0)) * k;
                U.bp = X->bpack + p * X->panel_bytes;
                U.nchunks = k / X->r;
                U.r = X->r;
                U.cp = X->c + row * n + zc0;
                U.ldc = n;
                U.cols = n - zc0 < NE_PANEL ? n - zc0 : NE_PANEL;
                U.mst = mst;
                U.transcript = X->transcript;
                U.horner_sub = X->horner_sub;
                if (X->dot) {
                    ne_ukern_dot(&U);
                } else {
                    ne_ukern_mull(&U, 0);
                    if (U.cols > 8) ne_ukern_mull(&U, 1);
                }
                if (X->transcript) ne_flush_state(X, mst, row / X->th, zc0);
            }
        }
    }
}

/* the GEMM on threads; unit: rows per work unit (th with the transcript, else 4; m need not be a multiple
 * without the transcript) */
static int ne_run(ne_ctx* X, int threads) {
    const int64_t m = X->m, k = X->k;
    X->npanels = (X->n + NE_PANEL - 1) / NE_PANEL;
    X->panel_bytes = (k / 4) * NE_QUAD;
    const int64_t nunits = (m + X->unit - 1) / X->unit;
    if (threads < 1) threads = 1;
    if (X->transcript && threads > nunits) threads = (int)nunits;
    int64_t ar = POUW_NEON_A_BLOCK_BYTES / k;
    const int64_t per_thread = (m + (int64_t)NE_MR * threads - 1) / ((int64_t)NE_MR * threads);
    if (X->transcript && threads > 1 && ar > per_thread) ar = per_thread;
    if (ar > m) ar = m;
    ar = (ar / X->unit) * X->unit;
    if (ar < X->unit) ar = X->unit;
    X->a_rows = ar;
    X->nblocks = (m + ar - 1) / ar;
    X->npg = 1;
    if (!X->transcript && X->nblocks < 4 * threads) {
        X->npg = (4 * threads + X->nblocks - 1) / X->nblocks;
        if (X->npg > X->npanels) X->npg = X->npanels;
    }
    X->ppg = (X->npanels + X->npg - 1) / X->npg;
    X->npg = (X->npanels + X->ppg - 1) / X->ppg;
    if (threads > X->nblocks * X->npg) threads = (int)(X->nblocks * X->npg);
    int cached = 0;
    int8_t* ws = (int8_t*)ws_acquire(WS_GEMM, (size_t)(X->npanels * X->panel_bytes), &cached);
    if (!ws) return POUW_ENOMEM;
    X->bpack = ws;
    X->next_panel = X->next_block = 0;
    pouw_internal_run_team(ne_pack_worker, X, threads);
    pouw_internal_run_team(ne_block_worker, X, threads);
    ws_release(WS_GEMM, ws, cached);
    return POUW_OK;
}

int pouw_neon_supported(void) { return 1; /* Advanced SIMD is part of every aarch64 Linux CPU */ }

int pouw_neon_default_variant(void) { return ne_cpu_has_dot(); }

int pouw_neon_params_ok(int64_t m, int64_t k, int64_t n, int r, int th, int tw) {
    (void)m; (void)k; (void)n; (void)tw;
    return r % 4 == 0 && th % 4 == 0;
}

int pouw_neon_gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw,
                   int32_t* c, uint32_t* msgs, int threads, int flags) {
    if (!pouw_neon_params_ok(m, k, n, r, th, tw)) return POUW_EINVAL;
    ne_ctx X;
    memset(&X, 0, sizeof X);
    X.a = a; X.b = b; X.m = m; X.k = k; X.n = n; X.r = r; X.th = th; X.tw = tw; X.c = c; X.msgs = msgs;
    X.dot = ne_cpu_has_dot();
    if (flags & FLAG_NEON_MULL) X.dot = 0;
    if ((flags & FLAG_NEON_DOT) && !X.dot) {
        if (!ne_cpu_has_dot()) return POUW_EINVAL; /* forced onto a CPU without it: the portable path */
        X.dot = 1;
    }
    X.horner_sub = (flags & FLAG_NEON_HORNER_SUB) != 0;
    X.transcript = !(flags & FLAG_NO_TRANSCRIPT) && !X.horner_sub;
    X.unit = X.transcript ? th : NE_MR;
    return ne_run(&X, threads);
}

/*
 * The recovery's one pass on the NEON kernel: c -= sum_i 128^i U_i V_i (wrapping int32) with U = [U_{d-1} | .. |
 * U_0] (m x d w int8, the highest digit first) and V = [V_{d-1} ; .. ; V_0] (d w x n): chunks of width w are the
 * digits, S = 128 S + U_i V_i at every chunk boundary (Horner). Any m; w % 4 == 0.
 */
int pouw_neon_sub_correction(int32_t* c, const int8_t* u, const int8_t* v, int64_t m, int64_t n, int64_t d,
                             int64_t w, int threads) {
    if (!c || !u || !v || m <= 0 || n <= 0 || d <= 0 || w <= 0 || w % 4 || d * w > 65536) return POUW_EINVAL;
    ne_ctx X;
    memset(&X, 0, sizeof X);
    X.a = u; X.b = v; X.m = m; X.k = d * w; X.n = n; X.r = (int)w; X.th = 1; X.tw = 1; X.c = c;
    X.dot = ne_cpu_has_dot();
    X.horner_sub = 1;
    X.unit = NE_MR;
    return ne_run(&X, threads);
}

#else /* not aarch64: stubs */

int pouw_neon_supported(void) { return 0; }
int pouw_neon_default_variant(void) { return 0; }
int pouw_neon_params_ok(int64_t m, int64_t k, int64_t n, int r, int th, int tw) {
    (void)m; (void)k; (void)n; (void)r; (void)th; (void)tw;
    return 0;
}
int pouw_neon_gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw,
                   int32_t* c, uint32_t* msgs, int threads, int flags) {
    (void)a; (void)b; (void)m; (void)k; (void)n; (void)r; (void)th; (void)tw; (void)c; (void)msgs; (void)threads;
    (void)flags;
    return POUW_EINVAL;
}
int pouw_neon_sub_correction(int32_t* c, const int8_t* u, const int8_t* v, int64_t m, int64_t n, int64_t d,
                             int64_t w, int threads) {
    (void)c; (void)u; (void)v; (void)m; (void)n; (void)d; (void)w; (void)threads;
    return POUW_EINVAL;
}

#endif
