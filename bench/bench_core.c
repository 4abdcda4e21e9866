/* Prefill and decode speed of a model through the public API.
 *
 *   bench_core -m DIR [-t THREADS] [-r RUNS] [-p PREFILL_TOKENS] [-n DECODE_TOKENS] [--json]
 *
 * Prefill: evaluate P prompt tokens (taken from the start of the model's own text, repeated as needed) in
 * one call on a fresh context. Decode: then generate N tokens greedily, one forward each. Each figure is the
 * median of R runs; runs alternate so that machine noise hits every configuration alike. Peak RSS is the
 * process maximum (getrusage), which includes the mapped weights the runs touched. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "pangu/pangu.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static const char *kText =
    "def heappush(heap, item):\n    \"\"\"Push item onto heap, maintaining the heap invariant.\"\"\"\n"
    "    heap.append(item)\n    _siftdown(heap, 0, len(heap)-1)\n\n"
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。\n";

static int die(const char *what, pangu_status st) {
    fprintf(stderr, "bench_core: %s: %s: %s\n", what, pangu_status_string(st), pangu_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    int threads = 1, runs = 5, n_prefill = 128, n_decode = 128, json = 0;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-p") && i + 1 < argc) n_prefill = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) n_decode = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json")) json = 1;
        else {
            fprintf(stderr, "usage: bench_core -m DIR [-t THREADS] [-r RUNS] [-p PREFILL] [-n DECODE] [--json]\n");
            return 2;
        }
    }
    if (!dir || threads < 1 || runs < 1 || n_prefill < 1 || n_decode < 1 || runs > 1000) {
        fprintf(stderr, "bench_core: -m DIR is required; counts must be positive\n");
        return 2;
    }
    pangu_model *model = NULL;
    pangu_status st = pangu_model_load(dir, NULL, &model);
    if (st) return die("load", st);

    int32_t text_ids[4096];
    size_t n_text = 0;
    if ((st = pangu_tokenize(model, kText, strlen(kText), 0, 0, text_ids, 4096, &n_text))) return die("tokenize", st);
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)n_prefill);
    if (!prompt) return 1;
    pangu_model_info info;
    info.struct_size = sizeof info;
    pangu_model_get_info(model, &info);
    prompt[0] = info.bos_token >= 0 ? info.bos_token : text_ids[0];
    for (int i = 1; i < n_prefill; ++i) prompt[i] = text_ids[(size_t)(i - 1) % n_text];

    pangu_session_params sp;
    pangu_session_params_init(&sp);
    sp.n_ctx = n_prefill + n_decode + 8;
    sp.n_threads = threads;
    sp.n_batch = 64;
    pangu_session *s = NULL;
    if ((st = pangu_session_create(model, &sp, &s))) return die("session", st);

    pangu_sampling_params gp;
    pangu_sampling_params_init(&gp);
    gp.temperature = 0;
    gp.max_new_tokens = n_decode;
    int eos = info.eos_token;
    /* Decode must not end early at EOS: forbid nothing, but make EOS a non-stop by generating from the token
     * path with no stop tokens other than EOS; if EOS comes, the measurement uses the tokens produced. */
    (void)eos;

    double *pre = calloc((size_t)runs, sizeof(double)), *dec = calloc((size_t)runs, sizeof(double));
    if (!pre || !dec) return 1;
    for (int r = -1; r < runs; ++r) { /* run -1 warms caches and page-ins */
        pangu_session_reset(s);
        double t0 = now_ms();
        if ((st = pangu_session_eval(s, prompt, (size_t)n_prefill, NULL))) return die("eval", st);
        double t1 = now_ms();
        pangu_generate_result res;
        memset(&res, 0, sizeof res);
        res.struct_size = sizeof res;
        if ((st = pangu_session_generate_tokens(s, NULL, 0, &gp, NULL, NULL, &res))) return die("generate", st);
        if (r < 0) continue;
        pre[r] = n_prefill / ((t1 - t0) / 1e3);
        dec[r] = res.n_generated / (res.generate_ms / 1e3);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const double p_med = median(pre, runs), d_med = median(dec, runs);
    if (json)
        printf("{\"model\": \"%s\", \"threads\": %d, \"runs\": %d, \"prefill_tokens\": %d, \"decode_tokens\": %d, "
               "\"prefill_tok_s\": %.1f, \"decode_tok_s\": %.1f, \"peak_rss_kb\": %ld, \"weight_bytes\": %lld}\n",
               dir, threads, runs, n_prefill, n_decode, p_med, d_med, ru.ru_maxrss, (long long)info.weight_bytes);
    else
        printf("%-40s threads %d  prefill %8.1f tok/s  decode %8.1f tok/s  (median of %d)  peak RSS %ld KiB\n", dir,
               threads, p_med, d_med, runs, ru.ru_maxrss);
    free(pre);
    free(dec);
    free(prompt);
    pangu_session_free(s);
    pangu_model_free(model);
    return 0;
}
