/* Model directories for the C API tests (model_dir.c). Failures end the current cmocka test. */
#ifndef PANGU_TEST_MODEL_DIR_H
#define PANGU_TEST_MODEL_DIR_H

#include <stddef.h>

/* The whole file, NUL-terminated; *len its size (len may be NULL). */
char *read_all(const char *path, size_t *len);
void write_all(const char *path, const void *data, size_t len);
/* Copies PANGU_MODEL_DIR/name to dir/name. */
void copy_model_file(const char *dir, const char *name);
/* Renames, in a serialized SentencePiece model, the first NORMAL piece of strlen(name) bytes that is not already
 * a rename to `name`; its id + 1 if one was found, else 0. */
int rename_piece(unsigned char *p, size_t n, const char *name);
/* The bundled model in `dir`, with two ordinary pieces of its tokenizer.model renamed to "[unused9]" and
 * "[unused10]" (their ids in *id9 and *id10 when not NULL): the chat markers, typed as ordinary text, as the real
 * tokenizer.model may type them. With `declare`, tokenizer_config.json declares them special, as openPangu's
 * does; without, they are plain text. */
void make_chat_model_dir(const char *dir, int declare, int *id9, int *id10);
/* Writes `text` to dir/name. */
void write_text(const char *dir, const char *name, const char *text);
/* Removes the files of a directory, then the directory. */
void remove_dir(const char *dir);

#endif
