"""Hugging Face video transformers (``hf:videomae|timesformer|vivit``) behind the (B,3,T,H,W) wrapper."""

from __future__ import annotations

import json

import pytest
import torch

from stlens.cli import main
from stlens.errors import StlensError
from stlens.models.registry import load_model

pytest.importorskip("transformers")

from stlens.models.hfvideo import HF_FAMILIES, tokens_to_grid  # noqa: E402

FAMILIES = list(HF_FAMILIES)


def test_tokens_to_grid_matches_a_hand_layout():
    t, h, w, d = 2, 3, 4, 5
    grid = torch.arange(d * t * h * w, dtype=torch.float32).reshape(1, d, t, h, w)
    thw = torch.cat([torch.full((1, 1, d), -1.0), grid.flatten(2).transpose(1, 2)], dim=1)  # CLS + (t, y, x) order
    assert torch.equal(tokens_to_grid(thw, (t, h, w), has_cls=True, order="thw"), grid)
    hwt = grid.permute(0, 3, 4, 2, 1).reshape(1, h * w * t, d)  # token (y·W + x)·T + t
    assert torch.equal(tokens_to_grid(hwt, (t, h, w), has_cls=False, order="hwt"), grid)
    with pytest.raises(StlensError, match="do not fit"):
        tokens_to_grid(hwt, (t, h, w), has_cls=True)


def _zero_position_terms(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if any(k in name for k in ("position_embeddings", "time_embeddings", "cls_token", "projection.bias")):
                tensor.zero_()
        for module in model.modules():  # VideoMAE keeps its sinusoidal table as a plain tensor attribute
            if isinstance(getattr(module, "position_embeddings", None), torch.Tensor):
                module.position_embeddings.zero_()


@pytest.mark.parametrize("family", FAMILIES)
def test_grid_puts_a_patch_where_it_is_in_the_video(family):
    """With position terms zeroed, a lone bright tubelet shows up at exactly its (t, y, x) in hidden.0's grid."""
    handle = load_model(f"hf:{family}?depth=1", frames=4, size=48)
    wrapper = handle.module
    _zero_position_terms(wrapper)
    tube = handle.input.frames // wrapper.grid[0]
    clip = torch.zeros(1, 3, 4, 48, 48)
    t0, y0, x0 = wrapper.grid[0] - 1, 1, 2
    clip[:, :, t0 * tube:(t0 + 1) * tube, y0 * 16:(y0 + 1) * 16, x0 * 16:(x0 + 1) * 16] = 1.0
    seen = {}
    hook = wrapper.hidden[0].register_forward_hook(lambda _m, _i, out: seen.setdefault("grid", out))
    with torch.inference_mode():
        wrapper(clip)
    hook.remove()
    energy = seen["grid"].abs().sum(dim=1)[0]  # (T', H', W')
    assert energy.shape == wrapper.grid
    assert torch.nonzero(energy > 1e-6).tolist() == [[t0, y0, x0]]


@pytest.mark.parametrize("cls,expected", [("exclude", 5), ("include", 3), ("only", 2)])
def test_cls_modes(cls, expected):
    handle = load_model(f"hf:vivit?depth=1&cls={cls}", frames=4, size=32)
    shapes = {}
    hook = handle.module.hidden[1].register_forward_hook(lambda _m, _i, out: shapes.setdefault("x", out.shape))
    with torch.inference_mode():
        handle.module(torch.randn(1, 3, 4, 32, 32))
    hook.remove()
    assert len(shapes["x"]) == expected
    if cls == "include":
        assert shapes["x"][1] == 1 + 2 * 2 * 2  # CLS + T'·H'·W' tokens


@pytest.mark.parametrize("family", FAMILIES)
def test_measure_end_to_end(family, tmp_path):
    code = main(["measure", "--model", f"hf:{family}?depth=2&hidden=32&heads=2", "--data", "sample:", "--pairs", "8",
                 "--frames", "4", "--size", "32", "--bootstrap", "0", "--batch-size", "8", "--quiet",
                 "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert [row["layer"] for row in result["layers"]] == ["hidden.0", "hidden.1", "hidden.2"]
    assert all(row["channels"] == 32 for row in result["layers"])


def test_layers_command_shows_grids(capsys):
    assert main(["layers", "hf:timesformer?depth=2", "--frames", "2", "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "* hidden.2 " in out and "(1, 64, 2, 2, 2)" in out  # (B, D, T', H', W')


def test_local_checkpoint_folder(tmp_path):
    import transformers

    config = transformers.VideoMAEConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                         intermediate_size=64, num_frames=4, image_size=32, num_labels=3)
    transformers.VideoMAEForVideoClassification(config).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.1, 0.2, 0.3],
                                                                   "image_std": [0.4, 0.5, 0.6]}))
    handle = load_model(f"hf:videomae?path={tmp_path}")
    assert (handle.input.frames, handle.input.size) == (4, 32)
    assert handle.input.mean == (0.1, 0.2, 0.3) and handle.input.std == (0.4, 0.5, 0.6)
    with torch.inference_mode():
        assert handle.module(torch.randn(2, 3, 4, 32, 32)).shape == (2, 3)
    with pytest.raises(StlensError, match="no config.json"):
        load_model(f"hf:videomae?path={tmp_path / 'missing'}")
    with pytest.raises(StlensError, match="unknown option"):
        load_model("hf:videomae?bogus=1")
