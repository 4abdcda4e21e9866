#!/usr/bin/env bash
# The W8A16 benchmark: prefill and decode tokens/s of fp32, bf16 and W8A16 weights with 1 and 2 threads, on
# pangu-tiny and on a random-weight model of the openPangu-1B shape; weight bytes on disk and resident; and
# decode speed as a fraction of the memory-bandwidth floor (measured read bandwidth / bytes of weights read
# per decoded token). Prints a table and writes JSON (default bench/results/quant.json).
#
#   bench/bench_quant.sh [options]
#
#   --build DIR        build directory (default: build/ in the source tree); configured if needed
#   --work DIR         where the model variants live (default: /tmp/pangu-bench); existing ones are reused
#   --out FILE         JSON output (default: bench/results/quant.json)
#   --threads "1 2"    thread counts
#   --tiny-only        skip the 1B-shape model (needs ~5 GB of disk; ~10 GB with --with-1b-f32)
#   --with-1b-f32      also benchmark the 1B shape with f32 weights (4.6 GB file, slow)
#   --no-bf16-act      skip the runs of bf16 weights with bf16 activations
#   --tiny-runs N --tiny-prefill N --tiny-decode N     (default 11 rounds, 512, 128)
#   --big-runs N  --big-prefill N  --big-decode N      (default 3, 64, 32)
#   --membw-mib N --membw-runs N                       (default 1024, 7)
#   --regen            delete and recreate the model variants (e.g. after a checkpoint format change)
#   --no-build         use the binaries already in the build directory
#   -j N               build parallelism (default 2)
#
# Variants (under the work dir): tiny-f32 (bench_convert_dtype of the bundled model: the same weights, widened),
# tiny-bf16 (the bundled model itself), tiny-w8a16, tiny-w8a16-qe (pangu-quantize --quantize-embeddings),
# 1b-bf16 (pangu-gen-model defaults: openPangu-1B shape, tied embeddings), 1b-f32 (bench_convert_dtype of
# 1b-bf16), 1b-w8a16, 1b-w8a16-qe.
#
# Speed comes from bench_core (speculative decoding off, so that each decode
# step is one forward pass, and a selectable activation precision). "act" in the table is the precision of the
# activations entering the matrix products: the library's default is f32 for f32/bf16 checkpoints and bf16 for
# W8A16; bf16 weights are also run with bf16 activations unless --no-bf16-act.
#
# Bytes read per decoded token (bench/quant_facts.py): every weight tensor the forward pass reads, i.e. all of
# them except the embedding table, of which one row per token is read -- unless the embeddings are tied, when
# the head reads the whole table. KV-cache reads are not counted (they are small at these context lengths).
#
# The floor of the 1B shape is measured inside each bench_core run (--floor-bytes): read passes over a buffer
# of the bytes one step reads, interleaved with the decode runs, so that a shared machine's bandwidth swings
# hit both alike; the fraction compares the median decode step with the median of those passes. The run-mean
# fraction is reported beside it. pangu-tiny's weights fit in the caches: its floor is the stand-alone membw.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$SRC/build"
WORK="/tmp/pangu-bench"
OUT="$SRC/bench/results/quant.json"
THREADS="1 2"
TINY_ONLY=0
WITH_1B_F32=0
BF16_ACT=1
TINY_R=11 TINY_P=512 TINY_N=128  # a 128-token prefill of pangu-tiny takes 6 ms: too short to compare
BIG_R=3 BIG_P=64 BIG_N=32
MEMBW_MIB=1024 MEMBW_R=7
REGEN=0
DO_BUILD=1
JOBS=2

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --build) BUILD="$2"; shift ;;
        --work) WORK="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        --threads) THREADS="$2"; shift ;;
        --tiny-only) TINY_ONLY=1 ;;
        --with-1b-f32) WITH_1B_F32=1 ;;
        --no-bf16-act) BF16_ACT=0 ;;
        --tiny-runs) TINY_R="$2"; shift ;;
        --tiny-prefill) TINY_P="$2"; shift ;;
        --tiny-decode) TINY_N="$2"; shift ;;
        --big-runs) BIG_R="$2"; shift ;;
        --big-prefill) BIG_P="$2"; shift ;;
        --big-decode) BIG_N="$2"; shift ;;
        --membw-mib) MEMBW_MIB="$2"; shift ;;
        --membw-runs) MEMBW_R="$2"; shift ;;
        --regen) REGEN=1 ;;
        --no-build) DO_BUILD=0 ;;
        -j) JOBS="$2"; shift ;;
        -h|--help) usage 0 ;;
        *) echo "bench_quant.sh: unknown option $1" >&2; usage ;;
    esac
    shift
done
command -v python3 >/dev/null || { echo "bench_quant.sh: python3 is required for the report" >&2; exit 1; }

log() { echo "[bench_quant] $*" >&2; }

# ---- build ------------------------------------------------------------------------------------------------
TARGETS="bench_core bench_convert_dtype membw pangu-gen-model pangu-quantize"
if [ "$DO_BUILD" = 1 ]; then
    if [ ! -f "$BUILD/CMakeCache.txt" ]; then
        log "configuring $BUILD"
        cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DPANGU_BUILD_TESTS=OFF >&2
    fi
    log "building $TARGETS"
    # shellcheck disable=SC2086
    cmake --build "$BUILD" -j"$JOBS" --target $TARGETS >&2
fi
RUN="$BUILD/bench/bench_core"
CONVERT="$BUILD/bench/bench_convert_dtype"
MEMBW="$BUILD/bench/membw"
GEN="$BUILD/tools/pangu-gen-model"
QUANT="$BUILD/tools/pangu-quantize"
for b in "$RUN" "$CONVERT" "$MEMBW" "$GEN" "$QUANT"; do
    [ -x "$b" ] || { echo "bench_quant.sh: $b is missing (build it or drop --no-build)" >&2; exit 1; }
done

# ---- model variants ---------------------------------------------------------------------------------------
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
TINY_SRC="$SRC/models/pangu-tiny"

have() { [ -f "$1/model.safetensors" ] && [ -f "$1/config.json" ]; }
fresh() { # fresh DIR: true if DIR must be (re)made
    if [ "$REGEN" = 1 ] && [ -e "$1" ] && [ ! -L "$1" ]; then rm -rf "$1"; fi
    if [ -L "$1" ] && [ "$REGEN" = 1 ]; then rm -f "$1"; fi
    ! have "$1"
}
free_kb() { df -Pk "$WORK" | awk 'NR == 2 { print $4 }'; }
need_disk() { # need_disk GB WHAT
    local need_kb
    need_kb=$(python3 -c "print(int(($1 + 1.0) * 1e9 / 1024))")
    if [ "$(free_kb)" -lt "$need_kb" ]; then
        echo "bench_quant.sh: $2 needs about $1 GB (+1 GB margin) in $WORK; only $(( $(free_kb) / 1024 / 1024 )) GiB free" >&2
        exit 1
    fi
}
quantize() { # quantize IN OUT [--quantize-embeddings]
    local in="$1" out="$2"
    shift 2
    if fresh "$out"; then
        log "quantizing $in -> $out $*"
        rm -rf "$out"
        "$QUANT" -i "$in" -o "$out" --quiet "$@" >&2
    fi
}

VARIANTS=""   # "family:name:dir:weights" entries
add_variant() { VARIANTS="$VARIANTS $1:$2:$3:$4"; }

# pangu-tiny
if fresh "$WORK/tiny-bf16"; then rm -rf "$WORK/tiny-bf16"; ln -s "$TINY_SRC" "$WORK/tiny-bf16"; fi
if fresh "$WORK/tiny-f32"; then
    log "converting pangu-tiny to f32"
    rm -rf "$WORK/tiny-f32"
    "$CONVERT" -i "$TINY_SRC" -o "$WORK/tiny-f32" --dtype f32 >&2
fi
quantize "$TINY_SRC" "$WORK/tiny-w8a16"
quantize "$TINY_SRC" "$WORK/tiny-w8a16-qe" --quantize-embeddings
add_variant tiny tiny-f32 "$WORK/tiny-f32" f32
add_variant tiny tiny-bf16 "$WORK/tiny-bf16" bf16
add_variant tiny tiny-w8a16 "$WORK/tiny-w8a16" w8a16
add_variant tiny tiny-w8a16-qe "$WORK/tiny-w8a16-qe" w8a16-qe

# the openPangu-1B shape (random weights)
if [ "$TINY_ONLY" = 0 ]; then
    if fresh "$WORK/1b-bf16"; then
        need_disk 2.4 "the 1B-shape bf16 model"
        log "generating the 1B-shape bf16 model (2.3 GB)"
        rm -rf "$WORK/1b-bf16" "$WORK/1b-bf16.partial"
        "$GEN" -o "$WORK/1b-bf16.partial" >&2
        mv "$WORK/1b-bf16.partial" "$WORK/1b-bf16"
    fi
    if fresh "$WORK/1b-w8a16"; then need_disk 1.4 "the 1B-shape W8A16 model"; fi
    quantize "$WORK/1b-bf16" "$WORK/1b-w8a16"
    if fresh "$WORK/1b-w8a16-qe"; then need_disk 1.2 "the 1B-shape W8A16 model with int8 embeddings"; fi
    quantize "$WORK/1b-bf16" "$WORK/1b-w8a16-qe" --quantize-embeddings
    if [ "$WITH_1B_F32" = 1 ]; then
        if fresh "$WORK/1b-f32"; then
            need_disk 4.7 "the 1B-shape f32 model"
            log "converting the 1B-shape model to f32 (4.6 GB)"
            rm -rf "$WORK/1b-f32"
            "$CONVERT" -i "$WORK/1b-bf16" -o "$WORK/1b-f32" --dtype f32 >&2
        fi
        add_variant 1b 1b-f32 "$WORK/1b-f32" f32
    fi
    add_variant 1b 1b-bf16 "$WORK/1b-bf16" bf16
    add_variant 1b 1b-w8a16 "$WORK/1b-w8a16" w8a16
    add_variant 1b 1b-w8a16-qe "$WORK/1b-w8a16-qe" w8a16-qe
fi

# ---- measurements -----------------------------------------------------------------------------------------
RAW="$WORK/raw-$$.jsonl"
trap 'rm -f "$RAW"' EXIT
: >"$RAW"
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

for t in $THREADS; do
    log "membw -t $t"
    printf '{"kind": "membw", "result": %s}\n' "$("$MEMBW" -t "$t" -s "$MEMBW_MIB" -r "$MEMBW_R" --json)" >>"$RAW"
done

for family in tiny 1b; do
    if [ "$family" = tiny ]; then R=$TINY_R P=$TINY_P N=$TINY_N; else R=$BIG_R P=$BIG_P N=$BIG_N; fi
    # pangu-tiny: one run of every configuration per round, R rounds, so that the configurations compared see
    # the same machine (a run takes milliseconds: a busy second on a shared machine would otherwise land on
    # one configuration's runs only; sequential blocks of 5 gave one ratio as 0.85x and 1.54x minutes apart).
    # The report takes the median over the rounds. The 1B shape runs R times in one process, against its
    # interleaved floor.
    if [ "$family" = tiny ]; then rounds=$R per=1; else rounds=1 per=$R; fi
    for round in $(seq "$rounds"); do
    for t in $THREADS; do
        for v in $VARIANTS; do
            IFS=: read -r fam name dir weights <<<"$v"
            [ "$fam" = "$family" ] || continue
            precisions="auto"
            if [ "$weights" = bf16 ] && [ "$BF16_ACT" = 1 ]; then precisions="auto bf16"; fi
            for prec in $precisions; do
                log "$name threads $t precision $prec (round $round of $rounds, -r $per -p $P -n $N)"
                # The 1B shape streams its weights from DRAM: measure it against the bandwidth floor in the same
                # process, interleaved (bench_core --floor-bytes). pangu-tiny's weights sit in the caches.
                floor_opt=()
                if [ "$fam" = 1b ]; then floor_opt=(--floor-bytes "$(python3 "$SRC/bench/quant_facts.py" "$dir")"); fi
                res="$("$RUN" -m "$dir" -t "$t" -r "$per" -p "$P" -n "$N" --precision "$prec" "${floor_opt[@]}" --json)"
                printf '{"kind": "bench", "family": "%s", "variant": "%s", "dir": "%s", "weights": "%s", "precision": "%s", "result": %s}\n' \
                    "$fam" "$name" "$dir" "$weights" "$prec" "$res" >>"$RAW"
            done
        done
    done
    done
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

# ---- report -----------------------------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
GIT_REV="$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)"
PANGU_SRC="$SRC" python3 - "$RAW" "$OUT" "$GIT_REV" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY'
import json, os, sys, time, platform

raw, out, git_rev, load_before, load_after = sys.argv[1:6]
rows = [json.loads(l) for l in open(raw) if l.strip()]

# Rounds of single runs (pangu-tiny) become one row per configuration: the median speeds over the rounds.
from statistics import median
merged, order = {}, []
for r in rows:
    if r["kind"] != "bench":
        continue
    key = (r["variant"], r["precision"], r["result"]["threads"])
    if key not in merged:
        merged[key] = []
        order.append(key)
    merged[key].append(r)
bench_rows = []
for key in order:
    group = merged[key]
    r = dict(group[0])
    if len(group) > 1:
        b = dict(r["result"])
        b["runs"] = sum(g["result"]["runs"] for g in group)
        for field in ("prefill_tok_s", "decode_tok_s"):
            b[field] = median([g["result"][field] for g in group])
        b["peak_rss_kb"] = max(g["result"]["peak_rss_kb"] for g in group)
        r["result"] = b
    bench_rows.append(r)
rows = [r for r in rows if r["kind"] != "bench"] + bench_rows

sys.path.insert(0, os.path.join(os.environ["PANGU_SRC"], "bench"))
from quant_facts import weight_facts

bw = {r["result"]["threads"]: r["result"]["read_gb_s"] for r in rows if r["kind"] == "membw"}

def last_level_cache():
    best = 0
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for idx in os.listdir(base):
            try:
                s = open(os.path.join(base, idx, "size")).read().strip()
            except OSError:
                continue
            mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(s[-1:], 1)
            best = max(best, int(s.rstrip("KMG")) * mult)
    except (OSError, ValueError):
        pass
    return best
llc = last_level_cache()
facts = {}
results = []
for r in rows:
    if r["kind"] != "bench":
        continue
    b = r["result"]
    if r["variant"] not in facts:
        facts[r["variant"]] = weight_facts(r["dir"])
    f = facts[r["variant"]]
    t = b["threads"]
    # The floor: from the passes interleaved with this run when it has them (bench_core --floor-bytes), else from
    # the stand-alone membw run at the start. With interleaved passes the fraction compares the median decode
    # step with the bandwidth of those passes; "runs" is each run's mean step instead, which takes in every
    # burst another tenant of a shared machine causes.
    fl = b.get("floor")
    read_bw = fl["read_gb_s"] if fl else bw.get(t)
    floor = read_bw * 1e9 / f["bytes_per_token"] if read_bw else None
    frac = fl["fraction_steps"] if fl else (b["decode_tok_s"] / floor if floor else None)
    results.append({
        "family": r["family"], "variant": r["variant"], "weights": r["weights"],
        "activations": b["activation_precision"], "threads": t,
        "runs": b["runs"], "prefill_tokens": b["prefill_tokens"], "decode_tokens": b["decode_tokens"],
        "prefill_tok_s": b["prefill_tok_s"], "decode_tok_s": b["decode_tok_s"],
        "weight_bytes_disk": f["disk_bytes"], "weight_bytes_data": f["data_bytes"],
        "weight_bytes_resident": b["weights_resident_bytes"], "peak_rss_bytes": b["peak_rss_kb"] * 1024,
        "weight_bytes_read_per_token": f["bytes_per_token"], "tied_embeddings": f["tied"],
        "read_bandwidth_gb_s": read_bw, "floor_interleaved": bool(fl), "floor_decode_tok_s": floor,
        "decode_fraction_of_floor": frac,
        "decode_fraction_of_floor_runs": fl["fraction_runs"] if fl else frac,
        "decode_step_ms_median": fl["step_ms_median"] if fl else None,
        "decode_step_ms_p90": fl["step_ms_p90"] if fl else None,
        # weights that fit in the last-level cache are not streamed from DRAM: the floor does not bind them
        "fits_in_cache": f["bytes_per_token"] <= llc,
        "n_quantized": b["n_quantized"], "eos_continued": b["eos_continued"],
    })

def find(variant, threads, act=None):
    for x in results:
        if x["variant"] == variant and x["threads"] == threads and (act is None or x["activations"] == act):
            return x
    return None

def default_run(variant, threads):
    # the run with the library's default activation precision: f32 for f32/bf16 weights, bf16 for W8A16
    w = next((x["weights"] for x in results if x["variant"] == variant), None)
    return find(variant, threads, "bf16" if w and w.startswith("w8a16") else "f32")

# Figures the issue asks for.
checks = []
def check(name, value, limit, ok, unit=""):
    checks.append({"check": name, "value": value, "limit": limit, "pass": bool(ok), "unit": unit})

variants = sorted(facts)
if "1b-bf16" in facts:
    base = facts["1b-bf16"]["disk_bytes"]
    if "1b-w8a16" in facts:
        v = facts["1b-w8a16"]["disk_bytes"] / base
        check("1B W8A16 weight bytes / bf16 (16-bit embeddings)", v, "<= 0.62", v <= 0.62)
    if "1b-w8a16-qe" in facts:
        v = facts["1b-w8a16-qe"]["disk_bytes"] / base
        check("1B W8A16 --quantize-embeddings weight bytes / bf16", v, "<= 0.52", v <= 0.52)
for var in ("1b-w8a16", "1b-w8a16-qe"):
    x = default_run(var, 2)
    if x and x["decode_fraction_of_floor"] is not None:
        v = x["decode_fraction_of_floor"]
        how = "median step, interleaved floor" if x["floor_interleaved"] else "runs"
        check(f"{var} decode, 2 threads, fraction of the bandwidth floor ({how})", v, ">= 0.80", v >= 0.80)
for fam in ("tiny", "1b"):
    for t in sorted({x["threads"] for x in results}):
        b = default_run(f"{fam}-bf16", t)
        for var in (f"{fam}-w8a16", f"{fam}-w8a16-qe"):
            q = default_run(var, t)
            if b and q:
                v = q["prefill_tok_s"] / b["prefill_tok_s"]
                check(f"{var} prefill / {fam}-bf16 prefill (f32 act), {t} thread(s)", v, ">= 1.00", v >= 1.0)
            b16 = find(f"{fam}-bf16", t, "bf16")
            if b16 and q:
                v = q["prefill_tok_s"] / b16["prefill_tok_s"]
                check(f"{var} prefill / {fam}-bf16 prefill (bf16 act), {t} thread(s)", v, ">= 1.00", v >= 1.0)

cpu = "?"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
report = {
    "benchmark": "w8a16",
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "git_rev": git_rev,
    "machine": {"cpu": cpu, "n_cpus": os.cpu_count(), "system": platform.platform(), "last_level_cache_bytes": llc,
                "loadavg_before": load_before, "loadavg_after": load_after},
    "read_bandwidth_gb_s": {str(k): v for k, v in sorted(bw.items())},
    "weights": {k: facts[k] for k in variants},
    "results": results,
    "checks": checks,
}
with open(out, "w") as f:
    json.dump(report, f, indent=2)
    f.write("\n")

# Readable table.
MB = 1e6
print(f"W8A16 benchmark  ({cpu}, {os.cpu_count()} CPUs, git {git_rev}, load {load_before} -> {load_after})")
print("read bandwidth: " + ", ".join(f"{v:.2f} GB/s ({k} thread{'s' if k > 1 else ''})" for k, v in sorted(bw.items())))
print()
print("weights          disk MB   read/token MB   % of bf16 disk")
for fam in ("tiny", "1b"):
    base = facts.get(f"{fam}-bf16")
    for k in variants:
        if not k.startswith(fam + "-"):
            continue
        f = facts[k]
        pct = f"{100 * f['disk_bytes'] / base['disk_bytes']:6.1f} %" if base else "      -"
        print(f"{k:<15} {f['disk_bytes'] / MB:8.1f}   {f['bytes_per_token'] / MB:13.1f}   {pct}"
              + ("   (tied: head reads the table)" if f["tied"] else ""))
print()
hdr = (f"{'variant':<15} {'act':<4} {'thr':>3} {'prefill tok/s':>13} {'decode tok/s':>12} {'floor tok/s':>11} "
       f"{'of floor':>8} {'(runs)':>7} {'resident MB':>11} {'peak RSS MB':>11}")
print(hdr)
print("-" * len(hdr))
order = {k: i for i, k in enumerate(["f32", "bf16", "w8a16", "w8a16-qe"])}
for fam in ("tiny", "1b"):
    sel = [x for x in results if x["family"] == fam]
    sel.sort(key=lambda x: (x["threads"], order.get(x["weights"], 9), x["activations"] != "f32"))
    for x in sel:
        fl = x["floor_decode_tok_s"]
        frac = x["decode_fraction_of_floor"]
        runs = x["decode_fraction_of_floor_runs"] if x["floor_interleaved"] else None
        print(f"{x['variant']:<15} {x['activations']:<4} {x['threads']:>3} {x['prefill_tok_s']:>13.1f} "
              f"{x['decode_tok_s']:>12.2f} {fl if fl else float('nan'):>11.2f} "
              f"{100 * frac if frac else float('nan'):>7.1f}% "
              + (f"{100 * runs:>6.1f}%" if runs else f"{'':>7}")
              + f" {x['weight_bytes_resident'] / MB:>11.1f} "
              f"{x['peak_rss_bytes'] / MB:>11.1f}" + ("  *" if x["fits_in_cache"] else ""))
    if sel:
        x = sel[0]
        print(f"  ({fam}: median of {x['runs']} runs, prefill {x['prefill_tokens']} tokens, "
              f"decode {x['decode_tokens']} tokens)")
if any(x["floor_interleaved"] for x in results):
    print("  1B shape: floor from read passes interleaved with the runs (best of 5 at each point, median); "
          "'of floor' is the median decode step against it, '(runs)' the runs' decode tok/s")
if any(x["fits_in_cache"] for x in results):
    print(f"  * the weights read per token fit in the {llc / 2**20:.0f} MiB last-level cache, so decode is not "
          "bound by DRAM bandwidth and may exceed the floor")
print()
if checks:
    print("checks")
    for c in checks:
        print(f"  [{'PASS' if c['pass'] else 'FAIL'}] {c['check']}: {c['value']:.3f} ({c['limit']})")
print(f"\nJSON: {out}")
PY
