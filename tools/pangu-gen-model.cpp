// pangu-gen-model: writes a random-weight openPangu-Embedded checkpoint of any shape, for benchmarks of
// realistic size without downloading a real model. Default: the openPangu-1B shape (26 layers, hidden 1536,
// 12/6 heads, head_dim 128, MLP 6144, vocab 153376, tied embeddings, bf16).
//
//   pangu-gen-model -o DIR [--tokenizer DIR] [--layers N] [--hidden N] [--heads N] [--kv-heads N]
//                   [--head-dim N] [--ff N] [--vocab N] [--untied] [--dtype bf16|f16|f32] [--seed N]
//                   [--bias-token ID]
//
// Weights are drawn uniformly with the scale of a trained model's initialization (std ~ 1/sqrt(fan_in)),
// so activations stay in a realistic range and fp16 paths do not overflow. The tokenizer files are copied
// from --tokenizer (default: the bundled pangu-tiny); its vocabulary must not exceed --vocab.
//
//   pangu-gen-model --layout openpangu-1b|openpangu-7b -o DIR [--real-size] [--shards N] [shape flags]
//                   [--dtype ...] [--seed N] [--bias-token ID] [--tokenizer DIR]
//
// writes a random-weight checkpoint in exactly the layout openPangu-Embedded-1B or -7B is published in:
// config.json with the real field names (the 7B's has no head_dim, ties no embeddings and is sharded),
// generation_config.json, tokenizer_config.json with the real added_tokens_decoder, special_tokens_map.json,
// a tokenizer.model of 153376 pieces in which the special ids hold the special pieces as ORDINARY pieces (so
// only tokenizer_config.json makes them special, as far as a loader can tell), a rotary_emb.inv_freq tensor per
// layer, and for the 7B four shards with model.safetensors.index.json. The sizes are shrunk (hidden 64, 2
// layers) unless --real-size; the vocabulary and the special ids are always the real ones. The tokenizer's
// first pieces are those of --tokenizer (pangu-tiny), so ordinary text tokenizes as with pangu-tiny.
// --bias-token ID makes that token's logit the largest at every position (to test how generation ends).
// --chain ID,ID,... (untied heads only) makes greedy decoding follow any token with the first id, each id with the
// next, and the last with itself (to test what streaming does with a known sequence, e.g. reasoning markers).
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
#include <functional>
#include <iostream>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/common.h"
#include "common/io.h"
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
    int bias_token = -1;          // --bias-token: the token whose logit is made the largest everywhere (-1: none)
    std::vector<int> chain;       // --chain: greedy decoding follows any token with chain[0], chain[i] with chain[i+1]
    bool rotary_tensors = false;  // a rotary_emb.inv_freq tensor per layer, as real checkpoints carry
};

constexpr double kRopeTheta = 1.6e7;  // openPangu-Embedded-7B's config.json
constexpr float kBiasLogit = 8.0f;    // --bias-token: the head's weight on channel 0, times sqrt(hidden)

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

// Element i of a tensor of dtype `dt` (F32, F16 or BF16) at `dst` becomes v.
void put(uint8_t *dst, uint64_t i, DType dt, float v) {
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

void fill(uint8_t *dst, uint64_t n, DType dt, float scale, float offset, uint64_t seed) {
    Gen g{seed};
    for (uint64_t i = 0; i < n; ++i) put(dst, i, dt, offset + scale * g.uniform());
}

// Writes `text` to `path` under a temporary name, renamed into place when complete.
void write_text(const fs::path &path, const std::string &text) {
    const fs::path tmp = path.string() + ".partial";
    {
        std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
        f << text;
        f.flush();
        if (!f) fail(PANGU_ERR_IO, tmp.string() + ": cannot write");
    }
    fs::rename(tmp, path);
}

std::string json_text(const Json::Value &v) {
    Json::StreamWriterBuilder wb;
    wb["indentation"] = "  ";
    wb["emitUTF8"] = true;
    return Json::writeString(wb, v) + "\n";
}

// Receives a model's tensors by unit (0: the embedding table, 1 + l: layer l, layers + 1: the final norm and the
// head) and puts each unit's in the file file_of_unit names (empty: all in files[0]).
struct Sink {
    std::vector<SafetensorsWriter> files;
    std::vector<int> file_of_unit;
    std::vector<std::pair<std::string, int>> names;  // every tensor and its file, in the order added

    void add(int unit, const std::string &name, DType dt, std::vector<int64_t> shape,
             std::function<void(uint8_t *)> fill_fn) {
        const int f = file_of_unit.empty() ? 0 : file_of_unit[static_cast<size_t>(unit)];
        files[static_cast<size_t>(f)].add(name, dt, std::move(shape), std::move(fill_fn));
        names.emplace_back(name, f);
    }
};

int usage() {
    std::cerr << "usage: pangu-gen-model -o DIR [--tokenizer DIR] [--layers N] [--hidden N] [--heads N] [--kv-heads N]\n"
                 "                       [--head-dim N] [--ff N] [--vocab N] [--untied] [--dtype bf16|f16|f32] [--seed N]\n"
                 "                       [--bias-token ID | --chain ID,ID,...]\n"
                 "       pangu-gen-model --layout openpangu-1b|openpangu-7b -o DIR [--real-size] [--shards N]\n"
                 "                       [--layers N] [--hidden N] [--heads N] [--kv-heads N] [--head-dim N] [--ff N]\n"
                 "                       [--dtype bf16|f16|f32] [--seed N] [--bias-token ID] [--tokenizer DIR]\n"
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

// Writes the tensors added to `w` to `path`, with a progress line when stderr is a terminal.
void write_weights(const SafetensorsWriter &w, const fs::path &path) {
    const bool tty = isatty(fileno(stderr));
    w.write(path.string(), [&](const std::string &name, uint64_t done, uint64_t total) {
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
    write_weights(w, fs::path(out) / "model.safetensors");
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

// --bias-token: what makes the token's logit the largest at every position, as a change to tensor `name` after
// it is filled (empty when the tensor is left alone). Every embedding gets 1 in channel 0, which no layer writes
// to (row 0 of o_proj and down_proj and o_proj's bias[0] are zero), so the final hidden state is positive in
// channel 0 at every position, and the head's row of the token has kBiasLogit * sqrt(hidden) there (its logit
// then leads by about 40 with the shrunk sizes and with the 1B's).
// --chain: token chain[i] gets 1 in channel i + 1 of its embedding and every other token 1 in channel 0; no layer
// writes to channels 0..n (those rows of o_proj and down_proj, and o_proj's bias there, are zero), so the final
// hidden state keeps them; the head's row of chain[0] weighs channel 0, that of chain[i + 1] channel i + 1, and
// the last one's also channel n. The other embedding entries stay random: only the chain's channels are set.
std::function<void(uint8_t *)> chain_patch(const std::string &name, const std::vector<int64_t> &shape, const Shape &sh) {
    const DType dt = sh.dtype;
    const uint64_t rows = static_cast<uint64_t>(shape[0]);
    const uint64_t cols = shape.size() > 1 ? static_cast<uint64_t>(shape[1]) : 1;
    const std::vector<int> chain = sh.chain;
    const uint64_t n = chain.size();
    const float weight = kBiasLogit * std::sqrt(static_cast<float>(sh.hidden));
    auto ends_with = [&](const std::string &tail) {
        return name.size() >= tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
    };
    if (name == "model.embed_tokens.weight")
        return [=](uint8_t *dst) {
            for (uint64_t r = 0; r < rows; ++r)
                for (uint64_t c = 0; c <= n; ++c) put(dst, r * cols + c, dt, c == 0 ? 1.0f : 0.0f);
            for (uint64_t i = 0; i < n; ++i) {
                put(dst, uint64_t(chain[i]) * cols, dt, 0.0f);
                put(dst, uint64_t(chain[i]) * cols + i + 1, dt, 1.0f);
            }
        };
    if (name == "lm_head.weight")
        return [=](uint8_t *dst) {
            for (uint64_t i = 0; i < n; ++i) put(dst, uint64_t(chain[i]) * cols + i, dt, weight);
            put(dst, uint64_t(chain[n - 1]) * cols + n, dt, weight);
        };
    if (ends_with("o_proj.weight") || ends_with("down_proj.weight"))
        return [=](uint8_t *dst) { std::memset(dst, 0, (n + 1) * cols * dtype_size(dt)); };  // rows 0..n
    if (ends_with("o_proj.bias"))
        return [=](uint8_t *dst) {
            for (uint64_t c = 0; c <= n; ++c) put(dst, c, dt, 0.0f);
        };
    return nullptr;
}

std::function<void(uint8_t *)> bias_patch(const std::string &name, const std::vector<int64_t> &shape, const Shape &sh) {
    if (!sh.chain.empty()) return chain_patch(name, shape, sh);
    if (sh.bias_token < 0) return nullptr;
    const DType dt = sh.dtype;
    const uint64_t rows = static_cast<uint64_t>(shape[0]);
    const uint64_t cols = shape.size() > 1 ? static_cast<uint64_t>(shape[1]) : 1;
    const uint64_t id = static_cast<uint64_t>(sh.bias_token);
    const float weight = kBiasLogit * std::sqrt(static_cast<float>(sh.hidden));
    auto ends_with = [&](const std::string &tail) {
        return name.size() >= tail.size() && name.compare(name.size() - tail.size(), tail.size(), tail) == 0;
    };
    const bool embed = name == "model.embed_tokens.weight", head = name == "lm_head.weight" || (embed && sh.tied);
    if (embed || head)
        return [=](uint8_t *dst) {
            if (embed)
                for (uint64_t r = 0; r < rows; ++r) put(dst, r * cols, dt, 1.0f);
            if (head) put(dst, id * cols, dt, weight);
        };
    if (ends_with("o_proj.weight") || ends_with("down_proj.weight"))
        return [=](uint8_t *dst) { std::memset(dst, 0, cols * dtype_size(dt)); };  // row 0
    if (ends_with("o_proj.bias")) return [=](uint8_t *dst) { put(dst, 0, dt, 0.0f); };
    return nullptr;
}

// model.layers.N.self_attn.rotary_emb.inv_freq as real checkpoints carry it: F32, head_dim / 2 values
// theta^(-2i / head_dim). Loaders skip it.
void add_inv_freq(Sink &out, int unit, const std::string &layer_prefix, const Shape &sh) {
    const int n = sh.head_dim / 2, head_dim = sh.head_dim;
    out.add(unit, layer_prefix + "self_attn.rotary_emb.inv_freq", DType::F32, {n}, [=](uint8_t *dst) {
        for (int i = 0; i < n; ++i) {
            const double v = std::pow(kRopeTheta, -2.0 * i / head_dim);
            put(dst, static_cast<uint64_t>(i), DType::F32, static_cast<float>(v));
        }
    });
}

// Every tensor of a random model of shape `sh`, each from its own seed (sh.seed * 1000003 + its index).
void add_random_tensors(Sink &out, const Shape &sh) {
    uint64_t seed = sh.seed * 1000003ull;
    int unit = 0;
    auto add = [&](const std::string &name, std::vector<int64_t> shape, float scale, float offset = 0.0f) {
        uint64_t n = 1;
        for (int64_t d : shape) n *= static_cast<uint64_t>(d);
        const uint64_t s = seed++;
        const DType dt = sh.dtype;
        auto patch = bias_patch(name, shape, sh);
        out.add(unit, name, dt, std::move(shape), [=](uint8_t *dst) {
            fill(dst, n, dt, scale, offset, s);
            if (patch) patch(dst);
        });
    };
    const int64_t H = sh.hidden, QD = int64_t(sh.heads) * sh.head_dim, KVD = int64_t(sh.kv_heads) * sh.head_dim;
    const float sH = std::sqrt(3.0f / H), sQ = std::sqrt(3.0f / QD), sF = std::sqrt(3.0f / sh.ff);
    add("model.embed_tokens.weight", {sh.vocab, H}, 0.05f);
    unit = sh.layers + 1;
    if (!sh.tied) add("lm_head.weight", {sh.vocab, H}, sH);
    add("model.norm.weight", {H}, 0.1f, 1.0f);
    for (int l = 0; l < sh.layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        unit = 1 + l;
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
        if (sh.rotary_tensors) add_inv_freq(out, unit, p, sh);
    }
}

// The random-weight mode: the tokenizer files of `tok`, then config.json and the weights.
void generate(const Shape &sh, const std::string &out, const std::string &tok) {
    fs::create_directories(out);
    for (const char *f : {"tokenizer.model", "tokenizer_config.json"})
        if (fs::exists(fs::path(tok) / f))
            fs::copy_file(fs::path(tok) / f, fs::path(out) / f, fs::copy_options::overwrite_existing);
    fs::remove(fs::path(out) / "model.safetensors.index.json");  // a stale index would shadow model.safetensors
    write_text(fs::path(out) / "config.json", json_text(random_config(sh)));
    Sink sink;
    sink.files.resize(1);
    add_random_tensors(sink, sh);
    write_weights(sink.files[0], fs::path(out) / "model.safetensors");
    std::fprintf(stderr, "pangu-gen-model: wrote %s (%.2f GB of weights)\n", out.c_str(),
                 sink.files[0].data_bytes() / 1e9);
}

// ---- --layout: the published openPangu-Embedded checkpoints ----------------------------------------------------

constexpr int kLayoutVocab = 153376;
constexpr int kLayoutEos = 45892;  // [unused10]: config.json's and generation_config.json's eos_token_id

// tokenizer_config.json's added_tokens_decoder in the 1B and 7B releases (all special: true).
struct SpecialPiece {
    int id;
    const char *content;
};
const SpecialPiece kSpecialPieces[] = {
    {0, "<unk>"},          {1, "<s>"},            {2, "</s>"},           {45806, "<|User|>:"},  {45813, "<|Bot|>:"},
    {45830, "[unused0]"},  {45840, "[unused1]"},  {45846, "[unused2]"},  {45849, "[unused3]"},  {45861, "[unused4]"},
    {45866, "[unused5]"},  {45874, "[unused6]"},  {45883, "[unused7]"},  {45884, "[unused8]"},  {45887, "[unused9]"},
    {45892, "[unused10]"}, {45920, "[unused11]"}, {45932, "[unused12]"}, {45938, "[unused13]"}, {45953, "[unused14]"},
    {45968, "[unused15]"}, {45974, "[unused16]"}, {45982, "[unused17]"}, {45986, "[unused18]"}, {46005, "[unused19]"},
    {46007, "[unused20]"}, {46014, "[unused21]"}, {46017, "[unused22]"}, {46028, "[unused23]"}, {46032, "[unused24]"},
    {46081, "[unused25]"}, {46086, "[unused26]"}, {46101, "[unused27]"}, {46183, "[unused28]"}, {46230, "[unused29]"},
    {46245, "[unused30]"}, {46257, "[unused31]"}, {144208, "[unused32]"}, {144209, "[unused33]"},
};

// The published sizes of a layout (`real`), or the shrunk default: hidden 64, 2 layers, the heads per KV head and
// the MLP ratio of the real model, the real vocabulary. head_dim is hidden / heads, as config.json gives none.
Shape layout_shape(bool is_7b, bool real) {
    Shape s;  // the 1B: 26 layers, hidden 1536, 12/6 heads, MLP 6144, tied
    s.rotary_tensors = true;
    if (is_7b) {
        s.layers = 34;
        s.hidden = 4096;
        s.heads = 32;
        s.kv_heads = 8;
        s.ff = 12800;
        s.tied = false;
    }
    if (!real) {
        s.layers = 2;
        s.hidden = 64;
        s.heads = 4;
        s.kv_heads = is_7b ? 1 : 2;
        s.ff = is_7b ? 200 : 256;
    }
    s.head_dim = s.hidden / s.heads;
    s.vocab = kLayoutVocab;
    return s;
}

// ---- tokenizer.model: a SentencePiece ModelProto written in the protobuf wire format ----------------------------

// One field of a protobuf message: its number and wire type, its payload (length-delimited fields: the bytes;
// otherwise the value's bytes) and the whole field, tag included.
struct WireField {
    uint32_t number, type;
    std::string_view payload, raw;
};

bool read_varint(std::string_view s, size_t &p, uint64_t &v) {
    v = 0;
    for (int shift = 0; shift < 64 && p < s.size(); shift += 7) {
        const unsigned char b = static_cast<unsigned char>(s[p++]);
        v |= uint64_t(b & 0x7F) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

// The fields of message `msg`; PANGU_ERR_TOKENIZER naming `what` when it is malformed.
std::vector<WireField> wire_fields(std::string_view msg, const std::string &what) {
    std::vector<WireField> out;
    for (size_t p = 0; p < msg.size();) {
        const size_t start = p;
        uint64_t tag = 0, len = 0;
        bool ok = read_varint(msg, p, tag);
        const uint32_t type = uint32_t(tag & 7);
        size_t begin = p;
        if (ok && type == 0) {
            ok = read_varint(msg, p, len);
            len = p - begin;
        } else if (ok && type == 2) {
            ok = read_varint(msg, p, len);
            begin = p;
        } else if (ok && (type == 1 || type == 5)) {
            len = type == 1 ? 8 : 4;
        } else {
            ok = false;
        }
        if (!ok || len > msg.size() - begin) fail(PANGU_ERR_TOKENIZER, what + ": malformed protobuf");
        p = begin + len;
        out.push_back({uint32_t(tag >> 3), type, msg.substr(begin, len), msg.substr(start, p - start)});
    }
    return out;
}

void put_varint(std::string &out, uint64_t v) {
    for (; v >= 0x80; v >>= 7) out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    out.push_back(static_cast<char>(v));
}

void put_bytes_field(std::string &out, uint32_t number, std::string_view payload) {
    put_varint(out, uint64_t(number) << 3 | 2);
    put_varint(out, payload.size());
    out.append(payload);
}

// A ModelProto.SentencePiece: piece (1), score (2, a little-endian float), type (3).
std::string piece_message(std::string_view piece, float score, uint8_t type) {
    std::string m;
    put_bytes_field(m, 1, piece);
    put_varint(m, 2 << 3 | 5);
    uint32_t bits;
    std::memcpy(&bits, &score, 4);
    for (int i = 0; i < 4; ++i) m.push_back(static_cast<char>(bits >> (8 * i)));
    put_varint(m, 3 << 3 | 0);
    put_varint(m, type);
    return m;
}

// A piece's text and score, from its message.
std::pair<std::string_view, float> piece_fields(std::string_view msg, const std::string &what) {
    std::pair<std::string_view, float> r{std::string_view(), 0.0f};
    for (const WireField &f : wire_fields(msg, what)) {
        if (f.number == 1 && f.type == 2) r.first = f.payload;
        if (f.number == 2 && f.type == 5) {
            uint32_t bits = 0;
            for (int i = 0; i < 4; ++i) bits |= uint32_t(static_cast<unsigned char>(f.payload[i])) << (8 * i);
            std::memcpy(&r.second, &bits, 4);
        }
    }
    return r;
}

// TrainerSpec `spec` with its vocab_size (field 4) set to n.
std::string with_vocab_size(std::string_view spec, int n, const std::string &what) {
    std::string out;
    for (const WireField &f : wire_fields(spec, what))
        if (f.number != 4) out.append(f.raw);
    put_varint(out, 4 << 3 | 0);
    put_varint(out, static_cast<uint64_t>(n));
    return out;
}

// The layout's tokenizer.model: the pieces of `base_path` at their ids, the special pieces at theirs typed NORMAL
// (how the real file types them is unknown; this way only tokenizer_config.json makes them special), and filler
// pieces "<fill_ID>" at every other id up to n_vocab. No text reaches a filler or a special piece by BPE merges
// (no split of one is two pieces), so text tokenizes exactly as with the base. The base's trainer_spec (with
// vocab_size n_vocab), normalizer_spec and other fields are kept.
std::string layout_tokenizer(const std::string &base_path, int n_vocab) {
    std::string data, why;
    if (read_file(base_path, kMaxTokenizerBytes, data, why) != ReadResult::kOk)
        fail(PANGU_ERR_TOKENIZER, "cannot read " + base_path + (why.empty() ? "" : ": " + why));
    std::vector<std::string_view> base;
    std::string rest;
    for (const WireField &f : wire_fields(data, base_path)) {
        if (f.number == 1 && f.type == 2) base.push_back(f.payload);
        else if (f.number == 2 && f.type == 2) put_bytes_field(rest, 2, with_vocab_size(f.payload, n_vocab, base_path));
        else rest.append(f.raw);
    }
    std::vector<const char *> special(static_cast<size_t>(n_vocab), nullptr);
    for (const SpecialPiece &p : kSpecialPieces) special[static_cast<size_t>(p.id)] = p.content;
    float score = 0.0f;
    std::set<std::string_view> texts;
    for (size_t id = 0; id < base.size(); ++id) {
        const auto [text, s] = piece_fields(base[id], base_path);
        if (id >= special.size() || (special[id] && text != special[id]) || text.find("<fill_") != text.npos)
            fail(PANGU_ERR_TOKENIZER, base_path + ": piece " + std::to_string(id) + " (\"" + std::string(text) +
                                          "\") is where the layout needs a special piece or a filler");
        texts.insert(text);
        score = std::min(score, s);
    }
    std::string out;
    for (size_t id = 0; id < special.size(); ++id) {
        if (id < base.size()) {
            put_bytes_field(out, 1, base[id]);
            continue;
        }
        const std::string text = special[id] ? special[id] : "<fill_" + std::to_string(id) + ">";
        if (texts.count(text)) fail(PANGU_ERR_TOKENIZER, base_path + " already has the piece \"" + text + "\"");
        put_bytes_field(out, 1, piece_message(text, score -= 1.0f, 1 /* NORMAL */));
    }
    return out + rest;
}

// tokenizer_config.json as released: add_bos_token, the added_tokens_decoder, eos_token [unused10], the chat
// template (which this library does not read: it has the same template built in).
std::string layout_tokenizer_config() {
    Json::Value t;
    t["add_bos_token"] = true;
    t["add_eos_token"] = false;
    t["add_prefix_space"] = true;
    for (const SpecialPiece &p : kSpecialPieces) {
        Json::Value &e = t["added_tokens_decoder"][std::to_string(p.id)];
        e["content"] = p.content;
        for (const char *flag : {"lstrip", "normalized", "rstrip", "single_word"}) e[flag] = false;
        e["special"] = true;
    }
    t["auto_map"]["AutoTokenizer"].append("tokenization_openpangu.PanguTokenizer");
    t["auto_map"]["AutoTokenizer"].append(Json::Value());
    t["bos_token"] = "<s>";
    t["clean_up_tokenization_spaces"] = false;
    t["eos_token"] = "[unused10]";
    t["legacy"] = true;
    t["model_max_length"] = "@MODEL_MAX_LENGTH@";  // an integer beyond 64 bits, written in below
    t["pad_token"] = "<unk>";
    t["sp_model_kwargs"] = Json::Value(Json::objectValue);
    t["spaces_between_special_tokens"] = false;
    t["tokenizer_class"] = "PanguTokenizer";
    t["unk_token"] = "<unk>";
    t["use_default_system_prompt"] = false;
    t["chat_template"] =
        "{% set names = {'system': '系统', 'user': '用户', 'assistant': '助手', 'tool': '工具', 'function': '方法'} %}"
        "{% if messages and messages[0]['role'] != 'system' %}[unused9]系统：[unused10]{% endif %}"
        "{% for m in messages %}[unused9]{{ names[m['role']] }}：{{ m['content'] }}[unused10]{% endfor %}"
        "{% if add_generation_prompt %}[unused9]助手：{% endif %}";
    std::string text = json_text(t);
    const std::string mark = "\"@MODEL_MAX_LENGTH@\"";
    text.replace(text.find(mark), mark.size(), "1000000000000000019884624838656");  // Python's int(1e30)
    return text;
}

std::string layout_special_tokens_map() {
    Json::Value m;
    for (const auto &[role, content] : {std::pair<const char *, const char *>{"bos_token", "<s>"},
                                        {"eos_token", "[unused10]"}, {"pad_token", "<unk>"}, {"unk_token", "<unk>"}}) {
        Json::Value &e = m[role];
        e["content"] = content;
        for (const char *flag : {"lstrip", "normalized", "rstrip", "single_word"}) e[flag] = false;
    }
    return json_text(m);
}

std::string layout_generation_config() {
    Json::Value g;
    g["do_sample"] = true;
    g["temperature"] = 1.0;
    g["top_k"] = 0;
    g["top_p"] = 0.8;
    g["eos_token_id"] = kLayoutEos;
    return json_text(g);
}

// config.json with the released field names; head_dim only when it differs from hidden / heads (never for
// the published sizes: the 7B's config.json has none).
std::string layout_config(const Shape &sh) {
    Json::Value c;
    c["architectures"].append("PanguEmbeddedForCausalLM");
    c["auto_map"]["AutoConfig"] = "configuration_openpangu_dense.PanguEmbeddedConfig";
    c["auto_map"]["AutoModel"] = "modeling_openpangu_dense.PanguEmbeddedModel";
    c["auto_map"]["AutoModelForCausalLM"] = "modeling_openpangu_dense.PanguEmbeddedForCausalLM";
    c["bias"] = true;
    c["attention_dropout"] = 0.0;
    c["bos_token_id"] = 1;
    c["pad_token_id"] = 0;
    c["eos_token_id"] = kLayoutEos;
    c["hidden_act"] = "silu";
    c["hidden_size"] = sh.hidden;
    c["initializer_range"] = 0.02;
    c["intermediate_size"] = sh.ff;
    c["max_position_embeddings"] = 32768;
    c["model_type"] = "PanguEmbedded";
    c["num_attention_heads"] = sh.heads;
    c["num_hidden_layers"] = sh.layers;
    c["num_key_value_heads"] = sh.kv_heads;
    c["rms_norm_eps"] = 1e-5;
    c["rope_theta"] = kRopeTheta;
    c["tie_word_embeddings"] = sh.tied;
    c["torch_dtype"] = sh.dtype == DType::F32 ? "float32" : sh.dtype == DType::F16 ? "float16" : "bfloat16";
    c["transformers_version"] = "4.53.2";
    c["use_cache"] = true;
    c["vocab_size"] = sh.vocab;
    if (sh.head_dim != sh.hidden / sh.heads) c["head_dim"] = sh.head_dim;
    return json_text(c);
}

// Which of n files each unit of the model goes to (units as in Sink): in order, about equal in bytes, none empty.
std::vector<int> plan_shards(const Shape &sh, int n) {
    const int units = sh.layers + 2;
    Sink probe;  // one file per unit, to measure them; nothing is filled
    probe.files.resize(static_cast<size_t>(units));
    for (int u = 0; u < units; ++u) probe.file_of_unit.push_back(u);
    add_random_tensors(probe, sh);
    uint64_t total = 0, done = 0;
    for (const SafetensorsWriter &f : probe.files) total += f.data_bytes();
    std::vector<int> file(static_cast<size_t>(units));
    int k = 0;
    for (int u = 0; u < units; ++u) {
        // Move on when this file has its share, or when every file left needs one of the units left.
        if (u > 0 && k < n - 1 && (done >= total / n * (k + 1) || units - u == n - 1 - k)) ++k;
        file[static_cast<size_t>(u)] = k;
        done += probe.files[static_cast<size_t>(u)].data_bytes();
    }
    return file;
}

std::string shard_name(int k, int n) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k + 1, n);
    return name;
}

// The weights: model.safetensors, or n shards and model.safetensors.index.json naming each tensor's shard (written
// last, so that an interrupted run leaves no index). Returns the bytes of tensor data.
uint64_t write_layout_weights(const Shape &sh, int n, const fs::path &out) {
    Sink sink;
    sink.files.resize(static_cast<size_t>(n));
    if (n > 1) sink.file_of_unit = plan_shards(sh, n);
    add_random_tensors(sink, sh);
    uint64_t total = 0;
    for (int k = 0; k < n; ++k) {
        SafetensorsWriter &w = sink.files[static_cast<size_t>(k)];
        w.set_metadata("format", "pt");
        write_weights(w, out / (n == 1 ? "model.safetensors" : shard_name(k, n)));
        total += w.data_bytes();
    }
    if (n == 1) return total;
    Json::Value index;
    index["metadata"]["total_size"] = Json::UInt64(total);
    for (const auto &[name, k] : sink.names) index["weight_map"][name] = shard_name(k, n);
    write_text(out / "model.safetensors.index.json", json_text(index));
    return total;
}

// The --layout mode.
void generate_layout(const std::string &layout, const Shape &sh, int shards, const std::string &out_dir,
                     const std::string &tok) {
    const fs::path out(out_dir);
    fs::create_directories(out);
    // Stale weights of the other kind would be read instead: an index shadows model.safetensors, and without
    // an index a loader falls back to it.
    fs::remove(out / (shards > 1 ? "model.safetensors" : "model.safetensors.index.json"));
    write_text(out / "tokenizer.model", layout_tokenizer((fs::path(tok) / "tokenizer.model").string(), sh.vocab));
    write_text(out / "tokenizer_config.json", layout_tokenizer_config());
    write_text(out / "special_tokens_map.json", layout_special_tokens_map());
    write_text(out / "generation_config.json", layout_generation_config());
    write_text(out / "config.json", layout_config(sh));
    const uint64_t bytes = write_layout_weights(sh, shards, out);
    std::fprintf(stderr,
                 "pangu-gen-model: wrote %s (%s layout: %d layers, hidden %d, %d/%d heads of %d, MLP %d, %s, "
                 "%d file%s; %.2f GB of weights)\n",
                 out_dir.c_str(), layout.c_str(), sh.layers, sh.hidden, sh.heads, sh.kv_heads, sh.head_dim, sh.ff,
                 sh.tied ? "tied" : "untied", shards, shards > 1 ? "s" : "", bytes / 1e9);
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
    Shape given;  // sizes given on the command line (for --widen-from and --layout, whose defaults differ), else 0
    std::string out, tok = PANGU_DEFAULT_TOKENIZER_DIR, widen_from, layout;
    bool untied = false, real_size = false;
    int shards = 0;     // --shards (0: the layout's own)
    std::string error;  // why the command line is wrong, when it is
    Args() { given.layers = given.hidden = given.heads = given.kv_heads = given.head_dim = given.ff = given.vocab = 0; }
};

// Returns false for a usage error (a.error says what when more than the usage is needed).
// "ID,ID,..." of non-negative ids into `out`; false with the reason in `error`.
bool parse_chain(const std::string &text, std::vector<int> &out, std::string &error) {
    size_t at = 0;
    while (at <= text.size()) {
        const size_t comma = std::min(text.find(',', at), text.size());
        int id = 0;
        if (!parse_int(text.substr(at, comma - at).c_str(), id) && text.substr(at, comma - at) != "0") {
            error = "--chain needs token ids separated by commas, not '" + text + "'";
            return false;
        }
        out.push_back(id);
        at = comma + 1;
    }
    return true;
}

bool parse_args(int argc, char **argv, Args &a) {
    Shape &sh = a.sh, &given = a.given;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto num = [&](int &dst) {
            if (i + 1 < argc && parse_int(argv[++i], dst)) return true;
            a.error = arg + " needs a positive integer";
            return false;
        };
        if (arg == "-o" && i + 1 < argc) a.out = argv[++i];
        else if (arg == "--tokenizer" && i + 1 < argc) a.tok = argv[++i];
        else if (arg == "--widen-from" && i + 1 < argc) a.widen_from = argv[++i];
        else if (arg == "--layout" && i + 1 < argc) a.layout = argv[++i];
        else if (arg == "--real-size") a.real_size = true;
        else if (arg == "--shards") { if (!num(a.shards)) return false; }
        else if (arg == "--bias-token") { if (!num(sh.bias_token)) return false; }
        else if (arg == "--chain" && i + 1 < argc) { if (!parse_chain(argv[++i], sh.chain, a.error)) return false; }
        else if (arg == "--layers") { if (!num(sh.layers)) return false; given.layers = sh.layers; }
        else if (arg == "--hidden") { if (!num(sh.hidden)) return false; given.hidden = sh.hidden; }
        else if (arg == "--heads") { if (!num(sh.heads)) return false; given.heads = sh.heads; }
        else if (arg == "--kv-heads") { if (!num(sh.kv_heads)) return false; given.kv_heads = sh.kv_heads; }
        else if (arg == "--head-dim") { if (!num(sh.head_dim)) return false; given.head_dim = sh.head_dim; }
        else if (arg == "--ff") { if (!num(sh.ff)) return false; given.ff = sh.ff; }
        else if (arg == "--vocab") { if (!num(sh.vocab)) return false; given.vocab = sh.vocab; }
        else if (arg == "--seed") { int s; if (!num(s)) return false; sh.seed = static_cast<uint64_t>(s); }
        else if (arg == "--untied") { sh.tied = false; a.untied = true; }
        else if (arg == "--dtype" && i + 1 < argc) {
            const std::string d = argv[++i];
            if (d == "bf16") sh.dtype = DType::BF16;
            else if (d == "f16") sh.dtype = DType::F16;
            else if (d == "f32") sh.dtype = DType::F32;
            else return a.error = "--dtype must be bf16, f16 or f32", false;
        } else return a.error = "unknown or incomplete argument '" + arg + "'", false;
    }
    return true;
}

// --layout: the layout's shape with the sizes given on the command line, and the checks of the flags the layout
// fixes. Returns "" or what is wrong.
std::string resolve_layout(Args &a) {
    const bool is_7b = a.layout == "openpangu-7b";
    if (!is_7b && a.layout != "openpangu-1b")
        return "unknown --layout '" + a.layout + "' (openpangu-1b or openpangu-7b)";
    if (!a.widen_from.empty()) return "--layout and --widen-from exclude each other";
    if (a.given.vocab) return "--layout fixes the vocabulary (153376 pieces): --vocab is not allowed";
    if (a.untied) return "--layout fixes the tying of the embeddings (the 1B ties them, the 7B does not): no --untied";
    Shape s = layout_shape(is_7b, a.real_size);
    const Shape &g = a.given;
    if (g.layers) s.layers = g.layers;
    if (g.hidden) s.hidden = g.hidden;
    if (g.heads) s.heads = g.heads;
    if (g.kv_heads) s.kv_heads = g.kv_heads;
    if (g.ff) s.ff = g.ff;
    s.head_dim = g.head_dim ? g.head_dim : s.hidden / s.heads;
    if (s.head_dim < 2 || s.head_dim % 2) return "head_dim (" + std::to_string(s.head_dim) + ") must be even";
    s.dtype = a.sh.dtype;
    s.seed = a.sh.seed;
    s.bias_token = a.sh.bias_token;
    s.chain = a.sh.chain;
    a.sh = s;
    if (!a.shards) a.shards = is_7b ? 4 : 1;
    if (a.shards > s.layers + 2)
        return "--shards " + std::to_string(a.shards) + ": at most " + std::to_string(s.layers + 2) +
               " (the embeddings, each layer, the head)";
    return "";
}

// Checks of the whole command line; returns "" or what is wrong.
std::string check_args(Args &a) {
    if (a.out.empty()) return "-o DIR is required";
    if (!a.layout.empty()) {
        if (std::string e = resolve_layout(a); !e.empty()) return e;
    } else if (a.real_size || a.shards) {
        return std::string(a.real_size ? "--real-size" : "--shards") + " needs --layout";
    }
    if (!a.widen_from.empty()) {
        if (a.given.head_dim || a.given.vocab) return "--widen-from: the source fixes head_dim and the vocabulary";
        if (a.sh.bias_token >= 0) return "--bias-token does not go with --widen-from";
        return "";  // widen_sizes checks the sizes against the source
    }
    if (!a.sh.chain.empty()) {
        if (!a.widen_from.empty() || a.sh.bias_token >= 0) return "--chain goes with neither --widen-from nor --bias-token";
        if (a.sh.tied) return "--chain needs an untied head (--layout openpangu-7b, or --untied)";
        if (static_cast<int>(a.sh.chain.size()) + 1 >= a.sh.hidden) return "--chain is longer than the hidden size allows";
        for (int id : a.sh.chain)
            if (id >= a.sh.vocab) return "--chain: id " + std::to_string(id) + " is outside the vocabulary";
    }
    if (a.sh.bias_token >= a.sh.vocab)
        return "--bias-token " + std::to_string(a.sh.bias_token) + " is outside the vocabulary (" +
               std::to_string(a.sh.vocab) + " tokens)";
    if (a.sh.heads % a.sh.kv_heads != 0) return "--heads must be a multiple of --kv-heads";
    return "";
}

}  // namespace

int main(int argc, char **argv) {
    Args a;
    if (!parse_args(argc, argv, a) || !(a.error = check_args(a)).empty()) {
        if (!a.error.empty()) std::cerr << "pangu-gen-model: " << a.error << "\n";
        return usage();
    }
    try {
        if (!a.widen_from.empty()) return widen(a.widen_from, a.out, a.given);
        if (!a.layout.empty()) generate_layout(a.layout, a.sh, a.shards, a.out, a.tok);
        else generate(a.sh, a.out, a.tok);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "pangu-gen-model: %s\n", e.what());
        return 1;
    }
    return 0;
}
