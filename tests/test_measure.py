"""The measurement loop through the Python API on real video pairs."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from conftest import TemporalMeanEncoder, TinyVideoNet

import stlens
from stlens.core.device import cpu_has_native_bf16
from stlens.core.pair import Pair
from stlens.errors import StlensError
from stlens.models.registry import InputSpec, ModelHandle

SPEC = InputSpec(frames=4, stride=2, size=32, resize=36)


@pytest.fixture(scope="module")
def sample_pairs():
    return list(stlens.make_pairs(stlens.open_data("sample:"), SPEC, pairs=12, seed=3))


def test_temporal_mean_encoder_has_r_static_one_for_every_live_channel(sample_pairs):
    torch.manual_seed(0)
    model = TemporalMeanEncoder(channels=12)
    result = stlens.measure(model, sample_pairs, ["frame_conv"], bootstrap=0, progress=False)
    layer = result["frame_conv"]
    live = np.array([c != "dead" for c in layer.classes])
    assert live.sum() >= 6
    np.testing.assert_allclose(layer.r_static[live], 1.0, atol=1e-5)
    assert all(c in ("static", "joint") for c, ok in zip(layer.classes, live, strict=True) if ok)


def test_measure_api_result_frame_and_save(sample_pairs, tmp_path):
    torch.manual_seed(0)
    handle = ModelHandle(TinyVideoNet().eval(), "tiny", SPEC, ["stem", "stage"])
    result = stlens.measure(handle, sample_pairs, batch_size=5, bootstrap=50, save_latents=True, progress=False)
    frame = result.to_frame()
    assert list(frame["layer"]) == ["stem", "stage"]
    assert {"percent_dynamic", "ci95_static_low", "units_dead", "bias"} <= set(frame.columns)
    assert result.meta["pairs"] == {"dynamic": 12, "static": 12}
    assert result.latents["stem/a"].shape == (24, 6)
    units = result.units_frame()
    assert len(units) == 6 + 8
    result.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".stlens-run.json", ".stlens.lock", "config.json",
                                                         "latents.npz", "layers.csv", "result.json", "units.csv"]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_bf16_runs_and_stays_close(sample_pairs):
    torch.manual_seed(0)
    handle = ModelHandle(TinyVideoNet().eval(), "tiny", SPEC, ["stage"])
    fp32 = stlens.measure(handle, sample_pairs, bootstrap=0, progress=False)
    expect_warning = nullcontext() if cpu_has_native_bf16() else pytest.warns(RuntimeWarning, match="bf16")
    with expect_warning:
        bf16 = stlens.measure(handle, sample_pairs, bootstrap=0, precision="bf16", progress=False)
    assert abs(fp32["stage"].score["dynamic"] - bf16["stage"].score["dynamic"]) < 0.05
    assert abs(fp32["stage"].score["static"] - bf16["stage"].score["static"]) < 0.05
    assert handle.module.stem[0].weight.is_contiguous()  # the caller's model is given back in its layout


def test_too_few_pairs_and_bad_options(sample_pairs):
    model = TinyVideoNet()
    with pytest.raises(StlensError, match="at least 4 per factor"):
        stlens.measure(model, sample_pairs[:6], ["stage"], progress=False)
    with pytest.raises(StlensError, match="`precision` fp16"):
        stlens.measure(model, sample_pairs, ["stage"], precision="fp16", progress=False)
    with pytest.raises(StlensError, match="unknown layer 'stagee'"):
        stlens.measure(model, sample_pairs, ["stagee"], progress=False)


def test_nan_activations_name_the_layer(sample_pairs):
    model = TinyVideoNet()
    with torch.no_grad():
        model.stage[0].bias.fill_(float("inf"))
    with pytest.raises(StlensError, match="non-finite.*'stage'"):
        stlens.measure(model, sample_pairs, ["stem", "stage"], progress=False)


def test_tuple_pairs_are_accepted():
    rng = torch.Generator().manual_seed(0)
    pairs = [(f, torch.rand(3, 2, 8, 8, generator=rng), torch.rand(3, 2, 8, 8, generator=rng))
             for f in (0, 1) for _ in range(8)]
    result = stlens.measure(TinyVideoNet(), pairs, ["stem"], bootstrap=0, progress=False)
    assert result.meta["pairs"] == {"dynamic": 8, "static": 8}
    assert isinstance(Pair(0, pairs[0][1], pairs[0][2]).a, torch.Tensor)


def test_interrupt_keeps_the_pairs_measured_so_far(sample_pairs):
    def interrupted_stream():
        yield from sample_pairs[:20]
        raise KeyboardInterrupt

    with pytest.warns(RuntimeWarning, match="interrupted after 20 pairs"):
        result = stlens.measure(TinyVideoNet(), interrupted_stream(), ["stage"], batch_size=4, bootstrap=0,
                                progress=False)
    assert result.meta["interrupted"] is True
    assert result.meta["pairs"] == {"dynamic": 10, "static": 10}
