#!/usr/bin/env bash
# Structured MLP pruning on pangu-tiny (issue #19): at each share of MLP neurons removed, the perplexity of
# magnitude one-shot, Wanda one-shot, Taylor one-shot, Taylor in 5 rounds, and Taylor in 5 rounds with KL
# distillation from the unpruned model after each round; and each model's greedy agreement with the unpruned
# one. Prints one line per variant (docs/pruning.md, "Measured on pangu-tiny", is this table).
#
#   bench/prune_tiny.sh [--build DIR] [--work DIR] [--ratios "0.125 0.25 ..."] [--kd-steps N] [variant ...]
#
# The split of ../shared/data/dev.jsonl (bench/dev_split.sh, shared with bench/lowbit_tiny.sh): the odd lines (1st, 3rd, ... document)
# calibrate and train the distillation (calib.jsonl, 160 documents), the even lines evaluate, each cut to its
# first 8 KB (eval-8k.jsonl: 58,260 tokens from 160 documents), all of it scored by pangu-perplexity in windows of
# 256 tokens. Scoring reads the first 16384 calibration tokens (the tool's default), windows of 256.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=$here/build
work=/tmp/pangu-prune
ratios="0.125 0.25 0.375 0.5"
kd_steps=40
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --ratios) ratios=$2; shift 2 ;;
    --kd-steps) kd_steps=$2; shift 2 ;;
    *) break ;;
  esac
done
model=$here/models/pangu-tiny
data=$here/../shared/data/dev.jsonl
PR=$build/tools/pangu-prune P=$build/tools/pangu-perplexity G=$build/bench/greedy_agreement
# shellcheck source=bench/dev_split.sh
. "$here/bench/dev_split.sh"
dev_split "$data" "$work"
C="--calib $work/calib.jsonl --align 64"

# name | pangu-prune arguments
variants=(
  "magnitude-1|--score magnitude --rounds 1"
  "wanda-1|--score wanda --rounds 1"
  "taylor-1|--score taylor --rounds 1"
  "taylor-1-window|--score taylor --rounds 1 --score-batch 1"
  "taylor-5|--score taylor --rounds 5"
  "taylor-5-kd|--score taylor --rounds 5 --distill-steps $kd_steps --batch 8"
)
ppl() { "$P" -m "$1" -f "$work/eval-8k.jsonl" --jsonl -c 256 --json 2>/dev/null |
        python3 -c 'import json, sys; print("%.4f" % json.load(sys.stdin)["ppl"])'; }
agree() { "$G" --ref "$model" -m "$1" --data "$data" -t 2 --json 2>/dev/null |
          python3 -c 'import json, sys; print(json.load(sys.stdin)["identical"])'; }
base=$(ppl "$model")
printf '%-6s %-13s %9s %8s %6s %6s  %s\n' ratio variant ppl vs-16bit agree secs widths
printf '%-6s %-13s %9s %8s %6s %6s  %s\n' 0 unpruned "$base" - - - -
for r in $ratios; do
  for v in "${variants[@]}"; do
    name=${v%%|*} args=${v#*|}
    if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
    if [ $# -eq 0 ] && [ "$name" = taylor-1-window ]; then continue; fi  # by name only: a comparison of scorings
    out=$work/$name-$r
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$PR" -i "$model" -o "$out" --ratio "$r" --force --quiet --report "$out.json" $C $args
    secs=$(python3 -c "import sys; print('%.0f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$(date +%s.%N)")
    widths=$(python3 -c 'import json, sys; print(" ".join(str(w) for w in json.load(open(sys.argv[1]))["widths"]))' "$out.json")
    p=$(ppl "$out")
    printf '%-6s %-13s %9s %+7.2f%% %6s %6s  %s\n' "$r" "$name" "$p" \
      "$(python3 -c "print(100 * ($p / $base - 1))")" "$(agree "$out")" "$secs" "$widths"
  done
done
