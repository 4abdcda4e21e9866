// fp16 as a 310P computes it: rounding to nearest even, saturation to +-65504 (counted) where IEEE fp16 would
// overflow to infinity, and the fast widening of fp16 bits that the matmul's weight loops use.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "model/tensor.h"

namespace pangu {
namespace npusim {

constexpr float kF16Max = 65504.0f;
constexpr float kF16MinNormal = 6.103515625e-05f;  // 2^-14

// A float in fp16's normal range (or zero) to fp16 precision: 10 mantissa bits, round to nearest even.
// Branch-free, so that the matmul's weight loops vectorize.
inline float round_f16_normal(float v) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
    std::memcpy(&v, &u, 4);
    return v;
}

// Round to the nearest fp16 value, saturating to +-65504 (and counting) where fp16 would give inf. NaN stays.
inline float f16(float v, uint64_t *over) {
    const float a = std::fabs(v);
    if (!(a <= kF16Max)) {
        if (v != v) return v;
        ++*over;
        return v > 0 ? kF16Max : -kF16Max;
    }
    return a >= kF16MinNormal ? round_f16_normal(v) : f16_to_f32(f32_to_f16(v));
}

inline uint16_t to_f16_bits(float v, uint64_t *over) { return f32_to_f16(f16(v, over)); }

// fp16 bits -> fp32, branch-free: the exponent and mantissa shifted into place and rebiased by 2^112 (exact
// for normals and subnormals alike; weight_upload has made every weight finite).
inline float widen_f16(uint16_t h) {
    const uint32_t mag = static_cast<uint32_t>(h & 0x7fffu) << 13, sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    float f;
    std::memcpy(&f, &mag, 4);
    f *= 0x1p112f;
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u |= sign;
    std::memcpy(&f, &u, 4);
    return f;
}

}  // namespace npusim
}  // namespace pangu
