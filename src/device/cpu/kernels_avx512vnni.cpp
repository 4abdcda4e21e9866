// Integer kernels with AVX512-VNNI (vpdpbusd): W8A8, W4A8 and low-bit (PGD_QB) products, and the dynamic
// quantization of the activation rows. Compiled with -mavx512vnni on its own; the AVX-512 table uses these only on CPUs
// that report the extension (kernels_avx512.cpp).
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
// - mm_qb: the levels u (0 to 255) are unsigned as they are, and the zero point's term zp * sum x is taken
//   per group and weight row from lane sums of x (vpdpbusd with ones, once per row of x). Its fp32 order is
//   mm_q4's, with a 64-column step (see qb_micro).
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
    store_sums(acc, y, ldy);
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

// ---- mm_qb ----

// The levels of a run of 64 columns of a PGD_QB row of B bits (device.h), levels(p), as one vector in column
// order (byte j: column j), so that x's columns need no rearranging and every width costs one vpdpbusd per row
// of x. A plane is broadcast to each 128- or 256-bit part of the vector, the part's columns in its own bits.
// 2 and 4 bits are only masked, not shifted down: part k's levels stay multiplied by a power of two, kScale
// (scale()'s bytes; 2 bits: 1, 4, 16, 64; 4 bits: 1, 1, 16, 16), which x's lane sums take too (vpdpbusd with
// scale() for ones) and the fp32 lane sums carry until unscale() at the end. Scaling by a power of two changes
// no rounding, so the bits are those of levels shifted down, without the variable shift (vpsrlvw) on the port
// vpdpbusd needs, where these widths, the fewest bytes per run, have the least time. 3 and 6 bits shift (a
// level's parts cannot all stay in place in one byte); the 1-bit plane is a mask of the columns with bit 2.
template <int B>
struct Qb;

template <>
struct Qb<8> {
    static constexpr bool kScaled = false;
    static __m512i levels(const uint8_t *p) { return _mm512_loadu_si512(p); }
    static __m512i scale() { return _mm512_set1_epi8(1); }
};

template <>
struct Qb<4> {  // columns 32-63 in the high nibbles: 16 u
    static constexpr bool kScaled = true;
    static __m512i levels(const uint8_t *p) {
        const __m512i b = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
        const int64_t lo = 0x0f0f0f0f0f0f0f0f, hi = static_cast<int64_t>(0xf0f0f0f0f0f0f0f0);
        return _mm512_and_si512(b, _mm512_set_epi64(hi, hi, hi, hi, lo, lo, lo, lo));
    }
    static __m512i scale() {
        const int64_t a = 0x0101010101010101, b = 0x1010101010101010;
        return _mm512_set_epi64(b, b, b, b, a, a, a, a);
    }
    static __m512 unscale() {
        const float a = 1, b = 1.0f / 16;
        return _mm512_set_ps(b, b, b, b, b, b, b, b, a, a, a, a, a, a, a, a);
    }
};

template <>
struct Qb<2> {  // columns 16k.. in bits 2k, 2k + 1: 4^k u
    static constexpr bool kScaled = true;
    static __m512i levels(const uint8_t *p) {
        const __m512i b = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
        const int64_t m0 = 0x0303030303030303, m1 = 0x0c0c0c0c0c0c0c0c, m2 = 0x3030303030303030,
                      m3 = static_cast<int64_t>(0xc0c0c0c0c0c0c0c0);
        return _mm512_and_si512(b, _mm512_set_epi64(m3, m3, m2, m2, m1, m1, m0, m0));
    }
    static __m512i scale() {
        const int64_t a = 0x0101010101010101, b = 0x0404040404040404, c = 0x1010101010101010, d = 0x4040404040404040;
        return _mm512_set_epi64(d, d, c, c, b, b, a, a);
    }
    static __m512 unscale() {
        const float a = 1, b = 1.0f / 4, c = 1.0f / 16, d = 1.0f / 64;
        return _mm512_set_ps(d, d, d, d, c, c, c, c, b, b, b, b, a, a, a, a);
    }
};

// The 2- and 4-bit planes' levels shifted down (vpsrlvw: each part of the vector by its own count).
inline __m512i levels2_down(const uint8_t *p) {
    const __m512i b = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
    const int64_t s1 = 0x0002000200020002, s2 = 0x0004000400040004, s3 = 0x0006000600060006;
    return _mm512_and_si512(_mm512_srlv_epi16(b, _mm512_set_epi64(s3, s3, s2, s2, s1, s1, 0, 0)),
                            _mm512_set1_epi8(0x03));
}

inline __m512i levels4_down(const uint8_t *p) {
    const __m512i b = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
    const int64_t s = 0x0004000400040004;
    return _mm512_and_si512(_mm512_srlv_epi16(b, _mm512_set_epi64(s, s, s, s, 0, 0, 0, 0)), _mm512_set1_epi8(0x0f));
}

template <>
struct Qb<3> {  // [2][1]: bit 2 added where the 1-bit plane's mask is set
    static constexpr bool kScaled = false;
    static __m512i levels(const uint8_t *p) {
        uint64_t bit2;
        std::memcpy(&bit2, p + 16, 8);
        const __m512i lo = levels2_down(p);
        return _mm512_mask_add_epi8(lo, _cvtu64_mask64(bit2), lo, _mm512_set1_epi8(4));
    }
    static __m512i scale() { return _mm512_set1_epi8(1); }
};

template <>
struct Qb<6> {  // [4][2]: lo4 | hi2 << 4
    static constexpr bool kScaled = false;
    static __m512i levels(const uint8_t *p) {
        return _mm512_or_si512(levels4_down(p), _mm512_slli_epi16(levels2_down(p + 32), 4));
    }
    static __m512i scale() { return _mm512_set1_epi8(1); }
};

// Bytes as floats by table: a zero point's conversion instruction would take a vector port.
struct ByteFloats {
    float v[256];
    constexpr ByteFloats() : v() {
        for (int i = 0; i < 256; ++i) v[i] = static_cast<float>(i);
    }
};
constexpr ByteFloats kByteFloat{};

// Kinds of group (as mm_q4's G): 32 columns (a run's halves, lanes 0-7 and 8-15, hold two groups), or a multiple
// of 64 (one group in all lanes, one run or more). The other multiples of 32 go to kernels_avx2_int.h's loop.
enum class QG { k32, k64 };

// One run (64 columns, from column i) of RM rows of x against NR weight rows: x's lane sums (times kScale) into
// xs, those of x * level into isum; PF as in q8_micro, a line of the next rows when a run starts in a new line.
template <int B, int RM, int NR, bool PF>
inline void qb_run(const int8_t *x, int64_t ldx, const uint8_t *w, int64_t ldw, int64_t i, __m512i (&isum)[RM][NR],
                   __m512i (&xs)[RM]) {
    using Q = Qb<B>;
    const int64_t off = (i >> 3) * B;  // the run's first byte in a row
    if (PF && off % 64 < 8 * B)
#pragma GCC unroll 8
        for (int c = 0; c < NR; ++c)
            _mm_prefetch(reinterpret_cast<const char *>(w + (NR + c) * ldw + off), _MM_HINT_T1);
    __m512i xv[RM];
#pragma GCC unroll 8
    for (int r = 0; r < RM; ++r) {
        xv[r] = _mm512_loadu_si512(x + r * ldx + i);
        xs[r] = _mm512_dpbusd_epi32(xs[r], Q::scale(), xv[r]);
    }
#pragma GCC unroll 8
    for (int c = 0; c < NR; ++c) {
        const __m512i u = Q::levels(w + c * ldw + off);
#pragma GCC unroll 8
        for (int r = 0; r < RM; ++r) isum[r][c] = _mm512_dpbusd_epi32(isum[r][c], u, xv[r]);
    }
}

// The groups g (lanes 0-7) and g + 1 (lanes 8-15; k32) or g (k64) complete: each lane's share of its group,
// isum - zp * xsum over its columns (times kScale), into the lane's fp32 sum times the group's scale. The
// integer is computed in fp32, exactly: x's lane sums converted (exact) and zp * xsum taken from the converted
// isum by one FMA, whose product is exact and whose one rounding is of an integer below 2^24 in magnitude for
// groups up to 4096 columns (a lane holds at most 256 of a group: 256 * 128 * 255 < 2^24, kScale included), so
// it rounds nothing; the zero point comes from a table. In int32 the product would be vpmulld, two instructions
// on vpdpbusd's port.
template <int B, int RM, int NR, QG K>
inline void qb_flush(const float *s, const uint8_t *z, int64_t lds, int64_t g, __m512 (&acc)[RM][NR],
                     const __m512i (&isum)[RM][NR], const __m512i (&xs)[RM]) {
    const auto lanes = [](float a, float b) {
        return K == QG::k64 ? _mm512_set1_ps(a) : _mm512_mask_mov_ps(_mm512_set1_ps(a), 0xff00, _mm512_set1_ps(b));
    };
    const int64_t g1 = K == QG::k32 ? g + 1 : g;
    __m512 xf[RM];
#pragma GCC unroll 8
    for (int r = 0; r < RM; ++r) xf[r] = _mm512_cvtepi32_ps(xs[r]);
#pragma GCC unroll 8
    for (int c = 0; c < NR; ++c) {
        const float *sc = s + c * lds;
        const uint8_t *zc = z ? z + c * lds : nullptr;
        const __m512 sv = lanes(sc[g], sc[g1]);
        const __m512 zv =
            zc ? lanes(kByteFloat.v[zc[g]], kByteFloat.v[zc[g1]]) : _mm512_set1_ps(static_cast<float>(1 << (B - 1)));
#pragma GCC unroll 8
        for (int r = 0; r < RM; ++r) {
            const __m512 t = _mm512_fnmadd_ps(zv, xf[r], _mm512_cvtepi32_ps(isum[r][c]));
            acc[r][c] = _mm512_fmadd_ps(t, sv, acc[r][c]);
        }
    }
}

// RM rows of x against NR weight rows of B bits, run by run, group by group. The fp32 order: each lane adds its
// groups' shares in order, one FMA each; the 16 lane sums (unscaled) are reduced as in kernels.h
// (kernels_avx512_tree.h). The same for every blocking. The int32 sums start again after each flush: carried
// through one, GCC moved each between two registers every run.
template <int B, int RM, int NR, bool PF, QG K>
inline void qb_micro(const int8_t *x, int64_t ldx, const uint8_t *w, int64_t ldw, const float *s, const uint8_t *z,
                     int64_t lds, int64_t n, int group, float *y, int64_t ldy) {
    __m512 acc[RM][NR];
#pragma GCC unroll 8
    for (int r = 0; r < RM; ++r)
#pragma GCC unroll 8
        for (int c = 0; c < NR; ++c) acc[r][c] = _mm512_setzero_ps();
    __m512i isum[RM][NR], xs[RM];
    const auto start = [&] {
#pragma GCC unroll 8
        for (int r = 0; r < RM; ++r) {
            xs[r] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int c = 0; c < NR; ++c) isum[r][c] = _mm512_setzero_si512();
        }
    };
    start();
    const int64_t runs = K == QG::k32 ? 1 : group / 64;  // runs between flushes
    int64_t left = runs, g = 0;
    for (int64_t i = 0; i < n; i += 64) {
        qb_run<B, RM, NR, PF>(x, ldx, w, ldw, i, isum, xs);
        if (--left > 0) continue;
        qb_flush<B, RM, NR, K>(s, z, lds, g, acc, isum, xs);
        start();
        left = runs, g += K == QG::k32 ? 2 : 1;
    }
    if constexpr (Qb<B>::kScaled)
#pragma GCC unroll 8
        for (int r = 0; r < RM; ++r)
#pragma GCC unroll 8
            for (int c = 0; c < NR; ++c) acc[r][c] = _mm512_mul_ps(acc[r][c], Qb<B>::unscale());
    store_sums(acc, y, ldy);
}

template <int B, int RM, bool PF, QG K>
inline void qb_block4(const int8_t *x, int64_t ldx, const uint8_t *w, int64_t ldw, const float *s, const uint8_t *z,
                      int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy) {
    switch (nr) {
        case 4: return qb_micro<B, RM, 4, PF, K>(x, ldx, w, ldw, s, z, lds, n, group, y, ldy);
        case 3: return qb_micro<B, RM, 3, PF, K>(x, ldx, w, ldw, s, z, lds, n, group, y, ldy);
        case 2: return qb_micro<B, RM, 2, PF, K>(x, ldx, w, ldw, s, z, lds, n, group, y, ldy);
        default: return qb_micro<B, RM, 1, PF, K>(x, ldx, w, ldw, s, z, lds, n, group, y, ldy);
    }
}

// Blocks of up to 2 rows x 4 weight rows (the fp32 and int32 sums of 8 pairs in registers), a single row
// (decode) against 4 weight rows at a time with prefetch, and the first block of a small batch with prefetch.
// (Decode against 8 weight rows at a time, as q4_mm does, ran no faster.)
template <int B, QG K>
void qb_mm(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s, const uint8_t *z,
           int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy) {
    for (int c = 0; c < nr; c += 4) {
        const int nc = nr - c < 4 ? nr - c : 4;
        const uint8_t *wc = w + c * ldw;
        const float *sc = s + c * lds;
        const uint8_t *zc = z ? z + c * lds : nullptr;
        for (int64_t m = 0; m < M; m += 2) {
            const int8_t *xm = x + m * ldx;
            float *ym = y + m * ldy + c;
            if (M == 1) qb_block4<B, 1, true, K>(xm, ldx, wc, ldw, sc, zc, lds, n, group, nc, ym, ldy);
            else if (M - m < 2) qb_block4<B, 1, false, K>(xm, ldx, wc, ldw, sc, zc, lds, n, group, nc, ym, ldy);
            else if (M <= kSmallBatch && m == 0)
                qb_block4<B, 2, true, K>(xm, ldx, wc, ldw, sc, zc, lds, n, group, nc, ym, ldy);
            else qb_block4<B, 2, false, K>(xm, ldx, wc, ldw, sc, zc, lds, n, group, nc, ym, ldy);
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

template <int B>
void qb_groups(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s, const uint8_t *z,
               int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy) {
    if (group == 32) return qb_mm<B, QG::k32>(x, ldx, M, w, ldw, s, z, lds, n, group, nr, y, ldy);
    if (group % 64 == 0) return qb_mm<B, QG::k64>(x, ldx, M, w, ldw, s, z, lds, n, group, nr, y, ldy);
    qb_mm<Vnni256, B>(x, ldx, M, w, ldw, s, z, lds, n, group, nr, y, ldy);  // 96, 160, ...: kernels_avx2_int.h
}

void mm_qb_avx512vnni(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, int bits, const float *s,
                      const uint8_t *z, int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy) {
    with_qb_width(bits, [&](auto b) { qb_groups<decltype(b)::value>(x, ldx, M, w, ldw, s, z, lds, n, group, nr, y, ldy); });
}

}  // namespace kernels
}  // namespace pangu

#pragma GCC diagnostic pop
