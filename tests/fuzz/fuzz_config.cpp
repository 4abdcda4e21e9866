// Fuzzes the JSON files of a model directory from memory: the input is given, as it is, to the parsers of
// config.json, model.safetensors.index.json, tokenizer_config.json, special_tokens_map.json,
// generation_config.json and npu-sim's device profile. Each either accepts it, with values inside the ranges the
// rest of the library relies on, or refuses it with its documented status (the profile: false and a message).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>

#include "common/common.h"
#include "device/npusim/internal.h"
#include "format/config.h"
#include "fuzz_util.h"
#include "format/safetensors.h"
#include "format/tokenizer_config.h"
#include "model/vocab.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string text(reinterpret_cast<const char *>(data), size);
    try {
        const pangu::ModelConfig c = pangu::parse_config(text, "config.json");
        FUZZ_CHECK(c.n_vocab >= 1 && c.n_embd >= 1 && c.n_ff >= 1 && c.n_layer >= 1 && c.n_head >= 1 &&
                       c.n_head_kv >= 1 && c.n_head % c.n_head_kv == 0 && c.head_dim >= 2 && c.head_dim % 2 == 0 &&
                       c.n_ctx_train >= 1,
                   "accepted an inconsistent configuration");
        FUZZ_CHECK(c.rms_eps > 0.0f && c.rope_theta > 1.0, "accepted eps %g theta %g", c.rms_eps, c.rope_theta);
        FUZZ_CHECK(c.bos < c.n_vocab && c.eos < c.n_vocab, "special ids outside the vocabulary");
    } catch (const pangu::Error &e) {
        FUZZ_CHECK(fuzz::one_of(e.status(), {PANGU_ERR_CONFIG, PANGU_ERR_UNSUPPORTED}), "config.json: status %d: %s",
                   (int)e.status(), e.what());
    }
    try {
        std::map<std::string, std::string> shard_of;
        std::vector<std::string> shards;
        pangu::parse_safetensors_index("model.safetensors.index.json", text, shard_of, shards);
        FUZZ_CHECK(!shard_of.empty() && !shards.empty(), "accepted an empty weight_map");
        for (const auto &s : shards) FUZZ_CHECK(!s.empty() && s.find('/') == std::string::npos && s != ".." && s != ".",
                                                "accepted shard name %s", s.c_str());
    } catch (const pangu::Error &e) {
        FUZZ_CHECK(e.status() == PANGU_ERR_CONFIG, "index: status %d: %s", (int)e.status(), e.what());
    }
    try {
        pangu::TokenizerConfig tc;
        pangu::parse_tokenizer_config(text, "tokenizer_config.json", tc);
        for (const auto &a : tc.added) FUZZ_CHECK(a.id >= 0 && !a.content.empty(), "accepted added token %lld", (long long)a.id);
    } catch (const pangu::Error &e) {
        FUZZ_CHECK(e.status() == PANGU_ERR_CONFIG || e.status() == PANGU_ERR_TOKENIZER,
                   "tokenizer_config.json: status %d: %s", (int)e.status(), e.what());
    }
    try {
        pangu::TokenizerConfig tc;
        pangu::parse_special_tokens_map(text, "special_tokens_map.json", tc);
    } catch (const pangu::Error &e) {
        FUZZ_CHECK(e.status() == PANGU_ERR_CONFIG || e.status() == PANGU_ERR_TOKENIZER,
                   "special_tokens_map.json: status %d: %s", (int)e.status(), e.what());
    }
    try {
        const pangu::GenerationConfig g = pangu::parse_generation_config(text, "generation_config.json", 4096);
        for (int id : g.eos_ids) FUZZ_CHECK(id >= 0 && id < 4096, "accepted eos id %d", id);
        FUZZ_CHECK(!g.top_p || (*g.top_p > 0 && *g.top_p <= 1), "accepted top_p %g", *g.top_p);
        FUZZ_CHECK(!g.temperature || *g.temperature >= 0, "accepted temperature %g", *g.temperature);
    } catch (const pangu::Error &e) {
        FUZZ_CHECK(e.status() == PANGU_ERR_CONFIG, "generation_config.json: status %d: %s", (int)e.status(), e.what());
    }
    pangu::npusim::Profile prof;
    std::string err;
    if (pangu::npusim::parse_profile(text, "profile.json", &prof, &err)) {
        for (double v : {prof.ai_cores, prof.fp16_tflops, prof.int8_tops, prof.memory_gbps, prof.host_link_gbps})
            FUZZ_CHECK(std::isfinite(v) && v > 0, "profile accepted %g", v);
        FUZZ_CHECK(std::isfinite(prof.launch_us) && prof.launch_us >= 0, "profile accepted launch_us %g",
                   prof.launch_us);
        FUZZ_CHECK(prof.ai_cores == std::floor(prof.ai_cores), "profile accepted ai_cores %g", prof.ai_cores);
    } else {
        FUZZ_CHECK(err.find("profile.json") != std::string::npos, "profile refused without naming the file: %s",
                   err.c_str());
    }
    return 0;
}
