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
#include "runtime/memory_plan.h"
#include "decode/text_stream.h"

namespace pangu {

struct Pass;  // one forward pass's state (forward.cpp)

// Switches for the tests of speculative decoding, set on one session (Session::set_test_hooks).
struct SessionTestHooks {
    bool always_draft = false;       // draft whatever is available, whatever the timings say
    bool broken_acceptance = false;  // speculative sampling accepts every draft (a deliberately broken rule)
};

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
    uint8_t *device_block() const { return dblock_; }
    // The device's accounting of this session's stream; false when the backend keeps none.
    bool device_stats(pgd_stream_stats *out) const {
        return owns_stream_ && dev_->stream_stats && dev_->stream_stats(dev_->ctx, stream_, out) == 0;
    }

    pangu_status generate(const int32_t *ids, size_t n, const pangu_sampling_params &sp, pangu_token_callback cb,
                          void *user, pangu_generate_result *res);
    void set_test_hooks(const SessionTestHooks &h) {
        hooks = h;
        spec_ctrl_.set_always_draft(h.always_draft);
    }

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
    int64_t n_generated_total = 0, n_verify = 0, n_drafted = 0, n_accepted = 0, accepted_hist[kMaxDraftLen + 1] = {0};
    double generate_ms_total = 0;
    size_t max_pos = 0;  // largest n_past reached: the KV high-water mark
    // Where generation met non-finite logits (PANGU_ERR_NUMERIC): the context length whose next-token logits
    // they were, and whether they were the draft model's.
    size_t numeric_pos = 0;
    bool numeric_in_draft = false;

    // `block` holds the host region, `dblock` the device region (inside `block` when the device's memory is
    // host-visible).
    Session(Model &m, const pangu_session_params &p, const SessionLayout &L, uint8_t *block, uint8_t *dblock,
            bool caller_arena, Session *parent = nullptr, LayerSubset subset = {});
    ~Session();
    Session(const Session &) = delete;
    Session &operator=(const Session &) = delete;

private:
    // One call of generate(): its parameters, its result so far and its text stream.
    struct Generation {
        const pangu_sampling_params &sp;
        pangu_token_callback cb;
        void *user;
        TextStream stream;
        pangu_generate_result r{};
        pangu_status status = PANGU_OK;
        // Ends the generation with a reason and a status; true, so that callers can `return g.stop(...)`.
        bool stop(int reason, pangu_status st) {
            r.stop_reason = reason;
            status = st;
            return true;
        }
    };
    // The steps of generate() (decode/generate.cpp); each returns true when generation ends.
    bool may_step(Generation &g);  // false when generation ends before the next step (budget, room, abort)
    bool sample_first(Generation &g);
    bool step(Generation &g);
    bool deliver(Generation &g, int32_t tok);  // streams a token that joined the context
    // Drafts for the next step into out (decode/drafting.cpp): how many (0: none), or -1 when the draft's
    // logits are not finite.
    int draft(Generation &g, int32_t *out, int *source);
    // Verification (decode/verify.cpp): samples rows 0..k, keeps the drafts that agree, delivers the tokens.
    bool accept(Generation &g, const int32_t *batch, int k, const float *rows, int *accepted);
    int32_t speculative_sample(Generation &g, const float *row, int i, int k, const int32_t *drafts, bool *rejected);

    // Runs the model over ids[0..n) at positions n_past.. (n <= n_batch) and writes the logits of the last
    // `n_out` rows to out (n_out rows of n_vocab, in host memory).
    void forward(const int32_t *ids, int n, int n_out, float *out);
    void head(Pass &f, int n_out, float *out);  // the logits of the last n_out rows
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
    // PANGU_CONTEXT_SLIDE: drop tokens after n_keep so that `need` more fit, keeping the last one too if
    // `keep_last`; false if they cannot.
    bool slide(size_t need, bool keep_last);
    void init_state(LayerSubset subset);
    void upload_rope_table();
    float *buf(size_t off) { return reinterpret_cast<float *>(block_ + off); }     // host region
    float *dbuf(size_t off) { return reinterpret_cast<float *>(dblock_ + off); }   // device region: never read

    pgd_device *dev_;
    pgd_stream *stream_ = nullptr;
    uint8_t *block_ = nullptr;
    uint8_t *dblock_ = nullptr;
    float *last_logits_ = nullptr;
    Sampler sampler_;
    Rng rng_;
    NgramIndex ngram_;
    SpecController spec_ctrl_;
    Session *parent_ = nullptr;     // the target session, for a draft
    Session *draft_ = nullptr;      // the draft session, for a target with a draft
    bool owns_stream_ = true;
    size_t draft_agreed_ = 0;       // draft tokens known to equal ours
    SessionTestHooks hooks;
};

// Builds a session in the caller's arena or in a block of its own; throws pangu::Error.
Session *create_session(Model &m, const pangu_session_params &p);
void destroy_session(Session *s);

inline Session *from_handle(pangu_session *h) { return reinterpret_cast<Session *>(h); }
inline const Session *from_handle(const pangu_session *h) { return reinterpret_cast<const Session *>(h); }
inline pangu_session *to_handle(Session *s) { return reinterpret_cast<pangu_session *>(s); }

}  // namespace pangu
