/* Static memory: pangu_session_estimate() sizes a caller-provided arena exactly; once a session exists,
 * evaluation and generation perform no heap allocation at all; nothing is written outside the arena.
 *
 * Allocation counting: alloc_hook.c replaces the process's allocator and counts every heap allocation (in
 * libpangu_c, libstdc++'s operator new, libsentencepiece) made while alloc_hook_counting is set. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "alloc_hook.h"
#include "pangu/pangu.h"

#define CANARY 0xA5
#define GUARD 4096

static pangu_model *g_model;
static pangu_model *g_draft;
static const char *kPrompt = "class Stack:\n    def __init__(self):\n";

static int setup(void **state) {
    (void)state;
    if (pangu_model_load(PANGU_DRAFT_DIR, NULL, &g_draft) != PANGU_OK) return -1;
    return pangu_model_load(PANGU_MODEL_DIR, NULL, &g_model) == PANGU_OK ? 0 : -1;
}
static int teardown(void **state) {
    (void)state;
    pangu_model_free(g_draft);
    pangu_model_free(g_model);
    return 0;
}

static pangu_session_memory estimate(const pangu_session_params *p) {
    pangu_session_memory m;
    memset(&m, 0, sizeof m);
    m.struct_size = sizeof m;
    assert_int_equal(pangu_session_estimate(g_model, p, &m), PANGU_OK);
    return m;
}

/* The stats of a session created (without an arena) with p, then freed. */
static pangu_session_stats created_stats(const pangu_session_params *p) {
    pangu_session *s = NULL;
    assert_int_equal(pangu_session_create(g_model, p, &s), PANGU_OK);
    pangu_session_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    assert_int_equal(pangu_session_get_stats(s, &st), PANGU_OK);
    pangu_session_free(s);
    return st;
}

static void test_estimate_is_exact_and_stable(void **state) {
    (void)state;
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.n_ctx = 512;
    pangu_session_memory a = estimate(&p), b = estimate(&p);
    assert_memory_equal(&a, &b, sizeof a);
    assert_int_equal(a.arena_bytes, a.kv_cache_bytes + a.activation_bytes + a.logits_bytes + a.other_bytes);
    /* pangu-tiny: 6 layers x 2 (K, V) x 2 KV heads x 32 dims x 2 bytes per position (F16, the default) */
    assert_int_equal(a.kv_cache_bytes, (size_t)512 * 6 * 2 * 64 * 2);
    assert_true(a.alignment >= 64 && (a.alignment & (a.alignment - 1)) == 0);
    p.n_ctx = 1024;
    pangu_session_memory c = estimate(&p);
    assert_int_equal(c.kv_cache_bytes, 2 * a.kv_cache_bytes);
    assert_true(c.arena_bytes > a.arena_bytes);
    /* a session created without an arena uses exactly the estimated block */
    p.n_ctx = 512;
    const pangu_session_stats st = created_stats(&p);
    assert_int_equal(st.arena_bytes, a.arena_bytes);
    assert_int_equal(st.kv_cache_bytes, a.kv_cache_bytes);
    assert_int_equal(st.caller_arena, 0);
}

/* Every kv_type: its exact size per position, and a session uses exactly the estimated block. */
static void test_estimate_every_kv_type(void **state) {
    (void)state;
    /* pangu-tiny per position: 6 layers x 2 (K, V) x (64 elements, + 2 fp32 scales for Q8) */
    const int32_t types[] = {PANGU_KV_F32, PANGU_KV_F16, PANGU_KV_BF16, PANGU_KV_Q8};
    const size_t per_pos[] = {6 * 2 * 64 * 4, 6 * 2 * 64 * 2, 6 * 2 * 64 * 2, 6 * 2 * (64 + 2 * 4)};
    for (size_t i = 0; i < 4; ++i) {
        pangu_session_params p;
        pangu_session_params_init_sized(&p, sizeof p);
        p.n_ctx = 512;
        p.kv_type = types[i];
        pangu_session_memory a = estimate(&p);
        assert_int_equal(a.kv_cache_bytes, (size_t)512 * per_pos[i]);
        assert_int_equal(a.arena_bytes, a.kv_cache_bytes + a.activation_bytes + a.logits_bytes + a.other_bytes);
        const pangu_session_stats st = created_stats(&p);
        assert_int_equal(st.arena_bytes, a.arena_bytes);
        assert_int_equal(st.kv_cache_bytes, a.kv_cache_bytes);
    }
}

/* npu-sim holds its cache in fp16 whatever kv_type asks (pangu.h): every type is sized as F16 and runs. */
static void test_npusim_cache_is_f16_for_every_kv_type(void **state) {
    (void)state;
    pangu_model_params mp;
    pangu_model_params_init(&mp);
    mp.backend = "npu-sim";
    pangu_model *npu = NULL;
    assert_int_equal(pangu_model_load(PANGU_MODEL_DIR, &mp, &npu), PANGU_OK);
    const int32_t types[] = {PANGU_KV_F32, PANGU_KV_F16, PANGU_KV_BF16, PANGU_KV_Q8};
    const int32_t ids[] = {1, 100, 200, 300, 400};
    for (size_t i = 0; i < 4; ++i) {
        pangu_session_params p;
        pangu_session_params_init_sized(&p, sizeof p);
        p.n_ctx = 128;
        p.kv_type = types[i];
        pangu_session_memory m;
        memset(&m, 0, sizeof m);
        m.struct_size = sizeof m;
        assert_int_equal(pangu_session_estimate(npu, &p, &m), PANGU_OK);
        assert_int_equal(m.kv_cache_bytes, (size_t)128 * 6 * 2 * 64 * 2);
        pangu_session *s = NULL;
        assert_int_equal(pangu_session_create(npu, &p, &s), PANGU_OK);
        assert_int_equal(pangu_session_eval(s, ids, 5, NULL), PANGU_OK);
        assert_int_equal(pangu_session_eval(s, ids + 1, 3, NULL), PANGU_OK);
        pangu_session_free(s);
    }
    pangu_model_free(npu);
}

static void test_too_small_or_misaligned_arena_is_refused_untouched(void **state) {
    (void)state;
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.n_ctx = 256;
    pangu_session_memory m = estimate(&p);
    unsigned char *buf = aligned_alloc(m.alignment, m.arena_bytes + m.alignment);
    assert_non_null(buf);
    memset(buf, CANARY, m.arena_bytes + m.alignment);
    pangu_session *s = NULL;
    p.arena = buf;
    p.arena_size = m.arena_bytes - 1;
    assert_int_equal(pangu_session_create(g_model, &p, &s), PANGU_ERR_BUFFER_TOO_SMALL);
    assert_null(s);
    assert_non_null(strstr(pangu_last_error(), "needs"));
    p.arena = buf + 8;
    p.arena_size = m.arena_bytes;
    assert_int_equal(pangu_session_create(g_model, &p, &s), PANGU_ERR_INVALID_ARGUMENT);
    assert_null(s);
    for (size_t i = 0; i < m.arena_bytes + m.alignment; ++i)
        if (buf[i] != CANARY) fail_msg("byte %zu of a refused arena was written", i);
    p.arena = NULL;
    p.arena_size = 100;
    assert_int_equal(pangu_session_create(g_model, &p, &s), PANGU_ERR_INVALID_ARGUMENT);
    free(buf);
}

typedef struct {
    int n;
} counter;

static int count_tokens(void *user, int32_t token, const char *piece, size_t len) {
    (void)token;
    (void)piece;
    (void)len;
    ((counter *)user)->n++;
    return 0;
}

/* Runs `n_new` tokens of generation in a caller arena with guard bytes after it, counting allocations. */
static void run_in_arena_mode(int n_threads, const pangu_sampling_params *sp, int n_ctx, int policy, int n_new,
                              int expect_status, int spec_mode) {
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.n_ctx = n_ctx;
    p.n_threads = n_threads;
    p.context_policy = policy;
    p.spec_mode = spec_mode;
    if (spec_mode == PANGU_SPEC_DRAFT) p.draft_model = g_draft;
    pangu_session_memory m = estimate(&p);
    const size_t total = m.arena_bytes + GUARD;
    unsigned char *buf = aligned_alloc(m.alignment, (total + m.alignment - 1) / m.alignment * m.alignment);
    assert_non_null(buf);
    memset(buf, CANARY, total);
    p.arena = buf;
    p.arena_size = m.arena_bytes;
    pangu_session *s = NULL;
    assert_int_equal(pangu_session_create(g_model, &p, &s), PANGU_OK);

    int32_t ids[256];
    size_t n_ids = 0;
    assert_int_equal(pangu_tokenize(g_model, kPrompt, strlen(kPrompt), 1, 0, ids, 256, &n_ids), PANGU_OK);

    pangu_sampling_params gp = *sp;
    gp.max_new_tokens = n_new;
    counter c = {0};
    pangu_generate_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    alloc_hook_allocs = 0;
    alloc_hook_counting = 1;
    pangu_status st = pangu_session_generate_tokens(s, ids, n_ids, &gp, count_tokens, &c, &r);
    alloc_hook_counting = 0;
    assert_int_equal(st, expect_status);
    if (expect_status == PANGU_OK) {
        assert_int_equal(r.n_generated, n_new);
        assert_int_equal(c.n, n_new);
    }
    if (alloc_hook_allocs != 0) fail_msg("%ld heap allocations during generation", alloc_hook_allocs);

    pangu_session_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    assert_int_equal(pangu_session_get_stats(s, &stats), PANGU_OK);
    assert_int_equal(stats.caller_arena, 1);
    assert_int_equal(stats.arena_bytes, m.arena_bytes);
    assert_true(stats.arena_high_water <= m.arena_bytes);
    /* the library's high-water mark covers every byte it actually wrote */
    size_t last = 0;
    for (size_t i = 0; i < m.arena_bytes; ++i)
        if (buf[i] != CANARY) last = i + 1;
    assert_true(last <= stats.arena_high_water);
    for (size_t i = m.arena_bytes; i < total; ++i)
        if (buf[i] != CANARY) fail_msg("guard byte %zu past the arena was written", i - m.arena_bytes);
    if (policy == PANGU_CONTEXT_SLIDE) {
        assert_true(stats.n_context_shifts > 0);
        assert_true(stats.n_tokens <= n_ctx);
    }
    pangu_session_free(s);
    free(buf);
}

static void run_in_arena(int n_threads, const pangu_sampling_params *sp, int n_ctx, int policy, int n_new,
                         int expect_status) {
    run_in_arena_mode(n_threads, sp, n_ctx, policy, n_new, expect_status, PANGU_SPEC_PLD);
}

static void test_greedy_256_tokens_no_allocation(void **state) {
    (void)state;
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    run_in_arena(1, &sp, 512, PANGU_CONTEXT_ERROR, 256, PANGU_OK);
}

static void test_two_threads_no_allocation(void **state) {
    (void)state;
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    run_in_arena(2, &sp, 512, PANGU_CONTEXT_ERROR, 256, PANGU_OK);
}

static void test_sampling_with_penalty_and_stops_no_allocation(void **state) {
    (void)state;
    static const char *stops[] = {"@@never@@", "%%%%"};
    static const int32_t stop_ids[] = {4095};
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.temperature = 0.8f;
    sp.top_k = 0;
    sp.top_p = 0.9f;
    sp.min_p = 0.01f;
    sp.repetition_penalty = 1.2f;
    sp.seed = 1234;
    sp.stop_strings = stops;
    sp.n_stop_strings = 2;
    sp.stop_tokens = stop_ids;
    sp.n_stop_tokens = 1;
    /* sampling may hit EOS before 256 tokens: only the allocation count and memory bounds are asserted */
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    (void)p;
    run_in_arena(1, &sp, 512, PANGU_CONTEXT_ERROR, 64, PANGU_OK);
}

/* The draft model's and the self-draft's sessions live in the same arena and allocate nothing either. */
static void test_draft_and_self_draft_no_allocation(void **state) {
    (void)state;
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    run_in_arena_mode(1, &sp, 512, PANGU_CONTEXT_ERROR, 256, PANGU_OK, PANGU_SPEC_DRAFT);
    run_in_arena_mode(2, &sp, 512, PANGU_CONTEXT_ERROR, 256, PANGU_OK, PANGU_SPEC_SELF);
    sp.temperature = 0.9f;
    sp.seed = 7;
    run_in_arena_mode(1, &sp, 512, PANGU_CONTEXT_ERROR, 32, PANGU_OK, PANGU_SPEC_DRAFT);
}

static void test_full_context_stops_by_default(void **state) {
    (void)state;
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    run_in_arena(1, &sp, 48, PANGU_CONTEXT_ERROR, 200, PANGU_ERR_CONTEXT_FULL);
}

static void test_sliding_context_stays_in_arena(void **state) {
    (void)state;
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    run_in_arena(1, &sp, 48, PANGU_CONTEXT_SLIDE, 200, PANGU_OK);
}

static void test_slide_keeps_prefix(void **state) {
    (void)state;
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.n_ctx = 40;
    p.context_policy = PANGU_CONTEXT_SLIDE;
    p.n_keep = 5;
    pangu_session *s = NULL;
    assert_int_equal(pangu_session_create(g_model, &p, &s), PANGU_OK);
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.max_new_tokens = 100;
    int32_t ids[64];
    size_t n = 0;
    assert_int_equal(pangu_tokenize(g_model, kPrompt, strlen(kPrompt), 1, 0, ids, 64, &n), PANGU_OK);
    assert_int_equal(pangu_session_generate_tokens(s, ids, n, &sp, NULL, NULL, NULL), PANGU_OK);
    int32_t ctx[64];
    size_t nc = 0;
    assert_int_equal(pangu_session_get_tokens(s, ctx, 64, &nc), PANGU_OK);
    assert_true(nc <= 40);
    assert_memory_equal(ctx, ids, 5 * sizeof(int32_t));
    /* the logits after a slide equal those of a fresh session fed the same (slid) context */
    const float *a = NULL, *b = NULL;
    int32_t nv = 0;
    assert_int_equal(pangu_session_get_logits(s, &a, &nv), PANGU_OK);
    pangu_session *f = NULL;
    assert_int_equal(pangu_session_create(g_model, &p, &f), PANGU_OK);
    assert_int_equal(pangu_session_eval(f, ctx, nc, NULL), PANGU_OK);
    assert_int_equal(pangu_session_get_logits(f, &b, &nv), PANGU_OK);
    assert_memory_equal(a, b, sizeof(float) * (size_t)nv);
    pangu_session_free(f);
    pangu_session_free(s);
    /* n_keep must leave room to slide */
    p.n_keep = 20;
    assert_int_equal(pangu_session_create(g_model, &p, &s), PANGU_ERR_INVALID_ARGUMENT);
}

/* Weights can be pre-faulted and locked for devices that must not page; locking either works or fails
 * with a clear I/O error (RLIMIT_MEMLOCK), never silently. Both give the same results as plain mapping. */
static void test_prefault_and_lock_weights(void **state) {
    (void)state;
    const int32_t ids[] = {1, 651, 681, 13};
    const float *ref = NULL, *got = NULL;
    int32_t nv = 0;
    pangu_session *s0 = NULL, *s1 = NULL;
    assert_int_equal(pangu_session_create(g_model, NULL, &s0), PANGU_OK);
    assert_int_equal(pangu_session_eval(s0, ids, 4, NULL), PANGU_OK);
    assert_int_equal(pangu_session_get_logits(s0, &ref, &nv), PANGU_OK);
    for (int lock = 0; lock <= 1; ++lock) {
        pangu_model_params mp;
        pangu_model_params_init(&mp);
        mp.prefault = 1;
        mp.lock_memory = lock;
        pangu_model *m = NULL;
        pangu_status st = pangu_model_load(PANGU_MODEL_DIR, &mp, &m);
        if (lock && st != PANGU_OK) {
            assert_int_equal(st, PANGU_ERR_IO);
            assert_non_null(strstr(pangu_last_error(), "mlock"));
            assert_null(m);
            continue;
        }
        assert_int_equal(st, PANGU_OK);
        assert_int_equal(pangu_session_create(m, NULL, &s1), PANGU_OK);
        assert_int_equal(pangu_session_eval(s1, ids, 4, NULL), PANGU_OK);
        assert_int_equal(pangu_session_get_logits(s1, &got, &nv), PANGU_OK);
        assert_memory_equal(got, ref, sizeof(float) * (size_t)nv);
        pangu_session_free(s1);
        pangu_model_free(m);
    }
    pangu_session_free(s0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_estimate_is_exact_and_stable),
        cmocka_unit_test(test_estimate_every_kv_type),
        cmocka_unit_test(test_npusim_cache_is_f16_for_every_kv_type),
        cmocka_unit_test(test_too_small_or_misaligned_arena_is_refused_untouched),
        cmocka_unit_test(test_greedy_256_tokens_no_allocation),
        cmocka_unit_test(test_two_threads_no_allocation),
        cmocka_unit_test(test_sampling_with_penalty_and_stops_no_allocation),
        cmocka_unit_test(test_draft_and_self_draft_no_allocation),
        cmocka_unit_test(test_full_context_stops_by_default),
        cmocka_unit_test(test_sliding_context_stays_in_arena),
        cmocka_unit_test(test_slide_keeps_prefix),
        cmocka_unit_test(test_prefault_and_lock_weights),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
