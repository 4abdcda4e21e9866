/* One pass of the read-bandwidth measurement, shared by membw (the stand-alone tool) and bench_core (which
 * interleaves passes with decoding, so that both see the same state of a shared machine).
 *
 * Each thread sums its share of the buffer with vector loads, what a decode kernel's weight stream looks like.
 * Header-only: both users are single C files of bench/. */
#ifndef PANGU_BENCH_MEMBW_H
#define PANGU_BENCH_MEMBW_H

#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

typedef struct {
    const float *p;
    size_t n;
    float sum;
} membw_part;

/* Four independent 8-float vector accumulators (GCC vector extension): the additions keep up with memory, so
 * memory sets the pace, as in a decode kernel's weight stream. */
typedef float membw_v8f __attribute__((vector_size(32)));

static void *membw_reader(void *arg) {
    membw_part *pt = (membw_part *)arg;
    membw_v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    const float *p = pt->p;
    for (size_t i = 0; i + 32 <= pt->n; i += 32) {
        membw_v8f x0, x1, x2, x3;
        memcpy(&x0, p + i, 32);
        memcpy(&x1, p + i + 8, 32);
        memcpy(&x2, p + i + 16, 32);
        memcpy(&x3, p + i + 24, 32);
        a0 += x0;
        a1 += x1;
        a2 += x2;
        a3 += x3;
    }
    membw_v8f s = a0 + a1 + a2 + a3;
    pt->sum = s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
    return NULL;
}

/* Reads n floats of buf with `threads` threads (at most 64); returns the pass's read bandwidth in GB/s, or a
 * negative value if a thread could not be started. *sink receives the sums so the reads are not elided. */
static double membw_pass(const float *buf, size_t n, int threads, float *sink) {
    membw_part parts[64];
    pthread_t th[64];
    struct timespec a, b;
    if (threads < 1 || threads > 64) return -1;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int started = 0;
    for (int t = 0; t < threads; ++t) {
        parts[t].p = buf + n / (size_t)threads * (size_t)t;
        parts[t].n = n / (size_t)threads;
        if (pthread_create(&th[t], NULL, membw_reader, &parts[t]) != 0) break;
        ++started;
    }
    for (int t = 0; t < started; ++t) {
        pthread_join(th[t], NULL);
        *sink += parts[t].sum;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (started < threads) return -1;
    const double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    return (double)(n / (size_t)threads * (size_t)threads) * sizeof(float) / s / 1e9;
}

#endif
