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

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pangu-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log=$tmp/log
fail() { echo "FAIL [install]: $*" >&2; [ -s "$log" ] && { echo "--- log"; cat "$log"; } >&2; exit 1; }
step() { echo "--- $*"; }

# run_completion NAME PROGRAM: runs PROGRAM MODEL PROMPT and checks for a completion after the echoed prompt.
prompt='def main():'
run_completion() {
  local name=$1 out
  shift
  out=$("$@" "$model" "$prompt" 2>"$log") || fail "$name exited $?"
  out=${out#"$prompt"}
  [ -n "${out//[[:space:]]/}" ] || fail "$name printed no completion"
  echo "$name: ok (${#out} characters of completion)"
}

step "cmake --install $build --prefix <tmp>"
"$cmake" --install "$build" --prefix "$tmp/stage" >"$log" 2>&1 || fail "cmake --install failed"
mv "$tmp/stage" "$tmp/prefix" # nothing may refer to the prefix installed to
prefix=$tmp/prefix
pc=$(find "$prefix" -name pangu_c.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$pc" ] || fail "no pangu_c.pc installed"
libdir=$(dirname "$(dirname "$pc")")
for f in "$prefix/include/pangu/pangu.h" "$libdir/libpangu_c.so" "$libdir/libpangu_c.so.${version%%.*}" \
         "$libdir/libpangu_c.so.$version" "$libdir/libpangu_c.a" "$libdir/cmake/pangu_c/pangu_cConfig.cmake" \
         "$libdir/cmake/pangu_c/pangu_cConfigVersion.cmake" "$libdir/cmake/pangu_c/pangu_cTargets.cmake"; do
  [ -e "$f" ] || fail "not installed: ${f#"$prefix"/}"
done
if grep -rqF "$tmp/stage" "$libdir/cmake" "$pc"; then fail "installed package files name the install prefix"; fi

# Sources are copied out of the tree so that nothing can be picked up from beside them.
mkdir "$tmp/src"
cp "$src/samples/generate.c" "$tmp/src/"
cp -r "$src/tests/install/consumer" "$tmp/src/consumer"
cd "$tmp"

step "pkg-config (shared)"
export PKG_CONFIG_PATH=$libdir/pkgconfig
[ "$("$pkg_config" --modversion pangu_c)" = "$version" ] || fail "pkg-config reports version $("$pkg_config" --modversion pangu_c)"
[ "$("$pkg_config" --variable=prefix pangu_c)" -ef "$prefix" ] || fail "pkg-config prefix $("$pkg_config" --variable=prefix pangu_c) is not the moved prefix"
# shellcheck disable=SC2046
"$cc" -std=c99 -Wall -Wextra -pedantic -Werror src/generate.c $("$pkg_config" --cflags --libs pangu_c) \
  -Wl,-rpath,"$libdir" -o gen-shared >"$log" 2>&1 || fail "compiling with pkg-config failed"
# (Outputs are captured before grep -q: with pipefail, grep -q closing the pipe early would fail the pipeline.)
deps=$(ldd ./gen-shared)
grep -q "=> $libdir/libpangu_c.so.${version%%.*} " <<<"$deps" || fail "gen-shared does not load the installed library: $deps"
run_completion gen-shared ./gen-shared

step "pkg-config --static (libpangu_c.a)"
# pkg-config names the library -lpangu_c, which the linker resolves to the .so; ask for the archive by file name.
static_libs=$("$pkg_config" --static --libs pangu_c | sed 's/-lpangu_c\b/-l:libpangu_c.a/')
# shellcheck disable=SC2046,SC2086
"$cc" -std=c99 src/generate.c $("$pkg_config" --cflags pangu_c) $static_libs -o gen-static >"$log" 2>&1 ||
  fail "static link with pkg-config --static failed"
deps=$(readelf -d gen-static)
if grep -q 'NEEDED.*libpangu_c' <<<"$deps"; then fail "gen-static still needs libpangu_c.so"; fi
run_completion gen-static ./gen-static

step "CMake find_package(pangu_c 1)"
unset PKG_CONFIG_PATH # the package finds its dependencies itself
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
