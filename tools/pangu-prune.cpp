// pangu-prune: structured pruning of the MLP neurons of a checkpoint by Taylor importance (or magnitude or
// Wanda), in rounds on a linear schedule, widths kept multiples of an alignment, optionally distilling from the
// unpruned model between rounds (docs/pruning.md).
#include <unistd.h>

#include <chrono>
#include <cmath>
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
#include "prune.h"

namespace fs = std::filesystem;
using namespace pangu;
using namespace pangu::train;

namespace {

struct Options {
    std::string in, out, calib, data, eval, report;
    cli::CommonOptions common;  // -t, --eval-tokens, --data-tokens
    bool jsonl = false, force = false, quiet = false;
    double ratio = 0;
    int rounds = 5, align = 256, min_width = 0, ctx = 256, score_batch = 0;
    int64_t calib_tokens = 16384;
    Score score = Score::TAYLOR;
    Spread spread = Spread::GLOBAL;
    DistillOptions d;  // d.steps: --distill-steps per round (0: none)
};

int usage() {
    std::fprintf(stderr,
        "usage: pangu-prune -i IN -o OUT --calib FILE --ratio R [options]\n"
        "Removes the fraction R of the MLP neurons (rows of gate/up, columns of down) by importance.\n"
        "  --ratio R          share of MLP neurons to remove, in (0, 1)\n"
        "  --rounds N         rounds on a linear schedule, re-scoring after each (default 5)\n"
        "  --score S          taylor (|w dL/dw|, default) | magnitude (|w|) | wanda (|w| ||x||)\n"
        "  --align A          every layer's width a multiple of A (default 256; pangu-tiny: 64)\n"
        "  --spread S         global (cheapest units of any layer first, default) | uniform (every layer alike)\n"
        "  --min-width N      no layer narrower than N (default a quarter of its width)\n"
        "  --calib FILE       scoring text: JSONL when it ends in .jsonl (or --jsonl), else plain text\n"
        "  --calib-tokens N   (default 16384)  --calib-ctx L  tokens a window (default 256)\n"
        "  --score-batch B    windows per gradient for taylor (default 0: one gradient of all the text)\n"
        "  --distill-steps S  KL distillation from the unpruned model after each round (default 0)\n"
        "  --data FILE        distillation text (default the --calib file)  --data-tokens N\n"
        "  --lr X --temp T --batch B --train all|layers|mlp --ce-weight W   distillation settings (as pangu-distill)\n"
        "  --eval FILE        held-out text: perplexity before and after every round  --eval-tokens N (16384)\n"
        "  -t N               threads (default: one per online CPU)\n"
        "  --report FILE      a JSON report   --force  replace OUT   --quiet  no progress\n");
    return 2;
}

int usage_error(const std::string &m) { return cli::usage_error("pangu-prune", m); }

int parse_args(int argc, char **argv, Options &o) {
    const int64_t big = int64_t(1) << 40;
    bool ratio = false;
    o.d.steps = 0, o.d.batch = 4;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has = i + 1 < argc;
        const std::string v = has ? argv[i + 1] : "";
        auto bad = [&](const std::string &what) { return usage_error(a + " takes " + what + ", not '" + v + "'"); };
        if (a == "-h" || a == "--help") return usage(), 0;
        if (a == "--jsonl") { o.jsonl = true; continue; }
        if (a == "--force") { o.force = true; continue; }
        if (a == "--quiet") { o.quiet = true; continue; }
        if (!has) return usage_error("unknown or incomplete option '" + a + "'");
        ++i;
        std::string takes;
        if (const int c = cli::parse_common(a, v, o.common, o.d, &takes)) {
            if (c < 0) return bad(takes);
            continue;
        }
        if (a == "-i") o.in = v;
        else if (a == "-o") o.out = v;
        else if (a == "--calib") o.calib = v;
        else if (a == "--data") o.data = v;
        else if (a == "--eval") o.eval = v;
        else if (a == "--report") o.report = v;
        else if (a == "--ratio") {
            const auto r = cli::parse_real(v, 0.0, 1.0, true);
            if (!r || *r >= 1.0) return bad("a share of the neurons in (0, 1)");
            o.ratio = *r, ratio = true;
        }
        else if (a == "--rounds") { if (!cli::assign(cli::parse_int(v, 1, 100), o.rounds)) return bad("1 to 100 rounds"); }
        else if (a == "--score") {
            if (v == "taylor") o.score = Score::TAYLOR;
            else if (v == "magnitude") o.score = Score::MAGNITUDE;
            else if (v == "wanda") o.score = Score::WANDA;
            else return bad("taylor, magnitude or wanda");
        }
        else if (a == "--spread") {
            if (v == "global") o.spread = Spread::GLOBAL;
            else if (v == "uniform") o.spread = Spread::UNIFORM;
            else return bad("global or uniform");
        }
        else if (a == "--align") { if (!cli::assign(cli::parse_int(v, 1, 1 << 20), o.align)) return bad("a positive number of neurons"); }
        else if (a == "--min-width") { if (!cli::assign(cli::parse_int(v, 1, 1 << 20), o.min_width)) return bad("a positive number of neurons"); }
        else if (a == "--calib-tokens") { if (!cli::assign(cli::parse_int(v, 2, big), o.calib_tokens)) return bad("a number of tokens >= 2"); }
        else if (a == "--calib-ctx") { if (!cli::assign(cli::parse_int(v, 2, 1 << 20), o.ctx)) return bad("a window of at least 2 tokens"); }
        else if (a == "--score-batch") { if (!cli::assign(cli::parse_int(v, 0, 1 << 30), o.score_batch)) return bad("a number of windows (0: all)"); }
        else if (a == "--distill-steps") { if (!cli::assign(cli::parse_int(v, 0, big), o.d.steps)) return bad("a whole number of steps"); }
        else return usage_error("unknown option '" + a + "'");
    }
    if (o.in.empty() || o.out.empty() || !ratio) return usage_error("-i IN, -o OUT and --ratio R are required");
    if (o.calib.empty() && (o.score != Score::MAGNITUDE || o.d.steps > 0))
        return usage_error("--calib FILE is required (scoring and distillation read it)");
    if (o.calib_tokens < o.ctx)
        return usage_error("--calib-tokens " + std::to_string(o.calib_tokens) + " is less than one window of --calib-ctx " +
                           std::to_string(o.ctx));
    while (o.out.size() > 1 && o.out.back() == '/') o.out.pop_back();
    if (o.data.empty()) o.data = o.calib;
    return -1;
}

void check_paths(const Options &o) {
    if (fs::exists(o.out) && !o.force) fail(PANGU_ERR_INVALID_ARGUMENT, o.out + " exists; use --force to replace it");
    for (const std::string *f : {&o.calib, &o.data, &o.eval})
        if (!f->empty() && !fs::is_regular_file(*f)) fail(PANGU_ERR_FILE_NOT_FOUND, *f + " is not a file");
    cli::check_report_path(o.report);
}

struct Text {
    Windows calib, data, eval;
    size_t calib_tokens = 0, data_tokens = 0, eval_tokens = 0;
};

Text read_text(const Options &o, const Model &m) {
    Text t;
    if (!o.calib.empty())
        t.calib = cli::read_windows(m, o.calib, o.jsonl, o.ctx, static_cast<size_t>(o.calib_tokens), &t.calib_tokens);
    if (o.d.steps > 0) {
        const size_t cap = o.common.data_tokens > 0 ? static_cast<size_t>(o.common.data_tokens) : SIZE_MAX;
        t.data = cli::read_windows(m, o.data, o.jsonl, o.ctx, cap, &t.data_tokens);
    }
    if (!o.eval.empty())
        t.eval = cli::read_windows(m, o.eval, o.jsonl, o.ctx, static_cast<size_t>(o.common.eval_tokens), &t.eval_tokens);
    return t;
}

Json::Value widths_json(const Shape &s) {
    Json::Value w(Json::arrayValue);
    for (int f : s.n_ff) w.append(f);
    return w;
}

// A number as the user would write it ("0.01", not std::to_string's "0.010000").
std::string real_text(double x) {
    char s[32];
    std::snprintf(s, sizeof s, "%g", x);
    return s;
}

int64_t total_width(const Shape &s) {
    int64_t n = 0;
    for (int f : s.n_ff) n += f;
    return n;
}

// One round: score, plan, cut, distil, evaluate. Returns the round's report.
Json::Value prune_round(const Options &o, const Model &teacher, const Text &text, Params<float> &p, int round,
                        int64_t original, const std::vector<int> &floor) {
    const auto t0 = std::chrono::steady_clock::now();
    cli::Progress bar(o.quiet);
    const double share = o.ratio * round / o.rounds;
    const auto target = static_cast<int64_t>(std::llround(static_cast<double>(original) * (1.0 - share)));
    const NeuronScores s = score_neurons(p, o.score, text.calib, o.score_batch, [&](size_t done, size_t all) {
        bar.update("round " + std::to_string(round) + ": scoring " + std::to_string(done) + "/" + std::to_string(all) +
                   " windows");
    });
    bar.done();
    const auto keep = plan_keep(s, target, o.align, floor, o.spread);
    Json::Value r;
    r["round"] = round, r["target_share"] = share, r["target_width"] = Json::Int64(target);
    for (size_t l = 0; l < s.size(); ++l) {
        const ScoreStats st = score_stats(s[l], keep[l]);
        Json::Value L;
        L["width_before"] = static_cast<int>(s[l].size()), L["width"] = static_cast<int>(keep[l].size());
        L["score_min"] = st.min, L["score_median"] = st.median, L["score_mean"] = st.mean, L["score_max"] = st.max;
        L["removed_score_share"] = st.removed_share;
        r["layers"].append(L);
    }
    apply_keep(p, keep);
    r["widths"] = widths_json(p.shape), r["width"] = Json::Int64(total_width(p.shape));
    r["seconds_scoring"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (o.d.steps > 0) {
        const DistillResult d = distill(teacher, p, text.data, Windows{}, o.d, Json::Value{}, nullptr,
                                        [&](const DistillProgress &pr) {
                                            char line[160];
                                            std::snprintf(line, sizeof line, "round %d: distilling step %lld/%lld, kl %.4f, %.0f tok/s, ETA %s",
                                                          round, static_cast<long long>(pr.step), static_cast<long long>(pr.steps),
                                                          pr.kl, pr.tokens_per_s, cli::human_secs(pr.eta_s).c_str());
                                            bar.update(line);
                                        });
        bar.done();
        r["distill_steps"] = Json::Int64(d.steps_done), r["distill_seconds"] = d.seconds, r["distill_last_kl"] = d.last_loss;
    }
    if (!text.eval.empty()) r["perplexity"] = perplexity(p, text.eval, 8);
    r["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
}

void print_round(const Options &o, const Json::Value &r, int64_t original) {
    if (o.quiet) return;
    std::string widths;
    for (const auto &w : r["widths"]) widths += (widths.empty() ? "" : " ") + std::to_string(w.asInt());
    std::fprintf(stderr, "round %d: %.1f %% removed (%lld of %lld neurons), widths %s", r["round"].asInt(),
                 100.0 * (1.0 - r["width"].asDouble() / static_cast<double>(original)),
                 static_cast<long long>(original - r["width"].asInt64()), static_cast<long long>(original), widths.c_str());
    if (r.isMember("perplexity")) std::fprintf(stderr, ", perplexity %.4f", r["perplexity"].asDouble());
    std::fprintf(stderr, " (%.1f s)\n", r["seconds"].asDouble());
}

void run(const Options &o) {
    check_paths(o);
    set_threads(o.common.threads);
    const auto model = Model::load(o.in, ModelLoadOptions{});
    Params<float> p = load_params(*model);
    const Text text = read_text(o, *model);
    const int64_t original = total_width(p.shape);
    std::vector<int> floor;
    for (int f : p.shape.n_ff) floor.push_back(o.min_width > 0 ? o.min_width : f / 4);
    for (size_t l = 0; l < floor.size(); ++l)
        if (o.align > p.shape.n_ff[l])
            fail(PANGU_ERR_INVALID_ARGUMENT, "--align " + std::to_string(o.align) + " is larger than layer " +
                                                 std::to_string(l) + "'s width " + std::to_string(p.shape.n_ff[l]));
    Json::Value report;
    report["input"] = o.in, report["score"] = score_name(o.score), report["ratio"] = o.ratio;
    report["rounds"] = o.rounds, report["align"] = o.align, report["spread"] = o.spread == Spread::GLOBAL ? "global" : "uniform";
    report["calibration_tokens"] = Json::UInt64(text.calib_tokens), report["widths_before"] = widths_json(p.shape);
    if (!o.quiet)
        std::fprintf(stderr, "pangu-prune: %s, %d layers, %lld MLP neurons; removing %.1f %% by %s in %d rounds (align %d)\n",
                     o.in.c_str(), p.shape.n_layer(), static_cast<long long>(original), 100 * o.ratio, score_name(o.score),
                     o.rounds, o.align);
    if (!text.eval.empty()) {
        report["perplexity_before"] = perplexity(p, text.eval, 8);
        if (!o.quiet)
            std::fprintf(stderr, "  perplexity on %s (%zu tokens): %.4f\n", o.eval.c_str(), text.eval_tokens,
                         report["perplexity_before"].asDouble());
    }
    for (int r = 1; r <= o.rounds; ++r) {
        report["round"].append(prune_round(o, *model, text, p, r, original, floor));
        print_round(o, report["round"][r - 1], original);
    }
    if (total_width(p.shape) == original)
        fail(PANGU_ERR_INVALID_ARGUMENT, "--ratio " + real_text(o.ratio) + " removes less than half of one --align " +
                                             std::to_string(o.align) + " unit of neurons: nothing was removed");
    Json::Value extra;
    extra["pruning"]["method"] = score_name(o.score), extra["pruning"]["ratio"] = o.ratio;
    extra["pruning"]["removed"] = 1.0 - static_cast<double>(total_width(p.shape)) / static_cast<double>(original);
    extra["pruning"]["rounds"] = o.rounds, extra["pruning"]["align"] = o.align;
    extra["pruning"]["distill_steps_per_round"] = Json::Int64(o.d.steps);
    extra["pruning"]["original_intermediate_size"] = model->cfg.n_ff;
    save_model(p, *model, o.out, extra, o.force);
    report["widths"] = widths_json(p.shape), report["removed"] = extra["pruning"]["removed"];
    if (!o.report.empty()) write_json_file(o.report, report);
    if (!o.quiet) std::fprintf(stderr, "pangu-prune: wrote %s\n", o.out.c_str());
}

}  // namespace

int main(int argc, char **argv) {
    Options o;
    const int rc = parse_args(argc, argv, o);
    if (rc >= 0) return rc;
    try {
        run(o);
    } catch (const Error &e) {
        std::fprintf(stderr, "pangu-prune: %s (%s)\n", e.what(), pangu_status_string(e.status()));
        return 1;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "pangu-prune: %s\n", e.what());
        return 1;
    }
    return 0;
}
