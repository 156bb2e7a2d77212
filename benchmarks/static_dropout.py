"""StaticDropout experiment on ``synth:confounded``: train where direction and appearance family both give the label,
test on the split where the appearance family is drawn at random (only motion generalizes).

Arms (same steps, batch, lr and seeds): ``baseline`` (no dropout), ``random`` (RandomChannelDropout: the same count,
p and schedule, random channels), ``static`` (StaticDropout). Reports test accuracy on the broken split and the
last-stage dynamic % (mean ± std over seeds), and tracks the bias of the baseline (seed 0) over training.

    python benchmarks/static_dropout.py [--steps 200] [--seeds 0,1,2] [--layer stage4] [--p 0.5]
        [--select topk:16] [--every 40] [--start 40] [--arms baseline,random,static] [--no-track]
        [--out runs/static_dropout]

Runs are resumable (a finished run is not retrained); ``--tag`` keeps variations apart. ``--no-track`` skips the
tracking of the baseline. ``benchmarks/static_dropout_behaviour.py`` then runs ``stlens perturb`` on every checkpoint.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from stlens.measure.run import measure
from stlens.models.registry import load_model
from stlens.pairs.compose import make_pairs
from stlens.train import TrainConfig, list_checkpoints, load_checkpoint, train
from stlens.train.tracking import track
from stlens.train.trainer import accuracy
from stlens.video.labelled import open_clips
from stlens.video.sources import open_data


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="stlens:i3d?width=8")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--world", default="confounded")
    p.add_argument("--speed", default=None, help="synth speed range LO-HI (px/frame at 64 px; default the world's)")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default="baseline,random,static")
    p.add_argument("--layer", default="stage4")
    p.add_argument("--p", type=float, default=0.5)
    p.add_argument("--select", default="topk:16")
    p.add_argument("--every", type=int, default=40)
    p.add_argument("--start", type=int, default=40)
    p.add_argument("--select-pairs", type=int, default=32, help="pairs per factor for each re-selection")
    p.add_argument("--measure-pairs", type=int, default=64, help="pairs per factor for the final dynamic %%")
    p.add_argument("--eval-clips", type=int, default=400)
    p.add_argument("--track-every", type=int, default=25, help="checkpoint spacing of the tracked baseline")
    p.add_argument("--tag", default="")
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 when running seeds in parallel)")
    p.add_argument("--no-track", action="store_true", help="skip tracking the baseline (seed 0) over training")
    p.add_argument("--report", action="store_true", help="only print the table of everything in OUT/results.jsonl")
    p.add_argument("--out", default="runs/static_dropout")
    return p.parse_args()


def world_spec(args: argparse.Namespace, split: str = "train", n: int | None = None) -> str:
    speed = f"&speed={args.speed}" if args.speed else ""
    split = "" if split == "train" else f"split={split}&"
    return f"synth:{args.world}?{split}n={n or args.n}&frames={args.frames}&size={args.size}{speed}"


def dropout_spec(args: argparse.Namespace) -> str:
    return f"{args.layer}:p={args.p}:select={args.select}:every={args.every}:start={args.start}:" \
           f"pairs={args.select_pairs}"


def run_arm(args: argparse.Namespace, arm: str, seed: int, root: Path) -> dict:
    data = world_spec(args)
    name = arm if arm == "baseline" else f"{arm}{args.tag}"
    out = root / f"{name}_seed{seed}"
    spec = dropout_spec(args)
    track_run = arm == "baseline" and seed == 0
    config = TrainConfig(model=args.model, data=data, steps=args.steps, out=str(out), batch_size=args.batch_size,
                         lr=args.lr, seed=seed, eval_clips=args.eval_clips, frames=args.frames, size=args.size,
                         checkpoint_every=args.track_every if track_run else 0,
                         static_dropout=spec if arm == "static" else None,
                         random_dropout=spec if arm == "random" else None)
    began = time.perf_counter()
    found = list_checkpoints(out / "checkpoints")
    if not found or found[-1][0] < args.steps:
        train(config, progress=False)
    seconds = time.perf_counter() - began
    last = list_checkpoints(out / "checkpoints")[-1][1]
    metrics = json.loads(last.with_suffix(".json").read_text())["metrics"]
    handle = load_model(args.model, None, frames=args.frames, size=args.size)
    load_checkpoint(last, handle.module)
    test = world_spec(args, "test", 512)
    test_acc = accuracy(handle.module, open_clips(test, handle.input), 512, 64, seed=0)  # all 512 test clips
    pairs = make_pairs(open_data(test), handle.input, args.measure_pairs, seed=0)
    result = measure(handle, pairs, [args.layer, "stage4"] if args.layer != "stage4" else ["stage4"],
                     bootstrap=0, seed=0, progress=False)
    selections = []
    log = out / "dropout.jsonl"
    if log.is_file():
        selections = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    record = {"arm": arm, "seed": seed, "tag": args.tag, "spec": None if arm == "baseline" else spec,
              "test_acc": test_acc, "test_acc_256": metrics.get("test_acc"), "train_acc": metrics.get("train_acc"),
              "stage4_percent": result["stage4"].percent, "stage4_units": result["stage4"].units,
              "layer_percent": result[args.layer].percent, "selected": [len(s["channels"]) for s in selections],
              "seconds": round(seconds, 1), "out": str(out)}
    print(json.dumps(record), flush=True)
    return record


def summarize(records: list[dict]) -> str:
    lines = ["| arm | seeds | test acc (broken split, 512 clips) | train acc (256 clips) | stage4 dynamic % "
             "| stage4 static % |", "|---|---|---|---|---|---|"]
    arms = list(dict.fromkeys((r["arm"], r["tag"]) for r in records))
    for arm, tag in arms:
        rows = [r for r in records if (r["arm"], r["tag"]) == (arm, tag)]

        def stat(values: list[float], scale: float = 1.0) -> str:
            v = np.asarray(values, dtype=float) * scale
            return f"{v.mean():.1f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.1f}"

        lines.append(f"| {arm}{tag} | {','.join(str(r['seed']) for r in rows)} | "
                     f"{stat([r['test_acc'] for r in rows], 100)} | {stat([r['train_acc'] for r in rows], 100)} | "
                     f"{stat([r['stage4_percent']['dynamic'] for r in rows])} | "
                     f"{stat([r['stage4_percent']['static'] for r in rows])} |")
    return "\n".join(lines)


def report(root: Path) -> str:
    """The table over every run recorded in ``root/results.jsonl`` (the last record of an arm, tag and seed wins)."""
    latest: dict[tuple, dict] = {}
    for line in (root / "results.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            latest[(record["arm"], record["tag"], record["seed"])] = record
    return summarize(sorted(latest.values(), key=lambda r: (r["tag"], r["seed"])))


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    if args.report:
        print(report(root))
        return
    records = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for arm in args.arms.split(","):
            record = run_arm(args, arm, seed, root)
            records.append(record)
            with open(root / "results.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
    print(summarize(records))
    if not args.no_track and "baseline" in args.arms.split(",") and 0 in [int(s) for s in args.seeds.split(",")]:
        data = world_spec(args)
        tracked = track(args.model, root / "baseline_seed0", data, "default", pairs=32, bootstrap=200, seed=0,
                        progress=False)
        tracked.save(root / "track_baseline")
        print(tracked.table())


if __name__ == "__main__":
    main()
