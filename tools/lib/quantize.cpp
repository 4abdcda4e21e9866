#include "quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "common/common.h"

namespace pangu {

float load_element(const TensorInfo &t, size_t i) {
    const uint8_t *p = static_cast<const uint8_t *>(t.data);
    uint16_t h;
    float f;
    switch (t.dtype) {
        case DType::F32: std::memcpy(&f, p + 4 * i, 4); return f;
        case DType::BF16: std::memcpy(&h, p + 2 * i, 2); return bf16_to_f32(h);
        case DType::F16: std::memcpy(&h, p + 2 * i, 2); return f16_to_f32(h);
        case DType::I8: return static_cast<float>(static_cast<const int8_t *>(t.data)[i]);
        default: break;  // packed 4-bit bytes (U8, I4) are not elements
    }
    return 0;
}

namespace {

[[noreturn]] void non_finite(const std::string &name, float v, int64_t row, int64_t col) {
    fail(PANGU_ERR_NUMERIC, name + ": " + (std::isnan(v) ? "NaN" : "Inf") + " at row " + std::to_string(row) +
                                ", column " + std::to_string(col) + "; refusing to quantize it");
}

}  // namespace

std::vector<float> widen_tensor(const TensorInfo &t) {
    if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16)
        fail(PANGU_ERR_DTYPE, t.name + ": " + dtype_name(t.dtype) + " is not a floating-point tensor");
    const size_t n = t.nbytes / dtype_size(t.dtype);
    const int64_t cols = t.shape.size() == 2 ? t.shape[1] : static_cast<int64_t>(n);
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) {
        v[i] = load_element(t, i);
        if (!std::isfinite(v[i])) {
            if (t.shape.size() == 2) non_finite(t.name, v[i], static_cast<int64_t>(i) / cols, static_cast<int64_t>(i) % cols);
            fail(PANGU_ERR_NUMERIC, t.name + ": " + (std::isnan(v[i]) ? "NaN" : "Inf") + " at element " +
                                        std::to_string(i) + "; refusing to quantize it");
        }
    }
    return v;
}

QuantError quantize_rows(const TensorInfo &t, int8_t *q, float *scales) {
    if (t.shape.size() != 2) fail(PANGU_ERR_SHAPE, t.name + ": only 2-D weights are quantized");
    if (t.dtype == DType::I8 || t.dtype == DType::U8) fail(PANGU_ERR_DTYPE, t.name + ": already quantized");
    const std::vector<float> w = widen_tensor(t);
    return quantize_rows(w.data(), t.shape[0], t.shape[1], t.name, q, scales);
}

QuantError quantize_rows(const float *w, int64_t rows, int64_t cols, const std::string &name, int8_t *q,
                         float *scales) {
    QuantError err;
    for (int64_t r = 0; r < rows; ++r) {
        const float *row = w + r * cols;
        float amax = 0.0f;
        for (int64_t c = 0; c < cols; ++c) {
            if (!std::isfinite(row[c])) non_finite(name, row[c], r, c);
            amax = std::max(amax, std::fabs(row[c]));
        }
        const float s = amax / 127.0f;
        scales[r] = s;
        const float inv = s > 0 ? 1.0f / s : 0.0f;
        double row_err = 0;
        for (int64_t c = 0; c < cols; ++c) {
            const float x = std::nearbyint(row[c] * inv);
            const int8_t v = static_cast<int8_t>(std::max(-127.0f, std::min(127.0f, x)));
            q[r * cols + c] = v;
            row_err = std::max(row_err, static_cast<double>(std::fabs(row[c] - v * s)));
        }
        err.max_abs = std::max(err.max_abs, row_err);
        if (amax > 0 && row_err / amax > err.max_rel) {
            err.max_rel = row_err / amax;
            err.worst = name + " row " + std::to_string(r);
        }
    }
    return err;
}

// ---- 4-bit ----

bool i4_group_ok(int64_t group) { return group >= kI4MinGroup && group <= kI4MaxGroup && group % 32 == 0; }

bool i4_cols_ok(int64_t cols, int64_t group) {
    return i4_group_ok(group) && cols > 0 && cols % 64 == 0 && cols % group == 0;
}

void i4_pack_row(const int8_t *v, int64_t cols, uint8_t *out) {
    if (cols % 64 != 0)
        fail(PANGU_ERR_INVALID_ARGUMENT, "i4_pack_row: " + std::to_string(cols) + " columns is not a multiple of 64");
    for (int64_t run = 0; run < cols / 64; ++run) {
        const int8_t *in = v + run * 64;
        uint8_t *o = out + run * 32;
        for (int j = 0; j < 32; ++j) {
            const int lo = in[j], hi = in[j + 32];
            if (lo < -8 || lo > 7 || hi < -8 || hi > 7)
                fail(PANGU_ERR_INVALID_ARGUMENT, "i4_pack_row: value " + std::to_string(lo < -8 || lo > 7 ? lo : hi) +
                                                     " at column " + std::to_string(run * 64 + (lo < -8 || lo > 7 ? j : j + 32)) +
                                                     " is outside [-8, 7]");
            o[j] = static_cast<uint8_t>((lo + 8) | ((hi + 8) << 4));
        }
    }
}

void i4_unpack_row(const uint8_t *row, int64_t cols, int8_t *v) {
    for (int64_t k = 0; k < cols; ++k) v[k] = static_cast<int8_t>(i4_value(row, k));
}

std::vector<float> i4_raw_scales(const float *w, int64_t rows, int64_t cols, int64_t group, const std::string &name) {
    const int64_t ng = cols / group;
    std::vector<float> s(static_cast<size_t>(rows * ng));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = 0; g < ng; ++g) {
            float amax = 0.0f;
            for (int64_t c = g * group; c < (g + 1) * group; ++c) {
                const float x = w[r * cols + c];
                if (!std::isfinite(x)) non_finite(name, x, r, c);
                amax = std::max(amax, std::fabs(x));
            }
            s[r * ng + g] = amax / 7.0f;
        }
    return s;
}

bool i4_scales_fit_f16(const std::vector<float> &raw) {
    constexpr float kMinNormal = 6.103515625e-05f;  // 2^-14
    for (const float s : raw) {
        if (s == 0.0f) continue;
        const float r = f16_to_f32(f32_to_f16(s));
        if (!std::isfinite(r) || r < kMinNormal) return false;
    }
    return true;
}

QuantError quantize_i4(const float *w, int64_t rows, int64_t cols, int64_t group, const std::string &name,
                       std::vector<float> &scales, bool f16, uint8_t *packed) {
    if (!i4_cols_ok(cols, group))
        fail(PANGU_ERR_SHAPE, name + ": " + std::to_string(cols) + " columns cannot be 4-bit with groups of " +
                                  std::to_string(group) + " (a multiple of 64 and of the group size is needed)");
    const int64_t ng = cols / group;
    if (scales.size() != static_cast<size_t>(rows * ng))
        fail(PANGU_ERR_INTERNAL, name + ": quantize_i4 was given " + std::to_string(scales.size()) + " scales for " +
                                     std::to_string(rows * ng) + " groups");
    if (f16)
        for (float &s : scales) s = f16_to_f32(f32_to_f16(s));
    QuantError err;
    std::vector<int8_t> v(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
        const float *row = w + r * cols;
        for (int64_t g = 0; g < ng; ++g) {
            const float s = scales[r * ng + g];
            double gerr = 0, amax = 0;
            for (int64_t c = g * group; c < (g + 1) * group; ++c) {
                if (!std::isfinite(row[c])) non_finite(name, row[c], r, c);
                const float x = s > 0 ? std::nearbyint(row[c] / s) : 0.0f;
                v[c] = static_cast<int8_t>(std::max(-8.0f, std::min(7.0f, x)));
                gerr = std::max(gerr, static_cast<double>(std::fabs(row[c] - v[c] * s)));
                amax = std::max(amax, static_cast<double>(std::fabs(row[c])));
            }
            err.max_abs = std::max(err.max_abs, gerr);
            if (amax > 0 && gerr / amax > err.max_rel) {
                err.max_rel = gerr / amax;
                err.worst = name + " row " + std::to_string(r) + " group " + std::to_string(g);
            }
        }
        i4_pack_row(v.data(), cols, packed + r * (cols / 2));
    }
    return err;
}

}  // namespace pangu
