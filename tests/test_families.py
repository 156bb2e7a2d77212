"""The real pretrained EfficientNet-Lite0 (``stlens:effnet-c2d`` / ``effnet-i3d``) and user modules
(``module:pkg.mod:factory``) with several inputs or keyword arguments, measured end to end."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data

from stlens.cli import main
from stlens.models.registry import IMAGENET_MEAN, IMAGENET_STD, load_model
from stlens.models.taps import LayerTaps
from stlens.models.zoo.effnet import EFFNET_LAYERS, inflate


def imagenet_frame(image: np.ndarray) -> torch.Tensor:
    """An RGB photo → a normalized 1-frame clip (1, 3, 1, 224, 224): short side 256, centre crop 224."""
    x = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1).float() / 255
    h, w = x.shape[1:]
    scale = 256 / min(h, w)
    x = F.interpolate(x[None], size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True)[0]
    top, left = (x.shape[1] - 224) // 2, (x.shape[2] - 224) // 2
    x = x[:, top:top + 224, left:left + 224]
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    return x[None, :, None]


@pytest.fixture(scope="module")
def c2d():
    return load_model("stlens:effnet-c2d")


@pytest.mark.parametrize("image,classes", [
    ("chelsea", {281, 282, 285}),  # tabby, tiger cat, Egyptian cat
    ("coffee", {967}),  # espresso
    ("rocket", {657, 744, 812}),  # missile, projectile, space shuttle
])
def test_real_weights_classify_photos(c2d, image, classes):
    with torch.inference_mode():
        top5 = c2d.module(imagenet_frame(getattr(data, image)())).topk(5).indices[0].tolist()
    assert classes & set(top5), f"{image}: top-5 {top5}"


def test_inflation_rule_by_hand():
    w = torch.randn(4, 2, 3, 3)
    w3 = inflate(w, 3)
    assert w3.shape == (4, 2, 3, 3, 3)
    for i in range(3):
        assert torch.allclose(w3[:, :, i], w / 3)
    assert torch.allclose(w3.sum(dim=2), w)


def test_inflated_net_equals_the_2d_net_on_a_static_video(c2d):
    """Every frame equal → the I3D's activations equal the C2D's at every default layer and every frame."""
    i3d = load_model("stlens:effnet-i3d")
    frame = torch.randn(1, 3, 1, 32, 32)
    static = frame.repeat(1, 1, 5, 1, 1)
    outs = {}
    for name, handle in (("c2d", c2d), ("i3d", i3d)):
        captured = {}
        hooks = [handle.module.get_submodule(layer).register_forward_hook(
            lambda _m, _i, out, layer=layer, store=captured: store.setdefault(layer, out)) for layer in EFFNET_LAYERS]
        with torch.inference_mode():
            outs[name] = (handle.module(static), captured)
        for hook in hooks:
            hook.remove()
    assert torch.allclose(outs["c2d"][0], outs["i3d"][0], atol=1e-4)
    for layer in EFFNET_LAYERS:
        a, b = outs["c2d"][1][layer], outs["i3d"][1][layer]
        assert a.shape == b.shape and a.shape[2] == 5
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), layer
    moving = torch.randn(1, 3, 5, 32, 32)
    with torch.inference_mode():
        assert not torch.allclose(c2d.module(moving), i3d.module(moving), atol=1e-3)  # and time matters otherwise


def test_c2d_ignores_frame_order(c2d):
    clip = torch.randn(1, 3, 4, 48, 48)
    with torch.inference_mode(), LayerTaps(c2d.module, ["stage3"]) as taps:
        c2d.module(clip)
        first = taps.latents["stage3"]
        taps.reset()
        c2d.module(clip[:, :, [2, 0, 3, 1]])
        assert torch.allclose(first, taps.latents["stage3"], atol=1e-5)


@pytest.mark.parametrize("model", ["effnet-i3d", pytest.param("effnet-c2d", marks=pytest.mark.slow)])
def test_effnet_measure_end_to_end(model, tmp_path):
    code = main(["measure", "--model", f"stlens:{model}", "--data", "sample:", "--pairs", "8", "--frames", "4",
                 "--size", "32", "--bootstrap", "0", "--quiet", "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert [row["layer"] for row in result["layers"]] == EFFNET_LAYERS
    assert [row["channels"] for row in result["layers"]] == [32, 24, 40, 112, 320, 1280]
    assert main(["layers", f"stlens:{model}", "--frames", "2", "--size", "32"]) == 0


USER_MODULE = '''
import torch
from torch import nn
from stlens.models.adapters import adapt_inputs, keyword_inputs
from stlens.models.registry import InputSpec, ModelHandle


class TwoRate(nn.Module):
    """forward(slow, fast, *, scale): two inputs and a keyword argument."""

    def __init__(self):
        super().__init__()
        self.slow = nn.Conv3d(3, 4, 3, padding=1)
        self.fast = nn.Conv3d(3, 2, 3, padding=1)
        self.head = nn.Linear(6, 3)

    def forward(self, slow, fast, *, scale):
        a = self.slow(slow).mean(dim=(2, 3, 4))
        b = self.fast(fast).mean(dim=(2, 3, 4))
        return self.head(torch.cat([a, b], 1)) * scale


class Keyword(nn.Module):
    """forward(*, pixel_values) with pixel_values (B, T, C, H, W), like Hugging Face models."""

    def __init__(self):
        super().__init__()
        self.body = nn.Conv3d(3, 5, 3, padding=1)

    def forward(self, *, pixel_values):
        return self.body(pixel_values.transpose(1, 2))


def two_rate():
    model = adapt_inputs(TwoRate(), lambda clip: ((clip[:, :, ::2], clip), {"scale": 2.0}))
    return ModelHandle(model, "module:user_models:two_rate", InputSpec(frames=4, stride=2, size=32, resize=36),
                       ["slow", "fast"])


def keyword():
    return keyword_inputs(Keyword(), "pixel_values")


def keyword_hf_layout():
    model = adapt_inputs(Keyword(), lambda clip: {"pixel_values": clip.transpose(1, 2)})
    return ModelHandle(model, "module:user_models:keyword_hf_layout", InputSpec(frames=4, size=32, resize=36),
                       ["body"])
'''


@pytest.mark.parametrize("factory,layers", [("two_rate", ["slow", "fast"]),
                                            pytest.param("keyword_hf_layout", ["body"], marks=pytest.mark.slow)])
def test_user_module_recipe(factory, layers, tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main(["measure", "--model", f"module:user_models:{factory}", "--data", "sample:", "--pairs", "8",
                 "--bootstrap", "0", "--quiet", "--out", str(tmp_path / "run")])
    assert code == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert [row["layer"] for row in result["layers"]] == layers
    assert main(["layers", f"module:user_models:{factory}"]) == 0


def test_keyword_inputs_adapter(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    handle = load_model("module:user_models:keyword")
    clip = torch.randn(2, 4, 3, 8, 8)  # (B, T=4, C=3, H, W) given positionally
    with torch.inference_mode():
        assert handle.module(clip).shape == (2, 5, 4, 8, 8)
        assert handle.module(pixel_values=clip).shape == (2, 5, 4, 8, 8)
    hf_layout = load_model("module:user_models:keyword_hf_layout")  # (B, 3, T, H, W) → pixel_values (B, T, 3, H, W)
    with torch.inference_mode():
        assert hf_layout.module(torch.randn(2, 3, 4, 8, 8)).shape == (2, 5, 4, 8, 8)
    from stlens.core.handle import takes_two_inputs
    assert not takes_two_inputs(load_model("module:user_models:two_rate").module)  # adapted: one clip in
