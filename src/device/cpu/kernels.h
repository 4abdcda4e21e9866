// Compute kernels of the CPU backend. Every kernel has a portable scalar version (the reference) and, where
// the CPU has them, vector versions picked once at run time from the CPU's features.
//
// Reduction order is fixed per output element and independent of how many rows or threads a call uses, so
// results are batch-invariant and thread-count-invariant. The canonical order of a dot product of length n
// (the scalar, AVX2 and NEON tables; the AVX-512 table first folds 16 partial sums into these 8, see
// kernels_avx512.cpp):
// 8 partial sums s[j] (j = i mod 8) over the first n - n%8 elements, combined as
// ((s0+s4)+(s2+s6)) + ((s1+s5)+(s3+s7)), then the tail added element by element. Vector kernels keep one
// 8-lane accumulator per output element and reduce it with that tree, so they agree with each other bit for
// bit on one machine whatever the blocking; the scalar reference follows the same order with separate
// multiply and add where the vector kernels use FMA, so tests compare the two with a tolerance.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cfloat>
#include <cstring>
#include <type_traits>

namespace pangu {
namespace kernels {

// Y[m][r] = dot(X[m], W[r]) for m < M and r < nr <= 8 consecutive weight rows: X rows are ldx floats apart,
// W rows ldw elements apart, Y rows ldy floats apart. The weight rows are loaded once for all M rows.
// For int8 weights the result is the raw sum of x * q; the caller applies the row's scale.
using MatmulBlockFn = void (*)(const float *x, int64_t ldx, int64_t M, const void *w, int64_t ldw, int64_t n,
                               int nr, float *y, int64_t ldy);

// The element types of a KV cache, indexing Table::attn_values.
enum KvElem : int { kKvF32, kKvF16, kKvBF16, kKvI8, kKvElems };

using AttnScoresFn = void (*)(const float *q, int32_t nq, int32_t d, const void *k, int64_t ldk, int64_t n, float *s,
                              int64_t lds);
using AttnValuesFn = void (*)(const float *p, int64_t ldp, int32_t nq, const void *v, int64_t ldv, const float *vs,
                              int64_t ldvs, int64_t n_pos, int32_t d, float *out, int64_t ldo);

struct Table {
    const char *name;  // "scalar", "avx2", "avx512", "neon"
    MatmulBlockFn mm_f32;
    MatmulBlockFn mm_bf16;
    MatmulBlockFn mm_f16;
    MatmulBlockFn mm_i8;
    float (*dot)(const float *a, const float *b, int64_t n);  // f32 . f32, canonical order
    // Attention values for nq queries that share one V head, from V rows of element type e (KvElem): out[j*ldo
    // + i] += sum over s < n_pos of p'[j][s] * V[s][i], for i < d, where V rows are ldv elements apart and
    // p'[j][s] = p[j*ldp + s], or for kKvI8 p[j*ldp + s] * vs[s*ldvs] (the row's scale folded into the
    // probability, one product, so an int8 row is widened exactly and never scaled element by element; vs is
    // unused for the other types). Each element is one chain of multiply-adds in order of s, so a cache
    // processed tile by tile (one call per tile, accumulating) gives the bits of a single call.
    AttnValuesFn attn_values[kKvElems];
    // Attention scores of nq queries (query j at q + j * d) against n key rows of element type e, ldk elements
    // apart: s[j*lds + t] = q_j . k_t, each the dot product of the table's mm kernel of that type, bit for bit
    // (for kKvI8 the raw sum: the caller applies the row's scale). One call per tile of the cache, so the
    // queries stay in registers where they fit.
    AttnScoresFn attn_scores[kKvElems];
    // Softmax in two passes: x[i] *= scale for i < n, returning the largest; then x[i] = exp(x[i] - shift),
    // returning their sum. Each table has its own exp and order of summation (fixed, so still invariant).
    float (*scale_max)(float *x, int64_t n, float scale);
    float (*exp_sum)(float *x, int64_t n, float shift);
    // SwiGLU: g[i] = silu(g[i]) * u[i] for i < n.
    void (*swiglu)(float *g, const float *u, int64_t n);
    // Optional (NULL where the CPU lacks bf16 dot products): int8 weights against rows of x that are bf16
    // values, the W8A16 activations. pack_bx writes row m of x (n floats, ldx apart) as bf16 at out + m * ldo
    // (ldo >= n rounded up to even, the pad zero) and sets exact[m] to whether every value was a bf16 value
    // already; mm_i8_bx is mm_i8 for such rows (x: ldx uint16 apart), pairs of elements multiplied exactly
    // and summed by the dot-product instruction, half the multiply-add instructions of mm_i8. Rows that are
    // not exact go to mm_i8, a choice made per row from the row alone, so results stay batch-invariant.
    void (*pack_bx)(const float *x, int64_t ldx, int64_t M, int64_t n, uint16_t *out, int64_t ldo, uint8_t *exact);
    void (*mm_i8_bx)(const uint16_t *x, int64_t ldx, int64_t M, const void *w, int64_t ldw, int64_t n, int nr,
                     float *y, int64_t ldy);

    // ---- integer activations (W8A8, W4A8): exact integer sums, so every table gives the same int32 ----
    // Dynamic per-row quantization: for row m of x (n floats, ldx apart), amax = max |x|, inv = 127.0f / amax,
    // q[i] = (int8) nearbyintf(x[i] * inv) (round half to even), scale[m] = amax / 127.0f. A row of zeros gives
    // q = 0 and scale 0 (so does a row too small for inv to be finite: row_quant_scale); a row holding NaN or
    // Inf gives q = 0 and scale NaN (the output is NaN, as in float).
    // Rows are ldq bytes apart (ldq a multiple of 64), the pad after n set to zero.
    void (*quant_rows)(const float *x, int64_t ldx, int64_t M, int64_t n, int8_t *q, int64_t ldq, float *scale);
    // W8A8: y[m*ldy + r] = sum over i < n of x[m*ldx + i] * w[r*ldw + i], exact in int32, for r < nr <= 8.
    // x rows are zero-padded to a multiple of 64 (quant_rows' rows) and may hold -128 (quant_rows16's digits);
    // w rows are not padded.
    void (*mm_q8)(const int8_t *x, int64_t ldx, int64_t M, const int8_t *w, int64_t ldw, int64_t n, int nr,
                  int32_t *y, int64_t ldy);
    // W4A8 (PGD_I4 weights, device.h): y[m*ldy + r] = sum over groups g of s[r*lds + g] * isum(m, r, g), where
    // isum = sum over the group's columns k of x[m][k] * (v[r][k] - 8), exact in int32; the groups are added in
    // the table's own fixed order (fp32, so tables differ in the last bits, each batch-invariant). w rows are
    // ldw bytes apart; n a multiple of 64 and of `group` (a multiple of 32); r < nr <= 8.
    void (*mm_q4)(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s,
                  int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy);
    // Low-bit rows of one width `bits` (2, 3, 4, 6 or 8; PGD_QB's planes, device.h; 4 is PGD_I4's layout) with
    // zero points: y[m*ldy + r] = sum over groups g of s[r*lds + g] * (isum(m, r, g) - zp(r, g) * xsum(m, g)),
    // isum = sum over the group's columns k of x[m][k] * u[r][k] (u the unsigned level), xsum = the sum of
    // x[m][k] over the group, both exact in int32, zp = z[r*lds + g] or, for z == NULL, 2^(bits - 1). Groups
    // added in the table's own fixed order as for mm_q4. w rows are ldw bytes apart; n a multiple of 64 and of
    // `group` (a multiple of 32); r < nr <= 8.
    void (*mm_qb)(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, int bits, const float *s,
                  const uint8_t *z, int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy);
};

// Int16 activations (PGD_I16) as two int8 digits: for row m, amax = max |x|, x16 = (int) nearbyintf(x[i] *
// (32639.0f / amax)), hi = (x16 + 128) >> 8, lo = x16 - 256 * hi (both in [-128, 127]); hi goes to row 2m and
// lo to row 2m + 1 of q (ldq apart, padded with zeros), scale[m] = amax / 32639.0f. Zero and non-finite rows
// as quant_rows. mm_q8 and mm_q4 take the digit rows as they take int8 activations (-128 included).
void quant_rows16(const float *x, int64_t ldx, int64_t M, int64_t n, int8_t *q, int64_t ldq, float *scale);

// The largest |x[i]| for i0 <= i < n as the bits of a float, at least `bits`: non-negative floats order as their
// bits, and Inf and NaN lie above every finite value, so one integer maximum gives amax and whether the row is
// finite (quant_rows' vector versions take the vector part this way and finish with this).
inline uint32_t abs_bits_max(const float *x, int64_t i0, int64_t n, uint32_t bits) {
    for (int64_t i = i0; i < n; ++i) {
        uint32_t u;
        std::memcpy(&u, x + i, 4);
        u &= 0x7fffffffu;
        bits = u > bits ? u : bits;
    }
    return bits;
}

// The rule of quant_rows (qmax 127) and quant_rows16 (qmax 32639) from a row's abs_bits_max: sets *scale to
// amax / qmax (NaN for a row that is not finite) and returns the multiplier qmax / amax, or 0 when the row
// quantizes to zeros: all zero, not finite, or so small that qmax / amax overflows (amax below about 4e-37 for
// int8, 1e-34 for int16, subnormal rows: then x * inf would be cast to an integer, which is undefined), for
// which the scale is 0 as for a row of zeros.
inline float row_quant_scale(uint32_t amax_bits, float qmax, float *scale) {
    if (amax_bits >= 0x7f800000u) {
        *scale = NAN;
        return 0.0f;
    }
    float amax;
    std::memcpy(&amax, &amax_bits, 4);
    const float inv = amax == 0.0f ? INFINITY : qmax / amax;
    if (!(inv <= FLT_MAX)) {
        *scale = 0.0f;
        return 0.0f;
    }
    *scale = amax / qmax;
    return inv;
}

// Calls f with the width `bits` of PGD_QB rows (2, 3, 4, 6; anything else 8) as a compile-time constant
// (std::integral_constant<int, bits>): the dispatch of kernels specialised per width.
template <typename F>
inline void with_qb_width(int bits, F &&f) {
    switch (bits) {
        case 2: return f(std::integral_constant<int, 2>{});
        case 3: return f(std::integral_constant<int, 3>{});
        case 4: return f(std::integral_constant<int, 4>{});
        case 6: return f(std::integral_constant<int, 6>{});
        default: return f(std::integral_constant<int, 8>{});
    }
}

// The scalar reference's integer kernels, for tables without vector versions of their own.
void quant_rows_scalar(const float *x, int64_t ldx, int64_t M, int64_t n, int8_t *q, int64_t ldq, float *scale);
void mm_q8_scalar(const int8_t *x, int64_t ldx, int64_t M, const int8_t *w, int64_t ldw, int64_t n, int nr,
                  int32_t *y, int64_t ldy);
void mm_q4_scalar(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s,
                  int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy);
void mm_qb_scalar(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, int bits, const float *s,
                  const uint8_t *z, int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy);

// The AVX512-BF16 kernels (kernels_avx512bf16.cpp), for the AVX-512 table on CPUs that have the extension.
void pack_bx_avx512bf16(const float *x, int64_t ldx, int64_t M, int64_t n, uint16_t *out, int64_t ldo,
                        uint8_t *exact);
void mm_i8_bx_avx512bf16(const uint16_t *x, int64_t ldx, int64_t M, const void *w, int64_t ldw, int64_t n, int nr,
                         float *y, int64_t ldy);

// The AVX2 integer kernels (kernels_avx2_int.cpp: vpmaddwd, vpmaddubsw), for the AVX2 table and the AVX-512
// table on CPUs without VNNI; with AVX-VNNI (kernels_avxvnni.cpp), for the AVX2 table on CPUs that have it.
void quant_rows_avx2(const float *x, int64_t ldx, int64_t M, int64_t n, int8_t *q, int64_t ldq, float *scale);
void mm_q8_avx2(const int8_t *x, int64_t ldx, int64_t M, const int8_t *w, int64_t ldw, int64_t n, int nr, int32_t *y,
                int64_t ldy);
void mm_q4_avx2(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s, int64_t lds,
                int64_t n, int group, int nr, float *y, int64_t ldy);
void mm_qb_avx2(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, int bits, const float *s,
                const uint8_t *z, int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy);
void mm_q8_avxvnni(const int8_t *x, int64_t ldx, int64_t M, const int8_t *w, int64_t ldw, int64_t n, int nr, int32_t *y,
                   int64_t ldy);
void mm_q4_avxvnni(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s, int64_t lds,
                   int64_t n, int group, int nr, float *y, int64_t ldy);
void mm_qb_avxvnni(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, int bits, const float *s,
                   const uint8_t *z, int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy);

// The NEON integer kernels with the ARMv8.2 dot product instructions (kernels_neon_dotprod.cpp), for the NEON
// table on CPUs that have them.
void mm_q8_neondot(const int8_t *x, int64_t ldx, int64_t M, const int8_t *w, int64_t ldw, int64_t n, int nr, int32_t *y,
                   int64_t ldy);
void mm_q4_neondot(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s, int64_t lds,
                   int64_t n, int group, int nr, float *y, int64_t ldy);
void mm_qb_neondot(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, int bits, const float *s,
                   const uint8_t *z, int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy);

// The AVX512-VNNI integer kernels (kernels_avx512vnni.cpp), for the AVX-512 table on CPUs that have the
// extension.
void quant_rows_avx512vnni(const float *x, int64_t ldx, int64_t M, int64_t n, int8_t *q, int64_t ldq, float *scale);
void mm_q8_avx512vnni(const int8_t *x, int64_t ldx, int64_t M, const int8_t *w, int64_t ldw, int64_t n, int nr,
                      int32_t *y, int64_t ldy);
void mm_q4_avx512vnni(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s,
                      int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy);
void mm_qb_avx512vnni(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, int bits, const float *s,
                      const uint8_t *z, int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy);

// The scalar reference's softmax and SwiGLU, for tables without vector versions of their own.
float scale_max_scalar(float *x, int64_t n, float scale);
float exp_sum_scalar(float *x, int64_t n, float shift);
void swiglu_scalar(float *g, const float *u, int64_t n);

// The best table for this CPU (decided once). PANGU_KERNELS=scalar|avx2|avx512|neon asks for a table (the
// reference, or a narrower one to compare); a table the CPU or build lacks falls back to the best.
const Table &best();
const Table &scalar();

// attn_scores from a table's matmul kernel, eight key rows a call: the scalar, AVX2 and NEON tables' version.
template <MatmulBlockFn MM, size_t kElemBytes>
void attn_scores_by_mm(const float *q, int32_t nq, int32_t d, const void *k, int64_t ldk, int64_t n, float *s,
                       int64_t lds) {
    const uint8_t *kb = static_cast<const uint8_t *>(k);
    for (int64_t t = 0; t < n; t += 8)
        MM(q, d, nq, kb + t * ldk * int64_t(kElemBytes), ldk, d, static_cast<int>(n - t < 8 ? n - t : 8), s + t, lds);
}
// nullptr where the CPU or the build lacks it.
const Table *avx2();
const Table *avx512();
const Table *neon();

// The same tables with the integer kernels of a CPU without the dot-product extension (nullptr where the CPU or
// the build lacks the table): AVX2 without AVX-VNNI, AVX-512 without AVX512-VNNI, NEON without the dot product
// instructions. The tables above take the extension where the CPU has it; the tests hold both to the reference.
#if defined(__x86_64__) || defined(_M_X64)
const Table *avx2_novnni();
const Table *avx512_novnni();
#else
inline const Table *avx2_novnni() { return nullptr; }
inline const Table *avx512_novnni() { return nullptr; }
#endif
#if defined(__aarch64__)
const Table *neon_nodot();
#else
inline const Table *neon_nodot() { return nullptr; }
#endif

}  // namespace kernels
}  // namespace pangu
