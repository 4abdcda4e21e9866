// Tokenizer: SentencePiece model + tokenizer_config.json, special tokens, and the openPangu chat template
// (chat_template.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/common.h"
#include "common/utf8.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace pangu {

// Longest text a single token may stand for; the loader refuses a tokenizer with a longer piece, so that the
// generation loop's fixed text buffer always has room for a token.
constexpr size_t kMaxPieceBytes = 256;

class Vocab {
public:
    Vocab();
    ~Vocab();
    Vocab(const Vocab &) = delete;
    Vocab &operator=(const Vocab &) = delete;

    // Loads <dir>/tokenizer.model (required: PANGU_ERR_FILE_NOT_FOUND if absent, PANGU_ERR_TOKENIZER if it
    // does not parse, PANGU_ERR_IO if unreadable), <dir>/tokenizer_config.json and special_tokens_map.json
    // (optional; malformed JSON is PANGU_ERR_CONFIG, an entry that is malformed or contradicts the pieces
    // PANGU_ERR_TOKENIZER). Pieces those files declare special are control tokens whatever tokenizer.model
    // says: one unsplittable token with parse_special, nothing in decoding and streaming. Messages name the
    // file and the entry. On failure the previous state is kept.
    void load(const std::string &dir);

    int32_t n_vocab() const;
    int32_t bos() const;          // -1 if the model has none
    int32_t eos() const;          // -1 if the model has none
    bool add_bos() const;         // tokenizer_config.json add_bos_token (default true)
    bool add_eos() const;         // tokenizer_config.json add_eos_token (default false); tokenize() ignores it

    // Appends token ids for `text` to `out`. Throws PANGU_ERR_INVALID_UTF8 on invalid UTF-8.
    // parse_special: spelled-out control/user-defined pieces such as "</s>" or "[unused9]" become their ids
    // (longest first) and the text between them is encoded on its own. Without it no special id is produced:
    // user-defined pieces, which SentencePiece itself would match, are spelled out character by character.
    void tokenize(std::string_view text, bool add_bos, bool parse_special, std::vector<int32_t> &out) const;

    // The bytes a token stands for: U+2581 rendered as ' ', <0xNN> as the single byte NN, control tokens
    // (BOS/EOS/...) as "", unknown as the decoder renders it (" \u2047 " by default). Precomputed at load:
    // no allocation, safe in the generation loop. Throws PANGU_ERR_INVALID_TOKEN for an id out of range.
    std::string_view token_bytes(int32_t id) const;
    bool is_control(int32_t id) const;
    // True for a piece that tokenize() with parse_special produces as one token from its text (control or
    // user-defined in tokenizer.model, or declared in tokenizer_config.json).
    bool is_unsplittable(int32_t id) const;

    // Full decode identical to SentencePieceProcessor::Decode for valid ids; invalid UTF-8 -> U+FFFD.
    std::string decode(const int32_t *ids, size_t n) const;

    // Id of an exact piece (e.g. "[unused9]"), or -1.
    int32_t piece_id(std::string_view piece) const;

    // The first token id whose text or kind differs between the two vocabularies (their sizes and BOS/EOS
    // ids count as token 0 when they differ), or -1 if they are the same: drafts of one model are then
    // valid token ids of the other.
    int32_t first_difference(const Vocab &other) const;

    // True if the vocabulary holds [unused9] and [unused10] as single tokens that parse_special matches.
    bool has_chat_tokens() const;
    // The ids that end a reply under the chat template: [unused10] then [unused9]. Throws
    // PANGU_ERR_UNSUPPORTED without chat tokens.
    std::vector<int32_t> chat_stop_tokens() const;
    // openPangu chat template; throws PANGU_ERR_UNSUPPORTED without chat tokens, PANGU_ERR_INVALID_ARGUMENT
    // for an unknown role or NULL content.
    std::string apply_chat_template(const pangu_chat_message *messages, size_t n, bool add_generation_prompt) const;

    // True when the decoder drops the leading space of the first piece (SentencePiece add_dummy_prefix or
    // remove_extra_whitespaces); streaming must do the same so that streamed text equals decode().
    bool strips_leading_space() const;
    // token_bytes() with decode()'s leading-space rule applied, for streaming. Set `at_start` to true before
    // the first token of a sequence; the call clears it once the rule no longer applies. No allocation.
    std::string_view stream_bytes(int32_t id, bool &at_start) const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace pangu
