/* Session memory per context length, from pangu_session_estimate():
 *
 *   arena_report -m DIR [-c CTX]... [-b BATCH] [-t THREADS]
 *
 * Prints one line per context length (default 512, 2048, 4096) and KV cache type (f32, f16, bf16, q8) with the
 * arena and its parts, and the session's size against the same context with an F32 cache. Nothing is allocated
 * for the session: the figures come from the model's shapes alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pangu/pangu.h"

int main(int argc, char **argv) {
    const char *dir = NULL;
    int ctx[16], n_ctx = 0, batch = 64, threads = 1;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "-c") && i + 1 < argc && n_ctx < 16) ctx[n_ctx++] = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-b") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: arena_report -m DIR [-c CTX]... [-b BATCH] [-t THREADS]\n");
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "arena_report: -m DIR is required\n");
        return 2;
    }
    if (n_ctx == 0) {
        ctx[0] = 512;
        ctx[1] = 2048;
        ctx[2] = 4096;
        n_ctx = 3;
    }
    pangu_model *m = NULL;
    if (pangu_model_load(dir, NULL, &m) != PANGU_OK) {
        fprintf(stderr, "arena_report: %s\n", pangu_last_error());
        return 1;
    }
    static const struct {
        const char *name;
        int32_t type;
    } kv[] = {{"f32", PANGU_KV_F32}, {"f16", PANGU_KV_F16}, {"bf16", PANGU_KV_BF16}, {"q8", PANGU_KV_Q8}};
    printf("%-8s %-5s %14s %14s %14s %14s %12s %12s %9s %9s\n", "n_ctx", "kv", "arena_bytes", "device_bytes", "kv_cache",
           "activations", "logits", "other", "kv/f32", "total/f32");
    for (int i = 0; i < n_ctx; ++i) {
        size_t kv_f32 = 0, total_f32 = 0;
        for (size_t k = 0; k < sizeof kv / sizeof kv[0]; ++k) {
            pangu_session_params p;
            pangu_session_params_init_sized(&p, sizeof p);
            p.n_ctx = ctx[i];
            p.n_batch = batch;
            p.n_threads = threads;
            p.kv_type = kv[k].type;
            pangu_session_memory mem;
            memset(&mem, 0, sizeof mem);
            mem.struct_size = sizeof mem;
            if (pangu_session_estimate(m, &p, &mem) != PANGU_OK) {
                fprintf(stderr, "arena_report: n_ctx %d, kv %s: %s\n", ctx[i], kv[k].name, pangu_last_error());
                pangu_model_free(m);
                return 1;
            }
            const size_t total = mem.arena_bytes + mem.device_bytes;
            if (k == 0) kv_f32 = mem.kv_cache_bytes, total_f32 = total;
            printf("%-8d %-5s %14zu %14zu %14zu %14zu %12zu %12zu %8.1f%% %8.1f%%\n", ctx[i], kv[k].name,
                   mem.arena_bytes, mem.device_bytes, mem.kv_cache_bytes, mem.activation_bytes, mem.logits_bytes,
                   mem.other_bytes, 100.0 * mem.kv_cache_bytes / kv_f32, 100.0 * total / total_f32);
        }
    }
    pangu_model_free(m);
    return 0;
}
