// Knowledge distillation: a student (a pruned model, or any model with the teacher's vocabulary) trained to
// match the teacher's next-token distributions, loss = tau^2 KL(softmax(z_t / tau) || softmax(z_s / tau)) +
// ce_weight * cross-entropy(z_s, next token), by AdamW with a linear warm-up and decay. The teacher runs as the
// calibration's reference forward (tools/lib/calib.h), one layer's weights widened at a time, so only the
// student is held in F32.
#pragma once

#include <json/json.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "net.h"
#include "optim.h"
#include "params.h"

namespace pangu {
class Model;
}

namespace pangu::train {

struct DistillOptions {
    int64_t steps = 100;
    double lr = 5e-5;
    int64_t warmup = -1;  // steps of linear warm-up; -1: 5 % of the steps
    double tau = 1.0;
    double ce_weight = 0.0;
    int batch = 4;        // windows a step
    double clip = 1.0;    // global gradient norm (0: none)
    AdamWOptions adam;
    Trainable train = Trainable::ALL;
    uint64_t seed = 1;    // the order of the training windows
    int64_t eval_every = 0;   // steps between evaluations (0: at the end only)
    int64_t save_every = 0;   // steps between checkpoints of the state (0: none)
    std::string state_path;   // where checkpoints go (needed with save_every)
    int eval_batch = 8;
};

// One evaluation: the student's perplexity on the held-out windows.
struct EvalPoint {
    int64_t step = 0;
    double ppl = 0;
};

struct DistillProgress {
    int64_t step = 0, steps = 0;
    double loss = 0, kl = 0, ce = 0, lr = 0, grad_norm = 0;
    double tokens_per_s = 0, eta_s = 0;
};

struct DistillResult {
    int64_t steps_done = 0;
    int64_t resumed_from = 0;  // 0: a fresh run
    int64_t warmup_steps = 0;  // as used (the default resolved)
    double seconds = 0, steps_per_s = 0, tokens_per_s = 0;
    double last_loss = 0;
    std::vector<EvalPoint> evals;
};

// The perplexity of p on the windows: exp of the mean next-token cross-entropy over every scored token.
double perplexity(const Params<float> &p, const Windows &text, int batch);

// Trains `student` in place for opt.steps steps on `train` (windows of the student's tokens). `eval` may be
// empty. With opt.save_every, the state (student, moments, step, `meta` plus the run's progress) is written to
// opt.state_path every save_every steps; `resume` (a state loaded by the caller, or null) continues from its
// step with its moments. A loss or gradient norm that is NaN or Inf stops the run: PANGU_ERR_NUMERIC naming the
// step and the last checkpoint written (the student keeps the values of that failed step's start).
// `progress` after every step, `on_eval` after every evaluation.
DistillResult distill(const Model &teacher, Params<float> &student, const Windows &train, const Windows &eval,
                      const DistillOptions &opt, const Json::Value &meta, const struct TrainState *resume,
                      const std::function<void(const DistillProgress &)> &progress = nullptr,
                      const std::function<void(const EvalPoint &)> &on_eval = nullptr);

// Checks that a student can learn from this teacher: the same vocabulary (size and tokenizer pieces). Throws
// PANGU_ERR_INVALID_ARGUMENT naming what differs.
void check_same_vocabulary(const Model &teacher, const Model &student);

}  // namespace pangu::train
