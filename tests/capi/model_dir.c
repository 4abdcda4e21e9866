/* Model directories for the C API tests: copies of the bundled model, with pieces of its tokenizer.model
 * renamed to the openPangu chat markers, and files written beside them. */
#include "model_dir.h"

#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    assert_int_equal(fseek(f, 0, SEEK_SET), 0);
    char *buf = (char *)malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return buf;
}

void write_all(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot create %s", path);
    if (len) assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

void copy_model_file(const char *dir, const char *name) {
    char src[512], dst[512];
    snprintf(src, sizeof src, "%s/%s", PANGU_MODEL_DIR, name);
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    size_t n = 0;
    char *d = read_all(src, &n);
    write_all(dst, d, n);
    free(d);
}

static uint64_t pb_varint(const unsigned char *p, size_t n, size_t *i) {
    uint64_t v = 0;
    for (int shift = 0; *i < n && shift < 64; shift += 7) {
        const unsigned char b = p[(*i)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
    fail_msg("bad varint in tokenizer.model");
    return 0;
}

/* Renames the first NORMAL piece whose text has strlen(name) bytes and is not already a rename. */
int rename_piece(unsigned char *p, size_t n, const char *name) {
    const size_t want = strlen(name);
    size_t i = 0;
    int index = 0; /* of the piece being read */
    while (i < n) {
        const uint64_t key = pb_varint(p, n, &i);
        const unsigned field = (unsigned)(key >> 3), wire = (unsigned)(key & 7);
        if (wire == 0) {
            pb_varint(p, n, &i);
        } else if (wire == 1) {
            i += 8;
        } else if (wire == 5) {
            i += 4;
        } else if (wire == 2) {
            const size_t len = (size_t)pb_varint(p, n, &i);
            if (field == 1) { /* ModelProto.pieces: {1: piece, 2: score, 3: type} */
                size_t j = i, piece_at = 0, piece_len = 0;
                uint64_t type = 1;
                while (j < i + len) {
                    const uint64_t k = pb_varint(p, n, &j);
                    if ((k & 7) == 2) {
                        const size_t l = (size_t)pb_varint(p, n, &j);
                        if ((k >> 3) == 1) {
                            piece_at = j;
                            piece_len = l;
                        }
                        j += l;
                    } else if ((k & 7) == 5) {
                        j += 4;
                    } else if ((k & 7) == 0) {
                        const uint64_t v = pb_varint(p, n, &j);
                        if ((k >> 3) == 3) type = v;
                    } else {
                        fail_msg("unexpected wire type in a piece");
                    }
                }
                if (type == 1 && piece_len == want && p[piece_at] != '[') {
                    memcpy(p + piece_at, name, want);
                    return index + 1;
                }
                ++index;
            }
            i += len;
        } else {
            fail_msg("unexpected wire type %u in tokenizer.model", wire);
        }
    }
    return 0;
}

void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

void make_chat_model_dir(const char *dir, int declare, int *id9, int *id10) {
    copy_model_file(dir, "config.json");
    copy_model_file(dir, "model.safetensors");
    copy_model_file(dir, "tokenizer_config.json");
    char src[512], dst[512];
    snprintf(src, sizeof src, "%s/tokenizer.model", PANGU_MODEL_DIR);
    snprintf(dst, sizeof dst, "%s/tokenizer.model", dir);
    size_t n = 0;
    unsigned char *tm = (unsigned char *)read_all(src, &n);
    const int i9 = rename_piece(tm, n, "[unused9]") - 1, i10 = rename_piece(tm, n, "[unused10]") - 1;
    assert_true(i9 >= 0 && i10 >= 0);
    write_all(dst, tm, n);
    free(tm);
    if (id9) *id9 = i9;
    if (id10) *id10 = i10;
    if (!declare) return;
    char text[512];
    snprintf(text, sizeof text,
             "{\"add_bos_token\": true, \"added_tokens_decoder\": {\"%d\": {\"content\": \"[unused9]\", \"special\": true},"
             " \"%d\": {\"content\": \"[unused10]\", \"special\": true}}}\n",
             i9, i10);
    write_text(dir, "tokenizer_config.json", text);
}

void write_text(const char *dir, const char *name, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    write_all(p, text, strlen(text));
}
