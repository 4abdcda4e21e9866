#include "common/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pangu {

int open_regular_file(const std::string &path, uint64_t *size, bool *missing, std::string &why) {
    *missing = false;
    // The descriptor is closed on every way out, a std::bad_alloc from setting `why` included.
    FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (fd.get() < 0) {
        const int e = errno;
        *missing = e == ENOENT || e == ENOTDIR;
        why = std::strerror(e);
        return -1;
    }
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) {
        const int e = errno;
        why = std::string("cannot stat: ") + std::strerror(e);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        why = S_ISDIR(st.st_mode) ? "is a directory, not a file" : "not a regular file";
        return -1;
    }
    *size = static_cast<uint64_t>(st.st_size);
    return fd.release();
}

long long read_at(int fd, uint64_t offset, size_t n, void *dst) {
    size_t done = 0;
    while (done < n) {
        const ssize_t got = ::pread(fd, static_cast<char *>(dst) + done, n - done, static_cast<off_t>(offset + done));
        if (got < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (got == 0) break;  // end of file
        done += static_cast<size_t>(got);
    }
    return static_cast<long long>(done);
}

ReadResult read_file(const std::string &path, size_t max_bytes, std::string &out, std::string &why) {
    out.clear();
    uint64_t size = 0;
    bool missing = false;
    const FileDescriptor fd(open_regular_file(path, &size, &missing, why));
    if (fd.get() < 0) return missing ? ReadResult::kMissing : ReadResult::kError;
    if (size > max_bytes) {
        why = std::to_string(size) + " bytes, more than the " + std::to_string(max_bytes) + " such a file may have";
        return ReadResult::kTooBig;
    }
    out.resize(static_cast<size_t>(size));
    const long long got = read_at(fd.get(), 0, out.size(), &out[0]);
    if (got < 0) {
        const int e = errno;
        why = std::string("read failed: ") + std::strerror(e);
        out.clear();
        return ReadResult::kError;
    }
    out.resize(static_cast<size_t>(got));  // a file that shrank since fstat is read as it now is
    return ReadResult::kOk;
}

FileDescriptor::~FileDescriptor() { reset(-1); }

void FileDescriptor::reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
}

}  // namespace pangu
