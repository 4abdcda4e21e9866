// npu-sim's device memory: a budget that allocations and weight uploads draw from (PANGU_ERR_OUT_OF_MEMORY
// beyond it), sizes charged in 32-byte granules like aclrtMalloc, buffers 64-byte aligned, all of it carved
// from one private mapping that the host cannot touch in guard mode; and the copies in and out of it, counted.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "common/common.h"
#include "device/attention.h"
#include "device/npusim/internal.h"

namespace pangu {
namespace npusim {

namespace {

size_t page_size() {
    static const size_t p = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    return p;
}

// The guard's protection for the carved part of the mapping.
void protect(DeviceMemory &m, int prot) {
    const size_t len = align_up(m.top, page_size());
    if (len && mprotect(m.base, len, prot) != 0) std::abort();  // the emulator's own invariant: cannot go on
}

// First fit of `bytes` (a multiple of kAlign) in the free list; the offset, or SIZE_MAX. Called under c->mu.
size_t carve(DeviceMemory &m, size_t bytes) {
    for (auto it = m.free_list.begin(); it != m.free_list.end(); ++it) {
        if (it->second < bytes) continue;
        const size_t off = it->first, left = it->second - bytes;
        m.free_list.erase(it);
        if (left) m.free_list.emplace(off + bytes, left);
        if (off + bytes > m.top) {
            // Pages newly within the carved range take the protection the rest of it has now.
            std::lock_guard<std::mutex> g(m.access_mu);
            const size_t a = m.top / page_size() * page_size();
            m.top = off + bytes;
            const int prot = m.guard && m.open == 0 ? PROT_NONE : PROT_READ | PROT_WRITE;
            if (mprotect(m.base + a, align_up(m.top, page_size()) - a, prot) != 0) std::abort();
        }
        return off;
    }
    return SIZE_MAX;
}

// Returns a range to the free list, merged with its neighbours, and its whole pages to the system.
void uncarve(DeviceMemory &m, size_t off, size_t bytes) {
    const size_t ps = page_size(), a = align_up(off, ps), b = (off + bytes) / ps * ps;
    if (b > a) madvise(m.base + a, b - a, MADV_DONTNEED);
    auto next = m.free_list.lower_bound(off);
    if (next != m.free_list.end() && off + bytes == next->first) {
        bytes += next->second;
        next = m.free_list.erase(next);
    }
    if (next != m.free_list.begin()) {
        auto prev = std::prev(next);
        if (prev->first + prev->second == off) {
            prev->second += bytes;
            return;
        }
    }
    m.free_list.emplace(off, bytes);
}

}  // namespace

bool memory_init(NpuCtx *c, size_t budget, bool guard, std::string *err) {
    DeviceMemory &m = c->mem;
    // Sizes are charged in 32-byte granules but carved in 64-byte ones: twice the budget of address space
    // (reserved, not committed) holds any mix of allocations the budget allows.
    m.size = align_up(2 * std::max<size_t>(budget, kAlign), page_size());
    void *p = mmap(nullptr, m.size, guard ? PROT_NONE : PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        *err = "npu-sim: cannot reserve " + std::to_string(m.size) + " bytes of address space for device memory: " +
               std::strerror(errno);
        m.base = nullptr;
        return false;
    }
    m.base = static_cast<uint8_t *>(p);
    m.guard = guard;
    m.free_list.emplace(0, m.size);
    return true;
}

void memory_release(NpuCtx *c) {
    if (c->mem.base) munmap(c->mem.base, c->mem.size);
    c->mem.base = nullptr;
}

DeviceAccess::DeviceAccess(NpuCtx *c) : c_(c) {
    DeviceMemory &m = c->mem;
    std::lock_guard<std::mutex> g(m.access_mu);
    if (m.open++ == 0 && m.guard) protect(m, PROT_READ | PROT_WRITE);
}

DeviceAccess::~DeviceAccess() {
    DeviceMemory &m = c_->mem;
    std::lock_guard<std::mutex> g(m.access_mu);
    if (--m.open == 0 && m.guard) protect(m, PROT_NONE);
}

void set_guard(NpuCtx *c, bool on) {
    DeviceMemory &m = c->mem;
    std::lock_guard<std::mutex> g(m.access_mu);
    m.guard = on;
    if (m.open == 0) protect(m, on ? PROT_NONE : PROT_READ | PROT_WRITE);  // else the last slot to close does
}

int reserve(NpuCtx *c, size_t size, Block b, void **out) {
    const size_t charged = align_up(size ? size : 1, kGranule);
    if (charged > c->budget) return PANGU_ERR_OUT_OF_MEMORY;
    try {
        std::lock_guard<std::mutex> g(c->mu);
        if (charged > c->budget - c->used) return PANGU_ERR_OUT_OF_MEMORY;
        const size_t off = carve(c->mem, align_up(charged, kAlign));
        if (off == SIZE_MAX) return PANGU_ERR_OUT_OF_MEMORY;  // fragmented: no free range is large enough
        void *p = c->mem.base + off;
        b.bytes = charged;
        c->blocks.emplace(p, b);
        c->used += charged;
        c->peak = std::max(c->peak, c->used);
        *out = p;
        return 0;
    } catch (const std::bad_alloc &) {
        return PANGU_ERR_OUT_OF_MEMORY;
    }
}

void unreserve(NpuCtx *c, void *p) {
    if (!p) return;
    std::lock_guard<std::mutex> g(c->mu);
    auto it = c->blocks.find(p);
    if (it == c->blocks.end()) return;  // not ours: ignore it rather than corrupt the free list
    c->used -= it->second.bytes;
    uncarve(c->mem, static_cast<size_t>(static_cast<uint8_t *>(p) - c->mem.base), align_up(it->second.bytes, kAlign));
    c->blocks.erase(it);
}

bool find_block(NpuCtx *c, const void *p, Block *out) {
    std::lock_guard<std::mutex> g(c->mu);
    auto it = c->blocks.find(p);
    if (it == c->blocks.end()) return false;
    *out = it->second;
    return true;
}

int npu_mem_alloc(void *ctx, void **ptr, size_t size) {
    if (!ptr) return PANGU_ERR_INVALID_ARGUMENT;
    return reserve(C(ctx), size, Block{0, Layout::Plain, 0, 0}, ptr);
}

void npu_mem_free(void *ctx, void *ptr) { unreserve(C(ctx), ptr); }

int npu_mem_info(void *ctx, size_t *free_bytes, size_t *total_bytes) {
    NpuCtx *c = C(ctx);
    std::lock_guard<std::mutex> g(c->mu);
    if (free_bytes) *free_bytes = c->budget - c->used;
    if (total_bytes) *total_bytes = c->budget;
    return 0;
}

void transfer(NpuCtx *c, NpuStream *s, int kind, size_t bytes) {
    if (kind == PGD_HOST_TO_DEVICE) c->h2d += bytes;
    if (kind == PGD_DEVICE_TO_HOST) c->d2h += bytes;
    if (kind == PGD_HOST_TO_HOST || !s) return;
    const Profile &p = c->prof;
    if (kind == PGD_DEVICE_TO_DEVICE) {
        s->stats.est_ms += 2.0 * bytes / (p.memory_gbps * 1e9) * 1e3 + p.launch_us * 1e-3;  // read + write
        return;
    }
    if (kind == PGD_HOST_TO_DEVICE) s->stats.host_to_device_bytes += bytes;
    else s->stats.device_to_host_bytes += bytes;
    s->stats.est_ms += bytes / (p.host_link_gbps * 1e9) * 1e3 + p.launch_us * 1e-3;
}

int npu_memcpy(void *ctx, pgd_stream *s, void *dst, size_t dst_max, const void *src, size_t count, int kind) {
    if (count > dst_max) return PANGU_ERR_BUFFER_TOO_SMALL;
    if (kind < PGD_HOST_TO_DEVICE || kind > PGD_HOST_TO_HOST || (count && (!dst || !src)))
        return PANGU_ERR_INVALID_ARGUMENT;
    DeviceAccess open(C(ctx));
    if (count) std::memcpy(dst, src, count);
    transfer(C(ctx), s ? S(s) : nullptr, kind, count);
    return 0;
}

int npu_memcpy2d(void *ctx, pgd_stream *s, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                 size_t height, int kind) {
    if (width > dpitch || width > spitch) return PANGU_ERR_INVALID_ARGUMENT;
    if (kind < PGD_HOST_TO_DEVICE || kind > PGD_HOST_TO_HOST || (width && height && (!dst || !src)))
        return PANGU_ERR_INVALID_ARGUMENT;
    DeviceAccess open(C(ctx));
    for (size_t r = 0; r < height; ++r)
        std::memcpy(static_cast<char *>(dst) + r * dpitch, static_cast<const char *>(src) + r * spitch, width);
    transfer(C(ctx), s ? S(s) : nullptr, kind, width * height);
    return 0;
}

// The KV cache is fp16 on the device (kv_dtypes): the rows, fp16 values already, are stored as fp16 bits.
int npu_kv_store(void *ctx, pgd_stream *s, const pgd_tensor *src, pgd_tensor *cache, int64_t row0) {
    if (!src || !cache) return PANGU_ERR_INVALID_ARGUMENT;
    if (cache->dtype != PGD_F16) return PANGU_ERR_UNSUPPORTED;  // as the CPU's for a type it does not hold
    DeviceAccess open(C(ctx));
    if (const int rc = kv_store_host(*src, *cache, row0)) return rc;
    transfer(C(ctx), s ? S(s) : nullptr, PGD_DEVICE_TO_DEVICE, static_cast<size_t>(src->rows * src->cols) * 2);
    return 0;
}

}  // namespace npusim
}  // namespace pangu
