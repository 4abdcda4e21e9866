// Structured pruning of MLP neurons: neuron j of layer l is row j of gate_proj and up_proj and column j of
// down_proj; removing it narrows the layer (the runtime reads each layer's width from its tensors).
//
// Scores (higher = more important), accumulated over calibration windows:
//   taylor:    sum |w * dL/dw| over the neuron's weights, L the mean next-token cross-entropy of a group of
//              windows (all of them by default), the sums added over the groups
//   magnitude: sum |w| over the neuron's weights
//   wanda:     sum |w| * ||x|| over its weights, x the input column the weight multiplies (gate/up: the
//              normed hidden state's channel; down: the neuron's own activation), ||.|| over all tokens
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "net.h"
#include "params.h"

namespace pangu::train {

enum class Score { TAYLOR = 0, MAGNITUDE = 1, WANDA = 2 };
const char *score_name(Score s);

using NeuronScores = std::vector<std::vector<double>>;  // [layer][neuron]

// The scores of every neuron of p over `calib` (not needed for magnitude). Taylor takes the gradient of each group
// of `batch` windows (0: one group of all), accumulated one window at a time, so memory is one window's whatever
// the group; `progress(done, total)` after each window (Taylor) or batch of windows (Wanda).
NeuronScores score_neurons(Params<float> &p, Score how, const Windows &calib, int batch,
                           const std::function<void(size_t, size_t)> &progress = nullptr);

// How the removal is spread over the layers.
enum class Spread {
    GLOBAL = 0,   // units of `align` neurons, the cheapest unit (sum of its scores) of any layer first
    UNIFORM = 1,  // every layer narrowed to the same fraction (rounded to the alignment)
};

// The neurons each layer keeps (indices into its current neurons, ascending), such that the model's total
// width is as close to `target_total` neurons as the alignment allows. Every layer's new width is a
// multiple of `align` and at least min_width[l]; a layer already narrower than that keeps its width. Throws
// PANGU_ERR_INVALID_ARGUMENT when `align` exceeds a layer's width.
std::vector<std::vector<int>> plan_keep(const NeuronScores &s, int64_t target_total, int align,
                                        const std::vector<int> &min_width, Spread spread);

// p with only the kept neurons (gate/up rows, down columns) of each layer.
void apply_keep(Params<float> &p, const std::vector<std::vector<int>> &keep);

// Summary statistics of one layer's scores, for the report.
struct ScoreStats {
    double min = 0, median = 0, mean = 0, max = 0;
    double removed_share = 0;  // the removed neurons' share of the layer's total score
};
ScoreStats score_stats(const std::vector<double> &s, const std::vector<int> &keep);

}  // namespace pangu::train
