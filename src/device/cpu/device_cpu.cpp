// The CPU backend of the device interface: host memory is device memory, weights are read in place from
// the memory-mapped checkpoint, and operators split their rows or output channels over the stream's threads.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include <unistd.h>

#include "device/attention.h"
#include "common/common.h"
#include "device/device.h"
#include "device/cpu/kernels.h"
#include "device/lowbit.h"
#include "device/rope.h"
#include "model/tensor.h"
#include "common/threadpool.h"

struct pgd_stream {
    pangu::ThreadPool pool;
    explicit pgd_stream(int n) : pool(n) {}
};

namespace pangu {
namespace {

constexpr size_t kAlign = 64;

struct CpuCtx {
    const kernels::Table *k;
};

int cpu_mem_alloc(void *, void **ptr, size_t size) {
    if (!ptr) return PANGU_ERR_INVALID_ARGUMENT;
    void *p = std::aligned_alloc(kAlign, align_up(size ? size : 1, kAlign));
    if (!p) return PANGU_ERR_OUT_OF_MEMORY;
    *ptr = p;
    return 0;
}

void cpu_mem_free(void *, void *ptr) { std::free(ptr); }

int cpu_mem_info(void *, size_t *free_bytes, size_t *total_bytes) {
    // Host memory: report what the kernel says is available.
    long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    if (total_bytes) *total_bytes = static_cast<size_t>(pages) * static_cast<size_t>(psize);
    if (free_bytes) *free_bytes = static_cast<size_t>(avail) * static_cast<size_t>(psize);
    return 0;
}

int cpu_memcpy(void *, pgd_stream *, void *dst, size_t dst_max, const void *src, size_t count, int) {
    if (count > dst_max) return PANGU_ERR_BUFFER_TOO_SMALL;
    if (count) std::memcpy(dst, src, count);
    return 0;
}

int cpu_memcpy2d(void *, pgd_stream *, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                 int) {
    if (width > dpitch || width > spitch) return PANGU_ERR_INVALID_ARGUMENT;
    for (size_t r = 0; r < height; ++r)
        std::memcpy(static_cast<char *>(dst) + r * dpitch, static_cast<const char *>(src) + r * spitch, width);
    return 0;
}

int cpu_stream_create(void *, int n_threads, pgd_stream **out) {
    try {
        *out = new pgd_stream(n_threads);
        return 0;
    } catch (const std::bad_alloc &) {
        return PANGU_ERR_OUT_OF_MEMORY;
    } catch (...) {
        return PANGU_ERR_INTERNAL;  // thread creation failed
    }
}

void cpu_stream_destroy(void *, pgd_stream *s) { delete s; }
int cpu_stream_sync(void *, pgd_stream *) { return 0; }  // operators complete before returning

// Row-wise operators (norms, rotary, elementwise): f(r0, r1) over rows [r0, r1). A batch of rows (prefill) is
// split over the stream's threads: done on the calling thread alone, they kept the others waiting for about
// a tenth of a 2-thread pangu-tiny prefill (perf samples of ThreadPool::worker). A few rows (decode,
// verification) are not worth a dispatch.
template <typename F>
void for_rows(pgd_stream *s, int64_t rows, F &&f) {
    constexpr int64_t kMinRowsPerThread = 4;
    const int parts = static_cast<int>(std::min<int64_t>(s->pool.size(), rows / kMinRowsPerThread));
    if (parts < 2) {
        f(int64_t(0), rows);
        return;
    }
    struct Ctx {
        F *f;
        int64_t rows;
    } ctx{&f, rows};
    s->pool.run(
        [](void *p, int chunk, int n_chunks, int) {
            const Ctx &c = *static_cast<const Ctx *>(p);
            int64_t r0, r1;
            split_range(c.rows, n_chunks, chunk, 1, &r0, &r1);
            (*c.f)(r0, r1);
        },
        &ctx, parts);
}

// ---- embed ----
int cpu_embed(void *, pgd_stream *, const int32_t *ids, int64_t n, const pgd_tensor *table, pgd_tensor *out) {
    const int64_t d = table->cols;
    for (int64_t m = 0; m < n; ++m) {
        float *o = rowf(out, m);
        const int64_t id = ids[m];
        const uint8_t *src = static_cast<const uint8_t *>(table->data);
        switch (table->dtype) {
            case PGD_F32: std::memcpy(o, reinterpret_cast<const float *>(src) + id * table->stride, d * 4); break;
            case PGD_BF16: {
                const uint16_t *r = reinterpret_cast<const uint16_t *>(src) + id * table->stride;
                for (int64_t i = 0; i < d; ++i) o[i] = bf16_to_f32(r[i]);
                break;
            }
            case PGD_F16: {
                const uint16_t *r = reinterpret_cast<const uint16_t *>(src) + id * table->stride;
                for (int64_t i = 0; i < d; ++i) o[i] = f16_to_f32(r[i]);
                break;
            }
            case PGD_I8: {
                const int8_t *r = reinterpret_cast<const int8_t *>(src) + id * table->stride;
                const float s = table->scale[id];
                for (int64_t i = 0; i < d; ++i) o[i] = r[i] * s;
                break;
            }
            default: return PANGU_ERR_DTYPE;
        }
    }
    return 0;
}

// ---- rms_norm ----
int cpu_rms_norm(void *ctx, pgd_stream *s, const pgd_tensor *x, const pgd_tensor *wt, float eps, pgd_tensor *out) {
    const kernels::Table *k = static_cast<CpuCtx *>(ctx)->k;
    if (wt->dtype != PGD_F32 || wt->cols != x->cols) return PANGU_ERR_SHAPE;
    const float *w = static_cast<const float *>(wt->data);
    const int64_t d = x->cols;
    for_rows(s, x->rows, [&](int64_t r0, int64_t r1) {
        for (int64_t m = r0; m < r1; ++m) {
            const float *xi = rowf(x, m);
            float *o = rowf(out, m);
            const float ss = k->dot(xi, xi, d);
            const float inv = 1.0f / std::sqrt(ss / static_cast<float>(d) + eps);
            for (int64_t i = 0; i < d; ++i) o[i] = xi[i] * inv * w[i];
        }
    });
    return 0;
}

// ---- matmul ----
// Decode's weight stream is cut into one contiguous range per thread, each range into pieces that threads
// claim in order: the range's owner streams it front to back, and a thread that finishes early takes the
// pieces its slower peer has not reached yet instead of spinning until the peer is done.
constexpr int kMaxRanges = 64;
constexpr int64_t kPiece = 32;  // output channels per claim: 48-192 KiB of int8 weights on the 1B shape

struct alignas(64) PieceCounter {
    std::atomic<int64_t> next{0};
};

struct MatmulJob {
    const pgd_tensor *x, *w;
    const float *bias;
    pgd_tensor *y;
    kernels::MatmulBlockFn mm;
    PieceCounter *ranges;  // single-row calls: the claim counter of each range
    // int8 weights on a CPU with bf16 dot products: the rows of x as bf16 (ldxb apart), and for each row
    // whether it is exactly that (then mm_i8_bx computes it; otherwise mm, in fp32).
    const uint16_t *xb = nullptr;
    int64_t ldxb = 0;
    const uint8_t *exact = nullptr;
    decltype(kernels::Table::mm_i8_bx) mm_bx = nullptr;
    // Integer activations (act_dtype PGD_I8 / PGD_I16): the rows of x as int8 (ldq apart; int16 as two digit
    // rows each) with their scales, and the table whose integer kernels multiply them.
    const int8_t *xq = nullptr;
    int64_t ldq = 0;
    const float *xs = nullptr;
    const kernels::Table *k = nullptr;
    bool digits = false;  // PGD_I16
};

// Rows of a 4-bit (PGD_I4) or PGD_QB weight of one width: mm_q4 for the symmetric 4-bit layout it was
// written for, mm_qb for zero points and the other widths. y holds group-scaled sums (x's scale not applied).
struct LowbitRows {
    const uint8_t *w;  // the first row
    int64_t ldw;       // bytes between rows
    int bits;
    const float *s;    // the first row's group scales
    const uint8_t *z;  // its zero points, or NULL
    int64_t lds;       // groups per row
};

void lowbit_sums(const MatmulJob &j, const LowbitRows &b, const int8_t *xq, int64_t M, int nr, float *y, int64_t ldy) {
    const pgd_tensor &w = *j.w;
    if (b.bits == 4 && !b.z)
        j.k->mm_q4(xq, j.ldq, M, b.w, b.ldw, b.s, b.lds, w.cols, w.group_size, nr, y, ldy);
    else
        j.k->mm_qb(xq, j.ldq, M, b.w, b.ldw, b.bits, b.s, b.z, b.lds, w.cols, w.group_size, nr, y, ldy);
}

// Up to 8 channels n.. of rows [m0, m0 + mr) against int16 activations: the kernel runs on the 2 * mr digit
// rows into `t`, and each row's two sums are combined, y = 256 * hi + lo (exact in 64 bits for int8 weights).
// `lb`: low-bit rows (NULL: int8 weights at wr).
void channels_i16(const MatmulJob &j, const uint8_t *wr, int64_t wrow, const LowbitRows *lb, int nr, int64_t m0,
                  int64_t mr, float *y, int64_t ldy) {
    const pgd_tensor &w = *j.w;
    constexpr int64_t kMaxRows = 6;  // matmul_channels' row block
    union {
        int32_t i[2 * kMaxRows * 8];
        float f[2 * kMaxRows * 8];
    } t;
    const int8_t *xq = j.xq + 2 * m0 * j.ldq;
    for (int64_t a = 0; a < mr; a += kMaxRows) {
        const int64_t rows = std::min(kMaxRows, mr - a);
        if (lb)
            lowbit_sums(j, *lb, xq + 2 * a * j.ldq, 2 * rows, nr, t.f, 8);
        else
            j.k->mm_q8(xq + 2 * a * j.ldq, j.ldq, 2 * rows, reinterpret_cast<const int8_t *>(wr), wrow, w.cols, nr, t.i, 8);
        for (int64_t m = 0; m < rows; ++m)
            for (int r = 0; r < nr; ++r) {
                float *o = y + (a + m) * ldy + r;
                if (lb)
                    *o = 256.0f * t.f[2 * m * 8 + r] + t.f[(2 * m + 1) * 8 + r];
                else
                    *o = static_cast<float>(256 * int64_t(t.i[2 * m * 8 + r]) + t.i[(2 * m + 1) * 8 + r]);
            }
    }
}

// W8A8 / W4A8 (and int16 activations): output channels [p0, p1) of rows [m0, m0 + mr), eight channels per
// kernel call; then the scales, y = (float)isum * sx * s for int8 weights and y = sum * sx for int4 (whose
// group scales the kernel applied), and the bias.
void matmul_channels_q(const MatmulJob &j, int64_t p0, int64_t p1, int64_t m0, int64_t mr) {
    const pgd_tensor &w = *j.w;
    const int64_t K = w.cols, ldy = j.y->stride;
    float *y = static_cast<float *>(j.y->data) + m0 * ldy;
    const int8_t *xq = j.xq + m0 * j.ldq;
    const bool i4 = w.dtype == PGD_I4;
    const int64_t wrow = i4 ? w.stride / 2 : w.stride, lds = i4 ? K / w.group_size : 0;
    for (int64_t n = p0; n < p1; n += 8) {
        const int nr = static_cast<int>(p1 - n < 8 ? p1 - n : 8);
        const uint8_t *wr = static_cast<const uint8_t *>(w.data) + n * wrow;
        const LowbitRows lb{wr, wrow, 4, i4 ? w.scale + n * lds : nullptr, w.zero ? w.zero + n * lds : nullptr, lds};
        if (j.digits)
            channels_i16(j, wr, wrow, i4 ? &lb : nullptr, nr, m0, mr, y + n, ldy);
        else if (i4)
            lowbit_sums(j, lb, xq, mr, nr, y + n, ldy);
        else
            j.k->mm_q8(xq, j.ldq, mr, reinterpret_cast<const int8_t *>(wr), wrow, K, nr,
                       reinterpret_cast<int32_t *>(y + n), ldy);
    }
    for (int64_t m = 0; m < mr; ++m) {
        float *yr = y + m * ldy;
        const float sx = j.xs[m0 + m];
        if (i4) {
            for (int64_t n = p0; n < p1; ++n) yr[n] *= sx;
        } else if (j.digits) {  // channels_i16 left the combined sums as floats
            for (int64_t n = p0; n < p1; ++n) yr[n] = yr[n] * sx * w.scale[n];
        } else {
            const int32_t *iy = reinterpret_cast<const int32_t *>(yr);
            for (int64_t n = p0; n < p1; ++n) yr[n] = static_cast<float>(iy[n]) * sx * w.scale[n];
        }
        if (j.bias)
            for (int64_t n = p0; n < p1; ++n) yr[n] += j.bias[n];
    }
}

// PGD_QB: stored rows [p0, p1) of rows [m0, m0 + mr), up to eight rows of one width per kernel call into a
// block of sums, each then scaled by x's row scale, given its bias and written to its output channel.
void matmul_channels_qb(const MatmulJob &j, int64_t p0, int64_t p1, int64_t m0, int64_t mr) {
    const pgd_tensor &w = *j.w;
    const pgd_qb_layout &L = *w.qb;
    const int64_t lds = w.cols / w.group_size, ldy = j.y->stride;
    float *y = static_cast<float *>(j.y->data) + m0 * ldy;
    float t[6 * 8];  // mr <= 6: matmul_channels' row block
    for (int sgi = 0; sgi < L.n_segments; ++sgi) {
        const pgd_qb_segment &sg = L.seg[sgi];
        const int64_t ldw = w.cols * sg.bits / 8;
        for (int64_t n = std::max(p0, sg.row0); n < std::min(p1, sg.row0 + sg.rows); n += 8) {
            const int nr = static_cast<int>(std::min<int64_t>({8, p1 - n, sg.row0 + sg.rows - n}));
            const LowbitRows lb{static_cast<const uint8_t *>(w.data) + sg.offset + (n - sg.row0) * ldw, ldw, sg.bits,
                                w.scale + n * lds, w.zero ? w.zero + n * lds : nullptr, lds};
            if (j.digits) channels_i16(j, nullptr, 0, &lb, nr, m0, mr, t, 8);
            else lowbit_sums(j, lb, j.xq + m0 * j.ldq, mr, nr, t, 8);
            for (int64_t m = 0; m < mr; ++m)
                for (int r = 0; r < nr; ++r) {
                    const int32_t o = L.row_order[n + r];
                    y[m * ldy + o] = t[m * 8 + r] * j.xs[m0 + m] + (j.bias ? j.bias[o] : 0.0f);
                }
        }
    }
}

// Output channels [n0, n1) for every row of x.
void matmul_channels(const MatmulJob &j, int64_t n0, int64_t n1) {
    const int64_t K = j.w->cols, M = j.x->rows;
    const size_t esz = j.w->dtype == PGD_F32 ? 4 : j.w->dtype == PGD_I8 ? 1 : 2;
    const float *scale = j.w->dtype == PGD_I8 ? j.w->scale : nullptr;
    const uint8_t *wbase = static_cast<const uint8_t *>(j.w->data);
    const float *x = static_cast<const float *>(j.x->data);
    float *y = static_cast<float *>(j.y->data);
    // Eight output channels at a time against the input rows: each weight row is read from memory once per
    // call and reused from registers and cache by all rows (prefill, draft verification). With more rows
    // than one register block, the weights go in panels of kPanel channels (a few tens of KiB, kept in L2)
    // and the rows in blocks of kRows (kept in L1 while they sweep the panel), so that neither the rows nor
    // the weights stream from L2 once per eight channels. Every output element still sees the kernel's one
    // sequence of operations, whatever the blocking.
    constexpr int64_t kPanel = 64, kRows = 6;
    const int64_t panel = M > kRows ? kPanel : n1 - n0, rows = M > kRows ? kRows : M;
    for (int64_t p0 = n0; p0 < n1; p0 += panel) {
        const int64_t p1 = std::min(n1, p0 + panel);
        for (int64_t m0 = 0; m0 < M; m0 += rows) {
            const int64_t mr = std::min(rows, M - m0);
            if (j.xq) {
                if (j.w->dtype == PGD_QB) matmul_channels_qb(j, p0, p1, m0, mr);
                else matmul_channels_q(j, p0, p1, m0, mr);
                continue;
            }
            for (int64_t n = p0; n < p1; n += 8) {
                const int nr = static_cast<int>(p1 - n < 8 ? p1 - n : 8);
                const void *wr = wbase + static_cast<size_t>(n * j.w->stride) * esz;
                if (!j.xb) {
                    j.mm(x + m0 * j.x->stride, j.x->stride, mr, wr, j.w->stride, K, nr, y + m0 * j.y->stride + n,
                         j.y->stride);
                    continue;
                }
                // Runs of rows that are all bf16 values, or all not, each with its kernel.
                for (int64_t a = m0, b; a < m0 + mr; a = b) {
                    for (b = a + 1; b < m0 + mr && j.exact[b] == j.exact[a]; ++b) {
                    }
                    float *ya = y + a * j.y->stride + n;
                    if (j.exact[a])
                        j.mm_bx(j.xb + a * j.ldxb, j.ldxb, b - a, wr, j.w->stride, K, nr, ya, j.y->stride);
                    else
                        j.mm(x + a * j.x->stride, j.x->stride, b - a, wr, j.w->stride, K, nr, ya, j.y->stride);
                }
            }
            // W8A16: y = (x . q) * s, the per-channel scale applied once to the finished sum; then the bias.
            // Block by block while the results are in L1: a pass over the whole output afterwards took 16 % of
            // a W8A16 pangu-tiny prefill with 2 threads (perf samples).
            for (int64_t m = m0; m < m0 + mr; ++m) {
                float *yr = y + m * j.y->stride;
                if (scale)
                    for (int64_t n = p0; n < p1; ++n) yr[n] *= scale[n];
                if (j.bias)
                    for (int64_t n = p0; n < p1; ++n) yr[n] += j.bias[n];
            }
        }
    }
}

void matmul_worker(void *p, int chunk, int n_chunks, int) {
    const MatmulJob &j = *static_cast<MatmulJob *>(p);
    int64_t n0, n1;
    split_range(j.w->rows, n_chunks, chunk, 8, &n0, &n1);
    matmul_channels(j, n0, n1);
}

// Chunk c owns range c; after it, the other ranges' remaining pieces, the next range first.
void matmul_decode_worker(void *p, int chunk, int n_chunks, int) {
    const MatmulJob &j = *static_cast<MatmulJob *>(p);
    for (int i = 0; i < n_chunks; ++i) {
        const int r = (chunk + i) % n_chunks;
        int64_t r0, r1;
        split_range(j.w->rows, n_chunks, r, 8, &r0, &r1);
        for (;;) {
            const int64_t n0 = r0 + j.ranges[r].next.fetch_add(1, std::memory_order_relaxed) * kPiece;
            if (n0 >= r1) break;
            matmul_channels(j, n0, std::min(r1, n0 + kPiece));
        }
    }
}

// Rows of x packed as bf16 per pass over the weights, with bf16 dot products; a larger batch is taken in
// passes of this many rows, so that the workspace stays small (the weights are read once per pass, which a
// batch that large, compute-bound, does not notice).
constexpr int64_t kBxRows = 64;

int64_t bx_stride(int64_t K) { return (K + 31) / 32 * 32; }  // bf16 elements: 64-byte rows, pad included

// Integer activations: rows quantized per pass over the weights, as many as kBxRows, ldq = K rounded up to 64.
int64_t q_stride(int64_t K) { return (K + 63) / 64 * 64; }

size_t cpu_matmul_workspace(void *ctx, const pgd_tensor *x, const pgd_tensor *w) {
    if (w->act_dtype == PGD_I8 || w->act_dtype == PGD_I16) {
        // A stored column order takes a second copy of the rows, quantized then gathered.
        const int64_t rows = std::min(x->rows, kBxRows), digits = w->act_dtype == PGD_I16 ? 2 : 1;
        const int64_t copies = w->col_perm ? 2 : 1;
        return static_cast<size_t>(copies * digits * rows * q_stride(x->cols)) + sizeof(float) * static_cast<size_t>(rows);
    }
    if (w->dtype != PGD_I8 || !static_cast<CpuCtx *>(ctx)->k->mm_i8_bx) return 0;
    const int64_t rows = std::min(x->rows, kBxRows);
    return static_cast<size_t>(rows * bx_stride(x->cols)) * sizeof(uint16_t) + static_cast<size_t>(kBxRows);
}

// A low-bit weight the kernels can take: integer activations, and the layout every backend requires.
bool lowbit_ok(const pgd_tensor *w) {
    return (w->act_dtype == PGD_I8 || w->act_dtype == PGD_I16) && pgd_lowbit_layout_ok(w);
}

// Row r of `out` takes row r of `in` in the stored column order: out[c] = in[perm[c]] for c < n (the pad
// after n, zero in `in`, is copied as it is).
void gather_columns(const int8_t *in, int8_t *out, int64_t rows, int64_t ld, const int32_t *perm, int64_t n) {
    for (int64_t r = 0; r < rows; ++r) {
        const int8_t *a = in + r * ld;
        int8_t *b = out + r * ld;
        for (int64_t c = 0; c < n; ++c) b[c] = a[perm[c]];
        std::memcpy(b + n, a + n, static_cast<size_t>(ld - n));
    }
}

int cpu_matmul(void *ctx, pgd_stream *s, const pgd_tensor *x, const pgd_tensor *w, const pgd_tensor *bias,
               pgd_tensor *y, void *ws, size_t ws_size) {
    const kernels::Table *k = static_cast<CpuCtx *>(ctx)->k;
    if (bias && (bias->dtype != PGD_F32 || bias->cols < w->rows)) return PANGU_ERR_SHAPE;
    MatmulJob j{x, w, bias ? static_cast<const float *>(bias->data) : nullptr, y, nullptr, nullptr};
    switch (w->dtype) {
        case PGD_F32: j.mm = k->mm_f32; break;
        case PGD_BF16: j.mm = k->mm_bf16; break;
        case PGD_F16: j.mm = k->mm_f16; break;
        case PGD_I8:
            if (!w->scale || w->group_size != 0) return PANGU_ERR_UNSUPPORTED;
            j.mm = k->mm_i8;
            break;
        case PGD_I4:
        case PGD_QB:
            if (!lowbit_ok(w)) return PANGU_ERR_UNSUPPORTED;
            break;
        default: return PANGU_ERR_DTYPE;
    }
    const bool int_act = w->act_dtype == PGD_I8 || w->act_dtype == PGD_I16;
    if (w->act_dtype != PGD_F32 && (!int_act || w->dtype == PGD_F32 || w->dtype == PGD_F16 || w->dtype == PGD_BF16))
        return PANGU_ERR_UNSUPPORTED;
    if (w->col_perm && w->dtype != PGD_I4 && w->dtype != PGD_QB) return PANGU_ERR_UNSUPPORTED;
    if (x->cols != w->cols || y->cols < w->rows || y->rows < x->rows) return PANGU_ERR_SHAPE;
    if (int_act || (w->dtype == PGD_I8 && k->mm_i8_bx)) {
        if (!ws || ws_size < cpu_matmul_workspace(ctx, x, w)) return PANGU_ERR_BUFFER_TOO_SMALL;
        if (x->rows > kBxRows) {  // in passes of kBxRows rows
            for (int64_t m0 = 0; m0 < x->rows; m0 += kBxRows) {
                pgd_tensor xp = *x, yp = *y;
                xp.rows = yp.rows = std::min(kBxRows, x->rows - m0);
                xp.data = static_cast<float *>(x->data) + m0 * x->stride;
                yp.data = static_cast<float *>(y->data) + m0 * y->stride;
                if (const int rc = cpu_matmul(ctx, s, &xp, w, bias, &yp, ws, ws_size)) return rc;
            }
            return 0;
        }
        if (int_act) {  // quantized once here, read by every thread
            j.ldq = q_stride(x->cols);
            j.digits = w->act_dtype == PGD_I16;
            int8_t *xq = static_cast<int8_t *>(ws);
            const int64_t qrows = (j.digits ? 2 : 1) * x->rows;
            float *xs = reinterpret_cast<float *>(xq + (w->col_perm ? 2 : 1) * qrows * j.ldq);
            const float *xf = static_cast<const float *>(x->data);
            int8_t *xq_in = w->col_perm ? xq + qrows * j.ldq : xq;  // quantized here, then gathered into xq
            if (j.digits) kernels::quant_rows16(xf, x->stride, x->rows, x->cols, xq_in, j.ldq, xs);
            else k->quant_rows(xf, x->stride, x->rows, x->cols, xq_in, j.ldq, xs);
            if (w->col_perm) gather_columns(xq_in, xq, qrows, j.ldq, w->col_perm, x->cols);
            j.xq = xq, j.xs = xs, j.k = k;
        } else {
            j.ldxb = bx_stride(x->cols);
            uint16_t *xb = static_cast<uint16_t *>(ws);
            uint8_t *exact = reinterpret_cast<uint8_t *>(xb + x->rows * j.ldxb);
            k->pack_bx(static_cast<const float *>(x->data), x->stride, x->rows, x->cols, xb, j.ldxb, exact);
            j.xb = xb;
            j.exact = exact;
            j.mm_bx = k->mm_i8_bx;
        }
    }
    const int64_t units = (w->rows + 7) / 8;
    if (x->rows == 1 && s->pool.size() > 1) {
        // Decode: one range per thread keeps one weight stream per thread (a few chunks each restarted the
        // streams and prefetchers: 77.0 % of the bandwidth floor against 80.3 % on the 1B shape, 2 threads);
        // claiming it in pieces lets the first thread done help the other instead of waiting (time spent
        // spinning at the operator's end, perf samples of a 2-thread 1B W8A16 decode: 10.5 % -> 3.7 %).
        PieceCounter ranges[kMaxRanges];
        j.ranges = ranges;
        const int n = static_cast<int>(std::min<int64_t>({units, s->pool.size(), kMaxRanges}));
        s->pool.run(matmul_decode_worker, &j, n);
        return 0;
    }
    s->pool.run(matmul_worker, &j, s->pool.chunks_for(units));
    return 0;
}

// ---- rope ----
int cpu_rope(void *, pgd_stream *s, pgd_tensor *x, const int32_t *pos, int32_t n_heads, int32_t hd,
             const float *cos_sin) {
    for_rows(s, x->rows, [&](int64_t r0, int64_t r1) {
        rope_rows(x, pos, n_heads, hd, cos_sin, r0, r1, [](float v) { return v; });
    });
    return 0;
}

// ---- attention ----
int cpu_kv_store(void *, pgd_stream *, const pgd_tensor *src, pgd_tensor *cache, int64_t row0) {
    if (!src || !cache) return PANGU_ERR_INVALID_ARGUMENT;
    return kv_store_host(*src, *cache, row0);
}

int cpu_attention(void *ctx, pgd_stream *s, const pgd_tensor *q, const pgd_tensor *kc, const pgd_tensor *vc,
                  int64_t pos0, int32_t n_head, int32_t n_head_kv, int32_t hd, float scale, pgd_tensor *out,
                  void *, size_t) {
    const AttnProblem a{static_cast<CpuCtx *>(ctx)->k, q, kc, vc, out, pos0, n_head, n_head_kv, hd, scale, nullptr};
    return attention_run(a, s->pool, nullptr);
}

// ---- elementwise ----
int cpu_swiglu(void *ctx, pgd_stream *s, pgd_tensor *g, const pgd_tensor *u) {
    const kernels::Table *k = static_cast<CpuCtx *>(ctx)->k;
    for_rows(s, g->rows, [&](int64_t r0, int64_t r1) {
        for (int64_t m = r0; m < r1; ++m) k->swiglu(rowf(g, m), rowf(u, m), g->cols);
    });
    return 0;
}

int cpu_round(void *, pgd_stream *s, pgd_tensor *x, int32_t dtype) {
    if (dtype != PGD_BF16 && dtype != PGD_F16) return PANGU_ERR_UNSUPPORTED;
    for_rows(s, x->rows, [&](int64_t r0, int64_t r1) {
        for (int64_t m = r0; m < r1; ++m) {
            float *r = rowf(x, m);
            if (dtype == PGD_BF16)
                for (int64_t i = 0; i < x->cols; ++i) r[i] = bf16_to_f32(f32_to_bf16(r[i]));
            else
                for (int64_t i = 0; i < x->cols; ++i) r[i] = f16_to_f32(f32_to_f16(r[i]));
        }
    });
    return 0;
}

int cpu_add(void *, pgd_stream *s, pgd_tensor *x, const pgd_tensor *y) {
    for_rows(s, x->rows, [&](int64_t r0, int64_t r1) {
        for (int64_t m = r0; m < r1; ++m) {
            float *xr = rowf(x, m);
            const float *yr = rowf(y, m);
            for (int64_t i = 0; i < x->cols; ++i) xr[i] += yr[i];
        }
    });
    return 0;
}

void cpu_destroy(pgd_device *dev) {
    delete static_cast<CpuCtx *>(dev->ctx);
    delete dev;
}

}  // namespace
}  // namespace pangu

namespace {

pgd_device *cpu_create(const pgd_device_options *, int *status, char *err, size_t err_size) {
    using namespace pangu;
    if (err && err_size) err[0] = '\0';
    *status = PANGU_ERR_OUT_OF_MEMORY;  // the only way it fails
    CpuCtx *ctx = new (std::nothrow) CpuCtx{&kernels::best()};
    pgd_device *d = new (std::nothrow) pgd_device();
    if (!ctx || !d) {
        delete ctx;
        delete d;
        return nullptr;
    }
    d->api_version = PGD_API_VERSION;
    d->name = "cpu";
    d->ctx = ctx;
    d->destroy = cpu_destroy;
    d->mem_alloc = cpu_mem_alloc;
    d->mem_free = cpu_mem_free;
    d->mem_info = cpu_mem_info;
    d->memcpy = cpu_memcpy;
    d->memcpy2d = cpu_memcpy2d;
    d->mem_alignment = kAlign;
    d->host_visible = 1;
    d->weight_upload = nullptr;  // unified memory: weights are used where they are mapped
    d->weight_release = nullptr;
    d->stream_create = cpu_stream_create;
    d->stream_destroy = cpu_stream_destroy;
    d->stream_sync = cpu_stream_sync;
    d->embed = cpu_embed;
    d->rms_norm = cpu_rms_norm;
    d->matmul_workspace = cpu_matmul_workspace;
    d->matmul = cpu_matmul;
    d->rope = cpu_rope;
    d->attention_workspace = nullptr;  // attention needs no workspace (attention.h)
    d->attention = cpu_attention;
    d->kv_dtypes = (1u << PGD_F32) | (1u << PGD_F16) | (1u << PGD_BF16) | (1u << PGD_I8);
    d->kv_store = cpu_kv_store;
    d->swiglu = cpu_swiglu;
    d->round = cpu_round;
    d->add = cpu_add;
    *status = 0;
    return d;
}

}  // namespace

extern "C" const pgd_backend_reg *pgd_backend_cpu(void) {
    static const pgd_backend_reg reg = {PGD_API_VERSION, "cpu", "the host CPU (AVX2 / AVX-512 / NEON kernels)",
                                        PGD_CAP_HOST_VISIBLE | PGD_CAP_INT16_ACT, cpu_create};
    return &reg;
}
