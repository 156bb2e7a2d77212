"""Clips/s of each stylizer and flow method at 16×112×112 on real frames, next to the rate at which
``stlens measure`` consumes clips on torchvision:r3d_18 (so you can see whether pair making is the bottleneck).

Run: .venv/bin/python benchmarks/pairs_throughput.py [--repeats 3] [--neural]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from stlens.measure.run import run_forward
from stlens.models.registry import load_model
from stlens.video.flow import compute_flow
from stlens.video.io import decode_video
from stlens.video.sampling import centre_crop
from stlens.video.sources import sample_videos
from stlens.video.stylizers import get_stylizer


def rate(fn, repeats: int) -> float:
    """Best-of-``repeats`` calls per second."""
    fn()
    best = min(_timed(fn) for _ in range(repeats))
    return 1.0 / best


def _timed(fn) -> float:
    tick = time.perf_counter()
    fn()
    return time.perf_counter() - tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--neural", action="store_true", help="include the slow neural stylizer (one clip)")
    parser.add_argument("--tvl1", action="store_true", help="include TV-L1 flow (slow: seconds per frame pair)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    bbb = next(p for p in sample_videos() if p.stem == "bigbuckbunny")
    clip = centre_crop(decode_video(bbb, short_side=128, max_frames=48)[::2][:16], 112)
    assert clip.shape == (16, 112, 112, 3), clip.shape

    rows = []
    names = "palette,fourier,npr" + (",neural" if args.neural else "")
    for name, stylize in get_stylizer(names):
        seeds = iter(range(10**6))
        repeats = 1 if name == "neural" else args.repeats
        rows.append((f"stylizer {name}", rate(lambda s=stylize, it=seeds: s(clip, next(it)), repeats)))
    for method in ("dis", "farneback") + (("tvl1",) if args.tvl1 else ()):
        rows.append((f"flow {method}", rate(lambda m=method: compute_flow(clip, m), 1 if method == "tvl1" else
                                            args.repeats)))

    handle = load_model("torchvision:r3d_18")
    batch = torch.from_numpy(np.random.default_rng(0).normal(size=(8, 3, 16, 112, 112)).astype(np.float32))
    model_rate = 8 * rate(lambda: run_forward(handle.module, batch, "fp32"), args.repeats)

    print(f"clips/s at 16x112x112 (best of {args.repeats}, 2 threads); a pair needs 2 stylized clips (dynamic) or 1 "
          f"(static)")
    print(f"{'r3d_18 forward (stlens measure, fp32, batch 8)':<48}{model_rate:>8.2f}  (reference)")
    for label, value in rows:
        verdict = "ok" if value > 2 * model_rate else "BOTTLENECK"
        print(f"{label:<48}{value:>8.2f}  {value / model_rate:>6.1f}x model  {verdict}")


if __name__ == "__main__":
    main()
