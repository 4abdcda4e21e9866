# shellcheck shell=bash disable=SC2154
# Shell functions shared by the install tests (sourced by run_install_test.sh and run_package_test.sh): a
# temporary directory, failure reporting, and building and running samples/generate.c against an installed
# libpangu_c with pkg-config, shared and static. The sourcing script sets, before using them:
#   model, version, cc, pkg_config    the bundled model, the library's version, the C compiler, pkg-config

# make_tmp NAME: a temporary directory $tmp, removed on exit, with the log file $log; NAME labels failures.
make_tmp() {
  test_name=$1
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/pangu-$1.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  log=$tmp/log
}
fail() { echo "FAIL [$test_name]: $*" >&2; [ -s "$log" ] && { echo "--- log"; cat "$log"; } >&2; exit 1; }
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

# find_libdir PREFIX: prints the directory that holds the installed pangu_c.pc's pkgconfig/ (<prefix>/<libdir>).
find_libdir() {
  local pc
  pc=$(find "$1" -name pangu_c.pc -path '*/pkgconfig/*' | head -n 1)
  [ -n "$pc" ] || fail "no pangu_c.pc under ${1#"$tmp"/}"
  dirname "$(dirname "$pc")"
}

# check_sdk_files PREFIX LIBDIR: the files `cmake --install` puts into a prefix are there.
check_sdk_files() {
  local prefix=$1 libdir=$2 f
  for f in "$prefix/include/pangu/pangu.h" "$libdir/libpangu_c.so" "$libdir/libpangu_c.so.${version%%.*}" \
           "$libdir/libpangu_c.so.$version" "$libdir/libpangu_c.a" "$libdir/pkgconfig/pangu_c.pc" \
           "$libdir/cmake/pangu_c/pangu_cConfig.cmake" "$libdir/cmake/pangu_c/pangu_cConfigVersion.cmake" \
           "$libdir/cmake/pangu_c/pangu_cTargets.cmake"; do
    [ -e "$f" ] || fail "not installed: ${f#"$prefix"/}"
  done
}

# check_pkgconfig PREFIX LIBDIR SOURCE OUT: compiles SOURCE (samples/generate.c, copied out of the tree) with
# pkg-config against the library in PREFIX, shared (OUT-shared, rpath to LIBDIR) and static (OUT-static, against
# libpangu_c.a), checks what each loads and runs both on the model.
check_pkgconfig() {
  local prefix=$1 libdir=$2 source=$3 out=$4 deps static_libs
  step "pkg-config (shared): ${prefix#"$tmp"/}"
  export PKG_CONFIG_PATH=$libdir/pkgconfig
  [ "$("$pkg_config" --modversion pangu_c)" = "$version" ] ||
    fail "pkg-config reports version $("$pkg_config" --modversion pangu_c)"
  [ "$("$pkg_config" --variable=prefix pangu_c)" -ef "$prefix" ] ||
    fail "pkg-config prefix $("$pkg_config" --variable=prefix pangu_c) is not the prefix ${prefix#"$tmp"/}"
  # shellcheck disable=SC2046
  "$cc" -std=c99 -Wall -Wextra -pedantic -Werror "$source" $("$pkg_config" --cflags --libs pangu_c) \
    -Wl,-rpath,"$libdir" -o "$out-shared" >"$log" 2>&1 || fail "compiling with pkg-config failed"
  # (Outputs are captured before grep -q: with pipefail, grep -q closing the pipe early would fail the pipeline.)
  deps=$(ldd "$out-shared")
  grep -q "=> $libdir/libpangu_c.so.${version%%.*} " <<<"$deps" ||
    fail "$(basename "$out")-shared does not load the library in ${prefix#"$tmp"/}: $deps"
  run_completion "$(basename "$out")-shared" "$out-shared"

  step "pkg-config --static (libpangu_c.a): ${prefix#"$tmp"/}"
  # pkg-config names the library -lpangu_c, which the linker resolves to the .so; ask for the archive by file name.
  static_libs=$("$pkg_config" --static --libs pangu_c | sed 's/-lpangu_c\b/-l:libpangu_c.a/')
  # shellcheck disable=SC2046,SC2086
  "$cc" -std=c99 "$source" $("$pkg_config" --cflags pangu_c) $static_libs -o "$out-static" >"$log" 2>&1 ||
    fail "static link with pkg-config --static failed"
  deps=$(readelf -d "$out-static")
  if grep -q 'NEEDED.*libpangu_c' <<<"$deps"; then fail "$(basename "$out")-static still needs libpangu_c.so"; fi
  run_completion "$(basename "$out")-static" "$out-static"
  unset PKG_CONFIG_PATH
}
