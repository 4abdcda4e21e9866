#include "lowbit_model.h"

#include <memory>

#include "common/common.h"
#include "model/model.h"

namespace pangu {

namespace {

// The linear layers of a block, where each reads its input, and which average-bits budget it takes.
struct Linear {
    const char *name;
    MatrixRM RefLayer::*w;
    LinearInput in;
    bool attn;
};
const Linear kLinears[] = {
    {"self_attn.q_proj.weight", &RefLayer::wq, LinearInput::QKV, true},
    {"self_attn.k_proj.weight", &RefLayer::wk, LinearInput::QKV, true},
    {"self_attn.v_proj.weight", &RefLayer::wv, LinearInput::QKV, true},
    {"self_attn.o_proj.weight", &RefLayer::wo, LinearInput::O, true},
    {"mlp.gate_proj.weight", &RefLayer::w_gate, LinearInput::GATE_UP, false},
    {"mlp.up_proj.weight", &RefLayer::w_up, LinearInput::GATE_UP, false},
    {"mlp.down_proj.weight", &RefLayer::w_down, LinearInput::DOWN, false},
};

// Each row's width: 4 at one width; from the importance scores for mixed precision (then imin and imax get
// the scores' range).
std::vector<uint8_t> row_widths(const LowbitPlan &plan, const Linear &L, const MatrixRM &w, const InputStats *st,
                                double &imin, double &imax) {
    if (!plan.mixed) return std::vector<uint8_t>(static_cast<size_t>(w.rows()), 4);
    const ImportanceParts parts = channel_importance(w, *st, plan.opt.damp);
    imin = parts.score.minCoeff();
    imax = parts.score.maxCoeff();
    if (!plan.budget) return allocate_quantile(parts.score);
    return allocate_budget(parts.score, L.attn ? plan.avg_bits_attn : plan.avg_bits_mlp);
}

// ||(W - Q) X^T||^2 / ||W X^T||^2 through H (proportional to X^T X): tr(D H D^T) / tr(W H W^T).
double output_error(const MatrixRM &w, const MatrixRM &q, const Eigen::MatrixXd &H) {
    const Eigen::MatrixXf Hf = H.cast<float>();
    const MatrixRM d = w - q;
    const double num = (d * Hf).cwiseProduct(d).cast<double>().sum();
    const double den = (w * Hf).cwiseProduct(w).cast<double>().sum();
    return den > 0 ? num / den : 0.0;
}

// The statistics of one layer's four linear inputs, from its float weights W over every window.
std::vector<std::unique_ptr<InputStats>> layer_stats(RefForward &f, const RefLayer &W) {
    std::vector<std::unique_ptr<InputStats>> st(kLinearInputs);
    st[static_cast<int>(LinearInput::QKV)] = std::make_unique<InputStats>(W.wq.cols());
    st[static_cast<int>(LinearInput::O)] = std::make_unique<InputStats>(W.wo.cols());
    st[static_cast<int>(LinearInput::GATE_UP)] = std::make_unique<InputStats>(W.w_gate.cols());
    st[static_cast<int>(LinearInput::DOWN)] = std::make_unique<InputStats>(W.w_down.cols());
    f.run_layer(W, [&](int, LinearInput p, const MatrixRM &x) { st[static_cast<int>(p)]->add(x); }, false);
    return st;
}

}  // namespace

PackedLinear pack_linear(const LowbitMatrix &q, bool mixed, bool symmetric) {
    PackedLinear p;
    p.rows = q.rows, p.cols = q.cols, p.group = q.group, p.mixed = mixed;
    p.f32_scales = q.f32_scales;
    p.perm = q.perm;
    const int64_t G = q.cols / q.group;
    p.order = mixed ? qb_row_order(q.bits) : std::vector<int32_t>();
    int64_t bytes = 0;
    for (int64_t r = 0; r < q.rows; ++r) bytes += q.cols * q.bits[static_cast<size_t>(r)] / 8;
    p.data.resize(static_cast<size_t>(bytes));
    p.scale.resize(static_cast<size_t>(q.rows * G));
    if (!symmetric) p.zero.resize(static_cast<size_t>(q.rows * G));
    if (mixed) p.bits.resize(static_cast<size_t>(q.rows));
    uint8_t *out = p.data.data();
    for (int64_t i = 0; i < q.rows; ++i) {
        const int64_t r = mixed ? p.order[static_cast<size_t>(i)] : i;
        const int b = q.bits[static_cast<size_t>(r)];
        qb_pack_row(q.level.data() + r * q.cols, q.cols, b, out);
        out += q.cols * b / 8;
        std::copy_n(q.scale.begin() + r * G, G, p.scale.begin() + i * G);
        if (!symmetric) std::copy_n(q.zero.begin() + r * G, G, p.zero.begin() + i * G);
        if (mixed) p.bits[static_cast<size_t>(i)] = static_cast<uint8_t>(b);
    }
    return p;
}

std::map<std::string, PackedLinear> quantize_lowbit(const Model &m, TokenWindows text, const LowbitPlan &plan,
                                                    const std::function<void(int, int)> &progress) {
    const bool calib = !text.windows.empty();
    if (!calib && (plan.gptq || plan.mixed))
        fail(PANGU_ERR_INVALID_ARGUMENT, "GPTQ and mixed precision need calibration text");
    std::unique_ptr<RefForward> f;
    if (calib) f = std::make_unique<RefForward>(m, std::move(text));
    std::map<std::string, PackedLinear> out;
    for (int l = 0; l < m.cfg.n_layer; ++l) {
        RefLayer W = load_ref_layer(m, l);
        if (plan.smoothing) fold_smoothing(W, (*plan.smoothing)[static_cast<size_t>(l)]);
        std::vector<std::unique_ptr<InputStats>> st;
        if (calib) st = layer_stats(*f, W);
        if (progress) progress(l, 0);
        const std::string prefix = "model.layers." + std::to_string(l) + ".";
        for (const Linear &L : kLinears) {
            MatrixRM &w = W.*(L.w);
            const InputStats *s = calib ? st[static_cast<int>(L.in)].get() : nullptr;
            const std::string name = prefix + L.name;
            double imin = 0, imax = 0;
            const std::vector<uint8_t> bits = row_widths(plan, L, w, s, imin, imax);
            const LowbitMatrix q = plan.gptq ? gptq_quantize(w, s->H, bits, plan.opt, name)
                                             : rtn_quantize(w, bits, plan.opt, name);
            PackedLinear p = pack_linear(q, plan.mixed, plan.opt.symmetric);
            p.importance_min = imin, p.importance_max = imax;
            MatrixRM deq = q.dequantize();
            if (s) p.output_error = output_error(w, deq, s->H);
            w = std::move(deq);  // the layer advances with what the checkpoint holds
            out[name] = std::move(p);
        }
        if (progress) progress(l, 1);
        if (calib) f->run_layer(W, nullptr, true);
        if (progress) progress(l, 2);
    }
    return out;
}

}  // namespace pangu
