/* The library's thread pool and barrier: see pool.h. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <pthread.h>
#include <time.h>

#include "pool.h"

/* ------------------------------------------------------------------------------------------ */
/* Generic thread runner                                                                      */
/* ------------------------------------------------------------------------------------------ */

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

void cb_init(cbarrier* b) {
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    b->arrived = 0;
    b->expected = INT32_MAX;
}

void cb_destroy(cbarrier* b) {
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
}

void cb_set_expected(cbarrier* b, int expected) {
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

void cb_wait(cbarrier* b) {
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
 * A small persistent pool (creating the threads on every call costs more; benchmarks/RESULTS.md has the numbers,
 * "Measurements moved out of the code"). Idle workers spin for at most POOL_SPIN_NS after a job (a mining pass
 * makes several native calls a few tens of microseconds apart, and waking a sleeping worker costs more than the
 * spin), then sleep on a condition variable: nothing spins for longer between calls. One job at a time; a concurrent caller spawns its own threads. After fork() the child
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

static void pool_atfork_child(void) {
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
int pouw_run_team(worker_fn fn, void* ctx, int n, void (*started)(void*, int)) {
    pthread_once(&g_pool_once, pool_init_once); /* fork handler: the child gets a fresh pool and lock */
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

int pouw_internal_run_team(worker_fn fn, void* ctx, int n) { return pouw_run_team(fn, ctx, n, NULL); }
