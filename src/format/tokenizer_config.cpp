#include "format/tokenizer_config.h"

#include <cmath>

#include "common/common.h"
#include "common/io.h"
#include "common/json_util.h"

namespace pangu {

namespace {

Json::Value parse_object(const std::string &text, const std::string &path) {
    Json::Value root;
    std::string errs;
    if (!parse_json(text, root, errs, false)) fail(PANGU_ERR_CONFIG, "malformed JSON in " + path + ": " + errs);
    if (!root.isObject()) fail(PANGU_ERR_CONFIG, path + ": top level is not a JSON object");
    return root;
}

// bos_token and the others: a string, or an object with a string "content" (Hugging Face's AddedToken); null
// means none.
void read_named(const Json::Value &root, const std::string &path, TokenizerConfig &out) {
    for (const char *role : {"bos_token", "eos_token", "unk_token", "pad_token"}) {
        const Json::Value &v = root[role];
        if (v.isNull()) continue;
        const Json::Value &content = v.isObject() ? v["content"] : v;
        if (!content.isString())
            fail(PANGU_ERR_TOKENIZER, path + ": \"" + role + "\" must be a string or an object with a string content");
        out.named.push_back({role, content.asString(), path + ": \"" + role + "\""});
    }
    const Json::Value &extra = root["additional_special_tokens"];
    if (extra.isNull()) return;
    if (!extra.isArray()) fail(PANGU_ERR_TOKENIZER, path + ": \"additional_special_tokens\" must be an array");
    for (Json::ArrayIndex i = 0; i < extra.size(); ++i) {
        const Json::Value &content = extra[i].isObject() ? extra[i]["content"] : extra[i];
        const std::string where = path + ": additional_special_tokens[" + std::to_string(i) + "]";
        if (!content.isString()) fail(PANGU_ERR_TOKENIZER, where + " must be a string or an object with a string content");
        out.named.push_back({"additional_special_tokens", content.asString(), where});
    }
}

// One entry of added_tokens_decoder: "<id>": {"content": "...", "special": true, ...}.
TokenizerConfig::Added read_added(const std::string &key, const Json::Value &v, const std::string &path) {
    const std::string where = path + ": added_tokens_decoder entry \"" + key + "\"";
    int64_t id = 0;
    bool digits = !key.empty() && key.size() <= 10;
    for (char ch : key) digits = digits && ch >= '0' && ch <= '9';
    if (!digits) fail(PANGU_ERR_TOKENIZER, where + ": the key must be a token id (decimal digits)");
    for (char ch : key) id = id * 10 + (ch - '0');
    if (!v.isObject()) fail(PANGU_ERR_TOKENIZER, where + " must be an object");
    if (!v["content"].isString() || v["content"].asString().empty())
        fail(PANGU_ERR_TOKENIZER, where + ": \"content\" must be a non-empty string");
    const Json::Value &special = v["special"];
    if (!special.isNull() && !special.isBool()) fail(PANGU_ERR_TOKENIZER, where + ": \"special\" must be true or false");
    return {id, v["content"].asString(), special.isBool() && special.asBool(), where};
}

void read_optional(const std::string &path, std::string &text, bool &present) {
    std::string why;
    switch (read_file(path, kMaxJsonBytes, text, why)) {
        case ReadResult::kMissing: present = false; return;  // optional: defaults apply
        case ReadResult::kError: fail(PANGU_ERR_IO, "cannot read " + path + ": " + why);
        case ReadResult::kTooBig: fail(PANGU_ERR_CONFIG, path + ": " + why);
        case ReadResult::kOk: present = true; return;
    }
}

}  // namespace

void parse_tokenizer_config(const std::string &text, const std::string &path, TokenizerConfig &out) {
    const Json::Value root = parse_object(text, path);
    auto read_bool = [&](const char *key, bool &value) {
        const Json::Value &v = root[key];
        if (v.isNull()) return;
        if (!v.isBool()) fail(PANGU_ERR_CONFIG, path + ": \"" + key + "\" is not a boolean");
        value = v.asBool();
    };
    read_bool("add_bos_token", out.add_bos);
    read_bool("add_eos_token", out.add_eos);
    const Json::Value &added = root["added_tokens_decoder"];
    if (!added.isNull()) {
        if (!added.isObject()) fail(PANGU_ERR_TOKENIZER, path + ": \"added_tokens_decoder\" must be an object");
        for (const std::string &key : added.getMemberNames()) out.added.push_back(read_added(key, added[key], path));
    }
    read_named(root, path, out);
}

void parse_special_tokens_map(const std::string &text, const std::string &path, TokenizerConfig &out) {
    read_named(parse_object(text, path), path, out);
}

TokenizerConfig load_tokenizer_config(const std::string &dir) {
    TokenizerConfig tc;
    std::string text;
    bool present = false;
    read_optional(dir + "/tokenizer_config.json", text, present);
    if (present) parse_tokenizer_config(text, dir + "/tokenizer_config.json", tc);
    read_optional(dir + "/special_tokens_map.json", text, present);
    if (present) parse_special_tokens_map(text, dir + "/special_tokens_map.json", tc);
    return tc;
}

}  // namespace pangu
