"""The StaticDropout experiment judged by behaviour: ``stlens perturb`` on every arm/seed checkpoint that
``benchmarks/static_dropout.py`` trained into OUT, and a table of clean top-1 and retentions (docs/static_dropout.md).

Two splits of the experiment's world (the same frames, size and speed as the training data):

- ``confounded``: held-out clips of the *training* distribution (``seed=1``: not the training clips, which are
  seed 0), where the motion direction and the appearance family both give the label. Clean accuracy is ~100 %; the
  perturbations say which cue the model reads (freeze / shuffle retention high: appearance; palette /
  appearance-free retention high: motion).
- ``broken``: the appearance-broken test split on which the benchmark reports test accuracy
  (``split=test``: the appearance family is drawn at random, only motion gives the label).

    python benchmarks/static_dropout_behaviour.py --out runs/static_dropout_fast --speed 3-4 \\
        [--arms baseline,random,static] [--seeds 0,1,2] [--splits confounded,broken] [--clips 512] \\
        [--summary benchmarks/results/static-dropout-behaviour]

Each perturb run goes to OUT/perturb/SPLIT/ARM_seedS (the default perturbations, ``--bootstrap 1000``, ``--seed
0``); a finished run is not redone, so the script is resumable. A checkpoint not trained yet is skipped (listed).
``--report`` only prints the tables of the runs found.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.stats

from stlens.errors import StlensError
from stlens.perturb.result import load_perturb
from stlens.train import list_checkpoints

PERTURBATIONS = ("shuffle", "freeze", "reverse", "stride", "palette", "fourier", "appearance-free", "static-mix")
SHOWN = ("shuffle", "freeze", "palette", "appearance-free", "static-mix")
SPLITS = ("confounded", "broken")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/static_dropout", help="the OUT of benchmarks/static_dropout.py")
    p.add_argument("--model", default="stlens:i3d?width=8")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--world", default="confounded")
    p.add_argument("--speed", default=None, help="synth speed range LO-HI, as given to static_dropout.py")
    p.add_argument("--arms", default="baseline,random,static")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tag", default="", help="the --tag of the dropout arms in static_dropout.py")
    p.add_argument("--splits", default="confounded,broken")
    p.add_argument("--clips", type=int, default=512)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", action="store_true", help="only print the tables of the perturb runs found")
    p.add_argument("--summary", default=None, help="folder for summary.csv (long) and summary.json (tables)")
    return p.parse_args()


def data_spec(args: argparse.Namespace, split: str) -> str:
    """``broken``: the benchmark's test split (world_spec(args, "test", clips)); ``confounded``: held-out clips of the
    training distribution (seed 1; the training clips are seed 0)."""
    speed = f"&speed={args.speed}" if args.speed else ""
    where = {"broken": "split=test&", "confounded": "seed=1&"}[split]
    return f"synth:{args.world}?{where}n={args.clips}&frames={args.frames}&size={args.size}{speed}"


def run_name(arm: str, tag: str) -> str:
    return arm if arm == "baseline" else f"{arm}{tag}"


def command(args: argparse.Namespace, weights: Path, split: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "stlens", "perturb", "--model", args.model, "--weights", str(weights),
            "--frames", str(args.frames), "--size", str(args.size), "--data", data_spec(args, split),
            "--perturbations", ",".join(PERTURBATIONS), "--bootstrap", str(args.bootstrap), "--seed", str(args.seed),
            "--quiet", "--out", str(out)]


def finished(out: Path):
    try:
        return load_perturb(out)
    except (StlensError, OSError, ValueError):
        return None


def run_all(args: argparse.Namespace, root: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    for split in args.splits.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for arm in args.arms.split(","):
                name = run_name(arm, args.tag)
                out = root / "perturb" / split / f"{name}_seed{seed}"
                if finished(out) is not None:
                    continue
                found = list_checkpoints(root / f"{name}_seed{seed}" / "checkpoints")
                if not found:
                    print(f"skip {split} {name} seed {seed}: no checkpoint yet", flush=True)
                    continue
                step, weights = found[-1]
                cmd = command(args, weights, split, out)
                print("$ " + shlex.join(cmd[1:]), flush=True)
                began = time.perf_counter()
                subprocess.run(cmd, check=True, env=env)
                print(f"  {split} {name} seed {seed} (step {step}): {time.perf_counter() - began:.1f} s", flush=True)


def collect(args: argparse.Namespace, root: Path) -> list[dict]:
    """One record per finished perturb run: split, arm, seed, clean top-1 and per perturbation its top-1 score,
    retention (with 95% CI) and, for static-mix, the follow rate."""
    records = []
    for split in args.splits.split(","):
        for arm in args.arms.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                result = finished(root / "perturb" / split / f"{run_name(arm, args.tag)}_seed{seed}")
                if result is None:
                    continue
                record = {"split": split, "arm": run_name(arm, args.tag), "seed": seed,
                          "data": result.settings.get("data"), "clips": result.settings.get("clips"),
                          "seconds": result.timing.get("seconds"), "clean": result.row("clean", "top1")["score"]}
                for name in PERTURBATIONS:
                    row = result.row(name, "top1")
                    record[name] = {"score": row["score"], "retention": row["retention"],
                                    "retention_lo": row["retention_lo"], "retention_hi": row["retention_hi"],
                                    "follow_rate": row["follow_rate"]}
                records.append(record)
    return records


def value(record: dict, column: str) -> float:
    if column == "clean":
        return 100.0 * record["clean"]
    if column == "follow":
        return record["static-mix"]["follow_rate"]
    return record[column]["retention"]


def stat(values: list[float], digits: int, signed: bool = False) -> str:
    """mean ± sample sd, then the per-seed values in brackets (up to 5 seeds); over more seeds a paired difference
    is its mean [95% t-interval of the mean] (in how many seeds it is positive, negative)."""
    v = np.asarray(values, dtype=float)
    sd = v.std(ddof=1) if len(v) > 1 else 0.0
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    if len(v) <= 5:
        return f"{fmt.format(v.mean())} ± {sd:.{digits}f} ({', '.join(fmt.format(x) for x in v)})"
    if not signed:
        return f"{fmt.format(v.mean())} ± {sd:.{digits}f}"
    half = float(scipy.stats.t.ppf(0.975, len(v) - 1)) * sd / np.sqrt(len(v))
    return (f"{fmt.format(v.mean())} [{fmt.format(v.mean() - half)}, {fmt.format(v.mean() + half)}] "
            f"({int((v > 0).sum())} up, {int((v < 0).sum())} down)")


COLUMNS = ("clean", *SHOWN, "follow")
HEADS = {"clean": "clean top-1 %", "follow": "static-mix follow rate"}


def tables(records: list[dict], splits: list[str]) -> tuple[str, dict]:
    """Markdown tables per split (mean ± sd over seeds, per-seed values in brackets) and the paired differences
    (each dropout arm − baseline, and static − random; same seed); and the same numbers as a dict."""
    lines, summary = [], {}
    for split in splits:
        rows = [r for r in records if r["split"] == split]
        if not rows:
            continue
        arms = list(dict.fromkeys(r["arm"] for r in rows))
        lines += [f"\n{split} split ({rows[0]['data']}, {rows[0]['clips']} clips): clean top-1 and retention of top-1",
                  "", "| arm | seeds | " + " | ".join(HEADS.get(c, c) for c in COLUMNS) + " |",
                  "|---|---|" + "---|" * len(COLUMNS)]
        summary[split] = {"data": rows[0]["data"], "clips": rows[0]["clips"], "arms": {}, "paired": {}}
        for arm in arms:
            mine = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["seed"])
            cells = [stat([value(r, c) for r in mine], 1 if c == "clean" else 2) for c in COLUMNS]
            lines.append(f"| {arm} | {','.join(str(r['seed']) for r in mine)} | " + " | ".join(cells) + " |")
            summary[split]["arms"][arm] = {"seeds": [r["seed"] for r in mine],
                                           **{c: [value(r, c) for r in mine] for c in COLUMNS}}
        contrasts = [(arm, "baseline") for arm in arms if arm != "baseline" and "baseline" in arms]
        dropouts = [a for a in arms if a != "baseline"]
        contrasts += [(a, b) for i, a in enumerate(dropouts) for b in dropouts[:i]][::-1]
        if contrasts:
            lines += ["", f"{split} split, paired by seed (the arms share the data order and the first steps)", "",
                      "| difference | seeds | " + " | ".join(HEADS.get(c, c) for c in COLUMNS) + " |",
                      "|---|---|" + "---|" * len(COLUMNS)]
        for arm, other in contrasts:
            base = {r["seed"]: r for r in rows if r["arm"] == other}
            mine = sorted((r for r in rows if r["arm"] == arm and r["seed"] in base), key=lambda r: r["seed"])
            if not mine:
                continue
            diffs = {c: [value(r, c) - value(base[r["seed"]], c) for r in mine] for c in COLUMNS}
            cells = [stat(diffs[c], 1 if c == "clean" else 2, signed=True) for c in COLUMNS]
            lines.append(f"| {arm} − {other} | {','.join(str(r['seed']) for r in mine)} | " + " | ".join(cells) + " |")
            summary[split]["paired"][f"{arm} - {other}"] = {"seeds": [r["seed"] for r in mine], **diffs}
    return "\n".join(lines), summary


def write_summary(folder: Path, records: list[dict], summary: dict, args: argparse.Namespace) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "summary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["split", "arm", "seed", "perturbation", "top1", "retention", "retention_lo",
                         "retention_hi", "follow_rate"])
        for r in records:
            writer.writerow([r["split"], r["arm"], r["seed"], "clean", f"{r['clean']:.6f}", "1", "1", "1", ""])
            for name in PERTURBATIONS:
                row = r[name]
                follow = "" if row["follow_rate"] != row["follow_rate"] else f"{row['follow_rate']:.6f}"
                writer.writerow([r["split"], r["arm"], r["seed"], name, f"{row['score']:.6f}",
                                 f"{row['retention']:.6f}", f"{row['retention_lo']:.6f}",
                                 f"{row['retention_hi']:.6f}", follow])
    settings = {"model": args.model, "frames": args.frames, "size": args.size, "speed": args.speed,
                "clips": args.clips, "bootstrap": args.bootstrap, "seed": args.seed,
                "perturbations": list(PERTURBATIONS), "data": {s: data_spec(args, s) for s in args.splits.split(",")}}
    seconds = {f"{r['split']}/{r['arm']}_seed{r['seed']}": r["seconds"] for r in records}
    (folder / "summary.json").write_text(json.dumps({"settings": settings, "tables": summary,
                                                     "perturb_seconds": seconds}, indent=1) + "\n")


def main() -> None:
    args = parse()
    root = Path(args.out)
    unknown = set(args.splits.split(",")) - set(SPLITS)
    if unknown:
        raise SystemExit(f"unknown split(s) {sorted(unknown)}: choose from {', '.join(SPLITS)}")
    if not args.report:
        run_all(args, root)
    records = collect(args, root)
    text, summary = tables(records, args.splits.split(","))
    print(text)
    if args.summary:
        write_summary(Path(args.summary), records, summary, args)


if __name__ == "__main__":
    main()
