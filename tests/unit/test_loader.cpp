// Checkpoint variants the loader must accept: F32 and F16 weights, tied embeddings, pruned (per-layer MLP
// widths) and a zero-bias model; each is written from the bundled bf16 model and must compute what the
// original computes.
#include <gtest/gtest.h>
#include <json/json.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <vector>

#include "pangu/pangu.h"
#include "test_util.h"
#include "format/safetensors.h"
#include "safetensors_writer.h"
#include "model/tensor.h"

namespace fs = std::filesystem;
using namespace pangu;

using pangu_test::TempDir;

namespace {

const std::vector<int32_t> kPrompt = {1, 651, 681, 13, 651, 304, 497, 13, 13, 13, 310, 580, 263, 713, 295, 13};

std::vector<float> to_f32(const TensorInfo &t) {
    const size_t n = t.nbytes / dtype_size(t.dtype);
    std::vector<float> v(n);
    const uint16_t *p = static_cast<const uint16_t *>(t.data);
    for (size_t i = 0; i < n; ++i) v[i] = bf16_to_f32(p[i]);
    return v;
}

// Writes a variant of the bundled model into `dir`: `edit` may change each tensor (name, dtype, shape,
// values as floats) or drop it (return false); `cfg` edits config.json.
void write_variant(const fs::path &dir,
                   const std::function<bool(std::string &, DType &, std::vector<int64_t> &, std::vector<float> &)> &edit,
                   const std::function<void(Json::Value &)> &cfg) {
    const fs::path src = PANGU_MODEL_DIR;
    for (const char *f : {"tokenizer.model", "tokenizer_config.json"}) fs::copy_file(src / f, dir / f);
    Json::Value root;
    std::ifstream in(src / "config.json");
    in >> root;
    cfg(root);
    std::ofstream(dir / "config.json") << root;

    TensorStore store;
    store.open_dir(src.string(), MapOptions{});
    SafetensorsWriter w;
    for (const auto &kv : store.tensors()) {
        std::string name = kv.first;
        DType dt = DType::BF16;
        std::vector<int64_t> shape = kv.second.shape;
        std::vector<float> v = to_f32(kv.second);
        if (!edit(name, dt, shape, v)) continue;
        std::vector<uint8_t> bytes(v.size() * dtype_size(dt));
        for (size_t i = 0; i < v.size(); ++i) {
            if (dt == DType::F32) std::memcpy(&bytes[4 * i], &v[i], 4);
            else {
                const uint16_t h = dt == DType::F16 ? f32_to_f16(v[i]) : f32_to_bf16(v[i]);
                std::memcpy(&bytes[2 * i], &h, 2);
            }
        }
        w.add_copy(name, dt, shape, bytes.data());
    }
    w.write((dir / "model.safetensors").string());
}

std::vector<float> logits_of(const std::string &dir, const std::vector<int32_t> &ids) {
    pangu_model *m = nullptr;
    EXPECT_EQ(pangu_model_load(dir.c_str(), nullptr, &m), PANGU_OK) << pangu_last_error();
    if (!m) return {};
    pangu_session *s = nullptr;
    EXPECT_EQ(pangu_session_create(m, nullptr, &s), PANGU_OK) << pangu_last_error();
    EXPECT_EQ(pangu_session_eval(s, ids.data(), ids.size(), nullptr), PANGU_OK) << pangu_last_error();
    const float *lg = nullptr;
    int32_t nv = 0;
    EXPECT_EQ(pangu_session_get_logits(s, &lg, &nv), PANGU_OK);
    std::vector<float> r(lg, lg + nv);
    pangu_session_free(s);
    pangu_model_free(m);
    return r;
}

float max_abs_diff(const std::vector<float> &a, const std::vector<float> &b) {
    EXPECT_EQ(a.size(), b.size());
    float d = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
    return d;
}

auto keep_cfg = [](Json::Value &) {};

}  // namespace

TEST(Loader, F32WeightsGiveIdenticalLogits) {
    TempDir t("pangu_loader");
    write_variant(t.path, [](std::string &, DType &dt, std::vector<int64_t> &, std::vector<float> &) {
        dt = DType::F32;  // bf16 widens exactly, and the kernels reduce in the same order for every dtype
        return true;
    }, keep_cfg);
    EXPECT_EQ(max_abs_diff(logits_of(t.path, kPrompt), logits_of(PANGU_MODEL_DIR, kPrompt)), 0.0f);
}

TEST(Loader, F16WeightsAgreeClosely) {
    TempDir t("pangu_loader");
    write_variant(t.path, [](std::string &, DType &dt, std::vector<int64_t> &, std::vector<float> &) {
        dt = DType::F16;
        return true;
    }, keep_cfg);
    EXPECT_LT(max_abs_diff(logits_of(t.path, kPrompt), logits_of(PANGU_MODEL_DIR, kPrompt)), 1e-3f);
}

TEST(Loader, TiedEmbeddingsUseTheEmbeddingAsHead) {
    // Reference: an untied model whose head is a copy of the embedding table.
    TempDir untied, tied;
    std::vector<float> embed;
    {
        TensorStore store;
        store.open_dir(PANGU_MODEL_DIR, MapOptions{});
        embed = to_f32(*store.find("model.embed_tokens.weight"));
    }
    write_variant(untied.path, [&](std::string &name, DType &, std::vector<int64_t> &, std::vector<float> &v) {
        if (name == "lm_head.weight") v = embed;
        return true;
    }, keep_cfg);
    write_variant(tied.path, [](std::string &name, DType &, std::vector<int64_t> &, std::vector<float> &) {
        return name != "lm_head.weight";
    }, [](Json::Value &c) { c["tie_word_embeddings"] = true; });
    EXPECT_EQ(max_abs_diff(logits_of(tied.path, kPrompt), logits_of(untied.path, kPrompt)), 0.0f);
}

TEST(Loader, MissingHeadWithoutTyingIsAnError) {
    TempDir t("pangu_loader");
    write_variant(t.path, [](std::string &name, DType &, std::vector<int64_t> &, std::vector<float> &) {
        return name != "lm_head.weight";
    }, keep_cfg);
    pangu_model *m = nullptr;
    EXPECT_EQ(pangu_model_load(t.path.c_str(), nullptr, &m), PANGU_ERR_MISSING_TENSOR);
    EXPECT_NE(std::string(pangu_last_error()).find("lm_head.weight"), std::string::npos);
    EXPECT_EQ(m, nullptr);
}

TEST(Loader, PrunedLayersTakeTheirWidthFromTheTensors) {
    // Layer 1 keeps 256 of its 512 MLP channels. The same model with those channels zeroed instead of removed
    // computes the same function (silu(0) * 0 = 0), up to summation order.
    const int64_t keep = 256;
    TempDir pruned, zeroed;
    write_variant(pruned.path, [&](std::string &name, DType &, std::vector<int64_t> &shape, std::vector<float> &v) {
        if (name == "model.layers.1.mlp.gate_proj.weight" || name == "model.layers.1.mlp.up_proj.weight") {
            v.resize(keep * shape[1]);
            shape[0] = keep;
        } else if (name == "model.layers.1.mlp.down_proj.weight") {
            std::vector<float> r(shape[0] * keep);
            for (int64_t i = 0; i < shape[0]; ++i)
                for (int64_t j = 0; j < keep; ++j) r[i * keep + j] = v[i * shape[1] + j];
            v = r;
            shape[1] = keep;
        }
        return true;
    }, keep_cfg);
    write_variant(zeroed.path, [&](std::string &name, DType &, std::vector<int64_t> &shape, std::vector<float> &v) {
        if (name == "model.layers.1.mlp.gate_proj.weight" || name == "model.layers.1.mlp.up_proj.weight")
            std::fill(v.begin() + keep * shape[1], v.end(), 0.0f);
        return true;
    }, keep_cfg);
    EXPECT_LT(max_abs_diff(logits_of(pruned.path, kPrompt), logits_of(zeroed.path, kPrompt)), 1e-4f);
}

TEST(Loader, InconsistentPrunedWidthsAreRejected) {
    TempDir t("pangu_loader");
    write_variant(t.path, [](std::string &name, DType &, std::vector<int64_t> &shape, std::vector<float> &v) {
        if (name == "model.layers.2.mlp.up_proj.weight") {  // gate keeps 512, up claims 256
            v.resize(256 * shape[1]);
            shape[0] = 256;
        }
        return true;
    }, keep_cfg);
    pangu_model *m = nullptr;
    EXPECT_EQ(pangu_model_load(t.path.c_str(), nullptr, &m), PANGU_ERR_SHAPE);
    EXPECT_NE(std::string(pangu_last_error()).find("model.layers.2.mlp.up_proj.weight"), std::string::npos);
}

TEST(Loader, RotaryCachesAreSkippedAndStrayLayersRejected) {
    TempDir ok, stray;
    write_variant(ok.path, [](std::string &, DType &, std::vector<int64_t> &, std::vector<float> &) { return true; },
                  keep_cfg);
    {
        // Add a rotary inv_freq tensor the way old HF checkpoints carry it.
        TempDir tmp("pangu_loader");
        write_variant(tmp.path, [](std::string &, DType &, std::vector<int64_t> &, std::vector<float> &) { return true; },
                      keep_cfg);
        TensorStore store;
        store.open_dir(tmp.path.string(), MapOptions{});
        SafetensorsWriter w;
        for (const auto &kv : store.tensors()) w.add_copy(kv.first, kv.second.dtype, kv.second.shape, kv.second.data);
        std::vector<float> inv(16, 1.0f);
        w.add_copy("model.layers.0.self_attn.rotary_emb.inv_freq", DType::F32, {16}, inv.data());
        w.write((ok.path / "model.safetensors").string());
    }
    EXPECT_EQ(max_abs_diff(logits_of(ok.path, kPrompt), logits_of(PANGU_MODEL_DIR, kPrompt)), 0.0f);

    write_variant(stray.path, [](std::string &, DType &, std::vector<int64_t> &, std::vector<float> &) { return true; },
                  [](Json::Value &c) { c["num_hidden_layers"] = 5; });
    pangu_model *m = nullptr;
    EXPECT_EQ(pangu_model_load(stray.path.c_str(), nullptr, &m), PANGU_ERR_SHAPE);
    EXPECT_NE(std::string(pangu_last_error()).find("model.layers.5"), std::string::npos);
}

TEST(Loader, NanInANormIsRejected) {
    TempDir t("pangu_loader");
    write_variant(t.path, [](std::string &name, DType &, std::vector<int64_t> &, std::vector<float> &v) {
        if (name == "model.norm.weight") v[3] = NAN;
        return true;
    }, keep_cfg);
    pangu_model *m = nullptr;
    EXPECT_EQ(pangu_model_load(t.path.c_str(), nullptr, &m), PANGU_ERR_NUMERIC);
    EXPECT_NE(std::string(pangu_last_error()).find("model.norm.weight"), std::string::npos);
}

// I32 is the dtype of low-bit weights' row and column orders only: a weight matrix stored as I32 (the bytes of
// an F32 one) is a dtype error at load, naming the tensor. It used to load and then fail every evaluation
// ("unsupported tensor dtype: device operator ... failed").
TEST(Loader, I32WeightMatrixIsADtypeError) {
    for (const std::string victim : {"model.embed_tokens.weight", "model.layers.2.self_attn.q_proj.weight"}) {
        TempDir tmp("pangu_loader"), t("pangu_loader");
        write_variant(tmp.path, [](std::string &, DType &dt, std::vector<int64_t> &, std::vector<float> &) {
            dt = DType::F32;
            return true;
        }, keep_cfg);
        for (const char *f : {"config.json", "tokenizer.model", "tokenizer_config.json"})
            fs::copy_file(tmp.path / f, t.path / f);
        TensorStore store;
        store.open_dir(tmp.path.string(), MapOptions{});
        SafetensorsWriter w;
        for (const auto &kv : store.tensors())
            w.add_copy(kv.first, kv.first == victim ? DType::I32 : kv.second.dtype, kv.second.shape, kv.second.data);
        w.write((t.path / "model.safetensors").string());
        pangu_model *m = nullptr;
        EXPECT_EQ(pangu_model_load(t.path.c_str(), nullptr, &m), PANGU_ERR_DTYPE) << victim;
        EXPECT_EQ(m, nullptr);
        const std::string msg = pangu_last_error();
        EXPECT_NE(msg.find("tensor " + victim + " is I32"), std::string::npos) << msg;
    }
}
