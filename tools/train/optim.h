// AdamW with a linear warm-up and linear decay, and clipping of the gradients' global norm.
#pragma once

#include <cstdint>
#include <vector>

#include "params.h"

namespace pangu::train {

struct AdamWOptions {
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
    double weight_decay = 0.0;  // decoupled; applied to matrices only (not norms or biases)
};

// lr at step `step` (counted from 0) of `total`: rising linearly over `warmup` steps to `peak`, then falling
// linearly to 0 at `total`.
double lr_at(int64_t step, int64_t total, int64_t warmup, double peak);

// The global L2 norm of the gradients; when it exceeds `max_norm` (> 0) every gradient is scaled down to it.
// Returns the norm before clipping (NaN or Inf when a gradient holds one: nothing is scaled then).
double clip_grad_norm(const std::vector<TensorRef<float>> &grads, double max_norm);

class AdamW {
public:
    // `params`: the trainable tensors (tensors(p, tr) filtered to trainable), kept as spans: the Params must
    // outlive the optimizer and keep its shapes.
    AdamW(std::vector<TensorRef<float>> params, AdamWOptions o);

    // One update with gradients in the same order and shapes as the params.
    void step(const std::vector<TensorRef<float>> &grads, double lr);

    int64_t steps() const { return t_; }
    // The moments, for checkpoints (one vector per tensor, in order), and their restoration.
    const std::vector<std::vector<float>> &m() const { return m_; }
    const std::vector<std::vector<float>> &v() const { return v_; }
    void restore(std::vector<std::vector<float>> m, std::vector<std::vector<float>> v, int64_t steps);

private:
    std::vector<TensorRef<float>> p_;
    AdamWOptions o_;
    std::vector<std::vector<float>> m_, v_;
    int64_t t_ = 0;
};

// The trainable tensors of p (what AdamW takes), and every tensor of a gradient buffer made by make_grads
// (the same tensors in the same order).
std::vector<TensorRef<float>> trainable(Params<float> &p, Trainable tr);

}  // namespace pangu::train
