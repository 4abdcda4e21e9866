// pangu-quantize: turns an openPangu-Embedded checkpoint (F32, F16 or BF16 safetensors, HF layout) into a
// W8A16 checkpoint that libpangu_c loads memory-mapped and standard safetensors readers can open.
//
//   pangu-quantize -i IN_DIR -o OUT_DIR [--quantize-embeddings] [--force] [--quiet]
//                  [--eval FILE [--eval-jsonl] [--eval-tokens N] [--eval-ctx C]]
//
// --eval FILE reports the perplexity of the input and of the output on FILE, measured by pangu-perplexity (the
// program of that name beside this one) on the same text and windows.
//
// Every linear layer (q/k/v/o, gate/up/down) becomes an I8 tensor "<name>.weight" plus an F32 tensor
// "<name>.weight_scale" with one scale per output channel, scale = max|W_row| / 127. Norms and biases stay
// 16-bit (BF16, or F16 when the input is F16). The embedding table and the head stay 16-bit unless
// --quantize-embeddings, which quantizes them per row too. config.json gains a quantization_config; the
// tokenizer files are copied. The output is written under a temporary name and renamed into place only
// when complete, so an interrupted run never leaves a checkpoint that looks valid.
#include <json/json.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

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
    std::cerr << "usage: pangu-quantize -i IN_DIR -o OUT_DIR [--quantize-embeddings] [--force] [--quiet]\n"
                 "                      [--eval FILE [--eval-jsonl] [--eval-tokens N] [--eval-ctx C]]\n"
                 "  Writes a W8A16 checkpoint: int8 linear weights with per-channel scales, 16-bit norms/biases.\n"
                 "  --quantize-embeddings  also quantize the embedding table and head per row\n"
                 "  --force                replace OUT_DIR if it exists\n"
                 "  --quiet                no progress output\n"
                 "  --eval FILE            report the perplexity of IN_DIR and OUT_DIR on FILE (pangu-perplexity)\n"
                 "  --eval-jsonl           FILE is JSONL: its \"text\" fields\n"
                 "  --eval-tokens N        tokens scored (default 16384)\n"
                 "  --eval-ctx C           window length in tokens (default 256)\n";
    return 2;
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
    bool quant_embed = false, force = false, quiet = false;
    std::string eval;  // --eval FILE
    bool eval_jsonl = false;
    std::string eval_tokens = "16384", eval_ctx = "256";
};

bool is_count(const std::string &s) {
    return !s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos && std::stol(s) > 0;
}

// Returns -1 to go on, or the exit status: 0 after --help, 2 after a usage error.
int parse_args(int argc, char **argv, Options &o) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-i" && i + 1 < argc) o.in = argv[++i];
        else if (a == "-o" && i + 1 < argc) o.out = argv[++i];
        else if (a == "--quantize-embeddings") o.quant_embed = true;
        else if (a == "--force") o.force = true;
        else if (a == "--quiet") o.quiet = true;
        else if (a == "--eval" && i + 1 < argc) o.eval = argv[++i];
        else if (a == "--eval-jsonl") o.eval_jsonl = true;
        else if (a == "--eval-tokens" && i + 1 < argc) o.eval_tokens = argv[++i];
        else if (a == "--eval-ctx" && i + 1 < argc) o.eval_ctx = argv[++i];
        else if (a == "-h" || a == "--help") return usage(), 0;
        else return usage();
    }
    if (o.in.empty() || o.out.empty()) return usage();
    if (!is_count(o.eval_tokens) || !is_count(o.eval_ctx)) {
        std::cerr << "pangu-quantize: --eval-tokens and --eval-ctx take positive integers\n";
        return usage();
    }
    while (o.out.size() > 1 && o.out.back() == '/') o.out.pop_back();
    return -1;
}

// The largest quantization error over all tensors; the writer's fill functions merge into it.
struct ErrorTotal {
    QuantError total;
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
void report_perplexity(const Options &o) {
    const double before = perplexity(o, o.in), after = perplexity(o, o.out);
    std::fprintf(stderr, "  perplexity on %s (%s tokens, windows of %s): %.4f -> %.4f (%+.3f %%)\n", o.eval.c_str(),
                 o.eval_tokens.c_str(), o.eval_ctx.c_str(), before, after, 100.0 * (after / before - 1.0));
}

// `t` as int8 `name` with its per-row F32 scales `name`_scale.
void add_quantized(SafetensorsWriter &w, const std::string &name, const TensorInfo *t, ErrorTotal &err) {
    const int64_t rows = t->shape[0], cols = t->shape[1];
    // Quantize once, when the writer asks for the weights; the scales are produced alongside and
    // written right after (the writer calls fills in layout order, so keep both in one closure).
    auto scales = std::make_shared<std::vector<float>>(static_cast<size_t>(rows));
    auto done = std::make_shared<bool>(false);
    auto q = std::make_shared<std::vector<int8_t>>();
    auto run = [=, &err]() {
        if (*done) return;
        q->resize(static_cast<size_t>(rows * cols));
        QuantError e = quantize_rows(*t, q->data(), scales->data());
        std::lock_guard<std::mutex> lk(err.mu);
        err.total.merge(e);
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

// Every tensor of `store` but the RoPE frequencies; returns the bytes they hold.
uint64_t add_tensors(SafetensorsWriter &w, const TensorStore &store, bool quant_embed, ErrorTotal &err) {
    uint64_t bytes_in = 0;
    for (const auto &kv : store.tensors()) {
        const std::string &name = kv.first;
        if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;
        bytes_in += kv.second.nbytes;
        if (is_linear(name) || (quant_embed && is_embedding(name))) add_quantized(w, name, &kv.second, err);
        else add_16bit(w, name, &kv.second);
    }
    return bytes_in;
}

// The input's config.json with a quantization_config describing the output.
Json::Value quantized_config(const std::string &in, bool quant_embed) {
    Json::Value cfg;
    {
        std::ifstream cf(in + "/config.json");
        Json::CharReaderBuilder rb;
        std::string errs;
        if (!Json::parseFromStream(rb, cf, &cfg, &errs)) fail(PANGU_ERR_CONFIG, in + "/config.json: " + errs);
    }
    Json::Value qc;
    qc["quant_method"] = "w8a16";
    qc["bits"] = 8;
    qc["group_size"] = 0;
    qc["symmetric"] = true;
    qc["scale_formula"] = "max(abs(W_row)) / 127";
    qc["scale_dtype"] = "float32";
    qc["activation_dtype"] = "bfloat16";
    qc["quantize_embeddings"] = quant_embed;
    Json::Value mods(Json::arrayValue);
    for (const char *m : {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}) mods.append(m);
    if (quant_embed) {
        mods.append("embed_tokens");
        mods.append("lm_head");
    }
    qc["modules"] = mods;
    qc["producer"] = std::string("pangu-quantize ") + PANGU_VERSION_STRING;
    cfg["quantization_config"] = qc;
    return cfg;
}

// Converts o.in into the directory `tmp`, checks that it loads, then renames it to o.out. Throws on failure.
void quantize(const Options &o, const std::string &tmp) {
    if (fs::exists(o.out) && !o.force) fail(PANGU_ERR_INVALID_ARGUMENT, o.out + " exists; use --force to replace it");
    if (!o.eval.empty()) {  // before the work, not after it
        if (!fs::is_regular_file(o.eval)) fail(PANGU_ERR_FILE_NOT_FOUND, "--eval: " + o.eval + " is not a file");
        perplexity_program();
    }
    // Loading validates the whole input (config, tokenizer, every tensor's shape and dtype) first.
    std::unique_ptr<Model> model = Model::load(o.in, ModelLoadOptions{});
    if (model->n_quantized > 0 || !model->cfg.quant_method.empty())
        fail(PANGU_ERR_UNSUPPORTED, o.in + " is already quantized");

    fs::remove_all(tmp);
    fs::create_directories(tmp);
    SafetensorsWriter w;
    ErrorTotal err;
    const uint64_t bytes_in = add_tensors(w, model->store, o.quant_embed, err);
    const auto t0 = std::chrono::steady_clock::now();
    w.set_metadata("format", "pt");
    w.set_metadata("producer", std::string("pangu-quantize ") + PANGU_VERSION_STRING);
    const bool progress = !o.quiet && isatty(fileno(stderr));
    w.write(tmp + "/model.safetensors", [&](const std::string &name, uint64_t done, uint64_t all) {
        if (progress)
            std::fprintf(stderr, "\r\033[K[%3zu%%] %s / %s  %s", static_cast<size_t>(100.0 * done / all),
                         human(done).c_str(), human(all).c_str(), name.c_str());
    });
    if (progress) std::fprintf(stderr, "\n");
    const Json::Value cfg = quantized_config(o.in, o.quant_embed);
    std::ofstream(tmp + "/config.json") << cfg << "\n";
    for (const char *f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                          "generation_config.json"})
        if (fs::exists(fs::path(o.in) / f)) fs::copy_file(fs::path(o.in) / f, fs::path(tmp) / f);

    // Check the result loads before it takes the final name.
    Model::load(tmp, ModelLoadOptions{});
    if (fs::exists(o.out)) fs::remove_all(o.out);
    fs::rename(tmp, o.out);

    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const uint64_t bytes_out = w.data_bytes();
    if (o.quiet) return;
    std::fprintf(stderr, "pangu-quantize: wrote %s in %.1f s\n", o.out.c_str(), secs);
    std::fprintf(stderr, "  weights: %s -> %s (%.1f %%)\n", human(static_cast<double>(bytes_in)).c_str(),
                 human(static_cast<double>(bytes_out)).c_str(), 100.0 * bytes_out / bytes_in);
    std::fprintf(stderr, "  largest per-channel error: %.3g absolute, %.4f %% of the channel's max |W| (%s)\n",
                 err.total.max_abs, 100.0 * err.total.max_rel, err.total.worst.c_str());
}

}  // namespace

int main(int argc, char **argv) {
    Options o;
    const int rc = parse_args(argc, argv, o);
    if (rc >= 0) return rc;
    const std::string tmp = o.out + ".partial-" + std::to_string(getpid());
    try {
        quantize(o, tmp);
        if (!o.eval.empty()) report_perplexity(o);
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
