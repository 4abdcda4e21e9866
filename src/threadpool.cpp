#include "threadpool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PANGU_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define PANGU_CPU_RELAX() __asm__ __volatile__("yield")
#else
#define PANGU_CPU_RELAX() ((void)0)
#endif

namespace pangu {

namespace {
// Some tens of microseconds of spinning: longer than the gap between two operators of one token, shorter
// than anything a user would notice as a busy core.
constexpr int kSpinIterations = 4000;
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
    workers_.reserve(n_threads_ - 1);
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_.store(true);
        generation_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto &t : workers_) t.join();
}

void ThreadPool::run(Fn fn, void *ctx) {
    if (n_threads_ == 1) {
        fn(ctx, 0, 1);
        return;
    }
    {
        std::lock_guard<std::mutex> lk(mu_);
        fn_ = fn;
        ctx_ = ctx;
        remaining_.store(n_threads_ - 1, std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    fn(ctx, 0, n_threads_);
    for (int spin = 0; spin < kSpinIterations; ++spin) {
        if (remaining_.load(std::memory_order_acquire) == 0) return;
        PANGU_CPU_RELAX();
    }
    // A worker was asleep or descheduled (the cores are shared with other work): sleep instead of burning
    // the core that the late worker needs.
    std::unique_lock<std::mutex> lk(mu_);
    caller_waiting_ = true;
    done_cv_.wait(lk, [&] { return remaining_.load(std::memory_order_acquire) == 0; });
    caller_waiting_ = false;
}

void ThreadPool::worker(int index) {
    uint64_t seen = 0;
    for (;;) {
        uint64_t g = generation_.load(std::memory_order_acquire);
        for (int spin = 0; g == seen && spin < kSpinIterations; ++spin) {
            PANGU_CPU_RELAX();
            g = generation_.load(std::memory_order_acquire);
        }
        if (g == seen) {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait(lk, [&] { return generation_.load(std::memory_order_acquire) != seen; });
            g = generation_.load(std::memory_order_acquire);
        }
        seen = g;
        if (stop_.load()) return;
        Fn fn;
        void *ctx;
        {
            std::lock_guard<std::mutex> lk(mu_);
            fn = fn_;
            ctx = ctx_;
        }
        fn(ctx, index, n_threads_);
        if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            std::lock_guard<std::mutex> lk(mu_);
            if (caller_waiting_) done_cv_.notify_one();
        }
    }
}

}  // namespace pangu
