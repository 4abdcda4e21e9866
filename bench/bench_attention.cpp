// Decode attention through the CPU device, the way one decode step calls it: one query row at the end of a
// context of C positions, once per layer, each layer with a KV cache of its own laid out as the session's.
//
//   bench_attention [--kv-type f32,f16,bf16,q8] [--ctx 128,4000] [--layout heads,rows] [-t THREADS] [-r RUNS]
//                   [--layers L] [--heads H] [--kv-heads HKV] [--head-dim D] [--kernels scalar|avx2|avx512|neon]
//
// Defaults are the 1B shape (26 layers, 12 heads, 6 KV heads, head_dim 128): at 4000 positions its caches are
// far larger than the CPU's caches, so a step streams them from memory as decoding does. --layout: heads (the
// session's: each 64-position block holds its rows head by head) and/or rows (a row's heads side by side). For
// each cache type, layout and context, the median of RUNS steps (each step all L layers; the types and contexts
// alternated within each run, so that a shared machine's swings hit them alike) in milliseconds, the cache bytes one
// step reads (K and V of every layer up to the query's position, I8 scales included) per second, and, before every
// step, one pass of membw's reader with as many threads over a buffer as large as the caches: the median floor and the
// median of each step's GB/s over the floor just before it.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "device/device.h"
#include "model/tensor.h"
#include "membw_avx2.h"

namespace {

std::vector<std::string> split(const char *s) {
    std::vector<std::string> v;
    std::string cur;
    for (; *s; ++s) {
        if (*s == ',') v.push_back(cur), cur.clear();
        else cur += *s;
    }
    v.push_back(cur);
    return v;
}

int usage() {
    std::fprintf(stderr,
                 "usage: bench_attention [--kv-type f32,f16,bf16,q8] [--ctx 128,4000] [--layout heads,rows]\n"
                 "                       [-t THREADS] [-r RUNS]\n"
                 "                       [--layers L] [--heads H] [--kv-heads HKV] [--head-dim D]\n"
                 "                       [--kernels scalar|avx2|avx512|neon]\n");
    return 2;
}

int dtype_of(const std::string &name) {
    if (name == "f32") return PGD_F32;
    if (name == "f16") return PGD_F16;
    if (name == "bf16") return PGD_BF16;
    if (name == "q8") return PGD_I8;
    return -1;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// One layer's K and V caches of C rows in type dt (I8: one scale per row and KV head after the elements),
// filled through the device's kv_store from random rows, as the session fills them.
struct Cache {
    std::vector<uint8_t> k, v;
    pgd_tensor kt{}, vt{};
};

// The session's layout: blocks of 64 positions, each holding its rows head by head (head_cols), an I8
// block's scales after its elements; or (heads false) each row's heads side by side.
pgd_tensor cache_view(std::vector<uint8_t> &buf, int dt, int64_t C, int32_t hkv, int32_t hd, bool heads) {
    const int64_t KVD = int64_t(hkv) * hd, P = 64, blocks = (C + P - 1) / P;
    const int64_t block_bytes = P * KVD * int64_t(pgd_kv_elem_bytes(dt)) + (dt == PGD_I8 ? P * hkv * 4 : 0);
    buf.assign(blocks * block_bytes + 64, 0);
    pgd_tensor t{};
    t.data = buf.data();
    t.dtype = dt;
    t.rows = C;
    t.cols = t.stride = KVD;
    t.block_rows = P;
    t.block_stride = block_bytes / int64_t(pgd_kv_elem_bytes(dt));
    t.head_cols = heads ? hd : 0;  // --layout rows: a row's heads side by side, as before head-major blocks
    if (dt == PGD_I8) {
        t.group_size = hd;
        t.scale = reinterpret_cast<const float *>(buf.data() + P * KVD);
    }
    return t;
}

bool fill(pgd_device *dev, pgd_stream *s, pgd_tensor &t, uint32_t &seed) {
    std::vector<float> rows(64 * t.cols);
    for (int64_t r0 = 0; r0 < t.rows; r0 += 64) {
        const int64_t n = std::min<int64_t>(64, t.rows - r0);
        for (auto &x : rows) {  // uniform in [-2, 2): a cheap generator, gigabytes of caches to fill
            seed = seed * 1664525u + 1013904223u;
            x = static_cast<float>(seed >> 8) * (4.0f / 16777216.0f) - 2.0f;
        }
        pgd_tensor src{};
        src.data = rows.data();
        src.dtype = PGD_F32;
        src.rows = n;
        src.cols = src.stride = t.cols;
        if (!dev->kv_store || dev->kv_store(dev->ctx, s, &src, &t, r0) != 0) return false;
    }
    return true;
}

}  // namespace

int main(int argc, char **argv) {
    std::vector<std::string> types = {"f32", "f16", "bf16", "q8"};
    std::vector<int64_t> ctxs = {128, 4000};
    std::vector<std::string> layouts = {"heads"};
    int threads = 2, runs = 7, layers = 26;
    int32_t H = 12, HKV = 6, D = 128;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        const bool more = i + 1 < argc;
        if (!std::strcmp(a, "--kv-type") && more) types = split(argv[++i]);
        else if (!std::strcmp(a, "--ctx") && more) {
            ctxs.clear();
            for (const auto &c : split(argv[++i])) ctxs.push_back(std::atoll(c.c_str()));
        } else if (!std::strcmp(a, "--layout") && more) layouts = split(argv[++i]);
        else if (!std::strcmp(a, "-t") && more) threads = std::atoi(argv[++i]);
        else if (!std::strcmp(a, "-r") && more) runs = std::atoi(argv[++i]);
        else if (!std::strcmp(a, "--layers") && more) layers = std::atoi(argv[++i]);
        else if (!std::strcmp(a, "--heads") && more) H = std::atoi(argv[++i]);
        else if (!std::strcmp(a, "--kv-heads") && more) HKV = std::atoi(argv[++i]);
        else if (!std::strcmp(a, "--head-dim") && more) D = std::atoi(argv[++i]);
        else if (!std::strcmp(a, "--kernels") && more) setenv("PANGU_KERNELS", argv[++i], 1);
        else return usage();
    }
    for (const auto &t : types)
        if (dtype_of(t) < 0) return usage();
    for (int64_t c : ctxs)
        if (c < 1) return usage();
    for (const auto &l : layouts)
        if (l != "heads" && l != "rows") return usage();
    if (threads < 1 || runs < 1 || layers < 1 || H < 1 || HKV < 1 || H % HKV || D < 1) return usage();
#if defined(__x86_64__)
    if (!__builtin_cpu_supports("avx2")) {
        std::fprintf(stderr, "bench_attention: the floor needs AVX2 (membw's reader is built for it)\n");
        return 2;
    }
#endif
    pgd_device *dev = pgd_device_create("cpu", nullptr, nullptr, nullptr, 0);
    pgd_stream *s = nullptr;
    if (!dev || dev->stream_create(dev->ctx, threads, &s) != 0) {
        std::fprintf(stderr, "bench_attention: cannot create the CPU device\n");
        return 1;
    }
    struct Config {
        std::string type, layout;
        int64_t ctx;
        std::vector<Cache> caches;
        double bytes;  // read per step
        std::vector<double> ms, frac;
    };
    std::vector<Config> cfgs;
    std::mt19937 g(1);
    uint32_t seed = 1;
    size_t max_bytes = 0;
    for (const auto &t : types)
        for (const auto &lay : layouts)
            for (int64_t C : ctxs) {
                Config c{t, lay, C, std::vector<Cache>(layers), 0, {}, {}};
                const int dt = dtype_of(t);
                for (auto &l : c.caches) {
                    l.kt = cache_view(l.k, dt, C, HKV, D, lay == "heads");
                    l.vt = cache_view(l.v, dt, C, HKV, D, lay == "heads");
                    if (!fill(dev, s, l.kt, seed) || !fill(dev, s, l.vt, seed)) {
                        std::fprintf(stderr, "bench_attention: the device cannot store a %s cache\n", t.c_str());
                        return 1;
                    }
                }
                c.bytes =
                    2.0 * layers * C * (double(HKV) * D * pgd_kv_elem_bytes(dt) + (dt == PGD_I8 ? HKV * 4.0 : 0.0));
                max_bytes = std::max(max_bytes, size_t(c.bytes));
                cfgs.push_back(std::move(c));
            }
    std::vector<float> q(int64_t(H) * D), out(int64_t(H) * D);
    for (auto &x : q) x = std::normal_distribution<float>(0.0f, 1.0f)(g);
    pgd_tensor qt{}, ot{};
    qt.data = q.data();
    ot.data = out.data();
    qt.dtype = ot.dtype = PGD_F32;
    qt.rows = ot.rows = 1;
    qt.cols = qt.stride = ot.cols = ot.stride = int64_t(H) * D;
    std::vector<float> floor_buf(std::max<size_t>(max_bytes / 4, 1 << 20), 1.0f);
    std::vector<double> floors;
    float sink = 0.0f;
    const float scale = 1.0f / std::sqrt(float(D));
    for (int r = -1; r < runs; ++r)  // run -1 warms up
        for (auto &c : cfgs) {
            const size_t fb = std::min(floor_buf.size(), size_t(c.bytes / 4));
            const double gbs_floor = membw_pass(floor_buf.data(), fb, threads, &sink);
            const auto t0 = std::chrono::steady_clock::now();
            for (auto &l : c.caches)
                if (dev->attention(dev->ctx, s, &qt, &l.kt, &l.vt, c.ctx - 1, H, HKV, D, scale, &ot, nullptr, 0) != 0) {
                    std::fprintf(stderr, "bench_attention: attention failed\n");
                    return 1;
                }
            const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            if (r < 0) continue;
            c.ms.push_back(ms);
            c.frac.push_back(c.bytes / (ms * 1e6) / gbs_floor);
            floors.push_back(gbs_floor);
        }
    std::printf("# %d layers, %d heads, %d KV heads, head_dim %d, %d threads, median of %d steps\n", layers, H, HKV, D,
                threads, runs);
    std::printf("%-5s %-6s %6s %10s %10s %9s %9s\n", "type", "layout", "ctx", "ms/step", "MB/step", "GB/s", "of floor");
    for (const auto &c : cfgs) {
        const double ms = median(c.ms);
        std::printf("%-5s %-6s %6lld %10.3f %10.1f %9.2f %8.1f%%\n", c.type.c_str(), c.layout.c_str(),
                    static_cast<long long>(c.ctx), ms, c.bytes / 1e6, c.bytes / (ms * 1e6), 100.0 * median(c.frac));
    }
    std::printf("# floor (membw reader, %d threads): median %.2f GB/s\n", threads, median(floors));
    dev->stream_destroy(dev->ctx, s);
    dev->destroy(dev);
    return sink == 12345.0f;  // keeps the floor's reads
}
