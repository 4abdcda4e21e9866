/* The fp32 path against golden.json: last-position logits within 1e-3 and greedy continuations token for
 * token, for every golden prompt, with 1 and 2 threads and with small prefill batches. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "golden_data.h"
#include "pangu/pangu.h"

static pangu_model *g_model;

static int setup(void **state) {
    (void)state;
    pangu_status st = pangu_model_load(PANGU_MODEL_DIR, NULL, &g_model);
    if (st != PANGU_OK) fprintf(stderr, "load: %s\n", pangu_last_error());
    return st == PANGU_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    pangu_model_free(g_model);
    return 0;
}

/* kv_type < 0: the default cache (F16). */
static pangu_session *new_session_kv(int n_threads, int n_batch, int32_t kv_type) {
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    if (kv_type >= 0) p.kv_type = kv_type;
    p.n_ctx = 512;
    p.n_threads = n_threads;
    p.n_batch = n_batch;
    pangu_session *s = NULL;
    assert_int_equal(pangu_session_create(g_model, &p, &s), PANGU_OK);
    assert_non_null(s);
    return s;
}

/* The golden logits check the fp32 math: an F32 cache. */
static pangu_session *new_session(int n_threads, int n_batch) { return new_session_kv(n_threads, n_batch, PANGU_KV_F32); }

static void check_logits(int n_threads, int n_batch) {
    for (int c = 0; c < GOLDEN_N_CASES; ++c) {
        const golden_case *g = &GOLDEN_CASES[c];
        pangu_session *s = new_session(n_threads, n_batch);
        assert_int_equal(pangu_session_eval(s, g->prompt_ids, (size_t)g->n_prompt, NULL), PANGU_OK);
        const float *logits = NULL;
        int32_t n_vocab = 0;
        assert_int_equal(pangu_session_get_logits(s, &logits, &n_vocab), PANGU_OK);
        assert_int_equal(n_vocab, g->n_logits);
        double worst = 0;
        for (int i = 0; i < n_vocab; ++i) {
            double d = fabs((double)logits[i] - (double)g->last_logits[i]);
            if (d > worst) worst = d;
        }
        if (worst > 1e-3) fail_msg("case %d: max |logit - golden| = %g > 1e-3", c, worst);
        pangu_session_free(s);
    }
}

static void test_logits_1thread(void **state) { (void)state; check_logits(1, 64); }
static void test_logits_2threads(void **state) { (void)state; check_logits(2, 64); }
static void test_logits_small_batches(void **state) { (void)state; check_logits(2, 3); }

typedef struct {
    int32_t ids[64];
    int n;
} collected;

static int collect(void *user, int32_t token, const char *piece, size_t len) {
    (void)piece;
    (void)len;
    collected *c = (collected *)user;
    if (c->n < 64) c->ids[c->n++] = token;
    return 0;
}

static void check_greedy(int n_threads, int32_t kv_type) {
    for (int c = 0; c < GOLDEN_N_CASES; ++c) {
        const golden_case *g = &GOLDEN_CASES[c];
        pangu_session *s = new_session_kv(n_threads, 64, kv_type);
        pangu_sampling_params sp;
        pangu_sampling_params_init(&sp);
        sp.temperature = 0;
        sp.max_new_tokens = 24;
        collected got = {{0}, 0};
        pangu_generate_result r;
        memset(&r, 0, sizeof r);
        r.struct_size = sizeof r;
        assert_int_equal(pangu_session_generate_tokens(s, g->prompt_ids, (size_t)g->n_prompt, &sp, collect, &got, &r),
                         PANGU_OK);
        /* golden continuations stop at </s>, which they include */
        assert_int_equal(got.n, g->n_greedy);
        for (int i = 0; i < g->n_greedy; ++i)
            if (got.ids[i] != g->greedy_ids[i]) fail_msg("case %d token %d: got %d want %d", c, i, got.ids[i], g->greedy_ids[i]);
        assert_int_equal(r.n_generated, g->n_greedy);
        assert_int_equal(r.stop_reason, g->n_greedy < 24 ? PANGU_STOP_EOS : PANGU_STOP_MAX_TOKENS);
        pangu_session_free(s);
    }
}

static void test_greedy_1thread(void **state) { (void)state; check_greedy(1, PANGU_KV_F32); }
static void test_greedy_2threads(void **state) { (void)state; check_greedy(2, PANGU_KV_F32); }
/* The default cache (F16) keeps every golden continuation (docs/memory.md#kv-cache-types). */
static void test_greedy_default_cache(void **state) { (void)state; check_greedy(2, -1); }

/* The text form: generating from the prompt string gives the golden text. */
typedef struct {
    char text[1024];
    size_t len;
} text_buf;

static int collect_text(void *user, int32_t token, const char *piece, size_t len) {
    (void)token;
    text_buf *t = (text_buf *)user;
    assert_true(t->len + len < sizeof t->text);
    memcpy(t->text + t->len, piece, len);
    t->len += len;
    t->text[t->len] = 0;
    return 0;
}

static void test_greedy_text(void **state) {
    (void)state;
    for (int c = 0; c < GOLDEN_N_CASES; ++c) {
        const golden_case *g = &GOLDEN_CASES[c];
        pangu_session *s = new_session(1, 64);
        pangu_sampling_params sp;
        pangu_sampling_params_init(&sp);
        sp.max_new_tokens = 24;
        text_buf t;
        memset(&t, 0, sizeof t);
        assert_int_equal(pangu_session_generate(s, g->prompt, &sp, collect_text, &t, NULL), PANGU_OK);
        assert_string_equal(t.text, g->greedy_text);
        /* the context holds exactly the golden prompt ids followed by the continuation */
        int32_t ids[512];
        size_t n = 0;
        assert_int_equal(pangu_session_get_tokens(s, ids, 512, &n), PANGU_OK);
        assert_int_equal(n, (size_t)(g->n_prompt + g->n_greedy));
        assert_memory_equal(ids, g->prompt_ids, sizeof(int32_t) * (size_t)g->n_prompt);
        pangu_session_free(s);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits_1thread),   cmocka_unit_test(test_logits_2threads),
        cmocka_unit_test(test_logits_small_batches), cmocka_unit_test(test_greedy_1thread),
        cmocka_unit_test(test_greedy_2threads),  cmocka_unit_test(test_greedy_default_cache),  cmocka_unit_test(test_greedy_text),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
