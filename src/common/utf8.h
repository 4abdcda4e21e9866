// UTF-8 validation and the allocation-free assembler that turns streamed token bytes into whole characters.
#pragma once

#include <cstddef>
#include <string_view>

namespace pangu {

// Number of bytes of the character a lead byte starts, 0 if it can never start one.
int utf8_len(unsigned char b);
// Whether `b` may follow `lead` as its second byte (no overlongs, surrogates or code points past U+10FFFF).
bool utf8_second_ok(unsigned char lead, unsigned char b);
// Offset of the first byte that does not begin a valid character, or npos.
size_t utf8_invalid_offset(std::string_view s);
// True if `s` is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool utf8_valid(std::string_view s);

// Assembles streamed token bytes into whole UTF-8 characters without allocating: bytes of an incomplete
// character are held until it completes; a byte sequence that can never be valid is emitted as U+FFFD.
class Utf8Assembler {
public:
    // Feeds `bytes`; writes the complete characters to `out` and returns how many bytes were written.
    // Capacity: 3 * bytes.size() + 9 for arbitrary bytes (each byte, and each of up to 3 held bytes, may
    // become a 3-byte U+FFFD); bytes.size() + 11 for one token's token_bytes(), which are valid UTF-8 or a
    // single byte. Too small a buffer throws PANGU_ERR_INTERNAL.
    // Like SentencePiece's decoder, every byte that cannot be part of a character becomes one U+FFFD, and an
    // empty `bytes` (a control token, which ends a byte run in the decoder) releases a held partial character
    // as U+FFFD too: feed every token's bytes, control tokens included, to match decode().
    size_t push(std::string_view bytes, char *out, size_t out_capacity);
    // Emits whatever is held (one U+FFFD per held byte of the incomplete character, as SentencePiece's
    // decoder does; capacity at least 9) and resets. Returns bytes written.
    size_t flush(char *out, size_t out_capacity);
    void reset() { n_pending_ = 0; }
    size_t pending() const { return n_pending_; }

private:
    unsigned char pending_[4] = {0, 0, 0, 0};
    size_t n_pending_ = 0;
};

}  // namespace pangu
