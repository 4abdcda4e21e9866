// The generation loop: sample the first token from the prompt's logits, then step by step run the pending
// token (and any drafts) through the model, accept what agrees, and stream the text out.
#include <chrono>
#include <cmath>
#include <cstring>

#include "common/common.h"
#include "runtime/session.h"

namespace pangu {

namespace {

void check_sampling_params(const pangu_sampling_params &sp) {
    check_stop_strings(sp);
    if (sp.n_stop_tokens && !sp.stop_tokens) fail(PANGU_ERR_INVALID_ARGUMENT, "stop_tokens is NULL");
    if (sp.temperature < 0 || !std::isfinite(sp.temperature) || sp.top_p <= 0 || sp.top_p > 1 || sp.min_p < 0 ||
        sp.min_p > 1 || sp.top_k < 0 || !(sp.repetition_penalty > 0) || sp.max_new_tokens < 0 || sp.repeat_last_n < 0)
        fail(PANGU_ERR_INVALID_ARGUMENT, "sampling parameters out of range");
}

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

bool Session::deliver(Generation &g, int32_t tok) {
    ++g.r.n_generated;
    size_t emit = 0;
    const int reason = g.stream.push(tok, g.r.n_generated, &emit);
    const int cancel = g.cb ? g.cb(g.user, tok, g.stream.text(), emit) : 0;
    g.stream.consume(emit);
    if (reason != PANGU_STOP_NONE) return g.stop(reason, PANGU_OK);
    if (cancel) return g.stop(PANGU_STOP_CANCELLED, PANGU_ERR_CANCELLED);
    return false;
}

bool Session::may_step(Generation &g) {
    if (g.r.n_generated >= g.sp.max_new_tokens) return !g.stop(PANGU_STOP_MAX_TOKENS, PANGU_OK);
    if (n_tokens >= static_cast<size_t>(layout.n_ctx) && !slide(1, true))
        return !g.stop(PANGU_STOP_CONTEXT_FULL, PANGU_ERR_CONTEXT_FULL);
    if (abort_cb && abort_cb(abort_user)) return !g.stop(PANGU_STOP_CANCELLED, PANGU_ERR_CANCELLED);
    return true;
}

bool Session::sample_first(Generation &g) {
    // The prompt's evaluation left the next token's logits: the first token comes from them.
    const int32_t tok = sampler_.sample(last_logits_, g.sp, tokens, n_tokens, rng_);
    if (tok == Sampler::kNonFinite) {
        numeric_pos = n_tokens;
        return g.stop(PANGU_STOP_NONE, PANGU_ERR_NUMERIC);
    }
    tokens[n_tokens++] = tok;  // its K/V are computed by the next forward (or the next call's)
    logits_valid = false;
    return deliver(g, tok);
}

bool Session::step(Generation &g) {
    // Run the pending token, plus k drafted tokens when drafting is expected to pay, in one batched forward;
    // then accept drafts while they agree with what the model samples.
    int32_t *batch = reinterpret_cast<int32_t *>(block_ + layout.spec_ids);
    float *rows = buf(layout.spec_logits);
    batch[0] = tokens[n_tokens - 1];
    int source = 0;  // where the drafts came from (for prompt lookup the match's depth bucket)
    const double t_step = step_clock_ms();
    const int k = draft(g, batch + 1, &source);
    if (k < 0) return g.stop(PANGU_STOP_NONE, PANGU_ERR_NUMERIC);
    const double t_verify = step_clock_ms();
    n_past = n_tokens - 1;
    forward(batch, k + 1, k + 1, rows);
    max_pos = std::max(max_pos, n_past + k + 1);
    const double verify_ms = step_clock_ms() - t_verify, draft_ms = t_verify - t_step;
    int accepted = 0;
    const bool stop = accept(g, batch, k, rows, &accepted);
    spec_ctrl_.record(k, accepted, verify_ms, source, draft_ms);
    if (k > 0) {
        ++n_verify;
        n_drafted += k;
        n_accepted += accepted;
        ++accepted_hist[accepted];
    }
    return stop;
}

pangu_status Session::generate(const int32_t *ids, size_t n, const pangu_sampling_params &sp, pangu_token_callback cb,
                               void *user, pangu_generate_result *res) {
    check_sampling_params(sp);
    const auto t_start = std::chrono::steady_clock::now();
    if (n > static_cast<size_t>(layout.n_ctx) - n_tokens) slide(n, false);
    eval(ids, n, nullptr);
    if (n_tokens == 0) fail(PANGU_ERR_INVALID_ARGUMENT, "nothing to continue: the context and the prompt are empty");
    sync();

    char *text = reinterpret_cast<char *>(block_ + layout.text);  // held-back text, then the piece to emit
    const std::vector<int32_t> &eos = model.eos_ids;
    Generation g{sp, cb, user, TextStream(model.vocab, eos.data(), eos.size(), sp, text, tokens, n_tokens)};
    g.r.n_prompt_tokens = static_cast<int32_t>(n);
    g.r.prompt_ms = ms_since(t_start);
    const auto t_gen = std::chrono::steady_clock::now();
    rng_.seed(sp.seed);
    numeric_in_draft = false;
    while (may_step(g)) {
        if (logits_valid) {
            if (sample_first(g)) break;
            continue;
        }
        // After a slide, the kept tokens are evaluated again, all but the last, which the step runs.
        eval_pending(nullptr, 0, n_tokens - 1);
        if (step(g)) break;
    }
    g.r.generate_ms = ms_since(t_gen);
    n_generated_total += g.r.n_generated;
    generate_ms_total += g.r.generate_ms;
    if (res) {
        const size_t sz = res->struct_size;
        std::memcpy(res, &g.r, std::min(sz, sizeof(g.r)));
        res->struct_size = sz;
    }
    return g.status;
}

}  // namespace pangu
