#include "device/cpu/kernels.h"

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

void attn_values_scalar(const float *p, int64_t ldp, int32_t nq, const float *v, int64_t ldv, int64_t n_pos,
                        int32_t d, float *out, int64_t ldo) {
    for (int32_t j = 0; j < nq; ++j)
        for (int64_t s = 0; s < n_pos; ++s)
            for (int32_t i = 0; i < d; ++i) out[j * ldo + i] += p[j * ldp + s] * v[s * ldv + i];
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

namespace {

const Table kScalar = {"scalar",
                       mm_scalar<float, conv_f32>,
                       mm_scalar<uint16_t, conv_bf16>,
                       mm_scalar<uint16_t, conv_f16>,
                       mm_scalar<int8_t, conv_i8>,
                       dot_scalar,
                       attn_values_scalar,
                       scale_max_scalar,
                       exp_sum_scalar,
                       swiglu_scalar,
                       nullptr,
                       nullptr};

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
