"""What ``stlens selectivity`` costs next to one plain forward pass over the same clips (goal: ≤ 1.1×).

Both loops see the same clips, pre-made once (so clip rendering, which both would pay alike, is left out), the same
batch size and device; the plain loop runs the model under inference mode with no hooks. selectivity's time is the
whole call without the gallery (``gallery=0``; docs/selectivity.md times it apart): hooks, pooling, the per-layer
analysis with its bootstrap (``--bootstrap``, default 200). The best of ``--repeats`` runs of each is printed, and
their ratio.

Usage: .venv/bin/python benchmarks/selectivity_cost.py [--model stlens:i3d --weights bundled:i3d-motion]
       [--clips 128] [--batch-size 16] [--device cpu] [--layers default]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import stlens
from stlens.measure.verb import at_input_spec
from stlens.video.labelled import open_clips


class Premade:
    """Labelled clips made once, handed out by index (the same tensors to both loops)."""

    task = "classify"

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, num_classes: int):
        self.inputs, self.labels, self.num_classes = inputs, labels, num_classes

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices, rng):
        return self.inputs[indices], self.labels[indices]


def plain(handle, clips: Premade, batch_size: int, device: torch.device) -> float:
    module = handle.module.eval().to(device)
    tick = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(clips), batch_size):
            module(clips.inputs[start:start + batch_size].to(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="stlens:i3d")
    parser.add_argument("--weights", default="bundled:i3d-motion")
    parser.add_argument("--data", default="synth:motion?split=test")
    parser.add_argument("--clips", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--layers", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    handle = stlens.load_model(args.model, args.weights, device=device)
    source = open_clips(at_input_spec(f"{args.data}&n={args.clips}", handle), handle.input)
    inputs, labels = source.batch(np.arange(args.clips), np.random.default_rng(0))
    clips = Premade(inputs, labels, source.num_classes)
    plain(handle, Premade(inputs[:args.batch_size], labels[:args.batch_size], source.num_classes), args.batch_size,
          device)  # warm-up
    plain_s, sel_s, forward_s = [], [], []
    for _ in range(args.repeats):
        plain_s.append(plain(handle, clips, args.batch_size, device))
        tick = time.perf_counter()
        result = stlens.selectivity(handle, clips, args.layers, batch_size=args.batch_size, device=device,
                                    bootstrap=args.bootstrap, progress=False, gallery=0)
        sel_s.append(time.perf_counter() - tick)
        forward_s.append(result.timing["forward_seconds"])
    channels = sum(layer.channels for layer in result.layers)
    print(f"{args.model} ({args.weights}) on {device}, {torch.get_num_threads()} threads: {args.clips} clips, "
          f"batch {args.batch_size}, {len(result.layers)} layers ({channels} channels), bootstrap {args.bootstrap}")
    print(f"plain forward pass   {min(plain_s):8.3f} s   (spread of the {args.repeats} runs: "
          f"{max(plain_s) / min(plain_s):.2f}×)")
    analysis = min(s - f for s, f in zip(sel_s, forward_s, strict=True))
    print(f"selectivity (total)  {min(sel_s):8.3f} s   of which forwards with hooks {min(forward_s):.3f} s, the rest "
          f"(analysis, bootstrap, batching) {analysis:.3f} s")
    print(f"ratio                {min(sel_s) / min(plain_s):8.3f}×  (goal ≤ 1.1×)")


if __name__ == "__main__":
    main()
