"""Throughput of ``stlens visualize``: targets per minute with K targets in one batch vs. one at a time, and the share
of each step spent in the regularizers (goal < 10%).

    python benchmarks/visualize_throughput.py [--model stlens:i3d] [--weights bundled:i3d-motion] [--k 8] [--steps 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from stlens.models.bundled import list_bundled
from stlens.models.registry import load_model
from stlens.visualize import objectives as obj
from stlens.visualize.params import VideoParam
from stlens.visualize.regularizers import Regularization, penalty, regularizer_values
from stlens.visualize.render import Job, RenderConfig, render


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="stlens:i3d")
    parser.add_argument("--weights", default="bundled:i3d-motion" if "i3d-motion" in list_bundled() else None)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    handle = load_model(args.model, args.weights)
    spec = handle.input
    jobs = [Job(obj.class_logit(c % 8), c, 1.0) for c in range(args.k)]

    def run(batch_size: int) -> None:
        render(handle.module, jobs, spec.frames, spec.size, spec.mean, spec.std, False,
               RenderConfig(steps=args.steps, batch_size=batch_size))

    batched = timed(lambda: run(args.k), args.repeats)
    single = timed(lambda: run(1), args.repeats)

    reg = Regularization()
    param = VideoParam("fourier", spec.frames, spec.size, list(range(args.k)))
    temporal_reg = torch.ones(args.k)

    video = param.rgb().detach()

    def regularizers() -> None:
        for _ in range(args.steps):
            rgb = video.clone().requires_grad_(True)
            penalty(regularizer_values(rgb, None, reg), reg, temporal_reg).sum().backward()

    reg_time = timed(regularizers, args.repeats)
    print(f"{args.model} ({args.weights}), {spec.frames}×{spec.size}×{spec.size}, K={args.k}, {args.steps} steps, "
          f"best of {args.repeats}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f}")
    print(f"batched (K={args.k} in one batch): {batched:7.1f} s  → {60 * args.k / batched * args.steps / 256:7.2f} "
          f"targets/min at 256 steps ({batched / args.steps:.2f} s/step)")
    print(f"one at a time:                 {single:7.1f} s  → {60 * args.k / single * args.steps / 256:7.2f} "
          f"targets/min at 256 steps ({single / args.steps / args.k:.2f} s/step)")
    print(f"speed-up from batching: {single / batched:.2f}×")
    print(f"regularizers (values + backward on the input, K={args.k}): {reg_time / args.steps * 1000:.1f} ms/step = "
          f"{100 * reg_time / batched:.1f}% of a batched step (goal < 10%)")


if __name__ == "__main__":
    main()
