// Verification: which drafted tokens a step keeps. Rows 0..k of the step's logits describe the context after
// the pending token and after each draft; tokens are sampled from them in order while they agree with the
// drafts, so that the output is exactly what plain decoding would have produced.
#include <algorithm>

#include "runtime/session.h"

namespace pangu {

int32_t Session::speculative_sample(Generation &g, const float *row, int i, int k, const int32_t *drafts,
                                    bool *rejected) {
    const int32_t V = model.cfg.n_vocab;
    float *p_row = buf(layout.spec_p);
    if (!sampler_.distribution(row, g.sp, tokens, n_tokens, p_row)) return Sampler::kNonFinite;
    if (i == k) return sampler_.draw(p_row, rng_);  // every draft accepted: a bonus token from p
    // Accept draft d with probability min(1, p(d)/q(d)), else draw from max(0, p - q).
    const int32_t d = drafts[i];
    const float *q = buf(layout.spec_q) + static_cast<size_t>(i) * V;
    const double u = rng_.uniform();
    if (hooks.broken_acceptance || u * q[d] < p_row[d]) return d;
    double mass = 0;
    for (int32_t j = 0; j < V; ++j) {
        p_row[j] = std::max(0.0f, p_row[j] - q[j]);
        mass += p_row[j];
    }
    if (mass <= 0) sampler_.distribution(row, g.sp, tokens, n_tokens, p_row);
    *rejected = true;
    return sampler_.draw(p_row, rng_);
}

bool Session::accept(Generation &g, const int32_t *batch, int k, const float *rows, int *accepted) {
    const int32_t V = model.cfg.n_vocab;
    // A drafted distribution q (draft model or self-draft, when sampling) is verified by speculative sampling;
    // a one-hot draft (prompt lookup, or greedy) reduces to: sample from p and compare, as plain decoding.
    const bool spec_sampling = draft_ && g.sp.temperature > 0.0f;
    for (int i = 0; i <= k; ++i) {
        const float *row = rows + static_cast<size_t>(i) * V;
        bool rejected = false;
        int32_t tok;
        if (spec_sampling) {
            tok = speculative_sample(g, row, i, k, batch + 1, &rejected);
        } else {
            tok = sampler_.sample(row, g.sp, tokens, n_tokens, rng_);
            rejected = i < k && tok != batch[i + 1];
        }
        if (tok == Sampler::kNonFinite) {
            // Only the rows sampled from are checked; the context keeps what was accepted so far.
            numeric_pos = n_tokens;
            return g.stop(PANGU_STOP_NONE, PANGU_ERR_NUMERIC);
        }
        tokens[n_tokens++] = tok;
        n_past = n_tokens - 1;  // every input up to this token's predecessor is in the cache
        if (deliver(g, tok)) return true;
        if (i == k || rejected) return false;
        ++*accepted;  // the draft was right: row i + 1 describes the context as it now is
    }
    return false;
}

}  // namespace pangu
