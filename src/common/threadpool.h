// A fixed team of worker threads for one session's compute. Threads are created with the session and
// reused for every operator: dispatching work allocates nothing.
//
// Work is cut into chunks that threads claim one at a time, the calling thread included. On an idle
// machine every thread takes its share; on a busy one (cores shared with other programs) a worker that is
// not scheduled in time simply claims nothing, and the caller does the work itself instead of waiting for
// it, so a session never runs slower than it would on one thread. Workers spin briefly before sleeping so
// that the short operators of decoding do not pay a wake-up each.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace pangu {

class ThreadPool {
public:
    // fn(ctx, chunk, n_chunks, slot): processes chunk `chunk` of `n_chunks`; `slot` (0 .. size()-1) names
    // the thread running it, for per-thread scratch memory.
    using Fn = void (*)(void *ctx, int chunk, int n_chunks, int slot);

    explicit ThreadPool(int n_threads);  // n_threads >= 1, including the caller
    ~ThreadPool();
    ThreadPool(const ThreadPool &) = delete;
    ThreadPool &operator=(const ThreadPool &) = delete;

    int size() const { return n_threads_; }
    // Chunks for `units` of work: a few per thread, so that a thread the system does not schedule in time
    // leaves its share to the others instead of holding the operator up.
    int chunks_for(int64_t units) const {
        const int64_t want = n_threads_ == 1 ? 1 : int64_t(n_threads_) * 4;
        return static_cast<int>(units < want ? (units > 0 ? units : 1) : want);
    }
    // Runs fn over chunks 0 .. n_chunks-1 and returns when all are done.
    void run(Fn fn, void *ctx, int n_chunks);

private:
    void worker(int slot);
    void stop_workers();
    // Claims and runs chunks of generation `gen` until none are left.
    void work(uint32_t gen, Fn fn, void *ctx, int n_chunks, int slot);

    int n_threads_;
    std::vector<std::thread> workers_;
    std::mutex mu_;
    std::condition_variable cv_;       // workers sleep here between runs
    std::condition_variable done_cv_;  // the caller sleeps here when a worker is slow to finish its chunk
    bool caller_waiting_ = false;
    std::atomic<uint64_t> next_{0};    // generation << 32 | next unclaimed chunk
    std::atomic<int> done_{0};         // chunks finished in the current generation
    uint32_t generation_ = 0;          // guarded by mu_
    std::atomic<uint32_t> published_{0};
    bool stop_ = false;                // guarded by mu_
    Fn fn_ = nullptr;
    void *ctx_ = nullptr;
    int n_chunks_ = 0;
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
