// Helpers shared by the GoogleTest unit tests.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>

namespace pangu_test {

// A fresh directory under /tmp, removed with everything in it when the object goes.
struct TempDir {
    std::filesystem::path path;
    explicit TempDir(const char *prefix = "pangu_test") {
        std::string tmpl = std::string("/tmp/") + prefix + "_XXXXXX";
        if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    TempDir(const TempDir &) = delete;
    TempDir &operator=(const TempDir &) = delete;
};

}  // namespace pangu_test
