/*
 * An application built against an installed libpangu_c: find_package(pangu_c) in CMake, nothing from the source
 * or build tree. Checks that the header it compiled with matches the library it runs with, then completes a
 * prompt greedily.
 *
 *   app MODEL_DIR "prompt"
 */
#include <pangu/pangu.h>

#include <stdio.h>
#include <string.h>

static int on_token(void *user_data, int32_t token, const char *piece, size_t len) {
    (void)token;
    *(size_t *)user_data += len;
    fwrite(piece, 1, len, stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL_DIR \"prompt\"\n", argv[0]);
        return 2;
    }
    if (pangu_version_number() != PANGU_VERSION_NUMBER || strcmp(pangu_version_string(), PANGU_VERSION_STRING) != 0) {
        fprintf(stderr, "app: header %s (%d) but library %s (%u)\n", PANGU_VERSION_STRING, PANGU_VERSION_NUMBER,
                pangu_version_string(), pangu_version_number());
        return 1;
    }
    fprintf(stderr, "app: libpangu_c %s, header and library agree\n", pangu_version_string());

    pangu_model *model = NULL;
    pangu_session *session = NULL;
    pangu_status st = pangu_model_load(argv[1], NULL, &model);
    if (st == PANGU_OK) st = pangu_session_create(model, NULL, &session);
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.max_new_tokens = 16;
    size_t n_bytes = 0;
    if (st == PANGU_OK) st = pangu_session_generate(session, argv[2], &sp, on_token, &n_bytes, NULL);
    putchar('\n');
    if (st != PANGU_OK) fprintf(stderr, "app: %s: %s\n", pangu_status_string(st), pangu_last_error());
    pangu_session_free(session);
    pangu_model_free(model);
    if (st == PANGU_OK && n_bytes == 0) fprintf(stderr, "app: the completion is empty\n");
    return st == PANGU_OK && n_bytes > 0 ? 0 : 1;
}
