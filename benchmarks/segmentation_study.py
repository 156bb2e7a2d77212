"""The segmentation study of Kowal et al. (TPAMI 2024) on MATNet variants, in stlens' synthetic worlds (issue #19).

For every variant of ``stlens:avos`` (fusion × cross-connections) and ``stlens:seg3d``, and every seed:

1. train on the DAVIS analogue (``synth:motion?task=segment``) with ``--task segment`` (batch 8, lr 3e-3);
2. measure every fusion stage and each stream after its cross-connections (``app/mot/fusion.stage1-4``; seg3d
   ``stage1-4``) on held-out pairs (``split=test&seed=1``): dims % and unit-class shares (count / channels), with CIs;
3. evaluate mIoU and mSR (mask threshold 0.5 and 0.2) on the test splits of the DAVIS analogue and of the MoCA
   analogue (``synth:camouflage?task=segment``), seed-0 clips (not the measured ones);
4. mask the top-K% dynamic and static units of each fusion stage against the random-least controls (``stlens
   ablate``, zero mode) on the DAVIS analogue's test clips (avos variants only);
5. write ``OUT/tables.md``, ``OUT/summary.json`` and ``OUT/plots/`` (mean ± sd over seeds).

Resumable: every step is a run folder (or, for the evaluation, a JSON file written atomically) under
``OUT/runs/<variant>-s<seed>/``; a rerun skips what is complete and resumes an interrupted training. Before any work the
script times one training step, one batch and one forward per model family and prints the projected time; each step
prints its wall time (also appended to ``OUT/timings.jsonl``).

Usage:
  .venv/bin/python benchmarks/segmentation_study.py --quick                  # all variants, tiny; < 15 min on 2 cores
  .venv/bin/python benchmarks/segmentation_study.py [--seeds 0,1,2] [--steps 1500] [--only gated-recip,seg3d]
  .venv/bin/python benchmarks/segmentation_study.py --estimate               # the projected time only
  .venv/bin/python benchmarks/segmentation_study.py --tables-only [--out runs/segstudy]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from segstudy_findings import findings, findings_markdown

VARIANTS = {
    "concat-none": "stlens:avos?fusion=concat&cc=none",
    "gated-none": "stlens:avos?fusion=gated&cc=none",
    "gated-uni": "stlens:avos?fusion=gated&cc=uni",
    "gated-recip": "stlens:avos?fusion=gated&cc=recip",
    "gated-recip-gate": "stlens:avos?fusion=gated&cc=recip&cc_gate=1",
    "convex-recip": "stlens:avos?fusion=convex&cc=recip",
    "seg3d": "stlens:seg3d",
}
STAGES = (1, 2, 3, 4)
SELECTS = ("dynamic", "static", "random-least-dynamic", "random-least-static")
WORLDS = {"motion": "DAVIS analogue", "camouflage": "MoCA analogue"}
THRESHOLDS = (0.5, 0.2)
ABLATE_THRESHOLD = 0.5
CLASSES = ("dynamic", "static", "joint")
#: settings that must match the study already in --out (seeds and variants may be added later)
FIXED = ("steps", "train_clips", "test_clips", "pairs", "frames", "size", "ks", "draws", "batch_size", "lr",
         "eval_clips", "measure_bootstrap", "ablate_bootstrap")


@dataclass
class Settings:
    steps: int = 1500
    train_clips: int = 2000
    test_clips: int = 256
    pairs: int = 128
    frames: int = 8
    size: int = 64
    ks: list[float] = field(default_factory=lambda: [10, 25, 50, 75])
    draws: int = 3
    batch_size: int = 8
    lr: float = 3e-3
    eval_clips: int = 64
    measure_bootstrap: int = 200
    ablate_bootstrap: int = 200
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))

    @classmethod
    def quick(cls) -> Settings:
        return cls(steps=60, train_clips=64, test_clips=16, pairs=8, frames=4, size=32, ks=[25, 50], draws=1,
                   eval_clips=16, measure_bootstrap=50, ablate_bootstrap=100, seeds=[0])

    def world(self, name: str, **options: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"synth:{name}?task=segment&frames={self.frames}&size={self.size}&{query}"

    @property
    def train_spec(self) -> str:
        return self.world("motion", n=self.train_clips)

    def test_spec(self, world: str) -> str:
        return self.world(world, split="test", n=self.test_clips)

    @property
    def pairs_spec(self) -> str:
        return self.world("motion", split="test", seed=1, n=self.pairs)  # pair i uses clip i


def is_avos(variant: str) -> bool:
    return VARIANTS[variant].startswith("stlens:avos")


def measured_layers(variant: str) -> list[str]:
    if not is_avos(variant):
        return [f"stage{k}" for k in STAGES]
    return [f"{stream}.stage{k}" for stream in ("app", "mot", "fusion") for k in STAGES]


def fusion_layers(variant: str) -> list[str]:
    """The layers the decoder reads: ``fusion.stageK`` (seg3d: its ``stageK``)."""
    return [f"fusion.stage{k}" if is_avos(variant) else f"stage{k}" for k in STAGES]


def k_name(k: float) -> str:
    return f"{float(k):g}"


# -- run folders ---------------------------------------------------------------------------------------------------


class Run:
    """The folders and files of one (variant, seed)."""

    def __init__(self, out: Path, variant: str, seed: int):
        self.variant, self.seed = variant, seed
        self.name = f"{variant}-s{seed}"
        self.root = out / "runs" / self.name
        self.train, self.measure, self.ablate = self.root / "train", self.root / "measure", self.root / "ablate"
        self.eval = self.root / "eval.json"

    def weights(self, steps: int) -> Path | None:
        from stlens.train import list_checkpoints

        found = list_checkpoints(self.train / "checkpoints")
        return found[-1][1] if found and found[-1][0] == steps else None

    def trained(self, steps: int) -> bool:
        return marker_complete(self.train, "train") and self.weights(steps) is not None

    def measured(self) -> bool:
        return marker_complete(self.measure, "measure")

    def ablated(self) -> bool:
        return marker_complete(self.ablate, "ablate")

    def evaluated(self) -> bool:
        return self.eval.is_file()


def marker_complete(folder: Path, verb: str) -> bool:
    path = folder / ".stlens-run.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("verb") == verb and doc.get("status") == "complete"


def parse_run_name(name: str) -> tuple[str, int] | None:
    match = re.fullmatch(r"(.+)-s(\d+)", name)
    return (match.group(1), int(match.group(2))) if match and match.group(1) in VARIANTS else None


def live_layers(measure: Path, layers: Iterable[str]) -> list[str]:
    """The layers of a measure run with at least one live (not dead) channel."""
    doc = json.loads((measure / "result.json").read_text(encoding="utf-8"))
    by_name = {row["layer"]: row for row in doc["layers"]}
    return [name for name in layers
            if name in by_name and by_name[name]["channels"] - by_name[name]["units"].get("dead", 0) > 0]


# -- the steps -----------------------------------------------------------------------------------------------------


def step(verb: str, call: Callable[[], Any]) -> Any:
    """One stlens verb through its Python function: an interrupt (SIGINT/SIGTERM) stops the study as interrupted (it
    resumes on the next run), a StlensError as a failed step naming the verb."""
    from stlens.errors import StlensError
    from stlens.interrupts import Interrupted

    try:
        result = call()
    except StlensError as exc:
        raise SystemExit(f"segmentation_study: stlens.{verb} failed: {exc}") from exc
    except KeyboardInterrupt as exc:
        raise Interrupted(f"in stlens {verb}") from exc
    if getattr(result, "meta", {}).get("interrupted"):  # measure kept its partial result: stop as interrupted
        raise Interrupted(f"in stlens {verb}")
    return result


def do_train(run: Run, s: Settings, progress: bool) -> None:
    from stlens.train import TrainConfig, train

    train(TrainConfig(model=VARIANTS[run.variant], data=s.train_spec, steps=s.steps, out=str(run.train),
                      task="segment", batch_size=s.batch_size, lr=s.lr, seed=run.seed, eval_clips=s.eval_clips,
                      checkpoint_every=max(1, s.steps // 4), frames=s.frames, size=s.size, device="cpu"),
          progress=progress)
    if not run.trained(s.steps):
        raise SystemExit(f"segmentation_study: {run.train} did not end complete with step {s.steps}")


def do_measure(run: Run, s: Settings) -> None:
    import stlens

    step("measure", lambda: stlens.measure(
        VARIANTS[run.variant], s.pairs_spec, measured_layers(run.variant), weights=str(run.weights(s.steps)),
        frames=s.frames, size=s.size, pairs=s.pairs, flow="dis" if is_avos(run.variant) else "none", batch_size=4,
        workers=0, device="cpu", bootstrap=s.measure_bootstrap, seed=0, out=str(run.measure), progress=False))


class Thresholds:
    """mIoU and mSR at several mask thresholds from one forward (``miou@0.5``, ``msr@0.2``, ...)."""

    def __init__(self, thresholds: Iterable[float]):
        from stlens.measure.scores import Segmentation

        self.metrics = {t: Segmentation(threshold=t) for t in thresholds}

    def scores(self, outputs, targets) -> dict[str, np.ndarray]:
        return {f"{name}@{t:g}": v for t, m in self.metrics.items() for name, v in m.scores(outputs, targets).items()}


def bootstrap_ci(values: np.ndarray, reps: int = 1000, seed: int = 0) -> list[float]:
    values = values[np.isfinite(values)]
    if values.size < 2:
        return [float("nan")] * 2
    from stlens.ablate.metrics import interval

    idx = np.random.default_rng(seed).integers(0, values.size, (reps, values.size))
    return list(interval(values[idx].mean(1)))


def do_evaluate(run: Run, s: Settings) -> None:
    import stlens
    from stlens.files import write_json
    from stlens.train.tasks import evaluate_clips
    from stlens.video.labelled import open_clips

    weights = run.weights(s.steps)
    handle = stlens.load_model(VARIANTS[run.variant], weights=str(weights), frames=s.frames, size=s.size,
                               device="cpu")
    metric = Thresholds(THRESHOLDS)
    worlds = {}
    for world in WORLDS:
        spec = s.test_spec(world)
        clips = open_clips(spec, handle.input, flow=is_avos(run.variant), task="segment")
        scores = evaluate_clips(handle.module, clips, s.test_clips, 16, 0, metric)
        worlds[world] = {"data": spec, "clips": int(len(next(iter(scores.values()))))}
        for name, values in scores.items():
            worlds[world][name] = float(np.nanmean(values))
            worlds[world][f"{name}_ci95"] = bootstrap_ci(values)
    write_json(run.eval, {"variant": run.variant, "model": VARIANTS[run.variant], "seed": run.seed,
                          "weights": str(weights), "steps": s.steps, "thresholds": list(THRESHOLDS),
                          "worlds": worlds})


def do_ablate(run: Run, s: Settings, layers: list[str]) -> None:
    import stlens

    step("ablate", lambda: stlens.ablate(
        VARIANTS[run.variant], s.test_spec("motion"), str(run.measure), layers, SELECTS, s.ks, mode="zero",
        draws=s.draws, batch_size=16, mask_threshold=ABLATE_THRESHOLD, weights=str(run.weights(s.steps)),
        frames=s.frames, size=s.size, workers=0, device="cpu", bootstrap=s.ablate_bootstrap, seed=0,
        out=str(run.ablate), progress=False))


# -- budget --------------------------------------------------------------------------------------------------------


def calibrate(s: Settings, families: Iterable[str]) -> dict[str, dict[str, float]]:
    """Seconds per training step (batch making included), per batch of 16 test clips (rendering + flow) and per
    forward of 16 clips, for each model family (avos timed as gated/recip, among the dearest variants), at the study's
    sizes; the median of 3 after a warm-up."""
    import torch

    import stlens
    from stlens.train.tasks import segmentation_loss
    from stlens.video.labelled import open_clips

    specs = {"avos": VARIANTS["gated-recip"], "seg3d": VARIANTS["seg3d"]}
    costs = {}
    for family in families:
        torch.manual_seed(0)
        handle = stlens.load_model(specs[family], frames=s.frames, size=s.size, device="cpu")
        two = family == "avos"
        train_clips = open_clips(s.world("motion", n=64), handle.input, flow=two, task="segment")
        test_clips = open_clips(s.world("motion", split="test", n=64), handle.input, flow=two, task="segment")
        model = handle.module.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr)
        rng = np.random.default_rng(0)
        steps, batches, forwards = [], [], []
        for i in range(4):
            tick = time.perf_counter()
            inputs, targets = train_clips.batch(rng.integers(0, 64, s.batch_size), rng)
            loss = segmentation_loss(model(*inputs) if two else model(inputs), targets).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps.append(time.perf_counter() - tick)
            tick = time.perf_counter()
            inputs, _ = test_clips.batch(np.arange(16 * (i % 4), 16 * (i % 4) + 16), rng)
            batches.append(time.perf_counter() - tick)
            model.eval()
            tick = time.perf_counter()
            with torch.inference_mode():
                model(*inputs) if two else model(inputs)
            forwards.append(time.perf_counter() - tick)
            model.train()
        costs[family] = {"train_step": float(np.median(steps[1:])), "batch16": float(np.median(batches[1:])),
                         "forward16": float(np.median(forwards[1:]))}
    return costs


def step_costs(s: Settings, variant: str, c: dict[str, float], left: float = 1.0) -> dict[str, float]:
    """Projected seconds of each step of one (variant, seed) from the calibrated costs ``c`` of its family; ``left``:
    the share of the training still to run (a resumed run)."""
    per_clip = (c["batch16"] + c["forward16"]) / 16
    evals = (s.steps // max(1, s.steps // 4) + 1) * 2 * min(s.eval_clips, s.train_clips)  # train + test clips
    layers = len(fusion_layers(variant))
    conditions = layers * len(s.ks) * (2 + 2 * s.draws) + layers
    batches = -(-s.test_clips // 16)
    return {
        "train": left * (s.steps * c["train_step"] + evals * per_clip),
        # 2 factors × pairs, each pair two videos to render (+ flow) and two to forward
        "measure": 2 * s.pairs * 2 * per_clip * 1.2,
        "evaluate": len(WORLDS) * s.test_clips * per_clip,
        "ablate": batches * (c["batch16"] + conditions * c["forward16"]) if is_avos(variant) else 0.0,
    }


def projected(s: Settings, run: Run, step: str, costs: dict[str, dict[str, float]]) -> float:
    """Projected seconds of ``step`` of ``run``; a training resumes after its last checkpoint."""
    left = 1.0
    if step == "train":
        from stlens.train import list_checkpoints

        found = list_checkpoints(run.train / "checkpoints")
        left = 1.0 - (found[-1][0] + 1) / s.steps if found else 1.0
    return step_costs(s, run.variant, costs["avos" if is_avos(run.variant) else "seg3d"], max(0.0, left))[step]


def pending(s: Settings, out: Path) -> list[tuple[Run, str]]:
    """The (run, step) pairs still to do, in the order they will run (seeds outer, variants inner)."""
    todo = []
    for seed in s.seeds:
        for variant in s.variants:
            run = Run(out, variant, seed)
            todo += [(run, "train")] if not run.trained(s.steps) else []
            todo += [(run, "measure")] if not run.measured() else []
            todo += [(run, "evaluate")] if not run.evaluated() else []
            todo += [(run, "ablate")] if is_avos(variant) and not run.ablated() else []
    return todo


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def print_budget(s: Settings, costs: dict[str, dict[str, float]], todo: list[tuple[Run, str]]) -> float:
    for family, c in costs.items():
        print(f"  measured costs, {family} at {s.frames}×{s.size}×{s.size}: training step (batch {s.batch_size}) "
              f"{c['train_step']:.3f} s, making 16 test clips {c['batch16']:.3f} s, forward of 16 clips "
              f"{c['forward16']:.3f} s")
    totals: dict[str, float] = {}
    for run, step in todo:
        cost = projected(s, run, step, costs)
        totals[step] = totals.get(step, 0.0) + cost
    total = sum(totals.values())
    counts = {step: sum(1 for _, st in todo if st == step) for step in totals}
    parts = ", ".join(f"{step} {counts[step]}× {hms(sec)}" for step, sec in totals.items())
    print(f"  projected: {hms(total)} for {len(todo)} steps ({parts or 'nothing to do'}); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, torch threads {_threads()}")
    return total


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# -- tables --------------------------------------------------------------------------------------------------------


def stat(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean ± sample sd (ddof 1; None with one value) over the finite values."""
    kept = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not kept:
        return {"mean": None, "sd": None, "n": 0, "values": []}
    return {"mean": float(np.mean(kept)), "sd": float(np.std(kept, ddof=1)) if len(kept) > 1 else None,
            "n": len(kept), "values": kept}


def read_measure(folder: Path) -> dict[str, Any]:
    doc = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    layers = {}
    for row in doc["layers"]:
        channels = row["channels"]
        cis = row.get("units_ci95") or {}
        layers[row["layer"]] = {
            "channels": channels,
            "share": {k: row["units"].get(k, 0) / channels for k in (*CLASSES, "none", "dead")},
            "share_ci95": {k: [v / channels for v in cis[k]] for k in CLASSES if cis.get(k)},
            "percent": {k: row["percent"][k] for k in ("dynamic", "static", "residual")},
            "percent_ci95": {k: row["ci95"][k] for k in ("dynamic", "static") if (row.get("ci95") or {}).get(k)},
        }
    return layers


#: the ranked selection whose channels a random-least control can only repeat when its pool is no larger than K%
OPPOSITE = {"random-least-dynamic": "static", "random-least-static": "dynamic"}


def degenerate_controls(folder: Path) -> dict[str, dict[str, list[str]]]:
    """Per layer and K, the random-least controls whose every draw masked exactly the channels of the opposite ranked
    selection (the (K+5)% pool held no more than the K% masked: small layers, e.g. 8 channels)."""
    doc = json.loads((folder / "ablation.json").read_text(encoding="utf-8"))
    chosen: dict[tuple[str, str, str], list[frozenset[int]]] = {}
    for sel in doc.get("selections", []):
        chosen.setdefault((sel["layer"], k_name(sel["k"]), sel["select"]), []).append(frozenset(sel["channels"]))
    out: dict[str, dict[str, list[str]]] = {}
    for (layer, k, select), sets in chosen.items():
        ranked = chosen.get((layer, k, OPPOSITE.get(select, "")))
        if ranked and all(s == ranked[0] for s in sets):
            out.setdefault(layer, {}).setdefault(k, []).append(select)
    return out


def read_ablation(folder: Path) -> dict[str, Any]:
    """Per layer: the unmasked mIoU, per K and selection the drop in mIoU (random selections: mean of draws), and the
    controls that could only repeat a ranked selection (``degenerate``)."""
    drops: dict[str, dict[str, dict[str, list[float]]]] = {}
    baseline: dict[str, float] = {}
    with open(folder / "ablation.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["mode"] != "zero":
                continue
            if row["select"] == "none":
                baseline[row["layer"]] = float(row["miou"])
                continue
            cell = drops.setdefault(row["layer"], {}).setdefault(k_name(float(row["k"])), {})
            cell.setdefault(row["select"], []).append(float(row["drop_miou"]))
    degenerate = degenerate_controls(folder)
    return {layer: {"baseline_miou": baseline.get(layer),
                    "drop_miou": {k: {sel: float(np.mean(v)) for sel, v in by_k.items()} for k, by_k in ks.items()},
                    "degenerate": degenerate.get(layer, {})}
            for layer, ks in drops.items()}


def collect(out: Path) -> dict[str, Any]:
    """Every complete step under ``out/runs``, per (variant, seed), then mean ± sd over seeds per variant."""
    runs: dict[str, dict[str, Any]] = {}
    for folder in sorted((out / "runs").glob("*")) if (out / "runs").is_dir() else []:
        parsed = parse_run_name(folder.name)
        if parsed is None:
            continue
        run = Run(out, *parsed)
        entry: dict[str, Any] = {"variant": run.variant, "seed": run.seed}
        if run.evaluated():
            entry["eval"] = json.loads(run.eval.read_text(encoding="utf-8"))["worlds"]
        if run.measured():
            entry["layers"] = read_measure(run.measure)
        if run.ablated():
            entry["masking"] = read_ablation(run.ablate)
        if len(entry) > 2:
            runs[run.name] = entry
    variants: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = [r for r in runs.values() if r["variant"] == variant]
        if not mine:
            continue
        v: dict[str, Any] = {"model": VARIANTS[variant], "seeds": sorted(r["seed"] for r in mine)}
        evals = [r["eval"] for r in mine if "eval" in r]
        v["eval"] = {world: {f"{m}@{t:g}": stat(e[world].get(f"{m}@{t:g}") for e in evals)
                             for m in ("miou", "msr") for t in THRESHOLDS} for world in WORLDS}
        measured = [r["layers"] for r in mine if "layers" in r]
        v["layers"] = {}
        for layer in measured_layers(variant):
            rows = [m[layer] for m in measured if layer in m]
            if rows:
                v["layers"][layer] = {
                    "channels": rows[0]["channels"],
                    "share": {k: stat(r["share"][k] for r in rows) for k in CLASSES},
                    "percent": {k: stat(r["percent"][k] for r in rows) for k in ("dynamic", "static")}}
        masked = [r["masking"] for r in mine if "masking" in r]
        v["masking"] = {}
        for layer in fusion_layers(variant):
            rows = [m[layer] for m in masked if layer in m]
            if not rows:
                continue
            ks = sorted({k for r in rows for k in r["drop_miou"]}, key=float)
            v["masking"][layer] = {
                "baseline_miou": stat(r["baseline_miou"] for r in rows),
                "drop_miou": {k: {sel: stat(r["drop_miou"].get(k, {}).get(sel) for r in rows) for sel in SELECTS}
                              for k in ks},
                "degenerate": {k: sorted({sel for r in rows for sel in r.get("degenerate", {}).get(k, [])})
                               for k in ks}}
        variants[variant] = v
    return {"runs": runs, "variants": variants}


def fmt(st: dict[str, Any] | None, scale: float = 1.0, digits: int = 3) -> str:
    if not st or st["mean"] is None:
        return "–"
    text = f"{st['mean'] * scale:.{digits}f}"
    return text + (f" ± {st['sd'] * scale:.{digits}f}" if st["sd"] is not None else "")


def timing_lines(out: Path) -> list[str]:
    path = out / "timings.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault(r["step"], []).append(r)
    lines = ["| step | done | total | mean each | mean load (1 min) |", "|---|---:|---:|---:|---:|"]
    for step, rs in by.items():
        sec = [r["seconds"] for r in rs]
        lines.append(f"| {step} | {len(rs)} | {hms(sum(sec))} | {np.mean(sec):.1f} s | "
                     f"{np.mean([r['load'] for r in rs]):.1f} |")
    total = sum(r["seconds"] for r in records)
    return [f"Measured wall time of the steps run so far: {hms(total)} (every invocation, `timings.jsonl`).", "",
            *lines, ""]


def markdown(summary: dict[str, Any], settings: dict[str, Any], out: Path) -> str:
    variants = summary["variants"]
    ks = [k_name(k) for k in settings["ks"]]
    lines = ["# Segmentation study (issue #19)", "",
             f"Train: `{settings['train_spec']}`, {settings['steps']} steps, batch {settings['batch_size']}, lr "
             f"{settings['lr']}. Measure: {settings['pairs']} pairs per factor of `{settings['pairs_spec']}`. "
             f"Evaluate / ablate: {settings['test_clips']} test clips (seed 0). Cells: mean ± sd over seeds "
             f"(n = number of seeds with that step complete; no ± with one seed).", ""]
    lines += timing_lines(out)
    lines += findings_markdown(summary.get("findings") or findings(summary["runs"]))
    lines += ["## Segmentation quality (test splits)", ""]
    for t in THRESHOLDS:
        lines += [f"Mask threshold {t:g}:", "",
                  "| variant | seeds | " + " | ".join(f"{WORLDS[w]} mIoU | {WORLDS[w]} mSR" for w in WORLDS) + " |",
                  "|---|---|" + "---:|" * (2 * len(WORLDS))]
        for name, v in variants.items():
            cells = [fmt(v["eval"][w][f"{m}@{t:g}"]) for w in WORLDS for m in ("miou", "msr")]
            lines.append(f"| {name} | {','.join(map(str, v['seeds']))} | " + " | ".join(cells) + " |")
        lines.append("")
    tables = [("Dynamic unit share (%) of the fused maps (count / channels)", "fusion", "share", "dynamic"),
              ("Static unit share (%) of the fused maps", "fusion", "share", "static"),
              ("Joint unit share (%) of the fused maps", "fusion", "share", "joint"),
              ("Dynamic dims (%) of the fused maps", "fusion", "percent", "dynamic"),
              ("Static dims (%) of the fused maps", "fusion", "percent", "static"),
              ("Dynamic unit share (%) of the appearance stream after its cross-connection (`app.stageK`)", "app",
               "share", "dynamic"),
              ("Static unit share (%) of the motion stream after its cross-connection (`mot.stageK`)", "mot",
               "share", "static")]
    lines += ["## Units and dims per stage", "",
              "seg3d has no fusion: its rows are its own `stageK` (what its decoder reads).", ""]
    for title, stream, kind, cls in tables:
        scale = 100.0 if kind == "share" else 1.0
        lines += [f"**{title}**", "", "| variant | " + " | ".join(f"stage{k}" for k in STAGES) + " |",
                  "|---|" + "---:|" * len(STAGES)]
        for name, v in variants.items():
            if stream != "fusion" and not is_avos(name):
                continue
            names = fusion_layers(name) if stream == "fusion" else [f"{stream}.stage{k}" for k in STAGES]
            cells = [fmt(v["layers"].get(layer, {}).get(kind, {}).get(cls), scale, 1) for layer in names]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Masking the fused maps (drop in mIoU on the DAVIS analogue, zero mode, mask threshold "
              f"{ABLATE_THRESHOLD:g})", "",
              "Drop = unmasked − masked mIoU, clip by clip; random-least-X: the mean over draws of X units drawn from "
              "the (K+5)% least X-biased (the paper's control for X). † : in at least one seed the (K+5)% pool held no "
              "more channels than are masked, so the control masked exactly the opposite ranked selection "
              "(random-least-dynamic = static, random-least-static = dynamic) — no control there.", ""]
    for k in STAGES:
        layer = f"fusion.stage{k}"
        rows = [(name, v["masking"][layer]) for name, v in variants.items() if layer in v["masking"]]
        if not rows:
            continue
        lines += [f"**{layer}**", "", "| variant | unmasked mIoU | selection | " +
                  " | ".join(f"K={x}%" for x in ks) + " |", "|---|---:|---|" + "---:|" * len(ks)]
        for name, m in rows:
            for i, sel in enumerate(SELECTS):
                head = f"| {name} | {fmt(m['baseline_miou'])} |" if i == 0 else "| | |"
                cells = [fmt(m["drop_miou"].get(x, {}).get(sel)) + (" †" if sel in m["degenerate"].get(x, []) else "")
                         for x in ks]
                lines.append(f"{head} {sel} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Plots: `plots/unit_shares.png`, `plots/camouflage_vs_dynamic.png`, `plots/masking.png`, "
              "`plots/masking_by_variant.png`.", ""]
    return "\n".join(lines)


def plot_all(summary: dict[str, Any], settings: dict[str, Any], folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    variants = summary["variants"]
    colors = {"dynamic": "tab:red", "static": "tab:blue", "joint": "tab:purple"}
    names = list(variants)
    if not names:
        return
    # (a) unit shares per fusion stage per variant
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), sharey=True, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        layers = variants[name]["layers"]
        x = np.arange(len(STAGES))
        for i, cls in enumerate(CLASSES):
            sts = [layers.get(layer, {}).get("share", {}).get(cls) for layer in fusion_layers(name)]
            mean = [100 * st["mean"] if st and st["mean"] is not None else np.nan for st in sts]
            sd = [100 * st["sd"] if st and st["sd"] is not None else np.nan for st in sts]
            ax.bar(x + (i - 1) * 0.27, mean, 0.27, yerr=None if np.isnan(sd).all() else np.nan_to_num(sd),
                   color=colors[cls], label=cls, capsize=2)
        ax.set_xticks(x, [f"{'F' if is_avos(name) else 's'}{k}" for k in STAGES])
        ax.set_title(name, fontsize=9)
        ax.set_ylim(0, 100)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("unit share (%)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Unit classes of the fused maps (F = fusion.stageK; seg3d: stageK); mean ± sd over seeds",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(folder / "unit_shares.png", dpi=110)
    plt.close(fig)
    # (b) camouflage mIoU vs the dynamic share of the last fused map, one point per variant × seed
    fig, axes = plt.subplots(1, len(THRESHOLDS), figsize=(5 * len(THRESHOLDS), 3.8), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, t in zip(axes.flat, THRESHOLDS, strict=True):
        for i, name in enumerate(VARIANTS):
            points = [(r["layers"][fusion_layers(name)[-1]]["share"]["dynamic"] * 100,
                       r["eval"]["camouflage"][f"miou@{t:g}"])
                      for r in summary["runs"].values()
                      if r["variant"] == name and "layers" in r and "eval" in r]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.scatter(xs, ys, color=cmap(i), marker="o" if is_avos(name) else "x", label=name)
        ax.set_xlabel("dynamic unit share of fusion.stage4 (%) (seg3d: stage4)")
        ax.set_ylabel(f"MoCA-analogue mIoU (threshold {t:g})")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "camouflage_vs_dynamic.png", dpi=110)
    plt.close(fig)
    # (c) masking curves: averaged over variants and seeds, and per variant
    ks = [k_name(k) for k in settings["ks"]]
    sel_colors = {"dynamic": "tab:red", "static": "tab:blue", "random-least-dynamic": "salmon",
                  "random-least-static": "lightblue"}
    styles = {"dynamic": "-", "static": "-", "random-least-dynamic": "--", "random-least-static": "--"}
    layers = [f"fusion.stage{k}" for k in STAGES]
    avos = [n for n in names if variants[n]["masking"]]
    if not avos:
        return
    fig, axes = plt.subplots(1, len(layers), figsize=(3.4 * len(layers), 3.2), sharey=True, squeeze=False)
    for ax, layer in zip(axes.flat, layers, strict=True):
        for sel in SELECTS:
            per_k = [[v for n in avos for v in variants[n]["masking"].get(layer, {}).get("drop_miou", {})
                      .get(k, {}).get(sel, {}).get("values", [])] for k in ks]
            mean = np.array([np.mean(v) if v else np.nan for v in per_k])
            sd = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in per_k])
            x = [float(k) for k in ks]
            ax.plot(x, mean, styles[sel], color=sel_colors[sel], marker="o", label=sel)
            ax.fill_between(x, mean - sd, mean + sd, color=sel_colors[sel], alpha=0.15)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("K (% of channels masked)")
    axes[0, 0].set_ylabel("drop in mIoU")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Masking the fused maps: mean ± sd over avos variants × seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(folder / "masking.png", dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(len(avos), len(layers), figsize=(3.0 * len(layers), 2.2 * len(avos)), sharey=True,
                             squeeze=False)
    for r, name in enumerate(avos):
        for c, layer in enumerate(layers):
            ax = axes[r, c]
            cell = variants[name]["masking"].get(layer, {}).get("drop_miou", {})
            for sel in SELECTS:
                sts = [cell.get(k, {}).get(sel) for k in ks]
                mean = [st["mean"] if st and st["mean"] is not None else np.nan for st in sts]
                sd = [st["sd"] if st and st["sd"] is not None else 0.0 for st in sts]
                ax.errorbar([float(k) for k in ks], mean, yerr=sd, fmt=styles[sel], color=sel_colors[sel],
                            marker="o", ms=3, capsize=2, label=sel)
            ax.axhline(0, color="grey", lw=0.5)
            if r == 0:
                ax.set_title(layer, fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{name}\ndrop in mIoU", fontsize=8)
            if r == len(avos) - 1:
                ax.set_xlabel("K (%)")
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(folder / "masking_by_variant.png", dpi=100)
    plt.close(fig)


def build_tables(out: Path) -> dict[str, Any]:
    """Rebuild ``summary.json``, ``tables.md`` and ``plots/`` from the complete steps under ``out``."""
    from stlens.files import write_json, write_text

    study = out / "study.json"
    if not study.is_file():
        raise SystemExit(f"segmentation_study: {out} holds no study (no study.json): run the study first "
                         f"(without --tables-only), or give its --out")
    settings = json.loads(study.read_text(encoding="utf-8"))
    summary = {"settings": settings, **collect(out)}
    if not summary["runs"]:
        raise SystemExit(f"segmentation_study: {out}/runs holds no complete step yet: nothing to tabulate")
    summary["findings"] = findings(summary["runs"])
    write_json(out / "summary.json", summary)
    write_text(out / "tables.md", markdown(summary, settings, out))
    plot_all(summary, settings, out / "plots")
    return summary


# -- main ----------------------------------------------------------------------------------------------------------


def study_settings(s: Settings) -> dict[str, Any]:
    doc = asdict(s)
    doc.update(train_spec=s.train_spec, pairs_spec=s.pairs_spec, test_specs={w: s.test_spec(w) for w in WORLDS},
               models={v: VARIANTS[v] for v in s.variants}, eval_thresholds=list(THRESHOLDS),
               ablate_threshold=ABLATE_THRESHOLD, selects=list(SELECTS))
    return doc


def claim_study(out: Path, s: Settings, write: bool = True) -> None:
    """Check that the study in ``out/study.json`` (if any) has the same fixed settings, then (``write``) write it with
    the seeds and variants merged."""
    from stlens.files import write_json

    path = out / "study.json"
    doc = study_settings(s)
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        changed = [k for k in FIXED if old.get(k) != doc[k]]
        if changed:
            diffs = ", ".join(f"{k}: {old.get(k)!r} → {doc[k]!r}" for k in changed)
            raise SystemExit(f"segmentation_study: {out} holds a study with other settings ({diffs}); use another "
                             f"--out or the same settings")
        doc["seeds"] = sorted(set(old.get("seeds", [])) | set(s.seeds))
        doc["variants"] = [v for v in VARIANTS if v in set(old.get("variants", [])) | set(s.variants)]
        doc["models"] = {v: VARIANTS[v] for v in doc["variants"]}
    if not write:
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, doc)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Settings]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="default runs/segstudy (--quick: runs/segstudy-quick)")
    p.add_argument("--quick", action="store_true", help="all variants, 1 seed, 60 steps at 4×32×32, 64 train / 16 "
                   "test clips, 8 pairs, K = 25, 50, 1 draw")
    p.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2; --quick 0)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 1500; --quick 60)")
    p.add_argument("--only", default=None, help=f"comma-separated variants among {', '.join(VARIANTS)}")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: on a shared 2-core machine two "
                   "threads were slower)")
    p.add_argument("--estimate", action="store_true", help="time the per-step costs, print the projection, stop")
    p.add_argument("--tables-only", action="store_true", help="rebuild tables and plots from the folders in --out")
    args = p.parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    if args.seeds is not None:
        s.seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    if args.steps is not None:
        if args.steps < 4:
            p.error("--steps must be ≥ 4")
        s.steps = args.steps
    if args.only is not None:
        wanted = [x.strip() for x in args.only.split(",") if x.strip()]
        unknown = [x for x in wanted if x not in VARIANTS]
        if unknown or not wanted:
            p.error(f"--only: unknown variant(s) {', '.join(unknown) or '(none given)'}; choices: "
                    f"{', '.join(VARIANTS)}")
        s.variants = [v for v in VARIANTS if v in wanted]
    args.out = Path(args.out or ("runs/segstudy-quick" if args.quick else "runs/segstudy"))
    return args, s


def main(argv: list[str] | None = None) -> int:
    args, s = parse_args(argv)
    out: Path = args.out
    if args.tables_only:
        summary = build_tables(out)
        print(f"{len(summary['runs'])} (variant, seed) runs → {out / 'tables.md'}, {out / 'summary.json'}, "
              f"{out / 'plots'}")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    claim_study(out, s, write=False)  # a study with other settings is refused before any work
    print(f"segmentation study → {out}: variants {', '.join(s.variants)}; seeds {s.seeds}; {s.steps} steps at "
          f"{s.frames}×{s.size}×{s.size}", flush=True)
    todo = pending(s, out)
    if not todo and not args.estimate:
        print("  every step is complete: rebuilding the tables")
        claim_study(out, s)
        build_tables(out)
        print(f"→ {out / 'tables.md'}")
        return 0
    families = sorted({"avos" if is_avos(v) else "seg3d" for v in s.variants})
    tick = time.perf_counter()
    costs = calibrate(s, families)
    print(f"  calibration took {time.perf_counter() - tick:.0f} s", flush=True)
    total_projected = print_budget(s, costs, todo)
    if args.estimate:
        return 0
    claim_study(out, s)
    from stlens.files import write_json

    write_json(out / "calibration.json", {"costs": costs, "projected_seconds": total_projected, "pending": len(todo),
                                          "load": os.getloadavg()[0], "threads": args.threads})
    started = time.perf_counter()
    for i, (run, step) in enumerate(todo, 1):
        tick = time.perf_counter()
        projected_step = projected(s, run, step, costs)
        print(f"[{i}/{len(todo)}] {step} {run.name} (projected {hms(projected_step)}) ...", flush=True)
        note = ""
        if step == "train":
            do_train(run, s, progress=sys.stderr.isatty())
        elif step == "measure":
            do_measure(run, s)
        elif step == "evaluate":
            do_evaluate(run, s)
        else:
            layers = live_layers(run.measure, fusion_layers(run.variant))
            skipped = [x for x in fusion_layers(run.variant) if x not in layers]
            note = f" (no live channel, not masked: {', '.join(skipped)})" if skipped else ""
            if layers:
                do_ablate(run, s, layers)
        seconds = time.perf_counter() - tick
        load = os.getloadavg()[0]
        with open(out / "timings.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, "run": run.name, "seconds": round(seconds, 2),
                                     "projected": round(projected_step, 2), "load": round(load, 2),
                                     "at": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        print(f"    {step} {run.name}: {hms(seconds)} (load {load:.1f}; {hms(time.perf_counter() - started)} "
              f"elapsed){note}", flush=True)
        if i == len(todo) or todo[i][0].seed != run.seed:
            build_tables(out)  # after each seed's round: partial tables while the rest runs
    print(f"done in {hms(time.perf_counter() - started)} (projected {hms(total_projected)}) → {out / 'tables.md'}")
    return 0


def run_main() -> int:
    """``main`` with SIGINT and SIGTERM both stopping it as an interrupt (a script started in the background inherits
    SIGINT as ignored): an interrupted training resumes from its last checkpoint on the next run."""
    from stlens.interrupts import EXIT_INTERRUPTED, Interrupted, handle_signals

    try:
        with handle_signals():
            return main()
    except Interrupted as exc:
        print(f"segmentation_study: interrupted ({exc.signal_name}); run the same command to resume", flush=True)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(run_main())
