// The integer kernels of the AVX2 tables (W8A8, W4A8, low-bit W*A8), written once for several ways of multiplying
// bytes: a policy P says how (kernels_avx2_int.cpp: vpmaddwd and vpmaddubsw; Vnni256 below: vpdpbusd on 256-bit
// vectors, AVX-VNNI's in kernels_avxvnni.cpp, AVX512-VNNI's in kernels_avx512vnni.cpp for the group sizes its
// own loop leaves to this one). Only for files compiled with AVX2 flags; internal linkage, since those files
// are compiled with different flags.
//
// A policy provides, on 32-byte vectors:
//   P::XQ8 xq8(p)                 a row's 32 int8 of x at p, loaded and prepared once for all weight rows (mm_q8)
//   P::WQ8 wq8(p)                 32 int8 weights at p, loaded and prepared once for all rows
//   side(sw, W) / P::kSide        a per-weight-row side sum, if the policy needs one (kSide)
//   dot_q8(acc, X, W)             acc (8 int32 lanes) += the 32 products, 4 per lane
//   fix_q8(acc, sw)               the int32 lanes of sum x * w from acc and the side sum
//   part(acc, nib, x)             acc += nib * x (nibbles 0-15 unsigned, x signed), lane-wise partial sums
//   ncorr(x)                      the same partial sums of -8 * x: part(ncorr(x), nib, x) sums (v - 8) * x
//   add(a, b)                     two such partial sums added
//   widen(acc)                    the partial sums as 8 int32 lanes (each the sum of the same 4 columns)
//   kU8                           mm_qb: whether dot_u takes 8-bit levels (0-255); if not, they go to dot_s8
//   dot_u(acc, u, x)              acc (8 int32 lanes) += u * x (u unsigned levels), 4 columns a lane
//   xsum(acc, x)                  acc += x, each lane the columns it has in dot_u
//   dot_s8(acc, v, x), xsum_s8    the same for signed v (8-bit levels as u - 128, without kU8)
// Every int8 value is allowed on both sides, -128 included (the digits of int16 activations, quant_rows16).
// Integer sums are exact in every policy, so mm_q8 gives the scalar reference's int32. mm_q4's fp32 order: a
// run of 64 columns is two units of 32, its low nibbles (columns 0-31) and its high ones (32-63); each lane
// adds its int32 sums of a group's units (exact), and when the group's last unit is in, converts the sum
// (exactly: below 2^24) and multiplies it by the group's scale into the lane's fp32 sum by one FMA; the 8 lane
// sums are reduced with the tree of kernels.h. The same for every blocking. mm_qb's is mm_q4's, its integer per
// group and lane isum - zp * xsum (qb_micro).
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "device/cpu/kernels.h"

namespace pangu {
namespace kernels {
namespace {

// The tree of kernels.h for 8 fp32 lanes.
inline float hsum8(__m256 v) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 u = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(u, _mm_shuffle_ps(u, u, 0x55)));
}

// Exact integer sum of 8 lanes (any order).
inline int32_t hsum8_i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

// A batch of at most this many rows streams the weights from memory as decode does, and its first block of
// rows prefetches them: a draft's verification (up to 6 positions, 12 rows as int16 activations' digits).
constexpr int64_t kSmallBatch = 12;

// ---- mm_q8 ----

// RM rows of x against NR weight rows, 32 columns a step; the weights' last partial step is copied into a
// zeroed buffer (x's pad is zero). With PF, the NR weight rows after the block are prefetched a line at a time
// (decode: the next call's rows), into L2 as in kernels_avx512vnni.cpp (W8A8 decode with AVX-VNNI, 1B shape, one
// thread: 86-99 % of the floor with T0, 98-107 % with T1).
template <typename P, int RM, int NR, bool PF>
inline void q8_micro(const int8_t *x, int64_t ldx, const int8_t *w, int64_t ldw, int64_t n, int32_t *y, int64_t ldy) {
    __m256i acc[RM][NR], sw[NR];
    for (int c = 0; c < NR; ++c) {
        sw[c] = _mm256_setzero_si256();
        for (int r = 0; r < RM; ++r) acc[r][c] = _mm256_setzero_si256();
    }
    const auto step = [&](int64_t i, const int8_t *const wp[NR]) {
        typename P::XQ8 xv[RM];
        for (int r = 0; r < RM; ++r) xv[r] = P::xq8(x + r * ldx + i);
        for (int c = 0; c < NR; ++c) {
            const typename P::WQ8 wv = P::wq8(wp[c]);
            if (P::kSide) sw[c] = P::side(sw[c], wv);
            for (int r = 0; r < RM; ++r) acc[r][c] = P::dot_q8(acc[r][c], xv[r], wv);
        }
    };
    const int64_t n32 = n - n % 32;
    const int8_t *wp[NR];
    for (int64_t i = 0; i < n32; i += 32) {
        if (PF && i % 64 == 0)
            for (int c = 0; c < NR; ++c)
                _mm_prefetch(reinterpret_cast<const char *>(w + (NR + c) * ldw + i), _MM_HINT_T1);
        for (int c = 0; c < NR; ++c) wp[c] = w + c * ldw + i;
        step(i, wp);
    }
    if (n32 < n) {
        alignas(32) int8_t tail[NR][32] = {};
        for (int c = 0; c < NR; ++c) {
            std::memcpy(tail[c], w + c * ldw + n32, static_cast<size_t>(n - n32));
            wp[c] = tail[c];
        }
        step(n32, wp);
    }
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < NR; ++c) y[r * ldy + c] = hsum8_i(P::fix_q8(acc[r][c], sw[c]));
}

template <typename P, int RM, bool PF>
inline void q8_block(const int8_t *x, int64_t ldx, const int8_t *w, int64_t ldw, int64_t n, int nr, int32_t *y,
                     int64_t ldy) {
    switch (nr) {
        case 4: return q8_micro<P, RM, 4, PF>(x, ldx, w, ldw, n, y, ldy);
        case 3: return q8_micro<P, RM, 3, PF>(x, ldx, w, ldw, n, y, ldy);
        case 2: return q8_micro<P, RM, 2, PF>(x, ldx, w, ldw, n, y, ldy);
        default: return q8_micro<P, RM, 1, PF>(x, ldx, w, ldw, n, y, ldy);
    }
}

// Weight rows 4 at a time (16 vector registers); a single row (decode) and the first pair of rows of a small
// batch (kSmallBatch) prefetch; rows in pairs.
template <typename P>
void mm_q8(const int8_t *x, int64_t ldx, int64_t M, const int8_t *w, int64_t ldw, int64_t n, int nr, int32_t *y,
           int64_t ldy) {
    for (int c = 0; c < nr; c += 4) {
        const int nc = nr - c < 4 ? nr - c : 4;
        const int8_t *wc = w + c * ldw;
        int64_t m = 0;
        for (; m + 2 <= M; m += 2) {
            if (M <= kSmallBatch && m == 0) q8_block<P, 2, true>(x, ldx, wc, ldw, n, nc, y + c, ldy);
            else q8_block<P, 2, false>(x + m * ldx, ldx, wc, ldw, n, nc, y + m * ldy + c, ldy);
        }
        if (m < M) {
            if (M == 1) q8_block<P, 1, true>(x, ldx, wc, ldw, n, nc, y + c, ldy);
            else q8_block<P, 1, false>(x + m * ldx, ldx, wc, ldw, n, nc, y + m * ldy + c, ldy);
        }
    }
}

// ---- mm_q4 ----

// RM rows of x against NR PGD_I4 weight rows (ldw bytes apart), one run a step; PF as in q8_micro. The units
// of a group are counted down (no division). JOINED (groups a multiple of 64 columns): a run's two units go
// into the sums as one, lo and hi added before widen.
template <typename P, int RM, int NR, bool PF, bool JOINED>
inline void q4_micro(const int8_t *x, int64_t ldx, const uint8_t *w, int64_t ldw, const float *s, int64_t lds,
                     int64_t n, int group, float *y, int64_t ldy) {
    const __m256i low4 = _mm256_set1_epi8(0x0f);
    __m256 acc[RM][NR];
    __m256i isum[RM][NR];
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < NR; ++c) acc[r][c] = _mm256_setzero_ps(), isum[r][c] = _mm256_setzero_si256();
    const int units = JOINED ? group / 64 : group / 32;
    int left = units;
    int64_t g = 0;
    const auto unit_done = [&] {
        if (--left > 0) return;
        for (int c = 0; c < NR; ++c) {
            const __m256 sc = _mm256_set1_ps(s[c * lds + g]);
            for (int r = 0; r < RM; ++r) {
                acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r][c]), sc, acc[r][c]);
                isum[r][c] = _mm256_setzero_si256();
            }
        }
        left = units, ++g;
    };
    const auto nibbles = [&](int c, int64_t i, __m256i *lo, __m256i *hi) {
        const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w + c * ldw + i / 2));
        *lo = _mm256_and_si256(b, low4), *hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), low4);
    };
    for (int64_t i = 0; i < n; i += 64) {
        if (PF)
            for (int c = 0; c < NR; ++c)
                _mm_prefetch(reinterpret_cast<const char *>(w + (NR + c) * ldw + i / 2), _MM_HINT_T1);
        __m256i xlo[RM], xhi[RM], clo[RM], chi[RM];
        for (int r = 0; r < RM; ++r) {
            xlo[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + r * ldx + i));
            xhi[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + r * ldx + i + 32));
            clo[r] = P::ncorr(xlo[r]), chi[r] = P::ncorr(xhi[r]);
            if (JOINED) clo[r] = P::add(clo[r], chi[r]);
        }
        __m256i lo, hi;
        for (int c = 0; c < NR; ++c) {
            nibbles(c, i, &lo, &hi);
            for (int r = 0; r < RM; ++r) {
                const __m256i t =
                    JOINED ? P::part(P::part(clo[r], lo, xlo[r]), hi, xhi[r]) : P::part(clo[r], lo, xlo[r]);
                isum[r][c] = _mm256_add_epi32(isum[r][c], P::widen(t));
            }
        }
        unit_done();
        if (JOINED) continue;
        for (int c = 0; c < NR; ++c) {
            nibbles(c, i, &lo, &hi);
            for (int r = 0; r < RM; ++r)
                isum[r][c] = _mm256_add_epi32(isum[r][c], P::widen(P::part(chi[r], hi, xhi[r])));
        }
        unit_done();
    }
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < NR; ++c) y[r * ldy + c] = hsum8(acc[r][c]);
}

template <typename P, int RM, int NR, bool PF>
inline void q4_call(bool joined, const int8_t *x, int64_t ldx, const uint8_t *w, int64_t ldw, const float *s,
                    int64_t lds, int64_t n, int group, float *y, int64_t ldy) {
    if (joined) q4_micro<P, RM, NR, PF, true>(x, ldx, w, ldw, s, lds, n, group, y, ldy);
    else q4_micro<P, RM, NR, PF, false>(x, ldx, w, ldw, s, lds, n, group, y, ldy);
}

// Blocks of up to 2 rows x 2 weight rows (16 accumulators in 16 registers would leave none: the fp32 and the
// int32 sums of each pair); a single row against 4 weight rows at a time, with prefetch (decode), and the first
// block of a small batch (kSmallBatch) with prefetch.
template <typename P>
void mm_q4(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s, int64_t lds,
           int64_t n, int group, int nr, float *y, int64_t ldy) {
    const bool joined = group % 64 == 0;
    if (M == 1) {
        for (int c = 0; c < nr; c += 4) {
            const uint8_t *wc = w + c * ldw;
            const float *sc = s + c * lds;
            switch (nr - c < 4 ? nr - c : 4) {
                case 4: q4_call<P, 1, 4, true>(joined, x, ldx, wc, ldw, sc, lds, n, group, y + c, ldy); break;
                case 3: q4_call<P, 1, 3, true>(joined, x, ldx, wc, ldw, sc, lds, n, group, y + c, ldy); break;
                case 2: q4_call<P, 1, 2, true>(joined, x, ldx, wc, ldw, sc, lds, n, group, y + c, ldy); break;
                default: q4_call<P, 1, 1, true>(joined, x, ldx, wc, ldw, sc, lds, n, group, y + c, ldy); break;
            }
        }
        return;
    }
    for (int c = 0; c < nr; c += 2) {
        const uint8_t *wc = w + c * ldw;
        const float *sc = s + c * lds;
        const bool two = nr - c >= 2;
        for (int64_t m = 0; m < M; m += 2) {
            const int8_t *xm = x + m * ldx;
            float *ym = y + m * ldy + c;
            if (M - m < 2) {  // the last row of an odd batch, not the first: no prefetch
                if (two) q4_call<P, 1, 2, false>(joined, xm, ldx, wc, ldw, sc, lds, n, group, ym, ldy);
                else q4_call<P, 1, 1, false>(joined, xm, ldx, wc, ldw, sc, lds, n, group, ym, ldy);
            } else if (M <= kSmallBatch && m == 0) {
                if (two) q4_call<P, 2, 2, true>(joined, xm, ldx, wc, ldw, sc, lds, n, group, ym, ldy);
                else q4_call<P, 2, 1, true>(joined, xm, ldx, wc, ldw, sc, lds, n, group, ym, ldy);
            } else {
                if (two) q4_call<P, 2, 2, false>(joined, xm, ldx, wc, ldw, sc, lds, n, group, ym, ldy);
                else q4_call<P, 2, 1, false>(joined, xm, ldx, wc, ldw, sc, lds, n, group, ym, ldy);
            }
        }
    }
}

// ---- mm_qb ----

// The levels of unit H (columns 32H to 32H + 31) of a run of 64 columns of a PGD_QB row of B bits (device.h) at
// p, in column order. The 2-bit plane is broadcast to both 128-bit lanes and shifted per 32-bit lane (vpsrlvd;
// AVX2 has no 16-bit variable shift): a byte takes its neighbour's low bits into its top, which the mask
// clears. The 1-bit plane's 32 bits become bytes by a byte shuffle (byte j from bit-plane byte j / 8) and a
// test of bit j % 8.
template <int B, int H>
inline __m256i qb_unit(const uint8_t *p);

template <int H>
inline __m256i qb_unit2(const uint8_t *p) {
    const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
    const __m256i shift = H ? _mm256_setr_epi32(4, 4, 4, 4, 6, 6, 6, 6) : _mm256_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2);
    return _mm256_and_si256(_mm256_srlv_epi32(b, shift), _mm256_set1_epi8(0x03));
}

template <int H>
inline __m256i qb_unit4(const uint8_t *p) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p));
    return _mm256_and_si256(H ? _mm256_srli_epi16(b, 4) : b, _mm256_set1_epi8(0x0f));
}

template <int H>
inline __m256i qb_bit2(const uint8_t *p) {  // 4 where the 1-bit plane's bit is set
    int32_t bits;
    std::memcpy(&bits, p + 4 * H, 4);
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits), _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
    const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201));
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(4));
}

template <int B, int H>
inline __m256i qb_unit(const uint8_t *p) {
    switch (B) {
        case 8: return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p + 32 * H));
        case 6: return _mm256_or_si256(qb_unit4<H>(p), _mm256_slli_epi16(qb_unit2<H>(p + 32), 4));
        case 4: return qb_unit4<H>(p);
        case 3: return _mm256_or_si256(qb_unit2<H>(p), qb_bit2<H>(p + 16));
        default: return qb_unit2<H>(p);
    }
}

// RM rows of x against NR weight rows of B bits, ldw bytes apart, a unit of 32 columns at a time; PF as in
// q8_micro. Each lane keeps int32 sums of its 4 columns of every
// unit of a group: isum of x * level (P::dot_u; for 8-bit levels with a policy that cannot take them unsigned,
// P::dot_s8 of x * (u - 128): kBias) and xs of x (P::xsum, the same columns); when the group's last unit is in,
// its share isum - (zp - kBias) * xs goes into the lane's fp32 sum times the group's scale, computed in fp32
// exactly as in kernels_avx512vnni.cpp (one FMA from converted sums, an integer below 2^24 in magnitude for
// groups up to 4096 columns: a lane holds at most 512 of a group, 512 * 128 * 255 < 2^24).
template <typename P, int B, int RM, int NR, bool PF>
inline void qb_micro(const int8_t *x, int64_t ldx, const uint8_t *w, int64_t ldw, const float *s, const uint8_t *z,
                     int64_t lds, int64_t n, int group, float *y, int64_t ldy) {
    constexpr bool kSigned = B == 8 && !P::kU8;
    constexpr int kBias = kSigned ? 128 : 0;
    __m256 acc[RM][NR];
    __m256i isum[RM][NR], xs[RM];
    const auto start = [&] {
        for (int r = 0; r < RM; ++r) {
            xs[r] = _mm256_setzero_si256();
            for (int c = 0; c < NR; ++c) isum[r][c] = _mm256_setzero_si256();
        }
    };
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < NR; ++c) acc[r][c] = _mm256_setzero_ps();
    start();
    const int units = group / 32;
    int left = units;
    int64_t g = 0;
    const auto unit_done = [&] {
        if (--left > 0) return;
        __m256 xf[RM];
        for (int r = 0; r < RM; ++r) xf[r] = _mm256_cvtepi32_ps(xs[r]);
        for (int c = 0; c < NR; ++c) {
            const __m256 sc = _mm256_set1_ps(s[c * lds + g]);
            const __m256 zp = _mm256_set1_ps(static_cast<float>((z ? z[c * lds + g] : 1 << (B - 1)) - kBias));
            for (int r = 0; r < RM; ++r)
                acc[r][c] = _mm256_fmadd_ps(_mm256_fnmadd_ps(zp, xf[r], _mm256_cvtepi32_ps(isum[r][c])), sc, acc[r][c]);
        }
        start();
        left = units, ++g;
    };
    const auto unit = [&](int64_t i, const auto &levels) {  // columns [i, i + 32)
        __m256i xv[RM];
        for (int r = 0; r < RM; ++r) {
            xv[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + r * ldx + i));
            if constexpr (kSigned) xs[r] = P::xsum_s8(xs[r], xv[r]);
            else xs[r] = P::xsum(xs[r], xv[r]);
        }
        for (int c = 0; c < NR; ++c) {
            const __m256i u = levels(c);
            for (int r = 0; r < RM; ++r) {
                if constexpr (kSigned)
                    isum[r][c] = P::dot_s8(isum[r][c], _mm256_xor_si256(u, _mm256_set1_epi8(-128)), xv[r]);
                else isum[r][c] = P::dot_u(isum[r][c], u, xv[r]);
            }
        }
        unit_done();
    };
    for (int64_t i = 0; i < n; i += 64) {
        const int64_t off = (i >> 3) * B;  // the run's first byte in a row
        if (PF && off % 64 < 8 * B)
            for (int c = 0; c < NR; ++c)
                _mm_prefetch(reinterpret_cast<const char *>(w + (NR + c) * ldw + off), _MM_HINT_T1);
        unit(i, [&](int c) { return qb_unit<B, 0>(w + c * ldw + off); });
        unit(i + 32, [&](int c) { return qb_unit<B, 1>(w + c * ldw + off); });
    }
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < NR; ++c) y[r * ldy + c] = hsum8(acc[r][c]);
}

template <typename P, int B, int RM, bool PF>
inline void qb_block(const int8_t *x, int64_t ldx, const uint8_t *w, int64_t ldw, const float *s, const uint8_t *z,
                     int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy) {
    switch (nr) {
        case 4: return qb_micro<P, B, RM, 4, PF>(x, ldx, w, ldw, s, z, lds, n, group, y, ldy);
        case 3: return qb_micro<P, B, RM, 3, PF>(x, ldx, w, ldw, s, z, lds, n, group, y, ldy);
        case 2: return qb_micro<P, B, RM, 2, PF>(x, ldx, w, ldw, s, z, lds, n, group, y, ldy);
        default: return qb_micro<P, B, RM, 1, PF>(x, ldx, w, ldw, s, z, lds, n, group, y, ldy);
    }
}

// mm_q4's blocking: a single row against 4 weight rows at a time, with prefetch (decode), otherwise blocks of up
// to 2 rows x 2 weight rows, the first block of a small batch (kSmallBatch) with prefetch.
template <typename P, int B>
void qb_mm(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s, const uint8_t *z,
           int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy) {
    const int step = M == 1 ? 4 : 2;
    for (int c = 0; c < nr; c += step) {
        const int nc = nr - c < step ? nr - c : step;
        const uint8_t *wc = w + c * ldw, *zc = z ? z + c * lds : nullptr;
        const float *sc = s + c * lds;
        for (int64_t m = 0; m < M; m += 2) {
            const int8_t *xm = x + m * ldx;
            float *ym = y + m * ldy + c;
            if (M == 1) qb_block<P, B, 1, true>(xm, ldx, wc, ldw, sc, zc, lds, n, group, nc, ym, ldy);
            else if (M - m < 2) qb_block<P, B, 1, false>(xm, ldx, wc, ldw, sc, zc, lds, n, group, nc, ym, ldy);
            else if (M <= kSmallBatch && m == 0)
                qb_block<P, B, 2, true>(xm, ldx, wc, ldw, sc, zc, lds, n, group, nc, ym, ldy);
            else qb_block<P, B, 2, false>(xm, ldx, wc, ldw, sc, zc, lds, n, group, nc, ym, ldy);
        }
    }
}

template <typename P>
void mm_qb(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, int bits, const float *s,
           const uint8_t *z, int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy) {
    with_qb_width(bits, [&](auto b) { qb_mm<P, decltype(b)::value>(x, ldx, M, w, ldw, s, z, lds, n, group, nr, y, ldy); });
}

// ---- vpdpbusd on 256-bit vectors: AVX-VNNI, or AVX512-VNNI with AVX512VL ----

#if defined(__AVXVNNI__) || (defined(__AVX512VNNI__) && defined(__AVX512VL__))
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define PANGU_DPBUSD256 _mm256_dpbusd_epi32
#else
#define PANGU_DPBUSD256 _mm256_dpbusd_avx_epi32
#endif
// mm_q8: x ^ 0x80 (x + 128, unsigned) times w, 128 * sum w (itself from vpdpbusd with ones) taken away; mm_q4:
// the nibbles times x, each lane started from -8 * its sum of x.
struct Vnni256 {
    static constexpr bool kSide = true;
    using XQ8 = __m256i;
    using WQ8 = __m256i;
    static __m256i xq8(const int8_t *p) {
        return _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)),
                                _mm256_set1_epi8(static_cast<char>(0x80)));
    }
    static __m256i wq8(const int8_t *p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)); }
    static __m256i side(__m256i s, __m256i w) { return PANGU_DPBUSD256(s, _mm256_set1_epi8(1), w); }
    static __m256i dot_q8(__m256i acc, __m256i xu, __m256i w) { return PANGU_DPBUSD256(acc, xu, w); }
    static __m256i fix_q8(__m256i acc, __m256i sw) { return _mm256_sub_epi32(acc, _mm256_slli_epi32(sw, 7)); }
    static __m256i part(__m256i acc, __m256i nib, __m256i x) { return PANGU_DPBUSD256(acc, nib, x); }
    static __m256i ncorr(__m256i x) {
        return _mm256_sub_epi32(_mm256_setzero_si256(),
                                PANGU_DPBUSD256(_mm256_setzero_si256(), _mm256_set1_epi8(8), x));
    }
    static __m256i add(__m256i a, __m256i b) { return _mm256_add_epi32(a, b); }
    static __m256i widen(__m256i acc) { return acc; }
    // mm_qb: levels of every width unsigned as they are
    static constexpr bool kU8 = true;
    static __m256i dot_u(__m256i acc, __m256i u, __m256i x) { return PANGU_DPBUSD256(acc, u, x); }
    static __m256i xsum(__m256i acc, __m256i x) { return PANGU_DPBUSD256(acc, _mm256_set1_epi8(1), x); }
};
#undef PANGU_DPBUSD256
#endif

}  // namespace
}  // namespace kernels
}  // namespace pangu
