// What the files of the npu-sim backend share: the device and stream state, and the functions each file
// defines for the others (profile.cpp, memory.cpp, weights.cpp, ops.cpp, device_npusim.cpp).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "common/threadpool.h"
#include "device/cpu/kernels.h"
#include "device/device.h"
#include "device/npusim/device_npusim.h"
#include "device/npusim/layout.h"
#include "pangu/pangu.h"

namespace pangu {
namespace npusim {

constexpr size_t kAlign = 64;    // buffer addresses: asynchronous device copies want 64-byte alignment
constexpr size_t kGranule = 32;  // aclrtMalloc rounds sizes up to 32 bytes
constexpr size_t kDefaultBudget = size_t(24) << 30;  // Atlas 300I Pro: 24 GB

// Defaults: one 310P (Atlas 300I Pro) as REFERENCE.md quotes it; those figures are marked unverified there.
struct Profile {
    double ai_cores = 8;
    double fp16_tflops = 70;
    double int8_tops = 140;       // the cube's int8 mode: W8A8 and W4A8 matmuls (W8A16 runs on the fp16 one)
    double memory_gbps = 204.8;
    double host_link_gbps = 32;   // PCIe 4.0 x16, theoretical: an assumption, not in REFERENCE.md
    double launch_us = 5;         // per operator or copy: an assumption, not measured
};

// Reads a latency-model profile (JSON); false with the reason, naming the file, in *err.
bool load_profile(const std::string &path, Profile *p, std::string *err);
// The same from the file's text (`path` names it in messages); fields not given keep their value in *p.
bool parse_profile(const std::string &text, const std::string &path, Profile *p, std::string *err);

struct NpuStream {
    ThreadPool pool;
    pgd_stream_stats stats{};
    explicit NpuStream(int n) : pool(n) {}
};

// Device memory is one private mapping per device, reserved for the whole budget at creation (address space
// only: pages are committed when first written) and carved first-fit. The host never has a pointer into it
// that it may use: in guard mode the mapping is PROT_NONE whenever no npu-sim slot runs.
struct DeviceMemory {
    uint8_t *base = nullptr;
    size_t size = 0;                     // bytes reserved
    std::atomic<size_t> top{0};          // end of the highest range ever carved: what the guard toggles
    std::map<size_t, size_t> free_list;  // offset -> bytes of each free range
    std::mutex access_mu;                // guards `guard` and `open`, the count of slots running
    bool guard = false;
    int open = 0;
};

struct NpuCtx {
    const kernels::Table *k = nullptr;
    Profile prof;
    size_t budget = 0;
    std::mutex mu;  // guards used, peak, blocks, mem.free_list, mem.top
    size_t used = 0, peak = 0;
    std::map<const void *, Block> blocks;  // every live allocation and uploaded weight
    DeviceMemory mem;
    std::atomic<uint64_t> overflows[PGD_NPUSIM_N_OPS];
    std::atomic<uint64_t> weight_bytes{0}, h2d{0}, d2h{0};
    NpuCtx() {
        for (auto &o : overflows) o.store(0);
    }
};

inline NpuCtx *C(void *ctx) { return static_cast<NpuCtx *>(ctx); }
inline NpuStream *S(pgd_stream *s) { return reinterpret_cast<NpuStream *>(s); }

// ---- memory.cpp ----
// Reserves the device's mapping; false with the reason in *err.
bool memory_init(NpuCtx *c, size_t budget, bool guard, std::string *err);
void memory_release(NpuCtx *c);
// Device memory open to the host for as long as one npu-sim slot runs (a no-op unless in guard mode).
class DeviceAccess {
public:
    explicit DeviceAccess(NpuCtx *c);
    ~DeviceAccess();
    DeviceAccess(const DeviceAccess &) = delete;
    DeviceAccess &operator=(const DeviceAccess &) = delete;

private:
    NpuCtx *c_;
};
// Guard mode on or off, applied at once unless a slot is running (then when the last one closes).
void set_guard(NpuCtx *c, bool on);
int reserve(NpuCtx *c, size_t size, Block b, void **out);
void unreserve(NpuCtx *c, void *p);
bool find_block(NpuCtx *c, const void *p, Block *out);
// Counts a copy's bytes, and charges its time to stream s (when not null).
void transfer(NpuCtx *c, NpuStream *s, int kind, size_t bytes);
int npu_mem_alloc(void *ctx, void **ptr, size_t size);
void npu_mem_free(void *ctx, void *ptr);
int npu_mem_info(void *ctx, size_t *free_bytes, size_t *total_bytes);
int npu_memcpy(void *ctx, pgd_stream *s, void *dst, size_t dst_max, const void *src, size_t count, int kind);
int npu_memcpy2d(void *ctx, pgd_stream *s, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                 size_t height, int kind);

// ---- weights.cpp ----
int npu_weight_upload(void *ctx, const pgd_tensor *h, pgd_tensor *d);
void npu_weight_release(void *ctx, pgd_tensor *d);

// ---- ops.cpp ----
int npu_embed(void *ctx, pgd_stream *st, const int32_t *ids, int64_t n, const pgd_tensor *table, pgd_tensor *out);
int npu_rms_norm(void *ctx, pgd_stream *st, const pgd_tensor *x, const pgd_tensor *w, float eps, pgd_tensor *out);
size_t npu_matmul_workspace(void *ctx, const pgd_tensor *x, const pgd_tensor *w);
int npu_matmul(void *ctx, pgd_stream *st, const pgd_tensor *x, const pgd_tensor *w, const pgd_tensor *bias,
               pgd_tensor *y, void *ws, size_t ws_size);
int npu_rope(void *ctx, pgd_stream *st, pgd_tensor *x, const int32_t *pos, int32_t n_heads, int32_t hd,
             const float *cos_sin);
int npu_kv_store(void *ctx, pgd_stream *s, const pgd_tensor *src, pgd_tensor *cache, int64_t row0);
int npu_attention(void *ctx, pgd_stream *st, const pgd_tensor *q, const pgd_tensor *kc, const pgd_tensor *vc,
                  int64_t pos0, int32_t n_head, int32_t n_head_kv, int32_t hd, float scale, pgd_tensor *out, void *ws,
                  size_t ws_size);
int npu_swiglu(void *ctx, pgd_stream *st, pgd_tensor *g, const pgd_tensor *u);
int npu_round(void *ctx, pgd_stream *st, pgd_tensor *x, int32_t dtype);
int npu_add(void *ctx, pgd_stream *st, pgd_tensor *x, const pgd_tensor *y);

}  // namespace npusim
}  // namespace pangu
