// The npu-sim backend: an Ascend 310P-class NPU emulated on the host, so that the device path of the SDK can
// be developed and checked without the hardware. It keeps the forward pass honest about what a 310P changes:
//  - numerics: a 310P computes in fp16 and int8 only (no bf16). Every operator output is rounded to fp16,
//    matmul operands are fp16 (products accumulate in fp32), weights are fp16 or int8 with a per-channel
//    scale, or per-group scales for low-bit weights (PGD_I4, PGD_QB: unpacked to int8 at upload, zero points
//    subtracted, since the cube has no int4 mode; act-order ones gather x's columns first); with int8
//    activations (W8A8, W4A8: weights uploaded with act_dtype PGD_I8) the matmul quantizes its fp16 input rows
//    to int8 and multiplies int8 by int8 in exact int32. A value beyond fp16's range is saturated to +-65504
//    (never inf) and counted per operator kind.
//  - memory: a budget that allocations and weight uploads draw from (PANGU_ERR_OUT_OF_MEMORY beyond it),
//    sizes rounded to 32 bytes like aclrtMalloc, buffers 64-byte aligned, weights in the FRACTAL_NZ layout.
//  - time: per operator, max(FLOPs / peak, bytes / bandwidth) + launch overhead against a device profile,
//    summed per stream, with the bytes copied between host and device.
// It is a discrete device, as a 310P card is: its memory is its own mapping (memory.cpp), which the host reaches
// only through copies, and in guard mode (PANGU_NPUSIM_GUARD=1, as the test suite runs it) that mapping is
// PROT_NONE whenever no npu-sim slot runs, so a host read or write of device memory faults. Activations keep F32
// storage holding fp16 values. Files: profile (latency-model JSON), fp16.h (numerics), layout.h (FRACTAL_NZ),
// memory, weights (uploads), ops (operators), and this one (streams, creation, registration, queries).

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "common/common.h"
#include "device/npusim/internal.h"

namespace pangu {
namespace npusim {
namespace {

int npu_stream_create(void *ctx, int n_threads, pgd_stream **out) {
    NpuCtx *c = C(ctx);
    if (!out) return PANGU_ERR_INVALID_ARGUMENT;
    (void)c;
    NpuStream *s = nullptr;
    try {
        s = new NpuStream(n_threads > 0 ? n_threads : 1);
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

void npu_stream_destroy(void *, pgd_stream *s) { delete S(s); }

int npu_stream_sync(void *, pgd_stream *) { return 0; }  // operators complete before returning

int npu_stream_stats(void *, pgd_stream *s, pgd_stream_stats *out) {
    if (!s || !out) return PANGU_ERR_INVALID_ARGUMENT;
    *out = S(s)->stats;
    return 0;
}

void npu_destroy(pgd_device *dev) {
    NpuCtx *c = C(dev->ctx);
    memory_release(c);  // with whatever the caller did not free
    delete c;
    delete dev;
}

NpuCtx *npusim_ctx(const pgd_device *dev) {
    return dev && dev->destroy == npu_destroy ? static_cast<NpuCtx *>(dev->ctx) : nullptr;
}

void set_error(char *err, size_t err_size, const std::string &msg) {
    if (err && err_size) std::snprintf(err, err_size, "%s", msg.c_str());
}

// The device table: npu-sim's slots.
void fill_slots(pgd_device *d, NpuCtx *ctx) {
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
    d->host_visible = 0;
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
    d->attention_workspace = nullptr;  // the shared host attention needs none (device/attention.h)
    d->attention = npu_attention;
    d->kv_dtypes = 1u << PGD_F16;  // its cache is fp16, whatever kv_type asks
    d->kv_store = npu_kv_store;
    d->swiglu = npu_swiglu;
    d->round = npu_round;
    d->stream_stats = npu_stream_stats;
    d->add = npu_add;
}

// Guard mode: the environment says so (the test suite sets PANGU_NPUSIM_GUARD=1).
bool guard_from_env() {
    const char *v = std::getenv("PANGU_NPUSIM_GUARD");
    return v && *v && std::strcmp(v, "0") != 0;
}

pgd_device *npusim_create(const pgd_device_options *opt, int *status, char *err, size_t err_size) {
    *status = PANGU_ERR_OUT_OF_MEMORY;
    set_error(err, err_size, "");
    NpuCtx *ctx = nullptr;
    pgd_device *d = nullptr;
    try {
        ctx = new NpuCtx();
        if (opt && opt->profile_path) {
            std::string msg;
            if (!load_profile(opt->profile_path, &ctx->prof, &msg)) {
                *status = PANGU_ERR_CONFIG;
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
        *status = PANGU_ERR_CONFIG;
        set_error(err, err_size, std::string(opt->profile_path) + ": " + e.what());
        delete ctx;
        return nullptr;
    }
    ctx->k = &kernels::best();
    ctx->budget = opt && opt->memory_budget ? opt->memory_budget : kDefaultBudget;
    std::string msg;
    if (!memory_init(ctx, ctx->budget, guard_from_env(), &msg)) {
        set_error(err, err_size, msg);
        delete ctx;
        delete d;
        return nullptr;
    }
    fill_slots(d, ctx);
    *status = 0;
    return d;
}

}  // namespace
}  // namespace npusim
}  // namespace pangu

extern "C" {

const pgd_backend_reg *pgd_backend_npusim(void) {
    static const pgd_backend_reg reg = {
        PGD_API_VERSION, "npu-sim", "an Ascend 310P-class NPU emulated on the host (fp16, device memory, latency model)",
        PGD_CAP_UPLOADS_WEIGHTS | PGD_CAP_DEVICE_CLOCK | PGD_CAP_EMULATED | PGD_CAP_LOWBIT_FLOAT_ACT,
        pangu::npusim::npusim_create};
    return &reg;
}

int pgd_npusim_set_guard(pgd_device *dev, int on) {
    pangu::npusim::NpuCtx *c = pangu::npusim::npusim_ctx(dev);
    if (!c) return -1;
    pangu::npusim::set_guard(c, on != 0);
    return 0;
}

const char *pgd_npusim_op_name(int op) {
    static const char *const names[PGD_NPUSIM_N_OPS] = {"embed", "rms_norm",  "matmul", "rope",         "attention",
                                                        "swiglu", "round", "add", "weight_upload"};
    return op >= 0 && op < PGD_NPUSIM_N_OPS ? names[op] : "?";
}

int pgd_npusim_overflow_counts(const pgd_device *dev, uint64_t *counts, int n) {
    pangu::npusim::NpuCtx *c = pangu::npusim::npusim_ctx(dev);
    if (!c) return -1;
    for (int i = 0; i < n && i < PGD_NPUSIM_N_OPS; ++i) counts[i] = c->overflows[i].load();
    return PGD_NPUSIM_N_OPS;
}

int pgd_npusim_get_totals(const pgd_device *dev, pgd_npusim_totals *out) {
    pangu::npusim::NpuCtx *c = pangu::npusim::npusim_ctx(dev);
    if (!c || !out) return -1;
    out->weight_upload_bytes = c->weight_bytes.load();
    out->host_to_device_bytes = c->h2d.load();
    out->device_to_host_bytes = c->d2h.load();
    std::lock_guard<std::mutex> g(c->mu);
    out->peak_used_bytes = c->peak;
    return 0;
}

}  // extern "C"
