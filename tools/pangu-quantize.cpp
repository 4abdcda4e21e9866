// pangu-quantize: turns an openPangu-Embedded checkpoint (F32, F16 or BF16 safetensors, HF layout) into a
// quantized checkpoint that libpangu_c loads memory-mapped and standard safetensors readers can open.
// Options: usage() below; schemes and formats: docs/quantization.md.
//
// Schemes:
//  - w8a16 (default): every linear layer (q/k/v/o, gate/up/down) becomes an I8 tensor "<name>.weight" plus an
//    F32 tensor "<name>.weight_scale" with one scale per output channel, scale = max|W_row| / 127; the
//    activations stay 16-bit.
//  - w8a8: the same weights; config.json says activation_dtype int8, so the runtime quantizes each matmul
//    input row to int8 with a dynamic scale.
//  - w4a8: 4-bit linear weights, U8 "<name>.weight" [rows, cols / 2] packed as PGD_I4 (src/device/device.h)
//    with one scale per group of G columns (--group, default 128), scale = max|W_group| / 7, stored F16
//    "<name>.weight_scale" [rows, cols / G] (F32 for a tensor whose scales F16 cannot hold); int8 activations.
//  - w4a16 and mixed (and w4a8 with --method gptq, --asym or --act-order) take the low-bit path
//    (tools/lib/lowbit_model.h): layer by layer over the calibration text, each layer's inputs observed once
//    the earlier layers are quantized, then round-to-nearest or GPTQ at 4 bits, or at 2, 3, 4, 6 or 8 bits per
//    output channel chosen by a five-part importance score (mixed; PGD_QB rows stored by width).
// Norms and biases stay 16-bit (BF16, or F16 when the input is F16). The embedding table and the head stay
// 16-bit unless --quantize-embeddings, which makes them int8 per row (never 4-bit).
//
// --smooth ALPHA (w8a8, w4a8) applies SmoothQuant before quantizing: the fp32 model runs over the --calib text
// (tools/lib/calib.h), the largest |x| of each input channel of q/k/v and of gate/up is recorded, and per
// channel s_j = max|X_j|^ALPHA / max|W_j|^(1-ALPHA) divides the preceding RMSNorm weight (written F32) and
// multiplies the weight columns: the same function, with the activations' outlier channels moved into the
// weights.
//
// --eval FILE reports the perplexity of the input and of the output on FILE, measured by pangu-perplexity (the
// program of that name beside this one) on the same text and windows.
//
// config.json gains a quantization_config; the tokenizer files are copied. The output is written under a
// temporary name and renamed into place only when complete, so an interrupted run never leaves a checkpoint
// that looks valid.
#include <json/json.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "calib.h"
#include "json_file.h"
#include "lowbit_model.h"
#include "output_dir.h"
#include "common/common.h"
#include "model/model.h"
#include "quantize.h"
#include "safetensors_writer.h"

namespace fs = std::filesystem;
using namespace pangu;

namespace {

bool ends_with(const std::string &s, const std::string &suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

bool is_linear(const std::string &name) {
    for (const char *p : {"q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight", "gate_proj.weight",
                          "up_proj.weight", "down_proj.weight"})
        if (ends_with(name, std::string(".") + p)) return true;
    return false;
}

bool is_embedding(const std::string &name) {
    return name == "model.embed_tokens.weight" || name == "lm_head.weight";
}

int usage() {
    std::cerr << "usage: pangu-quantize -i IN_DIR -o OUT_DIR [--scheme w8a16|w8a8|w4a8|w4a16|mixed] [--group G]\n"
                 "                      [--method rtn|gptq] [--sym|--asym] [--act-order] [--damp D]\n"
                 "                      [--alloc budget|quantile] [--avg-bits B] [--avg-bits-attn B] [--avg-bits-mlp B]\n"
                 "                      [--quantize-embeddings] [--force] [--quiet] [--report FILE.json]\n"
                 "                      [--calib FILE [--calib-jsonl] [--calib-tokens N] [--calib-ctx C]] [--smooth ALPHA]\n"
                 "                      [--eval FILE [--eval-jsonl] [--eval-tokens N] [--eval-ctx C]]\n"
                 "  Writes a quantized checkpoint: int8, 4-bit or mixed 2-8-bit linear weights, 16-bit norms/biases.\n"
                 "  --scheme S             w8a16 (default): int8 weights, one scale per output channel, 16-bit activations\n"
                 "                         w8a8: the same weights, int8 activations (dynamic per-row scales at run time)\n"
                 "                         w4a8: 4-bit weights, one F16 scale per group of G columns, int8 activations\n"
                 "                         w4a16: 4-bit weights in groups (zero points unless --sym), 16-bit activations\n"
                 "                         mixed: 2, 3, 4, 6 or 8 bits per output channel by importance, 16-bit activations\n"
                 "  --group G              low-bit group size: a multiple of 32 from 32 to 4096 (default 128); every\n"
                 "                         linear layer's width must be a multiple of 64 and of G\n"
                 "  --method M             low-bit: rtn (round to nearest) or gptq (error compensation from the\n"
                 "                         calibration inputs' Hessian); default gptq with --calib, else rtn\n"
                 "  --sym | --asym         low-bit: symmetric groups, or a zero point per group (default: --asym,\n"
                 "                         --sym for w4a8)\n"
                 "  --act-order            GPTQ: columns in order of decreasing Hessian diagonal, the order stored\n"
                 "  --damp D               GPTQ: D times the mean Hessian diagonal added to it (default 0.01)\n"
                 "  --alloc A              mixed: budget (default; greedy upgrades to the average width) or quantile\n"
                 "                         (five equal bands of 2, 3, 4, 6, 8 bits by importance)\n"
                 "  --avg-bits B           mixed, budget: average width of every layer's channels (default 4)\n"
                 "  --avg-bits-attn B      ... of q/k/v/o only;  --avg-bits-mlp B: of gate/up/down only\n"
                 "  --quantize-embeddings  also quantize the embedding table and head per row (int8)\n"
                 "  --calib FILE           calibration text for GPTQ, mixed and --smooth (text, or JSONL with --calib-jsonl)\n"
                 "  --calib-jsonl          the --calib FILE is JSONL: its \"text\" fields\n"
                 "  --calib-tokens N       calibration tokens (default 16384)\n"
                 "  --calib-ctx C          calibration window length in tokens (default 256)\n"
                 "  --smooth ALPHA         SmoothQuant with migration strength ALPHA in [0, 1] (typical 0.5), folded\n"
                 "                         into the norms and weights before quantizing (w8a8, w4a8; needs --calib)\n"
                 "  --report FILE.json     the summary (widths, bytes, per-layer figures, perplexity) as JSON\n"
                 "  --force                replace OUT_DIR if it exists\n"
                 "  --quiet                no progress output\n"
                 "  --eval FILE            report the perplexity of IN_DIR and OUT_DIR on FILE (pangu-perplexity)\n"
                 "  --eval-jsonl           FILE is JSONL: its \"text\" fields\n"
                 "  --eval-tokens N        tokens scored (default 16384)\n"
                 "  --eval-ctx C           window length in tokens (default 256)\n";
    return 2;
}

// A usage error: the message, then the usage; status 2.
int usage_error(const std::string &msg) {
    std::cerr << "pangu-quantize: " << msg << "\n";
    return usage();
}

std::string human(double bytes) {
    char b[32];
    if (bytes >= 1e9) std::snprintf(b, sizeof b, "%.2f GB", bytes / 1e9);
    else if (bytes >= 1e6) std::snprintf(b, sizeof b, "%.2f MB", bytes / 1e6);
    else std::snprintf(b, sizeof b, "%.0f B", bytes);
    return b;
}

struct Options {
    std::string in, out;
    std::string scheme = "w8a16";
    int group = 128;
    bool group_given = false;
    bool quant_embed = false, force = false, quiet = false;
    std::string eval;  // --eval FILE
    bool eval_jsonl = false;
    std::string eval_tokens = "16384", eval_ctx = "256";
    std::string calib;  // --calib FILE
    bool calib_jsonl = false;
    long calib_tokens = 16384, calib_ctx = 256;
    double smooth = -1;  // --smooth ALPHA; < 0: none
    // Low-bit schemes (w4a8, w4a16, mixed).
    std::string method;          // rtn | gptq ("" until parse_args decides)
    bool symmetric = true, act_order = false;
    double damp = 0.01;
    std::string alloc = "budget";  // mixed: budget | quantile
    double avg_bits_attn = 4.0, avg_bits_mlp = 4.0;
    bool avg_bits_given = false;
    std::string report;          // --report FILE.json
    bool w4() const { return scheme == "w4a8" || scheme == "w4a16"; }
    bool mixed() const { return scheme == "mixed"; }
    bool lowbit() const { return w4() || mixed(); }
    bool int8_act() const { return scheme == "w8a8" || scheme == "w4a8"; }
    // Whether the linears go through the layer-by-layer low-bit path (quantize_lowbit) rather than add_q4's
    // plain round-to-nearest, which stays the w4a8 default.
    bool lowbit_path() const {
        return lowbit() && (mixed() || scheme == "w4a16" || method == "gptq" || !symmetric || act_order);
    }
};

bool is_count(const std::string &s) {
    return !s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos && std::stol(s) > 0;
}

// A number in [lo, hi] for `flag`, or NaN.
double parse_number(const std::string &v, double lo, double hi) {
    char *end = nullptr;
    const double d = std::strtod(v.c_str(), &end);
    return end != v.c_str() && *end == '\0' && d >= lo && d <= hi ? d : NAN;
}

// The low-bit flags (--method, --sym/--asym, --act-order, --damp, --alloc, --avg-bits*): -1 to go on, or 2.
int parse_lowbit_args(Options &o, const std::string &sym, const std::string &damp, bool alloc_given,
                      const std::string &avg, const std::string &avg_attn, const std::string &avg_mlp) {
    const bool any = !o.method.empty() || !sym.empty() || o.act_order || !damp.empty();
    if (any && !o.lowbit())
        return usage_error("--method, --sym, --asym, --act-order and --damp apply to --scheme w4a8, w4a16 and mixed");
    if ((alloc_given || !avg.empty() || !avg_attn.empty() || !avg_mlp.empty()) && !o.mixed())
        return usage_error("--alloc and --avg-bits* apply to --scheme mixed");
    if (!o.method.empty() && o.method != "rtn" && o.method != "gptq")
        return usage_error("--method takes rtn or gptq, not '" + o.method + "'");
    if (!o.lowbit()) return -1;
    if (o.method.empty()) o.method = o.calib.empty() ? "rtn" : "gptq";
    if (o.method == "rtn" && (o.act_order || !damp.empty()))
        return usage_error("--act-order and --damp are GPTQ's: they need --method gptq (and --calib FILE)");
    o.symmetric = sym.empty() ? o.scheme == "w4a8" : sym == "sym";  // zero points are the low-bit default
    if (!damp.empty() && !((o.damp = parse_number(damp, 0.0, 1.0)) > 0.0))
        return usage_error("--damp takes a fraction of the mean Hessian diagonal in (0, 1], not '" + damp + "'");
    if (o.alloc != "budget" && o.alloc != "quantile")
        return usage_error("--alloc takes budget or quantile, not '" + o.alloc + "'");
    for (const std::string *v : {&avg, &avg_attn, &avg_mlp})
        if (!v->empty() && std::isnan(parse_number(*v, 2.0, 8.0)))
            return usage_error("--avg-bits* take an average width from 2 to 8 bits, not '" + *v + "'");
    o.avg_bits_given = !avg.empty() || !avg_attn.empty() || !avg_mlp.empty();
    if (o.avg_bits_given && o.alloc == "quantile")
        return usage_error("--alloc quantile gives five equal bands of 2, 3, 4, 6 and 8 bits (4.6 on average); "
                           "--avg-bits* need --alloc budget");
    if (!avg.empty()) o.avg_bits_attn = o.avg_bits_mlp = parse_number(avg, 2.0, 8.0);
    if (!avg_attn.empty()) o.avg_bits_attn = parse_number(avg_attn, 2.0, 8.0);
    if (!avg_mlp.empty()) o.avg_bits_mlp = parse_number(avg_mlp, 2.0, 8.0);
    return -1;
}

// Returns -1 to go on, or the exit status: 0 after --help, 2 after a usage error.
int parse_args(int argc, char **argv, Options &o) {
    bool calib_flags = false, alloc_given = false;
    std::string group, smooth, calib_tokens, calib_ctx, sym, damp, avg, avg_attn, avg_mlp;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-i" && i + 1 < argc) o.in = argv[++i];
        else if (a == "-o" && i + 1 < argc) o.out = argv[++i];
        else if (a == "--scheme" && i + 1 < argc) o.scheme = argv[++i];
        else if (a == "--group" && i + 1 < argc) group = argv[++i], o.group_given = true;
        else if (a == "--quantize-embeddings") o.quant_embed = true;
        else if (a == "--force") o.force = true;
        else if (a == "--quiet") o.quiet = true;
        else if (a == "--eval" && i + 1 < argc) o.eval = argv[++i];
        else if (a == "--eval-jsonl") o.eval_jsonl = true;
        else if (a == "--eval-tokens" && i + 1 < argc) o.eval_tokens = argv[++i];
        else if (a == "--eval-ctx" && i + 1 < argc) o.eval_ctx = argv[++i];
        else if (a == "--calib" && i + 1 < argc) o.calib = argv[++i];
        else if (a == "--calib-jsonl") o.calib_jsonl = calib_flags = true;
        else if (a == "--calib-tokens" && i + 1 < argc) calib_tokens = argv[++i], calib_flags = true;
        else if (a == "--calib-ctx" && i + 1 < argc) calib_ctx = argv[++i], calib_flags = true;
        else if (a == "--smooth" && i + 1 < argc) smooth = argv[++i];
        else if (a == "--method" && i + 1 < argc) o.method = argv[++i];
        else if (a == "--sym") sym = "sym";
        else if (a == "--asym") sym = "asym";
        else if (a == "--act-order") o.act_order = true;
        else if (a == "--damp" && i + 1 < argc) damp = argv[++i];
        else if (a == "--alloc" && i + 1 < argc) o.alloc = argv[++i], alloc_given = true;
        else if (a == "--avg-bits" && i + 1 < argc) avg = argv[++i];
        else if (a == "--avg-bits-attn" && i + 1 < argc) avg_attn = argv[++i];
        else if (a == "--avg-bits-mlp" && i + 1 < argc) avg_mlp = argv[++i];
        else if (a == "--report" && i + 1 < argc) o.report = argv[++i];
        else if (a == "-h" || a == "--help") return usage(), 0;
        else return usage_error("unknown or incomplete option '" + a + "'");
    }
    if (o.in.empty() || o.out.empty()) return usage_error("-i IN_DIR and -o OUT_DIR are required");
    if (!is_count(o.eval_tokens) || !is_count(o.eval_ctx))
        return usage_error("--eval-tokens and --eval-ctx take positive integers");
    if (o.scheme != "w8a16" && o.scheme != "w8a8" && o.scheme != "w4a8" && o.scheme != "w4a16" && o.scheme != "mixed")
        return usage_error("unknown --scheme '" + o.scheme + "' (w8a16, w8a8, w4a8, w4a16 or mixed)");
    if (const int rc = parse_lowbit_args(o, sym, damp, alloc_given, avg, avg_attn, avg_mlp); rc >= 0) return rc;
    if (o.group_given) {
        if (!o.lowbit())
            return usage_error("--group applies to --scheme w4a8, w4a16 and mixed (" + o.scheme + " has one scale per row)");
        const bool digits = !group.empty() && group.size() <= 9 && group.find_first_not_of("0123456789") == std::string::npos;
        if (!digits || !i4_group_ok(std::stol(group)))
            return usage_error("--group takes a multiple of 32 from " + std::to_string(kI4MinGroup) + " to " +
                               std::to_string(kI4MaxGroup) + ", not '" + group + "'");
        o.group = static_cast<int>(std::stol(group));
    }
    if (!calib_tokens.empty()) {
        if (!is_count(calib_tokens)) return usage_error("--calib-tokens takes a positive integer, not '" + calib_tokens + "'");
        o.calib_tokens = std::stol(calib_tokens);
    }
    if (!calib_ctx.empty()) {
        if (!is_count(calib_ctx) || std::stol(calib_ctx) < 2)
            return usage_error("--calib-ctx takes an integer of at least 2, not '" + calib_ctx + "'");
        o.calib_ctx = std::stol(calib_ctx);
    }
    if (!smooth.empty()) {
        char *end = nullptr;
        const double v = std::strtod(smooth.c_str(), &end);
        if (end == smooth.c_str() || *end != '\0' || !(v >= 0.0 && v <= 1.0))
            return usage_error("--smooth takes a migration strength from 0 to 1 (typically 0.5), not '" + smooth + "'");
        o.smooth = v;
        if (o.calib.empty()) return usage_error("--smooth needs calibration text: --calib FILE");
        if (!o.int8_act())
            return usage_error("--smooth applies to --scheme w8a8 and w4a8 (int8 activations), not " + o.scheme);
    } else if (!o.calib.empty() && !o.lowbit_path()) {
        return usage_error("--calib is used by --smooth ALPHA and by --scheme w4a16, mixed and w4a8 --method gptq, "
                           "none of which is given");
    }
    if ((o.method == "gptq" || o.mixed()) && o.calib.empty())
        return usage_error(std::string(o.mixed() ? "--scheme mixed" : "--method gptq") +
                           " needs calibration text: --calib FILE (e.g. --calib ../shared/data/dev.jsonl --calib-jsonl)");
    if (calib_flags && o.calib.empty()) return usage_error("--calib-jsonl, --calib-tokens and --calib-ctx need --calib FILE");
    if (!o.calib.empty() && o.calib_tokens < o.calib_ctx)
        return usage_error("--calib-tokens " + std::to_string(o.calib_tokens) + " is less than one window of --calib-ctx " +
                           std::to_string(o.calib_ctx));
    while (o.out.size() > 1 && o.out.back() == '/') o.out.pop_back();
    return -1;
}

// What the low-bit path made, summed over its linears: for the report and config.json.
struct LowbitSummary {
    int64_t channels = 0, weights = 0;
    int64_t width_channels[9] = {}, width_weights[9] = {};  // by width in bits
    double avg_bits = 0;                                     // per weight, over every linear
    uint64_t bytes = 0;                                      // packed rows and their scales, zeros and orders
};

// The largest quantization error over all tensors, and what the 4-bit scales became; the writer's fill
// functions merge into it.
struct Totals {
    QuantError err;
    LowbitSummary lowbit;  // the low-bit path's linears
    std::vector<std::string> f32_scales;  // 4-bit tensors whose scales F16 cannot hold
    std::mutex mu;
};

// pangu-perplexity, the program beside this one.
std::string perplexity_program() {
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) fail(PANGU_ERR_IO, "--eval: cannot find this program's directory");
    self[n] = '\0';
    const fs::path p = fs::path(self).parent_path() / "pangu-perplexity";
    if (access(p.c_str(), X_OK) != 0) fail(PANGU_ERR_FILE_NOT_FOUND, "--eval: " + p.string() + " is not there");
    return p.string();
}

// The perplexity of model `dir` on the --eval text: pangu-perplexity's --json output, read from a pipe.
double perplexity(const Options &o, const std::string &dir) {
    std::vector<std::string> args = {perplexity_program(), "-m", dir, "-f", o.eval, "-c", o.eval_ctx,
                                     "--max-tokens", o.eval_tokens, "--json"};
    if (o.eval_jsonl) args.push_back("--jsonl");
    std::vector<char *> argv;
    for (auto &a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // Its progress lines go to a file, shown only if it fails.
    char log[] = "/tmp/pangu-quantize-eval-XXXXXX";
    const int log_fd = mkstemp(log);
    int fd[2];
    if (log_fd < 0 || pipe(fd) != 0) fail(PANGU_ERR_IO, "--eval: cannot make a pipe or a temporary file");
    unlink(log);
    const pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 1);
        dup2(log_fd, 2);
        close(fd[0]);
        close(fd[1]);
        execv(argv[0], argv.data());
        _exit(127);
    }
    close(fd[1]);
    std::string out;
    char buf[4096];
    for (ssize_t r; (r = read(fd[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(r));
    close(fd[0]);
    int status = 0;
    const bool ok = pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok) {  // its messages, then ours
        lseek(log_fd, 0, SEEK_SET);
        for (ssize_t r; (r = read(log_fd, buf, sizeof buf)) > 0;) fwrite(buf, 1, static_cast<size_t>(r), stderr);
    }
    close(log_fd);
    if (!ok) fail(PANGU_ERR_IO, "--eval: pangu-perplexity failed on " + dir);
    Json::Value v;
    std::string errs;
    Json::CharReaderBuilder rb;
    std::unique_ptr<Json::CharReader> reader(rb.newCharReader());
    if (!reader->parse(out.data(), out.data() + out.size(), &v, &errs) || !v["ppl"].isNumeric())
        fail(PANGU_ERR_INTERNAL, "--eval: unexpected output from pangu-perplexity: " + out);
    return v["ppl"].asDouble();
}

// The perplexity before and after, on the same text and windows.
void report_perplexity(const Options &o, Json::Value &report) {
    const double before = perplexity(o, o.in), after = perplexity(o, o.out);
    report["perplexity"]["before"] = before, report["perplexity"]["after"] = after;
    report["perplexity"]["text"] = o.eval, report["perplexity"]["tokens"] = o.eval_tokens;
    std::fprintf(stderr, "  perplexity on %s (%s tokens, windows of %s): %.4f -> %.4f (%+.3f %%)\n", o.eval.c_str(),
                 o.eval_tokens.c_str(), o.eval_ctx.c_str(), before, after, 100.0 * (after / before - 1.0));
}

// SmoothQuant: the per-channel factors of every smoothed tensor's input, by tensor name (the q/k/v and gate/up
// weights, whose columns are multiplied by them, and the two norms, which are divided by them).
using Smoothing = std::map<std::string, std::shared_ptr<const Eigen::VectorXf>>;

Smoothing smoothing_by_name(const std::vector<LayerSmoothing> &layers) {
    Smoothing m;
    for (size_t l = 0; l < layers.size(); ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        auto qkv = std::make_shared<const Eigen::VectorXf>(layers[l].qkv);
        auto mlp = std::make_shared<const Eigen::VectorXf>(layers[l].gate_up);
        for (const char *n : {"input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                              "self_attn.v_proj.weight"})
            m[p + n] = qkv;
        for (const char *n : {"post_attention_layernorm.weight", "mlp.gate_proj.weight", "mlp.up_proj.weight"})
            m[p + n] = mlp;
    }
    return m;
}

// The values of a weight matrix as F32, its columns multiplied by the smoothing factors if any.
MatrixRM weight_values(const TensorInfo &t, const Eigen::VectorXf *s) {
    const std::vector<float> v = widen_tensor(t);
    MatrixRM w = Eigen::Map<const MatrixRM>(v.data(), t.shape[0], t.shape[1]);
    if (s) scale_columns(w, *s);
    return w;
}

// `t` as int8 `name` with its per-row F32 scales `name`_scale.
void add_q8(SafetensorsWriter &w, const std::string &name, const TensorInfo *t, const Eigen::VectorXf *s,
            Totals &tot) {
    const int64_t rows = t->shape[0], cols = t->shape[1];
    // Quantize once, when the writer asks for the weights; the scales are produced alongside and
    // written right after (the writer calls fills in layout order, so keep both in one closure).
    auto scales = std::make_shared<std::vector<float>>(static_cast<size_t>(rows));
    auto done = std::make_shared<bool>(false);
    auto q = std::make_shared<std::vector<int8_t>>();
    auto run = [=, &tot]() {
        if (*done) return;
        q->resize(static_cast<size_t>(rows * cols));
        const MatrixRM v = weight_values(*t, s);
        QuantError e = quantize_rows(v.data(), rows, cols, name, q->data(), scales->data());
        std::lock_guard<std::mutex> lk(tot.mu);
        tot.err.merge(e);
        *done = true;
    };
    w.add(name, DType::I8, {rows, cols}, [=](uint8_t *dst) {
        run();
        std::memcpy(dst, q->data(), q->size());
        q->clear();
        q->shrink_to_fit();
    });
    w.add(name + "_scale", DType::F32, {rows}, [=](uint8_t *dst) {
        run();
        std::memcpy(dst, scales->data(), scales->size() * sizeof(float));
    });
}

// `t` as packed 4-bit U8 `name` [rows, cols / 2] with its group scales `name`_scale [rows, cols / G], F16 when
// they all fit (i4_scales_fit_f16), else F32. The scales are computed now, since the header needs their dtype;
// the weights are quantized when the writer asks for them.
void add_q4(SafetensorsWriter &w, const std::string &name, const TensorInfo *t, const Eigen::VectorXf *s, int G,
            Totals &tot) {
    const int64_t rows = t->shape[0], cols = t->shape[1], ng = cols / G;
    auto scales = std::make_shared<std::vector<float>>();
    {
        const MatrixRM v = weight_values(*t, s);
        *scales = i4_raw_scales(v.data(), rows, cols, G, name);
    }
    const bool f16 = i4_scales_fit_f16(*scales);
    if (!f16) tot.f32_scales.push_back(name);
    auto done = std::make_shared<bool>(false);
    auto q = std::make_shared<std::vector<uint8_t>>();
    auto run = [=, &tot]() {
        if (*done) return;
        q->resize(static_cast<size_t>(rows * cols / 2));
        const MatrixRM v = weight_values(*t, s);
        QuantError e = quantize_i4(v.data(), rows, cols, G, name, *scales, f16, q->data());
        std::lock_guard<std::mutex> lk(tot.mu);
        tot.err.merge(e);
        *done = true;
    };
    w.add(name, DType::U8, {rows, cols / 2}, [=](uint8_t *dst) {
        run();
        std::memcpy(dst, q->data(), q->size());
        q->clear();
        q->shrink_to_fit();
    });
    w.add(name + "_scale", f16 ? DType::F16 : DType::F32, {rows, ng}, [=](uint8_t *dst) {
        run();
        if (!f16) {
            std::memcpy(dst, scales->data(), scales->size() * sizeof(float));
            return;
        }
        for (size_t i = 0; i < scales->size(); ++i) {
            const uint16_t h = f32_to_f16((*scales)[i]);  // exact: quantize_i4 rounded them to F16 already
            std::memcpy(dst + 2 * i, &h, 2);
        }
    });
}

// A norm weight divided by its smoothing factors, as F32 (its values are no longer 16-bit numbers).
void add_smoothed_norm(SafetensorsWriter &w, const std::string &name, const TensorInfo *t, const Eigen::VectorXf *s) {
    w.add(name, DType::F32, t->shape, [t, s](uint8_t *dst) {
        const std::vector<float> v = widen_tensor(*t);
        Eigen::VectorXf g = Eigen::Map<const Eigen::VectorXf>(v.data(), static_cast<Eigen::Index>(v.size()));
        divide_norm(g, *s);
        for (Eigen::Index i = 0; i < g.size(); ++i)
            if (!std::isfinite(g(i)))
                fail(PANGU_ERR_NUMERIC, t->name + ": smoothing made element " + std::to_string(i) + " non-finite");
        std::memcpy(dst, g.data(), sizeof(float) * static_cast<size_t>(g.size()));
    });
}

// `t` in 16 bits: 16-bit stays as it is; F32 norms, biases and embeddings become BF16.
void add_16bit(SafetensorsWriter &w, const std::string &name, const TensorInfo *t) {
    const DType dt = t->dtype == DType::F32 ? DType::BF16 : t->dtype;
    size_t n = t->nbytes / dtype_size(t->dtype);
    w.add(name, dt, t->shape, [t, dt, n](uint8_t *dst) {
        if (dt == t->dtype) {
            std::memcpy(dst, t->data, t->nbytes);
            return;
        }
        for (size_t i = 0; i < n; ++i) {
            const float v = load_element(*t, i);
            if (!std::isfinite(v)) fail(PANGU_ERR_NUMERIC, t->name + ": NaN or Inf at element " + std::to_string(i));
            const uint16_t h = f32_to_bf16(v);
            std::memcpy(dst + 2 * i, &h, 2);
        }
    });
}

// A linear layer from the low-bit path: its packed rows, F16 (or F32) group scales, and as the plan made them
// zero points, column order, row widths and row order (docs/quantization.md). `p` outlives the writer's fills.
void add_packed(SafetensorsWriter &w, const std::string &name, const PackedLinear &p, Totals &tot) {
    const int64_t ng = p.cols / p.group;
    auto bytes = [](const auto &v) { return static_cast<const void *>(v.data()); };
    const std::vector<int64_t> shape = p.mixed ? std::vector<int64_t>{static_cast<int64_t>(p.data.size())}
                                               : std::vector<int64_t>{p.rows, p.cols / 2};
    w.add(name, DType::U8, shape, [&p](uint8_t *dst) { std::memcpy(dst, p.data.data(), p.data.size()); });
    if (p.f32_scales) tot.f32_scales.push_back(name);
    w.add(name + "_scale", p.f32_scales ? DType::F32 : DType::F16, {p.rows, ng}, [&p](uint8_t *dst) {
        for (size_t i = 0; i < p.scale.size(); ++i) {
            if (p.f32_scales) {
                std::memcpy(dst + 4 * i, &p.scale[i], 4);
                continue;
            }
            const uint16_t h = f32_to_f16(p.scale[i]);  // exact: the quantizer used the rounded value
            std::memcpy(dst + 2 * i, &h, 2);
        }
    });
    if (!p.zero.empty()) w.add_copy(name + "_zero", DType::U8, {p.rows, ng}, bytes(p.zero));
    if (!p.perm.empty()) w.add_copy(name + "_perm", DType::I32, {p.cols}, bytes(p.perm));
    if (p.mixed) {
        w.add_copy(name + "_bits", DType::U8, {p.rows}, bytes(p.bits));
        w.add_copy(name + "_order", DType::I32, {p.rows}, bytes(p.order));
    }
}

// Every tensor of `store` but the RoPE frequencies; returns the bytes they hold. Linears found in `packed`
// come from the low-bit path.
uint64_t add_tensors(SafetensorsWriter &w, const TensorStore &store, const Options &o, const Smoothing &sm,
                     const std::map<std::string, PackedLinear> &packed, Totals &tot) {
    uint64_t bytes_in = 0;
    for (const auto &kv : store.tensors()) {
        const std::string &name = kv.first;
        if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;
        bytes_in += kv.second.nbytes;
        const auto it = sm.find(name);
        const Eigen::VectorXf *s = it == sm.end() ? nullptr : it->second.get();
        const auto pk = packed.find(name);
        if (pk != packed.end()) {
            add_packed(w, name, pk->second, tot);
        } else if (is_linear(name)) {
            if (o.w4()) add_q4(w, name, &kv.second, s, o.group, tot);
            else add_q8(w, name, &kv.second, s, tot);
        } else if (o.quant_embed && is_embedding(name)) {
            add_q8(w, name, &kv.second, nullptr, tot);
        } else if (s) {
            add_smoothed_norm(w, name, &kv.second, s);
        } else {
            add_16bit(w, name, &kv.second);
        }
    }
    return bytes_in;
}

// What calibration found, for the report and config.json.
struct CalibSummary {
    size_t tokens = 0, windows = 0, documents = 0;
    float s_min = 0, s_max = 0;
    double secs = 0;
    double lowbit_secs = 0;  // calibration and quantization of the low-bit path
};

LowbitSummary summarize(const std::map<std::string, PackedLinear> &packed) {
    LowbitSummary t;
    double bits = 0;
    for (const auto &kv : packed) {
        const PackedLinear &p = kv.second;
        for (int64_t r = 0; r < p.rows; ++r) {
            const int b = p.mixed ? p.bits[static_cast<size_t>(r)] : 4;
            t.width_channels[b] += 1;
            t.width_weights[b] += p.cols;
            bits += static_cast<double>(b) * p.cols;
        }
        t.channels += p.rows;
        t.weights += p.rows * p.cols;
        t.bytes += p.data.size() + p.scale.size() * (p.f32_scales ? 4 : 2) + p.zero.size() + 4 * p.perm.size() +
                   p.bits.size() + 4 * p.order.size();
    }
    t.avg_bits = t.weights ? bits / static_cast<double>(t.weights) : 0.0;
    return t;
}

// quantization_config's fields for the low-bit path.
void lowbit_config(const Options &o, const Totals &tot, Json::Value &qc) {
    qc["method"] = o.method;
    qc["act_order"] = o.act_order;
    if (o.method == "gptq") qc["damp_percent"] = o.damp;
    qc["scale_dtype"] = "float16";
    if (!tot.f32_scales.empty()) {
        Json::Value f(Json::arrayValue);
        for (const auto &n : tot.f32_scales) f.append(n + "_scale");
        qc["float32_scales"] = f;  // the tensors whose scales F16 cannot hold
    }
    if (o.mixed()) {
        Json::Value widths(Json::arrayValue);
        for (int b : {2, 3, 4, 6, 8}) widths.append(b);
        qc["bits"] = widths;
        qc["alloc"] = o.alloc;
        if (o.alloc == "budget") qc["avg_bits_attn"] = o.avg_bits_attn, qc["avg_bits_mlp"] = o.avg_bits_mlp;
        qc["avg_bits"] = tot.lowbit.avg_bits;
        qc["packing"] = "PGD_QB: U8 [bytes], rows of one width together (<name>_bits U8 [rows], <name>_order I32 "
                        "[rows]: output channel of each stored row), bit planes per run of 64 columns (device.h)";
    } else {
        qc["packing"] = "PGD_I4: U8 [rows, cols/2]; in each run of 64 columns byte j holds column j (low nibble) "
                        "and column j+32 (high nibble)";
    }
    qc["weight_formula"] = o.symmetric ? "(level - 2^(bits-1)) * scale of its group"
                                       : "(level - <name>_zero) * scale of its group";
    if (o.act_order) qc["column_order"] = "<name>_perm I32 [cols]: stored column c multiplies input column perm[c]";
}

// The input's config.json with a quantization_config describing the output.
Json::Value quantized_config(const Options &o, const Totals &tot, const CalibSummary *cal) {
    Json::Value cfg;
    {
        std::ifstream cf(o.in + "/config.json");
        Json::CharReaderBuilder rb;
        std::string errs;
        if (!Json::parseFromStream(rb, cf, &cfg, &errs)) fail(PANGU_ERR_CONFIG, o.in + "/config.json: " + errs);
    }
    Json::Value qc;
    qc["quant_method"] = o.scheme;
    qc["bits"] = o.w4() ? 4 : 8;
    qc["group_size"] = o.lowbit() ? o.group : 0;
    qc["symmetric"] = o.symmetric;
    if (o.lowbit_path()) {
        lowbit_config(o, tot, qc);
    } else if (o.w4()) {
        qc["scale_formula"] = "max(abs(W_group)) / 7";
        qc["scale_dtype"] = "float16";
        if (!tot.f32_scales.empty()) {
            Json::Value f(Json::arrayValue);
            for (const auto &n : tot.f32_scales) f.append(n + "_scale");
            qc["float32_scales"] = f;  // the tensors whose scales F16 cannot hold (add_q4)
        }
        qc["packing"] = "PGD_I4: U8 [rows, cols/2]; in each run of 64 columns byte j holds column j (low nibble) "
                        "and column j+32 (high nibble); weight = (nibble - 8) * scale of its group";
    } else {
        qc["scale_formula"] = "max(abs(W_row)) / 127";
        qc["scale_dtype"] = "float32";
    }
    qc["activation_dtype"] = o.int8_act() ? "int8" : "bfloat16";
    if (cal && o.lowbit_path() && !o.calib.empty()) {
        Json::Value c;
        c["calibration_file"] = fs::path(o.calib).filename().string();
        c["calibration_tokens"] = Json::UInt64(cal->tokens);
        c["calibration_windows"] = Json::UInt64(cal->windows);
        c["window"] = Json::Int64(o.calib_ctx);
        qc["calibration"] = c;
    }
    qc["quantize_embeddings"] = o.quant_embed;
    Json::Value mods(Json::arrayValue);
    for (const char *m : {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}) mods.append(m);
    if (o.quant_embed) {
        mods.append("embed_tokens");
        mods.append("lm_head");
    }
    qc["modules"] = mods;
    if (cal && o.smooth >= 0) {
        Json::Value sq;
        sq["alpha"] = o.smooth;
        sq["calibration_file"] = fs::path(o.calib).filename().string();
        sq["calibration_tokens"] = Json::UInt64(cal->tokens);
        sq["calibration_windows"] = Json::UInt64(cal->windows);
        sq["window"] = Json::Int64(o.calib_ctx);
        Json::Value folded(Json::arrayValue);
        folded.append("input_layernorm -> q_proj, k_proj, v_proj");
        folded.append("post_attention_layernorm -> gate_proj, up_proj");
        sq["folded"] = folded;
        qc["smoothquant"] = sq;
    }
    qc["producer"] = std::string("pangu-quantize ") + PANGU_VERSION_STRING;
    cfg["quantization_config"] = qc;
    return cfg;
}

// w4a8: every linear layer's width must suit the 4-bit layout and the group; the first that does not is named.
void check_w4_widths(const Options &o, const TensorStore &store) {
    for (const auto &kv : store.tensors()) {
        if (!is_linear(kv.first)) continue;
        const int64_t cols = kv.second.shape.size() == 2 ? kv.second.shape[1] : 0;
        if (!i4_cols_ok(cols, o.group))
            fail(PANGU_ERR_UNSUPPORTED,
                 kv.first + " has " + std::to_string(cols) + " columns; --scheme " + o.scheme + " with --group " +
                     std::to_string(o.group) + " needs a multiple of 64 and of " + std::to_string(o.group) +
                     (cols % 64 == 0 && cols % 32 == 0 ? " (a smaller --group such as 64 or 32 fits)" : ""));
    }
}

// The --calib text cut into windows; `cal` gets what was taken.
TokenWindows calib_windows(const Options &o, const Model &model, CalibSummary &cal) {
    const std::vector<std::string> docs = read_documents(o.calib, o.calib_jsonl);
    TokenWindows text;
    try {
        text = make_windows(model, docs, static_cast<int>(o.calib_ctx), static_cast<size_t>(o.calib_tokens));
    } catch (const Error &e) {  // e.g. invalid UTF-8: say where
        fail(e.status(), "--calib: " + o.calib + ": " + e.what());
    }
    if (text.n_tokens < static_cast<size_t>(o.calib_ctx))
        fail(PANGU_ERR_INVALID_ARGUMENT, "--calib: " + o.calib + " holds " + std::to_string(text.n_tokens) +
                                             " tokens, fewer than one window of " + std::to_string(o.calib_ctx) +
                                             " (--calib-ctx)");
    cal.tokens = text.n_tokens;
    cal.windows = text.windows.size();
    cal.documents = text.n_documents;
    return text;
}

// A progress line with a bar and the time left, redrawn in place (stderr a terminal, not --quiet).
struct Progress {
    bool on;
    std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
    void show(const char *what, double done, const std::string &detail) const {
        if (!on) return;
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const int width = 24, full = static_cast<int>(done * width);
        const double left = done > 0 ? secs * (1.0 - done) / done : 0.0;
        std::fprintf(stderr, "\r\033[K%s [%s%s] %3.0f%%  %s  %.0fs, ETA %.0fs", what, std::string(full, '=').c_str(),
                     std::string(width - full, ' ').c_str(), 100.0 * done, detail.c_str(), secs, left);
    }
    void end() const {
        if (on) std::fprintf(stderr, "\n");
    }
};

// Runs the fp32 model over the calibration text and returns SmoothQuant's factors of every layer.
std::vector<LayerSmoothing> calibrate(const Options &o, const Model &model, TokenWindows text, CalibSummary &cal) {
    const auto t0 = std::chrono::steady_clock::now();
    const Progress bar{!o.quiet && isatty(fileno(stderr))};
    const int n_layer = model.cfg.n_layer;
    const auto layers = smoothquant_calibrate(model, std::move(text), static_cast<float>(o.smooth), [&](int l) {
        bar.show("smoothing", (l + 1.0) / n_layer, "layer " + std::to_string(l + 1) + " of " + std::to_string(n_layer));
    });
    bar.end();
    cal.s_min = INFINITY;
    cal.s_max = 0;
    for (const auto &l : layers) {
        cal.s_min = std::min({cal.s_min, l.qkv.minCoeff(), l.gate_up.minCoeff()});
        cal.s_max = std::max({cal.s_max, l.qkv.maxCoeff(), l.gate_up.maxCoeff()});
    }
    cal.secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return layers;
}

// The low-bit path: every linear quantized layer by layer (tools/lib/lowbit_model.h).
// `text`: the calibration windows (none for round-to-nearest without --calib).
std::map<std::string, PackedLinear> quantize_linears(const Options &o, const Model &model, TokenWindows text,
                                                     CalibSummary &cal, const std::vector<LayerSmoothing> *smoothing) {
    const auto t0 = std::chrono::steady_clock::now();
    LowbitPlan plan;
    plan.mixed = o.mixed();
    plan.gptq = o.method == "gptq";
    plan.opt.group = o.group;
    plan.opt.symmetric = o.symmetric;
    plan.opt.act_order = o.act_order;
    plan.opt.damp = o.damp;
    plan.budget = o.alloc == "budget";
    plan.avg_bits_attn = o.avg_bits_attn;
    plan.avg_bits_mlp = o.avg_bits_mlp;
    plan.smoothing = smoothing;
    const bool tty = isatty(fileno(stderr));
    const Progress bar{!o.quiet && tty};
    const int n_layer = model.cfg.n_layer;
    static const char *steps[] = {"statistics", "quantized", "advanced"};
    auto packed = quantize_lowbit(model, std::move(text), plan, [&](int l, int step) {
        const double done = (l * 3 + step + 1) / (3.0 * n_layer);
        bar.show(plan.gptq ? "GPTQ" : "RTN", done,
                 "layer " + std::to_string(l + 1) + " of " + std::to_string(n_layer) + " " + steps[step]);
        if (!o.quiet && !tty && step == 2) {  // a log: one line a layer
            const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            std::fprintf(stderr, "%s: layer %d of %d done, %.0f s, about %.0f s left\n", plan.gptq ? "GPTQ" : "RTN",
                         l + 1, n_layer, secs, secs * (1.0 - done) / done);
        }
    });
    bar.end();
    cal.lowbit_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return packed;
}

// Per layer: the average width over its linears (per weight) and the range of their importance scores.
struct LayerLine {
    double bits = 0, weights = 0, imin = INFINITY, imax = -INFINITY, err = 0;
};
std::vector<LayerLine> per_layer(const std::map<std::string, PackedLinear> &packed, int n_layer) {
    std::vector<LayerLine> v(static_cast<size_t>(n_layer));
    for (const auto &kv : packed) {
        const PackedLinear &p = kv.second;
        LayerLine &L = v[static_cast<size_t>(std::atoi(kv.first.c_str() + 13))];  // "model.layers.<l>."
        for (int64_t r = 0; r < p.rows; ++r) L.bits += static_cast<double>(p.mixed ? p.bits[static_cast<size_t>(r)] : 4) * p.cols;
        L.weights += static_cast<double>(p.rows * p.cols);
        L.imin = std::min(L.imin, p.importance_min), L.imax = std::max(L.imax, p.importance_max);
        L.err = std::max(L.err, p.output_error);
    }
    return v;
}

// The low-bit part of the summary: widths, bytes, and per layer its average width, importance range and the
// largest relative output error of its linears on the calibration inputs.
void print_lowbit(const Options &o, const CalibSummary &cal, const std::map<std::string, PackedLinear> &packed,
                  const LowbitSummary &t, int n_layer) {
    std::fprintf(stderr, "  %s, %s%s, groups of %d: %lld channels, %.3f bits per weight on average, %s packed",
                 o.method == "gptq" ? "GPTQ" : "round-to-nearest", o.symmetric ? "symmetric" : "zero points",
                 o.act_order ? ", act-order" : "", o.group, static_cast<long long>(t.channels), t.avg_bits,
                 human(static_cast<double>(t.bytes)).c_str());
    std::fprintf(stderr, " (%.3f bytes per weight)\n", static_cast<double>(t.bytes) / static_cast<double>(t.weights));
    if (!o.calib.empty())
        std::fprintf(stderr, "  calibration: %zu tokens in %zu windows from %zu documents of %s; %.1f s\n", cal.tokens,
                     cal.windows, cal.documents, o.calib.c_str(), cal.lowbit_secs);
    if (o.mixed()) {
        std::fprintf(stderr, "  widths:");
        for (int b : {2, 3, 4, 6, 8})
            std::fprintf(stderr, "  %d-bit %lld (%.1f %%)", b, static_cast<long long>(t.width_channels[b]),
                         100.0 * static_cast<double>(t.width_channels[b]) / static_cast<double>(t.channels));
        std::fprintf(stderr, "\n");
    }
    const std::vector<LayerLine> layers = per_layer(packed, n_layer);
    for (size_t l = 0; l < layers.size(); ++l) {
        std::fprintf(stderr, "  layer %2zu: %.3f bits", l, layers[l].bits / layers[l].weights);
        if (o.mixed()) std::fprintf(stderr, ", importance %.3f .. %.3f", layers[l].imin, layers[l].imax);
        if (!o.calib.empty()) std::fprintf(stderr, ", output error %.2e at most", layers[l].err);
        std::fprintf(stderr, "\n");
    }
}

// --report FILE.json: the same figures as JSON.
Json::Value lowbit_report(const Options &o, const CalibSummary &cal, const std::map<std::string, PackedLinear> &packed,
                          const LowbitSummary &t, int n_layer) {
    Json::Value r;
    r["scheme"] = o.scheme, r["method"] = o.method, r["group_size"] = o.group;
    r["symmetric"] = o.symmetric, r["act_order"] = o.act_order;
    if (o.mixed()) r["alloc"] = o.alloc;
    r["channels"] = Json::Int64(t.channels);
    r["weights"] = Json::Int64(t.weights);
    r["avg_bits"] = t.avg_bits;
    r["bytes"] = Json::UInt64(t.bytes);
    r["bytes_per_weight"] = static_cast<double>(t.bytes) / static_cast<double>(t.weights);
    for (int b : {2, 3, 4, 6, 8}) {
        Json::Value w;
        w["channels"] = Json::Int64(t.width_channels[b]);
        w["share"] = static_cast<double>(t.width_channels[b]) / static_cast<double>(t.channels);
        r["widths"][std::to_string(b)] = w;
    }
    if (!o.calib.empty()) r["calibration_tokens"] = Json::UInt64(cal.tokens);
    r["seconds"] = cal.lowbit_secs;
    for (const LayerLine &L : per_layer(packed, n_layer)) {
        Json::Value j;
        j["avg_bits"] = L.bits / L.weights;
        if (o.mixed()) j["importance"].append(L.imin), j["importance"].append(L.imax);
        if (!o.calib.empty()) j["output_error_max"] = L.err;
        r["layers"].append(j);
    }
    for (const auto &kv : packed) {
        const PackedLinear &p = kv.second;
        Json::Value j;
        j["name"] = kv.first, j["rows"] = Json::Int64(p.rows), j["cols"] = Json::Int64(p.cols);
        double bits = 0;
        for (int64_t i = 0; i < p.rows; ++i) bits += p.mixed ? p.bits[static_cast<size_t>(i)] : 4;
        j["avg_bits"] = bits / static_cast<double>(p.rows);
        if (!o.calib.empty()) j["output_error"] = p.output_error;
        r["linears"].append(j);
    }
    return r;
}

// Converts o.in into the directory `tmp`, checks that it loads, then renames it to o.out. Throws on failure.
void quantize(const Options &o, const std::string &tmp, Json::Value &report) {
    if (fs::exists(o.out) && !o.force) fail(PANGU_ERR_INVALID_ARGUMENT, o.out + " exists; use --force to replace it");
    if (!o.eval.empty()) {  // before the work, not after it
        if (!fs::is_regular_file(o.eval)) fail(PANGU_ERR_FILE_NOT_FOUND, "--eval: " + o.eval + " is not a file");
        perplexity_program();
    }
    if (!o.calib.empty() && !fs::is_regular_file(o.calib))
        fail(PANGU_ERR_FILE_NOT_FOUND, "--calib: " + o.calib + " is not a file");
    if (!o.report.empty()) {  // before the work: the report is written last
        const fs::path dir = fs::path(o.report).parent_path().empty() ? fs::path(".") : fs::path(o.report).parent_path();
        if (!fs::is_directory(dir)) fail(PANGU_ERR_FILE_NOT_FOUND, "--report: " + dir.string() + " is not a directory");
    }
    // Loading validates the whole input (config, tokenizer, every tensor's shape and dtype) first.
    std::unique_ptr<Model> model = Model::load(o.in, ModelLoadOptions{});
    if (model->n_quantized > 0 || !model->cfg.quant_method.empty())
        fail(PANGU_ERR_UNSUPPORTED, o.in + " is already quantized");
    if (o.lowbit()) check_w4_widths(o, model->store);

    const auto t0 = std::chrono::steady_clock::now();
    CalibSummary cal;
    // Read and tokenized once for both passes that may use it: smoothing, then the low-bit path.
    TokenWindows text = o.calib.empty() ? TokenWindows{} : calib_windows(o, *model, cal);
    std::vector<LayerSmoothing> smoothing;
    if (o.smooth >= 0) smoothing = calibrate(o, *model, o.lowbit_path() ? text : std::move(text), cal);
    const Smoothing sm = smoothing_by_name(smoothing);
    std::map<std::string, PackedLinear> packed;
    if (o.lowbit_path())
        packed = quantize_linears(o, *model, std::move(text), cal, o.smooth >= 0 ? &smoothing : nullptr);

    fs::remove_all(tmp);
    fs::create_directories(tmp);
    SafetensorsWriter w;
    Totals tot;
    const uint64_t bytes_in = add_tensors(w, model->store, o, sm, packed, tot);
    w.set_metadata("format", "pt");
    w.set_metadata("producer", std::string("pangu-quantize ") + PANGU_VERSION_STRING);
    const bool progress = !o.quiet && isatty(fileno(stderr));
    w.write(tmp + "/model.safetensors", [&](const std::string &name, uint64_t done, uint64_t all) {
        if (progress)
            std::fprintf(stderr, "\r\033[K[%3zu%%] %s / %s  %s", static_cast<size_t>(100.0 * done / all),
                         human(done).c_str(), human(all).c_str(), name.c_str());
    });
    if (progress) std::fprintf(stderr, "\n");
    tot.lowbit = summarize(packed);
    const bool calibrated = o.smooth >= 0 || (o.lowbit_path() && !o.calib.empty());
    const Json::Value cfg = quantized_config(o, tot, calibrated ? &cal : nullptr);
    std::ofstream(tmp + "/config.json") << cfg << "\n";
    for (const char *f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                          "generation_config.json"})
        if (fs::exists(fs::path(o.in) / f)) fs::copy_file(fs::path(o.in) / f, fs::path(tmp) / f);

    // Check the result loads before it takes the final name.
    Model::load(tmp, ModelLoadOptions{});
    replace_dir(tmp, o.out, o.force, std::to_string(getpid()));  // the old output moved aside, not deleted first

    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const uint64_t bytes_out = w.data_bytes();
    if (o.lowbit_path()) report = lowbit_report(o, cal, packed, tot.lowbit, model->cfg.n_layer);
    report["bytes_in"] = Json::UInt64(bytes_in), report["bytes_out"] = Json::UInt64(bytes_out);
    report["seconds_total"] = secs;
    if (o.quiet) return;
    std::fprintf(stderr, "pangu-quantize: wrote %s (%s", o.out.c_str(), o.scheme.c_str());
    if (o.w4()) std::fprintf(stderr, ", groups of %d", o.group);
    if (o.smooth >= 0) std::fprintf(stderr, ", SmoothQuant alpha %g", o.smooth);
    std::fprintf(stderr, ") in %.1f s\n", secs);
    if (o.smooth >= 0)
        std::fprintf(stderr, "  calibration: %zu tokens in %zu windows of up to %ld from %zu documents of %s (%.1f s); "
                             "smoothing factors %.3g .. %.3g\n",
                     cal.tokens, cal.windows, o.calib_ctx, cal.documents, o.calib.c_str(), cal.secs, cal.s_min, cal.s_max);
    std::fprintf(stderr, "  weights: %s -> %s (%.1f %%)\n", human(static_cast<double>(bytes_in)).c_str(),
                 human(static_cast<double>(bytes_out)).c_str(), 100.0 * bytes_out / bytes_in);
    if (o.lowbit_path())
        print_lowbit(o, cal, packed, tot.lowbit, model->cfg.n_layer);
    else
        std::fprintf(stderr, "  largest per-%s error%s: %.3g absolute, %.4f %% of the %s's max |W| (%s)\n",
                     o.w4() ? "group" : "channel", o.smooth >= 0 ? " (of the smoothed weights)" : "", tot.err.max_abs,
                     100.0 * tot.err.max_rel, o.w4() ? "group" : "channel", tot.err.worst.c_str());
    if (!tot.f32_scales.empty())
        std::fprintf(stderr, "  %zu tensors keep F32 scales (a scale beyond F16's normal range), e.g. %s\n",
                     tot.f32_scales.size(), tot.f32_scales[0].c_str());
}

}  // namespace

int main(int argc, char **argv) {
    Options o;
    const int rc = parse_args(argc, argv, o);
    if (rc >= 0) return rc;
    const std::string tmp = o.out + ".partial-" + std::to_string(getpid());
    try {
        Json::Value report;
        quantize(o, tmp, report);
        if (!o.eval.empty()) report_perplexity(o, report);
        if (!o.report.empty()) write_json_file(o.report, report, "--report: ");
    } catch (const Error &e) {
        fs::remove_all(tmp);
        std::fprintf(stderr, "pangu-quantize: %s (%s)\n", e.what(), pangu_status_string(e.status()));
        return 1;
    } catch (const std::exception &e) {
        fs::remove_all(tmp);
        std::fprintf(stderr, "pangu-quantize: %s\n", e.what());
        return 1;
    }
    return 0;
}
