#include "device/attention.h"

#include <atomic>

#include <cmath>

#include <algorithm>
#include <cstring>

#include "common/common.h"
#include "common/threadpool.h"
#include "model/tensor.h"

namespace pangu {

namespace {

// Scratch floats one task needs: the scores of a head group over the whole context, then one normalizer per
// head.
size_t scratch_floats(int32_t n_head, int32_t n_head_kv, int64_t n_ctx) {
    const int64_t group = n_head_kv > 0 ? n_head / n_head_kv : n_head;
    return static_cast<size_t>(group * (n_ctx + 1));
}

// A cache of 16-bit or int8 elements is read through a tile of F32 rows on the stack: kTileFloats floats, at
// least 8 rows of head_dim (so head_dim <= kTileFloats / 8 for such a cache).
constexpr int64_t kTileFloats = 8192;

size_t elem_bytes(int32_t dtype) { return dtype == PGD_F32 ? 4 : dtype == PGD_I8 ? 1 : 2; }

int64_t tile_rows(int32_t d) { return std::max<int64_t>(8, kTileFloats / d / 8 * 8); }

// Rows [s, s + n) (within one block) of KV head hk of cache c as F32 rows of d floats: the cache's own rows
// when it is F32 (*ld its stride), else converted into `tile` (*ld = d). The conversion is exact (widening a
// 16-bit float; an int8 times its scale, one rounding), so the scores and outputs are the F32 path's on the
// widened values, in the same order: batch-invariant like it.
const float *kv_rows(const pgd_tensor &c, int32_t hk, int32_t d, int64_t s, int64_t n, float *tile, int64_t *ld) {
    const size_t e = elem_bytes(c.dtype);
    const uint8_t *row = static_cast<const uint8_t *>(c.data) + (pgd_row_offset(&c, s) + int64_t(hk) * d) * e;
    if (c.dtype == PGD_F32) {
        *ld = c.stride;
        return reinterpret_cast<const float *>(row);
    }
    *ld = d;
    for (int64_t r = 0; r < n; ++r, row += c.stride * e) {
        float *t = tile + r * d;
        if (c.dtype == PGD_F16) {
            const uint16_t *h = reinterpret_cast<const uint16_t *>(row);
            for (int32_t i = 0; i < d; ++i) t[i] = f16_to_f32(h[i]);
        } else if (c.dtype == PGD_BF16) {
            const uint16_t *h = reinterpret_cast<const uint16_t *>(row);
            for (int32_t i = 0; i < d; ++i) t[i] = bf16_to_f32(h[i]);
        } else {
            const int8_t *qv = reinterpret_cast<const int8_t *>(row);
            const float sc = pgd_kv_scale(&c, s + r)[hk];
            for (int32_t i = 0; i < d; ++i) t[i] = static_cast<float>(qv[i]) * sc;
        }
    }
    return tile;
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
    alignas(64) float tile[kTileFloats];
    const int64_t T = kc.dtype == PGD_F32 ? INT64_MAX : tile_rows(d);

    // scores sc[j * n_pos + s] = q_j . k_s, eight key rows per kernel call
    for (int64_t s0 = 0; s0 < n_pos;) {
        const int64_t run = std::min(T, pgd_rows_in_block(&kc, s0, n_pos - s0));
        int64_t ld;
        const float *kr = kv_rows(kc, hk, d, s0, run, tile, &ld);
        for (int64_t s = 0; s < run; s += 8) {
            const int nr = static_cast<int>(run - s < 8 ? run - s : 8);
            a.k->mm_f32(qg, d, g, kr + s * ld, ld, d, nr, sc + s0 + s, n_pos);
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
    const int64_t TV = vc.dtype == PGD_F32 ? INT64_MAX : tile_rows(d);
    for (int64_t s0 = 0; s0 < n_pos;) {
        const int64_t run = std::min(TV, pgd_rows_in_block(&vc, s0, n_pos - s0));
        int64_t ld;
        const float *vr = kv_rows(vc, hk, d, s0, run, tile, &ld);
        a.k->attn_values(sc + s0, n_pos, g, vr, ld, run, d, og, d);
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

int kv_store_host(const pgd_tensor &src, const pgd_tensor &c, int64_t row0) {
    if (row0 < 0 || row0 + src.rows > c.rows) return PANGU_ERR_CONTEXT_FULL;
    if (c.dtype != PGD_F32 && c.dtype != PGD_F16 && c.dtype != PGD_BF16 && c.dtype != PGD_I8) return PANGU_ERR_UNSUPPORTED;
    if (c.dtype == PGD_I8 && (c.group_size <= 0 || c.cols % c.group_size != 0 || !c.scale)) return PANGU_ERR_SHAPE;
    const size_t e = elem_bytes(c.dtype);
    const int64_t n = c.cols;
    for (int64_t r = 0; r < src.rows; ++r) {
        const float *x = static_cast<const float *>(src.data) + r * src.stride;
        uint8_t *row = static_cast<uint8_t *>(c.data) + pgd_row_offset(&c, row0 + r) * e;
        if (c.dtype == PGD_F32) {
            std::memcpy(row, x, sizeof(float) * n);
        } else if (c.dtype == PGD_F16) {
            uint16_t *h = reinterpret_cast<uint16_t *>(row);
            for (int64_t i = 0; i < n; ++i) h[i] = f32_to_f16(x[i]);
        } else if (c.dtype == PGD_BF16) {
            uint16_t *h = reinterpret_cast<uint16_t *>(row);
            for (int64_t i = 0; i < n; ++i) h[i] = f32_to_bf16(x[i]);
        } else {
            int8_t *qv = reinterpret_cast<int8_t *>(row);
            float *scales = const_cast<float *>(pgd_kv_scale(&c, row0 + r));
            for (int64_t g0 = 0, gi = 0; g0 < n; g0 += c.group_size, ++gi) {
                float amax = 0.0f;
                for (int64_t i = g0; i < g0 + c.group_size; ++i) amax = std::max(amax, std::fabs(x[i]));
                const float s = amax / 127.0f;
                const float inv = s > 0.0f ? 1.0f / s : 0.0f;
                for (int64_t i = g0; i < g0 + c.group_size; ++i)
                    qv[i] = static_cast<int8_t>(std::max(-127.0f, std::min(127.0f, std::nearbyint(x[i] * inv))));
                scales[gi] = s;
            }
        }
    }
    return 0;
}

int attention_check(const AttnProblem &a, const void *ws, size_t ws_size, int n_threads) {
    if (a.n_head_kv <= 0 || a.n_head % a.n_head_kv != 0) return PANGU_ERR_SHAPE;
    if (a.kc->dtype != a.vc->dtype) return PANGU_ERR_SHAPE;
    if (a.kc->dtype != PGD_F32 && (a.hd > kTileFloats / 8 || (a.kc->dtype != PGD_F16 && a.kc->dtype != PGD_BF16 &&
                                                               (a.kc->dtype != PGD_I8 || !a.kc->scale || !a.vc->scale))))
        return PANGU_ERR_UNSUPPORTED;
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
