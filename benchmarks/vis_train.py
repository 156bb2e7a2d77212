"""A training recipe for ``stlens:vis`` on the synth instance worlds, scored by YouTube-VIS track AP (docs/vis.md).

Each recipe is one ``stlens.train(..., task="instances")`` run folder under ``OUT/<world>/<recipe>``; its AP on a
validation part of the *train* split (``seed=1``: generators no training clip shares) is what recipes are chosen by.
The held-out test split is scored once, for the chosen recipe only (``--test``). Beside every AP stands the trivial
baseline ``union_baseline``: per clip, one track per class, each the union of all ground-truth masks, equal scores.

Resumable: a finished run (its final checkpoint and ``vis_eval.json``) is skipped; an interrupted one resumes from
its last checkpoint. ``OUT/results.jsonl`` records every run's settings, wall and CPU time of this invocation's
training (a resumed run's earlier part is in its ``metrics.jsonl``), load average and AP numbers.

    python benchmarks/vis_train.py --recipes flow-w32,rgb-w32,flow-w16   # train, score on validation
    python benchmarks/vis_train.py --recipes rgb-w32 --bundle             # the chosen one: test once, bundle it
    python benchmarks/vis_train.py --baseline                             # the baseline on both worlds' test split
    python benchmarks/vis_train.py --score bundled:vis-motion             # AP of any weights on the test split
    python benchmarks/vis_train.py --quick                                # a 20-step smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stlens.core.instances import Instances, TrackPredictions
from stlens.measure.trackap import track_ap, track_iou

CLASSES = 4
BASE = "synth:{world}?task=instances&frames=8&size=64"
TRAIN_DATA = BASE + "&n=2000"
VAL_DATA = BASE + "&split=train&seed=1&n=128"
TEST_DATA = BASE + "&split=test&n=256"
#: the fixed sample ``tests/test_bundled.py`` re-checks: the first test clips
CHECK_DATA = BASE + "&split=test&n=16"
#: bundled name → the recipe chosen on the validation part (docs/vis.md)
BUNDLED = {"vis-motion": "rgb-w32", "vis-appearance": "rgb-w32"}
#: recipe → model spec and trainer settings (AdamW, linear warm-up, cosine decay to 0)
RECIPES: dict[str, dict[str, Any]] = {
    "flow-w32": {"model": "stlens:vis?classes=4&width=32&queries=10&flow=true", "steps": 800, "batch_size": 8,
                 "lr": 1e-3, "warmup": 40},
    "flow-w16": {"model": "stlens:vis?classes=4&width=16&queries=10&flow=true", "steps": 1600, "batch_size": 8,
                 "lr": 2e-3, "warmup": 50},
    "rgb-w32": {"model": "stlens:vis?classes=4&width=32&queries=10", "steps": 800, "batch_size": 8, "lr": 1e-3,
                "warmup": 40},
    # rgb-w32 with Mask2Former's masked attention (docs/vis.md: does it let the queries read their object's motion?)
    "rgb-w32-masked": {"model": "stlens:vis?classes=4&width=32&queries=10&masked=true", "steps": 800,
                       "batch_size": 8, "lr": 1e-3, "warmup": 40},
    "flow-w32-masked": {"model": "stlens:vis?classes=4&width=32&queries=10&masked=true&flow=true", "steps": 800,
                        "batch_size": 8, "lr": 1e-3, "warmup": 40},
}
QUICK = {"steps": 20, "batch_size": 2, "warmup": 2}


def union_baseline(target: Instances, num_classes: int = CLASSES) -> TrackPredictions:
    """The trivial baseline of one clip: one track per class, each covering every ground-truth instance's pixels in
    every frame (the union of the masks: an oracle foreground, no instances, no classes), all with score 1."""
    union = target.masks.any(0) if len(target) else np.zeros(target.masks.shape[1:], bool)
    return TrackPredictions(np.repeat(union[None], num_classes, 0), np.arange(num_classes), np.ones(num_classes))


@torch.inference_mode()
def predict(model_spec: str, weights: str, data: str, clips: int | None = None, batch: int = 16
            ) -> tuple[list[TrackPredictions], list[Instances]]:
    """Tracks of a VIS model (eval mode, CPU) on the first ``clips`` clips of ``data`` and their ground truth."""
    from stlens.models.registry import load_model
    from stlens.models.zoo.vis import predict_tracks
    from stlens.video.labelled import open_clips

    handle = load_model(model_spec, weights, frames=8, size=64, device="cpu")
    model = handle.module.eval()
    source = open_clips(data, handle.input, flow=handle.inputs == 2, task="instances")
    count = len(source) if clips is None else min(clips, len(source))
    rng = np.random.default_rng(0)
    predictions: list[TrackPredictions] = []
    targets: list[Instances] = []
    for start in range(0, count, batch):
        inputs, truth = source.batch(np.arange(start, min(count, start + batch)), rng)
        output = model(*inputs) if isinstance(inputs, tuple) else model(inputs)
        predictions += predict_tracks(output)
        targets += truth
    return predictions, targets


def ground_truth(data: str) -> list[Instances]:
    """The ``Instances`` of every clip of a synth instance source (no model, no flow)."""
    from stlens.video.sources import open_data

    source = open_data(data)
    return [source[i].instances for i in range(len(source))]


def baseline_scores(data: str) -> dict[str, Any]:
    """AP of ``union_baseline`` on every clip of ``data``."""
    targets = ground_truth(data)
    return {"data": data, "clips": len(targets),
            "baseline": summary(track_ap([union_baseline(t) for t in targets], targets, CLASSES))}


def diagnose(predictions: list[TrackPredictions], targets: list[Instances]) -> dict[str, float]:
    """Per ground-truth track, the predicted track of highest space-time IoU with it: the mean of that IoU, the share
    of tracks where it is ≥ 0.5, and the share where that track also has the right class (masks vs classes)."""
    best, right = [], []
    for prediction, target in zip(predictions, targets, strict=True):
        if len(target) == 0:
            continue
        iou = track_iou(prediction.masks, target.masks)
        query = iou.argmax(0)
        best += iou[query, np.arange(len(target))].tolist()
        right += (prediction.classes[query] == target.classes).tolist()
    best_iou, correct = np.array(best), np.array(right, bool)
    return {"best_iou": round(float(best_iou.mean()), 4), "best_iou_ge_0.5": round(float((best_iou >= 0.5).mean()), 4),
            "best_class_right": round(float(correct.mean()), 4),
            "best_both": round(float((correct & (best_iou >= 0.5)).mean()), 4)}


def summary(found: dict) -> dict[str, float]:
    return {k: round(float(found[k]), 4) for k in ("ap", "ap50", "ap75", "ar1", "ar10")}


def scores(model_spec: str, weights: str, data: str) -> dict[str, Any]:
    """AP of the model and of ``union_baseline`` on every clip of ``data``."""
    began = time.perf_counter()
    predictions, targets = predict(model_spec, weights, data)
    model = summary(track_ap(predictions, targets, CLASSES)) | diagnose(predictions, targets)
    baseline = summary(track_ap([union_baseline(t) for t in targets], targets, CLASSES))
    return {"data": data, "clips": len(targets), "model": model, "baseline": baseline,
            "seconds": round(time.perf_counter() - began, 1)}


def run(world: str, name: str, out: Path, quick: bool) -> dict[str, Any]:
    """Train recipe ``name`` on ``world`` (resuming its folder), then score it on the validation part."""
    from stlens.train import train
    from stlens.train.trainer import TrainConfig

    recipe = {**RECIPES[name], **(QUICK if quick else {})}
    folder = out / world / name
    done = folder / "vis_eval.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    config = TrainConfig(model=recipe["model"], data=TRAIN_DATA.format(world=world), steps=recipe["steps"],
                         out=str(folder), test_data=VAL_DATA.format(world=world), batch_size=recipe["batch_size"],
                         lr=recipe["lr"], warmup=recipe["warmup"], eval_clips=32 if quick else 64,
                         checkpoint_every=max(1, recipe["steps"] // 4), task="instances", seed=0)
    load = os.getloadavg()[0]
    began, cpu = time.perf_counter(), time.process_time()
    metrics = train(config, progress=False)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    weights = folder / "checkpoints" / f"step_{recipe['steps']:06d}.safetensors"
    record = {"world": world, "recipe": name, **recipe, "threads": torch.get_num_threads(),
              "train_seconds": round(seconds, 1), "train_cpu_seconds": round(cpu, 1), "load_start": round(load, 2),
              "load_end": round(os.getloadavg()[0], 2), "trainer_metrics": metrics, "weights": str(weights),
              "validation": scores(recipe["model"], str(weights), VAL_DATA.format(world=world))}
    done.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    with open(out / "results.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    return record


def check_sample(model_spec: str, weights: str, data: str) -> dict[str, Any]:
    """AP of the model and of the baseline on every clip of ``data`` (the bundled record's check sample, which
    ``tests/test_bundled.py`` re-checks)."""
    predictions, targets = predict(model_spec, weights, data)
    return {"data": data, "clips": len(targets), **summary(track_ap(predictions, targets, CLASSES)),
            **diagnose(predictions, targets),
            "baseline": summary(track_ap([union_baseline(t) for t in targets], targets, CLASSES))}


def bundle(record: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
    """Copy a run's final weights as float16 into ``stlens/bundled/vis-<world>.safetensors`` with its JSON record:
    the spec, the training settings and time, validation and test AP beside the baseline, and the check sample."""
    from make_checkpoints import bundle_half

    from stlens.models.bundled import bundled_dir

    world = record["world"]
    name = f"vis-{world}"
    target = bundled_dir() / f"{name}.safetensors"
    bundle_half(Path(record["weights"]), target)
    info = {
        "name": name, "model": record["model"], "data": TRAIN_DATA.format(world=world), "task": "instances",
        "test_data": {world: test["data"]}, "validation_data": record["validation"]["data"],
        "train": {k: record[k] for k in ("recipe", "steps", "batch_size", "lr", "warmup", "threads", "train_seconds",
                                         "train_cpu_seconds", "load_start", "load_end")}
        | {"seed": 0, "frames": 8, "size": 64, "torch": torch.__version__},
        "validation": record["validation"], "test": {world: test},
        "check_sample": check_sample(record["model"], str(target), CHECK_DATA.format(world=world)),
    }
    target.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(f"bundled:{name}: check sample AP {info['check_sample']['ap']} (baseline "
          f"{info['check_sample']['baseline']['ap']}), {target.stat().st_size / 2**20:.2f} MiB", flush=True)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", default="motion", choices=("motion", "appearance"))
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
    parser.add_argument("--out", default="runs/vis")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--test", action="store_true", help="score the (one, chosen) recipe on the test split")
    parser.add_argument("--bundle", action="store_true",
                        help="bundle the (one, chosen) recipe's weights as bundled:vis-WORLD (implies --test)")
    parser.add_argument("--score", metavar="WEIGHTS",
                        help="only score these weights (bundled:vis-motion or a checkpoint) on --data; the model spec "
                             "is the bundled record's unless --model is given")
    parser.add_argument("--model", help="the model spec of --score")
    parser.add_argument("--data", help="the clips of --score (default: the test split of --world)")
    parser.add_argument("--baseline", action="store_true",
                        help="only the baseline's AP on the test split of both worlds (OUT/baseline.json)")
    parser.add_argument("--quick", action="store_true", help="20 steps of batch 2: a smoke run (OUT/quick)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.score:
        from stlens.models.bundled import PREFIX, bundled_info

        spec = args.model or (bundled_info(args.score)["model"] if args.score.startswith(PREFIX) else None)
        if spec is None:
            parser.error("--score with a checkpoint needs --model")
        found = check_sample(spec, args.score, args.data or TEST_DATA.format(world=args.world))
        print(json.dumps(found, indent=2))
        return
    out = Path(args.out) / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    if args.baseline:
        found = {world: baseline_scores(TEST_DATA.format(world=world)) for world in ("motion", "appearance")}
        (out / "baseline.json").write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
        for world, doc in found.items():
            print(f"{world} test ({doc['clips']} clips): baseline {doc['baseline']}", flush=True)
        return
    for name in args.recipes.split(","):
        record = run(args.world, name.strip(), out, args.quick)
        val = record["validation"]
        print(f"{args.world}/{name}: {record['train_seconds'] / 60:.1f} min training (load "
              f"{record['load_start']}→{record['load_end']}); validation AP {val['model']['ap']} AP50 "
              f"{val['model']['ap50']} (baseline {val['baseline']['ap']} / {val['baseline']['ap50']})", flush=True)
        path = out / args.world / name.strip() / "vis_test.json"
        if (args.test or args.bundle) and not path.is_file():
            test = scores(record["model"], record["weights"], TEST_DATA.format(world=args.world))
            path.write_text(json.dumps(test, indent=2) + "\n", encoding="utf-8")
        if path.is_file():
            test = json.loads(path.read_text(encoding="utf-8"))
            print(f"  test ({test['clips']} clips): {test['model']} baseline {test['baseline']}", flush=True)
        if args.bundle:
            bundle(record, test)


if __name__ == "__main__":
    main()
