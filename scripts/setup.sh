#!/usr/bin/env bash
# Install what building and testing libpangu_c needs (Debian 12; any Debian/Ubuntu with apt works).
# Idempotent: when everything is present it only checks, needs no root and takes a fraction of a second.
# Extra package names given as arguments are installed too.
set -euo pipefail

PACKAGES=(
  build-essential        # gcc, g++, make
  cmake
  pkg-config
  libsentencepiece-dev   # tokenizer
  libjsoncpp-dev         # config.json, safetensors headers
  libeigen3-dev          # matrix products of the quantizer's calibration pass (tools/lib/calib.cpp)
  libopenblas-dev        # ... through OpenBLAS: GPTQ and calibration statistics on the 1B shape (tools/lib/lowbit.cpp)
  libcmocka-dev          # C API tests
  libgtest-dev           # internal C++ tests
  abigail-tools          # abidw/abidiff: the ABI gate (abi/check.sh)
  clang                  # the fuzz harnesses (tests/fuzz) are libFuzzer programs
  libclang-rt-dev        # libFuzzer and the sanitizer runtimes for clang
  python3                # bench scripts (pld_ceiling.py, bench_quant.sh's report) and their test
  dpkg-dev               # dpkg-shlibdeps: the .deb packages' dependencies (cpack; cmake/packaging.cmake)
  file                   # cpack's .deb generator finds the binaries with it
)
missing=()
for p in "${PACKAGES[@]}" "$@"; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: build dependencies present"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: missing packages: ${missing[*]}; this script needs apt-get (Debian/Ubuntu). Install them by hand." >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=(env)
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo env)
else
  echo "setup: missing packages: ${missing[*]}; run this script as root or install sudo." >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
"${as_root[@]}" DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "setup: done"
