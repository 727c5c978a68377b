/* Cached workspaces: see workspace.h. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <pthread.h>

#include "workspace.h"

typedef struct {
    pthread_mutex_t lock;
    void* p;
    size_t size;
    int busy;
    size_t cap; /* larger requests get a private allocation */
} ws_slot;

static ws_slot g_ws[WS_SLOTS] = {
    [WS_GEMM] = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, (size_t)64 << 20},
    [WS_RECOVER] = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, SIZE_MAX},
};
static pthread_once_t g_ws_once = PTHREAD_ONCE_INIT;

static void ws_atfork_child(void) {
    for (int i = 0; i < WS_SLOTS; i++) {
        pthread_mutex_init(&g_ws[i].lock, NULL);
        g_ws[i].busy = 0;
    }
}

static void ws_init_once(void) { pthread_atfork(NULL, NULL, ws_atfork_child); }

void* ws_acquire(int slot, size_t size, int* cached) {
    pthread_once(&g_ws_once, ws_init_once);
    size = (size + 4095) & ~(size_t)4095;
    *cached = 0;
    ws_slot* s = &g_ws[slot];
    if (size <= s->cap) {
        pthread_mutex_lock(&s->lock);
        if (!s->busy) {
            if (s->size < size) {
                free(s->p);
                s->p = aligned_alloc(4096, size);
                s->size = s->p ? size : 0;
            }
            if (s->p) {
                s->busy = 1;
                *cached = 1;
                void* p = s->p;
                pthread_mutex_unlock(&s->lock);
                return p;
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
    return aligned_alloc(4096, size);
}

void ws_release(int slot, void* p, int cached) {
    if (!cached) {
        free(p);
        return;
    }
    ws_slot* s = &g_ws[slot];
    pthread_mutex_lock(&s->lock);
    s->busy = 0;
    pthread_mutex_unlock(&s->lock);
}

void pouw_release_workspace(void) {
    for (int i = 0; i < WS_SLOTS; i++) {
        ws_slot* s = &g_ws[i];
        pthread_mutex_lock(&s->lock);
        if (!s->busy) {
            free(s->p);
            s->p = NULL;
            s->size = 0;
        }
        pthread_mutex_unlock(&s->lock);
    }
}
