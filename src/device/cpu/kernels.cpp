#include "device/cpu/kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "model/tensor.h"

namespace pangu {
namespace kernels {

namespace {

template <typename Load>
inline float dot_canonical(const float *x, int64_t n, Load load) {
    float s[8] = {0};
    const int64_t n8 = n - n % 8;
    for (int64_t i = 0; i < n8; i += 8)
        for (int j = 0; j < 8; ++j) s[j] += x[i + j] * load(i + j);
    float r = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
    for (int64_t i = n8; i < n; ++i) r += x[i] * load(i);
    return r;
}

template <typename T, float (*CONV)(T)>
void mm_scalar(const float *x, int64_t ldx, int64_t M, const void *wv, int64_t ldw, int64_t n, int nr, float *y,
               int64_t ldy) {
    const T *w = static_cast<const T *>(wv);
    for (int64_t m = 0; m < M; ++m)
        for (int r = 0; r < nr; ++r) {
            const T *row = w + r * ldw;
            y[m * ldy + r] = dot_canonical(x + m * ldx, n, [row](int64_t i) { return CONV(row[i]); });
        }
}

inline float conv_f32(float v) { return v; }
inline float conv_bf16(uint16_t h) { return bf16_to_f32(h); }
inline float conv_f16(uint16_t h) { return f16_to_f32(h); }
inline float conv_i8(int8_t v) { return static_cast<float>(v); }

float dot_scalar(const float *a, const float *b, int64_t n) {
    return dot_canonical(a, n, [b](int64_t i) { return b[i]; });
}

template <typename T, float (*CONV)(T), bool SCALED>
void attn_values_scalar(const float *p, int64_t ldp, int32_t nq, const void *vv, int64_t ldv, const float *vs,
                        int64_t ldvs, int64_t n_pos, int32_t d, float *out, int64_t ldo) {
    const T *v = static_cast<const T *>(vv);
    for (int32_t j = 0; j < nq; ++j)
        for (int64_t s = 0; s < n_pos; ++s) {
            const float pj = SCALED ? p[j * ldp + s] * vs[s * ldvs] : p[j * ldp + s];
            for (int32_t i = 0; i < d; ++i) out[j * ldo + i] += pj * CONV(v[s * ldv + i]);
        }
}

}  // namespace

float scale_max_scalar(float *x, int64_t n, float scale) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) {
        x[i] *= scale;
        mx = x[i] > mx ? x[i] : mx;
    }
    return mx;
}

float exp_sum_scalar(float *x, int64_t n, float shift) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
        x[i] = std::exp(x[i] - shift);
        sum += x[i];
    }
    return sum;
}

void swiglu_scalar(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void quant_rows_scalar(const float *x, int64_t ldx, int64_t M, int64_t n, int8_t *q, int64_t ldq, float *scale) {
    for (int64_t m = 0; m < M; ++m) {
        const float *xr = x + m * ldx;
        int8_t *qr = q + m * ldq;
        std::memset(qr, 0, static_cast<size_t>(ldq));
        const float inv = row_quant_scale(abs_bits_max(xr, 0, n, 0), 127.0f, scale + m);
        if (inv == 0.0f) continue;
        for (int64_t i = 0; i < n; ++i) qr[i] = static_cast<int8_t>(std::nearbyint(xr[i] * inv));
    }
}

void quant_rows16(const float *x, int64_t ldx, int64_t M, int64_t n, int8_t *q, int64_t ldq, float *scale) {
    for (int64_t m = 0; m < M; ++m) {
        const float *xr = x + m * ldx;
        int8_t *hi = q + 2 * m * ldq, *lo = hi + ldq;
        std::memset(hi, 0, static_cast<size_t>(2 * ldq));
        const float inv = row_quant_scale(abs_bits_max(xr, 0, n, 0), 32639.0f, scale + m);
        if (inv == 0.0f) continue;
        for (int64_t i = 0; i < n; ++i) {
            const int32_t v = static_cast<int32_t>(std::nearbyint(xr[i] * inv));
            const int32_t h = (v + 128) >> 8;  // arithmetic shift: the floor
            hi[i] = static_cast<int8_t>(h);
            lo[i] = static_cast<int8_t>(v - 256 * h);
        }
    }
}

void mm_q8_scalar(const int8_t *x, int64_t ldx, int64_t M, const int8_t *w, int64_t ldw, int64_t n, int nr, int32_t *y,
                  int64_t ldy) {
    for (int64_t m = 0; m < M; ++m)
        for (int r = 0; r < nr; ++r) {
            int32_t acc = 0;
            for (int64_t i = 0; i < n; ++i) acc += int32_t(x[m * ldx + i]) * int32_t(w[r * ldw + i]);
            y[m * ldy + r] = acc;
        }
}

// Column k of a PGD_I4 row: run k / 64, byte k % 32 of it, low nibble for k % 64 < 32 (device.h).
static inline int32_t i4_at(const uint8_t *row, int64_t k) {
    const uint8_t b = row[(k / 64) * 32 + k % 32];
    return static_cast<int32_t>(k % 64 < 32 ? b & 15 : b >> 4) - 8;
}

// The groups are added in order with a fused multiply-add each.
void mm_q4_scalar(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s, int64_t lds,
                  int64_t n, int group, int nr, float *y, int64_t ldy) {
    for (int64_t m = 0; m < M; ++m)
        for (int r = 0; r < nr; ++r) {
            float acc = 0.0f;
            for (int64_t g = 0; g < n / group; ++g) {
                int32_t isum = 0;
                for (int64_t k = g * group; k < (g + 1) * group; ++k)
                    isum += int32_t(x[m * ldx + k]) * i4_at(w + r * ldw, k);
                acc = std::fma(static_cast<float>(isum), s[r * lds + g], acc);
            }
            y[m * ldy + r] = acc;
        }
}

// The groups are added in order with a fused multiply-add each, as in mm_q4_scalar.
void mm_qb_scalar(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, int bits, const float *s,
                  const uint8_t *z, int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy) {
    for (int64_t m = 0; m < M; ++m)
        for (int r = 0; r < nr; ++r) {
            float acc = 0.0f;
            for (int64_t g = 0; g < n / group; ++g) {
                int32_t isum = 0, xsum = 0;
                for (int64_t k = g * group; k < (g + 1) * group; ++k) {
                    isum += int32_t(x[m * ldx + k]) * pgd_qb_level(w + r * ldw, bits, k);
                    xsum += x[m * ldx + k];
                }
                const int32_t zp = z ? z[r * lds + g] : 1 << (bits - 1);
                acc = std::fma(static_cast<float>(isum - zp * xsum), s[r * lds + g], acc);
            }
            y[m * ldy + r] = acc;
        }
}

namespace {

const Table kScalar = {"scalar",
                       mm_scalar<float, conv_f32>,
                       mm_scalar<uint16_t, conv_bf16>,
                       mm_scalar<uint16_t, conv_f16>,
                       mm_scalar<int8_t, conv_i8>,
                       dot_scalar,
                       {attn_values_scalar<float, conv_f32, false>, attn_values_scalar<uint16_t, conv_f16, false>,
                        attn_values_scalar<uint16_t, conv_bf16, false>, attn_values_scalar<int8_t, conv_i8, true>},
                       {attn_scores_by_mm<mm_scalar<float, conv_f32>, 4>, attn_scores_by_mm<mm_scalar<uint16_t, conv_f16>, 2>,
                        attn_scores_by_mm<mm_scalar<uint16_t, conv_bf16>, 2>, attn_scores_by_mm<mm_scalar<int8_t, conv_i8>, 1>},
                       scale_max_scalar,
                       exp_sum_scalar,
                       swiglu_scalar,
                       nullptr,
                       nullptr,
                       quant_rows_scalar,
                       mm_q8_scalar,
                       mm_q4_scalar,
                       mm_qb_scalar};

const Table *choose() {
    if (const char *env = std::getenv("PANGU_KERNELS")) {
        for (const Table *t : {&kScalar, avx2(), avx512(), neon()})
            if (t && std::strcmp(env, t->name) == 0) return t;
    }
    if (const Table *t = avx512()) return t;
    if (const Table *t = avx2()) return t;
    if (const Table *t = neon()) return t;
    return &kScalar;
}

}  // namespace

const Table &scalar() { return kScalar; }

const Table &best() {
    static const Table *t = choose();
    return *t;
}

#if !(defined(__x86_64__) || defined(_M_X64))
const Table *avx2() { return nullptr; }
const Table *avx512() { return nullptr; }
#endif
#if !defined(__aarch64__)
const Table *neon() { return nullptr; }
#endif

}  // namespace kernels
}  // namespace pangu
