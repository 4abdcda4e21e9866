// Weight uploads: each host tensor is copied into device memory in the layout the 310P's units read, fp16 or
// int8 in FRACTAL_NZ for matrices (int8 with an fp16 per-channel scale for W8A16, fp32 scales for W8A8, 4-bit
// weights unpacked to int8 with their fp32 group scales for W4A8), fp16 values in F32 storage for vectors
// (norm weights, biases). The device tensor keeps act_dtype. Saturations to the fp16 range are counted as
// PGD_NPUSIM_WEIGHT_UPLOAD.
#include <cmath>
#include <cstring>

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

// Element (r, k) of an integer host weight: int8 as it is, PGD_I4 as its signed value v - 8 (device.h's layout:
// in each run of 64 columns, byte j holds column j in its low nibble and column j + 32 in its high one).
int8_t host_int(const pgd_tensor *h, int64_t r, int64_t k) {
    if (h->dtype == PGD_I8) return static_cast<const int8_t *>(h->data)[r * h->stride + k];
    const uint8_t b = static_cast<const uint8_t *>(h->data)[r * (h->stride / 2) + (k / 64) * 32 + k % 32];
    return static_cast<int8_t>((k % 64 < 32 ? b & 15 : b >> 4) - 8);
}

// int8 fractals (16 x 32), then the scales; returns where the scales are in *scale.
//  - W8A16 (act_dtype 0): one fp16 scale per channel, the antiquant scale of aclnnWeightQuantBatchMatmulV2.
//  - W8A8 (act_dtype PGD_I8): one fp32 scale per channel, applied with x's row scale to the int32 sums.
//  - W4A8 (PGD_I4, act_dtype PGD_I8): the 4-bit values unpacked to int8 (-8..7) in the same fractals, and the
//    fp32 group scales, [N][K / group]. The 310P cube has no int4 mode, so its int8 mode does the products.
//    Unpacking once here costs device memory (a byte per weight, as W8A8, where the packed form holds half a
//    byte) and saves time: a matmul reads its int8 fractals once. Keeping the weights packed and unpacking
//    them per matmul into the workspace with a vector op would halve the weights' memory but move 2.5 bytes
//    per weight per matmul (read the packed half byte, write the int8 byte, read it back into the cube)
//    against 1 here, and decode is memory-bound; only a fused kernel that unpacks in the core's own buffers
//    (a custom Ascend C kernel: no aclnn operator does it on a 310P, docs/porting-310p.md) would read half a
//    byte. So npu-sim, like the port it models, spends the memory to keep the time.
int upload_int(NpuCtx *c, const pgd_tensor *h, void **p, size_t *bytes, uint64_t *over, const float **scale_out) {
    const int64_t N = h->rows, K = h->cols;
    const int c0 = 32;
    const int64_t N1 = (N + 15) / 16, K1 = (K + c0 - 1) / c0;
    const bool a8 = h->act_dtype == PGD_I8;
    const int32_t group = h->dtype == PGD_I4 ? h->group_size : 0;
    const int64_t per_row = group ? K / group : 1;
    const size_t data_bytes = static_cast<size_t>(K1 * N1) * kFractal;
    *bytes = data_bytes + sizeof(float) * static_cast<size_t>(N * per_row);
    Block blk{0, Layout::NzI8, N, K};
    blk.group = group;
    blk.act = a8 ? PGD_I8 : 0;
    if (int rc = reserve(c, *bytes, blk, p)) return rc;
    std::memset(*p, 0, data_bytes);  // the padding of partial fractals must read as zero
    int8_t *dst = static_cast<int8_t *>(*p);
    float *scale = reinterpret_cast<float *>(static_cast<uint8_t *>(*p) + data_bytes);
    for (int64_t n = 0; n < N; ++n) {
        if (a8) {
            // The int32 sums are dequantized in fp32 (aclnnQuantMatmul's scale is fp32: see the matmul).
            for (int64_t g = 0; g < per_row; ++g) scale[n * per_row + g] = h->scale[n * per_row + g];
            for (int64_t k = 0; k < K; ++k) dst[nz_index(n, k, N1, c0)] = host_int(h, n, k);
            continue;
        }
        // The antiquant scale is fp16 on a 310P (it has x's dtype), and so is q * scale.
        scale[n] = f16(h->scale[n], over);
        const int8_t *src = static_cast<const int8_t *>(h->data) + n * h->stride;
        for (int64_t k = 0; k < K; ++k) {
            dst[nz_index(n, k, N1, c0)] = src[k];
            *over += std::fabs(src[k] * scale[n]) > kF16Max ? 1 : 0;  // saturates when dequantized
        }
    }
    *scale_out = scale;
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

}  // namespace

int npu_weight_upload(void *ctx, const pgd_tensor *h, pgd_tensor *d) {
    NpuCtx *c = C(ctx);
    DeviceAccess open(c);
    if (!h || !d || !h->data || h->rows <= 0 || h->cols <= 0 || h->stride < h->cols) return PANGU_ERR_INVALID_ARGUMENT;
    if (h->dtype < PGD_F32 || h->dtype > PGD_I4) return PANGU_ERR_DTYPE;
    if (h->dtype == PGD_I8 && (!h->scale || h->group_size != 0)) return PANGU_ERR_UNSUPPORTED;
    // int8 activations: integer weights only. PGD_I4 needs them: the cube multiplies int8 by int8 (or fp16 by
    // fp16); 4-bit weights against fp16 activations would be aclnnWeightQuantBatchMatmulV2's int4 antiquant,
    // which this emulation does not model (the CPU backend has no such mode either).
    if (h->act_dtype != PGD_F32 && (h->act_dtype != PGD_I8 || (h->dtype != PGD_I8 && h->dtype != PGD_I4)))
        return PANGU_ERR_UNSUPPORTED;
    if (h->dtype == PGD_I4 && (h->act_dtype != PGD_I8 || !h->scale || h->group_size < 32 ||
                               h->group_size % 32 != 0 || h->cols % 64 != 0 || h->cols % h->group_size != 0 ||
                               h->stride % 2 != 0))
        return PANGU_ERR_UNSUPPORTED;
    uint64_t over = 0;
    void *p = nullptr;
    size_t bytes = 0;
    pgd_tensor up = *h;
    up.group_size = 0;
    up.stride = h->cols;  // not a row pitch in the fractal layout; kept as the logical width
    up.scale = nullptr;
    int rc;
    if (h->rows == 1 && h->dtype == PGD_F32) {
        rc = upload_vector(c, h, &p, &bytes, &over);
    } else if (h->dtype == PGD_I8 || h->dtype == PGD_I4) {
        rc = upload_int(c, h, &p, &bytes, &over, &up.scale);
        up.dtype = PGD_I8;                                       // as the device holds it: int8 fractals
        up.group_size = h->dtype == PGD_I4 ? h->group_size : 0;  // W4A8: its group scales
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

void npu_weight_release(void *ctx, pgd_tensor *d) {
    if (!d) return;
    unreserve(C(ctx), d->data);
    *d = pgd_tensor{};
}

}  // namespace npusim
}  // namespace pangu
