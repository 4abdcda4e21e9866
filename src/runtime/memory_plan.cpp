#include "runtime/memory_plan.h"

#include <algorithm>

#include "common/common.h"
#include "decode/sampler.h"
#include "decode/speculative.h"
#include "decode/text_stream.h"

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
    L.object = take(session_object_bytes());
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
        const SessionLayout draft = p.spec_mode == PANGU_SPEC_DRAFT
                                        ? plan_session(*from_handle(p.draft_model), dp)
                                        : plan_session(m, dp, self_draft_layers(m, p, buf, 1024));
        L.draft_bytes = draft.total;
        L.draft = take(draft.total);
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

}  // namespace pangu
