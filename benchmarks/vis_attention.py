"""Where do the queries of ``stlens:vis?masked=true`` attend? Per decoder layer, over the clips of ``--data``: the
share of queries left fully open (an empty mask), and for each ground-truth track's best-IoU query (as
``vis_train.diagnose`` picks it) the share of its open memory tokens that touch the track (any of its pixels in the
token's 8×8 cell) against that share for a fully open query (the track's share of all tokens), and the share of the
track's tokens it keeps open (docs/vis.md).

    python benchmarks/vis_attention.py --weights runs/vis/motion/rgb-w32-masked/checkpoints/step_000800.safetensors
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from stlens.measure.trackap import track_iou

DATA = "synth:motion?task=instances&frames=8&size=64&split=train&seed=1&n=128"


@torch.inference_mode()
def probe(model_spec: str, weights: str, data: str, batch: int = 16) -> dict[str, Any]:
    """The per-layer attention numbers of a masked VIS model on every clip of ``data`` (see the module doc)."""
    from stlens.models.registry import load_model
    from stlens.models.zoo.vis import predict_tracks
    from stlens.video.labelled import open_clips

    handle = load_model(model_spec, weights, frames=8, size=64, device="cpu")
    model = handle.module.eval()
    if not model.masked:
        raise SystemExit(f"{model_spec} has no masked attention")
    masks: list[torch.Tensor] = []
    hooks = [layer.cross.register_forward_pre_hook(
        lambda _m, _a, kwargs: masks.append(kwargs["attn_mask"]), with_kwargs=True) for layer in model.decoder]
    source = open_clips(data, handle.input, task="instances")
    rng = np.random.default_rng(0)
    depth, heads = len(model.decoder), model.heads
    fully_open = [[] for _ in range(depth)]
    precision = [[] for _ in range(depth)]
    recall = [[] for _ in range(depth)]
    best_open = [[] for _ in range(depth)]
    chance: list[float] = []
    for start in range(0, len(source), batch):
        masks.clear()
        inputs, targets = source.batch(np.arange(start, min(len(source), start + batch)), rng)
        output = model(inputs)
        tracks = predict_tracks(output)
        opened = [~m[::heads] for m in masks]  # (B, Q, T·h·w), head 0 (all heads share it)
        t, size = output["masks"].shape[2], output["masks"].shape[-1]
        cell = size // int(round((opened[0].shape[-1] / t) ** 0.5))
        for k in range(depth):
            fully_open[k] += opened[k].all(-1).flatten().tolist()
        for i, (prediction, target) in enumerate(zip(tracks, targets, strict=True)):
            if len(target) == 0:
                continue
            query = track_iou(prediction.masks, target.masks).argmax(0)
            truth = torch.from_numpy(target.masks).float()  # (N, T, H, W)
            touch = (F.max_pool2d(truth.flatten(0, 1)[:, None], cell)[:, 0] > 0).unflatten(0, truth.shape[:2])
            touch = touch.flatten(1)  # (N, T·h·w)
            for n in range(len(target)):
                chance.append(float(touch[n].float().mean()))
                for k in range(depth):
                    row = opened[k][i, query[n]]
                    best_open[k].append(bool(row.all()))
                    precision[k].append(float((row & touch[n]).sum() / row.sum()))
                    recall[k].append(float((row & touch[n]).sum() / touch[n].sum().clamp_min(1)))
    for hook in hooks:
        hook.remove()
    return {"data": data, "tracks": len(chance), "track_share_of_tokens": round(float(np.mean(chance)), 4),
            "layers": [{"layer": f"decoder.{k}", "queries_fully_open": round(float(np.mean(fully_open[k])), 4),
                        "best_query_fully_open": round(float(np.mean(best_open[k])), 4),
                         "best_query_precision": round(float(np.mean(precision[k])), 4),
                        "best_query_recall": round(float(np.mean(recall[k])), 4)} for k in range(depth)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--model", default="stlens:vis?classes=4&width=32&queries=10&masked=true")
    parser.add_argument("--data", default=DATA)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps(probe(args.model, args.weights, args.data), indent=2))


if __name__ == "__main__":
    main()
