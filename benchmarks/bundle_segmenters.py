"""Bundle two trained segmenters of the segmentation study (issue #19) into the package: ``--weights bundled:NAME``.

Copies the final weights of a study run (``OUT/runs/<variant>-s<seed>/train``) as float16 into
``src/stlens/bundled/<name>.safetensors`` with ``<name>.json``: the model spec, the training config, the study's test
mIoU/mSR on both worlds, the fusion stages' dims % from the study's measurement, and the mIoU on a small fixed sample
that ``tests/test_bundled.py`` re-checks.

    python benchmarks/segmentation_study.py            # first: the study (or at least the runs bundled here)
    python benchmarks/bundle_segmenters.py [--study runs/segstudy] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from make_checkpoints import bundle_half

from stlens.models.bundled import bundled_dir
from stlens.models.registry import load_model
from stlens.video.labelled import open_clips

#: bundled name → study variant. The two ends of the study: no cross-connection with concatenation (the most static
#: fusion stages in the study's seed-0 round) and reciprocal cross-connections with gated fusion (the paper's most
#: dynamic MATNet variant)
SEGMENTERS = {
    "avos-concat-none": "concat-none",
    "avos-gated-recip": "gated-recip",
}
#: the fixed sample the bundled test re-checks: the first clips of the DAVIS analogue's test split
CHECK_DATA = "synth:motion?task=segment&frames=8&size=64&split=test&n=32&seed=0"
CHECK_CLIPS = 32


def sample_miou(model_spec: str, weights: str, data: str = CHECK_DATA, clips: int = CHECK_CLIPS) -> float:
    """mIoU (mask threshold 0.5) of a segmenter on the fixed check sample (eval mode, deterministic)."""
    from stlens.measure.scores import Segmentation
    from stlens.train.tasks import evaluate_clips

    handle = load_model(model_spec, weights, frames=8, size=64, device="cpu")
    source = open_clips(data, handle.input, flow=True, task="segment")
    scores = evaluate_clips(handle.module, source, clips, 16, 0, Segmentation(threshold=0.5))
    return float(np.nanmean(scores["miou"]))


def fusion_dims(measure: Path) -> dict[str, dict[str, float]]:
    """Dims % (dynamic, static) and unit-class counts of each fusion stage in a study run's measurement."""
    result = json.loads((measure / "result.json").read_text(encoding="utf-8"))
    return {row["layer"]: {"dynamic_pct": row["percent"]["dynamic"], "static_pct": row["percent"]["static"],
                           "units": row["units"], "channels": row["channels"]}
            for row in result["layers"] if row["layer"].startswith("fusion.")}


def bundle(name: str, study: Path, seed: int) -> dict:
    variant = SEGMENTERS[name]
    run = study / "runs" / f"{variant}-s{seed}"
    evaluation = json.loads((run / "eval.json").read_text(encoding="utf-8"))
    source = run / "train" / "checkpoints" / f"step_{evaluation['steps']:06d}.safetensors"
    config = json.loads(source.with_suffix(".json").read_text(encoding="utf-8"))["config"]
    target = bundled_dir() / f"{name}.safetensors"
    bundle_half(source, target)
    worlds = {world: {k: round(v, 4) for k, v in doc.items() if k in ("miou@0.5", "msr@0.5")} | {"data": doc["data"]}
              for world, doc in evaluation["worlds"].items()}
    record = {
        "name": name, "model": evaluation["model"], "data": config["data"], "task": "segment",
        "test_data": {world: doc["data"] for world, doc in worlds.items()},
        "train": {"steps": config["steps"], "batch_size": config["batch_size"], "lr": config["lr"], "seed": seed,
                  "frames": config["frames"], "size": config["size"], "torch": torch.__version__},
        "study": {"variant": variant, "run": f"{variant}-s{seed}", "test": worlds,
                  "fusion": fusion_dims(run / "measure")},
        "check_sample": {"data": CHECK_DATA, "clips": CHECK_CLIPS,
                         "miou": sample_miou(evaluation["model"], str(target))},
    }
    target.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"{name} ← {run}: DAVIS analogue mIoU {worlds['motion']['miou@0.5']}, MoCA analogue "
          f"{worlds['camouflage']['miou@0.5']}, check sample {record['check_sample']['miou']:.4f}, "
          f"{target.stat().st_size / 2**20:.2f} MiB", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", default="runs/segstudy", help="the segmentation study's --out folder")
    parser.add_argument("--seed", type=int, default=0, help="which seed's run to bundle")
    parser.add_argument("--only", default=",".join(SEGMENTERS), help="comma-separated bundled names")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.only.split(","):
        bundle(name.strip(), Path(args.study), args.seed)


if __name__ == "__main__":
    main()
