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

}  // namespace pangu
