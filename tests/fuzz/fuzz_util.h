// Shared by the fuzz harnesses: a reader that turns the fuzzer's bytes into values, and the checks that turn
// a broken promise of the library into a crash the fuzzer records (a status the contract rules out, an
// exception of the wrong kind, text that is not UTF-8).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "pangu/pangu.h"

#define FUZZ_CHECK(cond, ...)                                                        \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "fuzz check failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            std::fprintf(stderr, __VA_ARGS__);                                       \
            std::fprintf(stderr, "\n");                                              \
            __builtin_trap();                                                        \
        }                                                                            \
    } while (0)

namespace fuzz {

// Consumes the input front to back; once it is used up every read returns zeros.
class Input {
public:
    Input(const uint8_t *data, size_t size) : p_(data), end_(data + size) {}
    size_t left() const { return static_cast<size_t>(end_ - p_); }
    bool empty() const { return p_ == end_; }
    uint8_t u8() { return p_ < end_ ? *p_++ : 0; }
    uint32_t u32() {
        uint32_t v = 0;
        for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(u8()) << (8 * i);
        return v;
    }
    uint64_t u64() { return static_cast<uint64_t>(u32()) | static_cast<uint64_t>(u32()) << 32; }
    int32_t i32() { return static_cast<int32_t>(u32()); }
    bool flag() { return u8() & 1; }
    // Any float bit pattern: NaN, Inf, negative zero and subnormals included.
    float any_float() {
        const uint32_t u = u32();
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
    // Up to `max` bytes, length first.
    std::string bytes(size_t max) {
        size_t n = u8();
        if (max > 255) n |= static_cast<size_t>(u8()) << 8;
        n %= max + 1;
        if (n > left()) n = left();
        std::string s(reinterpret_cast<const char *>(p_), n);
        p_ += n;
        return s;
    }
    std::string rest() {
        std::string s(reinterpret_cast<const char *>(p_), left());
        p_ = end_;
        return s;
    }

private:
    const uint8_t *p_, *end_;
};

// PANGU_FUZZ_VERBOSE=1: harnesses say what happened to each input (for replaying one input by hand).
inline bool verbose() {
    static const bool v = std::getenv("PANGU_FUZZ_VERBOSE") != nullptr;
    return v;
}

inline bool one_of(pangu_status st, std::initializer_list<pangu_status> allowed) {
    for (pangu_status a : allowed)
        if (st == a) return true;
    return false;
}

// What every failing call promises: a known status that is not INTERNAL (a bug by definition) and a message.
inline void check_failure_contract(pangu_status st, const char *call) {
    if (st == PANGU_OK) return;
    FUZZ_CHECK(st != PANGU_ERR_INTERNAL, "%s: PANGU_ERR_INTERNAL: %s", call, pangu_last_error());
    FUZZ_CHECK(std::strcmp(pangu_status_string(st), "unknown status") != 0, "%s: unknown status %d", call, (int)st);
    FUZZ_CHECK(pangu_last_error()[0] != '\0', "%s: status %d without a message", call, (int)st);
}


}  // namespace fuzz
