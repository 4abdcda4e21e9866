/*
 * pangu-perplexity -- the perplexity of an openPangu-Embedded model on a text file, or on the `text` fields of
 * a JSONL file (one JSON object per line).
 *
 * How the text is scored (docs/perplexity.md):
 *  - A plain text file is one document; with --jsonl every line's `text` string is one document. Blank lines of
 *    a JSONL file are skipped. Each document is tokenized on its own, with the BOS token if the tokenizer asks
 *    for it and no special-token parsing.
 *  - Each document is cut into windows of CTX tokens from its start (the last one may be shorter); a window never
 *    holds tokens of two documents. A window is evaluated in a fresh context, and every token of it but the
 *    first is scored given the tokens before it in the window: a document of T tokens scores T - ceil(T / CTX).
 *  - The score is the mean negative log-likelihood (natural log) of the scored tokens; the perplexity is its
 *    exponential. --max-tokens N stops after N scored tokens.
 *
 * Progress goes to stderr; stdout gets one line, `ppl X tokens N`, or with --json one JSON object.
 * C99 + POSIX against the public header only.
 *
 * Exit status: 0 success, 1 runtime failure (message on stderr), 2 usage error, 130 interrupted by Ctrl-C.
 */
#define _POSIX_C_SOURCE 200809L

#include <pangu/pangu.h>

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROG "pangu-perplexity"

#include "common/cli_util.h"
#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130
#define DEFAULT_CTX 512
#define JSON_MAX_DEPTH 256    /* nesting of arrays and objects inside a JSONL line */
#define PROGRESS_LINES 100    /* off a terminal, about this many progress lines per run */

#if defined(__GNUC__)
#define NORETURN __attribute__((noreturn))
#else
#define NORETURN
#endif

/* ------------------------------------------------------------------------------------------------ */
/* Options                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

typedef struct options {
    const char *model_dir;
    const char *file;
    long ctx;             /* -c; 0 = DEFAULT_CTX, at most the model's context */
    long long max_tokens; /* --max-tokens; 0 = all */
    int jsonl, json;
    pangu_model_params model;     /* --backend */
    pangu_session_params session; /* -b, -t; n_ctx and spec_mode are set from the window length */
} options;

static void options_init(options *o) {
    memset(o, 0, sizeof *o);
    pangu_model_params_init(&o->model);
    pangu_session_params_init_sized(&o->session, sizeof o->session);
    o->session.n_threads = (int32_t)default_threads();
}

static void usage(FILE *out) {
    options d;
    options_init(&d);
    fprintf(out,
            "usage: " PROG " -m MODEL_DIR -f FILE [options]\n"
            "\n"
            "Perplexity of an openPangu-Embedded model on a text file, or with --jsonl on the \"text\" fields of a\n"
            "JSONL file. Each document (the whole text file, or one JSONL line) is tokenized on its own (BOS as the\n"
            "tokenizer asks) and cut into windows of CTX tokens; each window is evaluated in a fresh context and all\n"
            "of its tokens but the first are scored. Progress goes to stderr; stdout gets 'ppl X tokens N'.\n"
            "\n"
            "  -m, --model DIR          model directory (required)\n"
            "  -f, --file FILE          the text to score (required)\n"
            "      --jsonl              FILE is JSONL: one JSON object per line, its \"text\" string is a document\n"
            "  -c, --ctx-size N         window length in tokens, 2 .. the model's maximum (default %d, at most the\n"
            "                           model's maximum)\n"
            "  -b, --batch-size N       tokens per forward pass, 1..4096 (default %d)\n"
            "  -t, --threads N          compute threads (default: online CPUs, at most %d)\n"
            "      --max-tokens N       stop after N scored tokens (default: all)\n"
            "      --backend NAME       device backend: cpu, npu-sim (default: $PANGU_BACKEND, else cpu)\n"
            "      --precision P        activations entering the matmuls: auto (what the checkpoint says), f32,\n"
            "                           bf16, int8 or int16 (integer weights only; default auto)\n"
            "      --kv-type T          KV cache elements: f16 (default), bf16, q8, f32\n"
            "      --json               print {\"ppl\", \"tokens\", \"nll\", \"windows\", \"ctx\"} instead of the line\n"
            "      --version            print the version and exit\n"
            "  -h, --help               print this help and exit\n"
            "\n"
            "Exit status: 0 success, 1 error, 2 usage error, 130 interrupted.\n",
            DEFAULT_CTX, (int)d.session.n_batch, CLI_MAX_THREADS);
}

static NORETURN void usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry '" PROG " --help' for more information.\n", stderr);
    exit(EXIT_USAGE);
}

static long long parse_integer(const char *flag, const char *s, long long lo, long long hi) {
    char *end = NULL;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE || v < lo || v > hi || *s == ' ' || *s == '\t')
        usage_error("%s expects an integer from %lld to %lld, not '%s'", flag, lo, hi, s);
    return v;
}

static int is_option(const char *a, const char *short_name, const char *long_name) {
    return (short_name && strcmp(a, short_name) == 0) || (long_name && strcmp(a, long_name) == 0);
}

/* The value of the flag argv[*i], the next argument (a usage error if there is none). */
static const char *flag_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) usage_error("option %s needs a value", argv[*i]);
    return argv[++*i];
}

static void parse_args(int argc, char **argv, options *o) {
    options_init(o);
    for (int i = 1; i < argc; ++i) {
        const char *flag = argv[i];
#define IS(short_, long_) is_option(flag, short_, long_)
        if (IS("-h", "--help")) {
            usage(stdout);
            exit(0);
        } else if (IS(NULL, "--version")) {
            printf(PROG " %s (libpangu_c %s)\n", PANGU_VERSION_STRING, pangu_version_string());
            exit(0);
        } else if (IS("-m", "--model")) {
            o->model_dir = flag_value(argc, argv, &i);
        } else if (IS("-f", "--file")) {
            o->file = flag_value(argc, argv, &i);
        } else if (IS("-c", "--ctx-size")) {
            const char *v = flag_value(argc, argv, &i);
            char *end = NULL;
            errno = 0;
            o->ctx = strtol(v, &end, 10);
            if (end == v || *end != '\0' || errno == ERANGE || o->ctx < 2 || o->ctx > INT32_MAX || *v == ' ' ||
                *v == '\t')
                usage_error("%s expects a window length from 2 tokens to the model's context, not '%s'", flag, v);
        } else if (IS("-b", "--batch-size")) {
            o->session.n_batch = (int32_t)parse_integer(flag, flag_value(argc, argv, &i), 1, 4096);
        } else if (IS("-t", "--threads")) {
            o->session.n_threads = (int32_t)parse_integer(flag, flag_value(argc, argv, &i), 1, 256);
        } else if (IS(NULL, "--max-tokens")) {
            o->max_tokens = parse_integer(flag, flag_value(argc, argv, &i), 1, LLONG_MAX);
        } else if (IS(NULL, "--backend")) {
            o->model.backend = flag_value(argc, argv, &i);
            if (*o->model.backend == '\0') usage_error("--backend needs a name");
        } else if (IS(NULL, "--precision")) {
            const char *v = flag_value(argc, argv, &i);
            if (!cli_parse_precision(v, &o->model.activation_precision))
                usage_error("--precision expects auto, f32, bf16, int8 or int16, not '%s'", v);
        } else if (IS(NULL, "--kv-type")) {
            const char *v = flag_value(argc, argv, &i);
            if (!cli_parse_kv_type(v, &o->session.kv_type))
                usage_error("--kv-type expects f16, bf16, q8 or f32, not '%s'", v);
        } else if (IS(NULL, "--jsonl")) {
            o->jsonl = 1;
        } else if (IS(NULL, "--json")) {
            o->json = 1;
        } else if (flag[0] == '-' && flag[1] != '\0') {
            usage_error("unknown option '%s'", flag);
        } else {
            usage_error("unexpected argument '%s' (the text file goes after -f)", flag);
        }
#undef IS
    }
    if (!o->model_dir) usage_error("a model directory is required (-m DIR)");
    if (!o->file) usage_error("a text file is required (-f FILE)");
    o->session.spec_mode = PANGU_SPEC_OFF;
}

/* ------------------------------------------------------------------------------------------------ */
/* Helpers                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

static void sbuf_putc(sbuf *b, char c) { sbuf_append(b, &c, 1); }


/* ------------------------------------------------------------------------------------------------ */
/* JSONL: the "text" string of each line                                                            */
/* ------------------------------------------------------------------------------------------------ */

/* A JSON text being read: [p, end), with the first error's description. */
typedef struct jreader {
    const char *start, *p, *end;
    const char *error;
    size_t error_at; /* offset of the error in the line */
} jreader;

static int jfail(jreader *r, const char *what) {
    if (!r->error) {
        r->error = what;
        r->error_at = (size_t)(r->p - r->start);
    }
    return 0;
}

static void jskip_ws(jreader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) ++r->p;
}

static int jhex4(jreader *r, unsigned *out) {
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
        if (r->p >= r->end) return jfail(r, "incomplete \\u escape");
        const char c = *r->p++;
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return jfail(r, "bad hex digit in a \\u escape");
    }
    *out = v;
    return 1;
}

static void put_utf8(sbuf *out, unsigned cp) {
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (char)(0xF0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    sbuf_append(out, b, n);
}

/* \uXXXX (the backslash and 'u' read), with a surrogate pair joined into one code point. */
static int junicode_escape(jreader *r, sbuf *out) {
    unsigned cp;
    if (!jhex4(r, &cp)) return 0;
    if (cp >= 0xDC00 && cp <= 0xDFFF) return jfail(r, "unpaired low surrogate in a \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        unsigned lo;
        if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u')
            return jfail(r, "high surrogate not followed by a \\u low surrogate");
        r->p += 2;
        if (!jhex4(r, &lo)) return 0;
        if (lo < 0xDC00 || lo > 0xDFFF) return jfail(r, "high surrogate not followed by a low surrogate");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (out) put_utf8(out, cp);
    return 1;
}

/* A string at r->p (its opening quote), decoded into out (NULL: only checked). */
static int jstring(jreader *r, sbuf *out) {
    if (r->p >= r->end || *r->p != '"') return jfail(r, "expected a string");
    ++r->p;
    for (;;) {
        const char *run = r->p;
        while (r->p < r->end && *r->p != '"' && *r->p != '\\' && (unsigned char)*r->p >= 0x20) ++r->p;
        if (out) sbuf_append(out, run, (size_t)(r->p - run));
        if (r->p >= r->end) return jfail(r, "unterminated string");
        const char c = *r->p++;
        if (c == '"') return 1;
        if (c != '\\') {
            --r->p;
            return jfail(r, "unescaped control character in a string");
        }
        if (r->p >= r->end) return jfail(r, "unterminated string");
        const char e = *r->p++;
        char plain;
        switch (e) {
            case '"': plain = '"'; break;
            case '\\': plain = '\\'; break;
            case '/': plain = '/'; break;
            case 'b': plain = '\b'; break;
            case 'f': plain = '\f'; break;
            case 'n': plain = '\n'; break;
            case 'r': plain = '\r'; break;
            case 't': plain = '\t'; break;
            case 'u':
                if (!junicode_escape(r, out)) return 0;
                continue;
            default: --r->p; return jfail(r, "unknown escape in a string");
        }
        if (out) sbuf_putc(out, plain);
    }
}

static int jdigits(jreader *r) {
    const char *s = r->p;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') ++r->p;
    return r->p > s;
}

/* -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static int jnumber(jreader *r) {
    if (r->p < r->end && *r->p == '-') ++r->p;
    if (r->p < r->end && *r->p == '0') ++r->p;
    else if (!jdigits(r)) return jfail(r, "bad number");
    if (r->p < r->end && *r->p == '.') {
        ++r->p;
        if (!jdigits(r)) return jfail(r, "bad number");
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        ++r->p;
        if (r->p < r->end && (*r->p == '+' || *r->p == '-')) ++r->p;
        if (!jdigits(r)) return jfail(r, "bad number");
    }
    return 1;
}

static int jliteral(jreader *r, const char *word) {
    const size_t n = strlen(word);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return jfail(r, "unexpected character");
    r->p += n;
    return 1;
}

static int jvalue(jreader *r, int depth);

/* An array or object at r->p, its members checked and skipped. */
static int jcontainer(jreader *r, int depth) {
    const char close = *r->p == '{' ? '}' : ']';
    if (depth >= JSON_MAX_DEPTH) return jfail(r, "nested too deeply");
    ++r->p;
    jskip_ws(r);
    if (r->p < r->end && *r->p == close) {
        ++r->p;
        return 1;
    }
    for (;;) {
        jskip_ws(r);
        if (close == '}') {
            if (!jstring(r, NULL)) return 0;
            jskip_ws(r);
            if (r->p >= r->end || *r->p != ':') return jfail(r, "expected ':'");
            ++r->p;
        }
        if (!jvalue(r, depth + 1)) return 0;
        jskip_ws(r);
        if (r->p < r->end && *r->p == ',') {
            ++r->p;
            continue;
        }
        if (r->p < r->end && *r->p == close) {
            ++r->p;
            return 1;
        }
        return jfail(r, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

/* Any value at r->p (after white space), checked and skipped. */
static int jvalue(jreader *r, int depth) {
    jskip_ws(r);
    if (r->p >= r->end) return jfail(r, "expected a value");
    switch (*r->p) {
        case '"': return jstring(r, NULL);
        case '{':
        case '[': return jcontainer(r, depth);
        case 't': return jliteral(r, "true");
        case 'f': return jliteral(r, "false");
        case 'n': return jliteral(r, "null");
        default:
            if (*r->p == '-' || (*r->p >= '0' && *r->p <= '9')) return jnumber(r);
            return jfail(r, "unexpected character");
    }
}

/* One JSONL line: a JSON object. Its "text" member (the last one if the key repeats, as most parsers do) is
 * decoded into *text; *has_text says whether that member is a string. Returns 1, or 0 with r->error set. */
static int jsonl_line(jreader *r, sbuf *text, int *has_text) {
    sbuf key = {0};
    *has_text = 0;
    int ok = 0;
    jskip_ws(r);
    if (r->p >= r->end || *r->p != '{') {
        jfail(r, "expected a JSON object");
        goto done;
    }
    ++r->p;
    jskip_ws(r);
    if (r->p < r->end && *r->p == '}') {
        ++r->p;
    } else {
        for (;;) {
            jskip_ws(r);
            key.len = 0;
            if (!jstring(r, &key)) goto done;
            jskip_ws(r);
            if (r->p >= r->end || *r->p != ':') {
                jfail(r, "expected ':'");
                goto done;
            }
            ++r->p;
            jskip_ws(r);
            const int is_text = key.len == 4 && memcmp(key.data, "text", 4) == 0;
            if (is_text && r->p < r->end && *r->p == '"') {
                text->len = 0;
                sbuf_append(text, "", 0);
                if (!jstring(r, text)) goto done;
                *has_text = 1;
            } else {
                if (is_text) *has_text = 0;
                if (!jvalue(r, 1)) goto done;
            }
            jskip_ws(r);
            if (r->p < r->end && *r->p == ',') {
                ++r->p;
                continue;
            }
            if (r->p < r->end && *r->p == '}') {
                ++r->p;
                break;
            }
            jfail(r, "expected ',' or '}'");
            goto done;
        }
    }
    jskip_ws(r);
    if (r->p != r->end) {
        jfail(r, "text after the JSON object");
        goto done;
    }
    ok = 1;
done:
    free(key.data);
    return ok;
}

/* ------------------------------------------------------------------------------------------------ */
/* Documents and tokens                                                                             */
/* ------------------------------------------------------------------------------------------------ */

/* The documents' texts, back to back, each with the line it came from (0 for a plain text file). */
typedef struct texts {
    sbuf bytes;
    size_t *start; /* n + 1 offsets into bytes */
    long *line;
    size_t n, cap;
} texts;

static void texts_add(texts *t, const char *s, size_t len, long line) {
    if (t->n + 2 > t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->start = xrealloc(t->start, t->cap * sizeof *t->start);
        t->line = xrealloc(t->line, t->cap * sizeof *t->line);
    }
    if (t->n == 0) t->start[0] = 0;
    sbuf_append(&t->bytes, s, len);
    t->line[t->n] = line;
    t->start[++t->n] = t->bytes.len;
}

static void texts_free(texts *t) {
    free(t->bytes.data);
    free(t->start);
    free(t->line);
}

/* Every line of a JSONL file: its "text" string, or an error naming the line. Returns 0, or 1 after an error. */
static int parse_jsonl(const char *path, const char *data, size_t len, texts *out) {
    sbuf text = {0};
    long line_no = 0;
    const char *p = data, *end = data + len;
    if (len >= 3 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) p += 3; /* a UTF-8 byte order mark */
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        ++line_no;
        jreader r = {p, p, line_end, NULL, 0};
        jskip_ws(&r);
        if (r.p != line_end) { /* blank lines are skipped */
            r.p = p;
            int has_text = 0;
            if (!jsonl_line(&r, &text, &has_text)) {
                fprintf(stderr, PROG ": error: %s:%ld: malformed JSON: %s at byte %zu of the line\n", path, line_no, r.error,
                        r.error_at + 1);
                free(text.data);
                return 1;
            }
            if (!has_text) {
                fprintf(stderr, PROG ": error: %s:%ld: the object has no string \"text\" field\n", path, line_no);
                free(text.data);
                return 1;
            }
            texts_add(out, text.data, text.len, line_no);
        }
        p = nl ? nl + 1 : end;
    }
    free(text.data);
    if (out->n == 0) {
        fprintf(stderr, PROG ": error: %s holds no JSON lines\n", path);
        return 1;
    }
    return 0;
}

/* The documents' tokens back to back; document d is ids[doc[d] .. doc[d + 1]). */
typedef struct corpus {
    int32_t *ids;
    size_t n_ids, cap_ids;
    size_t *doc;
    size_t n_docs;
} corpus;

static void corpus_free(corpus *c) {
    free(c->ids);
    free(c->doc);
}

/* Tokenize the texts (BOS as the tokenizer asks, no special tokens), in order, until those tokenized hold
 * max_tokens (0: all) tokens to score in windows of ctx. Returns 0, or 1 after an error. */
static int tokenize_texts(const pangu_model *model, const char *path, const texts *t, size_t ctx,
                          long long max_tokens, corpus *c) {
    unsigned long long to_score = 0;
    c->doc = xrealloc(NULL, (t->n + 1) * sizeof *c->doc);
    c->doc[0] = 0;
    c->cap_ids = 4096;
    c->ids = xrealloc(NULL, c->cap_ids * sizeof *c->ids);
    for (size_t d = 0; d < t->n; ++d) {
        const char *s = t->bytes.data + t->start[d];
        const size_t len = t->start[d + 1] - t->start[d];
        size_t n = 0;
        pangu_status st = pangu_tokenize(model, s, len, -1, 0, c->ids + c->n_ids, c->cap_ids - c->n_ids, &n);
        if (st == PANGU_ERR_BUFFER_TOO_SMALL) {
            size_t cap = c->cap_ids;
            while (cap - c->n_ids < n) cap *= 2;
            c->ids = xrealloc(c->ids, cap * sizeof *c->ids);
            c->cap_ids = cap;
            st = pangu_tokenize(model, s, len, -1, 0, c->ids + c->n_ids, c->cap_ids - c->n_ids, &n);
        }
        if (st != PANGU_OK) {
            char what[512];
            if (t->line[d] > 0) snprintf(what, sizeof what, "tokenizing %s:%ld", path, t->line[d]);
            else snprintf(what, sizeof what, "tokenizing %s", path);
            return fail(what, st);
        }
        c->n_ids += n;
        c->doc[++c->n_docs] = c->n_ids;
        to_score += n - (n + ctx - 1) / ctx; /* each window's first token is context only */
        if (max_tokens > 0 && to_score >= (unsigned long long)max_tokens) break;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Windows and scoring                                                                              */
/* ------------------------------------------------------------------------------------------------ */

/* One window: the tokens ids[first .. first + n_inputs] of which the first n_inputs are evaluated and the last
 * n_inputs scored (each given those before it). */
typedef struct window {
    size_t first, n_inputs;
} window;

/* Cut every document into windows of ctx tokens from its start, until max_tokens (0: all) are scored. */
static window *plan_windows(const corpus *c, size_t ctx, long long max_tokens, size_t *n_windows) {
    size_t n = 0, cap = 0;
    unsigned long long scored = 0, budget = max_tokens > 0 ? (unsigned long long)max_tokens : ULLONG_MAX;
    window *w = NULL;
    for (size_t d = 0; d < c->n_docs && scored < budget; ++d) {
        for (size_t w0 = c->doc[d]; w0 + 1 < c->doc[d + 1] && scored < budget; w0 += ctx) {
            size_t len = c->doc[d + 1] - w0;
            if (len > ctx) len = ctx;
            size_t n_inputs = len - 1;
            if (n_inputs > budget - scored) n_inputs = (size_t)(budget - scored);
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                w = xrealloc(w, cap * sizeof *w);
            }
            w[n].first = w0;
            w[n].n_inputs = n_inputs;
            ++n;
            scored += n_inputs;
        }
    }
    *n_windows = n;
    return w;
}

/* -log softmax(row)[target] in double, with the maximum subtracted first; NaN if the row is not finite. */
static double token_nll(const float *row, int32_t n_vocab, int32_t target) {
    double mx = row[0];
    for (int32_t v = 1; v < n_vocab; ++v)
        if (row[v] > mx) mx = row[v];
    double sum = 0;
    for (int32_t v = 0; v < n_vocab; ++v) sum += exp((double)row[v] - mx);
    if (!isfinite(mx) || !isfinite(sum)) return NAN;
    return log(sum) + mx - (double)row[target];
}

typedef struct scorer {
    pangu_session *session;
    int32_t n_vocab;
    size_t n_batch;
    float *logits; /* n_batch rows */
    double nll;    /* summed */
    unsigned long long scored;
    int bad_logits; /* a row of logits held NaN or Inf (reported) */
} scorer;

/* Evaluate one window in a fresh context, batch by batch, adding up the NLL of its scored tokens. */
static pangu_status score_window(scorer *s, const int32_t *ids, const window *w) {
    pangu_status st = pangu_session_reset(s->session);
    for (size_t pos = 0; st == PANGU_OK && pos < w->n_inputs; pos += s->n_batch) {
        size_t n = w->n_inputs - pos;
        if (n > s->n_batch) n = s->n_batch;
        const int32_t *in = ids + w->first + pos;
        st = pangu_session_eval(s->session, in, n, s->logits);
        for (size_t r = 0; st == PANGU_OK && r < n; ++r) {
            const double nll = token_nll(s->logits + r * (size_t)s->n_vocab, s->n_vocab, in[r + 1]);
            if (!isfinite(nll)) {
                fprintf(stderr, "\n" PROG ": error: the logits before token %zu of the text are not finite\n",
                        w->first + pos + r + 1);
                s->bad_logits = 1;
                return PANGU_ERR_NUMERIC;
            }
            s->nll += nll;
            ++s->scored;
        }
    }
    return st;
}

/* ------------------------------------------------------------------------------------------------ */
/* Ctrl-C and progress                                                                              */
/* ------------------------------------------------------------------------------------------------ */

static volatile sig_atomic_t g_interrupted = 0;

static void on_sigint(int sig) {
    (void)sig;
    if (g_interrupted) _exit(EXIT_INTERRUPTED);
    g_interrupted = 1;
}

static int abort_requested(void *user_data) {
    (void)user_data;
    return g_interrupted != 0;
}

static void install_sigint(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

/* On a terminal one line rewritten in place; otherwise a line every few windows (about PROGRESS_LINES). */
static void progress(const scorer *s, size_t i, size_t n, double ms, int tty) {
    const size_t every = n > PROGRESS_LINES ? (n + PROGRESS_LINES - 1) / PROGRESS_LINES : 1;
    if (!tty && (i + 1) % every != 0 && i + 1 != n) return;
    fprintf(stderr, "%s" PROG ": window %zu of %zu, %llu tokens, ppl %.4f, %.0f tokens/s%s", tty ? "\r" : "", i + 1,
            n, s->scored, exp(s->nll / (double)s->scored), ms > 0 ? 1e3 * (double)s->scored / ms : 0.0,
            tty ? "" : "\n");
    if (tty && i + 1 == n) fputc('\n', stderr);
    fflush(stderr);
}

/* ------------------------------------------------------------------------------------------------ */
/* main                                                                                             */
/* ------------------------------------------------------------------------------------------------ */

/* The file's documents: the whole file, or the JSONL lines' texts. Returns 0, or 1 after an error. */
static int read_texts(const options *o, texts *t) {
    size_t len = 0;
    char *data = read_file(o->file, "", &len);
    if (!data) return 1;
    int rc = 0;
    if (len == 0) {
        fprintf(stderr, PROG ": error: '%s' is empty\n", o->file);
        rc = 1;
    } else if (o->jsonl) {
        rc = parse_jsonl(o->file, data, len, t);
    } else {
        texts_add(t, data, len, 0);
    }
    free(data);
    return rc;
}

/* Load the model and check the window length against it. Returns 0, or 1 after an error. */
static int load_model(options *o, pangu_model **model, pangu_model_info *info) {
    const double t0 = now_ms();
    pangu_status st = pangu_model_load(o->model_dir, &o->model, model);
    if (st != PANGU_OK) return fail("loading the model", st);
    memset(info, 0, sizeof *info);
    info->struct_size = sizeof *info;
    st = pangu_model_get_info(*model, info);
    if (st != PANGU_OK) return fail("reading the model info", st);
    fprintf(stderr, PROG ": loaded %s (%s) in %.1f ms: %d layers, vocab %d, context %d, %.2f M parameters\n",
            o->model_dir, pangu_model_backend(*model), now_ms() - t0, info->n_layer, info->n_vocab, info->n_ctx_train,
            info->n_params / 1e6);
    if (o->ctx == 0) o->ctx = DEFAULT_CTX < info->n_ctx_train ? DEFAULT_CTX : info->n_ctx_train;
    if (o->ctx < 2 || o->ctx > info->n_ctx_train) {
        fprintf(stderr, PROG ": error: -c %ld is out of range: windows are 2 to %d tokens (the model's context)\n",
                o->ctx, info->n_ctx_train);
        return 1;
    }
    return 0;
}

/* Score the windows; on success the totals are in *s. Returns 0, 1 after an error, or EXIT_INTERRUPTED. */
static int run(const options *o, pangu_model *model, const corpus *c, const window *w, size_t n_windows,
               scorer *s) {
    pangu_session_params sp = o->session;
    sp.n_ctx = (int32_t)o->ctx;
    pangu_status st = pangu_session_create(model, &sp, &s->session);
    if (st != PANGU_OK) return fail("creating the session", st);
    s->n_batch = (size_t)(sp.n_batch < sp.n_ctx ? sp.n_batch : sp.n_ctx);
    s->logits = xrealloc(NULL, s->n_batch * (size_t)s->n_vocab * sizeof *s->logits);
    install_sigint();
    pangu_session_set_abort_callback(s->session, abort_requested, NULL);
    const int tty = isatty(STDERR_FILENO);
    const double t0 = now_ms();
    for (size_t i = 0; i < n_windows; ++i) {
        st = score_window(s, c->ids, &w[i]);
        if (st == PANGU_ERR_CANCELLED || g_interrupted) {
            fprintf(stderr, "\n" PROG ": interrupted\n");
            return EXIT_INTERRUPTED;
        }
        if (s->bad_logits) return 1;
        if (st != PANGU_OK) {
            if (tty) fputc('\n', stderr);
            return fail("evaluating a window", st);
        }
        progress(s, i, n_windows, now_ms() - t0, tty);
    }
    const double ms = now_ms() - t0;
    fprintf(stderr, PROG ": %llu tokens scored in %zu window%s of up to %ld tokens in %.2f s (%.0f tokens/s)\n",
            s->scored, n_windows, n_windows == 1 ? "" : "s", o->ctx, ms / 1e3,
            ms > 0 ? 1e3 * (double)s->scored / ms : 0.0);
    return 0;
}

static void print_result(const options *o, const scorer *s, size_t n_windows) {
    const double nll = s->nll / (double)s->scored;
    if (o->json)
        printf("{\"ppl\": %.6f, \"tokens\": %llu, \"nll\": %.8f, \"windows\": %zu, \"ctx\": %ld}\n", exp(nll), s->scored,
               nll, n_windows, o->ctx);
    else
        printf("ppl %.4f tokens %llu\n", exp(nll), s->scored);
    fflush(stdout);
}

int main(int argc, char **argv) {
    cli_prog = PROG;
    options o;
    parse_args(argc, argv, &o);
    if (pangu_version_number() / 10000 != PANGU_VERSION_MAJOR)
        fprintf(stderr, PROG ": warning: built for libpangu_c %s but running with %s\n", PANGU_VERSION_STRING,
                pangu_version_string());

    texts t;
    memset(&t, 0, sizeof t);
    corpus c;
    memset(&c, 0, sizeof c);
    scorer s;
    memset(&s, 0, sizeof s);
    pangu_model *model = NULL;
    pangu_model_info info;
    window *w = NULL;
    size_t n_windows = 0;

    int rc = read_texts(&o, &t);
    if (rc == 0) rc = load_model(&o, &model, &info);
    if (rc == 0) rc = tokenize_texts(model, o.file, &t, (size_t)o.ctx, o.max_tokens, &c);
    if (rc == 0) {
        if (c.n_docs == t.n)
            fprintf(stderr, PROG ": %s: %zu document%s, %zu token%s\n", o.file, c.n_docs, c.n_docs == 1 ? "" : "s",
                    c.n_ids, c.n_ids == 1 ? "" : "s");
        else /* --max-tokens: enough were tokenized */
            fprintf(stderr, PROG ": %s: the first %zu of %zu documents, %zu tokens\n", o.file, c.n_docs, t.n,
                    c.n_ids);
        w = plan_windows(&c, (size_t)o.ctx, o.max_tokens, &n_windows);
        if (n_windows == 0) {
            fprintf(stderr, PROG ": error: nothing to score in '%s': no document has at least 2 tokens\n", o.file);
            rc = 1;
        }
    }
    texts_free(&t);
    if (rc == 0) {
        s.n_vocab = info.n_vocab;
        rc = run(&o, model, &c, w, n_windows, &s);
    }
    if (rc == 0) print_result(&o, &s, n_windows);
    free(w);
    free(s.logits);
    pangu_session_free(s.session);
    corpus_free(&c);
    pangu_model_free(model);
    return rc;
}
