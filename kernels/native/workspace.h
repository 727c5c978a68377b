/*
 * Cached workspaces (workspace.c): one block per user, reused across calls (a GEMM or recovery would otherwise
 * re-fault megabytes every call). A concurrent caller, or one needing more than the slot's cap, gets a private
 * allocation. Blocks are 4096-byte aligned. After fork() the child's slots are free again.
 */
#ifndef POUW_WORKSPACE_H
#define POUW_WORKSPACE_H

#include <stddef.h>

/* one slot per user, so that users of different sizes do not evict each other within a mining pass */
enum { WS_GEMM = 0, WS_RECOVER = 1, WS_SLOTS = 2 };

/* A block of at least `size` bytes, or NULL; *cached says whether it is the slot's (hand it back to ws_release). */
__attribute__((visibility("hidden"))) void* ws_acquire(int slot, size_t size, int* cached);
__attribute__((visibility("hidden"))) void ws_release(int slot, void* p, int cached);

/* Frees every cached workspace not in use (they are otherwise kept for the next call). Public ABI. */
void pouw_release_workspace(void);

#endif /* POUW_WORKSPACE_H */
