// Memory-mapped safetensors files (single file or shards with model.safetensors.index.json), validated
// before any byte of tensor data is used.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/io.h"
#include "model/tensor.h"

namespace pangu {

struct MapOptions {
    bool prefault = false;  // MAP_POPULATE
    bool lock = false;      // mlock
};

// A read-only mapping of a whole file. Only inference reads tensor data through the mapping: the loader
// reads what it needs (header, norms, biases, scales) with pread() from the descriptor the file keeps open,
// so a file that shrinks while it loads gives a status (PANGU_ERR_TENSOR_BOUNDS) instead of a SIGBUS.
class MappedFile {
public:
    MappedFile(const std::string &path, const MapOptions &opt);  // throws FILE_NOT_FOUND / IO / OUT_OF_MEMORY
    ~MappedFile();
    MappedFile(const MappedFile &) = delete;
    MappedFile &operator=(const MappedFile &) = delete;
    const uint8_t *data() const { return data_; }
    size_t size() const { return size_; }
    const std::string &path() const { return path_; }
    // Reads n bytes at `offset` from the file (not the mapping). Throws PANGU_ERR_TENSOR_BOUNDS if the file
    // has become shorter than that, PANGU_ERR_IO on a read error.
    void read(uint64_t offset, size_t n, void *dst, const std::string &what) const;
    // Throws PANGU_ERR_TENSOR_BOUNDS if the file is now shorter than the mapping (truncated since it was
    // mapped: touching the pages past its end would raise SIGBUS), PANGU_ERR_IO if it cannot be checked.
    void check_size() const;

private:
    std::string path_;
    FileDescriptor fd_;
    uint8_t *data_ = nullptr;
    size_t size_ = 0;
    bool locked_ = false;
};

struct TensorInfo {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape;
    const void *data = nullptr;  // in the mapping
    uint64_t offset = 0;         // of the data in the file
    size_t nbytes = 0;
    const MappedFile *file = nullptr;
};

// The length of the JSON header from a safetensors file's first 8 bytes (little-endian u64), checked against
// the file's size. Throws PANGU_ERR_SAFETENSORS_HEADER.
uint64_t safetensors_header_length(const std::string &path, const uint8_t prefix[8], uint64_t file_size);
// Parses and validates a safetensors header (the JSON text after the length) of a file whose data section
// holds `data_size` bytes: dtypes, shapes, offsets inside the data section, no overlaps, no duplicates.
// Returns the tensors with `offset` relative to the data section and no data pointer or file. Throws
// pangu::Error naming `path` and the tensor. (The loader's parser, separate so it can be fuzzed from memory.)
std::vector<TensorInfo> parse_safetensors_header(const std::string &path, const char *header, size_t header_len,
                                                 uint64_t data_size);
// Parses model.safetensors.index.json: the shard of every tensor, and the shards in order of first mention.
// Throws PANGU_ERR_CONFIG naming `path`.
void parse_safetensors_index(const std::string &path, const std::string &text,
                             std::map<std::string, std::string> &shard_of, std::vector<std::string> &shards);

// All tensors of a checkpoint directory by name.
class TensorStore {
public:
    // Opens <dir>/model.safetensors.index.json if present (all shards it names), else <dir>/model.safetensors.
    void open_dir(const std::string &dir, const MapOptions &opt);
    // Opens one safetensors file and adds its tensors.
    void open_file(const std::string &path, const MapOptions &opt);

    const TensorInfo *find(const std::string &name) const;
    const std::map<std::string, TensorInfo> &tensors() const { return tensors_; }
    size_t mapped_bytes() const;
    const std::vector<std::unique_ptr<MappedFile>> &files() const { return files_; }
    // check_size() of every file.
    void check_sizes() const;

private:
    std::vector<std::unique_ptr<MappedFile>> files_;
    std::map<std::string, TensorInfo> tensors_;
};

// Parses a safetensors dtype string. Throws PANGU_ERR_DTYPE (naming file and tensor) for unknown or
// unsupported types.
DType parse_dtype(const std::string &s, const std::string &where);

}  // namespace pangu
