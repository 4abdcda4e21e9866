// Compute kernels of the CPU backend. Every kernel has a portable scalar version (the reference) and, where
// the CPU has them, vector versions picked once at run time from the CPU's features.
//
// Reduction order is fixed per output element and independent of how many rows or threads a call uses, so
// results are batch-invariant and thread-count-invariant. The canonical order of a dot product of length n:
// 16 partial sums s[j] (j = i mod 16) over the first n - n%16 elements, combined as
// ((s0+s8)+(s4+s12)) + ((s2+s10)+(s6+s14)) + ((s1+s9)+(s5+s13)) + ((s3+s11)+(s7+s15)) via a fixed tree,
// then the tail added element by element. Vector kernels follow the same tree so they agree with each other
// bit for bit on one machine; the scalar reference follows it too, with separate multiply and add where the
// vector kernels use FMA, so tests compare them with a tolerance.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pangu {
namespace kernels {

// y[r] = dot(x, W[r]) for `nr` consecutive weight rows starting at w (row stride `ldw` elements), r < nr <= 4.
using DotRowsFn = void (*)(const float *x, const void *w, int64_t ldw, int64_t n, int nr, float *y);

struct Table {
    const char *name;            // "scalar", "avx2", "neon"
    DotRowsFn dot_f32;
    DotRowsFn dot_bf16;
    DotRowsFn dot_f16;
    DotRowsFn dot_i8;            // int8 weights: the raw sum of x * q; the caller applies the row's scale
    float (*dot)(const float *a, const float *b, int64_t n);          // f32 . f32
    void (*axpy)(float a, const float *x, float *y, int64_t n);       // y += a * x
};

// The best table for this CPU (decided once). PANGU_KERNELS=scalar forces the reference.
const Table &best();
const Table &scalar();
// nullptr where the CPU or the build lacks it.
const Table *avx2();

}  // namespace kernels
}  // namespace pangu
