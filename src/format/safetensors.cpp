#include "format/safetensors.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/common.h"
#include "common/json_util.h"

namespace pangu {

namespace {

// A header larger than this is not a real checkpoint; the cap keeps a corrupt length from driving a huge
// allocation.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

bool mul_overflows(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return true;
    *out = a * b;
    return false;
}

}  // namespace

MappedFile::MappedFile(const std::string &path, const MapOptions &opt) : path_(path) {
    uint64_t size = 0;
    bool missing = false;
    std::string why;
    FileDescriptor fd(open_regular_file(path, &size, &missing, why));
    if (fd.get() < 0) {
        if (missing) fail(PANGU_ERR_FILE_NOT_FOUND, path + ": not found");
        fail(PANGU_ERR_IO, path + ": cannot open: " + why);
    }
    if (size == 0) fail(PANGU_ERR_SAFETENSORS_HEADER, path + ": file is empty");
    if (size > SIZE_MAX) fail(PANGU_ERR_OUT_OF_MEMORY, path + ": too large to map");
    size_ = static_cast<size_t>(size);
    int flags = MAP_PRIVATE;
#ifdef MAP_POPULATE
    if (opt.prefault) flags |= MAP_POPULATE;
#endif
    void *p = ::mmap(nullptr, size_, PROT_READ, flags, fd.get(), 0);
    if (p == MAP_FAILED) {
        const int map_errno = errno;
        fail(map_errno == ENOMEM ? PANGU_ERR_OUT_OF_MEMORY : PANGU_ERR_IO,
             path + ": mmap failed: " + std::strerror(map_errno));
    }
    data_ = static_cast<uint8_t *>(p);
    if (opt.lock) {
        if (::mlock(data_, size_) != 0) {
            const int lock_errno = errno;
            ::munmap(data_, size_);
            data_ = nullptr;
            fail(PANGU_ERR_IO, path + ": mlock of " + std::to_string(size_) + " bytes failed: " +
                                   std::strerror(lock_errno) + " (raise RLIMIT_MEMLOCK or run without lock_memory)");
        }
        locked_ = true;
    }
    fd_.reset(fd.release());
}

MappedFile::~MappedFile() {
    if (data_) {
        if (locked_) ::munlock(data_, size_);
        ::munmap(data_, size_);
    }
}

void MappedFile::read(uint64_t offset, size_t n, void *dst, const std::string &what) const {
    const long long got = read_at(fd_.get(), offset, n, dst);
    if (got < 0) {
        const int e = errno;
        fail(PANGU_ERR_IO, path_ + ": cannot read " + what + ": " + std::strerror(e));
    }
    if (static_cast<size_t>(got) < n)
        fail(PANGU_ERR_TENSOR_BOUNDS, path_ + ": " + what + " lies past the end of the file, which is shorter than " +
                                          "the " + std::to_string(size_) + " bytes it had when it was opened " +
                                          "(truncated while loading)");
}

void MappedFile::check_size() const {
    struct stat st;
    if (::fstat(fd_.get(), &st) != 0) {
        const int e = errno;
        fail(PANGU_ERR_IO, path_ + ": cannot stat: " + std::strerror(e));
    }
    if (static_cast<uint64_t>(st.st_size) < size_)
        fail(PANGU_ERR_TENSOR_BOUNDS, path_ + ": the file has " + std::to_string(st.st_size) + " bytes, fewer than " +
                                          "the " + std::to_string(size_) + " it had when it was loaded (truncated " +
                                          "since); replace model files by renaming a new file over them, never " +
                                          "rewrite them in place");
}

DType parse_dtype(const std::string &s, const std::string &where) {
    if (s == "F32") return DType::F32;
    if (s == "F16") return DType::F16;
    if (s == "BF16") return DType::BF16;
    if (s == "I8") return DType::I8;
    if (s == "U8") return DType::U8;
    if (s == "I32") return DType::I32;
    static const char *known_unsupported[] = {"F64", "I64", "I16", "U16", "U32", "U64",
                                              "BOOL", "F8_E4M3", "F8_E5M2"};
    for (const char *k : known_unsupported)
        if (s == k) fail(PANGU_ERR_DTYPE, where + ": dtype " + s + " is not supported (F32, F16, BF16, I8, U8, I32 are)");
    fail(PANGU_ERR_DTYPE, where + ": unknown dtype \"" + s + "\"");
}

uint64_t safetensors_header_length(const std::string &path, const uint8_t prefix[8], uint64_t file_size) {
    if (file_size < 8)
        fail(PANGU_ERR_SAFETENSORS_HEADER, path + ": file too short for a safetensors header (" +
                                               std::to_string(file_size) + " bytes)");
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | prefix[i];  // little-endian u64
    if (hlen < 2 || hlen > kMaxHeaderBytes || hlen > file_size - 8)
        fail(PANGU_ERR_SAFETENSORS_HEADER, path + ": header length " + std::to_string(hlen) +
                                               " does not fit in the file of " + std::to_string(file_size) + " bytes");
    return hlen;
}

std::vector<TensorInfo> parse_safetensors_header(const std::string &path, const char *hbegin, size_t hlen,
                                                 uint64_t data_size) {
    Json::Value root;
    std::string errs;
    if (!parse_json(hbegin, hbegin + hlen, root, errs))
        fail(PANGU_ERR_SAFETENSORS_HEADER, path + ": header is not valid JSON: " + errs);
    if (!root.isObject()) fail(PANGU_ERR_SAFETENSORS_HEADER, path + ": header is not a JSON object");

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
        info.offset = b;
        info.nbytes = nbytes;
        spans.push_back({b, e, name});
        found.push_back(std::move(info));
    }
    std::sort(spans.begin(), spans.end(), [](const Span &a, const Span &b) { return a.begin < b.begin; });
    for (size_t i = 1; i < spans.size(); ++i)
        if (spans[i].begin < spans[i - 1].end)
            fail(PANGU_ERR_TENSOR_BOUNDS, path + ": tensors " + spans[i - 1].name + " and " + spans[i].name +
                                              " overlap");
    return found;
}

void TensorStore::open_file(const std::string &path, const MapOptions &opt) {
    auto file = std::make_unique<MappedFile>(path, opt);
    uint8_t prefix[8] = {0};
    const uint64_t fsize = file->size();
    if (fsize >= 8) file->read(0, 8, prefix, "the header length");
    const uint64_t hlen = safetensors_header_length(path, prefix, fsize);
    std::string header(static_cast<size_t>(hlen), '\0');
    file->read(8, header.size(), &header[0], "the header");
    std::vector<TensorInfo> found = parse_safetensors_header(path, header.data(), header.size(), fsize - 8 - hlen);
    for (const auto &info : found)
        if (tensors_.count(info.name))
            fail(PANGU_ERR_SAFETENSORS_HEADER, path + ": tensor " + info.name + ": defined in more than one file");
    for (auto &info : found) {
        info.offset += 8 + hlen;
        info.data = file->data() + info.offset;
        info.file = file.get();
        std::string n = info.name;
        tensors_.emplace(std::move(n), std::move(info));
    }
    files_.push_back(std::move(file));
}

void parse_safetensors_index(const std::string &index_path, const std::string &text,
                             std::map<std::string, std::string> &expected, std::vector<std::string> &shards) {
    Json::Value root;
    std::string errs;
    if (!parse_json(text, root, errs)) fail(PANGU_ERR_CONFIG, index_path + ": invalid JSON: " + errs);
    // jsoncpp throws Json::LogicError from operator[] on anything but an object (found by fuzz_config).
    if (!root.isObject()) fail(PANGU_ERR_CONFIG, index_path + ": top level must be a JSON object");
    const Json::Value &wm = root["weight_map"];
    if (!wm.isObject() || wm.empty()) fail(PANGU_ERR_CONFIG, index_path + ": missing or empty weight_map");
    for (const auto &name : wm.getMemberNames()) {
        if (!wm[name].isString()) fail(PANGU_ERR_CONFIG, index_path + ": weight_map[" + name + "] is not a string");
        const std::string shard = wm[name].asString();
        if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
            fail(PANGU_ERR_CONFIG, index_path + ": weight_map[" + name + "] names an invalid shard \"" + shard + "\"");
        expected[name] = shard;
        if (std::find(shards.begin(), shards.end(), shard) == shards.end()) shards.push_back(shard);
    }
}

void TensorStore::open_dir(const std::string &dir, const MapOptions &opt) {
    const std::string index_path = dir + "/model.safetensors.index.json";
    std::string text, why;
    switch (read_file(index_path, kMaxJsonBytes, text, why)) {
        case ReadResult::kMissing: open_file(dir + "/model.safetensors", opt); return;
        case ReadResult::kError: fail(PANGU_ERR_IO, index_path + ": cannot read: " + why);
        case ReadResult::kTooBig: fail(PANGU_ERR_CONFIG, index_path + ": " + why);
        case ReadResult::kOk: break;
    }
    std::map<std::string, std::string> expected;  // tensor -> shard
    std::vector<std::string> shards;
    parse_safetensors_index(index_path, text, expected, shards);
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

void TensorStore::check_sizes() const {
    for (const auto &f : files_) f->check_size();
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
