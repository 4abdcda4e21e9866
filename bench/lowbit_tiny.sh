#!/usr/bin/env bash
# Low-bit weights on pangu-tiny (issue #18): each scheme's perplexity on two held-out texts, its greedy agreement
# with the 16-bit model, its packed bytes and average width. Prints one line per variant (docs/quantization.md,
# "Low-bit weights measured on pangu-tiny", is this table).
#
#   bench/lowbit_tiny.sh [--build DIR] [--work DIR] [variant ...]
#
# The split of ../shared/data/dev.jsonl (docs/quantization.md): the even documents calibrate (calib.jsonl), the
# odd ones evaluate: eval-8k.jsonl is every odd document cut to its first 8 KB (58,260 tokens from 160
# documents), eval.jsonl the odd documents whole, of which the first 16384 tokens are scored.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=$here/build
work=/tmp/pangu-lowbit
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    *) break ;;
  esac
done
model=$here/models/pangu-tiny
data=$here/../shared/data/dev.jsonl
Q=$build/tools/pangu-quantize P=$build/tools/pangu-perplexity G=$build/bench/greedy_agreement
# shellcheck source=bench/dev_split.sh
. "$here/bench/dev_split.sh"
dev_split "$data" "$work"
C="--calib $work/calib.jsonl --calib-jsonl"

# name | pangu-quantize arguments
variants=(
  "w4-rtn-sym|--scheme w4a16 --group 64 --method rtn --sym"
  "w4-rtn|--scheme w4a16 --group 64 --method rtn"
  "w4-gptq-sym|--scheme w4a16 --group 64 --sym $C"
  "w4-gptq|--scheme w4a16 --group 64 $C"
  "w4-gptq-ao|--scheme w4a16 --group 64 --act-order $C"
  "w4-gptq-g32|--scheme w4a16 --group 32 $C"
  "mixed-8|--scheme mixed --group 64 --avg-bits 8 $C"
  "mixed-6|--scheme mixed --group 64 --avg-bits 6 $C"
  "mixed-4|--scheme mixed --group 64 --avg-bits 4 $C"
  "mixed-4-rtn|--scheme mixed --group 64 --avg-bits 4 --method rtn $C"
  "mixed-3.2|--scheme mixed --group 64 --avg-bits 3.2 $C"
  "mixed-quantile|--scheme mixed --group 64 --alloc quantile $C"
  "mixed-attn5|--scheme mixed --group 64 --avg-bits-attn 5 --avg-bits-mlp 3.6667 $C"
)
ppl() { "$P" -m "$1" -f "$2" --jsonl -c 256 ${3:+--max-tokens $3} --json 2>/dev/null |
        python3 -c 'import json, sys; print("%.4f" % json.load(sys.stdin)["ppl"])'; }
agree() { "$G" --ref "$model" -m "$1" --data "$data" -t 2 --json 2>/dev/null |
          python3 -c 'import json, sys; print(json.load(sys.stdin)["identical"])'; }
printf '%-16s %10s %10s %8s %10s %8s\n' variant eval-8k eval-16k agree bytes bits
printf '%-16s %10s %10s %8s %10s %8s\n' 16-bit "$(ppl "$model" "$work/eval-8k.jsonl")" \
  "$(ppl "$model" "$work/eval.jsonl" 16384)" - - 16
for v in "${variants[@]}"; do
  name=${v%%|*} args=${v#*|}
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  out=$work/$name
  # shellcheck disable=SC2086
  "$Q" -i "$model" -o "$out" --force --quiet --report "$out.json" $args
  read -r bytes bits < <(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["bytes"], "%.3f" % r["avg_bits"])' "$out.json")
  printf '%-16s %10s %10s %8s %10s %8s\n' "$name" "$(ppl "$out" "$work/eval-8k.jsonl")" \
    "$(ppl "$out" "$work/eval.jsonl" 16384)" "$(agree "$out")" "$bytes" "$bits"
done
