// AVX2 integer kernels without VNNI. Compiled with -mavx2 -mfma like kernels_avx2.cpp; used by the AVX2 table
// and by the AVX-512 table on CPUs without VNNI.
//
// mm_q8 widens both operands to int16 (vpmovsxbw) and multiplies pairs into int32 with vpmaddwd: exact for every
// int8 value. vpmaddubsw (unsigned x signed bytes, pairs summed into saturating int16) would need one operand
// made unsigned, as |w| times x with w's sign, and the activations of int16 rows (quant_rows16's digits) hold
// -128: -128 * -128 twice is 32768, one more than int16 holds, and -(-128) is -128 again.
// mm_q4 does use vpmaddubsw: nibbles (at most 15) times x, a pair at most 3840 in magnitude; lo + hi and the
// correction -8 * x stay below 2^15. So does mm_qb for levels below 64 (2 to 6 bits); 8-bit levels (255 * -128
// twice is -65280) go through mm_q8's widening as u - 128.
#include "device/cpu/kernels_avx2_int.h"

namespace pangu {
namespace kernels {

namespace {

struct Madd {
    static constexpr bool kSide = false;
    struct V {
        __m256i a, b;  // 32 bytes as 2 x 16 int16
    };
    using XQ8 = V;
    using WQ8 = V;
    static V widen16(const int8_t *p) {
        return {_mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))),
                _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p + 16)))};
    }
    static V xq8(const int8_t *p) { return widen16(p); }
    static V wq8(const int8_t *p) { return widen16(p); }
    static __m256i side(__m256i s, const V &) { return s; }
    static __m256i dot_q8(__m256i acc, const V &x, const V &w) {
        return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(x.a, w.a), _mm256_madd_epi16(x.b, w.b)));
    }
    static __m256i fix_q8(__m256i acc, __m256i) { return acc; }
    // mm_q4: int16 pair sums until widen
    static __m256i part(__m256i acc, __m256i nib, __m256i x) {
        return _mm256_add_epi16(acc, _mm256_maddubs_epi16(nib, x));
    }
    static __m256i ncorr(__m256i x) {
        return _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_maddubs_epi16(_mm256_set1_epi8(8), x));
    }
    static __m256i add(__m256i a, __m256i b) { return _mm256_add_epi16(a, b); }
    static __m256i widen(__m256i acc) { return _mm256_madd_epi16(acc, _mm256_set1_epi16(1)); }
    // mm_qb: levels below 64 unsigned (a pair at most 63 * 128 * 2 in magnitude); 8-bit levels as u - 128, signed,
    // through mm_q8's widening (255 * -128 twice would saturate vpmaddubsw's int16). Lane l sums columns 4l to
    // 4l + 3 in dot_u and xsum, 2l, 2l + 1, 2l + 16 and 2l + 17 in dot_s8 and xsum_s8.
    static constexpr bool kU8 = false;
    static __m256i dot_u(__m256i acc, __m256i u, __m256i x) {
        return _mm256_add_epi32(acc, widen(_mm256_maddubs_epi16(u, x)));
    }
    static __m256i xsum(__m256i acc, __m256i x) { return dot_u(acc, _mm256_set1_epi8(1), x); }
    static V widen16(__m256i v) {
        return {_mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)), _mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1))};
    }
    static __m256i dot_s8(__m256i acc, __m256i v, __m256i x) { return dot_q8(acc, widen16(x), widen16(v)); }
    static __m256i xsum_s8(__m256i acc, __m256i x) { return dot_s8(acc, _mm256_set1_epi8(1), x); }
};

// 32 int32 (each in [-127, 127], or the cast of Inf/NaN: 0x80000000) to their low bytes, in order: masked to
// bytes, then packed without saturation coming into play, the 128-bit lanes' interleave undone.
inline __m256i low_bytes(__m256i a, __m256i b, __m256i c, __m256i d) {
    const __m256i m = _mm256_set1_epi32(0xff);
    const __m256i ab = _mm256_packus_epi32(_mm256_and_si256(a, m), _mm256_and_si256(b, m));
    const __m256i cd = _mm256_packus_epi32(_mm256_and_si256(c, m), _mm256_and_si256(d, m));
    return _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// One row of quant_rows (kernels.h); the largest |x| as an integer, as in kernels_avx512vnni.cpp. The last
// partial 32 values go through a zero-padded copy.
void quant_row(const float *x, int64_t n, int8_t *q, int64_t ldq, float *scale) {
    const __m256i abs = _mm256_set1_epi32(0x7fffffff);
    __m256i mx = _mm256_setzero_si256();
    const int64_t n8 = n - n % 8;
    for (int64_t i = 0; i < n8; i += 8)
        mx = _mm256_max_epu32(mx, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(x + i)), abs));
    alignas(32) uint32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i *>(lanes), mx);
    uint32_t bits = 0;
    for (uint32_t l : lanes) bits = l > bits ? l : bits;
    std::memset(q, 0, static_cast<size_t>(ldq));
    const float r = row_quant_scale(abs_bits_max(x, n8, n, bits), 127.0f, scale);
    if (r == 0.0f) return;
    const __m256 inv = _mm256_set1_ps(r);
    const auto conv = [inv](const float *p) { return _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p), inv)); };
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(q + i),
                            low_bytes(conv(x + i), conv(x + i + 8), conv(x + i + 16), conv(x + i + 24)));
    if (i < n) {
        alignas(32) float t[32] = {};
        alignas(32) int8_t b[32];
        std::memcpy(t, x + i, static_cast<size_t>(n - i) * 4);
        _mm256_store_si256(reinterpret_cast<__m256i *>(b), low_bytes(conv(t), conv(t + 8), conv(t + 16), conv(t + 24)));
        std::memcpy(q + i, b, static_cast<size_t>(n - i));
    }
}

}  // namespace

void quant_rows_avx2(const float *x, int64_t ldx, int64_t M, int64_t n, int8_t *q, int64_t ldq, float *scale) {
    for (int64_t m = 0; m < M; ++m) quant_row(x + m * ldx, n, q + m * ldq, ldq, scale + m);
}

void mm_q8_avx2(const int8_t *x, int64_t ldx, int64_t M, const int8_t *w, int64_t ldw, int64_t n, int nr, int32_t *y,
                int64_t ldy) {
    mm_q8<Madd>(x, ldx, M, w, ldw, n, nr, y, ldy);
}

void mm_q4_avx2(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s, int64_t lds,
                int64_t n, int group, int nr, float *y, int64_t ldy) {
    mm_q4<Madd>(x, ldx, M, w, ldw, s, lds, n, group, nr, y, ldy);
}

void mm_qb_avx2(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, int bits, const float *s,
                const uint8_t *z, int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy) {
    mm_qb<Madd>(x, ldx, M, w, ldw, bits, s, z, lds, n, group, nr, y, ldy);
}

}  // namespace kernels
}  // namespace pangu
