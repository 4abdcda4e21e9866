/* Thread-safety contract: one model shared by several sessions, each session on its own thread. Four
 * sessions in four threads must each produce exactly the tokens they produce alone. Also run under
 * ThreadSanitizer (label "tsan", see scripts/test.sh). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pangu/pangu.h"

#define N_THREADS 4
#define N_NEW 48

static pangu_model *g_model;

static const char *kPrompts[N_THREADS] = {
    "class Stack:\n    def __init__(self):\n",
    "《静夜思》\n作者：李白\n床前明月光，",
    "def fibonacci(n):\n",
    "import os\nimport sys\n",
};

typedef struct {
    int index;
    int n_threads; /* compute threads inside the session */
    int32_t out[N_NEW];
    int n_out;
    pangu_status status;
} job;

static int collect(void *user, int32_t token, const char *piece, size_t len) {
    (void)piece;
    (void)len;
    job *j = (job *)user;
    if (j->n_out < N_NEW) j->out[j->n_out++] = token;
    return 0;
}

static void *run_job(void *arg) {
    job *j = (job *)arg;
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.n_ctx = 256;
    p.n_threads = j->n_threads;
    pangu_session *s = NULL;
    j->status = pangu_session_create(g_model, &p, &s);
    if (j->status != PANGU_OK) return NULL;
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.max_new_tokens = N_NEW;
    /* half the jobs sample, so the per-session RNG is covered too */
    if (j->index % 2) {
        sp.temperature = 0.9f;
        sp.seed = 100 + (uint64_t)j->index;
    }
    j->n_out = 0;
    j->status = pangu_session_generate(s, kPrompts[j->index], &sp, collect, j, NULL);
    pangu_session_free(s);
    return NULL;
}

static int setup(void **state) {
    (void)state;
    return pangu_model_load(PANGU_MODEL_DIR, NULL, &g_model) == PANGU_OK ? 0 : -1;
}
static int teardown(void **state) {
    (void)state;
    pangu_model_free(g_model);
    return 0;
}

static void check_parallel(int compute_threads) {
    job alone[N_THREADS], together[N_THREADS];
    for (int i = 0; i < N_THREADS; ++i) {
        memset(&alone[i], 0, sizeof alone[i]);
        alone[i].index = i;
        alone[i].n_threads = compute_threads;
        run_job(&alone[i]);
        assert_int_equal(alone[i].status, PANGU_OK);
        assert_true(alone[i].n_out > 0);
    }
    for (int round = 0; round < 2; ++round) {
        pthread_t th[N_THREADS];
        for (int i = 0; i < N_THREADS; ++i) {
            memset(&together[i], 0, sizeof together[i]);
            together[i].index = i;
            together[i].n_threads = compute_threads;
            assert_int_equal(pthread_create(&th[i], NULL, run_job, &together[i]), 0);
        }
        for (int i = 0; i < N_THREADS; ++i) assert_int_equal(pthread_join(th[i], NULL), 0);
        for (int i = 0; i < N_THREADS; ++i) {
            assert_int_equal(together[i].status, PANGU_OK);
            assert_int_equal(together[i].n_out, alone[i].n_out);
            assert_memory_equal(together[i].out, alone[i].out, sizeof(int32_t) * (size_t)alone[i].n_out);
        }
    }
}

static void test_four_sessions_four_threads(void **state) {
    (void)state;
    check_parallel(1);
}

static void test_four_sessions_with_two_compute_threads_each(void **state) {
    (void)state;
    check_parallel(2);
}

/* Concurrent read-only model calls: tokenizing on many threads at once. */
static void *tokenize_job(void *arg) {
    size_t *n = (size_t *)arg;
    int32_t ids[256];
    for (int k = 0; k < 50; ++k)
        if (pangu_tokenize(g_model, kPrompts[1], strlen(kPrompts[1]), 1, 0, ids, 256, n) != PANGU_OK) *n = 0;
    return NULL;
}

static void test_concurrent_tokenize(void **state) {
    (void)state;
    pthread_t th[N_THREADS];
    size_t n[N_THREADS];
    for (int i = 0; i < N_THREADS; ++i) assert_int_equal(pthread_create(&th[i], NULL, tokenize_job, &n[i]), 0);
    for (int i = 0; i < N_THREADS; ++i) assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 1; i < N_THREADS; ++i) assert_int_equal(n[i], n[0]);
    assert_true(n[0] > 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_four_sessions_four_threads),
        cmocka_unit_test(test_four_sessions_with_two_compute_threads_each),
        cmocka_unit_test(test_concurrent_tokenize),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
