#!/usr/bin/env bash
# Records the ABI of a built libpangu_c.so as the new baseline, after an intended, additive change:
#   abi/update.sh BUILD_DIR      (the build must carry debug info, as scripts/test.sh builds it)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
lib=${1:?usage: abi/update.sh BUILD_DIR}/libpangu_c.so
nm -D --defined-only "$lib" | awk '$2 == "T" || $2 == "D" || $2 == "B" || $2 == "R" {print $3}' | sort > "$here/pangu_c.symbols"
abidw --headers-dir "$here/../include/pangu" --drop-private-types --no-corpus-path --out-file "$here/pangu_c.abi" "$lib"
echo "abi: baseline updated: $(wc -l < "$here/pangu_c.symbols") symbols; review and commit abi/"
