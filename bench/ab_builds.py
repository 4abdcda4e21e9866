#!/usr/bin/env python3
"""Prefill and decode speed of two builds, measured alternately in one run (A, B, A, B, ...).

This VM's memory bandwidth moves by up to 2x between runs minutes apart, so two builds are only compared by
runs interleaved in time: each round runs bench_core of build A, then of build B (the order alternating from
round to round), on the same model with the same arguments, and the figures are the medians over the rounds
and the median of the per-round ratios B / A.

  bench/ab_builds.py --a OLD_BUILD --b NEW_BUILD -m MODEL [--rounds 7] [-- bench_core arguments]
  e.g. bench/ab_builds.py --a /tmp/old-build --b build -m models/pangu-tiny -- -t 1 -r 3 -p 64 -n 32 --spec off
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run(build, model, extra):
    exe = os.path.join(build, "bench", "bench_core")
    out = subprocess.run([exe, "-m", model, "--json", *extra], check=True, capture_output=True, text=True).stdout
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    return json.loads(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, help="build directory A (the baseline)")
    ap.add_argument("--b", required=True, help="build directory B")
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("extra", nargs="*", help="bench_core arguments (after --)")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    keys = ("prefill_tok_s", "decode_tok_s")
    res = {"a": {k: [] for k in keys}, "b": {k: [] for k in keys}}
    for r in range(args.rounds):
        order = ("a", "b") if r % 2 == 0 else ("b", "a")
        for side in order:
            j = run(getattr(args, side), args.model, args.extra)
            for k in keys:
                res[side][k].append(j[k])
        print(f"round {r + 1}: " + "  ".join(
            f"{k} A {res['a'][k][-1]:.1f} B {res['b'][k][-1]:.1f}" for k in keys), file=sys.stderr)
    report = {"model": args.model, "rounds": args.rounds, "bench_core_args": args.extra}
    for k in keys:
        ratios = [b / a for a, b in zip(res["a"][k], res["b"][k]) if a > 0]
        report[k] = {"a_median": statistics.median(res["a"][k]), "b_median": statistics.median(res["b"][k]),
                     "ratio_b_over_a_median": statistics.median(ratios), "ratio_min": min(ratios),
                     "ratio_max": max(ratios)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
