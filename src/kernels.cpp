#include "kernels.h"

#include <cstdlib>
#include <cstring>

#include "tensor.h"

namespace pangu {
namespace kernels {

namespace {

template <typename Load>
inline float dot_canonical(const float *x, int64_t n, Load load) {
    float s[16] = {0};
    const int64_t n16 = n - n % 16;
    for (int64_t i = 0; i < n16; i += 16)
        for (int j = 0; j < 16; ++j) s[j] += x[i + j] * load(i + j);
    float r = (((s[0] + s[8]) + (s[4] + s[12])) + ((s[2] + s[10]) + (s[6] + s[14]))) +
              (((s[1] + s[9]) + (s[5] + s[13])) + ((s[3] + s[11]) + (s[7] + s[15])));
    for (int64_t i = n16; i < n; ++i) r += x[i] * load(i);
    return r;
}

void dot_f32_scalar(const float *x, const void *w, int64_t ldw, int64_t n, int nr, float *y) {
    for (int r = 0; r < nr; ++r) {
        const float *row = static_cast<const float *>(w) + r * ldw;
        y[r] = dot_canonical(x, n, [row](int64_t i) { return row[i]; });
    }
}

void dot_bf16_scalar(const float *x, const void *w, int64_t ldw, int64_t n, int nr, float *y) {
    for (int r = 0; r < nr; ++r) {
        const uint16_t *row = static_cast<const uint16_t *>(w) + r * ldw;
        y[r] = dot_canonical(x, n, [row](int64_t i) { return bf16_to_f32(row[i]); });
    }
}

void dot_f16_scalar(const float *x, const void *w, int64_t ldw, int64_t n, int nr, float *y) {
    for (int r = 0; r < nr; ++r) {
        const uint16_t *row = static_cast<const uint16_t *>(w) + r * ldw;
        y[r] = dot_canonical(x, n, [row](int64_t i) { return f16_to_f32(row[i]); });
    }
}

void dot_i8_scalar(const float *x, const void *w, int64_t ldw, int64_t n, int nr, float *y) {
    for (int r = 0; r < nr; ++r) {
        const int8_t *row = static_cast<const int8_t *>(w) + r * ldw;
        y[r] = dot_canonical(x, n, [row](int64_t i) { return static_cast<float>(row[i]); });
    }
}

float dot_scalar(const float *a, const float *b, int64_t n) {
    return dot_canonical(a, n, [b](int64_t i) { return b[i]; });
}

void axpy_scalar(float a, const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

const Table kScalar = {"scalar",       dot_f32_scalar, dot_bf16_scalar, dot_f16_scalar,
                       dot_i8_scalar,  dot_scalar,     axpy_scalar};

const Table *choose() {
    const char *env = std::getenv("PANGU_KERNELS");
    if (env && std::strcmp(env, "scalar") == 0) return &kScalar;
    if (const Table *t = avx2()) return t;
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
#endif

}  // namespace kernels
}  // namespace pangu
