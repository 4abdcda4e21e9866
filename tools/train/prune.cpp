#include "prune.h"

#include <algorithm>
#include <numeric>
#include <queue>

#include "common/common.h"

namespace pangu::train {

const char *score_name(Score s) {
    switch (s) {
    case Score::TAYLOR: return "taylor";
    case Score::MAGNITUDE: return "magnitude";
    case Score::WANDA: return "wanda";
    }
    return "?";
}

namespace {

// Row j of gate and up and column j of down, f(w, g) summed (g the matching gradient or weight).
template <typename F>
void add_per_neuron(const LayerParams<float> &W, const LayerParams<float> &G, std::vector<double> &out, F f) {
    const Eigen::Index F_ = W.w_gate.rows(), D = W.w_gate.cols();
    for (Eigen::Index j = 0; j < F_; ++j) {
        double s = 0;
        for (Eigen::Index i = 0; i < D; ++i) s += f(W.w_gate(j, i), G.w_gate(j, i)) + f(W.w_up(j, i), G.w_up(j, i));
        for (Eigen::Index r = 0; r < D; ++r) s += f(W.w_down(r, j), G.w_down(r, j));
        out[static_cast<size_t>(j)] += s;
    }
}

NeuronScores zero_scores(const Params<float> &p) {
    NeuronScores s;
    for (const auto &L : p.layers) s.emplace_back(static_cast<size_t>(L.w_gate.rows()), 0.0);
    return s;
}

void score_magnitude(const Params<float> &p, NeuronScores &s) {
    for (size_t l = 0; l < p.layers.size(); ++l)
        add_per_neuron(p.layers[l], p.layers[l], s[l], [](float w, float) { return std::abs(double(w)); });
}

// The gradient of the mean cross-entropy over each group of `batch` windows, accumulated one window at a time
// (so that a group costs one window's activations), then |w * g| summed per neuron over the groups.
void score_taylor(Params<float> &p, const Windows &calib, int batch, NeuronScores &s,
                  const std::function<void(size_t, size_t)> &progress) {
    Net<float> net(p);
    Params<float> g = make_grads(p, Trainable::MLP);
    for (size_t b = 0; b < calib.size(); b += static_cast<size_t>(batch)) {
        const size_t end = std::min(calib.size(), b + static_cast<size_t>(batch));
        double scored = 0;  // next-token targets in the group
        for (size_t i = b; i < end; ++i) scored += static_cast<double>(calib[i].size() - 1);
        zero_grads(g);
        for (size_t i = b; i < end; ++i) {
            const Windows w = {calib[i]};
            Mat<float> dz;
            // weight n_i / N: the window's share of the group's mean
            cross_entropy(net.forward(w), Net<float>::targets(w), static_cast<double>(calib[i].size() - 1) / scored, dz,
                          false, nullptr);
            net.backward(dz, g);
            if (progress) progress(i + 1, calib.size());
        }
        for (size_t l = 0; l < p.layers.size(); ++l)
            add_per_neuron(p.layers[l], g.layers[l], s[l], [](float wi, float gi) { return std::abs(double(wi) * gi); });
    }
}

// ||x|| of every input channel of gate/up (h2) and of down (a), then |w| * ||x||.
void score_wanda(Params<float> &p, const Windows &calib, int batch, NeuronScores &s,
                 const std::function<void(size_t, size_t)> &progress) {
    Net<float> net(p);
    const size_t L = p.layers.size();
    std::vector<Eigen::VectorXd> n2(L), na(L);
    for (size_t l = 0; l < L; ++l)
        n2[l] = Eigen::VectorXd::Zero(p.shape.n_embd), na[l] = Eigen::VectorXd::Zero(p.layers[l].w_gate.rows());
    for (size_t b = 0; b < calib.size(); b += static_cast<size_t>(batch)) {
        const Windows w(calib.begin() + static_cast<long>(b),
                        calib.begin() + static_cast<long>(std::min(calib.size(), b + static_cast<size_t>(batch))));
        net.forward(w);
        for (size_t l = 0; l < L; ++l) {
            n2[l] += net.acts(static_cast<int>(l)).h2.colwise().squaredNorm().transpose().cast<double>();
            na[l] += net.acts(static_cast<int>(l)).a.colwise().squaredNorm().transpose().cast<double>();
        }
        if (progress) progress(std::min(calib.size(), b + static_cast<size_t>(batch)), calib.size());
    }
    for (size_t l = 0; l < L; ++l) {
        const LayerParams<float> &W = p.layers[l];
        const Eigen::VectorXd xn = n2[l].cwiseSqrt(), an = na[l].cwiseSqrt();
        for (Eigen::Index j = 0; j < W.w_gate.rows(); ++j) {
            const double in = (W.w_gate.row(j).cwiseAbs() + W.w_up.row(j).cwiseAbs()).cast<double>().dot(xn);
            s[l][static_cast<size_t>(j)] += in + W.w_down.col(j).cwiseAbs().cast<double>().sum() * an(j);
        }
    }
}

}  // namespace

NeuronScores score_neurons(Params<float> &p, Score how, const Windows &calib, int batch,
                           const std::function<void(size_t, size_t)> &progress) {
    NeuronScores s = zero_scores(p);
    if (how != Score::MAGNITUDE && calib.empty()) fail(PANGU_ERR_INVALID_ARGUMENT, "scoring needs calibration text");
    if (batch < 0) fail(PANGU_ERR_INVALID_ARGUMENT, "the scoring batch is a number of windows, 0 for all of them");
    if (batch == 0) batch = static_cast<int>(std::min<size_t>(calib.size(), INT32_MAX));
    if (batch == 0) batch = 1;  // magnitude, without text
    switch (how) {
    case Score::MAGNITUDE: score_magnitude(p, s); break;
    case Score::TAYLOR: score_taylor(p, calib, batch, s, progress); break;
    case Score::WANDA: score_wanda(p, calib, batch, s, progress); break;
    }
    return s;
}

namespace {

// Each layer's neurons, least important first.
std::vector<std::vector<int>> ascending(const NeuronScores &s) {
    std::vector<std::vector<int>> order(s.size());
    for (size_t l = 0; l < s.size(); ++l) {
        order[l].resize(s[l].size());
        std::iota(order[l].begin(), order[l].end(), 0);
        std::stable_sort(order[l].begin(), order[l].end(), [&](int a, int b) { return s[l][a] < s[l][b]; });
    }
    return order;
}

// The widths after removing, greedily, the cheapest units of `align` neurons of any layer.
std::vector<int> global_widths(const NeuronScores &s, const std::vector<std::vector<int>> &order,
                               std::vector<int> width, int64_t total, int64_t target, int align,
                               const std::vector<int> &floor) {
    auto unit_cost = [&](size_t l) {
        const int removed = static_cast<int>(s[l].size()) - width[l];
        double c = 0;
        for (int k = 0; k < align; ++k) c += s[l][static_cast<size_t>(order[l][static_cast<size_t>(removed + k)])];
        return c;
    };
    using Item = std::pair<double, size_t>;
    std::priority_queue<Item, std::vector<Item>, std::greater<Item>> q;
    for (size_t l = 0; l < s.size(); ++l)
        if (width[l] - align >= floor[l]) q.push({unit_cost(l), l});
    while (total - target > target - (total - align) && !q.empty()) {  // while a unit brings it closer
        const size_t l = q.top().second;
        q.pop();
        width[l] -= align, total -= align;
        if (width[l] - align >= floor[l]) q.push({unit_cost(l), l});
    }
    return width;
}

}  // namespace

std::vector<std::vector<int>> plan_keep(const NeuronScores &s, int64_t target_total, int align,
                                        const std::vector<int> &min_width, Spread spread) {
    if (align < 1) fail(PANGU_ERR_INVALID_ARGUMENT, "--align must be at least 1");
    std::vector<int> width(s.size()), floor(s.size());
    int64_t total = 0, original = 0;
    for (size_t l = 0; l < s.size(); ++l) {
        const int n = static_cast<int>(s[l].size());
        if (align > n)
            fail(PANGU_ERR_INVALID_ARGUMENT, "--align " + std::to_string(align) + " is larger than layer " +
                                                 std::to_string(l) + "'s width " + std::to_string(n));
        width[l] = n / align * align;  // a width not on the alignment is first rounded down to it
        floor[l] = std::min(width[l], std::max(align, (min_width[l] + align - 1) / align * align));
        total += width[l], original += n;
    }
    const auto order = ascending(s);
    if (spread == Spread::UNIFORM) {
        const double keep = static_cast<double>(target_total) / static_cast<double>(original);
        for (size_t l = 0; l < s.size(); ++l) {
            const int w = static_cast<int>(std::lround(keep * static_cast<double>(s[l].size()) / align)) * align;
            width[l] = std::max(floor[l], std::min(width[l], w));
        }
    } else {
        width = global_widths(s, order, width, total, target_total, align, floor);
    }
    std::vector<std::vector<int>> keep(s.size());
    for (size_t l = 0; l < s.size(); ++l) {
        const size_t drop = s[l].size() - static_cast<size_t>(width[l]);
        keep[l].assign(order[l].begin() + static_cast<long>(drop), order[l].end());
        std::sort(keep[l].begin(), keep[l].end());
    }
    return keep;
}

void apply_keep(Params<float> &p, const std::vector<std::vector<int>> &keep) {
    if (keep.size() != p.layers.size()) fail(PANGU_ERR_INTERNAL, "apply_keep: one list per layer");
    for (size_t l = 0; l < keep.size(); ++l) {
        LayerParams<float> &L = p.layers[l];
        const auto n = static_cast<Eigen::Index>(keep[l].size());
        Mat<float> g(n, L.w_gate.cols()), u(n, L.w_up.cols()), d(L.w_down.rows(), n);
        for (Eigen::Index k = 0; k < n; ++k) {
            const int j = keep[l][static_cast<size_t>(k)];
            if (j < 0 || j >= L.w_gate.rows()) fail(PANGU_ERR_INTERNAL, "apply_keep: neuron out of range");
            g.row(k) = L.w_gate.row(j), u.row(k) = L.w_up.row(j), d.col(k) = L.w_down.col(j);
        }
        L.w_gate.swap(g), L.w_up.swap(u), L.w_down.swap(d);
        p.shape.n_ff[l] = static_cast<int>(n);
    }
}

ScoreStats score_stats(const std::vector<double> &s, const std::vector<int> &keep) {
    ScoreStats st;
    if (s.empty()) return st;
    std::vector<double> v = s;
    std::sort(v.begin(), v.end());
    st.min = v.front(), st.max = v.back(), st.median = v[v.size() / 2];
    const double total = std::accumulate(v.begin(), v.end(), 0.0);
    st.mean = total / static_cast<double>(v.size());
    // The removed scores summed themselves (total - kept came out as -1e-15 for a layer that lost nothing).
    std::vector<bool> kept(s.size(), false);
    for (int j : keep) kept[static_cast<size_t>(j)] = true;
    double removed = 0;
    for (size_t j = 0; j < s.size(); ++j)
        if (!kept[j]) removed += s[j];
    st.removed_share = total > 0 ? removed / total : 0.0;
    return st;
}

}  // namespace pangu::train
