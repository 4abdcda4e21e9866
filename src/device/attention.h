// Causal GQA attention on the host, shared by the CPU backend and the emulated NPU: one task is one query row
// and the query heads that share one KV head. The cache is read once per task, a tile of 64 positions at a
// time, in its own element type (F32, F16, BF16, or I8 with one scale per row and KV head): the kernels widen
// its elements in registers, scores are the matmul kernel's products of the queries with the key rows (int8
// keys: the raw sums times the row's scale), and an online softmax (running maximum and normalizer, the
// accumulators rescaled when the maximum grows) keeps a task's scratch at one tile of scores and head_dim
// accumulators per head, on its stack, whatever the context. The cache may be blocked (pgd_tensor.block_rows):
// where the blocks break does not change the tiles nor the bits.
//
// Batch invariance: tiles start at fixed positions, a score is a dot product in the kernel's fixed order and
// an accumulator one chain of multiply-adds in order of position, whatever the number of rows, heads or
// threads of the call, so speculative decoding's verification gives decoding's bits.
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
// of group_size columns, amax / 127; a group of zeros, or too small for 1 / scale to be finite, zeros with scale
// 0; a group holding NaN or Inf zeros with scale NaN): a backend's kv_store on host memory.
// 0, PANGU_ERR_CONTEXT_FULL (rows past the cache) or PANGU_ERR_UNSUPPORTED (another dtype).
int kv_store_host(const pgd_tensor &src, const pgd_tensor &cache, int64_t row0);

// The checks a backend makes before running: 0, or PANGU_ERR_SHAPE (heads not a multiple of the KV heads, K
// and V of different types), PANGU_ERR_UNSUPPORTED (another cache type, head_dim above 4096, an I8 cache
// without one scale per row and KV head), PANGU_ERR_CONTEXT_FULL (rows past the cache).
int attention_check(const AttnProblem &a);

// Checks the problem, then runs it on the pool's threads: 0 or attention_check's status. The saturations
// counted by round16 are added to *overflows (may be null when round16 is).
int attention_run(const AttnProblem &a, ThreadPool &pool, uint64_t *overflows);

// Runs chunk `chunk` of `n_chunks` of the tasks (one per query row and KV head, q->rows * n_head_kv in all).
// Returns the saturations counted by round16.
uint64_t attention_chunk(const AttnProblem &a, int chunk, int n_chunks);

}  // namespace pangu
