"""Does a short training run of ``stlens:avos?fusion=gated&cc=recip`` segment the DAVIS analogue
(``synth:motion?task=segment``: the camera pans and zooms) better than trivial baselines? (issue #18)

1. trains the model with ``stlens train --task segment`` (resumable: a finished run folder is reused);
2. scores it on held-out test clips of the DAVIS analogue and of the MoCA analogue (``synth:camouflage?task=segment``)
   with the MoCA protocol (``stlens.measure.scores.Segmentation``: mIoU and mSR, mask threshold 0.5);
3. scores two baselines on the same clips: all background, and "mask = where the estimated flow magnitude (DIS, the
   flow the model gets) is large", with the magnitude threshold chosen to maximise mIoU on 64 training clips.

Usage: .venv/bin/python benchmarks/segment_baselines.py [--steps 800] [--out runs/segment] [--quick]
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
from stlens.measure.scores import Segmentation
from stlens.train import TrainConfig, list_checkpoints, train
from stlens.train.tasks import evaluate_clips
from stlens.video.labelled import open_clips

MODEL = "stlens:avos?fusion=gated&cc=recip"
WORLD = "synth:{world}?task=segment&frames=8&size=64"


def flow_magnitudes(spec: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(masks (N, T, H, W) bool, |flow| (N, T, H, W)) of the first ``count`` clips; frame t uses the flow t → t+1,
    the last frame repeats the last flow."""
    data = stlens.open_data(spec)
    masks, mags = [], []
    for i in range(min(count, len(data))):
        clip = data[i]
        flow = clip.flow() if callable(clip.flow) else clip.flow
        mag = np.linalg.norm(flow, axis=-1)
        mags.append(np.concatenate([mag, mag[-1:]]))
        masks.append(np.asarray(clip.masks, bool))
    return np.stack(masks), np.stack(mags)


def scored(prediction: np.ndarray, masks: np.ndarray, metric: Segmentation) -> dict[str, float]:
    logits = torch.from_numpy(np.where(prediction, 10.0, -10.0).astype(np.float32))
    s = metric.scores(logits, torch.from_numpy(masks.astype(np.float32)))
    return {"miou": float(np.nanmean(s["miou"])), "msr": float(np.nanmean(s["msr"]))}


def best_flow_threshold(spec: str, metric: Segmentation) -> float:
    masks, mags = flow_magnitudes(spec, 64)
    grid = np.quantile(mags, np.linspace(0.05, 0.99, 40))
    return float(max(grid, key=lambda t: scored(mags > t, masks, metric)["miou"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--train-clips", type=int, default=2000)
    p.add_argument("--test-clips", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/segment")
    p.add_argument("--quick", action="store_true", help="40 steps, 32 test clips (a smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.test_clips, args.train_clips = 40, 32, 200
    out = Path(args.out)
    run = out / f"avos-gated-recip-s{args.seed}-{args.steps}"
    train_spec = WORLD.format(world="motion") + f"&n={args.train_clips}"
    tick = time.perf_counter()
    if not (run / ".stlens-run.json").is_file() or json.loads((run / ".stlens-run.json").read_text())[
            "status"] != "complete":
        train(TrainConfig(model=MODEL, data=train_spec, steps=args.steps, out=str(run), task="segment",
                          batch_size=8, lr=3e-3, seed=args.seed, eval_clips=64, checkpoint_every=args.steps // 4))
    train_seconds = time.perf_counter() - tick
    handle = stlens.load_model(MODEL, weights=str(list_checkpoints(run / "checkpoints")[-1][1]))
    metric = Segmentation(threshold=0.5)
    threshold = best_flow_threshold(train_spec, metric)
    rows = {}
    for world in ("motion", "camouflage"):
        spec = WORLD.format(world=world) + f"&split=test&n={args.test_clips}"
        clips = open_clips(spec, handle.input, flow=True, task="segment")
        model = evaluate_clips(handle.module, clips, args.test_clips, 16, args.seed, metric)
        masks, mags = flow_magnitudes(spec, args.test_clips)
        rows[world] = {
            "model": {"miou": float(np.nanmean(model["miou"])), "msr": float(np.nanmean(model["msr"]))},
            "all background": scored(np.zeros_like(masks), masks, metric),
            f"|flow| > {threshold:.2f} px": scored(mags > threshold, masks, metric),
            "object share of pixels": float(masks.mean()),
        }
    report = {"model": MODEL, "train": train_spec, "steps": args.steps, "seed": args.seed,
              "train_seconds": train_seconds, "flow_threshold": threshold, "test_clips": args.test_clips,
              "results": rows}
    (out / "baselines.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{MODEL}, {args.steps} steps on {train_spec} ({train_seconds:.0f} s); test: {args.test_clips} clips")
    print(f"{'world':<12}{'scorer':<24}{'mIoU':>8}{'mSR':>8}")
    for world, row in rows.items():
        for name, s in row.items():
            if isinstance(s, dict):
                print(f"{world:<12}{name:<24}{s['miou']:>8.3f}{s['msr']:>8.3f}")
    print(f"→ {out / 'baselines.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
