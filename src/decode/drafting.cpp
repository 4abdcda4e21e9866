// Where drafts come from: the n-gram index over the session's own tokens (prompt lookup), or a draft session
// (a draft model or a subset of the target's layers) kept level with the target's context.
#include <algorithm>

#include "runtime/session.h"

namespace pangu {

bool Session::draft_tokens(int k, int32_t *out, float *q, const pangu_sampling_params &sp) {
    Session &d = *draft_;
    // Level the draft's context with ours: keep what still agrees (everything up to the last step, and the
    // drafts we accepted), drop the rest, and run what it has not seen (at least our pending token).
    const size_t common = std::min(d.n_tokens, n_tokens);
    size_t i = std::min(draft_agreed_, common);
    while (i < common && d.tokens[i] == tokens[i]) ++i;
    if (i < d.n_tokens) d.truncate(i);
    d.eval(tokens + i, n_tokens - i, nullptr);
    d.sync();
    const int32_t V = model.cfg.n_vocab;
    for (int j = 0; j < k; ++j) {
        int32_t tok;
        if (sp.temperature <= 0.0f) {
            tok = d.sampler_.sample(d.last_logits_, sp, d.tokens, d.n_tokens, rng_);
        } else {
            float *qj = q + static_cast<size_t>(j) * V;
            tok = d.sampler_.distribution(d.last_logits_, sp, d.tokens, d.n_tokens, qj) ? d.sampler_.draw(qj, rng_)
                                                                                       : Sampler::kNonFinite;
        }
        if (tok == Sampler::kNonFinite) {
            numeric_pos = d.n_tokens;
            numeric_in_draft = true;
            return false;
        }
        out[j] = tok;
        if (j + 1 < k) d.eval(&tok, 1, nullptr);
    }
    draft_agreed_ = n_tokens;
    return true;
}

int Session::propose_drafts(int room, int32_t *out, int *source) {
    *source = 0;
    if (room <= 0) return 0;
    if (params.spec_mode == PANGU_SPEC_PLD) {
        ngram_.update(tokens, n_tokens);
        int depth = 0;
        const int found = ngram_.propose(tokens, n_tokens, room, out, &depth);
        *source = pld_source(depth);
        return found;
    }
    return 0;
}

int Session::draft(Generation &g, int32_t *out, int *source) {
    *source = 0;
    if (layout.spec_k <= 0) return 0;
    const size_t left = static_cast<size_t>(g.sp.max_new_tokens - g.r.n_generated);
    // Drafts must leave room for themselves and the token after them: at most n_ctx tokens in the end.
    const size_t room = std::min<size_t>(
        {static_cast<size_t>(layout.spec_k), left - 1, static_cast<size_t>(layout.n_ctx) - n_tokens - 1});
    if (!draft_) return spec_ctrl_.choose(propose_drafts(static_cast<int>(room), out, source), *source);
    // A draft model costs time per drafted token: decide the length first, then draft.
    const int k = spec_ctrl_.choose(static_cast<int>(room));
    float *q_rows = layout.spec_q ? buf(layout.spec_q) : nullptr;
    if (k > 0 && !draft_tokens(k, out, q_rows, g.sp)) return -1;
    return k;
}

}  // namespace pangu
