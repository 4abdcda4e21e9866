// Causal GQA attention on the host, shared by the CPU backend and the emulated NPU: one task is one query row
// and the query heads that share one KV head. Scores are the matmul kernel's products of those queries with
// the key rows (each key row is read once for the whole group), probabilities a softmax per head, and the
// output the values kernel's sum over the value rows (again read once for the group). The cache may be
// blocked (pgd_tensor.block_rows): it is walked block by block, every block a contiguous run of rows.
//
// Batch invariance: a score is a dot product in the kernels' fixed order, and an output element one chain of
// multiply-adds in order of position, whatever the number of rows, heads or blocks in the call.
#pragma once

#include <cstddef>
#include <cstdint>

#include "device/device.h"
#include "common/threadpool.h"
#include "device/cpu/kernels.h"

namespace pangu {

struct AttnProblem {
    const kernels::Table *k;
    const pgd_tensor *q, *kc, *vc;
    pgd_tensor *out;
    int64_t pos0;
    int32_t n_head, n_head_kv, hd;
    float scale;
    // Optional (the emulated 310P): rounds a probability or an output element to fp16, counting saturations.
    float (*round16)(float v, uint64_t *overflows);
};

// Writes the F32 rows of src to rows row0.. of a KV cache of F32, F16, BF16 or I8 (one scale per row and group
// of group_size columns, amax / 127, a group of zeros scale 0): a backend's kv_store on host memory.
// 0, PANGU_ERR_CONTEXT_FULL (rows past the cache) or PANGU_ERR_UNSUPPORTED (another dtype).
int kv_store_host(const pgd_tensor &src, const pgd_tensor &cache, int64_t row0);

// Workspace bytes for n_threads threads (at least one): each thread's scratch holds the scores of a head
// group over the whole context.
size_t attention_workspace_bytes(int32_t n_head, int32_t n_head_kv, int64_t n_ctx, int n_threads);

// The checks a backend makes before running: 0, or PANGU_ERR_SHAPE (heads not a multiple of the KV heads),
// PANGU_ERR_CONTEXT_FULL (rows past the cache), PANGU_ERR_BUFFER_TOO_SMALL (workspace missing or short).
int attention_check(const AttnProblem &a, const void *ws, size_t ws_size, int n_threads);

// Checks the problem, then runs it on the pool's threads: 0 or attention_check's status. The saturations
// counted by round16 are added to *overflows (may be null when round16 is).
int attention_run(const AttnProblem &a, ThreadPool &pool, void *ws, size_t ws_size, uint64_t *overflows);

// Runs chunk `chunk` of `n_chunks` of the tasks (one per query row and KV head, q->rows * n_head_kv in all)
// with the scratch of thread `slot` in ws: the scratch belongs to the thread, whichever chunk it runs.
// Returns the saturations counted by round16.
uint64_t attention_chunk(const AttnProblem &a, void *ws, int chunk, int n_chunks, int slot);

}  // namespace pangu
