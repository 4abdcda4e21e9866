/* Speculative decoding: generation speed of every spec_mode against plain decoding, on one target model.
 *
 *   bench_spec [-m DIR] [--draft DIR] [--shared DIR] [-t THREADS] [-r RUNS] [-n TOKENS] [--prompts K]
 *              [--modes off,pld,draft,self] [--draft-len K] [--ngram N] [--self-layers 0,4]
 *              [--json FILE] [--dat FILE]
 * (--json also records every prompt and what plain decoding generated from it, for bench/pld_ceiling.py)
 *
 * Workloads (prompts built from the shared held-out text, ../shared/data/dev.jsonl):
 *   grounded   continue  the first part of documents (up to 60 % of the document, at most 160 tokens)
 *              re-emit   a Python function, an instruction-like comment, then its first line again
 *              edit      the same with an identifier renamed in the copy to write
 *   free-form  poetry    Chinese poem openings ("《静夜思》\n作者：李白\n床前明月光，") and Chinese documents
 *              sampling  the poem openings, temperature 0.8, top-p 0.95, a fixed seed per prompt
 * Every other workload is greedy.
 *
 * One repetition generates N tokens from every prompt of a workload in every mode, the modes interleaved
 * prompt by prompt (off, pld, draft, self, off, pld, ...) so that machine noise hits them alike. A mode's
 * speed in a repetition is its generated tokens over its generation time summed over the prompts; the
 * figure is the median of R repetitions, and the speed-up is median(mode) / median(off) from the same
 * repetitions. Generation time is pangu_generate_result.generate_ms (first generated token to last): the
 * prompt is evaluated before, with pangu_session_eval, and is not timed. A draft model's own prompt
 * evaluation happens inside generation and is timed. When the model ends a text (EOS) before N tokens,
 * generation resumes from the context so that every run generates N tokens.
 *
 * Drafting statistics come from pangu_session_get_stats (differences around each generation, summed over
 * the repetitions): acceptance = accepted / drafted, accepted per verification step, target forward passes
 * per generated token (a draft model's passes are not counted), and the histogram of accepted lengths.
 * Greedy output must be token for token the same in every mode (and PLD sampling the same for the same seed,
 * as pangu.h promises): a difference is printed as MISMATCH and the exit status is 3.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pangu/pangu.h"

#ifndef PANGU_SOURCE_DIR
#define PANGU_SOURCE_DIR "."
#endif
#ifndef PANGU_DEFAULT_MODEL
#define PANGU_DEFAULT_MODEL PANGU_SOURCE_DIR "/models/pangu-tiny"
#endif

#define N_MODES 4
#define MAX_PROMPTS 32
#define MAX_WORKLOADS 5
#define CONT_MAX_TOKENS 160  /* "continue" prompts: at most this many document tokens */
#define BLOCK_MAX_TOKENS 140 /* re-emit/edit: a function of at most this many tokens */
#define BLOCK_MIN_TOKENS 40
#define ZH_PROMPT_TOKENS 48  /* poetry: at most this many tokens of a Chinese document */

static const char *const kModeName[N_MODES] = {"off", "pld", "draft", "self"};
static const int32_t kModeValue[N_MODES] = {PANGU_SPEC_OFF, PANGU_SPEC_PLD, PANGU_SPEC_DRAFT, PANGU_SPEC_SELF};

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts a copy). */
static double median(const double *v, int n) {
    double tmp[1024];
    if (n <= 0 || n > 1024) return 0;
    memcpy(tmp, v, sizeof(double) * (size_t)n);
    qsort(tmp, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "bench_spec: out of memory\n");
        exit(1);
    }
    return p;
}

static char *xstrndup(const char *s, size_t n) {
    char *d = xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static int die(const char *what, pangu_status st) {
    fprintf(stderr, "bench_spec: %s: %s: %s\n", what, pangu_status_string(st), pangu_last_error());
    return 1;
}

/* ------------------------------------------------------------------------------------------------ */
/* Growable byte string                                                                             */
/* ------------------------------------------------------------------------------------------------ */

typedef struct sbuf {
    char *data;
    size_t len, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            fprintf(stderr, "bench_spec: out of memory\n");
            exit(1);
        }
        b->data = d;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* ------------------------------------------------------------------------------------------------ */
/* dev.jsonl: one {"name": ..., "text": ...} object per line                                        */
/* ------------------------------------------------------------------------------------------------ */

static void put_utf8(sbuf *b, uint32_t cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    sb_add(b, u, n);
}

/* Four hex digits at s, or -1. */
static long hex4(const char *s) {
    long v = 0;
    for (int i = 0; i < 4; ++i) {
        const char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    return v;
}

/* Unescape the JSON string whose opening quote is at *pp into `out`; *pp moves past the closing quote.
 * Handles \" \\ \/ \b \f \n \r \t and \uXXXX, surrogate pairs included (a lone surrogate becomes U+FFFD).
 * Returns 0, or -1 for a malformed string. */
static int json_string(const char **pp, sbuf *out) {
    const char *p = *pp;
    if (*p != '"') return -1;
    ++p;
    out->len = 0;
    sb_add(out, "", 0);
    for (;;) {
        const char *run = p;
        while (*p && *p != '"' && *p != '\\') ++p;
        sb_add(out, run, (size_t)(p - run));
        if (*p == '"') break;
        if (*p == '\0') return -1;
        ++p; /* backslash */
        switch (*p) {
        case '"': sb_add(out, "\"", 1); break;
        case '\\': sb_add(out, "\\", 1); break;
        case '/': sb_add(out, "/", 1); break;
        case 'b': sb_add(out, "\b", 1); break;
        case 'f': sb_add(out, "\f", 1); break;
        case 'n': sb_add(out, "\n", 1); break;
        case 'r': sb_add(out, "\r", 1); break;
        case 't': sb_add(out, "\t", 1); break;
        case 'u': {
            long cp = hex4(p + 1);
            if (cp < 0) return -1;
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                const long lo = (p[1] == '\\' && p[2] == 'u') ? hex4(p + 3) : -1;
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                } else {
                    cp = 0xFFFD;
                }
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                cp = 0xFFFD;
            }
            put_utf8(out, (uint32_t)cp);
            break;
        }
        default: return -1;
        }
        ++p;
    }
    *pp = p + 1;
    return 0;
}

static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') ++p;
    return p;
}

typedef struct doc {
    char *name;
    char *text;
    size_t len;
} doc;

/* Parse one line {"name": "...", "text": "..."} (other string members are ignored). 0 on success. */
static int parse_doc_line(const char *line, doc *d) {
    sbuf key = {0}, val = {0};
    int rc = -1;
    d->name = d->text = NULL;
    const char *p = skip_ws(line);
    if (*p++ != '{') goto done;
    for (;;) {
        p = skip_ws(p);
        if (*p == '}') break;
        if (json_string(&p, &key)) goto done;
        p = skip_ws(p);
        if (*p++ != ':') goto done;
        p = skip_ws(p);
        if (json_string(&p, &val)) goto done; /* only string members are expected */
        if (!strcmp(key.data, "name") && !d->name) d->name = xstrndup(val.data, val.len);
        else if (!strcmp(key.data, "text") && !d->text) {
            d->text = xstrndup(val.data, val.len);
            d->len = val.len;
        }
        p = skip_ws(p);
        if (*p == ',') ++p;
        else if (*p != '}') goto done;
    }
    rc = d->name && d->text ? 0 : -1;
done:
    if (rc) {
        free(d->name);
        free(d->text);
        d->name = d->text = NULL;
    }
    free(key.data);
    free(val.data);
    return rc;
}

static doc *load_docs(const char *path, int *n_out) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "bench_spec: cannot open %s: %s\n", path, strerror(errno));
        return NULL;
    }
    doc *docs = NULL;
    int n = 0, cap = 0, lineno = 0;
    char *line = NULL;
    size_t line_cap = 0;
    while (getline(&line, &line_cap, f) >= 0) {
        ++lineno;
        if (*skip_ws(line) == '\0') continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            doc *d = realloc(docs, sizeof(doc) * (size_t)cap);
            if (!d) {
                fprintf(stderr, "bench_spec: out of memory\n");
                exit(1);
            }
            docs = d;
        }
        if (parse_doc_line(line, &docs[n])) {
            fprintf(stderr, "bench_spec: %s:%d: not a {\"name\", \"text\"} JSON object\n", path, lineno);
            continue;
        }
        ++n;
    }
    free(line);
    fclose(f);
    *n_out = n;
    return docs;
}

/* ------------------------------------------------------------------------------------------------ */
/* Prompts and workloads                                                                            */
/* ------------------------------------------------------------------------------------------------ */

typedef struct prompt {
    char *label; /* where it comes from, for the report */
    int32_t *ids;
    size_t n;
    uint64_t seed;
    int32_t *ref; /* off's output in the first repetition */
    size_t n_ref;
} prompt;

typedef struct mode_result {
    int used;
    double *tok_s;   /* per repetition */
    double *ratio;   /* per repetition: tok_s / off's tok_s */
    int64_t gen_tokens, forwards, verify, drafted, accepted, hist[16];
    int eos_resumes;
    int compared, identical; /* generations compared with off, and how many matched */
} mode_result;

typedef struct workload {
    const char *name, *kind;
    int sampling;
    prompt p[MAX_PROMPTS];
    int n;
    mode_result m[N_MODES];
} workload;

static pangu_model *g_model;
static int g_has_bos; /* pangu_tokenize(add_bos -1) prepends BOS */

static int32_t *tokenize(const char *text, size_t len, size_t *n) {
    size_t need = 0;
    pangu_status st = pangu_tokenize(g_model, text, len, -1, 0, NULL, 0, &need);
    if (st != PANGU_OK && st != PANGU_ERR_BUFFER_TOO_SMALL) {
        die("tokenize", st);
        exit(1);
    }
    int32_t *ids = xmalloc(sizeof(int32_t) * (need + 1));
    if ((st = pangu_tokenize(g_model, text, len, -1, 0, ids, need + 1, n))) {
        die("tokenize", st);
        exit(1);
    }
    return ids;
}

static void add_prompt(workload *w, const char *label, int32_t *ids, size_t n, uint64_t seed) {
    if (w->n == MAX_PROMPTS) {
        free(ids);
        return;
    }
    prompt *p = &w->p[w->n++];
    p->label = xstrndup(label, strlen(label));
    p->ids = ids;
    p->n = n;
    p->seed = seed;
    p->ref = NULL;
    p->n_ref = 0;
}

/* The longest prefix of s[0..len) of at most max bytes that ends on a UTF-8 character boundary. */
static size_t utf8_cut(const char *s, size_t len, size_t max) {
    if (len <= max) return len;
    size_t n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) --n;
    return n;
}

/* Document openings: the first min(frac * document, max_tokens) tokens (BOS as the tokenizer adds it).
 * Returns 0 if the document is too short (fewer than min_tokens prompt tokens). */
static int add_doc_prompt(workload *w, const doc *d, double frac, int max_tokens, int min_tokens) {
    const size_t cut = utf8_cut(d->text, d->len, 16 * (size_t)max_tokens + 64);
    size_t n = 0;
    int32_t *ids = tokenize(d->text, cut, &n);
    size_t body = n - (size_t)g_has_bos;
    size_t take = cut == d->len ? (size_t)(frac * (double)body) : body;
    if (take > (size_t)max_tokens) take = (size_t)max_tokens;
    if (take < (size_t)min_tokens || take >= body) {
        free(ids);
        return 0;
    }
    add_prompt(w, d->name, ids, take + (size_t)g_has_bos, 0);
    return 1;
}

static int is_ident_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* s with every whole-word occurrence of `from` replaced by `to`. */
static char *replace_word(const char *s, const char *from, const char *to) {
    sbuf b = {0};
    const size_t nf = strlen(from);
    sb_add(&b, "", 0);
    for (const char *p = s; *p;) {
        if (!strncmp(p, from, nf) && (p == s || !is_ident_char(p[-1])) && !is_ident_char(p[nf])) {
            sb_str(&b, to);
            p += nf;
        } else {
            sb_add(&b, p++, 1);
        }
    }
    return b.data;
}

static int count_word(const char *s, const char *w) {
    const size_t n = strlen(w);
    int c = 0;
    for (const char *p = s; (p = strstr(p, w)) != NULL; p += n)
        if ((p == s || !is_ident_char(p[-1])) && !is_ident_char(p[n])) ++c;
    return c;
}

static size_t n_tokens_of(const char *s, size_t len) {
    size_t n = 0;
    free(tokenize(s, len, &n));
    return n;
}

/* A Python function from `text`: its first `def` line (whose signature fits on one line) and the lines
 * indented under it, cut at a line boundary to at most BLOCK_MAX_TOKENS tokens. NULL if none fits. */
static char *find_function(const char *text, size_t len) {
    const char *end = text + len;
    for (const char *line = text; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol) break;
        const char *q = line;
        while (q < eol && *q == ' ') ++q;
        const size_t indent = (size_t)(q - line);
        if (eol - q > 6 && !strncmp(q, "def ", 4) && eol[-1] == ':' && memchr(q, ')', (size_t)(eol - q))) {
            /* Take the body: blank lines and lines indented deeper than the def. */
            const char *b = eol + 1, *last_good = eol + 1;
            int lines = 1;
            while (b < end) {
                const char *e = memchr(b, '\n', (size_t)(end - b));
                if (!e) break;
                const char *r = b;
                while (r < e && *r == ' ') ++r;
                if (r != e && (size_t)(r - b) <= indent) break; /* dedent: the function ended */
                if (n_tokens_of(line, (size_t)(e + 1 - line)) > BLOCK_MAX_TOKENS) break;
                if (r != e) {
                    last_good = e + 1; /* end on a non-blank line */
                    ++lines;
                }
                b = e + 1;
            }
            if (lines >= 4 && n_tokens_of(line, (size_t)(last_good - line)) >= BLOCK_MIN_TOKENS) {
                /* Strip the def's own indentation from every line so the block starts at column 0. */
                sbuf out = {0};
                sb_add(&out, "", 0);
                for (const char *l = line; l < last_good;) {
                    const char *e = memchr(l, '\n', (size_t)(last_good - l));
                    size_t skip = 0;
                    while (skip < indent && l + skip < e && l[skip] == ' ') ++skip;
                    sb_add(&out, l + skip, (size_t)(e + 1 - l - skip));
                    l = e + 1;
                }
                return out.data;
            }
            line = b > eol ? b : eol + 1;
            continue;
        }
        line = eol + 1;
    }
    return NULL;
}

/* The first parameter of the def on the block's first line that is used in the body, else the function's name. */
static char *rename_target(const char *block) {
    const char *open = strchr(block, '('), *nl = strchr(block, '\n');
    const char *close = open ? strchr(open, ')') : NULL;
    if (open && close && nl && close < nl) {
        for (const char *p = open + 1; p < close;) {
            while (p < close && (*p == ' ' || *p == ',' || *p == '*')) ++p;
            const char *s = p;
            while (p < close && is_ident_char(*p)) ++p;
            if (p > s) {
                char *name = xstrndup(s, (size_t)(p - s));
                if (strcmp(name, "self") && strcmp(name, "cls") && count_word(block, name) >= 3) return name;
                free(name);
            }
            while (p < close && *p != ',') ++p; /* skip a default value or annotation */
        }
    }
    const char *s = block + 4; /* "def " */
    const char *e = s;
    while (is_ident_char(*e)) ++e;
    return xstrndup(s, (size_t)(e - s));
}

static const char *const kPoems[][3] = {
    {"静夜思", "李白", "床前明月光，"},       {"春晓", "孟浩然", "春眠不觉晓，"},   {"登鹳雀楼", "王之涣", "白日依山尽，"},
    {"相思", "王维", "红豆生南国，"},         {"江雪", "柳宗元", "千山鸟飞绝，"},   {"悯农", "李绅", "锄禾日当午，"},
    {"望庐山瀑布", "李白", "日照香炉生紫烟，"}, {"咏鹅", "骆宾王", "鹅，鹅，鹅，"},
};
#define N_POEMS ((int)(sizeof kPoems / sizeof kPoems[0]))

static void add_poem(workload *w, int i, uint64_t seed) {
    char text[256];
    snprintf(text, sizeof text, "《%s》\n作者：%s\n%s", kPoems[i % N_POEMS][0], kPoems[i % N_POEMS][1],
             kPoems[i % N_POEMS][2]);
    size_t n = 0;
    int32_t *ids = tokenize(text, strlen(text), &n);
    char label[128];
    snprintf(label, sizeof label, "poem %s", kPoems[i % N_POEMS][0]);
    add_prompt(w, label, ids, n, seed);
}

static int build_workloads(workload *w, const doc *docs, int n_docs, int k) {
    int py[512], zh[512], n_py = 0, n_zh = 0;
    for (int i = 0; i < n_docs; ++i) {
        if (!strncmp(docs[i].name, "py/", 3)) {
            if (n_py < 512) py[n_py++] = i;
        } else if (n_zh < 512) {
            zh[n_zh++] = i;
        }
    }
    if (n_py == 0 || n_zh == 0) {
        fprintf(stderr, "bench_spec: dev.jsonl needs Python (py/...) and Chinese documents\n");
        return -1;
    }
    memset(w, 0, sizeof(workload) * MAX_WORKLOADS);
    workload *cont = &w[0], *reemit = &w[1], *edit = &w[2], *poetry = &w[3], *samp = &w[4];
    cont->name = "continue", cont->kind = "grounded";
    reemit->name = "re-emit", reemit->kind = "grounded";
    edit->name = "edit", edit->kind = "grounded";
    poetry->name = "poetry", poetry->kind = "free-form";
    samp->name = "sampling", samp->kind = "free-form", samp->sampling = 1;

    /* continue: k documents, half Python and half Chinese, spread over the file. */
    const int k_py = (k + 1) / 2, k_zh = k - k_py;
    for (int j = 0, i = 0; j < k_py && i < n_py; ++i) j += add_doc_prompt(cont, &docs[py[(i * 7) % n_py]], 0.6, CONT_MAX_TOKENS, 32);
    for (int j = 0, i = 0; j < k_zh && i < n_zh; ++i)
        j += add_doc_prompt(cont, &docs[zh[(i * 37) % n_zh]], 0.6, CONT_MAX_TOKENS, 32);

    /* re-emit and edit: a function from each of k Python documents. */
    for (int i = 0; i < n_py && reemit->n < k; ++i) {
        const doc *d = &docs[py[(i * 5 + 1) % n_py]];
        char *block = find_function(d->text, d->len);
        if (!block) continue;
        const char *nl = strchr(block, '\n');
        sbuf t = {0};
        sb_str(&t, block);
        sb_str(&t, "\n# The same code again, copied exactly:\n");
        sb_add(&t, block, (size_t)(nl + 1 - block));
        size_t n = 0;
        int32_t *ids = tokenize(t.data, t.len, &n);
        char label[256];
        snprintf(label, sizeof label, "%s: %.*s", d->name, (int)(nl - block), block);
        add_prompt(reemit, label, ids, n, 0);

        char *old = rename_target(block);
        char repl[160];
        snprintf(repl, sizeof repl, "new_%s", old);
        char *edited = replace_word(block, old, repl);
        const char *enl = strchr(edited, '\n');
        t.len = 0;
        sb_str(&t, block);
        sb_str(&t, "\n# The same code with ");
        sb_str(&t, old);
        sb_str(&t, " renamed to ");
        sb_str(&t, repl);
        sb_str(&t, ":\n");
        sb_add(&t, edited, (size_t)(enl + 1 - edited));
        ids = tokenize(t.data, t.len, &n);
        snprintf(label, sizeof label, "%s: %s -> %s", d->name, old, repl);
        add_prompt(edit, label, ids, n, 0);
        free(old);
        free(edited);
        free(block);
        free(t.data);
    }

    /* poetry: poem openings and the openings of other Chinese documents (up to 60 %, at most 48 tokens). */
    const int k_poem = (k + 1) / 2, k_doc = k - k_poem;
    for (int i = 0; i < k_poem; ++i) add_poem(poetry, i, 0);
    for (int j = 0, i = 0; j < k_doc && i < n_zh; ++i)
        j += add_doc_prompt(poetry, &docs[zh[(n_zh / 2 + i * 37) % n_zh]], 0.6, ZH_PROMPT_TOKENS, 8);

    /* sampling: the poem openings, one fixed seed each. */
    for (int i = 0; i < k; ++i) add_poem(samp, i, 1000 + (uint64_t)i);

    for (int i = 0; i < MAX_WORKLOADS; ++i)
        if (w[i].n == 0) {
            fprintf(stderr, "bench_spec: no prompt could be built for workload %s\n", w[i].name);
            return -1;
        }
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Running                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

typedef struct gen_out {
    double ms;
    int64_t n_gen, forwards, verify, drafted, accepted, hist[16];
    int eos_resumes;
} gen_out;

static int g_device_clock; /* --backend with a latency model: time is the estimated device time */
static int32_t *g_tokens;  /* context read-back buffer */
static size_t g_tokens_cap;

/* Reset the session, evaluate the prompt, then generate n tokens (resuming after EOS), timing generation. */
static pangu_status generate(pangu_session *s, const prompt *p, int n, int sampling, gen_out *o) {
    memset(o, 0, sizeof *o);
    pangu_status st;
    if ((st = pangu_session_reset(s))) return st;
    if ((st = pangu_session_eval(s, p->ids, p->n, NULL))) return st;
    pangu_session_stats a, b;
    a.struct_size = b.struct_size = sizeof a;
    if ((st = pangu_session_get_stats(s, &a))) return st;
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    if (sampling) {
        sp.temperature = 0.8f;
        sp.top_p = 0.95f;
        sp.seed = p->seed;
    } else {
        sp.temperature = 0;
    }
    while (o->n_gen < n) {
        sp.max_new_tokens = n - (int)o->n_gen;
        pangu_generate_result res;
        memset(&res, 0, sizeof res);
        res.struct_size = sizeof res;
        pangu_session_stats d0;
        d0.struct_size = sizeof d0;
        if ((st = pangu_session_get_stats(s, &d0))) return st;
        if ((st = pangu_session_generate_tokens(s, NULL, 0, &sp, NULL, NULL, &res))) return st;
        if (g_device_clock) {
            pangu_session_stats d1;
            d1.struct_size = sizeof d1;
            if ((st = pangu_session_get_stats(s, &d1))) return st;
            o->ms += d1.device_est_ms - d0.device_est_ms;
        } else {
            o->ms += res.generate_ms;
        }
        o->n_gen += res.n_generated;
        if (res.stop_reason != PANGU_STOP_EOS || res.n_generated == 0) break;
        if (o->n_gen < n) ++o->eos_resumes;
    }
    if ((st = pangu_session_get_stats(s, &b))) return st;
    o->forwards = b.n_forward - a.n_forward;
    o->verify = b.n_verify - a.n_verify;
    o->drafted = b.n_drafted - a.n_drafted;
    o->accepted = b.n_accepted - a.n_accepted;
    for (int i = 0; i < 16; ++i) o->hist[i] = b.accepted_hist[i] - a.accepted_hist[i];
    size_t nt = 0;
    if ((st = pangu_session_get_tokens(s, g_tokens, g_tokens_cap, &nt))) return st;
    return PANGU_OK;
}

static void print_tokens(const int32_t *ids, size_t n) {
    char buf[8192];
    size_t len = 0;
    if (pangu_detokenize(g_model, ids, n, buf, sizeof buf, &len) == PANGU_OK) {
        fputc('"', stderr);
        for (size_t i = 0; i < len; ++i) {
            if (buf[i] == '\n') fputs("\\n", stderr);
            else fputc(buf[i], stderr);
        }
        fputc('"', stderr);
    }
}

/* Compare the tokens generated for prompt p (n_gen of them, in g_tokens after the prompt) with off's first
 * output, which the first call records. Returns 1 if identical; otherwise, when `loud`, prints the first
 * difference as a MISMATCH. */
static int compare_with_ref(const workload *w, prompt *p, int mode, int rep, size_t n_gen, int loud) {
    const int32_t *gen = g_tokens + p->n;
    if (!p->ref) {
        p->ref = xmalloc(sizeof(int32_t) * (n_gen + 1));
        memcpy(p->ref, gen, sizeof(int32_t) * n_gen);
        p->n_ref = n_gen;
        return 1;
    }
    size_t i = 0;
    while (i < n_gen && i < p->n_ref && gen[i] == p->ref[i]) ++i;
    if (i == n_gen && n_gen == p->n_ref) return 1;
    if (loud) {
        fprintf(stderr,
                "\nbench_spec: MISMATCH: workload %s, prompt '%s', mode %s, run %d: %zu tokens against off's "
                "%zu, first difference at generated token %zu (off %d, %s %d)\n",
                w->name, p->label, kModeName[mode], rep, n_gen, p->n_ref, i, i < p->n_ref ? (int)p->ref[i] : -1,
                kModeName[mode], i < n_gen ? (int)gen[i] : -1);
        const size_t from = i > 8 ? i - 8 : 0;
        fputs("  off  : ...", stderr);
        print_tokens(p->ref + from, (p->n_ref < i + 8 ? p->n_ref : i + 8) - from);
        fprintf(stderr, "\n  %-5s: ...", kModeName[mode]);
        print_tokens(gen + from, (n_gen < i + 8 ? n_gen : i + 8) - from);
        fputs("\n", stderr);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Output                                                                                           */
/* ------------------------------------------------------------------------------------------------ */

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; ++p) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p == '\t') fputs("\\t", f);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: bench_spec [-m DIR] [--draft DIR] [--shared DIR] [-t THREADS] [-r RUNS] [-n TOKENS]\n"
            "                  [--prompts K] [--modes off,pld,draft,self] [--draft-len K] [--ngram N]\n"
            "                  [--self-layers 0,4] [--backend NAME] [--json FILE] [--dat FILE] [--show]\n"
            "  -m DIR          target model (default %s)\n"
            "  --draft DIR     draft model (default SHARED/models/pangu-tiny-draft)\n"
            "  --shared DIR    the shared directory with data/dev.jsonl (default %s/../shared)\n"
            "  -t N            threads per session (default 1)\n"
            "  -r N            repetitions; figures are medians (default 5)\n"
            "  -n N            tokens generated per prompt (default 128)\n"
            "  --prompts K     prompts per workload (default 4, at most %d)\n"
            "  --modes LIST    modes to run; off is the baseline and always runs (default off,pld,draft,self)\n"
            "  --draft-len K, --ngram N, --self-layers LIST\n"
            "                  spec_draft_len, spec_ngram, self_draft_layers (default: the library's)\n"
            "  --backend NAME  device backend of both models (default: the library's, cpu); with npu-sim the times\n"
            "                  are its latency model's estimated device time (deterministic: one repetition will do)\n"
            "  --json FILE     write every result as JSON\n"
            "  --dat FILE      write the speed-ups as a gnuplot table (workload, one column per mode)\n"
            "  --show          print every prompt and what plain decoding generates from it (stderr)\n"
            "Exit status: 0, 1 error, 2 usage, 3 an output differed from plain decoding (MISMATCH).\n",
            PANGU_DEFAULT_MODEL, PANGU_SOURCE_DIR, MAX_PROMPTS);
}

static long parse_int(const char *flag, const char *s, long lo, long hi) {
    char *end = NULL;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (end == s || *end || errno == ERANGE || v < lo || v > hi) {
        fprintf(stderr, "bench_spec: %s expects an integer from %ld to %ld, not '%s'\n", flag, lo, hi, s);
        exit(2);
    }
    return v;
}

static int parse_modes(const char *s, int *used) {
    for (int m = 0; m < N_MODES; ++m) used[m] = m == 0;
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        const size_t n = e ? (size_t)(e - p) : strlen(p);
        int found = 0;
        for (int m = 0; m < N_MODES; ++m)
            if (strlen(kModeName[m]) == n && !strncmp(p, kModeName[m], n)) used[m] = found = 1;
        if (!found) return -1;
        p += n;
        if (*p == ',') ++p;
    }
    return 0;
}

static int parse_layers(const char *s, int32_t *out, int cap) {
    int n = 0;
    const char *p = s;
    for (;;) {
        char *end = NULL;
        errno = 0;
        const long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || v < 0 || v > 1023 || n == cap) return -1;
        out[n++] = (int32_t)v;
        if (!*end) return n;
        p = end + 1;
    }
}

int main(int argc, char **argv) {
    const char *model_dir = PANGU_DEFAULT_MODEL, *draft_dir = NULL, *shared = PANGU_SOURCE_DIR "/../shared";
    const char *json_path = NULL, *dat_path = NULL, *backend = NULL;
    int show = 0;
    int threads = 1, runs = 5, n_tokens = 128, k = 4, used[N_MODES] = {1, 1, 1, 1};
    int draft_len = 0, ngram = 0, n_layers = 0;
    int32_t layers[1024];
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--show")) {
            show = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench_spec: unknown option or missing value: '%s'\n", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "-m")) model_dir = v;
        else if (!strcmp(a, "--draft")) draft_dir = v;
        else if (!strcmp(a, "--shared")) shared = v;
        else if (!strcmp(a, "-t")) threads = (int)parse_int(a, v, 1, 256);
        else if (!strcmp(a, "-r")) runs = (int)parse_int(a, v, 1, 1000);
        else if (!strcmp(a, "-n")) n_tokens = (int)parse_int(a, v, 2, 4000);
        else if (!strcmp(a, "--prompts")) k = (int)parse_int(a, v, 1, MAX_PROMPTS);
        else if (!strcmp(a, "--draft-len")) draft_len = (int)parse_int(a, v, 1, 15);
        else if (!strcmp(a, "--ngram")) ngram = (int)parse_int(a, v, 1, 8);
        else if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--json")) json_path = v;
        else if (!strcmp(a, "--dat")) dat_path = v;
        else if (!strcmp(a, "--modes")) {
            if (parse_modes(v, used)) {
                fprintf(stderr, "bench_spec: --modes expects a comma list of off, pld, draft, self, not '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--self-layers")) {
            if ((n_layers = parse_layers(v, layers, 1024)) < 0) {
                fprintf(stderr, "bench_spec: --self-layers expects a comma list of layer indices, not '%s'\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "bench_spec: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    char draft_buf[4096], data_path[4096];
    if (!draft_dir) {
        snprintf(draft_buf, sizeof draft_buf, "%s/models/pangu-tiny-draft", shared);
        draft_dir = draft_buf;
    }
    snprintf(data_path, sizeof data_path, "%s/data/dev.jsonl", shared);

    pangu_model_params mp;
    pangu_model_params_init(&mp);
    mp.backend = backend;
    pangu_status st = pangu_model_load(model_dir, &mp, &g_model);
    if (st) return die(model_dir, st);
    pangu_model_info info;
    info.struct_size = sizeof info;
    if ((st = pangu_model_get_info(g_model, &info))) return die("model info", st);
    g_has_bos = 0;
    {
        int32_t ids[4];
        size_t n = 0;
        if (pangu_tokenize(g_model, "a", 1, -1, 0, ids, 4, &n) == PANGU_OK && n > 0 && ids[0] == info.bos_token &&
            info.bos_token >= 0)
            g_has_bos = 1;
    }
    pangu_model *draft = NULL;
    if (used[2]) {
        if ((st = pangu_model_load(draft_dir, &mp, &draft))) {
            fprintf(stderr, "bench_spec: WARNING: no draft model (%s: %s: %s): the draft mode is skipped\n",
                    draft_dir, pangu_status_string(st), pangu_last_error());
            used[2] = 0;
        }
    }
    /* The self-draft layers as the library chooses them by default: every 4th from 0. */
    if (n_layers == 0) {
        for (int l = 0; l < info.n_layer; l += 4) layers[n_layers++] = l;
        if (n_layers == 0) layers[n_layers++] = 0;
    }

    int n_docs = 0;
    doc *docs = load_docs(data_path, &n_docs);
    if (!docs) return 1;
    workload w[MAX_WORKLOADS];
    if (build_workloads(w, docs, n_docs, k)) return 1;

    size_t max_prompt = 0;
    for (int i = 0; i < MAX_WORKLOADS; ++i)
        for (int j = 0; j < w[i].n; ++j)
            if (w[i].p[j].n > max_prompt) max_prompt = w[i].p[j].n;
    const int n_ctx = (int)max_prompt + n_tokens + 32;
    if (n_ctx > info.n_ctx_train) {
        fprintf(stderr, "bench_spec: %d prompt + %d generated tokens exceed the model's context (%d)\n", (int)max_prompt,
                n_tokens, info.n_ctx_train);
        return 2;
    }
    g_tokens_cap = (size_t)n_ctx;
    g_tokens = xmalloc(sizeof(int32_t) * g_tokens_cap);

    pangu_session *sess[N_MODES] = {NULL, NULL, NULL, NULL};
    pangu_session_params base;
    pangu_session_params_init_sized(&base, sizeof base);
    const int lib_draft_len = base.spec_draft_len, lib_ngram = base.spec_ngram;
    for (int m = 0; m < N_MODES; ++m) {
        if (!used[m]) continue;
        pangu_session_params sp;
        pangu_session_params_init_sized(&sp, sizeof sp);
        sp.n_ctx = n_ctx;
        sp.n_threads = threads;
        sp.spec_mode = kModeValue[m];
        if (draft_len) sp.spec_draft_len = draft_len;
        if (ngram) sp.spec_ngram = ngram;
        if (kModeValue[m] == PANGU_SPEC_DRAFT) sp.draft_model = draft;
        if (kModeValue[m] == PANGU_SPEC_SELF) {
            sp.self_draft_layers = layers;
            sp.n_self_draft_layers = n_layers;
        }
        if ((st = pangu_session_create(g_model, &sp, &sess[m]))) {
            fprintf(stderr, "bench_spec: session for mode %s: ", kModeName[m]);
            return die("create", st);
        }
    }
    if (!draft_len) draft_len = lib_draft_len;
    if (!ngram) ngram = lib_ngram;
    {
        /* Does the backend keep a device clock? Then that is the time to compare. */
        pangu_session_stats ds;
        ds.struct_size = sizeof ds;
        const int32_t one = w[0].p[0].ids[0];
        if ((st = pangu_session_eval(sess[0], &one, 1, NULL)) || (st = pangu_session_get_stats(sess[0], &ds)))
            return die("probe", st);
        g_device_clock = ds.device_est_ms > 0;
        pangu_session_reset(sess[0]);
    }

    printf("bench_spec: libpangu_c %s, target %s (%d layers), draft %s, %d thread%s, %d repetitions, %d tokens per "
           "prompt, draft length %d, n-gram %d, self-draft layers",
           pangu_version_string(), model_dir, info.n_layer, used[2] ? draft_dir : "(none)", threads, threads > 1 ? "s" : "",
           runs, n_tokens, draft_len, ngram);
    for (int i = 0; i < n_layers; ++i) printf("%s%d", i ? "," : " ", (int)layers[i]);
    printf("\n  backend %s; tok/s: generated tokens / %s (prompt evaluated before, untimed), summed over the "
           "prompts; median of the repetitions\n",
           pangu_model_backend(g_model),
           g_device_clock ? "the backend's estimated device time of the generation (latency model)"
                          : "pangu_generate_result.generate_ms");
    printf(""
           "  speed-up: median(mode) / median(off), modes interleaved prompt by prompt in every repetition\n"
           "  accept: accepted / drafted; acc/step: accepted per verification step; fwd/tok: target forward passes per "
           "generated token;\n  resumes: restarts after an end of text to reach the token count; same as off: "
           "generations token for token equal to off's\n");
    fflush(stdout);

    int mismatches = 0;
    for (int wi = 0; wi < MAX_WORKLOADS; ++wi) {
        workload *W = &w[wi];
        for (int m = 0; m < N_MODES; ++m) {
            W->m[m].used = used[m];
            W->m[m].tok_s = calloc((size_t)runs, sizeof(double));
            W->m[m].ratio = calloc((size_t)runs, sizeof(double));
            if (!W->m[m].tok_s || !W->m[m].ratio) return 1;
        }
        fprintf(stderr, "bench_spec: %s: warm-up", W->name);
        for (int m = 0; m < N_MODES; ++m) {
            gen_out o;
            if (used[m] && (st = generate(sess[m], &W->p[0], n_tokens, W->sampling, &o))) return die("warm-up", st);
        }
        for (int r = 0; r < runs; ++r) {
            fprintf(stderr, ", run %d", r + 1);
            double ms[N_MODES] = {0};
            int64_t tok[N_MODES] = {0};
            for (int i = 0; i < W->n; ++i) {
                prompt *P = &W->p[i];
                for (int m = 0; m < N_MODES; ++m) {
                    if (!used[m]) continue;
                    gen_out o;
                    if ((st = generate(sess[m], P, n_tokens, W->sampling, &o))) {
                        fprintf(stderr, "\nbench_spec: %s, prompt '%s', mode %s: ", W->name, P->label, kModeName[m]);
                        return die("generate", st);
                    }
                    mode_result *R = &W->m[m];
                    ms[m] += o.ms;
                    tok[m] += o.n_gen;
                    R->gen_tokens += o.n_gen;
                    R->forwards += o.forwards;
                    R->verify += o.verify;
                    R->drafted += o.drafted;
                    R->accepted += o.accepted;
                    for (int a = 0; a < 16; ++a) R->hist[a] += o.hist[a];
                    R->eos_resumes += o.eos_resumes;
                    /* Greedy: every mode must match off. Sampling: off must repeat itself and PLD must match
                     * (pangu.h); a draft model or self-draft keeps the distribution, not the draw. */
                    const int strict = !W->sampling || kModeValue[m] == PANGU_SPEC_OFF || kModeValue[m] == PANGU_SPEC_PLD;
                    const int same = compare_with_ref(W, P, m, r + 1, (size_t)o.n_gen, strict);
                    if (!(m == 0 && r == 0)) {
                        R->compared++;
                        R->identical += same;
                    }
                    if (!same && strict) ++mismatches;
                    if (show && m == 0 && r == 0) {
                        fprintf(stderr, "\n[%s] %s\n  prompt: ", W->name, P->label);
                        print_tokens(P->ids, P->n);
                        fputs("\n  off   : ", stderr);
                        print_tokens(P->ref, P->n_ref);
                        fputc('\n', stderr);
                    }
                }
            }
            for (int m = 0; m < N_MODES; ++m)
                if (used[m]) W->m[m].tok_s[r] = ms[m] > 0 ? 1e3 * (double)tok[m] / ms[m] : 0;
            for (int m = 0; m < N_MODES; ++m)
                if (used[m]) W->m[m].ratio[r] = W->m[0].tok_s[r] > 0 ? W->m[m].tok_s[r] / W->m[0].tok_s[r] : 0;
        }
        fputc('\n', stderr);
        double off_med = median(W->m[0].tok_s, runs);
        printf("\n%s (%s, %s, %d prompts, %d tokens generated each)\n", W->name, W->kind,
               W->sampling ? "sampling T=0.8 top-p 0.95, fixed seeds" : "greedy", W->n, n_tokens);
        size_t in_prompt = 0;
        for (int i = 0; i < W->n; ++i) in_prompt += W->p[i].n;
        printf("  prompts: %.0f tokens on average:", (double)in_prompt / W->n);
        for (int i = 0; i < W->n; ++i) printf("%s %s", i ? ";" : "", W->p[i].label);
        printf("\n  %-5s %9s %8s %7s %8s %8s %7s  %-11s %s\n", "mode", "tok/s", "speed-up", "accept", "acc/step",
               "fwd/tok", "resumes", "same as off", "accepted length:steps");
        for (int m = 0; m < N_MODES; ++m) {
            if (!used[m]) continue;
            const mode_result *R = &W->m[m];
            const double med = median(R->tok_s, runs);
            printf("  %-5s %9.1f %7.2fx", kModeName[m], med, off_med > 0 ? med / off_med : 0);
            if (R->drafted > 0)
                printf(" %6.1f%% %8.2f", 100.0 * (double)R->accepted / (double)R->drafted,
                       (double)R->accepted / (double)R->verify);
            else
                printf(" %7s %8s", "-", "-");
            printf(" %8.3f %7d  %5d/%-5d", R->gen_tokens ? (double)R->forwards / (double)R->gen_tokens : 0,
                   R->eos_resumes, R->identical, R->compared);
            int hmax = -1;
            for (int a = 0; a < 16; ++a)
                if (R->hist[a]) hmax = a;
            if (hmax < 0) printf(" -");
            for (int a = 0; a <= hmax; ++a) printf(" %d:%lld", a, (long long)R->hist[a]);
            printf("\n");
        }
        fflush(stdout);
    }

    if (json_path) {
        FILE *f = fopen(json_path, "w");
        if (!f) {
            fprintf(stderr, "bench_spec: cannot write %s: %s\n", json_path, strerror(errno));
            return 1;
        }
        fprintf(f, "{\n  \"bench\": \"spec\",\n  \"library\": ");
        json_str(f, pangu_version_string());
        fprintf(f, ",\n  \"target\": ");
        json_str(f, model_dir);
        fprintf(f, ",\n  \"draft\": ");
        if (used[2]) json_str(f, draft_dir);
        else fputs("null", f);
        fprintf(f,
                ",\n  \"threads\": %d,\n  \"runs\": %d,\n  \"tokens_per_prompt\": %d,\n  \"draft_len\": %d,\n"
                "  \"ngram\": %d,\n  \"self_layers\": [",
                threads, runs, n_tokens, draft_len, ngram);
        for (int i = 0; i < n_layers; ++i) fprintf(f, "%s%d", i ? ", " : "", (int)layers[i]);
        fprintf(f, "],\n  \"timing\": \"generated tokens / pangu_generate_result.generate_ms summed over the prompts "
                   "(prompt evaluated before with pangu_session_eval, untimed); median of the runs\",\n");
        fprintf(f, "  \"mismatches\": %d,\n  \"workloads\": [\n", mismatches);
        for (int wi = 0; wi < MAX_WORKLOADS; ++wi) {
            const workload *W = &w[wi];
            fprintf(f, "    {\"name\": \"%s\", \"kind\": \"%s\", \"sampling\": %s, \"prompts\": [", W->name, W->kind,
                    W->sampling ? "true" : "false");
            for (int i = 0; i < W->n; ++i) {
                fprintf(f, "%s{\"label\": ", i ? ", " : "");
                json_str(f, W->p[i].label);
                fprintf(f, ", \"tokens\": %zu, \"ids\": [", W->p[i].n);
                for (size_t t = 0; t < W->p[i].n; ++t) fprintf(f, "%s%d", t ? "," : "", (int)W->p[i].ids[t]);
                /* off's output in the first repetition: what bench/pld_ceiling.py replays */
                fputs("], \"off\": [", f);
                for (size_t t = 0; t < W->p[i].n_ref; ++t) fprintf(f, "%s%d", t ? "," : "", (int)W->p[i].ref[t]);
                fputs("]}", f);
            }
            fprintf(f, "],\n     \"modes\": [\n");
            const double off_med = median(W->m[0].tok_s, runs);
            int first = 1;
            for (int m = 0; m < N_MODES; ++m) {
                if (!used[m]) continue;
                const mode_result *R = &W->m[m];
                const double med = median(R->tok_s, runs);
                fprintf(f, "%s      {\"mode\": \"%s\", \"tok_s_median\": %.2f, \"speedup\": %.4f, "
                           "\"speedup_paired_median\": %.4f, \"tok_s_runs\": [",
                        first ? "" : ",\n", kModeName[m], med, off_med > 0 ? med / off_med : 0, median(R->ratio, runs));
                first = 0;
                for (int r = 0; r < runs; ++r) fprintf(f, "%s%.2f", r ? ", " : "", R->tok_s[r]);
                fprintf(f,
                        "],\n       \"generated\": %lld, \"forwards\": %lld, \"forwards_per_token\": %.4f, "
                        "\"verify_steps\": %lld, \"drafted\": %lld, \"accepted\": %lld, ",
                        (long long)R->gen_tokens, (long long)R->forwards,
                        R->gen_tokens ? (double)R->forwards / (double)R->gen_tokens : 0, (long long)R->verify,
                        (long long)R->drafted, (long long)R->accepted);
                if (R->drafted) fprintf(f, "\"acceptance\": %.4f, ", (double)R->accepted / (double)R->drafted);
                else fputs("\"acceptance\": null, ", f);
                if (R->verify) fprintf(f, "\"accepted_per_step\": %.4f, ", (double)R->accepted / (double)R->verify);
                else fputs("\"accepted_per_step\": null, ", f);
                fputs("\"accepted_hist\": [", f);
                for (int a = 0; a < 16; ++a) fprintf(f, "%s%lld", a ? ", " : "", (long long)R->hist[a]);
                fprintf(f, "],\n       \"eos_resumes\": %d, \"compared_with_off\": %d, \"identical_to_off\": %d}",
                        R->eos_resumes, R->compared, R->identical);
            }
            fprintf(f, "\n    ]}%s\n", wi + 1 < MAX_WORKLOADS ? "," : "");
        }
        fprintf(f, "  ]\n}\n");
        if (fclose(f)) {
            fprintf(stderr, "bench_spec: cannot write %s\n", json_path);
            return 1;
        }
    }
    if (dat_path) {
        FILE *f = fopen(dat_path, "w");
        if (!f) {
            fprintf(stderr, "bench_spec: cannot write %s: %s\n", dat_path, strerror(errno));
            return 1;
        }
        fprintf(f,
                "# bench_spec: speed-up of generation versus spec off (median tok/s of the mode / median tok/s of off)\n"
                "# settings: libpangu_c %s, %d thread%s, %d run%s, %d tokens per prompt, draft length %d, n-gram %d%s\n"
                "workload",
                pangu_version_string(), threads, threads > 1 ? "s" : "", runs, runs > 1 ? "s" : "", n_tokens, draft_len, ngram,
                mismatches ? ", OUTPUT MISMATCH" : "");
        for (int m = 0; m < N_MODES; ++m) fprintf(f, " %s", kModeName[m]);
        fputc('\n', f);
        for (int wi = 0; wi < MAX_WORKLOADS; ++wi) {
            const double off_med = median(w[wi].m[0].tok_s, runs);
            fprintf(f, "%s", w[wi].name);
            for (int m = 0; m < N_MODES; ++m) {
                if (used[m] && off_med > 0) fprintf(f, " %.4f", median(w[wi].m[m].tok_s, runs) / off_med);
                else fputs(" NaN", f);
            }
            fputc('\n', f);
        }
        if (fclose(f)) {
            fprintf(stderr, "bench_spec: cannot write %s\n", dat_path);
            return 1;
        }
    }

    for (int wi = 0; wi < MAX_WORKLOADS; ++wi)
        for (int i = 0; i < w[wi].n; ++i) {
            free(w[wi].p[i].label);
            free(w[wi].p[i].ids);
            free(w[wi].p[i].ref);
        }
    for (int wi = 0; wi < MAX_WORKLOADS; ++wi)
        for (int m = 0; m < N_MODES; ++m) {
            free(w[wi].m[m].tok_s);
            free(w[wi].m[m].ratio);
        }
    for (int m = 0; m < N_MODES; ++m) pangu_session_free(sess[m]);
    for (int i = 0; i < n_docs; ++i) {
        free(docs[i].name);
        free(docs[i].text);
    }
    free(docs);
    free(g_tokens);
    pangu_model_free(draft);
    pangu_model_free(g_model);
    if (mismatches) {
        printf("\nMISMATCH: %d generation%s differed from plain decoding (see stderr)\n", mismatches,
               mismatches > 1 ? "s" : "");
        fprintf(stderr, "bench_spec: MISMATCH: %d generation%s differed from plain decoding\n", mismatches,
                mismatches > 1 ? "s" : "");
        return 3;
    }
    return 0;
}
