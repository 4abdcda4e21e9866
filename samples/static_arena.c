/* An embedded-style program: all session memory is one static buffer whose size is a compile-time constant.
 * At start-up it checks the constant against pangu_session_estimate(), then generates with no heap
 * allocation in its loop, and prints its memory budget.
 *
 *   static_arena MODEL_DIR ["prompt"]
 *
 * Size the constant for your model and context with this program itself: it prints the exact figure when
 * the buffer is too small. */
#include <stdalign.h>
#include <stdio.h>
#include <string.h>

#include "pangu/pangu.h"

/* pangu-tiny with a 512-token context needs about 2 MB; the rest is headroom for other builds. */
#ifndef ARENA_BYTES
#define ARENA_BYTES (4u * 1024u * 1024u)
#endif
#define CONTEXT 512
#define MAX_PROMPT 256

static alignas(64) unsigned char g_arena[ARENA_BYTES];
static int32_t g_prompt[MAX_PROMPT];

static int print_piece(void *user, int32_t token, const char *piece, size_t len) {
    (void)user;
    (void)token;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static int fail(const char *what, pangu_status st) {
    fprintf(stderr, "static_arena: %s: %s: %s\n", what, pangu_status_string(st), pangu_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: static_arena MODEL_DIR [\"prompt\"]\n");
        return 2;
    }
    const char *text = argc > 2 ? argv[2] : "def main():\n";
    pangu_model *model = NULL;
    pangu_status st = pangu_model_load(argv[1], NULL, &model);
    if (st) return fail("load", st);

    pangu_session_params sp;
    pangu_session_params_init_sized(&sp, sizeof sp);
    sp.n_ctx = CONTEXT;
    sp.n_batch = 32;
    pangu_session_memory mem;
    memset(&mem, 0, sizeof mem);
    mem.struct_size = sizeof mem;
    if ((st = pangu_session_estimate(model, &sp, &mem))) return fail("estimate", st);
    fprintf(stderr, "memory budget: arena %u bytes; session needs %zu (KV cache %zu, activations %zu, logits %zu, "
                    "other %zu), alignment %zu\n",
            ARENA_BYTES, mem.arena_bytes, mem.kv_cache_bytes, mem.activation_bytes, mem.logits_bytes, mem.other_bytes,
            mem.alignment);
    if (mem.arena_bytes > sizeof g_arena) {
        fprintf(stderr, "static_arena: ARENA_BYTES is too small: rebuild with -DARENA_BYTES=%zu\n", mem.arena_bytes);
        pangu_model_free(model);
        return 1;
    }
    sp.arena = g_arena;
    sp.arena_size = sizeof g_arena;
    pangu_session *session = NULL;
    if ((st = pangu_session_create(model, &sp, &session))) return fail("session", st);

    /* Tokenizing is the one step that may allocate; it happens before the generation loop. */
    size_t n = 0;
    if ((st = pangu_tokenize(model, text, strlen(text), -1, 0, g_prompt, MAX_PROMPT, &n))) return fail("tokenize", st);

    pangu_sampling_params gp;
    pangu_sampling_params_init(&gp);
    gp.max_new_tokens = 64;
    fputs(text, stdout);
    st = pangu_session_generate_tokens(session, g_prompt, n, &gp, print_piece, NULL, NULL);
    putchar('\n');
    if (st) return fail("generate", st);

    pangu_session_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    pangu_session_get_stats(session, &stats);
    fprintf(stderr, "used %zu of %zu arena bytes (high-water mark) for %d tokens in context\n", stats.arena_high_water,
            stats.arena_bytes, stats.n_tokens);
    pangu_session_free(session);
    pangu_model_free(model);
    return 0;
}
