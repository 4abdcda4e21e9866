/* Read bandwidth of this machine: the floor that weight-streaming decode cannot beat.
 *
 *   membw [-t THREADS] [-s MiB] [-r RUNS] [--json]
 *
 * Each thread sums its share of a buffer much larger than the caches with vector loads (what a decode
 * kernel's weight stream looks like); the median of RUNS passes is reported. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    const float *p;
    size_t n;
    float sum;
} part;

/* Four independent 8-float vector accumulators (GCC vector extension): the additions keep up with memory, so
 * memory sets the pace, as in a decode kernel's weight stream. */
typedef float v8f __attribute__((vector_size(32)));

static void *reader(void *arg) {
    part *pt = (part *)arg;
    v8f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    const float *p = pt->p;
    for (size_t i = 0; i + 32 <= pt->n; i += 32) {
        v8f x0, x1, x2, x3;
        memcpy(&x0, p + i, 32);
        memcpy(&x1, p + i + 8, 32);
        memcpy(&x2, p + i + 16, 32);
        memcpy(&x3, p + i + 24, 32);
        a0 += x0;
        a1 += x1;
        a2 += x2;
        a3 += x3;
    }
    v8f s = a0 + a1 + a2 + a3;
    pt->sum = s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
    return NULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int threads = 1, runs = 7, json = 0;
    size_t mib = 1024;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-s") && i + 1 < argc) mib = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json")) json = 1;
        else {
            fprintf(stderr, "usage: membw [-t THREADS] [-s MiB] [-r RUNS] [--json]\n");
            return 2;
        }
    }
    if (threads < 1 || threads > 64 || runs < 1 || runs > 100 || mib < 64) return 2;
    const size_t n = mib * 1024 * 1024 / sizeof(float);
    float *buf = malloc(n * sizeof(float));
    if (!buf) return 1;
    for (size_t i = 0; i < n; ++i) buf[i] = (float)(i & 1023);
    double *gbs = malloc(sizeof(double) * (size_t)runs);
    part parts[64];
    pthread_t th[64];
    float sink = 0;
    for (int r = 0; r < runs; ++r) {
        const double t0 = now_s();
        for (int t = 0; t < threads; ++t) {
            parts[t].p = buf + n / threads * t;
            parts[t].n = n / threads;
            pthread_create(&th[t], NULL, reader, &parts[t]);
        }
        for (int t = 0; t < threads; ++t) {
            pthread_join(th[t], NULL);
            sink += parts[t].sum;
        }
        gbs[r] = n * sizeof(float) / (now_s() - t0) / 1e9;
    }
    qsort(gbs, (size_t)runs, sizeof(double), cmp);
    const double med = gbs[runs / 2];
    if (json) printf("{\"threads\": %d, \"mib\": %zu, \"runs\": %d, \"read_gb_s\": %.2f}\n", threads, mib, runs, med);
    else printf("read bandwidth: %.2f GB/s (threads %d, %zu MiB, median of %d)%s\n", med, threads, mib, runs, sink == 1 ? " " : "");
    free(gbs);
    free(buf);
    return 0;
}
