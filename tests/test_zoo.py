"""The small model zoo ``stlens:<name>``: shapes, sizes, taps, order blindness of C2D, gradients, options, fusions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stlens.errors import StlensError
from stlens.models import zoo
from stlens.models.registry import load_model
from stlens.models.taps import LayerTaps

NAMES = list(zoo.ZOO)


def clip(batch: int, frames: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def inputs(name: str, batch: int, frames: int, size: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Model inputs: a clip, plus N = T − 1 flow fields for the two-stream model."""
    rgb = clip(batch, frames, size, seed)
    if name != "twostream":
        return (rgb,)
    flow = torch.randn(batch, 2, frames - 1, size, size, generator=torch.Generator().manual_seed(seed + 1))
    return rgb, flow.clamp(-1, 1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These small forwards are faster on one thread, and far faster when other processes load the 2 shared cores
    (OpenMP threads then wait on each other at every op)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def handles(one_thread):
    torch.manual_seed(0)
    return {name: load_model(f"stlens:{name}") for name in NAMES}


def test_zoo_lists_the_families():
    assert set(NAMES) == {"c2d", "i3d", "r2plus1d", "slowfast", "x3d", "timesformer", "twostream"}


@pytest.mark.parametrize("name", NAMES)
def test_handle_spec_params_and_layers(handles, name):
    handle = handles[name]
    assert handle.spec == f"stlens:{name}"
    assert handle.input == zoo.ZOO_INPUT
    assert (handle.input.frames, handle.input.stride, handle.input.size) == (16, 1, 64)
    assert not handle.module.training
    params = sum(p.numel() for p in handle.module.parameters())
    assert 0.2e6 <= params <= 3e6, f"{name}: {params} parameters"
    modules = dict(handle.module.named_modules())
    shared = len(list(handle.module.named_modules(remove_duplicate=False))) - len(modules)
    assert shared == 0, "a module reused in two places would be tapped twice per forward"
    assert 4 <= len(handle.default_layers) <= 7
    assert all(layer in modules for layer in handle.default_layers)
    assert "head" in modules
    assert handle.module.stlens_config["name"] == name
    assert handle.module.stlens_config["options"]["num_classes"] == 8
    assert zoo.zoo_spec(name) == (zoo.ZOO_INPUT, handle.default_layers)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_and_taps(handles, name):
    handle = handles[name]
    with torch.no_grad(), LayerTaps(handle.module, handle.default_layers) as taps:
        logits = handle.module(*inputs(name, 2, 16, 64))
        latents = dict(taps.latents)
        small = handle.module(*inputs(name, 1, 8, 32))
    assert logits.shape == (2, 8) and small.shape == (1, 8)
    assert torch.isfinite(logits).all() and torch.isfinite(small).all()
    expected = set(handle.default_layers)
    if name == "slowfast":
        expected = {f"{layer}.{i}" for layer in handle.default_layers for i in (0, 1)}
    assert expected <= set(latents)
    for latent in expected:
        assert latents[latent].ndim == 2 and latents[latent].shape[0] == 2
        assert latents[latent].std() > 0, f"{latent} is constant"
    if name == "slowfast":  # the Slow pathway is wider than the Fast one (β = 1/8), and it carries the laterals
        assert latents["stage2.0"].shape[1] > 8 * latents["stage2.1"].shape[1]
    if name == "timesformer":
        assert latents["blocks.3"].shape[1] == latents["patch_embed"].shape[1] == 96


def test_other_sizes_work(handles):
    """16×112×112 and odd lengths: adaptive pooling and resized position embeddings."""
    with torch.no_grad():
        for name in NAMES:
            assert handles[name].module(*inputs(name, 1, 16, 112)).shape == (1, 8), name
            assert handles[name].module(*inputs(name, 1, 5, 48)).shape == (1, 8), name


def test_c2d_is_order_blind_and_3d_nets_are_not(handles):
    x = clip(2, 16, 64, seed=3)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(perm, torch.arange(16))
    shuffled = x[:, :, perm]
    with torch.no_grad():
        c2d = handles["c2d"].module
        torch.testing.assert_close(c2d(shuffled), c2d(x), rtol=1e-4, atol=1e-5)
        for name in ("i3d", "r2plus1d", "slowfast", "x3d", "timesformer"):
            model = handles[name].module
            assert not torch.allclose(model(shuffled), model(x), rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize("spec", [f"stlens:{n}" for n in NAMES if n != "twostream"]
                         + [f"stlens:twostream?fusion={f}" for f in zoo.twostream.FUSIONS])
def test_gradients_reach_every_parameter(spec):
    torch.manual_seed(1)
    model = load_model(spec).module.train()
    name = spec.split(":")[1].split("?")[0]
    logits = model(*inputs(name, 2, 8, 32, seed=5))
    F.cross_entropy(logits, torch.tensor([1, 6])).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{spec}: no gradient for {param_name}"
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, f"{spec}: zero gradient for {param_name}"


def test_twostream_fusions_differ_and_connect_motion_to_appearance():
    rgb, flow = inputs("twostream", 2, 8, 32, seed=7)
    other_flow = torch.flip(flow, dims=[2]).neg()
    outputs = {}
    for fusion in zoo.twostream.FUSIONS:
        model = zoo.build("twostream", seed=0, fusion=fusion).eval()
        layers = ["rgb.stage4", "flow.stage4", "fusion"]
        with torch.no_grad(), LayerTaps(model, layers) as taps:
            outputs[fusion] = model(rgb, flow)
            first = dict(taps.latents)
            taps.reset()
            model(rgb, other_flow)
            second = dict(taps.latents)
        assert not torch.allclose(first["flow.stage4"], second["flow.stage4"])
        assert not torch.allclose(first["fusion"], second["fusion"])
        same_rgb = torch.allclose(first["rgb.stage4"], second["rgb.stage4"])
        assert same_rgb == (fusion == "concat"), f"{fusion}: rgb stream {'ignores' if same_rgb else 'sees'} the flow"
    fusions = list(outputs)
    for i, a in enumerate(fusions):
        for b in fusions[i + 1:]:
            assert not torch.allclose(outputs[a], outputs[b]), (a, b)


@pytest.mark.parametrize("fields", [1, 4, 9])
def test_twostream_accepts_any_number_of_flow_fields(handles, fields):
    model = handles["twostream"].module
    with torch.no_grad():
        assert model(clip(1, 8, 32), torch.zeros(1, 2, fields, 32, 32)).shape == (1, 8)


def test_options_change_the_model():
    small = load_model("stlens:i3d?classes=5&width=8")
    assert small.module.stlens_config == {"name": "i3d", "options": {"num_classes": 5, "width": 8, "blocks": 1,
                                                                       "dropout": 0.0}}
    assert small.module.head.fc.out_features == 5
    assert small.module.stage4[0].conv2[0].out_channels == 64
    with torch.no_grad():
        assert small.module(clip(1, 8, 32)).shape == (1, 5)
    x3d = load_model("stlens:x3d?blocks=1,1,2,2&se=false")
    stages = (x3d.module.stage1, x3d.module.stage2, x3d.module.stage3, x3d.module.stage4)
    assert [len(stage) for stage in stages] == [1, 1, 2, 2]
    assert x3d.module.stlens_config["options"]["se"] is False
    tsf = load_model("stlens:timesformer?frames=8&size=32&depth=2")
    assert (tsf.input.frames, tsf.input.size) == (8, 32)
    assert tsf.default_layers == ["patch_embed", "blocks.0", "blocks.1"]


@pytest.mark.parametrize("spec, message", [
    ("stlens:i3d?colour=red", r"unknown option 'colour' for stlens:i3d; valid options: .*classes.*width"),
    ("stlens:resnet50", r"unknown zoo model 'resnet50'.*c2d, i3d"),
    ("stlens:i3d?width=wide", r"width='wide' is not a valid int"),
    ("stlens:i3d?width=0", r"width must be > 0"),
    ("stlens:c2d?dropout=1.5", r"dropout must be in \[0, 1\)"),
    ("stlens:twostream?fusion=max", r"fusion='max' is unknown; choices: concat, additive, multiplicative"),
    ("stlens:timesformer?dim=90&heads=4", r"not divisible"),
    ("stlens:i3d?width=8&width=16", r"given twice"),
    ("stlens:i3d?width", r"cannot parse"),
])
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(StlensError, match=message):
        load_model(spec)


def test_unknown_spec_kind_lists_stlens():
    with pytest.raises(StlensError, match=r"stlens:<zoo name>"):
        load_model("zoo:i3d")


def test_config_and_weights_round_trip(tmp_path):
    model = zoo.build("c2d", seed=3, width=8, classes=4)
    state = torch.get_rng_state()
    again = zoo.build("c2d", seed=3, width=8, classes=4)
    assert torch.equal(torch.get_rng_state(), state)  # a seeded build leaves the global RNG alone
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    spec = zoo.spec_of(model.stlens_config)
    assert spec == "stlens:c2d?classes=4&width=8"
    path = tmp_path / "c2d.pt"
    torch.save(model.state_dict(), path)
    handle = load_model(spec, weights=str(path))
    assert handle.weights == str(path)
    model.eval()
    x = clip(1, 8, 32)
    with torch.no_grad():
        torch.testing.assert_close(handle.module(x), model(x))
    rebuilt = zoo.build(**{"name": model.stlens_config["name"], **model.stlens_config["options"]})
    assert rebuilt.stlens_config == model.stlens_config
    with pytest.raises(StlensError, match="do not fit"):
        load_model("stlens:c2d?classes=4&width=16", weights=str(path))
