// The operations of the openPangu block, forward and backward, in a scalar type T (float to train, double for
// the finite-difference checks in tests/unit/test_train.cpp). Rows are tokens. A backward function takes the
// forward's inputs and what it saved, and the gradient of the loss with respect to its output (dy); it
// ACCUMULATES into parameter gradients (dw += ...), so that a tied table or a batch can sum several
// contributions, and SETS the gradient of its input (dx = ...) unless it says otherwise.
//
// The math, written out once (the runtime's forward is src/runtime/forward.cpp, the calibration's
// tools/lib/calib.cpp):
//   rmsnorm:   y = x * r * w,  r = (mean(x^2) + eps)^-1/2 per row
//   linear:    y = x W^T + b
//   rope:      NeoX halves: (a, b) -> (a cos - b sin, b cos + a sin), angle pos * theta^(-2i/hd)
//   attention: per head, P = softmax(Q K^T / sqrt(hd) + causal mask), O = P V; KV heads shared by groups
//   swiglu:    a = silu(g) * u,  silu(g) = g * sigmoid(g)
//   losses:    cross-entropy of the next token; KL(teacher || student) of softmax(z / tau), times tau^2
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "parallel.h"
#include "params.h"

namespace pangu::train {

constexpr int64_t kRowGrain = 16;  // rows a thread takes at least

// ---- RMSNorm ------------------------------------------------------------------------------------------------

// x [N, D], w [D] -> y [N, D]; r [N] saved.
template <typename T>
void rmsnorm_forward(const Mat<T> &x, const Vec<T> &w, double eps, Mat<T> &y, Vec<T> &r) {
    const Eigen::Index N = x.rows(), D = x.cols();
    y.resize(N, D), r.resize(N);
    parallel_for(N, kRowGrain, [&](int64_t b, int64_t e) {
        for (Eigen::Index i = b; i < e; ++i) {
            const T ms = x.row(i).squaredNorm() / static_cast<T>(D);
            r(i) = T(1) / std::sqrt(ms + static_cast<T>(eps));
            y.row(i) = x.row(i).cwiseProduct(w.transpose()) * r(i);
        }
    });
}

// dx_j = r (dy_j w_j) - x_j r^3 / D * sum_i dy_i w_i x_i;  dw_i += sum over rows of dy_i x_i r.
template <typename T>
void rmsnorm_backward(const Mat<T> &x, const Vec<T> &w, const Vec<T> &r, const Mat<T> &dy, Mat<T> &dx, Vec<T> *dw) {
    const Eigen::Index N = x.rows(), D = x.cols();
    dx.resize(N, D);
    parallel_for(N, kRowGrain, [&](int64_t b, int64_t e) {
        for (Eigen::Index i = b; i < e; ++i) {
            const auto gw = dy.row(i).cwiseProduct(w.transpose());
            const T dot = gw.dot(x.row(i));
            const T ri = r(i);
            dx.row(i) = gw * ri - x.row(i) * (ri * ri * ri * dot / static_cast<T>(D));
        }
    });
    if (dw) *dw += (dy.cwiseProduct(x).array().colwise() * r.array()).colwise().sum().matrix().transpose();
}

// ---- matrix products, split over the engine's threads by blocks of output rows ----------------------------------

// y = x W^T: x [N, in], W [out, in] -> y [N, out].
template <typename T>
void matmul_nt(const Mat<T> &x, const Mat<T> &W, Mat<T> &y) {
    y.resize(x.rows(), W.rows());
    parallel_for(x.rows(), kRowGrain, [&](int64_t b, int64_t e) {
        y.middleRows(b, e - b).noalias() = x.middleRows(b, e - b) * W.transpose();
    });
}

// dx = dy W (or dx += dy W with `add`): dy [N, out], W [out, in] -> [N, in].
template <typename T>
void matmul_nn(const Mat<T> &dy, const Mat<T> &W, Mat<T> &dx, bool add) {
    if (!add) dx.resize(dy.rows(), W.cols());
    parallel_for(dy.rows(), kRowGrain, [&](int64_t b, int64_t e) {
        if (add)
            dx.middleRows(b, e - b).noalias() += dy.middleRows(b, e - b) * W;
        else
            dx.middleRows(b, e - b).noalias() = dy.middleRows(b, e - b) * W;
    });
}

// dW += dy^T x: dy [N, out], x [N, in] -> dW [out, in], split over dW's rows.
template <typename T>
void matmul_tn_add(const Mat<T> &dy, const Mat<T> &x, Mat<T> &dW) {
    parallel_for(dW.rows(), kRowGrain, [&](int64_t b, int64_t e) {
        dW.middleRows(b, e - b).noalias() += dy.middleCols(b, e - b).transpose() * x;
    });
}

// ---- linear -------------------------------------------------------------------------------------------------

// x [N, in], W [out, in], b [out] or empty -> y [N, out].
template <typename T>
void linear_forward(const Mat<T> &x, const Mat<T> &W, const Vec<T> &b, Mat<T> &y) {
    matmul_nt(x, W, y);
    if (b.size()) y.rowwise() += b.transpose();
}

// dx = dy W (set, or added when `add_dx`); dW += dy^T x; db += sum of dy's rows. dW / db null: not trained.
template <typename T>
void linear_backward(const Mat<T> &x, const Mat<T> &W, const Mat<T> &dy, Mat<T> *dx, Mat<T> *dW, Vec<T> *db,
                     bool add_dx = false) {
    if (dx) matmul_nn(dy, W, *dx, add_dx);
    if (dW) matmul_tn_add(dy, x, *dW);
    if (db) *db += dy.colwise().sum().transpose();
}

// ---- RoPE (NeoX halves) -------------------------------------------------------------------------------------

// cos then sin of pos * theta^(-2i/hd), [max_pos, hd] (hd/2 cosines, hd/2 sines), computed in double as the
// runtime's table.
template <typename T>
Mat<T> rope_table(int max_pos, int head_dim, double theta) {
    const int half = head_dim / 2;
    Mat<T> t(max_pos, head_dim);
    for (int p = 0; p < max_pos; ++p)
        for (int i = 0; i < half; ++i) {
            const double a = static_cast<double>(p) * std::pow(theta, -2.0 * i / head_dim);
            t(p, i) = static_cast<T>(std::cos(a));
            t(p, half + i) = static_cast<T>(std::sin(a));
        }
    return t;
}

// Rotates every head of rows [row0, row0 + n) of x [N, heads * hd] in place, row row0 + k at position k;
// `inverse` rotates by minus the angle (the backward of a rotation is its transpose).
template <typename T>
void rope_apply(Mat<T> &x, Eigen::Index row0, Eigen::Index n, int head_dim, const Mat<T> &table, bool inverse) {
    const int half = head_dim / 2;
    const Eigen::Index heads = x.cols() / head_dim;
    for (Eigen::Index k = 0; k < n; ++k) {
        const T *cs = &table(k, 0), *sn = cs + half;
        T *row = &x(row0 + k, 0);
        for (Eigen::Index h = 0; h < heads; ++h) {
            T *a = row + h * head_dim, *b = a + half;
            for (int i = 0; i < half; ++i) {
                const T s = inverse ? -sn[i] : sn[i];
                const T ai = a[i], bi = b[i];
                a[i] = ai * cs[i] - bi * s;
                b[i] = bi * cs[i] + ai * s;
            }
        }
    }
}

// ---- causal grouped-query attention (one window, one head) --------------------------------------------------

// q [T, hd], k [T, hd], v [T, hd] -> o [T, hd]; P [T, T] (row i: softmax over j <= i, zeros after) saved.
template <typename T, typename Q, typename K, typename V, typename O>
void attention_head_forward(const Q &q, const K &k, const V &v, T scale, Mat<T> &P, O &&o) {
    const Eigen::Index n = q.rows();
    P.noalias() = (q * k.transpose()) * scale;
    for (Eigen::Index i = 0; i < n; ++i) {
        const T mx = P.row(i).head(i + 1).maxCoeff();
        T sum = 0;
        for (Eigen::Index j = 0; j <= i; ++j) sum += (P(i, j) = std::exp(P(i, j) - mx));
        P.row(i).head(i + 1) /= sum;
        P.row(i).tail(n - i - 1).setZero();
    }
    o.noalias() = P * v;
}

// dS = P * (dP - rowsum(dP * P)) with dP = do V^T; dq = dS K scale (set); dk += dS^T q scale; dv += P^T do.
template <typename T, typename Q, typename K, typename V, typename DO, typename DQ, typename DK, typename DV>
void attention_head_backward(const Q &q, const K &k, const V &v, T scale, const Mat<T> &P, const DO &dout, DQ &&dq,
                             DK &&dk, DV &&dv) {
    Mat<T> dS = dout * v.transpose();
    const Vec<T> rowdot = dS.cwiseProduct(P).rowwise().sum();
    dS = P.cwiseProduct(dS.colwise() - rowdot) * scale;  // entries after the diagonal: P is 0 there
    dq.noalias() = dS * k;
    dk.noalias() += dS.transpose() * q;
    dv.noalias() += P.transpose() * dout;
}

// ---- SwiGLU -------------------------------------------------------------------------------------------------

template <typename T>
inline T sigmoid(T x) {
    return T(1) / (T(1) + std::exp(-x));
}

// g, u [N, F] -> a = silu(g) * u.
template <typename T>
void swiglu_forward(const Mat<T> &g, const Mat<T> &u, Mat<T> &a) {
    a.resize(g.rows(), g.cols());
    parallel_for(g.rows(), kRowGrain, [&](int64_t b, int64_t e) {
        a.middleRows(b, e - b) = g.middleRows(b, e - b).binaryExpr(u.middleRows(b, e - b),
                                                                    [](T gi, T ui) { return gi * sigmoid(gi) * ui; });
    });
}

// dg = da u sigmoid(g) (1 + g (1 - sigmoid(g))); du = da silu(g).
template <typename T>
void swiglu_backward(const Mat<T> &g, const Mat<T> &u, const Mat<T> &da, Mat<T> &dg, Mat<T> &du) {
    dg.resize(g.rows(), g.cols()), du.resize(g.rows(), g.cols());
    const T *G = g.data(), *U = u.data(), *A = da.data();
    T *DG = dg.data(), *DU = du.data();
    parallel_for(g.size(), 4096, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
            const T s = sigmoid(G[i]);
            DG[i] = A[i] * U[i] * s * (T(1) + G[i] * (T(1) - s));
            DU[i] = A[i] * G[i] * s;
        }
    });
}

// ---- losses -------------------------------------------------------------------------------------------------

// Mean cross-entropy of the rows whose target is >= 0 (a target of -1 scores nothing); dz (set) is its gradient
// times `weight`, added to with `add`. Returns the mean (0 when no row is scored); `scored` gets their number.
template <typename T>
double cross_entropy(const Mat<T> &z, const std::vector<int32_t> &target, double weight, Mat<T> &dz, bool add,
                     int64_t *scored) {
    if (!add) dz.setZero(z.rows(), z.cols());
    int64_t n = 0;
    for (int32_t t : target) n += t >= 0;
    if (scored) *scored = n;
    if (n == 0) return 0.0;
    std::vector<double> row_loss(static_cast<size_t>(z.rows()), 0.0);
    const T k = static_cast<T>(weight / static_cast<double>(n));
    parallel_for(z.rows(), 4, [&](int64_t b, int64_t end) {
        for (Eigen::Index i = b; i < end; ++i) {
            if (target[i] < 0) continue;
            const T mx = z.row(i).maxCoeff();
            const Vec<T> e = (z.row(i).array() - mx).exp().matrix().transpose();
            const T sum = e.sum();
            row_loss[static_cast<size_t>(i)] = static_cast<double>(std::log(sum) + mx - z(i, target[i]));
            dz.row(i) += (e.transpose() / sum) * k;
            dz(i, target[i]) -= k;
        }
    });
    double total = 0;
    for (double l : row_loss) total += l;
    return total / static_cast<double>(n);
}

// KL(p_t || p_s) with p = softmax(z / tau), times tau^2 (Hinton's scaling keeps the gradient's size
// independent of tau), averaged over the rows; dz_s (set, or added to with `add`) = weight * tau * (p_s - p_t) / N.
template <typename T>
double kl_divergence(const Mat<T> &zt, const Mat<T> &zs, double tau, double weight, Mat<T> &dz, bool add) {
    if (!add) dz.setZero(zs.rows(), zs.cols());
    const Eigen::Index N = zs.rows();
    if (N == 0) return 0.0;
    const T inv = static_cast<T>(1.0 / tau);
    const T k = static_cast<T>(weight * tau / static_cast<double>(N));
    std::vector<double> row_kl(static_cast<size_t>(N), 0.0);
    parallel_for(N, 4, [&](int64_t b, int64_t end) {
        for (Eigen::Index i = b; i < end; ++i) {
            const auto lt = zt.row(i).array() * inv, ls = zs.row(i).array() * inv;
            const T mt = lt.maxCoeff(), ms = ls.maxCoeff();
            const Eigen::Array<T, 1, Eigen::Dynamic> et = (lt - mt).exp(), es = (ls - ms).exp();
            const T st = et.sum(), ss = es.sum();
            const Eigen::Array<T, 1, Eigen::Dynamic> pt = et / st, ps = es / ss;
            // log p_t - log p_s = (lt - mt - log st) - (ls - ms - log ss)
            const auto diff = (lt - mt - std::log(st)) - (ls - ms - std::log(ss));
            row_kl[static_cast<size_t>(i)] = static_cast<double>((pt * diff).sum());
            dz.row(i) += ((ps - pt) * k).matrix();
        }
    });
    double total = 0;
    for (double l : row_kl) total += l;
    return total * tau * tau / static_cast<double>(N);
}

}  // namespace pangu::train
