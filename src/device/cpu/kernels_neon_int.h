// The integer kernels of the NEON tables (W8A8, W4A8, low-bit W*A8), written once for two ways of multiplying bytes: a
// policy P says how (kernels_neon.cpp: vmull_s8 + vpadalq_s16, every AArch64 CPU; kernels_neon_dotprod.cpp:
// sdot, ARMv8.2 dot products). Internal linkage, since the two files are compiled with different flags.
//
// A policy provides, on 16-byte vectors (both operands signed, so no correction is needed):
//   dot2(acc, x0, w0, x1, w1)     acc (4 int32 lanes) += the 32 products x0 * w0 and x1 * w1
// for every int8 value, -128 included (the digits of int16 activations, quant_rows16).
// Integer sums are exact, so mm_q8 gives the scalar reference's int32. mm_q4's fp32 order: each lane's int32
// sum over a whole group (below 2^24 for the largest group, 4096 columns: 1024 products of at most 128 * 8 in
// a lane) is converted, exactly, and multiplied
// by the group's scale into the lane's fp32 sum by one FMA, group after group; the 4 lane sums reduced as
// (l0 + l1) + (l2 + l3). The same for every blocking. mm_qb's is mm_q4's, its integer per group and lane
// isum - zp * xsum (qb_micro).
#pragma once

#include <arm_neon.h>

#include <cstring>

#include "device/cpu/kernels.h"

namespace pangu {
namespace kernels {
namespace {

// ---- mm_q8 ----

// RM rows of x against NR weight rows, 32 columns a step; the weights' last partial step is copied into a
// zeroed buffer (x's pad is zero).
template <typename P, int RM, int NR>
inline void q8_micro(const int8_t *x, int64_t ldx, const int8_t *w, int64_t ldw, int64_t n, int32_t *y, int64_t ldy) {
    int32x4_t acc[RM][NR];
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < NR; ++c) acc[r][c] = vdupq_n_s32(0);
    const auto step = [&](int64_t i, const int8_t *const wp[NR]) {
        int8x16_t x0[RM], x1[RM];
        for (int r = 0; r < RM; ++r) x0[r] = vld1q_s8(x + r * ldx + i), x1[r] = vld1q_s8(x + r * ldx + i + 16);
        for (int c = 0; c < NR; ++c) {
            const int8x16_t w0 = vld1q_s8(wp[c]), w1 = vld1q_s8(wp[c] + 16);
            for (int r = 0; r < RM; ++r) acc[r][c] = P::dot2(acc[r][c], x0[r], w0, x1[r], w1);
        }
    };
    const int64_t n32 = n - n % 32;
    const int8_t *wp[NR];
    for (int64_t i = 0; i < n32; i += 32) {
        for (int c = 0; c < NR; ++c) wp[c] = w + c * ldw + i;
        step(i, wp);
    }
    if (n32 < n) {
        int8_t tail[NR][32] = {};
        for (int c = 0; c < NR; ++c) {
            std::memcpy(tail[c], w + c * ldw + n32, static_cast<size_t>(n - n32));
            wp[c] = tail[c];
        }
        step(n32, wp);
    }
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < NR; ++c) y[r * ldy + c] = vaddvq_s32(acc[r][c]);
}

template <typename P, int RM>
inline void q8_block(const int8_t *x, int64_t ldx, const int8_t *w, int64_t ldw, int64_t n, int nr, int32_t *y,
                     int64_t ldy) {
    switch (nr) {
        case 4: return q8_micro<P, RM, 4>(x, ldx, w, ldw, n, y, ldy);
        case 3: return q8_micro<P, RM, 3>(x, ldx, w, ldw, n, y, ldy);
        case 2: return q8_micro<P, RM, 2>(x, ldx, w, ldw, n, y, ldy);
        default: return q8_micro<P, RM, 1>(x, ldx, w, ldw, n, y, ldy);
    }
}

// Blocks of 2 rows x 4 weight rows; a single row against up to 8 weight rows (decode).
template <typename P>
void mm_q8(const int8_t *x, int64_t ldx, int64_t M, const int8_t *w, int64_t ldw, int64_t n, int nr, int32_t *y,
           int64_t ldy) {
    int64_t m = 0;
    for (; m + 2 <= M; m += 2)
        for (int c = 0; c < nr; c += 4)
            q8_block<P, 2>(x + m * ldx, ldx, w + c * ldw, ldw, n, nr - c < 4 ? nr - c : 4, y + m * ldy + c, ldy);
    if (m == M) return;
    x += m * ldx, y += m * ldy;
    switch (nr) {
        case 8: return q8_micro<P, 1, 8>(x, ldx, w, ldw, n, y, ldy);
        case 7: return q8_micro<P, 1, 7>(x, ldx, w, ldw, n, y, ldy);
        case 6: return q8_micro<P, 1, 6>(x, ldx, w, ldw, n, y, ldy);
        case 5: return q8_micro<P, 1, 5>(x, ldx, w, ldw, n, y, ldy);
        default: return q8_block<P, 1>(x, ldx, w, ldw, n, nr, y, ldy);
    }
}

// ---- mm_q4 ----

// RM rows of x against NR PGD_I4 weight rows (ldw bytes apart). A run of 64 columns is two units of 32: its
// low nibbles (columns 0-31), then its high ones (32-63); a group is a whole number of units, counted down, and
// its int32 sums go into the fp32 sums when its last unit is in.
template <typename P, int RM, int NR>
inline void q4_micro(const int8_t *x, int64_t ldx, const uint8_t *w, int64_t ldw, const float *s, int64_t lds,
                     int64_t n, int group, float *y, int64_t ldy) {
    const uint8x16_t low4 = vdupq_n_u8(0x0f);
    const int8x16_t eight = vdupq_n_s8(8);
    float32x4_t acc[RM][NR];
    int32x4_t isum[RM][NR];
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < NR; ++c) acc[r][c] = vdupq_n_f32(0.0f), isum[r][c] = vdupq_n_s32(0);
    const int units = group / 32;
    int left = units;
    int64_t g = 0;
    // one unit: columns [i, i + 32) of x against the 32 nibbles v, as v - 8
    const auto unit = [&](int64_t i, const uint8x16_t(&v)[NR][2]) {
        int8x16_t x0[RM], x1[RM];
        for (int r = 0; r < RM; ++r) x0[r] = vld1q_s8(x + r * ldx + i), x1[r] = vld1q_s8(x + r * ldx + i + 16);
        for (int c = 0; c < NR; ++c) {
            const int8x16_t w0 = vsubq_s8(vreinterpretq_s8_u8(v[c][0]), eight);
            const int8x16_t w1 = vsubq_s8(vreinterpretq_s8_u8(v[c][1]), eight);
            for (int r = 0; r < RM; ++r) isum[r][c] = P::dot2(isum[r][c], x0[r], w0, x1[r], w1);
        }
        if (--left > 0) return;
        for (int c = 0; c < NR; ++c) {
            const float sc = s[c * lds + g];
            for (int r = 0; r < RM; ++r) {
                acc[r][c] = vfmaq_n_f32(acc[r][c], vcvtq_f32_s32(isum[r][c]), sc);
                isum[r][c] = vdupq_n_s32(0);
            }
        }
        left = units, ++g;
    };
    for (int64_t i = 0; i < n; i += 64) {
        uint8x16_t lo[NR][2], hi[NR][2];
        for (int c = 0; c < NR; ++c) {
            const uint8x16_t b0 = vld1q_u8(w + c * ldw + i / 2), b1 = vld1q_u8(w + c * ldw + i / 2 + 16);
            lo[c][0] = vandq_u8(b0, low4), lo[c][1] = vandq_u8(b1, low4);
            hi[c][0] = vshrq_n_u8(b0, 4), hi[c][1] = vshrq_n_u8(b1, 4);
        }
        unit(i, lo);
        unit(i + 32, hi);
    }
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < NR; ++c) {
            const float32x4_t a = acc[r][c];
            y[r * ldy + c] =
                (vgetq_lane_f32(a, 0) + vgetq_lane_f32(a, 1)) + (vgetq_lane_f32(a, 2) + vgetq_lane_f32(a, 3));
        }
}

template <typename P, int RM>
inline void q4_block(const int8_t *x, int64_t ldx, const uint8_t *w, int64_t ldw, const float *s, int64_t lds,
                     int64_t n, int group, int nr, float *y, int64_t ldy) {
    switch (nr) {
        case 4: return q4_micro<P, RM, 4>(x, ldx, w, ldw, s, lds, n, group, y, ldy);
        case 3: return q4_micro<P, RM, 3>(x, ldx, w, ldw, s, lds, n, group, y, ldy);
        case 2: return q4_micro<P, RM, 2>(x, ldx, w, ldw, s, lds, n, group, y, ldy);
        default: return q4_micro<P, RM, 1>(x, ldx, w, ldw, s, lds, n, group, y, ldy);
    }
}

// Blocks of 2 rows x 4 weight rows, a single row against 4 weight rows at a time.
template <typename P>
void mm_q4(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s, int64_t lds,
           int64_t n, int group, int nr, float *y, int64_t ldy) {
    for (int c = 0; c < nr; c += 4) {
        const int nc = nr - c < 4 ? nr - c : 4;
        int64_t m = 0;
        for (; m + 2 <= M; m += 2)
            q4_block<P, 2>(x + m * ldx, ldx, w + c * ldw, ldw, s + c * lds, lds, n, group, nc, y + m * ldy + c, ldy);
        if (m < M)
            q4_block<P, 1>(x + m * ldx, ldx, w + c * ldw, ldw, s + c * lds, lds, n, group, nc, y + m * ldy + c, ldy);
    }
}

// ---- mm_qb ----

// Chunk k (columns 16k to 16k + 15) of a run of 64 columns of a PGD_QB row of B bits (device.h) at p, as 16
// bytes in column order: qb_chunk the levels u, qb_signed u - 2^(B - 1), which fits int8 for every width (the
// dot products take signed bytes on both sides; qb_micro moves the constant into the zero point). The chunk is
// bits 2k, 2k + 1 of the 2-bit plane's 16 bytes, the low (k < 2) or high nibbles of the 4-bit plane's bytes
// from 16 (k % 2), and bytes 2k, 2k + 1 of the 1-bit plane, spread one to 8 bytes by a table lookup and tested.
inline uint8x16_t qb_chunk2(uint8x16_t b, int k) {  // (b >> 2k) & 3
    return vandq_u8(vshlq_u8(b, vdupq_n_s8(static_cast<int8_t>(-2 * k))), vdupq_n_u8(3));
}

inline uint8x16_t qb_chunk4(const uint8_t *p, int k) {
    const uint8x16_t b = vld1q_u8(p + 16 * (k % 2));
    return k < 2 ? vandq_u8(b, vdupq_n_u8(15)) : vshrq_n_u8(b, 4);
}

inline uint8x16_t qb_bit2(const uint8_t *p, int k) {  // 4 where the 1-bit plane's bit is set
    const uint8x8_t plane = vld1_u8(p);
    const uint8x16_t index =
        vcombine_u8(vdup_n_u8(static_cast<uint8_t>(2 * k)), vdup_n_u8(static_cast<uint8_t>(2 * k + 1)));
    const uint8x16_t spread = vqtbl1q_u8(vcombine_u8(plane, plane), index);
    const uint8x16_t bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040201008040201ull));
    return vandq_u8(vtstq_u8(spread, bit), vdupq_n_u8(4));
}

inline uint8x16_t qb_chunk(const uint8_t *p, int bits, int k) {
    switch (bits) {
        case 8: return vld1q_u8(p + 16 * k);
        case 6: return vorrq_u8(qb_chunk4(p, k), vshlq_n_u8(qb_chunk2(vld1q_u8(p + 32), k), 4));
        case 4: return qb_chunk4(p, k);
        case 3: return vorrq_u8(qb_chunk2(vld1q_u8(p), k), qb_bit2(p + 16, k));
        default: return qb_chunk2(vld1q_u8(p), k);
    }
}

template <int B>
inline int8x16_t qb_signed(const uint8_t *p, int k) {
    return vreinterpretq_s8_u8(vsubq_u8(qb_chunk(p, B, k), vdupq_n_u8(1u << (B - 1))));
}

// RM rows of x against NR weight rows of B bits (ldw bytes apart), a unit of 32 columns at a time as in q4_micro:
// per lane int32 sums of x * (u - 2^(B - 1)) and, with zero points, of x, over the group's units; when the group's
// last unit is in, isum - (zp - 2^(B - 1)) * xs (exact) goes into the lane's fp32 sum times the group's scale by one
// FMA (the conversion exact for groups up to 2048 columns: a lane holds a quarter of a group, 512 * 128 * 255 <
// 2^24). Without zero points zp = 2^(B - 1) and x's sums are not needed.
template <typename P, int B, int RM, int NR>
inline void qb_micro(const int8_t *x, int64_t ldx, const uint8_t *w, int64_t ldw, const float *s, const uint8_t *z,
                     int64_t lds, int64_t n, int group, float *y, int64_t ldy) {
    const int8x16_t ones = vdupq_n_s8(1);
    float32x4_t acc[RM][NR];
    int32x4_t isum[RM][NR], xs[RM];
    for (int r = 0; r < RM; ++r) {
        xs[r] = vdupq_n_s32(0);
        for (int c = 0; c < NR; ++c) acc[r][c] = vdupq_n_f32(0.0f), isum[r][c] = vdupq_n_s32(0);
    }
    const int units = group / 32;
    int left = units;
    int64_t g = 0;
    const auto flush = [&] {
        for (int c = 0; c < NR; ++c) {
            const float sc = s[c * lds + g];
            const int32_t zp = z ? z[c * lds + g] - (1 << (B - 1)) : 0;
            for (int r = 0; r < RM; ++r) {
                const int32x4_t t = z ? vmlsq_n_s32(isum[r][c], xs[r], zp) : isum[r][c];
                acc[r][c] = vfmaq_n_f32(acc[r][c], vcvtq_f32_s32(t), sc);
                isum[r][c] = vdupq_n_s32(0);
            }
        }
        for (int r = 0; r < RM; ++r) xs[r] = vdupq_n_s32(0);
        left = units, ++g;
    };
    // columns [i, i + 32): chunks 2h and 2h + 1 of the run at byte off of each weight row
    const auto unit = [&](int64_t i, int64_t off, int h) {
        int8x16_t x0[RM], x1[RM];
        for (int r = 0; r < RM; ++r) {
            x0[r] = vld1q_s8(x + r * ldx + i), x1[r] = vld1q_s8(x + r * ldx + i + 16);
            if (z) xs[r] = P::dot2(xs[r], x0[r], ones, x1[r], ones);
        }
        for (int c = 0; c < NR; ++c) {
            const int8x16_t w0 = qb_signed<B>(w + c * ldw + off, 2 * h),
                            w1 = qb_signed<B>(w + c * ldw + off, 2 * h + 1);
            for (int r = 0; r < RM; ++r) isum[r][c] = P::dot2(isum[r][c], x0[r], w0, x1[r], w1);
        }
        if (--left == 0) flush();
    };
    for (int64_t i = 0; i < n; i += 64) {
        unit(i, i / 8 * B, 0);
        unit(i + 32, i / 8 * B, 1);
    }
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < NR; ++c) {
            const float32x4_t a = acc[r][c];
            y[r * ldy + c] =
                (vgetq_lane_f32(a, 0) + vgetq_lane_f32(a, 1)) + (vgetq_lane_f32(a, 2) + vgetq_lane_f32(a, 3));
        }
}

template <typename P, int B, int RM>
inline void qb_block(const int8_t *x, int64_t ldx, const uint8_t *w, int64_t ldw, const float *s, const uint8_t *z,
                     int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy) {
    switch (nr) {
        case 4: return qb_micro<P, B, RM, 4>(x, ldx, w, ldw, s, z, lds, n, group, y, ldy);
        case 3: return qb_micro<P, B, RM, 3>(x, ldx, w, ldw, s, z, lds, n, group, y, ldy);
        case 2: return qb_micro<P, B, RM, 2>(x, ldx, w, ldw, s, z, lds, n, group, y, ldy);
        default: return qb_micro<P, B, RM, 1>(x, ldx, w, ldw, s, z, lds, n, group, y, ldy);
    }
}

// mm_q4's blocking: blocks of 2 rows x 4 weight rows, a single row against 4 weight rows at a time.
template <typename P, int B>
void qb_mm(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s, const uint8_t *z,
           int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy) {
    for (int c = 0; c < nr; c += 4) {
        const int nc = nr - c < 4 ? nr - c : 4;
        const uint8_t *wc = w + c * ldw, *zc = z ? z + c * lds : nullptr;
        const float *sc = s + c * lds;
        int64_t m = 0;
        for (; m + 2 <= M; m += 2)
            qb_block<P, B, 2>(x + m * ldx, ldx, wc, ldw, sc, zc, lds, n, group, nc, y + m * ldy + c, ldy);
        if (m < M) qb_block<P, B, 1>(x + m * ldx, ldx, wc, ldw, sc, zc, lds, n, group, nc, y + m * ldy + c, ldy);
    }
}

template <typename P>
void mm_qb(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, int bits, const float *s,
           const uint8_t *z, int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy) {
    with_qb_width(bits, [&](auto b) { qb_mm<P, decltype(b)::value>(x, ldx, M, w, ldw, s, z, lds, n, group, nr, y, ldy); });
}

}  // namespace
}  // namespace kernels
}  // namespace pangu
