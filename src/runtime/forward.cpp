// The forward pass: one readable path from token ids to logits. Every operator goes through the device
// interface; every buffer was carved from the session block by plan_session().
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

// The weight as the device sees it (uploaded at load).
const pgd_tensor &weight(const Tensor &w) { return w.dev; }

void check(int rc, const char *op) {
    if (rc != 0) fail(static_cast<pangu_status>(rc), std::string("device operator ") + op + " failed");
}

}  // namespace

void Session::forward(const int32_t *ids, int M, int n_out, float *out) {
    const ModelConfig &c = model.cfg;
    const SessionLayout &L = layout;
    const int64_t H = c.n_embd, D = c.head_dim, QD = int64_t(c.n_head) * D, KVD = int64_t(c.n_head_kv) * D;
    const int64_t pos0 = static_cast<int64_t>(n_past);
    void *ctx = dev_->ctx;
    pgd_stream *s = stream_;

    int32_t *pos = reinterpret_cast<int32_t *>(block_ + L.pos);
    for (int i = 0; i < M; ++i) pos[i] = static_cast<int32_t>(pos0 + i);

    pgd_tensor x = act(buf(L.x), M, H), xb = act(buf(L.xb), M, H), xb2 = act(buf(L.xb2), M, H);
    pgd_tensor q = act(buf(L.q), M, QD), k = act(buf(L.k), M, KVD), v = act(buf(L.v), M, KVD);
    pgd_tensor att = act(buf(L.att), M, QD);
    const float *rope = buf(L.rope);
    void *attn_ws = block_ + L.attn_ws;
    void *mm_ws = block_ + L.mm_ws;
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    // W8A16 and other 16-bit-activation modes: matmul inputs are rounded to 16 bits where they are made.
    const bool a16 = model.activation_dtype != DType::F32 && dev_->round;
    const int32_t a16_type = static_cast<int32_t>(model.activation_dtype);
    auto to_a16 = [&](pgd_tensor *t) {
        if (a16) check(dev_->round(ctx, s, t, a16_type), "round");
    };

    pgd_tensor emb = weight(model.tok_embd);
    check(dev_->embed(ctx, s, ids, M, &emb, &x), "embed");

    const int32_t *layer_ids = reinterpret_cast<const int32_t *>(block_ + L.layer_ids);
    for (int li = 0; li < L.n_layers; ++li) {
        const LayerWeights &W = model.layers[layer_ids[li]];
        const int64_t F = W.n_ff;
        pgd_tensor hb = act(buf(L.hb), M, F), hb2 = act(buf(L.hb2), M, F);
        pgd_tensor wq = weight(W.wq), wk = weight(W.wk), wv = weight(W.wv), wo = weight(W.wo);
        pgd_tensor wg = weight(W.w_gate), wu = weight(W.w_up), wd = weight(W.w_down);
        pgd_tensor kc, vc;  // this layer's keys and values: [n_ctx, KVD] in blocks of positions
        kv_view(li, &kc, &vc);

        // attention block: x += o_proj(attention(rope(q), rope(k), v))
        check(dev_->rms_norm(ctx, s, &x, W.attn_norm, c.rms_eps, &xb), "rms_norm");
        to_a16(&xb);
        check(dev_->matmul(ctx, s, &xb, &wq, W.bq, &q, mm_ws, L.mm_ws_bytes), "matmul q");
        check(dev_->matmul(ctx, s, &xb, &wk, W.bk, &k, mm_ws, L.mm_ws_bytes), "matmul k");
        check(dev_->matmul(ctx, s, &xb, &wv, W.bv, &v, mm_ws, L.mm_ws_bytes), "matmul v");
        check(dev_->rope(ctx, s, &q, pos, c.n_head, c.head_dim, rope), "rope q");
        check(dev_->rope(ctx, s, &k, pos, c.n_head_kv, c.head_dim, rope), "rope k");
        // The new keys and values join the cache at their positions, a block at a time.
        const size_t row_bytes = sizeof(float) * KVD, pitch = sizeof(float) * kc.stride;
        for (int64_t r = 0; r < M;) {
            const int64_t run = pgd_rows_in_block(&kc, pos0 + r, M - r);
            float *kd = static_cast<float *>(kc.data) + pgd_row_offset(&kc, pos0 + r);
            float *vd = static_cast<float *>(vc.data) + pgd_row_offset(&vc, pos0 + r);
            check(dev_->memcpy2d(ctx, kd, pitch, buf(L.k) + r * KVD, row_bytes, row_bytes, run, PGD_DEVICE_TO_DEVICE),
                  "kv store");
            check(dev_->memcpy2d(ctx, vd, pitch, buf(L.v) + r * KVD, row_bytes, row_bytes, run, PGD_DEVICE_TO_DEVICE),
                  "kv store");
            r += run;
        }
        check(dev_->attention(ctx, s, &q, &kc, &vc, pos0, c.n_head, c.n_head_kv, c.head_dim, scale, &att, attn_ws,
                              L.attn_ws_bytes),
              "attention");
        to_a16(&att);
        check(dev_->matmul(ctx, s, &att, &wo, W.bo, &xb2, mm_ws, L.mm_ws_bytes), "matmul o");
        check(dev_->add(ctx, s, &x, &xb2), "add");

        // MLP block: x += down(silu(gate(x)) * up(x))
        check(dev_->rms_norm(ctx, s, &x, W.ffn_norm, c.rms_eps, &xb), "rms_norm");
        to_a16(&xb);
        check(dev_->matmul(ctx, s, &xb, &wg, nullptr, &hb, mm_ws, L.mm_ws_bytes), "matmul gate");
        check(dev_->matmul(ctx, s, &xb, &wu, nullptr, &hb2, mm_ws, L.mm_ws_bytes), "matmul up");
        check(dev_->swiglu(ctx, s, &hb, &hb2), "swiglu");
        to_a16(&hb);
        check(dev_->matmul(ctx, s, &hb, &wd, nullptr, &xb2, mm_ws, L.mm_ws_bytes), "matmul down");
        check(dev_->add(ctx, s, &x, &xb2), "add");
    }

    // Head: only the rows whose logits are wanted, n_logit_rows at a time.
    pgd_tensor head = weight(model.output);
    const int64_t V = c.n_vocab;
    for (int r0 = M - n_out; r0 < M; r0 += L.n_logit_rows) {
        const int rows = std::min(L.n_logit_rows, M - r0);
        pgd_tensor xr = act(buf(L.x) + r0 * H, rows, H), xn = act(buf(L.xb), rows, H);
        pgd_tensor lg = act(buf(L.logits), rows, V);
        check(dev_->rms_norm(ctx, s, &xr, model.out_norm, c.rms_eps, &xn), "rms_norm");
        to_a16(&xn);
        check(dev_->matmul(ctx, s, &xn, &head, nullptr, &lg, mm_ws, L.mm_ws_bytes), "matmul head");
        const size_t bytes = sizeof(float) * rows * V;
        check(dev_->memcpy(ctx, out + static_cast<size_t>(r0 - (M - n_out)) * V, bytes, lg.data, bytes,
                           PGD_DEVICE_TO_HOST),
              "logits copy");
    }
    check(dev_->stream_sync(ctx, s), "stream sync");
    ++n_forward;
    n_evaluated += M;
    // A self-draft writes the target's cache rows of the layers they share: count them in its high water.
    if (parent_ && L.n_shared) parent_->max_pos = std::max(parent_->max_pos, static_cast<size_t>(pos0 + M));
}

}  // namespace pangu
