#!/usr/bin/env bash
# Package test: make the CPack packages of a build (cmake/packaging.cmake) and check them.
#   1. cpack into OUT_DIR: pangu_c-VERSION-Linux-PROCESSOR.tar.gz and the .deb packages libpangu-cN (runtime),
#      libpangu-c-dev and pangu-tools, named NAME_VERSION_ARCH.deb.
#   2. The .tar.gz holds what `cmake --install` installs, under one top directory; each .deb has the expected
#      control fields (`dpkg-deb --info`: package, version = the library's, architecture, section, maintainer,
#      dependencies) and the expected files (`dpkg-deb --contents`), owned by root, for the expected machine.
#   3. Unless only checking (no MODEL_DIR): the .tar.gz is unpacked and moved (it must be relocatable), the runtime
#      and -dev packages are unpacked with `dpkg-deb -x` (never installed), and samples/generate.c is built against
#      each with pkg-config, shared and static, and run on the model; pangu-cli runs from both.
#
#   run_package_test.sh BUILD_DIR SOURCE_DIR VERSION PROCESSOR DEB_ARCH CPACK OUT_DIR [MODEL_DIR CC PKG_CONFIG]
# DEB_ARCH '-': the build machine's (dpkg --print-architecture). OUT_DIR '-': a temporary directory, removed at
# the end; otherwise the packages stay there (earlier ones of this project are replaced). scripts/cross-test.sh
# runs it without MODEL_DIR for the arm64 packages.
set -euo pipefail
build=$1 src=$2 version=$3 processor=$4 arch=$5 cpack=$6 out=$7
model=${8:-} cc=${9:-} pkg_config=${10:-}
# shellcheck source=tests/install/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
make_tmp package
SECONDS=0

build=$(cd "$build" && pwd)
[ "$arch" != - ] || arch=$(dpkg --print-architecture)
major=${version%%.*}
case $arch in
amd64) machine='X86-64' ;;
arm64) machine='AArch64' ;;
*) machine='' ;; # not checked
esac

step "cpack -> ${out/#-/<tmp>}"
if [ "$out" = - ]; then
  out=$tmp/packages
else
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  rm -rf "$out"/pangu_c-*.tar.gz "$out"/libpangu-c*.deb "$out"/pangu-tools_*.deb "$out/_CPack_Packages"
fi
mkdir -p "$out"
# cpack first builds the `preinstall` target (nothing to do in a built tree), then stages and packs into -B.
(cd "$out" && "$cpack" --config "$build/CPackConfig.cmake" -B "$out") >"$log" 2>&1 || fail "cpack failed"
rm -rf "$out/_CPack_Packages" # the staging trees
: >"$log"
tgz=pangu_c-$version-Linux-$processor.tar.gz
runtime=libpangu-c${major}_${version}_$arch.deb
dev=libpangu-c-dev_${version}_$arch.deb
tools=pangu-tools_${version}_$arch.deb
made=$(cd "$out" && ls)
[ "$(sort <<<"$made")" = "$(printf '%s\n' "$runtime" "$dev" "$tools" "$tgz" | sort)" ] ||
  fail "cpack made: ${made//$'\n'/ }; expected $tgz $runtime $dev $tools"
for f in "$tgz" "$runtime" "$dev" "$tools"; do printf '  %9d  %s\n' "$(stat -c %s "$out/$f")" "$f"; done

# list_files CONTENTS TOP: the paths of a `tar tv` / `dpkg-deb --contents` listing below TOP, less directories, with
# " -> TARGET" for symbolic links.
list_files() {
  awk -v top="$2" '$1 !~ /^d/ { p = $6; for (i = 7; i <= NF; i++) p = p " " $i; sub("^" top, "", p); print p }' \
    <<<"$1" | sort
}
# expect_files WHAT LISTING EXPECTED...: LISTING (from list_files) is EXPECTED, plus further programs under bin/
# where EXPECTED has bin/ files (a tool added since), which are printed.
expect_files() {
  local what=$1 listing=$2 extra missing
  shift 2
  local expected
  expected=$(printf '%s\n' "$@" | sort)
  missing=$(comm -13 <(printf '%s\n' "$listing") <(printf '%s\n' "$expected"))
  [ -z "$missing" ] || fail "$what lacks: ${missing//$'\n'/ }"
  extra=$(comm -23 <(printf '%s\n' "$listing") <(printf '%s\n' "$expected"))
  if [ -n "$extra" ]; then
    if grep -q '^bin/' <<<"$expected" && ! grep -qv '^bin/[^/ ]*$' <<<"$extra"; then
      echo "  $what also holds: ${extra//$'\n'/ }"
    else
      fail "$what holds files it should not: ${extra//$'\n'/ }"
    fi
  fi
}

step "$tgz: contents"
listing=$(tar tvzf "$out/$tgz") || fail "tar cannot list $tgz"
top=pangu_c-$version-Linux-$processor/
[ -z "$(awk -v top="$top" 'index($6, top) != 1' <<<"$listing")" ] || fail "$tgz has files outside $top"
files=$(list_files "$listing" "$top")
libdir=$(sed -n 's#^\(.*\)/pkgconfig/pangu_c.pc$#\1#p' <<<"$files")
[ -n "$libdir" ] || fail "$tgz has no pangu_c.pc"
# pangu_cTargets-<config>.cmake: one for the build type.
targets_cfg=$(grep "^$libdir/cmake/pangu_c/pangu_cTargets-[a-z]*\.cmake$" <<<"$files" | head -n 1) ||
  fail "$tgz has no pangu_cTargets-<config>.cmake"
runtime_files=("$libdir/libpangu_c.so.$major -> libpangu_c.so.$version" "$libdir/libpangu_c.so.$version")
dev_files=(include/pangu/pangu.h "$libdir/libpangu_c.so -> libpangu_c.so.$major" "$libdir/libpangu_c.a"
  "$libdir/pkgconfig/pangu_c.pc" "$libdir/cmake/pangu_c/pangu_cConfig.cmake"
  "$libdir/cmake/pangu_c/pangu_cConfigVersion.cmake" "$libdir/cmake/pangu_c/pangu_cTargets.cmake" "$targets_cfg")
tools_files=(bin/pangu-cli bin/pangu-perplexity bin/pangu-quantize)
expect_files "$tgz" "$files" "${runtime_files[@]}" "${dev_files[@]}" "${tools_files[@]}"
echo "$tgz: ok (libdir $libdir)"

# check_deb FILE PACKAGE SECTION DEPENDS FILES...: control fields and contents of one .deb. DEPENDS: a
# space-separated list of what the Depends field must hold, each 'name' or 'name (relation version)'.
check_deb() {
  local name=$1 deb=$out/$1 package=$2 section=$3 depends=$4 field want got listing dep deps names
  shift 4
  step "$name: dpkg-deb --info, --contents"
  dpkg-deb --info "$deb" >"$log" 2>&1 || fail "dpkg-deb --info $name failed"
  for field in Package:"$package" Version:"$version" Architecture:"$arch" Section:"$section" Priority:optional; do
    want=${field#*:}
    got=$(dpkg-deb --field "$deb" "${field%%:*}")
    [ "$got" = "$want" ] || fail "$name: ${field%%:*} is '$got', expected '$want'"
  done
  grep -Eq '^[^<>]+ <[^@ ]+@[^> ]+>$' <<<"$(dpkg-deb --field "$deb" Maintainer)" ||
    fail "$name: Maintainer '$(dpkg-deb --field "$deb" Maintainer)' is not 'Name <address>'"
  [ -n "$(dpkg-deb --field "$deb" Description)" ] || fail "$name: no Description"
  # One dependency a line ('name' or 'name (relation version)'), and the names alone.
  deps=$(dpkg-deb --field "$deb" Depends | sed 's/, */\n/g')
  names=$(awk -F' *[(]' '{print $1}' <<<"$deps")
  for dep in $depends; do
    dep=${dep//_/ }
    if [[ $dep == *'('* ]]; then
      grep -qxF "$dep" <<<"$deps" || fail "$name: Depends lacks '$dep': $(dpkg-deb --field "$deb" Depends)"
    else
      grep -qxF "$dep" <<<"$names" || fail "$name: Depends lacks $dep: $(dpkg-deb --field "$deb" Depends)"
    fi
  done
  listing=$(dpkg-deb --contents "$deb") || fail "dpkg-deb --contents $name failed"
  [ -z "$(awk 'index($6, "./usr/") != 1 && $6 != "./"' <<<"$listing")" ] || fail "$name has files outside /usr"
  got=$(awk '{print $2}' <<<"$listing" | sort -u)
  [ "$got" = root/root ] || fail "$name has files owned by ${got//$'\n'/ }"
  expect_files "$name" "$(list_files "$listing" ./usr/)" "$@"
  echo "$name: ok (Depends: $(dpkg-deb --field "$deb" Depends))"
}
# Dependencies with the relation and version joined by '_' (split on spaces above).
same="(=_$version)"
check_deb "$runtime" "libpangu-c$major" libs "libc6 libstdc++6 libsentencepiece0 libjsoncpp25" "${runtime_files[@]}"
shlibs=$(dpkg-deb --ctrl-tarfile "$out/$runtime" | tar xOf - ./shlibs 2>/dev/null) || fail "$runtime has no shlibs file"
[ "$shlibs" = "libpangu_c $major libpangu-c$major (>= $version)" ] || fail "$runtime: shlibs is '$shlibs'"
check_deb "$dev" libpangu-c-dev libdevel "libpangu-c${major}_$same libsentencepiece-dev libjsoncpp-dev" \
  "${dev_files[@]}"
check_deb "$tools" pangu-tools utils "libpangu-c${major}_$same libc6" "${tools_files[@]}"

# The machine of the binaries: unpack the packages (also for the builds below).
debroot=$tmp/deb
for deb in "$runtime" "$dev" "$tools"; do dpkg-deb -x "$out/$deb" "$debroot" || fail "dpkg-deb -x $deb failed"; done
if [ -n "$machine" ]; then
  for f in "usr/$libdir/libpangu_c.so.$version" usr/bin/pangu-cli usr/bin/pangu-quantize; do
    got=$(readelf -h "$debroot/$f" | sed -n 's/^ *Machine: *//p')
    [[ $got == *"$machine"* ]] || fail "$f is for '$got', not $machine"
  done
  echo "binaries: $machine"
fi

if [ -z "$model" ]; then
  echo "ok [package] (packages checked, not run; ${SECONDS} s)"
  exit 0
fi

mkdir "$tmp/src"
cp "$src/samples/generate.c" "$tmp/src/"
cd "$tmp"

# run_cli NAME CLI: pangu-cli reports the library's version and completes a prompt.
run_cli() {
  local got
  got=$("$2" --version 2>&1) || fail "$1 --version exited $?"
  [ "$got" = "pangu-cli $version (libpangu_c $version)" ] || fail "$1 --version printed '$got'"
  got=$("$2" -m "$model" -p "$prompt" -n 8 --temp 0 2>"$log") || fail "$1 exited $?"
  got=${got#"$prompt"}
  [ -n "${got//[[:space:]]/}" ] || fail "$1 printed no completion"
  echo "$1: ok"
}

step "$tgz: unpack, move, build against it"
mkdir "$tmp/stage"
tar xzf "$out/$tgz" -C "$tmp/stage"
mv "$tmp/stage/$top" "$tmp/sdk" # relocatable: nothing may refer to where it was unpacked
check_sdk_files "$tmp/sdk" "$tmp/sdk/$libdir"
check_pkgconfig "$tmp/sdk" "$tmp/sdk/$libdir" src/generate.c "$tmp/sdk-gen"
run_cli "pangu-cli (.tar.gz)" "$tmp/sdk/bin/pangu-cli"

step ".deb: build against the unpacked runtime and -dev packages"
check_sdk_files "$debroot/usr" "$debroot/usr/$libdir"
check_pkgconfig "$debroot/usr" "$debroot/usr/$libdir" src/generate.c "$tmp/deb-gen"
run_cli "pangu-cli (.deb)" "$debroot/usr/bin/pangu-cli"

echo "ok [package] (${SECONDS} s)"
