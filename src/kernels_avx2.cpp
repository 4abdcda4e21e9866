// AVX2 + FMA + F16C kernels (x86-64). This file alone is compiled with -mavx2 -mfma -mf16c; nothing here
// runs unless the CPU reports those features.
#include <immintrin.h>

#include "kernels.h"

namespace pangu {
namespace kernels {

namespace {

inline __m256 load8_f32(const float *p) { return _mm256_loadu_ps(p); }
inline __m256 load8_bf16(const uint16_t *p) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline __m256 load8_i8(const int8_t *p) {
    __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i *>(p));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}
inline __m256 load8_f16(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}

// The fixed tree of kernels.h: (lo+hi halves) then pairwise.
inline float hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);             // t_j = v_j + v_{j+4}
    __m128 sh = _mm_movehl_ps(s, s);           // t2, t3
    __m128 u = _mm_add_ps(s, sh);              // u0 = t0+t2, u1 = t1+t3
    __m128 u1 = _mm_shuffle_ps(u, u, 0x55);
    return _mm_cvtss_f32(_mm_add_ss(u, u1));
}

template <typename T, __m256 (*LOAD)(const T *), float (*CONV)(T)>
void dot_rows(const float *x, const void *wv, int64_t ldw, int64_t n, int nr, float *y) {
    const T *w = static_cast<const T *>(wv);
    const int64_t n16 = n - n % 16;
    __m256 a0[4], a1[4];
    for (int r = 0; r < 4; ++r) a0[r] = a1[r] = _mm256_setzero_ps();
    if (nr == 4) {
        for (int64_t i = 0; i < n16; i += 16) {
            const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
            for (int r = 0; r < 4; ++r) {
                a0[r] = _mm256_fmadd_ps(x0, LOAD(w + r * ldw + i), a0[r]);
                a1[r] = _mm256_fmadd_ps(x1, LOAD(w + r * ldw + i + 8), a1[r]);
            }
        }
    } else {
        for (int64_t i = 0; i < n16; i += 16) {
            const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
            for (int r = 0; r < nr; ++r) {
                a0[r] = _mm256_fmadd_ps(x0, LOAD(w + r * ldw + i), a0[r]);
                a1[r] = _mm256_fmadd_ps(x1, LOAD(w + r * ldw + i + 8), a1[r]);
            }
        }
    }
    for (int r = 0; r < nr; ++r) {
        // acc0 holds partial sums s0..s7, acc1 s8..s15: their sum is the first level of the tree.
        float s = hsum(_mm256_add_ps(a0[r], a1[r]));
        const T *row = w + r * ldw;
        for (int64_t i = n16; i < n; ++i) s += x[i] * CONV(row[i]);
        y[r] = s;
    }
}

inline float conv_f32(float v) { return v; }
inline float conv_bf16(uint16_t h) {
    uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}
inline float conv_f16(uint16_t h) { return _cvtsh_ss(h); }
inline float conv_i8(int8_t v) { return static_cast<float>(v); }

float dot_avx2(const float *a, const float *b, int64_t n) {
    float y;
    dot_rows<float, load8_f32, conv_f32>(a, b, 0, n, 1, &y);
    return y;
}

void axpy_avx2(float a, const float *x, float *y, int64_t n) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; ++i) y[i] = __builtin_fmaf(a, x[i], y[i]);
}

const Table kAvx2 = {"avx2",
                     dot_rows<float, load8_f32, conv_f32>,
                     dot_rows<uint16_t, load8_bf16, conv_bf16>,
                     dot_rows<uint16_t, load8_f16, conv_f16>,
                     dot_rows<int8_t, load8_i8, conv_i8>,
                     dot_avx2,
                     axpy_avx2};

}  // namespace

const Table *avx2() {
    static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                           __builtin_cpu_supports("f16c");
    return ok ? &kAvx2 : nullptr;
}

}  // namespace kernels
}  // namespace pangu
