/* Estimated decoding speed on an Ascend 310P-class NPU, from the npu-sim backend's latency model.
 *
 *   npu_estimate [-m DIR] [-n TOKENS] [-t THREADS] [--profile FILE] [--memory BYTES] [--repeat K]
 *
 * Loads the model with backend "npu-sim" (-m, default the bundled pangu-tiny), evaluates a repetitive prompt
 * (a Python function repeated K times, default 4), then generates TOKENS greedy tokens (default 64) with
 * speculation off and with prompt lookup (PLD), each in a fresh session. For each mode it prints, from
 * pangu_session_get_stats: the estimated device time of prefill and of generation, the estimated tokens/s of
 * generation (generated tokens / estimated generation seconds; the first token comes from the prompt's
 * logits, so plain decoding runs TOKENS - 1 forwards) and ms/token, the end-to-end figure (generated
 * tokens / the session's whole device_est_ms, prefill included), the host<->device bytes of the generation
 * and the session's fp16 overflow count. The host's own wall time is printed for reference only: the estimate
 * does not depend on it. The figures are a model (docs/porting-310p.md), not a measurement on hardware.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pangu/pangu.h"

#ifndef PANGU_DEFAULT_MODEL
#define PANGU_DEFAULT_MODEL "models/pangu-tiny"
#endif

static const char kSnippet[] =
    "def moving_average(values, window):\n"
    "    \"\"\"Return the moving average of values over a window.\"\"\"\n"
    "    result = []\n"
    "    total = 0.0\n"
    "    for i, value in enumerate(values):\n"
    "        total += value\n"
    "        if i >= window:\n"
    "            total -= values[i - window]\n"
    "        result.append(total / min(i + 1, window))\n"
    "    return result\n\n\n";

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int count_token(void *user, int32_t token, const char *piece, size_t len) {
    (void)token;
    (void)piece;
    (void)len;
    ++*(int *)user;
    return 0;
}

static pangu_session_stats get_stats(pangu_session *s) {
    pangu_session_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    pangu_session_get_stats(s, &st);
    return st;
}

typedef struct Result {
    int generated;
    double prefill_ms, decode_ms, wall_s;
    long long h2d, d2h, overflows, forwards, drafted, accepted;
} Result;

static int run(pangu_model *m, const int32_t *prompt, size_t n_prompt, int n_tokens, int threads, int spec_mode,
               Result *r) {
    pangu_session_params sp;
    pangu_session_params_init_sized(&sp, sizeof sp);
    sp.n_ctx = (int32_t)(n_prompt + (size_t)n_tokens + 16);
    sp.n_threads = threads;
    sp.spec_mode = spec_mode;
    pangu_session *s = NULL;
    if (pangu_session_create(m, &sp, &s) != PANGU_OK) {
        fprintf(stderr, "session: %s\n", pangu_last_error());
        return 1;
    }
    if (pangu_session_eval(s, prompt, n_prompt, NULL) != PANGU_OK) {
        fprintf(stderr, "prompt: %s\n", pangu_session_last_error(s));
        pangu_session_free(s);
        return 1;
    }
    const pangu_session_stats a = get_stats(s);
    pangu_sampling_params gp;
    pangu_sampling_params_init(&gp);
    memset(r, 0, sizeof *r);
    const double t0 = now_s();
    /* The end-of-text token stops a generation early: go on from the context until n_tokens are made. */
    for (int tries = 0; r->generated < n_tokens && tries < 64; ++tries) {
        gp.max_new_tokens = n_tokens - r->generated;
        pangu_status st = pangu_session_generate_tokens(s, NULL, 0, &gp, count_token, &r->generated, NULL);
        if (st != PANGU_OK) {
            fprintf(stderr, "generate: %s\n", pangu_session_last_error(s));
            pangu_session_free(s);
            return 1;
        }
    }
    r->wall_s = now_s() - t0;
    const pangu_session_stats b = get_stats(s);
    r->prefill_ms = a.device_est_ms;
    r->decode_ms = b.device_est_ms - a.device_est_ms;
    r->h2d = b.host_to_device_bytes - a.host_to_device_bytes;
    r->d2h = b.device_to_host_bytes - a.device_to_host_bytes;
    r->overflows = b.fp16_overflows;
    r->forwards = b.n_forward - a.n_forward;
    r->drafted = b.n_drafted;
    r->accepted = b.n_accepted;
    pangu_session_free(s);
    return 0;
}

int main(int argc, char **argv) {
    const char *dir = PANGU_DEFAULT_MODEL, *profile = NULL;
    int n_tokens = 64, threads = 2, repeat = 4;
    size_t memory = 0;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-m") && v) dir = argv[++i];
        else if (!strcmp(a, "-n") && v) n_tokens = atoi(argv[++i]);
        else if (!strcmp(a, "-t") && v) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--profile") && v) profile = argv[++i];
        else if (!strcmp(a, "--memory") && v) memory = (size_t)strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--repeat") && v) repeat = atoi(argv[++i]);
        else {
            fprintf(stderr,
                    "usage: %s [-m DIR] [-n TOKENS] [-t THREADS] [--profile FILE] [--memory BYTES] [--repeat K]\n",
                    argv[0]);
            return 2;
        }
    }
    if (n_tokens < 1 || threads < 1 || repeat < 1) {
        fprintf(stderr, "-n, -t and --repeat must be positive\n");
        return 2;
    }

    pangu_model_params mp;
    pangu_model_params_init(&mp);
    mp.backend = "npu-sim";
    mp.device_memory = memory;
    mp.device_profile = profile;
    pangu_model *m = NULL;
    const double tl = now_s();
    if (pangu_model_load(dir, &mp, &m) != PANGU_OK) {
        fprintf(stderr, "%s: %s\n", dir, pangu_last_error());
        return 1;
    }
    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    pangu_model_get_info(m, &info);

    size_t len = strlen(kSnippet) * (size_t)repeat, n_prompt = 0;
    char *text = malloc(len + 1);
    text[0] = '\0';
    for (int i = 0; i < repeat; ++i) strcat(text, kSnippet);
    pangu_tokenize(m, text, len, 1, 0, NULL, 0, &n_prompt);
    int32_t *prompt = malloc(sizeof(int32_t) * (n_prompt ? n_prompt : 1));
    pangu_tokenize(m, text, len, 1, 0, prompt, n_prompt, &n_prompt);
    free(text);

    printf("model     %s (%.1f M params, %d int8 matrices, %.1f MB of weights on the host), loaded in %.1f s\n", dir,
           info.n_params / 1e6, info.n_quantized, info.weight_bytes / 1e6, now_s() - tl);
    printf("device    npu-sim, profile %s, memory budget %s\n", profile ? profile : "built-in 310P (unverified figures)",
           memory ? "as given" : "24 GiB");
    printf("prompt    %zu tokens (a function repeated %d times), %d tokens generated per mode, %d host threads\n\n",
           n_prompt, repeat, n_tokens, threads);
    printf("%-4s %7s %14s %13s %10s %10s %10s %11s %12s %9s %9s %10s %8s\n", "mode", "tokens", "prefill_est_ms",
           "decode_est_ms", "ms/token", "est_tok/s", "e2e_tok/s", "h2d_bytes", "d2h_bytes", "overflows", "forwards",
           "acc/draft", "host_s");
    const int modes[2] = {PANGU_SPEC_OFF, PANGU_SPEC_PLD};
    const char *names[2] = {"off", "pld"};
    double tps[2] = {0, 0};
    for (int k = 0; k < 2; ++k) {
        Result r;
        if (run(m, prompt, n_prompt, n_tokens, threads, modes[k], &r)) {
            pangu_model_free(m);
            free(prompt);
            return 1;
        }
        tps[k] = r.decode_ms > 0 ? r.generated / (r.decode_ms / 1000.0) : 0;
        char acc[32];
        snprintf(acc, sizeof acc, "%lld/%lld", r.accepted, r.drafted);
        const double total_ms = r.prefill_ms + r.decode_ms;
        printf("%-4s %7d %14.3f %13.3f %10.3f %10.1f %10.1f %11lld %12lld %9lld %9lld %10s %8.2f\n", names[k],
               r.generated, r.prefill_ms, r.decode_ms, r.generated ? r.decode_ms / r.generated : 0.0, tps[k],
               total_ms > 0 ? r.generated / (total_ms / 1000.0) : 0.0, r.h2d, r.d2h, r.overflows, r.forwards, acc,
               r.wall_s);
    }
    if (tps[0] > 0) printf("\nestimated PLD speed-up on the device: %.2fx\n", tps[1] / tps[0]);
    pangu_model_free(m);
    free(prompt);
    return 0;
}
