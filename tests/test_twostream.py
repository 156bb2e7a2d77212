"""Two-stream (RGB + flow) pairs on a real clip, and a small two-stream reference model measured end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import stlens
from stlens.cli import main
from stlens.core.pair import DYNAMIC, STATIC
from stlens.errors import StlensError
from stlens.models.registry import InputSpec
from stlens.pairs.twostream import TwoStreamPairs, flow_indices
from stlens.video.flow import FlowCache
from stlens.video.sources import open_data

SPEC = InputSpec(frames=4, stride=2, size=32, resize=36)


class TwoStreamNet(nn.Module):
    """A reference two-stream net: a 3-D conv RGB stream and a 3-D conv flow stream, fused by concatenation and a
    1×1×1 conv (late fusion), then a linear head. ``forward(rgb (B, 3, T, H, W), flow (B, 2, N, H, W))``."""

    def __init__(self, channels: int = 8, classes: int = 5):
        super().__init__()
        self.rgb_stream = nn.Sequential(nn.Conv3d(3, channels, 3, padding=1), nn.ReLU())
        self.flow_stream = nn.Sequential(nn.Conv3d(2, channels, 3, padding=1), nn.ReLU())
        self.fusion = nn.Sequential(nn.Conv3d(2 * channels, channels, 1), nn.ReLU())
        self.head = nn.Linear(channels, classes)

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        appearance = self.rgb_stream(rgb)
        motion = self.flow_stream(flow)
        appearance = F.adaptive_avg_pool3d(appearance, motion.shape[2:])  # T frames → N flow fields
        fused = self.fusion(torch.cat([appearance, motion], dim=1))
        return self.head(fused.mean(dim=(2, 3, 4)))


def two_stream_net() -> nn.Module:
    """Factory for ``--model module:test_twostream:two_stream_net``."""
    torch.manual_seed(0)
    return TwoStreamNet()


@pytest.fixture(scope="module")
def source(small_video):
    return open_data(small_video)


@pytest.fixture(scope="module")
def pairs(source):
    return list(TwoStreamPairs(source, SPEC, 4, seed=5, flow_method="dis"))


def test_inputs_are_rgb_and_encoded_flow(pairs):
    assert [p.factor for p in pairs] == [DYNAMIC, STATIC] * 4
    for pair in pairs:
        for rgb, flow in (pair.a, pair.b):
            assert rgb.shape == (3, 4, 32, 32) and flow.shape == (2, 3, 32, 32)
            assert rgb.dtype == flow.dtype == torch.float32
            assert flow.abs().max() <= 1.0 and flow.abs().max() > 0  # encoded: ±20 px → [-1, 1]; bikes move


def test_dynamic_pairs_share_flow_static_pairs_share_rgb(pairs):
    for pair in pairs:
        (rgb_a, flow_a), (rgb_b, flow_b) = pair.a, pair.b
        if pair.factor == DYNAMIC:
            assert torch.equal(flow_a, flow_b) and not torch.equal(rgb_a, rgb_b)
        else:
            assert torch.equal(rgb_a, rgb_b) and not torch.equal(flow_a, flow_b)


def test_pairs_are_reproducible_from_the_seed(source, pairs):
    again = list(TwoStreamPairs(source, SPEC, 4, seed=5, flow_method="dis"))
    for p, q in zip(pairs, again, strict=True):
        assert p.factor == q.factor and all(torch.equal(x, y) for x, y in zip(p.a + p.b, q.a + q.b, strict=True))
    other = list(TwoStreamPairs(source, SPEC, 4, seed=6, flow_method="dis"))
    assert not torch.equal(pairs[0].a[0], other[0].a[0])


def test_cache_gives_the_same_pairs_cold_and_warm(source, tmp_path):
    cache = FlowCache(tmp_path)
    cold = list(TwoStreamPairs(source, SPEC, 2, seed=1, flow_method="dis", cache=cache))
    assert cache.misses == 4 and cache.hits == 0
    warm = list(TwoStreamPairs(source, SPEC, 2, seed=1, flow_method="dis", cache=tmp_path))
    for p, q in zip(cold, warm, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(p.a + p.b, q.a + q.b, strict=True))


def test_flow_frames_gives_a_centred_gap_one_stack(source):
    assert flow_indices(np.array([10, 12, 14, 16]), 40, 4).tolist() == [12, 13, 14, 15, 16]
    assert flow_indices(np.array([30, 33, 36, 39]), 40, 6).tolist() == list(range(33, 40))
    assert flow_indices(np.array([0, 2]), 40, None).tolist() == [0, 2]
    pair = next(iter(TwoStreamPairs(source, SPEC, 1, flow_method="dis", flow_frames=5)))
    assert pair.a[1].shape == (2, 5, 32, 32)


def test_bad_options(source):
    with pytest.raises(StlensError, match="unknown flow method 'raft'"):
        TwoStreamPairs(source, SPEC, 2, flow_method="raft")
    with pytest.raises(StlensError, match="at least 2 frames"):
        TwoStreamPairs(source, InputSpec(frames=1, size=32, resize=36), 2, flow_method="dis")
    skipped = TwoStreamPairs(source, SPEC, 2, flow_method="dis", flow_frames=60)
    with pytest.raises(StlensError, match="no usable video"):
        list(skipped)
    assert "shorter than the flow stack" in skipped.skipped[0]["reason"]


def test_measure_two_stream_model(source):
    pairs = TwoStreamPairs(source, SPEC, 8, seed=0, flow_method="dis")
    result = stlens.measure(two_stream_net(), pairs, ["rgb_stream", "flow_stream", "fusion"], bootstrap=0,
                            batch_size=4, progress=False)
    assert result.meta["pairs"] == {"dynamic": 8, "static": 8}
    rgb, flow, fusion = result["rgb_stream"], result["flow_stream"], result["fusion"]
    for layer, shared in ((rgb, rgb.r_static), (flow, flow.r_dynamic)):
        live = np.array([c != "dead" for c in layer.classes])
        assert live.sum() >= 4
        np.testing.assert_allclose(shared[live], 1.0, atol=1e-6)  # the shared input gives identical latents
    live = np.array([c != "dead" for c in flow.classes])
    assert flow.r_static[live].mean() < 0.9  # jittered flow: the flow stream keeps little across static pairs
    assert fusion.channels == 8


def test_cli_measure_with_flow(small_video, tmp_path):
    out = tmp_path / "run"
    code = main(["measure", "--model", "module:test_twostream:two_stream_net", "--flow", "dis", "--frames", "4",
                 "--size", "32", "--pairs", "8", "--bootstrap", "10", "--quiet", "--data", str(small_video),
                 "--flow-cache", str(tmp_path / "cache"), "--out", str(out)])
    assert code == 0
    assert list((tmp_path / "cache").rglob("*.npz")), "flow was cached on disk"
    result = json.loads((out / "result.json").read_text())
    assert [layer["layer"] for layer in result["layers"]] == ["rgb_stream", "flow_stream", "fusion", "head"]
    assert result["pairs"] == {"dynamic": 8, "static": 8}
    assert json.loads((out / "config.json").read_text())["arguments"]["flow"] == "dis"
    assert result["flow"] == "dis"
