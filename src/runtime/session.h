// One conversation on a model: its KV cache, working buffers and generation state, all in a single block
// (the caller's arena or one allocation) whose layout is computed from the configuration before anything is
// allocated.
#pragma once

#include <string>

#include "device/device.h"
#include "model/model.h"
#include "decode/sampler.h"
#include "decode/speculative.h"
#include "model/vocab.h"

namespace pangu {

// Every region of a session's block, as offsets, computed from the model and parameters alone.
// The KV cache comes last, in blocks of kv_block positions ([block][layer][K: kv_block rows | V: kv_block
// rows]): the part of the block a session touches grows with its context (pages past the longest context used
// are never written), and attention reads each layer's keys and values in contiguous runs of kv_block rows
// rather than one row per position scattered across every layer's (which costs a TLB miss a row).
struct SessionLayout {
    int32_t n_ctx = 0, n_batch = 0, n_threads = 1, n_logit_rows = 1;
    size_t object = 0;  // the session object itself
    size_t rope = 0, tokens = 0, sampler = 0, text = 0, last_logits = 0, pos = 0;
    size_t x = 0, xb = 0, xb2 = 0, q = 0, k = 0, v = 0, att = 0, hb = 0, hb2 = 0;
    size_t logits = 0, attn_ws = 0, attn_ws_bytes = 0, mm_ws = 0, mm_ws_bytes = 0;
    size_t kv = 0, kv_bytes = 0, kv_pos_bytes = 0;  // kv_pos_bytes: one position of every layer, K and V
    int32_t kv_block = 0;                           // positions per KV block
    size_t kv_block_bytes = 0;
    int32_t spec_k = 0;                             // most tokens drafted per step (0: speculation off)
    size_t spec_ids = 0, spec_logits = 0, ngram = 0, ngram_bytes = 0;
    size_t spec_q = 0, spec_p = 0;                  // draft distributions [spec_k, V] and one target row [V]
    size_t draft = 0, draft_bytes = 0;              // the draft's own session (draft model or self-draft)
    // Layers this session runs: all of the model's, or a self-draft's subset. The first n_shared of them
    // coincide with the target's first layers and use the target's KV cache rows (no copy, no duplicate).
    int32_t n_layers = 0, n_shared = 0;
    size_t layer_ids = 0;
    size_t activation_bytes = 0, logits_bytes = 0;
    size_t total = 0;
    size_t alignment = 64;
};

// Longest stop string accepted; the held-back text buffer is sized from it.
constexpr size_t kMaxStopString = 256;
constexpr size_t kTextBuffer = 2 * kMaxStopString + 64;
// Held-back text (shorter than a stop string), one token's text, and up to three bytes of an incomplete
// character turned into U+FFFD must fit.
static_assert(kTextBuffer >= (kMaxStopString - 1) + kMaxPieceBytes + 9, "the text buffer cannot take a token");

// A self-draft runs a subset of the target's layers; a draft model runs all of its own.
struct LayerSubset {
    const int32_t *ids = nullptr;  // ascending layer indices; nullptr = all layers
    int32_t n = 0;
};

SessionLayout plan_session(const Model &m, const pangu_session_params &p, LayerSubset subset = {});

// The draft's parameters and model for a target session's params (PANGU_SPEC_DRAFT / PANGU_SPEC_SELF).
pangu_session_params draft_params(const pangu_session_params &p);
// The default self-draft layers (every 4th from 0) when the caller gives none; writes into `buf`.
LayerSubset self_draft_layers(const Model &m, const pangu_session_params &p, int32_t *buf, int32_t cap);

class Session {
public:
    void reset();
    void truncate(size_t n_keep);
    // Appends and evaluates tokens; `logits_out` (optional) receives n rows of n_vocab.
    void eval(const int32_t *ids, size_t n, float *logits_out);
    // Evaluates tokens appended by generation but not yet run, so that logits() is current.
    void sync();
    const float *logits() const { return last_logits_; }
    size_t high_water() const;
    // Milliseconds on the clock that speculative decoding weighs steps by: the device's own when the backend
    // keeps one, else the host's.
    double step_clock_ms() const;
    uint8_t *block() const { return block_; }
    // The device's accounting of this session's stream; false when the backend keeps none.
    bool device_stats(pgd_stream_stats *out) const {
        return owns_stream_ && dev_->stream_stats && dev_->stream_stats(dev_->ctx, stream_, out) == 0;
    }

    pangu_status generate(const int32_t *ids, size_t n, const pangu_sampling_params &sp, pangu_token_callback cb,
                          void *user, pangu_generate_result *res);

    Model &model;
    pangu_session_params params;
    SessionLayout layout;
    mutable ErrorSlot last_error;
    int32_t *tokens = nullptr;  // [n_ctx] the context
    size_t n_tokens = 0;        // tokens in the context
    size_t n_past = 0;          // tokens whose K/V are in the cache (n_past <= n_tokens)
    bool logits_valid = false;
    bool caller_arena = false;

    int (*abort_cb)(void *) = nullptr;
    void *abort_user = nullptr;

    int64_t n_forward = 0, n_evaluated = 0, n_context_shifts = 0;
    int64_t n_generated_total = 0, n_verify = 0, n_drafted = 0, n_accepted = 0, accepted_hist[16] = {0};
    double generate_ms_total = 0;
    size_t max_pos = 0;  // largest n_past reached: the KV high-water mark
    // Where generation met non-finite logits (PANGU_ERR_NUMERIC): the context length whose next-token logits
    // they were, and whether they were the draft model's.
    size_t numeric_pos = 0;
    bool numeric_in_draft = false;

    Session(Model &m, const pangu_session_params &p, const SessionLayout &L, uint8_t *block, bool caller_arena,
            Session *parent = nullptr, LayerSubset subset = {});
    ~Session();
    Session(const Session &) = delete;
    Session &operator=(const Session &) = delete;

private:
    // Runs the model over ids[0..n) at positions n_past.. (n <= n_batch) and writes the logits of the last
    // `n_out` rows to out (n_out rows of n_vocab, in host memory).
    void forward(const int32_t *ids, int n, int n_out, float *out);
    // Evaluates context tokens not yet in the cache, up to position `upto` (exclusive; default all).
    void eval_pending(float *logits_out, size_t out_row0, size_t upto = SIZE_MAX);
    // PLD: up to `room` tokens from the n-gram index into out; returns how many, with the draft source (the
    // match's depth bucket, pld_source) in *source.
    int propose_drafts(int room, int32_t *out, int *source);
    // Draft model / self-draft: brings the draft's context level with ours, then drafts k tokens
    // autoregressively into out; with sampling, their distributions go to q (k rows of V).
    // False (numeric_pos and numeric_in_draft set) when the draft's logits hold NaN or Inf.
    bool draft_tokens(int k, int32_t *out, float *q, const pangu_sampling_params &sp);
    // The K/V cache of layer slot `li` of this session ([n_ctx, KVD], blocked): its own, or the target's for
    // shared layers.
    void kv_view(int li, pgd_tensor *k, pgd_tensor *v);
    // PANGU_CONTEXT_SLIDE: drop tokens after n_keep so that `need` more fit; false if they cannot.
    bool slide(size_t need);
    float *buf(size_t off) { return reinterpret_cast<float *>(block_ + off); }

    pgd_device *dev_;
    pgd_stream *stream_ = nullptr;
    uint8_t *block_ = nullptr;
    float *last_logits_ = nullptr;
    Sampler sampler_;
    Rng rng_;
    NgramIndex ngram_;
    SpecController spec_ctrl_;
    Session *parent_ = nullptr;     // the target session, for a draft
    Session *draft_ = nullptr;      // the draft session, for a target with a draft
    bool owns_stream_ = true;
    size_t draft_agreed_ = 0;       // draft tokens known to equal ours
};

// Test hook: makes speculative sampling accept every draft (a deliberately broken rule).
void set_broken_acceptance_for_tests(bool on);

// Builds a session in the caller's arena or in a block of its own; throws pangu::Error.
Session *create_session(Model &m, const pangu_session_params &p);
void destroy_session(Session *s);

inline Session *from_handle(pangu_session *h) { return reinterpret_cast<Session *>(h); }
inline const Session *from_handle(const pangu_session *h) { return reinterpret_cast<const Session *>(h); }
inline pangu_session *to_handle(Session *s) { return reinterpret_cast<pangu_session *>(s); }

}  // namespace pangu
