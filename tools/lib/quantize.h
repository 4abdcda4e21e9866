// Weight quantization (used by pangu-quantize and the tests):
//  - int8 with one scale per output channel, scale = max|W_row| / 127 (W8A16 and W8A8 weights);
//  - 4-bit with one scale per group of G columns, scale = max|W_group| / 7, packed two per byte in the PGD_I4
//    layout (src/device/device.h) that w4a8 checkpoints store as U8 [rows, cols / 2].
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "format/safetensors.h"

namespace pangu {

struct QuantError {
    double max_abs = 0;       // largest |W - q*s| over all elements
    double max_rel = 0;       // largest |W - q*s| / max|W| of its row (int8) or group (4-bit)
    std::string worst;        // the tensor, row (and group) holding max_rel
    void merge(const QuantError &o) {
        if (o.max_abs > max_abs) max_abs = o.max_abs;
        if (o.max_rel > max_rel) {
            max_rel = o.max_rel;
            worst = o.worst;
        }
    }
};

// Reads element i of a floating-point tensor as float.
float load_element(const TensorInfo &t, size_t i);

// Every element of a floating-point tensor as F32, row-major. Throws PANGU_ERR_NUMERIC naming the tensor and
// the element (row and column for a matrix) if it holds NaN or Inf, and PANGU_ERR_DTYPE for integer tensors.
std::vector<float> widen_tensor(const TensorInfo &t);

// ---- int8, one scale per row ------------------------------------------------------------------------------

// Quantizes a 2-D floating-point tensor [rows, cols] into q (rows*cols int8) and scales (rows floats).
// Throws PANGU_ERR_NUMERIC naming the tensor and element if it holds NaN or Inf.
QuantError quantize_rows(const TensorInfo &t, int8_t *q, float *scales);
// The same from F32 values w [rows, cols] (e.g. smoothed weights); `name` names the tensor in messages.
// q = round-half-even(w / scale) in [-127, 127], scale = max|w_row| / 127 (0 for a row of zeros).
QuantError quantize_rows(const float *w, int64_t rows, int64_t cols, const std::string &name, int8_t *q,
                         float *scales);

// ---- 4-bit, one scale per group of columns (PGD_I4) -------------------------------------------------------

constexpr int kI4MinGroup = 32, kI4MaxGroup = 4096;  // the group sizes config.json may say (format/config.cpp)

// Whether `group` is a 4-bit group size: a multiple of 32 from 32 to 4096.
bool i4_group_ok(int64_t group);
// Whether a row of `cols` columns can be 4-bit with groups of `group`: cols a multiple of 64 (the packing runs)
// and of the group size.
bool i4_cols_ok(int64_t cols, int64_t group);

// Column k of a packed row as the signed value v - 8 in [-8, 7]: run k / 64, byte k % 32 of that run, the low
// nibble for k % 64 < 32 and the high nibble otherwise (the rule of the CPU backend's i4_at).
inline int i4_value(const uint8_t *row, int64_t k) {
    const uint8_t b = row[(k / 64) * 32 + k % 32];
    return static_cast<int>(k % 64 < 32 ? b & 15 : b >> 4) - 8;
}
// Packs one row of `cols` values in [-8, 7] (cols a multiple of 64) into cols / 2 bytes, each stored as
// v + 8. Throws PANGU_ERR_INVALID_ARGUMENT for a value out of range or cols not a multiple of 64.
void i4_pack_row(const int8_t *v, int64_t cols, uint8_t *out);
// The inverse: cols values in [-8, 7].
void i4_unpack_row(const uint8_t *row, int64_t cols, int8_t *v);

// The raw scales of w [rows, cols] in groups of `group` columns: max|w_group| / 7, rows * (cols / group) of
// them, row-major. Throws PANGU_ERR_NUMERIC naming the tensor and element for NaN or Inf.
std::vector<float> i4_raw_scales(const float *w, int64_t rows, int64_t cols, int64_t group, const std::string &name);
// Whether a checkpoint can store these scales as F16 without loss of meaning: every scale is 0 (a group of
// zeros) or a normal F16 number once rounded (from 2^-14 to 65504). A scale beyond 65504 would overflow to
// Inf and one below 2^-14 would lose precision as an F16 subnormal or flush to 0 for a nonzero group: the
// tensor then keeps F32 scales (the loader accepts both).
bool i4_scales_fit_f16(const std::vector<float> &raw);
// Quantizes w [rows, cols] to packed 4-bit (rows * cols / 2 bytes in `packed`) with the scales `scales`
// (rows * cols / group, from i4_raw_scales; with `f16` they are first rounded to F16 in place, and the rounded
// value, the one the checkpoint stores, is the one used). Each value becomes
//     v = clamp(round-half-even(w / scale), -8, 7),  stored as the nibble v + 8,
// and dequantizes to v * scale; a group of zeros has scale 0 and nibbles 8. With scale = max|w| / 7 every
// |w / scale| <= 7 (7.0035 at most after F16 rounding of the scale, which rounds to 7), so nothing is clamped
// and each element's error is at most scale / 2; -8 is a valid nibble value but this scale never produces it.
// Requires i4_cols_ok(cols, group).
QuantError quantize_i4(const float *w, int64_t rows, int64_t cols, int64_t group, const std::string &name,
                       std::vector<float> &scales, bool f16, uint8_t *packed);

}  // namespace pangu
