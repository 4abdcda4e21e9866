// The horizontal sums of the AVX-512 kernels (kernels_avx512.cpp, kernels_avx512bf16.cpp): 16 lane sums
// reduced in the order of kernels.h. Only for files compiled with AVX-512 flags; internal linkage, since
// those files are compiled with different flags.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace pangu {
namespace kernels {
namespace {

// s[j] + s[j+8], then lanes (0+4, 1+5, 2+6, 3+7), (0+2, 1+3) and the last pair: the tree of kernels.h.
inline float hsum(__m512 v) {
    const __m256 a = _mm256_add_ps(_mm512_castps512_ps256(v),
                                   _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    const __m128 u = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 0x55)));
}

// The same tree for four accumulators at once, transposed: [hsum(a), hsum(b), hsum(c), hsum(d)] bit for bit
// (each addition pairs the same lanes; only the order of operands changes, and addition commutes), in 13
// instructions instead of 4 x 8. Short dot products (head_dim 32-128, a small model's hidden size) spend a
// large part of their time reducing.
inline __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
    // lanes j + j+8: [a | b] and [c | d], 8 sums each
    const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
    // j + j+4: one 128-bit lane each for a, b, c, d
    __m512 z = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
    z = _mm512_add_ps(z, _mm512_permute_ps(z, 0x4E));  // j + j+2
    z = _mm512_add_ps(z, _mm512_permute_ps(z, 0xB1));  // j + j+1: the sums sit in lanes 0, 4, 8, 12
    return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0), z));
}

// A block's finished sums, acc[r][c] -> y[r * ldy + c]: four channels to a 128-bit store (hsum4), the rest one
// by one (the same tree either way).
template <int RM, int NR>
inline void store_sums(const __m512 (&acc)[RM][NR], float *y, int64_t ldy) {
#pragma GCC unroll 8
    for (int r = 0; r < RM; ++r) {
        int c = 0;
#pragma GCC unroll 8
        for (; c + 4 <= NR; c += 4)
            _mm_storeu_ps(y + r * ldy + c, hsum4(acc[r][c], acc[r][c + 1], acc[r][c + 2], acc[r][c + 3]));
#pragma GCC unroll 8
        for (; c < NR; ++c) y[r * ldy + c] = hsum(acc[r][c]);
    }
}

}  // namespace
}  // namespace kernels
}  // namespace pangu
