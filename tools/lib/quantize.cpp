#include "quantize.h"

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
        case DType::U8:
        case DType::I4: break;  // packed 4-bit bytes are not elements
    }
    return 0;
}

QuantError quantize_rows(const TensorInfo &t, int8_t *q, float *scales) {
    if (t.shape.size() != 2) fail(PANGU_ERR_SHAPE, t.name + ": only 2-D weights are quantized");
    if (t.dtype == DType::I8) fail(PANGU_ERR_DTYPE, t.name + ": already int8");
    const int64_t rows = t.shape[0], cols = t.shape[1];
    QuantError err;
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
        float amax = 0.0f;
        for (int64_t c = 0; c < cols; ++c) {
            const float v = load_element(t, static_cast<size_t>(r * cols + c));
            if (!std::isfinite(v))
                fail(PANGU_ERR_NUMERIC, t.name + ": " + (std::isnan(v) ? "NaN" : "Inf") + " at row " + std::to_string(r) +
                                            ", column " + std::to_string(c) + "; refusing to quantize it");
            row[c] = v;
            amax = std::max(amax, std::fabs(v));
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
            err.worst = t.name + " row " + std::to_string(r);
        }
    }
    return err;
}

}  // namespace pangu
