// pangu-distill: knowledge distillation of a student model (a pruned one, or any model with the teacher's
// vocabulary) from a teacher, on the CPU, without a Python stack (docs/pruning.md).
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "checkpoint.h"
#include "cli.h"
#include "common/common.h"
#include "distill.h"
#include "json_file.h"
#include "parallel.h"
#include "model/model.h"
#include "pangu/pangu.h"

namespace fs = std::filesystem;
using namespace pangu;
using namespace pangu::train;

namespace {

struct Options {
    std::string teacher, student, out, data, eval, report;
    cli::CommonOptions common;  // -t, --eval-tokens, --data-tokens
    bool jsonl = false, resume = false, force = false, quiet = false;
    int seq = 256;
    DistillOptions d;
};

int usage() {
    std::fprintf(stderr,
        "usage: pangu-distill --teacher DIR --student DIR -o OUT --data FILE [options]\n"
        "Trains the student to match the teacher's next-token distributions (KL with a temperature, plus an\n"
        "optional cross-entropy term) and writes it as a bf16 checkpoint in the same layout.\n"
        "  --data FILE        training text: JSONL (a \"text\" per line) when it ends in .jsonl, else plain text\n"
        "  --jsonl            read --data and --eval as JSONL whatever their names\n"
        "  --data-tokens N    use at most N tokens of it (default: all)\n"
        "  --steps N          optimizer steps (default 100)\n"
        "  --lr X             peak learning rate (default 5e-5), linear warm-up then linear decay to 0\n"
        "  --warmup N         warm-up steps (default 5 %% of --steps)\n"
        "  --temp T           softmax temperature of both models (default 1)\n"
        "  --ce-weight W      weight of the next-token cross-entropy added to the KL (default 0)\n"
        "  --seq L            tokens per window (default 256)\n"
        "  --batch B          windows per step (default 4)\n"
        "  --clip C           global gradient-norm limit (default 1; 0: none)\n"
        "  --weight-decay X   AdamW decay of the matrices (default 0)\n"
        "  --train WHAT       all | layers (not the embedding or head) | mlp (default all)\n"
        "  --seed N           order of the training windows (default 1)\n"
        "  --eval FILE        held-out text: perplexity at the start, every --eval-every steps and at the end\n"
        "  --eval-every N     (default: start and end only)   --eval-tokens N (default 16384)\n"
        "  --save-every N     write the training state to OUT.state every N steps (default: 10 %% of --steps)\n"
        "  --resume           continue from OUT.state (same settings) after an interrupted run\n"
        "  -t N               threads (default: one per online CPU)\n"
        "  --report FILE      a JSON report   --force  replace OUT   --quiet  no progress\n");
    return 2;
}

int usage_error(const std::string &m) { return cli::usage_error("pangu-distill", m); }

int parse_args(int argc, char **argv, Options &o) {
    const int64_t big = int64_t(1) << 40;
    int64_t save_every = -1, eval_every = 0, seed = 1, warmup = -1, seq = 256;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has = i + 1 < argc;
        const std::string v = has ? argv[i + 1] : "";
        auto bad = [&](const std::string &what) { return usage_error(a + " takes " + what + ", not '" + v + "'"); };
        if (a == "-h" || a == "--help") return usage(), 0;
        if (a == "--jsonl") { o.jsonl = true; continue; }
        if (a == "--resume") { o.resume = true; continue; }
        if (a == "--force") { o.force = true; continue; }
        if (a == "--quiet") { o.quiet = true; continue; }
        if (!has) return usage_error("unknown or incomplete option '" + a + "'");
        ++i;
        std::string takes;
        if (const int c = cli::parse_common(a, v, o.common, o.d, &takes)) {
            if (c < 0) return bad(takes);
            continue;
        }
        if (a == "--teacher") o.teacher = v;
        else if (a == "--student") o.student = v;
        else if (a == "-o") o.out = v;
        else if (a == "--data") o.data = v;
        else if (a == "--eval") o.eval = v;
        else if (a == "--report") o.report = v;
        else if (a == "--steps") { if (!cli::assign(cli::parse_int(v, 1, big), o.d.steps)) return bad("a positive whole number"); }
        else if (a == "--warmup") { if (!cli::assign(cli::parse_int(v, 0, big), warmup)) return bad("a whole number of steps"); }
        else if (a == "--seq") { if (!cli::assign(cli::parse_int(v, 2, 1 << 20), seq)) return bad("a window of at least 2 tokens"); }
        else if (a == "--clip") { if (!cli::assign(cli::parse_real(v, 0.0, 1e9), o.d.clip)) return bad("a norm >= 0"); }
        else if (a == "--weight-decay") { if (!cli::assign(cli::parse_real(v, 0.0, 1.0), o.d.adam.weight_decay)) return bad("a decay in [0, 1]"); }
        else if (a == "--seed") { if (!cli::assign(cli::parse_int(v, 0, big), seed)) return bad("a whole number"); }
        else if (a == "--eval-every") { if (!cli::assign(cli::parse_int(v, 1, big), eval_every)) return bad("a positive number of steps"); }
        else if (a == "--save-every") { if (!cli::assign(cli::parse_int(v, 1, big), save_every)) return bad("a positive number of steps"); }
        else return usage_error("unknown option '" + a + "'");
    }
    if (o.teacher.empty() || o.student.empty() || o.out.empty() || o.data.empty())
        return usage_error("--teacher DIR, --student DIR, -o OUT and --data FILE are required");
    if (warmup > o.d.steps) return usage_error("--warmup " + std::to_string(warmup) + " is more than --steps");
    if (eval_every && o.eval.empty()) return usage_error("--eval-every needs --eval FILE");
    while (o.out.size() > 1 && o.out.back() == '/') o.out.pop_back();
    o.seq = static_cast<int>(seq), o.d.warmup = warmup;
    o.d.seed = static_cast<uint64_t>(seed), o.d.eval_every = eval_every;
    o.d.save_every = save_every > 0 ? save_every : std::max<int64_t>(1, o.d.steps / 10);
    o.d.state_path = o.out + ".state";
    return -1;
}

// The settings a resumed run must share with the run it continues.
Json::Value settings(const Options &o) {
    Json::Value s;
    s["teacher"] = fs::absolute(o.teacher).lexically_normal().string();
    s["student"] = fs::absolute(o.student).lexically_normal().string();
    s["data"] = fs::absolute(o.data).lexically_normal().string();
    s["data_tokens"] = Json::Int64(o.common.data_tokens), s["seq"] = o.seq, s["batch"] = o.d.batch;
    s["steps"] = Json::Int64(o.d.steps), s["lr"] = o.d.lr, s["warmup"] = Json::Int64(o.d.warmup);
    s["temp"] = o.d.tau, s["ce_weight"] = o.d.ce_weight, s["clip"] = o.d.clip;
    s["weight_decay"] = o.d.adam.weight_decay, s["train"] = trainable_name(o.d.train);
    s["seed"] = Json::UInt64(o.d.seed);
    return s;
}

// A value as one line of JSON text. The settings are compared as text: after the state file's round trip a
// number may come back as another JSON type (the seed, written unsigned, is read back as a signed integer),
// which Json::Value's == tells apart.
std::string compact(const Json::Value &v) {
    Json::StreamWriterBuilder wb;
    wb["indentation"] = "";
    return Json::writeString(wb, v);
}

void check_same_settings(const Json::Value &saved, const Json::Value &now, const std::string &path) {
    for (const auto &k : now.getMemberNames())
        if (!saved.isMember(k) || compact(saved[k]) != compact(now[k]))
            fail(PANGU_ERR_INVALID_ARGUMENT, path + " was written by a run with another " + k + " (" +
                                                 (saved.isMember(k) ? compact(saved[k]) : "none") + ", now " +
                                                 compact(now[k]) +
                                                 "): resume with the same settings, or delete it to start again");
}

void check_paths(const Options &o) {
    if (fs::exists(o.out) && !o.force) fail(PANGU_ERR_INVALID_ARGUMENT, o.out + " exists; use --force to replace it");
    const bool state = fs::exists(o.d.state_path);
    if (o.resume && !state) fail(PANGU_ERR_FILE_NOT_FOUND, "--resume: there is no " + o.d.state_path);
    if (!o.resume && state)
        fail(PANGU_ERR_INVALID_ARGUMENT, o.d.state_path + " holds an interrupted run: --resume to continue it, or "
                                         "delete it to start again");
    for (const std::string *f : {&o.data, &o.eval})
        if (!f->empty() && !fs::is_regular_file(*f)) fail(PANGU_ERR_FILE_NOT_FOUND, *f + " is not a file");
    cli::check_report_path(o.report);
}

std::string progress_line(const DistillProgress &p) {
    char s[256];
    std::snprintf(s, sizeof s, "[%3d%%] step %lld/%lld  loss %.4f (kl %.4f)  lr %.2e  |g| %.3f  %.0f tok/s  ETA %s",
                  static_cast<int>(100.0 * p.step / p.steps), static_cast<long long>(p.step),
                  static_cast<long long>(p.steps), p.loss, p.kl, p.lr, p.grad_norm, p.tokens_per_s,
                  cli::human_secs(p.eta_s).c_str());
    return s;
}

void run(const Options &o) {
    check_paths(o);
    set_threads(o.common.threads);
    const auto teacher = Model::load(o.teacher, ModelLoadOptions{});
    const auto student_m = Model::load(o.student, ModelLoadOptions{});
    require_float(*teacher, "teacher");
    require_float(*student_m, "student");
    check_same_vocabulary(*teacher, *student_m);
    const Json::Value meta = settings(o);
    std::unique_ptr<TrainState> resume;
    Params<float> student;
    if (o.resume) {
        resume = std::make_unique<TrainState>(load_state(o.d.state_path, shape_of(*student_m), o.d.train));
        check_same_settings(resume->meta, meta, o.d.state_path);
        student = std::move(resume->params);
    } else {
        student = load_params(*student_m);
    }
    size_t n_train = 0, n_eval = 0;
    const size_t cap = o.common.data_tokens > 0 ? static_cast<size_t>(o.common.data_tokens) : SIZE_MAX;
    const Windows train = cli::read_windows(*student_m, o.data, o.jsonl, o.seq, cap, &n_train);
    const Windows eval = o.eval.empty() ? Windows{}
                                        : cli::read_windows(*student_m, o.eval, o.jsonl, o.seq,
                                                            static_cast<size_t>(o.common.eval_tokens), &n_eval);
    cli::Progress bar(o.quiet);
    if (!o.quiet)
        std::fprintf(stderr, "pangu-distill: %s -> %s, %lld steps of %d x %d tokens, %zu training tokens (%zu windows)%s\n",
                     o.teacher.c_str(), o.student.c_str(), static_cast<long long>(o.d.steps), o.d.batch, o.seq,
                     n_train, train.size(), o.resume ? (", resuming at step " + std::to_string(resume->step)).c_str() : "");
    Json::Value report;
    report["settings"] = meta;
    if (!eval.empty()) {
        const double p0 = perplexity(student, eval, o.d.eval_batch);
        report["perplexity_start"] = p0;
        if (!o.quiet) std::fprintf(stderr, "  perplexity on %s (%zu tokens): %.4f\n", o.eval.c_str(), n_eval, p0);
    }
    const DistillResult r = distill(
        *teacher, student, train, eval, o.d, meta, resume.get(),
        [&](const DistillProgress &p) { bar.update(progress_line(p)); },
        [&](const EvalPoint &e) {
            bar.done();
            if (!o.quiet) std::fprintf(stderr, "  step %lld: perplexity %.4f\n", static_cast<long long>(e.step), e.ppl);
        });
    bar.done();
    Json::Value extra;
    extra["distillation"] = meta;
    extra["distillation"]["teacher"] = fs::path(o.teacher).filename().string();
    extra["distillation"]["student"] = fs::path(o.student).filename().string();
    extra["distillation"].removeMember("data");
    save_model(student, *student_m, o.out, extra, o.force);
    std::error_code ec;
    fs::remove(o.d.state_path, ec);  // the run is complete: its checkpoint has served
    fs::remove(o.d.state_path + ".partial", ec);  // what a run killed while saving left (the writer's temporary name)
    report["steps"] = Json::Int64(r.steps_done), report["resumed_from"] = Json::Int64(r.resumed_from);
    report["warmup_steps"] = Json::Int64(r.warmup_steps);
    report["seconds"] = r.seconds, report["steps_per_s"] = r.steps_per_s, report["tokens_per_s"] = r.tokens_per_s;
    report["last_loss"] = r.last_loss;
    for (const auto &e : r.evals) {
        Json::Value p;
        p["step"] = Json::Int64(e.step), p["ppl"] = e.ppl;
        report["perplexity"].append(p);
    }
    if (!o.report.empty()) write_json_file(o.report, report);
    if (!o.quiet)
        std::fprintf(stderr, "pangu-distill: wrote %s (%lld steps in %s, %.3f steps/s, %.0f tokens/s%s)\n", o.out.c_str(),
                     static_cast<long long>(r.steps_done - r.resumed_from), cli::human_secs(r.seconds).c_str(),
                     r.steps_per_s, r.tokens_per_s,
                     r.evals.empty() ? "" : (", perplexity " + std::to_string(r.evals.back().ppl)).c_str());
}

}  // namespace

int main(int argc, char **argv) {
    Options o;
    const int rc = parse_args(argc, argv, o);
    if (rc >= 0) return rc;
    try {
        run(o);
    } catch (const Error &e) {
        std::fprintf(stderr, "pangu-distill: %s (%s)\n", e.what(), pangu_status_string(e.status()));
        return 1;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "pangu-distill: %s\n", e.what());
        return 1;
    }
    return 0;
}
