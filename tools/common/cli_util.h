/* What the C command-line tools (pangu-cli, pangu-perplexity) share: timing, error reporting, a growable byte
 * string, reading a whole file. Messages begin with cli_prog, which each tool's main sets first. */
#ifndef PANGU_CLI_UTIL_H
#define PANGU_CLI_UTIL_H

#include <pangu/pangu.h>

#include <stddef.h>

extern const char *cli_prog;

double now_ms(void);
/* The tools' default thread count: the online CPUs, at most CLI_MAX_THREADS. */
#define CLI_MAX_THREADS 4
long default_threads(void);
/* Prints the failed call and the library's detailed message; returns 1 for `return fail(...)`. */
int fail(const char *what, pangu_status st);
/* realloc that ends the program with a message when memory runs out. */
void *xrealloc(void *p, size_t n);

/* --precision's values: auto, f32, bf16, int8, int16 -> PANGU_PRECISION_*; 0 for anything else. */
int cli_parse_precision(const char *v, int32_t *out);
/* The name of a resolved PANGU_PRECISION_* ("f32", "bf16", "int8", "int16"). */
const char *cli_precision_name(int32_t p);
/* --kv-type's values: f32, f16, bf16, q8 -> PANGU_KV_*; 0 for anything else. */
int cli_parse_kv_type(const char *v, int32_t *out);

/* Growable byte string, always NUL-terminated once something was appended. */
typedef struct sbuf {
    char *data;
    size_t len, cap;
} sbuf;
void sbuf_append(sbuf *b, const char *s, size_t n);

/* The whole file, NUL-terminated, its length in *len; NULL after printing "cannot open <what>'<path>': ..." or
 * "cannot read ...". `what` names the file's role with a trailing space ("prompt file "), or is "". */
char *read_file(const char *path, const char *what, size_t *len);

#endif
