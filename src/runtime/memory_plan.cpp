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

namespace {

// Appends regions to one side of the plan, each aligned.
struct Carver {
    size_t off = 0, alignment;
    explicit Carver(size_t a) : alignment(a) {}
    size_t take(size_t bytes) {
        const size_t o = off;
        off = align_up(off + bytes, alignment);
        return o;
    }
};

// The largest matmul workspace of any layer or the head, at the largest batch.
size_t matmul_workspace(const Model &m, size_t rows) {
    if (!m.device->matmul_workspace) return 0;
    pgd_tensor x{};
    x.dtype = PGD_F32;
    x.rows = static_cast<int64_t>(rows);
    auto ws = [&](const Tensor &t) {  // the weight as the device holds it: its dtype, group and act_dtype
        x.cols = t.cols;
        x.stride = t.cols;
        return m.device->matmul_workspace(m.device->ctx, &x, &t.dev);
    };
    size_t bytes = ws(m.output);
    for (const auto &lw : m.layers)
        for (const Tensor *t : {&lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.w_gate, &lw.w_up, &lw.w_down})
            bytes = std::max(bytes, ws(*t));
    return bytes;
}

// The host region: state the host reads and writes.
void plan_host(SessionLayout &L, Carver &h, const Model &m, const pangu_session_params &p) {
    const size_t V = m.cfg.n_vocab, B = p.n_batch;
    L.object = h.take(session_object_bytes());
    L.layer_ids = h.take(sizeof(int32_t) * L.n_layers);
    L.tokens = h.take(sizeof(int32_t) * p.n_ctx);
    L.sampler = h.take(Sampler::buffer_bytes(m.cfg.n_vocab));
    L.text = h.take(kTextBuffer);
    L.last_logits = h.take(sizeof(float) * V);
    L.pos = h.take(sizeof(int32_t) * B);
    L.spec_ids = h.take(sizeof(int32_t) * (L.spec_k + 1));
    L.spec_logits = h.take(sizeof(float) * (L.spec_k + 1) * V);
    L.ngram_bytes = p.spec_mode == PANGU_SPEC_PLD ? NgramIndex::bytes(p.n_ctx, p.spec_ngram) : 0;
    L.ngram = h.take(L.ngram_bytes);
    if (p.spec_mode == PANGU_SPEC_DRAFT || p.spec_mode == PANGU_SPEC_SELF) {
        L.spec_q = h.take(sizeof(float) * L.spec_k * V);
        L.spec_p = h.take(sizeof(float) * V);
    }
}

// The device region, up to the KV cache: what the operators read and write.
void plan_device(SessionLayout &L, Carver &d, const Model &m, const pangu_session_params &p) {
    const ModelConfig &c = m.cfg;
    const size_t H = c.n_embd, QD = size_t(c.n_head) * c.head_dim, KVD = size_t(c.n_head_kv) * c.head_dim;
    const size_t B = p.n_batch, F = m.max_ff, V = c.n_vocab;
    L.rope = d.take(sizeof(float) * p.n_ctx * c.head_dim);
    L.dev_pos = d.take(sizeof(int32_t) * B);
    L.dev_ids = d.take(sizeof(int32_t) * B);
    const size_t act0 = d.off;
    L.x = d.take(sizeof(float) * B * H);
    L.xb = d.take(sizeof(float) * B * H);
    L.xb2 = d.take(sizeof(float) * B * H);
    L.q = d.take(sizeof(float) * B * QD);
    L.k = d.take(sizeof(float) * B * KVD);
    L.v = d.take(sizeof(float) * B * KVD);
    L.att = d.take(sizeof(float) * B * QD);
    L.hb = d.take(sizeof(float) * B * F);
    L.hb2 = d.take(sizeof(float) * B * F);
    L.activation_bytes = d.off - act0;
    const size_t lg0 = d.off;
    L.logits = d.take(sizeof(float) * L.n_logit_rows * V);
    L.logits_bytes = d.off - lg0;
    L.attn_ws_bytes = m.device->attention_workspace ? m.device->attention_workspace(m.device->ctx, B, c.n_head,
                                                                                    c.n_head_kv, p.n_ctx, p.n_threads)
                                                    : 0;
    L.attn_ws = d.take(L.attn_ws_bytes);
    L.mm_ws_bytes = matmul_workspace(m, B);
    L.mm_ws = d.take(L.mm_ws_bytes);
}

// The KV cache, last in the device region.
void plan_kv(SessionLayout &L, Carver &d, const Model &m, const pangu_session_params &p) {
    const size_t KVD = size_t(m.cfg.n_head_kv) * m.cfg.head_dim;
    L.kv_dtype = kv_cache_dtype(*m.device, p.kv_type);
    switch (L.kv_dtype) {
        case PGD_F16:
        case PGD_BF16: L.kv_row_bytes = 2 * KVD; break;
        // int8 elements, then one fp32 scale per KV head (pgd_kv_scale): 25.8 % of F32 at head_dim 128
        case PGD_I8: L.kv_row_bytes = KVD + sizeof(float) * m.cfg.n_head_kv; break;
        default: L.kv_row_bytes = sizeof(float) * KVD;
    }
    if (L.kv_dtype == PGD_I8 && KVD % 4 != 0)
        fail(PANGU_ERR_UNSUPPORTED, "kv_type PANGU_KV_Q8 needs n_head_kv * head_dim to be a multiple of 4");
    L.kv_pos_bytes = 2 * L.kv_row_bytes * (L.n_layers - L.n_shared);
    // 64 positions a block: a run of 64 rows per layer (192 KiB of keys for a 1B model) streams like one
    // array, and at most 63 unused positions are allocated past n_ctx.
    constexpr int32_t kKvBlock = 64;
    L.kv_block = std::min<int32_t>(kKvBlock, p.n_ctx);
    L.kv_block_bytes = L.kv_pos_bytes * static_cast<size_t>(L.kv_block);
    L.kv_bytes = L.kv_block_bytes * ((p.n_ctx + L.kv_block - 1) / L.kv_block);
    L.kv = d.take(L.kv_bytes);
}

}  // namespace

int32_t kv_cache_dtype(const pgd_device &dev, int32_t kv_type) {
    const int32_t want = kv_type == PANGU_KV_F16 ? PGD_F16
                         : kv_type == PANGU_KV_BF16 ? PGD_BF16
                         : kv_type == PANGU_KV_Q8   ? PGD_I8
                                                    : PGD_F32;
    // device.h: a type the device lacks is stored as F16 if it has that, else F32; a device of API < 6 lists
    // none and keeps F32. (F32 used to count as always there, so kv_type F32 on npu-sim, whose kv_store holds
    // fp16 only, failed at the first evaluation: found by fuzz_api.)
    const uint32_t have = dev.kv_dtypes ? dev.kv_dtypes : 1u << PGD_F32;
    if (have & (1u << want)) return want;
    return (have & (1u << PGD_F16)) ? PGD_F16 : PGD_F32;
}

SessionLayout plan_session(const Model &m, const pangu_session_params &p, LayerSubset subset) {
    SessionLayout L;
    L.n_layers = subset.ids ? subset.n : m.cfg.n_layer;
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
    Carver host(L.alignment), dev(L.alignment);
    plan_host(L, host, m, p);
    plan_device(L, dev, m, p);
    if (p.spec_mode == PANGU_SPEC_DRAFT || p.spec_mode == PANGU_SPEC_SELF) {
        const pangu_session_params dp = draft_params(p);
        int32_t buf[1024];
        const SessionLayout draft = p.spec_mode == PANGU_SPEC_DRAFT
                                        ? plan_session(*from_handle(p.draft_model), dp)
                                        : plan_session(m, dp, self_draft_layers(m, p, buf, 1024));
        L.draft = host.take(draft.host_bytes);
        L.draft_dev = dev.take(draft.dev_bytes);
    }
    plan_kv(L, dev, m, p);
    L.host_bytes = host.off;
    L.dev_bytes = dev.off;
    L.dev_in_arena = m.device->host_visible != 0;
    L.dev_offset = L.dev_in_arena ? L.host_bytes : 0;
    L.total = L.host_bytes + (L.dev_in_arena ? L.dev_bytes : 0);
    L.device_bytes = L.dev_in_arena ? 0 : L.dev_bytes;
    return L;
}

}  // namespace pangu
