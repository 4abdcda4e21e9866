#include "parallel.h"

#include <memory>
#include <mutex>
#include <thread>

#include "common/threadpool.h"

#ifdef EIGEN_USE_BLAS
extern "C" void openblas_set_num_threads(int);
#endif

namespace pangu::train {

namespace {

std::mutex mu;
std::unique_ptr<ThreadPool> pool;

ThreadPool &get_pool() {
    std::lock_guard<std::mutex> lock(mu);
    if (!pool) {
#ifdef EIGEN_USE_BLAS
        openblas_set_num_threads(1);
#endif
        pool = std::make_unique<ThreadPool>(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    }
    return *pool;
}

struct Job {
    int64_t n, grain;
    const std::function<void(int64_t, int64_t)> *fn;
    int parts;
};

void run_chunk(void *ctx, int chunk, int, int) {
    const Job &j = *static_cast<const Job *>(ctx);
    int64_t b = 0, e = 0;
    split_range(j.n, j.parts, chunk, j.grain, &b, &e);
    if (b < e) (*j.fn)(b, e);
}

}  // namespace

void set_threads(int n) {
    std::lock_guard<std::mutex> lock(mu);
#ifdef EIGEN_USE_BLAS
    openblas_set_num_threads(1);
#endif
    pool = std::make_unique<ThreadPool>(n > 0 ? n : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

int threads() { return get_pool().size(); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)> &fn) {
    if (n <= 0) return;
    ThreadPool &p = get_pool();
    const int64_t units = (n + grain - 1) / grain;
    if (p.size() == 1 || units < 2) return fn(0, n);
    Job j{n, grain, &fn, static_cast<int>(std::min<int64_t>(units, p.size()))};
    p.run(run_chunk, &j, j.parts);
}

}  // namespace pangu::train
