/* See alloc_hook.h. */
#define _GNU_SOURCE
#include "alloc_hook.h"

#include <errno.h>
#include <link.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unwind.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

volatile int alloc_hook_counting;
volatile long alloc_hook_allocs;

static volatile int g_armed;      /* failing and tracking */
static long g_fail_at;            /* 1-based index of the first allocation to refuse */
static int g_persistent;
static long g_seen, g_failed;     /* allocations attempted / refused since arming */

/* Live blocks since arming: an open-addressing set of pointers (no allocation of its own). */
#define SLOTS (1u << 18)
#define TOMB ((void *)1)
static void *g_live[SLOTS];
static long g_n_live;
static int g_lock;

static void lock(void) {
    while (__atomic_exchange_n(&g_lock, 1, __ATOMIC_ACQUIRE)) {
    }
}
static void unlock(void) { __atomic_store_n(&g_lock, 0, __ATOMIC_RELEASE); }
static size_t slot_of(const void *p) { return (size_t)(((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull >> 46) & (SLOTS - 1); }

static void track(void *p) {
    for (size_t i = slot_of(p);; i = (i + 1) & (SLOTS - 1))
        if (g_live[i] == NULL || g_live[i] == TOMB) {
            g_live[i] = p;
            ++g_n_live;
            return;
        }
}
static void untrack(void *p) {
    for (size_t i = slot_of(p); g_live[i] != NULL; i = (i + 1) & (SLOTS - 1))
        if (g_live[i] == p) {
            g_live[i] = TOMB;
            --g_n_live;
            return;
        }
}

/* The spared shared object's code, [lo, hi), found once by alloc_hook_spare(): a frame is judged by its
 * address alone, and the walk up the stack stops at the first frame inside it. */
static uintptr_t g_spare_lo, g_spare_hi;
static long g_spared;
static __thread int t_inside; /* the unwinder may allocate the first time: never judge those allocations */

static _Unwind_Reason_Code frame(struct _Unwind_Context *ctx, void *arg) {
    int *hit = (int *)arg;
    const uintptr_t ip = (uintptr_t)_Unwind_GetIP(ctx);
    if (ip >= g_spare_lo && ip < g_spare_hi) {
        *hit = 1;
        return _URC_END_OF_STACK;
    }
    return _URC_NO_REASON;
}

/* Whether the calling stack passes through the spared shared object. */
static int spared(void) {
    if (g_spare_hi == 0 || t_inside) return 0;
    t_inside = 1;
    int hit = 0;
    _Unwind_Backtrace(frame, &hit);
    t_inside = 0;
    return hit;
}

static int find_object(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    if (!info->dlpi_name || !strstr(info->dlpi_name, (const char *)arg)) return 0;
    for (int i = 0; i < info->dlpi_phnum; ++i) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
        const uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (g_spare_hi == 0 || lo < g_spare_lo) g_spare_lo = lo;
        if (hi > g_spare_hi) g_spare_hi = hi;
    }
    return 1;
}

/* Decides whether this allocation fails; counts it. */
static int refuse(void) {
    if (alloc_hook_counting) __atomic_add_fetch(&alloc_hook_allocs, 1, __ATOMIC_RELAXED);
    if (!g_armed || t_inside) return 0;
    lock();
    const long k = ++g_seen;
    int no = k == g_fail_at || (g_persistent && k > g_fail_at);
    unlock();
    if (no && spared()) {
        lock();
        ++g_spared;
        if (k == g_fail_at) ++g_fail_at;
        unlock();
        no = 0;
    }
    if (no) {
        lock();
        ++g_failed;
        unlock();
        errno = ENOMEM;
    }
    return no;
}

void alloc_hook_spare(const char *dso) {
    g_spare_lo = g_spare_hi = 0;
    if (dso) dl_iterate_phdr(find_object, (void *)dso);
    t_inside = 1;
    int hit = 0;
    _Unwind_Backtrace(frame, &hit); /* the unwinder's first use allocates: now, not from an armed allocation */
    t_inside = 0;
}
long alloc_hook_spared(void) { return g_spared; }
static void *done(void *p) {
    if (p && g_armed) {
        lock();
        track(p);
        unlock();
    }
    return p;
}

void alloc_hook_fail(long n, int persistent) {
    lock();
    for (size_t i = 0; i < SLOTS; ++i) g_live[i] = NULL;
    g_n_live = 0;
    g_seen = g_failed = g_spared = 0;
    g_fail_at = n;
    g_persistent = persistent;
    g_armed = 1;
    unlock();
}
long alloc_hook_stop(void) {
    lock();
    g_armed = 0;
    const long seen = g_seen;
    unlock();
    return seen;
}
long alloc_hook_live(void) { return g_n_live; }
long alloc_hook_failed(void) { return g_failed; }

void *malloc(size_t n) { return refuse() ? NULL : done(__libc_malloc(n)); }
void *calloc(size_t a, size_t b) { return refuse() ? NULL : done(__libc_calloc(a, b)); }
void *realloc(void *p, size_t n) {
    if (p == NULL) return malloc(n);
    if (n == 0) {
        free(p);
        return NULL;
    }
    if (refuse()) return NULL; /* the old block stays valid, as realloc promises */
    void *q = __libc_realloc(p, n);
    if (q && g_armed) {
        lock();
        untrack(p);
        track(q);
        unlock();
    }
    return q;
}
void free(void *p) {
    if (p && g_armed) {
        lock();
        untrack(p);
        unlock();
    }
    __libc_free(p);
}
void *memalign(size_t a, size_t n) { return refuse() ? NULL : done(__libc_memalign(a, n)); }
void *aligned_alloc(size_t a, size_t n) { return refuse() ? NULL : done(__libc_memalign(a, n)); }
int posix_memalign(void **p, size_t a, size_t n) {
    if (refuse()) return ENOMEM;
    *p = done(__libc_memalign(a, n));
    return *p ? 0 : ENOMEM;
}
