// One conversation on a model: its KV cache, working buffers and generation state, all carved from a
// single block sized from the configuration when the session is created.
#pragma once

#include <string>

#include "device.h"
#include "model.h"
#include "sampler.h"
#include "vocab.h"

namespace pangu {

// Every buffer of a session, in bytes, computed from the model and parameters before anything is allocated.
struct SessionLayout {
    int32_t n_ctx = 0, n_batch = 0, n_threads = 1, n_logit_rows = 1;
    // offsets into the block
    size_t k_cache = 0, v_cache = 0, kv_bytes = 0;  // each cache: n_layer * n_ctx * kv_dim floats
    size_t x = 0, xb = 0, xb2 = 0, q = 0, k = 0, v = 0, att = 0, hb = 0, hb2 = 0;
    size_t logits = 0, rope = 0, pos = 0, attn_ws = 0, attn_ws_bytes = 0, mm_ws = 0, mm_ws_bytes = 0;
    size_t last_logits = 0, sampler = 0, tokens = 0, text = 0;
    size_t total = 0;
    size_t alignment = 64;
};

// Longest stop string accepted; the held-back text buffer is sized from it.
constexpr size_t kMaxStopString = 256;
constexpr size_t kTextBuffer = 2 * kMaxStopString + 64;

SessionLayout plan_session(const Model &m, const pangu_session_params &p, int n_threads_effective);

class Session {
public:
    Session(Model &m, const pangu_session_params &p);  // throws
    ~Session();

    void reset();
    void truncate(size_t n_keep);
    // Appends and evaluates tokens; `logits_out` (optional) receives n rows of n_vocab.
    void eval(const int32_t *ids, size_t n, float *logits_out);
    // Evaluates tokens appended by generation but not yet run, so that logits() is current.
    void sync();
    const float *logits() const { return last_logits_; }

    pangu_status generate(const int32_t *ids, size_t n, const pangu_sampling_params &sp, pangu_token_callback cb,
                          void *user, pangu_generate_result *res);

    Model &model;
    pangu_session_params params;
    SessionLayout layout;
    std::string last_error;
    int32_t *tokens = nullptr;  // [n_ctx] the context
    size_t n_tokens = 0;        // tokens in the context
    size_t n_past = 0;          // tokens whose K/V are in the cache (n_past <= n_tokens)
    bool logits_valid = false;

    int (*abort_cb)(void *) = nullptr;
    void *abort_user = nullptr;

private:
    // Runs the model over ids[0..n) at positions n_past.. (n <= n_batch) and writes the logits of the last
    // `n_out` rows to out (n_out rows of n_vocab, in host memory).
    void forward(const int32_t *ids, int n, int n_out, float *out);
    void eval_pending(float *logits_out, size_t out_row0);
    float *buf(size_t off) { return reinterpret_cast<float *>(block_ + off); }

    pgd_device *dev_;
    pgd_stream *stream_ = nullptr;
    uint8_t *block_ = nullptr;
    float *last_logits_ = nullptr;
    Sampler sampler_;
    Rng rng_;
};

}  // namespace pangu
