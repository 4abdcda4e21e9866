// AVX2 + FMA + F16C kernels (x86-64). This file alone is compiled with -mavx2 -mfma -mf16c; nothing here
// runs unless the CPU reports those features.
#include <cpuid.h>
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "device/cpu/kernels.h"

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
// Every output element sees the same sequence of FMAs whatever RM and NR are. With PF (decode), the rows
// that follow the block (the next call's weights) are prefetched a cache line at a time: decode reads every
// weight once, in short row streams that the hardware prefetcher ramps up on too late.
template <typename W, int RM, int NR, bool PF = false>
inline void micro(const float *x, int64_t ldx, const typename W::T *w, int64_t ldw, int64_t n, float *y,
                  int64_t ldy) {
    static_assert(RM + 1 + RM * NR <= 16, "block does not fit in the 16 vector registers");
    constexpr int kLine = 64 / sizeof(typename W::T);  // elements per cache line
    __m256 acc[RM][NR];
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < NR; ++c) acc[r][c] = _mm256_setzero_ps();
    const int64_t n8 = n - n % 8;
    for (int64_t i = 0; i < n8; i += 8) {
        if (PF && i % kLine == 0)
            for (int c = 0; c < NR; ++c) _mm_prefetch(reinterpret_cast<const char *>(w + (NR + c) * ldw + i), _MM_HINT_T0);
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

// Up to 4 weight rows against RM rows of x; PF as in micro.
template <typename W, int RM, bool PF = false>
inline void block4(const float *x, int64_t ldx, const typename W::T *w, int64_t ldw, int64_t n, int nr, float *y,
                   int64_t ldy) {
    switch (nr) {
        case 4: micro<W, RM, 4, PF>(x, ldx, w, ldw, n, y, ldy); break;
        case 3: micro<W, RM, 3, PF>(x, ldx, w, ldw, n, y, ldy); break;
        case 2: micro<W, RM, 2, PF>(x, ldx, w, ldw, n, y, ldy); break;
        default: micro<W, RM, 1, PF>(x, ldx, w, ldw, n, y, ldy); break;
    }
}

// nr <= 8 weight rows against M rows of x: blocks of 3 rows x 4 weight rows (prefill, verification), then
// 2 rows, and a single row against up to 8 weight rows at once (decode: enough independent accumulators
// to keep both FMA pipes busy).
template <typename W>
void mm(const float *x, int64_t ldx, int64_t M, const void *wv, int64_t ldw, int64_t n, int nr, float *y,
        int64_t ldy) {
    const typename W::T *w = static_cast<const typename W::T *>(wv);
    // A few rows (a draft's verification) read the weights from memory in their first row block, as decode
    // does on a large model: that block prefetches the next weight rows (the later blocks find them cached).
    const bool pf = M <= 6;
    int64_t m = 0;
    for (; m + 3 <= M; m += 3)
        for (int c = 0; c < nr; c += 4) {
            const int nc = nr - c < 4 ? nr - c : 4;
            if (pf && m == 0) block4<W, 3, true>(x, ldx, w + c * ldw, ldw, n, nc, y + c, ldy);
            else block4<W, 3>(x + m * ldx, ldx, w + c * ldw, ldw, n, nc, y + m * ldy + c, ldy);
        }
    for (; m + 2 <= M; m += 2)
        for (int c = 0; c < nr; c += 4) {
            const int nc = nr - c < 4 ? nr - c : 4;
            if (pf && m == 0) block4<W, 2, true>(x, ldx, w + c * ldw, ldw, n, nc, y + c, ldy);
            else block4<W, 2>(x + m * ldx, ldx, w + c * ldw, ldw, n, nc, y + m * ldy + c, ldy);
        }
    if (m < M) {
        const float *xr = x + m * ldx;
        float *yr = y + m * ldy;
        switch (nr) {
            case 8: micro<W, 1, 8, true>(xr, ldx, w, ldw, n, yr, ldy); break;
            case 7: micro<W, 1, 7, true>(xr, ldx, w, ldw, n, yr, ldy); break;
            case 6: micro<W, 1, 6, true>(xr, ldx, w, ldw, n, yr, ldy); break;
            case 5: micro<W, 1, 5, true>(xr, ldx, w, ldw, n, yr, ldy); break;
            default: block4<W, 1>(xr, ldx, w, ldw, n, nr, yr, ldy); break;
        }
    }
}

float dot_avx2(const float *a, const float *b, int64_t n) {
    float y;
    micro<F32, 1, 1>(a, 0, b, 0, n, &y, 0);
    return y;
}

// Q queries against V rows of loader W, NV vectors of 8 per row: the Q * NV accumulators stay in registers
// (compile-time sizes) and each V vector is widened once for all Q. With SCALED (int8 rows) the row's scale
// multiplies the probability first. Each element's sum runs in order of s.
template <typename W, bool SCALED, int NV, int Q>
void values_q(const float *p, int64_t ldp, const typename W::T *v, int64_t ldv, const float *vs, int64_t ldvs,
              int64_t n_pos, float *out, int64_t ldo) {
    __m256 acc[Q][NV];
    for (int j = 0; j < Q; ++j)
        for (int c = 0; c < NV; ++c) acc[j][c] = _mm256_loadu_ps(out + j * ldo + 8 * c);
    for (int64_t s = 0; s < n_pos; ++s) {
        const typename W::T *vr = v + s * ldv;
        __m256 ps[Q];
        for (int j = 0; j < Q; ++j) ps[j] = _mm256_set1_ps(SCALED ? p[j * ldp + s] * vs[s * ldvs] : p[j * ldp + s]);
        for (int c = 0; c < NV; ++c) {
            const __m256 vv = W::load(vr + 8 * c);
            for (int j = 0; j < Q; ++j) acc[j][c] = _mm256_fmadd_ps(ps[j], vv, acc[j][c]);
        }
    }
    for (int j = 0; j < Q; ++j)
        for (int c = 0; c < NV; ++c) _mm256_storeu_ps(out + j * ldo + 8 * c, acc[j][c]);
}

// All nq queries: blocks of kQ (up to 12 accumulators), then one at a time.
template <typename W, bool SCALED, int NV>
void values_nv(const float *p, int64_t ldp, int32_t nq, const typename W::T *v, int64_t ldv, const float *vs,
               int64_t ldvs, int64_t n_pos, float *out, int64_t ldo) {
    constexpr int kQ = 12 / NV > 0 ? 12 / NV : 1;
    int32_t j = 0;
    for (; j + kQ <= nq; j += kQ)
        values_q<W, SCALED, NV, kQ>(p + j * ldp, ldp, v, ldv, vs, ldvs, n_pos, out + j * ldo, ldo);
    for (; j < nq; ++j) values_q<W, SCALED, NV, 1>(p + j * ldp, ldp, v, ldv, vs, ldvs, n_pos, out + j * ldo, ldo);
}

template <typename W, KvElem E>
void attn_values_avx2(const float *p, int64_t ldp, int32_t nq, const void *vv, int64_t ldv, const float *vs,
                      int64_t ldvs, int64_t n_pos, int32_t d, float *out, int64_t ldo) {
    constexpr bool S = E == kKvI8;
    const typename W::T *v = static_cast<const typename W::T *>(vv);
    if (d % 8 == 0) switch (d / 8) {
            case 1: return values_nv<W, S, 1>(p, ldp, nq, v, ldv, vs, ldvs, n_pos, out, ldo);
            case 2: return values_nv<W, S, 2>(p, ldp, nq, v, ldv, vs, ldvs, n_pos, out, ldo);
            case 4: return values_nv<W, S, 4>(p, ldp, nq, v, ldv, vs, ldvs, n_pos, out, ldo);
            case 8: return values_nv<W, S, 8>(p, ldp, nq, v, ldv, vs, ldvs, n_pos, out, ldo);
            case 16: return values_nv<W, S, 16>(p, ldp, nq, v, ldv, vs, ldvs, n_pos, out, ldo);
            default: break;
        }
    // other head sizes: the reference's order (fixed, so still invariant)
    scalar().attn_values[E](p, ldp, nq, vv, ldv, vs, ldvs, n_pos, d, out, ldo);
}

// exp(x) for x <= 0, as in kernels_avx512.cpp: 2^n assembled in the exponent bits (n >= -126 after the clamp).
inline __m256 exp256(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.33654f);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(lo, x);  // this operand order keeps a NaN (max returns its second operand then)
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    const __m256 e = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0f));
    // 2^n: n + 127 in the exponent field (n in [-126, 0])
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(e, _mm256_castsi256_ps(bits)));
}

float scale_max_avx2(float *x, int64_t n, float scale) {
    const __m256 sc = _mm256_set1_ps(scale);
    __m256 mx = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), sc);
        _mm256_storeu_ps(x + i, v);
        mx = _mm256_max_ps(mx, v);
    }
    float lanes[8], m = -INFINITY;
    _mm256_storeu_ps(lanes, mx);
    for (float l : lanes) m = l > m ? l : m;
    for (; i < n; ++i) {
        x[i] *= scale;
        m = x[i] > m ? x[i] : m;
    }
    return m;
}

float exp_sum_avx2(float *x, int64_t n, float shift) {
    const __m256 sh = _mm256_set1_ps(shift);
    __m256 sum = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
        _mm256_storeu_ps(x + i, e);
        sum = _mm256_add_ps(sum, e);
    }
    if (i < n) {  // the tail through the same exp, in a zero-padded vector
        float t[8] = {0};
        for (int64_t j = i; j < n; ++j) t[j - i] = x[j] - shift;
        __m256 e = exp256(_mm256_loadu_ps(t));
        _mm256_storeu_ps(t, e);
        for (int64_t j = i; j < n; ++j) x[j] = t[j - i];
        for (int64_t j = n - i; j < 8; ++j) t[j] = 0.0f;
        sum = _mm256_add_ps(sum, _mm256_loadu_ps(t));
    }
    return hsum(sum);
}

void swiglu_avx2(float *g, const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    const __m256 sign = _mm256_set1_ps(-0.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 e = exp256(_mm256_or_ps(gv, sign));  // e^-|g|
        const __m256 d = _mm256_div_ps(one, _mm256_add_ps(one, e));
        const __m256 sig = _mm256_blendv_ps(d, _mm256_mul_ps(e, d), _mm256_cmp_ps(gv, zero, _CMP_LT_OQ));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_mul_ps(gv, sig), _mm256_loadu_ps(u + i)));
    }
    swiglu_scalar(g + i, u + i, n - i);
}

// The integer kernels: vpmaddubsw (kernels_avx2_int.cpp), or vpdpbusd where the CPU has AVX-VNNI.
#define PANGU_AVX2_ATTN_VALUES \
    { attn_values_avx2<F32, kKvF32>, attn_values_avx2<F16, kKvF16>, attn_values_avx2<BF16, kKvBF16>, \
      attn_values_avx2<I8, kKvI8> }
#define PANGU_AVX2_ATTN_SCORES \
    { attn_scores_by_mm<mm<F32>, 4>, attn_scores_by_mm<mm<F16>, 2>, attn_scores_by_mm<mm<BF16>, 2>, \
      attn_scores_by_mm<mm<I8>, 1> }
const Table kAvx2 = {"avx2",          mm<F32>,         mm<BF16>,  mm<F16>,        mm<I8>,
                     dot_avx2,        PANGU_AVX2_ATTN_VALUES, PANGU_AVX2_ATTN_SCORES, scale_max_avx2, exp_sum_avx2,
                     swiglu_avx2,     nullptr,         nullptr,   quant_rows_avx2, mm_q8_avx2,
                     mm_q4_avx2,      mm_qb_avx2};
const Table kAvx2Vnni = {"avx2",          mm<F32>,        mm<BF16>,      mm<F16>,        mm<I8>,
                         dot_avx2,        PANGU_AVX2_ATTN_VALUES, PANGU_AVX2_ATTN_SCORES, scale_max_avx2, exp_sum_avx2,
                         swiglu_avx2,     nullptr,        nullptr,       quant_rows_avx2, mm_q8_avxvnni,
                         mm_q4_avxvnni,   mm_qb_avxvnni};
#undef PANGU_AVX2_ATTN_VALUES
#undef PANGU_AVX2_ATTN_SCORES

}  // namespace

const Table *avx2_novnni() {
    // F16C through cpuid: clang (14) does not know __builtin_cpu_supports("f16c").
    static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && [] {
        unsigned a, b, c, d;
        return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
    }();
    return ok ? &kAvx2 : nullptr;
}

const Table *avx2() {
    // CPUID leaf 7 sub-leaf 1, EAX bit 4: AVX-VNNI (by number, as the AVX512-BF16 bit in kernels_avx512.cpp)
    static const bool vnni = avx2_novnni() && [] {
        unsigned a = 0, b = 0, c = 0, d = 0;
        return __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4));
    }();
    return vnni ? &kAvx2Vnni : avx2_novnni();
}

}  // namespace kernels
}  // namespace pangu
