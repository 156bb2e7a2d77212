"""Is the measurement right? The full validation table (numbers go to docs/validity.md).

1. planted latents with a known (analytic) answer: the estimator recovers it;
2. a temporal-mean encoder: r_static = 1 for every live channel, so static units only;
3. bundled i3d-motion vs i3d-appearance at the last stage: more dynamic, with 95% CIs apart, on synthetic pairs and on
   the real sample videos;
4. bundled c2d-*: fewer dynamic dims at the last stage than i3d-motion;
5. bootstrap CI coverage by simulation (goal ≥ 90% for nominal 95%).

    python benchmarks/validity.py [--pairs 64] [--runs 400] [--out runs/validity]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import stlens
from stlens.measure.simulate import PlantedWorld, ci_coverage, simulate_run
from stlens.showcase import DEMO_DATA, last_stage_checks, run_demo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import TemporalMeanEncoder  # noqa: E402

WORLDS = {
    "balanced": PlantedWorld(),
    "motion-heavy": PlantedWorld(motion_channels=80, appearance_channels=8, seed=3),
    "appearance-heavy": PlantedWorld(motion_channels=4, appearance_channels=100, noise=0.2, seed=5),
}


def planted(pairs: int = 20_000) -> list[dict]:
    rows = []
    for name, world in WORLDS.items():
        truth = world.population_percent()
        found = simulate_run(world, pairs, bootstrap=0, seed=1)["percent"]
        rows.append({"world": name, "truth": truth, "estimate": found,
                     "ok": all(abs(found[k] - truth[k]) <= 100 / world.channels + 1e-9 for k in ("dynamic", "static"))})
    return rows


def temporal_mean(pairs: int) -> dict:
    torch.manual_seed(0)
    model = TemporalMeanEncoder(channels=32)
    spec = stlens.InputSpec(frames=16, stride=1, size=64, resize=64, mean=(0.5,) * 3, std=(0.25,) * 3)
    source = stlens.open_data(DEMO_DATA["synth"])
    result = stlens.measure(model, stlens.make_pairs(source, spec, pairs), ["frame_conv"], bootstrap=0,
                            progress=False)
    layer = result["frame_conv"]
    live = np.array([c != "dead" for c in layer.classes])
    return {"channels": layer.channels, "live": int(live.sum()), "min_r_static": float(layer.r_static[live].min()),
            "units": layer.units}


def coverage(runs: int) -> list[dict]:
    rows = []
    for channels, pairs in ((128, 100), (128, 400), (1024, 200)):
        world = PlantedWorld(channels=channels, motion_channels=channels // 4, appearance_channels=channels * 3 // 8)
        rows.append({"channels": channels, "pairs": pairs, **ci_coverage(world, pairs=pairs, runs=runs)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--out", default="runs/validity")
    args = parser.parse_args()
    began = time.perf_counter()
    report = {"planted": planted()}
    print("1. planted latents (analytic truth vs estimate at 20,000 pairs):")
    for r in report["planted"]:
        print(f"   {r['world']:<17} truth D/S {r['truth']['dynamic']}/{r['truth']['static']}  estimate "
              f"{r['estimate']['dynamic']}/{r['estimate']['static']}  {'OK' if r['ok'] else 'FAIL'}")
    report["temporal_mean"] = temporal_mean(args.pairs)
    t = report["temporal_mean"]
    print(f"2. temporal-mean encoder: {t['live']}/{t['channels']} live channels, min r_static {t['min_r_static']:.6f}, "
          f"units {t['units']}")
    rows = run_demo(Path(args.out) / "demo", pairs=args.pairs, progress=False)
    report["models"] = last_stage_checks(rows)
    print("3-4. bundled models, last stage dynamic % [95% CI]:")
    for c in report["models"]:
        print(f"   {c['data']:<7} i3d-motion {c['i3d-motion']:.1f} {c['i3d_ci']} vs {c['other']} "
              f"{c['other_dynamic']:.1f} {c['other_ci']}: {'more' if c['more_dynamic'] else 'NOT more'}, "
              f"CIs {'apart' if c['cis_apart'] else 'overlap'}")
    report["coverage"] = coverage(args.runs)
    print(f"5. bootstrap 95% CI coverage ({args.runs} simulated runs each):")
    for c in report["coverage"]:
        print(f"   C={c['channels']:<5} pairs={c['pairs']:<4} dynamic {c['coverage_dynamic']:.3f} "
              f"static {c['coverage_static']:.3f} (mean width {c['mean_width_dynamic']:.2f} pp)")
    report["seconds"] = round(time.perf_counter() - began, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "validity.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"→ {out / 'validity.json'} ({report['seconds']} s)")


if __name__ == "__main__":
    main()
