// pangu-gen-model: writes a random-weight openPangu-Embedded checkpoint of any shape, for benchmarks of
// realistic size without downloading a real model. Default: the openPangu-1B shape (26 layers, hidden 1536,
// 12/6 heads, head_dim 128, MLP 6144, vocab 153376, tied embeddings, bf16).
//
//   pangu-gen-model -o DIR [--tokenizer DIR] [--layers N] [--hidden N] [--heads N] [--kv-heads N]
//                   [--head-dim N] [--ff N] [--vocab N] [--untied] [--dtype bf16|f16|f32] [--seed N]
//
// Weights are drawn uniformly with the scale of a trained model's initialization (std ~ 1/sqrt(fan_in)),
// so activations stay in a realistic range and fp16 paths do not overflow. The tokenizer files are copied
// from --tokenizer (default: the bundled pangu-tiny); its vocabulary must not exceed --vocab.
//
//   pangu-gen-model --widen-from SRC -o DIR [--layers N] [--hidden N] [--heads N] [--kv-heads N] [--ff N]
//
// instead writes a large model that computes what the trained model SRC computes: SRC's weights sit in the
// top-left corner of larger matrices of zeros, the extra heads and MLP channels contribute nothing, and the
// extra layers add nothing to the residual stream (their output projections are zero). Defaults: the
// openPangu-1B sizes (hidden 1536, 26 layers, MLP 6144, as many heads of SRC's head_dim as fill 1536), with
// SRC's head_dim, vocabulary and tokenizer. A benchmark then sees the memory traffic of a 1B model and the
// real text behaviour of SRC (what speculative decoding's acceptance depends on), which a random-weight
// model lacks. RMSNorm averages over the wider hidden size, so the norms' eps is divided by f = new/old
// hidden size and their weights by sqrt(f) (stored as F32); when f is a power of 4 both are exact and the
// wide model's logits are SRC's bit for bit (the zeros only extend the kernels' partial sums), otherwise
// they agree to rounding.
#include <json/json.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include "common/common.h"
#include "format/config.h"
#include "quantize.h"
#include "format/safetensors.h"
#include "safetensors_writer.h"
#include "model/tensor.h"

namespace fs = std::filesystem;
using namespace pangu;

namespace {

struct Shape {
    int layers = 26, hidden = 1536, heads = 12, kv_heads = 6, head_dim = 128, ff = 6144, vocab = 153376;
    bool tied = true;
    DType dtype = DType::BF16;
    uint64_t seed = 1;
};

// splitmix64: fast enough to fill gigabytes, deterministic for a seed.
struct Gen {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    float uniform() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f; }
};

void fill(uint8_t *dst, uint64_t n, DType dt, float scale, float offset, uint64_t seed) {
    Gen g{seed};
    for (uint64_t i = 0; i < n; ++i) {
        const float v = offset + scale * g.uniform();
        switch (dt) {
            case DType::F32: std::memcpy(dst + 4 * i, &v, 4); break;
            case DType::F16: {
                const uint16_t h = f32_to_f16(v);
                std::memcpy(dst + 2 * i, &h, 2);
                break;
            }
            default: {
                const uint16_t h = f32_to_bf16(v);
                std::memcpy(dst + 2 * i, &h, 2);
            }
        }
    }
}

int usage() {
    std::cerr << "usage: pangu-gen-model -o DIR [--tokenizer DIR] [--layers N] [--hidden N] [--heads N] [--kv-heads N]\n"
                 "                       [--head-dim N] [--ff N] [--vocab N] [--untied] [--dtype bf16|f16|f32] [--seed N]\n"
                 "       pangu-gen-model --widen-from SRC -o DIR [--layers N] [--hidden N] [--heads N] [--kv-heads N]\n"
                 "                       [--ff N]\n";
    return 2;
}

// --widen-from: `src` (rows x cols, any float dtype) into the top-left corner of a rows_out x cols_out matrix
// of dtype `dt`, zeros elsewhere; elements are copied bit for bit when the dtypes agree, scaled by `mul`.
void place(uint8_t *dst, int64_t rows_out, int64_t cols_out, DType dt, const TensorInfo *src, float mul = 1.0f) {
    const size_t esz = dtype_size(dt);
    std::memset(dst, 0, static_cast<size_t>(rows_out * cols_out) * esz);
    if (!src) return;
    const int64_t rows = src->shape[0], cols = src->shape.size() > 1 ? src->shape[1] : 1;
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) {
            const size_t i = static_cast<size_t>(r * cols + c);
            uint8_t *o = dst + static_cast<size_t>(r * cols_out + c) * esz;
            if (src->dtype == dt && mul == 1.0f) {
                std::memcpy(o, static_cast<const uint8_t *>(src->data) + i * esz, esz);
                continue;
            }
            const float v = load_element(*src, i) * mul;
            if (dt == DType::F32) {
                std::memcpy(o, &v, 4);
            } else {
                const uint16_t h = dt == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
                std::memcpy(o, &h, 2);
            }
        }
}

// Writes the tensors added to `w` to DIR/model.safetensors, with a progress line when stderr is a terminal.
void write_weights(const SafetensorsWriter &w, const std::string &out) {
    const bool tty = isatty(fileno(stderr));
    w.write((fs::path(out) / "model.safetensors").string(),
            [&](const std::string &name, uint64_t done, uint64_t total) {
                if (tty) std::fprintf(stderr, "\r%6.1f%%  %-60s", 100.0 * done / total, name.c_str());
            });
    if (tty) std::fprintf(stderr, "\n");
}

// --widen-from: fill in the sizes left at 0 (the openPangu-1B sizes, SRC's head_dim and heads per KV head) and
// check that the wide model holds SRC. Returns 0, or 2 after a message.
int widen_sizes(const std::string &src_dir, const ModelConfig &c, const TensorStore &st, Shape &sh) {
    const int group = c.n_head / c.n_head_kv;
    if (!sh.hidden) sh.hidden = 1536;
    if (!sh.layers) sh.layers = 26;
    if (!sh.ff) sh.ff = 6144;
    if (!sh.heads) sh.heads = sh.hidden / c.head_dim;
    if (!sh.kv_heads) sh.kv_heads = sh.heads / group;
    if (sh.hidden < c.n_embd || sh.layers < c.n_layer || sh.heads < c.n_head || sh.kv_heads < c.n_head_kv ||
        sh.heads != sh.kv_heads * group) {
        std::cerr << "pangu-gen-model: the wide model must be at least as large as " << src_dir
                  << " in every size, with its heads per KV head (" << group << ")\n";
        return 2;
    }
    if (!st.find("model.embed_tokens.weight")) fail(PANGU_ERR_MISSING_TENSOR, src_dir + ": model.embed_tokens.weight");
    int max_ff = c.n_ff;
    for (int l = 0; l < c.n_layer; ++l)
        if (const TensorInfo *g = st.find("model.layers." + std::to_string(l) + ".mlp.gate_proj.weight"))
            max_ff = std::max<int>(max_ff, static_cast<int>(g->shape[0]));
    if (sh.ff < max_ff) {
        std::cerr << "pangu-gen-model: --ff must be at least " << max_ff << "\n";
        return 2;
    }
    return 0;
}

// --widen-from: SRC's tokenizer files, and its config.json with the wide sizes and the norms' eps divided by f.
void write_widened_config(const std::string &src_dir, const std::string &out, const ModelConfig &c, const Shape &sh,
                          double f) {
    fs::create_directories(out);
    for (const char *name : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
        if (fs::exists(fs::path(src_dir) / name))
            fs::copy_file(fs::path(src_dir) / name, fs::path(out) / name, fs::copy_options::overwrite_existing);
    Json::Value cfg;
    {
        std::ifstream in(fs::path(src_dir) / "config.json");
        in >> cfg;
    }
    cfg["hidden_size"] = sh.hidden;
    cfg["intermediate_size"] = sh.ff;
    cfg["num_hidden_layers"] = sh.layers;
    cfg["num_attention_heads"] = sh.heads;
    cfg["num_key_value_heads"] = sh.kv_heads;
    cfg["head_dim"] = c.head_dim;
    cfg["rms_norm_eps"] = static_cast<double>(c.rms_eps) / f;
    std::ofstream(fs::path(out) / "config.json") << cfg << "\n";
}

// --widen-from: every tensor of the wide model, SRC's in the top-left corner of each; the norms' weights (F32)
// divided by sqrt(f).
void add_widened_tensors(SafetensorsWriter &w, const TensorStore &st, const ModelConfig &c, const Shape &sh, double f) {
    const DType dt = st.find("model.embed_tokens.weight")->dtype;
    const int64_t H = sh.hidden, QD = int64_t(sh.heads) * c.head_dim, KVD = int64_t(sh.kv_heads) * c.head_dim;
    const int64_t F = sh.ff, V = c.n_vocab;
    const float norm_mul = static_cast<float>(1.0 / std::sqrt(f));
    auto add = [&](const std::string &name, std::vector<int64_t> shape, DType type, float mul = 1.0f) {
        const TensorInfo *t = st.find(name);
        const int64_t rows = shape[0], cols = shape.size() > 1 ? shape[1] : 1;
        w.add(name, type, std::move(shape), [=](uint8_t *dst) { place(dst, rows, cols, type, t, mul); });
    };
    add("model.embed_tokens.weight", {V, H}, dt);
    if (!c.tie_embeddings) add("lm_head.weight", {V, H}, dt);
    add("model.norm.weight", {H}, DType::F32, norm_mul);
    for (int l = 0; l < sh.layers; ++l) {
        // Layers past SRC's find no tensors: all zeros, so they add nothing to the residual stream.
        const std::string p = "model.layers." + std::to_string(l) + ".";
        add(p + "input_layernorm.weight", {H}, DType::F32, norm_mul);
        add(p + "post_attention_layernorm.weight", {H}, DType::F32, norm_mul);
        add(p + "self_attn.q_proj.weight", {QD, H}, dt);
        add(p + "self_attn.k_proj.weight", {KVD, H}, dt);
        add(p + "self_attn.v_proj.weight", {KVD, H}, dt);
        add(p + "self_attn.o_proj.weight", {H, QD}, dt);
        if (c.bias) {
            add(p + "self_attn.q_proj.bias", {QD}, dt);
            add(p + "self_attn.k_proj.bias", {KVD}, dt);
            add(p + "self_attn.v_proj.bias", {KVD}, dt);
            add(p + "self_attn.o_proj.bias", {H}, dt);
        }
        add(p + "mlp.gate_proj.weight", {F, H}, dt);
        add(p + "mlp.up_proj.weight", {F, H}, dt);
        add(p + "mlp.down_proj.weight", {H, F}, dt);
    }
}

// The --widen-from mode. `sh` holds the requested sizes (0 = default).
int widen(const std::string &src_dir, const std::string &out, Shape sh) {
    const ModelConfig c = load_config(src_dir);
    TensorStore st;
    st.open_dir(src_dir, MapOptions{});
    if (const int rc = widen_sizes(src_dir, c, st, sh)) return rc;
    const double f = static_cast<double>(sh.hidden) / c.n_embd;
    write_widened_config(src_dir, out, c, sh, f);
    SafetensorsWriter w;
    add_widened_tensors(w, st, c, sh, f);
    write_weights(w, out);
    std::fprintf(stderr, "pangu-gen-model: wrote %s (%s widened to hidden %d, %d layers, %d/%d heads, MLP %d; %.2f GB)\n",
                 out.c_str(), src_dir.c_str(), sh.hidden, sh.layers, sh.heads, sh.kv_heads, sh.ff, w.data_bytes() / 1e9);
    return 0;
}

// config.json of a random model of shape `sh`.
Json::Value random_config(const Shape &sh) {
    Json::Value c;
    c["architectures"].append("PanguEmbeddedForCausalLM");
    c["model_type"] = "PanguEmbedded";
    c["vocab_size"] = sh.vocab;
    c["hidden_size"] = sh.hidden;
    c["intermediate_size"] = sh.ff;
    c["num_hidden_layers"] = sh.layers;
    c["num_attention_heads"] = sh.heads;
    c["num_key_value_heads"] = sh.kv_heads;
    c["head_dim"] = sh.head_dim;
    c["hidden_act"] = "silu";
    c["max_position_embeddings"] = 32768;
    c["rms_norm_eps"] = 1e-5;
    c["rope_theta"] = 1.6e7;
    c["bias"] = true;
    c["tie_word_embeddings"] = sh.tied;
    c["bos_token_id"] = 1;
    c["eos_token_id"] = 2;
    c["pad_token_id"] = 0;
    c["torch_dtype"] = sh.dtype == DType::F32 ? "float32" : sh.dtype == DType::F16 ? "float16" : "bfloat16";
    return c;
}

// Every tensor of a random model of shape `sh`, each from its own seed (sh.seed * 1000003 + its index).
void add_random_tensors(SafetensorsWriter &w, const Shape &sh) {
    uint64_t seed = sh.seed * 1000003ull;
    auto add = [&](const std::string &name, std::vector<int64_t> shape, float scale, float offset = 0.0f) {
        uint64_t n = 1;
        for (int64_t d : shape) n *= static_cast<uint64_t>(d);
        const uint64_t s = seed++;
        const DType dt = sh.dtype;
        w.add(name, dt, std::move(shape), [=](uint8_t *dst) { fill(dst, n, dt, scale, offset, s); });
    };
    const int64_t H = sh.hidden, QD = int64_t(sh.heads) * sh.head_dim, KVD = int64_t(sh.kv_heads) * sh.head_dim;
    const float sH = std::sqrt(3.0f / H), sQ = std::sqrt(3.0f / QD), sF = std::sqrt(3.0f / sh.ff);
    add("model.embed_tokens.weight", {sh.vocab, H}, 0.05f);
    if (!sh.tied) add("lm_head.weight", {sh.vocab, H}, sH);
    add("model.norm.weight", {H}, 0.1f, 1.0f);
    for (int l = 0; l < sh.layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        add(p + "input_layernorm.weight", {H}, 0.1f, 1.0f);
        add(p + "post_attention_layernorm.weight", {H}, 0.1f, 1.0f);
        add(p + "self_attn.q_proj.weight", {QD, H}, sH);
        add(p + "self_attn.k_proj.weight", {KVD, H}, sH);
        add(p + "self_attn.v_proj.weight", {KVD, H}, sH);
        add(p + "self_attn.o_proj.weight", {H, QD}, sQ);
        add(p + "self_attn.q_proj.bias", {QD}, 0.02f);
        add(p + "self_attn.k_proj.bias", {KVD}, 0.02f);
        add(p + "self_attn.v_proj.bias", {KVD}, 0.02f);
        add(p + "self_attn.o_proj.bias", {H}, 0.02f);
        add(p + "mlp.gate_proj.weight", {sh.ff, H}, sH);
        add(p + "mlp.up_proj.weight", {sh.ff, H}, sH);
        add(p + "mlp.down_proj.weight", {H, sh.ff}, sF);
    }
}

// The random-weight mode: the tokenizer files of `tok`, then config.json and the weights.
void generate(const Shape &sh, const std::string &out, const std::string &tok) {
    fs::create_directories(out);
    for (const char *f : {"tokenizer.model", "tokenizer_config.json"})
        if (fs::exists(fs::path(tok) / f))
            fs::copy_file(fs::path(tok) / f, fs::path(out) / f, fs::copy_options::overwrite_existing);
    std::ofstream(fs::path(out) / "config.json") << random_config(sh) << "\n";
    SafetensorsWriter w;
    add_random_tensors(w, sh);
    write_weights(w, out);
    std::fprintf(stderr, "pangu-gen-model: wrote %s (%.2f GB of weights)\n", out.c_str(), w.data_bytes() / 1e9);
}

bool parse_int(const char *s, int &out) {
    char *end = nullptr;
    const long v = std::strtol(s, &end, 10);
    if (!end || *end || v <= 0 || v > (1 << 24)) return false;
    out = static_cast<int>(v);
    return true;
}

struct Args {
    Shape sh;
    Shape given;  // sizes given on the command line (for --widen-from, whose defaults differ), else 0
    std::string out, tok = PANGU_DEFAULT_TOKENIZER_DIR, widen_from;
    Args() { given.layers = given.hidden = given.heads = given.kv_heads = given.head_dim = given.ff = given.vocab = 0; }
};

// Returns false for a usage error.
bool parse_args(int argc, char **argv, Args &a) {
    Shape &sh = a.sh, &given = a.given;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto num = [&](int &dst) { return i + 1 < argc && parse_int(argv[++i], dst); };
        if (arg == "-o" && i + 1 < argc) a.out = argv[++i];
        else if (arg == "--tokenizer" && i + 1 < argc) a.tok = argv[++i];
        else if (arg == "--widen-from" && i + 1 < argc) a.widen_from = argv[++i];
        else if (arg == "--layers") { if (!num(sh.layers)) return false; given.layers = sh.layers; }
        else if (arg == "--hidden") { if (!num(sh.hidden)) return false; given.hidden = sh.hidden; }
        else if (arg == "--heads") { if (!num(sh.heads)) return false; given.heads = sh.heads; }
        else if (arg == "--kv-heads") { if (!num(sh.kv_heads)) return false; given.kv_heads = sh.kv_heads; }
        else if (arg == "--head-dim") { if (!num(sh.head_dim)) return false; given.head_dim = sh.head_dim; }
        else if (arg == "--ff") { if (!num(sh.ff)) return false; given.ff = sh.ff; }
        else if (arg == "--vocab") { if (!num(sh.vocab)) return false; given.vocab = sh.vocab; }
        else if (arg == "--seed") { int s; if (!num(s)) return false; sh.seed = static_cast<uint64_t>(s); }
        else if (arg == "--untied") sh.tied = false;
        else if (arg == "--dtype" && i + 1 < argc) {
            const std::string d = argv[++i];
            if (d == "bf16") sh.dtype = DType::BF16;
            else if (d == "f16") sh.dtype = DType::F16;
            else if (d == "f32") sh.dtype = DType::F32;
            else return false;
        } else return false;
    }
    return true;
}

}  // namespace

int main(int argc, char **argv) {
    Args a;
    if (!parse_args(argc, argv, a)) return usage();
    if (!a.widen_from.empty()) {
        // The source fixes head_dim, vocabulary, tokenizer and dtype.
        if (a.out.empty() || a.given.head_dim || a.given.vocab) return usage();
        try {
            return widen(a.widen_from, a.out, a.given);
        } catch (const std::exception &e) {
            std::fprintf(stderr, "pangu-gen-model: %s\n", e.what());
            return 1;
        }
    }
    if (a.out.empty() || a.sh.heads % a.sh.kv_heads != 0) return usage();
    try {
        generate(a.sh, a.out, a.tok);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "pangu-gen-model: %s\n", e.what());
        return 1;
    }
    return 0;
}
