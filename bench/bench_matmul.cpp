// Matmul kernels through the CPU device, the way the forward pass calls them: y[M,N] = x[M,K] . W[N,K]^T.
//
//   bench_matmul [--dtype f32|bf16|f16|i8|i8a16|i8a8|i4a8] [--group G] [-N ROWS] [-K COLS] [-M 1,2,5,...]
//                [-t THREADS] [--mib MiB] [-r RUNS] [--kernels scalar|avx2|avx512|neon] [--floor]
//
// Integer weights: i8 is W8A16 (int8 weights, one scale per channel, against bf16 activations); i8a16 the same
// weights with int16 activations (act_dtype PGD_I16: two int8 digit rows per row through the integer kernels,
// the cpu backend's default for W8A16 checkpoints); i8a8 with int8 activations (act_dtype PGD_I8: each row of x
// quantized with its own scale, exact int32 sums: W8A8); i4a8 PGD_I4 weights (two per byte, a scale per group
// of --group columns, default 128) with int8 activations (W4A8). Every matrix has scales of its own, and
// i4a8's count in its bytes (4 bytes per group: 6 % more at 128 columns).
//
// The weights are many matrices of N x K whose total (--mib, default 1024) is far larger than the caches,
// used round-robin, so that a call streams its weights from memory as decoding a large model does. For each
// M: milliseconds per call, weight bytes per second, and GFLOP/s (2*M*N*K per call); median of RUNS passes
// over all matrices. Compare the GB/s of M = 1 with `membw -t THREADS` (the memory-bandwidth floor), or with
// --floor: before every pass, one pass of membw's reader with as many threads over a buffer as large as the
// weights, so that both see the same state of a shared machine (a VM's bandwidth can move 2x within minutes);
// then the median floor and the median of each pass's weight GB/s over the floor just before it.
// PANGU_KERNELS (or --kernels) picks the kernel table.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "device/cpu/kernels.h"
#include "device/device.h"
#include "model/tensor.h"
#include "membw_avx2.h"  // --floor checks for AVX2

using namespace pangu;

namespace {

std::vector<int> parse_list(const char *s) {
    std::vector<int> v;
    for (const char *p = s; *p;) {
        v.push_back(std::atoi(p));
        p = std::strchr(p, ',');
        if (!p) break;
        ++p;
    }
    return v;
}

int usage() {
    std::fprintf(stderr,
                 "usage: bench_matmul [--dtype f32|bf16|f16|i8|i8a16|i8a8|i4a8] [--group G] [-N ROWS] [-K COLS]\n"
                 "                    [-M 1,2,5] [-t THREADS] [--mib MiB] [-r RUNS]\n"
                 "                    [--kernels scalar|avx2|avx512|neon] [--floor]\n");
    return 2;
}

}  // namespace

int main(int argc, char **argv) {
    std::string dtype = "i8";
    int64_t N = 6144, K = 1536;
    std::vector<int> Ms = {1, 2, 3, 4, 5, 8, 16};
    int threads = 1, runs = 5, group = 128;
    size_t mib = 1024;
    bool floor = false;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        const bool more = i + 1 < argc;
        if (!std::strcmp(a, "--dtype") && more) dtype = argv[++i];
        else if (!std::strcmp(a, "--group") && more) group = std::atoi(argv[++i]);
        else if (!std::strcmp(a, "-N") && more) N = std::atoll(argv[++i]);
        else if (!std::strcmp(a, "-K") && more) K = std::atoll(argv[++i]);
        else if (!std::strcmp(a, "-M") && more) Ms = parse_list(argv[++i]);
        else if (!std::strcmp(a, "-t") && more) threads = std::atoi(argv[++i]);
        else if (!std::strcmp(a, "--mib") && more) mib = std::strtoull(argv[++i], nullptr, 10);
        else if (!std::strcmp(a, "-r") && more) runs = std::atoi(argv[++i]);
        else if (!std::strcmp(a, "--kernels") && more) setenv("PANGU_KERNELS", argv[++i], 1);
        else if (!std::strcmp(a, "--floor")) floor = true;
        else return usage();
    }
    pgd_dtype dt;
    pgd_dtype act = PGD_F32;
    size_t esz2;  // bytes per two weights
    if (dtype == "f32") dt = PGD_F32, esz2 = 8;
    else if (dtype == "bf16") dt = PGD_BF16, esz2 = 4;
    else if (dtype == "f16") dt = PGD_F16, esz2 = 4;
    else if (dtype == "i8") dt = PGD_I8, esz2 = 2;
    else if (dtype == "i8a16") dt = PGD_I8, act = PGD_I16, esz2 = 2;
    else if (dtype == "i8a8") dt = PGD_I8, act = PGD_I8, esz2 = 2;
    else if (dtype == "i4a8") dt = PGD_I4, act = PGD_I8, esz2 = 1;
    else return usage();
    if (N < 1 || K < 1 || threads < 1 || runs < 1 || Ms.empty()) return usage();
#if defined(__x86_64__)
    if (floor && !__builtin_cpu_supports("avx2")) {
        std::fprintf(stderr, "bench_matmul: --floor needs AVX2 (membw's reader is built for it)\n");
        return 2;
    }
#endif
    if (dt == PGD_I4 && (group < 32 || group % 32 != 0 || K % 64 != 0 || K % group != 0)) {
        std::fprintf(stderr, "bench_matmul: i4a8 needs K a multiple of 64 and of --group, itself a multiple of 32\n");
        return 2;
    }
    const int max_m = *std::max_element(Ms.begin(), Ms.end());
    if (*std::min_element(Ms.begin(), Ms.end()) < 1) return usage();

    // one scale per channel (int8), or per group (int4)
    const size_t n_scales = static_cast<size_t>(dt == PGD_I4 ? N * (K / group) : N);
    const size_t mat_bytes = static_cast<size_t>(N * K) * esz2 / 2;
    const size_t bytes = mat_bytes + (dt == PGD_I4 ? n_scales * sizeof(float) : 0);  // read per call
    const size_t n_mats = std::max<size_t>(1, mib * 1024 * 1024 / bytes);
    std::vector<uint8_t> wbuf(n_mats * mat_bytes);
    std::mt19937 g(1);
    for (size_t i = 0; i < wbuf.size(); i += 2) {
        // Small finite values in every dtype: random bytes in the low half, a fixed exponent in the high.
        wbuf[i] = static_cast<uint8_t>(g());
        wbuf[i + 1] = dt == PGD_I8 || dt == PGD_I4 ? static_cast<uint8_t>(g()) : 0x3c;
    }
    if (dt == PGD_F32)
        for (size_t i = 0; i < wbuf.size(); i += 4) wbuf[i + 3] = 0x3c;
    std::vector<float> scale(n_mats * n_scales, 0.01f), x(max_m * K), y(max_m * N);
    for (auto &v : x) v = std::uniform_real_distribution<float>(-1, 1)(g);
    // W8A16: x holds bf16 values, as the forward rounds them
    if (dt == PGD_I8 && act == PGD_F32)
        for (auto &v : x) v = bf16_to_f32(f32_to_bf16(v));

    pgd_device *dev = pgd_device_create("cpu", nullptr, nullptr, nullptr, 0);
    pgd_stream *s = nullptr;
    if (!dev || dev->stream_create(dev->ctx, threads, &s) != 0) {
        std::fprintf(stderr, "bench_matmul: cannot create the CPU device\n");
        return 1;
    }
    std::printf("bench_matmul: kernels %s, %s weights %lld x %lld", kernels::best().name, dtype.c_str(),
                static_cast<long long>(N), static_cast<long long>(K));
    if (dt == PGD_I4) std::printf(" in groups of %d", group);
    std::printf(" (%.1f MiB each, %zu matrices, %.0f MiB), %d thread%s, median of %d\n", bytes / 1048576.0, n_mats,
                n_mats * bytes / 1048576.0, threads, threads > 1 ? "s" : "", runs);
    std::printf("%4s %12s %12s %10s", "M", "ms/call", "weight GB/s", "GFLOP/s");
    std::printf(floor ? " %10s %9s\n" : "\n", "floor GB/s", "of floor");
    // membw's buffer: as large as the weights, small whole floats (the weights' random bytes, read as floats,
    // hold denormals, which slow the additions down to below memory's pace)
    std::vector<float> fbuf(floor ? wbuf.size() / 4 : 0);
    for (size_t i = 0; i < fbuf.size(); ++i) fbuf[i] = static_cast<float>(i & 1023);
    float sink = 0;
    for (int M : Ms) {
        pgd_tensor xt{x.data(), PGD_F32, M, K, K, nullptr, 0, 0, 0, PGD_F32, nullptr, nullptr, nullptr, 0};
        pgd_tensor yt{y.data(), PGD_F32, M, N, N, nullptr, 0, 0, 0, PGD_F32, nullptr, nullptr, nullptr, 0};
        std::vector<double> per_call, floors, ratios;
        const bool scaled = dt == PGD_I8 || dt == PGD_I4;
        const int32_t gs = dt == PGD_I4 ? group : 0;
        pgd_tensor w0{wbuf.data(), dt,      N,       K,       K, scaled ? scale.data() : nullptr, gs, 0, 0,
                      act,         nullptr, nullptr, nullptr, 0};
        const size_t ws_size = dev->matmul_workspace ? dev->matmul_workspace(dev->ctx, &xt, &w0) : 0;
        std::vector<float> ws((ws_size + 3) / 4);
        for (int r = 0; r <= runs; ++r) {  // pass 0 warms up
            const double bw = floor ? membw_pass(fbuf.data(), fbuf.size(), threads, &sink) : 0;
            const auto t0 = std::chrono::steady_clock::now();
            for (size_t m = 0; m < n_mats; ++m) {
                const float *sm = scaled ? scale.data() + m * n_scales : nullptr;
                pgd_tensor wt{
                    wbuf.data() + m * mat_bytes, dt, N, K, K, sm, gs, 0, 0, act, nullptr, nullptr, nullptr, 0};
                if (dev->matmul(dev->ctx, s, &xt, &wt, nullptr, &yt, ws.data(), ws_size) != 0) {
                    std::fprintf(stderr, "bench_matmul: matmul failed\n");
                    return 1;
                }
            }
            const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            if (r == 0) continue;
            per_call.push_back(ms / n_mats);
            floors.push_back(bw);
            ratios.push_back(bytes * n_mats / ms / 1e6 / bw);
        }
        const auto median = [](std::vector<double> v) {
            std::sort(v.begin(), v.end());
            return v[v.size() / 2];
        };
        const double ms = median(per_call);
        std::printf("%4d %12.4f %12.2f %10.1f", M, ms, bytes / ms / 1e6, 2.0 * M * N * K / ms / 1e6);
        if (floor) std::printf(" %10.2f %8.1f%%", median(floors), 100 * median(ratios));
        std::printf(sink == 1 ? " \n" : "\n");  // the sums used, so that the reads stay
    }
    dev->stream_destroy(dev->ctx, s);
    dev->destroy(dev);
    return 0;
}
