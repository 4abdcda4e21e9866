// The training engine's checkpoints (tools/train/checkpoint): a runtime checkpoint read into Params, Params
// written back as a bf16 HF directory (pruned widths included) that the runtime loads, and the resume state's
// exact round trip and its refusals of every damaged or mismatched file.
#include <gtest/gtest.h>
#include "calib.h"
#include "net.h"
#include <json/json.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "checkpoint.h"
#include "common/common.h"
#include "format/safetensors.h"
#include "model/model.h"
#include "params.h"
#include "quantize.h"
#include "safetensors_writer.h"
#include "test_util.h"
#include "train_test_util.h"

namespace fs = std::filesystem;
using namespace pangu;
using namespace pangu::train;
using pangu_test::TempDir;
using pangu_test::expect_error;
using pangu_test::expect_same;

namespace {

const Model &tiny() {
    static std::unique_ptr<Model> m = Model::load(PANGU_MODEL_DIR, ModelLoadOptions{});
    return *m;
}

const Params<float> &tiny_params() {
    static const Params<float> p = load_params(tiny());
    return p;
}

std::unique_ptr<Model> load(const fs::path &dir) { return Model::load(dir.string(), ModelLoadOptions{}); }

std::string bytes_of(const fs::path &f) {
    std::ifstream in(f, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

Json::Value json_of(const fs::path &f) {
    Json::Value v;
    std::ifstream(f) >> v;
    return v;
}

Json::Value parse(const std::string &text) {
    Json::Value v;
    std::string errs;
    std::unique_ptr<Json::CharReader> r(Json::CharReaderBuilder().newCharReader());
    if (!r->parse(text.data(), text.data() + text.size(), &v, &errs)) ADD_FAILURE() << errs;
    return v;
}

// Entries of `dir` whose name holds `part` (".partial", ".old-").
int leftovers(const fs::path &dir, const std::string &part) {
    int n = 0;
    for (const auto &e : fs::directory_iterator(dir)) n += e.path().filename().string().find(part) != std::string::npos;
    return n;
}

// p with the MLP of layer l cut to its first widths[l] channels (what pruning keeps).
Params<float> pruned(const Params<float> &p, const std::vector<int> &widths) {
    Params<float> q = p;
    q.shape.n_ff = widths;
    for (size_t l = 0; l < widths.size(); ++l) {
        q.layers[l].w_gate = p.layers[l].w_gate.topRows(widths[l]);
        q.layers[l].w_up = p.layers[l].w_up.topRows(widths[l]);
        q.layers[l].w_down = p.layers[l].w_down.leftCols(widths[l]);
    }
    return q;
}

void copy_tokenizer(const fs::path &to) {
    for (const char *f : {"tokenizer.model", "tokenizer_config.json"}) fs::copy_file(fs::path(PANGU_MODEL_DIR) / f, to / f);
}

// ---- raw safetensors files, to make damaged variants ----

struct RawTensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
};
struct RawFile {
    std::vector<RawTensor> tensors;
    Json::Value metadata;
};

RawFile read_raw(const fs::path &path) {
    RawFile r;
    TensorStore st;
    st.open_file(path.string(), MapOptions{});
    for (const auto &kv : st.tensors()) {
        const uint8_t *d = static_cast<const uint8_t *>(kv.second.data);
        r.tensors.push_back({kv.first, kv.second.dtype, kv.second.shape, std::vector<uint8_t>(d, d + kv.second.nbytes)});
    }
    const std::string all = bytes_of(path);
    uint64_t hlen = 0;
    std::memcpy(&hlen, all.data(), 8);
    const Json::Value header = parse(all.substr(8, hlen));
    r.metadata = header["__metadata__"];
    return r;
}

void write_raw(const RawFile &r, const fs::path &path) {
    SafetensorsWriter w;
    for (const RawTensor &t : r.tensors) w.add_copy(t.name, t.dtype, t.shape, t.bytes.data());
    for (const std::string &k : r.metadata.getMemberNames()) w.set_metadata(k, r.metadata[k].asString());
    w.write(path.string());
}

RawTensor *find(RawFile &r, const std::string &name) {
    for (RawTensor &t : r.tensors)
        if (t.name == name) return &t;
    return nullptr;
}

// ---- a training state ----

// The bundled model pruned, with every value moved off the bf16 grid (a state holds F32), and moments for the
// trainable tensors.
TrainState make_state(Trainable tr, const std::vector<int> &widths) {
    TrainState s;
    s.params = pruned(tiny_params(), widths);
    std::mt19937 rng(42);
    std::normal_distribution<float> n(0.0f, 1e-3f);
    for (const TensorRef<float> &t : tensors(s.params, tr)) {
        for (int64_t i = 0; i < t.size; ++i) t.data[i] += n(rng);
        if (!t.trainable) continue;
        s.m.emplace_back(t.size), s.v.emplace_back(t.size);
        for (float &x : s.m.back()) x = n(rng);
        for (float &x : s.v.back()) x = std::fabs(n(rng)) * 1e-3f;
    }
    s.step = 1234;
    s.meta["seed"] = 7;
    s.meta["trainable"] = trainable_name(tr);
    s.meta["losses"].append(2.5);
    s.meta["losses"].append(1.0 / 3.0);
    return s;
}

const std::vector<int> kWidths = {448, 384, 320, 256, 448, 192};

}  // namespace

// ---- load_params, shape_of ----

TEST(LoadParams, ShapeMatchesConfig) {
    const Shape s = shape_of(tiny());
    const Json::Value cfg = json_of(fs::path(PANGU_MODEL_DIR) / "config.json");
    EXPECT_EQ(s.n_vocab, cfg["vocab_size"].asInt());
    EXPECT_EQ(s.n_embd, cfg["hidden_size"].asInt());
    EXPECT_EQ(s.n_head, cfg["num_attention_heads"].asInt());
    EXPECT_EQ(s.n_kv, cfg["num_key_value_heads"].asInt());
    EXPECT_EQ(s.head_dim, cfg["head_dim"].asInt());
    EXPECT_EQ(s.n_ff, std::vector<int>(cfg["num_hidden_layers"].asInt(), cfg["intermediate_size"].asInt()));
    EXPECT_EQ(s.bias, cfg["bias"].asBool());
    EXPECT_EQ(s.tied, cfg["tie_word_embeddings"].asBool());
    EXPECT_FLOAT_EQ(static_cast<float>(s.eps), cfg["rms_norm_eps"].asFloat());
    EXPECT_EQ(s.rope_theta, cfg["rope_theta"].asDouble());
}

// Every tensor of the checkpoint, and nothing else, equal to widen_tensor's reading of it.
TEST(LoadParams, EqualsTheCheckpointsValues) {
    Params<float> p = tiny_params();
    const auto refs = tensors(p);
    EXPECT_EQ(refs.size(), tiny().store.tensors().size());
    for (const TensorRef<float> &t : refs) {
        const TensorInfo *info = tiny().store.find(t.name);
        ASSERT_NE(info, nullptr) << t.name;
        EXPECT_EQ(info->dtype, DType::BF16) << t.name;
        EXPECT_EQ(info->shape, t.shape) << t.name;
        const std::vector<float> want = widen_tensor(*info);
        ASSERT_EQ(static_cast<int64_t>(want.size()), t.size);
        EXPECT_EQ(std::memcmp(want.data(), t.data, want.size() * 4), 0) << t.name;
    }
    // Spot checks against the runtime's own views: a bias as the loader widened it, an element of a matrix.
    EXPECT_EQ(p.layers[2].bk(5), tiny().layers[2].bk.host[5]);
    const Tensor &up = tiny().layers[3].w_up;
    uint16_t h;
    std::memcpy(&h, up.row_ptr(17) + 2 * 33, 2);
    EXPECT_EQ(p.layers[3].w_up(17, 33), bf16_to_f32(h));
}

// A w8a16 checkpoint (int8 linears with row scales) written here from the bundled model.
TEST(LoadParams, RefusesAQuantizedCheckpoint) {
    TempDir t("pangu_train_io");
    Json::Value cfg = json_of(fs::path(PANGU_MODEL_DIR) / "config.json");
    cfg["quantization_config"]["quant_method"] = "w8a16";
    cfg["quantization_config"]["bits"] = 8;
    std::ofstream(t.path / "config.json") << cfg;
    copy_tokenizer(t.path);
    SafetensorsWriter w;
    for (const auto &kv : tiny().store.tensors()) {
        const TensorInfo &ti = kv.second;
        if (ti.name.find("_proj.weight") == std::string::npos) {
            w.add_copy(ti.name, ti.dtype, ti.shape, ti.data);
            continue;
        }
        std::vector<int8_t> q(ti.shape[0] * ti.shape[1]);
        std::vector<float> s(ti.shape[0]);
        quantize_rows(ti, q.data(), s.data());
        w.add_copy(ti.name, DType::I8, ti.shape, q.data());
        w.add_copy(ti.name + "_scale", DType::F32, {ti.shape[0]}, s.data());
    }
    w.write((t.path / "model.safetensors").string());
    const auto q8 = load(t.path);  // a checkpoint the runtime takes
    ASSERT_GT(q8->n_quantized, 0);
    expect_error([&] { load_params(*q8); }, PANGU_ERR_UNSUPPORTED,
                 {t.path.string(), "is quantized (w8a16)", "need a 16- or 32-bit checkpoint"});
}

// A tied head and no biases (a shape the bundled model does not have): the tensors listed and saved are the
// ones such a checkpoint has.
TEST(LoadParams, TiedHeadWithoutBiasesRoundTrips) {
    TempDir t("pangu_train_io");
    const fs::path src = t.path / "tied";
    fs::create_directory(src);
    Json::Value cfg = json_of(fs::path(PANGU_MODEL_DIR) / "config.json");
    cfg["tie_word_embeddings"] = true, cfg["bias"] = false;
    std::ofstream(src / "config.json") << cfg;
    copy_tokenizer(src);
    SafetensorsWriter w;
    for (const auto &kv : tiny().store.tensors())
        if (kv.first != "lm_head.weight" && kv.first.find(".bias") == std::string::npos)
            w.add_copy(kv.first, kv.second.dtype, kv.second.shape, kv.second.data);
    w.write((src / "model.safetensors").string());
    const auto m = load(src);
    Params<float> p = load_params(*m);
    EXPECT_TRUE(p.shape.tied);
    EXPECT_FALSE(p.shape.bias);
    EXPECT_EQ(p.head.size(), 0);
    EXPECT_EQ(p.layers[0].bq.size(), 0);
    EXPECT_EQ(tensors(p).size(), m->store.tensors().size());
    save_model(p, *m, (t.path / "out").string(), Json::Value(), false);
    const auto back = load(t.path / "out");
    EXPECT_EQ(back->store.find("lm_head.weight"), nullptr);
    expect_same(load_params(*back), p);
}

// ---- save_model ----

TEST(SaveModel, RoundTripIsExact) {
    TempDir t("pangu_train_io");
    const fs::path out = t.path / "copy";
    Json::Value extra;
    extra["pruning"]["note"] = "none";
    save_model(tiny_params(), tiny(), out.string(), extra, false);
    const auto back = load(out);
    for (const auto &kv : back->store.tensors()) EXPECT_EQ(kv.second.dtype, DType::BF16) << kv.first;
    expect_same(load_params(*back), tiny_params());
    const Json::Value cfg = json_of(out / "config.json"), src = json_of(fs::path(PANGU_MODEL_DIR) / "config.json");
    EXPECT_EQ(cfg["pruning"]["note"].asString(), "none");
    EXPECT_EQ(cfg["torch_dtype"].asString(), "bfloat16");
    for (const char *k : {"intermediate_size", "hidden_size", "rope_theta", "eos_token_id", "architectures"})
        EXPECT_EQ(cfg[k], src[k]) << k;
    for (const char *f : {"tokenizer.model", "tokenizer_config.json"})
        EXPECT_EQ(bytes_of(out / f), bytes_of(fs::path(PANGU_MODEL_DIR) / f)) << f;
    EXPECT_EQ(leftovers(t.path, ".partial"), 0);
    EXPECT_EQ(leftovers(out, ".partial"), 0);
}

// Per-layer widths survive: the loader reads each from its tensors, intermediate_size is the widest.
TEST(SaveModel, PrunedWidthsLoadBack) {
    TempDir t("pangu_train_io");
    const fs::path out = t.path / "pruned";
    const Params<float> p = pruned(tiny_params(), kWidths);
    Json::Value extra;
    extra["pruning"]["widths"] = Json::Value(Json::arrayValue);
    for (int w : kWidths) extra["pruning"]["widths"].append(w);
    save_model(p, tiny(), out.string(), extra, false);
    const auto back = load(out);
    EXPECT_EQ(shape_of(*back).n_ff, kWidths);
    EXPECT_EQ(back->max_ff, 448);
    expect_same(load_params(*back), p);
    const Json::Value cfg = json_of(out / "config.json");
    EXPECT_EQ(cfg["intermediate_size"].asInt(), 448);
    EXPECT_EQ(cfg["pruning"]["widths"].size(), kWidths.size());
    EXPECT_FALSE(cfg.isMember("quantization_config"));
}

// F32 values are stored as bf16 rounded to nearest, ties to even.
TEST(SaveModel, RoundsToNearestEven) {
    TempDir t("pangu_train_io");
    Params<float> p = tiny_params();
    const float ulp = std::ldexp(1.0f, -7);  // bf16's spacing in [1, 2)
    const float in[] = {1.0f + ulp / 2, 1.0f + 3 * ulp / 2, 1.0f + ulp / 2 + ulp / 16, -(1.0f + ulp / 2 - ulp / 16), 3e38f};
    const float want[] = {1.0f, 1.0f + 2 * ulp, 1.0f + ulp, -1.0f};
    for (int i = 0; i < 5; ++i) p.norm(i) = in[i];
    save_model(p, tiny(), (t.path / "r").string(), Json::Value(), false);
    const Params<float> back = load_params(*load(t.path / "r"));
    for (int i = 0; i < 4; ++i) EXPECT_EQ(back.norm(i), want[i]) << i;
    EXPECT_EQ(back.norm(4), bf16_to_f32(f32_to_bf16(3e38f)));
    EXPECT_EQ(back.norm(5), tiny_params().norm(5));
}

TEST(SaveModel, ExistingOutputNeedsForce) {
    TempDir t("pangu_train_io");
    const fs::path out = t.path / "out";
    fs::create_directory(out);
    std::ofstream(out / "mine.txt") << "keep me";
    expect_error([&] { save_model(tiny_params(), tiny(), out.string(), Json::Value(), false); },
                 PANGU_ERR_INVALID_ARGUMENT, {out.string(), "exists; use --force"});
    EXPECT_EQ(bytes_of(out / "mine.txt"), "keep me");
    EXPECT_EQ(leftovers(t.path, ".partial"), 0);
    // A file in the way too.
    std::ofstream(t.path / "file") << "x";
    expect_error([&] { save_model(tiny_params(), tiny(), (t.path / "file").string(), Json::Value(), false); },
                 PANGU_ERR_INVALID_ARGUMENT, {"exists"});

    save_model(pruned(tiny_params(), kWidths), tiny(), out.string() + "/", Json::Value(), true);  // the slash too
    EXPECT_FALSE(fs::exists(out / "mine.txt"));
    EXPECT_EQ(shape_of(*load(out)).n_ff, kWidths);
    EXPECT_EQ(leftovers(t.path, ".partial") + leftovers(t.path, ".old-"), 0);
}

// A failed save leaves no partial directory and an existing output untouched, even with force.
TEST(SaveModel, FailureLeavesNothingBehind) {
    TempDir t("pangu_train_io");
    const fs::path out = t.path / "out";
    Params<float> p = tiny_params();
    p.layers[4].w_down(7, 9) = std::numeric_limits<float>::quiet_NaN();
    expect_error([&] { save_model(p, tiny(), out.string(), Json::Value(), false); }, PANGU_ERR_NUMERIC,
                 {"save_model " + out.string(), "model.layers.4.mlp.down_proj.weight", "NaN at row 7, column 9"});
    EXPECT_FALSE(fs::exists(out));
    EXPECT_EQ(leftovers(t.path, ".partial"), 0);

    fs::create_directory(out);
    std::ofstream(out / "mine.txt") << "keep me";
    p.layers[4].w_down(7, 9) = 3.4e38f;  // finite, but beyond bf16's largest value
    expect_error([&] { save_model(p, tiny(), out.string(), Json::Value(), true); }, PANGU_ERR_NUMERIC,
                 {"save_model " + out.string(), "model.layers.4.mlp.down_proj.weight", "3.4e+38 at row 7, column 9", "beyond bf16's range"});
    EXPECT_EQ(bytes_of(out / "mine.txt"), "keep me");
    EXPECT_EQ(leftovers(t.path, ".partial") + leftovers(t.path, ".old-"), 0);
}

TEST(SaveModel, RefusesParamsThatDoNotFit) {
    TempDir t("pangu_train_io");
    const std::string out = (t.path / "out").string();
    Params<float> p = tiny_params();
    p.shape.n_head = 3;  // not the source's attention
    expect_error([&] { save_model(p, tiny(), out, Json::Value(), false); }, PANGU_ERR_INVALID_ARGUMENT,
                 {"attention heads", PANGU_MODEL_DIR});
    p = tiny_params();
    p.shape.n_ff[2] = 256;  // the shape says one width, the tensors hold another
    expect_error([&] { save_model(p, tiny(), out, Json::Value(), false); }, PANGU_ERR_INVALID_ARGUMENT,
                 {"model.layers.2.mlp.gate_proj.weight", "[512, 192]", "[256, 192]"});
    Json::Value extra;
    extra["intermediate_size"] = 1;
    expect_error([&] { save_model(tiny_params(), tiny(), out, extra, false); }, PANGU_ERR_INVALID_ARGUMENT,
                 {"intermediate_size"});
    EXPECT_FALSE(fs::exists(out));
    EXPECT_EQ(leftovers(t.path, ".partial"), 0);
}

// ---- save_state, load_state ----

TEST(State, RoundTripIsExact) {
    TempDir t("pangu_train_io");
    for (Trainable tr : {Trainable::ALL, Trainable::LAYERS, Trainable::MLP}) {
        const TrainState s = make_state(tr, kWidths);
        const fs::path f = t.path / (std::string("state-") + trainable_name(tr) + ".safetensors");
        save_state(s, tr, f.string());
        const TrainState r = load_state(f.string(), s.params.shape, tr);
        expect_same(r.params, s.params);
        ASSERT_EQ(r.m.size(), s.m.size());
        ASSERT_EQ(r.v.size(), s.v.size());
        for (size_t k = 0; k < s.m.size(); ++k) {
            EXPECT_EQ(r.m[k], s.m[k]) << k;
            EXPECT_EQ(r.v[k], s.v[k]) << k;
        }
        EXPECT_EQ(r.step, 1234);
        EXPECT_EQ(r.meta, s.meta);
        EXPECT_EQ(r.meta["losses"][1].asDouble(), 1.0 / 3.0);
    }
    EXPECT_EQ(make_state(Trainable::MLP, kWidths).m.size(), 3 * kWidths.size());
    // The least a state holds: step 0, no settings (meta null), every tensor trained.
    TrainState s = make_state(Trainable::ALL, kWidths);
    s.step = 0, s.meta = Json::Value();
    save_state(s, Trainable::ALL, (t.path / "bare").string());
    const TrainState r = load_state((t.path / "bare").string(), s.params.shape, Trainable::ALL);
    EXPECT_EQ(r.step, 0);
    EXPECT_TRUE(r.meta.isNull());
    EXPECT_EQ(leftovers(t.path, ".partial"), 0);
}

// Every way a state file can be wrong, each a clear error naming the file; the file is never modified.
TEST(State, BadInputs) {
    TempDir t("pangu_train_io");
    const Trainable tr = Trainable::MLP;
    const TrainState s = make_state(tr, kWidths);
    const Shape shape = s.params.shape;
    const fs::path good = t.path / "good.safetensors";
    save_state(s, tr, good.string());
    const RawFile raw = read_raw(good);

    struct Case {
        const char *what;
        std::function<void(RawFile &)> edit;
        pangu_status status;
        std::vector<std::string> words;
    };
    const std::string up2 = "model.layers.2.mlp.up_proj.weight";
    const std::vector<Case> cases = {
        {"a missing tensor", [&](RawFile &r) { r.tensors.erase(r.tensors.begin() + 3); }, PANGU_ERR_MISSING_TENSOR,
         {"is missing"}},
        {"a missing moment", [&](RawFile &r) { r.tensors.erase(r.tensors.begin() + (find(r, "adam_v." + up2) - r.tensors.data())); },
         PANGU_ERR_MISSING_TENSOR, {"adam_v." + up2, "is missing"}},
        {"an extra tensor", [&](RawFile &r) { r.tensors.push_back(*find(r, "param." + up2)), r.tensors.back().name = "param.x"; },
         PANGU_ERR_SAFETENSORS_HEADER, {"param.x", "not one save_state writes"}},
        {"a moment of a tensor not trained",
         [&](RawFile &r) { RawTensor c = *find(r, "param.model.norm.weight"); c.name = "adam_m.model.norm.weight"; r.tensors.push_back(c); },
         PANGU_ERR_SAFETENSORS_HEADER, {"adam_m.model.norm.weight"}},
        {"a tensor of the wrong dtype",
         [&](RawFile &r) { RawTensor &x = *find(r, "param.model.norm.weight"); x.dtype = DType::BF16; x.shape = {shape.n_embd * 2}; },
         PANGU_ERR_DTYPE, {"param.model.norm.weight", "BF16"}},
        {"a tensor of the wrong shape",
         [&](RawFile &r) { RawTensor &x = *find(r, "adam_m." + up2); x.shape = {x.shape[1], x.shape[0]}; },
         PANGU_ERR_SHAPE, {"adam_m." + up2, "[192, 320]", "[320, 192]"}},
        {"NaN in a moment",
         [&](RawFile &r) { const float nan = std::nanf(""); std::memcpy(find(r, "adam_m." + up2)->bytes.data() + 4 * (192 * 5 + 11), &nan, 4); },
         PANGU_ERR_NUMERIC, {"adam_m." + up2, "NaN at row 5, column 11"}},
        {"Inf in a parameter",
         [&](RawFile &r) { const float inf = INFINITY; std::memcpy(find(r, "param.model.norm.weight")->bytes.data() + 4 * 3, &inf, 4); },
         PANGU_ERR_NUMERIC, {"param.model.norm.weight", "Inf at element 3"}},
        {"no metadata", [](RawFile &r) { r.metadata = Json::Value(); }, PANGU_ERR_SAFETENSORS_HEADER, {"metadata is missing"}},
        {"another format", [](RawFile &r) { r.metadata["format"] = "pt"; }, PANGU_ERR_SAFETENSORS_HEADER,
         {"\"format\" is not \"pangu-train-state\""}},
        {"another version", [](RawFile &r) { r.metadata["version"] = "9"; }, PANGU_ERR_SAFETENSORS_HEADER, {"\"version\""}},
        {"step not a number", [](RawFile &r) { r.metadata["step"] = "12a"; }, PANGU_ERR_SAFETENSORS_HEADER, {"\"step\""}},
        {"a negative step", [](RawFile &r) { r.metadata["step"] = "-1"; }, PANGU_ERR_SAFETENSORS_HEADER, {"\"step\""}},
        {"meta not JSON", [](RawFile &r) { r.metadata["meta"] = "{\"seed\": "; }, PANGU_ERR_SAFETENSORS_HEADER, {"\"meta\""}},
        {"meta with junk after it", [](RawFile &r) { r.metadata["meta"] = r.metadata["meta"].asString() + " x"; },
         PANGU_ERR_SAFETENSORS_HEADER, {"\"meta\""}},
        // pangu-distill --resume reads its settings from meta by name: Json::LogicError on anything else
        // (found by fuzz_train_state's check, tests/fuzz/regressions/fuzz_train_state/meta-not-an-object).
        {"meta not an object", [](RawFile &r) { r.metadata["meta"] = "[1, 2]"; }, PANGU_ERR_SAFETENSORS_HEADER,
         {"\"meta\" is not a JSON object"}},
        {"meta a number", [](RawFile &r) { r.metadata["meta"] = "3"; }, PANGU_ERR_SAFETENSORS_HEADER, {"\"meta\""}},
        {"step out of range", [](RawFile &r) { r.metadata["step"] = "99999999999999999999"; }, PANGU_ERR_SAFETENSORS_HEADER, {"\"step\""}},
        {"no step", [](RawFile &r) { r.metadata.removeMember("step"); }, PANGU_ERR_SAFETENSORS_HEADER, {"\"step\" is missing"}},
        {"shape garbage", [](RawFile &r) { r.metadata["shape"] = "[1, 2"; }, PANGU_ERR_SAFETENSORS_HEADER, {"\"shape\""}},
        {"shape without widths",
         [](RawFile &r) { Json::Value j = parse(r.metadata["shape"].asString()); j.removeMember("n_ff");
                          r.metadata["shape"] = Json::writeString(Json::StreamWriterBuilder(), j); },
         PANGU_ERR_SAFETENSORS_HEADER, {"n_ff"}},
        {"a negative width",
         [](RawFile &r) { Json::Value j = parse(r.metadata["shape"].asString()); j["n_ff"][1] = -4;
                          r.metadata["shape"] = Json::writeString(Json::StreamWriterBuilder(), j); },
         PANGU_ERR_SAFETENSORS_HEADER, {"n_ff"}},
    };
    const std::string before = bytes_of(good);
    for (const Case &c : cases) {
        SCOPED_TRACE(c.what);
        RawFile r = raw;
        c.edit(r);
        const fs::path f = t.path / "bad.safetensors";
        write_raw(r, f);
        const std::string bytes = bytes_of(f);
        std::vector<std::string> words = c.words;
        words.push_back(f.string());
        expect_error([&] { load_state(f.string(), shape, tr); }, c.status, words);
        EXPECT_EQ(bytes_of(f), bytes);
    }

    // Another model's or another run's state: the file is sound, the run is not its.
    Shape wider = shape;
    wider.n_ff[3] = 512;
    expect_error([&] { load_state(good.string(), wider, tr); }, PANGU_ERR_INVALID_ARGUMENT,
                 {good.string(), "MLP widths", "[448, 384, 320, 256, 448, 192]", "[448, 384, 320, 512, 448, 192]"});
    expect_error([&] { load_state(good.string(), shape_of(tiny()), tr); }, PANGU_ERR_INVALID_ARGUMENT, {"MLP widths"});
    expect_error([&] { load_state(good.string(), shape, Trainable::ALL); }, PANGU_ERR_INVALID_ARGUMENT,
                 {good.string(), "\"mlp\"", "\"all\""});
    Shape other = shape;
    other.rope_theta = 10000.0;
    expect_error([&] { load_state(good.string(), other, tr); }, PANGU_ERR_INVALID_ARGUMENT, {"RoPE theta"});

    // Files that are not whole: missing, empty, cut in the data, cut in the header, a model file.
    const fs::path missing = t.path / "nope.safetensors";
    expect_error([&] { load_state(missing.string(), shape, tr); }, PANGU_ERR_FILE_NOT_FOUND, {missing.string()});
    const fs::path cut = t.path / "cut.safetensors";
    std::ofstream(cut, std::ios::binary) << before.substr(0, before.size() / 2);
    expect_error([&] { load_state(cut.string(), shape, tr); }, PANGU_ERR_TENSOR_BOUNDS, {cut.string(), "truncated"});
    std::ofstream(cut, std::ios::binary) << before.substr(0, 100);
    expect_error([&] { load_state(cut.string(), shape, tr); }, PANGU_ERR_SAFETENSORS_HEADER, {cut.string()});
    std::ofstream(cut, std::ios::binary) << "";
    expect_error([&] { load_state(cut.string(), shape, tr); }, PANGU_ERR_SAFETENSORS_HEADER, {cut.string()});
    const std::string model = std::string(PANGU_MODEL_DIR) + "/model.safetensors";
    expect_error([&] { load_state(model, shape_of(tiny()), tr); }, PANGU_ERR_SAFETENSORS_HEADER,
                 {model, "\"format\" is not \"pangu-train-state\""});

    EXPECT_EQ(bytes_of(good), before);  // load_state only reads
    EXPECT_NO_THROW(load_state(good.string(), shape, tr));
}

// save_state refuses what load_state would refuse, and a refused save leaves the previous state in place.
TEST(State, SaveRefusesBadStates) {
    TempDir t("pangu_train_io");
    const fs::path f = t.path / "state.safetensors";
    TrainState s = make_state(Trainable::MLP, kWidths);
    save_state(s, Trainable::MLP, f.string());
    const std::string before = bytes_of(f);

    s.v[4][17] = std::numeric_limits<float>::infinity();
    expect_error([&] { save_state(s, Trainable::MLP, f.string()); }, PANGU_ERR_NUMERIC,
                 {f.string(), "adam_v.model.layers.1.mlp.up_proj.weight", "Inf at row 0, column 17"});
    s.v[4][17] = 0;
    expect_error([&] { save_state(s, Trainable::LAYERS, f.string()); }, PANGU_ERR_INVALID_ARGUMENT, {"moment"});
    s.m.pop_back();
    expect_error([&] { save_state(s, Trainable::MLP, f.string()); }, PANGU_ERR_INVALID_ARGUMENT, {"moment"});
    s = make_state(Trainable::MLP, kWidths);
    s.step = -1;
    expect_error([&] { save_state(s, Trainable::MLP, f.string()); }, PANGU_ERR_INVALID_ARGUMENT, {"step"});
    s.step = 1;
    s.meta = Json::Value("settings");
    expect_error([&] { save_state(s, Trainable::MLP, f.string()); }, PANGU_ERR_INVALID_ARGUMENT, {f.string(), "meta"});
    EXPECT_EQ(bytes_of(f), before);
    EXPECT_EQ(leftovers(t.path, ".partial"), 0);
}

// The engine's forward on the bundled model equals the calibration's reference forward (itself checked against
// the float64 golden data): the same logits for two windows run as one batch.
TEST(TrainForward, MatchesTheReferenceForwardOnTheBundledModel) {
    const auto m = pangu::Model::load(PANGU_MODEL_DIR, pangu::ModelLoadOptions{});
    pangu::train::Params<float> p = pangu::train::load_params(*m);
    const std::vector<std::string> docs = pangu::read_documents(std::string(PANGU_SHARED_DIR) + "/data/dev.jsonl", true);
    const pangu::TokenWindows text = pangu::make_windows(*m, {docs[0], docs[1]}, 256, 400);
    pangu::RefForward ref = pangu::run_reference(*m, text);
    pangu::train::Net<float> net(p);
    const auto &z = net.forward(text.windows);
    Eigen::Index row = 0;
    for (size_t w = 0; w < text.windows.size(); ++w) {
        const pangu::MatrixRM want = ref.logits(w);
        const float scale = want.cwiseAbs().maxCoeff();
        EXPECT_LT((z.middleRows(row, want.rows()) - want).cwiseAbs().maxCoeff() / scale, 1e-4) << "window " << w;
        row += want.rows();
    }
}
