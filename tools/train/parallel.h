// The training engine's threads. OpenBLAS's own threading costs more than it gains on the engine's products
// (a profile of a pangu-tiny distillation step: half the time in its thread hand-offs, 18 % in its kernel), so
// the engine runs OpenBLAS on one thread and splits work itself: matrix products by blocks of output rows,
// attention by window and KV head, row-wise operations by rows.
#pragma once

#include <cstdint>
#include <functional>

namespace pangu::train {

// Threads the engine uses (0: one per online CPU); also puts OpenBLAS on one thread. Call before training.
void set_threads(int n);
int threads();

// fn(begin, end) over contiguous chunks of [0, n), in parallel, each at least `grain` long (the last may be
// shorter); returns when all are done. Chunks must write disjoint memory.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)> &fn);

}  // namespace pangu::train
