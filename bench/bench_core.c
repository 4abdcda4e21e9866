/* Prefill and decode speed of one model configuration (used by bench_quant.sh, the W8A16 benchmark).
 *
 *   bench_core -m DIR [-t THREADS] [-r RUNS] [-p PREFILL_TOKENS] [-n DECODE_TOKENS]
 *                   [--precision auto|f32|bf16|int8|int16] [--kv-type f16|bf16|q8|f32] [--spec off|pld] [--json]
 *
 * Prefill: P prompt tokens in one pangu_session_eval on a fresh context; decode: N greedy tokens; medians of
 * R runs after one warm-up run. For comparisons against the memory-bandwidth floor:
 *  - the activation precision is selectable (bf16 weights are benchmarked with fp32 and bf16 activations);
 *  - speculative decoding is off by default, so that every decode step is one forward pass that streams
 *    every weight once (prompt lookup could verify several tokens per pass and beat the floor);
 *  - decode speed counts forward passes per second of generation (the first generated token comes from the
 *    prompt's logits and the last is never run, so tokens / time would overstate by N / (N - 1));
 *  - generation that meets EOS is continued until N tokens are generated;
 *  - besides the process's peak RSS, the resident part of the weight mapping (Rss of the mappings of the
 *    model's .safetensors files in /proc/self/smaps) after the runs is reported.
 *
 * --floor-bytes B measures decode against the memory-bandwidth floor in the same process, interleaved: B is
 * the weight bytes one decode step reads (bench_quant.sh computes it from the checkpoint); before and after
 * each run's decode, the best of five passes of the membw read (bench/membw.h, as many threads) over a
 * B-byte buffer. Each decode step is timed on its own (between successive streamed tokens), so that a burst of
 * another tenant on a shared machine costs the steps it hits rather than a whole run; reported: the median step
 * against the median pass ("fraction of floor, steps") and the runs' decode speed against it ("runs").
 *
 * --prefill-once (long contexts, whose prefill dwarfs the decode): the prompt is evaluated once, in the
 * warm-up run (its speed is the prefill reported), and every run truncates the context back to the prompt and
 * decodes from there; the first decode step runs the prompt's last token again (truncate leaves the logits
 * stale), a step at the same position, counted as one.
 *
 * --curve K instead measures what speculative decoding pays to verify drafts: after the P-token prompt, one
 * forward of m = 1..K positions that returns the logits of every position (as a verification does), rolled
 * back after each call; the median milliseconds of R calls per m and their ratio to m = 1, the m values
 * interleaved so that machine noise hits them alike. With a backend that keeps a device clock (npu-sim: run
 * with PANGU_BACKEND=npu-sim) the times are its latency model's estimated device time. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "pangu/pangu.h"
#include "membw.h"

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

/* Decode steps timed from the streaming callback: with speculation off each token after the first is one
 * forward pass plus its sampling. */
typedef struct {
    double *t;
    int n, cap;
} step_clock;

static int on_token(void *user, int32_t token, const char *piece, size_t len) {
    (void)token, (void)piece, (void)len;
    step_clock *c = (step_clock *)user;
    if (c->n < c->cap) c->t[c->n++] = now_ms();
    return 0;
}

/* The read bandwidth at one point between runs: the best of five passes. On the development machine (a VM) a
 * buffer left alone for the seconds a run lasts reads at a fraction of the bandwidth in its first pass or two,
 * as memory the host reclaimed while idle does; taking the slow passes would lower the floor and flatter the
 * decode, whose weights are touched every step. */
static double floor_point(const float *buf, size_t n, int threads, float *sink) {
    double best = -1;
    for (int i = 0; i < 5; ++i) {
        const double g = membw_pass(buf, n, threads, sink);
        if (g < 0) return g;
        if (g > best) best = g;
    }
    return best;
}

/* Resident bytes of the file mappings whose path ends in ".safetensors" (-1 if /proc is unavailable). */
static long long weights_resident_bytes(void) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[4096];
    int in_weights = 0;
    long long total = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        char perms[8];
        /* A mapping header: "lo-hi perms offset dev inode [path]". */
        if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3) {
            size_t n = strlen(line);
            while (n && (line[n - 1] == '\n' || line[n - 1] == ' ')) line[--n] = '\0';
            const char *suffix = ".safetensors";
            const size_t ns = strlen(suffix);
            in_weights = n >= ns && !strcmp(line + n - ns, suffix);
            continue;
        }
        long long kb;
        if (in_weights && sscanf(line, "Rss: %lld kB", &kb) == 1) total += kb * 1024;
    }
    fclose(f);
    return total;
}

/* --curve: the cost of one forward of m positions, all of whose logits are wanted, for m = 1..kmax. */
static int verify_curve(pangu_model *model, pangu_session *s, const int32_t *prompt, int n_prefill, int kmax,
                        int runs, const char *dir, int threads, int json) {
    pangu_status st;
    int32_t n_vocab = 0;
    if ((st = pangu_session_eval(s, prompt, (size_t)n_prefill, NULL))) return die("eval", st);
    const float *lg;
    if ((st = pangu_session_get_logits(s, &lg, &n_vocab))) return die("logits", st);
    float *logits = malloc(sizeof(float) * (size_t)kmax * (size_t)n_vocab);
    double *ms = malloc(sizeof(double) * (size_t)kmax * (size_t)runs);
    int32_t ids[64];
    if (!logits || !ms) return 1;
    for (int i = 0; i < kmax; ++i) ids[i] = prompt[(size_t)(i + 1) % (size_t)n_prefill];
    /* A backend with a latency model (npu-sim) reports its estimated device time: that is the cost to
     * compare, as the speculation controller does, not the emulator's own. */
    pangu_session_stats ds;
    ds.struct_size = sizeof ds;
    if ((st = pangu_session_get_stats(s, &ds))) return die("stats", st);
    const int device_clock = ds.device_est_ms > 0;
    for (int r = -1; r < runs; ++r)
        for (int m = 1; m <= kmax; ++m) {
            /* the device clock read right around the forward: the truncate after it is not the forward's */
            if (device_clock && (st = pangu_session_get_stats(s, &ds))) return die("stats", st);
            const double t0 = device_clock ? ds.device_est_ms : now_ms();
            if ((st = pangu_session_eval(s, ids, (size_t)m, logits))) return die("eval", st);
            if (device_clock && (st = pangu_session_get_stats(s, &ds))) return die("stats", st);
            const double t = (device_clock ? ds.device_est_ms : now_ms()) - t0;
            if ((st = pangu_session_truncate(s, (size_t)n_prefill))) return die("truncate", st);
            if (r >= 0) ms[(size_t)(m - 1) * (size_t)runs + (size_t)r] = t;
        }
    double one = 0;
    if (!json) printf("%s: threads %d, context %d, median of %d%s\n   m  ms/forward  x one position\n", dir, threads,
                      n_prefill, runs, device_clock ? ", estimated device time (latency model)" : "");
    else printf("{\"model\": \"%s\", \"threads\": %d, \"context\": %d, \"runs\": %d, \"ms\": [", dir, threads,
                n_prefill, runs);
    for (int m = 1; m <= kmax; ++m) {
        const double med = median(ms + (size_t)(m - 1) * (size_t)runs, runs);
        if (m == 1) one = med;
        if (json) printf("%s%.4f", m > 1 ? ", " : "", med);
        else printf("%4d %11.4f %9.2f\n", m, med, med / one);
    }
    if (json) printf("]}\n");
    free(ms);
    free(logits);
    pangu_session_free(s);
    pangu_model_free(model);
    return 0;
}

int main(int argc, char **argv) {
    const char *dir = NULL, *precision = "auto", *spec = "off", *kv = "f16";
    int threads = 1, runs = 5, n_prefill = 128, n_decode = 128, json = 0, curve = 0, prefill_once = 0;
    long long floor_bytes = 0;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-p") && i + 1 < argc) n_prefill = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) n_decode = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--precision") && i + 1 < argc) precision = argv[++i];
        else if (!strcmp(argv[i], "--spec") && i + 1 < argc) spec = argv[++i];
        else if (!strcmp(argv[i], "--kv-type") && i + 1 < argc) kv = argv[++i];
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--prefill-once")) prefill_once = 1;
        else if (!strcmp(argv[i], "--curve") && i + 1 < argc) curve = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--floor-bytes") && i + 1 < argc) floor_bytes = atoll(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_core -m DIR [-t THREADS] [-r RUNS] [-p PREFILL] [-n DECODE]\n"
                            "                       [--precision auto|f32|bf16|int8|int16] [--kv-type f16|bf16|q8|f32]\n"
                            "                       [--spec off|pld] [--json] [--curve K] [--prefill-once]\n"
                            "                       [--floor-bytes BYTES_READ_PER_TOKEN]\n");
            return 2;
        }
    }
    pangu_model_params mp;
    pangu_model_params_init(&mp);
    if (!strcmp(precision, "auto")) mp.activation_precision = PANGU_PRECISION_AUTO;
    else if (!strcmp(precision, "f32")) mp.activation_precision = PANGU_PRECISION_F32;
    else if (!strcmp(precision, "bf16")) mp.activation_precision = PANGU_PRECISION_BF16;
    else if (!strcmp(precision, "int8")) mp.activation_precision = PANGU_PRECISION_INT8;
    else if (!strcmp(precision, "int16")) mp.activation_precision = PANGU_PRECISION_INT16;
    else dir = NULL;
    int32_t kv_type = -1;
    if (!strcmp(kv, "f16")) kv_type = PANGU_KV_F16;
    else if (!strcmp(kv, "bf16")) kv_type = PANGU_KV_BF16;
    else if (!strcmp(kv, "q8")) kv_type = PANGU_KV_Q8;
    else if (!strcmp(kv, "f32")) kv_type = PANGU_KV_F32;
    int spec_mode = -1;
    if (!strcmp(spec, "off")) spec_mode = PANGU_SPEC_OFF;
    else if (!strcmp(spec, "pld")) spec_mode = PANGU_SPEC_PLD;
    if (!dir || spec_mode < 0 || kv_type < 0 || threads < 1 || runs < 1 || n_prefill < 1 || n_decode < 2 || runs > 1000 ||
        curve < 0 || curve > 64 || floor_bytes < 0 || (floor_bytes && threads > 64)) {
        fprintf(stderr, "bench_core: -m DIR is required; counts must be positive (decode at least 2); "
                        "precision auto|f32|bf16|int8|int16, kv-type f16|bf16|q8|f32, spec off|pld\n");
        return 2;
    }
    pangu_model *model = NULL;
    pangu_status st = pangu_model_load(dir, &mp, &model);
    if (st) return die("load", st);

    int32_t text_ids[4096];
    size_t n_text = 0;
    if ((st = pangu_tokenize(model, kText, strlen(kText), 0, 0, text_ids, 4096, &n_text))) return die("tokenize", st);
    int32_t *prompt = malloc(sizeof(int32_t) * (size_t)n_prefill);
    if (!prompt) return 1;
    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if ((st = pangu_model_get_info(model, &info))) return die("info", st);
    prompt[0] = info.bos_token >= 0 ? info.bos_token : text_ids[0];
    for (int i = 1; i < n_prefill; ++i) prompt[i] = text_ids[(size_t)(i - 1) % n_text];

    pangu_session_params sp;
    pangu_session_params_init_sized(&sp, sizeof sp);
    sp.n_ctx = n_prefill + n_decode + 8;
    sp.n_threads = threads;
    sp.n_batch = 64;
    sp.spec_mode = spec_mode;
    sp.kv_type = kv_type;
    pangu_session *s = NULL;
    if ((st = pangu_session_create(model, &sp, &s))) return die("session", st);

    if (curve) return verify_curve(model, s, prompt, n_prefill, curve, runs, dir, threads, json);

    pangu_sampling_params gp;
    pangu_sampling_params_init(&gp);
    gp.temperature = 0;

    double *pre = calloc((size_t)runs, sizeof(double)), *dec = calloc((size_t)runs, sizeof(double));
    if (!pre || !dec) return 1;
    /* --floor-bytes: the read buffer, the passes' bandwidths and the decode steps of all runs. */
    const size_t bw_n = (size_t)floor_bytes / sizeof(float);
    float *bw_buf = NULL, sink = 0;
    double *bw = NULL, *steps = NULL;
    int n_bw = 0, n_steps = 0;
    step_clock clk = {NULL, 0, 0};
    if (floor_bytes) {
        bw_buf = malloc(bw_n * sizeof(float));
        bw = calloc((size_t)(2 * runs + 2), sizeof(double));
        steps = calloc((size_t)runs * (size_t)n_decode, sizeof(double));
        clk.t = calloc((size_t)n_decode + 1, sizeof(double));
        if (!bw_buf || !bw || !steps || !clk.t) return 1;
        for (size_t i = 0; i < bw_n; ++i) bw_buf[i] = (float)(i & 1023);
    }
    int eos_continued = 0;
    double once_ms = 0;
    for (int r = -1; r < runs; ++r) { /* run -1 warms caches and page-ins */
        double t0 = now_ms(), t1;
        if (prefill_once && r > -1) { /* back to the prompt: the decode of every run starts at its end */
            if ((st = pangu_session_truncate(s, (size_t)n_prefill))) return die("truncate", st);
            t0 = t1 = 0; /* the prefill of run -1 stands for all */
        } else {
            pangu_session_reset(s);
            if ((st = pangu_session_eval(s, prompt, (size_t)n_prefill, NULL))) return die("eval", st);
            t1 = now_ms();
            if (prefill_once) once_ms = t1 - t0;
        }
        pangu_session_stats a, b;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        b = a;
        pangu_session_get_stats(s, &a);
        if (floor_bytes) {
            const double g = floor_point(bw_buf, bw_n, threads, &sink);
            if (g < 0) return die("membw threads", PANGU_ERR_INTERNAL);
            if (r >= 0) bw[n_bw++] = g;
        }
        int generated = 0;
        double gen_ms = 0;
        while (generated < n_decode) {
            pangu_generate_result res;
            memset(&res, 0, sizeof res);
            res.struct_size = sizeof res;
            gp.max_new_tokens = n_decode - generated;
            clk.n = 0;
            clk.cap = n_decode + 1;
            if ((st = pangu_session_generate_tokens(s, NULL, 0, &gp, floor_bytes ? on_token : NULL, &clk, &res)))
                return die("generate", st);
            for (int i = 1; r >= 0 && i < clk.n; ++i) steps[n_steps++] = clk.t[i] - clk.t[i - 1];
            generated += res.n_generated;
            gen_ms += res.generate_ms;
            if (res.stop_reason != PANGU_STOP_MAX_TOKENS && res.n_generated > 0) ++eos_continued;
            if (res.n_generated == 0) break;
        }
        pangu_session_get_stats(s, &b);
        if (floor_bytes) {
            const double g = floor_point(bw_buf, bw_n, threads, &sink);
            if (g < 0) return die("membw threads", PANGU_ERR_INTERNAL);
            if (r >= 0) bw[n_bw++] = g;
        }
        if (r < 0) continue;
        pre[r] = n_prefill / ((prefill_once ? once_ms : t1 - t0) / 1e3);
        /* Forward passes of the generation: each streams the weights once. */
        const double fwd = (double)(b.n_forward - a.n_forward);
        dec[r] = fwd / (gen_ms / 1e3);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const long long resident = weights_resident_bytes();
    const double p_med = median(pre, runs), d_med = median(dec, runs);
    const char *act = info.activation_precision == PANGU_PRECISION_BF16   ? "bf16"
                      : info.activation_precision == PANGU_PRECISION_INT8  ? "int8"
                      : info.activation_precision == PANGU_PRECISION_INT16 ? "int16"
                                                                            : "f32";
    /* Against the floor: bytes per step / step time over the read bandwidth of the interleaved passes. */
    double bw_med = 0, step_med = 0, step_p90 = 0, frac_steps = 0, frac_runs = 0;
    if (floor_bytes && n_bw && n_steps) {
        bw_med = median(bw, n_bw);
        step_med = median(steps, n_steps); /* sorts steps */
        step_p90 = steps[(n_steps - 1) * 9 / 10];
        frac_steps = (double)floor_bytes / (step_med / 1e3) / 1e9 / bw_med;
        frac_runs = d_med * (double)floor_bytes / 1e9 / bw_med;
    }
    if (json) {
        printf("{\"model\": \"%s\", \"threads\": %d, \"runs\": %d, \"prefill_tokens\": %d, \"decode_tokens\": %d, "
               "\"activation_precision\": \"%s\", \"spec\": \"%s\", \"prefill_tok_s\": %.2f, \"decode_tok_s\": %.3f, "
               "\"peak_rss_kb\": %ld, \"weights_resident_bytes\": %lld, \"weight_bytes\": %lld, "
               "\"n_params\": %lld, \"n_quantized\": %d, \"eos_continued\": %d",
               dir, threads, runs, n_prefill, n_decode, act, spec, p_med, d_med, ru.ru_maxrss, resident,
               (long long)info.weight_bytes, (long long)info.n_params, info.n_quantized, eos_continued);
        if (floor_bytes)
            printf(", \"floor\": {\"bytes_per_token\": %lld, \"read_gb_s\": %.3f, \"passes\": %d, "
                   "\"step_ms_median\": %.4f, \"step_ms_p90\": %.4f, \"steps\": %d, \"fraction_steps\": %.4f, "
                   "\"fraction_runs\": %.4f}",
                   floor_bytes, bw_med, n_bw, step_med, step_p90, n_steps, frac_steps, frac_runs);
        printf("}\n");
    } else {
        printf("%-40s threads %d  act %-4s  prefill %8.1f tok/s  decode %8.2f tok/s  (median of %d)  "
               "peak RSS %ld KiB  weights resident %.1f MiB\n",
               dir, threads, act, p_med, d_med, runs, ru.ru_maxrss, resident / 1048576.0);
        if (floor_bytes)
            printf("  floor, interleaved: read %.2f GB/s (median of %d points, best of 5 passes of %.1f MB each); "
                   "decode step median %.3f ms, p90 %.3f ms (%d steps) -> %.1f%% of floor (steps), %.1f%% (runs)\n",
                   bw_med, n_bw, floor_bytes / 1e6, step_med, step_p90, n_steps, 100 * frac_steps, 100 * frac_runs);
    }
    free(bw_buf);
    free(bw);
    free(steps);
    free(clk.t);
    free(pre);
    free(dec);
    free(prompt);
    pangu_session_free(s);
    pangu_model_free(model);
    return 0;
}
