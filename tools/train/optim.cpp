#include "optim.h"

#include <cmath>
#include <string>

#include "common/common.h"

namespace pangu::train {

double lr_at(int64_t step, int64_t total, int64_t warmup, double peak) {
    if (warmup > 0 && step < warmup) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
    const int64_t rest = total - warmup;
    if (rest <= 0) return peak;
    const double left = static_cast<double>(total - step) / static_cast<double>(rest);
    return peak * (left > 0 ? left : 0.0);
}

double clip_grad_norm(const std::vector<TensorRef<float>> &grads, double max_norm) {
    double ss = 0;
    for (const auto &g : grads)
        for (int64_t i = 0; i < g.size; ++i) ss += static_cast<double>(g.data[i]) * g.data[i];
    const double norm = std::sqrt(ss);
    if (!std::isfinite(norm) || max_norm <= 0 || norm <= max_norm) return norm;
    const float k = static_cast<float>(max_norm / norm);
    for (const auto &g : grads)
        for (int64_t i = 0; i < g.size; ++i) g.data[i] *= k;
    return norm;
}

AdamW::AdamW(std::vector<TensorRef<float>> params, AdamWOptions o) : p_(std::move(params)), o_(o) {
    for (const auto &p : p_) {
        m_.emplace_back(static_cast<size_t>(p.size), 0.0f);
        v_.emplace_back(static_cast<size_t>(p.size), 0.0f);
    }
}

void AdamW::step(const std::vector<TensorRef<float>> &grads, double lr) {
    if (grads.size() != p_.size()) fail(PANGU_ERR_INTERNAL, "AdamW: gradients do not match the parameters");
    ++t_;
    const double c1 = 1.0 - std::pow(o_.beta1, static_cast<double>(t_));
    const double c2 = 1.0 - std::pow(o_.beta2, static_cast<double>(t_));
    const float b1 = static_cast<float>(o_.beta1), b2 = static_cast<float>(o_.beta2);
    const float step = static_cast<float>(lr / c1), inv_c2 = static_cast<float>(1.0 / c2);
    const float eps = static_cast<float>(o_.eps);
    for (size_t k = 0; k < p_.size(); ++k) {
        const TensorRef<float> &p = p_[k];
        if (grads[k].size != p.size) fail(PANGU_ERR_INTERNAL, "AdamW: gradient of " + p.name + " has the wrong size");
        // Decoupled decay (AdamW) on matrices; norms and biases are vectors and keep their scale.
        const float decay = p.shape.size() == 2 ? static_cast<float>(1.0 - lr * o_.weight_decay) : 1.0f;
        float *w = p.data, *m = m_[k].data(), *v = v_[k].data();
        const float *g = grads[k].data;
        for (int64_t i = 0; i < p.size; ++i) {
            m[i] = b1 * m[i] + (1 - b1) * g[i];
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
            w[i] = w[i] * decay - step * m[i] / (std::sqrt(v[i] * inv_c2) + eps);
        }
    }
}

void AdamW::restore(std::vector<std::vector<float>> m, std::vector<std::vector<float>> v, int64_t steps) {
    if (m.size() != p_.size() || v.size() != p_.size()) fail(PANGU_ERR_INTERNAL, "AdamW: moments do not match");
    for (size_t k = 0; k < p_.size(); ++k)
        if (m[k].size() != static_cast<size_t>(p_[k].size) || v[k].size() != static_cast<size_t>(p_[k].size))
            fail(PANGU_ERR_INTERNAL, "AdamW: moments of " + p_[k].name + " have the wrong size");
    m_ = std::move(m), v_ = std::move(v), t_ = steps;
}

std::vector<TensorRef<float>> trainable(Params<float> &p, Trainable tr) {
    std::vector<TensorRef<float>> out;
    for (auto &t : tensors(p, tr))
        if (t.trainable) out.push_back(t);
    return out;
}

}  // namespace pangu::train
