#include "params.h"

namespace pangu::train {

template <typename T>
Params<T> Params<T>::zeros(const Shape &s) {
    Params p;
    p.shape = s;
    const int D = s.n_embd, Q = s.n_head * s.head_dim, KV = s.n_kv * s.head_dim;
    p.embed = Mat<T>::Zero(s.n_vocab, D);
    p.norm = Vec<T>::Zero(D);
    if (!s.tied) p.head = Mat<T>::Zero(s.n_vocab, D);
    p.layers.resize(s.n_ff.size());
    for (size_t l = 0; l < s.n_ff.size(); ++l) {
        LayerParams<T> &L = p.layers[l];
        const int F = s.n_ff[l];
        L.attn_norm = Vec<T>::Zero(D), L.ffn_norm = Vec<T>::Zero(D);
        L.wq = Mat<T>::Zero(Q, D), L.wk = Mat<T>::Zero(KV, D), L.wv = Mat<T>::Zero(KV, D), L.wo = Mat<T>::Zero(D, Q);
        if (s.bias) L.bq = Vec<T>::Zero(Q), L.bk = Vec<T>::Zero(KV), L.bv = Vec<T>::Zero(KV), L.bo = Vec<T>::Zero(D);
        L.w_gate = Mat<T>::Zero(F, D), L.w_up = Mat<T>::Zero(F, D), L.w_down = Mat<T>::Zero(D, F);
    }
    return p;
}

const char *trainable_name(Trainable t) {
    switch (t) {
    case Trainable::ALL: return "all";
    case Trainable::LAYERS: return "layers";
    case Trainable::MLP: return "mlp";
    }
    return "?";
}

namespace {

template <typename T, typename M>
void add(std::vector<TensorRef<T>> &out, const std::string &name, M &m, bool trainable) {
    if (m.size() == 0) return;
    std::vector<int64_t> shape;
    if (M::ColsAtCompileTime == 1)
        shape = {static_cast<int64_t>(m.rows())};
    else
        shape = {static_cast<int64_t>(m.rows()), static_cast<int64_t>(m.cols())};
    out.push_back({name, shape, m.data(), static_cast<int64_t>(m.size()), trainable});
}

}  // namespace

template <typename T>
std::vector<TensorRef<T>> tensors(Params<T> &p, Trainable tr) {
    std::vector<TensorRef<T>> out;
    const bool all = tr == Trainable::ALL, layers = all || tr == Trainable::LAYERS;
    add(out, "model.embed_tokens.weight", p.embed, all);
    for (size_t l = 0; l < p.layers.size(); ++l) {
        LayerParams<T> &L = p.layers[l];
        const std::string b = "model.layers." + std::to_string(l) + ".";
        add(out, b + "input_layernorm.weight", L.attn_norm, layers);
        add(out, b + "self_attn.q_proj.weight", L.wq, layers);
        add(out, b + "self_attn.q_proj.bias", L.bq, layers);
        add(out, b + "self_attn.k_proj.weight", L.wk, layers);
        add(out, b + "self_attn.k_proj.bias", L.bk, layers);
        add(out, b + "self_attn.v_proj.weight", L.wv, layers);
        add(out, b + "self_attn.v_proj.bias", L.bv, layers);
        add(out, b + "self_attn.o_proj.weight", L.wo, layers);
        add(out, b + "self_attn.o_proj.bias", L.bo, layers);
        add(out, b + "post_attention_layernorm.weight", L.ffn_norm, layers);
        add(out, b + "mlp.gate_proj.weight", L.w_gate, true);
        add(out, b + "mlp.up_proj.weight", L.w_up, true);
        add(out, b + "mlp.down_proj.weight", L.w_down, true);
    }
    add(out, "model.norm.weight", p.norm, layers);
    add(out, "lm_head.weight", p.head, all);
    return out;
}

template struct Params<float>;
template struct Params<double>;
template std::vector<TensorRef<float>> tensors(Params<float> &, Trainable);
template std::vector<TensorRef<double>> tensors(Params<double> &, Trainable);

}  // namespace pangu::train
