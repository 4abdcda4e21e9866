// pangu-gen-model --widen-from: a large model that computes what the trained model computes. The benchmarks of
// speculative decoding on a memory-bound model rely on it, so check that it really is the same function.
// pangu-gen-model --layout: checkpoints in exactly the files openPangu-Embedded-1B and -7B are published in, with
// the real vocabulary size and special ids, and what the library makes of them.
#include <gtest/gtest.h>
#include <json/json.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "pangu/pangu.h"
#include "test_util.h"

namespace fs = std::filesystem;

using pangu_test::TempDir;

namespace {

int gen(const std::string &args) {
    const std::string cmd = std::string(PANGU_GEN_MODEL_BIN) + " " + args + " 2>/dev/null";
    const int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

const char *const kPrompts[] = {"def fibonacci(n):\n", "《静夜思》\n作者：李白\n床前明月光，",
                                "import os\nimport sys\n\nclass Stack:\n"};

// Per-position logits of the prompt (one row per token) from a fresh session on `dir`.
std::vector<float> prompt_logits(const std::string &dir, const char *text) {
    pangu_model *m = nullptr;
    EXPECT_EQ(pangu_model_load(dir.c_str(), nullptr, &m), PANGU_OK) << pangu_last_error();
    if (!m) return {};
    int32_t ids[256];
    size_t n = 0;
    EXPECT_EQ(pangu_tokenize(m, text, std::strlen(text), 1, 0, ids, 256, &n), PANGU_OK);
    pangu_model_info info{};
    info.struct_size = sizeof info;
    EXPECT_EQ(pangu_model_get_info(m, &info), PANGU_OK);
    pangu_session *s = nullptr;
    EXPECT_EQ(pangu_session_create(m, nullptr, &s), PANGU_OK) << pangu_last_error();
    std::vector<float> rows(n * static_cast<size_t>(info.n_vocab));
    EXPECT_EQ(pangu_session_eval(s, ids, n, rows.data()), PANGU_OK) << pangu_last_error();
    pangu_session_free(s);
    pangu_model_free(m);
    return rows;
}

// Widens the bundled model with `sizes`, then calls check(original, wide, prompt) on every prompt's logits.
template <typename Check>
void widen_and_compare(const std::string &sizes, Check check) {
    TempDir t("pangu_gen");
    const std::string wide = (t.path / "wide").string();
    ASSERT_EQ(gen("--widen-from " PANGU_MODEL_DIR " -o " + wide + " " + sizes), 0);
    for (const char *p : kPrompts) {
        const auto a = prompt_logits(PANGU_MODEL_DIR, p), b = prompt_logits(wide, p);
        ASSERT_FALSE(a.empty());
        ASSERT_EQ(a.size(), b.size()) << p;
        check(a, b, p);
    }
}

}  // namespace

TEST(GenModel, WidenedByAPowerOfFourIsBitIdentical) {
    // hidden 192 -> 768 (f = 4), 6 -> 9 layers, 6/2 -> 12/4 heads, MLP 512 -> 768
    widen_and_compare("--hidden 768 --layers 9 --heads 12 --ff 768", [](const auto &a, const auto &b, const char *p) {
        EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << p;
    });
}

TEST(GenModel, WidenedByOtherFactorsAgreesToRounding) {
    // hidden 192 -> 384 (f = 2: the norms' weights are divided by sqrt(2), which rounds)
    widen_and_compare("--hidden 384 --layers 7 --ff 512", [](const auto &a, const auto &b, const char *p) {
        double worst = 0;
        for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
        EXPECT_LT(worst, 1e-3) << p;
        EXPECT_GT(worst, 0.0) << "sqrt(2) cannot be exact: the comparison would not test anything";
    });
}

TEST(GenModel, WideningRefusesSmallerSizesAndOtherHeadDims) {
    TempDir t("pangu_gen");
    const std::string out = (t.path / "x").string();
    EXPECT_EQ(gen("--widen-from " PANGU_MODEL_DIR " -o " + out + " --hidden 128"), 2);   // narrower than 192
    EXPECT_EQ(gen("--widen-from " PANGU_MODEL_DIR " -o " + out + " --layers 3"), 2);     // fewer layers
    EXPECT_EQ(gen("--widen-from " PANGU_MODEL_DIR " -o " + out + " --heads 14"), 2);     // not 3 per KV head
    EXPECT_EQ(gen("--widen-from " PANGU_MODEL_DIR " -o " + out + " --head-dim 64"), 2);  // fixed by the source
    EXPECT_EQ(gen("--widen-from /nonexistent -o " + out), 1);
    EXPECT_FALSE(fs::exists(fs::path(out) / "model.safetensors"));
}

// ---- --layout: checkpoints laid out as openPangu-Embedded-1B and -7B are published ----------------------------

namespace {

constexpr int32_t kVocab = 153376, kUnused9 = 45887, kUnused10 = 45892;
const char *const kChatPrompt = "[unused9]用户：你好[unused10][unused9]助手：";

// The ids of tokenizer_config.json's added_tokens_decoder in the releases, with their pieces.
const std::pair<int32_t, const char *> kSpecials[] = {
    {45806, "<|User|>:"},  {45813, "<|Bot|>:"},   {45830, "[unused0]"},  {45840, "[unused1]"},  {45846, "[unused2]"},
    {45849, "[unused3]"},  {45861, "[unused4]"},  {45866, "[unused5]"},  {45874, "[unused6]"},  {45883, "[unused7]"},
    {45884, "[unused8]"},  {45887, "[unused9]"},  {45892, "[unused10]"}, {45920, "[unused11]"}, {45932, "[unused12]"},
    {45938, "[unused13]"}, {45953, "[unused14]"}, {45968, "[unused15]"}, {45974, "[unused16]"}, {45982, "[unused17]"},
    {45986, "[unused18]"}, {46005, "[unused19]"}, {46007, "[unused20]"}, {46014, "[unused21]"}, {46017, "[unused22]"},
    {46028, "[unused23]"}, {46032, "[unused24]"}, {46081, "[unused25]"}, {46086, "[unused26]"}, {46101, "[unused27]"},
    {46183, "[unused28]"}, {46230, "[unused29]"}, {46245, "[unused30]"}, {46257, "[unused31]"}, {144208, "[unused32]"},
    {144209, "[unused33]"}};

bool is_special(int32_t id) {
    for (const auto &s : kSpecials)
        if (s.first == id) return true;
    return false;
}

// Runs pangu-gen-model with `args`; its stderr goes to `*err` when given.
int gen_err(const std::string &args, std::string *err) {
    TempDir t("pangu_gen_err");
    const std::string path = (t.path / "err").string();
    const std::string cmd = std::string(PANGU_GEN_MODEL_BIN) + " " + args + " 2>" + path;
    const int rc = std::system(cmd.c_str());
    if (err) {
        std::ifstream in(path);
        err->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

Json::Value read_json(const fs::path &path) {
    std::ifstream in(path);
    Json::Value v;
    Json::CharReaderBuilder rb;
    std::string errs;
    EXPECT_TRUE(in && Json::parseFromStream(rb, in, &v, &errs)) << path << ": " << errs;
    return v;
}

// The JSON header of a safetensors file.
Json::Value safetensors_header(const fs::path &path) {
    std::ifstream in(path, std::ios::binary);
    uint64_t len = 0;
    in.read(reinterpret_cast<char *>(&len), 8);
    std::string text(len, '\0');
    in.read(text.data(), static_cast<std::streamsize>(len));
    Json::Value v;
    std::string errs;
    std::unique_ptr<Json::CharReader> r(Json::CharReaderBuilder().newCharReader());
    EXPECT_TRUE(in && r->parse(text.data(), text.data() + text.size(), &v, &errs)) << path << ": " << errs;
    return v;
}

struct Model {
    pangu_model *m = nullptr;
    explicit Model(const fs::path &dir) {
        EXPECT_EQ(pangu_model_load(dir.c_str(), nullptr, &m), PANGU_OK) << pangu_last_error();
    }
    ~Model() { pangu_model_free(m); }
    Model(const Model &) = delete;
    Model &operator=(const Model &) = delete;
};

std::vector<int32_t> tokenize(const pangu_model *m, const std::string &text, int add_bos, int parse_special) {
    size_t n = 0;
    EXPECT_EQ(pangu_tokenize(m, text.data(), text.size(), add_bos, parse_special, nullptr, 0, &n),
              text.empty() && add_bos != 1 ? PANGU_OK : PANGU_ERR_BUFFER_TOO_SMALL);
    std::vector<int32_t> ids(n);
    EXPECT_EQ(pangu_tokenize(m, text.data(), text.size(), add_bos, parse_special, ids.data(), n, &n), PANGU_OK);
    return ids;
}

std::string detokenize(const pangu_model *m, const std::vector<int32_t> &ids) {
    char buf[4096];
    size_t len = 0;
    EXPECT_EQ(pangu_detokenize(m, ids.data(), ids.size(), buf, sizeof buf, &len), PANGU_OK) << pangu_last_error();
    return std::string(buf, len);
}

// Writes a layout (with `extra` flags) to t/name and returns its directory.
fs::path make_layout(const TempDir &t, const std::string &layout, const std::string &extra = "") {
    const fs::path dir = t.path / layout;
    EXPECT_EQ(gen("--layout " + layout + " -o " + dir.string() + " " + extra), 0);
    return dir;
}

}  // namespace

TEST(GenModelLayout, OpenPangu1BFilesHoldThePublishedFields) {
    TempDir t("pangu_layout");
    const fs::path dir = make_layout(t, "openpangu-1b");
    const Json::Value c = read_json(dir / "config.json");
    EXPECT_EQ(c["architectures"][0].asString(), "PanguEmbeddedForCausalLM");
    EXPECT_EQ(c["model_type"].asString(), "PanguEmbedded");
    EXPECT_EQ(c["vocab_size"].asInt(), kVocab);
    EXPECT_EQ(c["eos_token_id"].asInt(), kUnused10);
    EXPECT_EQ(c["bos_token_id"].asInt(), 1);
    EXPECT_EQ(c["pad_token_id"].asInt(), 0);
    EXPECT_TRUE(c["tie_word_embeddings"].asBool());
    EXPECT_TRUE(c["bias"].asBool());
    EXPECT_EQ(c["rope_theta"].asDouble(), 1.6e7);
    EXPECT_FALSE(c.isMember("head_dim"));
    EXPECT_EQ(c["hidden_size"].asInt(), 64);
    EXPECT_EQ(c["num_hidden_layers"].asInt(), 2);
    EXPECT_EQ(c["torch_dtype"].asString(), "bfloat16");

    const Json::Value g = read_json(dir / "generation_config.json");
    EXPECT_TRUE(g["do_sample"].asBool());
    EXPECT_EQ(g["temperature"].asDouble(), 1.0);
    EXPECT_EQ(g["top_k"].asInt(), 0);
    EXPECT_EQ(g["top_p"].asDouble(), 0.8);
    EXPECT_EQ(g["eos_token_id"].asInt(), kUnused10);

    const Json::Value tc = read_json(dir / "tokenizer_config.json");
    EXPECT_TRUE(tc["add_bos_token"].asBool());
    EXPECT_FALSE(tc["add_eos_token"].asBool());
    EXPECT_EQ(tc["eos_token"].asString(), "[unused10]");
    EXPECT_EQ(tc["bos_token"].asString(), "<s>");
    EXPECT_EQ(tc["unk_token"].asString(), "<unk>");
    EXPECT_EQ(tc["pad_token"].asString(), "<unk>");
    EXPECT_TRUE(tc["model_max_length"].isNumeric());  // 1000000000000000019884624838656, as released
    const Json::Value &added = tc["added_tokens_decoder"];
    EXPECT_EQ(added.size(), 3u + std::size(kSpecials));
    for (const auto &[id, piece] : kSpecials) {
        const Json::Value &e = added[std::to_string(id)];
        EXPECT_EQ(e["content"].asString(), piece) << id;
        EXPECT_TRUE(e["special"].asBool()) << id;
    }
    EXPECT_EQ(added["0"]["content"].asString(), "<unk>");
    EXPECT_EQ(added["1"]["content"].asString(), "<s>");
    EXPECT_EQ(added["2"]["content"].asString(), "</s>");

    const Json::Value sm = read_json(dir / "special_tokens_map.json");
    EXPECT_EQ(sm["eos_token"]["content"].asString(), "[unused10]");
    EXPECT_EQ(sm["bos_token"]["content"].asString(), "<s>");
    EXPECT_EQ(sm["unk_token"]["content"].asString(), "<unk>");

    // One file, tied (no lm_head), and a rotary_emb.inv_freq per layer: F32, head_dim / 2 = 8 values.
    EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
    const Json::Value h = safetensors_header(dir / "model.safetensors");
    EXPECT_FALSE(h.isMember("lm_head.weight"));
    EXPECT_EQ(h["model.embed_tokens.weight"]["shape"][0].asInt(), kVocab);
    EXPECT_EQ(h["model.embed_tokens.weight"]["dtype"].asString(), "BF16");
    for (int l = 0; l < 2; ++l) {
        const Json::Value &f = h["model.layers." + std::to_string(l) + ".self_attn.rotary_emb.inv_freq"];
        EXPECT_EQ(f["dtype"].asString(), "F32") << l;
        EXPECT_EQ(f["shape"].size(), 1u);
        EXPECT_EQ(f["shape"][0].asInt(), 8) << l;
    }
    EXPECT_EQ(h["__metadata__"]["format"].asString(), "pt");
}

TEST(GenModelLayout, SpecialTokensComeFromTokenizerConfig) {
    TempDir t("pangu_layout");
    const fs::path dir = make_layout(t, "openpangu-1b");
    {
        Model m(dir);
        ASSERT_TRUE(m.m);
        const std::vector<int32_t> ids = tokenize(m.m, kChatPrompt, 0, 1);
        ASSERT_FALSE(ids.empty());
        EXPECT_EQ(ids[0], kUnused9);
        EXPECT_EQ(std::count(ids.begin(), ids.end(), kUnused10), 1);
        EXPECT_EQ(std::count(ids.begin(), ids.end(), kUnused9), 2);
        EXPECT_EQ(tokenize(m.m, kChatPrompt, -1, 1)[0], 1);  // add_bos_token: true
        for (const auto &[id, piece] : kSpecials)
            EXPECT_EQ(tokenize(m.m, piece, 0, 1), std::vector<int32_t>{id}) << piece;
        // Plain text never produces a special token, and tokenizes as with pangu-tiny, whose pieces come first.
        Model tiny(PANGU_MODEL_DIR);
        for (const std::string &text :
             {std::string(kChatPrompt), std::string("def fibonacci(n):\n    return n"),
              std::string("《静夜思》\n床前明月光，疑是地上霜。"), std::string("<fill_5000> [unused1]")}) {
            const std::vector<int32_t> plain = tokenize(m.m, text, 0, 0);
            for (int32_t id : plain) EXPECT_FALSE(is_special(id)) << text << ": " << id;
            EXPECT_EQ(plain, tokenize(tiny.m, text, 0, 0)) << text;
            EXPECT_EQ(detokenize(m.m, plain), text);
        }
        EXPECT_EQ(detokenize(m.m, {kUnused9, kUnused10}), "");
        EXPECT_EQ(detokenize(m.m, tokenize(m.m, kChatPrompt, 1, 1)),
                  detokenize(m.m, tokenize(m.m, "用户：你好助手：", 0, 1)));
    }
    // tokenizer.model alone types those pieces as ordinary text: without the two JSON files "[unused9]" is not one
    // token, so what makes it special above is tokenizer_config.json.
    fs::remove(dir / "tokenizer_config.json");
    fs::remove(dir / "special_tokens_map.json");
    Model bare(dir);
    ASSERT_TRUE(bare.m);
    const std::vector<int32_t> ids = tokenize(bare.m, "[unused9]", 0, 1);
    EXPECT_NE(ids, std::vector<int32_t>{kUnused9});
    EXPECT_EQ(detokenize(bare.m, {kUnused9}), "[unused9]");
}

TEST(GenModelLayout, InfoAndSamplingDefaultsComeFromTheCheckpoint) {
    TempDir t("pangu_layout");
    Model m(make_layout(t, "openpangu-1b"));
    ASSERT_TRUE(m.m);
    pangu_model_info info{};
    info.struct_size = sizeof info;
    ASSERT_EQ(pangu_model_get_info(m.m, &info), PANGU_OK);
    EXPECT_EQ(info.n_vocab, kVocab);
    EXPECT_EQ(info.n_layer, 2);
    EXPECT_EQ(info.n_embd, 64);
    EXPECT_EQ(info.head_dim, 16);  // hidden / heads: config.json has no head_dim
    EXPECT_EQ(info.bos_token, 1);
    EXPECT_EQ(info.eos_token, kUnused10);
    EXPECT_EQ(info.add_bos, 1);
    EXPECT_EQ(info.has_chat_template, 1);
    EXPECT_EQ(info.chat_end_token, kUnused10);
    EXPECT_EQ(info.has_generation_config, 1);

    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    ASSERT_EQ(pangu_model_get_sampling_defaults(m.m, &sp), PANGU_OK);
    EXPECT_EQ(sp.temperature, 1.0f);
    EXPECT_EQ(sp.top_k, 0);
    EXPECT_EQ(sp.top_p, 0.8f);

    int32_t stops[4];
    size_t n_stops = 0;
    ASSERT_EQ(pangu_chat_stop_tokens(m.m, stops, 4, &n_stops), PANGU_OK);
    EXPECT_EQ(std::vector<int32_t>(stops, stops + n_stops), (std::vector<int32_t>{kUnused10, kUnused9}));

    const pangu_chat_message msg{"user", "你好"};
    char buf[256];
    size_t len = 0;
    ASSERT_EQ(pangu_apply_chat_template(m.m, &msg, 1, 1, buf, sizeof buf, &len), PANGU_OK);
    const std::vector<int32_t> ids = tokenize(m.m, std::string(buf, len), 0, 1);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids[0], kUnused9);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), kUnused9), 3);   // system, user, the generation prompt
    EXPECT_EQ(std::count(ids.begin(), ids.end(), kUnused10), 2);  // the empty system message and the user's
}

// --bias-token: the token's logit leads at every position, so generation from the chat prompt ends at once at
// [unused10], the checkpoint's EOS, which streams as nothing. On the 7B layout the bias is only in lm_head.weight:
// this also shows that the untied head is the one used.
TEST(GenModelLayout, BiasTokenEndsTheReplyAtUnused10) {
    TempDir t("pangu_layout");
    for (const char *layout : {"openpangu-1b", "openpangu-7b"}) {
        Model m(make_layout(t, layout, "--bias-token 45892"));
        ASSERT_TRUE(m.m);
        pangu_session *s = nullptr;
        ASSERT_EQ(pangu_session_create(m.m, nullptr, &s), PANGU_OK) << pangu_last_error();
        pangu_sampling_params sp;
        pangu_sampling_params_init(&sp);
        ASSERT_EQ(pangu_model_get_sampling_defaults(m.m, &sp), PANGU_OK);  // temperature 1, top-p 0.8
        sp.max_new_tokens = 16;
        std::vector<std::pair<int32_t, std::string>> got;
        auto cb = [](void *user, int32_t token, const char *piece, size_t n) {
            static_cast<decltype(got) *>(user)->emplace_back(token, std::string(piece, n));
            return 0;
        };
        pangu_generate_result res{};
        res.struct_size = sizeof res;
        EXPECT_EQ(pangu_session_generate(s, kChatPrompt, &sp, cb, &got, &res), PANGU_OK) << pangu_last_error();
        EXPECT_EQ(res.stop_reason, PANGU_STOP_EOS) << layout;
        EXPECT_EQ(res.n_generated, 1) << layout;
        ASSERT_EQ(got.size(), 1u) << layout;
        EXPECT_EQ(got[0].first, kUnused10) << layout;
        EXPECT_EQ(got[0].second, "") << layout;
        pangu_session_free(s);
    }
}

TEST(GenModelLayout, OpenPangu7BIsShardedWithAnIndexAndUntied) {
    TempDir t("pangu_layout");
    const fs::path dir = make_layout(t, "openpangu-7b");
    const Json::Value c = read_json(dir / "config.json");
    EXPECT_FALSE(c["tie_word_embeddings"].asBool());
    EXPECT_FALSE(c.isMember("head_dim"));
    EXPECT_TRUE(c["bias"].asBool());
    EXPECT_EQ(c["rope_theta"].asDouble(), 1.6e7);
    EXPECT_FALSE(fs::exists(dir / "model.safetensors"));

    // The index names every tensor's shard, and each shard holds exactly what the index gives it.
    const Json::Value index = read_json(dir / "model.safetensors.index.json");
    const Json::Value &wm = index["weight_map"];
    EXPECT_EQ(wm.size(), 3u + 2u * 14u);  // embeddings, head, final norm; 13 tensors and inv_freq per layer
    EXPECT_TRUE(wm.isMember("lm_head.weight"));
    EXPECT_TRUE(wm.isMember("model.layers.1.self_attn.rotary_emb.inv_freq"));
    uint64_t data_bytes = 0;
    size_t tensors = 0;
    for (int k = 1; k <= 4; ++k) {
        const std::string shard = "model-0000" + std::to_string(k) + "-of-00004.safetensors";
        const Json::Value h = safetensors_header(dir / shard);
        for (const std::string &name : h.getMemberNames()) {
            if (name == "__metadata__") continue;
            EXPECT_EQ(wm[name].asString(), shard) << name;
            data_bytes += h[name]["data_offsets"][1].asUInt64() - h[name]["data_offsets"][0].asUInt64();
            ++tensors;
        }
    }
    EXPECT_EQ(tensors, wm.size());
    EXPECT_EQ(index["metadata"]["total_size"].asUInt64(), data_bytes);

    {
        Model m(dir);
        ASSERT_TRUE(m.m);
        pangu_model_info info{};
        info.struct_size = sizeof info;
        ASSERT_EQ(pangu_model_get_info(m.m, &info), PANGU_OK);
        EXPECT_EQ(info.n_head, 4);
        EXPECT_EQ(info.n_head_kv, 1);
        EXPECT_EQ(info.head_dim, 16);
        EXPECT_EQ(info.eos_token, kUnused10);
    }
    // The loader reads the shards the index names: one missing is an error naming it.
    fs::remove(dir / "model-00003-of-00004.safetensors");
    pangu_model *m = nullptr;
    EXPECT_NE(pangu_model_load(dir.c_str(), nullptr, &m), PANGU_OK);
    EXPECT_NE(std::string(pangu_last_error()).find("model-00003-of-00004.safetensors"), std::string::npos)
        << pangu_last_error();
}

TEST(GenModelLayout, ShapeFlagsAndShardsChangeTheShrunkSizes) {
    TempDir t("pangu_layout");
    const fs::path dir =
        make_layout(t, "openpangu-1b", "--layers 3 --hidden 96 --heads 6 --kv-heads 3 --ff 192 --shards 3");
    const Json::Value index = read_json(dir / "model.safetensors.index.json");
    std::set<std::string> shards;
    for (const std::string &name : index["weight_map"].getMemberNames())
        shards.insert(index["weight_map"][name].asString());
    EXPECT_EQ(shards, (std::set<std::string>{"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                             "model-00003-of-00003.safetensors"}));
    Model m(dir);
    ASSERT_TRUE(m.m);
    pangu_model_info info{};
    info.struct_size = sizeof info;
    ASSERT_EQ(pangu_model_get_info(m.m, &info), PANGU_OK);
    EXPECT_EQ(info.n_layer, 3);
    EXPECT_EQ(info.n_embd, 96);
    EXPECT_EQ(info.n_head, 6);
    EXPECT_EQ(info.n_head_kv, 3);
    EXPECT_EQ(info.head_dim, 16);
    EXPECT_EQ(info.n_vocab, kVocab);
}

TEST(GenModelLayout, BadFlagsAreRefusedWithAMessage) {
    TempDir t("pangu_layout");
    const std::string out = " -o " + (t.path / "x").string();
    const std::pair<const char *, const char *> cases[] = {
        {"--layout openpangu-3b", "unknown --layout"},
        {"--layout openpangu-1b --vocab 4096", "--vocab"},
        {"--layout openpangu-7b --untied", "--untied"},
        {"--layout openpangu-1b --widen-from " PANGU_MODEL_DIR, "exclude each other"},
        {"--layout openpangu-1b --bias-token 153376", "outside the vocabulary"},
        {"--layout openpangu-1b --shards 5", "at most 4"},
        {"--layout openpangu-1b --shards 0", "--shards needs a positive integer"},
        {"--layout openpangu-1b --hidden 60 --heads 4", "must be even"},
        {"--real-size", "--real-size needs --layout"},
        {"--shards 2", "--shards needs --layout"},
        {"--vocab 4096 --bias-token 5000", "outside the vocabulary"},
        {"--widen-from " PANGU_MODEL_DIR " --bias-token 3", "does not go with --widen-from"},
    };
    for (const auto &[args, message] : cases) {
        std::string err;
        EXPECT_EQ(gen_err(std::string(args) + out, &err), 2) << args;
        EXPECT_NE(err.find(message), std::string::npos) << args << ": " << err;
        EXPECT_NE(err.find("usage:"), std::string::npos) << args;
    }
    std::string err;
    EXPECT_EQ(gen_err("--layout openpangu-1b", &err), 2);
    EXPECT_NE(err.find("-o DIR is required"), std::string::npos) << err;
    EXPECT_EQ(gen_err("--layout openpangu-1b --tokenizer /nonexistent" + out, &err), 1);
    EXPECT_NE(err.find("/nonexistent/tokenizer.model"), std::string::npos) << err;
    EXPECT_FALSE(fs::exists(t.path / "x" / "model.safetensors"));
}

// The random-weight mode takes --bias-token too: with pangu-tiny's tokenizer and </s> (its EOS) biased, generation
// ends at once.
TEST(GenModel, RandomModeBiasTokenEndsGeneration) {
    TempDir t("pangu_gen");
    const fs::path dir = t.path / "r";
    ASSERT_EQ(gen("-o " + dir.string() +
                  " --layers 2 --hidden 64 --heads 4 --kv-heads 2 --head-dim 16 --ff 128 "
                  "--vocab 4096 --bias-token 2"),
              0);
    Model m(dir);
    ASSERT_TRUE(m.m);
    pangu_session *s = nullptr;
    ASSERT_EQ(pangu_session_create(m.m, nullptr, &s), PANGU_OK) << pangu_last_error();
    pangu_generate_result res{};
    res.struct_size = sizeof res;
    EXPECT_EQ(pangu_session_generate(s, "def main():", nullptr, nullptr, nullptr, &res), PANGU_OK);
    EXPECT_EQ(res.stop_reason, PANGU_STOP_EOS);
    EXPECT_EQ(res.n_generated, 1);
    pangu_session_free(s);
}
