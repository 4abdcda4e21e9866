#include "distill.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "calib.h"
#include "checkpoint.h"
#include "common/common.h"
#include "model/model.h"

namespace pangu::train {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The teacher's logits [N, V] for a batch, rows in window order: the reference forward layer by layer.
Mat<float> teacher_logits(const Model &teacher, const Windows &batch) {
    TokenWindows tw;
    tw.windows = batch;
    for (const auto &w : batch) tw.n_tokens += w.size();
    RefForward f(teacher, std::move(tw));
    for (int l = 0; l < teacher.cfg.n_layer; ++l) f.run_layer(load_ref_layer(teacher, l));
    Mat<float> z(static_cast<Eigen::Index>(f.text().n_tokens), teacher.cfg.n_vocab);
    Eigen::Index row = 0;
    for (size_t w = 0; w < batch.size(); ++w) {
        const MatrixRM lw = f.logits(w);
        z.middleRows(row, lw.rows()) = lw;
        row += lw.rows();
    }
    return z;
}

// The windows of step `step`: epochs of a shuffled order (seeded by seed and epoch), `batch` windows a step, so
// that a resumed run sees the same batches as one that never stopped.
class Batches {
public:
    Batches(const Windows &w, int batch, uint64_t seed) : w_(w), batch_(batch), seed_(seed) {}
    Windows at(int64_t step) {
        Windows out;
        const auto n = static_cast<int64_t>(w_.size());
        for (int i = 0; i < batch_; ++i) {
            const int64_t k = step * batch_ + i, epoch = k / n;
            if (epoch != epoch_) shuffle(epoch);
            out.push_back(w_[static_cast<size_t>(order_[static_cast<size_t>(k % n)])]);
        }
        return out;
    }

private:
    void shuffle(int64_t epoch) {
        order_.resize(w_.size());
        std::iota(order_.begin(), order_.end(), 0);
        std::mt19937_64 rng(seed_ * 1000003u + static_cast<uint64_t>(epoch));
        std::shuffle(order_.begin(), order_.end(), rng);
        epoch_ = epoch;
    }
    const Windows &w_;
    int batch_;
    uint64_t seed_;
    int64_t epoch_ = -1;
    std::vector<int64_t> order_;
};

int64_t tokens_of(const Windows &w) {
    int64_t n = 0;
    for (const auto &x : w) n += static_cast<int64_t>(x.size());
    return n;
}

}  // namespace

double perplexity(const Params<float> &p, const Windows &text, int batch) {
    Net<float> net(p);
    double nll = 0;
    int64_t scored = 0;
    for (size_t b = 0; b < text.size(); b += static_cast<size_t>(batch)) {
        const Windows w(text.begin() + static_cast<long>(b),
                        text.begin() + static_cast<long>(std::min(text.size(), b + static_cast<size_t>(batch))));
        Mat<float> dz;
        int64_t n = 0;
        const double mean = cross_entropy(net.forward(w), Net<float>::targets(w), 1.0, dz, false, &n);
        nll += mean * static_cast<double>(n), scored += n;
    }
    if (scored == 0) fail(PANGU_ERR_INVALID_ARGUMENT, "perplexity: no token to score (every window is one token)");
    return std::exp(nll / static_cast<double>(scored));
}

void check_same_vocabulary(const Model &teacher, const Model &student) {
    if (teacher.cfg.n_vocab != student.cfg.n_vocab)
        fail(PANGU_ERR_INVALID_ARGUMENT, "the teacher (" + teacher.dir + ") has " + std::to_string(teacher.cfg.n_vocab) +
                                             " tokens and the student (" + student.dir + ") " +
                                             std::to_string(student.cfg.n_vocab) + ": distillation needs one vocabulary");
    const int32_t d = teacher.vocab.first_difference(student.vocab);
    if (d >= 0)
        fail(PANGU_ERR_INVALID_ARGUMENT, "the teacher's and the student's tokenizers differ at token " +
                                             std::to_string(d) + " (" + teacher.dir + ", " + student.dir + ")");
}

namespace {

struct Step {
    double loss = 0, kl = 0, ce = 0, grad_norm = 0;
};

// One optimizer step's forward, losses and backward (gradients in g, not yet applied).
Step forward_backward(const Model &teacher, Net<float> &net, const Windows &w, const DistillOptions &opt,
                      Params<float> &g) {
    const Mat<float> zt = teacher_logits(teacher, w);
    const Mat<float> &zs = net.forward(w);
    Mat<float> dz;
    Step s;
    s.kl = kl_divergence(zt, zs, opt.tau, 1.0, dz, false);
    if (opt.ce_weight > 0) s.ce = cross_entropy(zs, Net<float>::targets(w), opt.ce_weight, dz, true, nullptr);
    s.loss = s.kl + opt.ce_weight * s.ce;
    zero_grads(g);
    net.backward(dz, g);
    return s;
}

// The live student and moments, not copies: a copy would double the memory of a 1B-sized run.
void save(const Params<float> &student, const AdamW &adam, const DistillOptions &opt, const Json::Value &meta,
          int64_t step) {
    save_state(student, adam.m(), adam.v(), step, meta, opt.train, opt.state_path);
}

}  // namespace

DistillResult distill(const Model &teacher, Params<float> &student, const Windows &train, const Windows &eval,
                      const DistillOptions &opt, const Json::Value &meta, const TrainState *resume,
                      const std::function<void(const DistillProgress &)> &progress,
                      const std::function<void(const EvalPoint &)> &on_eval) {
    if (train.empty()) fail(PANGU_ERR_INVALID_ARGUMENT, "distillation: no training text");
    if (opt.save_every > 0 && opt.state_path.empty()) fail(PANGU_ERR_INTERNAL, "distill: save_every needs a path");
    const int64_t warmup = opt.warmup >= 0 ? opt.warmup : opt.steps / 20;
    Net<float> net(student);
    Params<float> g = make_grads(student, opt.train);
    const std::vector<TensorRef<float>> grads = tensors(g);
    AdamW adam(trainable(student, opt.train), opt.adam);
    DistillResult r;
    r.warmup_steps = warmup;
    int64_t step = 0, last_saved = -1;
    if (resume) {
        adam.restore(resume->m, resume->v, resume->step);
        step = last_saved = r.resumed_from = resume->step;
    }
    Batches batches(train, opt.batch, opt.seed);
    const auto t0 = Clock::now();
    int64_t tokens = 0, steps_here = 0;
    auto evaluate = [&](int64_t at) {
        if (eval.empty()) return;
        r.evals.push_back({at, perplexity(student, eval, opt.eval_batch)});
        if (on_eval) on_eval(r.evals.back());
    };
    for (; step < opt.steps; ++step) {
        const Windows w = batches.at(step);
        const Step s = forward_backward(teacher, net, w, opt, g);
        const double norm = clip_grad_norm(grads, opt.clip);
        if (!std::isfinite(s.loss) || !std::isfinite(norm)) {
            const std::string last = last_saved >= 0 ? opt.state_path + " (step " + std::to_string(last_saved) + ")"
                                                     : std::string("none written");
            fail(PANGU_ERR_NUMERIC, "step " + std::to_string(step + 1) + ": the " +
                                        (std::isfinite(s.loss) ? "gradient norm" : "loss") +
                                        " is not finite; the last good checkpoint: " + last);
        }
        const double lr = lr_at(step, opt.steps, warmup, opt.lr);
        adam.step(grads, lr);
        tokens += tokens_of(w), ++steps_here, r.last_loss = s.loss;
        const double secs = since(t0);
        if (progress) {
            DistillProgress p{step + 1, opt.steps, s.loss, s.kl, s.ce, lr, norm, tokens / secs, 0};
            p.eta_s = secs / static_cast<double>(steps_here) * static_cast<double>(opt.steps - step - 1);
            progress(p);
        }
        if (opt.save_every > 0 && (step + 1) % opt.save_every == 0 && step + 1 < opt.steps) {
            save(student, adam, opt, meta, step + 1);
            last_saved = step + 1;
        }
        if (opt.eval_every > 0 && (step + 1) % opt.eval_every == 0 && step + 1 < opt.steps) evaluate(step + 1);
    }
    r.steps_done = step;
    r.seconds = since(t0);
    r.steps_per_s = r.seconds > 0 ? static_cast<double>(steps_here) / r.seconds : 0;
    r.tokens_per_s = r.seconds > 0 ? static_cast<double>(tokens) / r.seconds : 0;
    evaluate(step);
    return r;
}

}  // namespace pangu::train
