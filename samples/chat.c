/*
 * chat -- an interactive multi-turn chat with an openPangu-Embedded model, using the public API only.
 *
 *   chat MODEL_DIR ["system prompt"]
 *
 * Reads one user message per line from stdin and streams each reply to stdout. The session keeps the KV cache
 * of the whole conversation, so every turn feeds the model only the text it has not seen yet. Ctrl-C stops the
 * reply being generated (also while a long prompt is being read); end of input (Ctrl-D) quits with status 0.
 * `pangu-cli --chat` does the same with every option and handles the remaining corner cases exactly.
 */
#define _POSIX_C_SOURCE 200809L

#include <pangu/pangu.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop = 0; /* set by Ctrl-C, cleared before every reply */

static void on_sigint(int sig) {
    (void)sig;
    g_stop = 1;
}

/* Checked between prompt chunks and between tokens, so Ctrl-C also interrupts the prefill of a long prompt. */
static int should_abort(void *user_data) {
    (void)user_data;
    return g_stop;
}

static void *xrealloc(void *p, size_t n) {
    if (!(p = realloc(p, n))) {
        fputs("chat: out of memory\n", stderr);
        exit(1);
    }
    return p;
}

/* A growable string. */
typedef struct text {
    char *s;
    size_t len;
} text;

static void append(text *t, const char *s, size_t n) {
    t->s = xrealloc(t->s, t->len + n + 1);
    memcpy(t->s + t->len, s, n);
    t->len += n;
    t->s[t->len] = '\0';
}

/* Streams the reply to stdout and keeps it; returning non-zero (after Ctrl-C) ends the reply. */
static int on_token(void *user_data, int32_t token, const char *piece, size_t len) {
    (void)token;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    append(user_data, piece, len);
    return g_stop;
}

/* The conversation so far; message contents are owned copies. */
static pangu_chat_message *g_msgs = NULL;
static size_t g_n_msgs = 0, g_n_system = 0;

static void push(const char *role, const char *content) {
    text copy = {0};
    append(&copy, content, strlen(content));
    g_msgs = xrealloc(g_msgs, (g_n_msgs + 1) * sizeof *g_msgs);
    g_msgs[g_n_msgs].role = role;
    g_msgs[g_n_msgs++].content = copy.s;
}

static void pop(void) { free((char *)g_msgs[--g_n_msgs].content); }

/* Render the whole conversation, ending with the opening of the assistant's reply. */
static pangu_status render(const pangu_model *model, int use_template, text *out) {
    out->len = 0;
    append(out, "", 0);
    if (!use_template) { /* plain text: "系统：...\n用户：...\n助手：...\n用户：...\n助手：" */
        for (size_t i = 0; i < g_n_msgs; ++i) {
            const char *role = g_msgs[i].role;
            const char *label = !strcmp(role, "system") ? "系统：" : !strcmp(role, "user") ? "用户：" : "助手：";
            append(out, label, strlen(label));
            append(out, g_msgs[i].content, strlen(g_msgs[i].content));
            append(out, "\n", 1);
        }
        append(out, "助手：", strlen("助手："));
        return PANGU_OK;
    }
    size_t len = 0; /* a first call with capacity 0 reports the length needed */
    pangu_status st = pangu_apply_chat_template(model, g_msgs, g_n_msgs, 1, NULL, 0, &len);
    if (st != PANGU_ERR_BUFFER_TOO_SMALL) return st;
    append(out, "", len); /* make room for len bytes and the NUL */
    st = pangu_apply_chat_template(model, g_msgs, g_n_msgs, 1, out->s, len + 1, &len);
    out->len = len;
    return st;
}

static int fail(const char *what, pangu_status st) {
    fprintf(stderr, "chat: %s: %s: %s\n", what, pangu_status_string(st), pangu_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s MODEL_DIR [\"system prompt\"]\n", argv[0]);
        return 2;
    }
    pangu_model *model = NULL;
    pangu_status st = pangu_model_load(argv[1], NULL, &model);
    if (st != PANGU_OK) return fail("loading the model", st);
    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    pangu_session *session = NULL;
    if ((st = pangu_model_get_info(model, &info)) != PANGU_OK || (st = pangu_session_create(model, NULL, &session))) {
        pangu_model_free(model);
        return fail("creating a session", st);
    }

    struct sigaction sa; /* Ctrl-C sets a flag instead of ending the program */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESTART; /* a Ctrl-C while waiting for input does not interrupt the read */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    pangu_session_set_abort_callback(session, should_abort, NULL);

    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.temperature = 0.7f;
    sp.max_new_tokens = 256;
    const int use_template = info.has_chat_template != 0;
    const char *plain_stop = "\n用户：";
    int32_t end_of_turn[2];
    if (use_template) { /* a reply ends at the end of its message ([unused10]) or the start of the next ([unused9]) */
        if ((st = pangu_chat_stop_tokens(model, end_of_turn, 2, &sp.n_stop_tokens)) != PANGU_OK) {
            pangu_session_free(session);
            pangu_model_free(model);
            return fail("reading the end-of-turn tokens", st);
        }
        sp.stop_tokens = end_of_turn;
    } else {
        sp.stop_strings = &plain_stop;
        sp.n_stop_strings = 1;
        fprintf(stderr, "chat: the model has no chat template; using plain text turns (\"用户：...\\n助手：\")\n");
    }
    if (argc == 3) {
        push("system", argv[2]);
        g_n_system = 1;
    }

    text fed = {0}, rendered = {0}, reply = {0}; /* fed: the text the session's context stands for */
    append(&fed, "", 0);
    char *line = NULL;
    size_t cap = 0;
    const int tty = isatty(STDIN_FILENO);
    int rc = 0;
    for (;;) {
        if (tty) fputs("> ", stderr);
        ssize_t got = getline(&line, &cap, stdin);
        if (got < 0) break; /* end of input */
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
        if (got == 0) continue;
        push("user", line);
        if ((st = render(model, use_template, &rendered)) != PANGU_OK) {
            fail("rendering the conversation", st);
            pop();
            continue;
        }
        if (rendered.len < fed.len || memcmp(rendered.s, fed.s, fed.len) != 0) {
            pangu_session_reset(session); /* not expected with these formats, but then start the context over */
            fed.len = 0;
        }
        const size_t n_before = pangu_session_n_tokens(session);
        pangu_generate_result res;
        memset(&res, 0, sizeof res);
        res.struct_size = sizeof res;
        reply.len = 0;
        append(&reply, "", 0);
        g_stop = 0;
        /* Feed only what the session has not seen: the new user turn and the assistant's opening. */
        st = pangu_session_generate(session, rendered.s + fed.len, &sp, on_token, &reply, &res);
        fputc('\n', stdout);
        fflush(stdout);
        if (st == PANGU_ERR_CANCELLED) fputs("chat: reply interrupted\n", stderr);
        if (st == PANGU_ERR_CONTEXT_FULL) { /* forget the conversation, keep the system prompt */
            fputs("chat: the context is full; starting a new conversation\n", stderr);
            while (g_n_msgs > g_n_system) pop();
            pangu_session_reset(session);
            fed.len = 0;
            continue;
        }
        if (st == PANGU_ERR_CANCELLED && reply.len == 0) { /* stopped before the reply began: forget the turn */
            pop();
            if (pangu_session_truncate(session, n_before) != PANGU_OK) {
                pangu_session_reset(session);
                fed.len = 0;
            }
            continue;
        }
        if (st != PANGU_OK && st != PANGU_ERR_CANCELLED) {
            rc = fail("generating", st);
            break;
        }
        /* The context now holds the rendered text, the reply and what ended it. Record the text it stands for, so
         * that the next turn continues from there. A stop token or EOS is dropped from the context (the next
         * rendering closes the reply itself); the plain-text stop string stays, being what the format puts next. */
        push("assistant", reply.s);
        if (res.stop_reason == PANGU_STOP_TOKEN || res.stop_reason == PANGU_STOP_EOS)
            pangu_session_truncate(session, pangu_session_n_tokens(session) - 1);
        fed.len = 0;
        append(&fed, rendered.s, rendered.len);
        append(&fed, reply.s, reply.len);
        if (res.stop_reason == PANGU_STOP_STRING) append(&fed, plain_stop, strlen(plain_stop));
    }

    while (g_n_msgs > 0) pop();
    free(g_msgs);
    free(line);
    free(fed.s);
    free(rendered.s);
    free(reply.s);
    pangu_session_free(session);
    pangu_model_free(model);
    return rc;
}
