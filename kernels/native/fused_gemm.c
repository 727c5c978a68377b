/*
 * Native CPU kernel for the PoUW mining contract (see kernels/base.py):
 *
 *   S_c = sum_{c' <= c} A[:, c'r:(c'+1)r] @ B[c'r:(c'+1)r, :]        (exact int32)
 *   for every h x w tile and every chunk c:  x = XOR of the tile's entries of S_c (as uint32),
 *       msg[c % 16] = rotl32(msg[c % 16], 13) ^ x                    (msg starts as 16 zeros)
 *   outputs: C = S_{k/r-1} (int32, m x n) and msgs (uint32, (m/h) x (n/w) x 16).
 *
 * Two paths, chosen at run time:
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
 *  - Portable fallback (any CPU, or parameters the VNNI path does not take): plain C, per tile row.
 *
 * Threads: a small persistent pthread pool (no OpenMP runtime: nothing fights the OpenMP runtime torch ships;
 * idle workers spin at most 0.2 ms, then sleep). Work (B chunks to pack, then blocks of whole tile rows) is handed
 * out dynamically, so a busy core slows the call down less; no two threads write the same output words.
 *
 * Entry points (plain C ABI): pouw_noisy_gemm() / pouw_noisy_gemm_ex(); 0 or a negative error code.
 * pouw_noisy_gemm_ex's FLAG_NO_TRANSCRIPT leaves the messages unwritten on the VNNI path: with one wide chunk
 * (r a large divisor of k) it is the engine's plain GEMM, the baseline the mining benchmark compares against.
 * kernels/native/aux.c (same library) adds tile tickets and the fused noise, on this file's pool.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>

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

/* kernels/native/avx2_gemm.c (same library) */
int pouw_avx2_supported(void);
int pouw_avx2_params_ok(int64_t m, int64_t k, int64_t n, int r, int th, int tw);
int pouw_avx2_gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw,
                   int32_t* c, uint32_t* msgs, int threads, int flags);

static inline uint32_t rotl32(uint32_t x) { return (x << ROT) | (x >> (32 - ROT)); }

static int is_pow2(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

/* ------------------------------------------------------------------------------------------ */
/* Generic thread runner                                                                      */
/* ------------------------------------------------------------------------------------------ */

typedef void (*worker_fn)(void* ctx, int tid, int nthreads);

typedef struct {
    worker_fn fn;
    void* ctx;
    int tid;
    int nthreads;
} thread_arg;

static void* thread_trampoline(void* p) {
    thread_arg* t = (thread_arg*)p;
    t->fn(t->ctx, t->tid, t->nthreads);
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* A one-shot barrier whose party count is fixed only once the threads are running, so a failed  */
/* pthread_create just means fewer workers (work is handed out dynamically).                     */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;  /* atomic */
    int expected; /* atomic; INT32_MAX until known */
} cbarrier;

static void cb_init(cbarrier* b) {
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->arrived = 0;
    b->expected = INT32_MAX;
}

static void cb_destroy(cbarrier* b) {
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
}

static void cb_set_expected(cbarrier* b, int expected) {
    pthread_mutex_lock(&b->mu);
    __atomic_store_n(&b->expected, expected, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Monotonic nanoseconds (for bounded spins). */
static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Spins (without the lock) until *word != value or `ns` nanoseconds pass; returns 1 when it changed. */
static int spin_while_equal(const unsigned long* word, unsigned long value, int64_t ns) {
    const int64_t end = now_ns() + ns;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != value) return 1;
            cpu_relax();
        }
        if (now_ns() >= end) return 0;
    }
}

static void cb_wait(cbarrier* b) {
    pthread_mutex_lock(&b->mu);
    __atomic_add_fetch(&b->arrived, 1, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    /* spin a little (the parties finish phase 1 at about the same time), then sleep */
    for (int i = 0; i < 4000; i++) {
        if (__atomic_load_n(&b->arrived, __ATOMIC_SEQ_CST) >= __atomic_load_n(&b->expected, __ATOMIC_SEQ_CST))
            return;
        cpu_relax();
    }
    pthread_mutex_lock(&b->mu);
    while (__atomic_load_n(&b->arrived, __ATOMIC_SEQ_CST) < __atomic_load_n(&b->expected, __ATOMIC_SEQ_CST))
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
}

/* Spawns n - 1 threads for one job (fallback when the pool is busy). */
static int spawn_team(worker_fn fn, void* ctx, int n, void (*started)(void*, int)) {
    pthread_t th[256];
    thread_arg args[256];
    if (n > 256) n = 256;
    if (n < 1) n = 1;
    int count = 1;
    for (int i = 1; i < n; i++) {
        args[i].fn = fn;
        args[i].ctx = ctx;
        args[i].tid = i;
        args[i].nthreads = n;
        if (pthread_create(&th[i], NULL, thread_trampoline, &args[i]) != 0) break;
        count++;
    }
    if (started) started(ctx, count);
    fn(ctx, 0, count);
    for (int i = 1; i < count; i++) pthread_join(th[i], NULL);
    return count;
}

/*
 * A small persistent pool (creating threads costs ~30 us each per call otherwise). Idle workers spin for at most
 * POOL_SPIN_NS after a job (a mining pass makes several native calls a few tens of microseconds apart, and
 * waking a sleeping worker costs ~0.1-0.3 ms here), then sleep on a condition variable: nothing spins for
 * longer between calls. One job at a time; a concurrent caller spawns its own threads. After fork() the child
 * starts with an empty pool.
 */
#define POOL_MAX 255
#define POOL_SPIN_NS 200000

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t work_cv;
    pthread_cond_t done_cv;
    int nworkers;
    unsigned long gen;
    unsigned long start_gen[POOL_MAX];
    worker_fn fn;
    void* ctx;
    int njob;      /* team size of the current job (workers 0 .. njob - 2 take part as tid 1 .. njob - 1) */
    int remaining; /* workers still running the current job */
    int busy;
} pool_t;

static pool_t g_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0,
                        {0}, NULL, NULL, 0, 0, 0};
static pthread_once_t g_pool_once = PTHREAD_ONCE_INIT;

static void ws_atfork_child(void);

static void pool_atfork_child(void) {
    ws_atfork_child();
    pthread_mutex_init(&g_pool.mu, NULL);
    pthread_cond_init(&g_pool.work_cv, NULL);
    pthread_cond_init(&g_pool.done_cv, NULL);
    g_pool.nworkers = 0;
    g_pool.busy = 0;
    g_pool.remaining = 0;
    g_pool.njob = 0;
}

static void pool_init_once(void) { pthread_atfork(NULL, NULL, pool_atfork_child); }

static void* pool_main(void* arg) {
    const int idx = (int)(intptr_t)arg;
    pthread_mutex_lock(&g_pool.mu);
    unsigned long seen = g_pool.start_gen[idx];
    for (;;) {
        if (g_pool.gen == seen) {
            pthread_mutex_unlock(&g_pool.mu);
            spin_while_equal(&g_pool.gen, seen, POOL_SPIN_NS);
            pthread_mutex_lock(&g_pool.mu);
        }
        while (g_pool.gen == seen) pthread_cond_wait(&g_pool.work_cv, &g_pool.mu);
        seen = g_pool.gen;
        if (idx + 1 < g_pool.njob) {
            const worker_fn fn = g_pool.fn;
            void* ctx = g_pool.ctx;
            const int n = g_pool.njob;
            pthread_mutex_unlock(&g_pool.mu);
            fn(ctx, idx + 1, n);
            pthread_mutex_lock(&g_pool.mu);
            if (__atomic_sub_fetch(&g_pool.remaining, 1, __ATOMIC_RELEASE) == 0) pthread_cond_signal(&g_pool.done_cv);
        }
    }
    return NULL;
}

/* Runs fn(ctx, tid, count) on up to n threads (tid 0 on the caller); returns count. started(ctx, count) is
 * called once count is known, before the caller's own share starts. */
static int run_team(worker_fn fn, void* ctx, int n, void (*started)(void*, int)) {
    if (n > POOL_MAX + 1) n = POOL_MAX + 1;
    if (n <= 1) {
        if (started) started(ctx, 1);
        fn(ctx, 0, 1);
        return 1;
    }
    pthread_mutex_lock(&g_pool.mu);
    if (g_pool.busy) {
        pthread_mutex_unlock(&g_pool.mu);
        return spawn_team(fn, ctx, n, started);
    }
    g_pool.busy = 1;
    while (g_pool.nworkers < n - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        g_pool.start_gen[g_pool.nworkers] = g_pool.gen;
        const int rc = pthread_create(&t, &attr, pool_main, (void*)(intptr_t)g_pool.nworkers);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        g_pool.nworkers++;
    }
    const int count = n - 1 < g_pool.nworkers ? n : g_pool.nworkers + 1;
    g_pool.fn = fn;
    g_pool.ctx = ctx;
    g_pool.njob = count;
    g_pool.remaining = count - 1;
    __atomic_add_fetch(&g_pool.gen, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&g_pool.work_cv);
    pthread_mutex_unlock(&g_pool.mu);

    if (started) started(ctx, count);
    fn(ctx, 0, count);

    /* the workers usually finish within microseconds of the caller: spin briefly before sleeping */
    const int64_t spin_end = now_ns() + POOL_SPIN_NS;
    while (__atomic_load_n(&g_pool.remaining, __ATOMIC_ACQUIRE) > 0 && now_ns() < spin_end)
        for (int i = 0; i < 64; i++) cpu_relax();
    pthread_mutex_lock(&g_pool.mu);
    while (g_pool.remaining > 0) pthread_cond_wait(&g_pool.done_cv, &g_pool.mu);
    g_pool.busy = 0;
    pthread_mutex_unlock(&g_pool.mu);
    return count;
}

/* ------------------------------------------------------------------------------------------ */
/* Workspace: one cached block reused across calls (avoids re-faulting megabytes every call).   */
/* A concurrent caller, or one needing more than WS_CACHE_MAX, gets a private allocation.       */
/* ------------------------------------------------------------------------------------------ */

#define WS_CACHE_MAX ((size_t)64 << 20)

static pthread_mutex_t g_ws_lock = PTHREAD_MUTEX_INITIALIZER;
static void* g_ws = NULL;
static size_t g_ws_size = 0;
static int g_ws_busy = 0;

static void* ws_acquire(size_t size, int* cached) {
    size = (size + 4095) & ~(size_t)4095;
    *cached = 0;
    if (size <= WS_CACHE_MAX) {
        pthread_mutex_lock(&g_ws_lock);
        if (!g_ws_busy) {
            if (g_ws_size < size) {
                free(g_ws);
                g_ws = aligned_alloc(4096, size);
                g_ws_size = g_ws ? size : 0;
            }
            if (g_ws) {
                g_ws_busy = 1;
                *cached = 1;
                void* p = g_ws;
                pthread_mutex_unlock(&g_ws_lock);
                return p;
            }
        }
        pthread_mutex_unlock(&g_ws_lock);
    }
    return aligned_alloc(4096, size);
}

static void ws_release(void* p, int cached) {
    if (!cached) {
        free(p);
        return;
    }
    pthread_mutex_lock(&g_ws_lock);
    g_ws_busy = 0;
    pthread_mutex_unlock(&g_ws_lock);
}

static void ws_atfork_child(void) {
    pthread_mutex_init(&g_ws_lock, NULL);
    g_ws_busy = 0;
}

/* Frees the cached workspace (it is otherwise kept for the next call). */
void pouw_release_workspace(void) {
    pthread_mutex_lock(&g_ws_lock);
    if (!g_ws_busy) {
        free(g_ws);
        g_ws = NULL;
        g_ws_size = 0;
    }
    pthread_mutex_unlock(&g_ws_lock);
}

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

static int portable_gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th,
                         int tw, int32_t* c, uint32_t* msgs, int threads) {
    portable_ctx P = {a, b, m, k, n, r, th, tw, c, msgs, 0, 0, 0};
    for (int64_t i = 0; i < m * k && !P.has_m128; i++) P.has_m128 = a[i] == -128;
    for (int64_t i = 0; i < k * n && !P.has_m128; i++) P.has_m128 = b[i] == -128;
    const int64_t nti = m / th;
    if (threads > nti) threads = (int)(nti > 0 ? nti : 1);
    run_team(portable_worker, &P, threads, NULL);
    if (P.failed) { /* some rows may be missing: redo on this thread if it can allocate */
        P.next_tile_row = 0;
        P.failed = 0;
        portable_worker(&P, 0, 1);
        if (P.failed) return POUW_ENOMEM;
    }
    return POUW_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* AVX512-VNNI path                                                                           */
/* ------------------------------------------------------------------------------------------ */

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
             * (measured ~0.8 ms of ~25 per 2048^3 call) */
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

static int vnni_supported(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    }
    return cached;
}

static void vnni_team_started(void* vctx, int count) { cb_set_expected(&((vnni_ctx*)vctx)->barrier, count); }

static inline int64_t round_up64(int64_t x) { return (x + 63) & ~(int64_t)63; }

static int vnni_gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw,
                     int32_t* c, uint32_t* msgs, int threads, int flags) {
    pthread_once(&g_redmap_once, build_redmap);
    if (!g_redmap_ok) return portable_gemm(a, b, m, k, n, r, th, tw, c, msgs, threads);
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
    char* ws = (char*)ws_acquire((size_t)total, &cached);
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
    run_team(vnni_worker, &X, threads, vnni_team_started);
    cb_destroy(&X.barrier);
    ws_release(ws, cached);
    return POUW_OK;
}

#pragma GCC pop_options
#endif /* x86 */

/* ------------------------------------------------------------------------------------------ */
/* Public ABI                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* 1 when the AVX512-VNNI path can run on this CPU. */
int pouw_has_vnni(void) {
#ifdef POUW_HAVE_X86
    return vnni_supported();
#else
    return 0;
#endif
}

/* 1 when the AVX2 path can run on this CPU. */
int pouw_has_avx2(void) { return pouw_avx2_supported(); }

static int check_args(int64_t m, int64_t k, int64_t n, int r, int th, int tw, int threads) {
    (void)threads;
    if (m <= 0 || k <= 0 || n <= 0 || r <= 0 || th <= 0 || tw <= 0) return POUW_EINVAL;
    if (k % r || m % th || n % tw) return POUW_EINVAL;
    return POUW_OK;
}

static int vnni_params_ok(int64_t m, int64_t k, int64_t n, int r, int th, int tw) {
    (void)m; (void)k; (void)n;
    if (r % 4) return 0;
    if (!(tw == 4 || tw == 8 || tw == 16)) return 0;
    if (!is_pow2(th) || th < 4) return 0;
    return 1;
}

/* Which path pouw_noisy_gemm_ex would take: 1 = VNNI, 2 = AVX2, 0 = portable, negative = invalid arguments. */
int pouw_path(int64_t m, int64_t k, int64_t n, int r, int th, int tw, int flags) {
    int rc = check_args(m, k, n, r, th, tw, 1);
    if (rc) return rc;
    if (flags & FLAG_FORCE_PORTABLE) return 0;
#ifdef POUW_HAVE_X86
    if (!(flags & FLAG_KERNEL_AVX2) && vnni_supported() && vnni_params_ok(m, k, n, r, th, tw)) return 1;
#endif
    if (!(flags & FLAG_KERNEL_VNNI) && pouw_avx2_supported() && pouw_avx2_params_ok(m, k, n, r, th, tw)) return 2;
    return 0;
}

int pouw_noisy_gemm_ex(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw,
                       int32_t* c_out, uint32_t* msgs_out, int threads, int flags) {
    if (!a || !b || !c_out || !msgs_out) return POUW_EINVAL;
    pthread_once(&g_pool_once, pool_init_once); /* fork handler: the child gets a fresh pool and lock */
    int path = pouw_path(m, k, n, r, th, tw, flags), rc;
    if (path < 0) return path;
    if (threads < 1) threads = 1;
#ifdef POUW_HAVE_X86
    if (path == 1) return vnni_gemm(a, b, m, k, n, r, th, tw, c_out, msgs_out, threads, flags);
#endif
    if (path == 2) {
        rc = pouw_avx2_gemm(a, b, m, k, n, r, th, tw, c_out, msgs_out, threads, flags);
        if (rc != POUW_EINVAL) return rc; /* EINVAL: -128 with r > 1024, which only the portable path takes */
    }
    return portable_gemm(a, b, m, k, n, r, th, tw, c_out, msgs_out, threads);
}

int pouw_noisy_gemm(const int8_t* a, const int8_t* b, int64_t m, int64_t k, int64_t n, int r, int th, int tw,
                    int32_t* c_out, uint32_t* msgs_out, int threads) {
    return pouw_noisy_gemm_ex(a, b, m, k, n, r, th, tw, c_out, msgs_out, threads, 0);
}

/* For kernels/native/aux.c (linked into the same library): fn(ctx, tid, count) on up to n threads of the pool. */
__attribute__((visibility("hidden"))) int pouw_internal_run_team(worker_fn fn, void* ctx, int n) {
    pthread_once(&g_pool_once, pool_init_once);
    return run_team(fn, ctx, n, NULL);
}

/* ABI version, bumped whenever a signature changes (2: aux.c's tile tickets and add_noise; 3: one noise map per
 * operand in add_noise and correction_operands; 4: the AVX2 kernel, pouw_path() == 2, FLAG_KERNEL_*). */
int pouw_abi_version(void) { return 4; }
