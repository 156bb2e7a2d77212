"""Optical flow: accuracy on a known translation, two-stream encoding, flow stacks, jitter and the disk cache."""

from __future__ import annotations

import numpy as np
import pytest

from stlens.errors import StlensError
from stlens.video.flow import (
    FlowCache,
    compute_flow,
    dequantize_flow,
    encode_flow,
    flow_clip,
    flow_jitter,
    flow_stack,
    jitter_params,
    quantize_flow,
    rotate_scale_flow,
)

DX, DY = 2, 1


def translating_clip(frames: int = 3, size: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random texture moving by (DX, DY) px per frame: frame k at (x, y) shows texture(x − k·DX, y − k·DY)."""
    import cv2

    rng = np.random.default_rng(seed)
    pad = 4 * frames
    noise = rng.uniform(0, 255, size=(size + 2 * pad, size + 2 * pad, 3)).astype(np.float32)
    texture = np.clip(cv2.GaussianBlur(noise, (0, 0), 1.5) * 2.5 - 190, 0, 255).astype(np.uint8)
    return np.stack([texture[pad - k * DY:pad - k * DY + size, pad - k * DX:pad - k * DX + size]
                     for k in range(frames)])


@pytest.mark.parametrize(("method", "max_epe"), [("tvl1", 0.2), ("dis", 0.2), ("farneback", 0.2)])
def test_flow_recovers_a_known_translation(method, max_epe):
    clip = translating_clip()
    flow = compute_flow(clip, method)
    assert flow.shape == (2, 64, 64, 2) and flow.dtype == np.float32
    inner = flow[:, 8:-8, 8:-8]
    epe = np.hypot(inner[..., 0] - DX, inner[..., 1] - DY).mean()
    assert epe < max_epe, f"{method}: mean EPE {epe:.3f} px"


def test_unknown_flow_method_and_bad_clip():
    with pytest.raises(StlensError, match="unknown flow method 'raft'"):
        compute_flow(translating_clip(), "raft")
    with pytest.raises(StlensError, match="T ≥ 2"):
        compute_flow(translating_clip(frames=1), "dis")


def test_encoding_clips_scales_and_quantizes():
    flow = np.array([-30.0, -20.0, -10.0, 0.0, 0.05, 10.0, 20.0, 25.0], dtype=np.float32)
    np.testing.assert_allclose(encode_flow(flow), [-1, -1, -0.5, 0, 0.0025, 0.5, 1, 1], rtol=0, atol=1e-7)
    np.testing.assert_allclose(encode_flow(flow, bound=10.0), [-1, -1, -1, 0, 0.005, 1, 1, 1], atol=1e-7)
    q = quantize_flow(flow)
    assert q.dtype == np.uint8
    assert q.tolist() == [0, 0, 64, 128, 128, 192, 255, 255]  # 128 + 128·x/20, saturating at 0 and 255
    np.testing.assert_allclose(dequantize_flow(q), [-20, -20, -10, 0, 0, 10, 20 * 127 / 128, 20 * 127 / 128])
    inside = np.random.default_rng(0).uniform(-19.8, 19.8, size=1000).astype(np.float32)
    assert np.abs(dequantize_flow(quantize_flow(inside)) - inside).max() <= 20 / 256 + 1e-6  # half a step


def test_flow_stack_interleaves_u_v_and_clip_form():
    flow = np.arange(4 * 3 * 5 * 2, dtype=np.float32).reshape(4, 3, 5, 2)
    stack = flow_stack(flow, 2, start=1)
    assert stack.shape == (4, 3, 5)
    for k, (field, channel) in enumerate([(1, 0), (1, 1), (2, 0), (2, 1)]):
        np.testing.assert_array_equal(stack[k], flow[field, :, :, channel])
    clip = flow_clip(flow)
    assert clip.shape == (2, 4, 3, 5)
    np.testing.assert_array_equal(clip[1, 2], flow[2, :, :, 1])
    with pytest.raises(StlensError, match="cannot stack 4 flow fields from 1"):
        flow_stack(flow, 4, start=1)


def test_rotate_scale_by_hand():
    flow = np.array([[[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]]], dtype=np.float32)
    out = rotate_scale_flow(flow, 90.0, 2.0)
    np.testing.assert_allclose(out, [[[0, 2], [-4, 0], [-8, 6]]], atol=1e-6)


def test_flow_jitter_rotates_by_the_drawn_angle_and_rescales():
    rng = np.random.default_rng(3)
    flow = rng.normal(size=(3, 6, 7, 2)).astype(np.float32)
    degrees, factor = jitter_params(np.random.default_rng(11))
    out = flow_jitter(flow, np.random.default_rng(11))
    assert 30 <= abs(degrees) <= 180 and 0.3 <= factor <= 3 and not 1 / 1.25 < factor < 1.25
    np.testing.assert_allclose(np.hypot(out[..., 0], out[..., 1]), factor * np.hypot(flow[..., 0], flow[..., 1]),
                               rtol=1e-5)
    turned = np.angle((out[..., 0] + 1j * out[..., 1]) / (flow[..., 0] + 1j * flow[..., 1]), deg=True)
    np.testing.assert_allclose(np.abs(((turned - degrees + 180) % 360) - 180), 0, atol=1e-3)  # same angle, every field
    t = np.deg2rad(degrees)
    hand = factor * np.stack([np.cos(t) * flow[..., 0] - np.sin(t) * flow[..., 1],
                              np.sin(t) * flow[..., 0] + np.cos(t) * flow[..., 1]], axis=-1)
    np.testing.assert_allclose(out, hand, rtol=1e-5, atol=1e-6)


def test_jitter_draws_cover_both_sides_and_avoid_small_changes():
    draws = np.array([jitter_params(np.random.default_rng(i)) for i in range(400)])
    degrees, factor = draws[:, 0], draws[:, 1]
    assert (np.abs(degrees) >= 30).all() and (np.abs(degrees) <= 180).all()
    assert (degrees < 0).any() and (degrees > 0).any()
    assert ((factor < 1 / 1.25) | (factor > 1.25)).all() and (factor < 1).any() and (factor > 1).any()
    assert factor.min() >= 0.3 and factor.max() <= 3.0
    with pytest.raises(StlensError, match="no magnitude factor"):
        jitter_params(np.random.default_rng(0), scale=(0.9, 1.1))


def test_cache_hit_returns_equal_arrays_without_recomputing(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not really a video")
    clip = translating_clip()
    calls = []

    def compute():
        calls.append(1)
        return compute_flow(clip, "dis")

    cache = FlowCache(tmp_path / "cache")
    key = cache.key(video, "dis", [0, 2, 4], clip.shape[1:3], 64)
    first = cache.get_or_compute(key, compute)
    second = cache.get_or_compute(key, compute)
    assert len(calls) == 1 and (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.float32 and np.abs(first - compute_flow(clip, "dis")).max() < 0.02  # float16 storage
    assert cache.path(key).is_file() and not list(cache.path(key).parent.glob("*.tmp"))
    assert key != cache.key(video, "tvl1", [0, 2, 4], clip.shape[1:3], 64)
    assert key != cache.key(video, "dis", [0, 2, 5], clip.shape[1:3], 64)
    video.write_bytes(b"a changed video file")
    assert key != cache.key(video, "dis", [0, 2, 4], clip.shape[1:3], 64)


def test_unreadable_cache_entry_is_recomputed(tmp_path):
    cache = FlowCache(tmp_path)
    key = cache.key(tmp_path / "v.mp4", "dis", [0, 1], (8, 8))
    cache.path(key).parent.mkdir(parents=True)
    cache.path(key).write_bytes(b"garbage")
    flow = cache.get_or_compute(key, lambda: np.ones((1, 8, 8, 2), np.float32))
    np.testing.assert_array_equal(flow, 1.0)
    np.testing.assert_array_equal(cache.load(key), 1.0)
