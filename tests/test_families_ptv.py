"""PyTorchVideo models (``pytorchvideo:<name>``, random weights) built at small sizes and measured end to end."""

from __future__ import annotations

import json

import pytest
import torch

from stlens.cli import main
from stlens.errors import StlensError
from stlens.models.registry import load_model

pytest.importorskip("pytorchvideo")

from stlens.models.ptvideo import PTV_MODELS, pack_slowfast  # noqa: E402

#: smallest clip each accepts here (frames, size); SlowFast needs T divisible by alpha=4
SMALL = {"slowfast_r50": (4, 32), "x3d_xs": (4, 32), "x3d_s": (4, 32), "x3d_m": (4, 32), "mvit_base_16x4": (2, 32)}
FAST = ["x3d_xs"]


def measure_cli(spec: str, frames: int, size: int, out) -> dict:
    code = main(["measure", "--model", spec, "--data", "sample:", "--pairs", "8", "--frames", str(frames),
                 "--size", str(size), "--bootstrap", "0", "--batch-size", "8", "--quiet", "--out", str(out)])
    assert code == 0
    return json.loads((out / "result.json").read_text())


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in FAST else pytest.mark.slow) for n in PTV_MODELS])
def test_measure_end_to_end(name, tmp_path):
    frames, size = SMALL.get(name, (2, 32))
    result = measure_cli(f"pytorchvideo:{name}", frames, size, tmp_path)
    assert [row["layer"] for row in result["layers"]] == PTV_MODELS[name].layers
    assert result["pairs"] == {"dynamic": 8, "static": 8}
    for row in result["layers"]:
        assert row["channels"] > 0
        assert sum(row["dims"].values()) == row["channels"]


def test_slowfast_packs_pathways_and_leaves_the_callers_list_alone():
    handle = load_model("pytorchvideo:slowfast_r50", frames=4, size=32)
    assert handle.default_layers == [f"blocks.{i}.multipathway_blocks.{p}" for i in range(5) for p in (0, 1)]
    clip = torch.randn(1, 3, 4, 32, 32)
    slow, fast = pack_slowfast(clip, 4)
    assert slow.shape[2] == 1 and torch.equal(slow[:, :, 0], clip[:, :, 0]) and fast is clip
    inputs = [clip[:, :, ::4].clone(), clip.clone()]
    kept = list(inputs)
    with torch.inference_mode():
        from_list = handle.module(inputs)
        from_clip = handle.module(clip)
    assert inputs[0] is kept[0] and inputs[1] is kept[1]  # PyTorchVideo's in-place update hit a copy
    assert torch.allclose(from_list, from_clip, atol=1e-5)
    with pytest.raises(StlensError, match="divisible by alpha"):
        handle.module(torch.randn(1, 3, 6, 32, 32))


def test_layers_command_marks_the_stages(capsys):
    assert main(["layers", "pytorchvideo:x3d_xs", "--frames", "4", "--size", "32"]) == 0
    out = capsys.readouterr().out
    for layer in PTV_MODELS["x3d_xs"].layers:
        assert f"* {layer} " in out


def test_published_specs_and_errors():
    assert PTV_MODELS["slowfast_r50"].input.frames == 32 and PTV_MODELS["slowfast_r50"].input.stride == 2
    assert (PTV_MODELS["x3d_s"].input.frames, PTV_MODELS["x3d_s"].input.stride) == (13, 6)
    assert all(m.input.mean == (0.45,) * 3 and m.input.std == (0.225,) * 3 for m in PTV_MODELS.values())
    with pytest.raises(StlensError, match="unknown pytorchvideo model"):
        load_model("pytorchvideo:nope")
    with pytest.raises(StlensError, match="divisible by 4"):
        load_model("pytorchvideo:slowfast_r50", frames=6)
