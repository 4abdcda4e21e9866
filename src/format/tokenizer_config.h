// tokenizer_config.json and special_tokens_map.json, the Hugging Face files beside tokenizer.model: whether to
// add BOS/EOS, and which pieces are special tokens (added_tokens_decoder, bos_token, eos_token, ...). What they
// say about a piece wins over the type tokenizer.model gives it, as in Hugging Face and llama.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pangu {

struct TokenizerConfig {
    bool add_bos = true, add_eos = false;
    // An entry of added_tokens_decoder: the piece `content` at `id`; `special` pieces are control tokens.
    struct Added {
        int64_t id;
        std::string content;
        bool special;
        std::string where;  // "<file>: added_tokens_decoder entry \"<id>\"", for messages
    };
    std::vector<Added> added;
    // A named special token (bos_token, eos_token, unk_token, pad_token, additional_special_tokens) by content.
    struct Named {
        std::string role, content, where;
    };
    std::vector<Named> named;
};

// Parses tokenizer_config.json into `out`. Malformed JSON, or a top level that is not an object, is
// PANGU_ERR_CONFIG; an entry of the wrong shape (an id that is not a non-negative integer, content that is not a
// string, special not a boolean) is PANGU_ERR_TOKENIZER naming the entry. Both name `path`.
void parse_tokenizer_config(const std::string &text, const std::string &path, TokenizerConfig &out);
// Parses special_tokens_map.json into `out` (its named tokens only), with the same errors.
void parse_special_tokens_map(const std::string &text, const std::string &path, TokenizerConfig &out);
// Reads both files from `dir` when present (each is optional).
TokenizerConfig load_tokenizer_config(const std::string &dir);

}  // namespace pangu
