#!/usr/bin/env bash
# KV cache types on pangu-tiny (issue #20): for each of f32, f16, bf16 and q8, the perplexity of the evaluation
# half of ../shared/data/dev.jsonl against the F32 cache's, and greedy agreement with the F32 cache on 50 of its
# prompts (64 prompt tokens, 64 generated). docs/memory.md, "KV cache types", is this table.
#
#   bench/kv_tiny.sh [--build DIR] [--work DIR] [--ctx "N ..."]
#
# The split is bench/dev_split.sh's (shared with lowbit_tiny.sh and prune_tiny.sh): the even lines, each cut to
# its first 8 KB (eval-8k.jsonl: 58,260 tokens from 160 documents), scored by pangu-perplexity in windows of
# 256 tokens (pangu-tiny's training length) and of 1024 (sixteen 64-position tiles of attention; the model's
# quality drops past 256 tokens, the arithmetic does not). --ctx "N ..." picks other windows.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=$here/build
work=/tmp/pangu-kv
ctxs="256 1024"
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --ctx) ctxs=$2; shift 2 ;;
    *) echo "usage: bench/kv_tiny.sh [--build DIR] [--work DIR] [--ctx "N ..."]" >&2; exit 2 ;;
  esac
done
model=$here/models/pangu-tiny
data=$here/../shared/data/dev.jsonl
P=$build/tools/pangu-perplexity G=$build/bench/greedy_agreement
# shellcheck source=bench/dev_split.sh
. "$here/bench/dev_split.sh"
dev_split "$data" "$work"
ppl() { "$P" -m "$model" -f "$work/eval-8k.jsonl" --jsonl -c "$2" --kv-type "$1" --json 2>/dev/null |
        python3 -c 'import json, sys; print("%.6f" % json.load(sys.stdin)["ppl"])'; }
agree() { "$G" --ref "$model" --ref-kv-type f32 -m "$model" --kv-type "$1" --data "$data" -t 2 --json 2>/dev/null |
          python3 -c 'import json, sys; d = json.load(sys.stdin); print("%d/%d %.2f" % (d["identical"], d["prompts"], 100 * d["position_agreement"]))'; }
printf '%-5s %6s %11s %9s\n' kv window ppl vs-f32
for c in $ctxs; do
  base=$(ppl f32 "$c")
  printf '%-5s %6s %11s %9s\n' f32 "$c" "$base" -
  for t in f16 bf16 q8; do
    p=$(ppl "$t" "$c")
    printf '%-5s %6s %11s %+8.4f%%\n' "$t" "$c" "$p" "$(python3 -c "print(100 * ($p / $base - 1))")"
  done
done
printf '\ngreedy against the F32 cache, 50 prompts x 64 tokens: identical continuations, %% positions agreeing\n'
for t in f16 bf16 q8; do printf '%-5s %s\n' "$t" "$(agree "$t")"; done
