#!/usr/bin/env bash
# Install dependencies, build everything (Release, tests included) and run the whole test suite.
#   ./scripts/test.sh              all tests
#   ./scripts/test.sh -R smoke     extra arguments go to ctest
# The tests read the bundled model (models/pangu-tiny) and the shared data set at ../shared.
# Set PANGU_BUILD_DIR to build somewhere other than build/.
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

# The multi-threaded tests again under ThreadSanitizer (a separate build of the library and those tests).
# PANGU_SKIP_TSAN=1 skips this step, e.g. for a quick local run.
if [ "${PANGU_SKIP_TSAN:-0}" != 1 ] && [ $# -eq 0 ]; then
  tsan=${build}-tsan
  cmake -S . -B "$tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPANGU_SANITIZE=thread -DPANGU_BUILD_TESTS=ON \
    -DPANGU_BUILD_SAMPLES=OFF -DPANGU_BUILD_TOOLS=OFF -DPANGU_BUILD_BENCH=OFF
  cmake --build "$tsan" -j"$(nproc)" --target test_threads
  ctest --test-dir "$tsan" --output-on-failure -L threads --timeout 900
fi
