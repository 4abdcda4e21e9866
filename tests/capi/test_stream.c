/* Streaming generation: every piece the token callback receives is valid UTF-8 on its own and the pieces
 * add up to exactly what the decoder makes of the generated ids, for sampled Chinese text (the bundled poem
 * prompt and the Chinese documents of dev.jsonl). Stop strings, stop tokens, max_new_tokens, EOS, and seeds.
 *
 * Callbacks never assert (a cmocka failure longjmps, which must not cross the library's C++ frames): they
 * record, and the test checks the record after the call returns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "golden_data.h"
#include "pangu/pangu.h"

static pangu_model *g_model;
static int32_t g_eos;

static const char kPoem[] = "《静夜思》\n作者：李白\n床前明月光，";

/* ---------------------------------------------------------------------------------------------- */
/* strict UTF-8                                                                                   */
/* ---------------------------------------------------------------------------------------------- */

/* 1 if s[0..n) is well-formed UTF-8: no stray continuation bytes, no overlong forms, no surrogates,
 * nothing above U+10FFFF, no truncated sequence. */
static int utf8_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        const unsigned c = s[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
            min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
            min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; ++k) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += len;
    }
    return 1;
}

/* Byte length of the first `n_chars` code points of valid UTF-8 `s` (fewer if the text is shorter). */
static size_t utf8_prefix(const char *s, size_t len, size_t n_chars) {
    size_t i = 0;
    while (i < len && n_chars > 0) {
        ++i;
        while (i < len && ((unsigned char)s[i] & 0xC0) == 0x80) ++i;
        --n_chars;
    }
    return i;
}

static size_t utf8_count(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; ++i)
        if (((unsigned char)s[i] & 0xC0) != 0x80) ++n;
    return n;
}

/* ---------------------------------------------------------------------------------------------- */
/* dev.jsonl                                                                                      */
/* ---------------------------------------------------------------------------------------------- */

static size_t put_utf8(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int hex4(const char *p, uint32_t *v) {
    *v = 0;
    for (int i = 0; i < 4; ++i) {
        const char c = p[i];
        *v <<= 4;
        if (c >= '0' && c <= '9') *v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') *v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') *v |= (uint32_t)(c - 'A' + 10);
        else return 0;
    }
    return 1;
}

/* Decodes the JSON string starting at `p` (just after its opening quote) into a malloc'd NUL-terminated
 * UTF-8 string of *len bytes; *end is set past the closing quote. NULL on malformed input. */
static char *json_unescape(const char *p, size_t *len, const char **end) {
    const char *q = p;
    size_t raw = 0;
    while (q[raw] && q[raw] != '"') raw += q[raw] == '\\' && q[raw + 1] ? 2 : 1;
    char *out = (char *)malloc(raw + 4);
    if (!out) return NULL;
    size_t n = 0;
    while (*q && *q != '"') {
        if (*q != '\\') {
            out[n++] = *q++;
            continue;
        }
        ++q;
        switch (*q) {
            case 'n': out[n++] = '\n'; break;
            case 't': out[n++] = '\t'; break;
            case 'r': out[n++] = '\r'; break;
            case 'b': out[n++] = '\b'; break;
            case 'f': out[n++] = '\f'; break;
            case '"': out[n++] = '"'; break;
            case '\\': out[n++] = '\\'; break;
            case '/': out[n++] = '/'; break;
            case 'u': {
                uint32_t cp, lo;
                if (!hex4(q + 1, &cp)) goto bad;
                q += 4;
                if (cp >= 0xD800 && cp <= 0xDBFF) { /* a surrogate pair */
                    if (q[1] != '\\' || q[2] != 'u' || !hex4(q + 3, &lo) || lo < 0xDC00 || lo > 0xDFFF) goto bad;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    q += 6;
                } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    goto bad;
                }
                n += put_utf8(out + n, cp); /* \uXXXX is 6 bytes of input, at most 3 of output; a pair 12 -> 4 */
                break;
            }
            default: goto bad;
        }
        ++q;
    }
    if (*q != '"') goto bad;
    out[n] = 0;
    *len = n;
    if (end) *end = q + 1;
    return out;
bad:
    free(out);
    return NULL;
}

#define MAX_DOC_PROMPTS 16

typedef struct {
    char *text[MAX_DOC_PROMPTS];
    int n;
} prompt_set;

static prompt_set g_docs;

/* The first ~40 characters of every k-th Chinese (non-"py/") document of dev.jsonl. */
static int load_doc_prompts(prompt_set *ps) {
    FILE *f = fopen(PANGU_SHARED_DIR "/data/dev.jsonl", "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", PANGU_SHARED_DIR "/data/dev.jsonl");
        return -1;
    }
    fseek(f, 0, SEEK_END);
    const long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *all = (char *)malloc((size_t)size + 1);
    if (!all || fread(all, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(all);
        return -1;
    }
    fclose(f);
    all[size] = 0;
    int n_chinese = 0;
    ps->n = 0;
    for (char *line = all; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        const char *k = strstr(line, "\"name\":");
        const char *t = k ? strstr(k, "\"text\":") : NULL;
        if (k && t) {
            k = strchr(k + 7, '"');
            t = strchr(t + 7, '"');
            size_t nlen = 0, tlen = 0;
            char *name = k ? json_unescape(k + 1, &nlen, NULL) : NULL;
            char *text = t ? json_unescape(t + 1, &tlen, NULL) : NULL;
            if (!name || !text || !utf8_valid(text, tlen)) {
                fprintf(stderr, "dev.jsonl: cannot decode a line\n");
                free(name);
                free(text);
                free(all);
                return -1;
            }
            if (strncmp(name, "py/", 3) != 0) {
                if (n_chinese++ % 20 == 0 && ps->n < MAX_DOC_PROMPTS) {
                    text[utf8_prefix(text, tlen, 40)] = 0;
                    ps->text[ps->n++] = text;
                    text = NULL;
                }
            }
            free(name);
            free(text);
        }
        line = nl ? nl + 1 : NULL;
    }
    free(all);
    return ps->n >= 8 ? 0 : -1;
}

/* ---------------------------------------------------------------------------------------------- */
/* recording a stream                                                                             */
/* ---------------------------------------------------------------------------------------------- */

#define MAX_GEN 512

typedef struct {
    char text[16384];
    size_t len;
    int32_t toks[MAX_GEN];
    size_t piece_end[MAX_GEN]; /* text length after each piece */
    int n_calls;
    int bad_call; /* index of the first piece that was not valid UTF-8, or -1 */
    int overflow;
} stream_rec;

static void rec_reset(stream_rec *r) {
    r->len = 0;
    r->text[0] = 0;
    r->n_calls = 0;
    r->bad_call = -1;
    r->overflow = 0;
}

static int on_piece(void *user, int32_t token, const char *piece, size_t len) {
    stream_rec *r = (stream_rec *)user;
    if (r->n_calls >= MAX_GEN || r->len + len + 1 > sizeof r->text || (len && !piece)) {
        r->overflow = 1;
        return 1;
    }
    if (r->bad_call < 0 && !utf8_valid(piece, len)) r->bad_call = r->n_calls;
    memcpy(r->text + r->len, piece, len);
    r->len += len;
    r->text[r->len] = 0;
    r->toks[r->n_calls] = token;
    r->piece_end[r->n_calls] = r->len;
    r->n_calls++;
    return 0;
}

static void check_rec_pieces(const stream_rec *r) {
    assert_false(r->overflow);
    if (r->bad_call >= 0) {
        const size_t a = r->bad_call ? r->piece_end[r->bad_call - 1] : 0, b = r->piece_end[r->bad_call];
        char hex[256] = "";
        for (size_t i = a; i < b && i < a + 40; ++i) snprintf(hex + strlen(hex), sizeof hex - strlen(hex), "%02x ", (unsigned char)r->text[i]);
        fail_msg("piece %d (token %d) is not valid UTF-8: %s", r->bad_call, r->toks[r->bad_call], hex);
    }
    assert_true(utf8_valid(r->text, r->len));
}

static char *detok(const int32_t *ids, size_t n, size_t *len) {
    size_t need = 0;
    pangu_status st = pangu_detokenize(g_model, ids, n, NULL, 0, &need);
    assert_true(st == PANGU_OK || st == PANGU_ERR_BUFFER_TOO_SMALL);
    char *buf = (char *)malloc(need + 1);
    assert_non_null(buf);
    assert_int_equal(pangu_detokenize(g_model, ids, n, buf, need + 1, len), PANGU_OK);
    assert_int_equal(*len, need);
    assert_true(utf8_valid(buf, *len));
    return buf;
}

static size_t context(pangu_session *s, int32_t *ids, size_t cap) {
    size_t n = 0;
    assert_int_equal(pangu_session_get_tokens(s, ids, cap, &n), PANGU_OK);
    return n;
}

/* The text that the ids ctx[n_before..n_all) add to a decode of ctx[0..n_before).
 *
 * Why not simply decode(generated ids)? The decoder drops the leading space of the first piece of a text.
 * A continuation does not start a text -- the prompt precedes it -- so its stream keeps a leading space
 * (e.g. "▁the" streams as " the") that decoding the generated ids on their own would drop. The faithful
 * reference is therefore decode(prompt + generated) with decode(prompt) removed from its front. That is
 * well defined because decode(prompt) is always a prefix of decode(prompt + generated): the prompt ends on
 * a whole character (it came from valid text), so no byte-fallback sequence spans the boundary. The
 * prefix property is asserted, not assumed. */
static char *decode_suffix(const int32_t *ctx, size_t n_before, size_t n_all, size_t *len) {
    size_t lh = 0, lf = 0;
    char *head = detok(ctx, n_before, &lh);
    char *full = detok(ctx, n_all, &lf);
    if (lf < lh || memcmp(full, head, lh) != 0)
        fail_msg("decode(prompt) \"%s\" is not a prefix of decode(all) \"%s\"", head, full);
    memmove(full, full + lh, lf - lh + 1);
    *len = lf - lh;
    free(head);
    return full;
}

/* Generates from `prompt` on `s`, and checks the stream against the context and the decoder. */
static void generate_checked(pangu_session *s, const char *prompt, const pangu_sampling_params *sp, stream_rec *rec,
                             pangu_generate_result *res) {
    static int32_t ctx[4096];
    const size_t n0 = pangu_session_n_tokens(s);
    rec_reset(rec);
    memset(res, 0, sizeof *res);
    res->struct_size = sizeof *res;
    pangu_status st = pangu_session_generate(s, prompt, sp, on_piece, rec, res);
    if (st != PANGU_OK) fail_msg("generate: %s: %s", pangu_status_string(st), pangu_session_last_error(s));
    check_rec_pieces(rec);
    const size_t n_all = context(s, ctx, 4096);
    const size_t n_before = n0 + (size_t)res->n_prompt_tokens;
    assert_int_equal(n_all, n_before + (size_t)res->n_generated);
    assert_int_equal(rec->n_calls, res->n_generated);
    assert_memory_equal(rec->toks, ctx + n_before, (size_t)res->n_generated * sizeof(int32_t));
    if (sp && sp->n_stop_strings) return; /* held-back and cut text: checked by the stop-string tests */
    size_t lg = 0;
    char *want = decode_suffix(ctx, n_before, n_all, &lg);
    if (lg != rec->len || memcmp(want, rec->text, lg) != 0)
        fail_msg("prompt \"%s\": streamed \"%s\" but the decoder gives \"%s\"", prompt, rec->text, want);
    free(want);
}

static pangu_session *new_session(void) {
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.n_ctx = 1024;
    pangu_session *s = NULL;
    assert_int_equal(pangu_session_create(g_model, &p, &s), PANGU_OK);
    return s;
}

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
    g_eos = info.eos_token;
    return load_doc_prompts(&g_docs);
}

static int teardown(void **state) {
    (void)state;
    for (int i = 0; i < g_docs.n; ++i) free(g_docs.text[i]);
    pangu_model_free(g_model);
    return 0;
}

static stream_rec g_rec, g_rec2;

/* ---------------------------------------------------------------------------------------------- */
/* the helpers themselves                                                                         */
/* ---------------------------------------------------------------------------------------------- */

static void test_helpers(void **state) {
    (void)state;
    assert_true(utf8_valid("", 0));
    assert_true(utf8_valid("a\xc3\xa9\xe6\x9c\x88\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf", 14));
    static const char *const bad[] = {"\x80", "\xc0\xaf", "\xc1\xbf", "\xe0\x9f\xbf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                      "\xf5\x80\x80\x80", "\xe6\x9c", "\xff", "\xc3("};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i)
        if (utf8_valid(bad[i], strlen(bad[i]))) fail_msg("validator accepts bad case %zu", i);

    size_t len = 0;
    const char *end = NULL;
    char *s = json_unescape("a\\u00e9\\ud83d\\ude00\\n\\t\\\"\\\\\\u6708\\/x\" tail", &len, &end);
    assert_non_null(s);
    assert_string_equal(s, "a\xc3\xa9\xf0\x9f\x98\x80\n\t\"\\\xe6\x9c\x88/x");
    assert_int_equal(len, strlen(s));
    assert_string_equal(end, " tail");
    free(s);
    assert_null(json_unescape("\\ude00\"", &len, NULL)); /* lone low surrogate */
    assert_null(json_unescape("\\ud83d\"", &len, NULL)); /* lone high surrogate */

    /* the document prompts: Chinese text, 40 characters */
    assert_true(g_docs.n >= 8);
    for (int i = 0; i < g_docs.n; ++i) {
        const char *t = g_docs.text[i];
        assert_true(utf8_valid(t, strlen(t)));
        const size_t nc = utf8_count(t, strlen(t));
        assert_true(nc >= 10 && nc <= 40); /* a few documents are shorter than 40 characters */
        int cjk = 0;
        for (const unsigned char *p = (const unsigned char *)t; *p; ++p) cjk += *p >= 0xE4 && *p <= 0xE9;
        if (!cjk) fail_msg("document prompt %d has no Chinese: %s", i, t);
    }
}

/* ---------------------------------------------------------------------------------------------- */
/* pieces against the decoder                                                                     */
/* ---------------------------------------------------------------------------------------------- */

static void test_stream_poem_sampled(void **state) {
    (void)state;
    for (uint64_t seed = 1; seed <= 8; ++seed) {
        pangu_session *s = new_session();
        pangu_sampling_params sp;
        pangu_sampling_params_init(&sp);
        sp.temperature = 0.8f;
        sp.seed = seed;
        sp.max_new_tokens = 64;
        pangu_generate_result r;
        generate_checked(s, kPoem, &sp, &g_rec, &r);
        assert_true(r.n_generated > 0);
        pangu_session_free(s);
    }
}

static void test_stream_documents_sampled(void **state) {
    (void)state;
    int n_multibyte_split = 0; /* pieces left empty because a character was still incomplete */
    for (int d = 0; d < g_docs.n; ++d) {
        for (uint64_t seed = 11; seed <= 13; ++seed) {
            pangu_session *s = new_session();
            pangu_sampling_params sp;
            pangu_sampling_params_init(&sp);
            sp.temperature = 0.8f;
            sp.seed = seed;
            sp.max_new_tokens = 48;
            pangu_generate_result r;
            generate_checked(s, g_docs.text[d], &sp, &g_rec, &r);
            for (int i = 0; i < g_rec.n_calls; ++i) {
                const size_t a = i ? g_rec.piece_end[i - 1] : 0;
                if (g_rec.piece_end[i] == a && g_rec.toks[i] != g_eos) ++n_multibyte_split;
            }
            pangu_session_free(s);
        }
    }
    if (getenv("PANGU_TEST_VERBOSE")) fprintf(stderr, "  empty pieces (split characters): %d\n", n_multibyte_split);
}

/* A greedy run and a top-k-free, high-temperature run, which reaches byte-fallback tokens more often. */
static void test_stream_documents_wild(void **state) {
    (void)state;
    for (int d = 0; d < g_docs.n; d += 2) {
        pangu_session *s = new_session();
        pangu_sampling_params sp;
        pangu_sampling_params_init(&sp);
        sp.temperature = 1.5f;
        sp.top_k = 0;
        sp.top_p = 1.0f;
        sp.seed = (uint64_t)d + 100;
        sp.max_new_tokens = 48;
        pangu_generate_result r;
        generate_checked(s, g_docs.text[d], &sp, &g_rec, &r);
        pangu_session_reset(s);
        pangu_sampling_params_init(&sp);
        sp.max_new_tokens = 48;
        generate_checked(s, g_docs.text[d], &sp, &g_rec, &r);
        pangu_session_free(s);
    }
}

/* Later turns stream relative to everything already in the context. */
static void test_stream_continuing_turns(void **state) {
    (void)state;
    pangu_session *s = new_session();
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.temperature = 0.8f;
    sp.max_new_tokens = 24;
    pangu_generate_result r;
    for (int turn = 0; turn < 6; ++turn) {
        sp.seed = (uint64_t)turn;
        generate_checked(s, turn == 0 ? kPoem : (turn % 2 ? "\n" : g_docs.text[turn]), &sp, &g_rec, &r);
    }
    /* an empty prompt continues from the context */
    generate_checked(s, "", &sp, &g_rec, &r);
    assert_int_equal(r.n_prompt_tokens, 0);
    pangu_session_free(s);
}

/* ---------------------------------------------------------------------------------------------- */
/* stopping                                                                                       */
/* ---------------------------------------------------------------------------------------------- */

/* Greedy output of `prompt` without stop conditions, into `out` (text and tokens). */
static void greedy_reference(const char *prompt, int max_new, stream_rec *out, pangu_generate_result *r) {
    pangu_session *s = new_session();
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.max_new_tokens = max_new;
    generate_checked(s, prompt, &sp, out, r);
    pangu_session_free(s);
}

/* Generates greedily with stop strings and checks that the stream is the reference text cut before the
 * first occurrence of any of them, contains none of them, and that the context holds the reference tokens up
 * to the one completing it. "First" is unambiguous in every case built here: the occurrence that ends
 * first also starts first (the two readings of "stop when the text ends with one of these" could differ
 * only for nested occurrences, e.g. "abcdef" and "cd", which these tests do not build; checked below). */
static void check_stop_strings(const char *prompt, const stream_rec *ref, const char *const *stops, size_t n_stops) {
    size_t best_end = (size_t)-1, cut = 0, first_start = (size_t)-1;
    for (size_t i = 0; i < n_stops; ++i) {
        const char *hit = strstr(ref->text, stops[i]);
        if (!hit) continue;
        const size_t b = (size_t)(hit - ref->text), e = b + strlen(stops[i]);
        if (e < best_end || (e == best_end && b < cut)) {
            best_end = e;
            cut = b;
        }
        if (b < first_start) first_start = b;
    }
    if (first_start != cut) fail_msg("test construction: stop strings with nested first occurrences");
    assert_true(best_end != (size_t)-1);
    pangu_session *s = new_session();
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.max_new_tokens = ref->n_calls;
    sp.stop_strings = stops;
    sp.n_stop_strings = n_stops;
    pangu_generate_result r;
    generate_checked(s, prompt, &sp, &g_rec2, &r);
    assert_int_equal(r.stop_reason, PANGU_STOP_STRING);
    if (g_rec2.len != cut || memcmp(g_rec2.text, ref->text, cut) != 0)
        fail_msg("stop \"%s\"%s: streamed \"%s\", want \"%.*s\"", stops[0], n_stops > 1 ? " (and others)" : "",
                 g_rec2.text, (int)cut, ref->text);
    for (size_t i = 0; i < n_stops; ++i)
        if (strstr(g_rec2.text, stops[i])) fail_msg("the stream contains stop string \"%s\"", stops[i]);
    /* the tokens are the reference's, up to the one whose text completes the stop string */
    int k = 0;
    while (k < ref->n_calls && ref->piece_end[k] < best_end) ++k;
    assert_int_equal(r.n_generated, k + 1);
    assert_memory_equal(g_rec2.toks, ref->toks, (size_t)(k + 1) * sizeof(int32_t));
    /* and what the context decodes to continues with the stop string right after the streamed text */
    static int32_t ctx[4096];
    const size_t n_all = context(s, ctx, 4096);
    size_t lg = 0;
    char *tail = decode_suffix(ctx, n_all - (size_t)r.n_generated, n_all, &lg);
    assert_true(lg >= best_end);
    assert_memory_equal(tail, ref->text, best_end);
    free(tail);
    pangu_session_free(s);
}

static void test_stop_string(void **state) {
    (void)state;
    stream_rec *ref = (stream_rec *)malloc(sizeof *ref);
    assert_non_null(ref);
    pangu_generate_result r;
    const char *prompts[] = {kPoem, g_docs.text[0], g_docs.text[3], "def main():\n"};
    for (size_t p = 0; p < sizeof prompts / sizeof prompts[0]; ++p) {
        greedy_reference(prompts[p], 40, ref, &r);
        const size_t n_chars = utf8_count(ref->text, ref->len);
        assert_true(n_chars >= 8);
        char stop[64];
        /* two characters from the middle */
        const size_t a = utf8_prefix(ref->text, ref->len, n_chars / 2);
        const size_t b = utf8_prefix(ref->text, ref->len, n_chars / 2 + 2);
        memcpy(stop, ref->text + a, b - a);
        stop[b - a] = 0;
        const char *one[] = {stop};
        check_stop_strings(prompts[p], ref, one, 1);

        /* one spanning a token boundary: the last character of a piece and the first of the next */
        for (int k = 2; k + 1 < ref->n_calls; ++k) {
            const size_t e0 = ref->piece_end[k - 1], e1 = ref->piece_end[k], e2 = ref->piece_end[k + 1];
            if (e1 == e0 || e2 == e1) continue;
            size_t last = e1 - 1;
            while (((unsigned char)ref->text[last] & 0xC0) == 0x80) --last;
            const size_t first_end = e1 + utf8_prefix(ref->text + e1, e2 - e1, 1);
            memcpy(stop, ref->text + last, first_end - last);
            stop[first_end - last] = 0;
            const char *two[] = {"\xe2\x98\x83never\xe2\x98\x83", stop};
            check_stop_strings(prompts[p], ref, two, 2);
            break;
        }
        /* the first character of the output: stops before anything is emitted */
        const size_t f = utf8_prefix(ref->text, ref->len, 1);
        memcpy(stop, ref->text, f);
        stop[f] = 0;
        check_stop_strings(prompts[p], ref, one, 1);
    }
    free(ref);
}

/* Several stop strings completed by the same token: the one that ends first wins, whatever the list order. */
static void test_stop_string_earliest_wins(void **state) {
    (void)state;
    stream_rec *ref = (stream_rec *)malloc(sizeof *ref);
    assert_non_null(ref);
    pangu_generate_result r;
    int tested = 0;
    const char *prompts[] = {"def main():\n", "class Stack:\n    def __init__(self):\n        ", kPoem};
    for (size_t p = 0; p < 3; ++p) {
        greedy_reference(prompts[p], 40, ref, &r);
        for (int k = 1; k < ref->n_calls; ++k) {
            const size_t a = ref->piece_end[k - 1], b = ref->piece_end[k];
            if (b - a < 4) continue;
            int ascii = 1;
            for (size_t i = a; i < b; ++i) ascii &= (unsigned char)ref->text[i] < 0x80;
            if (!ascii) continue;
            char late[8], early[8];
            memcpy(late, ref->text + b - 2, 2); /* the last two characters of the piece */
            late[2] = 0;
            memcpy(early, ref->text + a + 1, 2); /* its second and third */
            early[2] = 0;
            const char *stops[] = {late, early};
            check_stop_strings(prompts[p], ref, stops, 2);
            ++tested;
            break;
        }
    }
    assert_true(tested >= 2);
    free(ref);
}

/* One stop string occurring several times in one token's text (a run of spaces) cuts at its first
 * occurrence. */
static void test_stop_string_repeated_in_token(void **state) {
    (void)state;
    stream_rec *ref = (stream_rec *)malloc(sizeof *ref);
    assert_non_null(ref);
    pangu_generate_result r;
    int tested = 0;
    const char *prompts[] = {"def main():\n", "class Stack:\n    def __init__(self):\n        "};
    for (size_t p = 0; p < 2; ++p) {
        greedy_reference(prompts[p], 40, ref, &r);
        for (int k = 0; k < ref->n_calls; ++k) {
            const size_t a = k ? ref->piece_end[k - 1] : 0, b = ref->piece_end[k];
            if (b - a >= 2 && ref->text[a] == ' ' && ref->text[a + 1] == ' ') {
                const char *space[] = {" "};
                check_stop_strings(prompts[p], ref, space, 1);
                const char *two[] = {"  "};
                check_stop_strings(prompts[p], ref, two, 1);
                ++tested;
                break;
            }
        }
    }
    assert_true(tested >= 1);
    free(ref);
}

/* Text held back because it could start a stop string is released when the stop string does not follow,
 * including at the very end of generation. */
static void test_stop_string_held_back_released(void **state) {
    (void)state;
    stream_rec *ref = (stream_rec *)malloc(sizeof *ref);
    assert_non_null(ref);
    pangu_generate_result r;
    greedy_reference(kPoem, 40, ref, &r);
    const int32_t ref_reason = r.stop_reason;
    assert_true(ref->len > 4);
    /* the last character of the output, followed by text that never comes */
    size_t last = ref->len - 1;
    while (((unsigned char)ref->text[last] & 0xC0) == 0x80) --last;
    char stop[300];
    snprintf(stop, sizeof stop, "%s\xe2\x98\x83\xe2\x98\x83", ref->text + last);
    /* and a frequent character, likewise */
    const size_t c1 = utf8_prefix(ref->text, ref->len, 1);
    char stop2[64];
    memcpy(stop2, ref->text, c1);
    strcpy(stop2 + c1, "\xe2\x98\x83");
    /* 256 bytes, the longest allowed, starting with (up to 200 bytes of) the output's own text */
    char stop3[257];
    memset(stop3, 'z', 256);
    stop3[256] = 0;
    size_t k3 = ref->len < 200 ? ref->len : 200;
    while (k3 > 0 && ((unsigned char)ref->text[k3] & 0xC0) == 0x80) --k3;
    memcpy(stop3, ref->text, k3);
    const char *stops[] = {stop, stop2, stop3};
    for (size_t k = 1; k <= 3; ++k) {
        pangu_session *s = new_session();
        pangu_sampling_params sp;
        pangu_sampling_params_init(&sp);
        sp.max_new_tokens = ref->n_calls;
        sp.stop_strings = stops + (3 - k);
        sp.n_stop_strings = k;
        generate_checked(s, kPoem, &sp, &g_rec2, &r);
        assert_int_equal(r.stop_reason, ref_reason);
        assert_int_equal(r.n_generated, ref->n_calls);
        if (g_rec2.len != ref->len || memcmp(g_rec2.text, ref->text, ref->len) != 0)
            fail_msg("with %zu unmatched stop strings: streamed \"%s\", want \"%s\"", k, g_rec2.text, ref->text);
        pangu_session_free(s);
    }
    free(ref);
}

static void test_stop_tokens(void **state) {
    (void)state;
    stream_rec *ref = (stream_rec *)malloc(sizeof *ref);
    assert_non_null(ref);
    pangu_generate_result r;
    greedy_reference(kPoem, 40, ref, &r);
    assert_true(ref->n_calls > 8);
    for (int k = 3; k < 8; ++k) {
        const int32_t tok = ref->toks[k];
        if (tok == g_eos) continue;
        int first = 0;
        while (ref->toks[first] != tok) ++first;
        const int32_t stops[3] = {4095, tok, 4094};
        pangu_session *s = new_session();
        pangu_sampling_params sp;
        pangu_sampling_params_init(&sp);
        sp.max_new_tokens = 40;
        sp.stop_tokens = stops;
        sp.n_stop_tokens = 3;
        generate_checked(s, kPoem, &sp, &g_rec2, &r);
        assert_int_equal(r.stop_reason, PANGU_STOP_TOKEN);
        assert_int_equal(r.n_generated, first + 1); /* the stop token is counted and kept */
        assert_memory_equal(g_rec2.toks, ref->toks, (size_t)(first + 1) * sizeof(int32_t));
        int32_t ctx[1024];
        const size_t n = context(s, ctx, 1024);
        assert_int_equal(ctx[n - 1], tok);
        /* its text is streamed too: the stream is the reference up to and including that token */
        assert_int_equal(g_rec2.len, ref->piece_end[first]);
        assert_memory_equal(g_rec2.text, ref->text, g_rec2.len);
        pangu_session_free(s);
    }
    free(ref);
}

static void test_max_new_tokens(void **state) {
    (void)state;
    const int limits[] = {1, 7, 30};
    for (size_t i = 0; i < 3; ++i) {
        pangu_session *s = new_session();
        pangu_sampling_params sp;
        pangu_sampling_params_init(&sp);
        sp.temperature = 0.8f;
        sp.seed = 5;
        sp.max_new_tokens = limits[i];
        pangu_generate_result r;
        generate_checked(s, "import os\nimport sys\n\n\ndef main():\n", &sp, &g_rec, &r);
        assert_int_equal(r.n_generated, limits[i]);
        assert_int_equal(r.stop_reason, PANGU_STOP_MAX_TOKENS);
        assert_int_equal(g_rec.n_calls, limits[i]);
        assert_int_equal(pangu_session_n_tokens(s), (size_t)(r.n_prompt_tokens + limits[i]));
        pangu_session_free(s);
    }
    /* 0: the prompt is evaluated, nothing is generated */
    pangu_session *s = new_session();
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.max_new_tokens = 0;
    pangu_generate_result r;
    generate_checked(s, kPoem, &sp, &g_rec, &r);
    assert_int_equal(r.n_generated, 0);
    assert_int_equal(g_rec.n_calls, 0);
    assert_int_equal(r.stop_reason, PANGU_STOP_MAX_TOKENS);
    assert_true(r.n_prompt_tokens > 0);
    assert_int_equal(pangu_session_n_tokens(s), (size_t)r.n_prompt_tokens);
    const float *logits = NULL;
    assert_int_equal(pangu_session_get_logits(s, &logits, NULL), PANGU_OK);
    pangu_session_free(s);
}

static void test_eos(void **state) {
    (void)state;
    int found = 0;
    for (int c = 0; c < GOLDEN_N_CASES; ++c) {
        const golden_case *g = &GOLDEN_CASES[c];
        if (g->n_greedy >= 24) continue;
        found = 1;
        pangu_session *s = new_session();
        pangu_sampling_params sp;
        pangu_sampling_params_init(&sp);
        sp.max_new_tokens = 24;
        pangu_generate_result r;
        generate_checked(s, g->prompt, &sp, &g_rec, &r);
        assert_int_equal(r.stop_reason, PANGU_STOP_EOS);
        assert_int_equal(r.n_generated, g->n_greedy);
        assert_int_equal(g_rec.toks[g_rec.n_calls - 1], g_eos);
        /* EOS is a control token: its piece is empty */
        const size_t before = g_rec.n_calls > 1 ? g_rec.piece_end[g_rec.n_calls - 2] : 0;
        assert_int_equal(g_rec.piece_end[g_rec.n_calls - 1], before);
        assert_string_equal(g_rec.text, g->greedy_text);
        pangu_session_free(s);
    }
    assert_true(found);
}

/* ---------------------------------------------------------------------------------------------- */
/* seeds                                                                                          */
/* ---------------------------------------------------------------------------------------------- */

static void sample_with(const char *prompt, float temperature, uint64_t seed, stream_rec *out) {
    pangu_session *s = new_session();
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.temperature = temperature;
    sp.seed = seed;
    sp.max_new_tokens = 32;
    pangu_generate_result r;
    generate_checked(s, prompt, &sp, out, &r);
    pangu_session_free(s);
}

static void test_same_seed_same_text(void **state) {
    (void)state;
    const uint64_t seeds[] = {0, 42, UINT64_MAX};
    for (size_t i = 0; i < 3; ++i) {
        sample_with(kPoem, 0.8f, seeds[i], &g_rec);
        sample_with(kPoem, 0.8f, seeds[i], &g_rec2);
        assert_int_equal(g_rec.n_calls, g_rec2.n_calls);
        assert_memory_equal(g_rec.toks, g_rec2.toks, (size_t)g_rec.n_calls * sizeof(int32_t));
        assert_string_equal(g_rec.text, g_rec2.text);
    }
}

static void test_different_seeds_differ(void **state) {
    (void)state;
    const char *prompts[] = {kPoem, g_docs.text[1]};
    for (size_t p = 0; p < 2; ++p) {
        sample_with(prompts[p], 1.0f, 1, &g_rec);
        int differ = 0;
        for (uint64_t seed = 2; seed <= 6; ++seed) {
            sample_with(prompts[p], 1.0f, seed, &g_rec2);
            if (g_rec2.n_calls != g_rec.n_calls ||
                memcmp(g_rec.toks, g_rec2.toks, (size_t)g_rec.n_calls * sizeof(int32_t)) != 0)
                ++differ;
        }
        if (differ == 0) fail_msg("seeds 1..6 all produced the same text from \"%s\"", prompts[p]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_helpers),
        cmocka_unit_test(test_stream_poem_sampled),
        cmocka_unit_test(test_stream_documents_sampled),
        cmocka_unit_test(test_stream_documents_wild),
        cmocka_unit_test(test_stream_continuing_turns),
        cmocka_unit_test(test_stop_string),
        cmocka_unit_test(test_stop_string_repeated_in_token),
        cmocka_unit_test(test_stop_string_earliest_wins),
        cmocka_unit_test(test_stop_string_held_back_released),
        cmocka_unit_test(test_stop_tokens),
        cmocka_unit_test(test_max_new_tokens),
        cmocka_unit_test(test_eos),
        cmocka_unit_test(test_same_seed_same_text),
        cmocka_unit_test(test_different_seeds_differ),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
