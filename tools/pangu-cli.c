/*
 * pangu-cli -- run an openPangu-Embedded model from the command line.
 *
 * Completion mode streams the continuation of a prompt to stdout; chat mode (-i / --chat) holds a multi-turn
 * conversation on stdin/stdout. Diagnostics and timings go to stderr, so stdout carries only text.
 * Flags follow llama-cli where they overlap. C99 + POSIX against the public header only.
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

#define PROG "pangu-cli"

#include "common/cli_util.h"
#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130
#define MAX_STOP_STRINGS 16
#define MAX_SELF_LAYERS 256
/* The CLI's own defaults where they differ from the library's (which are greedy and one thread). */
#define CLI_TEMPERATURE 0.8f

/* ------------------------------------------------------------------------------------------------ */
/* Options                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

/*
 * The library's parameter structs, filled by their *_init functions, with the CLI's own defaults (temperature,
 * threads) and then the user's flags written over them. The session's draft_model is set once it is loaded.
 */
typedef struct options {
    const char *model_dir;
    const char *prompt;             /* -p */
    const char *prompt_file;        /* -f */
    pangu_model_params model;       /* --mlock, --prefault (also used for the draft model) */
    pangu_session_params session;   /* -c, -b, -t, --context-shift, --keep and the speculative flags */
    pangu_sampling_params sampling; /* -n, --temp, --top-k, ..., -s, --stop */
    int until_full;                 /* -n -1: until EOS or the context is full */
    int seed_given;
    const char *stops[MAX_STOP_STRINGS];
    int no_bos, chat, verbose_prompt, display_prompt;
    int spec_given, draft_len_given, ngram_given; /* these flags were on the command line */
    unsigned sampling_given;        /* SET_* bits: sampling flags on the command line, which the model's
                                       generation_config.json does not override */
    int hide_reasoning;             /* --reasoning hide */
    int32_t think_open, think_close; /* [unused16] / [unused17], resolved from the model; -1 if it has none */
    const char *draft_model_dir;
    int32_t self_layers[MAX_SELF_LAYERS];
} options;

/* The library's defaults from the *_init functions, then the CLI's own. */
static void options_init(options *o) {
    memset(o, 0, sizeof *o);
    pangu_model_params_init(&o->model);
    pangu_session_params_init_sized(&o->session, sizeof o->session);
    pangu_sampling_params_init(&o->sampling);
    o->sampling.temperature = CLI_TEMPERATURE;
    o->session.n_threads = (int32_t)default_threads();
    o->display_prompt = 1;
}

static const char *spec_mode_name(int mode);

/* --help, in sections. The defaults shown come from the *_init functions (and the CLI's own for temperature
 * and threads). */
static void usage_model_and_prompt(FILE *out) {
    fputs("usage: " PROG " -m MODEL_DIR [-p PROMPT | -f FILE] [options]\n"
          "       " PROG " -m MODEL_DIR --chat [-p SYSTEM_PROMPT] [options]\n"
          "\n"
          "Generate text with an openPangu-Embedded model (Hugging Face directory: config.json,\n"
          "*.safetensors, tokenizer.model). The completion streams to stdout; diagnostics and timings\n"
          "go to stderr.\n"
          "\n"
          "model and prompt:\n"
          "  -m, --model DIR          model directory (required)\n"
          "  -p, --prompt TEXT        prompt to complete (in chat mode: the system prompt)\n"
          "  -f, --file FILE          read the prompt from FILE (used verbatim)\n"
          "      --no-bos             do not prepend the BOS token to the prompt\n"
          "      --no-display-prompt  do not echo the prompt before the completion\n"
          "      --verbose-prompt     print the prompt's tokens to stderr before generating\n"
          "  -i, --interactive, --chat\n"
          "                           chat: read user turns from stdin, one per line, until EOF\n"
          "      --reasoning show|hide\n"
          "                           hide: do not print what the model writes between [unused16] and\n"
          "                           [unused17] (openPangu-Embedded-7B's slow thinking); default show\n"
          "\n"
          "Sampling flags not given take the model's generation_config.json defaults when it has one.\n"
          "\n",
          out);
}

static void usage_generation(FILE *out, const pangu_sampling_params *sp) {
    fprintf(out,
            "generation:\n"
            "  -n, --n-predict N        new tokens to generate (default %d; -1 = until EOS or context full)\n"
            "      --temp T             temperature; 0 = greedy (default %g)\n"
            "      --top-k N            keep the N most likely tokens; 0 = all (default %d)\n"
            "      --top-p P            nucleus sampling threshold, 0 < P <= 1; 1 = off (default %g)\n"
            "      --min-p P            drop tokens below P * p(best), 0 <= P <= 1; 0 = off (default %g)\n"
            "      --repeat-penalty F   penalty > 1 for recently seen tokens; 1 = off (default %g)\n"
            "      --repeat-last-n N    window of the repeat penalty; 0 or -1 = whole context (default %d)\n"
            "  -s, --seed N             sampling seed (default: from the clock, printed to stderr; -1 = same)\n"
            "      --stop STR           stop when the text reaches STR (not printed); repeatable\n"
            "\n",
            (int)sp->max_new_tokens, (double)sp->temperature, (int)sp->top_k, (double)sp->top_p, (double)sp->min_p,
            (double)sp->repetition_penalty, (int)sp->repeat_last_n);
}

static void usage_resources(FILE *out, const pangu_session_params *ss) {
    fprintf(out,
            "resources:\n"
            "  -t, --threads N          compute threads (default: online CPUs, at most %d)\n"
            "  -c, --ctx-size N         context length in tokens (default: min(2048, model maximum))\n"
            "      --context-shift      when the context is full, drop the older half (after --keep tokens)\n"
            "                           and go on, instead of stopping (completion mode)\n"
            "      --keep N             with --context-shift: tokens at the start that are always kept (default %d)\n"
            "  -b, --batch-size N       prompt tokens per forward pass (default %d)\n"
            "      --mlock              lock the weights in RAM\n"
            "      --prefault           pre-fault the weight mapping at load\n"
            "      --precision P        activations entering the matmuls: auto (what the checkpoint says), f32,\n"
            "                           bf16, int8 (integer weights only: W8A8), int16 (integer weights, cpu)\n"
            "      --kv-type T          KV cache elements: f16 (default), bf16, q8 (int8 with a scale per position\n"
            "                           and KV head), f32\n"
            "\n",
            CLI_MAX_THREADS, (int)ss->n_keep, (int)ss->n_batch);
}

static void usage_speculative(FILE *out, const pangu_session_params *ss) {
    fprintf(out,
            "speculative decoding (greedy output is the same in every mode; drafting statistics go to stderr):\n"
            "      --spec MODE          off, pld (prompt lookup: drafts from repeated n-grams of the context),\n"
            "                           draft (a smaller draft model) or self (a subset of the model's own\n"
            "                           layers) (default %s)\n"
            "      --draft-model DIR    draft model directory (same vocabulary); implies --spec draft\n"
            "      --draft-len K        most tokens drafted per step, 1..15 (default %d)\n"
            "      --ngram N            pld: longest n-gram looked up, 1..8 (default %d)\n"
            "      --self-layers LIST   self: ascending comma list of layers, e.g. 0,4,8 (default every 4th\n"
            "                           layer from 0); implies --spec self\n"
            "\n",
            spec_mode_name(ss->spec_mode), (int)ss->spec_draft_len, (int)ss->spec_ngram);
}

static void usage(FILE *out) {
    options defaults;
    options_init(&defaults);
    usage_model_and_prompt(out);
    usage_generation(out, &defaults.sampling);
    usage_resources(out, &defaults.session);
    usage_speculative(out, &defaults.session);
    fputs("      --version            print the version and exit\n"
          "  -h, --help               print this help and exit\n"
          "\n"
          "Ctrl-C stops the reply being generated; in chat mode, Ctrl-C at the prompt or EOF ends the chat.\n"
          "Exit status: 0 success, 1 error, 2 usage error, 130 interrupted.\n",
          out);
}

#if defined(__GNUC__)
#define NORETURN __attribute__((noreturn))
#else
#define NORETURN
#endif

static NORETURN void usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs(PROG ": ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry '" PROG " --help' for more information.\n", stderr);
    exit(EXIT_USAGE);
}

static long parse_long(const char *flag, const char *s, long lo, long hi) {
    char *end = NULL;
    errno = 0;
    const long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE || v < lo || v > hi)
        usage_error("%s expects an integer from %ld to %ld, not '%s'", flag, lo, hi, s);
    return v;
}

/* A finite number in [lo, hi]; with lo_open, lo itself is excluded. */
static double parse_double(const char *flag, const char *s, double lo, int lo_open, double hi) {
    char *end = NULL;
    errno = 0;
    const double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v) || v < lo || (lo_open && v == lo) || v > hi) {
        if (hi == HUGE_VAL)
            usage_error("%s expects a number %s %g, not '%s'", flag, lo_open ? ">" : ">=", lo, s);
        usage_error("%s expects a number %s %g and <= %g, not '%s'", flag, lo_open ? ">" : ">=", lo, hi, s);
    }
    return v;
}

static int parse_spec_mode(const char *flag, const char *s) {
    if (strcmp(s, "off") == 0) return PANGU_SPEC_OFF;
    if (strcmp(s, "pld") == 0) return PANGU_SPEC_PLD;
    if (strcmp(s, "draft") == 0) return PANGU_SPEC_DRAFT;
    if (strcmp(s, "self") == 0) return PANGU_SPEC_SELF;
    usage_error("%s expects off, pld, draft or self, not '%s'", flag, s);
}

static const char *spec_mode_name(int mode) {
    switch (mode) {
    case PANGU_SPEC_OFF: return "off";
    case PANGU_SPEC_PLD: return "pld";
    case PANGU_SPEC_DRAFT: return "draft";
    case PANGU_SPEC_SELF: return "self";
    default: return "?";
    }
}

/* A comma list of ascending layer indices, e.g. "0,4,8". */
static int parse_layer_list(const char *flag, const char *s, int32_t *out, int cap) {
    int n = 0;
    const char *p = s;
    for (;;) {
        char *end = NULL;
        errno = 0;
        const long v = strtol(p, &end, 10);
        if (end == p || (*end != ',' && *end != '\0') || errno == ERANGE || v < 0 || v >= MAX_SELF_LAYERS ||
            *p == '+' || *p == ' ' || *p == '\t')
            usage_error("%s expects a comma list of layer indices from 0 to %d, e.g. 0,4,8, not '%s'", flag,
                        MAX_SELF_LAYERS - 1, s);
        if (n > 0 && v <= out[n - 1]) usage_error("%s expects ascending layer indices, not '%s'", flag, s);
        if (n == cap) usage_error("%s: at most %d layers", flag, cap);
        out[n++] = (int32_t)v;
        if (*end == '\0') break;
        p = end + 1;
    }
    return n;
}

/* a equals the short or the long spelling of an option (either may be NULL). */
static int is_option(const char *a, const char *short_name, const char *long_name) {
    return (short_name && strcmp(a, short_name) == 0) || (long_name && strcmp(a, long_name) == 0);
}

static NORETURN char *missing_value(const char *option) {
    usage_error("option %s needs a value", option);
}

/* The command line being read: argv[i] is the current flag, argv[i + 1] its value if it takes one. */
typedef struct args {
    int argc;
    char **argv;
    int i;
} args;

/* The current flag's value, the next argument (a usage error if there is none). */
static const char *flag_value(args *a) {
    if (a->i + 1 >= a->argc) missing_value(a->argv[a->i]);
    return a->argv[++a->i];
}

/* -s N, or -1 for a clock seed. */
static void parse_seed(const char *flag, const char *s, options *o) {
    if (strcmp(s, "-1") == 0) {
        o->seed_given = 0;
        return;
    }
    char *end = NULL;
    errno = 0;
    const unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE || s[strspn(s, " \t")] == '-')
        usage_error("%s expects an integer from 0 to %llu (or -1 for a clock seed), not '%s'", flag,
                    (unsigned long long)UINT64_MAX, s);
    o->sampling.seed = v;
    o->seed_given = 1;
}

/* Each parse_*_flag applies `flag` (reading its value from `a`) and returns 1, or returns 0 if the flag is not
 * one of its group's. */
#define IS(short_, long_) is_option(flag, short_, long_)

static int parse_prompt_flag(const char *flag, args *a, options *o) {
    if (IS("-m", "--model")) o->model_dir = flag_value(a);
    else if (IS("-p", "--prompt")) o->prompt = flag_value(a);
    else if (IS("-f", "--file")) o->prompt_file = flag_value(a);
    else if (IS(NULL, "--no-bos")) o->no_bos = 1;
    else if (IS("-i", "--interactive") || IS(NULL, "--chat")) o->chat = 1;
    else if (IS(NULL, "--reasoning")) {
        const char *v = flag_value(a);
        if (strcmp(v, "show") != 0 && strcmp(v, "hide") != 0) usage_error("--reasoning takes show or hide, not '%s'", v);
        o->hide_reasoning = strcmp(v, "hide") == 0;
    }
    else if (IS(NULL, "--verbose-prompt")) o->verbose_prompt = 1;
    else if (IS(NULL, "--no-display-prompt")) o->display_prompt = 0;
    else return 0;
    return 1;
}

enum { SET_N = 1, SET_TEMP = 2, SET_TOP_K = 4, SET_TOP_P = 8, SET_PENALTY = 16 };

static int parse_sampling_flag(const char *flag, args *a, options *o) {
    pangu_sampling_params *sp = &o->sampling;
    if (IS("-n", "--n-predict")) {
        const long n = parse_long(flag, flag_value(a), -1, INT32_MAX);
        o->until_full = n < 0;
        sp->max_new_tokens = n < 0 ? INT32_MAX : (int32_t)n;
        o->sampling_given |= SET_N;
    } else if (IS(NULL, "--temp")) {
        sp->temperature = (float)parse_double(flag, flag_value(a), 0.0, 0, HUGE_VAL);
        o->sampling_given |= SET_TEMP;
    } else if (IS(NULL, "--top-k")) {
        sp->top_k = (int32_t)parse_long(flag, flag_value(a), 0, INT32_MAX);
        o->sampling_given |= SET_TOP_K;
    } else if (IS(NULL, "--top-p")) {
        sp->top_p = (float)parse_double(flag, flag_value(a), 0.0, 1, 1.0);
        o->sampling_given |= SET_TOP_P;
    } else if (IS(NULL, "--min-p")) {
        sp->min_p = (float)parse_double(flag, flag_value(a), 0.0, 0, 1.0);
    } else if (IS(NULL, "--repeat-penalty")) {
        sp->repetition_penalty = (float)parse_double(flag, flag_value(a), 0.0, 1, HUGE_VAL);
        o->sampling_given |= SET_PENALTY;
    } else if (IS(NULL, "--repeat-last-n")) {
        const long n = parse_long(flag, flag_value(a), -1, INT32_MAX);
        sp->repeat_last_n = n < 0 ? 0 : (int32_t)n; /* the library's "whole context" */
    } else if (IS("-s", "--seed")) {
        parse_seed(flag, flag_value(a), o);
    } else if (IS(NULL, "--stop")) {
        const char *s = flag_value(a);
        if (*s == '\0') usage_error("--stop needs a non-empty string");
        if (sp->n_stop_strings == MAX_STOP_STRINGS) usage_error("at most %d --stop strings", MAX_STOP_STRINGS);
        o->stops[sp->n_stop_strings++] = s;
    } else {
        return 0;
    }
    return 1;
}

static int32_t parse_precision(const char *v) {
    int32_t p;
    if (!cli_parse_precision(v, &p)) usage_error("--precision takes auto, f32, bf16, int8 or int16, not '%s'", v);
    return p;
}

static int parse_resource_flag(const char *flag, args *a, options *o) {
    pangu_session_params *ss = &o->session;
    if (IS("-t", "--threads")) ss->n_threads = (int32_t)parse_long(flag, flag_value(a), 1, 256);
    else if (IS("-c", "--ctx-size")) ss->n_ctx = (int32_t)parse_long(flag, flag_value(a), 0, INT32_MAX); /* 0: auto */
    else if (IS(NULL, "--context-shift")) ss->context_policy = PANGU_CONTEXT_SLIDE;
    else if (IS(NULL, "--keep")) ss->n_keep = (int32_t)parse_long(flag, flag_value(a), 0, INT32_MAX);
    else if (IS("-b", "--batch-size")) ss->n_batch = (int32_t)parse_long(flag, flag_value(a), 1, 4096);
    else if (IS(NULL, "--mlock")) o->model.lock_memory = 1;
    else if (IS(NULL, "--prefault")) o->model.prefault = 1;
    else if (IS(NULL, "--precision")) o->model.activation_precision = parse_precision(flag_value(a));
    else if (IS(NULL, "--kv-type")) {
        const char *v = flag_value(a);
        if (!cli_parse_kv_type(v, &ss->kv_type)) usage_error("--kv-type takes f16, bf16, q8 or f32, not '%s'", v);
    }
    else return 0;
    return 1;
}

static int parse_spec_flag(const char *flag, args *a, options *o) {
    pangu_session_params *ss = &o->session;
    if (IS(NULL, "--spec")) {
        ss->spec_mode = parse_spec_mode(flag, flag_value(a));
        o->spec_given = 1;
    } else if (IS(NULL, "--draft-model")) {
        o->draft_model_dir = flag_value(a);
    } else if (IS(NULL, "--draft-len")) {
        ss->spec_draft_len = (int32_t)parse_long(flag, flag_value(a), 1, 15);
        o->draft_len_given = 1;
    } else if (IS(NULL, "--ngram")) {
        ss->spec_ngram = (int32_t)parse_long(flag, flag_value(a), 1, 8);
        o->ngram_given = 1;
    } else if (IS(NULL, "--self-layers")) {
        ss->n_self_draft_layers = parse_layer_list(flag, flag_value(a), o->self_layers, MAX_SELF_LAYERS);
        ss->self_draft_layers = o->self_layers;
    } else {
        return 0;
    }
    return 1;
}

#undef IS

/* --draft-model and --self-layers choose their mode unless --spec does; then every flag must fit the mode. */
static void check_spec_options(options *o) {
    const int n_self_layers = o->session.n_self_draft_layers;
    int32_t *mode = &o->session.spec_mode;
    if (!o->spec_given) {
        if (o->draft_model_dir && n_self_layers)
            usage_error("--draft-model and --self-layers select different modes (draft, self); use one");
        if (o->draft_model_dir) *mode = PANGU_SPEC_DRAFT;
        if (n_self_layers) *mode = PANGU_SPEC_SELF;
    }
    if (*mode == PANGU_SPEC_DRAFT && !o->draft_model_dir) usage_error("--spec draft needs --draft-model DIR");
    if (o->draft_model_dir && *mode != PANGU_SPEC_DRAFT)
        usage_error("--draft-model applies only with --spec draft, not --spec %s", spec_mode_name(*mode));
    if (n_self_layers && *mode != PANGU_SPEC_SELF)
        usage_error("--self-layers applies only with --spec self, not --spec %s", spec_mode_name(*mode));
    if (o->ngram_given && *mode != PANGU_SPEC_PLD)
        usage_error("--ngram applies only with --spec pld, not --spec %s", spec_mode_name(*mode));
    if (o->draft_len_given && *mode == PANGU_SPEC_OFF) usage_error("--draft-len does not apply with --spec off");
}

static void check_options(options *o) {
    const int context_shift = o->session.context_policy == PANGU_CONTEXT_SLIDE;
    if (!o->model_dir) usage_error("a model directory is required (-m DIR)");
    if (o->prompt && o->prompt_file) usage_error("use either -p or -f, not both");
    if (o->session.n_keep && !context_shift) usage_error("--keep applies only with --context-shift");
    if (context_shift && o->chat)
        usage_error("--context-shift is for completion mode; chat starts a new conversation when the context is full");
    check_spec_options(o);
}

static void parse_args(int argc, char **argv, options *o) {
    options_init(o);
    args a = {argc, argv, 0};
    for (a.i = 1; a.i < argc; ++a.i) {
        const char *flag = argv[a.i];
        if (is_option(flag, "-h", "--help")) {
            usage(stdout);
            exit(0);
        }
        if (is_option(flag, NULL, "--version")) {
            printf(PROG " %s (libpangu_c %s)\n", PANGU_VERSION_STRING, pangu_version_string());
            exit(0);
        }
        if (parse_prompt_flag(flag, &a, o) || parse_sampling_flag(flag, &a, o) || parse_resource_flag(flag, &a, o) ||
            parse_spec_flag(flag, &a, o))
            continue;
        if (flag[0] == '-' && flag[1] != '\0') usage_error("unknown option '%s'", flag);
        usage_error("unexpected argument '%s' (the prompt goes after -p)", flag);
    }
    o->sampling.stop_strings = o->stops;
    check_options(o);
}

/* ------------------------------------------------------------------------------------------------ */
/* Helpers                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

static char *xstrndup(const char *s, size_t n) {
    char *d = xrealloc(NULL, n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static void sbuf_reserve(sbuf *b, size_t cap) {
    if (b->cap >= cap) return;
    b->data = xrealloc(b->data, cap);
    if (b->cap == 0) b->data[0] = '\0';
    b->cap = cap;
}

static void sbuf_set(sbuf *b, const char *s, size_t n) {
    b->len = 0;
    sbuf_append(b, s, n);
}


/* The raw bytes of one token (may be part of a UTF-8 character); returns its length, or -1 on error. */
static long token_bytes(const pangu_model *model, int32_t token, sbuf *out) {
    size_t len = 0;
    sbuf_reserve(out, 64);
    pangu_status st = pangu_token_to_bytes(model, token, out->data, out->cap, &len);
    if (st == PANGU_ERR_BUFFER_TOO_SMALL) {
        sbuf_reserve(out, len + 1);
        st = pangu_token_to_bytes(model, token, out->data, out->cap, &len);
    }
    if (st != PANGU_OK) return -1;
    out->len = len;
    return (long)len;
}

/* Write bytes to stderr with control characters escaped, for --verbose-prompt. */
static void print_escaped(const char *s, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        const unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", stderr);
        else if (c == '\t') fputs("\\t", stderr);
        else if (c == '\\') fputs("\\\\", stderr);
        else if (c < 0x20 || c == 0x7f) fprintf(stderr, "\\x%02x", c);
        else fputc(c, stderr);
    }
}

static const char *stop_reason_string(int32_t reason) {
    switch (reason) {
    case PANGU_STOP_EOS: return "end of text";
    case PANGU_STOP_TOKEN: return "stop token";
    case PANGU_STOP_STRING: return "stop string";
    case PANGU_STOP_MAX_TOKENS: return "token limit (-n)";
    case PANGU_STOP_CONTEXT_FULL: return "context full";
    case PANGU_STOP_CANCELLED: return "interrupted";
    default: return "none";
    }
}

static void print_rate(const char *what, long n, double ms) {
    fprintf(stderr, PROG ": %-8s %6ld tokens in %9.2f ms", what, n, ms);
    if (n > 0 && ms > 0) fprintf(stderr, " (%8.2f ms/token, %8.2f tokens/s)", ms / n, 1e3 * n / ms);
    fputc('\n', stderr);
}

/* The session's speculative-decoding counters (they run from its creation), after the timings. */
static void print_spec_stats(const options *o, const pangu_session *session) {
    const int mode = o->session.spec_mode;
    if (mode == PANGU_SPEC_OFF) return;
    pangu_session_stats st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    if (pangu_session_get_stats(session, &st) != PANGU_OK) return;
    fprintf(stderr, PROG ": speculative (%s): %lld drafted, %lld accepted", spec_mode_name(mode),
            (long long)st.n_drafted, (long long)st.n_accepted);
    if (st.n_drafted > 0) fprintf(stderr, " (acceptance %.1f %%)", 100.0 * (double)st.n_accepted / (double)st.n_drafted);
    fprintf(stderr, ", %lld verification steps", (long long)st.n_verify);
    if (st.n_verify > 0) fprintf(stderr, " (%.2f accepted per step)", (double)st.n_accepted / (double)st.n_verify);
    fprintf(stderr, "; %lld forward passes of the model for %lld tokens evaluated, %lld generated", (long long)st.n_forward,
            (long long)st.n_evaluated, (long long)st.n_generated);
    if (mode == PANGU_SPEC_DRAFT) fputs(" (the draft model's passes not counted)", stderr);
    fputc('\n', stderr);
}

/* ------------------------------------------------------------------------------------------------ */
/* Ctrl-C                                                                                           */
/* ------------------------------------------------------------------------------------------------ */

static volatile sig_atomic_t g_interrupted = 0;

static void on_sigint(int sig) {
    (void)sig;
    if (g_interrupted) _exit(EXIT_INTERRUPTED); /* a second Ctrl-C while the first is pending: leave now */
    g_interrupted = 1;
}

static void install_sigint(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a read at the chat prompt returns EINTR, so Ctrl-C there exits */
    sigaction(SIGINT, &sa, NULL);
}

/* Abort callback: stops prefill between chunks and generation between tokens. */
static int abort_requested(void *user_data) {
    (void)user_data;
    return g_interrupted != 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Streaming                                                                                        */
/* ------------------------------------------------------------------------------------------------ */

typedef struct stream_state {
    long n_generated; /* tokens delivered to the callback (all are in the session's context) */
    sbuf text;        /* text emitted so far (chat mode keeps the reply) */
    int keep_text;
    /* --reasoning hide: the text between [unused16] and [unused17] (the 7B's slow thinking) is not printed */
    int hide_reasoning, in_reasoning;
    int32_t think_open, think_close;
} stream_state;

static void stream_init(stream_state *s, const options *o) {
    s->hide_reasoning = o->hide_reasoning && o->think_open >= 0 && o->think_close >= 0;
    s->in_reasoning = 0;
    s->think_open = o->think_open;
    s->think_close = o->think_close;
}

static int on_token(void *user_data, int32_t token, const char *piece, size_t piece_len) {
    stream_state *s = user_data;
    ++s->n_generated;
    if (s->hide_reasoning && token == s->think_open) s->in_reasoning = 1;
    const int hidden = s->hide_reasoning && s->in_reasoning;
    if (s->hide_reasoning && token == s->think_close) s->in_reasoning = 0;
    if (piece_len && !hidden) {
        fwrite(piece, 1, piece_len, stdout);
        fflush(stdout);
        if (s->keep_text) sbuf_append(&s->text, piece, piece_len);
    }
    return g_interrupted != 0;
}

/* ------------------------------------------------------------------------------------------------ */
/* Completion mode                                                                                  */
/* ------------------------------------------------------------------------------------------------ */

/* Tokenize here rather than in pangu_session_generate so that --no-bos and --verbose-prompt work. On success
 * *ids (which the caller frees) holds *n_ids > 0 tokens; otherwise the error is printed and 1 returned. */
static int tokenize_prompt(const options *o, const pangu_model *model, const char *prompt, size_t prompt_len,
                           int32_t **ids, size_t *n_ids) {
    const int32_t add_bos = o->no_bos ? 0 : -1;
    *ids = NULL;
    *n_ids = 0;
    pangu_status st = pangu_tokenize(model, prompt, prompt_len, add_bos, 1, NULL, 0, n_ids);
    if (st == PANGU_ERR_BUFFER_TOO_SMALL) {
        *ids = xrealloc(NULL, *n_ids * sizeof **ids);
        st = pangu_tokenize(model, prompt, prompt_len, add_bos, 1, *ids, *n_ids, n_ids);
    }
    if (st != PANGU_OK) {
        free(*ids);
        *ids = NULL;
        return fail("tokenizing the prompt", st);
    }
    if (*n_ids == 0) {
        fprintf(stderr, PROG ": error: the prompt is empty and --no-bos was given: nothing to continue from\n");
        return 1;
    }
    return 0;
}

/* --verbose-prompt: each token's id and text. */
static void print_prompt_tokens(const pangu_model *model, const int32_t *ids, size_t n_ids) {
    sbuf piece = {0};
    fprintf(stderr, PROG ": prompt: %zu tokens\n", n_ids);
    for (size_t i = 0; i < n_ids; ++i) {
        fprintf(stderr, "%8d -> '", (int)ids[i]);
        if (token_bytes(model, ids[i], &piece) >= 0) print_escaped(piece.data, piece.len);
        fputs("'\n", stderr);
    }
    free(piece.data);
}

/* Timings, context shifts, drafting statistics and the stop reason, to stderr. */
static void print_completion_stats(const options *o, const pangu_session *session, const pangu_generate_result *res) {
    print_rate("prompt", res->n_prompt_tokens, res->prompt_ms);
    print_rate("generate", res->n_generated, res->generate_ms);
    pangu_session_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    if (o->session.context_policy == PANGU_CONTEXT_SLIDE && pangu_session_get_stats(session, &stats) == PANGU_OK)
        fprintf(stderr, PROG ": context shifts: %lld\n", (long long)stats.n_context_shifts);
    print_spec_stats(o, session);
    fprintf(stderr, PROG ": stopped: %s\n", stop_reason_string(res->stop_reason));
}

/* The exit status of a completion that ended with `st` after `n_generated` tokens, with its report. */
static int finish_completion(const options *o, const pangu_session *session, pangu_status st, long n_generated,
                             const pangu_generate_result *res) {
    if (st != PANGU_OK && st != PANGU_ERR_CANCELLED && st != PANGU_ERR_CONTEXT_FULL) return fail("generating", st);
    if (st == PANGU_ERR_CONTEXT_FULL && n_generated == 0 && res->stop_reason == PANGU_STOP_NONE)
        return fail("evaluating the prompt", st); /* the prompt itself does not fit */
    if (res->stop_reason != PANGU_STOP_NONE) print_completion_stats(o, session, res);
    if (st == PANGU_ERR_CANCELLED) {
        fprintf(stderr, PROG ": interrupted\n");
        return EXIT_INTERRUPTED;
    }
    if (st == PANGU_ERR_CONTEXT_FULL) {
        if (o->until_full) return 0; /* -n -1: a full context is the expected end */
        return fail("generating", st);
    }
    return 0;
}

static int run_completion(const options *o, pangu_model *model, pangu_session *session, const char *prompt,
                          size_t prompt_len) {
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (tokenize_prompt(o, model, prompt, prompt_len, &ids, &n_ids) != 0) return 1;
    if (o->verbose_prompt) print_prompt_tokens(model, ids, n_ids);

    stream_state ss = {0};
    stream_init(&ss, o);
    pangu_generate_result res;
    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;
    if (o->display_prompt) {
        fwrite(prompt, 1, prompt_len, stdout);
        fflush(stdout);
    }
    const pangu_status st = pangu_session_generate_tokens(session, ids, n_ids, &o->sampling, on_token, &ss, &res);
    free(ids);
    fputc('\n', stdout);
    fflush(stdout);
    return finish_completion(o, session, st, ss.n_generated, &res);
}

/* ------------------------------------------------------------------------------------------------ */
/* Chat mode                                                                                        */
/* ------------------------------------------------------------------------------------------------ */

typedef struct chat {
    pangu_model *model;
    pangu_session *session;
    int template_mode;            /* 1: the model's chat template; 0: plain "用户：/助手：" text */
    int32_t eos;                  /* the model's end-of-text token */
    pangu_sampling_params sp;     /* the user's settings with the chat's stop strings and tokens */
    const char *stops[MAX_STOP_STRINGS + 1];
    int32_t stop_tokens[8];       /* from pangu_chat_stop_tokens (2 today) */
    uint64_t seed;                /* the user's seed: turn t samples with seed + t */
    long turn;
    pangu_chat_message *messages; /* the conversation; contents are owned (malloc) */
    size_t n_messages, cap_messages;
    size_t n_system;              /* 1 if messages[0] is the system prompt */
    sbuf fed;                     /* the rendered text the session's context stands for */
    sbuf rendered;
    int32_t *tokens;
    size_t cap_tokens;
    stream_state reply;           /* the reply being generated */
    long total_prompt, total_gen; /* tokens of all turns, and their milliseconds */
    double total_prompt_ms, total_gen_ms;
} chat;

static void chat_push(chat *c, const char *role, const char *content, size_t len) {
    if (c->n_messages == c->cap_messages) {
        c->cap_messages = c->cap_messages ? 2 * c->cap_messages : 16;
        c->messages = xrealloc(c->messages, c->cap_messages * sizeof *c->messages);
    }
    c->messages[c->n_messages].role = role;
    c->messages[c->n_messages].content = xstrndup(content, len);
    ++c->n_messages;
}

static void chat_pop(chat *c) {
    if (c->n_messages == 0) return;
    --c->n_messages;
    free((char *)c->messages[c->n_messages].content);
}

/* Empty the context: the next turn feeds the whole rendered conversation again. */
static void chat_forget_context(chat *c) {
    pangu_session_reset(c->session);
    sbuf_set(&c->fed, "", 0);
}

/* Start over: keep the system prompt, forget the rest and empty the context. */
static void chat_restart(chat *c) {
    while (c->n_messages > c->n_system) chat_pop(c);
    chat_forget_context(c);
}

/* Render the whole conversation, ending with the assistant's opening, into c->rendered. */
static pangu_status chat_render(chat *c) {
    if (!c->template_mode) {
        sbuf_set(&c->rendered, "", 0);
        for (size_t i = 0; i < c->n_messages; ++i) {
            const char *role = c->messages[i].role;
            const char *label = strcmp(role, "system") == 0 ? "系统：" : strcmp(role, "user") == 0 ? "用户：" : "助手：";
            sbuf_append(&c->rendered, label, strlen(label));
            sbuf_append(&c->rendered, c->messages[i].content, strlen(c->messages[i].content));
            sbuf_append(&c->rendered, "\n", 1);
        }
        sbuf_append(&c->rendered, "助手：", strlen("助手："));
        return PANGU_OK;
    }
    size_t len = 0;
    sbuf_reserve(&c->rendered, 1024);
    pangu_status st =
        pangu_apply_chat_template(c->model, c->messages, c->n_messages, 1, c->rendered.data, c->rendered.cap, &len);
    if (st == PANGU_ERR_BUFFER_TOO_SMALL) {
        sbuf_reserve(&c->rendered, len + 1);
        st = pangu_apply_chat_template(c->model, c->messages, c->n_messages, 1, c->rendered.data, c->rendered.cap,
                                       &len);
    }
    if (st == PANGU_OK) c->rendered.len = len;
    return st;
}

/*
 * After a reply, make the context stand for exactly `fed` = rendered prompt + a prefix of the reply text:
 * keep the generated tokens whose bytes spell the reply's beginning (ending on a character boundary), drop
 * the rest (an EOS or stop token, the tokens of a stop string, a partial character). The next turn then
 * feeds the rendered conversation from where `fed` ends, so the context always equals the rendered history.
 */
static int chat_settle(chat *c, long n_generated, const char *reply, size_t reply_len) {
    const size_t n_now = pangu_session_n_tokens(c->session);
    if ((size_t)n_generated > n_now) return -1;
    if (c->cap_tokens < n_now) {
        c->cap_tokens = n_now;
        c->tokens = xrealloc(c->tokens, n_now * sizeof *c->tokens);
    }
    size_t n = 0;
    if (pangu_session_get_tokens(c->session, c->tokens, c->cap_tokens, &n) != PANGU_OK || n != n_now) return -1;
    const size_t first = n_now - (size_t)n_generated;
    size_t keep = 0, kept_bytes = 0, bytes = 0;
    sbuf piece = {0};
    for (size_t j = first; j < n_now; ++j) {
        if (c->tokens[j] == c->eos) break;
        const long len = token_bytes(c->model, c->tokens[j], &piece);
        if (len <= 0 || bytes + (size_t)len > reply_len || memcmp(reply + bytes, piece.data, (size_t)len) != 0) break;
        bytes += (size_t)len;
        if (bytes == reply_len || ((unsigned char)reply[bytes] & 0xC0) != 0x80) { /* a character boundary */
            keep = j + 1 - first;
            kept_bytes = bytes;
        }
    }
    free(piece.data);
    if (pangu_session_truncate(c->session, first + keep) != PANGU_OK) return -1;
    sbuf_append(&c->fed, reply, kept_bytes);
    return 0;
}

/* A reply stops at the user's --stop strings and at the end of its turn: the chat template's end-of-turn
 * tokens, or in the plain-text format the next "用户：" line. Returns 0, or 1 after printing an error. */
static int chat_set_stops(chat *c, const options *o) {
    size_t n_stops = 0, n_stop_tokens = 0;
    for (size_t i = 0; i < o->sampling.n_stop_strings; ++i) c->stops[n_stops++] = o->stops[i];
    if (c->template_mode) {
        /* The end of a message ([unused10]) and the start of the next ([unused9]) each end the reply. */
        const size_t cap = sizeof c->stop_tokens / sizeof c->stop_tokens[0];
        const pangu_status st = pangu_chat_stop_tokens(c->model, c->stop_tokens, cap, &n_stop_tokens);
        if (st != PANGU_OK) return fail("reading the chat's end-of-turn tokens", st);
        fprintf(stderr, PROG ": chat mode with the model's chat template\n");
    } else {
        c->stops[n_stops++] = "\n用户：";
        fprintf(stderr, PROG ": this model has no chat template tokens; chat uses plain text turns "
                        "(\"用户：...\\n助手：\") and stops at \"\\n用户：\"\n");
    }
    c->sp.stop_strings = c->stops;
    c->sp.n_stop_strings = n_stops;
    c->sp.stop_tokens = n_stop_tokens ? c->stop_tokens : NULL;
    c->sp.n_stop_tokens = n_stop_tokens;
    return 0;
}

/* Returns 0, or 1 after printing an error (c is then still safe to chat_free). */
static int chat_init(chat *c, const options *o, pangu_model *model, pangu_session *session) {
    memset(c, 0, sizeof *c);
    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    const pangu_status st = pangu_model_get_info(model, &info);
    if (st != PANGU_OK) return fail("reading the model info", st);
    c->model = model;
    c->session = session;
    c->template_mode = info.has_chat_template != 0;
    c->eos = info.eos_token;
    c->sp = o->sampling;
    c->seed = o->sampling.seed;
    c->reply.keep_text = 1;
    stream_init(&c->reply, o);
    return chat_set_stops(c, o);
}

static void chat_free(chat *c) {
    free(c->reply.text.data);
    while (c->n_messages) chat_pop(c);
    free(c->messages);
    free(c->fed.data);
    free(c->rendered.data);
    free(c->tokens);
}

/* The next user message, in *line with its length in *len (without the line end): returns 1 for a message, 0
 * for a line to skip (empty, or holding a NUL byte), -1 at the end of input or on Ctrl-C at the prompt. */
static int chat_read_message(int tty, char **line, size_t *cap, size_t *len) {
    g_interrupted = 0;
    if (tty) {
        fputs("> ", stderr);
        fflush(stderr);
    }
    errno = 0;
    const ssize_t got = getline(line, cap, stdin);
    if (got < 0) {
        if (tty || g_interrupted) fputc('\n', stderr);
        return -1; /* EOF, or Ctrl-C at the prompt */
    }
    size_t n = (size_t)got;
    while (n && ((*line)[n - 1] == '\n' || (*line)[n - 1] == '\r')) --n;
    *len = n;
    if (n == 0) return 0;
    if (memchr(*line, '\0', n)) {
        fprintf(stderr, PROG ": the message contains a NUL byte; skipped\n");
        return 0;
    }
    return 1;
}

/* Add the user's message and render the conversation. Returns 0 to go on with the turn, 1 to skip it (a bad
 * message), -1 on an error that ends the chat. */
static int chat_add_message(chat *c, const char *msg, size_t len) {
    chat_push(c, "user", msg, len);
    const pangu_status st = chat_render(c);
    if (st != PANGU_OK) {
        fail("rendering the conversation", st);
        chat_pop(c);
        return st == PANGU_ERR_INVALID_UTF8 || st == PANGU_ERR_INVALID_ARGUMENT ? 1 : -1;
    }
    /* The context stands for `fed`; feed only what the rendered conversation adds to it. */
    if (c->rendered.len < c->fed.len || (c->fed.len && memcmp(c->rendered.data, c->fed.data, c->fed.len) != 0))
        chat_forget_context(c); /* cannot happen with a prefix-stable format; stay correct anyway */
    return 0;
}

/* Stream the reply to the rendered conversation, feeding only what the context lacks; count its tokens. */
static pangu_status chat_generate(chat *c) {
    stream_state *ss = &c->reply;
    ss->n_generated = 0;
    sbuf_set(&ss->text, "", 0);
    pangu_generate_result res;
    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;
    c->sp.seed = c->seed + (uint64_t)c->turn++; /* reproducible, yet not the same draw every turn */
    const pangu_status st =
        pangu_session_generate(c->session, c->rendered.data + c->fed.len, &c->sp, on_token, ss, &res);
    if (ss->n_generated > 0 || st == PANGU_OK) fputc('\n', stdout);
    fflush(stdout);
    if (res.stop_reason != PANGU_STOP_NONE) {
        c->total_prompt += res.n_prompt_tokens;
        c->total_prompt_ms += res.prompt_ms;
        c->total_gen += res.n_generated;
        c->total_gen_ms += res.generate_ms;
    }
    return st;
}

/* Bring the conversation and the context up to date after a reply that ended with `st`; the context held
 * `n_before` tokens before the turn. Returns 0 to go on, 1 on an error that ends the chat. */
static int chat_finish_turn(chat *c, pangu_status st, size_t n_before) {
    if (st == PANGU_ERR_CONTEXT_FULL) {
        fprintf(stderr, PROG ": the context is full (%zu tokens); starting a new conversation\n",
                pangu_session_n_tokens(c->session));
        chat_restart(c);
        return 0;
    }
    if (st != PANGU_OK && st != PANGU_ERR_CANCELLED) {
        fail("generating", st);
        if (st != PANGU_ERR_INVALID_UTF8) return 1;
        chat_pop(c); /* bad input: drop the turn, the context is unchanged */
        return 0;
    }
    if (st == PANGU_ERR_CANCELLED) fprintf(stderr, PROG ": reply interrupted\n");
    if (c->reply.n_generated == 0) {
        /* Interrupted before the reply began: forget the turn and restore the context. */
        chat_pop(c);
        if (pangu_session_n_tokens(c->session) < n_before || pangu_session_truncate(c->session, n_before) != PANGU_OK)
            chat_forget_context(c);
        return 0;
    }
    const sbuf *text = &c->reply.text;
    sbuf_set(&c->fed, c->rendered.data, c->rendered.len);
    chat_push(c, "assistant", text->len ? text->data : "", text->len);
    if (chat_settle(c, c->reply.n_generated, text->data ? text->data : "", text->len) != 0) chat_forget_context(c);
    return 0;
}

/* One turn: the user's message in, the reply out. Returns 0 to go on, 1 on an error that ends the chat. */
static int chat_turn(chat *c, const char *msg, size_t len) {
    const int added = chat_add_message(c, msg, len);
    if (added != 0) return added < 0;
    const size_t n_before = pangu_session_n_tokens(c->session);
    return chat_finish_turn(c, chat_generate(c), n_before);
}

static int run_chat(const options *o, pangu_model *model, pangu_session *session, const char *system_prompt,
                    size_t system_len) {
    chat c;
    if (chat_init(&c, o, model, session) != 0) {
        chat_free(&c);
        return 1;
    }
    if (system_prompt && system_len) {
        chat_push(&c, "system", system_prompt, system_len);
        c.n_system = 1;
    }
    const int tty = isatty(STDIN_FILENO);
    if (tty) fprintf(stderr, PROG ": type a message and press Enter; Ctrl-C stops a reply; Ctrl-D or Ctrl-C here quits\n");

    char *line = NULL;
    size_t line_cap = 0, len = 0;
    int rc = 0, got;
    while (rc == 0 && (got = chat_read_message(tty, &line, &line_cap, &len)) >= 0)
        if (got > 0) rc = chat_turn(&c, line, len);

    if (c.total_prompt + c.total_gen > 0) {
        print_rate("prompt", c.total_prompt, c.total_prompt_ms);
        print_rate("generate", c.total_gen, c.total_gen_ms);
        print_spec_stats(o, session);
    }
    free(line);
    chat_free(&c);
    return rc;
}

/* ------------------------------------------------------------------------------------------------ */
/* main                                                                                             */
/* ------------------------------------------------------------------------------------------------ */

/* The prompt text: -p, or the contents of -f FILE (then *file_text owns it). Returns 0, or 1 after an error. */
static int read_prompt(const options *o, const char **prompt, size_t *len, char **file_text) {
    *prompt = o->prompt ? o->prompt : "";
    *len = strlen(*prompt);
    *file_text = NULL;
    if (!o->prompt_file) return 0;
    *file_text = read_file(o->prompt_file, "prompt file ", len);
    if (!*file_text) return 1;
    *prompt = *file_text;
    return 0;
}

/* Load the model and the draft model if there is one, reporting each on stderr. Returns 0, or 1 after an
 * error (what was loaded is in *model and *draft for the caller to free). */
/* The id of a special piece such as "[unused16]" when the model has it as one token, else -1. */
static int32_t special_id(const pangu_model *model, const char *piece) {
    int32_t ids[2];
    size_t n = 0;
    if (pangu_tokenize(model, piece, strlen(piece), 0, 1, ids, 2, &n) != PANGU_OK || n != 1) return -1;
    return ids[0];
}

/* What the model brings: generation_config.json's sampling defaults for the flags the user did not give, and
 * the reasoning markers. */
static void apply_model_defaults(options *o, const pangu_model *model) {
    o->think_open = special_id(model, "[unused16]");
    o->think_close = special_id(model, "[unused17]");
    if (o->hide_reasoning && (o->think_open < 0 || o->think_close < 0))
        fprintf(stderr, PROG ": warning: --reasoning hide: the model has no [unused16]/[unused17] tokens\n");
    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    pangu_sampling_params d;
    pangu_sampling_params_init(&d);
    if (pangu_model_get_info(model, &info) != PANGU_OK || !info.has_generation_config ||
        pangu_model_get_sampling_defaults(model, &d) != PANGU_OK)
        return;
    pangu_sampling_params *sp = &o->sampling;
    if (!(o->sampling_given & SET_TEMP)) sp->temperature = d.temperature;
    if (!(o->sampling_given & SET_TOP_K)) sp->top_k = d.top_k;
    if (!(o->sampling_given & SET_TOP_P)) sp->top_p = d.top_p;
    if (!(o->sampling_given & SET_PENALTY)) sp->repetition_penalty = d.repetition_penalty;
    if (!(o->sampling_given & SET_N)) sp->max_new_tokens = d.max_new_tokens;
    fprintf(stderr, PROG ": sampling defaults from %s/generation_config.json (flags given override them)\n",
            o->model_dir);
}

static int load_models(const options *o, pangu_model **model, pangu_model **draft) {
    double t0 = now_ms();
    pangu_status st = pangu_model_load(o->model_dir, &o->model, model);
    if (st != PANGU_OK) return fail("loading the model", st);
    const double load_ms = now_ms() - t0;
    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if (pangu_model_get_info(*model, &info) == PANGU_OK)
        fprintf(stderr,
                PROG ": loaded %s in %.1f ms: %d layers, hidden %d, %d/%d heads, vocab %d, %.2f M parameters, "
                     "%.1f MiB of weights, %s activations\n",
                o->model_dir, load_ms, info.n_layer, info.n_embd, info.n_head, info.n_head_kv, info.n_vocab,
                info.n_params / 1e6, info.weight_bytes / (1024.0 * 1024.0), cli_precision_name(info.activation_precision));
    if (!o->draft_model_dir) return 0;

    t0 = now_ms();
    st = pangu_model_load(o->draft_model_dir, &o->model, draft);
    if (st != PANGU_OK) return fail("loading the draft model", st);
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if (pangu_model_get_info(*draft, &info) == PANGU_OK)
        fprintf(stderr, PROG ": loaded draft model %s in %.1f ms: %d layers, hidden %d, %.2f M parameters\n",
                o->draft_model_dir, now_ms() - t0, info.n_layer, info.n_embd, info.n_params / 1e6);
    return 0;
}

/* The sampling and speculative-decoding settings, to stderr. */
static void print_settings(const options *o) {
    const pangu_sampling_params *sp = &o->sampling;
    const pangu_session_params *ss = &o->session;
    fprintf(stderr, PROG ": %d threads, batch %d, temp %g, top-k %d, top-p %g, min-p %g, repeat-penalty %g\n",
            (int)ss->n_threads, (int)ss->n_batch, (double)sp->temperature, (int)sp->top_k, (double)sp->top_p,
            (double)sp->min_p, (double)sp->repetition_penalty);
    if (ss->spec_mode == PANGU_SPEC_OFF) return;
    fprintf(stderr, PROG ": speculative decoding: %s, draft length %d", spec_mode_name(ss->spec_mode),
            (int)ss->spec_draft_len);
    if (ss->spec_mode == PANGU_SPEC_PLD) fprintf(stderr, ", n-gram %d", (int)ss->spec_ngram);
    if (ss->spec_mode == PANGU_SPEC_SELF) {
        fputs(", layers ", stderr);
        if (ss->n_self_draft_layers == 0) fputs("every 4th from 0 (default)", stderr);
        for (int i = 0; i < ss->n_self_draft_layers; ++i)
            fprintf(stderr, "%s%d", i ? "," : "", (int)ss->self_draft_layers[i]);
    }
    fputc('\n', stderr);
}

int main(int argc, char **argv) {
    cli_prog = PROG;
    options o;
    parse_args(argc, argv, &o);

    if (pangu_version_number() / 10000 != PANGU_VERSION_MAJOR)
        fprintf(stderr, PROG ": warning: built for libpangu_c %s but running with %s\n", PANGU_VERSION_STRING,
                pangu_version_string());

    const char *prompt = NULL;
    size_t prompt_len = 0;
    char *file_text = NULL;
    if (read_prompt(&o, &prompt, &prompt_len, &file_text) != 0) return 1;

    if (!o.seed_given) o.sampling.seed = (uint64_t)time(NULL);
    fprintf(stderr, PROG ": seed %llu\n", (unsigned long long)o.sampling.seed);

    pangu_model *model = NULL, *draft = NULL;
    pangu_session *session = NULL;
    int rc = load_models(&o, &model, &draft);
    if (rc == 0) {
        apply_model_defaults(&o, model);
        o.session.draft_model = draft;
        const pangu_status st = pangu_session_create(model, &o.session, &session);
        if (st != PANGU_OK) rc = fail("creating the session", st);
    }
    if (rc == 0) {
        print_settings(&o);
        install_sigint();
        pangu_session_set_abort_callback(session, abort_requested, NULL);
        rc = o.chat ? run_chat(&o, model, session, prompt, prompt_len)
                    : run_completion(&o, model, session, prompt, prompt_len);
    }
    pangu_session_free(session);
    pangu_model_free(draft);
    pangu_model_free(model);
    free(file_text);
    return rc;
}
