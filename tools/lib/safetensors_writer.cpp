#include "safetensors_writer.h"

#include <json/json.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include "common/common.h"

namespace pangu {

namespace {
uint64_t numel(const std::vector<int64_t> &shape) {
    uint64_t n = 1;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d);
    return n;
}
}  // namespace

void SafetensorsWriter::add(const std::string &name, DType dtype, std::vector<int64_t> shape,
                            std::function<void(uint8_t *)> fill) {
    const uint64_t nbytes = numel(shape) * dtype_size(dtype);
    entries_.push_back({name, dtype, std::move(shape), nbytes, std::move(fill)});
}

void SafetensorsWriter::add_copy(const std::string &name, DType dtype, std::vector<int64_t> shape, const void *data) {
    const uint64_t nbytes = numel(shape) * dtype_size(dtype);
    auto copy = std::make_shared<std::vector<uint8_t>>(static_cast<const uint8_t *>(data),
                                                       static_cast<const uint8_t *>(data) + nbytes);
    add(name, dtype, std::move(shape), [copy](uint8_t *dst) { std::memcpy(dst, copy->data(), copy->size()); });
}

uint64_t SafetensorsWriter::data_bytes() const {
    uint64_t n = 0;
    for (const auto &e : entries_) n += e.nbytes;
    return n;
}

void SafetensorsWriter::write(const std::string &path,
                              const std::function<void(const std::string &, uint64_t, uint64_t)> &progress) const {
    std::vector<const Entry *> order;
    for (const auto &e : entries_) order.push_back(&e);
    std::stable_sort(order.begin(), order.end(), [](const Entry *a, const Entry *b) {
        const bool a64 = a->nbytes % 64 == 0, b64 = b->nbytes % 64 == 0;
        if (a64 != b64) return a64;  // sizes that keep the next tensor aligned go first
        return a->nbytes > b->nbytes;
    });
    Json::Value header(Json::objectValue);
    uint64_t off = 0;
    for (const Entry *e : order) {
        Json::Value t(Json::objectValue);
        t["dtype"] = dtype_name(e->dtype);
        Json::Value shape(Json::arrayValue);
        for (int64_t d : e->shape) shape.append(Json::Int64(d));
        t["shape"] = shape;
        Json::Value offs(Json::arrayValue);
        offs.append(Json::UInt64(off));
        offs.append(Json::UInt64(off + e->nbytes));
        t["data_offsets"] = offs;
        header[e->name] = t;
        off += e->nbytes;
    }
    if (!metadata_.empty()) {
        Json::Value md(Json::objectValue);
        for (const auto &kv : metadata_) md[kv.first] = kv.second;
        header["__metadata__"] = md;
    }
    Json::StreamWriterBuilder wb;
    wb["indentation"] = "";
    std::string json = Json::writeString(wb, header);
    // Pad the header with spaces so that the data section starts 64-byte aligned in the file.
    while ((8 + json.size()) % 64 != 0) json.push_back(' ');

    const std::string tmp = path + ".partial";
    std::FILE *f = std::fopen(tmp.c_str(), "wb");
    if (!f) fail(PANGU_ERR_IO, tmp + ": cannot create: " + std::strerror(errno));
    auto cleanup_fail = [&](const std::string &why) {
        std::fclose(f);
        std::remove(tmp.c_str());
        fail(PANGU_ERR_IO, tmp + ": " + why);
    };
    uint8_t len[8];
    uint64_t n = json.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    if (std::fwrite(len, 1, 8, f) != 8 || std::fwrite(json.data(), 1, json.size(), f) != json.size())
        cleanup_fail("write failed");
    std::vector<uint8_t> buf;
    uint64_t done = 0;
    for (const Entry *e : order) {
        buf.assign(e->nbytes, 0);
        try {
            e->fill(buf.data());
        } catch (...) {
            std::fclose(f);
            std::remove(tmp.c_str());
            throw;
        }
        if (std::fwrite(buf.data(), 1, buf.size(), f) != buf.size()) cleanup_fail("write failed");
        done += e->nbytes;
        if (progress) progress(e->name, done, off);
    }
    if (std::fflush(f) != 0 || fsync(fileno(f)) != 0) cleanup_fail("flush failed");
    if (std::fclose(f) != 0) {
        std::remove(tmp.c_str());
        fail(PANGU_ERR_IO, tmp + ": close failed");
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        fail(PANGU_ERR_IO, path + ": rename failed: " + std::strerror(errno));
    }
}

}  // namespace pangu
