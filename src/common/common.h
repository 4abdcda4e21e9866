// Internal error type and small helpers shared by every source file.
// Library code reports failures by throwing pangu::Error; only api.cpp catches, so no exception ever
// crosses the extern "C" boundary.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <utility>

#include "pangu/pangu.h"

namespace pangu {

class Error : public std::exception {
public:
    Error(pangu_status status, std::string message) : status_(status), message_(std::move(message)) {}
    pangu_status status() const noexcept { return status_; }
    const char *what() const noexcept override { return message_.c_str(); }

private:
    pangu_status status_;
    std::string message_;
};

[[noreturn]] inline void fail(pangu_status status, const std::string &message) { throw Error(status, message); }

inline size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

// A fixed-size error message: recording an error never allocates, so the expected stops of a generation
// loop (cancelled, context full) stay allocation-free.
struct ErrorSlot {
    char msg[512] = {0};
    void set(const char *s) {
        size_t i = 0;
        for (; s && s[i] && i + 1 < sizeof msg; ++i) msg[i] = s[i];
        msg[i] = '\0';
    }
    const char *c_str() const { return msg; }
};

}  // namespace pangu
