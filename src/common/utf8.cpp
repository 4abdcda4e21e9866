#include "common/utf8.h"

#include <cstring>

#include "common/common.h"

namespace pangu {

namespace {
constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD
}  // namespace

// Number of bytes of the character a lead byte starts, 0 if it can never start one.
int utf8_len(unsigned char b) {
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b >= 0xE0 && b <= 0xEF) return 3;
    if (b >= 0xF0 && b <= 0xF4) return 4;
    return 0;
}

// Whether `b` may follow `lead` as its second byte. The narrowed ranges exclude overlongs (E0, F0),
// surrogates (ED) and code points above U+10FFFF (F4).
bool utf8_second_ok(unsigned char lead, unsigned char b) {
    switch (lead) {
    case 0xE0: return b >= 0xA0 && b <= 0xBF;
    case 0xED: return b >= 0x80 && b <= 0x9F;
    case 0xF0: return b >= 0x90 && b <= 0xBF;
    case 0xF4: return b >= 0x80 && b <= 0x8F;
    default: return b >= 0x80 && b <= 0xBF;
    }
}

// Offset of the first byte that does not begin a valid character, or npos.
size_t utf8_invalid_offset(std::string_view s) {
    const auto *p = reinterpret_cast<const unsigned char *>(s.data());
    const size_t n = s.size();
    size_t i = 0;
    while (i < n) {
        const int len = utf8_len(p[i]);
        if (len == 0 || i + len > n) return i;
        if (len > 1 && !utf8_second_ok(p[i], p[i + 1])) return i;
        for (int k = 2; k < len; ++k)
            if ((p[i + k] & 0xC0) != 0x80) return i;
        i += len;
    }
    return std::string_view::npos;
}

// Mirrors SentencePiece's decoder, which consumes one byte per U+FFFD when a byte run does not form a
// character, so that streamed text equals decode() even for broken sequences.
size_t Utf8Assembler::push(std::string_view bytes, char *out, size_t out_capacity) {
    size_t w = 0;
    auto put = [&](const char *s, size_t len) {
        if (w + len > out_capacity) fail(PANGU_ERR_INTERNAL, "Utf8Assembler output buffer too small");
        std::memcpy(out + w, s, len);
        w += len;
    };
    // A control token has no bytes but still separates byte runs in the decoder, which then renders a
    // held partial character as one U+FFFD per byte.
    if (bytes.empty()) return flush(out, out_capacity);
    for (const char c : bytes) {
        const auto b = static_cast<unsigned char>(c);
        if (n_pending_ > 0) {
            const bool cont = n_pending_ == 1 ? utf8_second_ok(pending_[0], b) : (b & 0xC0) == 0x80;
            if (cont) {
                pending_[n_pending_++] = b;
                if (int(n_pending_) == utf8_len(pending_[0])) {
                    put(reinterpret_cast<const char *>(pending_), n_pending_);
                    n_pending_ = 0;
                }
                continue;
            }
            // The lead and every held continuation byte each become one U+FFFD; `b` starts afresh.
            for (size_t k = 0; k < n_pending_; ++k) put(kReplacement, 3);
            n_pending_ = 0;
        }
        const int len = utf8_len(b);
        if (len == 1) put(&c, 1);
        else if (len == 0) put(kReplacement, 3);
        else pending_[n_pending_++] = b;
    }
    return w;
}

size_t Utf8Assembler::flush(char *out, size_t out_capacity) {
    if (out_capacity < 3 * n_pending_) fail(PANGU_ERR_INTERNAL, "Utf8Assembler output buffer too small");
    size_t w = 0;
    for (size_t k = 0; k < n_pending_; ++k, w += 3) std::memcpy(out + w, kReplacement, 3);
    n_pending_ = 0;
    return w;
}

bool utf8_valid(std::string_view s) { return utf8_invalid_offset(s) == std::string_view::npos; }

}  // namespace pangu
