/* Read bandwidth of this machine: the floor that weight-streaming decode cannot beat.
 *
 *   membw [-t THREADS] [-s MiB] [-r RUNS] [--json]
 *
 * Each thread sums its share of a buffer much larger than the caches with vector loads (what a decode
 * kernel's weight stream looks like); the median of RUNS passes is reported. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "membw.h"

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
    float sink = 0;
    for (int r = 0; r < runs; ++r)
        if ((gbs[r] = membw_pass(buf, n, threads, &sink)) < 0) {
            fprintf(stderr, "membw: cannot start %d threads\n", threads);
            return 1;
        }
    qsort(gbs, (size_t)runs, sizeof(double), cmp);
    const double med = gbs[runs / 2];
    if (json) printf("{\"threads\": %d, \"mib\": %zu, \"runs\": %d, \"read_gb_s\": %.2f}\n", threads, mib, runs, med);
    else printf("read bandwidth: %.2f GB/s (threads %d, %zu MiB, median of %d)%s\n", med, threads, mib, runs, sink == 1 ? " " : "");
    free(gbs);
    free(buf);
    return 0;
}
