"""Seconds per pair (one forward of a batch of 2 clips, all default layers hooked) for every model family, at the
published clip spec and at the small test spec: wall-clock and CPU seconds of this process (``time.process_time``,
all threads; on a machine shared with other jobs the CPU seconds are the steadier number). Prints a markdown table.

    .venv/bin/python benchmarks/family_timing.py [--published-only | --small-only] [SPEC ...]
"""

from __future__ import annotations

import argparse
import time

import torch

from stlens.models.registry import load_model
from stlens.models.taps import LayerTaps

SPECS = ["pytorchvideo:slow_r50", "pytorchvideo:slowfast_r50", "pytorchvideo:x3d_xs", "pytorchvideo:x3d_s",
         "pytorchvideo:x3d_m", "pytorchvideo:c2d_r50", "pytorchvideo:i3d_r50", "pytorchvideo:r2plus1d_r50",
         "pytorchvideo:csn_r101", "pytorchvideo:mvit_base_16x4", "hf:videomae", "hf:timesformer", "hf:vivit",
         "stlens:effnet-c2d", "stlens:effnet-i3d"]
SMALL = {"pytorchvideo:slowfast_r50": (4, 32), "pytorchvideo:x3d_xs": (4, 32), "pytorchvideo:x3d_s": (4, 32),
         "pytorchvideo:x3d_m": (4, 32), "hf:videomae": (4, 32), "hf:vivit": (4, 32), "stlens:effnet-c2d": (4, 32),
         "stlens:effnet-i3d": (4, 32)}


def seconds_per_pair(spec: str, frames: int | None, size: int | None, repeats: int = 2) -> tuple[str, str]:
    handle = load_model(spec, frames=frames, size=size)
    x = torch.randn(2, 3, handle.input.frames, handle.input.size, handle.input.size)
    with torch.inference_mode(), LayerTaps(handle.module, handle.layers("default")):
        handle.module(x)
        best, cpu = float("inf"), float("inf")
        for _ in range(repeats):
            tick, cpu_tick = time.perf_counter(), time.process_time()
            handle.module(x)
            best = min(best, time.perf_counter() - tick)
            cpu = min(cpu, time.process_time() - cpu_tick)
    return f"{best:.2f} / {cpu:.2f}", f"{handle.input.frames}×{handle.input.stride} @ {handle.input.size}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("specs", nargs="*", default=SPECS)
    parser.add_argument("--published-only", action="store_true")
    parser.add_argument("--small-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| model | clip (published) | wall / CPU s per pair | clip (test) | wall / CPU s per pair |")
    print("|---|---|---|---|---|")
    for spec in args.specs:
        row = [spec]
        if not args.small_only:
            seconds, clip = seconds_per_pair(spec, None, None, repeats=1)
            row += [clip, seconds]
        else:
            row += ["", ""]
        if not args.published_only:
            frames, size = SMALL.get(spec, (2, 32))
            seconds, clip = seconds_per_pair(spec, frames, size)
            row += [clip, seconds]
        else:
            row += ["", ""]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
