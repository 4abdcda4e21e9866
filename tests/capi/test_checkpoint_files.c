/* The files around the weights that openPangu-Embedded checkpoints ship: tokenizer_config.json's
 * added_tokens_decoder and special_tokens_map.json (special tokens whatever tokenizer.model says),
 * generation_config.json (EOS ids, sampling defaults), and their bad inputs. Each test builds a model directory
 * from the bundled model whose tokenizer.model holds [unused9] and [unused10] as ORDINARY pieces. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "model_dir.h"
#include "pangu/pangu.h"

typedef struct {
    char dir[64];
    pangu_model *model;
    int32_t id9, id10; /* the two renamed pieces */
} fixture;

static int setup(void **state) {
    fixture *fx = (fixture *)calloc(1, sizeof *fx);
    if (!fx) return -1;
    strcpy(fx->dir, "/tmp/pangu_capi_ckpt_XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    make_chat_model_dir(fx->dir, 0, &fx->id9, &fx->id10);
    *state = fx;
    return 0;
}

static int teardown(void **state) {
    fixture *fx = (fixture *)*state;
    pangu_model_free(fx->model);
    remove_dir(fx->dir);
    free(fx);
    return 0;
}

/* tokenizer_config.json declaring the two markers special, with `extra` spliced into added_tokens_decoder. */
static void write_tokenizer_config(fixture *fx, const char *extra) {
    char text[2048];
    snprintf(text, sizeof text,
             "{\"add_bos_token\": true, \"add_eos_token\": false, \"eos_token\": \"[unused10]\",\n"
             " \"added_tokens_decoder\": {\"%d\": {\"content\": \"[unused9]\", \"special\": true, \"lstrip\": false},\n"
             "   \"%d\": {\"content\": \"[unused10]\", \"special\": true}%s}}\n",
             fx->id9, fx->id10, extra);
    write_text(fx->dir, "tokenizer_config.json", text);
}

static void load(fixture *fx) {
    pangu_model_free(fx->model);
    fx->model = NULL;
    if (pangu_model_load(fx->dir, NULL, &fx->model) != PANGU_OK) fail_msg("load: %s", pangu_last_error());
}

/* Loading fails with `status`, and the message names `what`. */
static void expect_load_error(fixture *fx, pangu_status status, const char *what) {
    pangu_model *m = NULL;
    const pangu_status st = pangu_model_load(fx->dir, NULL, &m);
    if (st != status) fail_msg("expected %s, got %s: %s", pangu_status_string(status), pangu_status_string(st),
                               pangu_last_error());
    assert_null(m);
    if (!strstr(pangu_last_error(), what)) fail_msg("\"%s\" does not name \"%s\"", pangu_last_error(), what);
}

static size_t tokenize(fixture *fx, const char *text, int parse_special, int32_t *ids, size_t cap) {
    size_t n = 0;
    assert_int_equal(pangu_tokenize(fx->model, text, strlen(text), 0, parse_special, ids, cap, &n), PANGU_OK);
    return n;
}

static int count(const int32_t *ids, size_t n, int32_t id) {
    int c = 0;
    for (size_t i = 0; i < n; ++i) c += ids[i] == id;
    return c;
}

/* Ordinary pieces: no chat template, since its markers would tokenize into characters. */
static void test_undeclared_markers_are_text(void **state) {
    fixture *fx = (fixture *)*state;
    load(fx);
    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    assert_int_equal(pangu_model_get_info(fx->model, &info), PANGU_OK);
    assert_int_equal(info.has_chat_template, 0);
    assert_int_equal(info.chat_end_token, -1);
    int32_t ids[128];
    size_t n = 0;
    assert_int_equal(pangu_chat_stop_tokens(fx->model, ids, 2, &n), PANGU_ERR_UNSUPPORTED);
    n = tokenize(fx, "[unused9]用户：你好[unused10]", 1, ids, 128);
    assert_int_equal(count(ids, n, fx->id9) + count(ids, n, fx->id10), 0);
}

/* Declared special: one token each with parse_special, never from plain text, nothing when rendered. */
static void test_declared_special_tokens(void **state) {
    fixture *fx = (fixture *)*state;
    write_tokenizer_config(fx, "");
    load(fx);
    const char *chat = "[unused9]用户：你好[unused10][unused9]助手：";
    int32_t ids[128];
    size_t n = tokenize(fx, chat, 1, ids, 128);
    assert_int_equal(ids[0], fx->id9);
    assert_int_equal(count(ids, n, fx->id9), 2);
    assert_int_equal(count(ids, n, fx->id10), 1);
    n = tokenize(fx, chat, 0, ids, 128); /* plain text never yields a special token */
    assert_int_equal(count(ids, n, fx->id9) + count(ids, n, fx->id10), 0);

    char buf[256];
    size_t len = 99;
    const int32_t marks[2] = {fx->id9, fx->id10};
    assert_int_equal(pangu_detokenize(fx->model, marks, 2, buf, sizeof buf, &len), PANGU_OK);
    assert_int_equal(len, 0);
    assert_int_equal(pangu_token_to_bytes(fx->model, fx->id10, buf, sizeof buf, &len), PANGU_OK);
    assert_int_equal(len, 0);
    n = tokenize(fx, chat, 1, ids, 128);
    assert_int_equal(pangu_detokenize(fx->model, ids, n, buf, sizeof buf, &len), PANGU_OK);
    assert_null(strstr(buf, "unused"));
    assert_non_null(strstr(buf, "用户：你好"));

    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    assert_int_equal(pangu_model_get_info(fx->model, &info), PANGU_OK);
    assert_int_equal(info.chat_end_token, fx->id10);
    assert_int_equal(info.has_chat_template, 1);
    assert_int_equal(info.has_generation_config, 0);
}

/* Greedy continuation of a prompt: the tokens and what the callback saw of each. */
typedef struct {
    int32_t tok[8];
    size_t len[8];
    int n;
} seen;

static int on_token(void *user, int32_t token, const char *piece, size_t len) {
    (void)piece;
    seen *s = (seen *)user;
    if (s->n < 8) {
        s->tok[s->n] = token;
        s->len[s->n++] = len;
    }
    return 0;
}

static pangu_generate_result greedy(fixture *fx, int max_tokens, seen *s) {
    pangu_session *sess = NULL;
    assert_int_equal(pangu_session_create(fx->model, NULL, &sess), PANGU_OK);
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.max_new_tokens = max_tokens;
    pangu_generate_result r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    memset(s, 0, sizeof *s);
    assert_int_equal(pangu_session_generate(sess, "def fibonacci(n):\n", &sp, on_token, s, &r), PANGU_OK);
    pangu_session_free(sess);
    return r;
}

/* A token declared special streams as nothing; an id listed in generation_config.json ends generation. */
static void test_special_streams_nothing_and_generation_eos_stops(void **state) {
    fixture *fx = (fixture *)*state;
    load(fx);
    seen plain;
    pangu_generate_result r = greedy(fx, 3, &plain);
    assert_int_equal(plain.n, 3);
    assert_int_equal(r.stop_reason, PANGU_STOP_MAX_TOKENS);
    char piece[64], extra[256];
    size_t len = 0;
    assert_int_equal(pangu_token_to_bytes(fx->model, plain.tok[0], piece, sizeof piece, &len), PANGU_OK);
    assert_true(len > 0); /* plain text before it is declared special */

    /* The piece of the first generated token, as tokenizer.model spells it (spaces as U+2581). */
    char spelled[128] = "";
    for (size_t i = 0; i < len; ++i) strcat(spelled, piece[i] == ' ' ? "\xE2\x96\x81" : (char[2]){piece[i], 0});
    snprintf(extra, sizeof extra, ", \"%d\": {\"content\": \"%s\", \"special\": true}", plain.tok[0], spelled);
    write_tokenizer_config(fx, extra);
    char gen[128];
    snprintf(gen, sizeof gen, "{\"eos_token_id\": [%d, %d], \"transformers_version\": \"4.53\"}", fx->id10, plain.tok[1]);
    write_text(fx->dir, "generation_config.json", gen);
    load(fx);
    seen now;
    r = greedy(fx, 3, &now);
    assert_int_equal(now.n, 2);
    assert_int_equal(now.tok[0], plain.tok[0]); /* same tokens: only their rendering and the stop changed */
    assert_int_equal(now.tok[1], plain.tok[1]);
    assert_int_equal(now.len[0], 0);
    assert_int_equal(r.stop_reason, PANGU_STOP_EOS);
    assert_int_equal(r.n_generated, 2);
}

/* generation_config.json's sampling defaults, through pangu_model_get_sampling_defaults. */
static void test_sampling_defaults(void **state) {
    fixture *fx = (fixture *)*state;
    load(fx);
    pangu_sampling_params init, sp;
    pangu_sampling_params_init(&init);
    pangu_sampling_params_init(&sp);
    assert_int_equal(pangu_model_get_sampling_defaults(fx->model, &sp), PANGU_OK);
    assert_memory_equal(&sp, &init, sizeof sp); /* no generation_config.json: init's defaults */

    write_text(fx->dir, "generation_config.json",
               "{\"do_sample\": true, \"temperature\": 1.0, \"top_k\": 0, \"top_p\": 0.8, \"eos_token_id\": 2,"
               " \"repetition_penalty\": 1.1, \"max_new_tokens\": 77, \"pad_token_id\": 0}");
    load(fx);
    assert_int_equal(pangu_model_get_sampling_defaults(fx->model, &sp), PANGU_OK);
    assert_true(sp.temperature == 1.0f && sp.top_k == 0 && sp.top_p == 0.8f && sp.max_new_tokens == 77);
    assert_true(sp.repetition_penalty == 1.1f && sp.min_p == init.min_p && sp.seed == init.seed);
    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    assert_int_equal(pangu_model_get_info(fx->model, &info), PANGU_OK);
    assert_int_equal(info.has_generation_config, 1);

    write_text(fx->dir, "generation_config.json", "{\"do_sample\": false, \"temperature\": 0.7}");
    load(fx);
    assert_int_equal(pangu_model_get_sampling_defaults(fx->model, &sp), PANGU_OK);
    assert_true(sp.temperature == 0.0f); /* not sampling: greedy */

    assert_int_equal(pangu_model_get_sampling_defaults(NULL, &sp), PANGU_ERR_INVALID_ARGUMENT);
    assert_int_equal(pangu_model_get_sampling_defaults(fx->model, NULL), PANGU_ERR_INVALID_ARGUMENT);
    sp.struct_size = 8;
    assert_int_equal(pangu_model_get_sampling_defaults(fx->model, &sp), PANGU_ERR_STRUCT_SIZE);
}

static void test_function_role(void **state) {
    fixture *fx = (fixture *)*state;
    write_tokenizer_config(fx, "");
    load(fx);
    pangu_chat_message msgs[2] = {{"user", "天气"}, {"function", "晴"}};
    char out[512];
    size_t len = 0;
    assert_int_equal(pangu_apply_chat_template(fx->model, msgs, 2, 1, out, sizeof out, &len), PANGU_OK);
    assert_non_null(strstr(out, "[unused9]方法：晴[unused10]"));
    msgs[1].role = "方法";
    assert_int_equal(pangu_apply_chat_template(fx->model, msgs, 2, 1, out, sizeof out, &len), PANGU_OK);
    assert_non_null(strstr(out, "[unused9]方法：晴[unused10]"));
}

/* config.json's eos_token_id may be a list; every id in it stops. */
static void test_config_eos_list(void **state) {
    fixture *fx = (fixture *)*state;
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", fx->dir);
    size_t n = 0;
    char *cfg = read_all(path, &n);
    char *at = strstr(cfg, "\"eos_token_id\"");
    assert_non_null(at);
    char *end = strpbrk(at + 14, ",}");
    char text[8192];
    snprintf(text, sizeof text, "%.*s\"eos_token_id\": [2, %d]%s", (int)(at - cfg), cfg, fx->id10, end);
    write_text(fx->dir, "config.json", text);
    load(fx);
    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    assert_int_equal(pangu_model_get_info(fx->model, &info), PANGU_OK);
    assert_int_equal(info.eos_token, 2);
    snprintf(text, sizeof text, "%.*s\"eos_token_id\": [2, \"x\"]%s", (int)(at - cfg), cfg, end);
    write_text(fx->dir, "config.json", text);
    expect_load_error(fx, PANGU_ERR_CONFIG, "eos_token_id[1]");
    write_all(path, cfg, n);
    free(cfg);
}

/* Every malformed or contradicting entry is refused with the status for it, naming the entry. */
static void test_bad_tokenizer_files(void **state) {
    fixture *fx = (fixture *)*state;
    char extra[256];
    struct {
        const char *extra, *what;
    } cases[] = {
        {", \"999999\": {\"content\": \"x\", \"special\": true}", "entry \"999999\": id 999999 is beyond"},
        {", \"12\": {\"content\": 12}", "entry \"12\": \"content\" must be a non-empty string"},
        {", \"12\": {\"content\": \"\"}", "entry \"12\": \"content\" must be a non-empty string"},
        {", \"12\": [1]", "entry \"12\" must be an object"},
        {", \"abc\": {\"content\": \"x\"}", "entry \"abc\": the key must be a token id"},
        {", \"-1\": {\"content\": \"x\"}", "entry \"-1\": the key must be a token id"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        write_tokenizer_config(fx, cases[i].extra);
        expect_load_error(fx, PANGU_ERR_TOKENIZER, cases[i].what);
    }
    snprintf(extra, sizeof extra, ", \"%d\": {\"content\": \"[unused10]\", \"special\": \"yes\"}", fx->id10 + 1);
    write_tokenizer_config(fx, extra);
    expect_load_error(fx, PANGU_ERR_TOKENIZER, "\"special\" must be true or false");
    /* content that disagrees with the piece at that id */
    char text[512];
    snprintf(text, sizeof text, "{\"added_tokens_decoder\": {\"%d\": {\"content\": \"[unused10]\", \"special\": true}}}",
             fx->id9);
    write_text(fx->dir, "tokenizer_config.json", text);
    expect_load_error(fx, PANGU_ERR_TOKENIZER, "disagrees with piece");
    write_text(fx->dir, "tokenizer_config.json", "{\"added_tokens_decoder\": [1, 2]}");
    expect_load_error(fx, PANGU_ERR_TOKENIZER, "\"added_tokens_decoder\" must be an object");
    write_text(fx->dir, "tokenizer_config.json", "{\"eos_token\": {\"content\": 3}}");
    expect_load_error(fx, PANGU_ERR_TOKENIZER, "\"eos_token\"");
    write_text(fx->dir, "tokenizer_config.json", "{\"eos_token\": \"[no such piece]\"}");
    expect_load_error(fx, PANGU_ERR_TOKENIZER, "is not a piece");
    write_text(fx->dir, "tokenizer_config.json", "{\"added_tokens_decoder\": {");
    expect_load_error(fx, PANGU_ERR_CONFIG, "tokenizer_config.json");

    write_tokenizer_config(fx, "");
    write_text(fx->dir, "special_tokens_map.json", "{\"additional_special_tokens\": [\"[unused9]\", \"[missing]\"]}");
    expect_load_error(fx, PANGU_ERR_TOKENIZER, "additional_special_tokens[1]");
    write_text(fx->dir, "special_tokens_map.json", "{\"bos_token\": 1}");
    expect_load_error(fx, PANGU_ERR_TOKENIZER, "special_tokens_map.json: \"bos_token\"");
    write_text(fx->dir, "special_tokens_map.json", "[]");
    expect_load_error(fx, PANGU_ERR_CONFIG, "special_tokens_map.json");
    write_text(fx->dir, "special_tokens_map.json", "{\"eos_token\": {\"content\": \"[unused10]\"}, \"pad_token\": null}");
    load(fx);
}

static void test_bad_generation_config(void **state) {
    fixture *fx = (fixture *)*state;
    struct {
        const char *text, *what;
    } cases[] = {
        {"{\"top_p\": 1.5}", "\"top_p\""},
        {"{\"top_p\": 0}", "\"top_p\""},
        {"{\"temperature\": \"hot\"}", "\"temperature\" must be a number"},
        {"{\"temperature\": -1}", "\"temperature\""},
        {"{\"top_k\": -1}", "\"top_k\""},
        {"{\"top_k\": 2.5}", "\"top_k\" must be an integer"},
        {"{\"do_sample\": 1}", "\"do_sample\" must be true or false"},
        {"{\"repetition_penalty\": 0}", "\"repetition_penalty\""},
        {"{\"max_new_tokens\": -5}", "\"max_new_tokens\""},
        {"{\"eos_token_id\": 99999}", "\"eos_token_id\""},
        {"{\"eos_token_id\": [1, \"x\"]}", "eos_token_id[1]"},
        {"{\"eos_token_id\": {}}", "\"eos_token_id\" must be an integer"},
        {"{\"temperature\": 1.0", "generation_config.json: invalid JSON"},
        {"[1, 2]", "generation_config.json: top level must be a JSON object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        write_text(fx->dir, "generation_config.json", cases[i].text);
        expect_load_error(fx, PANGU_ERR_CONFIG, cases[i].what);
    }
    /* Past the size limit for JSON files (64 MiB): refused before it is read (a sparse file). */
    char path[512];
    snprintf(path, sizeof path, "%s/generation_config.json", fx->dir);
    write_text(fx->dir, "generation_config.json", "{}");
    assert_int_equal(truncate(path, (off_t)65 << 20), 0);
    expect_load_error(fx, PANGU_ERR_CONFIG, "generation_config.json");
    unlink(path);
    load(fx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_undeclared_markers_are_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_declared_special_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_special_streams_nothing_and_generation_eos_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sampling_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_function_role, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_eos_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_tokenizer_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_generation_config, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
