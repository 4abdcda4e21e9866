#include "runtime/session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "common/common.h"

namespace pangu {

pangu_session_params draft_params(const pangu_session_params &p) {
    pangu_session_params d = p;
    d.spec_mode = PANGU_SPEC_OFF;
    d.arena = nullptr;
    d.arena_size = 0;
    d.context_policy = PANGU_CONTEXT_ERROR;
    d.n_keep = 0;
    d.draft_model = nullptr;
    d.self_draft_layers = nullptr;
    d.n_self_draft_layers = 0;
    return d;
}

LayerSubset self_draft_layers(const Model &m, const pangu_session_params &p, int32_t *buf, int32_t cap) {
    if (p.self_draft_layers && p.n_self_draft_layers > 0) return {p.self_draft_layers, p.n_self_draft_layers};
    int32_t n = 0;
    for (int32_t l = 0; l < m.cfg.n_layer && n < cap; l += 4) buf[n++] = l;
    return {buf, n};
}

SessionLayout plan_session(const Model &m, const pangu_session_params &p, LayerSubset subset) {
    const ModelConfig &c = m.cfg;
    SessionLayout L;
    L.n_layers = subset.ids ? subset.n : c.n_layer;
    // A self-draft's leading layers 0, 1, ... are the target's own: it shares their cache rows.
    while (subset.ids && L.n_shared < subset.n && subset.ids[L.n_shared] == L.n_shared) ++L.n_shared;
    L.n_ctx = p.n_ctx;
    L.n_batch = p.n_batch;
    L.n_threads = p.n_threads;
    // A verification runs the pending token and the drafts in one forward pass, which n_batch bounds like any
    // other (the activation buffers hold n_batch rows): n_batch 1 leaves no room for drafts. (A verification
    // of spec_draft_len + 1 rows used to overrun the activations of a session with a smaller n_batch, found by
    // the soak test under ThreadSanitizer.)
    L.spec_k = p.spec_mode == PANGU_SPEC_OFF ? 0 : std::min(p.spec_draft_len, p.n_batch - 1);
    // The head runs over up to n_logit_rows rows at once: enough for a whole verification batch.
    L.n_logit_rows = std::max({1, std::min(p.n_batch, 16), L.spec_k + 1});
    L.alignment = std::max<size_t>(64, m.device->mem_alignment);
    const size_t H = c.n_embd, D = c.head_dim, QD = size_t(c.n_head) * D, KVD = size_t(c.n_head_kv) * D;
    const size_t B = p.n_batch, F = m.max_ff, V = c.n_vocab, C = p.n_ctx;
    size_t off = 0;
    auto take = [&](size_t bytes) {
        const size_t o = off;
        off = align_up(off + bytes, L.alignment);
        return o;
    };
    L.object = take(sizeof(Session));
    L.layer_ids = take(sizeof(int32_t) * L.n_layers);
    L.rope = take(sizeof(float) * C * D);
    L.tokens = take(sizeof(int32_t) * C);
    L.sampler = take(Sampler::buffer_bytes(c.n_vocab));
    L.text = take(kTextBuffer);
    L.last_logits = take(sizeof(float) * V);
    L.pos = take(sizeof(int32_t) * B);
    const size_t act0 = off;
    L.x = take(sizeof(float) * B * H);
    L.xb = take(sizeof(float) * B * H);
    L.xb2 = take(sizeof(float) * B * H);
    L.q = take(sizeof(float) * B * QD);
    L.k = take(sizeof(float) * B * KVD);
    L.v = take(sizeof(float) * B * KVD);
    L.att = take(sizeof(float) * B * QD);
    L.hb = take(sizeof(float) * B * F);
    L.hb2 = take(sizeof(float) * B * F);
    L.activation_bytes = off - act0;
    const size_t lg0 = off;
    L.logits = take(sizeof(float) * L.n_logit_rows * V);
    L.logits_bytes = off - lg0;
    L.attn_ws_bytes = m.device->attention_workspace
                          ? m.device->attention_workspace(m.device->ctx, B, c.n_head, c.n_head_kv, C, p.n_threads)
                          : 0;
    L.attn_ws = take(L.attn_ws_bytes);
    L.mm_ws_bytes = 0;
    if (m.device->matmul_workspace) {
        // The largest matmul of any layer or the head, at the largest batch.
        pgd_tensor x{}, w{};
        x.dtype = PGD_F32;
        x.rows = B;
        auto ws = [&](const Tensor &t) {
            x.cols = t.cols;
            w.dtype = static_cast<int32_t>(t.dtype);
            w.rows = t.rows;
            w.cols = t.cols;
            return m.device->matmul_workspace(m.device->ctx, &x, &w);
        };
        L.mm_ws_bytes = ws(m.output);
        for (const auto &lw : m.layers)
            for (const Tensor *t : {&lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.w_gate, &lw.w_up, &lw.w_down})
                L.mm_ws_bytes = std::max(L.mm_ws_bytes, ws(*t));
    }
    L.mm_ws = take(L.mm_ws_bytes);
    L.spec_ids = take(sizeof(int32_t) * (L.spec_k + 1));
    L.spec_logits = take(sizeof(float) * (L.spec_k + 1) * V);
    L.ngram_bytes = p.spec_mode == PANGU_SPEC_PLD ? NgramIndex::bytes(p.n_ctx, p.spec_ngram) : 0;
    L.ngram = take(L.ngram_bytes);
    if (p.spec_mode == PANGU_SPEC_DRAFT || p.spec_mode == PANGU_SPEC_SELF) {
        L.spec_q = take(sizeof(float) * L.spec_k * V);
        L.spec_p = take(sizeof(float) * V);
        const pangu_session_params dp = draft_params(p);
        int32_t buf[1024];
        const SessionLayout D = p.spec_mode == PANGU_SPEC_DRAFT
                                    ? plan_session(*from_handle(p.draft_model), dp)
                                    : plan_session(m, dp, self_draft_layers(m, p, buf, 1024));
        L.draft_bytes = D.total;
        L.draft = take(D.total);
    }
    L.kv_pos_bytes = sizeof(float) * 2 * KVD * (L.n_layers - L.n_shared);
    // 64 positions a block: a run of 64 rows per layer (192 KiB of keys for a 1B model) streams like one
    // array, and at most 63 unused positions are allocated past n_ctx.
    constexpr int32_t kKvBlock = 64;
    L.kv_block = std::min<int32_t>(kKvBlock, static_cast<int32_t>(C));
    L.kv_block_bytes = L.kv_pos_bytes * static_cast<size_t>(L.kv_block);
    L.kv_bytes = L.kv_block_bytes * ((C + L.kv_block - 1) / L.kv_block);
    L.kv = take(L.kv_bytes);
    L.total = off;
    return L;
}

Session *create_session(Model &m, const pangu_session_params &p) {
    // A model file truncated since loading would fault (SIGBUS) in the first forward pass; refuse instead.
    // One fstat per file: nothing next to the allocation below.
    m.store.check_sizes();
    if (p.spec_mode == PANGU_SPEC_DRAFT) from_handle(p.draft_model)->store.check_sizes();
    const SessionLayout L = plan_session(m, p);
    uint8_t *block = nullptr;
    const bool caller = p.arena != nullptr;
    if (caller) {
        if (p.arena_size < L.total)
            fail(PANGU_ERR_BUFFER_TOO_SMALL, "pangu_session_create: the arena holds " + std::to_string(p.arena_size) +
                                                 " bytes; this session needs " + std::to_string(L.total) +
                                                 " (see pangu_session_estimate)");
        if (reinterpret_cast<uintptr_t>(p.arena) % L.alignment != 0)
            fail(PANGU_ERR_INVALID_ARGUMENT, "pangu_session_create: the arena must be aligned to " +
                                                 std::to_string(L.alignment) + " bytes");
        block = static_cast<uint8_t *>(p.arena);
    } else {
        void *b = nullptr;
        const int rc = m.device->mem_alloc(m.device->ctx, &b, L.total);
        if (rc != 0)
            fail(static_cast<pangu_status>(rc), std::string(pangu_status_string(static_cast<pangu_status>(rc))) +
                                                    ": cannot allocate the session's " + std::to_string(L.total) +
                                                    " bytes (context " + std::to_string(p.n_ctx) + ")");
        block = static_cast<uint8_t *>(b);
    }
    try {
        return new (block + L.object) Session(m, p, L, block, caller);
    } catch (...) {
        if (!caller) m.device->mem_free(m.device->ctx, block);
        throw;
    }
}

void destroy_session(Session *s) {
    if (!s) return;
    pgd_device *dev = s->model.device;
    uint8_t *block = s->block();
    const bool caller = s->caller_arena;
    s->~Session();
    if (!caller) dev->mem_free(dev->ctx, block);
}

Session::Session(Model &m, const pangu_session_params &p, const SessionLayout &L, uint8_t *block, bool caller,
                 Session *parent, LayerSubset subset)
    : model(m), params(p), layout(L), caller_arena(caller), dev_(m.device), block_(block), parent_(parent) {
    if (parent) {
        // A draft works in turn with its target, never at the same time: it borrows the target's threads.
        stream_ = parent->stream_;
        owns_stream_ = false;
    } else if (dev_->stream_create(dev_->ctx, p.n_threads, &stream_) != 0) {
        fail(PANGU_ERR_OUT_OF_MEMORY, "out of memory or threads: cannot start " + std::to_string(p.n_threads) +
                                          " compute threads");
    }
    int32_t *ids = reinterpret_cast<int32_t *>(block_ + layout.layer_ids);
    for (int32_t i = 0; i < layout.n_layers; ++i) ids[i] = subset.ids ? subset.ids[i] : i;
    // RoPE table in double precision: cos/sin of pos * theta^(-2i/D). Precomputing it keeps the angle
    // exact to float rounding even at long positions, where computing pos * inv_freq in float would drift.
    const int D = m.cfg.head_dim, half = D / 2;
    float *rope = buf(layout.rope);
    for (int64_t pos = 0; pos < p.n_ctx; ++pos)
        for (int i = 0; i < half; ++i) {
            const double inv_freq = std::pow(m.cfg.rope_theta, -2.0 * i / D);
            const double a = static_cast<double>(pos) * inv_freq;
            rope[pos * D + i] = static_cast<float>(std::cos(a));
            rope[pos * D + half + i] = static_cast<float>(std::sin(a));
        }
    tokens = reinterpret_cast<int32_t *>(block_ + layout.tokens);
    last_logits_ = buf(layout.last_logits);
    sampler_.init(m.cfg.n_vocab, block_ + layout.sampler);
    if (layout.ngram_bytes) ngram_.init(block_ + layout.ngram, p.n_ctx, p.spec_ngram);
    if (layout.draft_bytes) {
        const pangu_session_params dp = draft_params(p);
        // Sessions only read their model; the draft model is passed as const because the caller shares it.
        Model &dm = p.spec_mode == PANGU_SPEC_DRAFT ? const_cast<Model &>(*from_handle(p.draft_model)) : m;
        int32_t lbuf[1024];
        const LayerSubset sub = p.spec_mode == PANGU_SPEC_SELF ? self_draft_layers(m, p, lbuf, 1024) : LayerSubset{};
        const SessionLayout DL = plan_session(dm, dp, sub);
        uint8_t *dblock = block_ + layout.draft;
        try {
            draft_ = new (dblock + DL.object) Session(dm, dp, DL, dblock, true, this, sub);
        } catch (...) {
            if (owns_stream_) dev_->stream_destroy(dev_->ctx, stream_);
            throw;
        }
    }
    spec_ctrl_.reset(layout.spec_k);
    if (layout.ngram_bytes)
        for (int src = 0; src < SpecController::kSources; ++src) spec_ctrl_.set_prior(src, pld_source_prior(src));
    reset();
}

Session::~Session() {
    if (draft_) draft_->~Session();
    if (stream_ && owns_stream_) dev_->stream_destroy(dev_->ctx, stream_);
}

void Session::kv_view(int li, pgd_tensor *k, pgd_tensor *v) {
    if (li < layout.n_shared && parent_) {
        parent_->kv_view(li, k, v);
        return;
    }
    const int64_t KVD = int64_t(model.cfg.n_head_kv) * model.cfg.head_dim, P = layout.kv_block;
    float *base = buf(layout.kv) + 2 * (li - layout.n_shared) * P * KVD;
    pgd_tensor t{};
    t.dtype = PGD_F32;
    t.rows = layout.n_ctx;
    t.cols = KVD;
    t.stride = KVD;
    t.block_rows = P;
    t.block_stride = static_cast<int64_t>(layout.kv_block_bytes / sizeof(float));
    t.data = base;
    *k = t;
    t.data = base + P * KVD;
    *v = t;
}

namespace {
// Test hook (test_speculative): accept every draft, to prove the distribution test can fail.
bool g_broken_acceptance_for_tests = false;
}  // namespace

void set_broken_acceptance_for_tests(bool on) { g_broken_acceptance_for_tests = on; }

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

double Session::step_clock_ms() const {
    // A backend that models a device (npu-sim) keeps its own clock, as a real one does with events
    // (aclrtEventElapsedTime): the speculation controller weighs the device's costs, not the emulator's.
    pgd_stream_stats st;
    if (device_stats(&st)) return st.est_ms;
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

size_t Session::high_water() const {
    // Everything before the KV cache is written at creation or by the first forward; the cache is written
    // position by position.
    const size_t blocks = (max_pos + layout.kv_block - 1) / layout.kv_block;
    return layout.kv + blocks * layout.kv_block_bytes;
}

void Session::reset() {
    n_tokens = 0;
    n_past = 0;
    logits_valid = false;
    draft_agreed_ = 0;
    if (draft_) draft_->reset();
    if (layout.ngram_bytes) ngram_.clear();
    spec_ctrl_.new_request();
}

void Session::truncate(size_t n_keep) {
    if (n_keep > n_tokens)
        fail(PANGU_ERR_INVALID_ARGUMENT, "truncate: n_keep " + std::to_string(n_keep) + " exceeds the " +
                                             std::to_string(n_tokens) + " tokens in the context");
    if (n_keep == n_tokens) return;
    n_tokens = n_keep;
    // Cache rows past n_keep are simply overwritten later. The logits no longer describe the context; sync()
    // makes them current if they are asked for before new tokens are evaluated (a draft catching up, or a
    // caller rolling back rejected tokens, goes straight on with the next tokens and pays nothing).
    n_past = std::min(n_past, n_keep);
    logits_valid = false;
}

void Session::eval_pending(float *logits_out, size_t out_row0, size_t upto) {
    const size_t V = model.cfg.n_vocab;
    upto = std::min(upto, n_tokens);
    while (n_past < upto) {
        if (abort_cb && abort_cb(abort_user)) fail(PANGU_ERR_CANCELLED, "evaluation cancelled by the abort callback");
        const int M = static_cast<int>(std::min<size_t>(layout.n_batch, upto - n_past));
        float *out = last_logits_;
        int n_out = 1;
        if (logits_out && n_past + M > out_row0) {
            // Rows before out_row0 belong to tokens evaluated for an earlier call: skip their logits.
            const size_t first = std::max(n_past, out_row0);
            n_out = static_cast<int>(n_past + M - first);
            out = logits_out + (first - out_row0) * V;
        }
        logits_valid = false;
        forward(tokens + n_past, M, n_out, out);
        n_past += M;
        if (n_past > max_pos) max_pos = n_past;
        if (out != last_logits_ && n_past == n_tokens)
            std::memcpy(last_logits_, out + static_cast<size_t>(n_out - 1) * V, sizeof(float) * V);
        if (n_past == n_tokens) logits_valid = true;
    }
}

void Session::sync() {
    // After a truncate every kept token is in the cache but the logits are stale: run the last one again
    // (same token, same position: same cache row).
    if (!logits_valid && n_tokens > 0 && n_past == n_tokens) n_past = n_tokens - 1;
    eval_pending(nullptr, 0);
}

bool Session::slide(size_t need) {
    const size_t keep = static_cast<size_t>(params.n_keep), C = static_cast<size_t>(layout.n_ctx);
    if (params.context_policy != PANGU_CONTEXT_SLIDE || need > C - keep) return false;
    // Drop half of what follows the kept prefix (more if `need` requires it): sliding by a large step keeps
    // the re-evaluation cost per generated token small.
    const size_t movable = n_tokens - keep;
    size_t drop = std::max(movable / 2, n_tokens + need > C ? n_tokens + need - C : 0);
    drop = std::min(drop, movable);
    std::memmove(tokens + keep, tokens + keep + drop, sizeof(int32_t) * (n_tokens - keep - drop));
    n_tokens -= drop;
    // Positions after `keep` changed, so their keys (rotated by position) must be computed again; this
    // happens in the next evaluation, inside the same cache rows.
    n_past = std::min(n_past, keep);
    logits_valid = false;
    if (layout.ngram_bytes) ngram_.clear();
    ++n_context_shifts;
    return true;
}

void Session::eval(const int32_t *ids, size_t n, float *logits_out) {
    const size_t V = model.cfg.n_vocab;
    if (n > static_cast<size_t>(layout.n_ctx) - n_tokens)
        fail(PANGU_ERR_CONTEXT_FULL, std::to_string(n) + " tokens do not fit: the context holds " +
                                         std::to_string(n_tokens) + " of " + std::to_string(layout.n_ctx));
    for (size_t i = 0; i < n; ++i)
        if (ids[i] < 0 || static_cast<size_t>(ids[i]) >= V)
            fail(PANGU_ERR_INVALID_TOKEN, "token id " + std::to_string(ids[i]) + " at index " + std::to_string(i) +
                                              " is outside the vocabulary of " + std::to_string(V));
    // A generated token not yet run is evaluated together with the new ones.
    const size_t row0 = n_tokens;
    if (n) std::memcpy(tokens + n_tokens, ids, sizeof(int32_t) * n);
    n_tokens += n;
    try {
        eval_pending(logits_out, row0);
    } catch (...) {
        // Keep what was evaluated, and what the context held before this call (a generated token that was
        // delivered but not yet run stays); drop the new tokens that were not evaluated.
        n_tokens = std::max(n_past, row0);
        // Stopped between chunks, the last kept token was run but its logits were not kept (they are only when
        // it ends the context): leave it pending, so that get_logits or the next call runs it again (same token,
        // same position: same cache row) instead of finding no logits (found by the soak test).
        if (!logits_valid && n_past == n_tokens && n_tokens > 0) n_past = n_tokens - 1;
        throw;
    }
}

namespace {

bool ends_with(const char *s, size_t n, const char *suffix, size_t m) {
    return m <= n && std::memcmp(s + n - m, suffix, m) == 0;
}

// Length of the longest suffix of s[0..n) that is a proper prefix of some stop string: that text may still
// become a stop string, so it is held back.
size_t held_suffix(const char *s, size_t n, const pangu_sampling_params &p) {
    size_t best = 0;
    for (size_t k = 0; k < p.n_stop_strings; ++k) {
        const char *stop = p.stop_strings[k];
        const size_t m = std::strlen(stop);
        for (size_t len = std::min(n, m - 1); len > best; --len)
            if (std::memcmp(s + n - len, stop, len) == 0) {
                best = len;
                break;
            }
    }
    return best;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

pangu_status Session::generate(const int32_t *ids, size_t n, const pangu_sampling_params &sp, pangu_token_callback cb,
                               void *user, pangu_generate_result *res) {
    if (sp.n_stop_strings && !sp.stop_strings) fail(PANGU_ERR_INVALID_ARGUMENT, "stop_strings is NULL");
    for (size_t k = 0; k < sp.n_stop_strings; ++k) {
        if (!sp.stop_strings[k]) fail(PANGU_ERR_INVALID_ARGUMENT, "stop_strings[" + std::to_string(k) + "] is NULL");
        const size_t m = std::strlen(sp.stop_strings[k]);
        if (m == 0 || m > kMaxStopString)
            fail(PANGU_ERR_INVALID_ARGUMENT, "stop_strings[" + std::to_string(k) + "] must be 1 to " +
                                                 std::to_string(kMaxStopString) + " bytes");
        // A stop string that is not UTF-8 (a lone continuation byte) can match inside a character, and the
        // text before the match would then end with part of one (found by fuzz_api).
        if (!utf8_valid(std::string_view(sp.stop_strings[k], m)))
            fail(PANGU_ERR_INVALID_UTF8, "stop_strings[" + std::to_string(k) + "] is not valid UTF-8");
    }
    if (sp.n_stop_tokens && !sp.stop_tokens) fail(PANGU_ERR_INVALID_ARGUMENT, "stop_tokens is NULL");
    if (sp.temperature < 0 || !std::isfinite(sp.temperature) || sp.top_p <= 0 || sp.top_p > 1 || sp.min_p < 0 ||
        sp.min_p > 1 || sp.top_k < 0 || !(sp.repetition_penalty > 0) || sp.max_new_tokens < 0 || sp.repeat_last_n < 0)
        fail(PANGU_ERR_INVALID_ARGUMENT, "sampling parameters out of range");

    const auto t_start = std::chrono::steady_clock::now();
    const size_t n_prompt = n;
    if (n > static_cast<size_t>(layout.n_ctx) - n_tokens) slide(n);
    eval(ids, n, nullptr);
    if (n_tokens == 0) fail(PANGU_ERR_INVALID_ARGUMENT, "nothing to continue: the context and the prompt are empty");
    sync();
    pangu_generate_result r{};
    r.n_prompt_tokens = static_cast<int32_t>(n_prompt);
    r.prompt_ms = ms_since(t_start);
    const auto t_gen = std::chrono::steady_clock::now();

    rng_.seed(sp.seed);
    Utf8Assembler utf8;
    char *text = reinterpret_cast<char *>(block_ + layout.text);  // held-back text, then the piece to emit
    size_t n_text = 0;
    const Vocab &vocab = model.vocab;
    // The decoder may drop the space that starts a text; replay the context so streaming knows whether the
    // generated text is still at that start.
    bool at_text_start = true;
    // Ids past the tokenizer's pieces (vocab_size padded beyond them) stand for no text.
    const int32_t n_pieces = vocab.n_vocab();
    for (size_t i = 0; i < n_tokens && at_text_start; ++i)
        if (tokens[i] < n_pieces) vocab.stream_bytes(tokens[i], at_text_start);

    pangu_status status = PANGU_OK;
    r.stop_reason = PANGU_STOP_NONE;
    numeric_in_draft = false;

    // Appends one generated token to the streamed text and decides whether generation ends with it.
    // Returns true to stop (r.stop_reason and status say why).
    auto emit_token = [&](int32_t tok) -> bool {
        ++r.n_generated;
        // What text does this token complete? Held-back text + new whole characters.
        // Control tokens push nothing but still end a pending byte run, as in the decoder.
        const std::string_view bytes = tok < n_pieces ? vocab.stream_bytes(tok, at_text_start) : std::string_view();
        n_text += utf8.push(bytes, text + n_text, kTextBuffer - n_text);

        bool stop_now = false;
        size_t emit = n_text;
        if (tok == model.vocab.eos() || tok == model.cfg.eos) {
            r.stop_reason = PANGU_STOP_EOS;
            stop_now = true;
        }
        for (size_t k = 0; !stop_now && k < sp.n_stop_tokens; ++k)
            if (sp.stop_tokens[k] == tok) {
                r.stop_reason = PANGU_STOP_TOKEN;
                stop_now = true;
            }
        if (!stop_now) {
            // The match that starts earliest, over all stop strings, wins: the text before it is emitted.
            const char *hit = nullptr;
            for (size_t k = 0; k < sp.n_stop_strings; ++k) {
                const size_t m = std::strlen(sp.stop_strings[k]);
                for (size_t end = m; end <= n_text; ++end)
                    if (ends_with(text, end, sp.stop_strings[k], m)) {
                        if (!hit || text + end - m < hit) hit = text + end - m;
                        break;
                    }
            }
            if (hit) {
                r.stop_reason = PANGU_STOP_STRING;
                stop_now = true;
                emit = static_cast<size_t>(hit - text);
            }
        }
        if (!stop_now && r.n_generated >= sp.max_new_tokens) {
            r.stop_reason = PANGU_STOP_MAX_TOKENS;
            stop_now = true;
        }
        if (stop_now && r.stop_reason != PANGU_STOP_STRING) emit = n_text + utf8.flush(text + n_text, kTextBuffer - n_text);
        if (!stop_now) emit = n_text - held_suffix(text, n_text, sp);

        const int cancel = cb ? cb(user, tok, text, emit) : 0;
        std::memmove(text, text + emit, n_text - std::min(emit, n_text));
        n_text -= std::min(emit, n_text);
        if (stop_now) return true;
        if (cancel) {
            r.stop_reason = PANGU_STOP_CANCELLED;
            status = PANGU_ERR_CANCELLED;
            return true;
        }
        return false;
    };

    const int32_t V = model.cfg.n_vocab;
    int32_t *batch = reinterpret_cast<int32_t *>(block_ + layout.spec_ids);
    float *rows = buf(layout.spec_logits);
    float *q_rows = layout.spec_q ? buf(layout.spec_q) : nullptr;
    float *p_row = layout.spec_p ? buf(layout.spec_p) : nullptr;
    const size_t C = static_cast<size_t>(layout.n_ctx);
    while (r.stop_reason == PANGU_STOP_NONE) {
        if (r.n_generated >= sp.max_new_tokens) {
            r.stop_reason = PANGU_STOP_MAX_TOKENS;
            break;
        }
        if (n_tokens >= C && !slide(1)) {
            r.stop_reason = PANGU_STOP_CONTEXT_FULL;
            status = PANGU_ERR_CONTEXT_FULL;
            break;
        }
        if (abort_cb && abort_cb(abort_user)) {
            r.stop_reason = PANGU_STOP_CANCELLED;
            status = PANGU_ERR_CANCELLED;
            break;
        }
        if (logits_valid) {
            // The prompt's evaluation left the next token's logits: sample the first token from them.
            const int32_t tok = sampler_.sample(last_logits_, sp, tokens, n_tokens, rng_);
            if (tok == Sampler::kNonFinite) {
                numeric_pos = n_tokens;
                status = PANGU_ERR_NUMERIC;
                break;
            }
            tokens[n_tokens++] = tok;  // its K/V are computed by the next forward (or the next call's)
            logits_valid = false;
            if (emit_token(tok)) break;
            continue;
        }
        // After a slide, the kept tokens are evaluated again, all but the last, which the step runs.
        eval_pending(nullptr, 0, n_tokens - 1);

        // One step: run the pending token, plus k drafted tokens when drafting is expected to pay, in one
        // batched forward; then accept drafts while they agree with what the model samples.
        int k = 0, source = 0;  // drafted tokens, and where they came from (for PLD the match's depth bucket)
        batch[0] = tokens[n_tokens - 1];
        const double t_step = step_clock_ms();
        if (layout.spec_k > 0) {
            const size_t left = static_cast<size_t>(sp.max_new_tokens - r.n_generated);
            // Drafts must leave room for themselves and the token after them: at most C tokens in the end.
            const size_t room = std::min<size_t>({static_cast<size_t>(layout.spec_k), left - 1, C - n_tokens - 1});
            if (draft_) {
                // A draft model costs time per drafted token: decide the length first, then draft.
                k = spec_ctrl_.choose(static_cast<int>(room));
                if (k > 0 && !draft_tokens(k, batch + 1, q_rows, sp)) {
                    status = PANGU_ERR_NUMERIC;
                    break;
                }
            } else {
                const int found = propose_drafts(static_cast<int>(room), batch + 1, &source);
                k = spec_ctrl_.choose(found, source);
            }
        }
        const double t_verify = step_clock_ms();
        n_past = n_tokens - 1;
        forward(batch, k + 1, k + 1, rows);
        max_pos = std::max(max_pos, n_past + k + 1);
        const double verify_ms = step_clock_ms() - t_verify, draft_ms = t_verify - t_step;

        int accepted = 0;
        bool stop = false;
        // A drafted distribution q (draft model or self-draft, when sampling) is verified by speculative
        // sampling: accept d with probability min(1, p(d)/q(d)), else draw from max(0, p - q). A one-hot
        // draft (prompt lookup, or greedy) reduces to: sample from p and compare, exactly as plain decoding.
        const bool spec_sampling = draft_ && sp.temperature > 0.0f;
        for (int i = 0; i <= k; ++i) {
            const float *row = rows + static_cast<size_t>(i) * V;
            int32_t tok;
            bool rejected = false;
            if (!spec_sampling) {
                tok = sampler_.sample(row, sp, tokens, n_tokens, rng_);
                rejected = i < k && tok != batch[i + 1];
            } else if (!sampler_.distribution(row, sp, tokens, n_tokens, p_row)) {
                tok = Sampler::kNonFinite;
            } else {
                if (i == k) {
                    tok = sampler_.draw(p_row, rng_);  // every draft accepted: a bonus token from p
                } else {
                    const int32_t d = batch[i + 1];
                    const float *q = q_rows + static_cast<size_t>(i) * V;
                    const double u = rng_.uniform();
                    if (g_broken_acceptance_for_tests || u * q[d] < p_row[d]) {
                        tok = d;
                    } else {
                        double mass = 0;
                        for (int32_t j = 0; j < V; ++j) {
                            p_row[j] = std::max(0.0f, p_row[j] - q[j]);
                            mass += p_row[j];
                        }
                        if (mass <= 0) sampler_.distribution(row, sp, tokens, n_tokens, p_row);
                        tok = sampler_.draw(p_row, rng_);
                        rejected = true;
                    }
                }
            }
            if (tok == Sampler::kNonFinite) {
                // Only the rows sampled from are checked; the context keeps what was accepted so far.
                numeric_pos = n_tokens;
                status = PANGU_ERR_NUMERIC;
                stop = true;
                break;
            }
            tokens[n_tokens++] = tok;
            n_past = n_tokens - 1;  // every input up to this token's predecessor is in the cache
            if (emit_token(tok)) {
                stop = true;
                break;
            }
            if (i == k || rejected) break;
            ++accepted;  // the draft was right: row i + 1 describes the context as it now is
        }
        spec_ctrl_.record(k, accepted, verify_ms, source, draft_ms);
        if (k > 0) {
            ++n_verify;
            n_drafted += k;
            n_accepted += accepted;
            ++accepted_hist[accepted];
        }
        if (stop) break;
    }
    r.generate_ms = ms_since(t_gen);
    n_generated_total += r.n_generated;
    generate_ms_total += r.generate_ms;
    if (res) {
        const size_t sz = res->struct_size;
        std::memcpy(res, &r, std::min(sz, sizeof(r)));
        res->struct_size = sz;
    }
    return status;
}

}  // namespace pangu
