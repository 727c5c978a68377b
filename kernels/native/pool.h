/*
 * The library's threads (pool.c): a small persistent pthread pool (no OpenMP runtime: nothing fights the OpenMP
 * runtime torch ships; idle workers spin at most 0.2 ms, then sleep) and a barrier whose party count is fixed
 * once the team is running. Every kernel file hands its work out through pouw_run_team.
 */
#ifndef POUW_POOL_H
#define POUW_POOL_H

#include <pthread.h>

typedef void (*worker_fn)(void* ctx, int tid, int nthreads);

/* Runs fn(ctx, tid, count) on up to n threads (tid 0 on the caller); returns count. started(ctx, count) (may be
 * NULL) is called once count is known, before the caller's own share starts. One job at a time uses the pool; a
 * concurrent caller spawns its own threads. After fork() the child starts with an empty pool. */
__attribute__((visibility("hidden"))) int pouw_run_team(worker_fn fn, void* ctx, int n,
                                                        void (*started)(void*, int));
/* pouw_run_team without the callback (what aux.c, recover.c and avx2_gemm.c call) */
__attribute__((visibility("hidden"))) int pouw_internal_run_team(worker_fn fn, void* ctx, int n);

/* A one-shot barrier whose party count is fixed only once the threads are running (cb_set_expected from the
 * team's started callback), so a failed pthread_create just means fewer workers. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int arrived;  /* atomic */
    int expected; /* atomic; INT32_MAX until known */
} cbarrier;

__attribute__((visibility("hidden"))) void cb_init(cbarrier* b);
__attribute__((visibility("hidden"))) void cb_destroy(cbarrier* b);
__attribute__((visibility("hidden"))) void cb_set_expected(cbarrier* b, int expected);
__attribute__((visibility("hidden"))) void cb_wait(cbarrier* b);

#endif /* POUW_POOL_H */
