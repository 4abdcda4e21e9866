#define _POSIX_C_SOURCE 200809L
#include "cli_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *cli_prog = "pangu";

double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

long default_threads(void) {
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return 1;
    return n > CLI_MAX_THREADS ? CLI_MAX_THREADS : n;
}

int fail(const char *what, pangu_status st) {
    const char *detail = pangu_last_error();
    fprintf(stderr, "%s: error: %s: %s%s%s\n", cli_prog, what, pangu_status_string(st), *detail ? ": " : "", detail);
    return 1;
}

int cli_parse_precision(const char *v, int32_t *out) {
    static const struct {
        const char *name;
        int32_t value;
    } names[] = {{"auto", PANGU_PRECISION_AUTO}, {"f32", PANGU_PRECISION_F32}, {"bf16", PANGU_PRECISION_BF16},
                 {"int8", PANGU_PRECISION_INT8}, {"int16", PANGU_PRECISION_INT16}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i)
        if (!strcmp(v, names[i].name)) {
            *out = names[i].value;
            return 1;
        }
    return 0;
}

int cli_parse_kv_type(const char *v, int32_t *out) {
    static const struct {
        const char *name;
        int32_t value;
    } names[] = {{"f32", PANGU_KV_F32}, {"f16", PANGU_KV_F16}, {"bf16", PANGU_KV_BF16}, {"q8", PANGU_KV_Q8}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; ++i)
        if (!strcmp(v, names[i].name)) {
            *out = names[i].value;
            return 1;
        }
    return 0;
}

const char *cli_precision_name(int32_t p) {
    return p == PANGU_PRECISION_BF16    ? "bf16"
           : p == PANGU_PRECISION_INT8  ? "int8"
           : p == PANGU_PRECISION_INT16 ? "int16"
                                        : "f32";
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "%s: error: out of memory\n", cli_prog);
        exit(1);
    }
    return q;
}

void sbuf_append(sbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

char *read_file(const char *path, const char *what, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: error: cannot open %s'%s': %s\n", cli_prog, what, path, strerror(errno));
        return NULL;
    }
    sbuf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) sbuf_append(&b, chunk, n);
    const int bad = ferror(f);
    const int err = errno;
    fclose(f);
    if (bad) {
        fprintf(stderr, "%s: error: cannot read %s'%s': %s\n", cli_prog, what, path, strerror(err));
        free(b.data);
        return NULL;
    }
    sbuf_append(&b, "", 0);
    *len = b.len;
    return b.data;
}
