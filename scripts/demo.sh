#!/usr/bin/env bash
# Build libpangu_c (Release) and stream a completion from the bundled model.
#   ./scripts/demo.sh                    the default demo
#   ./scripts/demo.sh -p 'import os' -n 100 --temp 0.7   extra pangu-cli flags override the defaults
# Set PANGU_BUILD_DIR to build somewhere other than build/.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
build=${PANGU_BUILD_DIR:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" --target pangu-cli generate

echo
echo "== $build/tools/pangu-cli -m models/pangu-tiny (completion on stdout, timings on stderr)"
exec "$build/tools/pangu-cli" -m models/pangu-tiny -p $'《静夜思》\n作者：李白\n床前明月光，' -n 64 --temp 0 "$@"
