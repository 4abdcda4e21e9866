/* Loading damaged checkpoints: every way a model directory can be wrong fails with its exact status and a
 * message naming the file (and the tensor where one is at fault); a sharded checkpoint loads and computes
 * exactly what the single file does.
 *
 * Each test copies the bundled model into a fresh mkdtemp directory (removed by the teardown, even when the
 * test fails) and damages the copy. A safetensors file is rewritten as: 8-byte little-endian header length
 * N, N bytes of JSON header, then the data section unchanged; the header is edited as text. */
#define _POSIX_C_SOURCE 200809L

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "model_dir.h"
#include "pangu/pangu.h"

/* ---------------------------------------------------------------------------------------------- */
/* files                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

typedef struct {
    char dir[256];
} fixture;

static void path_in(char *out, size_t cap, const char *dir, const char *name) {
    int n = snprintf(out, cap, "%s/%s", dir, name);
    assert_true(n > 0 && (size_t)n < cap);
}

static void copy_file(const char *src_dir, const char *dst_dir, const char *name) {
    char src[512], dst[512];
    size_t n = 0;
    path_in(src, sizeof src, src_dir, name);
    path_in(dst, sizeof dst, dst_dir, name);
    char *data = read_all(src, &n);
    write_all(dst, data, n);
    free(data);
}

static int fixture_setup(void **state) {
    fixture *fx = (fixture *)calloc(1, sizeof *fx);
    if (!fx) return -1;
    strcpy(fx->dir, "/tmp/pangu_capi_load_XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    copy_file(PANGU_MODEL_DIR, fx->dir, "config.json");
    copy_file(PANGU_MODEL_DIR, fx->dir, "model.safetensors");
    copy_file(PANGU_MODEL_DIR, fx->dir, "tokenizer.model");
    copy_file(PANGU_MODEL_DIR, fx->dir, "tokenizer_config.json");
    *state = fx;
    return 0;
}

static int fixture_teardown(void **state) {
    fixture *fx = (fixture *)*state;
    if (fx) {
        remove_dir(fx->dir);
        free(fx);
    }
    return 0;
}

/* A copy of `s` with the first occurrence of `from` replaced by `to`; `from` must occur. */
static char *replace1(const char *s, const char *from, const char *to) {
    const char *hit = strstr(s, from);
    if (!hit) fail_msg("fixture edit: \"%s\" not found", from);
    const size_t a = (size_t)(hit - s), lf = strlen(from), lt = strlen(to), ls = strlen(s);
    char *r = (char *)malloc(ls - lf + lt + 1);
    assert_non_null(r);
    memcpy(r, s, a);
    memcpy(r + a, to, lt);
    memcpy(r + a + lt, hit + lf, ls - a - lf + 1);
    return r;
}

/* Rewrites <dir>/<name> (a text file of the bundled model) with one replacement. */
static void edit_text_file(const char *dir, const char *name, const char *from, const char *to) {
    char p[512];
    path_in(p, sizeof p, dir, name);
    char *orig = read_all(p, NULL);
    char *edited = replace1(orig, from, to);
    write_all(p, edited, strlen(edited));
    free(orig);
    free(edited);
}

/* ---------------------------------------------------------------------------------------------- */
/* safetensors                                                                                    */
/* ---------------------------------------------------------------------------------------------- */

typedef struct {
    char *header; /* NUL-terminated JSON text (N bytes, trailing padding included) */
    size_t header_len;
    unsigned char *data; /* the data section */
    size_t data_len;
    char *raw; /* whole file */
    size_t raw_len;
} st_file;

static void st_load(const char *path, st_file *f) {
    memset(f, 0, sizeof *f);
    f->raw = read_all(path, &f->raw_len);
    assert_true(f->raw_len >= 8);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | (unsigned char)f->raw[i];
    assert_true(n <= f->raw_len - 8);
    f->header_len = (size_t)n;
    f->header = (char *)malloc(f->header_len + 1);
    assert_non_null(f->header);
    memcpy(f->header, f->raw + 8, f->header_len);
    f->header[f->header_len] = 0;
    f->data = (unsigned char *)f->raw + 8 + f->header_len;
    f->data_len = f->raw_len - 8 - f->header_len;
}

static void st_free(st_file *f) {
    free(f->header);
    free(f->raw);
    memset(f, 0, sizeof *f);
}

static void put_u64le(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; ++i) p[i] = (unsigned char)(v >> (8 * i));
}

/* Writes a safetensors file: the header padded with spaces to a multiple of 8 bytes (as the format allows,
 * so that the data section stays aligned), then `data`. */
static void st_save(const char *path, const char *header, const void *data, size_t data_len) {
    const size_t hl = strlen(header), padded = (hl + 7) / 8 * 8;
    unsigned char *buf = (unsigned char *)malloc(8 + padded + data_len);
    assert_non_null(buf);
    put_u64le(buf, padded);
    memcpy(buf + 8, header, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    if (data_len) memcpy(buf + 8 + padded, data, data_len);
    write_all(path, buf, 8 + padded + data_len);
    free(buf);
}

/* The fixture's model.safetensors with one textual replacement in its header; data unchanged. */
static void edit_header(const char *dir, const char *from, const char *to) {
    char p[512];
    st_file f;
    path_in(p, sizeof p, dir, "model.safetensors");
    st_load(p, &f);
    char *h = replace1(f.header, from, to);
    st_save(p, h, f.data, f.data_len);
    free(h);
    st_free(&f);
}

/* The tensors listed in a header, parsed by a minimal scanner for the format's fixed structure. */
typedef struct {
    char name[128];
    char dtype[16];
    int64_t shape[4];
    int ndim;
    uint64_t begin, end;
} st_tensor;

static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') ++p;
    return p;
}

static const char *read_str(const char *p, char *out, size_t cap) {
    p = skip_ws(p);
    assert_int_equal(*p, '"');
    ++p;
    size_t n = 0;
    while (*p && *p != '"') {
        assert_true(n + 1 < cap);
        out[n++] = *p++;
    }
    assert_int_equal(*p, '"');
    out[n] = 0;
    return p + 1;
}

static const char *expect_char(const char *p, char c) {
    p = skip_ws(p);
    if (*p != c) fail_msg("header scanner: expected '%c' at \"%.20s\"", c, p);
    return p + 1;
}

static const char *read_u64_list(const char *p, uint64_t *v, int max, int *n) {
    p = expect_char(p, '[');
    *n = 0;
    p = skip_ws(p);
    if (*p == ']') return p + 1;
    for (;;) {
        char *end;
        assert_true(*n < max);
        v[(*n)++] = strtoull(skip_ws(p), &end, 10);
        p = skip_ws(end);
        if (*p == ']') return p + 1;
        p = expect_char(p, ',');
    }
}

static int st_list(const char *header, st_tensor *out, int max) {
    int count = 0;
    const char *p = expect_char(header, '{');
    for (;;) {
        char key[128];
        p = read_str(p, key, sizeof key);
        p = expect_char(p, ':');
        p = expect_char(p, '{');
        if (strncmp(key, "__", 2) == 0) {
            while (*p && *p != '}') ++p;
            assert_int_equal(*p, '}');
            ++p;
        } else {
            assert_true(count < max);
            st_tensor *t = &out[count++];
            memset(t, 0, sizeof *t);
            strcpy(t->name, key);
            for (;;) {
                char field[32];
                p = read_str(p, field, sizeof field);
                p = expect_char(p, ':');
                if (!strcmp(field, "dtype")) {
                    p = read_str(p, t->dtype, sizeof t->dtype);
                } else if (!strcmp(field, "shape")) {
                    uint64_t v[4];
                    p = read_u64_list(p, v, 4, &t->ndim);
                    for (int i = 0; i < t->ndim; ++i) t->shape[i] = (int64_t)v[i];
                } else if (!strcmp(field, "data_offsets")) {
                    uint64_t v[2];
                    int n;
                    p = read_u64_list(p, v, 2, &n);
                    assert_int_equal(n, 2);
                    t->begin = v[0];
                    t->end = v[1];
                } else {
                    fail_msg("header scanner: unexpected field %s", field);
                }
                p = skip_ws(p);
                if (*p == '}') {
                    ++p;
                    break;
                }
                p = expect_char(p, ',');
            }
        }
        p = skip_ws(p);
        if (*p == '}') break;
        p = expect_char(p, ',');
    }
    return count;
}

static int cmp_begin(const void *a, const void *b) {
    const st_tensor *x = (const st_tensor *)a, *y = (const st_tensor *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

#define MAX_TENSORS 256

/* The bundled model's tensors sorted by data offset, and the size of its data section. */
static int bundled_tensors(st_tensor *t, size_t *data_len) {
    char p[512];
    st_file f;
    path_in(p, sizeof p, PANGU_MODEL_DIR, "model.safetensors");
    st_load(p, &f);
    int n = st_list(f.header, t, MAX_TENSORS);
    qsort(t, (size_t)n, sizeof *t, cmp_begin);
    if (data_len) *data_len = f.data_len;
    st_free(&f);
    assert_true(n > 10);
    return n;
}

static const st_tensor *find_tensor(const st_tensor *t, int n, const char *name) {
    for (int i = 0; i < n; ++i)
        if (!strcmp(t[i].name, name)) return &t[i];
    fail_msg("tensor %s not in the bundled model", name);
    return NULL;
}

/* ---------------------------------------------------------------------------------------------- */
/* expectations                                                                                   */
/* ---------------------------------------------------------------------------------------------- */

/* Loading `dir` fails with `want`, *out is NULL, and pangu_last_error() contains every non-NULL needle. */
static void expect_load(const char *dir, pangu_status want, const char *needle1, const char *needle2) {
    int dummy = 0;
    pangu_model *m = (pangu_model *)(void *)&dummy;
    pangu_status st = pangu_model_load(dir, NULL, &m);
    const char *msg = pangu_last_error();
    if (st != want)
        fail_msg("load %s: got %d (%s), want %d (%s); message: %s", dir, st, pangu_status_string(st), want,
                 pangu_status_string(want), msg);
    assert_null(m);
    assert_non_null(msg);
    if (getenv("PANGU_TEST_VERBOSE")) fprintf(stderr, "  [%s] %s\n", pangu_status_string(st), msg);
    if (needle1 && !strstr(msg, needle1)) fail_msg("message \"%s\" does not name \"%s\"", msg, needle1);
    if (needle2 && !strstr(msg, needle2)) fail_msg("message \"%s\" does not name \"%s\"", msg, needle2);
}

static void fx_path(const fixture *fx, const char *name, char *out, size_t cap) { path_in(out, cap, fx->dir, name); }

/* ---------------------------------------------------------------------------------------------- */
/* the fixture itself                                                                             */
/* ---------------------------------------------------------------------------------------------- */

/* The untouched copy loads, and a copy rewritten by st_save (re-padded header, same data) too: the helpers
 * themselves do not damage anything. */
static void test_fixture_copy_loads(void **state) {
    fixture *fx = (fixture *)*state;
    pangu_model *m = NULL;
    assert_int_equal(pangu_model_load(fx->dir, NULL, &m), PANGU_OK);
    pangu_model_free(m);
    edit_header(fx->dir, "\"format\"", "\"format\"");
    m = NULL;
    assert_int_equal(pangu_model_load(fx->dir, NULL, &m), PANGU_OK);
    assert_non_null(m);
    pangu_model_free(m);
}

/* ---------------------------------------------------------------------------------------------- */
/* directory and config.json                                                                      */
/* ---------------------------------------------------------------------------------------------- */

static void test_missing_directory(void **state) {
    fixture *fx = (fixture *)*state;
    char dir[512];
    fx_path(fx, "no-such-model", dir, sizeof dir);
    expect_load(dir, PANGU_ERR_FILE_NOT_FOUND, dir, NULL);
}

static void test_missing_config(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512];
    fx_path(fx, "config.json", p, sizeof p);
    assert_int_equal(unlink(p), 0);
    expect_load(fx->dir, PANGU_ERR_FILE_NOT_FOUND, p, NULL);
}

static void test_malformed_config(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512];
    fx_path(fx, "config.json", p, sizeof p);
    const char *cut = "{\"vocab_size\": 4096, \"hidden_size\": ";
    write_all(p, cut, strlen(cut));
    expect_load(fx->dir, PANGU_ERR_CONFIG, p, NULL);
    write_all(p, "[1, 2, 3]", 9); /* valid JSON, not an object */
    expect_load(fx->dir, PANGU_ERR_CONFIG, p, NULL);
    write_all(p, "", 0);
    expect_load(fx->dir, PANGU_ERR_CONFIG, p, NULL);
    /* nested deeper than jsoncpp's stack limit, which throws (was PANGU_ERR_INTERNAL) */
    char deep[1201];
    memset(deep, '[', sizeof deep);
    write_all(p, deep, sizeof deep);
    expect_load(fx->dir, PANGU_ERR_CONFIG, p, "stackLimit");
}

static void test_config_wrong_type(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512];
    fx_path(fx, "config.json", p, sizeof p);
    char *orig = read_all(p, NULL);
    static const char *const edits[][3] = {
        {"\"hidden_size\": 192", "\"hidden_size\": \"192\"", "hidden_size"},
        {"\"num_hidden_layers\": 6", "\"num_hidden_layers\": 6.5", "num_hidden_layers"},
        {"\"bias\": true", "\"bias\": 1", "bias"},
        {"\"rope_theta\": 16000000.0", "\"rope_theta\": \"big\"", "rope_theta"},
        {"\"hidden_act\": \"silu\"", "\"hidden_act\": 7", "hidden_act"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; ++i) {
        char *e = replace1(orig, edits[i][0], edits[i][1]);
        write_all(p, e, strlen(e));
        free(e);
        expect_load(fx->dir, PANGU_ERR_CONFIG, p, edits[i][2]);
    }
    /* quantization_config fields of the wrong kind (both were PANGU_ERR_INTERNAL: jsoncpp throws; found by
     * fuzz_config) */
    static const char *const quant[][2] = {
        {"\"bias\": true", "\"bias\": true, \"quantization_config\": {\"quant_method\": \"w8a16\", \"bits\": 7718197871008284672}"},
        {"\"bias\": true", "\"bias\": true, \"quantization_config\": {\"quant_method\": \"w8a16\", \"activation_dtype\": {}}"},
    };
    const pangu_status quant_status[] = {PANGU_ERR_UNSUPPORTED, PANGU_ERR_CONFIG};
    for (size_t i = 0; i < 2; ++i) {
        char *e = replace1(orig, quant[i][0], quant[i][1]);
        write_all(p, e, strlen(e));
        free(e);
        expect_load(fx->dir, quant_status[i], p, i == 0 ? "bits" : "activation_dtype");
    }
    free(orig);
}

static void test_config_out_of_range(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512];
    fx_path(fx, "config.json", p, sizeof p);
    char *orig = read_all(p, NULL);
    static const char *const edits[][3] = {
        {"\"num_hidden_layers\": 6", "\"num_hidden_layers\": 0", "num_hidden_layers"},
        {"\"hidden_size\": 192", "\"hidden_size\": -192", "hidden_size"},
        {"\"vocab_size\": 4096", "\"vocab_size\": 99999999999", "vocab_size"},
        /* beyond int64_t: converting it was undefined behaviour (found by fuzz_config) */
        {"\"vocab_size\": 4096", "\"vocab_size\": 4.9e22", "vocab_size"},
        {"\"vocab_size\": 4096", "\"vocab_size\": 18446744073709551615", "vocab_size"},
        {"\"vocab_size\": 4096", "\"vocab_size\": 4096.5", "vocab_size"},
        /* 6 heads are not a multiple of 4 KV heads */
        {"\"num_key_value_heads\": 2", "\"num_key_value_heads\": 4", "num_key_value_heads"},
        {"\"head_dim\": 32", "\"head_dim\": 33", "head_dim"},
        {"\"eos_token_id\": 2", "\"eos_token_id\": 4096", "eos"},
        {"\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": 0", "rms_norm_eps"},
        {"\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "hidden_act"},
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; ++i) {
        char *e = replace1(orig, edits[i][0], edits[i][1]);
        write_all(p, e, strlen(e));
        free(e);
        expect_load(fx->dir, PANGU_ERR_CONFIG, p, edits[i][2]);
    }
    /* head_dim absent: its default, hidden_size / num_attention_heads, must be valid too (it was accepted as 0:
     * found by fuzz_config) */
    char *e1 = replace1(orig, "\"head_dim\": 32,", "");
    char *e2 = replace1(e1, "\"hidden_size\": 192", "\"hidden_size\": 5");
    write_all(p, e2, strlen(e2));
    free(e1);
    free(e2);
    expect_load(fx->dir, PANGU_ERR_CONFIG, p, "head_dim");
    /* a required field missing */
    char *e = replace1(orig, "\"vocab_size\": 4096,", "");
    write_all(p, e, strlen(e));
    free(e);
    expect_load(fx->dir, PANGU_ERR_CONFIG, p, "vocab_size");
    free(orig);
}

/* ---------------------------------------------------------------------------------------------- */
/* model.safetensors                                                                              */
/* ---------------------------------------------------------------------------------------------- */

static void test_missing_safetensors(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512];
    fx_path(fx, "model.safetensors", p, sizeof p);
    assert_int_equal(unlink(p), 0);
    expect_load(fx->dir, PANGU_ERR_FILE_NOT_FOUND, p, NULL);
}

static void truncate_to(const char *path, size_t size) {
    size_t n = 0;
    char *d = read_all(path, &n);
    assert_true(size <= n);
    write_all(path, d, size);
    free(d);
}

static void test_truncated_half(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512];
    fx_path(fx, "model.safetensors", p, sizeof p);
    st_tensor t[MAX_TENSORS];
    size_t data_len = 0;
    const int n = bundled_tensors(t, &data_len);
    size_t size = 0;
    free(read_all(p, &size));
    truncate_to(p, size / 2);
    expect_load(fx->dir, PANGU_ERR_TENSOR_BOUNDS, p, NULL);
    /* the message names a tensor, and one that really lies past the cut */
    const size_t cut_data = size / 2 - (size - data_len);
    const char *msg = pangu_last_error();
    int named = 0;
    for (int i = 0; i < n; ++i) {
        char quoted[160];
        snprintf(quoted, sizeof quoted, "tensor %.127s:", t[i].name);
        if (strstr(msg, quoted)) {
            named = 1;
            if (t[i].end <= cut_data) fail_msg("message names %s, which lies before the cut: %s", t[i].name, msg);
        }
    }
    if (!named) fail_msg("message names no tensor: %s", msg);
}

static void test_truncated_in_header(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512];
    fx_path(fx, "model.safetensors", p, sizeof p);
    st_file f;
    st_load(p, &f);
    const size_t hl = f.header_len;
    st_free(&f);
    truncate_to(p, 8 + hl / 2); /* the length field is intact, the header cut in the middle */
    expect_load(fx->dir, PANGU_ERR_SAFETENSORS_HEADER, p, NULL);
    truncate_to(p, 5); /* not even the length field */
    expect_load(fx->dir, PANGU_ERR_SAFETENSORS_HEADER, p, NULL);
    truncate_to(p, 0);
    expect_load(fx->dir, PANGU_ERR_SAFETENSORS_HEADER, p, NULL);
}

static void test_header_length_past_file(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512];
    fx_path(fx, "model.safetensors", p, sizeof p);
    size_t size = 0;
    char *d = read_all(p, &size);
    const uint64_t bad[] = {(uint64_t)size, (uint64_t)size - 7, UINT64_C(1) << 40, UINT64_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        put_u64le((unsigned char *)d, bad[i]);
        write_all(p, d, size);
        expect_load(fx->dir, PANGU_ERR_SAFETENSORS_HEADER, p, NULL);
    }
    free(d);
}

static void test_header_not_json(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512];
    fx_path(fx, "model.safetensors", p, sizeof p);
    st_file f;
    st_load(p, &f);
    /* a missing colon */
    char *h = replace1(f.header, "\"lm_head.weight\": {", "\"lm_head.weight\" {");
    st_save(p, h, f.data, f.data_len);
    free(h);
    expect_load(fx->dir, PANGU_ERR_SAFETENSORS_HEADER, p, NULL);
    /* not JSON at all, same length */
    h = (char *)malloc(f.header_len + 1);
    assert_non_null(h);
    memset(h, 'x', f.header_len);
    h[f.header_len] = 0;
    st_save(p, h, f.data, f.data_len);
    free(h);
    expect_load(fx->dir, PANGU_ERR_SAFETENSORS_HEADER, p, NULL);
    /* JSON, but not an object */
    st_save(p, "[1, 2, 3]", f.data, f.data_len);
    expect_load(fx->dir, PANGU_ERR_SAFETENSORS_HEADER, p, NULL);
    /* an entry without data_offsets */
    h = replace1(f.header, "\"model.norm.weight\": {\"dtype\": \"BF16\", \"shape\": [192], \"data_offsets\"",
                 "\"model.norm.weight\": {\"dtype\": \"BF16\", \"shape\": [192], \"offsets\"");
    st_save(p, h, f.data, f.data_len);
    free(h);
    expect_load(fx->dir, PANGU_ERR_SAFETENSORS_HEADER, p, "model.norm.weight");
    st_free(&f);
}

static void offsets_text(char *out, size_t cap, uint64_t b, uint64_t e) {
    snprintf(out, cap, "\"data_offsets\": [%llu, %llu]", (unsigned long long)b, (unsigned long long)e);
}

static void test_offsets_past_end(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512], from[96], to[96];
    fx_path(fx, "model.safetensors", p, sizeof p);
    st_tensor t[MAX_TENSORS];
    size_t data_len = 0;
    const int n = bundled_tensors(t, &data_len);
    const st_tensor *last = &t[n - 1];
    assert_int_equal(last->end, data_len);
    /* the same size, moved to just past the data section */
    offsets_text(from, sizeof from, last->begin, last->end);
    offsets_text(to, sizeof to, data_len, data_len + (last->end - last->begin));
    edit_header(fx->dir, from, to);
    expect_load(fx->dir, PANGU_ERR_TENSOR_BOUNDS, p, last->name);
}

static void test_overlapping_tensors(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512], from[96], to[96];
    fx_path(fx, "model.safetensors", p, sizeof p);
    st_tensor t[MAX_TENSORS];
    const int n = bundled_tensors(t, NULL);
    assert_true(n > 3);
    /* the second tensor moved back by one element: same size, in bounds, overlapping the first */
    const st_tensor *a = &t[0], *b = &t[1];
    assert_int_equal(a->end, b->begin);
    offsets_text(from, sizeof from, b->begin, b->end);
    offsets_text(to, sizeof to, b->begin - 2, b->end - 2);
    edit_header(fx->dir, from, to);
    expect_load(fx->dir, PANGU_ERR_TENSOR_BOUNDS, a->name, b->name);
    assert_non_null(strstr(pangu_last_error(), p));
}

/* The entry of `name` in the bundled header, up to and including its dtype value. */
static void dtype_text(char *out, size_t cap, const char *name, const char *dtype) {
    snprintf(out, cap, "\"%s\": {\"dtype\": \"%s\"", name, dtype);
}

static void test_unknown_dtype(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512], from[256], to[256];
    fx_path(fx, "model.safetensors", p, sizeof p);
    const char *name = "model.layers.2.self_attn.k_proj.weight";
    dtype_text(from, sizeof from, name, "BF16");
    dtype_text(to, sizeof to, name, "Q7");
    edit_header(fx->dir, from, to);
    expect_load(fx->dir, PANGU_ERR_DTYPE, name, "Q7");
    assert_non_null(strstr(pangu_last_error(), p));
}

static void test_unsupported_dtype(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512], from[256], to[256];
    fx_path(fx, "model.safetensors", p, sizeof p);
    const char *name = "model.norm.weight";
    dtype_text(from, sizeof from, name, "BF16");
    dtype_text(to, sizeof to, name, "F64");
    edit_header(fx->dir, from, to);
    expect_load(fx->dir, PANGU_ERR_DTYPE, name, "F64");
    assert_non_null(strstr(pangu_last_error(), p));
}

/* A known float dtype whose size does not match the data span is a bounds error, naming the tensor. */
static void test_dtype_size_mismatch(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512], from[256], to[256];
    fx_path(fx, "model.safetensors", p, sizeof p);
    const char *name = "model.norm.weight";
    dtype_text(from, sizeof from, name, "BF16");
    dtype_text(to, sizeof to, name, "F32");
    edit_header(fx->dir, from, to);
    expect_load(fx->dir, PANGU_ERR_TENSOR_BOUNDS, name, p);
}

/* ---------------------------------------------------------------------------------------------- */
/* shapes and tensors against config.json                                                         */
/* ---------------------------------------------------------------------------------------------- */

static void test_shape_hidden_size_in_config(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512];
    fx_path(fx, "model.safetensors", p, sizeof p);
    edit_text_file(fx->dir, "config.json", "\"hidden_size\": 192", "\"hidden_size\": 96");
    expect_load(fx->dir, PANGU_ERR_SHAPE, p, "tensor model.");
    assert_non_null(strstr(pangu_last_error(), "96"));
}

static void test_shape_fewer_layers_in_config(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512];
    fx_path(fx, "model.safetensors", p, sizeof p);
    /* the weights of layer 5 are left over: config and checkpoint disagree */
    edit_text_file(fx->dir, "config.json", "\"num_hidden_layers\": 6", "\"num_hidden_layers\": 5");
    expect_load(fx->dir, PANGU_ERR_SHAPE, p, "model.layers.5.");
}

static void shape_text(char *out, size_t cap, const st_tensor *t, int64_t r, int64_t c) {
    snprintf(out, cap, "\"%.127s\": {\"dtype\": \"%.15s\", \"shape\": [%lld, %lld]", t->name, t->dtype, (long long)r,
             (long long)c);
}

static void test_shape_swapped_dims(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512], from[256], to[256];
    fx_path(fx, "model.safetensors", p, sizeof p);
    st_tensor t[MAX_TENSORS];
    const int n = bundled_tensors(t, NULL);
    const st_tensor *d = find_tensor(t, n, "model.layers.0.mlp.down_proj.weight");
    assert_int_equal(d->ndim, 2);
    assert_int_not_equal(d->shape[0], d->shape[1]);
    /* same element count, so the bounds check passes and the shape check must catch it */
    shape_text(from, sizeof from, d, d->shape[0], d->shape[1]);
    shape_text(to, sizeof to, d, d->shape[1], d->shape[0]);
    edit_header(fx->dir, from, to);
    expect_load(fx->dir, PANGU_ERR_SHAPE, p, d->name);
}

static void test_shape_resized(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512], from[256], to[256];
    fx_path(fx, "model.safetensors", p, sizeof p);
    st_tensor t[MAX_TENSORS];
    const int n = bundled_tensors(t, NULL);
    const st_tensor *d = find_tensor(t, n, "model.layers.1.self_attn.v_proj.weight");
    assert_int_equal(d->ndim, 2);
    /* one row fewer: the data span no longer matches dtype and shape */
    shape_text(from, sizeof from, d, d->shape[0], d->shape[1]);
    shape_text(to, sizeof to, d, d->shape[0] - 1, d->shape[1]);
    edit_header(fx->dir, from, to);
    expect_load(fx->dir, PANGU_ERR_TENSOR_BOUNDS, p, d->name);
}

/* Removes the header entry of `name` (its data stays, unreferenced). */
static void remove_entry(const char *dir, const char *name) {
    char p[512], key[256];
    path_in(p, sizeof p, dir, "model.safetensors");
    snprintf(key, sizeof key, "\"%s\": {", name);
    st_file f;
    st_load(p, &f);
    char *h = f.header;
    char *a = strstr(h, key);
    assert_non_null(a);
    char *close = strchr(a, '}');
    assert_non_null(close);
    char *b = (char *)skip_ws(close + 1);
    if (*b == ',') {
        b = (char *)skip_ws(b + 1);
    } else { /* the last entry: take the comma before it instead */
        while (a > h && a[-1] != ',') --a;
        assert_true(a > h);
        --a;
    }
    memmove(a, b, strlen(b) + 1);
    st_save(p, h, f.data, f.data_len);
    st_free(&f);
}

static void test_missing_tensor(void **state) {
    fixture *fx = (fixture *)*state;
    const char *name = "model.layers.3.post_attention_layernorm.weight";
    remove_entry(fx->dir, name);
    expect_load(fx->dir, PANGU_ERR_MISSING_TENSOR, name, fx->dir);
}

static void test_missing_lm_head(void **state) {
    fixture *fx = (fixture *)*state;
    remove_entry(fx->dir, "lm_head.weight");
    expect_load(fx->dir, PANGU_ERR_MISSING_TENSOR, "lm_head.weight", fx->dir);
}

/* ---------------------------------------------------------------------------------------------- */
/* tokenizer                                                                                      */
/* ---------------------------------------------------------------------------------------------- */

static void test_missing_tokenizer(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512];
    fx_path(fx, "tokenizer.model", p, sizeof p);
    assert_int_equal(unlink(p), 0);
    expect_load(fx->dir, PANGU_ERR_FILE_NOT_FOUND, p, NULL);
}

static void test_corrupt_tokenizer(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512];
    fx_path(fx, "tokenizer.model", p, sizeof p);
    const char *junk = "this is not a SentencePiece model\n";
    write_all(p, junk, strlen(junk));
    expect_load(fx->dir, PANGU_ERR_TOKENIZER, p, NULL);
    write_all(p, "", 0);
    expect_load(fx->dir, PANGU_ERR_TOKENIZER, p, NULL);
}

static void test_truncated_tokenizer(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512];
    fx_path(fx, "tokenizer.model", p, sizeof p);
    size_t n = 0;
    free(read_all(p, &n));
    truncate_to(p, n / 2 + 1);
    expect_load(fx->dir, PANGU_ERR_TOKENIZER, p, NULL);
}

/* Files far larger than any real one of their kind are refused before they are read: a 65 MiB config.json
 * or tokenizer_config.json, a 257 MiB tokenizer.model (sparse files: nothing is written). */
static void test_oversized_files(void **state) {
    fixture *fx = (fixture *)*state;
    static const struct {
        const char *file;
        long mib;
        pangu_status want;
    } cases[] = {{"config.json", 65, PANGU_ERR_CONFIG},
                 {"tokenizer_config.json", 65, PANGU_ERR_CONFIG},
                 {"tokenizer.model", 257, PANGU_ERR_TOKENIZER}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        char p[512], saved[520];
        fx_path(fx, cases[i].file, p, sizeof p);
        snprintf(saved, sizeof saved, "%s.saved", p);
        assert_int_equal(rename(p, saved), 0);
        write_all(p, "{", 1);
        assert_int_equal(truncate(p, cases[i].mib << 20), 0);
        expect_load(fx->dir, cases[i].want, p, "more than");
        assert_int_equal(rename(saved, p), 0);
    }
}

static void test_malformed_tokenizer_config(void **state) {
    fixture *fx = (fixture *)*state;
    char p[512];
    fx_path(fx, "tokenizer_config.json", p, sizeof p);
    write_all(p, "{\"add_bos_token\": ", 18);
    expect_load(fx->dir, PANGU_ERR_CONFIG, p, NULL);
    const char *wrong = "{\"add_bos_token\": \"yes\"}";
    write_all(p, wrong, strlen(wrong));
    expect_load(fx->dir, PANGU_ERR_CONFIG, p, "add_bos_token");
    /* the file is optional */
    assert_int_equal(unlink(p), 0);
    pangu_model *m = NULL;
    assert_int_equal(pangu_model_load(fx->dir, NULL, &m), PANGU_OK);
    pangu_model_free(m);
}

/* ---------------------------------------------------------------------------------------------- */
/* sharded checkpoints                                                                            */
/* ---------------------------------------------------------------------------------------------- */

static const char *const kShard1 = "model-00001-of-00002.safetensors";
static const char *const kShard2 = "model-00002-of-00002.safetensors";

/* Appends to a growing string. */
typedef struct {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char tmp[512];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof tmp);
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->s = (char *)realloc(b->s, b->cap);
        assert_non_null(b->s);
    }
    memcpy(b->s + b->len, tmp, (size_t)n + 1);
    b->len += (size_t)n;
}

/* Writes tensors t[i0..i1) of the bundled data into a shard of their own, offsets rebased. */
static void write_shard(const char *dir, const char *shard, const st_tensor *t, int i0, int i1,
                        const unsigned char *data) {
    sbuf h = {NULL, 0, 0};
    sb_add(&h, "{\"__metadata__\": {\"format\": \"pt\"}");
    const uint64_t base = t[i0].begin;
    for (int i = i0; i < i1; ++i) {
        sb_add(&h, ", \"%s\": {\"dtype\": \"%s\", \"shape\": [", t[i].name, t[i].dtype);
        for (int k = 0; k < t[i].ndim; ++k) sb_add(&h, k ? ", %lld" : "%lld", (long long)t[i].shape[k]);
        sb_add(&h, "], \"data_offsets\": [%llu, %llu]}", (unsigned long long)(t[i].begin - base),
               (unsigned long long)(t[i].end - base));
    }
    sb_add(&h, "}");
    char p[512];
    path_in(p, sizeof p, dir, shard);
    st_save(p, h.s, data + base, (size_t)(t[i1 - 1].end - base));
    free(h.s);
}

/* Splits the fixture's model.safetensors into two shards with an index (tensors in data order, contiguous,
 * so each shard's data is a slice of the original); removes the single file. `index_shard2` is the name
 * the index gives the second shard. */
static void make_sharded(const char *dir, const char *index_shard2) {
    char p[512];
    path_in(p, sizeof p, dir, "model.safetensors");
    st_file f;
    st_load(p, &f);
    st_tensor t[MAX_TENSORS];
    const int n = st_list(f.header, t, MAX_TENSORS);
    qsort(t, (size_t)n, sizeof *t, cmp_begin);
    for (int i = 1; i < n; ++i) assert_int_equal(t[i].begin, t[i - 1].end);
    const int half = n / 2;
    write_shard(dir, kShard1, t, 0, half, f.data);
    write_shard(dir, kShard2, t, half, n, f.data);

    sbuf idx = {NULL, 0, 0};
    sb_add(&idx, "{\n  \"metadata\": {\"total_size\": %llu},\n  \"weight_map\": {", (unsigned long long)f.data_len);
    for (int i = 0; i < n; ++i)
        sb_add(&idx, "%s\n    \"%s\": \"%s\"", i ? "," : "", t[i].name, i < half ? kShard1 : index_shard2);
    sb_add(&idx, "\n  }\n}\n");
    char ip[512];
    path_in(ip, sizeof ip, dir, "model.safetensors.index.json");
    write_all(ip, idx.s, idx.len);
    free(idx.s);
    st_free(&f);
    assert_int_equal(unlink(p), 0);
}

static void logits_and_greedy(pangu_model *m, float *logits, int32_t *gen, size_t *n_gen) {
    static const char prompt[] = "床前明月光，疑是地上霜。";
    pangu_session *s = NULL;
    assert_int_equal(pangu_session_create(m, NULL, &s), PANGU_OK);
    int32_t ids[128];
    size_t n = 0;
    assert_int_equal(pangu_tokenize(m, prompt, strlen(prompt), 1, 0, ids, 128, &n), PANGU_OK);
    assert_int_equal(pangu_session_eval(s, ids, n, NULL), PANGU_OK);
    const float *l = NULL;
    int32_t nv = 0;
    assert_int_equal(pangu_session_get_logits(s, &l, &nv), PANGU_OK);
    assert_int_equal(nv, 4096);
    memcpy(logits, l, sizeof(float) * 4096);
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.max_new_tokens = 16;
    assert_int_equal(pangu_session_generate_tokens(s, NULL, 0, &sp, NULL, NULL, NULL), PANGU_OK);
    assert_int_equal(pangu_session_get_tokens(s, gen, 256, n_gen), PANGU_OK);
    pangu_session_free(s);
}

static void test_sharded_loads_identically(void **state) {
    fixture *fx = (fixture *)*state;
    make_sharded(fx->dir, kShard2);

    pangu_model *single = NULL, *sharded = NULL;
    assert_int_equal(pangu_model_load(PANGU_MODEL_DIR, NULL, &single), PANGU_OK);
    pangu_status st = pangu_model_load(fx->dir, NULL, &sharded);
    if (st != PANGU_OK) fail_msg("sharded load: %s: %s", pangu_status_string(st), pangu_last_error());

    pangu_model_info a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.struct_size = b.struct_size = sizeof a;
    assert_int_equal(pangu_model_get_info(single, &a), PANGU_OK);
    assert_int_equal(pangu_model_get_info(sharded, &b), PANGU_OK);
    assert_int_equal(a.n_params, b.n_params);
    assert_int_equal(a.weight_bytes, b.weight_bytes);

    static float la[4096], lb[4096];
    int32_t ga[256], gb[256];
    size_t na = 0, nb = 0;
    logits_and_greedy(single, la, ga, &na);
    logits_and_greedy(sharded, lb, gb, &nb);
    assert_memory_equal(la, lb, sizeof la);
    assert_int_equal(na, nb);
    assert_memory_equal(ga, gb, na * sizeof(int32_t));
    pangu_model_free(single);
    pangu_model_free(sharded);
}

static void test_shard_missing(void **state) {
    fixture *fx = (fixture *)*state;
    const char *ghost = "model-00003-of-00002.safetensors";
    make_sharded(fx->dir, ghost);
    char p[512];
    fx_path(fx, ghost, p, sizeof p);
    expect_load(fx->dir, PANGU_ERR_FILE_NOT_FOUND, p, NULL);
    /* the index itself malformed */
    char ip[512];
    fx_path(fx, "model.safetensors.index.json", ip, sizeof ip);
    write_all(ip, "{\"weight_map\": ", 15);
    expect_load(fx->dir, PANGU_ERR_CONFIG, ip, NULL);
    /* valid JSON but not an object (was PANGU_ERR_INTERNAL: found by fuzz_config) */
    write_all(ip, "[\"weight_map\"]", 14);
    expect_load(fx->dir, PANGU_ERR_CONFIG, ip, "object");
}

static void test_shard_deleted(void **state) {
    fixture *fx = (fixture *)*state;
    make_sharded(fx->dir, kShard2);
    char p[512];
    fx_path(fx, kShard1, p, sizeof p);
    assert_int_equal(unlink(p), 0);
    expect_load(fx->dir, PANGU_ERR_FILE_NOT_FOUND, p, NULL);
}

#define FX(t) cmocka_unit_test_setup_teardown(t, fixture_setup, fixture_teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        FX(test_fixture_copy_loads),
        FX(test_missing_directory),
        FX(test_missing_config),
        FX(test_malformed_config),
        FX(test_config_wrong_type),
        FX(test_config_out_of_range),
        FX(test_missing_safetensors),
        FX(test_truncated_half),
        FX(test_truncated_in_header),
        FX(test_header_length_past_file),
        FX(test_header_not_json),
        FX(test_offsets_past_end),
        FX(test_overlapping_tensors),
        FX(test_unknown_dtype),
        FX(test_unsupported_dtype),
        FX(test_dtype_size_mismatch),
        FX(test_shape_hidden_size_in_config),
        FX(test_shape_fewer_layers_in_config),
        FX(test_shape_swapped_dims),
        FX(test_shape_resized),
        FX(test_missing_tensor),
        FX(test_missing_lm_head),
        FX(test_missing_tokenizer),
        FX(test_corrupt_tokenizer),
        FX(test_truncated_tokenizer),
        FX(test_oversized_files),
        FX(test_malformed_tokenizer_config),
        FX(test_sharded_loads_identically),
        FX(test_shard_missing),
        FX(test_shard_deleted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
