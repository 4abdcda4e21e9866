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
    out->s = xrealloc(out->s, len + 1); /* room for len bytes and the NUL */
    st = pangu_apply_chat_template(model, g_msgs, g_n_msgs, 1, out->s, len + 1, &len);
    out->len = len;
    return st;
}

static int fail(const char *what, pangu_status st) {
    fprintf(stderr, "chat: %s: %s: %s\n", what, pangu_status_string(st), pangu_last_error());
    return 1;
}

/* A chat: the model, its session, how replies are sampled, and the text the session's context stands for. */
typedef struct chat {
    pangu_model *model;
    pangu_session *session;
    pangu_sampling_params sp;
    int use_template;
    int32_t end_of_turn[2];
    text fed, rendered, reply; /* fed: the text the session's context stands for */
} chat;

static const char *const kPlainStop = "\n用户：";

static void catch_ctrl_c(pangu_session *session) {
    struct sigaction sa; /* Ctrl-C sets a flag instead of ending the program */
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESTART; /* a Ctrl-C while waiting for input does not interrupt the read */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    pangu_session_set_abort_callback(session, should_abort, NULL);
}

/* How replies are sampled, and what ends one. */
static pangu_status setup_sampling(chat *c) {
    pangu_sampling_params_init(&c->sp);
    c->sp.temperature = 0.7f;
    c->sp.max_new_tokens = 256;
    if (c->use_template) { /* a reply ends at the end of its message ([unused10]) or the start of the next ([unused9]) */
        c->sp.stop_tokens = c->end_of_turn;
        return pangu_chat_stop_tokens(c->model, c->end_of_turn, 2, &c->sp.n_stop_tokens);
    }
    c->sp.stop_strings = &kPlainStop;
    c->sp.n_stop_strings = 1;
    fprintf(stderr, "chat: the model has no chat template; using plain text turns (\"用户：...\\n助手：\")\n");
    return PANGU_OK;
}

/* The context no longer stands for any text: start it over. */
static void restart(chat *c) {
    pangu_session_reset(c->session);
    c->fed.len = 0;
}

/* One user message and the reply to it. Returns 0 to go on, 1 on an error that ends the chat. */
static int turn(chat *c, const char *line) {
    push("user", line);
    pangu_status st = render(c->model, c->use_template, &c->rendered);
    if (st != PANGU_OK) {
        fail("rendering the conversation", st);
        pop();
        return 0;
    }
    if (c->rendered.len < c->fed.len || memcmp(c->rendered.s, c->fed.s, c->fed.len) != 0)
        restart(c); /* not expected with these formats, but then start the context over */
    const size_t n_before = pangu_session_n_tokens(c->session);
    pangu_generate_result res;
    memset(&res, 0, sizeof res);
    res.struct_size = sizeof res;
    c->reply.len = 0;
    append(&c->reply, "", 0);
    g_stop = 0;
    /* Feed only what the session has not seen: the new user turn and the assistant's opening. */
    st = pangu_session_generate(c->session, c->rendered.s + c->fed.len, &c->sp, on_token, &c->reply, &res);
    fputc('\n', stdout);
    fflush(stdout);
    if (st == PANGU_ERR_CANCELLED) fputs("chat: reply interrupted\n", stderr);
    if (st == PANGU_ERR_CONTEXT_FULL) { /* forget the conversation, keep the system prompt */
        fputs("chat: the context is full; starting a new conversation\n", stderr);
        while (g_n_msgs > g_n_system) pop();
        restart(c);
        return 0;
    }
    if (st == PANGU_ERR_CANCELLED && c->reply.len == 0) { /* stopped before the reply began: forget the turn */
        pop();
        if (pangu_session_truncate(c->session, n_before) != PANGU_OK) restart(c);
        return 0;
    }
    if (st != PANGU_OK && st != PANGU_ERR_CANCELLED) return fail("generating", st);
    /* The context now holds the rendered text, the reply and what ended it. Record the text it stands for, so
     * that the next turn continues from there. A stop token or EOS is dropped from the context (the next
     * rendering closes the reply itself); the plain-text stop string stays, being what the format puts next. */
    push("assistant", c->reply.s);
    if (res.stop_reason == PANGU_STOP_TOKEN || res.stop_reason == PANGU_STOP_EOS)
        pangu_session_truncate(c->session, pangu_session_n_tokens(c->session) - 1);
    c->fed.len = 0;
    append(&c->fed, c->rendered.s, c->rendered.len);
    append(&c->fed, c->reply.s, c->reply.len);
    if (res.stop_reason == PANGU_STOP_STRING) append(&c->fed, kPlainStop, strlen(kPlainStop));
    return 0;
}

/* Reads one message per line until end of input. */
static int converse(chat *c) {
    char *line = NULL;
    size_t cap = 0;
    const int tty = isatty(STDIN_FILENO);
    int rc = 0;
    append(&c->fed, "", 0);
    while (rc == 0) {
        if (tty) fputs("> ", stderr);
        ssize_t got = getline(&line, &cap, stdin);
        if (got < 0) break; /* end of input */
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
        if (got > 0) rc = turn(c, line);
    }
    free(line);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s MODEL_DIR [\"system prompt\"]\n", argv[0]);
        return 2;
    }
    chat c;
    memset(&c, 0, sizeof c);
    pangu_status st = pangu_model_load(argv[1], NULL, &c.model);
    if (st != PANGU_OK) return fail("loading the model", st);
    pangu_model_info info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if ((st = pangu_model_get_info(c.model, &info)) != PANGU_OK ||
        (st = pangu_session_create(c.model, NULL, &c.session))) {
        pangu_model_free(c.model);
        return fail("creating a session", st);
    }
    catch_ctrl_c(c.session);
    c.use_template = info.has_chat_template != 0;
    int rc = 0;
    if ((st = setup_sampling(&c)) != PANGU_OK) {
        rc = fail("reading the end-of-turn tokens", st);
    } else {
        if (argc == 3) {
            push("system", argv[2]);
            g_n_system = 1;
        }
        rc = converse(&c);
    }
    while (g_n_msgs > 0) pop();
    free(g_msgs);
    free(c.fed.s);
    free(c.rendered.s);
    free(c.reply.s);
    pangu_session_free(c.session);
    pangu_model_free(c.model);
    return rc;
}
