// A fixed team of worker threads for one session's compute. Threads are created with the session and
// reused for every operator: dispatching work allocates nothing and, for the short operators of decoding,
// workers spin briefly before sleeping so that a token does not pay a wake-up per operator.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace pangu {

class ThreadPool {
public:
    using Fn = void (*)(void *ctx, int thread_index, int n_threads);

    explicit ThreadPool(int n_threads);  // n_threads >= 1, including the caller
    ~ThreadPool();
    ThreadPool(const ThreadPool &) = delete;
    ThreadPool &operator=(const ThreadPool &) = delete;

    int size() const { return n_threads_; }
    // Runs fn(ctx, i, n) for i in [0, n) with i = 0 on the calling thread; returns when all are done.
    void run(Fn fn, void *ctx);

private:
    void worker(int index);

    int n_threads_;
    std::vector<std::thread> workers_;
    std::mutex mu_;
    std::condition_variable cv_;       // workers sleep here between runs
    std::condition_variable done_cv_;  // the caller sleeps here when workers are slow to finish
    bool caller_waiting_ = false;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> remaining_{0};
    std::atomic<bool> stop_{false};
    Fn fn_ = nullptr;
    void *ctx_ = nullptr;
};

// Splits [0, n) into `parts` contiguous chunks aligned to `granule`; returns chunk `i` as [*begin, *end).
inline void split_range(int64_t n, int parts, int i, int64_t granule, int64_t *begin, int64_t *end) {
    const int64_t units = (n + granule - 1) / granule;
    const int64_t per = units / parts, extra = units % parts;
    const int64_t ub = i * per + (i < extra ? i : extra);
    const int64_t ue = ub + per + (i < extra ? 1 : 0);
    *begin = ub * granule < n ? ub * granule : n;
    *end = ue * granule < n ? ue * granule : n;
}

}  // namespace pangu
