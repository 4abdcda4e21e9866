#!/usr/bin/env bash
# Install dependencies, build everything (Release, tests included) and run the whole test suite.
#   ./scripts/test.sh              all tests
#   ./scripts/test.sh -R smoke     extra arguments go to ctest
# The tests read the bundled model (models/pangu-tiny) and the shared data set at ../shared.
# Set PANGU_BUILD_DIR to build somewhere other than build/.
# Without extra arguments, four more steps follow the native suite: the multi-threaded tests under
# ThreadSanitizer, the suite under AddressSanitizer + UBSan, the fuzz harnesses for 60 s each, and the AArch64
# cross build under qemu-user; PANGU_SKIP_TSAN=1, PANGU_SKIP_ASAN=1, PANGU_SKIP_FUZZ=1 and PANGU_SKIP_CROSS=1
# skip them.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
if [ ! -d ../shared ]; then
  echo "test: warning: ../shared (the shared data set) is missing; tests that need it will fail" >&2
fi
build=${PANGU_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DPANGU_BUILD_TESTS=ON
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j2 --timeout 600 "$@"

# The multi-threaded tests (test_threads, the soak test, the training engine's test_train) again under
# ThreadSanitizer (a separate build of the library and those tests). PANGU_SKIP_TSAN=1 skips this step, e.g. for a quick local run.
if [ "${PANGU_SKIP_TSAN:-0}" != 1 ] && [ $# -eq 0 ]; then
  tsan=${build}-tsan
  cmake -S . -B "$tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPANGU_SANITIZE=thread -DPANGU_BUILD_TESTS=ON \
    -DPANGU_BUILD_SAMPLES=OFF -DPANGU_BUILD_TOOLS=OFF -DPANGU_BUILD_BENCH=OFF
  cmake --build "$tsan" -j"$(nproc)" --target test_threads soak test_train
  ctest --test-dir "$tsan" --output-on-failure -L threads --timeout 900
fi

# The whole suite again under AddressSanitizer + UndefinedBehaviorSanitizer (PANGU_SKIP_ASAN=1 skips it).
# test_arena and test_faults replace the allocator themselves (tests/capi/alloc_hook.c) and the install test
# builds programs outside the sanitizer, so they stay out; so do the two longest tests (perplexity over 16k
# tokens, 50 prompts), which only repeat paths the others cover and take minutes each under ASan. GCC 12's
# libstdc++ frees std::stable_sort's temporary buffer in a way ASan mistakes for an allocator mismatch
# (operator new vs free), hence alloc_dealloc_mismatch=0.
if [ "${PANGU_SKIP_ASAN:-0}" != 1 ] && [ $# -eq 0 ]; then
  asan=${build}-asan
  cmake -S . -B "$asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPANGU_SANITIZE="address;undefined" \
    -DPANGU_BUILD_TESTS=ON -DPANGU_BUILD_BENCH=OFF
  cmake --build "$asan" -j"$(nproc)"
  ASAN_OPTIONS=alloc_dealloc_mismatch=0:detect_leaks=1:abort_on_error=0 \
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    ctest --test-dir "$asan" --output-on-failure -j2 --timeout 1200 -E 'test_arena|test_faults|install|abi_check|Perplexity|FiftyDevPrompts'
fi

# Every fuzz harness for 60 s (tests/fuzz/run.sh: a clang build in build-fuzz/ with ASan + UBSan); a crash
# fails the run and is left in build-fuzz/fuzz-work/<harness>/. PANGU_SKIP_FUZZ=1 skips this step,
# PANGU_FUZZ_SECONDS changes the time per harness.
if [ "${PANGU_SKIP_FUZZ:-0}" != 1 ] && [ $# -eq 0 ]; then
  PANGU_FUZZ_BUILD_DIR=${build}-fuzz tests/fuzz/run.sh "${PANGU_FUZZ_SECONDS:-60}"
fi

# The AArch64 cross build (a 310P host: Kunpeng), tested under qemu-user: scripts/cross-test.sh, which installs
# the cross compiler and qemu and unpacks the arm64 packages into build-aarch64-deps/. Only an x86-64 machine
# cross-builds; PANGU_SKIP_CROSS=1 skips it.
if [ "${PANGU_SKIP_CROSS:-0}" != 1 ] && [ $# -eq 0 ]; then
  if [ "$(uname -m)" = x86_64 ]; then
    PANGU_CROSS_BUILD_DIR=${build}-aarch64 ./scripts/cross-test.sh
  else
    echo "test: the AArch64 cross build and qemu tests are skipped: they need an x86-64 build machine ($(uname -m) here)"
  fi
fi
