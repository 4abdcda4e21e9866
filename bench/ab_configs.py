#!/usr/bin/env python3
"""Prefill and decode speed of several configurations (model directory x activation precision) of one build,
measured in turns in one run, each against the memory-bandwidth floor measured inside its own run.

This VM's memory bandwidth moves by up to 2x between runs minutes apart, so configurations are only compared by
runs interleaved in time: each round runs bench_core once per configuration (the order rotating from round to
round) with `--floor-bytes` from bench/quant_facts.py; the figures are medians over the rounds, the fraction of
the floor is each run's own (decode bytes per token / step time over the read bandwidth of passes interleaved
with its steps), and each configuration's ratios to the first are medians of the per-round ratios.

  bench/ab_configs.py --build build --rounds 5 -c DIR:PRECISION[:ARGS] -c ... [-- bench_core arguments]
  e.g. bench/ab_configs.py -c /tmp/1b-w8a16:bf16 -c /tmp/1b-w8a16:int16 -c /tmp/1b-w8a8:auto -- -t 2 -r 3 -p 64 -n 32
       bench/ab_configs.py -c "/tmp/1b-w8a16:auto:--kv-type f16 -p 128" -c "/tmp/1b-w8a16:auto:--kv-type f16 -p 4000"

ARGS (optional, after a second colon) are bench_core arguments of that configuration alone, after the common ones.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def floor_bytes(model):
    out = subprocess.run([sys.executable, os.path.join(HERE, "quant_facts.py"), model], check=True,
                         capture_output=True, text=True).stdout
    return int(out.split()[0])


def run(build, model, precision, fbytes, extra, own):
    exe = os.path.join(build, "bench", "bench_core")
    cmd = [exe, "-m", model, "--precision", precision, "--spec", "off", "--floor-bytes", str(fbytes), "--json", *extra,
           *own]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-c", "--config", action="append", required=True, help="MODEL_DIR:PRECISION[:ARGS]")
    ap.add_argument("--json", help="write every run here")
    ap.add_argument("extra", nargs="*", help="bench_core arguments (after --)")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    configs = []
    for c in args.config:
        model, _, precision = c.partition(":")
        precision, _, own = precision.partition(":")
        if not model or precision not in ("auto", "f32", "bf16", "int8", "int16"):
            ap.error(f"--config {c}: expected MODEL_DIR:auto|f32|bf16|int8|int16[:ARGS]")
        configs.append((model, precision, floor_bytes(model), own))
    runs = [[] for _ in configs]
    for r in range(args.rounds):
        order = [(i + r) % len(configs) for i in range(len(configs))]
        for i in order:
            model, precision, fb, own = configs[i]
            runs[i].append(run(args.build, model, precision, fb, args.extra, own.split()))
            d = runs[i][-1]
            print(f"round {r + 1}: {model}:{precision} {own} prefill {d['prefill_tok_s']:.1f} decode {d['decode_tok_s']:.2f} "
                  f"tok/s, {100 * d['floor']['fraction_steps']:.1f} % of a {d['floor']['read_gb_s']:.1f} GB/s floor",
                  file=sys.stderr, flush=True)
    med = lambda xs: statistics.median(xs)
    print(f"{'configuration':46} {'act':5} {'MB/token':>8} {'prefill':>8} {'decode':>8} {'floor GB/s':>10} "
          f"{'% floor':>7} {'prefill x':>9} {'decode x':>8}")
    for i, (model, precision, fb, own) in enumerate(configs):
        rs = runs[i]
        pre = [x["prefill_tok_s"] for x in rs]
        dec = [x["decode_tok_s"] for x in rs]
        ratio = lambda k: med([rs[j][k] / runs[0][j][k] for j in range(len(rs))])
        print(f"{':'.join(x for x in (model, precision, own) if x):46} {rs[0]['activation_precision']:5} {fb / 1e6:8.1f} {med(pre):8.1f} "
              f"{med(dec):8.2f} {med([x['floor']['read_gb_s'] for x in rs]):10.1f} "
              f"{100 * med([x['floor']['fraction_steps'] for x in rs]):7.1f} {ratio('prefill_tok_s'):9.2f} "
              f"{ratio('decode_tok_s'):8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"model": m, "precision": p, "args": o, "runs": runs[i]} for i, (m, p, _, o) in enumerate(configs)],
                      f, indent=1)


if __name__ == "__main__":
    main()
