// W8A16 products by bf16 dot products (AVX512-BF16: vdpbf16ps). Compiled with -mavx512bf16 on its own; the
// AVX-512 table uses these only on CPUs that report the extension (kernels_avx512.cpp).
//
// Why: with bf16 activations, both operands of a W8A16 product are bf16 values (an int8 is one exactly), and
// vdpbf16ps multiplies 32 pairs and adds them into 16 fp32 sums in one instruction, where the fp32 path needs
// two fused multiply-adds. A batch of rows (prefill, a draft's verification) is bound by those instructions;
// decode is bound by memory and does not notice. The products of two bf16 values are exact in fp32.
//
// Reduction order: 16 lane sums s[j]; 32 elements at a time, lane j takes the pair (2j, 2j+1) of them (the
// instruction's own order within the pair); the last partial group loaded with a mask, absent elements zero;
// then s[j] + s[j+8] and the 8-lane tree of kernels.h. The same for every blocking, so batch-invariant.
// GCC 12's avx512fintrin.h initializes its "undefined" vectors from themselves (GCC bug 105593), see
// kernels_avx512.cpp.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "device/cpu/kernels.h"
#include "device/cpu/kernels_avx512_tree.h"

namespace pangu {
namespace kernels {

namespace {

// 32 int8 weights (the first `m` bytes only with a mask) as 32 bf16 values in order.
inline __m512bh widen(const int8_t *p) {
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))));
    const __m512 hi =
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p + 16))));
    return _mm512_cvtne2ps_pbh(hi, lo);  // elements 0-15 from lo, 16-31 from hi
}
inline __m512bh widen(const int8_t *p, __mmask32 m) {
    const __m256i b = _mm256_maskz_loadu_epi8(m, p);
    const __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(b)));
    const __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(b, 1)));
    return _mm512_cvtne2ps_pbh(hi, lo);
}

// RM rows of x (bf16) against NR weight rows; PF prefetches the rows that follow the block, as in
// kernels_avx512.cpp. All loops unrolled so that the accumulators stay in registers.
template <int RM, int NR, bool PF>
inline void micro(const uint16_t *x, int64_t ldx, const int8_t *w, int64_t ldw, int64_t n, float *y, int64_t ldy) {
    static_assert(RM * NR + RM + 1 <= 32, "block does not fit in the 32 vector registers");
    __m512 acc[RM][NR];
#pragma GCC unroll 8
    for (int r = 0; r < RM; ++r)
#pragma GCC unroll 8
        for (int c = 0; c < NR; ++c) acc[r][c] = _mm512_setzero_ps();
    const int64_t n32 = n - n % 32;
    int64_t i = 0;
    for (; i < n32; i += 32) {
        if (PF && i % 64 == 0)
#pragma GCC unroll 8
            for (int c = 0; c < NR; ++c) _mm_prefetch(reinterpret_cast<const char *>(w + (NR + c) * ldw + i), _MM_HINT_T0);
        __m512bh xv[RM];
#pragma GCC unroll 8
        for (int r = 0; r < RM; ++r) xv[r] = (__m512bh)_mm512_loadu_si512(x + r * ldx + i);
#pragma GCC unroll 8
        for (int c = 0; c < NR; ++c) {
            const __m512bh wv = widen(w + c * ldw + i);
#pragma GCC unroll 8
            for (int r = 0; r < RM; ++r) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], xv[r], wv);
        }
    }
    if (i < n) {
        const __mmask32 m = static_cast<__mmask32>((1ull << (n - i)) - 1);
        // x rows are padded to an even length with a zero: pairs are whole
        const __mmask32 mx = static_cast<__mmask32>((1ull << ((n - i + 1) & ~int64_t(1))) - 1);
        __m512bh xv[RM];
#pragma GCC unroll 8
        for (int r = 0; r < RM; ++r) xv[r] = (__m512bh)_mm512_maskz_loadu_epi16(mx, x + r * ldx + i);
#pragma GCC unroll 8
        for (int c = 0; c < NR; ++c) {
            const __m512bh wv = widen(w + c * ldw + i, m);
#pragma GCC unroll 8
            for (int r = 0; r < RM; ++r) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], xv[r], wv);
        }
    }
    store_sums(acc, y, ldy);
}

template <int RM, bool PF>
inline void block4(const uint16_t *x, int64_t ldx, const int8_t *w, int64_t ldw, int64_t n, int nr, float *y,
                   int64_t ldy) {
    switch (nr) {
        case 4: micro<RM, 4, PF>(x, ldx, w, ldw, n, y, ldy); break;
        case 3: micro<RM, 3, PF>(x, ldx, w, ldw, n, y, ldy); break;
        case 2: micro<RM, 2, PF>(x, ldx, w, ldw, n, y, ldy); break;
        default: micro<RM, 1, PF>(x, ldx, w, ldw, n, y, ldy); break;
    }
}

}  // namespace

void pack_bx_avx512bf16(const float *x, int64_t ldx, int64_t M, int64_t n, uint16_t *out, int64_t ldo,
                        uint8_t *exact) {
    const __m512i low = _mm512_set1_epi32(0xffff);
    for (int64_t m = 0; m < M; ++m) {
        const float *xr = x + m * ldx;
        uint16_t *o = out + m * ldo;
        __mmask16 inexact = 0;
        for (int64_t i = 0; i < n; i += 16) {
            const __mmask16 k = n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - i)) - 1);
            const __m512i v = _mm512_maskz_loadu_epi32(k, xr + i);
            inexact |= _mm512_test_epi32_mask(v, low);
            _mm256_mask_storeu_epi16(o + i, k, _mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16)));
        }
        if (n % 2) o[n] = 0;
        exact[m] = inexact == 0;
    }
}

// As mm of kernels_avx512.cpp: a single row against up to 8 weight rows with prefetch; 2-6 rows (a draft's
// verification) in one block of 4 weight rows with prefetch; more rows in blocks of 6.
void mm_i8_bx_avx512bf16(const uint16_t *x, int64_t ldx, int64_t M, const void *wv, int64_t ldw, int64_t n, int nr,
                         float *y, int64_t ldy) {
    const int8_t *w = static_cast<const int8_t *>(wv);
    if (M == 1) {
        switch (nr) {
            case 8: micro<1, 8, true>(x, ldx, w, ldw, n, y, ldy); return;
            case 7: micro<1, 7, true>(x, ldx, w, ldw, n, y, ldy); return;
            case 6: micro<1, 6, true>(x, ldx, w, ldw, n, y, ldy); return;
            case 5: micro<1, 5, true>(x, ldx, w, ldw, n, y, ldy); return;
            case 4: micro<1, 4, true>(x, ldx, w, ldw, n, y, ldy); return;
            case 3: micro<1, 3, true>(x, ldx, w, ldw, n, y, ldy); return;
            case 2: micro<1, 2, true>(x, ldx, w, ldw, n, y, ldy); return;
            default: micro<1, 1, true>(x, ldx, w, ldw, n, y, ldy); return;
        }
    }
    for (int c = 0; c < nr; c += 4) {
        const int nc = nr - c < 4 ? nr - c : 4;
        const int8_t *wc = w + c * ldw;
        int64_t m = 0;
        for (; m + 6 <= M; m += 6) block4<6, true>(x + m * ldx, ldx, wc, ldw, n, nc, y + m * ldy + c, ldy);
        const uint16_t *xr = x + m * ldx;
        float *yr = y + m * ldy + c;
        switch (M - m) {
            case 5: block4<5, true>(xr, ldx, wc, ldw, n, nc, yr, ldy); break;
            case 4: block4<4, true>(xr, ldx, wc, ldw, n, nc, yr, ldy); break;
            case 3: block4<3, true>(xr, ldx, wc, ldw, n, nc, yr, ldy); break;
            case 2: block4<2, true>(xr, ldx, wc, ldw, n, nc, yr, ldy); break;
            case 1: block4<1, true>(xr, ldx, wc, ldw, n, nc, yr, ldy); break;
            default: break;
        }
    }
}

}  // namespace kernels
}  // namespace pangu

#pragma GCC diagnostic pop
