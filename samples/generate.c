/*
 * generate -- the smallest complete libpangu_c program: load a model, stream a greedy completion.
 *
 *   generate MODEL_DIR "prompt" [max_tokens]
 *
 * The completion is written to stdout as it is generated; errors go to stderr and the exit status is 1.
 */
#include <pangu/pangu.h>

#include <stdio.h>
#include <stdlib.h>

/* Called once per generated token with the text it completes (whole UTF-8 characters, maybe empty). */
static int on_token(void *user_data, int32_t token, const char *piece, size_t piece_len) {
    (void)user_data;
    (void)token;
    fwrite(piece, 1, piece_len, stdout);
    fflush(stdout);
    return 0; /* non-zero would stop the generation */
}

static int fail(const char *what, pangu_status st) {
    fprintf(stderr, "generate: %s: %s: %s\n", what, pangu_status_string(st), pangu_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s MODEL_DIR \"prompt\" [max_tokens]\n", argv[0]);
        return 2;
    }
    int max_tokens = 64;
    if (argc == 4) {
        char *end = NULL;
        long n = strtol(argv[3], &end, 10);
        if (end == argv[3] || *end != '\0' || n < 0 || n > 1000000) {
            fprintf(stderr, "generate: max_tokens must be an integer from 0 to 1000000, not '%s'\n", argv[3]);
            return 2;
        }
        max_tokens = (int)n;
    }

    pangu_model *model = NULL;
    pangu_status st = pangu_model_load(argv[1], NULL, &model);
    if (st != PANGU_OK) return fail("loading the model", st);

    pangu_session *session = NULL;
    st = pangu_session_create(model, NULL, &session); /* NULL: default context and threads */
    if (st != PANGU_OK) {
        pangu_model_free(model);
        return fail("creating a session", st);
    }

    pangu_sampling_params params;
    pangu_sampling_params_init(&params); /* defaults: temperature 0, i.e. greedy */
    params.max_new_tokens = max_tokens;

    fputs(argv[2], stdout); /* echo the prompt, then stream its continuation */
    st = pangu_session_generate(session, argv[2], &params, on_token, NULL, NULL);
    fputc('\n', stdout);
    if (st != PANGU_OK) fail("generating", st); /* report before freeing: the message is still current */

    pangu_session_free(session);
    pangu_model_free(model);
    return st == PANGU_OK ? 0 : 1;
}
