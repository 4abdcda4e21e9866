// Low-bit weight quantization for pangu-quantize (issue #18): the math only, no file formats.
//  - grids: per row a width of 2, 3, 4, 6 or 8 bits, per group of columns a scale s and a zero point z, a level u
//    in [0, 2^b) standing for the weight (u - z) * s (device.h, PGD_QB);
//  - round-to-nearest (RTN) and GPTQ (Frantar et al. 2022: column-by-column quantization whose error is fed back
//    to the columns not yet quantized, weighted by the inverse Hessian of the layer's inputs);
//  - the calibration statistics GPTQ and the bit allocation need (InputStats), the importance of each output
//    channel and two ways to turn importances into widths;
//  - PGD_QB's bit-plane packing of one row and its row order.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <string>
#include <vector>

#include "calib.h"  // MatrixRM

namespace pangu {

constexpr int kLowBitWidths[] = {2, 3, 4, 6, 8};
bool lowbit_width_ok(int bits);

struct LowbitOptions {
    // Columns per (scale, zero) group: a multiple of 32 dividing cols, itself a multiple of 64.
    int64_t group = 128;
    // true: z = 2^(b-1), s = max|w_group| / (2^(b-1) - 1). false: the group's [min, max] widened to include 0,
    // s = (max - min) / (2^b - 1), z = clamp(round(-min / s), 0, 2^b - 1). 8-bit rows are always symmetric
    // (z = 128, s = amax / 127) whatever this says.
    bool symmetric = false;
    // GPTQ: quantize the columns in order of decreasing diag(H) (dead inputs counted with H_ii = 1); that order is
    // the STORED column order (LowbitMatrix::perm) and groups are runs of stored columns.
    bool act_order = false;
    double damp = 0.01;   // GPTQ: damp * mean(diag(H)) is added to H's diagonal
    int64_t block = 128;  // GPTQ: columns per lazy-update block
    int threads = 0;      // GPTQ: threads splitting the rows and the factorization (0: the online CPUs)
};

// A quantized matrix, unpacked: what a checkpoint stores, before bit-plane packing.
//
// Scales: every scale is rounded UP to F16 (the smallest F16 value >= the exact scale) and the rounded value is
// the one quantized with, so the stored weights are exactly what RTN chose or GPTQ compensated for, and the grid
// still spans the group's range (no value of an RTN group is clamped; each element is within s / 2). When some
// scale of the matrix is not 0 and not a normal F16 once rounded (above 65504, or below 2^-14), no scale of the
// matrix is rounded and f32_scales is set: the checkpoint must then store F32 scales.
struct LowbitMatrix {
    int64_t rows = 0, cols = 0, group = 0;
    std::vector<uint8_t> bits;   // [rows] width of each row (2, 3, 4, 6, 8)
    std::vector<uint8_t> level;  // [rows * cols] level u in [0, 2^bits[r]), columns in STORED order
    std::vector<float> scale;    // [rows * cols / group] the scale used; a group of zeros has 0
    std::vector<uint8_t> zero;   // [rows * cols / group]; 2^(b-1) for a group of zeros
    std::vector<int32_t> perm;   // empty, or [cols]: stored column c holds input column perm[c]
    bool f32_scales = false;     // some scale could not be a normal F16 (then none was rounded)

    float weight(int64_t r, int64_t c) const;  // (level - zero) * scale of stored column c
    MatrixRM dequantize() const;               // [rows, cols] in INPUT column order (perm undone)
};

// Round-to-nearest (ties to even) with the per-row widths `bits` (size rows). `name` names the tensor in errors:
// PANGU_ERR_NUMERIC for NaN or Inf in w, PANGU_ERR_INVALID_ARGUMENT for a width not in kLowBitWidths, a group that
// is not a positive multiple of 32, cols not a multiple of 64 or of the group, or bits.size() != rows.
LowbitMatrix rtn_quantize(const MatrixRM &w, const std::vector<uint8_t> &bits, const LowbitOptions &o,
                          const std::string &name);

// GPTQ. H [cols, cols] is the inputs' Hessian (InputStats::H; any positive multiple of X^T X gives the same
// result). Dead inputs (H_ii == 0) get H_ii = 1 and their weights set to 0, as GPTQ does; then damp *
// mean(diag(H)) is added to the diagonal and the upper Cholesky factor U of H^-1 (gptq_hinv_factor) drives the
// quantization: column c of a row is quantized, its error e = (w_c - q_c) / U_cc is subtracted, times U[c, c'],
// from every later column c' (eagerly inside a block of o.block columns, in one matrix product for the columns
// after the block). A group's (s, z) come from its CURRENT (updated) weights when its first column is reached;
// its later columns can then fall outside the grid and are clamped, as in GPTQ. Each row quantizes on its own
// grid and width: rows are independent given U.
// Scales: if the original weights' groups already need F32 scales the matrix is quantized with F32 scales;
// otherwise with F16 ones, and if an updated group then needs F32 the matrix is quantized again with F32 scales.
// Errors as rtn_quantize, plus NaN or Inf in H (PANGU_ERR_NUMERIC naming the element), H not [cols, cols]
// (PANGU_ERR_INVALID_ARGUMENT) and a Cholesky failure after damping (PANGU_ERR_NUMERIC).
// With H diagonal (no correlation between inputs) and act_order off, U is diagonal, no error is fed back and the
// result equals rtn_quantize's exactly.
LowbitMatrix gptq_quantize(const MatrixRM &w, const Eigen::MatrixXd &H, const std::vector<uint8_t> &bits,
                           const LowbitOptions &o, const std::string &name);

// The upper-triangular U with U^T U = H'^-1, H' = P^T H P with dead inputs fixed (H_ii = 1) and damped as above,
// P the column order `perm` (empty: the identity). Computed from one Cholesky factorization, of H' in reverse
// order (J H' J = R R^T gives H'^-1 = (J R^-1 J)^T (J R^-1 J), J the reversal), and R's inverse, instead of the
// three factorizations of inverting H' and factoring the inverse. Errors as gptq_quantize's for H.
Eigen::MatrixXd gptq_hinv_factor(const Eigen::MatrixXd &H, const std::vector<int32_t> &perm, double damp,
                                 const std::string &name, int threads = 0);

// Input statistics of one linear input point over calibration chunks X [tokens, cols]:
// H = 2/n * sum x x^T (a running average, so values stay moderate; each chunk's X^T X is formed in F32 on
// `threads` threads (0: the online CPUs) and accumulated in double), and per channel the sums of |x|, x and x^2
// in double. Memory: one [cols, cols] double.
struct InputStats {
    explicit InputStats(int64_t cols, int threads = 0);
    // rows = tokens. PANGU_ERR_NUMERIC for NaN or Inf in x; PANGU_ERR_INVALID_ARGUMENT for x.cols() != cols.
    void add(const MatrixRM &x);
    int threads = 0;
    int64_t n = 0;  // tokens seen
    Eigen::MatrixXd H;
    Eigen::VectorXd sum_abs, sum, sum_sq;
    Eigen::VectorXd mean_abs() const;  // sum_abs / n
    Eigen::VectorXd variance() const;  // population variance sum_sq / n - (sum / n)^2, at least 0
};

// The five-part importance of every output channel (row) of w [rows, cols] given its inputs' statistics. Each
// part is normalised within the layer (min-max to [0, 1]; a constant part is all 0) and `score` is
//   0.25 act + 0.25 hessian + 0.15 magnitude + 0.25 output + 0.10 variance
// of the normalised parts, whose raw values are (m = st.mean_abs(), v = st.variance(), |w| elementwise):
//   act       sum_k |w_rk| m_k / sum_k |w_rk|  (the mean |x| the row's weights see; 0 for a row of zeros)
//   hessian   mean over k of w_rk^2 / [H^-1]_kk^2, H dead-fixed and damped with `damp` as in GPTQ (the square
//             is issue #18's; OBS's saliency proper, w^2 / [H^-1]_kk, has the first power)
//   magnitude mean over k of |w_rk|
//   output    sum_k |w_rk| m_k  (|W| |x|)
//   variance  sum_k |w_rk| v_k / sum_k |w_rk|  (0 for a row of zeros)
// Errors: NaN or Inf in w (PANGU_ERR_NUMERIC), st of another width or with no tokens (PANGU_ERR_INVALID_ARGUMENT).
struct ImportanceParts {
    Eigen::VectorXd act, hessian, magnitude, output, variance, score;
};
ImportanceParts channel_importance(const MatrixRM &w, const InputStats &st, double damp, int threads = 0);

// Bit allocation per row from importance scores (PANGU_ERR_INVALID_ARGUMENT for a NaN or Inf score).
//  quantile: rows sorted by (score, row index) and cut into five bands of equal size (+-1 row: band of rank i is
//            floor(5 i / rows)), the lowest scores 2 bits, then 3, 4, 6, 8; a higher score never gets fewer bits.
//  budget:   every row starts at 2 bits; the greedy step takes the upgrade (one step along 2->3->4->6->8) with the
//            largest score_r * (4^-b - 4^-b') / (b' - b) (importance times error removed per bit; ties to the
//            lower row) and makes it if it fits the budget B = round(avg_bits * rows) bits, else drops it (it can
//            never fit later); it stops when no upgrade is left. The result uses between B - 1 and B bits: an
//            upgrade left undone costs 2 bits (4->6, 6->8) or found no bit left, so at most 1 bit is unspent; the
//            average is thus within (1 + 0.5) / rows of avg_bits. A step's gain grows with the score and the bits
//            left only shrink, so a row's step is taken before (or, if too dear, dropped with) the same step of
//            any row of lower score: a higher score never gets fewer bits. avg_bits must be in [2, 8] (else
//            PANGU_ERR_INVALID_ARGUMENT).
std::vector<uint8_t> allocate_quantile(const Eigen::VectorXd &score);
std::vector<uint8_t> allocate_budget(const Eigen::VectorXd &score, double avg_bits);

// Bit-plane packing of one row (device.h PGD_QB): levels [cols] in STORED order -> cols * bits / 8 bytes, the
// exact inverse of pgd_qb_level. PANGU_ERR_INVALID_ARGUMENT for cols not a multiple of 64, an unsupported width
// or a level >= 2^bits.
void qb_pack_row(const uint8_t *level, int64_t cols, int bits, uint8_t *out);
// The stored row order of PGD_QB: rows of one width together, widths ascending, rows of a width in increasing
// index; order[i] = the output channel of stored row i (pgd_qb_layout.row_order).
std::vector<int32_t> qb_row_order(const std::vector<uint8_t> &bits);

}  // namespace pangu
