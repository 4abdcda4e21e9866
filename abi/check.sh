#!/usr/bin/env bash
# ABI gate: compares the built libpangu_c.so with the recorded baseline in abi/.
#   abi/check.sh BUILD_DIR
# Fails when a baseline symbol is gone or abidiff reports an incompatible change; also fails when the
# library exports symbols the baseline does not list, so that every addition is recorded on purpose with
# abi/update.sh (see docs/abi.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lib=${1:?usage: abi/check.sh BUILD_DIR}/libpangu_c.so
[ -f "$lib" ] || { echo "abi: $lib not found" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

nm -D --defined-only "$lib" | awk '$2 == "T" || $2 == "D" || $2 == "B" || $2 == "R" {print $3}' | sort > "$tmp/symbols"
status=0
if ! diff -u "$here/pangu_c.symbols" "$tmp/symbols" > "$tmp/sym.diff"; then
  if grep -q '^-[^-]' "$tmp/sym.diff"; then
    echo "abi: FAIL: symbols removed from libpangu_c (an incompatible change):" >&2
    grep '^-[^-]' "$tmp/sym.diff" >&2
    status=1
  fi
  if grep -q '^+[^+]' "$tmp/sym.diff"; then
    echo "abi: FAIL: new exported symbols are not in the baseline; if the addition is intended, run abi/update.sh:" >&2
    grep '^+[^+]' "$tmp/sym.diff" >&2
    status=1
  fi
fi
if grep -qv '^pangu_\|^PANGU_' "$tmp/symbols"; then
  echo "abi: FAIL: symbols outside the pangu_ namespace are exported:" >&2
  grep -v '^pangu_\|^PANGU_' "$tmp/symbols" >&2
  status=1
fi

if command -v abidw >/dev/null && [ -f "$here/pangu_c.abi" ]; then
  abidw --headers-dir "$here/../include/pangu" --drop-private-types --no-corpus-path --out-file "$tmp/current.abi" "$lib"
  set +e
  # --no-architecture: a cross build (AArch64) is checked against the same x86-64 baseline; every type of the
  # API has the same layout on both LP64 Linux ABIs, and abidiff still compares each of them.
  abidiff --no-architecture --headers-dir2 "$here/../include/pangu" "$here/pangu_c.abi" "$tmp/current.abi" > "$tmp/abidiff.txt"
  rc=$?
  set -e
  # abidiff's exit status is a bit field: 4 = the ABI changed, 8 = the change is incompatible.
  if [ $((rc & 8)) -ne 0 ] || [ $((rc & 1)) -ne 0 ]; then
    echo "abi: FAIL: abidiff reports an incompatible change (status $rc):" >&2
    cat "$tmp/abidiff.txt" >&2
    status=1
  elif [ $((rc & 4)) -ne 0 ]; then
    echo "abi: compatible changes against the baseline (record them with abi/update.sh):"
    cat "$tmp/abidiff.txt"
  fi
else
  echo "abi: abidw not installed or no abi/pangu_c.abi: checked the symbol list only"
fi
[ $status -eq 0 ] && echo "abi: OK ($(wc -l < "$tmp/symbols") exported symbols match abi/pangu_c.symbols)"
exit $status
