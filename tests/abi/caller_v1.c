/* A program built against the frozen 1.0 header (tests/abi/v1.0), run against the current library: every call
 * that takes a struct, with struct_size as 1.0 set it. A newer library must accept these sizes, fill defaults
 * for any field 1.0 did not have, and never write past the end of a 1.0 struct. */
#define _POSIX_C_SOURCE 200112L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pangu/pangu.h>

/* Each struct sits in a buffer followed by guard bytes that no call may touch. */
#define GUARD 64
#define GUARD_BYTE 0xA5

static void fill_guard(void *buf, size_t size) { memset((unsigned char *)buf + size, GUARD_BYTE, GUARD); }

static int guard_intact(const void *buf, size_t size) {
    const unsigned char *g = (const unsigned char *)buf + size;
    for (size_t i = 0; i < GUARD; ++i)
        if (g[i] != GUARD_BYTE) return 0;
    return 1;
}

typedef struct {
    pangu_model *model;
} fixture;

static int setup(void **state) {
    static fixture f;
    static unsigned char buf[sizeof(pangu_model_params) + GUARD];
    pangu_model_params *mp = (pangu_model_params *)buf;
    fill_guard(buf, sizeof *mp);
    pangu_model_params_init(mp);
    if (mp->struct_size != sizeof *mp || !guard_intact(buf, sizeof *mp)) return -1;
    mp->backend = "cpu";
    if (pangu_model_load(PANGU_MODEL_DIR, mp, &f.model) != PANGU_OK) return -1;
    *state = &f;
    return 0;
}

static int teardown(void **state) {
    pangu_model_free(((fixture *)*state)->model);
    return 0;
}

/* The init functions fill exactly the 1.0 struct and say so in struct_size. */
static void test_inits_write_only_the_v1_struct(void **state) {
    (void)state;
    union {
        pangu_session_params p;
        unsigned char b[sizeof(pangu_session_params) + GUARD];
    } s;
    fill_guard(s.b, sizeof s.p);
    pangu_session_params_init(&s.p);
    assert_int_equal(s.p.struct_size, sizeof s.p);
    assert_true(guard_intact(s.b, sizeof s.p));
    assert_int_equal(s.p.spec_mode, PANGU_SPEC_PLD);
    assert_int_equal(s.p.n_batch, 64);

    union {
        pangu_sampling_params p;
        unsigned char b[sizeof(pangu_sampling_params) + GUARD];
    } g;
    fill_guard(g.b, sizeof g.p);
    pangu_sampling_params_init(&g.p);
    assert_int_equal(g.p.struct_size, sizeof g.p);
    assert_true(guard_intact(g.b, sizeof g.p));
    assert_int_equal(g.p.max_new_tokens, 256);
}

/* Output structs: the library writes struct_size bytes and no more. */
static void test_model_info(void **state) {
    fixture *f = *state;
    union {
        pangu_model_info i;
        unsigned char b[sizeof(pangu_model_info) + GUARD];
    } u;
    memset(&u.i, 0, sizeof u.i);
    fill_guard(u.b, sizeof u.i);
    u.i.struct_size = sizeof u.i;
    assert_int_equal(pangu_model_get_info(f->model, &u.i), PANGU_OK);
    assert_true(guard_intact(u.b, sizeof u.i));
    assert_int_equal(u.i.struct_size, sizeof u.i);
    assert_true(u.i.n_vocab > 0 && u.i.n_layer > 0 && u.i.head_dim > 0);
    assert_true(u.i.weight_bytes > 0);
}

/* Estimate, create in the caller's arena, generate with a result, read the stats: the whole 1.0 flow with a
 * session params struct a 1.0 program fills by hand rather than through init. */
static void test_session_flow(void **state) {
    fixture *f = *state;
    pangu_session_params sp;
    memset(&sp, 0, sizeof sp);
    sp.struct_size = sizeof sp;
    sp.n_ctx = 256;
    sp.n_batch = 32;
    sp.n_threads = 1;
    sp.spec_mode = PANGU_SPEC_PLD;
    sp.spec_ngram = 3;
    sp.spec_draft_len = 4;

    union {
        pangu_session_memory m;
        unsigned char b[sizeof(pangu_session_memory) + GUARD];
    } mem;
    memset(&mem.m, 0, sizeof mem.m);
    fill_guard(mem.b, sizeof mem.m);
    mem.m.struct_size = sizeof mem.m;
    assert_int_equal(pangu_session_estimate(f->model, &sp, &mem.m), PANGU_OK);
    assert_true(guard_intact(mem.b, sizeof mem.m));
    assert_true(mem.m.arena_bytes > mem.m.kv_cache_bytes && mem.m.kv_cache_bytes > 0);

    void *arena = NULL;
    assert_int_equal(posix_memalign(&arena, mem.m.alignment, mem.m.arena_bytes), 0);
    sp.arena = arena;
    sp.arena_size = mem.m.arena_bytes;
    pangu_session *s = NULL;
    assert_int_equal(pangu_session_create(f->model, &sp, &s), PANGU_OK);

    pangu_sampling_params gp;
    memset(&gp, 0, sizeof gp);
    gp.struct_size = sizeof gp;
    gp.top_k = 40;
    gp.top_p = 1.0f;
    gp.repetition_penalty = 1.0f;
    gp.max_new_tokens = 8;
    union {
        pangu_generate_result r;
        unsigned char b[sizeof(pangu_generate_result) + GUARD];
    } res;
    memset(&res.r, 0, sizeof res.r);
    fill_guard(res.b, sizeof res.r);
    res.r.struct_size = sizeof res.r;
    assert_int_equal(pangu_session_generate(s, "def add(a, b):\n", &gp, NULL, NULL, &res.r), PANGU_OK);
    assert_true(guard_intact(res.b, sizeof res.r));
    assert_true(res.r.n_prompt_tokens > 0);
    assert_true(res.r.n_generated >= 1 && res.r.n_generated <= 8);

    int32_t ids[4] = {0};
    size_t n = 0;
    assert_int_equal(pangu_tokenize(f->model, "x = 1", 5, 0, 0, ids, 4, &n), PANGU_OK);
    assert_int_equal(pangu_session_generate_tokens(s, ids, n, &gp, NULL, NULL, &res.r), PANGU_OK);
    assert_true(guard_intact(res.b, sizeof res.r));

    union {
        pangu_session_stats st;
        unsigned char b[sizeof(pangu_session_stats) + GUARD];
    } st;
    memset(&st.st, 0, sizeof st.st);
    fill_guard(st.b, sizeof st.st);
    st.st.struct_size = sizeof st.st;
    assert_int_equal(pangu_session_get_stats(s, &st.st), PANGU_OK);
    assert_true(guard_intact(st.b, sizeof st.st));
    assert_int_equal(st.st.caller_arena, 1);
    assert_true(st.st.n_generated >= 2);
    assert_int_equal((size_t)st.st.n_tokens, pangu_session_n_tokens(s));
    pangu_session_free(s);
    free(arena);

    /* The same parameters, library-allocated, with no result struct. */
    sp.arena = NULL;
    sp.arena_size = 0;
    assert_int_equal(pangu_session_create(f->model, &sp, &s), PANGU_OK);
    assert_int_equal(pangu_session_generate(s, "import", &gp, NULL, NULL, NULL), PANGU_OK);
    pangu_session_free(s);
}

/* A struct_size smaller than 1.0's is refused with the status for it, naming the call. */
static void test_too_small_struct_size(void **state) {
    fixture *f = *state;
    pangu_session_params sp;
    pangu_session_params_init(&sp);
    sp.struct_size = sizeof sp - 1;
    pangu_session *s = NULL;
    assert_int_equal(pangu_session_create(f->model, &sp, &s), PANGU_ERR_STRUCT_SIZE);
    assert_null(s);
    assert_non_null(strstr(pangu_last_error(), "pangu_session_create"));
}

/* The chat template takes an array of 1.0 pangu_chat_message. */
static void test_chat_messages(void **state) {
    fixture *f = *state;
    pangu_chat_message msgs[2] = {{"system", "be brief"}, {"user", "hi"}};
    char buf[512];
    size_t len = 0;
    const pangu_status st = pangu_apply_chat_template(f->model, msgs, 2, 1, buf, sizeof buf, &len);
    assert_true(st == PANGU_OK || st == PANGU_ERR_UNSUPPORTED);
    if (st == PANGU_OK) assert_non_null(strstr(buf, "hi"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inits_write_only_the_v1_struct),
        cmocka_unit_test(test_model_info),
        cmocka_unit_test(test_session_flow),
        cmocka_unit_test(test_too_small_struct_size),
        cmocka_unit_test(test_chat_messages),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
