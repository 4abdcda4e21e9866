#!/usr/bin/env python3
"""The most any prompt-lookup policy could gain on bench_spec's greedy workloads, for a given verification cost.

    python3 bench/pld_ceiling.py SPEC_JSON --curve COSTS [--draft-len K] [--ngram N]

SPEC_JSON is what `bench_spec --json` wrote (it holds every prompt's token ids and what plain greedy decoding
generated from it). COSTS is the cost of one forward of m = 1, 2, ... positions, either a comma list (1,1.23,1.4)
or the file that `bench_core --curve K --json` printed; only ratios matter.

Greedy output is known in advance, so what a prompt-lookup draft would get accepted at each point of it is
known too. This replays the library's lookup (the most recent earlier occurrence of the last N, N-1, ..., 1
tokens of the context; a draft that runs past the end of the context repeats with the occurrence's period) over
the generated text and reports, per workload:

  always   drafting K tokens whenever the lookup finds a match (what the controller does when drafts pay):
           forwards per generated token and the speed-up the cost curve gives it;
  ceiling  the best schedule with foresight (dynamic programming over the positions: at each step draft
           exactly as many tokens as will be accepted, or none), an upper bound for any policy that drafts from
           this lookup, under this cost curve.

bench_spec's measured PLD speed-up is printed alongside. Per-step work outside the forward (sampling, the
lookup) is not modelled, so real speed-ups sit a little below these figures.
"""
import argparse
import json
import sys


class Lookup:
    """The library's n-gram index (src/decode/speculative.cpp) without hashing: n-gram -> last position it ended."""

    def __init__(self, max_n):
        self.max_n = max_n
        self.tables = [dict() for _ in range(max_n + 1)]
        self.indexed = 0

    def update(self, tokens):
        for p in range(max(self.indexed, 1), len(tokens)):
            for n in range(1, min(self.max_n, p) + 1):
                self.tables[n][tuple(tokens[p - n:p])] = p - 1
        self.indexed = len(tokens)

    def propose(self, tokens, k):
        n = len(tokens)
        for length in range(self.max_n, 0, -1):
            if length >= n:
                continue
            end = self.tables[length].get(tuple(tokens[n - length:]))
            if end is None:
                continue
            out = []
            for m in range(k):
                src = end + 1 + m
                out.append(tokens[src] if src < n else out[src - n])
            return out
        return []


def accepted_lengths(prompt, gen, k, max_n):
    """For every state j (gen[:j] known, gen[j-1] pending), how many of a k-token draft would be accepted."""
    acc = [0] * (len(gen) + 1)
    look = Lookup(max_n)
    for j in range(1, len(gen)):
        ctx = prompt + gen[:j]
        look.update(ctx)
        room = min(k, len(gen) - j - 1)
        draft = look.propose(ctx, room) if room > 0 else []
        a = 0
        while a < len(draft) and draft[a] == gen[j + a]:
            a += 1
        acc[j] = a if draft else -1  # -1: the lookup found nothing
    return acc


def replay(prompt, gen, cost, k, max_n):
    n = len(gen)
    acc = accepted_lengths(prompt, gen, k, max_n)
    plain = (n - 1) * cost[0]
    # always: draft min(K, room) whenever the lookup matches
    j, t_always, fwd_always = 1, 0.0, 0
    hist = [0] * (k + 1)
    while j < n:
        room = min(k, n - j - 1)
        a = acc[j]
        if a < 0 or room == 0:
            t_always += cost[0]
            j += 1
        else:
            t_always += cost[room]
            hist[a] += 1
            j += a + 1
        fwd_always += 1
    # ceiling: best[j] = least time from state j to n
    best = [0.0] * (n + 1)
    steps = [0] * (n + 1)
    for j in range(n - 1, 0, -1):
        best[j] = cost[0] + best[j + 1]
        steps[j] = steps[j + 1] + 1
        for d in range(1, max(acc[j], 0) + 1):
            c = cost[d] + best[j + d + 1]
            if c < best[j]:
                best[j], steps[j] = c, steps[j + d + 1] + 1
    return {"plain": plain, "always": t_always, "always_fwd": fwd_always, "hist": hist,
            "ceiling": best[1], "ceiling_fwd": steps[1], "tokens": n}


def load_curve(arg, k):
    try:
        with open(arg) as f:
            ms = json.loads(f.read())["ms"]
    except (OSError, ValueError):
        ms = [float(x) for x in arg.split(",")]
    if len(ms) < k + 1:
        sys.exit(f"pld_ceiling: the cost curve has {len(ms)} points; draft length {k} needs {k + 1}")
    return [c / ms[0] for c in ms]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spec_json")
    ap.add_argument("--curve", required=True, help="costs of 1..K+1 positions: a comma list or bench_core --json")
    ap.add_argument("--draft-len", type=int, help="K (default: bench_spec's)")
    ap.add_argument("--ngram", type=int, help="N (default: bench_spec's)")
    args = ap.parse_args()
    with open(args.spec_json) as f:
        spec = json.load(f)
    k = args.draft_len or spec["draft_len"]
    max_n = args.ngram or spec["ngram"]
    cost = load_curve(args.curve, k)
    print(f"pld_ceiling: {args.spec_json}, K {k}, N {max_n}, cost of 1..{k + 1} positions "
          + " ".join(f"{c:.2f}" for c in cost[:k + 1]))
    print(f"  {'workload':<10} {'measured':>8} {'always':>7} {'fwd/tok':>7} {'ceiling':>7} {'fwd/tok':>7}"
          "  always: accepted length:steps")
    for w in spec["workloads"]:
        if w["sampling"]:
            continue
        if "off" not in w["prompts"][0]:
            sys.exit("pld_ceiling: the JSON holds no token ids (written by an older bench_spec)")
        tot = {"plain": 0.0, "always": 0.0, "ceiling": 0.0, "always_fwd": 0, "ceiling_fwd": 0, "tokens": 0}
        hist = [0] * (k + 1)
        for p in w["prompts"]:
            r = replay(p["ids"], p["off"], cost, k, max_n)
            for key in tot:
                tot[key] += r[key]
            hist = [a + b for a, b in zip(hist, r["hist"])]
        measured = next((m["speedup"] for m in w["modes"] if m["mode"] == "pld"), None)
        print(f"  {w['name']:<10} {measured if measured is not None else float('nan'):>7.2f}x"
              f" {tot['plain'] / tot['always']:>6.2f}x {tot['always_fwd'] / tot['tokens']:>7.3f}"
              f" {tot['plain'] / tot['ceiling']:>6.2f}x {tot['ceiling_fwd'] / tot['tokens']:>7.3f}  "
              + " ".join(f"{a}:{h}" for a, h in enumerate(hist)))


if __name__ == "__main__":
    main()
