// AVX-512 kernels (x86-64 with AVX512F/BW/VL). This file alone is compiled with -mavx512f -mavx512bw
// -mavx512vl; nothing here runs unless the CPU reports those features.
//
// Reduction order of this table: 16 partial sums s[j] (j = i mod 16) over all n elements, the tail loaded
// with a mask (absent elements are zeros, which leave the sums unchanged), then s[j] + s[j+8] and the 8-lane
// tree of kernels.h. Every output element sees that sequence whatever the blocking, so results are batch-
// and thread-invariant within this table (they differ from the AVX2 table's in the last bits).
//
// Why not the integer VNNI instructions for W8A16: vpdpbusd / vpdpwssd multiply integers, so they need
// integer activations; W8A16 keeps bf16 activations and fp32 sums, and widening int8 to fp32 costs two
// instructions per 16 weights, which the FMAs of a batch amortize and decode hides behind memory. The integer
// activations of W8A8 and W4A8 (act_dtype PGD_I8) do use them: kernels_avx512vnni.cpp.
// GCC 12's avx512fintrin.h initializes its "undefined" vectors from themselves, which -Wuninitialized
// reports at every use of the intrinsics that start from one (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)  // clang (the fuzzing build) has neither the bug nor this warning
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <cpuid.h>
#include <immintrin.h>

#include <cmath>

#include "device/cpu/kernels.h"
#include "device/cpu/kernels_avx512_tree.h"

namespace pangu {
namespace kernels {

namespace {

// 16 weights widened to fp32; `tail` loads only the first `mask` elements (the rest read as zero).
struct F32 {
    using T = float;
    static __m512 load(const float *p) { return _mm512_loadu_ps(p); }
    static __m512 load(const float *p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
};
struct BF16 {
    using T = uint16_t;
    static __m512 widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
    static __m512 load(const uint16_t *p) { return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p))); }
    static __m512 load(const uint16_t *p, __mmask16 m) { return widen(_mm256_maskz_loadu_epi16(m, p)); }
};
struct F16 {
    using T = uint16_t;
    static __m512 load(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p))); }
    static __m512 load(const uint16_t *p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
};
struct I8 {
    using T = int8_t;
    static __m512 widen(__m128i b) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)); }
    static __m512 load(const int8_t *p) { return widen(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))); }
    static __m512 load(const int8_t *p, __mmask16 m) { return widen(_mm_maskz_loadu_epi8(m, p)); }
};

// RM rows of x against NR weight rows, RM * NR accumulators in registers (RM + 1 + RM * NR <= 32). Each
// weight vector is widened once and used by all RM rows. With PF, the rows that follow the block (the next
// call's weights, nr rows further) are prefetched a cache line at a time while this block is computed:
// decode reads every weight once, in short row streams that the hardware prefetcher ramps up on too late.
template <typename W, int RM, int NR, bool PF>
inline void micro(const float *x, int64_t ldx, const typename W::T *w, int64_t ldw, int64_t n, float *y,
                  int64_t ldy) {
    static_assert(RM + 1 + RM * NR <= 32, "block does not fit in the 32 vector registers");
    constexpr int kLine = 64 / sizeof(typename W::T);  // elements per cache line
    __m512 acc[RM][NR];
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < NR; ++c) acc[r][c] = _mm512_setzero_ps();
    const int64_t n16 = n - n % 16;
    for (int64_t i = 0; i < n16; i += 16) {
        if (PF && i % kLine == 0)
            for (int c = 0; c < NR; ++c) _mm_prefetch(reinterpret_cast<const char *>(w + (NR + c) * ldw + i), _MM_HINT_T0);
        __m512 xv[RM];
        for (int r = 0; r < RM; ++r) xv[r] = _mm512_loadu_ps(x + r * ldx + i);
        for (int c = 0; c < NR; ++c) {
            const __m512 wv = W::load(w + c * ldw + i);
            for (int r = 0; r < RM; ++r) acc[r][c] = _mm512_fmadd_ps(xv[r], wv, acc[r][c]);
        }
    }
    if (n16 < n) {
        const __mmask16 m = static_cast<__mmask16>((1u << (n - n16)) - 1);
        __m512 xv[RM];
        for (int r = 0; r < RM; ++r) xv[r] = _mm512_maskz_loadu_ps(m, x + r * ldx + n16);
        for (int c = 0; c < NR; ++c) {
            const __m512 wv = W::load(w + c * ldw + n16, m);
            for (int r = 0; r < RM; ++r) acc[r][c] = _mm512_fmadd_ps(xv[r], wv, acc[r][c]);
        }
    }
    store_sums(acc, y, ldy);
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

// Rows of x in blocks of 6 against 4 weight rows (24 accumulators), the remainder (1-5 rows, e.g. the 5
// positions of a 4-token draft's verification) in one block, so each weight vector is widened once per
// 6 rows. A single row (decode) runs against all nr <= 8 weight rows at once, prefetching the next ones.
template <typename W>
void mm(const float *x, int64_t ldx, int64_t M, const void *wv, int64_t ldw, int64_t n, int nr, float *y,
        int64_t ldy) {
    const typename W::T *w = static_cast<const typename W::T *>(wv);
    if (M == 1) {
        switch (nr) {
            case 8: micro<W, 1, 8, true>(x, ldx, w, ldw, n, y, ldy); return;
            case 7: micro<W, 1, 7, true>(x, ldx, w, ldw, n, y, ldy); return;
            case 6: micro<W, 1, 6, true>(x, ldx, w, ldw, n, y, ldy); return;
            case 5: micro<W, 1, 5, true>(x, ldx, w, ldw, n, y, ldy); return;
            case 4: micro<W, 1, 4, true>(x, ldx, w, ldw, n, y, ldy); return;
            case 3: micro<W, 1, 3, true>(x, ldx, w, ldw, n, y, ldy); return;
            case 2: micro<W, 1, 2, true>(x, ldx, w, ldw, n, y, ldy); return;
            default: micro<W, 1, 1, true>(x, ldx, w, ldw, n, y, ldy); return;
        }
    }
    // 2-6 rows (a draft's verification): one pass over the weights, as memory-bound as decode on a large
    // model, so the next rows are prefetched as in decode (without it a 5-row verification of the 1B shape
    // cost 1.9x a single row instead of about 1.2x).
    if (M <= 6) {
        for (int c = 0; c < nr; c += 4) {
            const int nc = nr - c < 4 ? nr - c : 4;
            const typename W::T *wc = w + c * ldw;
            float *yc = y + c;
            switch (M) {
                case 6: block4<W, 6, true>(x, ldx, wc, ldw, n, nc, yc, ldy); break;
                case 5: block4<W, 5, true>(x, ldx, wc, ldw, n, nc, yc, ldy); break;
                case 4: block4<W, 4, true>(x, ldx, wc, ldw, n, nc, yc, ldy); break;
                case 3: block4<W, 3, true>(x, ldx, wc, ldw, n, nc, yc, ldy); break;
                default: block4<W, 2, true>(x, ldx, wc, ldw, n, nc, yc, ldy); break;
            }
        }
        return;
    }
    for (int c = 0; c < nr; c += 4) {
        const int nc = nr - c < 4 ? nr - c : 4;
        const typename W::T *wc = w + c * ldw;
        int64_t m = 0;
        for (; m + 6 <= M; m += 6) block4<W, 6>(x + m * ldx, ldx, wc, ldw, n, nc, y + m * ldy + c, ldy);
        const float *xr = x + m * ldx;
        float *yr = y + m * ldy + c;
        switch (M - m) {
            case 5: block4<W, 5>(xr, ldx, wc, ldw, n, nc, yr, ldy); break;
            case 4: block4<W, 4>(xr, ldx, wc, ldw, n, nc, yr, ldy); break;
            case 3: block4<W, 3>(xr, ldx, wc, ldw, n, nc, yr, ldy); break;
            case 2: block4<W, 2>(xr, ldx, wc, ldw, n, nc, yr, ldy); break;
            case 1: block4<W, 1>(xr, ldx, wc, ldw, n, nc, yr, ldy); break;
            default: break;
        }
    }
}

float dot_avx512(const float *a, const float *b, int64_t n) {
    float y;
    micro<F32, 1, 1, false>(a, 0, b, 0, n, &y, 0);
    return y;
}

// Q queries against V rows of loader W, NV vectors of 16 per row (the last one masked by `tail`): the Q * NV
// accumulators stay in registers (the sizes are compile-time so that they do) and each V vector is widened
// once for all Q. With SCALED (int8 rows) the row's scale multiplies the probability first. Each element's
// sum runs in order of s.
template <typename W, bool SCALED, int NV, int Q>
void values_q(const float *p, int64_t ldp, const typename W::T *v, int64_t ldv, const float *vs, int64_t ldvs,
              int64_t n_pos, __mmask16 tail, float *out, int64_t ldo) {
    static_assert(Q * NV + Q + 1 <= 32, "block does not fit in the 32 vector registers");
    __m512 acc[Q][NV];
#pragma GCC unroll 8
    for (int j = 0; j < Q; ++j)
#pragma GCC unroll 8
        for (int c = 0; c < NV; ++c) acc[j][c] = _mm512_maskz_loadu_ps(c + 1 < NV ? 0xffff : tail, out + j * ldo + 16 * c);
    for (int64_t s = 0; s < n_pos; ++s) {
        const typename W::T *vr = v + s * ldv;
        __m512 ps[Q];
#pragma GCC unroll 8
        for (int j = 0; j < Q; ++j) ps[j] = _mm512_set1_ps(SCALED ? p[j * ldp + s] * vs[s * ldvs] : p[j * ldp + s]);
#pragma GCC unroll 8
        for (int c = 0; c < NV; ++c) {
            const __m512 vv = W::load(vr + 16 * c, c + 1 < NV ? static_cast<__mmask16>(0xffff) : tail);
#pragma GCC unroll 8
            for (int j = 0; j < Q; ++j) acc[j][c] = _mm512_fmadd_ps(ps[j], vv, acc[j][c]);
        }
    }
#pragma GCC unroll 8
    for (int j = 0; j < Q; ++j)
#pragma GCC unroll 8
        for (int c = 0; c < NV; ++c)
            _mm512_mask_storeu_ps(out + j * ldo + 16 * c, c + 1 < NV ? 0xffff : tail, acc[j][c]);
}

// All nq queries: blocks of kQ, then pairs, then one (head groups of GQA are small: 2 for the 1B shape).
template <typename W, bool SCALED, int NV>
void values_nv(const float *p, int64_t ldp, int32_t nq, const typename W::T *v, int64_t ldv, const float *vs,
               int64_t ldvs, int64_t n_pos, __mmask16 tail, float *out, int64_t ldo) {
    constexpr int kQ = 28 / (NV + 1) < 8 ? 28 / (NV + 1) : 8;  // Q * (NV + 1) + 1 <= 32 registers
    int32_t j = 0;
    for (; j + kQ <= nq; j += kQ)
        values_q<W, SCALED, NV, kQ>(p + j * ldp, ldp, v, ldv, vs, ldvs, n_pos, tail, out + j * ldo, ldo);
    for (; j + 2 <= nq; j += 2)
        values_q<W, SCALED, NV, 2>(p + j * ldp, ldp, v, ldv, vs, ldvs, n_pos, tail, out + j * ldo, ldo);
    if (j < nq) values_q<W, SCALED, NV, 1>(p + j * ldp, ldp, v, ldv, vs, ldvs, n_pos, tail, out + j * ldo, ldo);
}

template <typename W, KvElem E>
void attn_values_avx512(const float *p, int64_t ldp, int32_t nq, const void *vv, int64_t ldv, const float *vs,
                        int64_t ldvs, int64_t n_pos, int32_t d, float *out, int64_t ldo) {
    constexpr bool S = E == kKvI8;
    const typename W::T *v = static_cast<const typename W::T *>(vv);
    const __mmask16 tail = static_cast<__mmask16>(d % 16 ? (1u << (d % 16)) - 1 : 0xffff);
    switch ((d + 15) / 16) {
        case 1: return values_nv<W, S, 1>(p, ldp, nq, v, ldv, vs, ldvs, n_pos, tail, out, ldo);
        case 2: return values_nv<W, S, 2>(p, ldp, nq, v, ldv, vs, ldvs, n_pos, tail, out, ldo);
        case 3: return values_nv<W, S, 3>(p, ldp, nq, v, ldv, vs, ldvs, n_pos, tail, out, ldo);
        case 4: return values_nv<W, S, 4>(p, ldp, nq, v, ldv, vs, ldvs, n_pos, tail, out, ldo);
        case 5: return values_nv<W, S, 5>(p, ldp, nq, v, ldv, vs, ldvs, n_pos, tail, out, ldo);
        case 6: return values_nv<W, S, 6>(p, ldp, nq, v, ldv, vs, ldvs, n_pos, tail, out, ldo);
        case 7: return values_nv<W, S, 7>(p, ldp, nq, v, ldv, vs, ldvs, n_pos, tail, out, ldo);
        case 8: return values_nv<W, S, 8>(p, ldp, nq, v, ldv, vs, ldvs, n_pos, tail, out, ldo);
        default: break;
    }
    // head_dim > 128: not a shape of this model family; the reference's order, fixed, so still invariant
    scalar().attn_values[E](p, ldp, nq, vv, ldv, vs, ldvs, n_pos, d, out, ldo);
}

// Attention scores, G queries held in registers (NV vectors of 16 each, the last masked by `tail`) against key
// rows of loader W, four rows a step: acc[j][r] gathers lane sums in order of the 16-element chunks, then hsum4,
// which is micro's sequence (mm's bits) without reloading the queries or a call per eight rows.
template <typename W, int NV, int G>
void scores_g(const float *q, int32_t d, const typename W::T *k, int64_t ldk, int64_t n, __mmask16 tail, float *s,
              int64_t lds) {
    static_assert(G * NV + 4 * G + 1 <= 32, "block does not fit in the 32 vector registers");
    __m512 qv[G][NV];
#pragma GCC unroll 8
    for (int j = 0; j < G; ++j)
#pragma GCC unroll 8
        for (int c = 0; c < NV; ++c) qv[j][c] = _mm512_maskz_loadu_ps(c + 1 < NV ? 0xffff : tail, q + j * d + 16 * c);
    int64_t t = 0;
    for (; t + 4 <= n; t += 4) {
        __m512 acc[G][4];
#pragma GCC unroll 8
        for (int j = 0; j < G; ++j)
#pragma GCC unroll 4
            for (int r = 0; r < 4; ++r) acc[j][r] = _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int c = 0; c < NV; ++c)
#pragma GCC unroll 4
            for (int r = 0; r < 4; ++r) {
                const __m512 kv = W::load(k + (t + r) * ldk + 16 * c, c + 1 < NV ? static_cast<__mmask16>(0xffff) : tail);
#pragma GCC unroll 8
                for (int j = 0; j < G; ++j) acc[j][r] = _mm512_fmadd_ps(qv[j][c], kv, acc[j][r]);
            }
#pragma GCC unroll 8
        for (int j = 0; j < G; ++j) _mm_storeu_ps(s + j * lds + t, hsum4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]));
    }
    for (; t < n; ++t) {
        __m512 acc[G];
#pragma GCC unroll 8
        for (int j = 0; j < G; ++j) acc[j] = _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int c = 0; c < NV; ++c) {
            const __m512 kv = W::load(k + t * ldk + 16 * c, c + 1 < NV ? static_cast<__mmask16>(0xffff) : tail);
#pragma GCC unroll 8
            for (int j = 0; j < G; ++j) acc[j] = _mm512_fmadd_ps(qv[j][c], kv, acc[j]);
        }
#pragma GCC unroll 8
        for (int j = 0; j < G; ++j) s[j * lds + t] = hsum(acc[j]);
    }
}

// All nq queries, in groups of as many as fit in registers with their accumulators.
template <typename W, int NV>
void scores_nv(const float *q, int32_t nq, int32_t d, const typename W::T *k, int64_t ldk, int64_t n, __mmask16 tail,
               float *s, int64_t lds) {
    constexpr int kG = 31 / (NV + 4) < 6 ? 31 / (NV + 4) : 6;
    int32_t j = 0;
    for (; j + kG <= nq; j += kG) scores_g<W, NV, kG>(q + j * d, d, k, ldk, n, tail, s + j * lds, lds);
    for (; j < nq; ++j) scores_g<W, NV, 1>(q + j * d, d, k, ldk, n, tail, s + j * lds, lds);
}

template <typename W>
void attn_scores_avx512(const float *q, int32_t nq, int32_t d, const void *kv, int64_t ldk, int64_t n, float *s,
                        int64_t lds) {
    const typename W::T *k = static_cast<const typename W::T *>(kv);
    const __mmask16 tail = static_cast<__mmask16>(d % 16 ? (1u << (d % 16)) - 1 : 0xffff);
    switch ((d + 15) / 16) {
        case 1: return scores_nv<W, 1>(q, nq, d, k, ldk, n, tail, s, lds);
        case 2: return scores_nv<W, 2>(q, nq, d, k, ldk, n, tail, s, lds);
        case 3: return scores_nv<W, 3>(q, nq, d, k, ldk, n, tail, s, lds);
        case 4: return scores_nv<W, 4>(q, nq, d, k, ldk, n, tail, s, lds);
        case 5: return scores_nv<W, 5>(q, nq, d, k, ldk, n, tail, s, lds);
        case 6: return scores_nv<W, 6>(q, nq, d, k, ldk, n, tail, s, lds);
        case 7: return scores_nv<W, 7>(q, nq, d, k, ldk, n, tail, s, lds);
        case 8: return scores_nv<W, 8>(q, nq, d, k, ldk, n, tail, s, lds);
        default: return attn_scores_by_mm<mm<W>, sizeof(typename W::T)>(q, nq, d, kv, ldk, n, s, lds);
    }
}

// exp(x) for x <= 0 (softmax shifts by the maximum; SwiGLU clamps): n = round(x / ln 2), r = x - n ln 2 in two
// parts (Cody-Waite), e^r by its degree-6 Taylor-like minimax polynomial (the classic single-precision
// coefficients, about 1 ulp), times 2^n. Below -87.3 the result is 0, as expf's is to within a denormal.
inline __m512 exp512(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.33654f);
    const __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_max_ps(lo, x);  // this operand order keeps a NaN (max returns its second operand then)
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    const __m512 e = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    return _mm512_maskz_mov_ps(static_cast<__mmask16>(~under), _mm512_scalef_ps(e, n));
}

float scale_max_avx512(float *x, int64_t n, float scale) {
    const __m512 sc = _mm512_set1_ps(scale);
    __m512 mx = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), sc);
        _mm512_storeu_ps(x + i, v);
        mx = _mm512_max_ps(mx, v);
    }
    if (i < n) {
        const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
        const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), sc);
        _mm512_mask_storeu_ps(x + i, m, v);
        mx = _mm512_mask_max_ps(mx, m, mx, v);
    }
    return _mm512_reduce_max_ps(mx);
}

float exp_sum_avx512(float *x, int64_t n, float shift) {
    const __m512 sh = _mm512_set1_ps(shift);
    __m512 sum = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), sh));
        _mm512_storeu_ps(x + i, e);
        sum = _mm512_add_ps(sum, e);
    }
    if (i < n) {
        const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
        const __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), sh)));
        _mm512_mask_storeu_ps(x + i, m, e);
        sum = _mm512_add_ps(sum, e);
    }
    return hsum(sum);
}

// silu(g) = g / (1 + e^-g): e^-|g| never overflows, and for g < 0, e^-g = 1 / e^g.
void swiglu_avx512(float *g, const float *u, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - i)) - 1);
        const __m512 gv = _mm512_maskz_loadu_ps(m, g + i), uv = _mm512_maskz_loadu_ps(m, u + i);
        const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(gv)));  // e^-|g|
        const __mmask16 neg = _mm512_cmp_ps_mask(gv, _mm512_setzero_ps(), _CMP_LT_OQ);
        // sigmoid(g) = 1 / (1 + e^-g) for g >= 0, e^g / (1 + e^g) for g < 0
        const __m512 d = _mm512_div_ps(one, _mm512_add_ps(one, e));
        const __m512 sig = _mm512_mask_mul_ps(d, neg, e, d);
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(_mm512_mul_ps(gv, sig), uv));
    }
}

// The four variants: with AVX512-BF16 (Zen 4 and later, Cooper Lake, Sapphire Rapids), W8A16 products by
// bf16 dot products; with AVX512-VNNI (Cascade Lake and later, Zen 4), the integer kernels by vpdpbusd,
// otherwise the AVX2 table's (Skylake-SP).
constexpr Table variant(bool bf16, bool vnni) {
    return {"avx512",
            mm<F32>,
            mm<BF16>,
            mm<F16>,
            mm<I8>,
            dot_avx512,
            {attn_values_avx512<F32, kKvF32>, attn_values_avx512<F16, kKvF16>, attn_values_avx512<BF16, kKvBF16>,
             attn_values_avx512<I8, kKvI8>},
            {attn_scores_avx512<F32>, attn_scores_avx512<F16>, attn_scores_avx512<BF16>, attn_scores_avx512<I8>},
            scale_max_avx512,
            exp_sum_avx512,
            swiglu_avx512,
            bf16 ? pack_bx_avx512bf16 : nullptr,
            bf16 ? mm_i8_bx_avx512bf16 : nullptr,
            vnni ? quant_rows_avx512vnni : quant_rows_avx2,
            vnni ? mm_q8_avx512vnni : mm_q8_avx2,
            vnni ? mm_q4_avx512vnni : mm_q4_avx2,
            vnni ? mm_qb_avx512vnni : mm_qb_avx2};
}
const Table kAvx512[2][2] = {{variant(false, false), variant(false, true)},
                             {variant(true, false), variant(true, true)}};

struct Features {
    bool ok, bf16, vnni;
};

const Features &features() {
    static const Features f = [] {
        const auto cpuid7 = [](unsigned sub, int reg, unsigned bit) {
            unsigned r[4] = {0, 0, 0, 0};
            return __get_cpuid_count(7, sub, &r[0], &r[1], &r[2], &r[3]) && (r[reg] & (1u << bit));
        };
        const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl");
        // By number (compilers differ in the names __builtin_cpu_supports knows): CPUID leaf 7 sub-leaf 1, EAX
        // bit 5: AVX512_BF16; sub-leaf 0, ECX bit 11: AVX512_VNNI.
        return Features{ok, ok && cpuid7(1, 0, 5), ok && cpuid7(0, 2, 11)};
    }();
    return f;
}

}  // namespace

const Table *avx512() {
    const Features &f = features();
    return f.ok ? &kAvx512[f.bf16][f.vnni] : nullptr;
}

const Table *avx512_novnni() {
    const Features &f = features();
    return f.ok ? &kAvx512[f.bf16][0] : nullptr;
}

}  // namespace kernels
}  // namespace pangu

#pragma GCC diagnostic pop
