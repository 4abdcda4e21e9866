#include "device/attention.h"

#include <atomic>

#include <cfloat>
#include <cmath>

#include <algorithm>
#include <cstring>

#include "common/common.h"
#include "common/threadpool.h"
#include "model/tensor.h"

namespace pangu {

namespace {

// Positions per tile: the scores of a tile, then its softmax update and its values, before the next tile is
// read. 64 is the session's KV block, so a tile never straddles two blocks there.
constexpr int64_t kTile = 64;
// Floats of scratch on a task's stack: a pass over the cache holds kTile scores, head_dim accumulators and
// two running values (maximum, normalizer) for each of its heads, at most this many in all.
constexpr int64_t kStackFloats = 8192;
constexpr int32_t kMaxHeadDim = 4096;

kernels::KvElem elem_of(int32_t dtype) {
    return dtype == PGD_F16    ? kernels::kKvF16
           : dtype == PGD_BF16 ? kernels::kKvBF16
           : dtype == PGD_I8   ? kernels::kKvI8
                               : kernels::kKvF32;
}

// Row s of KV head hk of cache c, as stored: its first element, the element stride between rows of the head
// (constant within a block: head_dim for a head-major cache) and, for int8, its scale and the float stride
// between the scales of rows.
struct KvRows {
    const void *p;
    int64_t ld;
    const float *sc;
    int64_t ldsc;
};
KvRows kv_rows(const pgd_tensor &c, int32_t hk, int32_t d, int64_t s) {
    KvRows r{
        static_cast<const uint8_t *>(c.data) + pgd_kv_elem_offset(&c, s, int64_t(hk) * d) * pgd_kv_elem_bytes(c.dtype),
        pgd_kv_row_step(&c), nullptr, 0};
    if (c.dtype == PGD_I8) {
        r.sc = pgd_kv_scale(&c, s) + hk;  // group_size == head_dim: one scale per row and KV head
        r.ldsc = c.cols / c.group_size;
    }
    return r;
}

// Asks for rows [s, s + n) of KV head hk (the next tile) to be brought to L2 while this tile is computed: the
// next tile's run lies in the next block, megabytes away (a block holds every layer's rows), where the
// hardware prefetchers would start cold, and decode reads the whole cache once per step.
void prefetch_tile(const pgd_tensor &c, int32_t hk, int32_t d, int64_t s, int64_t n) {
    const int64_t row_bytes = int64_t(d) * pgd_kv_elem_bytes(c.dtype);
    for (int64_t u = 0; u < n;) {
        const int64_t run = pgd_rows_in_block(&c, s + u, n - u);
        const KvRows r = kv_rows(c, hk, d, s + u);
        const char *p = static_cast<const char *>(r.p);
        const int64_t ld = r.ld * int64_t(pgd_kv_elem_bytes(c.dtype));
        for (int64_t t = 0; t < run; ++t, p += ld)
            for (int64_t b = 0; b < row_bytes; b += 64) __builtin_prefetch(p + b, 0, 2);
        if (r.sc)  // the run's scales, ldsc floats apart
            for (int64_t b = 0; b < run * r.ldsc * 4; b += 64)
                __builtin_prefetch(reinterpret_cast<const char *>(r.sc) + b, 0, 2);
        u += run;
    }
}

// The online softmax of one head over a tile's n scores p (turned into their weights): the running maximum *m
// grows to the tile's if larger, rescaling the running sum *l and the head's d accumulators acc by
// e^(m_old - m_new); then *l += the sum of the weights e^(score - m). Returns round16's saturations.
uint64_t softmax_step(const AttnProblem &a, float *p, int64_t n, float *acc, float *m, float *l) {
    const float tm = a.k->scale_max(p, n, a.scale);
    if (tm > *m) {
        if (*m != -INFINITY) {
            const float c = std::exp(*m - tm);
            *l *= c;
            for (int32_t i = 0; i < a.hd; ++i) acc[i] *= c;
        }
        *m = tm;
    }
    float sum = a.k->exp_sum(p, n, *m);
    uint64_t over = 0;
    if (a.round16) {
        // The emulated NPU rounds the weights to fp16 for its second cube product (in (0, 1]: they never
        // saturate), and sums what it multiplies.
        sum = 0.0f;
        for (int64_t t = 0; t < n; ++t) sum += (p[t] = a.round16(p[t], &over));
    }
    *l += sum;
    return over;
}

// One pass of the flash-attention recurrence: nh query heads (q, d floats each) against positions [0, n_pos)
// of one KV head, a tile at a time. Per head j: scores of the tile, m = max(m, tile max) with the running sum
// l and the accumulators rescaled by e^(m_old - m) when it grows, l += sum of e^(score - m), acc += those
// weights times the value rows; finally out = acc / l. Scratch: buf (nh * (kTile + d + 2) floats).
// Batch invariance: the tiles are fixed by position (multiples of kTile), so a row's arithmetic depends on
// nothing but its own query and positions; a tile that spans two blocks of the cache is read in two runs
// whose scores and value chains are those of one.
uint64_t attend_heads(const AttnProblem &a, int32_t hk, int64_t n_pos, const float *q, int32_t nh, float *out,
                      float *buf) {
    const int32_t d = a.hd;
    const pgd_tensor &kc = *a.kc, &vc = *a.vc;
    const kernels::AttnScoresFn scores = a.k->attn_scores[elem_of(kc.dtype)];
    const kernels::AttnValuesFn values = a.k->attn_values[elem_of(vc.dtype)];
    float *sc = buf, *acc = buf + nh * kTile, *mx = acc + int64_t(nh) * d, *l = mx + nh;
    for (int64_t i = 0; i < int64_t(nh) * d; ++i) acc[i] = 0.0f;
    for (int32_t j = 0; j < nh; ++j) mx[j] = -INFINITY, l[j] = 0.0f;
    uint64_t over = 0;
    for (int64_t s0 = 0; s0 < n_pos;) {
        const int64_t n = std::min(kTile - s0 % kTile, n_pos - s0);
        prefetch_tile(kc, hk, d, s0 + n, std::min(kTile, n_pos - s0 - n));
        prefetch_tile(vc, hk, d, s0 + n, std::min(kTile, n_pos - s0 - n));
        // scores of the tile, a run of rows within one block at a time (int8 keys: times the row's scale)
        for (int64_t u = 0; u < n;) {
            const int64_t run = pgd_rows_in_block(&kc, s0 + u, n - u);
            const KvRows kr = kv_rows(kc, hk, d, s0 + u);
            scores(q, nh, d, kr.p, kr.ld, run, sc + u, kTile);
            if (kr.sc)
                for (int32_t j = 0; j < nh; ++j)
                    for (int64_t t = 0; t < run; ++t) sc[j * kTile + u + t] *= kr.sc[t * kr.ldsc];
            u += run;
        }
        for (int32_t j = 0; j < nh; ++j)
            over += softmax_step(a, sc + j * kTile, n, acc + int64_t(j) * d, &mx[j], &l[j]);
        // values, again a run within one block at a time: a chain of multiply-adds in order of position, so
        // where the blocks break does not change the bits
        for (int64_t u = 0; u < n;) {
            const int64_t run = pgd_rows_in_block(&vc, s0 + u, n - u);
            const KvRows vr = kv_rows(vc, hk, d, s0 + u);
            values(sc + u, kTile, nh, vr.p, vr.ld, vr.sc, vr.ldsc, run, d, acc, d);
            u += run;
        }
        s0 += n;
    }
    for (int32_t j = 0; j < nh; ++j) {
        const float r = 1.0f / l[j];
        for (int32_t i = 0; i < d; ++i) {
            const float o = acc[j * d + i] * r;
            out[j * d + i] = a.round16 ? a.round16(o, &over) : o;
        }
    }
    return over;
}

// Task t: query row t / n_head_kv against KV head t % n_head_kv, its g query heads in passes of as many as
// the stack scratch holds (all of them for every shape of this model family).
uint64_t attention_task(const AttnProblem &a, int64_t t) {
    const int32_t g = a.n_head / a.n_head_kv, d = a.hd;
    const int64_t m = t / a.n_head_kv;
    const int32_t hk = static_cast<int32_t>(t % a.n_head_kv);
    const int64_t n_pos = a.pos0 + m + 1;  // causal: positions 0..pos0+m
    // The g query heads of this KV head are adjacent in the row.
    const float *qg = static_cast<const float *>(a.q->data) + m * a.q->stride + int64_t(hk) * g * d;
    float *og = static_cast<float *>(a.out->data) + m * a.out->stride + int64_t(hk) * g * d;
    alignas(64) float buf[kStackFloats];
    const int32_t per_pass = static_cast<int32_t>(std::max<int64_t>(1, kStackFloats / (kTile + d + 2)));
    uint64_t over = 0;
    for (int32_t h = 0; h < g; h += per_pass)
        over += attend_heads(a, hk, n_pos, qg + int64_t(h) * d, std::min(per_pass, g - h), og + int64_t(h) * d, buf);
    return over;
}

}  // namespace

namespace {

// One group of n values of x as int8 elements q and a scale: amax / 127; as kernels.h's row_quant_scale, a
// group of zeros, or one too small for 1 / s to be finite, is zeros with scale 0, and one holding NaN or Inf is
// zeros with scale NaN, read back as NaN like a float cache's (x * inf and NaN would otherwise clamp to +-127:
// a 0 stored as amax, a NaN lost).
float store_i8_group(const float *x, int64_t n, int8_t *q) {
    float amax = 0.0f;
    bool finite = true;
    for (int64_t i = 0; i < n; ++i) {
        finite = finite && std::isfinite(x[i]);
        amax = std::max(amax, std::fabs(x[i]));
    }
    float s = finite ? amax / 127.0f : NAN;
    float inv = finite && s > 0.0f ? 1.0f / s : 0.0f;
    if (!(inv <= FLT_MAX)) s = 0.0f, inv = 0.0f;
    for (int64_t i = 0; i < n; ++i)
        q[i] = inv == 0.0f ? 0 : static_cast<int8_t>(std::max(-127.0f, std::min(127.0f, std::nearbyint(x[i] * inv))));
    return s;
}

// n values of x in the cache's element type (F32, F16 or BF16) at dst.
void store_run(const float *x, int64_t n, int32_t dtype, uint8_t *dst) {
    if (dtype == PGD_F32) {
        std::memcpy(dst, x, sizeof(float) * n);
        return;
    }
    uint16_t *h = reinterpret_cast<uint16_t *>(dst);
    for (int64_t i = 0; i < n; ++i) h[i] = dtype == PGD_F16 ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
}

}  // namespace

int kv_store_host(const pgd_tensor &src, const pgd_tensor &c, int64_t row0) {
    if (row0 < 0 || row0 + src.rows > c.rows) return PANGU_ERR_CONTEXT_FULL;
    if (c.dtype != PGD_F32 && c.dtype != PGD_F16 && c.dtype != PGD_BF16 && c.dtype != PGD_I8)
        return PANGU_ERR_UNSUPPORTED;
    if (c.dtype == PGD_I8 && (c.group_size <= 0 || c.cols % c.group_size != 0 || !c.scale)) return PANGU_ERR_SHAPE;
    if (c.head_cols < 0 || (c.head_cols > 0 && c.cols % c.head_cols != 0)) return PANGU_ERR_SHAPE;
    if (c.dtype == PGD_I8 && c.head_cols > 0 && c.head_cols % c.group_size != 0) return PANGU_ERR_SHAPE;
    const size_t e = pgd_kv_elem_bytes(c.dtype);
    const int64_t n = c.cols, run = c.head_cols > 0 ? c.head_cols : n;  // contiguous columns in the cache
    uint8_t *base = static_cast<uint8_t *>(c.data);
    for (int64_t r = 0; r < src.rows; ++r) {
        const float *x = static_cast<const float *>(src.data) + r * src.stride;
        for (int64_t c0 = 0; c0 < n; c0 += run) {
            uint8_t *dst = base + pgd_kv_elem_offset(&c, row0 + r, c0) * e;
            if (c.dtype != PGD_I8) {
                store_run(x + c0, run, c.dtype, dst);
                continue;
            }
            float *scales = const_cast<float *>(pgd_kv_scale(&c, row0 + r));
            for (int64_t g0 = c0; g0 < c0 + run; g0 += c.group_size)
                scales[g0 / c.group_size] =
                    store_i8_group(x + g0, c.group_size, reinterpret_cast<int8_t *>(dst) + (g0 - c0));
        }
    }
    return 0;
}

int attention_check(const AttnProblem &a) {
    if (a.n_head_kv <= 0 || a.n_head % a.n_head_kv != 0) return PANGU_ERR_SHAPE;
    if (a.kc->dtype != a.vc->dtype) return PANGU_ERR_SHAPE;
    const int32_t t = a.kc->dtype;
    if (a.hd <= 0 || a.hd > kMaxHeadDim) return PANGU_ERR_UNSUPPORTED;
    if (t != PGD_F32 && t != PGD_F16 && t != PGD_BF16 && t != PGD_I8) return PANGU_ERR_UNSUPPORTED;
    for (const pgd_tensor *c : {a.kc, a.vc})  // a head-major cache's heads are the attention's KV heads
        if (c->head_cols != 0 && c->head_cols != a.hd) return PANGU_ERR_UNSUPPORTED;
    if (t == PGD_I8)  // attention folds one scale per row and KV head
        for (const pgd_tensor *c : {a.kc, a.vc})
            if (!c->scale || c->group_size != a.hd) return PANGU_ERR_UNSUPPORTED;
    if (a.pos0 < 0 || a.pos0 + a.q->rows > a.kc->rows) return PANGU_ERR_CONTEXT_FULL;
    return 0;
}

uint64_t attention_chunk(const AttnProblem &a, int chunk, int n_chunks) {
    int64_t t0, t1;
    split_range(a.q->rows * a.n_head_kv, n_chunks, chunk, 1, &t0, &t1);
    uint64_t over = 0;
    for (int64_t t = t0; t < t1; ++t) over += attention_task(a, t);
    return over;
}

namespace {
struct AttnJob {
    const AttnProblem *a;
    std::atomic<uint64_t> over{0};
};
void attn_worker(void *p, int chunk, int n_chunks, int) {
    AttnJob &j = *static_cast<AttnJob *>(p);
    const uint64_t over = attention_chunk(*j.a, chunk, n_chunks);
    if (over) j.over += over;
}
}  // namespace

int attention_run(const AttnProblem &a, ThreadPool &pool, uint64_t *overflows) {
    if (const int rc = attention_check(a)) return rc;
    AttnJob j;
    j.a = &a;
    pool.run(attn_worker, &j, pool.chunks_for(a.q->rows * a.n_head_kv));
    if (overflows) *overflows += j.over.load();
    return 0;
}

}  // namespace pangu
