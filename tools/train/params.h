// The trainable weights of an openPangu-Embedded model (the training engine's view of a checkpoint), in a
// scalar type T: float for training, double for the gradient checks. Matrices are row-major [out, in] as the
// checkpoint stores them, so a linear is y = x W^T + b.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace pangu::train {

template <typename T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;

// The shape of a model: the checkpoint's configuration, with each layer's MLP width (pruned models differ).
struct Shape {
    int n_vocab = 0, n_embd = 0, n_head = 0, n_kv = 0, head_dim = 0;
    std::vector<int> n_ff;  // per layer
    bool bias = true;       // q/k/v/o biases
    bool tied = false;      // the head is the embedding table
    double eps = 1e-5, rope_theta = 10000.0;
    int n_layer() const { return static_cast<int>(n_ff.size()); }
};

template <typename T>
struct LayerParams {
    Vec<T> attn_norm, ffn_norm;   // [n_embd]
    Mat<T> wq, wk, wv, wo;        // [n_head*hd, n_embd], [n_kv*hd, n_embd] x2, [n_embd, n_head*hd]
    Vec<T> bq, bk, bv, bo;        // empty without biases
    Mat<T> w_gate, w_up, w_down;  // [n_ff, n_embd] x2, [n_embd, n_ff]
};

template <typename T>
struct Params {
    Shape shape;
    Mat<T> embed;  // [n_vocab, n_embd]
    std::vector<LayerParams<T>> layers;
    Vec<T> norm;   // [n_embd]
    Mat<T> head;   // [n_vocab, n_embd]; empty when tied

    // Zero-filled tensors of this shape (biases and head as the shape says).
    static Params zeros(const Shape &s);
};

// Which tensors a training run changes (and so which get gradients and optimizer state).
enum class Trainable {
    ALL = 0,     // every tensor
    LAYERS = 1,  // the decoder layers and the final norm: not the embedding table or an untied head
    MLP = 2,     // gate, up and down of every layer only
};
const char *trainable_name(Trainable t);

// A tensor of a Params as a flat span, with its checkpoint name ("model.layers.3.mlp.up_proj.weight") and
// its shape as the checkpoint stores it.
template <typename T>
struct TensorRef {
    std::string name;
    std::vector<int64_t> shape;
    T *data;
    int64_t size;
    bool trainable;  // under the run's Trainable choice
};

// Every non-empty tensor of p, in a fixed order (embedding, layers in order, norm, head), with the HF names;
// `trainable` marks those `tr` includes.
template <typename T>
std::vector<TensorRef<T>> tensors(Params<T> &p, Trainable tr = Trainable::ALL);

}  // namespace pangu::train
