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
#include <json/json.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include "common.h"
#include "safetensors_writer.h"
#include "tensor.h"

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
                 "                       [--head-dim N] [--ff N] [--vocab N] [--untied] [--dtype bf16|f16|f32] [--seed N]\n";
    return 2;
}

bool parse_int(const char *s, int &out) {
    char *end = nullptr;
    const long v = std::strtol(s, &end, 10);
    if (!end || *end || v <= 0 || v > (1 << 24)) return false;
    out = static_cast<int>(v);
    return true;
}

}  // namespace

int main(int argc, char **argv) {
    Shape sh;
    std::string out, tok = PANGU_DEFAULT_TOKENIZER_DIR;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto num = [&](int &dst) { return i + 1 < argc && parse_int(argv[++i], dst); };
        if (a == "-o" && i + 1 < argc) out = argv[++i];
        else if (a == "--tokenizer" && i + 1 < argc) tok = argv[++i];
        else if (a == "--layers") { if (!num(sh.layers)) return usage(); }
        else if (a == "--hidden") { if (!num(sh.hidden)) return usage(); }
        else if (a == "--heads") { if (!num(sh.heads)) return usage(); }
        else if (a == "--kv-heads") { if (!num(sh.kv_heads)) return usage(); }
        else if (a == "--head-dim") { if (!num(sh.head_dim)) return usage(); }
        else if (a == "--ff") { if (!num(sh.ff)) return usage(); }
        else if (a == "--vocab") { if (!num(sh.vocab)) return usage(); }
        else if (a == "--seed") { int s; if (!num(s)) return usage(); sh.seed = static_cast<uint64_t>(s); }
        else if (a == "--untied") sh.tied = false;
        else if (a == "--dtype" && i + 1 < argc) {
            const std::string d = argv[++i];
            if (d == "bf16") sh.dtype = DType::BF16;
            else if (d == "f16") sh.dtype = DType::F16;
            else if (d == "f32") sh.dtype = DType::F32;
            else return usage();
        } else return usage();
    }
    if (out.empty() || sh.heads % sh.kv_heads != 0) return usage();
    try {
        fs::create_directories(out);
        for (const char *f : {"tokenizer.model", "tokenizer_config.json"})
            if (fs::exists(fs::path(tok) / f))
                fs::copy_file(fs::path(tok) / f, fs::path(out) / f, fs::copy_options::overwrite_existing);
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
        std::ofstream(fs::path(out) / "config.json") << c << "\n";

        SafetensorsWriter w;
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
        const bool tty = isatty(fileno(stderr));
        w.write((fs::path(out) / "model.safetensors").string(), [&](const std::string &name, uint64_t done, uint64_t total) {
            if (tty) std::fprintf(stderr, "\r%6.1f%%  %-60s", 100.0 * done / total, name.c_str());
        });
        if (tty) std::fprintf(stderr, "\n");
        std::fprintf(stderr, "pangu-gen-model: wrote %s (%.2f GB of weights)\n", out.c_str(), w.data_bytes() / 1e9);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "pangu-gen-model: %s\n", e.what());
        return 1;
    }
    return 0;
}
