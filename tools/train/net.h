// The whole openPangu model for training: a forward pass over a batch of token windows that keeps what the
// backward needs, and the backward from the gradient of the logits to every trainable tensor. One readable
// path in the style of llm.c: shapes in comments, the ops of ops.h composed in order.
//
// A batch is a list of windows; their rows are concatenated ([N, ...] with N the total tokens) for the matrix
// products, and attention runs per window (positions restart at 0 in each, no window sees another).
#pragma once

#include <cstdint>
#include <vector>

#include "ops.h"
#include "params.h"

namespace pangu::train {

using Windows = std::vector<std::vector<int32_t>>;

// What one layer's forward keeps for the backward.
template <typename T>
struct LayerActs {
    Mat<T> x;           // [N, D] the layer's input
    Vec<T> r1, r2;      // [N] the two norms' reciprocal RMS
    Mat<T> h1;          // [N, D] input_layernorm(x): q/k/v's input
    Mat<T> q, k, v;     // [N, H*hd], [N, KV*hd] x2, after RoPE (q, k)
    std::vector<Mat<T>> P;  // [windows * H] attention probabilities, [len, len] each
    Mat<T> o;           // [N, H*hd] attention output: o_proj's input
    Mat<T> xm;          // [N, D] x + o_proj(o)
    Mat<T> h2;          // [N, D] post_attention_layernorm(xm): gate/up's input
    Mat<T> g, u, a;     // [N, F] gate, up, silu(gate) * up: down's input
};

template <typename T>
class Net {
public:
    // `p` must outlive the Net; its values may change between passes (training), its shapes may not.
    explicit Net(const Params<T> &p);

    // Runs the batch; returns the logits [N, n_vocab] (valid until the next forward). Throws
    // PANGU_ERR_INVALID_ARGUMENT for an empty window or a token outside the vocabulary.
    const Mat<T> &forward(const Windows &batch);

    // Backward from dz = dLoss/dlogits [N, n_vocab] of the last forward, accumulating into `grad`: a Params whose
    // trainable tensors have their shapes and the rest are empty (make_grads), so that nothing is computed
    // for a frozen tensor.
    void backward(const Mat<T> &dz, Params<T> &grad);

    const LayerActs<T> &acts(int layer) const { return acts_[static_cast<size_t>(layer)]; }
    const Params<T> &params() const { return p_; }
    int64_t rows() const { return n_rows_; }

    // Each window's next-token targets: row i of a window predicts token i + 1; its last row has none (-1).
    static std::vector<int32_t> targets(const Windows &batch);

private:
    void layer_forward(int l, const Windows &batch, const Mat<T> &x, Mat<T> &out);
    void attention_forward(int l, const Windows &batch);
    // dx: gradient at the layer's output in, at its input out.
    void layer_backward(int l, const Windows &batch, Mat<T> &dx, LayerParams<T> &g);
    void attention_backward(int l, const Windows &batch, const Mat<T> &dout, Mat<T> &dq, Mat<T> &dk, Mat<T> &dv);
    void rope(Mat<T> &x, const Windows &batch, bool inverse) const;

    const Params<T> &p_;
    Mat<T> rope_;
    int rope_len_ = 0;
    Windows batch_;  // the last forward's
    int64_t n_rows_ = 0;
    std::vector<LayerActs<T>> acts_;
    Mat<T> xf_, hf_, logits_;  // final norm's input and output, [N, D]; logits [N, V]
    Vec<T> rf_;
};

// A gradient buffer for `p` training `tr`: zeros of the trainable tensors' shapes, the others empty.
template <typename T>
Params<T> make_grads(const Params<T> &p, Trainable tr);

// Sets every tensor of a gradient buffer to zero (keeping the empty ones empty).
template <typename T>
void zero_grads(Params<T> &g);

}  // namespace pangu::train
