// greedy_agreement: how often a compressed model's greedy continuation is the reference model's.
//
//   greedy_agreement --ref DIR [--ref-precision P] [--ref-kv-type T] -m DIR [--precision P] [--kv-type T]
//                    --data FILE.jsonl [--prompts 50] [--prompt-tokens 64] [--tokens 64] [--docs odd|even|all] [-t N]
//                    [--backend NAME] [--json]
//
// Prompts are the first --prompt-tokens tokens of JSONL documents (the "text" field) that have at least that
// many tokens, taken in file order from the documents --docs selects: odd (default: the evaluation half of
// the project's split of dev.jsonl, documents 1, 3, 5, ... counting from 0), even (the calibration half) or
// all. Each model continues each prompt greedily for --tokens tokens (speculation off, no stop strings; a
// model's end of text ends its continuation early). Reported: prompts whose continuations are identical,
// the mean length of the identical prefix, and the share of positions that agree.
#include <json/json.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "pangu/pangu.h"

namespace {

[[noreturn]] void die(const std::string &msg) {
    std::fprintf(stderr, "greedy_agreement: %s\n", msg.c_str());
    std::exit(1);
}

int32_t parse_kv_type(const std::string &v) {
    if (v == "f32") return PANGU_KV_F32;
    if (v == "f16") return PANGU_KV_F16;
    if (v == "bf16") return PANGU_KV_BF16;
    if (v == "q8") return PANGU_KV_Q8;
    die("a KV cache type is f32, f16, bf16 or q8, not '" + v + "'");
}

int32_t parse_precision(const std::string &v) {
    if (v == "auto") return PANGU_PRECISION_AUTO;
    if (v == "f32") return PANGU_PRECISION_F32;
    if (v == "bf16") return PANGU_PRECISION_BF16;
    if (v == "int8") return PANGU_PRECISION_INT8;
    if (v == "int16") return PANGU_PRECISION_INT16;
    die("precision must be auto, f32, bf16, int8 or int16, not '" + v + "'");
}

struct Options {
    std::string ref, model, data, docs = "odd", backend;
    int32_t ref_precision = PANGU_PRECISION_AUTO, precision = PANGU_PRECISION_AUTO;
    int32_t ref_kv = PANGU_KV_F16, kv = PANGU_KV_F16;  // the library's default
    int prompts = 50, prompt_tokens = 64, tokens = 64, threads = 2;
    bool json = false;
};

Options parse(int argc, char **argv) {
    Options o;
    auto value = [&](int &i) -> std::string {
        if (i + 1 >= argc) die(std::string(argv[i]) + " needs a value");
        return argv[++i];
    };
    auto number = [&](int &i, int lo, int hi) {
        const std::string v = value(i);
        char *end = nullptr;
        const long n = std::strtol(v.c_str(), &end, 10);
        if (v.empty() || *end || n < lo || n > hi)
            die(std::string(argv[i - 1]) + " expects " + std::to_string(lo) + ".." + std::to_string(hi) + ", not '" + v + "'");
        return static_cast<int>(n);
    };
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--ref") o.ref = value(i);
        else if (a == "-m" || a == "--model") o.model = value(i);
        else if (a == "--data") o.data = value(i);
        else if (a == "--ref-precision") o.ref_precision = parse_precision(value(i));
        else if (a == "--precision") o.precision = parse_precision(value(i));
        else if (a == "--ref-kv-type") o.ref_kv = parse_kv_type(value(i));
        else if (a == "--kv-type") o.kv = parse_kv_type(value(i));
        else if (a == "--prompts") o.prompts = number(i, 1, 100000);
        else if (a == "--prompt-tokens") o.prompt_tokens = number(i, 1, 100000);
        else if (a == "--tokens") o.tokens = number(i, 1, 100000);
        else if (a == "-t" || a == "--threads") o.threads = number(i, 1, 256);
        else if (a == "--docs") o.docs = value(i);
        else if (a == "--backend") o.backend = value(i);
        else if (a == "--json") o.json = true;
        else die("unknown option '" + a + "' (usage in bench/greedy_agreement.cpp)");
    }
    if (o.ref.empty() || o.model.empty() || o.data.empty()) die("--ref DIR, -m DIR and --data FILE are required");
    if (o.docs != "odd" && o.docs != "even" && o.docs != "all") die("--docs takes odd, even or all");
    return o;
}

pangu_model *load(const std::string &dir, int32_t precision, const std::string &backend) {
    pangu_model_params mp;
    pangu_model_params_init(&mp);
    mp.activation_precision = precision;
    if (!backend.empty()) mp.backend = backend.c_str();
    pangu_model *m = nullptr;
    if (pangu_model_load(dir.c_str(), &mp, &m) != PANGU_OK) die(dir + ": " + pangu_last_error());
    return m;
}

std::vector<std::vector<int32_t>> read_prompts(pangu_model *m, const Options &o) {
    std::ifstream f(o.data);
    if (!f) die("cannot open " + o.data);
    std::vector<std::vector<int32_t>> out;
    std::string line;
    for (long doc = 0; out.size() < static_cast<size_t>(o.prompts) && std::getline(f, line); ++doc) {
        if ((o.docs == "odd" && doc % 2 == 0) || (o.docs == "even" && doc % 2 == 1)) continue;
        Json::Value v;
        Json::CharReaderBuilder rb;
        std::string errs;
        std::istringstream ls(line);
        if (!Json::parseFromStream(rb, ls, &v, &errs) || !v.isObject() || !v["text"].isString())
            die(o.data + ": line " + std::to_string(doc + 1) + " is not a JSON object with a \"text\" string");
        const std::string text = v["text"].asString();
        size_t n = 0;
        pangu_tokenize(m, text.data(), text.size(), 1, 0, nullptr, 0, &n);
        std::vector<int32_t> ids(n);
        if (pangu_tokenize(m, text.data(), text.size(), 1, 0, ids.data(), n, &n) != PANGU_OK) die("tokenize failed");
        if (ids.size() < static_cast<size_t>(o.prompt_tokens)) continue;
        ids.resize(o.prompt_tokens);
        out.push_back(ids);
    }
    if (out.empty()) die(o.data + ": no document of the selected half has " + std::to_string(o.prompt_tokens) + " tokens");
    return out;
}

std::vector<int32_t> continue_greedy(pangu_model *m, int32_t kv_type, const std::vector<int32_t> &prompt,
                                     const Options &o) {
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.kv_type = kv_type;
    p.n_ctx = o.prompt_tokens + o.tokens + 8;
    p.n_threads = o.threads;
    p.spec_mode = PANGU_SPEC_OFF;
    pangu_session *s = nullptr;
    if (pangu_session_create(m, &p, &s) != PANGU_OK) die(std::string("session: ") + pangu_last_error());
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.max_new_tokens = o.tokens;
    std::vector<int32_t> out;
    auto cb = [](void *u, int32_t t, const char *, size_t) {
        static_cast<std::vector<int32_t> *>(u)->push_back(t);
        return 0;
    };
    if (pangu_session_generate_tokens(s, prompt.data(), prompt.size(), &sp, cb, &out, nullptr) != PANGU_OK)
        die(std::string("generate: ") + pangu_session_last_error(s));
    pangu_session_free(s);
    return out;
}

}  // namespace

int main(int argc, char **argv) {
    const Options o = parse(argc, argv);
    pangu_model *ref = load(o.ref, o.ref_precision, o.backend), *model = load(o.model, o.precision, o.backend);
    const std::vector<std::vector<int32_t>> prompts = read_prompts(ref, o);
    long identical = 0, prefix_sum = 0, agree = 0, positions = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
        const std::vector<int32_t> a = continue_greedy(ref, o.ref_kv, prompts[i], o),
                                   b = continue_greedy(model, o.kv, prompts[i], o);
        size_t prefix = 0;
        while (prefix < a.size() && prefix < b.size() && a[prefix] == b[prefix]) ++prefix;
        identical += a == b;
        prefix_sum += static_cast<long>(prefix);
        const size_t n = std::max(a.size(), b.size());
        for (size_t k = 0; k < n; ++k) agree += k < a.size() && k < b.size() && a[k] == b[k];
        positions += static_cast<long>(n);
        std::fprintf(stderr, "\rprompt %zu of %zu: %ld identical so far", i + 1, prompts.size(), identical);
    }
    std::fprintf(stderr, "\n");
    const double n = static_cast<double>(prompts.size());
    if (o.json)
        std::printf("{\"prompts\": %zu, \"tokens\": %d, \"identical\": %ld, \"identical_share\": %.4f, "
                    "\"mean_prefix\": %.2f, \"position_agreement\": %.4f}\n",
                    prompts.size(), o.tokens, identical, identical / n, prefix_sum / n,
                    positions ? static_cast<double>(agree) / positions : 0.0);
    else
        std::printf("%ld of %zu prompts identical in all %d tokens (%.1f %%); identical prefix %.1f tokens on "
                    "average; %.1f %% of positions agree\n",
                    identical, prompts.size(), o.tokens, 100.0 * identical / n, prefix_sum / n,
                    positions ? 100.0 * agree / positions : 0.0);
    pangu_model_free(model);
    pangu_model_free(ref);
    return 0;
}
