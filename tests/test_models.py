"""Model specs, default layers, input specs and safe checkpoint loading."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from stlens.errors import StlensError
from stlens.models.inspect import layer_shapes
from stlens.models.registry import load_model
from stlens.models.taps import LayerTaps
from stlens.models.tvvideo import TORCHVISION_VIDEO


@pytest.mark.parametrize("builder", sorted(TORCHVISION_VIDEO))
def test_every_torchvision_builder_has_its_default_layers(builder):
    handle = load_model(f"torchvision:{builder}")
    names = dict(handle.module.named_modules())
    assert all(layer in names for layer in handle.default_layers)
    assert not handle.module.training
    assert len(handle.default_layers) >= 4


@pytest.mark.parametrize("builder,frames,size", [("r3d_18", 4, 32), ("mc3_18", 4, 32), ("r2plus1d_18", 4, 32),
                                                 ("s3d", 8, 64)])
def test_small_inputs_run_through_default_layers(builder, frames, size):
    handle = load_model(f"torchvision:{builder}", frames=frames, size=size)
    assert (handle.input.frames, handle.input.size) == (frames, size)
    x = torch.rand(2, 3, frames, size, size)
    with LayerTaps(handle.module, handle.default_layers) as taps, torch.inference_mode():
        handle.module(x)
    assert list(taps.latents) == handle.default_layers
    assert all(v.shape[0] == 2 for v in taps.latents.values())


@pytest.mark.slow
@pytest.mark.parametrize("builder", ["mvit_v1_b", "mvit_v2_s", "swin3d_t"])
def test_transformers_at_native_size(builder):
    handle = load_model(f"torchvision:{builder}")
    shapes = layer_shapes(handle)
    for layer in handle.default_layers:
        assert shapes[layer], layer


def test_swin_layers_are_pooled_channels_last():
    handle = load_model("torchvision:swin3d_t", frames=4, size=64)
    with LayerTaps(handle.module, ["features.0", "features.6"], layout=handle.layout) as taps, torch.inference_mode():
        handle.module(torch.rand(1, 3, 4, 64, 64))
    assert taps.latents["features.0"].shape == (1, 96)
    assert taps.latents["features.6"].shape == (1, 768)


def test_family_input_specs():
    r3d = load_model("torchvision:r3d_18").input
    assert (r3d.frames, r3d.size, r3d.resize) == (16, 112, 128)
    assert r3d.mean == (0.43216, 0.394666, 0.37645)
    mvit = load_model("torchvision:mvit_v2_s").input
    assert (mvit.size, mvit.mean, mvit.std) == (224, (0.45,) * 3, (0.225,) * 3)
    small = load_model("torchvision:r3d_18", frames=8, size=56).input
    assert (small.frames, small.size, small.resize) == (8, 56, 64)


def test_weights_round_trip_safetensors_and_pt(tmp_path):
    source = load_model("torchvision:mc3_18")
    state = {k: v.clone() for k, v in source.module.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": state}, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        loaded = load_model("torchvision:mc3_18", weights=str(tmp_path / name))
        assert loaded.weights == str(tmp_path / name)
        for key, value in loaded.module.state_dict().items():
            assert torch.equal(value, state[key]), key


def test_mismatched_weights_list_keys(tmp_path):
    state = load_model("torchvision:mc3_18").module.state_dict()
    state.pop("fc.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(StlensError, match=r"missing keys: fc\.bias.*unexpected keys: extra\.weight"):
        load_model("torchvision:mc3_18", weights=str(tmp_path / "bad.pt"))


class Payload:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_untrusted_pickle_is_refused(tmp_path):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"x": Payload()}, f)
    with pytest.raises(StlensError, match="weights_only"):
        load_model("torchvision:mc3_18", weights=str(tmp_path / "evil.pt"))


def test_bad_specs():
    with pytest.raises(StlensError, match="unknown torchvision video builder 'r3d_19'"):
        load_model("torchvision:r3d_19")
    with pytest.raises(StlensError, match="unknown model spec"):
        load_model("resnet")
    with pytest.raises(StlensError, match="not in the torch hub cache"):  # offline: no download is tried
        load_model("torchvision:r3d_18", weights="KINETICS400_V1", offline=True)
    with pytest.raises(StlensError, match="unknown weights 'IMAGENET'"):
        load_model("torchvision:r3d_18", weights="IMAGENET")


def test_module_spec_loads_user_code():
    handle = load_model("module:conftest:tiny_video_net")
    assert handle.spec == "module:conftest:tiny_video_net"
    assert handle.default_layers == ["stem", "stage", "fc"]
