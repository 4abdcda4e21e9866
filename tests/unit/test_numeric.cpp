// NaN and Inf in the logits. The loader rejects non-finite norms and biases, but a big weight matrix is not
// scanned at load (that would read every weight); a NaN there shows up in the logits. Generation checks the
// rows it samples from and stops with PANGU_ERR_NUMERIC, naming the model, instead of sampling garbage; the
// session stays usable once the poisoned part of its context is gone, and other sessions never notice.
// Poisoned models are copies of pangu-tiny (and its draft) with one row of one weight overwritten.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "pangu/pangu.h"
#include "format/safetensors.h"

namespace fs = std::filesystem;

namespace {

constexpr uint16_t kNaN = 0x7FC0, kInf = 0x7F80;  // bf16

struct TempDir {
    fs::path path;
    TempDir() {
        char tmpl[] = "/tmp/pangu_numeric_XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~TempDir() { fs::remove_all(path); }
};

// A copy of the model in `src` with row `row` of bf16 tensor `tensor` set to `value`.
void poisoned_copy(const fs::path &src, const fs::path &dst, const std::string &tensor, int64_t row, uint16_t value) {
    for (const char *f : {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"})
        if (fs::exists(src / f)) fs::copy_file(src / f, dst / f);
    uint64_t offset = 0;
    int64_t cols = 0;
    {
        pangu::TensorStore store;
        store.open_file((dst / "model.safetensors").string(), pangu::MapOptions{});
        const pangu::TensorInfo *t = store.find(tensor);
        ASSERT_NE(t, nullptr) << tensor;
        ASSERT_EQ(t->dtype, pangu::DType::BF16);
        cols = t->shape[1];
        offset = t->offset + static_cast<uint64_t>(row * cols) * 2;
    }
    std::fstream f(dst / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(offset));
    for (int64_t c = 0; c < cols; ++c) f.write(reinterpret_cast<const char *>(&value), 2);
    ASSERT_TRUE(f.good());
}

pangu_model *load(const fs::path &dir) {
    pangu_model *m = nullptr;
    EXPECT_EQ(pangu_model_load(dir.c_str(), nullptr, &m), PANGU_OK) << pangu_last_error();
    return m;
}

struct Outcome {
    pangu_status status;
    std::vector<int32_t> tokens;
    pangu_generate_result result;
    std::string message;
};

int collect(void *user, int32_t token, const char *, size_t) {
    static_cast<std::vector<int32_t> *>(user)->push_back(token);
    return 0;
}

Outcome generate(pangu_session *s, const std::vector<int32_t> &prompt, int n, float temperature = 0.0f) {
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.max_new_tokens = n;
    sp.temperature = temperature;
    sp.seed = 11;
    Outcome r{};
    r.result.struct_size = sizeof r.result;
    r.status = pangu_session_generate_tokens(s, prompt.data(), prompt.size(), &sp, collect, &r.tokens, &r.result);
    r.message = pangu_session_last_error(s);
    return r;
}

pangu_session *session(pangu_model *m, int spec = PANGU_SPEC_PLD, const pangu_model *draft = nullptr) {
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.n_ctx = 256;
    p.spec_mode = spec;
    p.draft_model = draft;
    pangu_session *s = nullptr;
    EXPECT_EQ(pangu_session_create(m, &p, &s), PANGU_OK) << pangu_last_error();
    return s;
}

const std::vector<int32_t> kPromptA = {1, 651, 681, 13, 651, 304, 497, 13, 13, 13, 310, 580, 263, 713, 295, 13};

}  // namespace

// A NaN in the embedding row of one token poisons every position from that token on. A context without
// the token is unaffected; one that reaches it stops with NUMERIC; reset and truncate recover the session.
TEST(Numeric, NanEmbeddingRowStopsGenerationAndTheSessionRecovers) {
    pangu_model *clean = load(PANGU_MODEL_DIR);
    // Prompt B and its clean continuation; the poisoned token is one of prompt A's that neither contains.
    const std::vector<int32_t> prompt_b = {1, 310, 580, 263, 713, 295, 13};
    pangu_session *ref_s = session(clean);
    const Outcome ref = generate(ref_s, prompt_b, 24);
    ASSERT_EQ(ref.status, PANGU_OK);
    int32_t poison = -1;
    for (int32_t t : kPromptA)
        if (std::count(prompt_b.begin(), prompt_b.end(), t) == 0 && std::count(ref.tokens.begin(), ref.tokens.end(), t) == 0) {
            poison = t;
            break;
        }
    ASSERT_GE(poison, 0);
    TempDir tmp;
    poisoned_copy(PANGU_MODEL_DIR, tmp.path, "model.embed_tokens.weight", poison, kNaN);
    pangu_model *bad = load(tmp.path);

    pangu_session *witness = session(bad);  // created before the failure, on the same poisoned model
    pangu_session *s = session(bad);
    const Outcome r = generate(s, kPromptA, 24);
    EXPECT_EQ(r.status, PANGU_ERR_NUMERIC);
    EXPECT_NE(r.message.find("NaN or Inf"), std::string::npos) << r.message;
    EXPECT_NE(r.message.find("the model's logits"), std::string::npos) << r.message;
    EXPECT_STREQ(pangu_last_error(), r.message.c_str());
    EXPECT_EQ(r.result.stop_reason, PANGU_STOP_NONE);
    EXPECT_EQ(r.result.n_generated, 0);
    EXPECT_TRUE(r.tokens.empty());
    EXPECT_EQ(pangu_session_n_tokens(s), kPromptA.size());  // the prompt stays; nothing was sampled from NaN

    // Reset: the session works again, and exactly as the clean model does on a context without the token.
    ASSERT_EQ(pangu_session_reset(s), PANGU_OK);
    const Outcome after_reset = generate(s, prompt_b, 24);
    EXPECT_EQ(after_reset.status, PANGU_OK) << after_reset.message;
    EXPECT_EQ(after_reset.tokens, ref.tokens);

    // Truncate: a context that reached the token is cut back before it and goes on.
    pangu_session *t = session(bad);
    ASSERT_EQ(pangu_session_eval(t, prompt_b.data(), prompt_b.size(), nullptr), PANGU_OK);
    EXPECT_EQ(generate(t, std::vector<int32_t>{poison}, 8).status, PANGU_ERR_NUMERIC);
    ASSERT_EQ(pangu_session_truncate(t, prompt_b.size()), PANGU_OK);
    const Outcome after_truncate = generate(t, std::vector<int32_t>{}, 24);
    EXPECT_EQ(after_truncate.status, PANGU_OK) << after_truncate.message;
    EXPECT_EQ(after_truncate.tokens, ref.tokens);

    // The other session on the poisoned model never noticed.
    const Outcome w = generate(witness, prompt_b, 24);
    EXPECT_EQ(w.status, PANGU_OK);
    EXPECT_EQ(w.tokens, ref.tokens);

    pangu_session_free(t);
    pangu_session_free(s);
    pangu_session_free(witness);
    pangu_session_free(ref_s);
    pangu_model_free(bad);
    pangu_model_free(clean);
}

// NaN or Inf in one row of the head: every position's logits hold it. Caught in every decoding mode,
// greedy and sampling alike.
TEST(Numeric, NonFiniteHeadIsCaughtInEveryDecodingMode) {
    pangu_model *draft = load(PANGU_DRAFT_DIR);
    for (uint16_t value : {kNaN, kInf}) {
        TempDir tmp;
        poisoned_copy(PANGU_MODEL_DIR, tmp.path, "lm_head.weight", 1234, value);
        pangu_model *bad = load(tmp.path);
        for (int spec : {PANGU_SPEC_OFF, PANGU_SPEC_PLD, PANGU_SPEC_DRAFT, PANGU_SPEC_SELF})
            for (float temperature : {0.0f, 0.8f}) {
                pangu_session *s = session(bad, spec, draft);
                const Outcome r = generate(s, kPromptA, 16, temperature);
                EXPECT_EQ(r.status, PANGU_ERR_NUMERIC) << "spec " << spec << " temperature " << temperature;
                EXPECT_NE(r.message.find("the model's logits"), std::string::npos) << r.message;
                // The session is usable afterwards: the same call fails the same way, nothing worse.
                EXPECT_EQ(generate(s, std::vector<int32_t>{}, 4, temperature).status, PANGU_ERR_NUMERIC);
                pangu_session_free(s);
            }
        pangu_model_free(bad);
    }
    pangu_model_free(draft);
}

// A poisoned draft model is named as such; the target alone (speculation off) is fine.
TEST(Numeric, NonFiniteDraftModelIsNamed) {
    TempDir tmp;
    poisoned_copy(PANGU_DRAFT_DIR, tmp.path, "lm_head.weight", 77, kNaN);
    pangu_model *bad_draft = load(tmp.path);
    pangu_model *target = load(PANGU_MODEL_DIR);
    for (float temperature : {0.0f, 0.8f}) {
        pangu_session *s = session(target, PANGU_SPEC_DRAFT, bad_draft);
        // A prompt with repetition, so that the controller decides to draft.
        const Outcome r = generate(s, kPromptA, 48, temperature);
        EXPECT_EQ(r.status, PANGU_ERR_NUMERIC) << r.message;
        EXPECT_NE(r.message.find("draft model"), std::string::npos) << r.message;
        pangu_session_free(s);
        pangu_session *plain = session(target, PANGU_SPEC_OFF);
        EXPECT_EQ(generate(plain, kPromptA, 16, temperature).status, PANGU_OK);
        pangu_session_free(plain);
    }
    pangu_model_free(target);
    pangu_model_free(bad_draft);
}

// Evaluation hands back the logits as computed: whoever reads them can see the NaN (documented).
TEST(Numeric, EvalReturnsTheLogitsAsTheyAre) {
    TempDir tmp;
    poisoned_copy(PANGU_MODEL_DIR, tmp.path, "lm_head.weight", 1234, kNaN);
    pangu_model *bad = load(tmp.path);
    pangu_session *s = session(bad);
    ASSERT_EQ(pangu_session_eval(s, kPromptA.data(), kPromptA.size(), nullptr), PANGU_OK);
    const float *lg = nullptr;
    int32_t nv = 0;
    ASSERT_EQ(pangu_session_get_logits(s, &lg, &nv), PANGU_OK);
    EXPECT_TRUE(std::isnan(lg[1234]));
    EXPECT_FALSE(std::isnan(lg[1233]));
    pangu_session_free(s);
    pangu_model_free(bad);
}
