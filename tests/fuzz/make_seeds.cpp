// Writes the fuzzers' fixed data and seed corpora (run by hand when the harnesses' input formats change;
// the output is committed):
//   data/tiny-chat/            a complete model of 2 layers, hidden size 8, with a 400-piece tokenizer that
//                              has chat tokens, trained here on ../shared/data/dev.jsonl
//   corpus/fuzz_model_dir/     tiny model directories (bf16 tied, f16 untied without biases and with pruned
//                              MLP widths, W8A16, W8A8, W4A8, W4A16 and mixed precision with zero points and
//                              act-order, sharded), as "==> NAME <==" file bundles
//   corpus/fuzz_safetensors/   tiny checkpoints, pangu-tiny's real header with its data cut short
//   corpus/fuzz_config/        config.json variants, an index, tokenizer_config.json
//   corpus/fuzz_tokenizer/     text from dev.jsonl, special pieces, broken UTF-8, token ids, raw bytes
//   corpus/fuzz_api/           a few programs (all defaults on each target model; pseudo-random bytes)
//   corpus/fuzz_train_state/   training states (save_state) of fuzz_train_state.h's shape: each trainable set at
//                              step 0 without settings and at a later step with them; a tensor missing, one BF16,
//                              NaN in a moment. Only these files are replaced: others in the directory stay.
// Usage: fuzz-make-seeds TESTS_FUZZ_DIR SHARED_DIR [fuzz_train_state|fuzz_api]
// With a harness named, only its seeds are written (those two need no tokenizer or model). The files written
// replace those of the same name; others in the corpus directories (seeds added by hand) stay.
#include <json/json.h>
#include <sentencepiece_trainer.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "checkpoint.h"
#include "format/safetensors.h"
#include "fuzz_train_state.h"
#include "lowbit.h"
#include "lowbit_model.h"
#include "safetensors_writer.h"
#include "model/tensor.h"

namespace fs = std::filesystem;
using namespace pangu;

namespace {

std::string slurp(const fs::path &p) {
    std::ifstream in(p, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + p.string());
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void spit(const fs::path &p, const std::string &s) {
    fs::create_directories(p.parent_path());
    std::ofstream out(p, std::ios::binary);
    out << s;
    if (!out) throw std::runtime_error("cannot write " + p.string());
}

std::string json(const Json::Value &v) {
    Json::StreamWriterBuilder b;
    b["indentation"] = "  ";
    return Json::writeString(b, v) + "\n";
}

uint64_t g_rng = 12345;
float uniform() {  // splitmix64 -> [-1, 1)
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<float>(z >> 40) / 8388608.0f - 1.0f;
}

struct Tiny {
    DType dtype = DType::BF16;
    bool tied = true, bias = true, w8a16 = false, pruned = false;
    bool int8_act = false;  // with w8a16's weights: "w8a8", int8 activations
    bool w4a8 = false;      // 4-bit linear weights (PGD_I4) in groups of `group`; needs widths that are multiples of 64
    // Low-bit linear weights in pangu-quantize's layout (tools/lib: rtn_quantize, pack_linear), asymmetric (zero
    // points) with a stored column order (GPTQ act-order's; here a shuffle, quantized by RTN): "w4a16" (PGD_I4)
    // or "mixed" (PGD_QB, row r of each matrix 2, 3, 4, 6 or 8 bits by r % 5, so every width is present).
    // Widths multiples of 64, as for w4a8.
    const char *lowbit = nullptr;
    bool i8_embd = false;   // the embedding table int8 per row (pangu-quantize --quantize-embeddings)
    int group = 32;
    int vocab = 400, hidden = 8, layers = 2, heads = 2, kv = 1, head_dim = 4, ff = 12;
};

Json::Value tiny_config(const Tiny &t) {
    Json::Value c;
    c["architectures"].append("PanguEmbeddedForCausalLM");
    c["model_type"] = "PanguEmbedded";
    c["vocab_size"] = t.vocab;
    c["hidden_size"] = t.hidden;
    c["intermediate_size"] = t.ff;
    c["num_hidden_layers"] = t.layers;
    c["num_attention_heads"] = t.heads;
    c["num_key_value_heads"] = t.kv;
    c["head_dim"] = t.head_dim;
    c["hidden_act"] = "silu";
    c["max_position_embeddings"] = 64;
    c["rms_norm_eps"] = 1e-5;
    c["rope_theta"] = 10000.0;
    c["bias"] = t.bias;
    c["tie_word_embeddings"] = t.tied;
    c["bos_token_id"] = 1;
    c["eos_token_id"] = 2;
    c["pad_token_id"] = 0;
    if (t.w8a16) {
        c["quantization_config"]["quant_method"] = t.int8_act ? "w8a8" : "w8a16";
        c["quantization_config"]["bits"] = 8;
        c["quantization_config"]["group_size"] = -1;
        c["quantization_config"]["activation_dtype"] = t.int8_act ? "int8" : "bfloat16";
    }
    if (t.w4a8) {
        c["quantization_config"]["quant_method"] = "w4a8";
        c["quantization_config"]["bits"] = 4;
        c["quantization_config"]["group_size"] = t.group;
        c["quantization_config"]["activation_dtype"] = "int8";
    }
    if (t.lowbit) {
        const bool mixed = std::string(t.lowbit) == "mixed";
        Json::Value &q = c["quantization_config"];
        q["quant_method"] = t.lowbit;
        if (mixed)
            for (int b : kLowBitWidths) q["bits"].append(b);
        else
            q["bits"] = 4;
        q["group_size"] = t.group;
        q["symmetric"] = false;
        q["act_order"] = true;
        q["activation_dtype"] = "bfloat16";
    }
    return c;
}

// The tensors of a tiny model, added to one writer or split over two (shards: embeddings and head in the
// first, layers in the second).
void tiny_tensors(const Tiny &t, SafetensorsWriter &w0, SafetensorsWriter &w1) {
    auto add = [&](SafetensorsWriter &w, const std::string &name, std::vector<int64_t> shape, float scale,
                   float offset, bool matrix) {
        size_t n = 1;
        for (int64_t d : shape) n *= static_cast<size_t>(d);
        std::vector<float> v(n);
        for (auto &x : v) x = offset + scale * uniform();
        if (matrix && t.lowbit && name != "lm_head.weight") {
            const int64_t rows = shape[0], cols = shape[1];
            const bool mixed = std::string(t.lowbit) == "mixed";
            // A fixed shuffle of the columns as the stored order; RTN on the columns in that order.
            std::vector<int32_t> perm(static_cast<size_t>(cols));
            for (int64_t c = 0; c < cols; ++c) perm[c] = static_cast<int32_t>(c);
            for (int64_t c = cols - 1; c > 0; --c)
                std::swap(perm[c], perm[static_cast<size_t>((uniform() + 1.0f) * 0.5f * float(c + 1)) % (c + 1)]);
            MatrixRM ws(rows, cols);
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t c = 0; c < cols; ++c) ws(r, c) = v[r * cols + perm[c]];
            std::vector<uint8_t> bits(static_cast<size_t>(rows), 4);
            if (mixed)
                for (int64_t r = 0; r < rows; ++r) bits[r] = static_cast<uint8_t>(kLowBitWidths[r % 5]);
            LowbitOptions o;
            o.group = t.group;
            o.symmetric = false;
            LowbitMatrix lq = rtn_quantize(ws, bits, o, name);
            lq.perm = perm;
            const PackedLinear p = pack_linear(lq, mixed, false);
            if (p.f32_scales) throw std::runtime_error(name + ": scales beyond F16");
            std::vector<uint16_t> sc(p.scale.size());
            for (size_t i = 0; i < sc.size(); ++i) sc[i] = f32_to_f16(p.scale[i]);
            if (mixed) w.add_copy(name, DType::U8, {static_cast<int64_t>(p.data.size())}, p.data.data());
            else w.add_copy(name, DType::U8, {rows, cols / 2}, p.data.data());
            w.add_copy(name + "_scale", DType::F16, {rows, cols / t.group}, sc.data());
            w.add_copy(name + "_zero", DType::U8, {rows, cols / t.group}, p.zero.data());
            w.add_copy(name + "_perm", DType::I32, {cols}, p.perm.data());
            if (mixed) {
                w.add_copy(name + "_bits", DType::U8, {rows}, p.bits.data());
                w.add_copy(name + "_order", DType::I32, {rows}, p.order.data());
            }
            return;
        }
        if ((matrix && t.w8a16) || (t.i8_embd && name == "model.embed_tokens.weight")) {
            const int64_t rows = shape[0], cols = shape[1];
            std::vector<int8_t> q(n);
            std::vector<float> sc(static_cast<size_t>(rows));
            for (int64_t r = 0; r < rows; ++r) {
                float mx = 0;
                for (int64_t c = 0; c < cols; ++c) mx = std::max(mx, std::fabs(v[r * cols + c]));
                sc[r] = mx / 127.0f;
                for (int64_t c = 0; c < cols; ++c)
                    q[r * cols + c] = static_cast<int8_t>(std::lround(sc[r] > 0 ? v[r * cols + c] / sc[r] : 0));
            }
            w.add_copy(name, DType::I8, shape, q.data());
            w.add_copy(name + "_scale", DType::F32, {rows}, sc.data());
            return;
        }
        if (matrix && t.w4a8 && name != "lm_head.weight") {  // PGD_I4 (device.h): F16 scale per group
            const int64_t rows = shape[0], cols = shape[1], g = t.group;
            std::vector<uint8_t> q(n / 2, 0);
            std::vector<uint16_t> sc(static_cast<size_t>(rows * cols / g));
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t g0 = 0; g0 < cols; g0 += g) {
                    float mx = 0;
                    for (int64_t c = g0; c < g0 + g; ++c) mx = std::max(mx, std::fabs(v[r * cols + c]));
                    const uint16_t h = f32_to_f16(mx / 7.0f);
                    sc[r * (cols / g) + g0 / g] = h;
                    const float s = f16_to_f32(h);
                    for (int64_t c = g0; c < g0 + g; ++c) {
                        const long x = s > 0 ? std::lround(v[r * cols + c] / s) : 0;
                        const uint8_t nib = static_cast<uint8_t>(std::max(-8L, std::min(7L, x)) + 8);
                        q[r * cols / 2 + (c / 64) * 32 + c % 32] |= c % 64 < 32 ? nib : static_cast<uint8_t>(nib << 4);
                    }
                }
            w.add_copy(name, DType::U8, {rows, cols / 2}, q.data());
            w.add_copy(name + "_scale", DType::F16, {rows, cols / g}, sc.data());
            return;
        }
        std::vector<uint8_t> bytes(n * dtype_size(t.dtype));
        for (size_t i = 0; i < n; ++i) {
            if (t.dtype == DType::F32) std::memcpy(&bytes[4 * i], &v[i], 4);
            else {
                const uint16_t h = t.dtype == DType::F16 ? f32_to_f16(v[i]) : f32_to_bf16(v[i]);
                std::memcpy(&bytes[2 * i], &h, 2);
            }
        }
        w.add_copy(name, t.dtype, shape, bytes.data());
    };
    const int64_t H = t.hidden, QD = int64_t(t.heads) * t.head_dim, KVD = int64_t(t.kv) * t.head_dim;
    add(w0, "model.embed_tokens.weight", {t.vocab, H}, 0.5f, 0, false);
    if (!t.tied) add(w0, "lm_head.weight", {t.vocab, H}, 0.5f, 0, true);
    add(w0, "model.norm.weight", {H}, 0.1f, 1.0f, false);
    for (int l = 0; l < t.layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        const int64_t F = t.pruned ? t.ff - 4 * l : t.ff;
        add(w1, p + "input_layernorm.weight", {H}, 0.1f, 1.0f, false);
        add(w1, p + "post_attention_layernorm.weight", {H}, 0.1f, 1.0f, false);
        add(w1, p + "self_attn.q_proj.weight", {QD, H}, 0.5f, 0, true);
        add(w1, p + "self_attn.k_proj.weight", {KVD, H}, 0.5f, 0, true);
        add(w1, p + "self_attn.v_proj.weight", {KVD, H}, 0.5f, 0, true);
        add(w1, p + "self_attn.o_proj.weight", {H, QD}, 0.5f, 0, true);
        if (t.bias) {
            add(w1, p + "self_attn.q_proj.bias", {QD}, 0.05f, 0, false);
            add(w1, p + "self_attn.k_proj.bias", {KVD}, 0.05f, 0, false);
            add(w1, p + "self_attn.v_proj.bias", {KVD}, 0.05f, 0, false);
            add(w1, p + "self_attn.o_proj.bias", {H}, 0.05f, 0, false);
        }
        add(w1, p + "mlp.gate_proj.weight", {F, H}, 0.5f, 0, true);
        add(w1, p + "mlp.up_proj.weight", {F, H}, 0.5f, 0, true);
        add(w1, p + "mlp.down_proj.weight", {H, F}, 0.4f, 0, true);
    }
}

// A bundle of files in the fuzz_model_dir input format.
std::string bundle(const std::vector<std::pair<std::string, std::string>> &files) {
    std::string out;
    for (size_t i = 0; i < files.size(); ++i) {
        if (i) out += "\n";
        out += "==> " + files[i].first + " <==\n" + files[i].second;
    }
    return out;
}

std::string write_tiny(const Tiny &t, const fs::path &tmp, const std::string &tokenizer, bool sharded,
                       const fs::path &save_dir = {}) {
    fs::create_directories(tmp);
    SafetensorsWriter a, b;
    tiny_tensors(t, a, sharded ? b : a);
    const std::string config = json(tiny_config(t));
    const std::string tok_config = "{\"add_bos_token\": true, \"add_eos_token\": false}\n";
    spit(tmp / "config.json", config);
    std::vector<std::pair<std::string, std::string>> files = {{"config.json", config}};
    if (!sharded) {
        a.write((tmp / "model.safetensors").string());
        files.emplace_back("model.safetensors", slurp(tmp / "model.safetensors"));
    } else {
        const std::string s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";
        a.write((tmp / s1).string());
        b.write((tmp / s2).string());
        Json::Value index;
        index["metadata"]["total_size"] = Json::UInt64(a.data_bytes() + b.data_bytes());
        for (const auto &[file, shard] : {std::make_pair(tmp / s1, s1), std::make_pair(tmp / s2, s2)}) {
            TensorStore st;
            st.open_file(file.string(), MapOptions{});
            for (const auto &kv : st.tensors()) index["weight_map"][kv.first] = shard;
        }
        spit(tmp / "model.safetensors.index.json", json(index));
        files.emplace_back("model.safetensors.index.json", json(index));
        files.emplace_back(s1, slurp(tmp / s1));
        files.emplace_back(s2, slurp(tmp / s2));
    }
    files.emplace_back("tokenizer.model", tokenizer);
    files.emplace_back("tokenizer_config.json", tok_config);
    if (!save_dir.empty())
        for (const auto &f : files) spit(save_dir / f.first, f.second);
    return bundle(files);
}

std::string train_tokenizer(const fs::path &tmp, const fs::path &dev_jsonl) {
    // The first documents of dev.jsonl: Python and Chinese text, as the real models see.
    std::ifstream in(dev_jsonl);
    std::string line, corpus;
    Json::CharReaderBuilder rb;
    for (int i = 0; i < 40 && std::getline(in, line); ++i) {
        Json::Value doc;
        std::string errs;
        std::istringstream ls(line);
        if (Json::parseFromStream(rb, ls, &doc, &errs)) corpus += doc["text"].asString().substr(0, 4000) + "\n";
    }
    spit(tmp / "corpus.txt", corpus);
    const std::unordered_map<std::string, std::string> args = {
        {"input", (tmp / "corpus.txt").string()},
        {"model_prefix", (tmp / "tokenizer").string()},
        {"vocab_size", "400"},
        {"model_type", "bpe"},
        {"byte_fallback", "true"},
        {"character_coverage", "0.98"},
        {"user_defined_symbols", "[unused9],[unused10]"},
        {"add_dummy_prefix", "true"},
        {"normalization_rule_name", "identity"},  // no 240 KB character map in the file
        {"num_threads", "1"},
        {"minloglevel", "2"},
    };
    const auto status = sentencepiece::SentencePieceTrainer::Train(args);
    if (!status.ok()) throw std::runtime_error("training the tokenizer failed: " + status.ToString());
    return slurp(tmp / "tokenizer.model");
}

// A state file's tensors and metadata, to be written back with a change (the near misses).
struct RawState {
    struct Tensor {
        std::string name;
        DType dtype;
        std::vector<int64_t> shape;
        std::string bytes;
    };
    std::vector<Tensor> tensors;
    Json::Value metadata;
};

RawState read_state(const fs::path &p) {
    RawState r;
    const std::string all = slurp(p);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | static_cast<uint8_t>(all[i]);
    Json::Value header;
    std::string errs;
    std::istringstream hs(all.substr(8, hlen));
    if (!Json::parseFromStream(Json::CharReaderBuilder(), hs, &header, &errs)) throw std::runtime_error(p.string() + ": " + errs);
    r.metadata = header["__metadata__"];
    TensorStore st;
    st.open_file(p.string(), MapOptions{});
    for (const auto &kv : st.tensors())
        r.tensors.push_back({kv.first, kv.second.dtype, kv.second.shape,
                             std::string(static_cast<const char *>(kv.second.data), kv.second.nbytes)});
    return r;
}

void write_state(const RawState &r, const fs::path &p) {
    SafetensorsWriter w;
    for (const auto &t : r.tensors) w.add_copy(t.name, t.dtype, t.shape, t.bytes.data());
    for (const std::string &k : r.metadata.getMemberNames()) w.set_metadata(k, r.metadata[k].asString());
    w.write(p.string());
}

// corpus/fuzz_train_state/: written by save_state itself, from values of a fixed generator of their own (the
// other seeds' g_rng is left alone, so that they stay as they are).
void write_state_seeds(const fs::path &dir) {
    using namespace pangu::train;
    fs::create_directories(dir);
    const uint64_t saved_rng = g_rng;
    g_rng = 2024;
    for (Trainable tr : {Trainable::ALL, Trainable::LAYERS, Trainable::MLP}) {
        TrainState s;
        s.params = Params<float>::zeros(fuzz::train_state_shape());
        for (const TensorRef<float> &t : tensors(s.params, tr)) {
            for (int64_t i = 0; i < t.size; ++i) t.data[i] = 0.5f * uniform();
            if (!t.trainable) continue;
            s.m.emplace_back(static_cast<size_t>(t.size)), s.v.emplace_back(static_cast<size_t>(t.size));
            for (float &x : s.m.back()) x = 1e-3f * uniform();
            for (float &x : s.v.back()) x = 1e-6f * std::fabs(uniform());
        }
        const std::string name = std::string("state-") + trainable_name(tr);
        save_state(s, tr, (dir / (name + "-step0")).string());  // the least a state holds: meta null
        // As pangu-distill's periodic save: its settings as meta (shorter paths).
        s.step = 1234;
        s.meta["teacher"] = "/m/teacher", s.meta["student"] = "/m/student", s.meta["data"] = "/d/train.jsonl";
        s.meta["data_tokens"] = 0, s.meta["seq"] = 64, s.meta["batch"] = 4, s.meta["steps"] = 2000;
        s.meta["lr"] = 1e-3, s.meta["warmup"] = -1, s.meta["temp"] = 2.0, s.meta["ce_weight"] = 0.5;
        s.meta["clip"] = 1.0, s.meta["weight_decay"] = 0.0, s.meta["train"] = trainable_name(tr);
        s.meta["seed"] = Json::UInt64(18446744073709551615ull);
        save_state(s, tr, (dir / (name + "-step1234")).string());
    }
    // Near misses of the mlp state (the smallest): a moment missing, a parameter BF16 (same bytes), NaN in a
    // moment.
    const RawState mlp = read_state(dir / "state-mlp-step1234");
    auto edited = [&](const std::string &file, const std::function<void(RawState &)> &edit) {
        RawState r = mlp;
        edit(r);
        write_state(r, dir / file);
    };
    auto find = [](RawState &r, const std::string &name) -> RawState::Tensor & {
        for (auto &t : r.tensors)
            if (t.name == name) return t;
        throw std::runtime_error("no tensor " + name);
    };
    const std::string up1 = "model.layers.1.mlp.up_proj.weight";
    edited("near-missing-moment", [&](RawState &r) {
        r.tensors.erase(r.tensors.begin() + (&find(r, "adam_v." + up1) - r.tensors.data()));
    });
    edited("near-bf16-param", [&](RawState &r) {
        RawState::Tensor &t = find(r, "param.model.norm.weight");
        t.dtype = DType::BF16, t.shape = {2 * t.shape[0]};
    });
    edited("near-nan-moment", [&](RawState &r) {
        const float nan = std::nanf("");
        std::memcpy(&find(r, "adam_m." + up1).bytes[4 * 5], &nan, 4);
    });
    g_rng = saved_rng;
}

}  // namespace

// fuzz_api's programs: all defaults (zero bytes) on each of its four targets (the first byte), and pseudo-random
// bytes.
void write_api_seeds(const fs::path &dir) {
    static const char *const targets[] = {"api", "api-npusim", "api-bf16", "chat"};
    for (int t = 0; t < 4; ++t)
        spit(dir / (std::string("defaults-") + targets[t]), std::string(1, char(t)) + std::string(127, '\0'));
    g_rng = 777;
    for (int i = 0; i < 6; ++i) {
        std::string p;
        for (int j = 0; j < 160 + 40 * i; ++j) p += char(static_cast<int>((uniform() + 1.0f) * 128.0f));
        spit(dir / ("random-" + std::to_string(i)), p);
    }
}

int main(int argc, char **argv) {
    const std::string only = argc == 4 ? argv[3] : "";
    if (argc != 3 && !(argc == 4 && (only == "fuzz_train_state" || only == "fuzz_api"))) {
        std::cerr << "usage: fuzz-make-seeds TESTS_FUZZ_DIR SHARED_DIR [fuzz_train_state|fuzz_api]\n";
        return 2;
    }
    const fs::path out = argv[1], shared = argv[2];
    const fs::path tmp = fs::temp_directory_path() / "pangu_fuzz_seeds";
    try {
        if (only != "fuzz_api") write_state_seeds(out / "corpus/fuzz_train_state");
        if (only != "fuzz_train_state") write_api_seeds(out / "corpus/fuzz_api");
        if (argc == 4) return 0;
        fs::remove_all(tmp);
        fs::create_directories(tmp);
        const std::string tokenizer = train_tokenizer(tmp, shared / "data/dev.jsonl");
        const fs::path corpus = out / "corpus";
        fs::remove_all(out / "data/tiny-chat");

        // model directories
        Tiny bf16;
        spit(corpus / "fuzz_model_dir/tiny-bf16-tied",
             write_tiny(bf16, tmp / "a", tokenizer, false, out / "data/tiny-chat"));
        Tiny f16;
        f16.dtype = DType::F16;
        f16.tied = false;
        f16.bias = false;
        f16.pruned = true;
        spit(corpus / "fuzz_model_dir/tiny-f16-untied-nobias-pruned", write_tiny(f16, tmp / "b", tokenizer, false));
        Tiny q;
        q.w8a16 = true;
        q.dtype = DType::F32;
        spit(corpus / "fuzz_model_dir/tiny-w8a16", write_tiny(q, tmp / "c", tokenizer, false));
        spit(corpus / "fuzz_model_dir/tiny-sharded", write_tiny(bf16, tmp / "d", tokenizer, true));
        const uint64_t rng_before = g_rng;  // the seeds below came later: those after them stay as they were
        Tiny q8a8 = q;  // the W8A16 weights with int8 activations
        q8a8.int8_act = true;
        spit(corpus / "fuzz_model_dir/tiny-w8a8", write_tiny(q8a8, tmp / "e", tokenizer, false));
        Tiny q4;  // widths that are multiples of 64, as 4-bit weights need; two groups per row
        q4.w4a8 = true;
        q4.hidden = 64, q4.head_dim = 32, q4.ff = 64;
        spit(corpus / "fuzz_model_dir/tiny-w4a8", write_tiny(q4, tmp / "f", tokenizer, false));
        spit(corpus / "fuzz_safetensors/tiny-w4a8", slurp(tmp / "f/model.safetensors"));
        spit(corpus / "fuzz_config/tiny-w4a8-config.json", slurp(tmp / "f/config.json"));
        spit(corpus / "fuzz_config/tiny-w8a8-config.json", slurp(tmp / "e/config.json"));
        // Low-bit checkpoints laid out as pangu-quantize --scheme w4a16 / mixed --asym --method gptq --act-order
        // writes them: q4's widths, one layer and the embedding table int8, so that a bundle stays within
        // run.sh's -max_len of 64 KiB for fuzz_model_dir (tiny-w4a8, 89 KiB, is cut there and never loads while
        // fuzzing).
        for (const auto &[name, sub] : {std::make_pair("w4a16", "g"), std::make_pair("mixed", "h")}) {
            Tiny lb = q4;
            lb.w4a8 = false;
            lb.lowbit = name;
            lb.i8_embd = true;
            lb.layers = 1;
            const std::string tiny = std::string("tiny-") + name;
            spit(corpus / "fuzz_model_dir" / tiny, write_tiny(lb, tmp / sub, tokenizer, false));
            spit(corpus / "fuzz_safetensors" / tiny, slurp(tmp / sub / "model.safetensors"));
            spit(corpus / "fuzz_config" / (tiny + "-config.json"), slurp(tmp / sub / "config.json"));
        }
        g_rng = rng_before;

        // safetensors files
        spit(corpus / "fuzz_safetensors/tiny-bf16", slurp(tmp / "a/model.safetensors"));
        spit(corpus / "fuzz_safetensors/tiny-w8a16", slurp(tmp / "c/model.safetensors"));
        spit(corpus / "fuzz_safetensors/tiny-shard2", slurp(tmp / "d/model-00002-of-00002.safetensors"));
        {
            // pangu-tiny's real header, its data section cut to 256 bytes
            const std::string st = slurp(shared / "models/pangu-tiny/model.safetensors");
            uint64_t hlen = 0;
            for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | static_cast<uint8_t>(st[i]);
            spit(corpus / "fuzz_safetensors/pangu-tiny-header", st.substr(0, 8 + hlen + 256));
        }
        spit(corpus / "fuzz_safetensors/empty-header", std::string("\x0f\0\0\0\0\0\0\0{\"__metadata__\":{}}", 24));

        // JSON files
        spit(corpus / "fuzz_config/pangu-tiny-config.json", slurp(shared / "models/pangu-tiny/config.json"));
        spit(corpus / "fuzz_config/tiny-w8a16-config.json", slurp(tmp / "c/config.json"));
        spit(corpus / "fuzz_config/index.json", slurp(tmp / "d/model.safetensors.index.json"));
        spit(corpus / "fuzz_config/tokenizer_config.json", slurp(out / "data/tiny-chat/tokenizer_config.json"));
        spit(corpus / "fuzz_config/npusim-profile.json",  // docs/porting-310p.md's example
             "{\n  \"name\": \"Atlas 300I Pro (one 310P)\",\n  \"note\": \"free text, ignored\",\n  \"ai_cores\": 8,\n"
             "  \"fp16_tflops\": 70,\n  \"int8_tops\": 140,\n  \"memory_gbps\": 204.8,\n  \"host_link_gbps\": 32,\n"
             "  \"launch_us\": 5\n}\n");

        // tokenizer inputs: mode byte (bit 0 vocabulary, bits 1-2 mode, bit 3 add_bos, bit 4 parse_special)
        const std::string python = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1)\n";
        const std::string poem = "《静夜思》\n作者：李白\n床前明月光，疑是地上霜。";
        const std::string chat = "[unused9]用户：hello world[unused10]</s><s>[unused9]助手：";
        for (int vocab = 0; vocab < 2; ++vocab) {
            const std::string v = std::to_string(vocab);
            spit(corpus / ("fuzz_tokenizer/text-python-" + v), std::string(1, char(vocab | 8)) + python);
            spit(corpus / ("fuzz_tokenizer/text-poem-" + v), std::string(1, char(vocab | 8 | 16)) + poem);
            spit(corpus / ("fuzz_tokenizer/text-chat-" + v), std::string(1, char(vocab | 16)) + chat);
            spit(corpus / ("fuzz_tokenizer/text-bad-utf8-" + v), std::string(1, char(vocab)) + "ok\xe4\xbd\xff\xc0\x80");
            std::string ids(1, char(vocab | 2));
            for (int i = 0; i < 64; ++i) ids += std::string{char(i * 37 % 200), char((i * 13) & 0xff)};
            spit(corpus / ("fuzz_tokenizer/ids-" + v), ids);
            spit(corpus / ("fuzz_tokenizer/mixed-" + v),
                 std::string(1, char(vocab | 6)) + std::string(1, char(poem.size())) + poem + ids.substr(1));
        }
        spit(corpus / "fuzz_tokenizer/bytes", std::string("\x04\x03", 2) + poem + "\xf0\x9f\x98" + "\xed\xa0\x80\xf4\x90");

        fs::remove_all(tmp);
    } catch (const std::exception &e) {
        std::cerr << "fuzz-make-seeds: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
