"""Clips/s of the synthetic worlds (``stlens.synth``) at 16×64×64, single process, against a target of 500 clips/s.

Renders ``--clips`` clips of each world after a warm-up (the texture bank is built once per size, outside the timing)
and reports the best of ``--repeats`` runs; also the rate of ``rerender`` and of ground-truth ``flow()``.

Run: .venv/bin/python benchmarks/synth_throughput.py [--clips 1000] [--repeats 3] [--frames 16] [--size 64]
"""

from __future__ import annotations

import argparse
import time

from stlens.synth import WORLDS, open_synth

TARGET = 500.0


def best_rate(fn, count: int, repeats: int) -> float:
    """Best-of-``repeats`` rate of ``fn(i)`` over ``count`` calls, in calls per second."""
    fn(0)
    best = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        for i in range(count):
            fn(i)
        best = min(best, time.perf_counter() - tick)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    shape = f"{args.frames}×{args.size}×{args.size}"
    rows = []
    for world in WORLDS:
        ds = open_synth(f"synth:{world}?n={args.clips}&frames={args.frames}&size={args.size}")
        rows.append((f"{world} ds[i]", best_rate(ds.__getitem__, args.clips, args.repeats), True))
    ds = open_synth(f"synth:motion?n={args.clips}&frames={args.frames}&size={args.size}")
    rows.append(("motion rerender", best_rate(lambda i: ds.rerender(i, 7), args.clips, args.repeats), False))
    rows.append(("motion ds[i] + flow()", best_rate(lambda i: ds[i].flow(), args.clips, args.repeats), False))
    print(f"synthetic clips at {shape}, {args.clips} clips, best of {args.repeats} (target {TARGET:.0f} clips/s)")
    failed = False
    for name, rate, gated in rows:
        verdict = ("PASS" if rate >= TARGET else "FAIL") if gated else "(info)"
        failed |= gated and rate < TARGET
        print(f"  {name:<24} {rate:8.0f} clips/s  {verdict}")
    print("FAIL" if failed else "PASS")


if __name__ == "__main__":
    main()
