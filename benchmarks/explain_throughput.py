"""Clips/s of ``stlens.explain`` on torchvision:r3d_18 (random weights: speed does not depend on them), Grad-CAM at
its default layer (layer4) and integrated gradients, per batch size, side by side.

Each clip costs three attributions (the clip, its frame-shuffled and its restyled copy): Grad-CAM 3 forward +
backward passes, integrated gradients 3 × ``steps`` (``batch_size`` is also the scaled inputs per forward), plus one
forward for the prediction. A warm-up (imports, one forward + backward at the measured shape) comes first; a run
times ``clips`` = its batch size clips by default. Usage::

    .venv/bin/python benchmarks/explain_throughput.py                        # 16 frames at 112 px, batch 1 and 4
    .venv/bin/python benchmarks/explain_throughput.py --ig-batch-sizes 1     # ig at batch 1 only (slow CPUs)
    .venv/bin/python benchmarks/explain_throughput.py --frames 8 --size 56   # smaller, for a quick look
"""

from __future__ import annotations

import argparse
import platform
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


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else the platform's."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def sizes(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    import stlens

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--batch-sizes", type=sizes, default=[1, 4])
    parser.add_argument("--ig-batch-sizes", type=sizes, default=None, help="default: --batch-sizes")
    parser.add_argument("--clips", type=int, default=None, help="clips per run (default: the batch size)")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    handle = stlens.load_model("torchvision:r3d_18", frames=args.frames, size=args.size)
    # warm-up: captum, scipy and the stylizer imported by a tiny explain; one forward + backward at the real shape
    stlens.explain(stlens.load_model("torchvision:r3d_18", frames=4, size=32), RandomClips(1, 4, 32), clips=1,
                   device=args.device, progress=False)
    module = handle.module.to(args.device).eval()
    warm = torch.randn(1, 3, args.frames, args.size, args.size, device=args.device, requires_grad=True)
    module(warm)[0, 0].backward()
    plan = {"gradcam": args.batch_sizes, "ig": args.ig_batch_sizes or args.batch_sizes}
    found: dict[tuple[str, int], float] = {}
    for method, batch_sizes in plan.items():
        for batch in batch_sizes:
            clips = args.clips or batch
            tick = time.perf_counter()
            stlens.explain(handle, RandomClips(clips, args.frames, args.size), method=method, clips=clips,
                           steps=args.steps, batch_size=batch, device=args.device, progress=False)
            seconds = time.perf_counter() - tick
            found[method, batch] = clips / seconds
            print(f"{method:8s} batch {batch}: {clips} clips in {seconds:.1f} s = {clips / seconds:.4f} clips/s",
                  flush=True)
    every = sorted({b for bs in plan.values() for b in bs})
    print(f"\nr3d_18 (random weights) {args.frames}×{args.size}², fp32 on {args.device}, {cpu_model()}, "
          f"{torch.get_num_threads()} torch threads; ig {args.steps} steps; clips/s:")
    print("method    " + "".join(f"batch {b:<6d}" for b in every))
    for method in plan:
        print(f"{method:10s}" + "".join(f"{found[method, b]:<12.4f}" if (method, b) in found else f"{'–':12s}"
                                        for b in every))


if __name__ == "__main__":
    main()
