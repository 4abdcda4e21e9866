// Token selection from logits: greedy, or temperature sampling with top-k, top-p, min-p and a
// repetition penalty. Works in buffers handed to it at construction; sampling allocates nothing.
#pragma once

#include <cstdint>

#include "pangu/pangu.h"

namespace pangu {

// xoshiro256**: small, fast, and the same sequence on every platform for a given seed.
class Rng {
public:
    void seed(uint64_t s);
    uint64_t next();
    double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)

private:
    uint64_t s_[4] = {0, 0, 0, 0};
};

struct SamplerBuffers {
    int32_t *idx = nullptr;    // [n_vocab]
    float *val = nullptr;      // [n_vocab]
    uint32_t *stamp = nullptr; // [n_vocab] marks tokens already penalized this step
};

class Sampler {
public:
    static size_t buffer_bytes(int32_t n_vocab);  // what SamplerBuffers needs, in bytes
    void init(int32_t n_vocab, void *buffer);     // carve SamplerBuffers from `buffer`

    // Picks the next token. `history` (n_history tokens) feeds the repetition penalty. Returns kNonFinite,
    // and picks nothing, when the logits hold NaN or Inf.
    static constexpr int32_t kNonFinite = -1;
    int32_t sample(const float *logits, const pangu_sampling_params &p, const int32_t *history, size_t n_history,
                   Rng &rng);
    // The distribution sample() draws from, as n_vocab probabilities in `probs` (one-hot at the argmax when
    // greedy): what speculative sampling compares between target and draft. False, and `probs` untouched,
    // when the logits hold NaN or Inf.
    bool distribution(const float *logits, const pangu_sampling_params &p, const int32_t *history,
                      size_t n_history, float *probs);
    // Draws from a distribution over the vocabulary (one uniform number).
    int32_t draw(const float *probs, Rng &rng) const;

private:
    // Penalty, temperature and truncation: leaves the kept candidates' ids in idx[0..keep) (most likely
    // first when truncated) and their unnormalized weights in val[id]; returns keep (0 = greedy, the argmax
    // in idx[0]) and their total in *total; kNonFinite if a logit is NaN or Inf.
    int32_t prepare(const float *logits, const pangu_sampling_params &p, const int32_t *history, size_t n_history,
                    double *total);
    int32_t n_vocab_ = 0;
    SamplerBuffers b_;
    uint32_t step_ = 0;
};

}  // namespace pangu
