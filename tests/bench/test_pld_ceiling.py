#!/usr/bin/env python3
"""Tests of bench/pld_ceiling.py: its replay of the library's prompt lookup, and the bounds it computes."""
import json
import os
import random
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "bench", "pld_ceiling.py")
sys.path.insert(0, os.path.dirname(SCRIPT))
import pld_ceiling  # noqa: E402


class Lookup(unittest.TestCase):
    def propose(self, tokens, k, n=3):
        look = pld_ceiling.Lookup(n)
        look.update(tokens)
        return look.propose(tokens, k)

    def test_the_most_recent_occurrence_and_the_fallback(self):
        # as NgramIndex.ProposesTheMostRecentContinuationWithFallback in test_speculative.cpp
        t = [5, 6, 7, 8, 9, 5, 6, 7, 1, 2, 3, 6, 7]
        self.assertEqual(self.propose(t, 4), [1, 2, 3, 6])
        self.assertEqual(self.propose(t + [5, 6, 7], 2), [1, 2])
        self.assertEqual(self.propose([4, 9, 4], 4), [9, 4, 9, 4])  # goes on with the period
        self.assertEqual(self.propose([1, 2, 7, 7, 7], 4), [7, 7, 7, 7])
        self.assertEqual(self.propose([1, 2, 3], 4), [])

    def test_incremental_updates_equal_one_update(self):
        rng = random.Random(3)
        t = [rng.randrange(6) for _ in range(300)]
        inc = pld_ceiling.Lookup(3)
        for n in range(1, len(t) + 1):
            inc.update(t[:n])
            whole = pld_ceiling.Lookup(3)
            whole.update(t[:n])
            self.assertEqual(inc.propose(t[:n], 4), whole.propose(t[:n], 4), n)


class Bounds(unittest.TestCase):
    def test_a_copy_of_the_prompt(self):
        prompt = list(range(1, 21))
        gen = prompt * 2  # 40 tokens, all of them a copy
        r = pld_ceiling.replay(prompt, gen, [1, 1, 1, 1, 1], 4, 3)
        # 39 tokens after the first: seven steps of 5 and one of 4
        self.assertEqual(r["always_fwd"], 8)
        self.assertEqual(r["hist"], [0, 0, 0, 1, 7])
        self.assertAlmostEqual(r["plain"] / r["ceiling"], 39 / 8)
        r = pld_ceiling.replay(prompt, gen, [1, 1.5, 2, 2.5, 3], 4, 3)
        self.assertAlmostEqual(r["plain"] / r["ceiling"], 39 / (7 * 3 + 2.5))

    def test_text_that_never_repeats_gains_nothing(self):
        r = pld_ceiling.replay([1, 2, 3], list(range(100, 140)), [1, 1.2, 1.3, 1.4, 1.5], 4, 3)
        self.assertAlmostEqual(r["plain"] / r["ceiling"], 1.0)
        self.assertAlmostEqual(r["plain"] / r["always"], 1.0)

    def test_the_ceiling_bounds_drafting_at_every_match(self):
        rng = random.Random(7)
        for trial in range(40):
            prompt = [rng.randrange(8) for _ in range(30)]
            gen = [rng.randrange(8) for _ in range(60)]
            steps = sorted(rng.uniform(0, 0.6) for _ in range(4))
            cost = [1.0] + [1.0 + s for s in steps]
            r = pld_ceiling.replay(prompt, gen, cost, 4, 3)
            self.assertLessEqual(r["ceiling"], r["always"] + 1e-9, trial)
            self.assertLessEqual(r["ceiling"], r["plain"] + 1e-9, trial)


class Command(unittest.TestCase):
    def test_reads_bench_spec_json_and_a_curve(self):
        spec = {"draft_len": 4, "ngram": 3, "workloads": [
            {"name": "copy", "sampling": False, "prompts": [{"ids": list(range(1, 21)), "off": list(range(1, 21)) * 2}],
             "modes": [{"mode": "off", "speedup": 1.0}, {"mode": "pld", "speedup": 3.0}]},
            {"name": "sampled", "sampling": True, "prompts": [{"ids": [1], "off": [2]}], "modes": []}]}
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "spec.json")
            with open(path, "w") as f:
                json.dump(spec, f)
            curve = os.path.join(d, "curve.json")
            with open(curve, "w") as f:
                json.dump({"ms": [2.0, 2.0, 2.0, 2.0, 2.0]}, f)
            out = subprocess.run([sys.executable, SCRIPT, path, "--curve", curve], capture_output=True, text=True,
                                 check=True).stdout
        line = next(l for l in out.splitlines() if l.split()[:1] == ["copy"])
        self.assertEqual(line.split()[1:6], ["3.00x", "4.88x", "0.200", "4.88x", "0.200"])
        self.assertNotIn("sampled", out)  # sampling is not replayed: its output is a draw

    def test_a_curve_too_short_for_the_draft_length_is_refused(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "spec.json")
            with open(path, "w") as f:
                json.dump({"draft_len": 4, "ngram": 3, "workloads": []}, f)
            r = subprocess.run([sys.executable, SCRIPT, path, "--curve", "1,1.2"], capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("needs 5", r.stderr)


if __name__ == "__main__":
    unittest.main()
