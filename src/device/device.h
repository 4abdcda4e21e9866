// The device interface: every computation of the forward pass goes through this table of function
// pointers, shaped after AscendCL so that a real CANN backend can implement it slot by slot
// (docs/porting-310p.md maps each slot to its acl/aclnn call). Backends live in their own folders under
// src/device/ and register themselves by name (pgd_backend_reg, device/registry.cpp): cpu/ and npusim/ (an
// emulated 310P). Plain C types only, so a backend can be written in C.
//
// Conventions
//  - Every slot returns 0 on success or a pangu_status on failure, and never throws.
//  - Operators are two-phase, like aclnnXxxGetWorkspaceSize + aclnnXxx: `*_workspace` reports the scratch
//    bytes an operator needs for the given shapes (the session sums the maxima into its static arena), the
//    operator itself then runs on a stream with that workspace. A NULL `*_workspace` slot means "needs none".
//  - Tensors are 2-D row-major views (`pgd_tensor`). Activations are F32 on the CPU backend.
//  - Memory: a backend whose buffers the host may not touch (host_visible = 0, a discrete NPU) gets every
//    input by an explicit copy on a stream (token ids, positions, tables) and gives results back the same way;
//    the session never dereferences device memory. On a host-visible backend the copies are plain memcpy.
//  - Batch invariance: a row's result must not depend on how many rows are in the call (fixed reduction
//    order per row). Speculative decoding relies on it to reproduce plain decoding bit for bit.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 2: pgd_tensor.block_rows/block_stride (blocked KV caches); attention_workspace takes n_head_kv.
 * 3: backends registered by name (pgd_backend_reg); host_visible; copies take a stream; norm weights and
 *    biases are tensors; embed and rope read ids and positions from device memory.
 * 4: integer activations: pgd_tensor.act_dtype on weights (PGD_I8: the matmul quantizes each row of x to int8
 *    with a dynamic scale, W8A8 / W4A8); PGD_I4 weights (packed, group scales).
 * 5: low-bit weights: PGD_QB (2, 3, 4, 6 or 8 bits per output channel, pgd_qb_layout), per-group zero points
 *    (pgd_tensor.zero) and stored column orders (pgd_tensor.col_perm, GPTQ's act-order).
 * 6: KV caches of F16, BF16 and I8 elements (pgd_device.kv_dtypes, kv_store; an I8 cache holds one F32 scale
 *    per row and group of group_size columns, see pgd_kv_scale), head-major blocks (pgd_tensor.head_cols);
 *    attention_workspace may be NULL. */
#define PGD_API_VERSION 6

/* PGD_I4: 4-bit weights, two per byte. In every run of 64 columns of a row (32 bytes), byte j holds column j in
 * its low nibble and column j + 32 in its high nibble, so that unpacking a run gives its columns in order to
 * 16- and 32-byte vectors alike. A nibble v is the weight (v - 8) * scale of its group: `scale` holds
 * cols / group_size floats per row, and group_size is a multiple of 32 that divides cols, itself a multiple
 * of 64. `stride` counts elements (bytes * 2). */
typedef enum pgd_dtype { PGD_F32 = 0, PGD_F16 = 1, PGD_BF16 = 2, PGD_I8 = 3, PGD_I4 = 4, PGD_I16 = 6, PGD_QB = 7 } pgd_dtype;

/* PGD_QB: low-bit weights whose output channels (rows) each have a width of 2, 3, 4, 6 or 8 bits, the rows of
 * one width stored together (mixed precision). A row of b bits takes cols * b / 8 bytes: per run of 64 columns,
 * 8 * b bytes of bit planes, lowest bits first, each plane laid out so that unpacking gives the run's columns
 * in order to vectors of any width:
 *   8-bit plane (64 bytes): byte j is column j;
 *   4-bit plane (32 bytes): byte j holds column j (bits 0-3) and column j + 32 (bits 4-7), PGD_I4's layout;
 *   2-bit plane (16 bytes): byte j holds column j + 16 i in bits 2i, 2i + 1 (i = 0..3);
 *   1-bit plane (8 bytes):  bit i of byte j is column 8 j + i (the 64-bit little-endian word's bit c).
 * Widths: 2 = [2], 3 = [2][1] (bit 2 in the 1-bit plane), 4 = [4], 6 = [4][2] (bits 4-5), 8 = [8].
 * A level u in [0, 2^b) is the weight (u - z) * s, with s and z those of its group (group_size columns along
 * the row): `scale` [rows, cols / group_size] floats and `zero` [rows, cols / group_size] bytes (NULL: z =
 * 2^(b - 1)) in stored row order; 8-bit rows have z = 128. Stored row i is output channel
 * layout->row_order[i]. */
#define PGD_QB_MAX_SEGMENTS 5
typedef struct pgd_qb_segment {
    int32_t bits;    /* 2, 3, 4, 6 or 8 */
    int64_t row0;    /* first stored row */
    int64_t rows;    /* rows of this width */
    int64_t offset;  /* bytes from the tensor's data to the segment's first row */
} pgd_qb_segment;
typedef struct pgd_qb_layout {
    int32_t n_segments;                       /* widths present, in increasing order */
    pgd_qb_segment seg[PGD_QB_MAX_SEGMENTS];
    const int32_t *row_order;                 /* [rows]: output channel of each stored row (a permutation) */
} pgd_qb_layout;

/* Level of column k of a PGD_QB row of `bits` bits (the rule above, for reference code and uploads). */
static inline int pgd_qb_level(const uint8_t *row, int bits, int64_t k) {
    /* Each width reads only its own planes: a 2-bit run is 16 bytes, so its 4-bit reading would leave it. */
    const uint8_t *run = row + (k / 64) * 8 * bits;
    const int c = (int)(k % 64);
#define PGD_QB_LO4 ((run[c % 32] >> (4 * (c / 32))) & 15)
#define PGD_QB_LO2 ((run[c % 16] >> (2 * (c / 16))) & 3)
    switch (bits) {
        case 8: return run[c];
        case 4: return PGD_QB_LO4;
        case 2: return PGD_QB_LO2;
        case 3: return PGD_QB_LO2 | (((run[16 + c / 8] >> (c % 8)) & 1) << 2);
        case 6: return PGD_QB_LO4 | (((run[32 + c % 16] >> (2 * (c / 16))) & 3) << 4);
        default: return 0;
    }
#undef PGD_QB_LO4
#undef PGD_QB_LO2
}

typedef struct pgd_tensor {
    void *data;          /* device memory */
    int32_t dtype;       /* pgd_dtype */
    int64_t rows;
    int64_t cols;
    int64_t stride;      /* elements between consecutive rows (>= cols) */
    const float *scale;  /* PGD_I8 weights: dequantization scales, one per row; PGD_I4: one per group */
    int32_t group_size;  /* 0 = one scale per row; else one per group of this many columns */
    /* Blocked rows (KV caches): 0 = row r at data + r * stride. Otherwise rows come in blocks of
     * `block_rows`: row r at data + (r / block_rows) * block_stride + (r % block_rows) * stride elements. */
    int64_t block_rows;
    int64_t block_stride;
    /* Weights (API 4): how the matmul takes its input rows. 0 (PGD_F32): as they are, F32 values (which the
     * round slot may have rounded to 16 bits). PGD_I8: each row of x is quantized to int8 with its own scale,
     * amax / 127 (a row of zeros: scale 0), the products summed exactly in int32 and the scales applied to the
     * sum (W8A8, W4A8; aclnnDynamicQuant + aclnnQuantMatmul on a 310P). PGD_I16: the same with int16, scale
     * amax / 32639, each value split into two int8 digits hi * 256 + lo (an integer form of 16-bit
     * activations for CPUs whose integer dot products outrun their bf16 ones). Integer weights only. */
    int32_t act_dtype;
    /* Low-bit weights (API 5). zero: PGD_I4 and PGD_QB, one zero point per group laid out as `scale` (NULL:
     * 8 for PGD_I4, 2^(b - 1) for PGD_QB), a PGD_I4 nibble v then being the weight (v - zero) * scale.
     * col_perm: NULL, or [cols] entries: stored column c multiplies input column col_perm[c] (the matmul
     * gathers x's columns in that order first; GPTQ's act-order quantizes columns in that order and groups
     * them as stored). qb: PGD_QB's layout. */
    const uint8_t *zero;
    const int32_t *col_perm;
    const pgd_qb_layout *qb;
    /* KV caches (API 6): 0 = a row's columns side by side (pgd_row_offset). Otherwise the columns come in heads
     * of head_cols, and each block (all rows when unblocked) holds its rows head by head: head h's rows of a
     * block are one contiguous run of block_rows x head_cols elements, so attention reads a KV head's tile as
     * one stream. `stride` is then unused; see pgd_kv_elem_offset. */
    int64_t head_cols;
} pgd_tensor;

/* Element offset of row r of t. */
static inline int64_t pgd_row_offset(const pgd_tensor *t, int64_t r) {
    if (t->block_rows <= 0) return r * t->stride;
    return (r / t->block_rows) * t->block_stride + (r % t->block_rows) * t->stride;
}

/* An I8 KV cache (API 6): each half-block of block_rows rows holds the rows' int8 elements, then their scales,
 * block_rows x (cols / group_size) floats; element (r, c) is data[r, c] * scale of (r, c / group_size), and
 * `scale` points at the scales of block 0 (block_stride elements, i.e. bytes, apart from block to block). An
 * unblocked one (block_rows 0) has rows x (cols / group_size) floats at `scale`, as if one block. */
static inline const float *pgd_kv_scale(const pgd_tensor *t, int64_t r) {
    const int64_t ng = t->cols / t->group_size;
    if (t->block_rows <= 0) return t->scale + r * ng;
    return t->scale + (r / t->block_rows) * (t->block_stride / 4) + (r % t->block_rows) * ng;
}

/* Bytes of one element of a KV cache of this dtype (F32, F16, BF16 or I8). */
static inline size_t pgd_kv_elem_bytes(int32_t dtype) { return dtype == PGD_F32 ? 4 : dtype == PGD_I8 ? 1 : 2; }

/* Element offset of column c of row r of a KV cache, head-major or not (head_cols). */
static inline int64_t pgd_kv_elem_offset(const pgd_tensor *t, int64_t r, int64_t c) {
    if (t->head_cols <= 0) return pgd_row_offset(t, r) + c;
    const int64_t P = t->block_rows > 0 ? t->block_rows : t->rows, h = c / t->head_cols;
    return (r / P) * t->block_stride + (h * P + r % P) * t->head_cols + c % t->head_cols;
}

/* Elements between rows r and r + 1 of one head within a block: head_cols when head-major, else stride. */
static inline int64_t pgd_kv_row_step(const pgd_tensor *t) { return t->head_cols > 0 ? t->head_cols : t->stride; }

/* Rows [r, r + n) of a blocked tensor that lie in one block: how many of the n, starting at r. */
static inline int64_t pgd_rows_in_block(const pgd_tensor *t, int64_t r, int64_t n) {
    if (t->block_rows <= 0) return n;
    const int64_t left = t->block_rows - r % t->block_rows;
    return n < left ? n : left;
}

typedef enum pgd_memcpy_kind {
    PGD_HOST_TO_DEVICE = 0,
    PGD_DEVICE_TO_HOST = 1,
    PGD_DEVICE_TO_DEVICE = 2,
    PGD_HOST_TO_HOST = 3
} pgd_memcpy_kind;

typedef struct pgd_stream pgd_stream; /* an in-order execution queue owned by the backend */

/* Per-stream accounting, for backends that keep it (optional slot stream_stats): what a real device reports
 * through events (time), its copy engine (bytes) and its overflow status (saturations). */
typedef struct pgd_stream_stats {
    double est_ms;                 /* device time of the operators run on the stream (npu-sim: estimated) */
    uint64_t host_to_device_bytes; /* copies into device memory */
    uint64_t device_to_host_bytes; /* copies out of it */
    uint64_t n_ops;                /* operators run */
    uint64_t saturated;            /* values beyond the device's number format (fp16 on a 310P), saturated */
} pgd_stream_stats;

/* Options for creating a device by name. */
typedef struct pgd_device_options {
    size_t memory_budget;        /* bytes of device memory; 0 = the backend's default */
    const char *profile_path;    /* backend-specific profile (npu-sim: latency-model JSON); NULL = built in */
} pgd_device_options;

typedef struct pgd_device pgd_device;
struct pgd_device {
    uint32_t api_version; /* PGD_API_VERSION the backend was written against */
    const char *name;     /* "cpu", "npu-sim", ... */
    void *ctx;            /* backend state, passed back to every slot */

    void (*destroy)(pgd_device *dev);

    /* ---- memory (aclrtMalloc / aclrtFree / aclrtGetMemInfo / aclrtMemcpy) ---- */
    int (*mem_alloc)(void *ctx, void **ptr, size_t size);
    void (*mem_free)(void *ctx, void *ptr);
    int (*mem_info)(void *ctx, size_t *free_bytes, size_t *total_bytes);
    /* Copies in the order of stream `s` (aclrtMemcpyAsync), which they are charged to; a host buffer must
     * stay valid until the stream is synchronized. s may be NULL: a synchronous copy charged to no stream. */
    int (*memcpy)(void *ctx, pgd_stream *s, void *dst, size_t dst_max, const void *src, size_t count, int kind);
    /* 2-D copy (aclrtMemcpy2dAsync): `height` rows of `width` bytes, rows `spitch` apart in src and `dpitch`
     * apart in dst. */
    int (*memcpy2d)(void *ctx, pgd_stream *s, void *dst, size_t dpitch, const void *src, size_t spitch,
                    size_t width, size_t height, int kind);
    size_t mem_alignment; /* alignment of device buffers, bytes */
    /* 1: the host may read and write device buffers (cpu); 0: it may not (a discrete NPU: aclrtMalloc memory),
     * and sessions keep their device buffers apart from the caller's host arena. */
    int host_visible;

    /* Makes a host weight usable by operators. NULL slot: host memory is device memory (unified), the
     * operators read the memory-mapped weight in place. Otherwise `*dev_w` receives a device copy in the
     * backend's preferred layout, released with weight_release. */
    int (*weight_upload)(void *ctx, const pgd_tensor *host_w, pgd_tensor *dev_w);
    void (*weight_release)(void *ctx, pgd_tensor *dev_w);

    /* ---- streams (aclrtCreateStream / aclrtSynchronizeStream) ---- */
    /* n_threads: host threads the stream may use (CPU backends). */
    int (*stream_create)(void *ctx, int n_threads, pgd_stream **out);
    void (*stream_destroy)(void *ctx, pgd_stream *stream);
    int (*stream_sync)(void *ctx, pgd_stream *stream);

    /* ---- operators ---- */
    /* out[m,:] = table[ids[m],:] (dequantized to F32); ids [n] in device memory. */
    int (*embed)(void *ctx, pgd_stream *s, const int32_t *ids, int64_t n, const pgd_tensor *table,
                 pgd_tensor *out);
    /* out = x * rsqrt(mean(x^2) + eps) * w, per row; w is an F32 vector [1, cols] (weight_upload'ed on a device
     * that uploads). out may alias x. */
    int (*rms_norm)(void *ctx, pgd_stream *s, const pgd_tensor *x, const pgd_tensor *w, float eps,
                    pgd_tensor *out);
    /* y[M,N] = x[M,K] . W[N,K]^T (+ bias[N]). W may be F32, F16, BF16 or I8 with scales (the
     * aclnnWeightQuantBatchMatmulV2 semantics: y = x @ (W * scale)^T + bias), or I4 with group scales.
     * With W->act_dtype == PGD_I8 the rows of x are quantized first (see pgd_tensor.act_dtype):
     *   I8 weights: y[m][n] = (float)sum_k(xq[m][k] * q[n][k]) * sx[m] * s[n] + bias[n]
     *   I4 weights: y[m][n] = sum_g(s[n][g] * (float)sum_{k in g}(xq[m][k] * (v[n][k] - 8))) * sx[m] + bias[n]
     * With PGD_I16, xq = 256 * hi + lo and the two digits' sums are combined before the scales (I8 weights:
     * exactly, in 64 bits; I4: y = 256 * y_hi + y_lo in fp32).
     * (the inner sums exact in int32; a backend may add the groups in its own fixed order). With float
     * activations, I4 and QB weights are dequantized by groups, y = x_g @ ((v - zero) * scale)^T + bias, x_g
     * being x's columns in the stored order (col_perm) for any act_dtype. A backend that cannot run a
     * combination returns PANGU_ERR_UNSUPPORTED (the CPU has I4 and QB with integer activations only; npu-sim,
     * PGD_CAP_LOWBIT_FLOAT_ACT, has them with float ones as well, and no PGD_I16). */
    size_t (*matmul_workspace)(void *ctx, const pgd_tensor *x, const pgd_tensor *w);
    int (*matmul)(void *ctx, pgd_stream *s, const pgd_tensor *x, const pgd_tensor *w, const pgd_tensor *bias,
                  pgd_tensor *y, void *ws, size_t ws_size);
    /* NeoX rotary embedding in place on x[M, n_heads*head_dim]: row m has position pos[m]; cos_sin is a
     * table of [n_ctx, head_dim] floats: head_dim/2 cosines then head_dim/2 sines per position. pos and
     * cos_sin are in device memory. */
    int (*rope)(void *ctx, pgd_stream *s, pgd_tensor *x, const int32_t *pos, int32_t n_heads, int32_t head_dim,
                const float *cos_sin);
    /* Causal GQA attention. q[M, n_head*hd]; row m sits at position pos0+m and attends to cache rows
     * 0..pos0+m of k_cache/v_cache [n_ctx, n_head_kv*hd] (which may be blocked); out[M, n_head*hd].
     * attention_workspace is optional (NULL: attention takes no workspace, ws may be NULL). */
    size_t (*attention_workspace)(void *ctx, int64_t n_rows, int32_t n_head, int32_t n_head_kv, int64_t n_ctx,
                                  int n_threads);
    int (*attention)(void *ctx, pgd_stream *s, const pgd_tensor *q, const pgd_tensor *k_cache,
                     const pgd_tensor *v_cache, int64_t pos0, int32_t n_head, int32_t n_head_kv, int32_t head_dim,
                     float scale, pgd_tensor *out, void *ws, size_t ws_size);
    /* gate = silu(gate) * up, elementwise. */
    int (*swiglu)(void *ctx, pgd_stream *s, pgd_tensor *gate, const pgd_tensor *up);
    /* Rounds x in place to the precision of `dtype` (PGD_BF16 or PGD_F16), keeping F32 storage: how
     * 16-bit activations enter the matmuls on a backend that computes in F32. Optional (NULL: not needed,
     * the backend's activations are 16-bit already). */
    int (*round)(void *ctx, pgd_stream *s, pgd_tensor *x, int32_t dtype);
    /* Optional: accounting of a stream (NULL: the backend keeps none). */
    int (*stream_stats)(void *ctx, pgd_stream *s, pgd_stream_stats *out);
    /* x += y, elementwise. */
    int (*add)(void *ctx, pgd_stream *s, pgd_tensor *x, const pgd_tensor *y);
    /* API 6. The element types its KV caches may hold, one bit (1u << dtype) per pgd_dtype; attention reads
     * them and kv_store writes them. A cache type the device lacks is stored as F16 if it has that, else F32. */
    uint32_t kv_dtypes;
    /* API 6. Writes the F32 rows of src [M, cols] to rows row0.. of a (blocked) KV cache, converting them to
     * its dtype (I8: one scale per row and group, amax / 127). Optional for a device whose kv_dtypes is F32
     * only (then a memcpy2d). */
    int (*kv_store)(void *ctx, pgd_stream *s, const pgd_tensor *src, pgd_tensor *cache, int64_t row0);
};

/* ---- the registry of backends (ggml-backend's reg/device split) ---- */

/* What a backend can do, for choosing one without creating it. */
#define PGD_CAP_HOST_VISIBLE 1u   /* its buffers are host memory (see pgd_device.host_visible) */
#define PGD_CAP_UPLOADS_WEIGHTS 2u /* it copies weights into its own memory (weight_upload) */
#define PGD_CAP_DEVICE_CLOCK 4u   /* its streams keep a device clock (stream_stats.est_ms) */
#define PGD_CAP_EMULATED 8u       /* it emulates a device on the host */
#define PGD_CAP_INT16_ACT 16u     /* its matmuls take act_dtype PGD_I16 (int16 activations as int8 digits) */
#define PGD_CAP_LOWBIT_FLOAT_ACT 32u /* its matmuls take PGD_I4 and PGD_QB weights with float activations */

/* One backend: a name, what it can do, and how to make a device of it. A backend folder defines one
 * `const pgd_backend_reg *pgd_backend_<id>(void)`; its backend.cmake adds <id> to the build's list, which
 * registry.cpp turns into the table below. */
typedef struct pgd_backend_reg {
    uint32_t api_version;    /* PGD_API_VERSION the backend was written against */
    const char *name;        /* "cpu", "npu-sim": what pangu_model_params.backend names */
    const char *description;
    uint32_t caps;           /* PGD_CAP_* */
    /* NULL on failure, with the reason as a pangu_status in *status (e.g. PANGU_ERR_CONFIG for an unreadable
     * profile, PANGU_ERR_OUT_OF_MEMORY) and as a message in `err` (at most err_size bytes, NUL-terminated;
     * empty on allocation failure). `opt` may be NULL. */
    pgd_device *(*create)(const pgd_device_options *opt, int *status, char *err, size_t err_size);
} pgd_backend_reg;

/* The backends built into this library, in registration order (cpu first). */
int pgd_backend_count(void);
const pgd_backend_reg *pgd_backend_get(int i);
/* The backend of that name, or NULL. */
const pgd_backend_reg *pgd_backend_find(const char *name);
/* Creates a device of the named backend, as its create does; a name no backend has is PANGU_ERR_UNSUPPORTED
 * with the names there are in the message. `status` may be NULL. */
pgd_device *pgd_device_create(const char *name, const pgd_device_options *opt, int *status, char *err,
                              size_t err_size);

#ifdef __cplusplus
}
#endif
