#include "calib.h"

#include <json/json.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <cmath>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "common/common.h"
#include "model/model.h"
#include "quantize.h"

namespace pangu {

// ---- calibration text ----

std::vector<std::string> read_documents(const std::string &path, bool jsonl) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail(PANGU_ERR_FILE_NOT_FOUND, path + ": cannot open it");
    std::ostringstream ss;
    ss << f.rdbuf();
    if (f.bad()) fail(PANGU_ERR_IO, path + ": read error");
    const std::string all = ss.str();
    std::vector<std::string> docs;
    if (!jsonl) {
        docs.push_back(all);
    } else {
        Json::CharReaderBuilder rb;
        Json::CharReaderBuilder::strictMode(&rb.settings_);
        std::unique_ptr<Json::CharReader> reader(rb.newCharReader());
        size_t pos = 0;
        for (int line_no = 1; pos < all.size(); ++line_no) {
            size_t end = all.find('\n', pos);
            if (end == std::string::npos) end = all.size();
            std::string line = all.substr(pos, end - pos);
            pos = end + 1;
            if (!line.empty() && line.back() == '\r') line.pop_back();
            if (line.find_first_not_of(" \t") == std::string::npos) continue;
            Json::Value v;
            std::string errs;
            if (!reader->parse(line.data(), line.data() + line.size(), &v, &errs) || !v.isObject() ||
                !v["text"].isString())
                fail(PANGU_ERR_INVALID_ARGUMENT, path + ":" + std::to_string(line_no) +
                                                     ": not a JSON object with a \"text\" string");
            docs.push_back(v["text"].asString());
        }
    }
    size_t chars = 0;
    for (const auto &d : docs) chars += d.size();
    if (chars == 0) fail(PANGU_ERR_INVALID_ARGUMENT, path + ": holds no text");
    return docs;
}

TokenWindows make_windows(const Model &m, const std::vector<std::string> &docs, int ctx, size_t max_tokens) {
    if (ctx < 2) fail(PANGU_ERR_INVALID_ARGUMENT, "make_windows: windows need at least 2 tokens");
    std::vector<std::vector<int32_t>> ids(docs.size());
    size_t most = 0;
    for (size_t d = 0; d < docs.size(); ++d) {
        try {
            m.vocab.tokenize(docs[d], m.vocab.add_bos(), false, ids[d]);
        } catch (const Error &e) {
            fail(e.status(), "document " + std::to_string(d + 1) + ": " + e.what());
        }
        most = std::max(most, ids[d].size());
    }
    // Breadth first: window k of every document before window k + 1 of any.
    TokenWindows out;
    std::vector<bool> used(docs.size(), false);
    const size_t C = static_cast<size_t>(ctx);
    for (size_t w0 = 0; w0 < most && out.n_tokens < max_tokens; w0 += C)
        for (size_t d = 0; d < docs.size() && out.n_tokens < max_tokens; ++d) {
            if (w0 >= ids[d].size()) continue;
            const size_t len = std::min({C, ids[d].size() - w0, max_tokens - out.n_tokens});
            if (len < 2) continue;
            out.windows.emplace_back(ids[d].begin() + static_cast<std::ptrdiff_t>(w0),
                                     ids[d].begin() + static_cast<std::ptrdiff_t>(w0 + len));
            out.n_tokens += len;
            if (!used[d]) ++out.n_documents;
            used[d] = true;
        }
    return out;
}

// ---- reference forward ----

namespace {

const TensorInfo &need(const Model &m, const std::string &name) {
    const TensorInfo *t = m.store.find(name);
    if (!t) fail(PANGU_ERR_MISSING_TENSOR, m.dir + ": tensor " + name + " is missing");
    return *t;
}

MatrixRM load_matrix(const Model &m, const std::string &name) {
    const TensorInfo &t = need(m, name);
    if (t.shape.size() != 2) fail(PANGU_ERR_SHAPE, name + ": not a matrix");
    const std::vector<float> v = widen_tensor(t);
    return Eigen::Map<const MatrixRM>(v.data(), t.shape[0], t.shape[1]);
}

Eigen::VectorXf load_vector(const Model &m, const std::string &name) {
    const std::vector<float> v = widen_tensor(need(m, name));
    return Eigen::Map<const Eigen::VectorXf>(v.data(), static_cast<Eigen::Index>(v.size()));
}

// out = x * rsqrt(mean(x^2) + eps) * w, row by row.
template <typename In>
void rms_norm(const In &x, const Eigen::VectorXf &w, float eps, MatrixRM &out) {
    out.resize(x.rows(), x.cols());
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
        const float ss = x.row(r).squaredNorm();
        const float inv = 1.0f / std::sqrt(ss / static_cast<float>(x.cols()) + eps);
        out.row(r) = (x.row(r).array() * inv * w.transpose().array()).matrix();
    }
}

}  // namespace

const char *linear_input_name(LinearInput p) {
    switch (p) {
        case LinearInput::QKV: return "q/k/v input";
        case LinearInput::O: return "o_proj input";
        case LinearInput::GATE_UP: return "gate/up input";
        case LinearInput::DOWN: return "down_proj input";
    }
    return "?";
}

RefLayer load_ref_layer(const Model &m, int l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    RefLayer W;
    W.attn_norm = load_vector(m, p + "input_layernorm.weight");
    W.ffn_norm = load_vector(m, p + "post_attention_layernorm.weight");
    W.wq = load_matrix(m, p + "self_attn.q_proj.weight");
    W.wk = load_matrix(m, p + "self_attn.k_proj.weight");
    W.wv = load_matrix(m, p + "self_attn.v_proj.weight");
    W.wo = load_matrix(m, p + "self_attn.o_proj.weight");
    if (m.cfg.bias) {
        W.bq = load_vector(m, p + "self_attn.q_proj.bias");
        W.bk = load_vector(m, p + "self_attn.k_proj.bias");
        W.bv = load_vector(m, p + "self_attn.v_proj.bias");
        W.bo = load_vector(m, p + "self_attn.o_proj.bias");
    }
    W.w_gate = load_matrix(m, p + "mlp.gate_proj.weight");
    W.w_up = load_matrix(m, p + "mlp.up_proj.weight");
    W.w_down = load_matrix(m, p + "mlp.down_proj.weight");
    return W;
}

RefForward::RefForward(const Model &m, TokenWindows text, int64_t chunk_tokens, int n_threads)
    : m_(m), text_(std::move(text)), chunk_tokens_(std::max<int64_t>(1, chunk_tokens)) {
    n_threads_ = n_threads > 0 ? n_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    Eigen::initParallel();
    const ModelConfig &c = m.cfg;
    const int64_t H = c.n_embd, D = c.head_dim, half = D / 2;
    const TensorInfo &emb = need(m, "model.embed_tokens.weight");
    if (emb.dtype != DType::F32 && emb.dtype != DType::F16 && emb.dtype != DType::BF16)
        fail(PANGU_ERR_DTYPE, emb.name + ": the reference forward needs a floating-point embedding table");
    x_.resize(static_cast<Eigen::Index>(text_.n_tokens), H);
    size_t max_len = 0;
    int64_t row = 0;
    for (const auto &w : text_.windows) {
        start_.push_back(row);
        max_len = std::max(max_len, w.size());
        for (const int32_t id : w) {
            if (id < 0 || id >= c.n_vocab) fail(PANGU_ERR_INVALID_TOKEN, "token id " + std::to_string(id) + " out of range");
            for (int64_t j = 0; j < H; ++j) {
                const float v = load_element(emb, static_cast<size_t>(id) * H + j);
                if (!std::isfinite(v))
                    fail(PANGU_ERR_NUMERIC, emb.name + ": NaN or Inf at row " + std::to_string(id) + ", column " +
                                                std::to_string(j));
                x_(row, j) = v;
            }
            ++row;
        }
    }
    // cos/sin of pos * theta^(-2i/D) in double, as the runtime's table (runtime/session.cpp).
    rope_.resize(static_cast<Eigen::Index>(max_len), D);
    for (size_t p = 0; p < max_len; ++p)
        for (int64_t i = 0; i < half; ++i) {
            const double a = static_cast<double>(p) * std::pow(c.rope_theta, -2.0 * static_cast<double>(i) / D);
            rope_(p, i) = static_cast<float>(std::cos(a));
            rope_(p, half + i) = static_cast<float>(std::sin(a));
        }
}

void RefForward::run_layer(const RefLayer &W, const LinearHook &hook, bool advance) {
    const ModelConfig &c = m_.cfg;
    if (layers_done_ >= c.n_layer) fail(PANGU_ERR_INTERNAL, "RefForward: every layer has run");
    const int l = layers_done_;
    const int64_t D = c.head_dim, half = D / 2, nh = c.n_head, nkv = c.n_head_kv, g = nh / nkv;
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    const size_t nw = text_.windows.size();
    // Chunks of whole windows, small enough that every thread gets some; each is independent of the others
    // within a layer (attention never leaves a window).
    const int threads = std::max(1, n_threads_);
    const int64_t per_thread = (static_cast<int64_t>(text_.n_tokens) + threads - 1) / threads;
    const int64_t limit = std::max<int64_t>(1, std::min(chunk_tokens_, per_thread));
    std::vector<std::pair<size_t, size_t>> chunks;
    for (size_t w0 = 0; w0 < nw;) {
        size_t w1 = w0 + 1;
        int64_t n = static_cast<int64_t>(text_.windows[w0].size());
        while (w1 < nw && n + static_cast<int64_t>(text_.windows[w1].size()) <= limit)
            n += static_cast<int64_t>(text_.windows[w1++].size());
        chunks.emplace_back(w0, w1);
        w0 = w1;
    }
    std::mutex hook_mu;
    auto call = [&](LinearInput p, const MatrixRM &x) {
        if (!hook) return;
        std::lock_guard<std::mutex> lk(hook_mu);
        hook(l, p, x);
    };
    auto run_chunk = [&](size_t w0, size_t w1) {
        MatrixRM xn, q, k, v, att, o, gt, up;
        const int64_t r0 = start_[w0];
        const int64_t n = (w1 < nw ? start_[w1] : static_cast<int64_t>(text_.n_tokens)) - r0;
        MatrixRM copy;  // observing only: the layer runs on a copy of the chunk's hidden states
        if (!advance) copy = x_.middleRows(r0, n);
        auto X = advance ? x_.middleRows(r0, n) : copy.middleRows(0, n);

        rms_norm(X, W.attn_norm, c.rms_eps, xn);
        call(LinearInput::QKV, xn);
        q.noalias() = xn * W.wq.transpose();
        k.noalias() = xn * W.wk.transpose();
        v.noalias() = xn * W.wv.transpose();
        if (W.bq.size()) {
            q.rowwise() += W.bq.transpose();
            k.rowwise() += W.bk.transpose();
            v.rowwise() += W.bv.transpose();
        }
        // NeoX RoPE: each head's first half pairs with its second half.
        for (size_t w = w0; w < w1; ++w) {
            const int64_t s = start_[w] - r0, len = static_cast<int64_t>(text_.windows[w].size());
            for (int64_t p = 0; p < len; ++p) {
                const float *cs = &rope_(p, 0), *sn = cs + half;
                auto rot = [&](MatrixRM &t, int64_t heads) {
                    for (int64_t h = 0; h < heads; ++h) {
                        float *x = &t(s + p, h * D);
                        for (int64_t i = 0; i < half; ++i) {
                            const float a = x[i], b = x[i + half];
                            x[i] = a * cs[i] - b * sn[i];
                            x[i + half] = b * cs[i] + a * sn[i];
                        }
                    }
                };
                rot(q, nh);
                rot(k, nkv);
            }
        }
        // GQA causal attention, window by window and head by head; query head h reads KV head h / g.
        att.resize(n, nh * D);
        for (size_t w = w0; w < w1; ++w) {
            const int64_t s = start_[w] - r0, len = static_cast<int64_t>(text_.windows[w].size());
            for (int64_t h = 0; h < nh; ++h) {
                const int64_t hk = h / g;
                MatrixRM S = q.block(s, h * D, len, D) * k.block(s, hk * D, len, D).transpose();
                for (int64_t i = 0; i < len; ++i) {
                    float mx = -INFINITY;
                    for (int64_t j = 0; j <= i; ++j) mx = std::max(mx, S(i, j) *= scale);
                    float sum = 0.0f;
                    for (int64_t j = 0; j <= i; ++j) sum += (S(i, j) = std::exp(S(i, j) - mx));
                    const float r = 1.0f / sum;
                    for (int64_t j = 0; j <= i; ++j) S(i, j) *= r;
                    for (int64_t j = i + 1; j < len; ++j) S(i, j) = 0.0f;
                }
                att.block(s, h * D, len, D).noalias() = S * v.block(s, hk * D, len, D);
            }
        }
        call(LinearInput::O, att);
        o.noalias() = att * W.wo.transpose();
        if (W.bo.size()) o.rowwise() += W.bo.transpose();
        X += o;

        rms_norm(X, W.ffn_norm, c.rms_eps, xn);
        call(LinearInput::GATE_UP, xn);
        gt.noalias() = xn * W.w_gate.transpose();
        up.noalias() = xn * W.w_up.transpose();
        gt = (gt.array() / (1.0f + (-gt.array()).exp()) * up.array()).matrix();
        call(LinearInput::DOWN, gt);
        X.noalias() += gt * W.w_down.transpose();
    };
    // Worker threads take chunks in order; the first error is rethrown here.
    std::atomic<size_t> next{0};
    std::exception_ptr error;
    std::mutex error_mu;
    auto worker = [&] {
        for (size_t i; (i = next.fetch_add(1)) < chunks.size();) {
            try {
                run_chunk(chunks[i].first, chunks[i].second);
            } catch (...) {
                std::lock_guard<std::mutex> lk(error_mu);
                if (!error) error = std::current_exception();
                next = chunks.size();
            }
        }
    };
    const int n_workers = static_cast<int>(std::min<size_t>(static_cast<size_t>(threads), chunks.size()));
    std::vector<std::thread> pool;
    for (int t = 1; t < n_workers; ++t) pool.emplace_back(worker);
    worker();
    for (auto &t : pool) t.join();
    if (error) std::rethrow_exception(error);
    if (advance) ++layers_done_;
}

MatrixRM RefForward::logits(size_t w) const {
    if (layers_done_ != m_.cfg.n_layer) fail(PANGU_ERR_INTERNAL, "RefForward::logits before every layer has run");
    const Eigen::VectorXf norm = load_vector(m_, "model.norm.weight");
    const MatrixRM head = load_matrix(m_, m_.store.find("lm_head.weight") ? "lm_head.weight" : "model.embed_tokens.weight");
    MatrixRM xn;
    rms_norm(x_.middleRows(start_[w], static_cast<Eigen::Index>(text_.windows[w].size())), norm, m_.cfg.rms_eps, xn);
    return xn * head.transpose();
}

double RefForward::mean_nll(size_t *scored) const {
    if (layers_done_ != m_.cfg.n_layer) fail(PANGU_ERR_INTERNAL, "RefForward::mean_nll before every layer has run");
    const Eigen::VectorXf norm = load_vector(m_, "model.norm.weight");
    const MatrixRM head = load_matrix(m_, m_.store.find("lm_head.weight") ? "lm_head.weight" : "model.embed_tokens.weight");
    double nll = 0;
    size_t n = 0;
    MatrixRM xn, lg;
    for (size_t w = 0; w < text_.windows.size(); ++w) {
        const auto &ids = text_.windows[w];
        rms_norm(x_.middleRows(start_[w], static_cast<Eigen::Index>(ids.size())), norm, m_.cfg.rms_eps, xn);
        lg.noalias() = xn * head.transpose();
        for (size_t i = 0; i + 1 < ids.size(); ++i) {
            const auto row = lg.row(static_cast<Eigen::Index>(i));
            const double mx = row.maxCoeff();
            double sum = 0;
            for (Eigen::Index j = 0; j < row.size(); ++j) sum += std::exp(row(j) - mx);
            nll += mx + std::log(sum) - row(ids[i + 1]);
            ++n;
        }
    }
    if (scored) *scored = n;
    return n ? nll / static_cast<double>(n) : 0.0;
}

RefForward run_reference(const Model &m, TokenWindows text, const LinearHook &hook) {
    RefForward f(m, std::move(text));
    for (int l = 0; l < m.cfg.n_layer; ++l) f.run_layer(load_ref_layer(m, l), hook);
    return f;
}

// ---- activation statistics and SmoothQuant ----

void ActMax::record(int layer, LinearInput point, const MatrixRM &x) {
    auto &per_layer = at[static_cast<int>(point)];
    if (per_layer.size() <= static_cast<size_t>(layer)) per_layer.resize(static_cast<size_t>(layer) + 1);
    auto &mx = per_layer[static_cast<size_t>(layer)];
    if (mx.empty()) mx.assign(static_cast<size_t>(x.cols()), 0.0f);
    const Eigen::RowVectorXf a = x.cwiseAbs().colwise().maxCoeff();
    for (Eigen::Index j = 0; j < a.size(); ++j) mx[static_cast<size_t>(j)] = std::max(mx[static_cast<size_t>(j)], a(j));
}

Eigen::VectorXf column_absmax(const std::vector<const MatrixRM *> &ws) {
    Eigen::VectorXf mx = Eigen::VectorXf::Zero(ws.at(0)->cols());
    for (const MatrixRM *w : ws) mx = mx.cwiseMax(w->cwiseAbs().colwise().maxCoeff().transpose());
    return mx;
}

Eigen::VectorXf smooth_factors(const std::vector<float> &act_max, const Eigen::VectorXf &w_max, float alpha) {
    if (static_cast<Eigen::Index>(act_max.size()) != w_max.size())
        fail(PANGU_ERR_INTERNAL, "smooth_factors: " + std::to_string(act_max.size()) + " activation channels, " +
                                     std::to_string(w_max.size()) + " weight columns");
    Eigen::VectorXf s(w_max.size());
    for (Eigen::Index j = 0; j < s.size(); ++j) {
        const double a = act_max[static_cast<size_t>(j)], w = w_max(j);
        if (!(a > 0) || !(w > 0)) {
            s(j) = 1.0f;
            continue;
        }
        const double v = std::pow(a, alpha) / std::pow(w, 1.0 - alpha);
        s(j) = static_cast<float>(std::min<double>(kSmoothMax, std::max<double>(kSmoothMin, v)));
    }
    return s;
}

void divide_norm(Eigen::VectorXf &norm, const Eigen::VectorXf &s) {
    if (norm.size() != s.size()) fail(PANGU_ERR_INTERNAL, "divide_norm: sizes differ");
    norm = (norm.array() / s.array()).matrix();
}

void scale_columns(MatrixRM &w, const Eigen::VectorXf &s) {
    if (w.cols() != s.size()) fail(PANGU_ERR_INTERNAL, "scale_columns: sizes differ");
    w = (w.array().rowwise() * s.transpose().array()).matrix();
}

void fold_smoothing(Eigen::VectorXf &norm, const std::vector<MatrixRM *> &ws, const Eigen::VectorXf &s) {
    divide_norm(norm, s);
    for (MatrixRM *w : ws) scale_columns(*w, s);
}

void fold_smoothing(RefLayer &W, const LayerSmoothing &s) {
    fold_smoothing(W.attn_norm, {&W.wq, &W.wk, &W.wv}, s.qkv);
    fold_smoothing(W.ffn_norm, {&W.w_gate, &W.w_up}, s.gate_up);
}

std::vector<LayerSmoothing> smoothquant_calibrate(const Model &m, TokenWindows text, float alpha,
                                                  const std::function<void(int)> &progress) {
    RefForward f(m, std::move(text));
    ActMax am;
    std::vector<LayerSmoothing> out(static_cast<size_t>(m.cfg.n_layer));
    for (int l = 0; l < m.cfg.n_layer; ++l) {
        const RefLayer W = load_ref_layer(m, l);
        f.run_layer(W, [&](int layer, LinearInput p, const MatrixRM &x) {
            if (p == LinearInput::QKV || p == LinearInput::GATE_UP) am.record(layer, p, x);
        });
        out[l].qkv = smooth_factors(am.at[0][l], column_absmax({&W.wq, &W.wk, &W.wv}), alpha);
        out[l].gate_up = smooth_factors(am.at[2][l], column_absmax({&W.w_gate, &W.w_up}), alpha);
        if (progress) progress(l);
    }
    return out;
}

}  // namespace pangu
