"""Regenerate the bundled checkpoints (``make checkpoints``): train each recipe with ``stlens train`` and copy the final
weights into ``src/stlens/bundled/<name>.safetensors`` with ``<name>.json`` (model spec, training config, accuracies,
and the accuracy on a small fixed sample that ``tests/test_bundled.py`` re-checks).

    python benchmarks/make_checkpoints.py [--only i3d-motion,c2d-motion] [--runs runs/checkpoints]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from stlens.core.handle import takes_two_inputs
from stlens.models.bundled import bundled_dir
from stlens.models.registry import load_model
from stlens.train import TrainConfig, train
from stlens.train.trainer import accuracy
from stlens.video.labelled import open_clips

#: the fixed sample the bundled test re-checks: the first clips of the world's test split
CHECK_SAMPLE = 64
#: the motion worlds take longer to learn (measured: stlens:i3d on synth:motion reached 30% test accuracy after 600
#: steps, still rising; the appearance world passes 90% by step 200)
RECIPES = {
    "i3d-motion": dict(model="stlens:i3d", data="synth:motion?n=4000", steps=2000),
    "i3d-appearance": dict(model="stlens:i3d", data="synth:appearance?n=4000", steps=600),
    "c2d-motion": dict(model="stlens:c2d", data="synth:motion?n=4000", steps=1000),
    "c2d-appearance": dict(model="stlens:c2d", data="synth:appearance?n=4000", steps=600),
    "twostream-motion": dict(model="stlens:twostream", data="synth:motion?n=4000", steps=1000),
}
BATCH = 16
LR = 3e-3


def check_sample_spec(data: str) -> str:
    base = data.partition("?")[0]
    return f"{base}?split=test&n={CHECK_SAMPLE}&seed=0"


def sample_accuracy(model_spec: str, weights: str, data: str) -> float:
    """Accuracy of a checkpoint on the fixed check sample (eval mode, deterministic)."""
    handle = load_model(model_spec, weights)
    clips = open_clips(check_sample_spec(data), handle.input, flow=takes_two_inputs(handle.module))
    return accuracy(handle.module, clips, CHECK_SAMPLE, 32, seed=0)


def bundle_half(source: Path, target: Path) -> None:
    """Copy a checkpoint's weights as float16 (half the size; loading casts them back to the model's float32)."""
    tensors = load_file(str(source))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, str(target))


def make(name: str, runs: Path, steps: int | None = None) -> dict:
    recipe = RECIPES[name]
    steps = steps or recipe["steps"]
    out = runs / name
    config = TrainConfig(model=recipe["model"], data=recipe["data"], steps=steps, out=str(out),
                         checkpoint_every=max(1, steps // 6), batch_size=BATCH, lr=LR, eval_clips=512, seed=0)
    began = time.perf_counter()
    metrics = train(config)
    seconds = time.perf_counter() - began
    final = out / "checkpoints" / f"step_{steps:06d}.safetensors"
    target = bundled_dir() / f"{name}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    bundle_half(final, target)
    record = {
        "name": name, "model": recipe["model"], "data": recipe["data"],
        "test_data": json.loads((out / "config.json").read_text())["test_data_resolved"],
        "train": {"steps": steps, "batch_size": BATCH, "lr": LR, "seed": 0, "seconds": round(seconds, 1),
                  "torch": torch.__version__},
        "metrics": metrics,
        "check_sample": {"data": check_sample_spec(recipe["data"]),
                         "accuracy": sample_accuracy(recipe["model"], str(target), recipe["data"])},
    }
    target.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{name}: test acc {metrics.get('test_acc')}, check sample {record['check_sample']['accuracy']:.3f}, "
          f"{seconds:.0f} s", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(RECIPES), help="comma-separated recipe names")
    parser.add_argument("--runs", default="runs/checkpoints", help="where the training runs go")
    parser.add_argument("--steps", type=int, default=None, help="override every recipe's steps")
    args = parser.parse_args()
    for name in args.only.split(","):
        make(name.strip(), Path(args.runs), args.steps)


if __name__ == "__main__":
    main()
