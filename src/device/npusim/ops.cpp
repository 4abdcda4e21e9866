// npu-sim's operators: each computes what the 310P's would, in fp16 (saturating, counted per operator
// kind), and charges the stream the latency model's time: max(FLOPs / peak, bytes / bandwidth) plus the
// launch overhead, against the device profile (the fp16 peak, or the int8 one for matmuls with int8
// activations).
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

// Charges one operator to its stream: the roofline time plus the launch overhead. `flops` are fp16 operations
// at fp16_tflops, or int8 ones at int8_tops when `int8`.
void account(NpuCtx *c, NpuStream *s, int op, double flops, double bytes, uint64_t over, double util = 1.0,
             bool int8 = false) {
    const Profile &p = c->prof;
    const double t_compute = flops / ((int8 ? p.int8_tops : p.fp16_tflops) * 1e12 * util);
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
    if (b.group != 0) return PANGU_ERR_UNSUPPORTED;  // a low-bit table (the loader refuses them)
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

// Row m of x rounded to fp16 into out (as the device holds activations: the cube takes fp16 operands), its
// columns in the weight's stored order when it has one: out[c] = x[m][perm[c]], the gather of an act-order
// weight (see gather_cost).
void round_row(const pgd_tensor *x, int64_t m, const int32_t *perm, float *out, uint64_t *over) {
    const float *xr = rowf(x, m);
    if (perm) {
        for (int64_t k = 0; k < x->cols; ++k) out[k] = f16(xr[perm[k]], over);
    } else {
        for (int64_t k = 0; k < x->cols; ++k) out[k] = f16(xr[k], over);
    }
}

// The gather of x's columns for an act-order weight, which a port runs as an operator of its own before the
// matmul (aclnnIndexSelect along the columns, the order read from device memory): a vector operator that reads
// and writes M * K fp16 values and reads the K indices. npu-sim does it while rounding x (round_row), and charges
// it here.
void gather_cost(NpuCtx *c, NpuStream *s, int64_t M, int64_t K) {
    account(c, s, PGD_NPUSIM_MATMUL, 0, double(M) * K * 2 * 2 + double(K) * 4, 0);
}

// y[m][n] accumulates in fp32 over K in chunks of kChunk columns, each chunk's dot product in the kernels'
// canonical order (which their block kernels keep whatever the blocking), chunks in order: the sum depends on
// neither M nor the thread count (batch invariance).
constexpr int64_t kChunk = 256, kRowBlock = 64;

struct MatmulJob {
    const kernels::Table *k;
    const float *xh;  // x rounded to fp16, [M, K] compact
    int64_t M, K, N;
    const void *w;
    const float *scale;  // int8 weights: [N], or [N][K / group]
    int32_t group;       // 0: a scale per channel; else per group of this many columns (a multiple of 32)
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
                        const float sc = j.group ? j.scale[(n0 + r) * (j.K / j.group) + (k0 + kb) / j.group]
                                                 : j.scale[n0 + r];  // a fractal lies within one group
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

// W8A8 and W4A8 (weights uploaded with act_dtype PGD_I8): x's rows quantized to int8 (xq, ldq bytes apart,
// scales xs), multiplied by the int8 fractals in int32 as the cube's int8 mode does (exact: any order gives the
// same sums), then dequantized in fp32 and rounded to fp16:
//   per channel:  y = fp16((float)isum * xs[m] * s[n] + bias[n])               (the CPU backend's order)
//   per group:    y = fp16((sum over groups in order of (float)isum_g * s[n][g]) * xs[m] + bias[n])
// Nothing depends on M or on the thread count.
constexpr int64_t kQChunk = 256;  // int8 columns per gathered panel (a multiple of 64)

struct MatmulQJob {
    const kernels::Table *k;
    const int8_t *xq;  // [M, ldq]
    const float *xs;   // [M]
    int64_t ldq;
    int64_t M, K, N;
    const int8_t *w;     // NzI8 fractals
    const float *scale;  // [N] or [N][K / group]
    int32_t group;       // 0: per channel
    const float *bias;
    pgd_tensor *y;
    std::atomic<uint64_t> over{0};
};

void matmul_q_worker(void *p, int chunk, int n_chunks, int) {
    MatmulQJob &j = *static_cast<MatmulQJob *>(p);
    const int64_t N1 = (j.N + 15) / 16, n_groups = j.group ? j.K / j.group : 1;
    const int c0 = 32;
    int64_t s0, s1;
    split_range(N1, n_chunks, chunk, 1, &s0, &s1);
    alignas(64) int8_t panel[16][kQChunk];  // 16 output channels x one run of columns, rows contiguous
    int32_t part[kRowBlock * 16];            // the run's int32 sums for a block of rows
    int32_t isum[kRowBlock * 16];            // per channel: the whole row; per group: the group so far
    float acc[kRowBlock * 16];               // per group: the scaled groups added so far
    uint64_t over = 0;
    for (int64_t n1 = s0; n1 < s1; ++n1) {
        const int64_t n0 = n1 * 16;
        const int nr = static_cast<int>(std::min<int64_t>(16, j.N - n0));
        for (int64_t m0 = 0; m0 < j.M; m0 += kRowBlock) {
            const int64_t mb = std::min(kRowBlock, j.M - m0);
            std::fill(isum, isum + mb * 16, 0);
            std::fill(acc, acc + mb * 16, 0.0f);
            // Runs of columns: kQChunk at most, and never across a group's end.
            for (int64_t a = 0, b; a < j.K; a = b) {
                b = std::min(a + kQChunk, j.K);
                if (j.group) b = std::min(b, (a / j.group + 1) * j.group);
                for (int64_t kb = a; kb < b; kb += c0) {  // one fractal per 16 x 32 block (a, kb: multiples of 32)
                    const size_t base = nz_index(n0, kb, N1, c0);
                    const int64_t len = std::min<int64_t>(c0, b - kb);
                    for (int r = 0; r < nr; ++r) std::memcpy(panel[r] + (kb - a), j.w + base + r * c0, len);
                }
                // Zeros after the run, to a multiple of 64: what a kernel reading whole vectors of w finds
                // against the row's next columns in xq.
                const int64_t pad = (b - a + 63) / 64 * 64;
                for (int r = 0; r < nr; ++r) std::memset(panel[r] + (b - a), 0, static_cast<size_t>(pad - (b - a)));
                for (int r0 = 0; r0 < nr; r0 += 8)
                    j.k->mm_q8(j.xq + m0 * j.ldq + a, j.ldq, mb, panel[r0], kQChunk, b - a, std::min(8, nr - r0),
                               part + r0, 16);
                for (int64_t m = 0; m < mb; ++m)
                    for (int r = 0; r < nr; ++r) isum[m * 16 + r] += part[m * 16 + r];
                if (j.group && b % j.group == 0) {  // a group complete: scaled in fp32, added in order
                    const int64_t g = b / j.group - 1;
                    for (int64_t m = 0; m < mb; ++m)
                        for (int r = 0; r < nr; ++r) {
                            const float v = static_cast<float>(isum[m * 16 + r]) * j.scale[(n0 + r) * n_groups + g];
                            acc[m * 16 + r] += v;
                            isum[m * 16 + r] = 0;
                        }
                }
            }
            for (int64_t m = 0; m < mb; ++m) {  // epilogue: the scales, the bias, then the fp16 output
                float *y = rowf(j.y, m0 + m) + n0;
                const float sx = j.xs[m0 + m];
                for (int r = 0; r < nr; ++r) {
                    const float v = j.group ? acc[m * 16 + r] * sx
                                            : static_cast<float>(isum[m * 16 + r]) * sx * j.scale[n0 + r];
                    y[r] = f16(v + (j.bias ? j.bias[n0 + r] : 0.0f), &over);
                }
            }
        }
    }
    j.over += over;
}

// The int8 activations' workspace: the quantized rows (ldq bytes apart: K rounded up to 64, and 64 more, so that
// a run of columns that starts inside a row can be read in whole 64-byte vectors without leaving the row: what
// lies after the run meets the panel's zeros), their scales, and one row of x rounded to fp16 on its way to
// quantization.
int64_t q_stride(int64_t K) { return (K + 63) / 64 * 64 + 64; }

size_t q_workspace(int64_t M, int64_t K) {
    return static_cast<size_t>(M * q_stride(K)) + sizeof(float) * static_cast<size_t>(M + K);
}

}  // namespace

size_t npu_matmul_workspace(void *, const pgd_tensor *x, const pgd_tensor *w) {
    if (w->act_dtype == PGD_I8) return q_workspace(x->rows, x->cols);
    return sizeof(float) * static_cast<size_t>(x->rows) * static_cast<size_t>(x->cols);
}

namespace {

// W8A8 / W4A8 and low-bit weights with int8 activations: x rounded to fp16 (as the device holds activations),
// its columns gathered into the weight's stored order if it has one, and quantized per row to int8
// (aclnnDynamicQuant: charged as a vector operator of its own), then the int8 x int8 cube matmul. Its int32
// sums are dequantized in fp32 before the one rounding to fp16: int32 * s[n] alone is y / xs[m], which for a
// row of small values (xs = amax / 127) lies far beyond fp16's range, so a port must not round it to fp16
// before the row scale is applied (docs/porting-310p.md).
int matmul_q(NpuCtx *c, NpuStream *s, const Block &b, const pgd_tensor *x, const pgd_tensor *w, const float *bias,
             pgd_tensor *y, void *ws) {
    const int64_t M = x->rows, K = x->cols, N = b.rows, ldq = q_stride(K);
    int8_t *xq = static_cast<int8_t *>(ws);
    float *xs = reinterpret_cast<float *>(xq + M * ldq);
    float *xh = xs + M;
    uint64_t over_x = 0;
    if (w->col_perm) gather_cost(c, s, M, K);  // before anything else: quantizing a row does not see its order
    for (int64_t m = 0; m < M; ++m) {
        round_row(x, m, w->col_perm, xh, &over_x);
        // The CPU backend's formula (device.h): amax / 127 per row, round half to even.
        kernels::quant_rows_scalar(xh, K, 1, K, xq + m * ldq, ldq, xs + m);
    }
    account(c, s, PGD_NPUSIM_MATMUL, 0, double(M) * K * 2 + double(M) * K + double(M) * 4, over_x);
    MatmulQJob j;
    j.k = c->k;
    j.xq = xq;
    j.xs = xs;
    j.ldq = ldq;
    j.M = M;
    j.K = K;
    j.N = N;
    j.w = static_cast<const int8_t *>(w->data);
    j.group = b.group;
    j.scale = nz_i8_scales(w->data, N, K);  // the scales follow the fractals in the same allocation
    j.bias = bias;
    j.y = y;
    s->pool.run(matmul_q_worker, &j, s->pool.chunks_for((N + 15) / 16));
    // The cube's int8 mode works on 16x32x16 fractals, at int8_tops; it reads the int8 rows and their scales.
    const double M16 = double((M + 15) / 16 * 16), N16 = double((N + 15) / 16 * 16), K32 = double((K + 31) / 32 * 32);
    const double tiles = (M16 / 16) * (N16 / 16);
    const double bytes = double(b.bytes) + double(M) * K + double(M) * 4 + double(M) * N * 2 + (bias ? N * 2.0 : 0.0);
    account(c, s, PGD_NPUSIM_MATMUL, 2.0 * M16 * N16 * K32, bytes, j.over.load(),
            std::min(1.0, tiles / c->prof.ai_cores), true);
    return 0;
}

}  // namespace

int npu_matmul(void *ctx, pgd_stream *st, const pgd_tensor *x, const pgd_tensor *w, const pgd_tensor *bias,
               pgd_tensor *y, void *ws, size_t ws_size) {
    NpuCtx *c = C(ctx);
    DeviceAccess open(C(ctx));
    NpuStream *s = S(st);
    Block b;
    if (!find_block(c, w->data, &b) || (b.layout != Layout::NzF16 && b.layout != Layout::NzI8))
        return PANGU_ERR_INVALID_ARGUMENT;  // weights must have gone through weight_upload
    // and are used as they were uploaded: the scales' layout depends on act_dtype and the group, and a column
    // order is the one in the weight's allocation
    if (w->act_dtype != b.act || (b.layout == Layout::NzI8 && w->group_size != b.group))
        return PANGU_ERR_INVALID_ARGUMENT;
    if (w->col_perm != (b.col_perm ? nz_i8_col_perm(w->data, b.rows, b.cols, b.group) : nullptr))
        return PANGU_ERR_INVALID_ARGUMENT;
    const int64_t M = x->rows, K = x->cols, N = b.rows;
    if (K != b.cols || y->cols < N || y->rows < M || (bias && (bias->dtype != PGD_F32 || bias->cols < N)))
        return PANGU_ERR_SHAPE;
    if (bias && !is_uploaded_vector(c, bias)) return PANGU_ERR_INVALID_ARGUMENT;  // so are biases
    if (!ws || ws_size < npu_matmul_workspace(ctx, x, w)) return PANGU_ERR_BUFFER_TOO_SMALL;
    if (b.act == PGD_I8) return matmul_q(c, s, b, x, w, bias ? static_cast<const float *>(bias->data) : nullptr, y, ws);
    // The cube unit takes fp16 operands: x is rounded (saturating) into the workspace, as aclnnCast would,
    // and gathered into the weight's column order first if it has one.
    uint64_t over = 0;
    float *xh = static_cast<float *>(ws);
    if (w->col_perm) gather_cost(c, s, M, K);
    for (int64_t m = 0; m < M; ++m) round_row(x, m, w->col_perm, xh + m * K, &over);
    MatmulJob j;
    j.k = c->k;
    j.xh = xh;
    j.M = M;
    j.K = K;
    j.N = N;
    j.w = w->data;
    j.i8 = b.layout == Layout::NzI8;
    j.scale = j.i8 ? nz_i8_scales(w->data, N, K) : nullptr;  // int8: the scales follow the fractals
    j.group = b.group;  // low-bit weights: fp16 group scales, the antiquant of WeightQuantBatchMatmulV2 by groups
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

// One flash-attention block per (row, KV head), a tile of positions at a time: scores in fp32 from fp16 q and
// k, weights exp(s - running max) rounded to fp16 for the second cube product, normalized at the end, output
// fp16.
float round16(float v, uint64_t *over) { return f16(v, over); }

}  // namespace

int npu_attention(void *ctx, pgd_stream *st, const pgd_tensor *q, const pgd_tensor *kc, const pgd_tensor *vc,
                  int64_t pos0, int32_t n_head, int32_t n_head_kv, int32_t hd, float scale, pgd_tensor *out, void *,
                  size_t) {
    NpuCtx *c = C(ctx);
    DeviceAccess open(C(ctx));
    NpuStream *s = S(st);
    const AttnProblem a{c->k, q, kc, vc, out, pos0, n_head, n_head_kv, hd, scale, round16};
    uint64_t over = 0;
    if (const int rc = attention_run(a, s->pool, &over)) return rc;
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

// A 310P has no bf16: whatever 16-bit type the forward asks for, activations become fp16. A port holds its
// activations as fp16 tensors and leaves this slot NULL (device.h): the forward's rounds of W8A16 and other
// 16-bit modes, which find values every npu-sim operator has rounded to fp16 already, launch nothing there and
// are charged nothing here. A round that changes a value is an aclnnCast, and is charged as one.
int npu_round(void *ctx, pgd_stream *st, pgd_tensor *x, int32_t dtype) {
    if (dtype != PGD_BF16 && dtype != PGD_F16) return PANGU_ERR_UNSUPPORTED;
    DeviceAccess open(C(ctx));
    NpuStream *s = S(st);
    uint64_t over = 0;
    bool changed = false;
    for (int64_t m = 0; m < x->rows; ++m) {
        float *r = rowf(x, m);
        for (int64_t i = 0; i < x->cols; ++i) {
            const float v = f16(r[i], &over);
            changed = changed || std::memcmp(&v, &r[i], sizeof v) != 0;
            r[i] = v;
        }
    }
    if (changed) account(C(ctx), s, PGD_NPUSIM_ROUND, 0, double(x->rows) * x->cols * 4, over);
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
