"""Natural clips for comparison: the same objectives evaluated on random clips of a data source, and motion statistics
of a video (OpenCV flow, frame-to-frame change)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from stlens.core.handle import ModelHandle
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.video.flow import compute_flow, encode_flow, flow_clip
from stlens.video.sampling import sample_clip, segment_of, to_model_input


def default_data(handle: ModelHandle, weights: str | None) -> str:
    """``synth:`` for zoo models (the world a bundled checkpoint was trained on, test split), ``sample:`` otherwise."""
    if not handle.spec.startswith("stlens:"):
        return "sample:"
    world = "motion"
    if weights and weights.startswith("bundled:"):
        from stlens.models.bundled import bundled_info

        world = bundled_info(weights)["data"].partition(":")[2].partition("?")[0] or world
    spec = handle.input
    return f"synth:{world}?split=test&n=256&frames={spec.frames}&size={spec.size}&seed=0"


def natural_inputs(data: str, spec: InputSpec, two_stream: bool, n: int, seed: int) -> list[torch.Tensor]:
    """``n`` random clips of ``data`` as a model input batch: [rgb (n, 3, T, H, W)] (+ flow (n, 2, T − 1, H, W), the
    ground truth for synth: worlds, DIS flow for videos). Clips of a video with a (start, end) segment (Diving48) lie
    inside frames [start, end) (end exclusive, as in ``clip_indices``); draws that do not fit are left out."""
    from stlens.video.io import read_clip_source
    from stlens.video.sources import open_data

    source = open_data(data)
    rng = np.random.default_rng(seed)
    rgbs, flows = [], []
    if data.startswith("synth:"):
        if (source.frames, source.size) != (spec.frames, spec.size):
            raise StlensError(f"{data} renders {source.frames}×{source.size} px clips but the model takes "
                              f"{spec.frames}×{spec.size}")
        for i in rng.choice(len(source), size=min(n, len(source)), replace=False):
            clip = source[int(i)]
            rgbs.append(to_model_input(clip.frames, spec))
            flows.append(torch.from_numpy(flow_clip(encode_flow(clip.flow()))))
    else:
        videos = list(source.videos)
        for _ in range(n):
            k = int(rng.integers(len(videos)))
            frames = read_clip_source(videos[k], short_side=spec.resize)
            drawn = sample_clip(frames, spec, rng, segment=segment_of(source, k))
            if drawn is None:
                continue
            clip = np.ascontiguousarray(drawn[1])
            rgbs.append(to_model_input(clip, spec))
            if two_stream:
                flows.append(torch.from_numpy(flow_clip(encode_flow(compute_flow(clip, "dis")))))
    if not rgbs:
        raise StlensError(f"no natural clip of {spec.frames} frames could be read from {data}")
    inputs = [torch.stack(rgbs)]
    if two_stream:
        inputs.append(torch.stack(flows))
    return inputs


def frame_change(video: np.ndarray) -> float:
    """Mean absolute frame-to-frame change of a (T, H, W, D) array (grey levels for uint8 RGB, px for flow)."""
    video = np.asarray(video, dtype=np.float64)
    if len(video) < 2:
        return 0.0
    return float(np.abs(np.diff(video, axis=0)).mean())


def compass(u: float, v: float) -> float:
    """Direction of (u, v) (image coordinates, v down) in degrees counter-clockwise from east, in [0, 360)."""
    return math.degrees(math.atan2(-v, u)) % 360.0


def mean_flow(flow: np.ndarray) -> dict:
    """Mean (u, v) of flow fields (N, H, W, 2) in px, its compass direction and the mean magnitude."""
    u, v = float(flow[..., 0].mean()), float(flow[..., 1].mean())
    return {"u": u, "v": v, "direction_deg": compass(u, v), "speed": math.hypot(u, v),
            "mean_magnitude": float(np.linalg.norm(flow, axis=-1).mean())}


def video_flow(frames: np.ndarray, method: str = "dis") -> np.ndarray:
    """OpenCV flow (N, H, W, 2) px of an RGB uint8 video (T, H, W, 3)."""
    return compute_flow(np.ascontiguousarray(frames), method)


def angle_error(a: float, b: float) -> float:
    """Smallest absolute difference between two angles in degrees."""
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


def summary(values: Sequence[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "max": float(arr.max()), "min": float(arr.min()), "clips": int(arr.size)}
