#!/usr/bin/env bash
# Cross-build libpangu_c for AArch64 Linux (a 310P host: Kunpeng) on an x86-64 Debian 12 machine and run the
# test suite, less its longest tests, under qemu-user. CI runs it after the native suite (scripts/test.sh).
#   ./scripts/cross-test.sh             install what is missing, build, run the qemu selection
#   ./scripts/cross-test.sh -R Kernels  extra arguments go to ctest, after the selection's own
# Between the build and the tests it makes the arm64 .tar.gz and .deb packages (cpack) into
# build-aarch64/packages and checks them with dpkg-deb.
# It installs the cross compiler and qemu-user with apt-get (sudo when not root) but no arm64 library package:
# Debian 12's libsentencepiece0 is not co-installable across architectures, and installing the arm64 one
# would remove the amd64 one that the native build needs. The arm64 packages are downloaded and unpacked into
# build-aarch64-deps/ instead (PANGU_AARCH64_DEPS_DIR to change it); the build goes to build-aarch64/
# (PANGU_CROSS_BUILD_DIR). Once both exist, a run only rebuilds what changed and runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ "$(uname -m)" != x86_64 ]; then
  echo "cross-test: this script cross-builds on an x86-64 host; on $(uname -m), build and test natively" >&2
  exit 1
fi

deps=${PANGU_AARCH64_DEPS_DIR:-build-aarch64-deps}
build=${PANGU_CROSS_BUILD_DIR:-build-aarch64}
mkdir -p "$deps"
deps=$(cd "$deps" && pwd)   # absolute: it is written into the .pc files and the CMake cache
SECONDS=0
phase() { echo "cross-test: $1 (${SECONDS} s)"; }

# The build machine's side: the cross compiler (with the arm64 C and C++ runtimes) and qemu-aarch64.
./scripts/setup.sh crossbuild-essential-arm64 qemu-user

# The arm64 packages that the library, tests and samples link against: each -dev package and the runtime
# package that holds its shared library. libgtest-dev holds static libraries only; libc, libstdc++ and libgcc
# are the cross toolchain's (libc6-dev-arm64-cross, libstdc++-12-dev-arm64-cross).
ARM64_PACKAGES=(libsentencepiece0 libsentencepiece-dev libjsoncpp25 libjsoncpp-dev libcmocka0 libcmocka-dev
                libgtest-dev)
stamp="$deps/.unpacked"
want="${ARM64_PACKAGES[*]} -> $deps"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if [ "$(id -u)" -eq 0 ]; then as_root=(env); else as_root=(sudo env); fi
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "cross-test: adding the arm64 architecture to dpkg (for apt-get download; no arm64 package is installed)"
    "${as_root[@]}" dpkg --add-architecture arm64
  fi
  update() { "${as_root[@]}" DEBIAN_FRONTEND=noninteractive apt-get update -q; }
  # apt knows arm64 packages only after an update that followed --add-architecture.
  apt-cache show libsentencepiece0:arm64 >/dev/null 2>&1 || update
  echo "cross-test: downloading ${ARM64_PACKAGES[*]} (arm64) into $deps"
  rm -rf "$deps/debs" "$deps/usr"   # what an earlier, interrupted run may have left (the packages hold only usr/)
  mkdir -p "$deps/debs"
  # As root, apt hands downloads to its sandbox user, who may not write here.
  sandbox=()
  [ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)
  download() { (cd "$deps/debs" && apt-get download -q "${sandbox[@]}" "${ARM64_PACKAGES[@]/%/:arm64}"); }
  # Lists older than the archive name versions it no longer has: refresh them once and retry.
  download || { update && download; }
  for deb in "$deps"/debs/*.deb; do dpkg-deb -x "$deb" "$deps"; done
  # The .pc files name /usr; point them into the unpacked tree (prefix= lines and literal -L/-I paths).
  for pc in "$deps"/usr/lib/aarch64-linux-gnu/pkgconfig/*.pc "$deps"/usr/share/pkgconfig/*.pc; do
    [ -f "$pc" ] || continue
    sed -i -E "s#(^prefix=|^exec_prefix=|^libdir=|^includedir=|-L|-I)/usr(/|\$| )#\1$deps/usr\2#g" "$pc"
  done
  printf '%s\n' "$want" >"$stamp"
fi
phase "build machine and arm64 packages ready"

if [ ! -d ../shared ]; then
  echo "cross-test: warning: ../shared (the shared data set) is missing; tests that need it will fail" >&2
fi
cmake -S . -B "$build" -DCMAKE_TOOLCHAIN_FILE="$root/toolchains/aarch64-linux-gnu.cmake" \
  -DPANGU_AARCH64_DEPS="$deps" -DCMAKE_BUILD_TYPE=Release -DPANGU_BUILD_TESTS=ON -DPANGU_BUILD_BENCH=OFF
cmake --build "$build" -j"$(nproc)"
phase "built for AArch64"

# The arm64 SDK packages (cmake/packaging.cmake; docs/install.md#packages): cpack into $build/packages, then
# the names, dpkg architecture (arm64), control fields, contents and ELF machine checked with dpkg-deb and
# readelf. Nothing from them runs here (the tests below run the same binaries under qemu).
version=$(sed -n 's/^#define PANGU_VERSION_STRING "\(.*\)"$/\1/p' include/pangu/pangu.h)
bash tests/install/run_package_test.sh "$build" "$root" "$version" aarch64 arm64 cpack "$build/packages"
phase "arm64 packages in $build/packages"

# Under qemu one thread runs about 150 times slower than natively. Everything runs except these, which take
# from over a minute to more than 6 minutes each there (measured on a loaded 2-core machine) and exercise no
# AArch64 code that the tests kept here miss: the NEON kernels against the scalar reference, batch and thread
# invariance, the fp32 golden logits and greedy continuations (1 and 2 threads), prompt-lookup speculation
# against plain greedy, W8A16, npu-sim, the loader, the error paths and the samples all run.
#   Quantize.Perplexity...           perplexity over 16k tokens of dev.jsonl, fp32 and W8A16
#   Speculative.*FiftyDevPrompts     50 documents; PLD exactness runs on the golden prompts instead
#   Speculative.SpeculativeSampling* 6000 short sampled generations to compare distributions
#   Speculative.DraftLengths*, DraftModelAndSelfDraft*, PldSampling*
#                                    6 to 12 documents, several configurations each
#   DeviceNpuSimModel.PromptLookup*, W8A16Golden*
#                                    npu-sim repeats of the cpu backend's speculation and W8A16 checks
#   test_stream, test_session, test_arena
#                                    C API tests of streaming, sessions and the arena: many generations each
#   QuantizeLowBit.W4A16GptqBeatsRoundToNearest, QuantizeLowBit.MixedPrecisionReportMatchesTheFiles
#                                    pangu-quantize's GPTQ and mixed precision on 8192 / 4096 calibration tokens
#                                    (and two perplexity runs): 22 s and 12 s natively, past 900 s each under
#                                    qemu; the low-bit math runs in test_lowbit, the checkpoints in test_intact
#   prune.*, train_io.*              pangu-prune, pangu-distill and the training engine's checkpoints: 14 s and
#                                    5 s natively, past 30 and 10 minutes under qemu; tools of the build
#                                    machine, not of the device (the engine's math runs here in test_train)
#   soak                             its memory checks read the process's resident memory, and under
#                                    qemu-user that includes the emulator's own translation buffers, which
#                                    grow as it translates more code (+4 MB in 45 s); natively and under
#                                    TSan it runs in the other CI steps
slow='Quantize\.Perplexity|Speculative\.(PldGreedyIsIdenticalOnFiftyDevPrompts|SpeculativeSampling|DraftLengths'
slow+='|DraftModelAndSelfDraft|PldSampling)|DeviceNpuSimModel\.(PromptLookup|W8A16Golden)'
slow+='|QuantizeLowBit\.(W4A16GptqBeatsRoundToNearest|MixedPrecisionReportMatchesTheFiles)'
slow+='|^test_(stream|session|arena)$|^soak$|^prune\.|^train_io\.'
ctest --test-dir "$build" --output-on-failure -j2 --timeout 600 -E "$slow" "$@"
phase "done"
