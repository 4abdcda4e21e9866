// The forward pass: one readable path from token ids to logits. Every operator goes through the device
// interface; every buffer was carved from the session's memory by plan_session(). The host never touches
// the device region: token ids and positions go in, logits come out, by copies on the session's stream.
//
// Shapes (M = tokens in this call, H = n_embd, D = head_dim, QD = n_head*D, KVD = n_head_kv*D, F = layer's
// MLP width, V = n_vocab):
//   x   [M, H]    residual stream            q   [M, QD]   k, v [M, KVD]
//   xb  [M, H]    normalized input           att [M, QD]   attention output (heads concatenated)
//   xb2 [M, H]    projection output          hb, hb2 [M, F] gate and up projections
//   kv cache [n_ctx / 64][n_layer][K: 64 x KVD | V: 64 x KVD]    logits [n_logit_rows, V]
#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/common.h"
#include "runtime/session.h"

namespace pangu {

namespace {

pgd_tensor act(float *data, int64_t rows, int64_t cols) {
    pgd_tensor t{};
    t.data = data;
    t.dtype = PGD_F32;
    t.rows = rows;
    t.cols = cols;
    t.stride = cols;
    return t;
}

const pgd_tensor *bias(const VecWeight &b) { return b ? &b.dev : nullptr; }

void check(int rc, const char *op) {
    if (rc != 0) fail(static_cast<pangu_status>(rc), std::string("device operator ") + op + " failed");
}

}  // namespace

// One forward pass over M tokens: the device, the stream, the activations carved from the device region
// (shapes above), and what every block needs.
struct Pass {
    pgd_device *dev;
    pgd_stream *s;
    const ModelConfig &c;
    int64_t M, pos0;
    pgd_tensor x{}, xb{}, xb2{}, q{}, k{}, v{}, att{};
    const int32_t *pos = nullptr;  // [M] positions, in device memory
    const float *rope = nullptr;   // [n_ctx, D] cos/sin table, in device memory
    void *mm_ws = nullptr, *attn_ws = nullptr;
    size_t mm_ws_bytes = 0, attn_ws_bytes = 0;
    bool a16 = false;  // W8A16 and other 16-bit-activation modes: matmul inputs rounded where they are made
    int32_t a16_type = 0;

    void matmul(pgd_tensor *in, const Tensor &w, const VecWeight *b, pgd_tensor *out, const char *what) {
        check(dev->matmul(dev->ctx, s, in, &w.dev, b ? bias(*b) : nullptr, out, mm_ws, mm_ws_bytes), what);
    }
    void norm(pgd_tensor *in, const VecWeight &w, pgd_tensor *out) {
        check(dev->rms_norm(dev->ctx, s, in, &w.dev, c.rms_eps, out), "rms_norm");
        to_a16(out);
    }
    void to_a16(pgd_tensor *t) {
        if (a16) check(dev->round(dev->ctx, s, t, a16_type), "round");
    }
};

namespace {

// The new keys and values join the cache at their positions, a block of positions at a time.
void store_kv(Pass &f, const pgd_tensor &kc, const pgd_tensor &vc) {
    if (kc.dtype != PGD_F32 || kc.head_cols > 0) {  // converted (or laid out head by head) on the device
        if (!f.dev->kv_store) fail(PANGU_ERR_UNSUPPORTED, "the device has no kv_store for its KV cache");
        pgd_tensor kcw = kc, vcw = vc;
        check(f.dev->kv_store(f.dev->ctx, f.s, &f.k, &kcw, f.pos0), "kv store");
        check(f.dev->kv_store(f.dev->ctx, f.s, &f.v, &vcw, f.pos0), "kv store");
        return;
    }
    const int64_t KVD = kc.cols;
    const size_t row_bytes = sizeof(float) * KVD, pitch = sizeof(float) * kc.stride;
    for (int64_t r = 0; r < f.M;) {
        const int64_t run = pgd_rows_in_block(&kc, f.pos0 + r, f.M - r);
        float *kd = static_cast<float *>(kc.data) + pgd_row_offset(&kc, f.pos0 + r);
        float *vd = static_cast<float *>(vc.data) + pgd_row_offset(&vc, f.pos0 + r);
        const float *ks = static_cast<const float *>(f.k.data) + r * KVD;
        const float *vs = static_cast<const float *>(f.v.data) + r * KVD;
        check(f.dev->memcpy2d(f.dev->ctx, f.s, kd, pitch, ks, row_bytes, row_bytes, run, PGD_DEVICE_TO_DEVICE),
              "kv store");
        check(f.dev->memcpy2d(f.dev->ctx, f.s, vd, pitch, vs, row_bytes, row_bytes, run, PGD_DEVICE_TO_DEVICE),
              "kv store");
        r += run;
    }
}

// Attention block: x += o_proj(attention(rope(q), rope(k), v)), with k and v joining the layer's cache.
void attention_block(Pass &f, const LayerWeights &W, const pgd_tensor &kc, const pgd_tensor &vc) {
    const ModelConfig &c = f.c;
    f.norm(&f.x, W.attn_norm, &f.xb);
    f.matmul(&f.xb, W.wq, &W.bq, &f.q, "matmul q");
    f.matmul(&f.xb, W.wk, &W.bk, &f.k, "matmul k");
    f.matmul(&f.xb, W.wv, &W.bv, &f.v, "matmul v");
    check(f.dev->rope(f.dev->ctx, f.s, &f.q, f.pos, c.n_head, c.head_dim, f.rope), "rope q");
    check(f.dev->rope(f.dev->ctx, f.s, &f.k, f.pos, c.n_head_kv, c.head_dim, f.rope), "rope k");
    store_kv(f, kc, vc);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    check(f.dev->attention(f.dev->ctx, f.s, &f.q, &kc, &vc, f.pos0, c.n_head, c.n_head_kv, c.head_dim, scale, &f.att,
                           f.attn_ws, f.attn_ws_bytes),
          "attention");
    f.to_a16(&f.att);
    f.matmul(&f.att, W.wo, &W.bo, &f.xb2, "matmul o");
    check(f.dev->add(f.dev->ctx, f.s, &f.x, &f.xb2), "add");
}

// MLP block: x += down(silu(gate(x)) * up(x)); hb, hb2 [M, F] with this layer's F.
void mlp_block(Pass &f, const LayerWeights &W, pgd_tensor hb, pgd_tensor hb2) {
    f.norm(&f.x, W.ffn_norm, &f.xb);
    f.matmul(&f.xb, W.w_gate, nullptr, &hb, "matmul gate");
    f.matmul(&f.xb, W.w_up, nullptr, &hb2, "matmul up");
    check(f.dev->swiglu(f.dev->ctx, f.s, &hb, &hb2), "swiglu");
    f.to_a16(&hb);
    f.matmul(&hb, W.w_down, nullptr, &f.xb2, "matmul down");
    check(f.dev->add(f.dev->ctx, f.s, &f.x, &f.xb2), "add");
}

}  // namespace

void Session::forward(const int32_t *ids, int M, int n_out, float *out) {
    const ModelConfig &c = model.cfg;
    const SessionLayout &L = layout;
    const int64_t H = c.n_embd, QD = int64_t(c.n_head) * c.head_dim, KVD = int64_t(c.n_head_kv) * c.head_dim;
    Pass f{dev_, stream_, c, M, static_cast<int64_t>(n_past)};
    f.x = act(dbuf(L.x), M, H), f.xb = act(dbuf(L.xb), M, H), f.xb2 = act(dbuf(L.xb2), M, H);
    f.q = act(dbuf(L.q), M, QD), f.k = act(dbuf(L.k), M, KVD), f.v = act(dbuf(L.v), M, KVD);
    f.att = act(dbuf(L.att), M, QD);
    f.rope = dbuf(L.rope);
    f.mm_ws = dblock_ + L.mm_ws, f.mm_ws_bytes = L.mm_ws_bytes;
    f.attn_ws = dblock_ + L.attn_ws, f.attn_ws_bytes = L.attn_ws_bytes;
    // (int8 activations are the matmul's own business: pgd_tensor.act_dtype of the weights)
    f.a16 = (model.activation_dtype == DType::BF16 || model.activation_dtype == DType::F16) && dev_->round;
    f.a16_type = pgd_type(model.activation_dtype);

    // The inputs, token ids and their positions, by counted copies into the device region; then the embedding.
    int32_t *pos_host = reinterpret_cast<int32_t *>(block_ + L.pos);
    for (int i = 0; i < M; ++i) pos_host[i] = static_cast<int32_t>(f.pos0 + i);
    int32_t *ids_dev = reinterpret_cast<int32_t *>(dblock_ + L.dev_ids);
    int32_t *pos_dev = reinterpret_cast<int32_t *>(dblock_ + L.dev_pos);
    const size_t id_bytes = sizeof(int32_t) * static_cast<size_t>(M);
    check(dev_->memcpy(dev_->ctx, stream_, ids_dev, id_bytes, ids, id_bytes, PGD_HOST_TO_DEVICE), "token ids copy");
    check(dev_->memcpy(dev_->ctx, stream_, pos_dev, id_bytes, pos_host, id_bytes, PGD_HOST_TO_DEVICE), "positions copy");
    f.pos = pos_dev;
    check(dev_->embed(dev_->ctx, stream_, ids_dev, M, &model.tok_embd.dev, &f.x), "embed");

    const int32_t *layer_ids = reinterpret_cast<const int32_t *>(block_ + L.layer_ids);
    for (int li = 0; li < L.n_layers; ++li) {
        const LayerWeights &W = model.layers[layer_ids[li]];
        pgd_tensor kc, vc;  // this layer's keys and values: [n_ctx, KVD] in blocks of positions
        kv_view(li, &kc, &vc);
        attention_block(f, W, kc, vc);
        mlp_block(f, W, act(dbuf(L.hb), M, W.n_ff), act(dbuf(L.hb2), M, W.n_ff));
    }
    head(f, n_out, out);
    check(dev_->stream_sync(dev_->ctx, stream_), "stream sync");
    ++n_forward;
    n_evaluated += M;
    // A self-draft writes the target's cache rows of the layers they share: count them in its high water.
    if (parent_ && L.n_shared) parent_->max_pos = std::max(parent_->max_pos, static_cast<size_t>(f.pos0 + M));
}

// Head: logits of the last n_out rows only, n_logit_rows at a time, copied to `out` in host memory.
void Session::head(Pass &f, int n_out, float *out) {
    const int64_t H = model.cfg.n_embd, V = model.cfg.n_vocab, M = f.M;
    for (int64_t r0 = M - n_out; r0 < M; r0 += layout.n_logit_rows) {
        const int64_t rows = std::min<int64_t>(layout.n_logit_rows, M - r0);
        pgd_tensor xr = act(dbuf(layout.x) + r0 * H, rows, H), xn = act(dbuf(layout.xb), rows, H);
        pgd_tensor lg = act(dbuf(layout.logits), rows, V);
        f.norm(&xr, model.out_norm, &xn);
        f.matmul(&xn, model.output, nullptr, &lg, "matmul head");
        const size_t bytes = sizeof(float) * static_cast<size_t>(rows * V);
        check(dev_->memcpy(dev_->ctx, stream_, out + static_cast<size_t>(r0 - (M - n_out)) * V, bytes, lg.data, bytes,
                           PGD_DEVICE_TO_HOST),
              "logits copy");
    }
}

}  // namespace pangu
