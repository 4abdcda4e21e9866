// npu-sim's operators: each computes what the 310P's would, in fp16 (saturating, counted per operator
// kind), and charges the stream the latency model's time: max(FLOPs / peak, bytes / bandwidth) plus the
// launch overhead, against the device profile.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "device/attention.h"
#include "device/npusim/fp16.h"
#include "device/npusim/internal.h"
#include "device/rope.h"
#include "model/tensor.h"

namespace pangu {
namespace npusim {

namespace {

// A norm weight or bias as weight_upload left it: fp16 values in F32 storage of the device.
bool is_uploaded_vector(NpuCtx *c, const pgd_tensor *t) {
    Block b;
    return find_block(c, t->data, &b) && b.layout == Layout::VecF32;
}

// Charges one operator to its stream: the roofline time plus the launch overhead.
void account(NpuCtx *c, NpuStream *s, int op, double flops, double bytes, uint64_t over, double util = 1.0) {
    const Profile &p = c->prof;
    const double t_compute = flops / (p.fp16_tflops * 1e12 * util);
    const double t_memory = bytes / (p.memory_gbps * 1e9);
    s->stats.est_ms += std::max(t_compute, t_memory) * 1e3 + p.launch_us * 1e-3;
    s->stats.n_ops += 1;
    if (over) {
        s->stats.saturated += over;
        c->overflows[op] += over;
    }
}


}  // namespace

// ---- embed ----
int npu_embed(void *ctx, pgd_stream *st, const int32_t *ids, int64_t n, const pgd_tensor *table, pgd_tensor *out) {
    NpuCtx *c = C(ctx);
    DeviceAccess open(C(ctx));
    NpuStream *s = S(st);
    Block b;
    if (!find_block(c, table->data, &b) || (b.layout != Layout::NzF16 && b.layout != Layout::NzI8))
        return PANGU_ERR_INVALID_ARGUMENT;  // tables are uploaded weights
    const bool i8 = b.layout == Layout::NzI8;
    const int c0 = i8 ? 32 : 16;
    const int64_t N = b.rows, K = b.cols, N1 = (N + 15) / 16;
    if (out->cols < K) return PANGU_ERR_SHAPE;
    uint64_t over = 0;
    for (int64_t m = 0; m < n; ++m) {
        const int64_t id = ids[m];
        if (id < 0 || id >= N) return PANGU_ERR_INVALID_ARGUMENT;
        float *o = rowf(out, m);
        if (i8) {
            const int8_t *w = static_cast<const int8_t *>(table->data);
            for (int64_t k = 0; k < K; ++k) o[k] = f16(w[nz_index(id, k, N1, c0)] * table->scale[id], &over);
        } else {
            const uint16_t *w = static_cast<const uint16_t *>(table->data);
            for (int64_t k = 0; k < K; ++k) o[k] = widen_f16(w[nz_index(id, k, N1, c0)]);
        }
    }
    account(c, s, PGD_NPUSIM_EMBED, 0, double(n) * K * ((i8 ? 1 : 2) + 2), over);
    return 0;
}

// ---- rms_norm ----
int npu_rms_norm(void *ctx, pgd_stream *st, const pgd_tensor *x, const pgd_tensor *wt, float eps, pgd_tensor *out) {
    if (wt->dtype != PGD_F32 || wt->cols != x->cols) return PANGU_ERR_SHAPE;
    if (!is_uploaded_vector(C(ctx), wt)) return PANGU_ERR_INVALID_ARGUMENT;  // norm weights go through weight_upload
    const float *w = static_cast<const float *>(wt->data);
    NpuCtx *c = C(ctx);
    DeviceAccess open(C(ctx));
    NpuStream *s = S(st);
    const int64_t d = x->cols;
    uint64_t over = 0;
    for (int64_t m = 0; m < x->rows; ++m) {
        const float *xi = rowf(x, m);
        float *o = rowf(out, m);
        const float inv = 1.0f / std::sqrt(c->k->dot(xi, xi, d) / static_cast<float>(d) + eps);
        for (int64_t i = 0; i < d; ++i) o[i] = f16(xi[i] * inv * w[i], &over);
    }
    account(c, s, PGD_NPUSIM_RMS_NORM, 0, double(x->rows) * d * 4 + d * 2.0, over);
    return 0;
}

// ---- matmul ----
namespace {

// y[m][n] accumulates in fp32 over K in chunks of kChunk columns, each chunk's dot product in the kernels'
// canonical order (which their block kernels keep whatever the blocking), chunks in order: the sum depends on
// neither M nor the thread count (batch invariance).
constexpr int64_t kChunk = 256, kRowBlock = 64;

struct MatmulJob {
    const kernels::Table *k;
    const float *xh;  // x rounded to fp16, [M, K] compact
    int64_t M, K, N;
    const void *w;
    const float *scale;  // int8 weights
    bool i8;
    const float *bias;
    pgd_tensor *y;
    std::atomic<uint64_t> over{0};
};

void matmul_worker(void *p, int chunk, int n_chunks, int) {
    MatmulJob &j = *static_cast<MatmulJob *>(p);
    const int64_t N1 = (j.N + 15) / 16;
    const int c0 = j.i8 ? 32 : 16;
    int64_t s0, s1;
    split_range(N1, n_chunks, chunk, 1, &s0, &s1);
    float panel[16][kChunk];      // 16 output channels x one K chunk, widened to fp32
    float part[kRowBlock * 16];   // the chunk's partial sums of a block of rows
    uint64_t over = 0;
    for (int64_t n1 = s0; n1 < s1; ++n1) {
        const int64_t n0 = n1 * 16;
        const int nr = static_cast<int>(std::min<int64_t>(16, j.N - n0));
        for (int64_t m = 0; m < j.M; ++m)
            for (int r = 0; r < nr; ++r) rowf(j.y, m)[n0 + r] = 0.0f;
        for (int64_t k0 = 0; k0 < j.K; k0 += kChunk) {
            const int64_t len = std::min(kChunk, j.K - k0);
            for (int64_t kb = 0; kb < len; kb += c0) {  // one fractal per 16 x c0 block of the panel
                const size_t base = nz_index(n0, k0 + kb, N1, c0);
                const int64_t w_len = std::min<int64_t>(c0, len - kb);
                for (int r = 0; r < nr; ++r) {
                    float *dst = panel[r] + kb;
                    if (j.i8) {
                        // The antiquant step of aclnnWeightQuantBatchMatmulV2: fp16(q * scale), exact in fp32
                        // before the rounding. When every nonzero q * scale is an fp16 normal, the rounding
                        // needs no range checks.
                        const int8_t *src = static_cast<const int8_t *>(j.w) + base + r * c0;
                        const float sc = j.scale[n0 + r];
                        if (sc >= kF16MinNormal && sc * 128.0f <= kF16Max) {
                            for (int64_t e = 0; e < w_len; ++e) dst[e] = round_f16_normal(src[e] * sc);
                        } else {
                            uint64_t counted_at_upload = 0;
                            for (int64_t e = 0; e < w_len; ++e) dst[e] = f16(src[e] * sc, &counted_at_upload);
                        }
                    } else {
                        const uint16_t *src = static_cast<const uint16_t *>(j.w) + base + r * c0;
                        for (int64_t e = 0; e < w_len; ++e) dst[e] = widen_f16(src[e]);
                    }
                }
            }
            // The chunk's dot products, eight channels at a time against a block of rows (the CPU backend's
            // block kernel: weights loaded once for all rows), then added to the running sums.
            for (int64_t m0 = 0; m0 < j.M; m0 += kRowBlock) {
                const int64_t mb = std::min(kRowBlock, j.M - m0);
                for (int r0 = 0; r0 < nr; r0 += 8)
                    j.k->mm_f32(j.xh + m0 * j.K + k0, j.K, mb, panel[r0], kChunk, len, std::min(8, nr - r0),
                                part + r0, 16);
                for (int64_t m = 0; m < mb; ++m) {
                    float *y = rowf(j.y, m0 + m) + n0;
                    for (int r = 0; r < nr; ++r) y[r] += part[m * 16 + r];
                }
            }
        }
        for (int64_t m = 0; m < j.M; ++m) {  // epilogue: bias, then the fp16 output
            float *y = rowf(j.y, m) + n0;
            for (int r = 0; r < nr; ++r) y[r] = f16(y[r] + (j.bias ? j.bias[n0 + r] : 0.0f), &over);
        }
    }
    j.over += over;
}

}  // namespace

size_t npu_matmul_workspace(void *, const pgd_tensor *x, const pgd_tensor *) {
    return sizeof(float) * static_cast<size_t>(x->rows) * static_cast<size_t>(x->cols);
}

int npu_matmul(void *ctx, pgd_stream *st, const pgd_tensor *x, const pgd_tensor *w, const pgd_tensor *bias,
               pgd_tensor *y, void *ws, size_t ws_size) {
    NpuCtx *c = C(ctx);
    DeviceAccess open(C(ctx));
    NpuStream *s = S(st);
    Block b;
    if (!find_block(c, w->data, &b) || (b.layout != Layout::NzF16 && b.layout != Layout::NzI8))
        return PANGU_ERR_INVALID_ARGUMENT;  // weights must have gone through weight_upload
    const int64_t M = x->rows, K = x->cols, N = b.rows;
    if (K != b.cols || y->cols < N || y->rows < M || (bias && (bias->dtype != PGD_F32 || bias->cols < N)))
        return PANGU_ERR_SHAPE;
    if (bias && !is_uploaded_vector(c, bias)) return PANGU_ERR_INVALID_ARGUMENT;  // so are biases
    if (!ws || ws_size < npu_matmul_workspace(ctx, x, w)) return PANGU_ERR_BUFFER_TOO_SMALL;
    // The cube unit takes fp16 operands: x is rounded (saturating) into the workspace, as aclnnCast would.
    uint64_t over = 0;
    float *xh = static_cast<float *>(ws);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < K; ++k) xh[m * K + k] = f16(rowf(x, m)[k], &over);
    MatmulJob j;
    j.k = c->k;
    j.xh = xh;
    j.M = M;
    j.K = K;
    j.N = N;
    j.w = w->data;
    j.i8 = b.layout == Layout::NzI8;
    // int8: the scales follow the fractals in the same allocation
    j.scale = j.i8 ? reinterpret_cast<const float *>(static_cast<const uint8_t *>(w->data) +
                                                     static_cast<size_t>((K + 31) / 32 * ((N + 15) / 16)) * kFractal)
                   : nullptr;
    j.bias = bias ? static_cast<const float *>(bias->data) : nullptr;
    j.y = y;
    s->pool.run(matmul_worker, &j, s->pool.chunks_for((N + 15) / 16));
    over += j.over.load();
    // The cube works on 16x16x16 fractals: a decode step (M = 1) pays for 16 rows. Cores share the output
    // fractals, so fewer of them than cores leaves cores idle.
    const double M16 = double((M + 15) / 16 * 16), N16 = double((N + 15) / 16 * 16), K16 = double((K + 15) / 16 * 16);
    const double tiles = (M16 / 16) * (N16 / 16);
    const double bytes = double(b.bytes) + double(M) * K * 2 + double(M) * N * 2 + (bias ? N * 2.0 : 0.0);
    account(c, s, PGD_NPUSIM_MATMUL, 2.0 * M16 * N16 * K16, bytes, over, std::min(1.0, tiles / c->prof.ai_cores));
    return 0;
}

// ---- rope ----
int npu_rope(void *ctx, pgd_stream *st, pgd_tensor *x, const int32_t *pos, int32_t n_heads, int32_t hd,
             const float *cos_sin) {
    NpuCtx *c = C(ctx);
    DeviceAccess open(C(ctx));
    NpuStream *s = S(st);
    uint64_t over = 0;
    rope_rows(x, pos, n_heads, hd, cos_sin, 0, x->rows, [&](float v) { return f16(v, &over); });
    account(c, s, PGD_NPUSIM_ROPE, 0, double(x->rows) * (n_heads * hd * 4.0 + hd * 4.0), over);
    return 0;
}

// ---- attention ----
namespace {

// One flash-attention block per (row, KV head): scores in fp32 from fp16 q and k, probabilities exp(s - max)
// rounded to fp16 for the second cube product, normalized at the end, output fp16.
float round16(float v, uint64_t *over) { return f16(v, over); }

}  // namespace

size_t npu_attention_workspace(void *, int64_t, int32_t n_head, int32_t n_head_kv, int64_t n_ctx, int n_threads) {
    return attention_workspace_bytes(n_head, n_head_kv, n_ctx, n_threads);
}

int npu_attention(void *ctx, pgd_stream *st, const pgd_tensor *q, const pgd_tensor *kc, const pgd_tensor *vc,
                  int64_t pos0, int32_t n_head, int32_t n_head_kv, int32_t hd, float scale, pgd_tensor *out, void *ws,
                  size_t ws_size) {
    NpuCtx *c = C(ctx);
    DeviceAccess open(C(ctx));
    NpuStream *s = S(st);
    const AttnProblem a{c->k, q, kc, vc, out, pos0, n_head, n_head_kv, hd, scale, round16};
    uint64_t over = 0;
    if (const int rc = attention_run(a, s->pool, ws, ws_size, &over)) return rc;
    const int64_t M = q->rows;
    const double attended = double(M) * double(pos0) + double(M) * double(M + 1) / 2;  // sum of n_pos
    const double bytes = 2.0 * M * n_head * hd * 2 + 2.0 * double(pos0 + M) * n_head_kv * hd * 2;
    account(c, s, PGD_NPUSIM_ATTENTION, 4.0 * hd * n_head * attended, bytes, over);
    return 0;
}

// ---- elementwise ----
int npu_swiglu(void *ctx, pgd_stream *st, pgd_tensor *g, const pgd_tensor *u) {
    DeviceAccess open(C(ctx));
    NpuStream *s = S(st);
    uint64_t over = 0;
    for (int64_t m = 0; m < g->rows; ++m) {
        float *gr = rowf(g, m);
        const float *ur = rowf(u, m);
        for (int64_t i = 0; i < g->cols; ++i) gr[i] = f16(gr[i] / (1.0f + std::exp(-gr[i])) * ur[i], &over);
    }
    account(C(ctx), s, PGD_NPUSIM_SWIGLU, 0, double(g->rows) * g->cols * 6, over);
    return 0;
}

// A 310P has no bf16: whatever 16-bit type the forward asks for, activations become fp16.
int npu_round(void *ctx, pgd_stream *st, pgd_tensor *x, int32_t dtype) {
    if (dtype != PGD_BF16 && dtype != PGD_F16) return PANGU_ERR_UNSUPPORTED;
    DeviceAccess open(C(ctx));
    NpuStream *s = S(st);
    uint64_t over = 0;
    for (int64_t m = 0; m < x->rows; ++m) {
        float *r = rowf(x, m);
        for (int64_t i = 0; i < x->cols; ++i) r[i] = f16(r[i], &over);
    }
    account(C(ctx), s, PGD_NPUSIM_ROUND, 0, double(x->rows) * x->cols * 4, over);
    return 0;
}

int npu_add(void *ctx, pgd_stream *st, pgd_tensor *x, const pgd_tensor *y) {
    DeviceAccess open(C(ctx));
    NpuStream *s = S(st);
    uint64_t over = 0;
    for (int64_t m = 0; m < x->rows; ++m) {
        float *xr = rowf(x, m);
        const float *yr = rowf(y, m);
        for (int64_t i = 0; i < x->cols; ++i) xr[i] = f16(xr[i] + yr[i], &over);
    }
    account(C(ctx), s, PGD_NPUSIM_ADD, 0, double(x->rows) * x->cols * 6, over);
    return 0;
}

}  // namespace npusim
}  // namespace pangu
