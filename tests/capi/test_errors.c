/* Misuse of the C API: NULL pointers, bad struct sizes, out-of-range parameters and token ids, invalid
 * UTF-8, a full context, small buffers; status strings, version, and where error messages go. Every failure
 * must come back as its documented status, leave the handle unchanged and usable, and never crash. */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "pangu/pangu.h"
#include "model_dir.h"

static pangu_model *g_model;
static int32_t g_n_vocab;

static int setup(void **state) {
    (void)state;
    pangu_status st = pangu_model_load(PANGU_MODEL_DIR, NULL, &g_model);
    if (st != PANGU_OK) {
        fprintf(stderr, "load: %s\n", pangu_last_error());
        return -1;
    }
    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if (pangu_model_get_info(g_model, &info) != PANGU_OK) return -1;
    g_n_vocab = info.n_vocab;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    pangu_model_free(g_model);
    return 0;
}

#define INV PANGU_ERR_INVALID_ARGUMENT

static pangu_session *new_session(int32_t n_ctx) {
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.n_ctx = n_ctx;
    pangu_session *s = NULL;
    assert_int_equal(pangu_session_create(g_model, &p, &s), PANGU_OK);
    assert_non_null(s);
    return s;
}

static size_t tokenize(const char *text, int32_t *ids, size_t cap) {
    size_t n = 0;
    assert_int_equal(pangu_tokenize(g_model, text, strlen(text), 1, 0, ids, cap, &n), PANGU_OK);
    return n;
}

static void expect_contains(const char *msg, const char *needle) {
    assert_non_null(msg);
    if (!strstr(msg, needle)) fail_msg("message \"%s\" does not mention \"%s\"", msg, needle);
}

/* ---------------------------------------------------------------------------------------------- */

/* Must run first: nothing has failed on this thread yet (the group setup only loads successfully). */
static void test_last_error_initially_empty(void **state) {
    (void)state;
    assert_non_null(pangu_last_error());
    assert_string_equal(pangu_last_error(), "");
    assert_string_equal(pangu_model_last_error(g_model), "");
    pangu_session *s = new_session(64);
    assert_string_equal(pangu_session_last_error(s), "");
    pangu_session_free(s);
}

static void test_version(void **state) {
    (void)state;
    assert_int_equal(pangu_version_number(), PANGU_VERSION_NUMBER);
    assert_string_equal(pangu_version_string(), PANGU_VERSION_STRING);
    char v[32];
    snprintf(v, sizeof v, "%d.%d.%d", PANGU_VERSION_MAJOR, PANGU_VERSION_MINOR, PANGU_VERSION_PATCH);
    assert_string_equal(v, PANGU_VERSION_STRING);
    assert_int_equal(PANGU_VERSION_NUMBER, PANGU_VERSION_MAJOR * 10000 + PANGU_VERSION_MINOR * 100 + PANGU_VERSION_PATCH);
}

static void test_status_strings(void **state) {
    (void)state;
    const char *seen[PANGU_ERR_VOCAB_MISMATCH + 1];
    for (int i = PANGU_OK; i <= PANGU_ERR_VOCAB_MISMATCH; ++i) {
        const char *s = pangu_status_string((pangu_status)i);
        assert_non_null(s);
        if (!*s) fail_msg("status %d has an empty string", i);
        if (!strcmp(s, "unknown status")) fail_msg("status %d is described as unknown", i);
        for (int j = 0; j < i; ++j)
            if (!strcmp(seen[j], s)) fail_msg("statuses %d and %d share the string \"%s\"", j, i, s);
        seen[i] = s;
    }
    assert_string_equal(pangu_status_string((pangu_status)(PANGU_ERR_VOCAB_MISMATCH + 1)), "unknown status");
    assert_string_equal(pangu_status_string((pangu_status)-1), "unknown status");
    assert_string_equal(pangu_status_string((pangu_status)1000), "unknown status");
}

/* ---------------------------------------------------------------------------------------------- */
/* NULL pointers                                                                                  */
/* ---------------------------------------------------------------------------------------------- */

static int never_abort(void *u) {
    (void)u;
    return 0;
}

static void test_null_model_functions(void **state) {
    (void)state;
    pangu_model *m = NULL;
    assert_int_equal(pangu_model_load(NULL, NULL, &m), INV);
    assert_null(m);
    expect_contains(pangu_last_error(), "pangu_model_load");
    assert_int_equal(pangu_model_load(PANGU_MODEL_DIR, NULL, NULL), INV);
    pangu_model_free(NULL);
    assert_string_equal(pangu_model_last_error(NULL), "");

    pangu_model_params_init(NULL);
    pangu_session_params_init(NULL);
    pangu_sampling_params_init(NULL);

    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    assert_int_equal(pangu_model_get_info(NULL, &info), INV);
    assert_int_equal(pangu_model_get_info(g_model, NULL), INV);
}

static void test_null_tokenizer_functions(void **state) {
    (void)state;
    int32_t ids[16];
    size_t n = 77;
    char buf[64];
    size_t len = 77;
    const int32_t tok[2] = {100, 200};

    assert_int_equal(pangu_tokenize(NULL, "a", 1, 0, 0, ids, 16, &n), INV);
    assert_int_equal(pangu_tokenize(g_model, NULL, 3, 0, 0, ids, 16, &n), INV);
    assert_int_equal(pangu_tokenize(g_model, "abc", 3, 0, 0, NULL, 16, &n), INV);
    assert_int_equal(pangu_tokenize(g_model, "abc", 3, 0, 0, ids, 16, NULL), INV);
    assert_int_equal(n, 77); /* outputs untouched on failure */
    /* NULL text with len 0 and NULL ids with capacity 0 are valid */
    assert_int_equal(pangu_tokenize(g_model, NULL, 0, 0, 0, NULL, 0, &n), PANGU_OK);
    assert_int_equal(n, 0);
    assert_int_equal(pangu_tokenize(g_model, NULL, 0, 1, 0, ids, 16, &n), PANGU_OK);
    assert_int_equal(n, 1); /* just BOS */

    assert_int_equal(pangu_detokenize(NULL, tok, 2, buf, 64, &len), INV);
    assert_int_equal(pangu_detokenize(g_model, NULL, 2, buf, 64, &len), INV);
    assert_int_equal(pangu_detokenize(g_model, tok, 2, NULL, 64, &len), INV);
    assert_int_equal(pangu_detokenize(g_model, tok, 2, buf, 64, NULL), INV);
    assert_int_equal(len, 77);
    assert_int_equal(pangu_detokenize(g_model, NULL, 0, buf, 64, &len), PANGU_OK);
    assert_int_equal(len, 0);
    assert_string_equal(buf, "");

    assert_int_equal(pangu_token_to_bytes(NULL, 100, buf, 64, &len), INV);
    assert_int_equal(pangu_token_to_bytes(g_model, 100, NULL, 64, &len), INV);
    assert_int_equal(pangu_token_to_bytes(g_model, 100, buf, 64, NULL), INV);

    pangu_chat_message msg = {"user", "hi"};
    assert_int_equal(pangu_apply_chat_template(NULL, &msg, 1, 1, buf, 64, &len), INV);
    assert_int_equal(pangu_apply_chat_template(g_model, NULL, 1, 1, buf, 64, &len), INV);
    assert_int_equal(pangu_apply_chat_template(g_model, &msg, 1, 1, NULL, 64, &len), INV);
    assert_int_equal(pangu_apply_chat_template(g_model, &msg, 1, 1, buf, 64, NULL), INV);
}

static void test_null_session_functions(void **state) {
    (void)state;
    pangu_session *s = NULL;
    assert_int_equal(pangu_session_create(NULL, NULL, &s), INV);
    assert_null(s);
    assert_int_equal(pangu_session_create(g_model, NULL, NULL), INV);
    pangu_session_free(NULL);
    assert_string_equal(pangu_session_last_error(NULL), "");
    assert_int_equal(pangu_session_reset(NULL), INV);
    assert_int_equal(pangu_session_n_tokens(NULL), 0);
    pangu_session_set_abort_callback(NULL, never_abort, NULL);
    pangu_session_set_abort_callback(NULL, NULL, NULL);

    s = new_session(64);
    int32_t ids[8];
    size_t n = 77;
    const int32_t tok[3] = {1, 100, 200};
    assert_int_equal(pangu_session_get_tokens(NULL, ids, 8, &n), INV);
    assert_int_equal(pangu_session_get_tokens(s, NULL, 8, &n), INV);
    assert_int_equal(pangu_session_get_tokens(s, ids, 8, NULL), INV);
    assert_int_equal(n, 77);
    assert_int_equal(pangu_session_truncate(NULL, 0), INV);
    assert_int_equal(pangu_session_eval(NULL, tok, 3, NULL), INV);
    assert_int_equal(pangu_session_eval(s, NULL, 3, NULL), INV);
    const float *logits = NULL;
    int32_t nv = 0;
    assert_int_equal(pangu_session_get_logits(NULL, &logits, &nv), INV);
    assert_int_equal(pangu_session_get_logits(s, NULL, &nv), INV);
    assert_int_equal(pangu_session_generate(NULL, "x", NULL, NULL, NULL, NULL), INV);
    assert_int_equal(pangu_session_generate(s, NULL, NULL, NULL, NULL, NULL), INV);
    assert_int_equal(pangu_session_generate_tokens(NULL, tok, 3, NULL, NULL, NULL, NULL), INV);
    assert_int_equal(pangu_session_generate_tokens(s, NULL, 3, NULL, NULL, NULL, NULL), INV);
    pangu_session_memory mem;
    memset(&mem, 0, sizeof mem);
    mem.struct_size = sizeof mem;
    assert_int_equal(pangu_session_estimate(NULL, NULL, &mem), INV);
    assert_int_equal(pangu_session_estimate(g_model, NULL, NULL), INV);
    pangu_session_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    assert_int_equal(pangu_session_get_stats(NULL, &stats), INV);
    assert_int_equal(pangu_session_get_stats(s, NULL), INV);
    assert_int_equal(pangu_session_n_tokens(s), 0);

    /* documented misuse of a valid session */
    assert_int_equal(pangu_session_get_logits(s, &logits, &nv), INV); /* empty context */
    assert_int_equal(pangu_session_truncate(s, 1), INV);             /* beyond n_tokens */
    assert_int_equal(pangu_session_generate_tokens(s, NULL, 0, NULL, NULL, NULL, NULL), INV); /* nothing to continue */
    assert_int_equal(pangu_session_eval(s, NULL, 0, NULL), PANGU_OK); /* n = 0 is a no-op */
    assert_int_equal(pangu_session_n_tokens(s), 0);

    /* and it is still usable */
    assert_int_equal(pangu_session_eval(s, tok, 3, NULL), PANGU_OK);
    assert_int_equal(pangu_session_get_logits(s, &logits, NULL), PANGU_OK); /* n_vocab may be NULL */
    assert_non_null(logits);
    assert_int_equal(pangu_session_truncate(s, 1), PANGU_OK);
    assert_int_equal(pangu_session_n_tokens(s), 1);
    pangu_session_free(s);
}

/* ---------------------------------------------------------------------------------------------- */
/* struct_size                                                                                    */
/* ---------------------------------------------------------------------------------------------- */

/* 0, too small (just the struct_size field: smaller than any published version, which all have fields),
 * too large, and absurd. The structs are embedded in larger storage so that "too large" is readable. */
static size_t bad_sizes(size_t real, size_t out[4]) {
    out[0] = 0;
    out[1] = sizeof(size_t);
    out[2] = real + 8;
    out[3] = SIZE_MAX;
    return 4;
}

static void test_struct_size_model_params(void **state) {
    (void)state;
    struct {
        pangu_model_params p;
        char room[64];
    } big;
    size_t sz[4];
    for (size_t i = 0, n = bad_sizes(sizeof(pangu_model_params), sz); i < n; ++i) {
        memset(&big, 0, sizeof big);
        pangu_model_params_init(&big.p);
        big.p.struct_size = sz[i];
        int dummy;
        pangu_model *m = (pangu_model *)(void *)&dummy;
        assert_int_equal(pangu_model_load(PANGU_MODEL_DIR, &big.p, &m), PANGU_ERR_STRUCT_SIZE);
        assert_null(m);
        expect_contains(pangu_last_error(), "struct_size");
    }
    pangu_model_params p;
    pangu_model_params_init(&p);
    assert_int_equal(p.struct_size, sizeof p);
    assert_int_equal(p.prefault, 0);
    assert_int_equal(p.lock_memory, 0);
    pangu_model *m = NULL;
    assert_int_equal(pangu_model_load(PANGU_MODEL_DIR, &p, &m), PANGU_OK);
    pangu_model_free(m);
}

static void test_struct_size_session_params(void **state) {
    (void)state;
    struct {
        pangu_session_params p;
        char room[64];
    } big;
    size_t sz[4];
    for (size_t i = 0, n = bad_sizes(sizeof(pangu_session_params), sz); i < n; ++i) {
        memset(&big, 0, sizeof big);
        pangu_session_params_init_sized(&big.p, sizeof big.p);
        big.p.struct_size = sz[i];
        pangu_session *s = NULL;
        assert_int_equal(pangu_session_create(g_model, &big.p, &s), PANGU_ERR_STRUCT_SIZE);
        assert_null(s);
        expect_contains(pangu_last_error(), "struct_size");
        expect_contains(pangu_model_last_error(g_model), "struct_size");
    }
    pangu_session_params p;
    assert_int_equal(pangu_session_params_init_sized(&p, sizeof p), PANGU_OK);
    assert_int_equal(p.struct_size, sizeof p);
    assert_int_equal(p.n_batch, 64);
    assert_int_equal(p.n_threads, 1);
    assert_int_equal(p.kv_type, PANGU_KV_F16);
}

/* pangu_session_params_init_sized writes exactly `size` bytes, refuses sizes it does not know (writing
 * nothing), and 1.0's init fills the 1.0 struct only: with its struct_size, kv_type keeps its default
 * whatever the caller leaves there. */
static void test_session_params_init_sized(void **state) {
    (void)state;
    struct {
        pangu_session_params p;
        unsigned char guard[16];
    } b;
    memset(&b, 0xA5, sizeof b);
    assert_int_equal(pangu_session_params_init_sized(&b.p, sizeof b.p), PANGU_OK);
    for (size_t i = 0; i < sizeof b.guard; ++i) assert_int_equal(b.guard[i], 0xA5);
    assert_int_equal(b.p.kv_type, PANGU_KV_F16);
    assert_int_equal(pangu_session_params_init_sized(NULL, sizeof b.p), PANGU_ERR_INVALID_ARGUMENT);
    const size_t bad[] = {0, 87, sizeof b.p + 8, SIZE_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        memset(&b, 0xA5, sizeof b);
        assert_int_equal(pangu_session_params_init_sized(&b.p, bad[i]), PANGU_ERR_STRUCT_SIZE);
        expect_contains(pangu_last_error(), "pangu_session_params_init_sized");
        const unsigned char *raw = (const unsigned char *)&b;
        for (size_t j = 0; j < sizeof b; ++j) assert_int_equal(raw[j], 0xA5);
    }
    /* 1.0's init: struct_size 88 (the 1.0 size), the bytes after it untouched */
    memset(&b, 0xA5, sizeof b);
    pangu_session_params_init(&b.p);
    assert_true(b.p.struct_size < sizeof b.p);
    assert_int_equal(b.p.struct_size, offsetof(pangu_session_params, kv_type));
    const unsigned char *raw = (const unsigned char *)&b.p;
    for (size_t j = b.p.struct_size; j < sizeof b.p; ++j) assert_int_equal(raw[j], 0xA5);
    /* an invalid kv_type past struct_size is not read: the session gets the default */
    b.p.n_ctx = 64;
    b.p.kv_type = 77;
    pangu_session *s = NULL;
    assert_int_equal(pangu_session_create(g_model, &b.p, &s), PANGU_OK);
    pangu_session_free(s);
}

/* An unknown kv_type is PANGU_ERR_INVALID_ARGUMENT, the value named; every known one gives a session. */
static void test_kv_type(void **state) {
    (void)state;
    const int32_t bad[] = {-1, 4, 1000};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        pangu_session_params p;
        pangu_session_params_init_sized(&p, sizeof p);
        p.n_ctx = 64;
        p.kv_type = bad[i];
        char want[32];
        snprintf(want, sizeof want, "kv_type %d", (int)bad[i]);
        pangu_session *s = NULL;
        assert_int_equal(pangu_session_create(g_model, &p, &s), PANGU_ERR_INVALID_ARGUMENT);
        assert_null(s);
        expect_contains(pangu_last_error(), want);
        expect_contains(pangu_model_last_error(g_model), want);
        pangu_session_memory mem;
        mem.struct_size = sizeof mem;
        assert_int_equal(pangu_session_estimate(g_model, &p, &mem), PANGU_ERR_INVALID_ARGUMENT);
        expect_contains(pangu_last_error(), want);
    }
    const int32_t good[] = {PANGU_KV_F32, PANGU_KV_F16, PANGU_KV_BF16, PANGU_KV_Q8};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; ++i) {
        pangu_session_params p;
        pangu_session_params_init_sized(&p, sizeof p);
        p.n_ctx = 64;
        p.kv_type = good[i];
        pangu_session *s = NULL;
        assert_int_equal(pangu_session_create(g_model, &p, &s), PANGU_OK);
        pangu_session_free(s);
    }
}

static void test_struct_size_sampling_params(void **state) {
    (void)state;
    pangu_session *s = new_session(64);
    int32_t ids[32];
    const size_t n = tokenize("床前明月光", ids, 32);
    struct {
        pangu_sampling_params p;
        char room[64];
    } big;
    size_t sz[4];
    for (size_t i = 0, k = bad_sizes(sizeof(pangu_sampling_params), sz); i < k; ++i) {
        memset(&big, 0, sizeof big);
        pangu_sampling_params_init(&big.p);
        big.p.struct_size = sz[i];
        assert_int_equal(pangu_session_generate_tokens(s, ids, n, &big.p, NULL, NULL, NULL), PANGU_ERR_STRUCT_SIZE);
        assert_int_equal(pangu_session_generate(s, "床前", &big.p, NULL, NULL, NULL), PANGU_ERR_STRUCT_SIZE);
        assert_int_equal(pangu_session_n_tokens(s), 0);
        expect_contains(pangu_session_last_error(s), "struct_size");
    }
    pangu_sampling_params p;
    pangu_sampling_params_init(&p);
    assert_int_equal(p.struct_size, sizeof p);
    assert_true(p.temperature == 0.0f);
    assert_int_equal(p.top_k, 40);
    assert_true(p.top_p == 0.95f);
    assert_int_equal(p.max_new_tokens, 256);
    p.max_new_tokens = 2;
    assert_int_equal(pangu_session_generate_tokens(s, ids, n, &p, NULL, NULL, NULL), PANGU_OK);
    pangu_session_free(s);
}

static void test_struct_size_model_info(void **state) {
    (void)state;
    struct {
        pangu_model_info info;
        char room[64];
    } big;
    size_t sz[4];
    for (size_t i = 0, n = bad_sizes(sizeof(pangu_model_info), sz); i < n; ++i) {
        memset(&big, 0xAB, sizeof big);
        big.info.struct_size = sz[i];
        assert_int_equal(pangu_model_get_info(g_model, &big.info), PANGU_ERR_STRUCT_SIZE);
        assert_int_equal(big.info.struct_size, sz[i]);
        assert_int_equal(big.info.n_vocab, (int32_t)0xABABABAB); /* not written */
        expect_contains(pangu_last_error(), "struct_size");
    }
    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    assert_int_equal(pangu_model_get_info(g_model, &info), PANGU_OK);
    assert_int_equal(info.n_vocab, 4096);
    assert_int_equal(info.n_layer, 6);
    assert_int_equal(info.n_embd, 192);
    assert_int_equal(info.n_head, 6);
    assert_int_equal(info.n_head_kv, 2);
    assert_int_equal(info.head_dim, 32);
    assert_int_equal(info.n_ctx_train, 4096);
    assert_int_equal(info.bos_token, 1);
    assert_int_equal(info.eos_token, 2);
    assert_int_equal(info.add_bos, 1);
    assert_int_equal(info.has_chat_template, 0);
    assert_true(info.n_params > 3900000 && info.n_params < 4000000);
    assert_true(info.weight_bytes == 2 * info.n_params); /* bf16 */
}

static void test_struct_size_generate_result(void **state) {
    (void)state;
    pangu_session *s = new_session(64);
    struct {
        pangu_generate_result r;
        char room[64];
    } big;
    size_t sz[4];
    for (size_t i = 0, n = bad_sizes(sizeof(pangu_generate_result), sz); i < n; ++i) {
        memset(&big, 0, sizeof big);
        big.r.struct_size = sz[i];
        assert_int_equal(pangu_session_generate(s, "床前", NULL, NULL, NULL, &big.r), PANGU_ERR_STRUCT_SIZE);
        assert_int_equal(pangu_session_n_tokens(s), 0);
        assert_int_equal(big.r.n_generated, 0);
        expect_contains(pangu_session_last_error(s), "struct_size");
    }
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.max_new_tokens = 3;
    pangu_generate_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    assert_int_equal(pangu_session_generate(s, "床前", &sp, NULL, NULL, &r), PANGU_OK);
    assert_int_equal(r.struct_size, sizeof r);
    assert_int_equal(r.n_generated, 3);
    assert_int_equal(r.stop_reason, PANGU_STOP_MAX_TOKENS);
    assert_int_equal(pangu_session_n_tokens(s), (size_t)(r.n_prompt_tokens + 3));
    pangu_session_free(s);
}

/* ---------------------------------------------------------------------------------------------- */
/* parameter ranges                                                                               */
/* ---------------------------------------------------------------------------------------------- */

static void test_invalid_session_params(void **state) {
    (void)state;
    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    assert_int_equal(pangu_model_get_info(g_model, &info), PANGU_OK);
    struct {
        int32_t n_ctx, n_batch, n_threads;
        const char *mentions;
    } bad[] = {
        {info.n_ctx_train + 1, 64, 1, "n_ctx"},
        {-5, 64, 1, "n_ctx"},
        {64, 64, 0, "n_threads"},
        {64, 64, -1, "n_threads"},
        {64, 0, 1, "n_batch"},
        {64, -8, 1, "n_batch"},
        {64, 64, 1000, "n_threads"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        pangu_session_params p;
        pangu_session_params_init_sized(&p, sizeof p);
        p.n_ctx = bad[i].n_ctx;
        p.n_batch = bad[i].n_batch;
        p.n_threads = bad[i].n_threads;
        pangu_session *s = NULL;
        assert_int_equal(pangu_session_create(g_model, &p, &s), INV);
        assert_null(s);
        expect_contains(pangu_last_error(), bad[i].mentions);
    }
    /* the extremes that are allowed */
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.n_ctx = info.n_ctx_train;
    p.n_batch = 1;
    pangu_session *s = NULL;
    assert_int_equal(pangu_session_create(g_model, &p, &s), PANGU_OK);
    pangu_session_free(s);
}

/* n_ctx = 1 is inside the documented range [1, max_position_embeddings] under the default context policy. */
static void test_session_n_ctx_one(void **state) {
    (void)state;
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.n_ctx = 1;
    pangu_session *s = NULL;
    pangu_status st = pangu_session_create(g_model, &p, &s);
    if (st != PANGU_OK) fail_msg("n_ctx 1: %s: %s", pangu_status_string(st), pangu_last_error());
    const int32_t bos = 1, two[2] = {1, 300};
    assert_int_equal(pangu_session_eval(s, two, 2, NULL), PANGU_ERR_CONTEXT_FULL);
    assert_int_equal(pangu_session_eval(s, &bos, 1, NULL), PANGU_OK);
    assert_int_equal(pangu_session_n_tokens(s), 1);
    pangu_session_free(s);
    /* Generating in a full context of one position: nothing fits, under either policy. With PANGU_CONTEXT_SLIDE the
     * slide used to drop the last token too, and the next step read the token before the first (found by
     * fuzz_api under UBSan). */
    for (int32_t policy = PANGU_CONTEXT_ERROR; policy <= PANGU_CONTEXT_SLIDE; ++policy) {
        p.context_policy = policy;
        assert_int_equal(pangu_session_create(g_model, &p, &s), PANGU_OK);
        pangu_sampling_params sp;
        pangu_sampling_params_init(&sp);
        sp.max_new_tokens = 4;
        pangu_generate_result r;
        memset(&r, 0, sizeof r);
        r.struct_size = sizeof r;
        assert_int_equal(pangu_session_generate_tokens(s, &bos, 1, &sp, NULL, NULL, &r), PANGU_ERR_CONTEXT_FULL);
        expect_contains(pangu_session_last_error(s),
                        policy == PANGU_CONTEXT_SLIDE ? "too small to slide" : "would slide");
        assert_int_equal(r.stop_reason, PANGU_STOP_CONTEXT_FULL);
        assert_int_equal(r.n_generated, 0);
        int32_t ids[2] = {-1, -1};
        size_t n = 0;
        assert_int_equal(pangu_session_get_tokens(s, ids, 2, &n), PANGU_OK);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], bos);
        pangu_session_free(s);
    }
}

static void test_invalid_sampling_params(void **state) {
    (void)state;
    pangu_session *s = new_session(128);
    int32_t ids[32];
    const size_t n = tokenize("床前明月光", ids, 32);
    assert_int_equal(pangu_session_eval(s, ids, n, NULL), PANGU_OK);
    for (int i = 0; i < 9; ++i) {
        pangu_sampling_params sp;
        pangu_sampling_params_init(&sp);
        switch (i) {
            case 0: sp.temperature = -0.1f; break;
            case 1: sp.top_p = 0.0f; break;
            case 2: sp.top_p = 1.01f; break;
            case 3: sp.temperature = (float)NAN; break;
            case 4: sp.top_p = -0.5f; break;
            case 5: sp.min_p = -0.1f; break;
            case 6: sp.top_k = -1; break;
            case 7: sp.max_new_tokens = -1; break;
            case 8: sp.repetition_penalty = 0.0f; break;
        }
        assert_int_equal(pangu_session_generate_tokens(s, NULL, 0, &sp, NULL, NULL, NULL), INV);
        assert_int_equal(pangu_session_generate(s, "，", &sp, NULL, NULL, NULL), INV);
        assert_int_equal(pangu_session_n_tokens(s), n);
        assert_true(strlen(pangu_session_last_error(s)) > 0);
    }
    /* NULL stop_tokens with a non-zero count */
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.n_stop_tokens = 2;
    assert_int_equal(pangu_session_generate_tokens(s, NULL, 0, &sp, NULL, NULL, NULL), INV);
    assert_int_equal(pangu_session_n_tokens(s), n);
    /* the boundaries are accepted */
    pangu_sampling_params_init(&sp);
    sp.top_p = 1.0f;
    sp.temperature = 0.0f;
    sp.max_new_tokens = 1;
    assert_int_equal(pangu_session_generate_tokens(s, NULL, 0, &sp, NULL, NULL, NULL), PANGU_OK);
    assert_int_equal(pangu_session_n_tokens(s), n + 1);
    pangu_session_free(s);
}

static void test_invalid_stop_strings(void **state) {
    (void)state;
    pangu_session *s = new_session(128);
    char long_stop[300];
    memset(long_stop, 'a', sizeof long_stop);
    long_stop[257] = 0; /* 257 bytes */
    const char *empty[] = {"ok", ""};
    const char *too_long[] = {long_stop};
    const char *with_null[] = {"ok", NULL};
    const char *const *cases[] = {empty, too_long, with_null};
    const size_t counts[] = {2, 1, 2};
    for (int i = 0; i < 3; ++i) {
        pangu_sampling_params sp;
        pangu_sampling_params_init(&sp);
        sp.stop_strings = cases[i];
        sp.n_stop_strings = counts[i];
        sp.max_new_tokens = 4;
        assert_int_equal(pangu_session_generate(s, "床前明月光", &sp, NULL, NULL, NULL), INV);
        assert_int_equal(pangu_session_n_tokens(s), 0);
        expect_contains(pangu_session_last_error(s), "stop_strings");
    }
    /* NULL stop_strings with a non-zero count */
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.n_stop_strings = 1;
    assert_int_equal(pangu_session_generate(s, "床前明月光", &sp, NULL, NULL, NULL), INV);
    assert_int_equal(pangu_session_n_tokens(s), 0);
    /* exactly 256 bytes is allowed */
    long_stop[256] = 0;
    const char *max_stop[] = {long_stop};
    pangu_sampling_params_init(&sp);
    sp.stop_strings = max_stop;
    sp.n_stop_strings = 1;
    sp.max_new_tokens = 4;
    assert_int_equal(pangu_session_generate(s, "床前明月光", &sp, NULL, NULL, NULL), PANGU_OK);
    /* not UTF-8: the last byte of 光, which could match inside a character and cut it (found by fuzz_api) */
    pangu_session_reset(s);
    const char *broken[] = {"ok", "\x89", "\xe5\x85"};
    for (int i = 1; i < 3; ++i) {
        sp.stop_strings = broken;
        sp.n_stop_strings = (size_t)i + 1;
        assert_int_equal(pangu_session_generate(s, "床前明月光", &sp, NULL, NULL, NULL), PANGU_ERR_INVALID_UTF8);
        assert_int_equal(pangu_session_n_tokens(s), 0);
        expect_contains(pangu_session_last_error(s), "stop_strings[1]");
    }
    pangu_session_free(s);
}

/* ---------------------------------------------------------------------------------------------- */
/* tokens and text                                                                                */
/* ---------------------------------------------------------------------------------------------- */

static void test_invalid_token_ids(void **state) {
    (void)state;
    pangu_session *s = new_session(64);
    const int32_t good[2] = {1, 300};
    assert_int_equal(pangu_session_eval(s, good, 2, NULL), PANGU_OK);
    const int32_t bad_ids[] = {g_n_vocab, -1, INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; ++i) {
        const int32_t seq[3] = {300, bad_ids[i], 301};
        assert_int_equal(pangu_session_eval(s, seq, 3, NULL), PANGU_ERR_INVALID_TOKEN);
        assert_int_equal(pangu_session_n_tokens(s), 2);
        assert_int_equal(pangu_session_generate_tokens(s, seq, 3, NULL, NULL, NULL, NULL), PANGU_ERR_INVALID_TOKEN);
        assert_int_equal(pangu_session_n_tokens(s), 2);
        char num[32];
        snprintf(num, sizeof num, "%d", bad_ids[i]);
        expect_contains(pangu_session_last_error(s), num);

        char buf[64];
        size_t len = 99;
        assert_int_equal(pangu_detokenize(g_model, seq, 3, buf, sizeof buf, &len), PANGU_ERR_INVALID_TOKEN);
        assert_int_equal(len, 99);
        expect_contains(pangu_last_error(), num);
        assert_int_equal(pangu_token_to_bytes(g_model, bad_ids[i], buf, sizeof buf, &len), PANGU_ERR_INVALID_TOKEN);
        expect_contains(pangu_last_error(), num);
    }
    /* the session is intact: its logits are those of the two good tokens */
    pangu_session *f = new_session(64);
    assert_int_equal(pangu_session_eval(f, good, 2, NULL), PANGU_OK);
    const float *a = NULL, *b = NULL;
    assert_int_equal(pangu_session_get_logits(s, &a, NULL), PANGU_OK);
    assert_int_equal(pangu_session_get_logits(f, &b, NULL), PANGU_OK);
    assert_memory_equal(a, b, sizeof(float) * (size_t)g_n_vocab);
    /* the last valid id works */
    const int32_t last = g_n_vocab - 1;
    char buf[64];
    size_t len = 0;
    assert_int_equal(pangu_token_to_bytes(g_model, last, buf, sizeof buf, &len), PANGU_OK);
    assert_int_equal(pangu_session_eval(s, &last, 1, NULL), PANGU_OK);
    pangu_session_free(f);
    pangu_session_free(s);
}

static const char *const kBadUtf8[] = {
    "\xff",                 /* never valid */
    "abc\x80",              /* lone continuation byte */
    "\xc0\xaf",             /* overlong '/' */
    "\xe0\x80\xaf",         /* overlong, 3 bytes */
    "\xed\xa0\x80",         /* UTF-16 surrogate */
    "\xf4\x90\x80\x80",     /* beyond U+10FFFF */
    "\xe6\x9c\x88\xe4\xb8", /* 月 then a truncated character */
    "\xf8\x88\x80\x80\x80", /* 5-byte form */
    "ok\xc3(",              /* lead byte followed by ASCII */
};

static void test_invalid_utf8(void **state) {
    (void)state;
    pangu_session *s = new_session(64);
    const int32_t bos = 1;
    assert_int_equal(pangu_session_eval(s, &bos, 1, NULL), PANGU_OK);
    for (size_t i = 0; i < sizeof kBadUtf8 / sizeof kBadUtf8[0]; ++i) {
        int32_t ids[32];
        size_t n = 99;
        const char *t = kBadUtf8[i];
        pangu_status st = pangu_tokenize(g_model, t, strlen(t), 1, 1, ids, 32, &n);
        if (st != PANGU_ERR_INVALID_UTF8) fail_msg("case %zu: pangu_tokenize gave %s", i, pangu_status_string(st));
        assert_int_equal(n, 99);
        expect_contains(pangu_last_error(), "UTF-8");
        expect_contains(pangu_model_last_error(g_model), "UTF-8");
        st = pangu_session_generate(s, t, NULL, NULL, NULL, NULL);
        if (st != PANGU_ERR_INVALID_UTF8) fail_msg("case %zu: pangu_session_generate gave %s", i, pangu_status_string(st));
        assert_int_equal(pangu_session_n_tokens(s), 1);
        expect_contains(pangu_session_last_error(s), "UTF-8");
    }
    /* invalid bytes past `len` are not read; a NUL inside the text is valid UTF-8 */
    size_t n = 0;
    int32_t ids[32];
    assert_int_equal(pangu_tokenize(g_model, "ab\xff", 2, 0, 0, ids, 32, &n), PANGU_OK);
    assert_int_equal(pangu_tokenize(g_model, "a\0b", 3, 0, 0, ids, 32, &n), PANGU_OK);
    pangu_session_free(s);
}

static void test_context_full(void **state) {
    (void)state;
    pangu_session *s = new_session(32);
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.max_new_tokens = 2;
    assert_int_equal(pangu_session_generate(s, "床前", &sp, NULL, NULL, NULL), PANGU_OK);
    const size_t before = pangu_session_n_tokens(s);
    assert_true(before > 2 && before < 16);
    int32_t tok_before[32], tok_after[32];
    size_t nb = 0, na = 0;
    assert_int_equal(pangu_session_get_tokens(s, tok_before, 32, &nb), PANGU_OK);

    const char *long_prompt = "床前明月光，疑是地上霜。举头望明月，低头思故乡。春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。";
    int32_t ids[128];
    const size_t n_long = tokenize(long_prompt, ids, 128);
    assert_true(n_long > 32);
    pangu_generate_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    assert_int_equal(pangu_session_generate(s, long_prompt, &sp, NULL, NULL, &r), PANGU_ERR_CONTEXT_FULL);
    expect_contains(pangu_session_last_error(s), "32");
    assert_int_equal(pangu_session_n_tokens(s), before);
    assert_int_equal(pangu_session_get_tokens(s, tok_after, 32, &na), PANGU_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(tok_before, tok_after, nb * sizeof(int32_t));
    /* also through eval, with exactly one token too many */
    assert_int_equal(pangu_session_eval(s, ids, 32 - before + 1, NULL), PANGU_ERR_CONTEXT_FULL);
    assert_int_equal(pangu_session_n_tokens(s), before);

    /* still usable: it continues exactly like a session that never saw the failures */
    assert_int_equal(pangu_session_generate(s, "，", &sp, NULL, NULL, NULL), PANGU_OK);
    pangu_session *f = new_session(32);
    assert_int_equal(pangu_session_generate(f, "床前", &sp, NULL, NULL, NULL), PANGU_OK);
    assert_int_equal(pangu_session_generate(f, "，", &sp, NULL, NULL, NULL), PANGU_OK);
    assert_int_equal(pangu_session_get_tokens(s, tok_before, 32, &nb), PANGU_OK);
    assert_int_equal(pangu_session_get_tokens(f, tok_after, 32, &na), PANGU_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(tok_before, tok_after, nb * sizeof(int32_t));

    /* generation that runs into the end of the context stops there (continuing past EOS until it does) */
    sp.max_new_tokens = 100;
    for (int round = 0;; ++round) {
        assert_true(round < 32);
        const size_t n_before = pangu_session_n_tokens(s);
        memset(&r, 0, sizeof r);
        r.struct_size = sizeof r;
        pangu_status st = pangu_session_generate(s, "", &sp, NULL, NULL, &r);
        assert_int_equal((size_t)r.n_generated, pangu_session_n_tokens(s) - n_before);
        if (r.stop_reason == PANGU_STOP_EOS) {
            assert_int_equal(st, PANGU_OK);
            continue;
        }
        assert_int_equal(st, PANGU_ERR_CONTEXT_FULL);
        assert_int_equal(r.stop_reason, PANGU_STOP_CONTEXT_FULL);
        assert_int_equal(pangu_session_n_tokens(s), 32);
        expect_contains(pangu_session_last_error(s), "full");
        break;
    }
    /* and then nothing more fits */
    assert_int_equal(pangu_session_generate(s, "", &sp, NULL, NULL, &r), PANGU_ERR_CONTEXT_FULL);
    assert_int_equal(r.n_generated, 0);
    assert_int_equal(pangu_session_n_tokens(s), 32);
    pangu_session_free(f);
    pangu_session_free(s);
}

/* ---------------------------------------------------------------------------------------------- */
/* buffers                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

static void test_buffer_too_small_tokenize(void **state) {
    (void)state;
    const char *text = "床前明月光，疑是地上霜。def main():";
    size_t need = 0;
    assert_int_equal(pangu_tokenize(g_model, text, strlen(text), 1, 0, NULL, 0, &need), PANGU_ERR_BUFFER_TOO_SMALL);
    assert_true(need > 5);
    expect_contains(pangu_last_error(), "pangu_tokenize");
    int32_t *ids = (int32_t *)malloc(need * sizeof(int32_t));
    assert_non_null(ids);
    size_t n = 0;
    assert_int_equal(pangu_tokenize(g_model, text, strlen(text), 1, 0, ids, need - 1, &n), PANGU_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(n, need);
    assert_int_equal(pangu_tokenize(g_model, text, strlen(text), 1, 0, ids, need, &n), PANGU_OK);
    assert_int_equal(n, need);
    assert_int_equal(ids[0], 1);
    free(ids);
}

static void test_buffer_too_small_detokenize(void **state) {
    (void)state;
    const char *text = "床前明月光，疑是地上霜。";
    int32_t ids[64];
    size_t n = 0;
    assert_int_equal(pangu_tokenize(g_model, text, strlen(text), 0, 0, ids, 64, &n), PANGU_OK);
    size_t len = 0;
    assert_int_equal(pangu_detokenize(g_model, ids, n, NULL, 0, &len), PANGU_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(len, strlen(text));
    /* the reported size is the text length; the buffer needs one more byte for the NUL */
    char *buf = (char *)malloc(len + 1);
    assert_non_null(buf);
    memset(buf, 'Z', len + 1);
    size_t len2 = 0;
    assert_int_equal(pangu_detokenize(g_model, ids, n, buf, len, &len2), PANGU_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(len2, len);
    assert_int_equal(pangu_detokenize(g_model, ids, n, buf, len + 1, &len2), PANGU_OK);
    assert_int_equal(len2, len);
    assert_string_equal(buf, text);
    free(buf);

    /* token_to_bytes follows the same rules */
    char small[1];
    size_t blen = 0;
    int32_t tok = ids[1];
    assert_int_equal(pangu_token_to_bytes(g_model, tok, NULL, 0, &blen), PANGU_ERR_BUFFER_TOO_SMALL);
    assert_true(blen > 0);
    assert_int_equal(pangu_token_to_bytes(g_model, tok, small, 1, &blen), PANGU_ERR_BUFFER_TOO_SMALL);
    char *tb = (char *)malloc(blen + 1);
    assert_non_null(tb);
    size_t blen2 = 0;
    assert_int_equal(pangu_token_to_bytes(g_model, tok, tb, blen + 1, &blen2), PANGU_OK);
    assert_int_equal(blen2, blen);
    assert_int_equal(tb[blen], 0);
    free(tb);
}

static void test_buffer_too_small_get_tokens(void **state) {
    (void)state;
    pangu_session *s = new_session(64);
    size_t n = 99;
    assert_int_equal(pangu_session_get_tokens(s, NULL, 0, &n), PANGU_OK); /* empty context fits anywhere */
    assert_int_equal(n, 0);
    int32_t ids[32];
    const size_t k = tokenize("床前明月光，疑是地上霜。", ids, 32);
    assert_int_equal(pangu_session_eval(s, ids, k, NULL), PANGU_OK);
    assert_int_equal(pangu_session_get_tokens(s, NULL, 0, &n), PANGU_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(n, k);
    int32_t got[32];
    assert_int_equal(pangu_session_get_tokens(s, got, k - 1, &n), PANGU_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(n, k);
    assert_true(strlen(pangu_session_last_error(s)) > 0);
    assert_int_equal(pangu_session_get_tokens(s, got, n, &n), PANGU_OK);
    assert_int_equal(n, k);
    assert_memory_equal(got, ids, k * sizeof(int32_t));
    pangu_session_free(s);
}

static void test_chat_template_unsupported(void **state) {
    (void)state;
    pangu_chat_message msgs[2] = {{"system", "你是助手"}, {"user", "你好"}};
    char buf[256];
    size_t len = 99;
    assert_int_equal(pangu_apply_chat_template(g_model, msgs, 2, 1, buf, sizeof buf, &len), PANGU_ERR_UNSUPPORTED);
    assert_int_equal(len, 99);
    assert_int_equal(pangu_apply_chat_template(g_model, msgs, 2, 1, NULL, 0, &len), PANGU_ERR_UNSUPPORTED);
    expect_contains(pangu_last_error(), "unused9");
    int32_t stop[2] = {-7, -7};
    size_t n = 99;
    assert_int_equal(pangu_chat_stop_tokens(g_model, stop, 2, &n), PANGU_ERR_UNSUPPORTED);
    expect_contains(pangu_last_error(), "unused9");
    assert_int_equal(stop[0], -7);
    assert_int_equal(pangu_chat_stop_tokens(NULL, stop, 2, &n), INV);
    assert_int_equal(pangu_chat_stop_tokens(g_model, NULL, 2, &n), INV);
    assert_int_equal(pangu_chat_stop_tokens(g_model, stop, 2, NULL), INV);
}

/* ---- a model whose vocabulary holds the chat tokens ---- */

/* The bundled model's vocabulary lacks [unused9]/[unused10]. To exercise the template, a temporary copy of
 * the model gets a tokenizer.model in which two ordinary pieces of 9 and 10 bytes are renamed in place to
 * "[unused9]" and "[unused10]" (same lengths, so the protobuf framing is unchanged). */

typedef struct {
    char dir[64];
    pangu_model *model;
} chat_fixture;

static int chat_setup(void **state) {
    chat_fixture *fx = (chat_fixture *)calloc(1, sizeof *fx);
    if (!fx) return -1;
    strcpy(fx->dir, "/tmp/pangu_capi_chat_XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int chat_teardown(void **state) {
    chat_fixture *fx = (chat_fixture *)*state;
    pangu_model_free(fx->model);
    remove_dir(fx->dir);
    free(fx);
    return 0;
}

static void test_chat_template_buffers(void **state) {
    chat_fixture *fx = (chat_fixture *)*state;
    make_chat_model_dir(fx->dir, 1, NULL, NULL);

    pangu_status st = pangu_model_load(fx->dir, NULL, &fx->model);
    if (st != PANGU_OK) fail_msg("load with chat tokens: %s", pangu_last_error());
    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    assert_int_equal(pangu_model_get_info(fx->model, &info), PANGU_OK);
    assert_int_equal(info.has_chat_template, 1);

    pangu_chat_message msgs[1] = {{"user", "你好"}};
    const char *want = "[unused9]系统：[unused10][unused9]用户：你好[unused10][unused9]助手：";
    size_t len = 0;
    assert_int_equal(pangu_apply_chat_template(fx->model, msgs, 1, 1, NULL, 0, &len), PANGU_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(len, strlen(want));
    char *buf = (char *)malloc(len + 1);
    assert_non_null(buf);
    size_t len2 = 0;
    assert_int_equal(pangu_apply_chat_template(fx->model, msgs, 1, 1, buf, len, &len2), PANGU_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(len2, len);
    assert_int_equal(pangu_apply_chat_template(fx->model, msgs, 1, 1, buf, len + 1, &len2), PANGU_OK);
    assert_int_equal(len2, len);
    assert_string_equal(buf, want);
    free(buf);

    /* Chinese role names, an explicit system message, no generation prompt */
    pangu_chat_message conv[3] = {{"系统", "S"}, {"user", "Q"}, {"助手", "A"}};
    char out[512];
    assert_int_equal(pangu_apply_chat_template(fx->model, conv, 3, 0, out, sizeof out, &len), PANGU_OK);
    assert_string_equal(out, "[unused9]系统：S[unused10][unused9]用户：Q[unused10][unused9]助手：A[unused10]");

    /* argument errors */
    /* The reply's stop tokens are the template's two markers, each one token (the fixture's tokenizer.model types
     * them as ordinary pieces; its tokenizer_config.json declares them special), which render as nothing. */
    int32_t stop[2] = {-1, -1}, marks[8] = {-2, -2};
    size_t n_stop = 0, n_marks = 0, n_bytes = 9;
    char piece[32];
    assert_int_equal(pangu_chat_stop_tokens(fx->model, stop, 1, &n_stop), PANGU_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(n_stop, 2);
    assert_int_equal(pangu_chat_stop_tokens(fx->model, NULL, 0, &n_stop), PANGU_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(pangu_chat_stop_tokens(fx->model, stop, 2, &n_stop), PANGU_OK);
    assert_int_equal(n_stop, 2);
    assert_int_equal(pangu_tokenize(fx->model, "[unused10][unused9]", 19, 0, 1, marks, 8, &n_marks), PANGU_OK);
    assert_int_equal(n_marks, 2);
    assert_memory_equal(stop, marks, sizeof stop);
    assert_int_equal(pangu_token_to_bytes(fx->model, stop[0], piece, sizeof piece, &n_bytes), PANGU_OK);
    assert_int_equal(n_bytes, 0);

    pangu_chat_message bad_role[1] = {{"narrator", "x"}};
    assert_int_equal(pangu_apply_chat_template(fx->model, bad_role, 1, 1, out, sizeof out, &len), INV);
    expect_contains(pangu_last_error(), "narrator");
    pangu_chat_message null_content[1] = {{"user", NULL}};
    assert_int_equal(pangu_apply_chat_template(fx->model, null_content, 1, 1, out, sizeof out, &len), INV);
    pangu_chat_message bad_text[1] = {{"user", "\xff"}};
    assert_int_equal(pangu_apply_chat_template(fx->model, bad_text, 1, 1, out, sizeof out, &len),
                     PANGU_ERR_INVALID_UTF8);
}

/* ---------------------------------------------------------------------------------------------- */
/* where messages go                                                                              */
/* ---------------------------------------------------------------------------------------------- */

static void test_per_handle_errors(void **state) {
    (void)state;
    pangu_session *a = new_session(64), *b = new_session(64);
    const int32_t bad = 5000;
    assert_int_equal(pangu_session_eval(a, &bad, 1, NULL), PANGU_ERR_INVALID_TOKEN);
    const char *ea = pangu_session_last_error(a);
    expect_contains(ea, "5000");
    expect_contains(ea, "vocabulary");
    assert_string_equal(pangu_last_error(), ea);
    assert_string_equal(pangu_session_last_error(b), ""); /* another session is not affected */

    /* a successful call does not clear the messages */
    const int32_t good = 300;
    assert_int_equal(pangu_session_eval(a, &good, 1, NULL), PANGU_OK);
    expect_contains(pangu_session_last_error(a), "5000");
    expect_contains(pangu_last_error(), "5000");

    /* a later failure replaces them */
    assert_int_equal(pangu_session_truncate(a, 7), INV);
    expect_contains(pangu_session_last_error(a), "n_keep");
    expect_contains(pangu_last_error(), "n_keep");

    /* the model's slot holds the model's own failures */
    int32_t ids[4];
    size_t n = 0;
    assert_int_equal(pangu_tokenize(g_model, "\xfe", 1, 0, 0, ids, 4, &n), PANGU_ERR_INVALID_UTF8);
    expect_contains(pangu_model_last_error(g_model), "UTF-8");
    expect_contains(pangu_last_error(), "UTF-8");
    expect_contains(pangu_session_last_error(a), "n_keep");
    pangu_session_free(a);
    pangu_session_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_last_error_initially_empty),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_status_strings),
        cmocka_unit_test(test_null_model_functions),
        cmocka_unit_test(test_null_tokenizer_functions),
        cmocka_unit_test(test_null_session_functions),
        cmocka_unit_test(test_struct_size_model_params),
        cmocka_unit_test(test_struct_size_session_params),
        cmocka_unit_test(test_session_params_init_sized),
        cmocka_unit_test(test_kv_type),
        cmocka_unit_test(test_struct_size_sampling_params),
        cmocka_unit_test(test_struct_size_model_info),
        cmocka_unit_test(test_struct_size_generate_result),
        cmocka_unit_test(test_invalid_session_params),
        cmocka_unit_test(test_session_n_ctx_one),
        cmocka_unit_test(test_invalid_sampling_params),
        cmocka_unit_test(test_invalid_stop_strings),
        cmocka_unit_test(test_invalid_token_ids),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_context_full),
        cmocka_unit_test(test_buffer_too_small_tokenize),
        cmocka_unit_test(test_buffer_too_small_detokenize),
        cmocka_unit_test(test_buffer_too_small_get_tokens),
        cmocka_unit_test(test_chat_template_unsupported),
        cmocka_unit_test_setup_teardown(test_chat_template_buffers, chat_setup, chat_teardown),
        cmocka_unit_test(test_per_handle_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
