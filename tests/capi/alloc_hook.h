/* An interposed heap allocator for the C API tests (alloc_hook.c): it counts allocations, fails them on
 * demand, and tracks which of them are still live. Linking alloc_hook.c into a test program replaces malloc,
 * calloc, realloc, free and the aligned allocators for the whole process: the dynamic linker binds every call
 * (libpangu_c, libstdc++'s operator new, libsentencepiece, libjsoncpp, glibc itself) to these definitions,
 * which forward to glibc's __libc_* entry points. Not usable under AddressSanitizer, which has its own. */
#ifndef PANGU_TEST_ALLOC_HOOK_H
#define PANGU_TEST_ALLOC_HOOK_H

/* Counting: while alloc_hook_counting is set, every allocation increments alloc_hook_allocs. */
extern volatile int alloc_hook_counting;
extern volatile long alloc_hook_allocs;

/* Failure injection: after alloc_hook_fail(n, persistent), the n-th allocation from then on (1-based, all
 * threads) returns NULL with errno ENOMEM, and with `persistent` every one after it too, until
 * alloc_hook_stop(). Allocations are also tracked from the call on: alloc_hook_live() is the number of
 * blocks allocated since then and not yet freed. alloc_hook_stop() ends failures and tracking and returns
 * the number of allocations attempted meanwhile. */
void alloc_hook_fail(long n, int persistent);
long alloc_hook_stop(void);
long alloc_hook_live(void);
long alloc_hook_failed(void); /* allocations refused since alloc_hook_fail() */

/* Never refuse an allocation made with a function of the (loaded) shared object whose path contains `dso`
 * on the stack (NULL: refuse any): for a library that cannot survive an allocation failure, whose
 * allocations are then left out of the test. A spared allocation moves a single failure on to the next
 * allocation. alloc_hook_spared() is the number spared since alloc_hook_fail(). */
void alloc_hook_spare(const char *dso);
long alloc_hook_spared(void);

#endif
