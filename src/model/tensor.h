// Element types and the 2-D tensor view that weights and activations are described with.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "device/device.h"

namespace pangu {

// The element types of the device interface (pgd_dtype), as a scoped enum for the C++ side; the values are
// pgd_dtype's, so the two meet in one place: pgd_type(). U8 is a file's dtype only (the packed bytes of 4-bit
// weights, which the loader views as I4); I4 is a weight's in memory only (two per byte, see PGD_I4).
// I16 is an activation precision only (int16 per row, PGD_I16). QB is a mixed-precision weight in memory
// (PGD_QB, from a U8 tensor); I32 is a file's dtype only (row and column orders of low-bit weights).
enum class DType : int32_t {
    F32 = PGD_F32, F16 = PGD_F16, BF16 = PGD_BF16, I8 = PGD_I8, I4 = PGD_I4, U8 = 5, I16 = PGD_I16, QB = PGD_QB, I32 = 8
};
inline int32_t pgd_type(DType t) { return static_cast<int32_t>(t); }

inline size_t dtype_size(DType t) {
    switch (t) {
        case DType::F32: return 4;
        case DType::F16: return 2;
        case DType::BF16: return 2;
        case DType::I8: return 1;
        case DType::U8: return 1;
        case DType::I16: return 2;
        case DType::I32: return 4;
        case DType::I4: return 0;  // half a byte: see Tensor::nbytes
        case DType::QB: return 0;  // rows of several widths: see Tensor::nbytes
    }
    return 0;
}

inline const char *dtype_name(DType t) {
    switch (t) {
        case DType::F32: return "F32";
        case DType::F16: return "F16";
        case DType::BF16: return "BF16";
        case DType::I8: return "I8";
        case DType::I4: return "I4";
        case DType::U8: return "U8";
        case DType::I16: return "I16";
        case DType::QB: return "QB";
        case DType::I32: return "I32";
    }
    return "?";
}

// Row r of an f32 activation tensor (unblocked), as the backends' operators address them.
inline float *rowf(const pgd_tensor *t, int64_t r) { return static_cast<float *>(t->data) + r * t->stride; }

// bf16 is the top half of an fp32, so widening is exact.
inline float bf16_to_f32(uint16_t h) {
    uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Round to nearest even, as PyTorch does; NaN stays NaN (made quiet). A select rather than an early return
// for NaN, so that loops over it vectorize (the CPU backend rounds every activation with it: element by
// element it took 3.7 % of a W8A16 pangu-tiny prefill).
inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    const uint32_t nearest_even = u + 0x7fffu + ((u >> 16) & 1u);
    const uint32_t quiet_nan = u | 0x00400000u;
    return static_cast<uint16_t>(((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : nearest_even) >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// A weight matrix as stored: `rows` output channels of `cols` inputs, row-major. For I8 weights, `scale`
// holds one float per row; for I4 and QB weights, cols / group_size per row (in stored row order), with the
// zero points `zero` (NULL: symmetric), and `col_perm` the stored column order if any (device.h, PGD_QB).
struct Tensor {
    DType dtype = DType::F32;
    int64_t rows = 0;
    int64_t cols = 0;
    const void *data = nullptr;
    const float *scale = nullptr;
    int32_t group_size = 0;  // I4, QB: columns per scale
    const uint8_t *zero = nullptr;
    const int32_t *col_perm = nullptr;
    const pgd_qb_layout *qb = nullptr;  // QB: the rows of each width
    size_t qb_bytes = 0;                // QB: the packed rows' bytes
    std::string name;
    pgd_tensor dev{};  // the same weight as the device sees it (the mapping itself on the CPU device)

    size_t row_bytes() const { return dtype == DType::I4 ? static_cast<size_t>(cols) / 2 : cols * dtype_size(dtype); }
    size_t nbytes() const { return dtype == DType::QB ? qb_bytes : static_cast<size_t>(rows) * row_bytes(); }
    const uint8_t *row_ptr(int64_t r) const { return static_cast<const uint8_t *>(data) + static_cast<size_t>(r) * row_bytes(); }
};

}  // namespace pangu
