// pangu-gen-model --widen-from: a large model that computes what the trained model computes. The benchmarks of
// speculative decoding on a memory-bound model rely on it, so check that it really is the same function.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
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
