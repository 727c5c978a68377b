/*
 * The AVX512-VNNI kernel of the fused GEMM (see fused_gemm.c for the contract and the dispatch):
 *
 *  - AVX512-VNNI (x86-64 with avx512f/bw/vl/vnni; r % 4 == 0, w in {4, 8, 16}, h a power of two >= 4):
 *    a register-blocked microkernel (8 rows x 3 zmm = 8 x 48 int32 accumulators, 24 of the 32 zmm
 *    registers) runs over the whole k dimension; after every chunk of r columns it applies the sign
 *    correction and folds the accumulators into the transcript while they are still in registers.
 *
 *      B is packed once per call (in parallel) into panels of 48 columns: for every k step of 4, three
 *      64-byte vectors of 16 columns x 4 consecutive k entries (the vpdpbusd operand), and after every
 *      chunk three vectors holding 128 * (the chunk's column sums), computed while packing.
 *
 *      Signedness: vpdpbusd multiplies u8 x s8. A is used as u8 = a + 128 (a ^ 0x80, a shifted copy of
 *      the current row block kept in L2), so each dot product picks up 128 * sum_l B[l][v]; subtracting the
 *      chunk's 128 * column sums after every chunk leaves S_c exactly in the accumulators (the u8 sums stay
 *      below 2^31 for k <= 65536, and vpdpbusd wraps mod 2^32 in any case).
 *
 *      Fold: rotl and XOR are GF(2)-linear and act lane-wise, so instead of reducing every tile to one
 *      word per chunk, the kernel keeps per (row group of one tile) x (zmm column) x (slot) a 16-lane
 *      vector M and does M[slot] = rotl(M[slot], 13) ^ XOR_{rows of the group} acc_row  (one vprold and
 *      GH/2 vpternlogd per group and column, plus one vpsubd per accumulator for the correction).
 *      A tile's word is the XOR of the M lanes of the tile, computed once after the k loop (horizontal
 *      XOR commutes with rotl) by a shuffle tree. Tiles taller than 8 rows chain the state from one
 *      8-row panel to the next (pre-rotated so the rotations come out right).
 *
 * Work (B chunks to pack, then blocks of whole tile rows) is handed out dynamically on pool.c's threads, so a busy
 * core slows the call down less; no two threads write the same output words. Build with -DPOUW_PROFILE for a
 * per-thread cycle profile (pouw_prof_dump).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "pool.h"
#include "pouw_native.h"
#include "workspace.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define POUW_HAVE_X86 1
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#include "vnni_pack.h"

#define MR 8   /* rows per microkernel */
#define NR 3   /* zmm columns per microkernel (48 int32 columns) */

#ifndef POUW_A_BLOCK_BYTES
#define POUW_A_BLOCK_BYTES (512 * 1024) /* shifted-A block kept in L2 */
#endif
#define UK_PREFETCH_STEPS 4 /* k steps ahead the microkernel prefetches its B panel into L1 */

typedef int32_t __attribute__((may_alias, aligned(1))) i32u;

/* 16 slot vectors -> 16/w vectors, each lane the XOR of w lanes of one slot vector (one tile). */
static inline __m512i fold8(__m512i x, __m512i y) {
    return _mm512_xor_si512(_mm512_shuffle_i64x2(x, y, 0x44), _mm512_shuffle_i64x2(x, y, 0xEE));
}
static inline __m512i fold4(__m512i x, __m512i y) {
    return _mm512_xor_si512(_mm512_shuffle_i64x2(x, y, 0x88), _mm512_shuffle_i64x2(x, y, 0xDD));
}
static inline __m512i fold2(__m512i x, __m512i y) {
    return _mm512_xor_si512(_mm512_unpacklo_epi64(x, y), _mm512_unpackhi_epi64(x, y));
}
static inline __m512i fold1(__m512i x, __m512i y) {
    __m512 xf = _mm512_castsi512_ps(x), yf = _mm512_castsi512_ps(y);
    return _mm512_xor_si512(_mm512_castps_si512(_mm512_shuffle_ps(xf, yf, 0x88)),
                            _mm512_castps_si512(_mm512_shuffle_ps(xf, yf, 0xDD)));
}

/* v: 16 vectors (in place); returns the number of output vectors (16 / w). */
static inline __attribute__((always_inline)) int reduce_slots(__m512i* v, int w) {
    int cnt = 16;
    if (w >= 16) {
        for (int i = 0; i < cnt / 2; i++) v[i] = fold8(v[2 * i], v[2 * i + 1]);
        cnt /= 2;
    }
    if (w >= 8) {
        for (int i = 0; i < cnt / 2; i++) v[i] = fold4(v[2 * i], v[2 * i + 1]);
        cnt /= 2;
    }
    for (int i = 0; i < cnt / 2; i++) v[i] = fold2(v[2 * i], v[2 * i + 1]);
    cnt /= 2;
    for (int i = 0; i < cnt / 2; i++) v[i] = fold1(v[2 * i], v[2 * i + 1]);
    cnt /= 2;
    return cnt;
}

/*
 * 16 slot vectors (v[i] = state of slot g_inslot[w][i]) -> 16/w vectors out[t], out[t] lane s = XOR over the
 * w lanes of tile t (within the zmm) of slot s.  After reduce_slots every 128-bit block holds data of a single
 * tile at a fixed block position, so a block transpose brings each tile's words into one vector; the slot
 * order inside it is fixed by feeding the inputs in the permuted order g_inslot (found at init, verified).
 */
static const int k_inslot[3][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},  /* w = 4 */
    {0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15},  /* w = 8 */
    {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15},  /* w = 16 */
};
static int g_inslot[3][16]; /* the same, derived by simulation at init; must agree with k_inslot */
static int g_redmap_ok = 0;
static pthread_once_t g_redmap_once = PTHREAD_ONCE_INIT;

static inline __attribute__((always_inline)) int reduce_tiles(__m512i* v, int w, __m512i* out) {
    const int cnt = reduce_slots(v, w);
    if (cnt == 1) {
        out[0] = v[0];
    } else if (cnt == 2) {
        out[0] = _mm512_shuffle_i64x2(v[0], v[1], 0x88);
        out[1] = _mm512_shuffle_i64x2(v[0], v[1], 0xDD);
    } else {
        const __m512i t0 = _mm512_shuffle_i64x2(v[0], v[1], 0x44), t1 = _mm512_shuffle_i64x2(v[0], v[1], 0xEE);
        const __m512i t2 = _mm512_shuffle_i64x2(v[2], v[3], 0x44), t3 = _mm512_shuffle_i64x2(v[2], v[3], 0xEE);
        out[0] = _mm512_shuffle_i64x2(t0, t2, 0x88);
        out[1] = _mm512_shuffle_i64x2(t0, t2, 0xDD);
        out[2] = _mm512_shuffle_i64x2(t1, t3, 0x88);
        out[3] = _mm512_shuffle_i64x2(t1, t3, 0xDD);
    }
    return cnt;
}

static void build_redmap(void) {
    int ok = 1;
    for (int wi = 0; wi < 3; wi++) {
        const int w = 4 << wi;
        int pos[16][16]; /* [input index][input lane] -> output vector * 16 + lane */
        for (int i = 0; i < 16; i++) {
            for (int l = 0; l < 16; l++) {
                __m512i v[16], out[4];
                uint32_t buf[64];
                for (int q = 0; q < 16; q++) v[q] = _mm512_setzero_si512();
                memset(buf, 0, sizeof buf);
                buf[l] = 1;
                v[i] = _mm512_loadu_si512(buf);
                const int cnt = reduce_tiles(v, w, out);
                int found = -1, nfound = 0;
                for (int o = 0; o < cnt; o++) {
                    _mm512_storeu_si512(buf + 16 * o, out[o]);
                    for (int q = 0; q < 16; q++)
                        if (buf[16 * o + q]) { found = 16 * o + q; nfound++; }
                }
                if (nfound != 1) ok = 0;
                pos[i][l] = found;
            }
        }
        /* expect: pos[i][l] = (l / w) * 16 + lane(i), lane a permutation of 0..15 */
        int seen = 0;
        for (int i = 0; i < 16; i++) {
            const int lane = pos[i][0] & 15;
            if (lane < 0 || (seen >> lane) & 1) ok = 0;
            seen |= 1 << (lane & 15);
            g_inslot[wi][i] = lane & 15;
            for (int l = 0; l < 16; l++)
                if (pos[i][l] != (l / w) * 16 + lane) ok = 0;
        }
    }
    if (memcmp(g_inslot, k_inslot, sizeof k_inslot) != 0) ok = 0;
    g_redmap_ok = ok;
}

typedef struct {
    const int8_t* a;
    const int8_t* b;
    int64_t m, k, n;
    int r, th, tw;
    int32_t* c;
    uint32_t* msgs;
    /* derived */
    int64_t nz;          /* zmm columns (ceil(n / 16)) */
    int64_t npanels;     /* ceil(nz / NR) */
    int64_t nchunks;     /* k / r */
    int64_t spc;         /* k steps (of 4) per chunk */
    int64_t panel_bytes; /* bytes of one full packed B panel */
    int8_t* bpack;
    int64_t unit;        /* row granularity of the thread split (multiple of the tile height) */
    int64_t a_rows;      /* rows per shifted-A block */
    uint8_t* abuf;       /* per-thread shifted-A blocks */
    int64_t abuf_stride;
    __m512i* mstate;     /* per-thread message state */
    int64_t mstate_stride;
    int64_t* zoff;       /* per zmm column: byte offset of its first packed vector in bpack */
    int64_t* zstride;    /* per zmm column: bytes between consecutive k steps (= 64 * zmm columns of its panel) */
    __m512i* corrbuf;    /* per-thread scratch: nz column-sum accumulators */
    int64_t nblocks;     /* row blocks of a_rows rows (work items of phase 2) */
    int64_t next_chunk;  /* phase 1 work counter (atomic) */
    int64_t next_block;  /* phase 2 work counter (atomic) */
    int transcript;      /* 0: FLAG_NO_TRANSCRIPT, no flush (messages unwritten) */
    cbarrier barrier;
} vnni_ctx;

/*
 * Pack chunks [c0, c1) of B (all columns) into the panel layout:
 *   panel p (NR zmm columns, fewer in the last one), chunk c: r/4 k steps x nzr vectors of 64 bytes
 *   (16 columns x 4 consecutive k entries, the VNNI operand), then nzr vectors of 128 * column sums of the chunk.
 * Reads B row-wise, 4 rows x 64 columns at a time; columns past n are zero.
 */
static void pack_b_chunks(const vnni_ctx* X, int64_t c0, int64_t c1, __m512i* corr) {
    const int64_t n = X->n, r = X->r, spc = X->spc, nz = X->nz;
    const int64_t nblk = (n + 63) / 64;
    const __mmask64 tailmask = (n & 63) ? (((__mmask64)1 << (n & 63)) - 1) : ~(__mmask64)0;
    const __m512i c128 = _mm512_set1_epi8((char)0x80);
    for (int64_t c = c0; c < c1; c++) {
        for (int64_t z = 0; z < nz; z++) corr[z] = _mm512_setzero_si512();
        for (int64_t q = 0; q < spc; q++) {
            const int8_t* src = X->b + (c * r + 4 * q) * n;
            for (int64_t blk = 0; blk < nblk; blk++) {
                const __mmask64 mk = blk == nblk - 1 ? tailmask : ~(__mmask64)0;
                const int8_t* s0 = src + 64 * blk;
                const __m512i r0 = _mm512_maskz_loadu_epi8(mk, s0);
                const __m512i r1 = _mm512_maskz_loadu_epi8(mk, s0 + n);
                const __m512i r2 = _mm512_maskz_loadu_epi8(mk, s0 + 2 * n);
                const __m512i r3 = _mm512_maskz_loadu_epi8(mk, s0 + 3 * n);
                __m512i o[4];
                pouw_vnni_quads(r0, r1, r2, r3, o);
                const int nl = (int)(nz - 4 * blk < 4 ? nz - 4 * blk : 4);
                for (int L = 0; L < nl; L++) {
                    const int64_t z = 4 * blk + L;
                    int8_t* dst = X->bpack + X->zoff[z] + (c * (spc + 1) + q) * X->zstride[z];
                    _mm512_store_si512((void*)dst, o[L]);
                    corr[z] = _mm512_dpbusd_epi32(corr[z], c128, o[L]); /* 128 * column sums */
                }
            }
        }
        for (int64_t z = 0; z < nz; z++) {
            int8_t* dst = X->bpack + X->zoff[z] + (c * (spc + 1) + spc) * X->zstride[z];
            _mm512_store_si512((void*)dst, corr[z]);
        }
    }
}

/* acc -= v, in place (an asm statement so the compiler keeps the accumulator in its register, no copies) */
static inline __attribute__((always_inline)) void sub_inplace(__m512i* acc, __m512i v) {
    __asm__("vpsubd %1, %0, %0" : "+v"(*acc) : "v"(v));
}

/*
 * The microkernel: rows [ap, ap + MRK rows) (shifted A, row stride lda), packed B panel bp with NRK
 * zmm columns, whole k.  GH = rows per tile group (min(tile height, MRK)).  mst: (MRK/GH)*NRK*16
 * vectors of message state (zeroed here).  Stores C (lanes beyond n masked off via lastmask for
 * the last zmm column).
 */
/* Shifted copy of the next row block's A (a ^ 0x80), made a few vectors per chunk inside the microkernel so
 * the copy overlaps the arithmetic. */
typedef struct {
    const int8_t* src;
    uint8_t* dst;
    int64_t done;  /* vectors copied */
    int64_t total; /* vectors to copy (whole 64-byte vectors; a tail is finished by shifter_finish) */
    int64_t per_chunk;
    int64_t tail;  /* bytes after the last whole vector */
} shifter_t;

static inline void shifter_run(shifter_t* sh, int64_t limit) {
    const __m512i x80 = _mm512_set1_epi8((char)0x80);
    int64_t i = sh->done;
    const int64_t end = limit < sh->total ? limit : sh->total;
    for (; i < end; i++)
        _mm512_store_si512((void*)(sh->dst + 64 * i), _mm512_xor_si512(_mm512_loadu_si512(sh->src + 64 * i), x80));
    sh->done = i;
}

static void shifter_finish(shifter_t* sh) {
    shifter_run(sh, sh->total);
    for (int64_t i = 0; i < sh->tail; i++) sh->dst[64 * sh->total + i] = (uint8_t)(sh->src[64 * sh->total + i] ^ 0x80);
    sh->tail = 0;
}

typedef struct {
    const uint8_t* ap; /* shifted A rows, row stride lda */
    int64_t lda;
    const int8_t* bp;  /* packed B panel */
    int64_t nchunks, spc;
    int32_t* cp;       /* C block: row stride ldc; lanes of the last zmm column masked by lastmask */
    int64_t ldc;
    __mmask16 lastmask;
    __m512i* mst;      /* message state, (MRK / GH) * NRK * 16 vectors */
    int zero_mst;
    const int8_t* pf2; /* next B panel slice to pull towards L2 */
    int64_t pf2_lines; /* lines per chunk */
    shifter_t* sh;     /* copy of the next A block, advanced sh->per_chunk vectors per chunk */
} uk_args;

/*
 * The microkernel: MRK rows x NRK zmm columns of int32 accumulators in registers over the whole k.
 * GH = rows per tile group (min(tile height, MRK)).
 */
static inline __attribute__((always_inline)) void ukern_body(const int MRK, const int NRK, const int GH,
                                                             const uk_args* args) {
    const uint8_t* restrict a0 = args->ap;
    const int64_t lda = args->lda;
    const int8_t* restrict bp = args->bp;
    const int64_t nchunks = args->nchunks, spc = args->spc;
    __m512i* restrict mst = args->mst;
    const int8_t* pf2 = args->pf2;
    const int64_t pf2_lines = args->pf2_lines;
    shifter_t* sh = args->sh;

    __m512i acc[MR][NR];
#pragma GCC unroll 8
    for (int u = 0; u < MRK; u++)
#pragma GCC unroll 3
        for (int j = 0; j < NRK; j++) acc[u][j] = _mm512_setzero_si512();
    /* zero_mst: the state starts at zero, so the first 16 chunks store instead of rotating and XORing */
    const int64_t fresh = args->zero_mst ? 16 : 0;
    if (args->zero_mst && nchunks < 16) { /* slots that never get a chunk must still read as zero */
        const int nmst = (MRK / GH) * NRK * 16;
        for (int i = 0; i < nmst; i++) mst[i] = _mm512_setzero_si512();
    }

    for (int64_t c = 0; c < nchunks; c++) {
        for (int64_t q = 0; q < spc; q++) {
            __m512i bv[NR];
#pragma GCC unroll 3
            for (int j = 0; j < NRK; j++) bv[j] = _mm512_load_si512((const void*)(bp + 64 * j));
#pragma GCC unroll 8
            for (int u = 0; u < MRK; u++) {
                const __m512i av = _mm512_set1_epi32(*(const i32u*)(a0 + u * lda));
#pragma GCC unroll 3
                for (int j = 0; j < NRK; j++) acc[u][j] = _mm512_dpbusd_epi32(acc[u][j], av, bv[j]);
            }
            /* the panel streams from L2 (k x 48 bytes does not fit L1): pull it in a few k steps ahead
             * (what it saves: benchmarks/RESULTS.md) */
#pragma GCC unroll 3
            for (int j = 0; j < NRK; j++) _mm_prefetch((const char*)(bp + 64 * NRK * UK_PREFETCH_STEPS + 64 * j), _MM_HINT_T0);
            bp += 64 * NRK;
            a0 += 4;
        }
        /* sign correction (acc then holds S_c exactly) and fold into the message state */
        const int slot = (int)(c & 15);
#pragma GCC unroll 3
        for (int j = 0; j < NRK; j++) {
            const __m512i corr = _mm512_load_si512((const void*)(bp + 64 * j));
#pragma GCC unroll 2
            for (int g = 0; g < MRK / GH; g++) {
                __m512i* mp = mst + (g * NRK + j) * 16 + slot;
                __m512i x = c < fresh ? _mm512_setzero_si512() : _mm512_rol_epi32(*mp, ROT);
#pragma GCC unroll 4
                for (int t = 0; t < GH; t += 2) {
                    sub_inplace(&acc[g * GH + t][j], corr);
                    sub_inplace(&acc[g * GH + t + 1][j], corr);
                    x = _mm512_ternarylogic_epi32(x, acc[g * GH + t][j], acc[g * GH + t + 1][j], 0x96);
                }
                *mp = x;
            }
        }
        bp += 64 * NRK;
        /* pull a slice of the next B panel towards L2 */
        for (int64_t i = 0; i < pf2_lines; i++) _mm_prefetch((const char*)(pf2 + 64 * i), _MM_HINT_T1);
        pf2 += 64 * pf2_lines;
        if (sh->done < sh->total) shifter_run(sh, sh->done + sh->per_chunk);
    }
    int32_t* cp = args->cp;
    const int64_t ldc = args->ldc;
    const __mmask16 lastmask = args->lastmask;
    /* C: non-temporal stores when every row start is 64-byte aligned (C is write-once, bigger than L2) */
    if (((uintptr_t)cp & 63) == 0 && (ldc & 15) == 0 && lastmask == (__mmask16)0xFFFF) {
#pragma GCC unroll 8
        for (int u = 0; u < MRK; u++)
#pragma GCC unroll 3
            for (int j = 0; j < NRK; j++) _mm512_stream_si512((void*)(cp + u * ldc + 16 * j), acc[u][j]);
    } else {
#pragma GCC unroll 8
        for (int u = 0; u < MRK; u++) {
#pragma GCC unroll 3
            for (int j = 0; j < NRK; j++) {
                if (j == NRK - 1)
                    _mm512_mask_storeu_epi32((void*)(cp + u * ldc + 16 * j), lastmask, acc[u][j]);
                else
                    _mm512_storeu_si512((void*)(cp + u * ldc + 16 * j), acc[u][j]);
            }
        }
    }
}

typedef void (*ukern_fn)(const uk_args*);

#define DEF_UKERN(M_, N_, G_) \
    static void ukern_##M_##_##N_##_##G_(const uk_args* args) { ukern_body(M_, N_, G_, args); }

DEF_UKERN(8, 3, 8)
DEF_UKERN(8, 2, 8)
DEF_UKERN(8, 1, 8)
DEF_UKERN(8, 3, 4)
DEF_UKERN(8, 2, 4)
DEF_UKERN(8, 1, 4)
DEF_UKERN(4, 3, 4)
DEF_UKERN(4, 2, 4)
DEF_UKERN(4, 1, 4)

static ukern_fn pick_ukern(int mrk, int nrk, int gh) {
    static const ukern_fn t8g8[3] = {ukern_8_1_8, ukern_8_2_8, ukern_8_3_8};
    static const ukern_fn t8g4[3] = {ukern_8_1_4, ukern_8_2_4, ukern_8_3_4};
    static const ukern_fn t4g4[3] = {ukern_4_1_4, ukern_4_2_4, ukern_4_3_4};
    if (mrk == 8) return gh == 8 ? t8g8[nrk - 1] : t8g4[nrk - 1];
    return t4g4[nrk - 1];
}

/* XOR the message state of one microkernel call into the output words (W: the tile width, constant). */
static inline __attribute__((always_inline)) void flush_body(const int W, const vnni_ctx* X, const __m512i* mst,
                                                             int mrk, int nrk, int gh, int64_t row0, int64_t zj0) {
    const int* inslot = k_inslot[W == 4 ? 0 : (W == 8 ? 1 : 2)];
    const int64_t ntj = X->n / W;
    for (int g = 0; g < mrk / gh; g++) {
        /* the state holds the whole tile's contribution (row groups of a tile are chained), so store */
        const int64_t ti = (row0 + g * gh) / X->th;
        uint32_t* mrow = X->msgs + ti * ntj * MSG_WORDS;
        for (int j = 0; j < nrk; j++) {
            const __m512i* src = mst + (g * nrk + j) * 16;
            __m512i v[16], out[4];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) v[i] = _mm512_load_si512((const void*)(src + inslot[i]));
            const int cnt = reduce_tiles(v, W, out);
            const int64_t tj0 = (zj0 + j) * 16 / W;
#pragma GCC unroll 4
            for (int t = 0; t < cnt; t++) {
                if (tj0 + t < ntj) {
                    uint32_t* dst = mrow + (tj0 + t) * MSG_WORDS;
                    if (((uintptr_t)dst & 63) == 0)
                        _mm512_stream_si512((void*)dst, out[t]); /* written once; as big as C for 4x4 tiles */
                    else
                        _mm512_storeu_si512((void*)dst, out[t]);
                }
            }
        }
    }
}

static void flush_w4(const vnni_ctx* X, const __m512i* mst, int mrk, int nrk, int gh, int64_t row0, int64_t zj0) {
    flush_body(4, X, mst, mrk, nrk, gh, row0, zj0);
}
static void flush_w8(const vnni_ctx* X, const __m512i* mst, int mrk, int nrk, int gh, int64_t row0, int64_t zj0) {
    flush_body(8, X, mst, mrk, nrk, gh, row0, zj0);
}
static void flush_w16(const vnni_ctx* X, const __m512i* mst, int mrk, int nrk, int gh, int64_t row0, int64_t zj0) {
    flush_body(16, X, mst, mrk, nrk, gh, row0, zj0);
}

/*
 * Chaining: the next row panel of the same tile row starts from this state. Its fold applies
 * M = rotl(M, 13) ^ X exactly J_s times to slot s (J_s = number of chunks with c % 16 == s), so rotating the
 * state right by 13 * J_s first makes the final state (this state) ^ (next panel's own contribution).
 */
static inline void prerotate_msgstate(__m512i* mst, int nvec, const __m512i* prerot) {
    for (int i = 0; i < nvec; i++) mst[i] = _mm512_rolv_epi32(mst[i], prerot[i & 15]);
}

#ifdef POUW_PROFILE
#include <stdio.h>
#include <x86intrin.h>
static uint64_t g_prof[64][8];
#define PROF_T0 uint64_t prof_t = __rdtsc()
#define PROF_T(i)                            \
    do {                                     \
        uint64_t prof_n = __rdtsc();         \
        g_prof[tid & 63][i] += prof_n - prof_t; \
        prof_t = prof_n;                     \
    } while (0)
void pouw_prof_dump(void) {
    for (int t = 0; t < 2; t++) {
        fprintf(stderr, "thread %d: pack %.2f barrier %.2f ashift %.2f ukern %.2f flush %.2f (Mcycles)\n", t,
                g_prof[t][0] / 1e6, g_prof[t][1] / 1e6, g_prof[t][2] / 1e6, g_prof[t][3] / 1e6, g_prof[t][4] / 1e6);
    }
    memset(g_prof, 0, sizeof g_prof);
}
#else
#define PROF_T0
#define PROF_T(i)
#endif

static inline int64_t claim_block(vnni_ctx* X) { return __atomic_fetch_add(&X->next_block, 1, __ATOMIC_RELAXED); }

/* Prepare the shifted copy of block blk (nothing when blk is past the end), spread over `calls` kernel calls. */
static void shifter_setup(const vnni_ctx* X, shifter_t* sh, int64_t blk, uint8_t* dst, int64_t calls) {
    memset(sh, 0, sizeof *sh);
    if (blk >= X->nblocks) return;
    const int64_t ib = blk * X->a_rows;
    const int64_t ie = ib + X->a_rows < X->m ? ib + X->a_rows : X->m;
    const int64_t bytes = (ie - ib) * X->k;
    sh->src = X->a + ib * X->k;
    sh->dst = dst;
    sh->total = bytes / 64;
    sh->tail = bytes % 64;
    const int64_t steps = (calls > 0 ? calls : 1) * (X->nchunks > 0 ? X->nchunks : 1);
    sh->per_chunk = (sh->total + steps - 1) / steps;
}

static void vnni_worker(void* vctx, int tid, int nthreads) {
    vnni_ctx* X = (vnni_ctx*)vctx;
    (void)nthreads;
    /* 1. pack B, a chunk at a time, shared out dynamically */
    PROF_T0;
    for (;;) {
        const int64_t c = __atomic_fetch_add(&X->next_chunk, 1, __ATOMIC_RELAXED);
        if (c >= X->nchunks) break;
        pack_b_chunks(X, c, c + 1, X->corrbuf + tid * X->nz);
    }
    PROF_T(0);

    /* 2. row blocks (whole tile rows), shared out dynamically; the first block's shifted A copy does not
     *    need B, so it is made before the barrier */
    const int64_t k = X->k, n = X->n;
    uint8_t* abufs[2] = {X->abuf + (2 * tid) * X->abuf_stride, X->abuf + (2 * tid + 1) * X->abuf_stride};
    int bi = 0;
    shifter_t sh;
    memset(&sh, 0, sizeof sh);
    int64_t blk = claim_block(X);
    if (blk < X->nblocks) {
        shifter_setup(X, &sh, blk, abufs[bi], 1);
        shifter_finish(&sh);
    }
    PROF_T(2);
    cb_wait(&X->barrier);
    PROF_T(1);
    __m512i* mst = X->mstate + tid * X->mstate_stride;
    const int gh8 = X->th < 8 ? X->th : 8;
    __m512i prerot[16];
    for (int sl = 0; sl < 16; sl++) {
        const int64_t J = sl < X->nchunks ? (X->nchunks - sl + 15) / 16 : 0;
        prerot[sl] = _mm512_set1_epi32((int)((32 - (ROT * J) % 32) % 32));
    }
    void (*flush)(const vnni_ctx*, const __m512i*, int, int, int, int64_t, int64_t) =
        X->tw == 4 ? flush_w4 : (X->tw == 8 ? flush_w8 : flush_w16);

    while (blk < X->nblocks) {
        const int64_t ib = blk * X->a_rows;
        const int64_t ie = ib + X->a_rows < X->m ? ib + X->a_rows : X->m;
        const uint8_t* abuf = abufs[bi];
        const int64_t nxt = claim_block(X);
        /* copy the next block while computing this one */
        const int64_t calls = X->npanels * ((ie - ib + 7) / 8);
        shifter_setup(X, &sh, nxt, abufs[bi ^ 1], calls);
        for (int64_t p = 0; p < X->npanels; p++) {
            const int64_t zj0 = p * NR;
            const int nrk = (int)((X->nz - zj0) < NR ? (X->nz - zj0) : NR);
            const int64_t lastvalid = n - (zj0 + nrk - 1) * 16;
            const __mmask16 lastmask = lastvalid >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << lastvalid) - 1);
            const int8_t* bp = X->bpack + p * X->panel_bytes;
            /* the next panel (the first one again after the last) is pulled into L2 in slices */
            const int8_t* pf2 = X->bpack + ((p + 1) % X->npanels) * X->panel_bytes;
            const int64_t ncalls = (ie - ib + 7) / 8;
            const int64_t pf2_lines = (X->panel_bytes / 64 + ncalls * X->nchunks - 1) / (ncalls * X->nchunks);
            int64_t pf2_slice = pf2_lines * X->nchunks * 64;
            for (int64_t row = ib; row < ie;) {
                const int mrk = (ie - row) >= 8 ? 8 : 4;
                const int gh = mrk == 8 ? gh8 : 4;
                ukern_fn f = pick_ukern(mrk, nrk, gh);
                /* tiles taller than the 8-row block: the row panels of a tile row chain their message state */
                const int chain = gh < X->th;
                uk_args ua;
                ua.ap = abuf + (row - ib) * k;
                ua.lda = k;
                ua.bp = bp;
                ua.nchunks = X->nchunks;
                ua.spc = X->spc;
                ua.cp = X->c + row * n + zj0 * 16;
                ua.ldc = n;
                ua.lastmask = lastmask;
                ua.mst = mst;
                ua.zero_mst = !chain || row % X->th == 0;
                ua.pf2 = pf2;
                ua.pf2_lines = pf2_lines;
                ua.sh = &sh;
                f(&ua);
                pf2 += pf2_slice;
                PROF_T(3);
                if (!X->transcript)
                    ;
                else if (!chain || (row + mrk) % X->th == 0)
                    flush(X, mst, mrk, nrk, gh, row, zj0);
                else
                    prerotate_msgstate(mst, nrk * 16, prerot);
                PROF_T(4);
                row += mrk;
            }
        }
        shifter_finish(&sh);
        PROF_T(2);
        blk = nxt;
        bi ^= 1;
    }
    _mm_sfence(); /* order the non-temporal C stores before the join */
}

static void vnni_team_started(void* vctx, int count) { cb_set_expected(&((vnni_ctx*)vctx)->barrier, count); }

static inline int64_t round_up64(int64_t x) { return (x + 63) & ~(int64_t)63; }

int pouw_vnni_gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw,
                   int32_t* c, uint32_t* msgs, int threads, int flags) {
    pthread_once(&g_redmap_once, build_redmap);
    if (!g_redmap_ok) return pouw_portable_gemm(a, b, m, k, n, r, th, tw, c, msgs, threads);
    vnni_ctx X;
    memset(&X, 0, sizeof X);
    X.a = a; X.b = b; X.m = m; X.k = k; X.n = n; X.r = r; X.th = th; X.tw = tw; X.c = c; X.msgs = msgs;
    X.transcript = !(flags & FLAG_NO_TRANSCRIPT);
    X.nz = (n + 15) / 16;
    X.npanels = (X.nz + NR - 1) / NR;
    X.nchunks = k / r;
    X.spc = r / 4;
    X.panel_bytes = X.nchunks * (X.spc + 1) * NR * 64;
    X.unit = th > 8 ? th : 8;

    const int64_t nunits = (m + X.unit - 1) / X.unit;
    if (threads > nunits) threads = (int)nunits;
    if (threads < 1) threads = 1;

    /* rows per block (the unit of work; its shifted A copy should stay in L2): a multiple of the unit,
     * about POUW_A_BLOCK_BYTES of A, and small enough to give every thread several blocks */
    int64_t ar = POUW_A_BLOCK_BYTES / k;
    const int64_t per_thread = (m + 4 * threads - 1) / (4 * threads);
    if (threads > 1 && ar > per_thread) ar = per_thread;
    ar = (ar / X.unit) * X.unit;
    if (ar < X.unit) ar = X.unit;
    X.a_rows = ar;
    X.nblocks = (m + ar - 1) / ar;
    X.abuf_stride = round_up64(ar * k);
    X.mstate_stride = (MR / 4) * NR * 16;

    const int64_t off_b = 0;
    const int64_t off_a = off_b + round_up64(X.npanels * X.panel_bytes);
    const int64_t off_m = off_a + 2 * threads * X.abuf_stride;
    const int64_t off_c = off_m + round_up64(threads * X.mstate_stride * (int64_t)sizeof(__m512i));
    const int64_t off_z = off_c + round_up64(threads * X.nz * (int64_t)sizeof(__m512i));
    const int64_t total = off_z + round_up64(2 * X.nz * (int64_t)sizeof(int64_t));
    int cached = 0;
    char* ws = (char*)ws_acquire(WS_GEMM, (size_t)total, &cached);
    if (!ws) return POUW_ENOMEM;
    X.bpack = (int8_t*)(ws + off_b);
    X.abuf = (uint8_t*)(ws + off_a);
    X.mstate = (__m512i*)(ws + off_m);
    X.corrbuf = (__m512i*)(ws + off_c);
    X.zoff = (int64_t*)(ws + off_z);
    X.zstride = X.zoff + X.nz;
    for (int64_t z = 0; z < X.nz; z++) {
        const int64_t p = z / NR, zj0 = p * NR;
        const int64_t nzr = (X.nz - zj0) < NR ? (X.nz - zj0) : NR;
        X.zoff[z] = p * X.panel_bytes + (z - zj0) * 64;
        X.zstride[z] = nzr * 64;
    }
    /* msgs needs no clearing: every word is stored exactly once (see flush_body) */
    cb_init(&X.barrier);
    pouw_run_team(vnni_worker, &X, threads, vnni_team_started);
    cb_destroy(&X.barrier);
    ws_release(WS_GEMM, ws, cached);
    return POUW_OK;
}

#pragma GCC pop_options
#endif /* x86 */

int pouw_vnni_supported(void) {
#ifdef POUW_HAVE_X86
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    }
    return cached;
#else
    return 0;
#endif
}

int pouw_vnni_params_ok(int64_t m, int64_t k, int64_t n, int r, int th, int tw) {
    (void)m; (void)k; (void)n;
    if (r % 4) return 0;
    if (!(tw == 4 || tw == 8 || tw == 16)) return 0;
    if (!is_pow2(th) || th < 4) return 0;
    return 1;
}

#ifndef POUW_HAVE_X86
int pouw_vnni_gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw,
                   int32_t* c, uint32_t* msgs, int threads, int flags) {
    (void)a; (void)b; (void)m; (void)k; (void)n; (void)r; (void)th; (void)tw; (void)c; (void)msgs;
    (void)threads; (void)flags;
    return POUW_EINVAL;
}
#endif
