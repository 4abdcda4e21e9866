// Writes safetensors files (used by the converter, the model generator and test fixtures). Output goes to
// a temporary name and is renamed into place only when complete, so an interrupted write never leaves a
// file that looks valid.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "model/tensor.h"

namespace pangu {

class SafetensorsWriter {
public:
    // Adds a tensor whose bytes are produced on demand by `fill(dst)` into a buffer of `nbytes` at write time,
    // so that converters stream large checkpoints without holding them in memory.
    void add(const std::string &name, DType dtype, std::vector<int64_t> shape,
             std::function<void(uint8_t *dst)> fill);
    // Adds a tensor by copying `data` now.
    void add_copy(const std::string &name, DType dtype, std::vector<int64_t> shape, const void *data);
    void set_metadata(const std::string &key, const std::string &value) { metadata_[key] = value; }

    // Tensors are laid out largest first so that big weight matrices start 64-byte aligned in the file
    // (the format allows no gaps). `progress(name, bytes_done, bytes_total)` is called after each tensor.
    void write(const std::string &path,
               const std::function<void(const std::string &, uint64_t, uint64_t)> &progress = nullptr) const;

    uint64_t data_bytes() const;

private:
    struct Entry {
        std::string name;
        DType dtype;
        std::vector<int64_t> shape;
        uint64_t nbytes;
        std::function<void(uint8_t *)> fill;
    };
    std::vector<Entry> entries_;
    std::map<std::string, std::string> metadata_;
};

}  // namespace pangu
