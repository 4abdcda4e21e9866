# The split of ../shared/data/dev.jsonl the compression benchmarks share (sourced by bench/lowbit_tiny.sh and
# bench/prune_tiny.sh): dev_split DATA DIR writes
#   DIR/calib.jsonl    the odd lines (1st, 3rd, ... document): calibration, scoring and training text
#   DIR/eval.jsonl     the even lines, whole
#   DIR/eval-8k.jsonl  the even lines, each cut to its first 8 KB (58,260 tokens from 160 documents)
dev_split() {
  local data=$1 dir=$2
  mkdir -p "$dir"
  awk 'NR % 2 == 1' "$data" > "$dir/calib.jsonl"
  awk 'NR % 2 == 0' "$data" > "$dir/eval.jsonl"
  python3 -c '
import json, sys
for i, l in enumerate(open(sys.argv[1])):
    if i % 2 == 1:
        d = json.loads(l); d["text"] = d["text"].encode()[:8192].decode("utf-8", "ignore")
        print(json.dumps(d, ensure_ascii=False))' "$data" > "$dir/eval-8k.jsonl"
}
