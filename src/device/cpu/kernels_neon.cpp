// AArch64 NEON kernels. Advanced SIMD (with fp16 conversions) is part of the AArch64 baseline, so these
// are compiled for every AArch64 build and always used there. The reduction order is the canonical one of
// kernels.h: an output's 8 partial sums live in two 4-lane accumulators (sums 0-3 and 4-7) and are reduced
// with the same tree as on x86.
#if defined(__aarch64__)
#include <arm_neon.h>
#include <sys/auxv.h>

#include <cmath>
#include <cstring>

#include "device/cpu/kernels.h"
#include "device/cpu/kernels_neon_int.h"

#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)  // <asm/hwcap.h>: the dot product instructions (older C libraries lack the name)
#endif

namespace pangu {
namespace kernels {

namespace {

struct V8 {
    float32x4_t lo, hi;
};

struct F32 {
    using T = float;
    static V8 load(const float *p) { return {vld1q_f32(p), vld1q_f32(p + 4)}; }
    static float conv(float v) { return v; }
};
struct BF16 {
    using T = uint16_t;
    static V8 load(const uint16_t *p) {
        const uint16x8_t h = vld1q_u16(p);
        return {vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)),
                vreinterpretq_f32_u32(vshll_n_u16(vget_high_u16(h), 16))};
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
    static V8 load(const uint16_t *p) {
        const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(p));
        return {vcvt_f32_f16(vget_low_f16(h)), vcvt_high_f32_f16(h)};
    }
    static float conv(uint16_t h) {
        return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
    }
};
struct I8 {
    using T = int8_t;
    static V8 load(const int8_t *p) {
        const int16x8_t w = vmovl_s8(vld1_s8(p));
        return {vcvtq_f32_s32(vmovl_s16(vget_low_s16(w))), vcvtq_f32_s32(vmovl_s16(vget_high_s16(w)))};
    }
    static float conv(int8_t v) { return static_cast<float>(v); }
};

// The tree of kernels.h: (s0+s4, s1+s5, s2+s6, s3+s7), then (0+2, 1+3), then the last pair.
inline float hsum(const V8 &a) {
    const float32x4_t t = vaddq_f32(a.lo, a.hi);
    const float32x2_t u = vadd_f32(vget_low_f32(t), vget_high_f32(t));
    return vget_lane_f32(u, 0) + vget_lane_f32(u, 1);
}

template <typename W, int RM, int NR>
inline void micro(const float *x, int64_t ldx, const typename W::T *w, int64_t ldw, int64_t n, float *y,
                  int64_t ldy) {
    V8 acc[RM][NR];
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < NR; ++c) acc[r][c] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    const int64_t n8 = n - n % 8;
    for (int64_t i = 0; i < n8; i += 8) {
        V8 xv[RM];
        for (int r = 0; r < RM; ++r) xv[r] = F32::load(x + r * ldx + i);
        for (int c = 0; c < NR; ++c) {
            const V8 wv = W::load(w + c * ldw + i);
            for (int r = 0; r < RM; ++r) {
                acc[r][c].lo = vfmaq_f32(acc[r][c].lo, xv[r].lo, wv.lo);
                acc[r][c].hi = vfmaq_f32(acc[r][c].hi, xv[r].hi, wv.hi);
            }
        }
    }
    for (int r = 0; r < RM; ++r)
        for (int c = 0; c < NR; ++c) {
            float s = hsum(acc[r][c]);
            for (int64_t i = n8; i < n; ++i) s = __builtin_fmaf(x[r * ldx + i], W::conv(w[c * ldw + i]), s);
            y[r * ldy + c] = s;
        }
}

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

// Blocks of 2 rows x 4 weight rows (32 vector registers: 16 accumulators, 4 x, 2 w), then a single row
// against up to 8 weight rows.
template <typename W>
void mm(const float *x, int64_t ldx, int64_t M, const void *wv, int64_t ldw, int64_t n, int nr, float *y,
        int64_t ldy) {
    const typename W::T *w = static_cast<const typename W::T *>(wv);
    int64_t m = 0;
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

float dot_neon(const float *a, const float *b, int64_t n) {
    float y;
    micro<F32, 1, 1>(a, 0, b, 0, n, &y, 0);
    return y;
}

// Q queries against 8 columns of the V rows: each 8-wide V slice is widened once for all Q. With SCALED (int8
// rows) the row's scale multiplies the probability first. Each element's sum runs in order of s.
template <typename W, bool SCALED, int Q>
void values_q(const float *p, int64_t ldp, const typename W::T *v, int64_t ldv, const float *vs, int64_t ldvs,
              int64_t n_pos, float *out, int64_t ldo) {
    V8 acc[Q];
    for (int j = 0; j < Q; ++j) acc[j] = {vld1q_f32(out + j * ldo), vld1q_f32(out + j * ldo + 4)};
    for (int64_t s = 0; s < n_pos; ++s) {
        const V8 vv = W::load(v + s * ldv);
        for (int j = 0; j < Q; ++j) {
            const float pj = SCALED ? p[j * ldp + s] * vs[s * ldvs] : p[j * ldp + s];
            acc[j].lo = vfmaq_n_f32(acc[j].lo, vv.lo, pj);
            acc[j].hi = vfmaq_n_f32(acc[j].hi, vv.hi, pj);
        }
    }
    for (int j = 0; j < Q; ++j) {
        vst1q_f32(out + j * ldo, acc[j].lo);
        vst1q_f32(out + j * ldo + 4, acc[j].hi);
    }
}

template <typename W, KvElem E>
void attn_values_neon(const float *p, int64_t ldp, int32_t nq, const void *vv, int64_t ldv, const float *vs,
                      int64_t ldvs, int64_t n_pos, int32_t d, float *out, int64_t ldo) {
    constexpr bool S = E == kKvI8;
    const typename W::T *v = static_cast<const typename W::T *>(vv);
    const int32_t d8 = d - d % 8;
    for (int32_t i = 0; i < d8; i += 8) {
        int32_t j = 0;
        for (; j + 4 <= nq; j += 4) values_q<W, S, 4>(p + j * ldp, ldp, v + i, ldv, vs, ldvs, n_pos, out + j * ldo + i, ldo);
        for (; j < nq; ++j) values_q<W, S, 1>(p + j * ldp, ldp, v + i, ldv, vs, ldvs, n_pos, out + j * ldo + i, ldo);
    }
    for (int32_t j = 0; j < nq; ++j)  // the last d % 8 columns
        for (int32_t i = d8; i < d; ++i) {
            float acc = out[j * ldo + i];
            for (int64_t s = 0; s < n_pos; ++s)
                acc = __builtin_fmaf(S ? p[j * ldp + s] * vs[s * ldvs] : p[j * ldp + s], W::conv(v[s * ldv + i]), acc);
            out[j * ldo + i] = acc;
        }
}

// Integer products without the dot product instructions: vmull_s8 / vmull_high_s8 multiply 8 byte pairs into
// int16 (exact: at most 128 * 128), vpadalq_s16 adds pairs of those into the int32 lanes. (Adding a second
// product in int16 with vmlal_s8 would overflow for -128 * -128 twice, which int16 activations' digits hold.)
struct Mull {
    static int32x4_t dot1(int32x4_t acc, int8x16_t x, int8x16_t w) {
        acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(x), vget_low_s8(w)));
        return vpadalq_s16(acc, vmull_high_s8(x, w));
    }
    static int32x4_t dot2(int32x4_t acc, int8x16_t x0, int8x16_t w0, int8x16_t x1, int8x16_t w1) {
        return dot1(dot1(acc, x0, w0), x1, w1);
    }
};

void mm_q8_neon(const int8_t *x, int64_t ldx, int64_t M, const int8_t *w, int64_t ldw, int64_t n, int nr, int32_t *y,
                int64_t ldy) {
    mm_q8<Mull>(x, ldx, M, w, ldw, n, nr, y, ldy);
}

void mm_q4_neon(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s, int64_t lds,
                int64_t n, int group, int nr, float *y, int64_t ldy) {
    mm_q4<Mull>(x, ldx, M, w, ldw, s, lds, n, group, nr, y, ldy);
}

void mm_qb_neon(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, int bits, const float *s,
                const uint8_t *z, int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy) {
    mm_qb<Mull>(x, ldx, M, w, ldw, bits, s, z, lds, n, group, nr, y, ldy);
}

// 16 int32 (each in [-127, 127], or a saturated conversion of Inf) to their low bytes, in order, as the cast
// of the scalar reference takes them: narrowing keeps the low half.
inline int8x16_t low_bytes(int32x4_t a, int32x4_t b, int32x4_t c, int32x4_t d) {
    const int16x8_t ab = vcombine_s16(vmovn_s32(a), vmovn_s32(b)), cd = vcombine_s16(vmovn_s32(c), vmovn_s32(d));
    return vcombine_s8(vmovn_s16(ab), vmovn_s16(cd));
}

// One row of quant_rows (kernels.h). The largest |x| as an integer (abs_bits_max, kernels.h). x * inv rounded to nearest even by vcvtnq (nearbyintf's rounding in the default mode). The last
// partial 16 values go through a zero-padded copy.
void quant_row(const float *x, int64_t n, int8_t *q, int64_t ldq, float *scale) {
    const uint32x4_t abs = vdupq_n_u32(0x7fffffff);
    uint32x4_t mx = vdupq_n_u32(0);
    const int64_t n4 = n - n % 4;
    for (int64_t i = 0; i < n4; i += 4) mx = vmaxq_u32(mx, vandq_u32(vreinterpretq_u32_f32(vld1q_f32(x + i)), abs));
    std::memset(q, 0, static_cast<size_t>(ldq));
    const float inv = row_quant_scale(abs_bits_max(x, n4, n, vmaxvq_u32(mx)), 127.0f, scale);
    if (inv == 0.0f) return;
    const auto conv = [inv](const float *p) { return vcvtnq_s32_f32(vmulq_n_f32(vld1q_f32(p), inv)); };
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        vst1q_s8(q + i, low_bytes(conv(x + i), conv(x + i + 4), conv(x + i + 8), conv(x + i + 12)));
    if (i < n) {
        float t[16] = {};
        int8_t b[16];
        std::memcpy(t, x + i, static_cast<size_t>(n - i) * 4);
        vst1q_s8(b, low_bytes(conv(t), conv(t + 4), conv(t + 8), conv(t + 12)));
        std::memcpy(q + i, b, static_cast<size_t>(n - i));
    }
}

void quant_rows_neon(const float *x, int64_t ldx, int64_t M, int64_t n, int8_t *q, int64_t ldq, float *scale) {
    for (int64_t m = 0; m < M; ++m) quant_row(x + m * ldx, n, q + m * ldq, ldq, scale + m);
}

#define PANGU_NEON_ATTN_VALUES \
    { attn_values_neon<F32, kKvF32>, attn_values_neon<F16, kKvF16>, attn_values_neon<BF16, kKvBF16>, \
      attn_values_neon<I8, kKvI8> }
#define PANGU_NEON_ATTN_SCORES \
    { attn_scores_by_mm<mm<F32>, 4>, attn_scores_by_mm<mm<F16>, 2>, attn_scores_by_mm<mm<BF16>, 2>, \
      attn_scores_by_mm<mm<I8>, 1> }
const Table kNeon = {"neon",           mm<F32>,         mm<BF16>,         mm<F16>,      mm<I8>, dot_neon,
                     PANGU_NEON_ATTN_VALUES, PANGU_NEON_ATTN_SCORES, scale_max_scalar, exp_sum_scalar, swiglu_scalar,
                     nullptr,          nullptr,
                     quant_rows_neon,  mm_q8_neon,       mm_q4_neon,    mm_qb_neon};
// With the dot product instructions (kernels_neon_dotprod.cpp).
const Table kNeonDot = {"neon",           mm<F32>,         mm<BF16>,         mm<F16>,      mm<I8>, dot_neon,
                        PANGU_NEON_ATTN_VALUES, PANGU_NEON_ATTN_SCORES, scale_max_scalar, exp_sum_scalar, swiglu_scalar,
                        nullptr,          nullptr,
                        quant_rows_neon,  mm_q8_neondot,    mm_q4_neondot, mm_qb_neondot};
#undef PANGU_NEON_ATTN_VALUES
#undef PANGU_NEON_ATTN_SCORES

}  // namespace

const Table *neon() {
    static const bool dot = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
    return dot ? &kNeonDot : &kNeon;
}

const Table *neon_nodot() { return &kNeon; }

}  // namespace kernels
}  // namespace pangu
#endif
