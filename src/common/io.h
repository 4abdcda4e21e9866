// File reading for the loader. Every file the library reads goes through these, so that a path that names
// something other than a regular file (a FIFO, which would block forever; a directory; /dev/zero, which
// never ends) fails at once with a status, short reads are retried, and read errors are reported as errors
// rather than as truncated content.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pangu {

// Caps on what the loader reads into memory: far above any real file of the kind, low enough that a corrupt
// or hostile file cannot drive a huge allocation.
constexpr size_t kMaxJsonBytes = size_t(64) << 20;        // config.json, index, tokenizer_config.json
constexpr size_t kMaxTokenizerBytes = size_t(256) << 20;  // tokenizer.model (openPangu's: about 2 MB)

// Closes the descriptor it holds, also when an exception (std::bad_alloc) leaves the scope.
class FileDescriptor {
public:
    explicit FileDescriptor(int fd = -1) : fd_(fd) {}
    ~FileDescriptor();
    FileDescriptor(const FileDescriptor &) = delete;
    FileDescriptor &operator=(const FileDescriptor &) = delete;
    int get() const { return fd_; }
    int release() {
        const int fd = fd_;
        fd_ = -1;
        return fd;
    }
    void reset(int fd);

private:
    int fd_;
};

enum class ReadResult { kOk, kMissing, kError, kTooBig };

// Opens `path` read-only (O_NONBLOCK, so that a FIFO cannot block) and checks that it is a regular file.
// Returns the descriptor and its size, or -1 with `why` set; `*missing` tells ENOENT apart.
int open_regular_file(const std::string &path, uint64_t *size, bool *missing, std::string &why);

// Reads exactly `n` bytes at `offset`, retrying short reads and EINTR. Returns the bytes read: fewer than `n`
// only at end of file (the file is shorter than expected); -1 on a read error (errno set).
long long read_at(int fd, uint64_t offset, size_t n, void *dst);

// Reads a whole regular file of at most `max_bytes` into `out`. kTooBig leaves `out` empty.
ReadResult read_file(const std::string &path, size_t max_bytes, std::string &out, std::string &why);

}  // namespace pangu
