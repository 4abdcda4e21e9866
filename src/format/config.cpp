#include "format/config.h"

#include <cmath>
#include <memory>

#include "common/common.h"
#include "common/io.h"
#include "common/json_util.h"

namespace pangu {

namespace {

int get_int(const Json::Value &root, const std::string &path, const char *key, int def, bool required, int min_v,
            int max_v) {
    const Json::Value &v = root[key];
    if (v.isNull()) {
        if (required) fail(PANGU_ERR_CONFIG, path + ": missing required field \"" + key + "\"");
        // A default derived from other fields must pass the same check: head_dim = hidden_size /
        // num_attention_heads was 0 for hidden_size 1 and 2 heads (found by fuzz_config).
        if (def < min_v || def > max_v)
            fail(PANGU_ERR_CONFIG, path + ": field \"" + key + "\" is missing and its default, " + std::to_string(def) +
                                       ", is out of range [" + std::to_string(min_v) + ", " + std::to_string(max_v) + "]");
        return def;
    }
    // Integers written as 4096.0 are accepted. The range is checked on the double before any conversion:
    // converting a double beyond int64_t's range (4.9e22, found by fuzz_config) is undefined behaviour, and
    // jsoncpp's asInt64() throws on it.
    if (!v.isNumeric() || !std::isfinite(v.asDouble()) || std::trunc(v.asDouble()) != v.asDouble())
        fail(PANGU_ERR_CONFIG, path + ": field \"" + key + "\" must be an integer");
    const bool in_range = v.isInt64() ? v.asInt64() >= min_v && v.asInt64() <= max_v
                                      : !v.isUInt64() && v.asDouble() >= min_v && v.asDouble() <= max_v;
    if (!in_range)
        fail(PANGU_ERR_CONFIG, path + ": field \"" + key + "\" = " +
                                   (v.isInt64() ? std::to_string(v.asInt64()) : std::to_string(v.asDouble())) +
                                   " is out of range [" + std::to_string(min_v) + ", " + std::to_string(max_v) + "]");
    return v.isInt64() ? static_cast<int>(v.asInt64()) : static_cast<int>(v.asDouble());
}

double get_num(const Json::Value &root, const std::string &path, const char *key, double def) {
    const Json::Value &v = root[key];
    if (v.isNull()) return def;
    if (!v.isNumeric()) fail(PANGU_ERR_CONFIG, path + ": field \"" + key + "\" must be a number");
    return v.asDouble();
}

bool get_bool(const Json::Value &root, const std::string &path, const char *key, bool def) {
    const Json::Value &v = root[key];
    if (v.isNull()) return def;
    if (!v.isBool()) fail(PANGU_ERR_CONFIG, path + ": field \"" + key + "\" must be true or false");
    return v.asBool();
}

// A token id or a list of them (eos_token_id), each in [0, n_vocab); null or absent gives none.
std::vector<int> get_ids(const Json::Value &root, const std::string &path, const char *key, int n_vocab) {
    const Json::Value &v = root[key];
    std::vector<int> ids;
    if (v.isNull()) return ids;
    if (!v.isArray()) {  // a single id; -1 is none
        const int id = get_int(root, path, key, -1, false, -1, n_vocab - 1);
        if (id >= 0) ids.push_back(id);
        return ids;
    }
    if (v.size() > 1024) fail(PANGU_ERR_CONFIG, path + ": field \"" + key + "\" lists more than 1024 ids");
    for (Json::ArrayIndex i = 0; i < v.size(); ++i) {
        Json::Value one(Json::objectValue);
        one["id"] = v[i];
        const std::string name = std::string(key) + "[" + std::to_string(i) + "]";
        ids.push_back(get_int(one, path + ": " + name, "id", -1, true, 0, n_vocab - 1));
    }
    return ids;
}

}  // namespace

GenerationConfig parse_generation_config(const std::string &text, const std::string &path, int n_vocab) {
    Json::Value root;
    std::string errs;
    if (!parse_json(text, root, errs)) fail(PANGU_ERR_CONFIG, path + ": invalid JSON: " + errs);
    if (!root.isObject()) fail(PANGU_ERR_CONFIG, path + ": top level must be a JSON object");
    GenerationConfig g;
    g.present = true;
    g.eos_ids = get_ids(root, path, "eos_token_id", n_vocab);
    if (root.isMember("do_sample")) g.do_sample = get_bool(root, path, "do_sample", true);
    auto num = [&](const char *key, double lo, double hi, bool lo_open, std::optional<double> &out) {
        if (!root.isMember(key) || root[key].isNull()) return;
        const double v = get_num(root, path, key, 0);
        if (!std::isfinite(v) || v > hi || (lo_open ? v <= lo : v < lo))
            fail(PANGU_ERR_CONFIG, path + ": field \"" + key + "\" = " + std::to_string(v) + " is out of range");
        out = v;
    };
    num("temperature", 0.0, 1e6, false, g.temperature);
    num("top_p", 0.0, 1.0, true, g.top_p);
    num("repetition_penalty", 0.0, 1e6, true, g.repetition_penalty);
    if (root.isMember("top_k") && !root["top_k"].isNull()) g.top_k = get_int(root, path, "top_k", 0, true, 0, 1 << 24);
    if (root.isMember("max_new_tokens") && !root["max_new_tokens"].isNull())
        g.max_new_tokens = get_int(root, path, "max_new_tokens", 0, true, 0, 1 << 30);
    return g;
}

GenerationConfig load_generation_config(const std::string &dir, int n_vocab) {
    const std::string path = dir + "/generation_config.json";
    std::string text, why;
    switch (read_file(path, kMaxJsonBytes, text, why)) {
        case ReadResult::kMissing: return GenerationConfig{};
        case ReadResult::kError: fail(PANGU_ERR_IO, path + ": cannot read: " + why);
        case ReadResult::kTooBig: fail(PANGU_ERR_CONFIG, path + ": " + why);
        case ReadResult::kOk: break;
    }
    return parse_generation_config(text, path, n_vocab);
}

// quantization_config's "symmetric" and "act_order" (low-bit weights only), booleans when present.
static bool get_qflag(const Json::Value &q, const std::string &path, const char *key, bool dflt) {
    const Json::Value &v = q[key];
    if (v.isNull()) return dflt;
    if (!v.isBool()) fail(PANGU_ERR_CONFIG, path + ": quantization_config." + key + " must be true or false");
    return v.asBool();
}

// The activation dtype a quantized checkpoint declares (default: what its method implies), checked against
// what the method allows.
static void parse_quant_activation(const Json::Value &q, const std::string &path, ModelConfig &c) {
    const std::string &m = c.quant_method;
    const Json::Value &act_dtype = q["activation_dtype"];
    if (!act_dtype.isNull() && !act_dtype.isString())
        fail(PANGU_ERR_CONFIG, path + ": quantization_config.activation_dtype must be a string");
    const bool a8 = m == "w8a8" || m == "w4a8";
    c.quant_activation = !act_dtype.isNull() ? act_dtype.asString() : a8 ? "int8" : "bfloat16";
    const std::string &a = c.quant_activation;
    if (a != "bfloat16" && a != "float16" && a != "float32" && a != "int8")
        fail(PANGU_ERR_CONFIG, path + ": quantization_config.activation_dtype \"" + a +
                                   "\" is not one of bfloat16, float16, float32, int8");
    if (m == "w4a8" && a != "int8")
        fail(PANGU_ERR_UNSUPPORTED, path + ": w4a8 checkpoints take int8 activations, not " + a);
    if ((m == "w4a16" || m == "mixed") && a == "int8")
        fail(PANGU_ERR_UNSUPPORTED, path + ": " + m + " checkpoints are made for 16-bit activations, not int8");
}

// quantization_config, as pangu-quantize writes it: w8a16 / w8a8 (int8 weights, one scale per output channel;
// 16-bit or int8 activations), w4a8 / w4a16 (PGD_I4 weights with a scale, and a zero point unless symmetric,
// per group of group_size columns) and mixed (PGD_QB: 2 to 8 bits per output channel).
static void parse_quantization(const Json::Value &q, const std::string &path, ModelConfig &c) {
    c.quant_method = q["quant_method"].asString();
    const std::string &m = c.quant_method;
    if (m != "w8a16" && m != "w8a8" && m != "w4a8" && m != "w4a16" && m != "mixed")
        fail(PANGU_ERR_UNSUPPORTED, path + ": quantization method \"" + m +
                                        "\" is not supported (pangu-quantize writes \"w8a16\", \"w8a8\", \"w4a8\", "
                                        "\"w4a16\" and \"mixed\")");
    c.quant_bits = m == "mixed" ? 0 : m == "w4a8" || m == "w4a16" ? 4 : 8;
    // isInt() first: asInt() throws on integers beyond int's range (found by fuzz_config), and asString()
    // on an object or array. A mixed checkpoint's "bits" lists the widths it may use.
    const Json::Value &bits = q["bits"];
    if (c.quant_bits != 0 && q.isMember("bits") && (!bits.isInt() || bits.asInt() != c.quant_bits))
        fail(PANGU_ERR_UNSUPPORTED, path + ": quantization_config.bits must be " + std::to_string(c.quant_bits) +
                                        " for " + m);
    if (c.quant_bits == 0 && q.isMember("bits")) {
        bool ok = bits.isArray() && !bits.empty();
        for (const auto &b : bits)
            ok = ok && b.isInt() && (b.asInt() == 2 || b.asInt() == 3 || b.asInt() == 4 || b.asInt() == 6 || b.asInt() == 8);
        if (!ok) fail(PANGU_ERR_UNSUPPORTED, path + ": quantization_config.bits must list widths among 2, 3, 4, 6, 8 for mixed");
    }
    const Json::Value &g = q["group_size"];
    if (!c.lowbit()) {
        if (q.isMember("group_size") && (!g.isInt() || g.asInt() > 0))
            fail(PANGU_ERR_UNSUPPORTED, path + ": only per-channel scales (group_size 0 or -1) are supported for " + m);
        if (q.isMember("act_order") && get_qflag(q, path, "act_order", false))
            fail(PANGU_ERR_UNSUPPORTED, path + ": act_order applies to low-bit weights (w4a8, w4a16, mixed), not " + m);
        if (!get_qflag(q, path, "symmetric", true))
            fail(PANGU_ERR_UNSUPPORTED, path + ": " + m + " weights are symmetric (no zero points)");
    } else {
        if (!g.isInt() || g.asInt() < 32 || g.asInt() > 4096 || g.asInt() % 32 != 0)
            fail(PANGU_ERR_UNSUPPORTED, path + ": quantization_config.group_size must be a multiple of 32 from 32 to "
                                            "4096 for " + m);
        c.quant_group = g.asInt();
        c.quant_symmetric = get_qflag(q, path, "symmetric", true);
        c.quant_act_order = get_qflag(q, path, "act_order", false);
    }
    parse_quant_activation(q, path, c);
}

ModelConfig load_config(const std::string &dir) {
    const std::string path = dir + "/config.json";
    std::string text, why;
    switch (read_file(path, kMaxJsonBytes, text, why)) {
        case ReadResult::kMissing: fail(PANGU_ERR_FILE_NOT_FOUND, path + ": not found");
        case ReadResult::kError: fail(PANGU_ERR_IO, path + ": cannot read: " + why);
        case ReadResult::kTooBig: fail(PANGU_ERR_CONFIG, path + ": " + why);
        case ReadResult::kOk: break;
    }
    return parse_config(text, path);
}

ModelConfig parse_config(const std::string &text, const std::string &path) {
    Json::Value root;
    std::string errs;
    if (!parse_json(text, root, errs)) fail(PANGU_ERR_CONFIG, path + ": invalid JSON: " + errs);
    if (!root.isObject()) fail(PANGU_ERR_CONFIG, path + ": top level must be a JSON object");

    const Json::Value &mt = root["model_type"];
    if (!mt.isNull() && !mt.isString()) fail(PANGU_ERR_CONFIG, path + ": model_type must be a string");
    const Json::Value &act = root["hidden_act"];
    if (!act.isNull() && (!act.isString() || act.asString() != "silu"))
        fail(PANGU_ERR_CONFIG, path + ": hidden_act must be \"silu\" (openPangu-Embedded uses SwiGLU)");

    constexpr int kBig = 1 << 24;
    ModelConfig c;
    c.n_vocab = get_int(root, path, "vocab_size", 0, true, 1, kBig);
    c.n_embd = get_int(root, path, "hidden_size", 0, true, 1, 1 << 16);
    c.n_ff = get_int(root, path, "intermediate_size", 0, true, 1, 1 << 20);
    c.n_layer = get_int(root, path, "num_hidden_layers", 0, true, 1, 1024);
    c.n_head = get_int(root, path, "num_attention_heads", 0, true, 1, 1024);
    c.n_head_kv = get_int(root, path, "num_key_value_heads", c.n_head, false, 1, 1024);
    c.head_dim = get_int(root, path, "head_dim", c.n_embd / c.n_head, false, 2, 4096);
    c.n_ctx_train = get_int(root, path, "max_position_embeddings", 2048, false, 1, kBig);
    c.rms_eps = static_cast<float>(get_num(root, path, "rms_norm_eps", 1e-5));
    c.rope_theta = get_num(root, path, "rope_theta", 10000.0);
    c.bias = get_bool(root, path, "bias", true);
    c.tie_embeddings = get_bool(root, path, "tie_word_embeddings", false);
    c.bos = get_int(root, path, "bos_token_id", -1, false, -1, kBig);
    c.eos_ids = get_ids(root, path, "eos_token_id", c.n_vocab);
    c.eos = c.eos_ids.empty() ? -1 : c.eos_ids[0];
    c.pad = get_int(root, path, "pad_token_id", -1, false, -1, kBig);

    const Json::Value &q = root["quantization_config"];
    if (!q.isNull()) {
        if (!q.isObject() || !q["quant_method"].isString())
            fail(PANGU_ERR_CONFIG, path + ": quantization_config must be an object with a quant_method string");
        parse_quantization(q, path, c);
    }

    if (c.n_head % c.n_head_kv != 0)
        fail(PANGU_ERR_CONFIG, path + ": num_attention_heads (" + std::to_string(c.n_head) +
                                   ") is not a multiple of num_key_value_heads (" + std::to_string(c.n_head_kv) + ")");
    if (c.head_dim % 2 != 0) fail(PANGU_ERR_CONFIG, path + ": head_dim must be even for rotary embeddings");
    if (!(c.rms_eps > 0.0f) || !(c.rope_theta > 1.0))
        fail(PANGU_ERR_CONFIG, path + ": rms_norm_eps must be > 0 and rope_theta > 1");
    if (c.bos >= c.n_vocab || c.eos >= c.n_vocab)
        fail(PANGU_ERR_CONFIG, path + ": bos/eos token id outside the vocabulary");
    return c;
}

}  // namespace pangu
