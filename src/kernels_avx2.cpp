// AVX2 + FMA + F16C kernels (x86-64). This file alone is compiled with -mavx2 -mfma -mf16c; nothing here
// runs unless the CPU reports those features.
#include <cpuid.h>
#include <immintrin.h>

#include <cstring>

#include "kernels.h"

namespace pangu {
namespace kernels {

namespace {

struct F32 {
    using T = float;
    static __m256 load(const float *p) { return _mm256_loadu_ps(p); }
    static float conv(float v) { return v; }
};
struct BF16 {
    using T = uint16_t;
    static __m256 load(const uint16_t *p) {
        __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    static float conv(uint16_t h) {
        uint32_t u = static_cast<uint32_t>(h) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
};
struct F16 {
    using T = uint16_t;
    static __m256 load(const uint16_t *p) {
        return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
    }
    static float conv(uint16_t h) { return _cvtsh_ss(h); }
};
struct I8 {
    using T = int8_t;
    static __m256 load(const int8_t *p) {
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p))));
    }
    static float conv(int8_t v) { return static_cast<float>(v); }
};

// The fixed tree of kernels.h: lanes (0+4, 1+5, 2+6, 3+7), then (0+2, 1+3), then the last pair.
inline float hsum(__m256 v) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 u = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 0x55)));
}

// RM rows of x against NR weight rows: RM * NR accumulators; the x vectors are loaded once per step and
// each weight vector is converted once and used for all RM rows. Registers: RM + 1 + RM * NR <= 16.
// Every output element sees the same sequence of FMAs whatever RM and NR are.
template <typename W, int RM, int NR>
inline void micro(const float *x, int64_t ldx, const typename W::T *w, int64_t ldw, int64_t n, float *y,
                  int64_t ldy) {
    static_assert(RM + 1 + RM * NR <= 16, "block does not fit in the 16 vector registers");
    __m256 acc[RM][NR];
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < NR; ++c) acc[r][c] = _mm256_setzero_ps();
    const int64_t n8 = n - n % 8;
    for (int64_t i = 0; i < n8; i += 8) {
        __m256 xv[RM];
        for (int r = 0; r < RM; ++r) xv[r] = _mm256_loadu_ps(x + r * ldx + i);
        for (int c = 0; c < NR; ++c) {
            const __m256 wv = W::load(w + c * ldw + i);
            for (int r = 0; r < RM; ++r) acc[r][c] = _mm256_fmadd_ps(xv[r], wv, acc[r][c]);
        }
    }
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < NR; ++c) {
            float s = hsum(acc[r][c]);
            for (int64_t i = n8; i < n; ++i) s = __builtin_fmaf(x[r * ldx + i], W::conv(w[c * ldw + i]), s);
            y[r * ldy + c] = s;
        }
}

// Up to 4 weight rows against RM rows of x.
template <typename W, int RM>
inline void block4(const float *x, int64_t ldx, const typename W::T *w, int64_t ldw, int64_t n, int nr, float *y,
                   int64_t ldy) {
    switch (nr) {
        case 4: micro<W, RM, 4>(x, ldx, w, ldw, n, y, ldy); break;
        case 3: micro<W, RM, 3>(x, ldx, w, ldw, n, y, ldy); break;
        case 2: micro<W, RM, 2>(x, ldx, w, ldw, n, y, ldy); break;
        default: micro<W, RM, 1>(x, ldx, w, ldw, n, y, ldy); break;
    }
}

// nr <= 8 weight rows against M rows of x: blocks of 3 rows x 4 weight rows (prefill, verification), then
// 2 rows, and a single row against up to 8 weight rows at once (decode: enough independent accumulators
// to keep both FMA pipes busy).
template <typename W>
void mm(const float *x, int64_t ldx, int64_t M, const void *wv, int64_t ldw, int64_t n, int nr, float *y,
        int64_t ldy) {
    const typename W::T *w = static_cast<const typename W::T *>(wv);
    int64_t m = 0;
    for (; m + 3 <= M; m += 3)
        for (int c = 0; c < nr; c += 4)
            block4<W, 3>(x + m * ldx, ldx, w + c * ldw, ldw, n, nr - c < 4 ? nr - c : 4, y + m * ldy + c, ldy);
    for (; m + 2 <= M; m += 2)
        for (int c = 0; c < nr; c += 4)
            block4<W, 2>(x + m * ldx, ldx, w + c * ldw, ldw, n, nr - c < 4 ? nr - c : 4, y + m * ldy + c, ldy);
    if (m < M) {
        const float *xr = x + m * ldx;
        float *yr = y + m * ldy;
        switch (nr) {
            case 8: micro<W, 1, 8>(xr, ldx, w, ldw, n, yr, ldy); break;
            case 7: micro<W, 1, 7>(xr, ldx, w, ldw, n, yr, ldy); break;
            case 6: micro<W, 1, 6>(xr, ldx, w, ldw, n, yr, ldy); break;
            case 5: micro<W, 1, 5>(xr, ldx, w, ldw, n, yr, ldy); break;
            default: block4<W, 1>(xr, ldx, w, ldw, n, nr, yr, ldy); break;
        }
    }
}

float dot_avx2(const float *a, const float *b, int64_t n) {
    float y;
    micro<F32, 1, 1>(a, 0, b, 0, n, &y, 0);
    return y;
}

// Scores for one head: head_dim is small (32-128), so the whole query stays in registers and each position
// costs its loads, its FMAs and one reduction.
void attn_scores_avx2(const float *q, const float *k, int64_t ldk, int64_t n_pos, int32_t d, float scale,
                      float *scores) {
    if (d % 8 != 0 || d > 256) {
        for (int64_t s = 0; s < n_pos; ++s) scores[s] = dot_avx2(q, k + s * ldk, d) * scale;
        return;
    }
    __m256 qv[32];
    const int nv = d / 8;
    for (int j = 0; j < nv; ++j) qv[j] = _mm256_loadu_ps(q + 8 * j);
    for (int64_t s = 0; s < n_pos; ++s) {
        const float *kr = k + s * ldk;
        __m256 acc = _mm256_setzero_ps();
        for (int j = 0; j < nv; ++j) acc = _mm256_fmadd_ps(qv[j], _mm256_loadu_ps(kr + 8 * j), acc);
        scores[s] = hsum(acc) * scale;
    }
}

void attn_values_avx2(const float *p, const float *v, int64_t ldv, int64_t n_pos, int32_t d, float *out) {
    if (d % 8 != 0 || d > 128) {
        for (int32_t i = 0; i < d; ++i) out[i] = 0.0f;
        for (int64_t s = 0; s < n_pos; ++s)
            for (int32_t i = 0; i < d; ++i) out[i] = __builtin_fmaf(p[s], v[s * ldv + i], out[i]);
        return;
    }
    __m256 acc[16];
    const int nv = d / 8;
    for (int j = 0; j < nv; ++j) acc[j] = _mm256_setzero_ps();
    for (int64_t s = 0; s < n_pos; ++s) {
        const __m256 ps = _mm256_set1_ps(p[s]);
        const float *vr = v + s * ldv;
        for (int j = 0; j < nv; ++j) acc[j] = _mm256_fmadd_ps(ps, _mm256_loadu_ps(vr + 8 * j), acc[j]);
    }
    for (int j = 0; j < nv; ++j) _mm256_storeu_ps(out + 8 * j, acc[j]);
}

const Table kAvx2 = {"avx2", mm<F32>, mm<BF16>, mm<F16>, mm<I8>, dot_avx2, attn_scores_avx2, attn_values_avx2};

}  // namespace

const Table *avx2() {
    // F16C through cpuid: clang (14) does not know __builtin_cpu_supports("f16c").
    static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && [] {
        unsigned a, b, c, d;
        return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
    }();
    return ok ? &kAvx2 : nullptr;
}

}  // namespace kernels
}  // namespace pangu
