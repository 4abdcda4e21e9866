#include "safetensors.h"

#include <fcntl.h>
#include <json/json.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common.h"

namespace pangu {

namespace {

// A header larger than this is not a real checkpoint; the cap keeps a corrupt length from driving a huge
// allocation.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

std::string errno_text() { return std::strerror(errno); }

bool mul_overflows(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return true;
    *out = a * b;
    return false;
}

}  // namespace

MappedFile::MappedFile(const std::string &path, const MapOptions &opt) : path_(path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) fail(PANGU_ERR_FILE_NOT_FOUND, path + ": not found");
        fail(PANGU_ERR_IO, path + ": cannot open: " + errno_text());
    }
    struct stat st;
    if (::fstat(fd, &st) != 0) {
        std::string e = errno_text();
        ::close(fd);
        fail(PANGU_ERR_IO, path + ": cannot stat: " + e);
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        fail(PANGU_ERR_IO, path + ": not a regular file");
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ == 0) {
        ::close(fd);
        fail(PANGU_ERR_SAFETENSORS_HEADER, path + ": file is empty");
    }
    int flags = MAP_PRIVATE;
#ifdef MAP_POPULATE
    if (opt.prefault) flags |= MAP_POPULATE;
#endif
    void *p = ::mmap(nullptr, size_, PROT_READ, flags, fd, 0);
    const int map_errno = errno;
    ::close(fd);
    if (p == MAP_FAILED) {
        errno = map_errno;
        fail(map_errno == ENOMEM ? PANGU_ERR_OUT_OF_MEMORY : PANGU_ERR_IO, path + ": mmap failed: " + errno_text());
    }
    data_ = static_cast<uint8_t *>(p);
    if (opt.lock) {
        if (::mlock(data_, size_) != 0) {
            std::string e = errno_text();
            ::munmap(data_, size_);
            data_ = nullptr;
            fail(PANGU_ERR_IO, path + ": mlock of " + std::to_string(size_) + " bytes failed: " + e +
                                   " (raise RLIMIT_MEMLOCK or run without lock_memory)");
        }
        locked_ = true;
    }
}

MappedFile::~MappedFile() {
    if (data_) {
        if (locked_) ::munlock(data_, size_);
        ::munmap(data_, size_);
    }
}

DType parse_dtype(const std::string &s, const std::string &where) {
    if (s == "F32") return DType::F32;
    if (s == "F16") return DType::F16;
    if (s == "BF16") return DType::BF16;
    if (s == "I8") return DType::I8;
    static const char *known_unsupported[] = {"F64", "I64", "I32", "I16", "U8", "U16", "U32", "U64",
                                              "BOOL", "F8_E4M3", "F8_E5M2"};
    for (const char *k : known_unsupported)
        if (s == k) fail(PANGU_ERR_DTYPE, where + ": dtype " + s + " is not supported (F32, F16, BF16, I8 are)");
    fail(PANGU_ERR_DTYPE, where + ": unknown dtype \"" + s + "\"");
}

void TensorStore::open_file(const std::string &path, const MapOptions &opt) {
    auto file = std::make_unique<MappedFile>(path, opt);
    const uint8_t *base = file->data();
    const size_t fsize = file->size();
    if (fsize < 8) fail(PANGU_ERR_SAFETENSORS_HEADER, path + ": file too short for a safetensors header (" +
                                                        std::to_string(fsize) + " bytes)");
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | base[i];  // little-endian u64
    if (hlen < 2 || hlen > kMaxHeaderBytes || hlen > fsize - 8)
        fail(PANGU_ERR_SAFETENSORS_HEADER, path + ": header length " + std::to_string(hlen) +
                                               " does not fit in the file of " + std::to_string(fsize) + " bytes");
    const char *hbegin = reinterpret_cast<const char *>(base + 8);
    Json::CharReaderBuilder builder;
    builder["rejectDupKeys"] = true;
    std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
    Json::Value root;
    std::string errs;
    if (!reader->parse(hbegin, hbegin + hlen, &root, &errs))
        fail(PANGU_ERR_SAFETENSORS_HEADER, path + ": header is not valid JSON: " + errs);
    if (!root.isObject()) fail(PANGU_ERR_SAFETENSORS_HEADER, path + ": header is not a JSON object");

    const uint8_t *data_base = base + 8 + hlen;
    const uint64_t data_size = fsize - 8 - hlen;
    struct Span {
        uint64_t begin, end;
        std::string name;
    };
    std::vector<Span> spans;
    std::vector<TensorInfo> found;

    for (const auto &name : root.getMemberNames()) {
        if (name == "__metadata__") continue;
        const std::string where = path + ": tensor " + name;
        const Json::Value &t = root[name];
        if (!t.isObject()) fail(PANGU_ERR_SAFETENSORS_HEADER, where + ": entry is not an object");
        const Json::Value &jd = t["dtype"], &js = t["shape"], &jo = t["data_offsets"];
        if (!jd.isString()) fail(PANGU_ERR_SAFETENSORS_HEADER, where + ": missing dtype");
        if (!js.isArray()) fail(PANGU_ERR_SAFETENSORS_HEADER, where + ": missing shape");
        if (!jo.isArray() || jo.size() != 2 || !jo[0].isUInt64() || !jo[1].isUInt64())
            fail(PANGU_ERR_SAFETENSORS_HEADER, where + ": data_offsets must be two non-negative integers");
        TensorInfo info;
        info.name = name;
        info.dtype = parse_dtype(jd.asString(), where);
        uint64_t numel = 1;
        for (const auto &d : js) {
            if (!d.isUInt64()) fail(PANGU_ERR_SAFETENSORS_HEADER, where + ": shape entries must be non-negative integers");
            if (mul_overflows(numel, d.asUInt64(), &numel))
                fail(PANGU_ERR_TENSOR_BOUNDS, where + ": shape overflows");
            info.shape.push_back(static_cast<int64_t>(d.asUInt64()));
        }
        if (info.shape.size() > 4) fail(PANGU_ERR_SHAPE, where + ": more than 4 dimensions");
        const uint64_t b = jo[0].asUInt64(), e = jo[1].asUInt64();
        uint64_t nbytes = 0;
        if (mul_overflows(numel, dtype_size(info.dtype), &nbytes))
            fail(PANGU_ERR_TENSOR_BOUNDS, where + ": size overflows");
        if (b > e || e > data_size)
            fail(PANGU_ERR_TENSOR_BOUNDS, where + ": data_offsets [" + std::to_string(b) + ", " + std::to_string(e) +
                                              ") lie outside the data section of " + std::to_string(data_size) +
                                              " bytes (file truncated or corrupt)");
        if (e - b != nbytes)
            fail(PANGU_ERR_TENSOR_BOUNDS, where + ": data_offsets span " + std::to_string(e - b) +
                                              " bytes but dtype and shape need " + std::to_string(nbytes));
        if (tensors_.count(name)) fail(PANGU_ERR_SAFETENSORS_HEADER, where + ": defined in more than one file");
        info.data = data_base + b;
        info.nbytes = nbytes;
        spans.push_back({b, e, name});
        found.push_back(std::move(info));
    }
    std::sort(spans.begin(), spans.end(), [](const Span &a, const Span &b) { return a.begin < b.begin; });
    for (size_t i = 1; i < spans.size(); ++i)
        if (spans[i].begin < spans[i - 1].end)
            fail(PANGU_ERR_TENSOR_BOUNDS, path + ": tensors " + spans[i - 1].name + " and " + spans[i].name +
                                              " overlap");
    for (auto &info : found) {
        info.file = file.get();
        std::string n = info.name;
        tensors_.emplace(std::move(n), std::move(info));
    }
    files_.push_back(std::move(file));
}

void TensorStore::open_dir(const std::string &dir, const MapOptions &opt) {
    const std::string index_path = dir + "/model.safetensors.index.json";
    std::ifstream in(index_path, std::ios::binary);
    if (!in) {
        open_file(dir + "/model.safetensors", opt);
        return;
    }
    Json::CharReaderBuilder builder;
    Json::Value root;
    std::string errs;
    if (!Json::parseFromStream(builder, in, &root, &errs))
        fail(PANGU_ERR_CONFIG, index_path + ": invalid JSON: " + errs);
    const Json::Value &wm = root["weight_map"];
    if (!wm.isObject() || wm.empty()) fail(PANGU_ERR_CONFIG, index_path + ": missing or empty weight_map");
    std::map<std::string, std::string> expected;  // tensor -> shard
    std::vector<std::string> shards;
    for (const auto &name : wm.getMemberNames()) {
        if (!wm[name].isString()) fail(PANGU_ERR_CONFIG, index_path + ": weight_map[" + name + "] is not a string");
        const std::string shard = wm[name].asString();
        if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
            fail(PANGU_ERR_CONFIG, index_path + ": weight_map[" + name + "] names an invalid shard \"" + shard + "\"");
        expected[name] = shard;
        if (std::find(shards.begin(), shards.end(), shard) == shards.end()) shards.push_back(shard);
    }
    for (const auto &shard : shards) open_file(dir + "/" + shard, opt);
    for (const auto &kv : expected) {
        auto it = tensors_.find(kv.first);
        if (it == tensors_.end())
            fail(PANGU_ERR_MISSING_TENSOR, index_path + ": tensor " + kv.first + " is listed for " + kv.second +
                                               " but that shard does not hold it");
        const std::string &p = it->second.file->path();
        if (p.size() < kv.second.size() || p.compare(p.size() - kv.second.size(), kv.second.size(), kv.second) != 0)
            fail(PANGU_ERR_CONFIG, index_path + ": tensor " + kv.first + " is listed for " + kv.second +
                                       " but found in " + p);
    }
}

const TensorInfo *TensorStore::find(const std::string &name) const {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : &it->second;
}

size_t TensorStore::mapped_bytes() const {
    size_t n = 0;
    for (const auto &f : files_) n += f->size();
    return n;
}

}  // namespace pangu
