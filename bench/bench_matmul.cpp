// Matmul kernels through the CPU device, the way the forward pass calls them: y[M,N] = x[M,K] . W[N,K]^T.
//
//   bench_matmul [--dtype f32|bf16|f16|i8] [-N ROWS] [-K COLS] [-M 1,2,5,...] [-t THREADS] [--mib MiB]
//                [-r RUNS] [--kernels scalar|avx2|avx512|neon]
//
// The weights are many matrices of N x K whose total (--mib, default 1024) is far larger than the caches,
// used round-robin, so that a call streams its weights from memory as decoding a large model does. For each
// M: milliseconds per call, weight bytes per second, and GFLOP/s (2*M*N*K per call); median of RUNS passes
// over all matrices. Compare the GB/s of M = 1 with `membw -t THREADS` (the memory-bandwidth floor).
// PANGU_KERNELS (or --kernels) picks the kernel table.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "device/device.h"
#include "device/cpu/kernels.h"
#include "model/tensor.h"

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
                 "usage: bench_matmul [--dtype f32|bf16|f16|i8] [-N ROWS] [-K COLS] [-M 1,2,5] [-t THREADS]\n"
                 "                    [--mib MiB] [-r RUNS] [--kernels scalar|avx2|avx512|neon]\n");
    return 2;
}

}  // namespace

int main(int argc, char **argv) {
    std::string dtype = "i8";
    int64_t N = 6144, K = 1536;
    std::vector<int> Ms = {1, 2, 3, 4, 5, 8, 16};
    int threads = 1, runs = 5;
    size_t mib = 1024;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        const bool more = i + 1 < argc;
        if (!std::strcmp(a, "--dtype") && more) dtype = argv[++i];
        else if (!std::strcmp(a, "-N") && more) N = std::atoll(argv[++i]);
        else if (!std::strcmp(a, "-K") && more) K = std::atoll(argv[++i]);
        else if (!std::strcmp(a, "-M") && more) Ms = parse_list(argv[++i]);
        else if (!std::strcmp(a, "-t") && more) threads = std::atoi(argv[++i]);
        else if (!std::strcmp(a, "--mib") && more) mib = std::strtoull(argv[++i], nullptr, 10);
        else if (!std::strcmp(a, "-r") && more) runs = std::atoi(argv[++i]);
        else if (!std::strcmp(a, "--kernels") && more) setenv("PANGU_KERNELS", argv[++i], 1);
        else return usage();
    }
    pgd_dtype dt;
    size_t esz;
    if (dtype == "f32") dt = PGD_F32, esz = 4;
    else if (dtype == "bf16") dt = PGD_BF16, esz = 2;
    else if (dtype == "f16") dt = PGD_F16, esz = 2;
    else if (dtype == "i8") dt = PGD_I8, esz = 1;
    else return usage();
    if (N < 1 || K < 1 || threads < 1 || runs < 1 || Ms.empty()) return usage();
    const int max_m = *std::max_element(Ms.begin(), Ms.end());
    if (*std::min_element(Ms.begin(), Ms.end()) < 1) return usage();

    const size_t mat_bytes = static_cast<size_t>(N * K) * esz;
    const size_t n_mats = std::max<size_t>(1, mib * 1024 * 1024 / mat_bytes);
    std::vector<uint8_t> wbuf(n_mats * mat_bytes);
    std::mt19937 g(1);
    for (size_t i = 0; i < wbuf.size(); i += 2) {
        // Small finite values in every dtype: random bytes in the low half, a fixed exponent in the high.
        wbuf[i] = static_cast<uint8_t>(g());
        wbuf[i + 1] = dt == PGD_I8 ? static_cast<uint8_t>(g()) : 0x3c;
    }
    if (dt == PGD_F32)
        for (size_t i = 0; i < wbuf.size(); i += 4) wbuf[i + 3] = 0x3c;
    std::vector<float> scale(N, 0.01f), x(max_m * K), y(max_m * N);
    for (auto &v : x) v = std::uniform_real_distribution<float>(-1, 1)(g);
    // int8 weights come with 16-bit activations (W8A16): x holds bf16 values, as the forward rounds them
    if (dt == PGD_I8)
        for (auto &v : x) v = bf16_to_f32(f32_to_bf16(v));

    pgd_device *dev = pgd_device_create("cpu", nullptr, nullptr, nullptr, 0);
    pgd_stream *s = nullptr;
    if (!dev || dev->stream_create(dev->ctx, threads, &s) != 0) {
        std::fprintf(stderr, "bench_matmul: cannot create the CPU device\n");
        return 1;
    }
    std::printf("bench_matmul: kernels %s, %s weights %lld x %lld (%.1f MiB each, %zu matrices, %.0f MiB), "
                "%d thread%s, median of %d\n",
                kernels::best().name, dtype.c_str(), static_cast<long long>(N), static_cast<long long>(K),
                mat_bytes / 1048576.0, n_mats, n_mats * mat_bytes / 1048576.0, threads, threads > 1 ? "s" : "",
                runs);
    std::printf("%4s %12s %12s %10s\n", "M", "ms/call", "weight GB/s", "GFLOP/s");
    for (int M : Ms) {
        pgd_tensor xt{x.data(), PGD_F32, M, K, K, nullptr, 0, 0, 0};
        pgd_tensor yt{y.data(), PGD_F32, M, N, N, nullptr, 0, 0, 0};
        std::vector<double> per_call;
        pgd_tensor w0{wbuf.data(), dt, N, K, K, dt == PGD_I8 ? scale.data() : nullptr, 0, 0, 0};
        const size_t ws_size = dev->matmul_workspace ? dev->matmul_workspace(dev->ctx, &xt, &w0) : 0;
        std::vector<float> ws((ws_size + 3) / 4);
        for (int r = 0; r <= runs; ++r) {  // pass 0 warms up
            const auto t0 = std::chrono::steady_clock::now();
            for (size_t m = 0; m < n_mats; ++m) {
                pgd_tensor wt{wbuf.data() + m * mat_bytes, dt, N, K, K, dt == PGD_I8 ? scale.data() : nullptr, 0, 0, 0};
                if (dev->matmul(dev->ctx, s, &xt, &wt, nullptr, &yt, ws.data(), ws_size) != 0) {
                    std::fprintf(stderr, "bench_matmul: matmul failed\n");
                    return 1;
                }
            }
            const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            if (r > 0) per_call.push_back(ms / n_mats);
        }
        std::sort(per_call.begin(), per_call.end());
        const double ms = per_call[per_call.size() / 2];
        std::printf("%4d %12.4f %12.2f %10.1f\n", M, ms, mat_bytes / ms / 1e6, 2.0 * M * N * K / ms / 1e6);
    }
    dev->stream_destroy(dev->ctx, s);
    dev->destroy(dev);
    return 0;
}
