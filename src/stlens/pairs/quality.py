"""``stlens pairs check``: does a pair maker keep the motion and change the appearance, as the measurement assumes?

Per stylizer, on real clips:

- ``flow_epe``: mean end-point error (px) between the optical flow of the original clip and of its stylized copy
  (small = motion kept), next to ``flow_magnitude``, the mean flow magnitude of the original clip;
- ``appearance_change``: ``colour`` = mean absolute RGB difference (0–255), ``structure`` = 1 − SSIM of the grey
  frames (0 = same structure);
- ``temporal_flicker``: warping error that the stylizer adds (grey levels): mean |S(t+1) − warp(S(t))| minus the same
  for the original, warping with the original's backward flow;
- for the frame-shuffle static pair, the mean fraction of frames moved.

The optical flow (OpenCV) and the numpy/OpenCV stylizers run on the CPU; ``device``/``precision`` are those of the
neural stylizer (the only model a check can run), recorded in the report (null without it).

Under ``torchrun`` (``stlens.core.distributed``) every rank samples the same clips, rank r checks a contiguous share
of them (``shard``, by clip index; clip c draws its styles from (seed, c) on any rank), and the per-clip numbers are
gathered in rank order, so every rank returns the report of one process (the caller writes it on rank 0 only).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from stlens.core.pair import frame_shuffle
from stlens.core.spec import InputSpec
from stlens.core.workers import Failed, guarded, in_order
from stlens.errors import StlensError
from stlens.video.flow import compute_flow, to_grey
from stlens.video.io import read_clip_source
from stlens.video.sampling import sample_clip, segment_of
from stlens.video.source import VideoSource, video_source
from stlens.video.stylizers import get_stylizer, uses_device


def end_point_error(flow_a: np.ndarray, flow_b: np.ndarray) -> float:
    """Mean Euclidean distance between two flow fields (…, 2)."""
    return float(np.linalg.norm(flow_a - flow_b, axis=-1).mean())


def warp_back(frame: np.ndarray, backward_flow: np.ndarray) -> np.ndarray:
    """Frame t sampled at x + flow(t+1 → t)(x): frame t brought to the pixel grid of frame t+1."""
    h, w = backward_flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(frame, gx + backward_flow[..., 0], gy + backward_flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def warping_error(grey: np.ndarray, backward: np.ndarray) -> float:
    """Mean |frame(t+1) − warp(frame(t))| over a grey clip (T, H, W) float32, given backward flows (T−1, H, W, 2)."""
    errors = [np.abs(grey[t + 1] - warp_back(grey[t], backward[t])).mean() for t in range(len(grey) - 1)]
    return float(np.mean(errors))


def structure_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 − mean SSIM of the grey frames of two uint8 clips."""
    from skimage.metrics import structural_similarity

    ga, gb = to_grey(a), to_grey(b)
    return float(1.0 - np.mean([structural_similarity(x, y, data_range=255) for x, y in zip(ga, gb, strict=True)]))


def clip_metrics(clip: np.ndarray, styled: np.ndarray, flow: np.ndarray, backward: np.ndarray,
                 method: str) -> dict[str, float]:
    """The pair-quality numbers of one stylized clip against its original (flows of the original given)."""
    styled_flow = compute_flow(styled, method)
    base = warping_error(to_grey(clip).astype(np.float32), backward)
    extra = warping_error(to_grey(styled).astype(np.float32), backward)
    return {
        "flow_epe": end_point_error(flow, styled_flow),
        "flow_magnitude": float(np.linalg.norm(flow, axis=-1).mean()),
        "colour": float(np.abs(clip.astype(np.float32) - styled.astype(np.float32)).mean()),
        "structure": structure_distance(clip, styled),
        "temporal_flicker": extra - base,
    }


def sample_clips(source: VideoSource, n: int, frames: int, stride: int, size: int, seed: int):
    """Yield (video, uint8 clip) — ``n`` clips spread over the usable videos of ``source``, each inside its video's
    (start, end) segment where the source gives one (Diving48)."""
    if n < 1:
        raise StlensError(f"`clips` must be ≥ 1 (the number of clips to check), got {n}")
    videos = list(video_source(source, "pairs check").videos)
    spec = InputSpec(frames=frames, stride=stride, size=size, resize=size)
    per_video = max(1, math.ceil(n / max(1, len(videos))))
    made = 0
    for v, path in enumerate(videos):
        try:
            decoded = read_clip_source(path, short_side=spec.resize)
        except StlensError:
            continue
        for i in range(per_video):
            drawn = sample_clip(decoded, spec, np.random.default_rng((seed, v, i)), segment=segment_of(source, v))
            if drawn is None or made >= n:
                break
            made += 1
            yield str(path), drawn[1]
    if made == 0:
        raise StlensError(f"no usable clip of {frames} frames in {source.spec}")


def check_pairs(source: VideoSource, stylizers: str, n: int = 8, frames: int = 16, stride: int = 2, size: int = 112,
                flow_method: str = "dis", seed: int = 0, examples_dir: str | Path | None = None,
                progress: bool = True, device=None, precision: str = "fp32", workers: int = 0) -> dict[str, Any]:
    """Measure each stylizer (and the frame shuffle) on ``n`` real clips; return the report as a dict. ``device`` (a
    ``torch.device``; default the CPU) and ``precision`` (resolved: fp32, bf16, fp16) are the neural stylizer's.
    ``workers``: processes (a ``torch.utils.data.DataLoader``) that each check whole clips (flows, stylizing, metrics)
    with the CPU stylizers; with the neural stylizer (which owns the device) the clips are checked here. The report
    is the same for any ``workers``: clip c draws its styles from (seed, c) and the rows are kept in clip order."""
    from tqdm.auto import tqdm

    from stlens.core import distributed

    if n < 1:
        raise StlensError(f"`clips` must be ≥ 1 (the number of clips to check), got {n}")
    world = distributed.current()
    group = distributed.Group(world) if world.distributed else None
    chosen = get_stylizer(stylizers, device, precision)
    on_device = uses_device(stylizers)
    clips = list(sample_clips(source, n, frames, stride, size, seed))  # the same clips on every rank
    share = distributed.shard(len(clips), world)  # rank r checks a contiguous share of them (by clip index)
    per_stylizer: dict[str, list[dict[str, float]]] = {name: [] for name, _ in chosen}
    moved = []
    examples = Path(examples_dir) if examples_dir else None
    checks = _ClipChecks(clips, share, chosen, flow_method, seed, examples)
    try:
        for metrics, fraction in tqdm(in_order(checks, 0 if on_device else workers), total=len(share),
                                      desc="pairs check", unit="clip", disable=not progress or world.rank != 0 or None):
            if group is not None:
                group.stop_if_failed()
            for name, row in metrics.items():
                per_stylizer[name].append(row)
            moved.append(fraction)
    except Exception as exc:
        if group is not None:
            group.fail_with(exc)
        raise
    if group is not None:  # every rank's results, in rank order: the clips' order
        group.stop_if_failed()
        shares = group.gather((per_stylizer, moved))
        per_stylizer = {name: [row for rows, _ in shares for row in rows[name]] for name in per_stylizer}
        moved = [m for _, part in shares for m in part]
    report = {"data": source.spec, "clips": len(clips), "frames": frames, "size": size, "flow_method": flow_method,
              "seed": seed, "device": (str(device) if device is not None else "cpu") if on_device else None,
              "precision": precision if on_device else None, "stylizers": {},
              "shuffle": {"fraction_of_frames_moved": float(np.mean(moved))}}
    for name, rows in per_stylizer.items():
        mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
        report["stylizers"][name] = {
            "flow_epe": mean["flow_epe"], "flow_magnitude": mean["flow_magnitude"],
            "appearance_change": {"colour": mean["colour"], "structure": mean["structure"]},
            "temporal_flicker": mean["temporal_flicker"],
        }
    return report


class _ClipChecks(torch.utils.data.Dataset):
    """Item i: the metrics of clip ``share[i]`` per stylizer and the fraction of its frames a shuffle moves."""

    def __init__(self, clips: list, share: range, chosen: list, flow_method: str, seed: int, examples: Path | None):
        self.clips, self.share, self.chosen = clips, share, chosen
        self.flow_method, self.seed, self.examples = flow_method, seed, examples

    def __len__(self) -> int:
        return len(self.share)

    def __getitem__(self, i: int) -> tuple[dict[str, dict[str, float]], float] | Failed:
        return guarded(lambda: self.check(self.share[i]), f"clip {self.share[i]}: the check")

    def check(self, c: int) -> tuple[dict[str, dict[str, float]], float]:
        clip = self.clips[c][1]
        flow = compute_flow(clip, self.flow_method)
        backward = compute_flow(clip[::-1].copy(), self.flow_method)[::-1]
        rng = np.random.default_rng((self.seed, c))
        metrics = {}
        for name, stylize in self.chosen:
            first, second = stylize(clip, int(rng.integers(2**31))), stylize(clip, int(rng.integers(2**31)))
            metrics[name] = clip_metrics(clip, first, flow, backward, self.flow_method)
            if self.examples is not None and c < 2:
                write_gif(self.examples / f"{name}_clip{c}.gif", np.concatenate([clip, first, second], axis=2))
        order = frame_shuffle(np.arange(len(clip)), rng)
        return metrics, float((order != np.arange(len(clip))).mean())


def write_gif(path: Path, frames: np.ndarray, fps: float = 8.0) -> None:
    """An animated GIF of uint8 (T, H, W, 3) frames."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)


def report_table(report: dict[str, Any]) -> str:
    """A terminal table of a ``check_pairs`` report."""
    head = f"{'stylizer':<12}{'flow EPE px':>12}{'|flow| px':>11}{'colour Δ':>10}{'1-SSIM':>8}{'flicker':>9}"
    lines = [head, "-" * len(head)]
    for name, r in report["stylizers"].items():
        lines.append(f"{name:<12}{r['flow_epe']:>12.2f}{r['flow_magnitude']:>11.2f}"
                     f"{r['appearance_change']['colour']:>10.1f}{r['appearance_change']['structure']:>8.2f}"
                     f"{r['temporal_flicker']:>9.2f}")
    lines.append(f"shuffle: {100 * report['shuffle']['fraction_of_frames_moved']:.0f}% of frames moved on average")
    return "\n".join(lines)
