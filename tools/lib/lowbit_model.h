// Low-bit quantization of a whole checkpoint (pangu-quantize --scheme w4a8|w4a16|mixed): the linear layers,
// layer by layer, each with the statistics of its inputs as the model computes them once the earlier layers
// are quantized (GPTQ's order), then packed as the checkpoint stores them (device.h: PGD_I4, PGD_QB).
//
// Per layer: the float weights run over every calibration window without advancing the hidden states, the
// input statistics of the four linear inputs (q/k/v share one, gate/up another) are gathered (InputStats, one
// [cols, cols] Hessian each), every linear is quantized (RTN or GPTQ, at one width or at per-channel widths
// chosen from the five-part importance), and the layer runs again with the dequantized weights to advance the
// hidden states. Memory: the hidden states of the calibration text, one layer's float weights and Hessians,
// and the packed results.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "calib.h"
#include "lowbit.h"

namespace pangu {

struct LowbitPlan {
    bool mixed = false;         // per-channel widths (PGD_QB); else 4 bits throughout (PGD_I4)
    bool gptq = true;           // else round-to-nearest
    LowbitOptions opt;          // group, symmetric, act_order, damp
    bool budget = true;         // mixed: greedy budget; else quantile bands
    double avg_bits_attn = 4.0; // mixed, budget: q/k/v/o
    double avg_bits_mlp = 4.0;  // mixed, budget: gate/up/down
    // Smoothing factors folded into each layer before it is calibrated (SmoothQuant for int8 activations).
    const std::vector<LayerSmoothing> *smoothing = nullptr;
};

// One linear layer as the checkpoint stores it.
struct PackedLinear {
    int64_t rows = 0, cols = 0, group = 0;
    bool mixed = false;
    std::vector<uint8_t> data;     // PGD_I4 rows [rows, cols / 2], or PGD_QB rows by width, 1-D
    std::vector<float> scale;      // [rows, cols / group], stored row order
    bool f32_scales = false;       // some scale is not a normal F16 number: stored F32
    std::vector<uint8_t> zero;     // [rows, cols / group] when asymmetric
    std::vector<int32_t> perm;     // [cols] when act-order
    std::vector<uint8_t> bits;     // mixed: [rows], stored order
    std::vector<int32_t> order;    // mixed: output channel of each stored row
    // For the report.
    double importance_min = 0, importance_max = 0;
    double output_error = 0;       // ||(W - Q) X^T||^2 / ||W X^T||^2 over the calibration inputs (0 without them)
};

// Quantizes every linear layer of `m` (floating point) with `plan`; `text` is the calibration text (needed by
// GPTQ and by mixed precision; empty for round-to-nearest at one width). progress(layer, step) after each step
// of each layer, step in 0..2 (statistics, quantization, advancing).
std::map<std::string, PackedLinear> quantize_lowbit(const Model &m, TokenWindows text, const LowbitPlan &plan,
                                                    const std::function<void(int, int)> &progress = nullptr);

// The packed form of one quantized matrix (mixed: rows stored by width with their order; the zero points only
// when not symmetric).
PackedLinear pack_linear(const LowbitMatrix &q, bool mixed, bool symmetric);

}  // namespace pangu
