// FRACTAL_NZ, the layout a 310P's cube unit reads weights in, and what npu-sim records of each buffer.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pangu {
namespace npusim {

constexpr size_t kFractal = 512;  // one cube fractal: 16x16 fp16 or 16x32 int8

// A weight W[N, K] (N output channels of K inputs, row-major on the host) is stored as the 4-D array
// [K1][N1][16][C0] with C0 = 16 for fp16 and 32 for int8, K1 = ceil(K / C0), N1 = ceil(N / 16): fractal
// (k1, n1) is the 16 x C0 block of rows 16*n1.. and columns C0*k1.., row-major inside, 512 bytes either way,
// and the padding of the last row and column blocks is zero. Whole fractals keep every block 32-byte
// aligned. The int8 scales follow the fractals: one float per channel, holding an fp16 value for W8A16 (the
// antiquant scale has x's dtype) and the fp32 value itself for W8A8 (the dequantization of the int32 sums is fp32);
// a low-bit weight (PGD_I4, PGD_QB), unpacked to int8 at upload, has K / group scales per channel there instead,
// fp16 values for 16-bit activations and fp32 for int8 ones. A weight with a stored column order (act-order) has
// it after the scales: K int32, the permutation its matmuls gather x's columns by.
inline size_t nz_index(int64_t n, int64_t k, int64_t n1_count, int c0) {
    return static_cast<size_t>(((k / c0) * n1_count + n / 16) * (16 * c0) + (n % 16) * c0 + k % c0);
}

// Bytes of the int8 fractals of W[N, K], where the scales begin.
inline size_t nz_i8_bytes(int64_t N, int64_t K) {
    return static_cast<size_t>((K + 31) / 32 * ((N + 15) / 16)) * kFractal;
}

// Scales per channel of an int8 weight: one, or one per group.
inline int64_t nz_i8_scales_per_row(int64_t K, int32_t group) { return group ? K / group : 1; }

// Where the scales of an int8 weight at w are, and its column order after them.
inline const float *nz_i8_scales(const void *w, int64_t N, int64_t K) {
    return reinterpret_cast<const float *>(static_cast<const uint8_t *>(w) + nz_i8_bytes(N, K));
}
inline const int32_t *nz_i8_col_perm(const void *w, int64_t N, int64_t K, int32_t group) {
    return reinterpret_cast<const int32_t *>(nz_i8_scales(w, N, K) + N * nz_i8_scales_per_row(K, group));
}

enum class Layout { Plain, NzF16, NzI8, VecF32 };

// What the device knows of one allocation.
struct Block {
    size_t bytes;   // charged to the budget
    Layout layout;
    int64_t rows, cols;
    int32_t group = 0;  // NzI8: 0 = one scale per channel; else one per group of this many columns (low-bit)
    int32_t act = 0;    // NzI8: pgd_tensor.act_dtype at upload (PGD_I8: int8 activations, fp32 scales)
    bool col_perm = false;  // NzI8: a stored column order follows the scales
};

}  // namespace npusim
}  // namespace pangu
