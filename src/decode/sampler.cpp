#include "decode/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/common.h"

namespace pangu {

namespace {
inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
}  // namespace

void Rng::seed(uint64_t s) {
    for (auto &v : s_) {  // splitmix64 expands the seed, as the xoshiro authors recommend
        s += 0x9e3779b97f4a7c15ull;
        uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        v = z ^ (z >> 31);
    }
}

uint64_t Rng::next() {
    const uint64_t r = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return r;
}

size_t Sampler::buffer_bytes(int32_t n_vocab) {
    return align_up(sizeof(int32_t) * n_vocab, 64) + align_up(sizeof(float) * n_vocab, 64) +
           align_up(sizeof(uint32_t) * n_vocab, 64);
}

void Sampler::init(int32_t n_vocab, void *buffer) {
    n_vocab_ = n_vocab;
    char *p = static_cast<char *>(buffer);
    b_.idx = reinterpret_cast<int32_t *>(p);
    p += align_up(sizeof(int32_t) * n_vocab, 64);
    b_.val = reinterpret_cast<float *>(p);
    p += align_up(sizeof(float) * n_vocab, 64);
    b_.stamp = reinterpret_cast<uint32_t *>(p);
    std::memset(b_.stamp, 0, sizeof(uint32_t) * n_vocab);
    step_ = 0;
}

int32_t Sampler::prepare(const float *logits, const pangu_sampling_params &p, const int32_t *history,
                         size_t n_history, double *total) {
    const int32_t V = n_vocab_;
    float *val = b_.val;
    // The copy doubles as the check for NaN and Inf (all exponent bits set): one pass over the row that is
    // sampled from, which the compiler vectorizes, instead of a NaN that greedy decoding would silently
    // turn into token 0 and sampling into the last candidate.
    uint32_t non_finite = 0;
    for (int32_t i = 0; i < V; ++i) {
        uint32_t u;
        std::memcpy(&u, logits + i, 4);
        non_finite |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
        std::memcpy(val + i, &u, 4);
    }
    if (non_finite) return kNonFinite;

    if (p.repetition_penalty != 1.0f && n_history > 0) {
        if (++step_ == 0) {  // wrapped: clear stale stamps once every 2^32 steps
            std::memset(b_.stamp, 0, sizeof(uint32_t) * V);
            step_ = 1;
        }
        const size_t window = p.repeat_last_n > 0 ? std::min<size_t>(p.repeat_last_n, n_history) : n_history;
        for (size_t i = n_history - window; i < n_history; ++i) {
            const int32_t t = history[i];
            if (t < 0 || t >= V || b_.stamp[t] == step_) continue;
            b_.stamp[t] = step_;
            val[t] = val[t] > 0 ? val[t] / p.repetition_penalty : val[t] * p.repetition_penalty;
        }
    }

    int32_t *idx = b_.idx;
    if (p.temperature <= 0.0f) {  // greedy; ties go to the lowest id so results are reproducible
        int32_t best = 0;
        for (int32_t i = 1; i < V; ++i)
            if (val[i] > val[best]) best = i;
        idx[0] = best;
        *total = 1.0;
        return 0;
    }

    for (int32_t i = 0; i < V; ++i) idx[i] = i;
    auto by_logit = [val](int32_t a, int32_t b) { return val[a] > val[b] || (val[a] == val[b] && a < b); };
    int32_t n = V;
    if (p.top_k > 0 && p.top_k < V) {
        std::partial_sort(idx, idx + p.top_k, idx + V, by_logit);
        n = p.top_k;
    } else if (p.top_p < 1.0f || p.min_p > 0.0f) {
        std::sort(idx, idx + V, by_logit);
    } else {
        // No truncation: order does not matter, only the max for a stable softmax.
        int32_t best = 0;
        for (int32_t i = 1; i < V; ++i)
            if (val[i] > val[best]) best = i;
        std::swap(idx[0], idx[best]);
    }

    // Softmax over the candidates, in double so that long tails do not lose mass.
    const float inv_t = 1.0f / p.temperature;
    const float mx = val[idx[0]];
    double sum = 0.0;
    for (int32_t i = 0; i < n; ++i) {
        const float e = std::exp((val[idx[i]] - mx) * inv_t);
        val[idx[i]] = e;
        sum += e;
    }
    int32_t keep = n;
    if (p.min_p > 0.0f) {
        const double floor_p = p.min_p * (val[idx[0]] / sum);
        for (int32_t i = 1; i < keep; ++i)
            if (val[idx[i]] / sum < floor_p) {
                keep = i;
                break;
            }
    }
    if (p.top_p < 1.0f) {
        double cum = 0.0;
        for (int32_t i = 0; i < keep; ++i) {
            cum += val[idx[i]] / sum;
            if (cum >= p.top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    double kept = 0.0;
    for (int32_t i = 0; i < keep; ++i) kept += val[idx[i]];
    *total = kept;
    return keep;
}

int32_t Sampler::sample(const float *logits, const pangu_sampling_params &p, const int32_t *history,
                        size_t n_history, Rng &rng) {
    double kept = 0;
    const int32_t keep = prepare(logits, p, history, n_history, &kept);
    const int32_t *idx = b_.idx;
    if (keep == kNonFinite) return kNonFinite;
    if (keep == 0) return idx[0];
    double r = rng.uniform() * kept;
    for (int32_t i = 0; i < keep; ++i) {
        r -= b_.val[idx[i]];
        if (r < 0.0) return idx[i];
    }
    return idx[keep - 1];
}

bool Sampler::distribution(const float *logits, const pangu_sampling_params &p, const int32_t *history,
                           size_t n_history, float *probs) {
    double kept = 0;
    const int32_t keep = prepare(logits, p, history, n_history, &kept);
    if (keep == kNonFinite) return false;
    std::memset(probs, 0, sizeof(float) * n_vocab_);
    if (keep == 0) {
        probs[b_.idx[0]] = 1.0f;
        return true;
    }
    for (int32_t i = 0; i < keep; ++i) probs[b_.idx[i]] = static_cast<float>(b_.val[b_.idx[i]] / kept);
    return true;
}

int32_t Sampler::draw(const float *probs, Rng &rng) const {
    double total = 0;
    for (int32_t i = 0; i < n_vocab_; ++i) total += probs[i];
    double r = rng.uniform() * total;
    int32_t last = 0;
    for (int32_t i = 0; i < n_vocab_; ++i) {
        if (probs[i] <= 0) continue;
        last = i;
        r -= probs[i];
        if (r < 0.0) return i;
    }
    return last;
}

}  // namespace pangu
