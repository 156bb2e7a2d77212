"""Clips/s of ``stlens.explain`` (gradcam and ig) on torchvision:r3d_18 with random weights.

Each clip costs three attributions (the clip, its frame-shuffled and its restyled copy). Usage::

    .venv/bin/python benchmarks/explain_throughput.py                       # 16 frames at 112 px (the default)
    .venv/bin/python benchmarks/explain_throughput.py --frames 8 --size 56  # smaller, for slow CPUs
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


class RandomClips:
    """Random normalised clips labelled 0 (the model's input shape)."""

    num_classes = 400

    def __init__(self, count: int, frames: int, size: int):
        self.count, self.frames, self.size = count, frames, size

    def __len__(self) -> int:
        return self.count

    def batch(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(rng.standard_normal((len(indices), 3, self.frames, self.size, self.size), np.float32))
        return x, torch.zeros(len(indices), dtype=torch.long)


def main() -> None:
    import stlens

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    for method in ("gradcam", "ig"):
        data = RandomClips(args.clips, args.frames, args.size)
        tick = time.perf_counter()
        result = stlens.explain("torchvision:r3d_18", data, method=method, clips=args.clips, steps=args.steps,
                                frames=args.frames, size=args.size, batch_size=4, device=args.device,
                                progress=False)
        seconds = time.perf_counter() - tick
        print(f"{method:8s} {args.clips} clips {args.frames}×{args.size}² on {result.settings['device']}: "
              f"{args.clips / seconds:.3f} clips/s ({seconds:.1f} s; ig steps {args.steps})")


if __name__ == "__main__":
    main()
