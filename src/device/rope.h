// NeoX rotary embedding of rows [r0, r1) of x in place, shared by the CPU backend and the emulated NPU: row m
// sits at position pos[m]; each head's first half pairs with its second half (the rotate-half layout of the
// openPangu checkpoints), and cos_sin holds, per position, head_dim/2 cosines then head_dim/2 sines.
// `round` is applied to every result: the identity on the CPU, fp16 on the emulated NPU.
#pragma once

#include <cstdint>

#include "model/tensor.h"

namespace pangu {

template <typename Round>
void rope_rows(pgd_tensor *x, const int32_t *pos, int32_t n_heads, int32_t hd, const float *cos_sin, int64_t r0,
               int64_t r1, Round &&round) {
    const int32_t half = hd / 2;
    for (int64_t m = r0; m < r1; ++m) {
        const float *cs = cos_sin + static_cast<int64_t>(pos[m]) * hd;
        const float *sn = cs + half;
        float *row = rowf(x, m);
        for (int32_t h = 0; h < n_heads; ++h) {
            float *v = row + h * hd;
            for (int32_t i = 0; i < half; ++i) {
                const float a = v[i], b = v[i + half];
                v[i] = round(a * cs[i] - b * sn[i]);
                v[i + half] = round(b * cs[i] + a * sn[i]);
            }
        }
    }
}

}  // namespace pangu
