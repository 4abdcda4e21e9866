/* Sessions: cancellation from the token callback and the abort callback (during prefill and generation),
 * reset, multi-turn KV reuse, truncate-and-regenerate, per-position logits, and concurrent sessions on one
 * shared model. Equalities of logits are exact (memcmp): the kernels are batch-invariant and deterministic,
 * so the same context must give the same bits however it was built.
 *
 * Callbacks and worker threads never assert (a cmocka failure longjmps); they record and the test checks. */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pangu/pangu.h"

static pangu_model *g_model;
static int32_t g_n_vocab, g_eos;

static const char kPoem[] = "《静夜思》\n作者：李白\n床前明月光，";
static const char kLong[] =
    "《静夜思》\n作者：李白\n床前明月光，疑是地上霜。举头望明月，低头思故乡。\n"
    "《春晓》\n作者：孟浩然\n春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。\n"
    "《登鹳雀楼》\n作者：王之涣\n白日依山尽，黄河入海流。欲穷千里目，更上一层楼。\n";

static int setup(void **state) {
    (void)state;
    if (pangu_model_load(PANGU_MODEL_DIR, NULL, &g_model) != PANGU_OK) {
        fprintf(stderr, "load: %s\n", pangu_last_error());
        return -1;
    }
    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if (pangu_model_get_info(g_model, &info) != PANGU_OK) return -1;
    g_n_vocab = info.n_vocab;
    g_eos = info.eos_token;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    pangu_model_free(g_model);
    return 0;
}

static pangu_session *new_session(int32_t n_batch, int32_t n_threads) {
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.n_ctx = 512;
    p.n_batch = n_batch;
    p.n_threads = n_threads;
    pangu_session *s = NULL;
    assert_int_equal(pangu_session_create(g_model, &p, &s), PANGU_OK);
    return s;
}

static size_t tokenize(const char *text, int add_bos, int32_t *ids, size_t cap) {
    size_t n = 0;
    assert_int_equal(pangu_tokenize(g_model, text, strlen(text), add_bos, 1, ids, cap, &n), PANGU_OK);
    return n;
}

#define CTX 512
typedef struct {
    int32_t ids[CTX];
    size_t n;
} token_list;

static void get_context(pangu_session *s, token_list *t) {
    assert_int_equal(pangu_session_get_tokens(s, t->ids, CTX, &t->n), PANGU_OK);
    assert_int_equal(t->n, pangu_session_n_tokens(s));
}

static void assert_same_tokens(const int32_t *a, size_t na, const int32_t *b, size_t nb, const char *what) {
    if (na != nb) fail_msg("%s: %zu tokens vs %zu", what, na, nb);
    for (size_t i = 0; i < na; ++i)
        if (a[i] != b[i]) fail_msg("%s: token %zu differs: %d vs %d", what, i, a[i], b[i]);
}

static void assert_same_logits(const float *a, const float *b, const char *what) {
    if (memcmp(a, b, sizeof(float) * (size_t)g_n_vocab) != 0) {
        int i = 0;
        while (a[i] == b[i]) ++i;
        fail_msg("%s: logits differ first at %d: %.9g vs %.9g", what, i, (double)a[i], (double)b[i]);
    }
}

/* The logits after the context's last token, copied. */
static float *logits_copy(pangu_session *s) {
    const float *l = NULL;
    int32_t nv = 0;
    pangu_status st = pangu_session_get_logits(s, &l, &nv);
    if (st != PANGU_OK) fail_msg("get_logits: %s: %s", pangu_status_string(st), pangu_session_last_error(s));
    assert_int_equal(nv, g_n_vocab);
    float *c = (float *)malloc(sizeof(float) * (size_t)nv);
    assert_non_null(c);
    memcpy(c, l, sizeof(float) * (size_t)nv);
    return c;
}

static pangu_sampling_params sampling(float temperature, uint64_t seed, int32_t max_new) {
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.temperature = temperature;
    sp.seed = seed;
    sp.max_new_tokens = max_new;
    return sp;
}

static pangu_generate_result new_result(void) {
    pangu_generate_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    return r;
}

/* ---------------------------------------------------------------------------------------------- */
/* cancellation                                                                                   */
/* ---------------------------------------------------------------------------------------------- */

typedef struct {
    int calls;
    int cancel_at; /* return non-zero on this call (1-based); 0 = never */
    int32_t toks[256];
} cb_state;

static int counting_cb(void *user, int32_t token, const char *piece, size_t len) {
    (void)piece;
    (void)len;
    cb_state *c = (cb_state *)user;
    if (c->calls < 256) c->toks[c->calls] = token;
    c->calls++;
    return c->cancel_at && c->calls >= c->cancel_at;
}

static void test_cancel_from_token_callback(void **state) {
    (void)state;
    const int cancel_points[] = {1, 3, 10};
    for (size_t i = 0; i < 3; ++i) {
        pangu_session *s = new_session(64, 1);
        cb_state c;
        memset(&c, 0, sizeof c);
        c.cancel_at = cancel_points[i];
        pangu_sampling_params sp = sampling(0.8f, 3, 40);
        pangu_generate_result r = new_result();
        assert_int_equal(pangu_session_generate(s, kPoem, &sp, counting_cb, &c, &r), PANGU_ERR_CANCELLED);
        assert_int_equal(c.calls, c.cancel_at);
        assert_int_equal(r.stop_reason, PANGU_STOP_CANCELLED);
        assert_int_equal(r.n_generated, c.cancel_at);
        assert_true(strstr(pangu_session_last_error(s), "cancel") != NULL);
        /* every delivered token is in the context */
        token_list t;
        get_context(s, &t);
        assert_int_equal(t.n, (size_t)(r.n_prompt_tokens + c.cancel_at));
        assert_memory_equal(t.ids + r.n_prompt_tokens, c.toks, (size_t)c.cancel_at * sizeof(int32_t));

        /* the session stays usable and continues from there, exactly as a fresh session given the same
         * context does */
        cb_state c2;
        memset(&c2, 0, sizeof c2);
        pangu_sampling_params g = sampling(0, 0, 12);
        pangu_generate_result r2 = new_result();
        assert_int_equal(pangu_session_generate_tokens(s, NULL, 0, &g, counting_cb, &c2, &r2), PANGU_OK);
        assert_true(r2.n_generated > 0);
        assert_int_equal(pangu_session_n_tokens(s), t.n + (size_t)r2.n_generated);

        pangu_session *f = new_session(64, 1);
        cb_state c3;
        memset(&c3, 0, sizeof c3);
        pangu_generate_result r3 = new_result();
        assert_int_equal(pangu_session_generate_tokens(f, t.ids, t.n, &g, counting_cb, &c3, &r3), PANGU_OK);
        assert_same_tokens(c2.toks, (size_t)c2.calls, c3.toks, (size_t)c3.calls, "continuation after cancel");
        pangu_session_free(f);
        pangu_session_free(s);
    }
}

typedef struct {
    int calls;
    int abort_at; /* return non-zero from this call on (1-based); 0 = never */
    const volatile int *flag; /* or: abort when *flag is set */
} abort_state;

static int abort_cb(void *user) {
    abort_state *a = (abort_state *)user;
    a->calls++;
    if (a->flag && *a->flag) return 1;
    return a->abort_at && a->calls >= a->abort_at;
}

static void test_abort_during_prefill(void **state) {
    (void)state;
    const int32_t n_batch = 4;
    int32_t ids[256];
    const size_t n = tokenize(kLong, 1, ids, 256);
    assert_true(n > 40);

    /* through pangu_session_generate: three chunks run, the fourth is refused */
    pangu_session *s = new_session(n_batch, 1);
    abort_state a = {0, 4, NULL};
    pangu_session_set_abort_callback(s, abort_cb, &a);
    pangu_sampling_params sp = sampling(0, 0, 8);
    cb_state c;
    memset(&c, 0, sizeof c);
    assert_int_equal(pangu_session_generate(s, kLong, &sp, counting_cb, &c, NULL), PANGU_ERR_CANCELLED);
    assert_int_equal(a.calls, 4);
    assert_int_equal(c.calls, 0);
    assert_int_equal(pangu_session_n_tokens(s), 3 * (size_t)n_batch);
    token_list t;
    get_context(s, &t);
    assert_memory_equal(t.ids, ids, t.n * sizeof(int32_t));
    assert_true(strlen(pangu_session_last_error(s)) > 0);

    /* the evaluated chunks are kept: finishing the prompt gives the logits of a whole evaluation */
    pangu_session_set_abort_callback(s, NULL, NULL);
    assert_int_equal(pangu_session_eval(s, ids + t.n, n - t.n, NULL), PANGU_OK);
    float *resumed = logits_copy(s);
    pangu_session *f = new_session(64, 1);
    assert_int_equal(pangu_session_eval(f, ids, n, NULL), PANGU_OK);
    float *whole = logits_copy(f);
    assert_same_logits(resumed, whole, "prefill resumed after abort");

    /* through pangu_session_eval, on a context that already holds tokens */
    pangu_session_reset(s);
    assert_int_equal(pangu_session_eval(s, ids, 5, NULL), PANGU_OK);
    a.calls = 0;
    a.abort_at = 3;
    pangu_session_set_abort_callback(s, abort_cb, &a);
    assert_int_equal(pangu_session_eval(s, ids + 5, n - 5, NULL), PANGU_ERR_CANCELLED);
    assert_int_equal(pangu_session_n_tokens(s), 5 + 2 * (size_t)n_batch);
    pangu_session_set_abort_callback(s, NULL, NULL);
    const size_t done = pangu_session_n_tokens(s);
    /* the logits after the kept tokens are there at once, as a fresh evaluation of them gives them (they
     * were refused as "no token has been evaluated": found by the soak test) */
    float *kept = logits_copy(s);
    pangu_session *k = new_session(64, 1);
    assert_int_equal(pangu_session_eval(k, ids, done, NULL), PANGU_OK);
    float *fresh = logits_copy(k);
    assert_same_logits(kept, fresh, "logits after an aborted eval");
    free(kept);
    free(fresh);
    pangu_session_free(k);
    assert_int_equal(pangu_session_eval(s, ids + done, n - done, NULL), PANGU_OK);
    free(resumed);
    resumed = logits_copy(s);
    assert_same_logits(resumed, whole, "eval resumed after abort");

    free(resumed);
    free(whole);
    pangu_session_free(f);
    pangu_session_free(s);
}

typedef struct {
    int calls;
    int stop_after;
    volatile int *flag;
} flag_cb_state;

static int flag_setting_cb(void *user, int32_t token, const char *piece, size_t len) {
    (void)token;
    (void)piece;
    (void)len;
    flag_cb_state *c = (flag_cb_state *)user;
    if (++c->calls >= c->stop_after) *c->flag = 1;
    return 0;
}

/* The abort callback also stops generation between tokens (as another thread setting a flag would). */
static void test_abort_during_generation(void **state) {
    (void)state;
    pangu_session *s = new_session(64, 1);
    volatile int flag = 0;
    abort_state a = {0, 0, &flag};
    pangu_session_set_abort_callback(s, abort_cb, &a);
    flag_cb_state c = {0, 2, &flag};
    pangu_sampling_params sp = sampling(0, 0, 40);
    pangu_generate_result r = new_result();
    assert_int_equal(pangu_session_generate(s, kPoem, &sp, flag_setting_cb, &c, &r), PANGU_ERR_CANCELLED);
    assert_int_equal(c.calls, 2);
    assert_int_equal(r.stop_reason, PANGU_STOP_CANCELLED);
    assert_int_equal(r.n_generated, 2);
    assert_int_equal(pangu_session_n_tokens(s), (size_t)(r.n_prompt_tokens + 2));
    /* removing the callback, the session goes on */
    pangu_session_set_abort_callback(s, NULL, NULL);
    r = new_result();
    sp.max_new_tokens = 4;
    assert_int_equal(pangu_session_generate_tokens(s, NULL, 0, &sp, NULL, NULL, &r), PANGU_OK);
    assert_true(r.n_generated > 0);
    pangu_session_free(s);
}

/* ---------------------------------------------------------------------------------------------- */
/* reset, multi-turn, truncate                                                                    */
/* ---------------------------------------------------------------------------------------------- */

static void test_reset_equals_fresh(void **state) {
    (void)state;
    pangu_sampling_params sp = sampling(0.8f, 9, 32);
    pangu_session *f = new_session(64, 1);
    assert_int_equal(pangu_session_generate(f, kPoem, &sp, NULL, NULL, NULL), PANGU_OK);
    token_list want;
    get_context(f, &want);

    pangu_session *s = new_session(64, 1);
    pangu_sampling_params other = sampling(1.0f, 77, 20);
    assert_int_equal(pangu_session_generate(s, "def main():\n", &other, NULL, NULL, NULL), PANGU_OK);
    assert_int_equal(pangu_session_generate(s, "\n", &other, NULL, NULL, NULL), PANGU_OK);
    assert_int_equal(pangu_session_reset(s), PANGU_OK);
    assert_int_equal(pangu_session_n_tokens(s), 0);
    const float *l = NULL;
    assert_int_equal(pangu_session_get_logits(s, &l, NULL), PANGU_ERR_INVALID_ARGUMENT);
    assert_int_equal(pangu_session_generate(s, kPoem, &sp, NULL, NULL, NULL), PANGU_OK);
    token_list got;
    get_context(s, &got);
    assert_same_tokens(got.ids, got.n, want.ids, want.n, "after reset vs fresh");
    float *a = logits_copy(s), *b = logits_copy(f);
    assert_same_logits(a, b, "after reset vs fresh");
    free(a);
    free(b);
    pangu_session_free(s);
    pangu_session_free(f);
}

/* Generate A then B on one session; a fresh session evaluating everything up to B's continuation and then
 * generating must produce B's continuation token for token. */
static void check_multi_turn(float temperature) {
    pangu_session *s = new_session(64, 1);
    pangu_sampling_params spa = sampling(temperature, 4, 16), spb = sampling(temperature, 5, 16);
    pangu_generate_result ra = new_result(), rb = new_result();
    assert_int_equal(pangu_session_generate(s, kPoem, &spa, NULL, NULL, &ra), PANGU_OK);
    assert_int_equal(pangu_session_generate(s, "\n《春晓》\n作者：孟浩然\n", &spb, NULL, NULL, &rb), PANGU_OK);
    assert_int_equal(rb.n_prompt_tokens > 0, 1);
    token_list all;
    get_context(s, &all);
    assert_int_equal(all.n, (size_t)(ra.n_prompt_tokens + ra.n_generated + rb.n_prompt_tokens + rb.n_generated));
    const size_t head = all.n - (size_t)rb.n_generated;

    pangu_session *f = new_session(64, 1);
    pangu_sampling_params spf = spb;
    spf.max_new_tokens = rb.n_generated;
    pangu_generate_result rf = new_result();
    assert_int_equal(pangu_session_generate_tokens(f, all.ids, head, &spf, NULL, NULL, &rf), PANGU_OK);
    token_list fresh;
    get_context(f, &fresh);
    assert_same_tokens(fresh.ids, fresh.n, all.ids, all.n, "multi-turn vs fresh");
    float *a = logits_copy(s), *b = logits_copy(f);
    assert_same_logits(a, b, "multi-turn vs fresh");
    free(a);
    free(b);
    pangu_session_free(f);
    pangu_session_free(s);
}

static void test_multi_turn_greedy(void **state) {
    (void)state;
    check_multi_turn(0.0f);
}

static void test_multi_turn_sampled(void **state) {
    (void)state;
    check_multi_turn(0.8f);
}

static void test_truncate_regenerate(void **state) {
    (void)state;
    const float temps[] = {0.0f, 0.8f};
    for (int t = 0; t < 2; ++t) {
        pangu_session *s = new_session(64, 1);
        pangu_sampling_params sp = sampling(temps[t], 21, 20);
        pangu_generate_result r = new_result();
        assert_int_equal(pangu_session_generate(s, kPoem, &sp, NULL, NULL, &r), PANGU_OK);
        token_list first;
        get_context(s, &first);
        const size_t n_prompt = (size_t)r.n_prompt_tokens;

        /* back to the prompt: the logits are the prompt's, and regenerating gives the same tokens */
        assert_int_equal(pangu_session_truncate(s, n_prompt), PANGU_OK);
        assert_int_equal(pangu_session_n_tokens(s), n_prompt);
        pangu_session *f = new_session(64, 1);
        assert_int_equal(pangu_session_eval(f, first.ids, n_prompt, NULL), PANGU_OK);
        float *a = logits_copy(s), *b = logits_copy(f);
        assert_same_logits(a, b, "logits after truncate to the prompt");
        free(a);
        free(b);
        r = new_result();
        assert_int_equal(pangu_session_generate_tokens(s, NULL, 0, &sp, NULL, NULL, &r), PANGU_OK);
        token_list second;
        get_context(s, &second);
        assert_same_tokens(second.ids, second.n, first.ids, first.n, "regenerated after truncate");

        /* into the middle of the reply: greedy continues exactly as before */
        if (temps[t] == 0.0f && first.n > n_prompt + 6) {
            const size_t keep = n_prompt + 5;
            assert_int_equal(pangu_session_truncate(s, keep), PANGU_OK);
            pangu_sampling_params g = sampling(0, 0, (int32_t)(first.n - keep));
            assert_int_equal(pangu_session_generate_tokens(s, NULL, 0, &g, NULL, NULL, NULL), PANGU_OK);
            token_list third;
            get_context(s, &third);
            assert_same_tokens(third.ids, third.n, first.ids, first.n, "regenerated after truncate mid-reply");
        }
        /* truncate to nothing is a reset of the context */
        assert_int_equal(pangu_session_truncate(s, 0), PANGU_OK);
        assert_int_equal(pangu_session_n_tokens(s), 0);
        pangu_session_free(f);
        pangu_session_free(s);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* per-position logits                                                                            */
/* ---------------------------------------------------------------------------------------------- */

static void check_rows_against_prefixes(const int32_t *ctx, size_t n_before, size_t n, const float *rows) {
    /* a fresh session evaluating the tokens one at a time */
    pangu_session *f = new_session(1, 1);
    if (n_before) assert_int_equal(pangu_session_eval(f, ctx, n_before, NULL), PANGU_OK);
    for (size_t i = 0; i < n; ++i) {
        assert_int_equal(pangu_session_eval(f, ctx + n_before + i, 1, NULL), PANGU_OK);
        const float *l = NULL;
        assert_int_equal(pangu_session_get_logits(f, &l, NULL), PANGU_OK);
        char what[64];
        snprintf(what, sizeof what, "row %zu vs its prefix evaluated alone", i);
        assert_same_logits(rows + i * (size_t)g_n_vocab, l, what);
    }
    pangu_session_free(f);
}

static void test_eval_logits_rows(void **state) {
    (void)state;
    int32_t ids[256];
    const size_t n = tokenize(kLong, 1, ids, 256);
    assert_true(n > 40);
    const size_t n_eval = 37; /* several chunks of 8 and a partial one */
    const int32_t batches[] = {8, 64};
    for (int b = 0; b < 2; ++b) {
        pangu_session *s = new_session(batches[b], 1);
        float *rows = (float *)malloc(sizeof(float) * (size_t)g_n_vocab * n_eval);
        assert_non_null(rows);
        assert_int_equal(pangu_session_eval(s, ids, n_eval, rows), PANGU_OK);
        const float *last = NULL;
        assert_int_equal(pangu_session_get_logits(s, &last, NULL), PANGU_OK);
        assert_same_logits(rows + (n_eval - 1) * (size_t)g_n_vocab, last, "last row vs get_logits");
        check_rows_against_prefixes(ids, 0, n_eval, rows);

        /* truncated and evaluated again, the same positions give the same rows */
        const size_t back = 11;
        float *again = (float *)malloc(sizeof(float) * (size_t)g_n_vocab * back);
        assert_non_null(again);
        assert_int_equal(pangu_session_truncate(s, n_eval - back), PANGU_OK);
        assert_int_equal(pangu_session_eval(s, ids + n_eval - back, back, again), PANGU_OK);
        assert_memory_equal(again, rows + (n_eval - back) * (size_t)g_n_vocab, sizeof(float) * (size_t)g_n_vocab * back);
        free(again);

        /* appended to a context that holds a generated token not yet run */
        pangu_sampling_params sp = sampling(0, 0, 3);
        assert_int_equal(pangu_session_generate_tokens(s, NULL, 0, &sp, NULL, NULL, NULL), PANGU_OK);
        token_list before;
        get_context(s, &before);
        const size_t more = 5;
        assert_int_equal(pangu_session_eval(s, ids + n_eval, more, rows), PANGU_OK);
        assert_int_equal(pangu_session_get_logits(s, &last, NULL), PANGU_OK);
        assert_same_logits(rows + (more - 1) * (size_t)g_n_vocab, last, "last appended row vs get_logits");
        token_list all;
        get_context(s, &all);
        assert_int_equal(all.n, before.n + more);
        check_rows_against_prefixes(all.ids, before.n, more, rows);
        free(rows);
        pangu_session_free(s);
    }
}

/* Threads inside a session do not change the numbers either. */
static void test_threads_in_session_same_logits(void **state) {
    (void)state;
    int32_t ids[256];
    const size_t n = tokenize(kLong, 1, ids, 256);
    pangu_session *a = new_session(16, 1), *b = new_session(16, 2), *c = new_session(5, 3);
    assert_int_equal(pangu_session_eval(a, ids, n, NULL), PANGU_OK);
    assert_int_equal(pangu_session_eval(b, ids, n, NULL), PANGU_OK);
    assert_int_equal(pangu_session_eval(c, ids, n, NULL), PANGU_OK);
    float *la = logits_copy(a), *lb = logits_copy(b), *lc = logits_copy(c);
    assert_same_logits(la, lb, "1 vs 2 threads");
    assert_same_logits(la, lc, "1 vs 3 threads");
    free(la);
    free(lb);
    free(lc);
    pangu_session_free(a);
    pangu_session_free(b);
    pangu_session_free(c);
}

/* ---------------------------------------------------------------------------------------------- */
/* concurrent sessions                                                                            */
/* ---------------------------------------------------------------------------------------------- */

typedef struct {
    const char *prompt;
    uint64_t seed;
    int32_t n_threads;
    pthread_barrier_t *start;
    /* results */
    pangu_status status;
    int32_t toks[CTX];
    size_t n;
    char err_before[8];
    char err_after[128];
} job;

static void *run_job(void *arg) {
    job *j = (job *)arg;
    /* the thread-local message starts empty on a new thread */
    snprintf(j->err_before, sizeof j->err_before, "%s", pangu_last_error());
    if (j->start) pthread_barrier_wait(j->start);
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.n_ctx = 256;
    p.n_threads = j->n_threads;
    pangu_session *s = NULL;
    j->status = pangu_session_create(g_model, &p, &s);
    if (j->status != PANGU_OK) return NULL;
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.temperature = 0.8f;
    sp.seed = j->seed;
    sp.max_new_tokens = 64;
    for (int turn = 0; turn < 3 && j->status == PANGU_OK; ++turn)
        j->status = pangu_session_generate(s, turn ? "\n" : j->prompt, &sp, NULL, NULL, NULL);
    if (j->status == PANGU_OK) j->status = pangu_session_get_tokens(s, j->toks, CTX, &j->n);
    /* a failure on this thread is recorded for this thread */
    int32_t ids[4];
    size_t n = 0;
    if (pangu_tokenize(g_model, "\xff", 1, 0, 0, ids, 4, &n) == PANGU_ERR_INVALID_UTF8)
        snprintf(j->err_after, sizeof j->err_after, "%s", pangu_last_error());
    pangu_session_free(s);
    return NULL;
}

static void test_two_threads_shared_model(void **state) {
    (void)state;
    static job seq[2], par[2];
    const char *prompts[2] = {kPoem, "def main():\n"};
    const uint64_t seeds[2] = {1234, 99};
    for (int i = 0; i < 2; ++i) {
        memset(&seq[i], 0, sizeof seq[i]);
        seq[i].prompt = prompts[i];
        seq[i].seed = seeds[i];
        seq[i].n_threads = 1;
    }
    /* one thread, one after the other */
    run_job(&seq[0]);
    run_job(&seq[1]);
    for (int i = 0; i < 2; ++i) {
        if (seq[i].status != PANGU_OK) fail_msg("sequential job %d: %s", i, pangu_status_string(seq[i].status));
        assert_true(seq[i].n > 20);
    }
    /* main thread's own message, which the workers must not touch */
    pangu_session *m = new_session(64, 1);
    assert_int_equal(pangu_session_truncate(m, 3), PANGU_ERR_INVALID_ARGUMENT);
    char mine[256];
    snprintf(mine, sizeof mine, "%s", pangu_last_error());
    pangu_session_free(m);

    for (int round = 0; round < 3; ++round) {
        pthread_barrier_t start;
        assert_int_equal(pthread_barrier_init(&start, NULL, 2), 0);
        pthread_t th[2];
        for (int i = 0; i < 2; ++i) {
            memset(&par[i], 0, sizeof par[i]);
            par[i].prompt = prompts[i];
            par[i].seed = seeds[i];
            par[i].n_threads = round == 2 ? 2 : 1; /* the last round with compute threads inside each session */
            par[i].start = &start;
            assert_int_equal(pthread_create(&th[i], NULL, run_job, &par[i]), 0);
        }
        for (int i = 0; i < 2; ++i) assert_int_equal(pthread_join(th[i], NULL), 0);
        pthread_barrier_destroy(&start);
        for (int i = 0; i < 2; ++i) {
            if (par[i].status != PANGU_OK) fail_msg("thread %d: %s", i, pangu_status_string(par[i].status));
            assert_same_tokens(par[i].toks, par[i].n, seq[i].toks, seq[i].n, "concurrent vs sequential");
            assert_string_equal(par[i].err_before, "");
            assert_non_null(strstr(par[i].err_after, "UTF-8"));
        }
    }
    assert_string_equal(pangu_last_error(), mine);
}

/* Rolling back and evaluating again (what a caller verifying its own drafts does): the kept tokens are not run
 * again, and the rows for the new tokens are those of a context built without the detour. */
static void test_truncate_then_eval_runs_only_new_tokens(void **state) {
    (void)state;
    int32_t ctx[128];
    const size_t n = tokenize(kLong, 1, ctx, 128);
    assert_true(n > 24);
    const size_t keep = n - 8;
    pangu_session *s = new_session(64, 1);
    assert_int_equal(pangu_session_eval(s, ctx, keep, NULL), PANGU_OK);
    /* a wrong continuation, rolled back */
    int32_t wrong[4] = {ctx[3], ctx[4], ctx[5], ctx[6]};
    assert_int_equal(pangu_session_eval(s, wrong, 4, NULL), PANGU_OK);
    assert_int_equal(pangu_session_truncate(s, keep), PANGU_OK);
    pangu_session_stats a, b;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    b = a;
    assert_int_equal(pangu_session_get_stats(s, &a), PANGU_OK);
    float *rows = malloc(sizeof(float) * 8 * (size_t)g_n_vocab);
    assert_non_null(rows);
    assert_int_equal(pangu_session_eval(s, ctx + keep, 8, rows), PANGU_OK);
    assert_int_equal(pangu_session_get_stats(s, &b), PANGU_OK);
    assert_int_equal(b.n_evaluated - a.n_evaluated, 8); /* the 8 new tokens, not the last kept one again */
    check_rows_against_prefixes(ctx, keep, 8, rows);
    /* logits asked for right after a truncate are those of the kept context */
    assert_int_equal(pangu_session_truncate(s, keep), PANGU_OK);
    pangu_session *f = new_session(64, 1);
    assert_int_equal(pangu_session_eval(f, ctx, keep, NULL), PANGU_OK);
    float *x = logits_copy(s), *y = logits_copy(f);
    assert_same_logits(x, y, "logits after a truncate");
    free(x);
    free(y);
    free(rows);
    pangu_session_free(f);
    pangu_session_free(s);
}

/* Speculative decoding with a small n_batch: a verification is one forward pass, so it holds at most n_batch
 * tokens, and the output is that of plain decoding. (Verifications of spec_draft_len + 1 rows used to overrun
 * the activation buffers of a session with n_batch below that, and n_batch 1 gave different text: found by
 * the soak test under ThreadSanitizer.) */
static void test_speculation_with_small_batches(void **state) {
    (void)state;
    static const char *prompt = "def add(a, b):\n    return a + b\n\ndef add(a, b):\n    return a + b\n\ndef add(";
    pangu_model *draft = NULL;
    assert_int_equal(pangu_model_load(PANGU_DRAFT_DIR, NULL, &draft), PANGU_OK);
    pangu_sampling_params sp = sampling(0, 0, 96);
    cb_state ref;
    memset(&ref, 0, sizeof ref);
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.n_ctx = 256;
    p.spec_mode = PANGU_SPEC_OFF;
    pangu_session *s = NULL;
    assert_int_equal(pangu_session_create(g_model, &p, &s), PANGU_OK);
    assert_int_equal(pangu_session_generate(s, prompt, &sp, counting_cb, &ref, NULL), PANGU_OK);
    pangu_session_free(s);
    static const int32_t modes[] = {PANGU_SPEC_PLD, PANGU_SPEC_SELF, PANGU_SPEC_DRAFT};
    for (int32_t n_batch = 1; n_batch <= 4; ++n_batch)
        for (size_t m = 0; m < 3; ++m) {
            pangu_session_params_init_sized(&p, sizeof p);
            p.n_ctx = 256;
            p.n_batch = n_batch;
            p.spec_mode = modes[m];
            p.draft_model = draft;
            assert_int_equal(pangu_session_create(g_model, &p, &s), PANGU_OK);
            cb_state c;
            memset(&c, 0, sizeof c);
            assert_int_equal(pangu_session_generate(s, prompt, &sp, counting_cb, &c, NULL), PANGU_OK);
            assert_int_equal(c.calls, ref.calls);
            if (memcmp(c.toks, ref.toks, sizeof(int32_t) * (size_t)ref.calls) != 0)
                fail_msg("n_batch %d, spec mode %d: output differs from plain decoding", n_batch, modes[m]);
            pangu_session_stats st;
            memset(&st, 0, sizeof st);
            st.struct_size = sizeof st;
            assert_int_equal(pangu_session_get_stats(s, &st), PANGU_OK);
            assert_true(st.n_drafted <= st.n_verify * (n_batch - 1));
            pangu_session_free(s);
        }
    pangu_model_free(draft);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cancel_from_token_callback),
        cmocka_unit_test(test_abort_during_prefill),
        cmocka_unit_test(test_abort_during_generation),
        cmocka_unit_test(test_reset_equals_fresh),
        cmocka_unit_test(test_multi_turn_greedy),
        cmocka_unit_test(test_multi_turn_sampled),
        cmocka_unit_test(test_truncate_regenerate),
        cmocka_unit_test(test_truncate_then_eval_runs_only_new_tokens),
        cmocka_unit_test(test_eval_logits_rows),
        cmocka_unit_test(test_threads_in_session_same_logits),
        cmocka_unit_test(test_two_threads_shared_model),
        cmocka_unit_test(test_speculation_with_small_batches),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
