#include "net.h"

#include <algorithm>
#include <string>

#include "common/common.h"

namespace pangu::train {

namespace {

// The first row of every window of a batch.
std::vector<Eigen::Index> window_starts(const Windows &batch) {
    std::vector<Eigen::Index> start;
    Eigen::Index row = 0;
    for (const auto &w : batch) start.push_back(row), row += static_cast<Eigen::Index>(w.size());
    return start;
}

}  // namespace

template <typename T>
Net<T>::Net(const Params<T> &p) : p_(p) {
    acts_.resize(p.layers.size());
}

template <typename T>
std::vector<int32_t> Net<T>::targets(const Windows &batch) {
    std::vector<int32_t> t;
    for (const auto &w : batch) {
        for (size_t i = 0; i + 1 < w.size(); ++i) t.push_back(w[i + 1]);
        if (!w.empty()) t.push_back(-1);
    }
    return t;
}

template <typename T>
void Net<T>::rope(Mat<T> &x, const Windows &batch, bool inverse) const {
    Eigen::Index row = 0;
    for (const auto &w : batch) {
        const auto n = static_cast<Eigen::Index>(w.size());
        rope_apply(x, row, n, p_.shape.head_dim, rope_, inverse);
        row += n;
    }
}

template <typename T>
const Mat<T> &Net<T>::forward(const Windows &batch) {
    const Shape &s = p_.shape;
    int64_t n = 0;
    int longest = 0;
    for (const auto &w : batch) {
        if (w.empty()) fail(PANGU_ERR_INVALID_ARGUMENT, "training batch: an empty window");
        for (int32_t t : w)
            if (t < 0 || t >= s.n_vocab)
                fail(PANGU_ERR_INVALID_ARGUMENT, "training batch: token " + std::to_string(t) + " is outside the vocabulary");
        n += static_cast<int64_t>(w.size());
        longest = std::max(longest, static_cast<int>(w.size()));
    }
    if (longest > rope_len_) rope_ = rope_table<T>(longest, s.head_dim, s.rope_theta), rope_len_ = longest;
    batch_ = batch;
    n_rows_ = n;

    // embedding: x [N, D]
    Mat<T> x(n, s.n_embd);
    int64_t row = 0;
    for (const auto &w : batch)
        for (int32_t t : w) x.row(row++) = p_.embed.row(t);
    for (int l = 0; l < s.n_layer(); ++l) {
        Mat<T> next;
        layer_forward(l, batch, x, next);
        x.swap(next);
    }
    // final norm and head: logits [N, V]
    xf_.swap(x);
    rmsnorm_forward(xf_, p_.norm, s.eps, hf_, rf_);
    matmul_nt(hf_, s.tied ? p_.embed : p_.head, logits_);
    return logits_;
}

template <typename T>
void Net<T>::layer_forward(int l, const Windows &batch, const Mat<T> &x, Mat<T> &out) {
    const LayerParams<T> &W = p_.layers[static_cast<size_t>(l)];
    LayerActs<T> &A = acts_[static_cast<size_t>(l)];
    const double eps = p_.shape.eps;
    A.x = x;
    // attention block: xm = x + o_proj(attn(rope(q(h1)), rope(k(h1)), v(h1)))
    rmsnorm_forward(A.x, W.attn_norm, eps, A.h1, A.r1);
    linear_forward(A.h1, W.wq, W.bq, A.q);
    linear_forward(A.h1, W.wk, W.bk, A.k);
    linear_forward(A.h1, W.wv, W.bv, A.v);
    rope(A.q, batch, false);
    rope(A.k, batch, false);
    attention_forward(l, batch);
    linear_forward(A.o, W.wo, W.bo, A.xm);
    A.xm += A.x;
    // MLP block: out = xm + down(silu(gate(h2)) * up(h2))
    rmsnorm_forward(A.xm, W.ffn_norm, eps, A.h2, A.r2);
    matmul_nt(A.h2, W.w_gate, A.g);
    matmul_nt(A.h2, W.w_up, A.u);
    swiglu_forward(A.g, A.u, A.a);
    matmul_nt(A.a, W.w_down, out);
    out += A.xm;
}

template <typename T>
void Net<T>::attention_forward(int l, const Windows &batch) {
    const Shape &s = p_.shape;
    LayerActs<T> &A = acts_[static_cast<size_t>(l)];
    const int hd = s.head_dim, group = s.n_head / s.n_kv;
    const T scale = T(1) / std::sqrt(static_cast<T>(hd));
    A.o.resize(A.q.rows(), A.q.cols());
    A.P.resize(batch.size() * static_cast<size_t>(s.n_head));
    const std::vector<Eigen::Index> start = window_starts(batch);
    // One task per window and head (each writes its own block of o and its own P).
    parallel_for(static_cast<int64_t>(batch.size()) * s.n_head, 1, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
            const size_t w = static_cast<size_t>(t / s.n_head);
            const int h = static_cast<int>(t % s.n_head), kvh = h / group;
            const Eigen::Index row = start[w], n = static_cast<Eigen::Index>(batch[w].size());
            attention_head_forward(A.q.block(row, h * hd, n, hd), A.k.block(row, kvh * hd, n, hd),
                                   A.v.block(row, kvh * hd, n, hd), scale, A.P[static_cast<size_t>(t)],
                                   A.o.block(row, h * hd, n, hd));
        }
    });
}

template <typename T>
void Net<T>::backward(const Mat<T> &dz, Params<T> &grad) {
    const Shape &s = p_.shape;
    if (dz.rows() != n_rows_ || dz.cols() != s.n_vocab) fail(PANGU_ERR_INTERNAL, "backward: dlogits of the wrong shape");
    // head: logits = hf H^T, H the head or (tied) the embedding table
    Mat<T> *dH = s.tied ? (grad.embed.size() ? &grad.embed : nullptr) : (grad.head.size() ? &grad.head : nullptr);
    Mat<T> dhf;
    matmul_nn(dz, s.tied ? p_.embed : p_.head, dhf, false);
    if (dH) matmul_tn_add(dz, hf_, *dH);
    Mat<T> dx;
    rmsnorm_backward(xf_, p_.norm, rf_, dhf, dx, grad.norm.size() ? &grad.norm : nullptr);
    for (int l = s.n_layer() - 1; l >= 0; --l) layer_backward(l, batch_, dx, grad.layers[static_cast<size_t>(l)]);
    if (grad.embed.size()) {
        int64_t row = 0;
        for (const auto &w : batch_)
            for (int32_t t : w) grad.embed.row(t) += dx.row(row++);
    }
}

template <typename T>
void Net<T>::layer_backward(int l, const Windows &batch, Mat<T> &dx, LayerParams<T> &g) {
    const LayerParams<T> &W = p_.layers[static_cast<size_t>(l)];
    const LayerActs<T> &A = acts_[static_cast<size_t>(l)];
    auto M = [](Mat<T> &m) { return m.size() ? &m : nullptr; };
    auto V = [](Vec<T> &v) { return v.size() ? &v : nullptr; };
    // MLP: out = xm + a Wd^T; a = silu(g) * u; g = h2 Wg^T, u = h2 Wu^T
    Mat<T> da, dg, du, dh2, dxm;
    linear_backward(A.a, W.w_down, dx, &da, M(g.w_down), static_cast<Vec<T> *>(nullptr));
    swiglu_backward(A.g, A.u, da, dg, du);
    linear_backward(A.h2, W.w_gate, dg, &dh2, M(g.w_gate), static_cast<Vec<T> *>(nullptr));
    linear_backward(A.h2, W.w_up, du, &dh2, M(g.w_up), static_cast<Vec<T> *>(nullptr), true);
    rmsnorm_backward(A.xm, W.ffn_norm, A.r2, dh2, dxm, V(g.ffn_norm));
    dxm += dx;
    // attention: xm = x + o Wo^T + bo
    Mat<T> dout, dq, dk, dv, dh1;
    linear_backward(A.o, W.wo, dxm, &dout, M(g.wo), V(g.bo));
    attention_backward(l, batch, dout, dq, dk, dv);
    rope(dq, batch, true);
    rope(dk, batch, true);
    linear_backward(A.h1, W.wq, dq, &dh1, M(g.wq), V(g.bq));
    linear_backward(A.h1, W.wk, dk, &dh1, M(g.wk), V(g.bk), true);
    linear_backward(A.h1, W.wv, dv, &dh1, M(g.wv), V(g.bv), true);
    rmsnorm_backward(A.x, W.attn_norm, A.r1, dh1, dx, V(g.attn_norm));
    dx += dxm;
}

template <typename T>
void Net<T>::attention_backward(int l, const Windows &batch, const Mat<T> &dout, Mat<T> &dq, Mat<T> &dk,
                                Mat<T> &dv) {
    const Shape &s = p_.shape;
    const LayerActs<T> &A = acts_[static_cast<size_t>(l)];
    const int hd = s.head_dim, group = s.n_head / s.n_kv;
    const T scale = T(1) / std::sqrt(static_cast<T>(hd));
    dq.resize(A.q.rows(), A.q.cols());
    dk = Mat<T>::Zero(A.k.rows(), A.k.cols());
    dv = Mat<T>::Zero(A.v.rows(), A.v.cols());
    const std::vector<Eigen::Index> start = window_starts(batch);
    // One task per window and KV head: the heads of a group add into the same dk, dv block, so they run in one task.
    parallel_for(static_cast<int64_t>(batch.size()) * s.n_kv, 1, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t) {
            const size_t w = static_cast<size_t>(t / s.n_kv);
            const int kvh = static_cast<int>(t % s.n_kv);
            const Eigen::Index row = start[w], n = static_cast<Eigen::Index>(batch[w].size());
            for (int h = kvh * group; h < (kvh + 1) * group; ++h)
                attention_head_backward(A.q.block(row, h * hd, n, hd), A.k.block(row, kvh * hd, n, hd),
                                        A.v.block(row, kvh * hd, n, hd), scale, A.P[w * s.n_head + h],
                                        dout.block(row, h * hd, n, hd), dq.block(row, h * hd, n, hd),
                                        dk.block(row, kvh * hd, n, hd), dv.block(row, kvh * hd, n, hd));
        }
    });
}

template <typename T>
Params<T> make_grads(const Params<T> &p, Trainable tr) {
    Params<T> g = Params<T>::zeros(p.shape);
    // Frozen tensors are emptied, so that the backward skips their products.
    const bool all = tr == Trainable::ALL, layers = all || tr == Trainable::LAYERS;
    if (!all) g.embed.resize(0, 0), g.head.resize(0, 0);
    if (!layers) {
        g.norm.resize(0);
        for (auto &L : g.layers) {
            L.attn_norm.resize(0), L.ffn_norm.resize(0);
            L.wq.resize(0, 0), L.wk.resize(0, 0), L.wv.resize(0, 0), L.wo.resize(0, 0);
            L.bq.resize(0), L.bk.resize(0), L.bv.resize(0), L.bo.resize(0);
        }
    }
    return g;
}

template <typename T>
void zero_grads(Params<T> &g) {
    for (auto &t : tensors(g)) std::fill(t.data, t.data + t.size, T(0));
}

template class Net<float>;
template class Net<double>;
template Params<float> make_grads(const Params<float> &, Trainable);
template Params<double> make_grads(const Params<double> &, Trainable);
template void zero_grads(Params<float> &);
template void zero_grads(Params<double> &);

}  // namespace pangu::train
