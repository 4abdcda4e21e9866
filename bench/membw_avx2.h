/* membw's reader for the C++ benchmarks (bench_matmul, bench_attention), built as the membw tool is
 * (-march=native there): with 16-byte SSE loads a thread reads a quarter slower than with AVX2's 32-byte ones,
 * and the floor would be too low. Their users check for AVX2 before measuring a floor. */
#pragma once
#if defined(__x86_64__) && !defined(__AVX2__)
#pragma GCC push_options
#pragma GCC target("avx2")
#include "membw.h"
#pragma GCC pop_options
#else
#include "membw.h"
#endif
