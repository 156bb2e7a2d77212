"""Frames/s of the neural stylizers on this machine: ``neural`` (the per-frame optimisation) against ``neural-fast``
(the feed-forward network), with ``fourier`` for scale, on the same frames of a sample video.

Both wall-clock and process CPU seconds are reported: on a shared machine the wall clock depends on the other
processes, the CPU seconds (one torch thread) much less. The ratio is taken on CPU seconds.

    python benchmarks/stylizer_speed.py [--frames 8] [--size 112] [--threads 1] [--device cpu] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from stlens.video.stylizers import get_stylizer


def timed(stylize, clip: np.ndarray, seed: int, repeats: int) -> dict:
    stylize(clip[:2], seed)  # warm up: weights, caches
    wall, cpu = [], []
    for r in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        stylize(clip, seed + r)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    n = len(clip)
    return {"frames": n, "repeats": repeats, "wall_s_per_frame": min(wall) / n, "cpu_s_per_frame": min(cpu) / n,
            "frames_per_s_wall": n / min(wall), "frames_per_s_cpu": n / min(cpu)}


def main(argv: list[str] | None = None) -> int:
    from stlens.video.io import decode_video
    from stlens.video.sources import sample_videos

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8, help="frames the optimisation stylizes (the others: 8×)")
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stylizers", default="neural,neural-fast,fourier")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    video = next(p for p in sample_videos() if p.stem == "bikes")
    frames = decode_video(video, short_side=args.size, max_frames=8 * args.frames)
    frames = np.ascontiguousarray(frames[:, :, :args.size])
    device = torch.device(args.device)
    results = {"device": str(device), "threads": args.threads, "size": args.size, "stylizers": {}}
    for name, stylize in get_stylizer(args.stylizers, device, "fp32"):
        clip = frames[:args.frames] if name == "neural" else frames
        results["stylizers"][name] = row = timed(stylize, clip, 1, 1 if name == "neural" else 3)
        print(f"{name:<12} {row['frames_per_s_cpu']:10.3f} frames/s CPU  {row['frames_per_s_wall']:10.3f} frames/s "
              f"wall  ({row['cpu_s_per_frame']:.4f} / {row['wall_s_per_frame']:.4f} s per frame)", flush=True)
    rows = results["stylizers"]
    if "neural" in rows and "neural-fast" in rows:
        results["speedup_cpu"] = rows["neural"]["cpu_s_per_frame"] / rows["neural-fast"]["cpu_s_per_frame"]
        results["speedup_wall"] = rows["neural"]["wall_s_per_frame"] / rows["neural-fast"]["wall_s_per_frame"]
        print(f"neural-fast / neural: {results['speedup_cpu']:.0f}× (CPU s), {results['speedup_wall']:.0f}× (wall)")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
