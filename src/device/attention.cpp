#include "device/attention.h"

#include <atomic>

#include <cmath>

#include "common/common.h"
#include "common/threadpool.h"

namespace pangu {

namespace {

// Scratch floats one task needs: the scores of a head group over the whole context, then one normalizer per
// head.
size_t scratch_floats(int32_t n_head, int32_t n_head_kv, int64_t n_ctx) {
    const int64_t group = n_head_kv > 0 ? n_head / n_head_kv : n_head;
    return static_cast<size_t>(group * (n_ctx + 1));
}

// Task t: query row t / n_head_kv against KV head t % n_head_kv.
uint64_t attention_task(const AttnProblem &a, int64_t t, float *sc) {
    const int32_t g = a.n_head / a.n_head_kv;
    const int64_t m = t / a.n_head_kv;
    const int32_t hk = static_cast<int32_t>(t % a.n_head_kv);
    const int64_t n_pos = a.pos0 + m + 1;  // causal: positions 0..pos0+m
    const int32_t d = a.hd;
    const pgd_tensor &kc = *a.kc, &vc = *a.vc;
    // The g query heads of this KV head are adjacent in the row: g rows of d floats for the kernels.
    const float *qg = static_cast<const float *>(a.q->data) + m * a.q->stride + int64_t(hk) * g * d;
    float *og = static_cast<float *>(a.out->data) + m * a.out->stride + int64_t(hk) * g * d;
    const float *kbase = static_cast<const float *>(kc.data) + int64_t(hk) * d;
    const float *vbase = static_cast<const float *>(vc.data) + int64_t(hk) * d;

    // scores sc[j * n_pos + s] = q_j . k_s, eight key rows per kernel call
    for (int64_t s0 = 0; s0 < n_pos;) {
        const int64_t run = pgd_rows_in_block(&kc, s0, n_pos - s0);
        const float *kr = kbase + pgd_row_offset(&kc, s0);
        for (int64_t s = 0; s < run; s += 8) {
            const int nr = static_cast<int>(run - s < 8 ? run - s : 8);
            a.k->mm_f32(qg, d, g, kr + s * kc.stride, kc.stride, d, nr, sc + s0 + s, n_pos);
        }
        s0 += run;
    }
    // softmax per head (the scale applied to each finished dot product)
    uint64_t over = 0;
    float *inv = sc + int64_t(g) * kc.rows;
    for (int32_t j = 0; j < g; ++j) {
        float *p = sc + j * n_pos;
        const float mx = a.k->scale_max(p, n_pos, a.scale);
        float sum = a.k->exp_sum(p, n_pos, mx);
        if (!a.round16) {
            // Normalized before the values, as a reference implementation does.
            const float r = 1.0f / sum;
            for (int64_t s = 0; s < n_pos; ++s) p[s] *= r;
        } else {
            // The emulated NPU rounds the probabilities to fp16 for its second cube product (in (0, 1]: they
            // never saturate) and normalizes the fp16 output instead, as its kernel would.
            sum = 0.0f;
            for (int64_t s = 0; s < n_pos; ++s) sum += (p[s] = a.round16(p[s], &over));
            inv[j] = 1.0f / sum;
        }
    }
    // values: out_j = sum_s p_j[s] v_s, block by block
    for (int32_t j = 0; j < g; ++j)
        for (int32_t i = 0; i < d; ++i) og[j * d + i] = 0.0f;
    for (int64_t s0 = 0; s0 < n_pos;) {
        const int64_t run = pgd_rows_in_block(&vc, s0, n_pos - s0);
        a.k->attn_values(sc + s0, n_pos, g, vbase + pgd_row_offset(&vc, s0), vc.stride, run, d, og, d);
        s0 += run;
    }
    if (a.round16)
        for (int32_t j = 0; j < g; ++j)
            for (int32_t i = 0; i < d; ++i) og[j * d + i] = a.round16(og[j * d + i] * inv[j], &over);
    return over;
}

}  // namespace

size_t attention_workspace_bytes(int32_t n_head, int32_t n_head_kv, int64_t n_ctx, int n_threads) {
    return sizeof(float) * scratch_floats(n_head, n_head_kv, n_ctx) * static_cast<size_t>(n_threads > 0 ? n_threads : 1);
}

int attention_check(const AttnProblem &a, const void *ws, size_t ws_size, int n_threads) {
    if (a.n_head_kv <= 0 || a.n_head % a.n_head_kv != 0) return PANGU_ERR_SHAPE;
    if (a.pos0 < 0 || a.pos0 + a.q->rows > a.kc->rows) return PANGU_ERR_CONTEXT_FULL;
    if (!ws || ws_size < attention_workspace_bytes(a.n_head, a.n_head_kv, a.kc->rows, n_threads))
        return PANGU_ERR_BUFFER_TOO_SMALL;
    return 0;
}

uint64_t attention_chunk(const AttnProblem &a, void *ws, int chunk, int n_chunks, int slot) {
    int64_t t0, t1;
    split_range(a.q->rows * a.n_head_kv, n_chunks, chunk, 1, &t0, &t1);
    float *sc = static_cast<float *>(ws) + slot * scratch_floats(a.n_head, a.n_head_kv, a.kc->rows);
    uint64_t over = 0;
    for (int64_t t = t0; t < t1; ++t) over += attention_task(a, t, sc);
    return over;
}

namespace {
struct AttnJob {
    const AttnProblem *a;
    void *ws;
    std::atomic<uint64_t> over{0};
};
void attn_worker(void *p, int chunk, int n_chunks, int slot) {
    AttnJob &j = *static_cast<AttnJob *>(p);
    const uint64_t over = attention_chunk(*j.a, j.ws, chunk, n_chunks, slot);
    if (over) j.over += over;
}
}  // namespace

int attention_run(const AttnProblem &a, ThreadPool &pool, void *ws, size_t ws_size, uint64_t *overflows) {
    if (const int rc = attention_check(a, ws, ws_size, pool.size())) return rc;
    AttnJob j;
    j.a = &a;
    j.ws = ws;
    pool.run(attn_worker, &j, pool.chunks_for(a.q->rows * a.n_head_kv));
    if (overflows) *overflows += j.over.load();
    return 0;
}

}  // namespace pangu
