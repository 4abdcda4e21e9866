// Integer kernels with AVX512-VNNI (vpdpbusd): W8A8 and W4A8 products, and the dynamic quantization of the
// activation rows. Compiled with -mavx512vnni on its own; the AVX-512 table uses these only on CPUs that
// report the extension (kernels_avx512.cpp).
//
// vpdpbusd multiplies 64 unsigned bytes by 64 signed bytes and adds each group of 4 products into one of 16
// int32 lanes. Neither operand of a product is unsigned as it stands, so one is made so:
// - mm_q8: x ^ 0x80 is x + 128 as an unsigned byte; sum (x + 128) * w = sum x * w + 128 * sum w, and sum w
//   comes from vpdpbusd with a vector of ones, once per weight vector for all rows of the block.
// - mm_q4: the nibbles v are unsigned (0-15), x the signed operand; sum (v - 8) * x = sum v * x - 8 * sum x,
//   with 8 * sum x from vpdpbusd of a vector of eights, once per row of x, lane by lane.
// Integer sums are exact, so mm_q8 gives the scalar reference's int32 whatever the order or blocking. mm_q4's
// fp32 order: each lane's int32 sum of its columns of a group (exact) is converted, exactly (below 2^24 for
// the largest group, 4096 columns), and multiplied by the group's scale into the lane's fp32 sum by one FMA,
// group after group (a lane's half of a 128-column step belongs to one group; with groups of 32, a lane adds
// two groups per step, the low nibbles' first); the 16 lane sums are reduced as in kernels.h. The same for
// every blocking.
//
// GCC 12's avx512fintrin.h initializes its "undefined" vectors from themselves (GCC bug 105593), see
// kernels_avx512.cpp.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "device/cpu/kernels.h"
#include "device/cpu/kernels_avx2_int.h"
#include "device/cpu/kernels_avx512_tree.h"

namespace pangu {
namespace kernels {

namespace {

// ---- quant_rows ----

inline __mmask16 mask16(int64_t left) {
    return left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1);
}

// One row of quant_rows (kernels.h). The largest |x| as an integer: the bits of non-negative floats order as
// their values, and Inf and NaN (exponent all ones) lie above every finite value, so one maximum gives both
// amax and whether the row is finite.
void quant_row(const float *x, int64_t n, int8_t *q, int64_t ldq, float *scale) {
    const __m512i abs = _mm512_set1_epi32(0x7fffffff);
    __m512i mx = _mm512_setzero_si512();
    for (int64_t i = 0; i < n; i += 16)
        mx = _mm512_max_epu32(mx, _mm512_and_si512(_mm512_maskz_loadu_epi32(mask16(n - i), x + i), abs));
    std::memset(q, 0, static_cast<size_t>(ldq));
    const float r = row_quant_scale(static_cast<uint32_t>(_mm512_reduce_max_epu32(mx)), 127.0f, scale);
    if (r == 0.0f) return;
    // x * inv rounded to nearest even (the MXCSR's mode, nearbyintf's), then its low byte, as the cast takes it
    const __m512 inv = _mm512_set1_ps(r);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = mask16(n - i);
        const __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), inv));
        _mm_mask_storeu_epi8(q + i, k, _mm512_cvtepi32_epi8(v));
    }
}

// ---- reductions of int32 lanes (exact: any order) ----

inline int32_t hsum_i(__m512i v) { return _mm512_reduce_add_epi32(v); }

// [hsum(a), hsum(b), hsum(c), hsum(d)], as hsum4 of kernels_avx512_tree.h.
inline __m128i hsum4_i(__m512i a, __m512i b, __m512i c, __m512i d) {
    const __m512i ab = _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, 0x44), _mm512_shuffle_i32x4(a, b, 0xEE));
    const __m512i cd = _mm512_add_epi32(_mm512_shuffle_i32x4(c, d, 0x44), _mm512_shuffle_i32x4(c, d, 0xEE));
    __m512i z = _mm512_add_epi32(_mm512_shuffle_i32x4(ab, cd, 0x88), _mm512_shuffle_i32x4(ab, cd, 0xDD));
    z = _mm512_add_epi32(z, _mm512_shuffle_epi32(z, _MM_PERM_BADC));
    z = _mm512_add_epi32(z, _mm512_shuffle_epi32(z, _MM_PERM_CDAB));  // sums in lanes 0, 4, 8, 12
    return _mm512_castsi512_si128(
        _mm512_permutexvar_epi32(_mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0), z));
}

// ---- mm_q8 ----

// RM rows of x against NR weight rows, 64 columns a step: RM * NR sums of (x + 128) * w and NR sums of w in
// registers (RM * NR + NR + RM + 3 <= 32). The weights' tail is loaded with a mask; x's zero pad multiplies
// those zeros. With PF, the NR rows after the block are prefetched a line at a time (decode, as micro<1, NR,
// true> of kernels_avx512.cpp), into L2 (T1): a prefetch into L1 holds one of its few fill buffers until the
// line arrives, so fewer lines are in flight (1B shape, one thread, runs alternated with membw's: W8A8 decode
// at 93-101 % of the floor with T0, 102-104 % with T1; W4A8 87-107 % and 95-106 %).
template <int RM, int NR, bool PF>
inline void q8_micro(const int8_t *x, int64_t ldx, const int8_t *w, int64_t ldw, int64_t n, int32_t *y, int64_t ldy) {
    static_assert(RM * NR + NR + RM + 3 <= 32, "block does not fit in the 32 vector registers");
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80)), ones = _mm512_set1_epi8(1);
    __m512i acc[RM][NR], sw[NR];
#pragma GCC unroll 8
    for (int c = 0; c < NR; ++c) {
        sw[c] = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int r = 0; r < RM; ++r) acc[r][c] = _mm512_setzero_si512();
    }
    for (int64_t i = 0; i < n; i += 64) {
        // every step's weights through a mask, the last partial one's included: an unmasked load was folded
        // into both of its vpdpbusd as a memory operand, two loads for one, and decode from L2 ran 12 % slower
        const __mmask64 k = n - i >= 64 ? ~__mmask64(0) : (__mmask64(1) << (n - i)) - 1;
        if (PF)
#pragma GCC unroll 8
            for (int c = 0; c < NR; ++c)
                _mm_prefetch(reinterpret_cast<const char *>(w + (NR + c) * ldw + i), _MM_HINT_T1);
        __m512i xu[RM];
#pragma GCC unroll 8
        for (int r = 0; r < RM; ++r) xu[r] = _mm512_xor_si512(_mm512_loadu_si512(x + r * ldx + i), flip);
#pragma GCC unroll 8
        for (int c = 0; c < NR; ++c) {
            const __m512i wv = _mm512_maskz_loadu_epi8(k, w + c * ldw + i);
            sw[c] = _mm512_dpbusd_epi32(sw[c], ones, wv);
#pragma GCC unroll 8
            for (int r = 0; r < RM; ++r) acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], xu[r], wv);
        }
    }
#pragma GCC unroll 8
    for (int c = 0; c < NR; ++c) {
        const __m512i corr = _mm512_slli_epi32(sw[c], 7);
#pragma GCC unroll 8
        for (int r = 0; r < RM; ++r) acc[r][c] = _mm512_sub_epi32(acc[r][c], corr);
    }
#pragma GCC unroll 8
    for (int r = 0; r < RM; ++r) {
        int c = 0;
#pragma GCC unroll 8
        for (; c + 4 <= NR; c += 4)
            _mm_storeu_si128(reinterpret_cast<__m128i *>(y + r * ldy + c),
                             hsum4_i(acc[r][c], acc[r][c + 1], acc[r][c + 2], acc[r][c + 3]));
#pragma GCC unroll 8
        for (; c < NR; ++c) y[r * ldy + c] = hsum_i(acc[r][c]);
    }
}

template <int RM, bool PF>
inline void q8_block4(const int8_t *x, int64_t ldx, const int8_t *w, int64_t ldw, int64_t n, int nr, int32_t *y,
                      int64_t ldy) {
    switch (nr) {
        case 4: q8_micro<RM, 4, PF>(x, ldx, w, ldw, n, y, ldy); break;
        case 3: q8_micro<RM, 3, PF>(x, ldx, w, ldw, n, y, ldy); break;
        case 2: q8_micro<RM, 2, PF>(x, ldx, w, ldw, n, y, ldy); break;
        default: q8_micro<RM, 1, PF>(x, ldx, w, ldw, n, y, ldy); break;
    }
}

// ---- mm_q4 ----

// A step is 128 columns, runs R and R + 1 of 64; its vectors after unpacking (q4_step): lo = [run R's columns
// 0-31 | run R+1's 0-31], hi = [32-63 | 32-63], each half of a vector 32 columns of one group. Kinds of group:
// 32 (lo and hi each hold two groups: 32-column blocks 4t, 4t+2 and 4t+1, 4t+3), 64 (one group per run: lo
// and hi share scales, their sums are added first), a multiple of 128 (one group per step or more: the int32
// sums accumulate over the group's steps). The other multiples of 32 (96, 192, ...) straddle the halves
// unevenly: those go to the 256-bit loop of kernels_avx2_int.h, one group unit of 32 columns at a time.
enum class G { k32, k64, k128 };

inline __m512 pair_ps(const float *s, int64_t a, int64_t b) {
    return _mm512_mask_mov_ps(_mm512_set1_ps(s[a]), 0xff00, _mm512_set1_ps(s[b]));
}

// One step of RM rows against NR weight rows: 64 bytes of each weight row (two runs; HALF: the last run
// alone, 32 bytes), 128 columns of each row of x. k32 and k64 add their groups into acc (the second run of a
// half step clamped to the last group: its lanes, zero, leave the sums unchanged); k128 adds the int32 sums
// into isum.
template <int RM, int NR, G K, bool HALF>
inline void q4_step(const int8_t *x, int64_t ldx, const uint8_t *w, int64_t ldw, const float *s, int64_t lds, int64_t i,
                    int64_t last, __m512 (&acc)[RM][NR], __m512i (&isum)[RM][NR]) {
    const __m512i low4 = _mm512_set1_epi8(0x0f), eight = _mm512_set1_epi8(8);
    __m512i xlo[RM], xhi[RM], clo[RM], chi[RM];
#pragma GCC unroll 8
    for (int r = 0; r < RM; ++r) {
        const __m512i a = _mm512_loadu_si512(x + r * ldx + i);
        const __m512i b = HALF ? _mm512_setzero_si512() : _mm512_loadu_si512(x + r * ldx + i + 64);
        xlo[r] = _mm512_shuffle_i64x2(a, b, 0x44);  // columns 0-31 | 64-95
        xhi[r] = _mm512_shuffle_i64x2(a, b, 0xEE);  // columns 32-63 | 96-127
        // -8 * sum x, lane by lane: the sums start from it
        clo[r] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), eight, xlo[r]));
        chi[r] = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), eight, xhi[r]));
        if (K != G::k32) clo[r] = _mm512_add_epi32(clo[r], chi[r]);
    }
    const auto clamp = [last](int64_t g) { return g < last ? g : last; };
#pragma GCC unroll 8
    for (int c = 0; c < NR; ++c) {
        const uint8_t *wc = w + c * ldw + i / 2;
        const __m512i b = HALF ? _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(wc)))
                               : _mm512_loadu_si512(wc);
        const __m512i lo = _mm512_and_si512(b, low4), hi = _mm512_and_si512(_mm512_srli_epi16(b, 4), low4);
        const float *sc = s + c * lds;
        if (K == G::k32) {
            const __m512 slo = pair_ps(sc, i / 32, clamp(i / 32 + 2)), shi = pair_ps(sc, i / 32 + 1, clamp(i / 32 + 3));
#pragma GCC unroll 8
            for (int r = 0; r < RM; ++r) {
                acc[r][c] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(clo[r], lo, xlo[r])), slo, acc[r][c]);
                acc[r][c] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(chi[r], hi, xhi[r])), shi, acc[r][c]);
            }
        } else if (K == G::k64) {
            const __m512 sv = pair_ps(sc, i / 64, clamp(i / 64 + 1));
#pragma GCC unroll 8
            for (int r = 0; r < RM; ++r) {
                const __m512i t = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(clo[r], lo, xlo[r]), hi, xhi[r]);
                acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), sv, acc[r][c]);
            }
        } else {
#pragma GCC unroll 8
            for (int r = 0; r < RM; ++r)
                isum[r][c] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_add_epi32(isum[r][c], clo[r]), lo, xlo[r]),
                                                 hi, xhi[r]);
        }
    }
}

// k128: the int32 sums of group g, complete, into the fp32 sums.
template <int RM, int NR>
inline void q4_flush(const float *s, int64_t lds, int64_t g, __m512 (&acc)[RM][NR], __m512i (&isum)[RM][NR]) {
#pragma GCC unroll 8
    for (int c = 0; c < NR; ++c) {
        const __m512 sv = _mm512_set1_ps(s[c * lds + g]);
#pragma GCC unroll 8
        for (int r = 0; r < RM; ++r) {
            acc[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r][c]), sv, acc[r][c]);
            isum[r][c] = _mm512_setzero_si512();
        }
    }
}

// RM rows of x against NR weight rows (PGD_I4, ldw bytes apart); PF as in q8_micro. k128's steps are counted
// down per group (no division).
template <int RM, int NR, bool PF, G K>
inline void q4_micro(const int8_t *x, int64_t ldx, const uint8_t *w, int64_t ldw, const float *s, int64_t lds,
                     int64_t n, int group, float *y, int64_t ldy) {
    __m512 acc[RM][NR];
    __m512i isum[RM][NR];
#pragma GCC unroll 8
    for (int r = 0; r < RM; ++r)
#pragma GCC unroll 8
        for (int c = 0; c < NR; ++c) acc[r][c] = _mm512_setzero_ps(), isum[r][c] = _mm512_setzero_si512();
    const int64_t n128 = n - n % 128, last = n / group - 1, steps = group / 128;
    int64_t left = steps, g = 0;
    for (int64_t i = 0; i < n128; i += 128) {
        if (PF)
#pragma GCC unroll 8
            for (int c = 0; c < NR; ++c)
                _mm_prefetch(reinterpret_cast<const char *>(w + (NR + c) * ldw + i / 2), _MM_HINT_T1);
        q4_step<RM, NR, K, false>(x, ldx, w, ldw, s, lds, i, last, acc, isum);
        if (K == G::k128 && --left == 0) q4_flush(s, lds, g++, acc, isum), left = steps;
    }
    if (n128 < n) q4_step<RM, NR, K, true>(x, ldx, w, ldw, s, lds, n128, last, acc, isum);  // not k128
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

template <int RM, bool PF, G K>
inline void q4_block4(const int8_t *x, int64_t ldx, const uint8_t *w, int64_t ldw, const float *s, int64_t lds,
                      int64_t n, int group, int nr, float *y, int64_t ldy) {
    switch (nr) {
        case 4: return q4_micro<RM, 4, PF, K>(x, ldx, w, ldw, s, lds, n, group, y, ldy);
        case 3: return q4_micro<RM, 3, PF, K>(x, ldx, w, ldw, s, lds, n, group, y, ldy);
        case 2: return q4_micro<RM, 2, PF, K>(x, ldx, w, ldw, s, lds, n, group, y, ldy);
        default: return q4_micro<RM, 1, PF, K>(x, ldx, w, ldw, s, lds, n, group, y, ldy);
    }
}

// M rows against nr <= 8 weight rows for one kind of group: a single row against all nr (decode, with
// prefetch), otherwise blocks of up to 2 rows x 4 weight rows (the fp32 and int32 sums of 8 pairs, the rows of
// x unpacked, in registers), the first block of a small batch with prefetch (a draft's verification streams
// the weights as decode does).
template <G K>
void q4_mm(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s, int64_t lds,
           int64_t n, int group, int nr, float *y, int64_t ldy) {
    if (M == 1) {
        switch (nr) {
            case 8: return q4_micro<1, 8, true, K>(x, ldx, w, ldw, s, lds, n, group, y, ldy);
            case 7: return q4_micro<1, 7, true, K>(x, ldx, w, ldw, s, lds, n, group, y, ldy);
            case 6: return q4_micro<1, 6, true, K>(x, ldx, w, ldw, s, lds, n, group, y, ldy);
            case 5: return q4_micro<1, 5, true, K>(x, ldx, w, ldw, s, lds, n, group, y, ldy);
            default: return q4_block4<1, true, K>(x, ldx, w, ldw, s, lds, n, group, nr, y, ldy);
        }
    }
    for (int c = 0; c < nr; c += 4) {
        const int nc = nr - c < 4 ? nr - c : 4;
        const uint8_t *wc = w + c * ldw;
        const float *sc = s + c * lds;
        for (int64_t m = 0; m < M; m += 2) {
            const int8_t *xm = x + m * ldx;
            float *ym = y + m * ldy + c;
            if (M - m < 2) q4_block4<1, false, K>(xm, ldx, wc, ldw, sc, lds, n, group, nc, ym, ldy);
            else if (M <= kSmallBatch && m == 0)
                q4_block4<2, true, K>(xm, ldx, wc, ldw, sc, lds, n, group, nc, ym, ldy);
            else q4_block4<2, false, K>(xm, ldx, wc, ldw, sc, lds, n, group, nc, ym, ldy);
        }
    }
}

// 1-4 rows against 1-4 weight rows; pf as PF of q8_micro.
inline void q8_rows(const int8_t *x, int64_t ldx, int64_t rm, const int8_t *w, int64_t ldw, int64_t n, int nr,
                    int32_t *y, int64_t ldy, bool pf) {
    switch (rm * 2 + pf) {
        case 9: return q8_block4<4, true>(x, ldx, w, ldw, n, nr, y, ldy);
        case 8: return q8_block4<4, false>(x, ldx, w, ldw, n, nr, y, ldy);
        case 7: return q8_block4<3, true>(x, ldx, w, ldw, n, nr, y, ldy);
        case 6: return q8_block4<3, false>(x, ldx, w, ldw, n, nr, y, ldy);
        case 5: return q8_block4<2, true>(x, ldx, w, ldw, n, nr, y, ldy);
        case 4: return q8_block4<2, false>(x, ldx, w, ldw, n, nr, y, ldy);
        default: return q8_block4<1, false>(x, ldx, w, ldw, n, nr, y, ldy);
    }
}

}  // namespace

void quant_rows_avx512vnni(const float *x, int64_t ldx, int64_t M, int64_t n, int8_t *q, int64_t ldq, float *scale) {
    for (int64_t m = 0; m < M; ++m) quant_row(x + m * ldx, n, q + m * ldq, ldq, scale + m);
}

// One or two rows (decode; two: an int16 row's digits, quant_rows16) against all nr <= 8 weight rows.
template <int RM>
inline void q8_decode(const int8_t *x, int64_t ldx, const int8_t *w, int64_t ldw, int64_t n, int nr, int32_t *y,
                      int64_t ldy) {
    switch (nr) {
        case 8: return q8_micro<RM, 8, true>(x, ldx, w, ldw, n, y, ldy);
        case 7: return q8_micro<RM, 7, true>(x, ldx, w, ldw, n, y, ldy);
        case 6: return q8_micro<RM, 6, true>(x, ldx, w, ldw, n, y, ldy);
        case 5: return q8_micro<RM, 5, true>(x, ldx, w, ldw, n, y, ldy);
        case 4: return q8_micro<RM, 4, true>(x, ldx, w, ldw, n, y, ldy);
        case 3: return q8_micro<RM, 3, true>(x, ldx, w, ldw, n, y, ldy);
        case 2: return q8_micro<RM, 2, true>(x, ldx, w, ldw, n, y, ldy);
        default: return q8_micro<RM, 1, true>(x, ldx, w, ldw, n, y, ldy);
    }
}

// One or two rows against up to 8 weight rows with prefetch (decode); otherwise blocks of up to 4 rows x 4
// weight rows, the first block of a small batch (a draft's verification, kSmallBatch) with prefetch.
void mm_q8_avx512vnni(const int8_t *x, int64_t ldx, int64_t M, const int8_t *w, int64_t ldw, int64_t n, int nr,
                      int32_t *y, int64_t ldy) {
    if (M <= 2)
        return M == 1 ? q8_decode<1>(x, ldx, w, ldw, n, nr, y, ldy) : q8_decode<2>(x, ldx, w, ldw, n, nr, y, ldy);
    for (int c = 0; c < nr; c += 4) {
        const int nc = nr - c < 4 ? nr - c : 4;
        for (int64_t m = 0; m < M; m += 4)
            q8_rows(x + m * ldx, ldx, M - m < 4 ? M - m : 4, w + c * ldw, ldw, n, nc, y + m * ldy + c, ldy,
                    M <= kSmallBatch && m == 0);
    }
}

void mm_q4_avx512vnni(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s,
                      int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy) {
    if (group == 32) return q4_mm<G::k32>(x, ldx, M, w, ldw, s, lds, n, group, nr, y, ldy);
    if (group == 64) return q4_mm<G::k64>(x, ldx, M, w, ldw, s, lds, n, group, nr, y, ldy);
    if (group % 128 == 0) return q4_mm<G::k128>(x, ldx, M, w, ldw, s, lds, n, group, nr, y, ldy);
    mm_q4<Vnni256>(x, ldx, M, w, ldw, s, lds, n, group, nr, y, ldy);  // 96, 192, ...: kernels_avx2_int.h
}

}  // namespace kernels
}  // namespace pangu

#pragma GCC diagnostic pop
