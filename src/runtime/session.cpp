#include "runtime/session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "common/common.h"

namespace pangu {

size_t session_object_bytes() { return sizeof(Session); }

namespace {

[[noreturn]] void fail_alloc(int rc, const char *what, size_t bytes, int32_t n_ctx) {
    fail(static_cast<pangu_status>(rc), std::string(pangu_status_string(static_cast<pangu_status>(rc))) +
                                            ": cannot allocate the session's " + std::to_string(bytes) + " bytes of " +
                                            what + " (context " + std::to_string(n_ctx) + ")");
}

// The host region: the caller's arena, else the device's memory when the host may use it (cpu: one block for
// everything, as the arena would be), else host memory.
uint8_t *host_block(Model &m, const pangu_session_params &p, const SessionLayout &L) {
    if (p.arena) {
        if (p.arena_size < L.total)
            fail(PANGU_ERR_BUFFER_TOO_SMALL, "pangu_session_create: the arena holds " + std::to_string(p.arena_size) +
                                                 " bytes; this session needs " + std::to_string(L.total) +
                                                 " (see pangu_session_estimate)");
        if (reinterpret_cast<uintptr_t>(p.arena) % L.alignment != 0)
            fail(PANGU_ERR_INVALID_ARGUMENT, "pangu_session_create: the arena must be aligned to " +
                                                 std::to_string(L.alignment) + " bytes");
        return static_cast<uint8_t *>(p.arena);
    }
    void *b = nullptr;
    if (L.dev_in_arena) {
        if (const int rc = m.device->mem_alloc(m.device->ctx, &b, L.total)) fail_alloc(rc, "memory", L.total, p.n_ctx);
    } else if (!(b = std::aligned_alloc(L.alignment, align_up(L.total, L.alignment)))) {
        fail_alloc(PANGU_ERR_OUT_OF_MEMORY, "host memory", L.total, p.n_ctx);
    }
    return static_cast<uint8_t *>(b);
}

void free_host_block(Model &m, const SessionLayout &L, uint8_t *block, bool caller) {
    if (caller) return;
    if (L.dev_in_arena) m.device->mem_free(m.device->ctx, block);
    else std::free(block);
}

}  // namespace

Session *create_session(Model &m, const pangu_session_params &p) {
    // A model file truncated since loading would fault (SIGBUS) in the first forward pass; refuse instead.
    // One fstat per file: nothing next to the allocation below.
    m.store.check_sizes();
    if (p.spec_mode == PANGU_SPEC_DRAFT) from_handle(p.draft_model)->store.check_sizes();
    const SessionLayout L = plan_session(m, p);
    const bool caller = p.arena != nullptr;
    uint8_t *block = host_block(m, p, L), *dblock = block + L.dev_offset;
    if (!L.dev_in_arena) {
        void *d = nullptr;
        if (const int rc = m.device->mem_alloc(m.device->ctx, &d, L.dev_bytes)) {
            free_host_block(m, L, block, caller);
            fail_alloc(rc, "device memory", L.dev_bytes, p.n_ctx);
        }
        dblock = static_cast<uint8_t *>(d);
    }
    try {
        return new (block + L.object) Session(m, p, L, block, dblock, caller);
    } catch (...) {
        if (!L.dev_in_arena) m.device->mem_free(m.device->ctx, dblock);
        free_host_block(m, L, block, caller);
        throw;
    }
}

void destroy_session(Session *s) {
    if (!s) return;
    Model &m = s->model;
    const SessionLayout L = s->layout;
    uint8_t *block = s->block(), *dblock = s->device_block();
    const bool caller = s->caller_arena;
    s->~Session();
    if (!L.dev_in_arena) m.device->mem_free(m.device->ctx, dblock);
    free_host_block(m, L, block, caller);
}

Session::Session(Model &m, const pangu_session_params &p, const SessionLayout &L, uint8_t *block, uint8_t *dblock,
                 bool caller, Session *parent, LayerSubset subset)
    : model(m), params(p), layout(L), caller_arena(caller), dev_(m.device), block_(block), dblock_(dblock),
      parent_(parent) {
    if (parent) {
        // A draft works in turn with its target, never at the same time: it borrows the target's threads.
        stream_ = parent->stream_;
        owns_stream_ = false;
    } else if (dev_->stream_create(dev_->ctx, p.n_threads, &stream_) != 0) {
        fail(PANGU_ERR_OUT_OF_MEMORY, "out of memory or threads: cannot start " + std::to_string(p.n_threads) +
                                          " compute threads");
    }
    try {
        init_state(subset);
    } catch (...) {
        if (owns_stream_) dev_->stream_destroy(dev_->ctx, stream_);
        throw;
    }
}

void Session::upload_rope_table() {
    // RoPE table in double precision: cos/sin of pos * theta^(-2i/D). Precomputing it keeps the angle exact to
    // float rounding even at long positions, where computing pos * inv_freq in float would drift. Computed a
    // few positions at a time on the host and copied to the device, whose memory the host may not touch.
    const int D = model.cfg.head_dim, half = D / 2;
    constexpr int kRowsPerCopy = 64;
    float rows[kRowsPerCopy * 512];
    const int per_copy = std::max(1, std::min(kRowsPerCopy, static_cast<int>(sizeof rows / sizeof(float)) / D));
    for (int64_t p0 = 0; p0 < params.n_ctx; p0 += per_copy) {
        const int64_t n = std::min<int64_t>(per_copy, params.n_ctx - p0);
        for (int64_t r = 0; r < n; ++r)
            for (int i = 0; i < half; ++i) {
                const double inv_freq = std::pow(model.cfg.rope_theta, -2.0 * i / D);
                const double a = static_cast<double>(p0 + r) * inv_freq;
                rows[r * D + i] = static_cast<float>(std::cos(a));
                rows[r * D + half + i] = static_cast<float>(std::sin(a));
            }
        const size_t bytes = sizeof(float) * static_cast<size_t>(n * D);
        if (dev_->memcpy(dev_->ctx, stream_, dbuf(layout.rope) + p0 * D, bytes, rows, bytes, PGD_HOST_TO_DEVICE) != 0 ||
            dev_->stream_sync(dev_->ctx, stream_) != 0)
            fail(PANGU_ERR_INTERNAL, "cannot copy the RoPE table to the device");
    }
}

void Session::init_state(LayerSubset subset) {
    int32_t *ids = reinterpret_cast<int32_t *>(block_ + layout.layer_ids);
    for (int32_t i = 0; i < layout.n_layers; ++i) ids[i] = subset.ids ? subset.ids[i] : i;
    upload_rope_table();
    tokens = reinterpret_cast<int32_t *>(block_ + layout.tokens);
    last_logits_ = buf(layout.last_logits);
    sampler_.init(model.cfg.n_vocab, block_ + layout.sampler);
    if (layout.ngram_bytes) ngram_.init(block_ + layout.ngram, params.n_ctx, params.spec_ngram);
    if (params.spec_mode == PANGU_SPEC_DRAFT || params.spec_mode == PANGU_SPEC_SELF) {
        const pangu_session_params dp = draft_params(params);
        // Sessions only read their model; the draft model is passed as const because the caller shares it.
        Model &dm = params.spec_mode == PANGU_SPEC_DRAFT ? const_cast<Model &>(*from_handle(params.draft_model)) : model;
        int32_t lbuf[1024];
        const LayerSubset sub =
            params.spec_mode == PANGU_SPEC_SELF ? self_draft_layers(model, params, lbuf, 1024) : LayerSubset{};
        const SessionLayout DL = plan_session(dm, dp, sub);
        uint8_t *hb = block_ + layout.draft, *db = dblock_ + layout.draft_dev;
        draft_ = new (hb + DL.object) Session(dm, dp, DL, hb, db, true, this, sub);
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
    const size_t half = layout.kv_row_bytes * static_cast<size_t>(P);  // one layer's K (or V) of a block
    uint8_t *base = dblock_ + layout.kv + 2 * static_cast<size_t>(li - layout.n_shared) * half;
    const size_t elem = pgd_kv_elem_bytes(layout.kv_dtype);
    pgd_tensor t{};
    t.dtype = layout.kv_dtype;
    t.rows = layout.n_ctx;
    t.cols = KVD;
    t.stride = KVD;
    t.block_rows = P;
    t.block_stride = static_cast<int64_t>(layout.kv_block_bytes / elem);
    if (layout.kv_dtype == PGD_I8) t.group_size = model.cfg.head_dim;  // one scale per position and KV head
    // Head-major blocks, so that attention reads a KV head's tile as one run, on a device that stores its own
    // rows (kv_store); the cache's size is the same either way.
    if (dev_->kv_store) t.head_cols = model.cfg.head_dim;
    t.data = base;
    if (layout.kv_dtype == PGD_I8) t.scale = reinterpret_cast<const float *>(base + P * KVD);
    *k = t;
    t.data = base + half;
    if (layout.kv_dtype == PGD_I8) t.scale = reinterpret_cast<const float *>(base + half + P * KVD);
    *v = t;
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
    // position by position. A device region outside the arena leaves the host region, all of it in use.
    if (!layout.dev_in_arena) return layout.total;
    const size_t blocks = (max_pos + layout.kv_block - 1) / layout.kv_block;
    return layout.dev_offset + layout.kv + blocks * layout.kv_block_bytes;
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

bool Session::slide(size_t need, bool keep_last) {
    const size_t keep = static_cast<size_t>(params.n_keep), C = static_cast<size_t>(layout.n_ctx);
    // keep_last: generation's last token was sampled but not run, and the next step runs it, so it stays too.
    // (It was dropped with the rest in a context of one position, and the step read the token before the first:
    // found by fuzz_api.)
    const size_t last = keep_last ? 1 : 0;
    if (params.context_policy != PANGU_CONTEXT_SLIDE || need + last > C - keep) return false;
    // Drop half of what follows the kept prefix (more if `need` requires it): sliding by a large step keeps
    // the re-evaluation cost per generated token small.
    const size_t movable = n_tokens - keep;
    size_t drop = std::max(movable / 2, n_tokens + need > C ? n_tokens + need - C : 0);
    drop = std::min(drop, movable - std::min(movable, last));
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

}  // namespace pangu
