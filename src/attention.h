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

#include "device.h"
#include "kernels.h"

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

// Scratch floats one task needs: the scores of a head group over the whole context.
size_t attention_scratch_floats(int32_t n_head, int32_t n_head_kv, int64_t n_ctx);

// Runs task t (0 .. q->rows * n_head_kv - 1) with `scratch` of attention_scratch_floats(); returns the
// saturations counted by round16.
uint64_t attention_task(const AttnProblem &a, int64_t t, float *scratch);

}  // namespace pangu
