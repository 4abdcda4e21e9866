// The text side of generation: each generated token's bytes become whole UTF-8 characters, text that may
// still turn into a stop string is held back, and the stop conditions (end of sequence, stop tokens, stop
// strings, the token budget) are decided. It works in a fixed buffer of the session's block: no allocation.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/utf8.h"
#include "model/vocab.h"
#include "pangu/pangu.h"

namespace pangu {

// Longest stop string accepted; the held-back text buffer is sized from it.
constexpr size_t kMaxStopString = 256;
constexpr size_t kTextBuffer = 2 * kMaxStopString + 64;
// Held-back text (shorter than a stop string), one token's text, and up to three bytes of an incomplete
// character turned into U+FFFD must fit.
static_assert(kTextBuffer >= (kMaxStopString - 1) + kMaxPieceBytes + 9, "the text buffer cannot take a token");

// Throws PANGU_ERR_INVALID_ARGUMENT (or PANGU_ERR_INVALID_UTF8) for stop strings the stream cannot honour.
void check_stop_strings(const pangu_sampling_params &sp);

class TextStream {
public:
    // `buf` holds kTextBuffer bytes. The context (n_context tokens) is replayed so that the stream knows
    // whether the generated text is still where the decoder drops a leading space. `eos` lists the n_eos ids
    // that end generation (Model::eos_ids).
    TextStream(const Vocab &vocab, const int32_t *eos, size_t n_eos, const pangu_sampling_params &sp, char *buf,
               const int32_t *context, size_t n_context);
    // Appends the `n_generated`-th generated token. Returns why generation stops with it (PANGU_STOP_NONE:
    // it goes on); text() then holds *emit bytes to deliver with the token, which consume() drops after.
    int push(int32_t tok, int32_t n_generated, size_t *emit);
    const char *text() const { return text_; }
    void consume(size_t n);

private:
    // Length of the longest suffix of the text that is a proper prefix of a stop string: held back.
    size_t held_suffix() const;
    // Where the earliest stop string match in the text starts, or nullptr.
    const char *find_stop_string() const;

    const Vocab &vocab_;
    const int32_t *eos_;
    const size_t n_eos_;
    const pangu_sampling_params &sp_;
    char *text_;
    size_t n_text_ = 0;
    Utf8Assembler utf8_;
    bool at_text_start_ = true;
};

}  // namespace pangu
