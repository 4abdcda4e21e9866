// The npu-sim backend: an Ascend 310P-class NPU emulated on the host, so that the device path of the SDK can
// be developed and checked without the hardware. It keeps the forward pass honest about what a 310P changes:
//  - numerics: a 310P computes in fp16 and int8 only (no bf16). Every operator output is rounded to fp16,
//    matmul operands are fp16 (products accumulate in fp32), weights are fp16 or int8 with a per-channel
//    scale. A value beyond fp16's range is saturated to +-65504 (never inf) and counted per operator kind.
//  - memory: a budget that allocations and weight uploads draw from (PANGU_ERR_OUT_OF_MEMORY beyond it),
//    sizes rounded to 32 bytes like aclrtMalloc, buffers 64-byte aligned, weights in the FRACTAL_NZ layout.
//  - time: per operator, max(FLOPs / peak, bytes / bandwidth) + launch overhead against a device profile,
//    summed per stream, with the bytes copied between host and device.
// Device memory is host memory here: activations keep F32 storage holding fp16 values, and the host may write
// the session block directly (a real port cannot; docs/porting-310p.md lists what changes).
#include <json/json.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include "device/attention.h"
#include "common/common.h"
#include "device/device.h"
#include "device/npusim/device_npusim.h"
#include "common/io.h"
#include "common/json_util.h"
#include "device/cpu/kernels.h"
#include "device/rope.h"
#include "model/tensor.h"
#include "common/threadpool.h"

namespace pangu {
namespace {

constexpr float kF16Max = 65504.0f;
constexpr size_t kAlign = 64;    // buffer addresses: asynchronous device copies want 64-byte alignment
constexpr size_t kGranule = 32;  // aclrtMalloc rounds sizes up to 32 bytes
constexpr size_t kFractal = 512; // one cube fractal: 16x16 fp16 or 16x32 int8
constexpr size_t kDefaultBudget = size_t(24) << 30;  // Atlas 300I Pro: 24 GB

// ---- the latency model's device profile ----
// Defaults: one 310P (Atlas 300I Pro) as REFERENCE.md quotes it; those figures are marked unverified there.
struct Profile {
    double ai_cores = 8;
    double fp16_tflops = 70;
    double int8_tops = 140;       // parsed and kept; no operator here multiplies int8 by int8 (W8A16 runs fp16)
    double memory_gbps = 204.8;
    double host_link_gbps = 32;   // PCIe 4.0 x16, theoretical: an assumption, not in REFERENCE.md
    double launch_us = 5;         // per operator or copy: an assumption, not measured
};

bool load_profile(const std::string &path, Profile *p, std::string *err) {
    std::string text, why;
    if (read_file(path, kMaxJsonBytes, text, why) != ReadResult::kOk) {
        *err = path + ": cannot read the npu-sim device profile: " + why;
        return false;
    }
    Json::Value root;
    std::string errs;
    if (!parse_json(text, root, errs) || !root.isObject()) {
        *err = path + ": the npu-sim device profile is not a JSON object" + (errs.empty() ? "" : ": " + errs);
        return false;
    }
    struct Field {
        const char *key;
        double *v;
    } fields[] = {{"ai_cores", &p->ai_cores},     {"fp16_tflops", &p->fp16_tflops},
                  {"int8_tops", &p->int8_tops},   {"memory_gbps", &p->memory_gbps},
                  {"host_link_gbps", &p->host_link_gbps}, {"launch_us", &p->launch_us}};
    for (const std::string &key : root.getMemberNames()) {
        const Json::Value &v = root[key];
        if (key == "name" || key == "note") {  // free text for the reader of the file
            if (!v.isString()) {
                *err = path + ": field \"" + key + "\" must be a string";
                return false;
            }
            continue;
        }
        Field *f = nullptr;
        for (Field &x : fields)
            if (key == x.key) f = &x;
        if (!f) {  // a misspelt field would otherwise silently keep its default
            *err = path + ": unknown field \"" + key +
                   "\" (known: name, note, ai_cores, fp16_tflops, int8_tops, memory_gbps, host_link_gbps, launch_us)";
            return false;
        }
        const bool ok = v.isNumeric() && std::isfinite(v.asDouble()) &&
                        (f->v == &p->launch_us ? v.asDouble() >= 0 : v.asDouble() > 0) &&
                        (f->v != &p->ai_cores || (v.isIntegral() || v.asDouble() == std::floor(v.asDouble())));
        if (!ok) {
            *err = path + ": field \"" + key + "\" must be a positive number" +
                   (f->v == &p->ai_cores ? " (an integer)" : f->v == &p->launch_us ? " (or 0)" : "");
            return false;
        }
        *f->v = v.asDouble();
    }
    return true;
}

// ---- fp16 ----
constexpr float kF16MinNormal = 6.103515625e-05f;  // 2^-14

// A float in fp16's normal range (or zero) to fp16 precision: 10 mantissa bits, round to nearest even.
// Branch-free, so that the matmul's weight loops vectorize.
inline float round_f16_normal(float v) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    u = (u + 0xfffu + ((u >> 13) & 1u)) & ~0x1fffu;
    std::memcpy(&v, &u, 4);
    return v;
}

// Round to the nearest fp16 value, saturating to +-65504 (and counting) where fp16 would give inf. NaN stays.
inline float f16(float v, uint64_t *over) {
    const float a = std::fabs(v);
    if (!(a <= kF16Max)) {
        if (v != v) return v;
        ++*over;
        return v > 0 ? kF16Max : -kF16Max;
    }
    return a >= kF16MinNormal ? round_f16_normal(v) : f16_to_f32(f32_to_f16(v));
}

inline uint16_t to_f16_bits(float v, uint64_t *over) { return f32_to_f16(f16(v, over)); }

// fp16 bits -> fp32, branch-free: the exponent and mantissa shifted into place and rebiased by 2^112 (exact
// for normals and subnormals alike; weight_upload has made every weight finite).
inline float widen_f16(uint16_t h) {
    const uint32_t mag = static_cast<uint32_t>(h & 0x7fffu) << 13, sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    float f;
    std::memcpy(&f, &mag, 4);
    f *= 0x1p112f;
    uint32_t u;
    std::memcpy(&u, &f, 4);
    u |= sign;
    std::memcpy(&f, &u, 4);
    return f;
}

// ---- FRACTAL_NZ ----
// A weight W[N, K] (N output channels of K inputs, row-major on the host) is stored as the 4-D array
// [K1][N1][16][C0] with C0 = 16 for fp16 and 32 for int8, K1 = ceil(K / C0), N1 = ceil(N / 16): fractal
// (k1, n1) is the 16 x C0 block of rows 16*n1.. and columns C0*k1.., row-major inside, 512 bytes either way,
// and the padding of the last row and column blocks is zero. Whole fractals keep every block 32-byte
// aligned. The int8 scales follow the fractals (one float per channel holding an fp16 value).
inline size_t nz_index(int64_t n, int64_t k, int64_t n1_count, int c0) {
    return static_cast<size_t>(((k / c0) * n1_count + n / 16) * (16 * c0) + (n % 16) * c0 + k % c0);
}

enum class Layout { Plain, NzF16, NzI8, VecF32 };

struct Block {
    size_t bytes;   // charged to the budget
    Layout layout;
    int64_t rows, cols;
};

struct NpuStream {
    ThreadPool pool;
    uint64_t id;
    pgd_stream_stats stats{};
    NpuStream(int n, uint64_t id_) : pool(n), id(id_) {}
};

struct NpuCtx {
    const kernels::Table *k = nullptr;
    Profile prof;
    size_t budget = 0;
    std::mutex mu;  // guards used, peak, blocks, streams
    size_t used = 0, peak = 0;
    std::map<const void *, Block> blocks;           // every live allocation and uploaded weight
    std::map<const NpuStream *, uint64_t> streams;  // live streams and their ids
    std::atomic<uint64_t> overflows[PGD_NPUSIM_N_OPS];
    std::atomic<uint64_t> weight_bytes{0}, h2d{0}, d2h{0};
    NpuCtx() {
        for (auto &o : overflows) o.store(0);
    }
};

NpuCtx *C(void *ctx) { return static_cast<NpuCtx *>(ctx); }
NpuStream *S(pgd_stream *s) { return reinterpret_cast<NpuStream *>(s); }

// Copies carry no stream in the interface: they are charged to the stream that last ran an operator on the
// calling thread (the forward pass copies on the thread that computes), if it still exists. Stream ids are
// unique in the process, so a new stream or device at a recycled address is never mistaken for the old one.
std::atomic<uint64_t> g_next_stream_id{1};
struct Current {
    const NpuCtx *ctx;
    const NpuStream *s;
    uint64_t id;
};
thread_local Current tl_current{nullptr, nullptr, 0};

NpuStream *begin(void *ctx, pgd_stream *s) {
    tl_current = {C(ctx), S(s), S(s)->id};
    return S(s);
}

// Charges one operator to its stream: the roofline time plus the launch overhead.
void account(NpuCtx *c, NpuStream *s, int op, double flops, double bytes, uint64_t over, double util = 1.0) {
    const Profile &p = c->prof;
    const double t_compute = flops / (p.fp16_tflops * 1e12 * util);
    const double t_memory = bytes / (p.memory_gbps * 1e9);
    s->stats.est_ms += std::max(t_compute, t_memory) * 1e3 + p.launch_us * 1e-3;
    s->stats.n_ops += 1;
    if (over) {
        s->stats.fp16_overflows += over;
        c->overflows[op] += over;
    }
}

// ---- memory ----
int reserve(NpuCtx *c, size_t size, Block b, void **out) {
    const size_t charged = align_up(size ? size : 1, kGranule);
    if (charged > c->budget) return PANGU_ERR_OUT_OF_MEMORY;
    void *p = std::aligned_alloc(kAlign, align_up(charged, kAlign));
    if (!p) return PANGU_ERR_OUT_OF_MEMORY;
    try {
        std::lock_guard<std::mutex> g(c->mu);
        if (charged > c->budget - c->used) {
            std::free(p);
            return PANGU_ERR_OUT_OF_MEMORY;
        }
        b.bytes = charged;
        c->blocks.emplace(p, b);
        c->used += charged;
        c->peak = std::max(c->peak, c->used);
    } catch (const std::bad_alloc &) {
        std::free(p);
        return PANGU_ERR_OUT_OF_MEMORY;
    }
    *out = p;
    return 0;
}

void unreserve(NpuCtx *c, void *p) {
    if (!p) return;
    {
        std::lock_guard<std::mutex> g(c->mu);
        auto it = c->blocks.find(p);
        if (it == c->blocks.end()) return;  // not ours: freeing it would corrupt the host heap
        c->used -= it->second.bytes;
        c->blocks.erase(it);
    }
    std::free(p);
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

// Counts a copy's bytes and charges its time to the calling thread's current stream.
void transfer(NpuCtx *c, int kind, size_t bytes) {
    if (kind == PGD_HOST_TO_DEVICE) c->h2d += bytes;
    if (kind == PGD_DEVICE_TO_HOST) c->d2h += bytes;
    if (kind == PGD_HOST_TO_HOST || tl_current.ctx != c) return;
    std::lock_guard<std::mutex> g(c->mu);
    auto it = c->streams.find(tl_current.s);
    if (it == c->streams.end() || it->second != tl_current.id) return;
    NpuStream *s = const_cast<NpuStream *>(tl_current.s);
    const Profile &p = c->prof;
    if (kind == PGD_DEVICE_TO_DEVICE) {
        s->stats.est_ms += 2.0 * bytes / (p.memory_gbps * 1e9) * 1e3 + p.launch_us * 1e-3;  // read + write
        return;
    }
    if (kind == PGD_HOST_TO_DEVICE) s->stats.host_to_device_bytes += bytes;
    else s->stats.device_to_host_bytes += bytes;
    s->stats.est_ms += bytes / (p.host_link_gbps * 1e9) * 1e3 + p.launch_us * 1e-3;
}

int npu_memcpy(void *ctx, void *dst, size_t dst_max, const void *src, size_t count, int kind) {
    if (count > dst_max) return PANGU_ERR_BUFFER_TOO_SMALL;
    if (kind < PGD_HOST_TO_DEVICE || kind > PGD_HOST_TO_HOST || (count && (!dst || !src)))
        return PANGU_ERR_INVALID_ARGUMENT;
    if (count) std::memcpy(dst, src, count);
    transfer(C(ctx), kind, count);
    return 0;
}

int npu_memcpy2d(void *ctx, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                 int kind) {
    if (width > dpitch || width > spitch) return PANGU_ERR_INVALID_ARGUMENT;
    if (kind < PGD_HOST_TO_DEVICE || kind > PGD_HOST_TO_HOST || (width && height && (!dst || !src)))
        return PANGU_ERR_INVALID_ARGUMENT;
    for (size_t r = 0; r < height; ++r)
        std::memcpy(static_cast<char *>(dst) + r * dpitch, static_cast<const char *>(src) + r * spitch, width);
    transfer(C(ctx), kind, width * height);
    return 0;
}

// ---- weights ----
float host_elem(const pgd_tensor *h, int64_t r, int64_t col) {
    const size_t i = static_cast<size_t>(r * h->stride + col);
    switch (h->dtype) {
        case PGD_F32: return static_cast<const float *>(h->data)[i];
        case PGD_F16: return f16_to_f32(static_cast<const uint16_t *>(h->data)[i]);
        case PGD_BF16: return bf16_to_f32(static_cast<const uint16_t *>(h->data)[i]);
        default: return 0.0f;
    }
}

int npu_weight_upload(void *ctx, const pgd_tensor *h, pgd_tensor *d) {
    NpuCtx *c = C(ctx);
    if (!h || !d || !h->data || h->rows <= 0 || h->cols <= 0 || h->stride < h->cols) return PANGU_ERR_INVALID_ARGUMENT;
    if (h->dtype < PGD_F32 || h->dtype > PGD_I8) return PANGU_ERR_DTYPE;
    if (h->dtype == PGD_I8 && (!h->scale || h->group_size != 0)) return PANGU_ERR_UNSUPPORTED;
    const int64_t N = h->rows, K = h->cols;
    uint64_t over = 0;
    void *p = nullptr;
    size_t bytes = 0;
    *d = *h;
    d->group_size = 0;
    d->stride = K;  // not a row pitch in the fractal layout; kept as the logical width
    if (N == 1 && h->dtype == PGD_F32) {
        // A norm weight or a bias, which the forward reads as a float array: fp16 values in F32 storage.
        bytes = sizeof(float) * K;
        if (int rc = reserve(c, bytes, Block{0, Layout::VecF32, N, K}, &p)) return rc;
        float *dst = static_cast<float *>(p);
        for (int64_t i = 0; i < K; ++i) dst[i] = f16(static_cast<const float *>(h->data)[i], &over);
        d->scale = nullptr;
    } else if (h->dtype == PGD_I8) {
        const int c0 = 32;
        const int64_t N1 = (N + 15) / 16, K1 = (K + c0 - 1) / c0;
        const size_t data_bytes = static_cast<size_t>(K1 * N1) * kFractal;
        bytes = data_bytes + sizeof(float) * N;
        if (int rc = reserve(c, bytes, Block{0, Layout::NzI8, N, K}, &p)) return rc;
        std::memset(p, 0, data_bytes);  // the padding of partial fractals must read as zero
        int8_t *dst = static_cast<int8_t *>(p);
        float *scale = reinterpret_cast<float *>(static_cast<uint8_t *>(p) + data_bytes);
        for (int64_t n = 0; n < N; ++n) {
            // The antiquant scale is fp16 on a 310P (it has x's dtype), and so is q * scale.
            scale[n] = f16(h->scale[n], &over);
            const int8_t *src = static_cast<const int8_t *>(h->data) + n * h->stride;
            for (int64_t k = 0; k < K; ++k) {
                dst[nz_index(n, k, N1, c0)] = src[k];
                over += std::fabs(src[k] * scale[n]) > kF16Max ? 1 : 0;  // saturates when dequantized
            }
        }
        d->scale = scale;
    } else {
        const int c0 = 16;
        const int64_t N1 = (N + 15) / 16, K1 = (K + c0 - 1) / c0;
        bytes = static_cast<size_t>(K1 * N1) * kFractal;
        if (int rc = reserve(c, bytes, Block{0, Layout::NzF16, N, K}, &p)) return rc;
        std::memset(p, 0, bytes);
        uint16_t *dst = static_cast<uint16_t *>(p);
        for (int64_t n = 0; n < N; ++n)
            for (int64_t k = 0; k < K; ++k) {
                const float v = host_elem(h, n, k);  // F16 stays as is: rounding an fp16 value is exact
                if (v != v) {  // a NaN weight has no fp16 to saturate to: refuse the tensor
                    unreserve(c, p);
                    return PANGU_ERR_NUMERIC;
                }
                dst[nz_index(n, k, N1, c0)] = to_f16_bits(v, &over);
            }
        d->dtype = PGD_F16;
        d->scale = nullptr;
    }
    d->data = p;
    c->weight_bytes += bytes;
    c->h2d += bytes;
    if (over) c->overflows[PGD_NPUSIM_WEIGHT_UPLOAD] += over;
    return 0;
}

void npu_weight_release(void *ctx, pgd_tensor *d) {
    if (!d) return;
    unreserve(C(ctx), d->data);
    *d = pgd_tensor{};
}

// ---- streams ----
int npu_stream_create(void *ctx, int n_threads, pgd_stream **out) {
    NpuCtx *c = C(ctx);
    if (!out) return PANGU_ERR_INVALID_ARGUMENT;
    NpuStream *s = nullptr;
    try {
        std::lock_guard<std::mutex> g(c->mu);
        s = new NpuStream(n_threads > 0 ? n_threads : 1, g_next_stream_id++);
        c->streams.emplace(s, s->id);
    } catch (const std::bad_alloc &) {
        delete s;
        return PANGU_ERR_OUT_OF_MEMORY;
    } catch (...) {
        delete s;
        return PANGU_ERR_INTERNAL;  // thread creation failed
    }
    *out = reinterpret_cast<pgd_stream *>(s);
    return 0;
}

void npu_stream_destroy(void *ctx, pgd_stream *s) {
    NpuCtx *c = C(ctx);
    {
        std::lock_guard<std::mutex> g(c->mu);
        c->streams.erase(S(s));
    }
    delete S(s);
}

int npu_stream_sync(void *, pgd_stream *) { return 0; }  // operators complete before returning

int npu_stream_stats(void *, pgd_stream *s, pgd_stream_stats *out) {
    if (!s || !out) return PANGU_ERR_INVALID_ARGUMENT;
    *out = S(s)->stats;
    return 0;
}

int chunks_for(const NpuStream *s, int64_t units) {
    const int64_t want = s->pool.size() == 1 ? 1 : int64_t(s->pool.size()) * 4;
    return static_cast<int>(units < want ? (units > 0 ? units : 1) : want);
}

// ---- embed ----
int npu_embed(void *ctx, pgd_stream *st, const int32_t *ids, int64_t n, const pgd_tensor *table, pgd_tensor *out) {
    NpuCtx *c = C(ctx);
    NpuStream *s = begin(ctx, st);
    Block b;
    if (!find_block(c, table->data, &b) || (b.layout != Layout::NzF16 && b.layout != Layout::NzI8))
        return PANGU_ERR_INVALID_ARGUMENT;  // tables are uploaded weights
    const bool i8 = b.layout == Layout::NzI8;
    const int c0 = i8 ? 32 : 16;
    const int64_t N = b.rows, K = b.cols, N1 = (N + 15) / 16;
    if (out->cols < K) return PANGU_ERR_SHAPE;
    uint64_t over = 0;
    for (int64_t m = 0; m < n; ++m) {
        const int64_t id = ids[m];
        if (id < 0 || id >= N) return PANGU_ERR_INVALID_ARGUMENT;
        float *o = rowf(out, m);
        if (i8) {
            const int8_t *w = static_cast<const int8_t *>(table->data);
            for (int64_t k = 0; k < K; ++k) o[k] = f16(w[nz_index(id, k, N1, c0)] * table->scale[id], &over);
        } else {
            const uint16_t *w = static_cast<const uint16_t *>(table->data);
            for (int64_t k = 0; k < K; ++k) o[k] = widen_f16(w[nz_index(id, k, N1, c0)]);
        }
    }
    transfer(c, PGD_HOST_TO_DEVICE, sizeof(int32_t) * n);  // the ids come from host memory
    account(c, s, PGD_NPUSIM_EMBED, 0, double(n) * K * ((i8 ? 1 : 2) + 2), over);
    return 0;
}

// ---- rms_norm ----
int npu_rms_norm(void *ctx, pgd_stream *st, const pgd_tensor *x, const float *w, float eps, pgd_tensor *out) {
    NpuCtx *c = C(ctx);
    NpuStream *s = begin(ctx, st);
    const int64_t d = x->cols;
    uint64_t over = 0;
    for (int64_t m = 0; m < x->rows; ++m) {
        const float *xi = rowf(x, m);
        float *o = rowf(out, m);
        const float inv = 1.0f / std::sqrt(c->k->dot(xi, xi, d) / static_cast<float>(d) + eps);
        for (int64_t i = 0; i < d; ++i) o[i] = f16(xi[i] * inv * w[i], &over);
    }
    account(c, s, PGD_NPUSIM_RMS_NORM, 0, double(x->rows) * d * 4 + d * 2.0, over);
    return 0;
}

// ---- matmul ----
// y[m][n] accumulates in fp32 over K in chunks of kChunk columns, each chunk's dot product in the kernels'
// canonical order (which their block kernels keep whatever the blocking), chunks in order: the sum depends on
// neither M nor the thread count (batch invariance).
constexpr int64_t kChunk = 256, kRowBlock = 64;

struct MatmulJob {
    const kernels::Table *k;
    const float *xh;  // x rounded to fp16, [M, K] compact
    int64_t M, K, N;
    const void *w;
    const float *scale;  // int8 weights
    bool i8;
    const float *bias;
    pgd_tensor *y;
    std::atomic<uint64_t> over{0};
};

void matmul_worker(void *p, int chunk, int n_chunks, int) {
    MatmulJob &j = *static_cast<MatmulJob *>(p);
    const int64_t N1 = (j.N + 15) / 16;
    const int c0 = j.i8 ? 32 : 16;
    int64_t s0, s1;
    split_range(N1, n_chunks, chunk, 1, &s0, &s1);
    float panel[16][kChunk];      // 16 output channels x one K chunk, widened to fp32
    float part[kRowBlock * 16];   // the chunk's partial sums of a block of rows
    uint64_t over = 0;
    for (int64_t n1 = s0; n1 < s1; ++n1) {
        const int64_t n0 = n1 * 16;
        const int nr = static_cast<int>(std::min<int64_t>(16, j.N - n0));
        for (int64_t m = 0; m < j.M; ++m)
            for (int r = 0; r < nr; ++r) rowf(j.y, m)[n0 + r] = 0.0f;
        for (int64_t k0 = 0; k0 < j.K; k0 += kChunk) {
            const int64_t len = std::min(kChunk, j.K - k0);
            for (int64_t kb = 0; kb < len; kb += c0) {  // one fractal per 16 x c0 block of the panel
                const size_t base = nz_index(n0, k0 + kb, N1, c0);
                const int64_t w_len = std::min<int64_t>(c0, len - kb);
                for (int r = 0; r < nr; ++r) {
                    float *dst = panel[r] + kb;
                    if (j.i8) {
                        // The antiquant step of aclnnWeightQuantBatchMatmulV2: fp16(q * scale), exact in fp32
                        // before the rounding. When every nonzero q * scale is an fp16 normal, the rounding
                        // needs no range checks.
                        const int8_t *src = static_cast<const int8_t *>(j.w) + base + r * c0;
                        const float sc = j.scale[n0 + r];
                        if (sc >= kF16MinNormal && sc * 128.0f <= kF16Max) {
                            for (int64_t e = 0; e < w_len; ++e) dst[e] = round_f16_normal(src[e] * sc);
                        } else {
                            uint64_t counted_at_upload = 0;
                            for (int64_t e = 0; e < w_len; ++e) dst[e] = f16(src[e] * sc, &counted_at_upload);
                        }
                    } else {
                        const uint16_t *src = static_cast<const uint16_t *>(j.w) + base + r * c0;
                        for (int64_t e = 0; e < w_len; ++e) dst[e] = widen_f16(src[e]);
                    }
                }
            }
            // The chunk's dot products, eight channels at a time against a block of rows (the CPU backend's
            // block kernel: weights loaded once for all rows), then added to the running sums.
            for (int64_t m0 = 0; m0 < j.M; m0 += kRowBlock) {
                const int64_t mb = std::min(kRowBlock, j.M - m0);
                for (int r0 = 0; r0 < nr; r0 += 8)
                    j.k->mm_f32(j.xh + m0 * j.K + k0, j.K, mb, panel[r0], kChunk, len, std::min(8, nr - r0),
                                part + r0, 16);
                for (int64_t m = 0; m < mb; ++m) {
                    float *y = rowf(j.y, m0 + m) + n0;
                    for (int r = 0; r < nr; ++r) y[r] += part[m * 16 + r];
                }
            }
        }
        for (int64_t m = 0; m < j.M; ++m) {  // epilogue: bias, then the fp16 output
            float *y = rowf(j.y, m) + n0;
            for (int r = 0; r < nr; ++r) y[r] = f16(y[r] + (j.bias ? j.bias[n0 + r] : 0.0f), &over);
        }
    }
    j.over += over;
}

size_t npu_matmul_workspace(void *, const pgd_tensor *x, const pgd_tensor *) {
    return sizeof(float) * static_cast<size_t>(x->rows) * static_cast<size_t>(x->cols);
}

int npu_matmul(void *ctx, pgd_stream *st, const pgd_tensor *x, const pgd_tensor *w, const float *bias, pgd_tensor *y,
               void *ws, size_t ws_size) {
    NpuCtx *c = C(ctx);
    NpuStream *s = begin(ctx, st);
    Block b;
    if (!find_block(c, w->data, &b) || (b.layout != Layout::NzF16 && b.layout != Layout::NzI8))
        return PANGU_ERR_INVALID_ARGUMENT;  // weights must have gone through weight_upload
    const int64_t M = x->rows, K = x->cols, N = b.rows;
    if (K != b.cols || y->cols < N || y->rows < M) return PANGU_ERR_SHAPE;
    if (!ws || ws_size < npu_matmul_workspace(ctx, x, w)) return PANGU_ERR_BUFFER_TOO_SMALL;
    // The cube unit takes fp16 operands: x is rounded (saturating) into the workspace, as aclnnCast would.
    uint64_t over = 0;
    float *xh = static_cast<float *>(ws);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < K; ++k) xh[m * K + k] = f16(rowf(x, m)[k], &over);
    MatmulJob j;
    j.k = c->k;
    j.xh = xh;
    j.M = M;
    j.K = K;
    j.N = N;
    j.w = w->data;
    j.i8 = b.layout == Layout::NzI8;
    // int8: the scales follow the fractals in the same allocation
    j.scale = j.i8 ? reinterpret_cast<const float *>(static_cast<const uint8_t *>(w->data) +
                                                     static_cast<size_t>((K + 31) / 32 * ((N + 15) / 16)) * kFractal)
                   : nullptr;
    j.bias = bias;
    j.y = y;
    s->pool.run(matmul_worker, &j, chunks_for(s, (N + 15) / 16));
    over += j.over.load();
    // The cube works on 16x16x16 fractals: a decode step (M = 1) pays for 16 rows. Cores share the output
    // fractals, so fewer of them than cores leaves cores idle.
    const double M16 = double((M + 15) / 16 * 16), N16 = double((N + 15) / 16 * 16), K16 = double((K + 15) / 16 * 16);
    const double tiles = (M16 / 16) * (N16 / 16);
    const double bytes = double(b.bytes) + double(M) * K * 2 + double(M) * N * 2 + (bias ? N * 2.0 : 0.0);
    account(c, s, PGD_NPUSIM_MATMUL, 2.0 * M16 * N16 * K16, bytes, over, std::min(1.0, tiles / c->prof.ai_cores));
    return 0;
}

// ---- rope ----
int npu_rope(void *ctx, pgd_stream *st, pgd_tensor *x, const int32_t *pos, int32_t n_heads, int32_t hd,
             const float *cos_sin) {
    NpuCtx *c = C(ctx);
    NpuStream *s = begin(ctx, st);
    uint64_t over = 0;
    rope_rows(x, pos, n_heads, hd, cos_sin, 0, x->rows, [&](float v) { return f16(v, &over); });
    account(c, s, PGD_NPUSIM_ROPE, 0, double(x->rows) * (n_heads * hd * 4.0 + hd * 4.0), over);
    return 0;
}

// ---- attention ----
// One flash-attention block per (row, KV head): scores in fp32 from fp16 q and k, probabilities exp(s - max)
// rounded to fp16 for the second cube product, normalized at the end, output fp16.
struct AttnJob {
    AttnProblem a;
    void *ws;
    std::atomic<uint64_t> over{0};
};

float round16(float v, uint64_t *over) { return f16(v, over); }

void attn_worker(void *p, int chunk, int n_chunks, int slot) {
    AttnJob &j = *static_cast<AttnJob *>(p);
    j.over += attention_chunk(j.a, j.ws, chunk, n_chunks, slot);
}

size_t npu_attention_workspace(void *, int64_t, int32_t n_head, int32_t n_head_kv, int64_t n_ctx, int n_threads) {
    return attention_workspace_bytes(n_head, n_head_kv, n_ctx, n_threads);
}

int npu_attention(void *ctx, pgd_stream *st, const pgd_tensor *q, const pgd_tensor *kc, const pgd_tensor *vc,
                  int64_t pos0, int32_t n_head, int32_t n_head_kv, int32_t hd, float scale, pgd_tensor *out, void *ws,
                  size_t ws_size) {
    NpuCtx *c = C(ctx);
    NpuStream *s = begin(ctx, st);
    AttnJob j;
    j.a = AttnProblem{c->k, q, kc, vc, out, pos0, n_head, n_head_kv, hd, scale, round16};
    j.ws = ws;
    if (const int rc = attention_check(j.a, ws, ws_size, s->pool.size())) return rc;
    s->pool.run(attn_worker, &j, chunks_for(s, q->rows * n_head_kv));
    const int64_t M = q->rows;
    const double attended = double(M) * double(pos0) + double(M) * double(M + 1) / 2;  // sum of n_pos
    const double bytes = 2.0 * M * n_head * hd * 2 + 2.0 * double(pos0 + M) * n_head_kv * hd * 2;
    account(c, s, PGD_NPUSIM_ATTENTION, 4.0 * hd * n_head * attended, bytes, j.over.load());
    return 0;
}

// ---- elementwise ----
int npu_swiglu(void *ctx, pgd_stream *st, pgd_tensor *g, const pgd_tensor *u) {
    NpuStream *s = begin(ctx, st);
    uint64_t over = 0;
    for (int64_t m = 0; m < g->rows; ++m) {
        float *gr = rowf(g, m);
        const float *ur = rowf(u, m);
        for (int64_t i = 0; i < g->cols; ++i) gr[i] = f16(gr[i] / (1.0f + std::exp(-gr[i])) * ur[i], &over);
    }
    account(C(ctx), s, PGD_NPUSIM_SWIGLU, 0, double(g->rows) * g->cols * 6, over);
    return 0;
}

// A 310P has no bf16: whatever 16-bit type the forward asks for, activations become fp16.
int npu_round(void *ctx, pgd_stream *st, pgd_tensor *x, int32_t dtype) {
    if (dtype != PGD_BF16 && dtype != PGD_F16) return PANGU_ERR_UNSUPPORTED;
    NpuStream *s = begin(ctx, st);
    uint64_t over = 0;
    for (int64_t m = 0; m < x->rows; ++m) {
        float *r = rowf(x, m);
        for (int64_t i = 0; i < x->cols; ++i) r[i] = f16(r[i], &over);
    }
    account(C(ctx), s, PGD_NPUSIM_ROUND, 0, double(x->rows) * x->cols * 4, over);
    return 0;
}

int npu_add(void *ctx, pgd_stream *st, pgd_tensor *x, const pgd_tensor *y) {
    NpuStream *s = begin(ctx, st);
    uint64_t over = 0;
    for (int64_t m = 0; m < x->rows; ++m) {
        float *xr = rowf(x, m);
        const float *yr = rowf(y, m);
        for (int64_t i = 0; i < x->cols; ++i) xr[i] = f16(xr[i] + yr[i], &over);
    }
    account(C(ctx), s, PGD_NPUSIM_ADD, 0, double(x->rows) * x->cols * 6, over);
    return 0;
}

void npu_destroy(pgd_device *dev) {
    NpuCtx *c = C(dev->ctx);
    for (auto &b : c->blocks) std::free(const_cast<void *>(b.first));  // whatever the caller did not free
    delete c;
    delete dev;
}

NpuCtx *npusim_ctx(const pgd_device *dev) {
    return dev && dev->destroy == npu_destroy ? static_cast<NpuCtx *>(dev->ctx) : nullptr;
}

void set_error(char *err, size_t err_size, const std::string &msg) {
    if (err && err_size) std::snprintf(err, err_size, "%s", msg.c_str());
}

}  // namespace
}  // namespace pangu

extern "C" {

pgd_device *pgd_npusim_device_create(const pgd_device_options *opt, char *err, size_t err_size) {
    using namespace pangu;
    set_error(err, err_size, "");
    NpuCtx *ctx = nullptr;
    pgd_device *d = nullptr;
    try {
        ctx = new NpuCtx();
        if (opt && opt->profile_path) {
            std::string msg;
            if (!load_profile(opt->profile_path, &ctx->prof, &msg)) {
                set_error(err, err_size, msg);
                delete ctx;
                return nullptr;
            }
        }
        d = new pgd_device();
    } catch (const std::bad_alloc &) {
        delete ctx;
        return nullptr;  // no message: allocation failure
    } catch (const std::exception &e) {  // jsoncpp's own exceptions while reading the profile
        set_error(err, err_size, std::string(opt->profile_path) + ": " + e.what());
        delete ctx;
        return nullptr;
    }
    ctx->k = &kernels::best();
    ctx->budget = opt && opt->memory_budget ? opt->memory_budget : kDefaultBudget;
    d->api_version = PGD_API_VERSION;
    d->name = "npu-sim";
    d->ctx = ctx;
    d->destroy = npu_destroy;
    d->mem_alloc = npu_mem_alloc;
    d->mem_free = npu_mem_free;
    d->mem_info = npu_mem_info;
    d->memcpy = npu_memcpy;
    d->memcpy2d = npu_memcpy2d;
    d->mem_alignment = kAlign;
    d->weight_upload = npu_weight_upload;
    d->weight_release = npu_weight_release;
    d->stream_create = npu_stream_create;
    d->stream_destroy = npu_stream_destroy;
    d->stream_sync = npu_stream_sync;
    d->embed = npu_embed;
    d->rms_norm = npu_rms_norm;
    d->matmul_workspace = npu_matmul_workspace;
    d->matmul = npu_matmul;
    d->rope = npu_rope;
    d->attention_workspace = npu_attention_workspace;
    d->attention = npu_attention;
    d->swiglu = npu_swiglu;
    d->round = npu_round;
    d->stream_stats = npu_stream_stats;
    d->add = npu_add;
    return d;
}

const char *pgd_npusim_op_name(int op) {
    static const char *const names[PGD_NPUSIM_N_OPS] = {"embed", "rms_norm",  "matmul", "rope",         "attention",
                                                        "swiglu", "round", "add", "weight_upload"};
    return op >= 0 && op < PGD_NPUSIM_N_OPS ? names[op] : "?";
}

int pgd_npusim_overflow_counts(const pgd_device *dev, uint64_t *counts, int n) {
    pangu::NpuCtx *c = pangu::npusim_ctx(dev);
    if (!c) return -1;
    for (int i = 0; i < n && i < PGD_NPUSIM_N_OPS; ++i) counts[i] = c->overflows[i].load();
    return PGD_NPUSIM_N_OPS;
}

int pgd_npusim_get_totals(const pgd_device *dev, pgd_npusim_totals *out) {
    pangu::NpuCtx *c = pangu::npusim_ctx(dev);
    if (!c || !out) return -1;
    out->weight_upload_bytes = c->weight_bytes.load();
    out->host_to_device_bytes = c->h2d.load();
    out->device_to_host_bytes = c->d2h.load();
    std::lock_guard<std::mutex> g(c->mu);
    out->peak_used_bytes = c->peak;
    return 0;
}

}  // extern "C"
