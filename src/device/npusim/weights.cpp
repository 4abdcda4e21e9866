// Weight uploads: each host tensor is copied into device memory in the layout the 310P's units read, fp16 or
// int8 in FRACTAL_NZ for matrices, fp16 values in F32 storage for vectors (norm weights, biases). Int8 weights
// keep their per-channel scale (fp16 for W8A16, fp32 for W8A8). Low-bit weights (PGD_I4 with or without zero
// points, PGD_QB's 2- to 8-bit rows) become the same int8 fractals, level minus zero point, in output channel
// order, with group scales (fp16 or fp32 as the activations need) and, for act-order checkpoints, their stored
// column order in device memory: after upload every integer weight is an int8 PGD_I8 tensor (group_size set
// for low-bit ones, col_perm pointing into its allocation), since the 310P's cube multiplies int8 or fp16 only
// (see upload_int for why the unpacking happens here and not per matmul). The device tensor keeps act_dtype.
// Saturations to the fp16 range are counted as PGD_NPUSIM_WEIGHT_UPLOAD.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <vector>

#include "device/lowbit.h"
#include "device/npusim/fp16.h"
#include "device/npusim/internal.h"

namespace pangu {
namespace npusim {

namespace {

float host_elem(const pgd_tensor *h, int64_t r, int64_t col) {
    const size_t i = static_cast<size_t>(r * h->stride + col);
    switch (h->dtype) {
        case PGD_F32: return static_cast<const float *>(h->data)[i];
        case PGD_F16: return f16_to_f32(static_cast<const uint16_t *>(h->data)[i]);
        case PGD_BF16: return bf16_to_f32(static_cast<const uint16_t *>(h->data)[i]);
        default: return 0.0f;
    }
}

}  // namespace

namespace {

// A norm weight or a bias, which operators read as a float array: fp16 values in F32 storage.
int upload_vector(NpuCtx *c, const pgd_tensor *h, void **p, size_t *bytes, uint64_t *over) {
    const int64_t K = h->cols;
    *bytes = sizeof(float) * K;
    if (int rc = reserve(c, *bytes, Block{0, Layout::VecF32, 1, K}, p)) return rc;
    float *dst = static_cast<float *>(*p);
    for (int64_t i = 0; i < K; ++i) dst[i] = f16(static_cast<const float *>(h->data)[i], over);
    return 0;
}

// The width and zero point of stored row i of a low-bit host weight (PGD_I4: 4 bits), and where its levels are.
struct LowbitRow {
    const uint8_t *levels;
    int bits;
    const uint8_t *zero;  // its groups' zero points, or NULL: the default, 2^(bits - 1) (8 bits: 128)
};

LowbitRow lowbit_row(const pgd_tensor *h, int64_t i) {
    const uint8_t *data = static_cast<const uint8_t *>(h->data);
    const uint8_t *zero = h->zero ? h->zero + i * (h->cols / h->group_size) : nullptr;
    if (h->dtype == PGD_I4) return {data + i * (h->stride / 2), 4, zero};
    int s = 0;
    while (i >= h->qb->seg[s].row0 + h->qb->seg[s].rows) ++s;
    const pgd_qb_segment &sg = h->qb->seg[s];
    return {data + sg.offset + (i - sg.row0) * (h->cols * sg.bits / 8), sg.bits, zero};
}

// Every zero point below 2^bits of its row, and 128 in 8-bit rows (device.h): then every level minus its zero
// point fits int8 (|u - z| <= 63 up to 6 bits; u - 128 in -128..127 at 8).
bool zeros_fit(const pgd_tensor *h) {
    if (!h->zero) return true;
    const int64_t groups = h->cols / h->group_size;
    for (int64_t i = 0; i < h->rows; ++i) {
        const LowbitRow r = lowbit_row(h, i);
        for (int64_t g = 0; g < groups; ++g)
            if (r.zero[g] >= (1 << r.bits) || (r.bits == 8 && r.zero[g] != 128)) return false;
    }
    return true;
}

// Stored row i of an integer host weight as int8 values in stored column order: PGD_I8 as it is, a low-bit
// row as level - zero point of the column's group.
void host_row(const pgd_tensor *h, int64_t i, int8_t *out) {
    if (h->dtype == PGD_I8) {
        std::memcpy(out, static_cast<const int8_t *>(h->data) + i * h->stride, static_cast<size_t>(h->cols));
        return;
    }
    const LowbitRow r = lowbit_row(h, i);
    const int z0 = r.bits == 8 ? 128 : 1 << (r.bits - 1);
    for (int64_t k = 0; k < h->cols; ++k)
        out[k] = static_cast<int8_t>(pgd_qb_level(r.levels, r.bits, k) - (r.zero ? r.zero[k / h->group_size] : z0));
}

// The output channel of stored row i: PGD_QB stores its rows by width, in row_order.
int64_t out_channel(const pgd_tensor *h, int64_t i) { return h->dtype == PGD_QB ? h->qb->row_order[i] : i; }

// int8 fractals (16 x 32), then the scales, then the column order if there is one; *up gets where they are.
//  - W8A16 (act_dtype 0): one fp16 scale per channel, the antiquant scale of aclnnWeightQuantBatchMatmulV2.
//  - W8A8 (act_dtype PGD_I8): one fp32 scale per channel, applied with x's row scale to the int32 sums.
//  - Low-bit (PGD_I4, PGD_QB): each row unpacked to int8, level - zero point, into the fractals of its output
//    channel (row_order inverted: the device holds W in output order, as every other weight), and the group
//    scales, [N][K / group], per output channel: fp16 antiquant scales for 16-bit activations (the 310P's
//    WeightQuantBatchMatmulV2 takes groups that are multiples of 32, so a 32-column fractal lies in one group),
//    fp32 for int8 ones (W4A8). No zero points remain: subtracted here, exactly. The cube has no int4 (nor
//    2-, 3- or 6-bit) mode, so its int8 or fp16 mode does the products. Unpacking once here costs device memory
//    (a byte per weight, as W8A8, where the packed form holds b/8 of one) and saves time: a matmul reads its
//    int8 fractals once. Keeping the weights packed and unpacking them per matmul into the workspace with a
//    vector op would shrink the weights' memory but move 2 + b/8 bytes per weight per matmul (read the packed
//    b bits, write the int8 byte, read it back into the cube) against 1 here, and decode is memory-bound;
//    only a fused kernel that unpacks in the core's own buffers (a custom Ascend C kernel: no aclnn operator
//    does it on a 310P, docs/porting-310p.md) would read b/8 of a byte. So npu-sim, like the port it models,
//    spends the memory to keep the time.
//  - The column order (GPTQ's act-order) stays as stored, groups and all: unpermuting the columns would
//    scatter each group's scale over the row. The matmul gathers x's columns instead, reading the order from
//    device memory (the host cannot reach it there, nor may an operator read host memory).
int upload_int(NpuCtx *c, const pgd_tensor *h, void **p, size_t *bytes, uint64_t *over, pgd_tensor *up) {
    const int64_t N = h->rows, K = h->cols, N1 = (N + 15) / 16;
    const int c0 = 32;
    const bool a8 = h->act_dtype == PGD_I8;
    const int32_t group = h->dtype == PGD_I8 ? 0 : h->group_size;
    const int64_t per_row = nz_i8_scales_per_row(K, group);
    const size_t data_bytes = nz_i8_bytes(N, K), scale_bytes = sizeof(float) * static_cast<size_t>(N * per_row);
    *bytes = data_bytes + scale_bytes + (h->col_perm ? sizeof(int32_t) * static_cast<size_t>(K) : 0);
    std::vector<int8_t> row(static_cast<size_t>(K));  // before the reservation: a throw here leaks nothing
    Block blk{0, Layout::NzI8, N, K};
    blk.group = group;
    blk.act = a8 ? PGD_I8 : 0;
    blk.col_perm = h->col_perm != nullptr;
    if (int rc = reserve(c, *bytes, blk, p)) return rc;
    std::memset(*p, 0, data_bytes);  // the padding of partial fractals must read as zero
    int8_t *dst = static_cast<int8_t *>(*p);
    float *scale = const_cast<float *>(nz_i8_scales(*p, N, K));
    for (int64_t i = 0; i < N; ++i) {
        const int64_t n = out_channel(h, i);
        host_row(h, i, row.data());
        for (int64_t k = 0; k < K; ++k) dst[nz_index(n, k, N1, c0)] = row[k];
        float *sn = scale + n * per_row;
        const float *si = h->scale + i * per_row;
        if (a8) {  // the int32 sums are dequantized in fp32 (aclnnQuantMatmul's scale is fp32: see the matmul)
            std::copy(si, si + per_row, sn);
            continue;
        }
        for (int64_t g = 0; g < per_row; ++g) sn[g] = f16(si[g], over);  // the antiquant scale has x's dtype
        for (int64_t k = 0; k < K; ++k)  // fp16(q * scale) saturates when dequantized
            *over += std::fabs(row[k] * sn[group ? k / group : 0]) > kF16Max ? 1 : 0;
    }
    if (h->col_perm) {
        int32_t *perm = const_cast<int32_t *>(nz_i8_col_perm(*p, N, K, group));
        std::memcpy(perm, h->col_perm, sizeof(int32_t) * static_cast<size_t>(K));
        up->col_perm = perm;
    }
    up->scale = scale;
    up->group_size = group;
    return 0;
}

// fp16 fractals (16 x 16) from F32, F16 or BF16; a NaN weight has no fp16 to saturate to: refused.
int upload_f16(NpuCtx *c, const pgd_tensor *h, void **p, size_t *bytes, uint64_t *over) {
    const int64_t N = h->rows, K = h->cols;
    const int c0 = 16;
    const int64_t N1 = (N + 15) / 16, K1 = (K + c0 - 1) / c0;
    *bytes = static_cast<size_t>(K1 * N1) * kFractal;
    if (int rc = reserve(c, *bytes, Block{0, Layout::NzF16, N, K}, p)) return rc;
    std::memset(*p, 0, *bytes);
    uint16_t *dst = static_cast<uint16_t *>(*p);
    for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) {
            const float v = host_elem(h, n, k);  // F16 stays as is: rounding an fp16 value is exact
            if (v != v) {
                unreserve(c, *p);
                return PANGU_ERR_NUMERIC;
            }
            dst[nz_index(n, k, N1, c0)] = to_f16_bits(v, over);
        }
    return 0;
}

// What npu-sim takes: float weights (F32, F16, BF16) for 16-bit activations; int8 weights with a scale per
// channel, and low-bit ones (PGD_I4, PGD_QB) in the layout every backend requires (device/lowbit.h), for 16-bit
// or int8 activations. 0, or the status that refuses the weight: UNSUPPORTED for a combination npu-sim does not
// run, INVALID_ARGUMENT for orders that are not permutations and zero points beyond their rows' widths.
int check_upload(const pgd_tensor *h) {
    if (!h->data || h->rows <= 0 || h->cols <= 0 || h->stride < h->cols) return PANGU_ERR_INVALID_ARGUMENT;
    if (h->dtype != PGD_F32 && h->dtype != PGD_F16 && h->dtype != PGD_BF16 && h->dtype != PGD_I8 &&
        h->dtype != PGD_I4 && h->dtype != PGD_QB)
        return PANGU_ERR_DTYPE;
    const bool lowbit = h->dtype == PGD_I4 || h->dtype == PGD_QB;
    // int8 activations: integer weights only (the cube multiplies int8 by int8, or fp16 by fp16); no int16 ones.
    if (h->act_dtype != PGD_F32 && (h->act_dtype != PGD_I8 || (h->dtype != PGD_I8 && !lowbit)))
        return PANGU_ERR_UNSUPPORTED;
    if (!lowbit) {
        if (h->zero || h->col_perm || h->qb) return PANGU_ERR_UNSUPPORTED;  // low-bit weights' fields
        return h->dtype == PGD_I8 && (!h->scale || h->group_size != 0) ? PANGU_ERR_UNSUPPORTED : 0;
    }
    if (!pgd_lowbit_layout_ok(h)) return PANGU_ERR_UNSUPPORTED;
    if ((h->dtype == PGD_QB && !pgd_is_permutation(h->qb->row_order, h->rows)) ||
        (h->col_perm && !pgd_is_permutation(h->col_perm, h->cols)) || !zeros_fit(h))
        return PANGU_ERR_INVALID_ARGUMENT;
    return 0;
}

// The device copy of a weight check_upload accepted, in *d.
int upload(NpuCtx *c, const pgd_tensor *h, pgd_tensor *d) {
    uint64_t over = 0;
    void *p = nullptr;
    size_t bytes = 0;
    pgd_tensor up = *h;
    up.group_size = 0;
    up.stride = h->cols;  // not a row pitch in the fractal layout; kept as the logical width
    up.scale = nullptr;
    up.zero = nullptr;  // subtracted at upload
    up.col_perm = nullptr;
    up.qb = nullptr;
    int rc;
    if (h->rows == 1 && h->dtype == PGD_F32) {
        rc = upload_vector(c, h, &p, &bytes, &over);
    } else if (h->dtype == PGD_I8 || h->dtype == PGD_I4 || h->dtype == PGD_QB) {
        rc = upload_int(c, h, &p, &bytes, &over, &up);
        up.dtype = PGD_I8;  // as the device holds it: int8 fractals, with group scales for low-bit weights
        up.act_dtype = h->act_dtype;
    } else {
        rc = upload_f16(c, h, &p, &bytes, &over);
        up.dtype = PGD_F16;
    }
    if (rc) return rc;
    up.data = p;
    *d = up;
    c->weight_bytes += bytes;
    c->h2d += bytes;
    if (over) c->overflows[PGD_NPUSIM_WEIGHT_UPLOAD] += over;
    return 0;
}

}  // namespace

int npu_weight_upload(void *ctx, const pgd_tensor *h, pgd_tensor *d) {
    NpuCtx *c = C(ctx);
    DeviceAccess open(c);
    if (!h || !d) return PANGU_ERR_INVALID_ARGUMENT;
    try {  // the checks' and the unpacking's scratch (a slot never throws)
        if (int rc = check_upload(h)) return rc;
        return upload(c, h, d);
    } catch (const std::bad_alloc &) {
        return PANGU_ERR_OUT_OF_MEMORY;
    }
}

void npu_weight_release(void *ctx, pgd_tensor *d) {
    if (!d) return;
    unreserve(C(ctx), d->data);
    *d = pgd_tensor{};
}

}  // namespace npusim
}  // namespace pangu
