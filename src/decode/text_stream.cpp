#include "decode/text_stream.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "common/common.h"

namespace pangu {

void check_stop_strings(const pangu_sampling_params &sp) {
    if (sp.n_stop_strings && !sp.stop_strings) fail(PANGU_ERR_INVALID_ARGUMENT, "stop_strings is NULL");
    for (size_t k = 0; k < sp.n_stop_strings; ++k) {
        if (!sp.stop_strings[k]) fail(PANGU_ERR_INVALID_ARGUMENT, "stop_strings[" + std::to_string(k) + "] is NULL");
        const size_t m = std::strlen(sp.stop_strings[k]);
        if (m == 0 || m > kMaxStopString)
            fail(PANGU_ERR_INVALID_ARGUMENT, "stop_strings[" + std::to_string(k) + "] must be 1 to " +
                                                 std::to_string(kMaxStopString) + " bytes");
        // A stop string that is not UTF-8 (a lone continuation byte) can match inside a character, and the
        // text before the match would then end with part of one (found by fuzz_api).
        if (!utf8_valid(std::string_view(sp.stop_strings[k], m)))
            fail(PANGU_ERR_INVALID_UTF8, "stop_strings[" + std::to_string(k) + "] is not valid UTF-8");
    }
}

TextStream::TextStream(const Vocab &vocab, const int32_t *eos, size_t n_eos, const pangu_sampling_params &sp,
                       char *buf, const int32_t *context, size_t n_context)
    : vocab_(vocab), eos_(eos), n_eos_(n_eos), sp_(sp), text_(buf) {
    // Ids past the tokenizer's pieces (vocab_size padded beyond them) stand for no text.
    const int32_t n_pieces = vocab.n_vocab();
    for (size_t i = 0; i < n_context && at_text_start_; ++i)
        if (context[i] < n_pieces) vocab.stream_bytes(context[i], at_text_start_);
}

namespace {
bool ends_with(const char *s, size_t n, const char *suffix, size_t m) {
    return m <= n && std::memcmp(s + n - m, suffix, m) == 0;
}
}  // namespace

size_t TextStream::held_suffix() const {
    size_t best = 0;
    for (size_t k = 0; k < sp_.n_stop_strings; ++k) {
        const char *stop = sp_.stop_strings[k];
        const size_t m = std::strlen(stop);
        for (size_t len = std::min(n_text_, m - 1); len > best; --len)
            if (std::memcmp(text_ + n_text_ - len, stop, len) == 0) {
                best = len;
                break;
            }
    }
    return best;
}

const char *TextStream::find_stop_string() const {
    // The match that starts earliest, over all stop strings, wins: the text before it is emitted.
    const char *hit = nullptr;
    for (size_t k = 0; k < sp_.n_stop_strings; ++k) {
        const size_t m = std::strlen(sp_.stop_strings[k]);
        for (size_t end = m; end <= n_text_; ++end)
            if (ends_with(text_, end, sp_.stop_strings[k], m)) {
                if (!hit || text_ + end - m < hit) hit = text_ + end - m;
                break;
            }
    }
    return hit;
}

int TextStream::push(int32_t tok, int32_t n_generated, size_t *emit) {
    // What text does this token complete? Held-back text + new whole characters. Control tokens push
    // nothing but still end a pending byte run, as in the decoder.
    const std::string_view bytes =
        tok < vocab_.n_vocab() ? vocab_.stream_bytes(tok, at_text_start_) : std::string_view();
    n_text_ += utf8_.push(bytes, text_ + n_text_, kTextBuffer - n_text_);

    int reason = PANGU_STOP_NONE;
    for (size_t k = 0; !reason && k < n_eos_; ++k)
        if (tok == eos_[k]) reason = PANGU_STOP_EOS;
    for (size_t k = 0; !reason && k < sp_.n_stop_tokens; ++k)
        if (sp_.stop_tokens[k] == tok) reason = PANGU_STOP_TOKEN;
    if (!reason)
        if (const char *hit = find_stop_string()) {
            *emit = static_cast<size_t>(hit - text_);
            return PANGU_STOP_STRING;
        }
    if (!reason && n_generated >= sp_.max_new_tokens) reason = PANGU_STOP_MAX_TOKENS;
    // Stopping releases everything, a partial character as U+FFFD; going on holds back a possible stop string.
    if (reason) *emit = n_text_ + utf8_.flush(text_ + n_text_, kTextBuffer - n_text_);
    else *emit = n_text_ - held_suffix();
    return reason;
}

void TextStream::consume(size_t n) {
    n = std::min(n, n_text_);
    std::memmove(text_, text_ + n, n_text_ - n);
    n_text_ -= n;
}

}  // namespace pangu
