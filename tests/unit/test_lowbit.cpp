// Low-bit quantization's math (tools/lib/lowbit): PGD_QB packing against the device's own reader, RTN grids,
// GPTQ against RTN and against the output error it is meant to reduce, the calibration statistics, the channel
// importance recomputed here by hand, the two bit allocations, and the refusals of bad input.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/common.h"
#include "device/device.h"
#include "lowbit.h"
#include "model/tensor.h"

using namespace pangu;

namespace {

MatrixRM gaussian(int64_t rows, int64_t cols, uint32_t seed, float sd = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, sd);
    MatrixRM m(rows, cols);
    for (int64_t i = 0; i < m.size(); ++i) m.data()[i] = nd(rng);
    return m;
}

std::vector<uint8_t> widths_cycling(int64_t rows) {
    std::vector<uint8_t> b(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) b[r] = static_cast<uint8_t>(kLowBitWidths[r % 5]);
    return b;
}

bool is_f16_value(float s) { return f16_to_f32(f32_to_f16(s)) == s; }

// Calls fn, which must throw pangu::Error with `status` and a message containing `part`.
void expect_error(const std::function<void()> &fn, pangu_status status, const std::string &part) {
    try {
        fn();
        ADD_FAILURE() << "no error; expected one containing \"" << part << "\"";
    } catch (const Error &e) {
        EXPECT_EQ(e.status(), status) << e.what();
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
}

// Calibration inputs X = Z A: Gaussian Z mixed by a random A, so that the inputs are correlated.
MatrixRM correlated_inputs(int64_t tokens, int64_t cols, uint32_t seed) {
    const MatrixRM z = gaussian(tokens, cols, seed), a = gaussian(cols, cols, seed + 1, 1.0f / std::sqrt(float(cols)));
    return z * a;
}

InputStats stats_of(const MatrixRM &x) {
    InputStats st(x.cols());
    st.add(x);
    return st;
}

// ||(W - Q) X^T||_F: the error of the layer's outputs on the calibration inputs, what GPTQ minimises.
double output_error(const MatrixRM &w, const LowbitMatrix &q, const MatrixRM &x) {
    const MatrixRM d = w - q.dequantize();
    return (d.cast<double>() * x.cast<double>().transpose()).norm();
}

}  // namespace

// ---- PGD_QB packing ----

TEST(QbPack, InverseOfDeviceReaderForEveryWidthAndColumn) {
    std::mt19937 rng(7);
    for (const int bits : kLowBitWidths)
        for (const int64_t cols : {64, 192}) {
            std::vector<uint8_t> level(static_cast<size_t>(cols));
            for (auto &u : level) u = static_cast<uint8_t>(rng() % (1u << bits));
            const size_t bytes = static_cast<size_t>(cols * bits / 8);
            std::vector<uint8_t> out(bytes + 16, 0xA5);  // a guard after the row
            qb_pack_row(level.data(), cols, bits, out.data());
            for (int64_t k = 0; k < cols; ++k)
                ASSERT_EQ(pgd_qb_level(out.data(), bits, k), level[k]) << bits << " bits, column " << k;
            for (size_t i = bytes; i < out.size(); ++i) ASSERT_EQ(out[i], 0xA5) << "wrote past the row";
        }
}

TEST(QbPack, RefusesBadInput) {
    std::vector<uint8_t> level(192, 1), out(192);
    expect_error([&] { qb_pack_row(level.data(), 96, 4, out.data()); }, PANGU_ERR_INVALID_ARGUMENT, "multiple of 64");
    expect_error([&] { qb_pack_row(level.data(), 64, 5, out.data()); }, PANGU_ERR_INVALID_ARGUMENT, "width 5");
    level[70] = 4;
    expect_error([&] { qb_pack_row(level.data(), 128, 2, out.data()); }, PANGU_ERR_INVALID_ARGUMENT, "column 70");
}

TEST(QbPack, RowOrderGroupsWidthsAscending) {
    std::mt19937 rng(3);
    std::vector<uint8_t> bits(301);
    for (auto &b : bits) b = static_cast<uint8_t>(kLowBitWidths[rng() % 5]);
    const std::vector<int32_t> order = qb_row_order(bits);
    std::vector<int32_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < sorted.size(); ++i) ASSERT_EQ(sorted[i], int32_t(i)) << "not a permutation";
    for (size_t i = 1; i < order.size(); ++i) {
        ASSERT_LE(bits[order[i - 1]], bits[order[i]]);
        if (bits[order[i - 1]] == bits[order[i]]) {
            ASSERT_LT(order[i - 1], order[i]);
        }
    }
    bits[5] = 7;
    expect_error([&] { qb_row_order(bits); }, PANGU_ERR_INVALID_ARGUMENT, "row 5");
}

// ---- RTN ----

TEST(Rtn, LevelsInRangeAndErrorWithinHalfScale) {
    MatrixRM w = gaussian(40, 256, 11);
    for (int64_t r = 0; r < w.rows(); ++r) w.row(r) *= std::pow(10.0f, float(r % 6) - 2);  // magnitudes 1e-2..1e3
    w.block(3, 0, 1, 64).array() = w.block(3, 0, 1, 64).array().abs() + 1;  // a group above 0: range widened to 0
    const std::vector<uint8_t> bits = widths_cycling(w.rows());
    for (const bool sym : {false, true}) {
        LowbitOptions o;
        o.group = 64;
        o.symmetric = sym;
        const LowbitMatrix q = rtn_quantize(w, bits, o, "w");
        ASSERT_FALSE(q.f32_scales);
        for (int64_t r = 0; r < w.rows(); ++r)
            for (int64_t c = 0; c < w.cols(); ++c) {
                const float s = q.scale[r * 4 + c / 64];
                ASSERT_LT(q.level[r * 256 + c], 1 << bits[r]);
                ASSERT_LE(std::fabs(w(r, c) - q.weight(r, c)), s / 2 * (1 + 1e-5f)) << r << "," << c << " sym " << sym;
            }
    }
}

TEST(Rtn, EightBitRowsSymmetricAndZeroPoints) {
    const MatrixRM w = gaussian(10, 128, 12).array() + 0.5f;  // off-centre, so asymmetric zeros differ from 2^(b-1)
    const std::vector<uint8_t> bits = widths_cycling(10);
    for (const bool sym : {false, true}) {
        LowbitOptions o;
        o.group = 32;
        o.symmetric = sym;
        const LowbitMatrix q = rtn_quantize(w, bits, o, "w");
        for (int64_t r = 0; r < 10; ++r)
            for (int64_t g = 0; g < 4; ++g) {
                const auto seg = w.row(r).segment(g * 32, 32);
                const float s = q.scale[r * 4 + g];
                const int b = bits[r];
                if (sym || b == 8) {
                    ASSERT_EQ(q.zero[r * 4 + g], 1 << (b - 1)) << "row " << r;
                    const float exact = seg.cwiseAbs().maxCoeff() / float((1 << (b - 1)) - 1);
                    ASSERT_GE(s, exact);
                    ASSERT_LE(s, exact * (1 + 1.0f / 1024));
                } else {
                    const float lo = std::min(seg.minCoeff(), 0.0f), hi = std::max(seg.maxCoeff(), 0.0f);
                    const float exact = (hi - lo) / float((1 << b) - 1);
                    ASSERT_GE(s, exact * (1 - 1e-6f));
                    ASSERT_LE(s, exact * (1 + 1.0f / 1024));
                    ASSERT_EQ(q.zero[r * 4 + g], std::clamp(std::nearbyint(-lo / s), 0.0f, float((1 << b) - 1)));
                }
            }
    }
}

TEST(Rtn, AllZeroGroup) {
    MatrixRM w = gaussian(5, 128, 13);
    w.block(0, 64, 5, 64).setZero();
    const std::vector<uint8_t> bits = widths_cycling(5);
    LowbitOptions o;
    o.group = 64;
    const LowbitMatrix q = rtn_quantize(w, bits, o, "w");
    for (int64_t r = 0; r < 5; ++r) {
        EXPECT_EQ(q.scale[r * 2 + 1], 0.0f);
        EXPECT_EQ(q.zero[r * 2 + 1], 1 << (bits[r] - 1));
        for (int64_t c = 64; c < 128; ++c) {
            EXPECT_EQ(q.level[r * 128 + c], q.zero[r * 2 + 1]);
            EXPECT_EQ(q.weight(r, c), 0.0f);
        }
        EXPECT_GT(q.scale[r * 2], 0.0f);
    }
}

TEST(Rtn, PerRowWidthsHonoured) {
    // every row a ramp, so a row of b bits uses each of its 2^b levels and none above
    MatrixRM w(5, 256);
    for (int64_t c = 0; c < 256; ++c) w.col(c).setConstant(float(c) / 255.0f - 0.3f);
    const std::vector<uint8_t> bits = {8, 2, 6, 3, 4};
    LowbitOptions o;
    o.group = 256;
    const LowbitMatrix q = rtn_quantize(w, bits, o, "w");
    for (int64_t r = 0; r < 5; ++r) {
        std::vector<int> seen(256, 0);
        for (int64_t c = 0; c < 256; ++c) seen[q.level[r * 256 + c]] = 1;
        const int used = std::accumulate(seen.begin(), seen.end(), 0);
        const int top = static_cast<int>(std::find(seen.rbegin(), seen.rend(), 1) - seen.rbegin());
        EXPECT_LE(255 - top, (1 << bits[r]) - 1) << "row " << r;
        EXPECT_GE(used, (1 << bits[r]) - (bits[r] == 8 ? 80 : 1)) << "row " << r;  // 8 bits symmetric: half of them
    }
}

TEST(Rtn, ScalesRoundedToF16) {
    const MatrixRM w = gaussian(20, 128, 14, 0.02f);
    LowbitOptions o;
    o.group = 32;
    const LowbitMatrix q = rtn_quantize(w, widths_cycling(20), o, "w");
    EXPECT_FALSE(q.f32_scales);
    int not_exact = 0;
    for (int64_t r = 0; r < 20; ++r)
        for (int64_t g = 0; g < 4; ++g) {
            const float s = q.scale[r * 4 + g];
            ASSERT_TRUE(is_f16_value(s)) << s;
            ASSERT_GE(s, 6.103515625e-05f);
            const auto seg = w.row(r).segment(g * 32, 32);
            const int b = q.bits[r];
            const float exact =
                b == 8 ? seg.cwiseAbs().maxCoeff() / 127
                       : (std::max(seg.maxCoeff(), 0.0f) - std::min(seg.minCoeff(), 0.0f)) / float((1 << b) - 1);
            not_exact += s != exact;
        }
    EXPECT_GT(not_exact, 60) << "the scales should have been rounded";
}

TEST(Rtn, NonRepresentableScaleMeansF32ForTheMatrix) {
    const std::vector<uint8_t> bits = {2, 4};
    LowbitOptions o;
    o.group = 64;
    for (const float big_or_tiny : {1e6f, 1e-7f}) {
        MatrixRM w = gaussian(2, 128, 15);
        w.block(1, 64, 1, 64) *= big_or_tiny;  // one group whose scale is above 65504 or below 2^-14
        const LowbitMatrix q = rtn_quantize(w, bits, o, "w");
        EXPECT_TRUE(q.f32_scales) << big_or_tiny;
        const auto seg = w.row(0).segment(0, 64);
        const float exact = (std::max(seg.maxCoeff(), 0.0f) - std::min(seg.minCoeff(), 0.0f)) / 3.0f;
        EXPECT_NEAR(q.scale[0], exact, exact * 1e-6f) << "an unrounded scale for every group";
        for (int64_t c = 0; c < 128; ++c)
            EXPECT_LE(std::fabs(w(1, c) - q.weight(1, c)), q.scale[2 + c / 64] / 2 * (1 + 1e-5f));
    }
}

// ---- GPTQ ----

TEST(Gptq, DiagonalHessianGivesRtnExactly) {
    // With no correlation between inputs U is diagonal: no error is fed to other columns, the weights never
    // change, and GPTQ is RTN level for level. That holds for H = I and for any positive diagonal.
    const MatrixRM w = gaussian(24, 256, 21);
    const std::vector<uint8_t> bits = widths_cycling(24);
    Eigen::VectorXd d = Eigen::VectorXd::Random(256).cwiseAbs().array() + 0.1;
    const Eigen::MatrixXd hs[] = {Eigen::MatrixXd::Identity(256, 256), Eigen::MatrixXd(d.asDiagonal())};
    for (const auto &H : hs)
        for (const bool sym : {false, true}) {
            LowbitOptions o;
            o.group = 64;
            o.symmetric = sym;
            o.block = 96;  // groups straddling blocks too
            const LowbitMatrix r = rtn_quantize(w, bits, o, "w"), g = gptq_quantize(w, H, bits, o, "w");
            EXPECT_TRUE(g.perm.empty());
            EXPECT_EQ(g.level, r.level);
            EXPECT_EQ(g.scale, r.scale);
            EXPECT_EQ(g.zero, r.zero);
            EXPECT_EQ(g.f32_scales, r.f32_scales);
        }
}

TEST(Gptq, ReducesOutputErrorAgainstRtn) {
    const int64_t rows = 64, cols = 256;
    const MatrixRM x = correlated_inputs(1024, cols, 31), w = gaussian(rows, cols, 33);
    const InputStats st = stats_of(x);
    for (const int b : {3, 4})
        for (const int64_t group : {64, 128}) {
            const std::vector<uint8_t> bits(rows, static_cast<uint8_t>(b));
            LowbitOptions o;
            o.group = group;
            o.block = 64;
            const double e_rtn = output_error(w, rtn_quantize(w, bits, o, "w"), x);
            const double e_gptq = output_error(w, gptq_quantize(w, st.H, bits, o, "w"), x);
            std::printf("%d bits, group %lld: GPTQ / RTN output error %.3f\n", b, static_cast<long long>(group),
                        e_gptq / e_rtn);
            EXPECT_LT(e_gptq, 0.8 * e_rtn) << b << " bits, group " << group;
        }
}

TEST(Gptq, SameResultForAnyBlockAndThreadCount) {
    // The lazy batch update only reorders GPTQ's updates, and rows are independent: blocks of 96 columns (groups of
    // 64 straddling them, whose grids need the block's feedback to the columns after it) and 3 threads must give
    // what one block on one thread gives, up to float rounding (a level may flip where a value sits on a tie).
    const MatrixRM x = correlated_inputs(1024, 256, 35), w = gaussian(30, 256, 36);
    const InputStats st = stats_of(x);
    const std::vector<uint8_t> bits = widths_cycling(30);
    LowbitOptions one;
    one.group = 64;
    one.block = 256;
    one.threads = 1;
    LowbitOptions split = one;
    split.block = 96;
    split.threads = 3;
    const LowbitMatrix a = gptq_quantize(w, st.H, bits, one, "w"), b = gptq_quantize(w, st.H, bits, split, "w");
    size_t same = 0;
    for (size_t i = 0; i < a.level.size(); ++i) same += a.level[i] == b.level[i];
    EXPECT_GE(same, a.level.size() * 999 / 1000);
    for (size_t i = 0; i < a.scale.size(); ++i) EXPECT_NEAR(a.scale[i], b.scale[i], 1e-3f * a.scale[i]) << i;
    EXPECT_NEAR(output_error(w, a, x), output_error(w, b, x), 1e-3 * output_error(w, a, x));
}

TEST(Gptq, ActOrderHelpsWithLargeVarianceColumns) {
    const int64_t rows = 64, cols = 256;
    for (uint32_t seed : {41u, 42u, 43u}) {
        MatrixRM x = correlated_inputs(1024, cols, seed);
        for (int64_t c = 7; c < cols; c += 37) x.col(c) *= 20.0f;  // a few outlier channels
        const MatrixRM w = gaussian(rows, cols, seed + 100);
        const InputStats st = stats_of(x);
        for (const int b : {3, 4}) {
            const std::vector<uint8_t> bits(rows, static_cast<uint8_t>(b));
            LowbitOptions o;
            o.group = 64;
            const double e_plain = output_error(w, gptq_quantize(w, st.H, bits, o, "w"), x);
            o.act_order = true;
            const double e_act = output_error(w, gptq_quantize(w, st.H, bits, o, "w"), x);
            std::printf("seed %u, %d bits: act-order / plain GPTQ output error %.3f\n", seed, b, e_act / e_plain);
            EXPECT_LT(e_act, 0.85 * e_plain) << "seed " << seed << ", " << b << " bits";
        }
    }
}

TEST(Gptq, ActOrderPermutationAndDequantize) {
    const int64_t cols = 128;
    const MatrixRM x = correlated_inputs(600, cols, 51).array().rowwise() *
                       Eigen::RowVectorXf::LinSpaced(cols, 0.5f, 3.0f).array().reverse();
    const MatrixRM w = gaussian(6, cols, 52);
    const InputStats st = stats_of(x);
    LowbitOptions o;
    o.group = 32;
    o.act_order = true;
    const LowbitMatrix q = gptq_quantize(w, st.H, widths_cycling(6), o, "w");
    ASSERT_EQ(q.perm.size(), size_t(cols));
    std::vector<int32_t> sorted = q.perm;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(sorted[c], c) << "not a permutation";
    for (int64_t c = 1; c < cols; ++c) ASSERT_GE(st.H(q.perm[c - 1], q.perm[c - 1]), st.H(q.perm[c], q.perm[c]));
    EXPECT_NE(q.perm[0], 0) << "the test data should need a reordering";
    const MatrixRM dq = q.dequantize();
    for (int64_t r = 0; r < 6; ++r)
        for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(dq(r, q.perm[c]), q.weight(r, c));
}

TEST(Gptq, DeadInputsGetZeroWeights) {
    MatrixRM x = correlated_inputs(512, 128, 61);
    x.col(5).setZero();
    x.col(77).setZero();
    const InputStats st = stats_of(x);
    ASSERT_EQ(st.H(5, 5), 0.0);
    const MatrixRM w = gaussian(4, 128, 62);
    for (const bool act : {false, true}) {
        LowbitOptions o;
        o.group = 64;
        o.act_order = act;
        const MatrixRM dq = gptq_quantize(w, st.H, std::vector<uint8_t>(4, 4), o, "w").dequantize();
        EXPECT_TRUE(dq.col(5).isZero(0)) << act;
        EXPECT_TRUE(dq.col(77).isZero(0)) << act;
    }
}

TEST(Gptq, HinvFactorIsUpperCholeskyOfDampedInverse) {
    const int64_t n = 150;  // more than one solve block
    MatrixRM x = correlated_inputs(400, n, 71);
    x.col(9).setZero();
    const Eigen::MatrixXd H = stats_of(x).H;
    std::vector<int32_t> perm(n);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), std::mt19937(72));
    for (const bool permuted : {false, true}) {
        const std::vector<int32_t> p = permuted ? perm : std::vector<int32_t>();
        const Eigen::MatrixXd U = gptq_hinv_factor(H, p, 0.01, "h", 2);
        Eigen::MatrixXd Hd = H;
        Hd(9, 9) = 1;
        Hd.diagonal().array() += 0.01 * Hd.diagonal().mean();
        Eigen::MatrixXd Hp(n, n);
        for (int64_t a = 0; a < n; ++a)
            for (int64_t b = 0; b < n; ++b) Hp(a, b) = permuted ? Hd(perm[a], perm[b]) : Hd(a, b);
        EXPECT_TRUE(U.isUpperTriangular(0));
        EXPECT_TRUE((U.diagonal().array() > 0).all());
        const Eigen::MatrixXd inv = Hp.inverse();
        EXPECT_LT((U.transpose() * U - inv).norm(), 1e-9 * inv.norm());
    }
}

TEST(Gptq, UpdatedGroupBeyondF16RestartsWithF32Scales) {
    // Inputs 31 and 32 are nearly the same signal, so GPTQ moves column 31's error onto column 32. With 2-bit
    // symmetric grids (s = amax / 1, levels -2s..s) a weight of 29000 in a group of amax 60000 rounds to 0, and
    // column 32 (60000, the next group) becomes ~89000: a scale above 65504, though every original scale fits.
    const int64_t cols = 64;
    MatrixRM x = gaussian(512, cols, 82);
    x.col(32) = x.col(31) + 0.01f * gaussian(512, 1, 83);
    MatrixRM w = 1000.0f * gaussian(2, cols, 81);
    w.col(0).setConstant(60001.0f);
    w.col(31).setConstant(29000.0f);
    w.col(32).setConstant(60000.0f);
    LowbitOptions o;
    o.group = 32;
    o.symmetric = true;
    const std::vector<uint8_t> bits(2, 2);
    ASSERT_FALSE(rtn_quantize(w, bits, o, "w").f32_scales) << "the original groups must fit F16";
    const LowbitMatrix q = gptq_quantize(w, stats_of(x).H, bits, o, "w");
    ASSERT_TRUE(q.f32_scales);
    EXPECT_GT(q.scale[1], 80000.0f);
    EXPECT_FALSE(is_f16_value(q.scale[1]));
    EXPECT_EQ(q.scale[0], 60001.0f) << "group 0's scale is exact (not rounded up to 60032)";
}

// ---- calibration statistics ----

TEST(InputStats, AverageOverChunks) {
    // 320 channels: two column blocks of the parallel X^T X, on 3 threads
    const MatrixRM a = gaussian(100, 320, 91), b = gaussian(37, 320, 92).array() + 1.5f;
    InputStats st(320, 3);
    st.add(a);
    st.add(b);
    MatrixRM all(137, 320);
    all << a, b;
    const Eigen::MatrixXd xd = all.cast<double>();
    EXPECT_EQ(st.n, 137);
    const Eigen::MatrixXd H = 2.0 / 137 * xd.transpose() * xd;
    EXPECT_LT((st.H - H).norm(), 1e-5 * H.norm());
    EXPECT_TRUE(st.H.isApprox(st.H.transpose(), 0));
    const Eigen::VectorXd mean = xd.colwise().mean().transpose();
    EXPECT_LT((st.mean_abs() - xd.cwiseAbs().colwise().mean().transpose()).norm(), 1e-12);
    const Eigen::VectorXd var = (xd.rowwise() - mean.transpose()).array().square().colwise().mean().transpose();
    EXPECT_LT((st.variance() - var).norm(), 1e-10);
}

TEST(InputStats, RefusesNonFiniteActivations) {
    InputStats st(64);
    MatrixRM x = gaussian(4, 64, 93);
    x(2, 3) = NAN;
    expect_error([&] { st.add(x); }, PANGU_ERR_NUMERIC, "calibration activations");
    expect_error([&] { st.add(gaussian(4, 32, 94)); }, PANGU_ERR_INVALID_ARGUMENT, "32");
}

// ---- importance ----

TEST(Importance, FivePartsByHand) {
    MatrixRM w(3, 3);
    w << 1, -2, 3,   //
        3, 0.5, -1,  //
        0.2, 2, 2;
    MatrixRM x(4, 3);
    x << 1, 0.5, -2,  //
        -1, 0.1, 1,   //
        2, -0.3, 0,   //
        0.5, 0.2, 3;
    const InputStats st = stats_of(x);
    const double damp = 0.01;
    const ImportanceParts p = channel_importance(w, st, damp);

    // the same quantities straight from their definitions
    Eigen::Vector3d m, v;
    for (int k = 0; k < 3; ++k) {
        double s = 0, sa = 0, ss = 0;
        for (int t = 0; t < 4; ++t) s += x(t, k), sa += std::fabs(x(t, k)), ss += double(x(t, k)) * x(t, k);
        m[k] = sa / 4;
        v[k] = ss / 4 - (s / 4) * (s / 4);
    }
    Eigen::Matrix3d H = Eigen::Matrix3d::Zero();
    for (int t = 0; t < 4; ++t) H += 2.0 / 4 * x.row(t).cast<double>().transpose() * x.row(t).cast<double>();
    H.diagonal().array() += damp * H.trace() / 3;
    const Eigen::Matrix3d Hinv = H.inverse();
    Eigen::Vector3d act, hess, mag, out, var;
    for (int r = 0; r < 3; ++r) {
        double sw = 0, swm = 0, swv = 0, h = 0;
        for (int k = 0; k < 3; ++k) {
            const double a = std::fabs(w(r, k));
            sw += a, swm += a * m[k], swv += a * v[k];
            h += double(w(r, k)) * w(r, k) / (Hinv(k, k) * Hinv(k, k)) / 3;
        }
        act[r] = swm / sw, hess[r] = h, mag[r] = sw / 3, out[r] = swm, var[r] = swv / sw;
    }
    auto minmax = [](const Eigen::Vector3d &a) -> Eigen::Vector3d {
        const double lo = a.minCoeff(), hi = a.maxCoeff();
        return hi > lo ? Eigen::Vector3d((a.array() - lo) / (hi - lo)) : Eigen::Vector3d::Zero();
    };
    const double tol = 1e-6;
    EXPECT_TRUE(p.act.isApprox(minmax(act), tol)) << p.act.transpose() << " / " << minmax(act).transpose();
    EXPECT_TRUE(p.hessian.isApprox(minmax(hess), tol)) << p.hessian.transpose() << " / " << minmax(hess).transpose();
    EXPECT_TRUE(p.magnitude.isApprox(minmax(mag), tol)) << p.magnitude.transpose();
    EXPECT_TRUE(p.output.isApprox(minmax(out), tol)) << p.output.transpose();
    EXPECT_TRUE(p.variance.isApprox(minmax(var), tol)) << p.variance.transpose();
    for (const auto *part : {&p.act, &p.hessian, &p.magnitude, &p.output, &p.variance}) {
        EXPECT_NEAR(part->minCoeff(), 0.0, 1e-12);
        EXPECT_NEAR(part->maxCoeff(), 1.0, 1e-12);
    }
    const Eigen::Vector3d score =
        0.25 * minmax(act) + 0.25 * minmax(hess) + 0.15 * minmax(mag) + 0.25 * minmax(out) + 0.10 * minmax(var);
    EXPECT_TRUE(p.score.isApprox(score, tol)) << p.score.transpose() << " / " << score.transpose();
}

TEST(Importance, ConstantPartIsZeroAndZeroRow) {
    // every row has mean |w| = 2: the magnitude part is constant and all 0
    MatrixRM w(3, 3);
    w << 1, -2, 3,  //
        3, 2, -1,   //
        2, 2, 2;
    MatrixRM x(3, 3);
    x << 1, 0.5, -2,  //
        -1, 0.1, 1,   //
        2, -0.3, 0;
    EXPECT_TRUE(channel_importance(w, stats_of(x), 0.01).magnitude.isZero(0));
    // two equal inputs (m = 1, variance 1): a row of zeros scores 0 in every part, rows [1 1] and [3 3] have act
    // and variance 1 each (normalised 1), magnitude and output 1/3 of row 2's, w^2 1/9 of it
    MatrixRM w2(3, 2);
    w2 << 0, 0,  //
        1, 1,    //
        3, 3;
    MatrixRM x2(2, 2);
    x2 << 1, 1,  //
        -1, -1;
    const ImportanceParts p = channel_importance(w2, stats_of(x2), 0.01);
    EXPECT_EQ(p.score[0], 0.0);
    EXPECT_NEAR(p.score[1], 0.25 * 1 + 0.25 / 9 + 0.15 / 3 + 0.25 / 3 + 0.10 * 1, 1e-9);
    EXPECT_NEAR(p.score[2], 1.0, 1e-12);
}

// ---- bit allocation ----

TEST(Allocate, QuantileBandsEqualAndMonotone) {
    for (const int64_t n : {5, 12, 1003}) {
        Eigen::VectorXd score = Eigen::VectorXd::Random(n);
        score.head(n / 3).setConstant(0.25);  // ties
        const std::vector<uint8_t> bits = allocate_quantile(score);
        for (const int b : kLowBitWidths) {
            const auto count = std::count(bits.begin(), bits.end(), b);
            EXPECT_GE(count, n / 5) << n;
            EXPECT_LE(count, (n + 4) / 5) << n;
        }
        for (int64_t a = 0; a < n; ++a)
            for (int64_t b = 0; b < n; b += 7) {
                if (score[a] > score[b]) {
                    ASSERT_GE(bits[a], bits[b]);
                }
                if (score[a] == score[b] && a < b) {
                    ASSERT_LE(bits[a], bits[b]) << "ties by row index";
                }
            }
    }
}

TEST(Allocate, BudgetHitsAverageAndIsMonotone) {
    std::mt19937 rng(101);
    for (const int64_t n : {7, 100, 1000, 8192})
        for (const double avg : {2.0, 3.2, 4.0, 6.0, 8.0}) {
            Eigen::VectorXd score(n);
            std::uniform_real_distribution<double> u(0, 1);
            for (auto &s : score) s = u(rng) * u(rng);  // skewed toward 0
            const auto t0 = std::chrono::steady_clock::now();
            const std::vector<uint8_t> bits = allocate_budget(score, avg);
            const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            if (n == 8192) {
                EXPECT_LT(ms, 100.0) << "8192 rows took " << ms << " ms";
            }
            const int64_t total = std::accumulate(bits.begin(), bits.end(), int64_t(0));
            const int64_t budget = std::llround(avg * n);
            EXPECT_LE(total, budget) << n << " rows, avg " << avg;
            EXPECT_GE(total, budget - 1) << n << " rows, avg " << avg;
            EXPECT_LE(std::fabs(double(total) / n - avg), 1.5 / n);
            for (const auto b : bits) ASSERT_TRUE(lowbit_width_ok(b));
            std::vector<int32_t> idx(n);
            std::iota(idx.begin(), idx.end(), 0);
            std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return score[a] < score[b]; });
            for (int64_t i = 1; i < n; ++i)
                if (score[idx[i]] > score[idx[i - 1]]) {
                    ASSERT_GE(bits[idx[i]], bits[idx[i - 1]]) << "not monotone";
                }
        }
}

TEST(Allocate, BudgetGreedyStepsByHand) {
    // scores 1 and 0.1, 3 bits on average: budget 6, start 2 + 2. Gains (4^-b - 4^-b') / (b' - b) per unit
    // score: 2->3 3/64, 3->4 3/256. Row 0 2->3 (3/64 > 0.3/64), then row 0 3->4 (3/256 > 0.3/64): 4 + 2 bits.
    EXPECT_EQ(allocate_budget(Eigen::Vector2d(1.0, 0.1), 3.0), (std::vector<uint8_t>{4, 2}));
    // 0.3: row 1's 2->3 (0.3 * 3/64 = 0.014) beats row 0's 3->4 (0.0117)
    EXPECT_EQ(allocate_budget(Eigen::Vector2d(1.0, 0.3), 3.0), (std::vector<uint8_t>{3, 3}));
    // a 4->6 step that does not fit is dropped and a cheaper one taken: rows at 4 and 2, 1 bit left -> row 1 to 3
    EXPECT_EQ(allocate_budget(Eigen::Vector2d(1.0, 0.001), 4.5), (std::vector<uint8_t>{6, 3}));
}

TEST(Allocate, RefusesBadAverageAndScores) {
    const Eigen::VectorXd s = Eigen::VectorXd::Random(10);
    for (const double avg : {1.9, 8.1, double(NAN)})
        expect_error([&] { allocate_budget(s, avg); }, PANGU_ERR_INVALID_ARGUMENT, "outside [2, 8]");
    Eigen::VectorXd bad = s;
    bad[3] = NAN;
    expect_error([&] { allocate_quantile(bad); }, PANGU_ERR_INVALID_ARGUMENT, "NaN");
    expect_error([&] { allocate_budget(bad, 4); }, PANGU_ERR_INVALID_ARGUMENT, "NaN");
}

// ---- bad input ----

TEST(LowbitErrors, RefusesBadInput) {
    const MatrixRM w = gaussian(4, 128, 111);
    const Eigen::MatrixXd H = Eigen::MatrixXd::Identity(128, 128);
    const std::vector<uint8_t> bits(4, 4);
    LowbitOptions o;
    o.group = 64;
    MatrixRM nan_w = w;
    nan_w(2, 70) = NAN;
    expect_error([&] { rtn_quantize(nan_w, bits, o, "layers.3.w"); }, PANGU_ERR_NUMERIC,
                 "layers.3.w: NaN at row 2, column 70");
    expect_error([&] { gptq_quantize(nan_w, H, bits, o, "layers.3.w"); }, PANGU_ERR_NUMERIC,
                 "layers.3.w: NaN at row 2");
    Eigen::MatrixXd bad_h = H;
    bad_h(5, 6) = INFINITY;
    expect_error([&] { gptq_quantize(w, bad_h, bits, o, "layers.3.w"); }, PANGU_ERR_NUMERIC, "Inf at row 5, column 6");
    expect_error([&] { gptq_quantize(w, Eigen::MatrixXd::Identity(64, 64), bits, o, "layers.3.w"); },
                 PANGU_ERR_INVALID_ARGUMENT, "layers.3.w: the Hessian is [64, 64]");
    expect_error([&] { gptq_quantize(w, -H, bits, o, "layers.3.w"); }, PANGU_ERR_NUMERIC, "calibrate with more text");
    LowbitOptions g48 = o;
    g48.group = 48;
    expect_error([&] { rtn_quantize(w, bits, g48, "layers.3.w"); }, PANGU_ERR_INVALID_ARGUMENT,
                 "layers.3.w: group size 48");
    expect_error([&] { gptq_quantize(w, H, bits, g48, "layers.3.w"); }, PANGU_ERR_INVALID_ARGUMENT, "group size 48");
    const MatrixRM w96 = gaussian(4, 96, 112);
    expect_error([&] { rtn_quantize(w96, bits, o, "layers.3.w"); }, PANGU_ERR_INVALID_ARGUMENT,
                 "layers.3.w: 96 columns");
    std::vector<uint8_t> five = bits;
    five[1] = 5;
    expect_error([&] { rtn_quantize(w, five, o, "layers.3.w"); }, PANGU_ERR_INVALID_ARGUMENT,
                 "layers.3.w: row 1 has width 5");
    expect_error([&] { gptq_quantize(w, H, five, o, "layers.3.w"); }, PANGU_ERR_INVALID_ARGUMENT, "width 5");
    expect_error([&] { rtn_quantize(w, std::vector<uint8_t>(3, 4), o, "layers.3.w"); }, PANGU_ERR_INVALID_ARGUMENT,
                 "3 row widths for 4 rows");
}
