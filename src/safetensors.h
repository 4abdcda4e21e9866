// Memory-mapped safetensors files (single file or shards with model.safetensors.index.json), validated
// before any byte of tensor data is used.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tensor.h"

namespace pangu {

struct MapOptions {
    bool prefault = false;  // MAP_POPULATE
    bool lock = false;      // mlock
};

class MappedFile {
public:
    MappedFile(const std::string &path, const MapOptions &opt);  // throws FILE_NOT_FOUND / IO
    ~MappedFile();
    MappedFile(const MappedFile &) = delete;
    MappedFile &operator=(const MappedFile &) = delete;
    const uint8_t *data() const { return data_; }
    size_t size() const { return size_; }
    const std::string &path() const { return path_; }

private:
    std::string path_;
    uint8_t *data_ = nullptr;
    size_t size_ = 0;
    bool locked_ = false;
};

struct TensorInfo {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    const void *data = nullptr;
    size_t nbytes = 0;
    const MappedFile *file = nullptr;
};

// All tensors of a checkpoint directory by name.
class TensorStore {
public:
    // Opens <dir>/model.safetensors.index.json if present (all shards it names), else <dir>/model.safetensors.
    void open_dir(const std::string &dir, const MapOptions &opt);
    // Opens one safetensors file and adds its tensors; `expected` (may be null) restricts which names it may
    // hold (from an index).
    void open_file(const std::string &path, const MapOptions &opt);

    const TensorInfo *find(const std::string &name) const;
    const std::map<std::string, TensorInfo> &tensors() const { return tensors_; }
    size_t mapped_bytes() const;
    const std::vector<std::unique_ptr<MappedFile>> &files() const { return files_; }

private:
    std::vector<std::unique_ptr<MappedFile>> files_;
    std::map<std::string, TensorInfo> tensors_;
};

// Parses a safetensors dtype string. Throws PANGU_ERR_DTYPE (naming file and tensor) for unknown or
// unsupported types.
DType parse_dtype(const std::string &s, const std::string &where);

}  // namespace pangu
