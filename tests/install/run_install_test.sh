#!/usr/bin/env bash
# Install test: install the build into a temporary prefix, move the prefix (the install must be relocatable), then
# build and run programs OUTSIDE the source and build trees against it, the ways a user would:
#   1. cc $(pkg-config --cflags --libs pangu_c)  samples/generate.c   (shared library, rpath to the prefix)
#   2. cc ... $(pkg-config --static --libs pangu_c) against libpangu_c.a   (no libpangu_c.so needed at run time)
#   3. a CMake project: find_package(pangu_c 1 REQUIRED), pangu_c::pangu_c and pangu_c::pangu_c_static
# Each program runs on the bundled model and must print a non-empty completion and exit 0.
#
#   run_install_test.sh BUILD_DIR SOURCE_DIR MODEL_DIR VERSION CC CMAKE PKG_CONFIG
set -euo pipefail
build=$1 src=$2 model=$3 version=$4 cc=$5 cmake=$6 pkg_config=$7

# shellcheck source=tests/install/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
make_tmp install

step "cmake --install $build --prefix <tmp>"
"$cmake" --install "$build" --prefix "$tmp/stage" >"$log" 2>&1 || fail "cmake --install failed"
mv "$tmp/stage" "$tmp/prefix" # nothing may refer to the prefix installed to
prefix=$tmp/prefix
libdir=$(find_libdir "$prefix")
check_sdk_files "$prefix" "$libdir"
if grep -rqF "$tmp/stage" "$libdir/cmake" "$libdir/pkgconfig/pangu_c.pc"; then
  fail "installed package files name the install prefix"
fi

# Sources are copied out of the tree so that nothing can be picked up from beside them.
mkdir "$tmp/src"
cp "$src/samples/generate.c" "$tmp/src/"
cp -r "$src/tests/install/consumer" "$tmp/src/consumer"
cd "$tmp"
check_pkgconfig "$prefix" "$libdir" src/generate.c "$tmp/gen"

step "CMake find_package(pangu_c 1)"
"$cmake" -S src/consumer -B consumer-build -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER="$cc" \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF >"$log" 2>&1 || fail "configuring the consumer failed"
grep -q "^pangu_c_DIR:PATH=$libdir/cmake/pangu_c\$" consumer-build/CMakeCache.txt ||
  fail "the consumer found another pangu_c: $(grep '^pangu_c_DIR' consumer-build/CMakeCache.txt)"
"$cmake" --build consumer-build >"$log" 2>&1 || fail "building the consumer failed"
deps=$(readelf -d consumer-build/app_static)
if grep -q 'NEEDED.*libpangu_c' <<<"$deps"; then fail "app_static needs libpangu_c.so"; fi
run_completion app consumer-build/app
grep -q 'header and library agree' "$log" || fail "app did not compare header and library versions"
run_completion app_static consumer-build/app_static

step "SameMajorVersion"
# Any 1.x satisfies a request for 1 or 1.0; another major does not.
mkdir versions
cat >versions/CMakeLists.txt <<'EOF'
cmake_minimum_required(VERSION 3.18)
project(versions LANGUAGES C)
foreach(v 1 1.0 2 0.9)
  find_package(pangu_c ${v} QUIET)
  if(pangu_c_FOUND)
    message(STATUS "request ${v}: found")
  else()
    message(STATUS "request ${v}: not found")
  endif()
endforeach()
EOF
"$cmake" -S versions -B versions-build -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  >"$log" 2>&1 || fail "configuring the version check failed"
for want in "request 1: found" "request 1.0: found" "request 2: not found" "request 0.9: not found"; do
  grep -q -- "$want\$" "$log" || fail "version compatibility: expected '$want'"
done
echo "versions: ok"
echo "ok [install]"
