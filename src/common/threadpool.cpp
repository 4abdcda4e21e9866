#include "common/threadpool.h"

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
    try {
        for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker(i); });
    } catch (...) {
        // Out of memory or threads part way: the destructor does not run for a constructor that throws, and
        // destroying a joinable std::thread calls std::terminate (found by test_faults). Stop the workers
        // already started before reporting the failure.
        stop_workers();
        throw;
    }
}

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::stop_workers() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_ = true;
        published_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    for (auto &t : workers_) t.join();
}

void ThreadPool::work(uint32_t gen, Fn fn, void *ctx, int n_chunks, int slot) {
    for (;;) {
        uint64_t v = next_.load(std::memory_order_acquire);
        // Claim the next chunk of this generation only: a late worker must not take a chunk of a later run.
        if (static_cast<uint32_t>(v >> 32) != gen || static_cast<int>(v & 0xffffffffu) >= n_chunks) return;
        if (!next_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel)) continue;
        fn(ctx, static_cast<int>(v & 0xffffffffu), n_chunks, slot);
        if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_chunks && slot != 0) {
            std::lock_guard<std::mutex> lk(mu_);
            if (caller_waiting_) done_cv_.notify_one();
        }
    }
}

void ThreadPool::run(Fn fn, void *ctx, int n_chunks) {
    if (n_chunks <= 0) return;
    if (n_threads_ == 1) {
        for (int c = 0; c < n_chunks; ++c) fn(ctx, c, n_chunks, 0);
        return;
    }
    uint32_t gen;
    {
        std::lock_guard<std::mutex> lk(mu_);
        gen = ++generation_;
        fn_ = fn;
        ctx_ = ctx;
        n_chunks_ = n_chunks;
        done_.store(0, std::memory_order_relaxed);
        next_.store(static_cast<uint64_t>(gen) << 32, std::memory_order_release);
        published_.store(gen, std::memory_order_release);
    }
    cv_.notify_all();
    work(gen, fn, ctx, n_chunks, 0);
    // Every chunk is claimed; wait only for chunks that workers are still running.
    for (int spin = 0; spin < kSpinIterations; ++spin) {
        if (done_.load(std::memory_order_acquire) == n_chunks) return;
        PANGU_CPU_RELAX();
    }
    std::unique_lock<std::mutex> lk(mu_);
    caller_waiting_ = true;
    done_cv_.wait(lk, [&] { return done_.load(std::memory_order_acquire) == n_chunks; });
    caller_waiting_ = false;
}

void ThreadPool::worker(int slot) {
    uint32_t seen = 0;
    for (;;) {
        uint32_t g = published_.load(std::memory_order_acquire);
        for (int spin = 0; g == seen && spin < kSpinIterations; ++spin) {
            PANGU_CPU_RELAX();
            g = published_.load(std::memory_order_acquire);
        }
        Fn fn;
        void *ctx;
        int n_chunks;
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            fn = fn_;
            ctx = ctx_;
            n_chunks = n_chunks_;
        }
        work(seen, fn, ctx, n_chunks, slot);
    }
}

}  // namespace pangu
