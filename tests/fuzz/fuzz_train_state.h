// The model shape fuzz_train_state loads its inputs for and make_seeds writes its seed states for: two layers
// of different MLP widths (a pruned model), biases, an untied head, eps and RoPE theta off their defaults, and
// every dimension small so that a state of every tensor with its moments is about 12 KB.
#pragma once

#include "params.h"

namespace fuzz {

inline pangu::train::Shape train_state_shape() {
    pangu::train::Shape s;
    s.n_vocab = 8, s.n_embd = 4, s.n_head = 2, s.n_kv = 1, s.head_dim = 2;
    s.n_ff = {4, 2};
    s.bias = true, s.tied = false;
    s.eps = 1e-6, s.rope_theta = 1e6;
    return s;
}

}  // namespace fuzz
