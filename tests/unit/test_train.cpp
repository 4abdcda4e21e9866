// The training engine's gradients against central finite differences in double precision: every operation of
// tools/train/ops.h on its own, then a whole 2-layer model (pruned widths, biases, tied and untied heads) under
// cross-entropy plus KL, for every parameter element.
#include <gtest/gtest.h>

#include <functional>
#include <random>

#include "net.h"
#include "ops.h"
#include "optim.h"
#include "parallel.h"
#include "prune.h"

namespace pangu::train {
namespace {

using MatD = Mat<double>;
using VecD = Vec<double>;

std::mt19937_64 &rng() {
    static std::mt19937_64 r(42);
    return r;
}

MatD randm(Eigen::Index r, Eigen::Index c, double sd = 1.0) {
    std::normal_distribution<double> n(0.0, sd);
    MatD m(r, c);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = n(rng());
    return m;
}
VecD randv(Eigen::Index n, double mean = 0.0, double sd = 1.0) {
    VecD v = randm(n, 1, sd);
    return v.array() + mean;
}

// Central difference of f with respect to every element of `x` (changed and restored in place).
template <typename M>
M numeric_grad(M &x, const std::function<double()> &f, double h = 1e-6) {
    M g(x.rows(), x.cols());
    for (Eigen::Index i = 0; i < x.size(); ++i) {
        const double keep = x.data()[i];
        x.data()[i] = keep + h;
        const double up = f();
        x.data()[i] = keep - h;
        const double down = f();
        x.data()[i] = keep;
        g.data()[i] = (up - down) / (2 * h);
    }
    return g;
}

// Largest |a - b| relative to the largest |b| (and at least 1e-3 of scale, so that a gradient of all
// near-zeros compares absolutely).
template <typename A, typename B>
double rel_err(const A &a, const B &b) {
    const double scale = std::max(static_cast<double>(b.cwiseAbs().maxCoeff()), 1e-3);
    return static_cast<double>((a - b).cwiseAbs().maxCoeff()) / scale;
}

constexpr double kTol = 1e-6;

TEST(TrainOps, RmsNormInputAndWeight) {
    MatD x = randm(5, 8), dy = randm(5, 8);
    VecD w = randv(8, 1.0, 0.3);
    auto f = [&] {
        MatD y;
        VecD r;
        rmsnorm_forward(x, w, 1e-5, y, r);
        return y.cwiseProduct(dy).sum();
    };
    MatD y, dx;
    VecD r, dw = VecD::Zero(8);
    rmsnorm_forward(x, w, 1e-5, y, r);
    rmsnorm_backward(x, w, r, dy, dx, &dw);
    EXPECT_LT(rel_err(dx, numeric_grad(x, f)), kTol);
    EXPECT_LT(rel_err(dw, numeric_grad(w, f)), kTol);
}

TEST(TrainOps, LinearWithBias) {
    MatD x = randm(6, 5), W = randm(4, 5), dy = randm(6, 4);
    VecD b = randv(4);
    auto f = [&] {
        MatD y;
        linear_forward(x, W, b, y);
        return y.cwiseProduct(dy).sum();
    };
    MatD dx, dW = MatD::Zero(4, 5);
    VecD db = VecD::Zero(4);
    linear_backward(x, W, dy, &dx, &dW, &db);
    EXPECT_LT(rel_err(dx, numeric_grad(x, f)), kTol);
    EXPECT_LT(rel_err(dW, numeric_grad(W, f)), kTol);
    EXPECT_LT(rel_err(db, numeric_grad(b, f)), kTol);
    // Accumulation: a second backward adds the same again.
    MatD dW2 = dW;
    linear_backward(x, W, dy, static_cast<MatD *>(nullptr), &dW2, static_cast<VecD *>(nullptr));
    EXPECT_LT(rel_err(dW2, MatD(2 * dW)), 1e-12);
}

TEST(TrainOps, RopeIsARotationAndItsBackwardTheInverse) {
    const int hd = 8;
    const MatD table = rope_table<double>(7, hd, 1e4);
    MatD x = randm(7, 3 * hd), dy = randm(7, 3 * hd);
    auto f = [&] {
        MatD y = x;
        rope_apply(y, 0, 7, hd, table, false);
        return y.cwiseProduct(dy).sum();
    };
    MatD dx = dy;
    rope_apply(dx, 0, 7, hd, table, true);
    EXPECT_LT(rel_err(dx, numeric_grad(x, f)), kTol);
    // Norms are kept and position 0 is the identity.
    MatD y = x;
    rope_apply(y, 0, 7, hd, table, false);
    EXPECT_NEAR(y.norm(), x.norm(), 1e-12);
    EXPECT_LT((y.row(0) - x.row(0)).cwiseAbs().maxCoeff(), 1e-15);
    EXPECT_GT((y.row(3) - x.row(3)).cwiseAbs().maxCoeff(), 1e-3);
}

TEST(TrainOps, CausalAttentionHead) {
    const int n = 6, hd = 4;
    MatD q = randm(n, hd), k = randm(n, hd), v = randm(n, hd), dO = randm(n, hd);
    const double scale = 0.5;
    auto f = [&] {
        MatD P, o(n, hd);
        attention_head_forward(q, k, v, scale, P, o);
        return o.cwiseProduct(dO).sum();
    };
    MatD P, o(n, hd);
    attention_head_forward(q, k, v, scale, P, o);
    // Causal: row i weighs positions 0..i only, and sums to 1.
    for (int i = 0; i < n; ++i) {
        EXPECT_NEAR(P.row(i).sum(), 1.0, 1e-12);
        for (int j = i + 1; j < n; ++j) EXPECT_EQ(P(i, j), 0.0);
    }
    MatD dq(n, hd), dk = MatD::Zero(n, hd), dv = MatD::Zero(n, hd);
    attention_head_backward(q, k, v, scale, P, dO, dq, dk, dv);
    EXPECT_LT(rel_err(dq, numeric_grad(q, f)), kTol);
    EXPECT_LT(rel_err(dk, numeric_grad(k, f)), kTol);
    EXPECT_LT(rel_err(dv, numeric_grad(v, f)), kTol);
}

TEST(TrainOps, SwiGlu) {
    MatD g = randm(4, 7, 2.0), u = randm(4, 7), da = randm(4, 7);
    auto f = [&] {
        MatD a;
        swiglu_forward(g, u, a);
        return a.cwiseProduct(da).sum();
    };
    MatD dg, du;
    swiglu_backward(g, u, da, dg, du);
    EXPECT_LT(rel_err(dg, numeric_grad(g, f)), kTol);
    EXPECT_LT(rel_err(du, numeric_grad(u, f)), kTol);
}

TEST(TrainOps, CrossEntropySkipsUnscoredRows) {
    MatD z = randm(5, 9, 3.0);
    const std::vector<int32_t> t = {3, 0, -1, 8, 5};
    auto f = [&] {
        MatD dz;
        return cross_entropy(z, t, 1.0, dz, false, nullptr);
    };
    MatD dz;
    int64_t scored = 0;
    const double loss = cross_entropy(z, t, 1.0, dz, false, &scored);
    EXPECT_EQ(scored, 4);
    EXPECT_GT(loss, 0.0);
    EXPECT_LT(rel_err(dz, numeric_grad(z, f)), kTol);
    EXPECT_EQ(dz.row(2).cwiseAbs().maxCoeff(), 0.0);
    // Uniform logits over 9 classes: log 9.
    MatD flat = MatD::Zero(1, 9), d;
    EXPECT_NEAR(cross_entropy(flat, {4}, 1.0, d, false, nullptr), std::log(9.0), 1e-12);
}

TEST(TrainOps, KlWithTemperature) {
    MatD zt = randm(4, 11, 2.0), zs = randm(4, 11, 2.0);
    for (double tau : {1.0, 2.5}) {
        auto f = [&] {
            MatD dz;
            return kl_divergence(zt, zs, tau, 1.0, dz, false);
        };
        MatD dz;
        const double kl = kl_divergence(zt, zs, tau, 1.0, dz, false);
        EXPECT_GT(kl, 0.0);
        EXPECT_LT(rel_err(dz, numeric_grad(zs, f)), kTol) << "tau " << tau;
        MatD d2;
        EXPECT_NEAR(kl_divergence(zt, zt, tau, 1.0, d2, false), 0.0, 1e-12);  // KL(p||p) = 0
        EXPECT_LT(d2.cwiseAbs().maxCoeff(), 1e-12);
    }
}

// ---- the whole model ------------------------------------------------------------------------------------------

Shape small_shape(bool tied) {
    Shape s;
    s.n_vocab = 23, s.n_embd = 16, s.n_head = 4, s.n_kv = 2, s.head_dim = 4;
    s.n_ff = {24, 12};  // a pruned second layer
    s.bias = true, s.tied = tied, s.eps = 1e-5, s.rope_theta = 1e4;
    return s;
}

Params<double> random_params(const Shape &s) {
    Params<double> p = Params<double>::zeros(s);
    for (auto &t : tensors(p)) {
        const bool norm = t.name.find("norm") != std::string::npos;
        std::normal_distribution<double> n(norm ? 1.0 : 0.0, norm ? 0.2 : 0.4);
        for (int64_t i = 0; i < t.size; ++i) t.data[i] = n(rng());
    }
    return p;
}

struct ModelCase {
    Params<double> p;
    MatD teacher;
    Windows batch = {{1, 5, 7, 2, 19}, {22, 3, 3}};
    double loss(Net<double> &net, MatD *dz) {
        const MatD &z = net.forward(batch);
        MatD d;
        double l = kl_divergence(teacher, z, 2.0, 1.0, d, false);
        l += 0.5 * cross_entropy(z, Net<double>::targets(batch), 0.5, d, true, nullptr);
        if (dz) *dz = d;
        return l;
    }
};

void check_whole_model(bool tied) {
    ModelCase c{random_params(small_shape(tied)), {}};
    c.teacher = randm(8, c.p.shape.n_vocab, 2.0);
    Net<double> net(c.p);
    MatD dz;
    c.loss(net, &dz);
    Params<double> g = make_grads(c.p, Trainable::ALL);
    net.backward(dz, g);
    auto gt = tensors(g);
    auto pt = tensors(c.p);
    ASSERT_EQ(gt.size(), pt.size());
    for (size_t i = 0; i < pt.size(); ++i) {
        Eigen::Map<VecD> x(pt[i].data, pt[i].size);
        VecD xs = x;  // numeric_grad needs an owning matrix: perturb a copy mirrored into the params
        auto f = [&] {
            x = xs;
            return c.loss(net, nullptr);
        };
        const VecD num = numeric_grad(xs, f);
        x = xs;
        const Eigen::Map<VecD> ana(gt[i].data, gt[i].size);
        EXPECT_LT(rel_err(ana, num), 1e-6) << pt[i].name << (tied ? " (tied)" : "");
    }
}

TEST(TrainModel, EveryParameterMatchesFiniteDifferencesUntied) { check_whole_model(false); }
TEST(TrainModel, EveryParameterMatchesFiniteDifferencesTied) { check_whole_model(true); }

// Training a subset computes the same gradients for it, and nothing for the rest.
TEST(TrainModel, TrainableSubsetsGetTheSameGradients) {
    ModelCase c{random_params(small_shape(false)), {}};
    c.teacher = randm(8, c.p.shape.n_vocab, 2.0);
    Net<double> net(c.p);
    MatD dz;
    c.loss(net, &dz);
    Params<double> all = make_grads(c.p, Trainable::ALL);
    net.backward(dz, all);
    for (Trainable tr : {Trainable::LAYERS, Trainable::MLP}) {
        Params<double> g = make_grads(c.p, tr);
        net.backward(dz, g);
        const auto want = tensors(all, tr);
        const auto got = tensors(g);
        size_t k = 0;
        for (const auto &w : want) {
            if (!w.trainable) continue;
            ASSERT_LT(k, got.size());
            EXPECT_EQ(got[k].name, w.name);
            const Eigen::Map<const VecD> a(got[k].data, got[k].size), b(w.data, w.size);
            EXPECT_LT(rel_err(a, b), 1e-12) << w.name;
            ++k;
        }
        EXPECT_EQ(k, got.size()) << trainable_name(tr);
    }
    EXPECT_EQ(make_grads(c.p, Trainable::MLP).embed.size(), 0);
}

// The engine's threads split products by rows and attention by window and head: one thread and two give the same
// loss and gradients (to rounding), on batches large enough that every split happens.
TEST(TrainModel, OneThreadAndTwoGiveTheSameGradients) {
    Shape s = small_shape(false);
    s.n_embd = 32, s.n_ff = {48, 40};
    Params<float> p = Params<float>::zeros(s);
    std::normal_distribution<float> n(0.0f, 0.3f);
    for (auto &t : tensors(p))
        for (int64_t i = 0; i < t.size; ++i) t.data[i] = (t.name.find("norm") != std::string::npos ? 1.0f : 0.0f) + n(rng());
    Windows batch(3);
    for (auto &w : batch)
        for (int i = 0; i < 40; ++i) w.push_back(static_cast<int32_t>(rng()() % s.n_vocab));
    auto run = [&](int threads, double *loss) {
        set_threads(threads);
        Net<float> net(p);
        Mat<float> dz;
        *loss = cross_entropy(net.forward(batch), Net<float>::targets(batch), 1.0, dz, false, nullptr);
        Params<float> g = make_grads(p, Trainable::ALL);
        net.backward(dz, g);
        return g;
    };
    double l1 = 0, l2 = 0;
    Params<float> g1 = run(1, &l1), g2 = run(2, &l2);
    set_threads(0);
    EXPECT_NEAR(l1, l2, 1e-6 * std::abs(l1));
    const auto a = tensors(g1), b = tensors(g2);
    for (size_t i = 0; i < a.size(); ++i) {
        const Eigen::Map<const Vec<float>> x(a[i].data, a[i].size), y(b[i].data, b[i].size);
        EXPECT_LT(rel_err(x, y), 1e-5) << a[i].name;
    }
}

// Taylor scores of a group of windows, accumulated one window at a time, equal those of the group's gradient
// taken in one batch: sum |w * dL/dw| with L the mean cross-entropy over every token of the group.
TEST(TrainPrune, TaylorGroupsAccumulateToTheBatchGradient) {
    Params<float> p = Params<float>::zeros(small_shape(false));
    std::normal_distribution<float> n(0.0f, 0.4f);
    for (auto &t : tensors(p))
        for (int64_t i = 0; i < t.size; ++i) t.data[i] = (t.name.find("norm") != std::string::npos ? 1.0f : 0.0f) + n(rng());
    const Windows text = {{1, 5, 7, 2, 19, 4}, {22, 3, 3}, {8, 9, 10, 11}};
    const NeuronScores got = score_neurons(p, Score::TAYLOR, text, 0);
    Net<float> net(p);
    Mat<float> dz;
    cross_entropy(net.forward(text), Net<float>::targets(text), 1.0, dz, false, nullptr);
    Params<float> g = make_grads(p, Trainable::MLP);
    net.backward(dz, g);
    for (size_t l = 0; l < p.layers.size(); ++l) {
        const LayerParams<float> &W = p.layers[l], &G = g.layers[l];
        for (Eigen::Index j = 0; j < W.w_gate.rows(); ++j) {
            const double want = (W.w_gate.row(j).cwiseProduct(G.w_gate.row(j)).cwiseAbs().sum() +
                                 W.w_up.row(j).cwiseProduct(G.w_up.row(j)).cwiseAbs().sum() +
                                 W.w_down.col(j).cwiseProduct(G.w_down.col(j)).cwiseAbs().sum());
            EXPECT_NEAR(got[l][static_cast<size_t>(j)], want, 1e-5 * std::max(1.0, want)) << "layer " << l << " neuron " << j;
        }
    }
    // Groups of one window differ (the absolute values are taken per window).
    const NeuronScores single = score_neurons(p, Score::TAYLOR, text, 1);
    EXPECT_NE(single[0], got[0]);
}

// Windows are independent: a window's logits do not depend on the others in its batch.
TEST(TrainModel, WindowsOfABatchDoNotSeeEachOther) {
    Params<double> p = random_params(small_shape(false));
    Net<double> net(p);
    const MatD both = net.forward({{1, 5, 7, 2, 19}, {22, 3, 3}});
    const MatD second = net.forward({{22, 3, 3}});
    EXPECT_LT((both.bottomRows(3) - second).cwiseAbs().maxCoeff(), 1e-12);
}

TEST(TrainModel, BadBatchesAreClearErrors) {
    Params<double> p = random_params(small_shape(false));
    Net<double> net(p);
    EXPECT_THROW(net.forward({{1, 2}, {}}), std::exception);
    EXPECT_THROW(net.forward({{1, 23}}), std::exception);
    EXPECT_THROW(net.forward({{-1}}), std::exception);
}


// ---- optimizer ------------------------------------------------------------------------------------------------

TEST(TrainOptim, ScheduleWarmsUpThenFallsLinearlyToZero) {
    EXPECT_DOUBLE_EQ(lr_at(0, 100, 10, 1.0), 0.1);
    EXPECT_DOUBLE_EQ(lr_at(9, 100, 10, 1.0), 1.0);
    EXPECT_DOUBLE_EQ(lr_at(10, 100, 10, 1.0), 1.0);
    EXPECT_DOUBLE_EQ(lr_at(55, 100, 10, 1.0), 0.5);
    EXPECT_DOUBLE_EQ(lr_at(100, 100, 10, 1.0), 0.0);
    EXPECT_DOUBLE_EQ(lr_at(0, 4, 0, 2.0), 2.0);
}

TEST(TrainOptim, ClippingScalesToTheMaximumNorm) {
    std::vector<float> a = {3, 0}, b = {4};
    std::vector<TensorRef<float>> g = {{"a", {2}, a.data(), 2, true}, {"b", {1}, b.data(), 1, true}};
    EXPECT_DOUBLE_EQ(clip_grad_norm(g, 10.0), 5.0);
    EXPECT_EQ(a[0], 3.0f);  // under the limit: untouched
    EXPECT_DOUBLE_EQ(clip_grad_norm(g, 1.0), 5.0);
    EXPECT_NEAR(a[0], 0.6f, 1e-7);
    EXPECT_NEAR(b[0], 0.8f, 1e-7);
    b[0] = std::nanf("");
    EXPECT_TRUE(std::isnan(clip_grad_norm(g, 1.0)));
}

TEST(TrainOptim, AdamWFirstStepIsTheLearningRateAndDecayIsDecoupled) {
    std::vector<float> w = {1.0f, -2.0f, 0.5f, 0.0f}, bias = {1.0f};
    std::vector<float> gw = {0.3f, -5.0f, 1e-3f, 0.0f}, gb = {2.0f};
    AdamWOptions o;
    o.weight_decay = 0.1;
    AdamW opt({{"w", {2, 2}, w.data(), 4, true}, {"b", {1}, bias.data(), 1, true}}, o);
    opt.step({{"w", {2, 2}, gw.data(), 4, true}, {"b", {1}, gb.data(), 1, true}}, 0.01);
    // m/sqrt(v) = sign(g) on the first step; the matrix decays by lr * wd, the vector does not.
    EXPECT_NEAR(w[0], 1.0 * (1 - 0.001) - 0.01, 1e-6);
    EXPECT_NEAR(w[1], -2.0 * (1 - 0.001) + 0.01, 1e-6);
    EXPECT_NEAR(w[3], 0.0, 1e-12);
    EXPECT_NEAR(bias[0], 1.0 - 0.01, 1e-6);
    EXPECT_EQ(opt.steps(), 1);
}

TEST(TrainOptim, AdamWMinimizesAQuadratic) {
    std::vector<float> w = {5.0f, -3.0f}, g(2);
    AdamW opt({{"w", {2}, w.data(), 2, true}}, AdamWOptions{});
    for (int s = 0; s < 2000; ++s) {
        g[0] = 2 * (w[0] - 1), g[1] = 2 * (w[1] + 2);
        opt.step({{"w", {2}, g.data(), 2, true}}, lr_at(s, 2000, 100, 0.05));
    }
    EXPECT_NEAR(w[0], 1.0f, 1e-2);
    EXPECT_NEAR(w[1], -2.0f, 1e-2);
}

}  // namespace
}  // namespace pangu::train
