"""The segmentation models ``stlens:avos`` (two-stream: fusions, co-attention cross-connections) and ``stlens:seg3d``:
each fusion and cross-connection against a hand computation, every variant end to end, measuring, bad options."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import stlens
from stlens.errors import StlensError
from stlens.models import zoo
from stlens.models.inspect import describe_layers
from stlens.models.taps import LayerTaps
from stlens.models.zoo.avos import flow_to_frames
from stlens.models.zoo.crossconn import CROSS, CoAttention
from stlens.models.zoo.fusions import (
    FUSIONS,
    ChannelSplit,
    ConcatFusion,
    ConvexFusion,
    GatedAttention,
    GatedFusion,
    SpatialSplit,
)
from stlens.models.zoo.seghead import SEG_INPUT

STAGES = ["stage1", "stage2", "stage3", "stage4"]
AVOS_LAYERS = [f"{part}.{s}" for s in STAGES for part in ("app", "mot", "fusion")]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small forwards are faster on one thread when other processes load the shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def two_stream(batch: int, frames: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return rand(batch, 3, frames, size, size, seed=seed), rand(batch, 2, frames - 1, size, size, seed=seed + 1).tanh()


def lin(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """A 1×1×1 conv by hand: weight (out, in, 1, 1, 1) on x (B, in, T, H, W)."""
    y = torch.einsum("oi,bithw->bothw", weight.flatten(1), x)
    return y if bias is None else y + bias.view(1, -1, 1, 1, 1)


def frame_conv2d(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """A (1, k, k) conv by hand, frame by frame with conv2d."""
    b, _, t, h, w = x.shape
    frames = x.transpose(1, 2).reshape(b * t, -1, h, w)
    k = weight.shape[-1]
    y = F.conv2d(frames, weight[:, :, 0], bias, padding=k // 2)
    return y.reshape(b, t, -1, h, w).transpose(1, 2)


def bn_relu_eval(x: torch.Tensor) -> torch.Tensor:
    """A fresh BatchNorm in eval mode (running mean 0, var 1, weight 1, bias 0), then ReLU."""
    return F.relu(x / np.sqrt(1 + 1e-5))


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter non-trivial random values (also the zero-initialized biases)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    return module.eval()


# --- fusions ---------------------------------------------------------------------------------------------------

def test_concat_fusion_is_a_1x1_conv_of_the_concatenation():
    fusion = randomize(ConcatFusion(3))
    app, mot = rand(2, 3, 2, 4, 4, seed=1), rand(2, 3, 2, 4, 4, seed=2)
    out = fusion(app, mot)
    assert out.shape == (2, 3, 2, 4, 4)
    conv = fusion.reduce[0]
    bn = fusion.reduce[1]
    expected = lin(conv.weight, None, torch.cat([app, mot], 1))
    expected = F.relu((expected - bn.running_mean.view(1, -1, 1, 1, 1)) / torch.sqrt(bn.running_var + bn.eps).view(
        1, -1, 1, 1, 1) * bn.weight.view(1, -1, 1, 1, 1) + bn.bias.view(1, -1, 1, 1, 1))
    torch.testing.assert_close(out, expected)


def test_gated_attention_by_hand_and_the_identity_when_the_global_gate_is_closed():
    att = randomize(GatedAttention(6))
    u = rand(2, 6, 3, 5, 5, seed=3)
    h = F.relu(lin(att.squeeze.weight, att.squeeze.bias, u.mean(dim=(3, 4), keepdim=True)))
    e = torch.sigmoid(lin(att.excite.weight, att.excite.bias, h))
    a_sp = torch.sigmoid(frame_conv2d(att.spatial.weight, att.spatial.bias, (e * u).max(dim=1, keepdim=True)[0]))
    g = torch.sigmoid(lin(att.glob.weight, att.glob.bias, h))
    torch.testing.assert_close(att(u), u + g * a_sp * (e * u))
    for gate, shape in zip(att.gates(u), [(2, 6, 3, 1, 1), (2, 1, 3, 5, 5), (2, 1, 3, 1, 1)], strict=True):
        assert gate.shape == shape and gate.min() >= 0 and gate.max() <= 1
    with torch.no_grad():  # g = σ(−10⁴) = 0 exactly: O = U
        att.glob.weight.zero_()
        att.glob.bias.fill_(-1e4)
    assert torch.equal(att.gates(u)[2], torch.zeros(2, 1, 3, 1, 1))
    assert torch.equal(att(u), u)


def test_gated_fusion_shapes_and_squeeze_width():
    fusion = GatedFusion(8).eval()
    assert fusion.attention.squeeze.out_channels == 4  # 16 // 16 = 1, at least 4 for tiny widths
    assert GatedFusion(64).attention.squeeze.out_channels == 8  # 128 // 16
    assert fusion(rand(1, 8, 2, 4, 4), rand(1, 8, 2, 4, 4, seed=1)).shape == (1, 8, 2, 4, 4)


def test_convex_channel_split_by_hand_and_convex():
    split = randomize(ChannelSplit(4))
    app, mot = rand(2, 4, 3, 5, 5, seed=4), rand(2, 4, 3, 5, 5, seed=5)
    pooled = torch.cat([app, mot], 1).mean(dim=(3, 4), keepdim=True)
    f = torch.sigmoid(lin(split.excite.weight, split.excite.bias,
                          F.relu(lin(split.squeeze.weight, split.squeeze.bias, pooled))))
    torch.testing.assert_close(split.gate(app, mot), f)
    assert f.shape == (2, 4, 3, 1, 1) and f.min() >= 0 and f.max() <= 1
    a, m = split(app, mot)
    torch.testing.assert_close(a, app * f)
    torch.testing.assert_close(m, mot * (1 - f))
    a, m = split(app, app)  # same input on both streams: the two parts sum back to it
    torch.testing.assert_close(a + m, app)


def test_convex_spatial_split_by_hand_and_convex():
    split = randomize(SpatialSplit())
    app, mot = rand(2, 4, 3, 6, 6, seed=6), rand(2, 4, 3, 6, 6, seed=7)
    stats = torch.cat([app.mean(1, keepdim=True), app.max(1, keepdim=True)[0], mot.mean(1, keepdim=True),
                       mot.max(1, keepdim=True)[0]], 1)
    x = torch.sigmoid(frame_conv2d(split.conv.weight, None, stats))
    torch.testing.assert_close(split.gate(app, mot), x)
    assert x.shape == (2, 1, 3, 6, 6) and x.min() >= 0 and x.max() <= 1
    out = split(app, mot)
    torch.testing.assert_close(out, torch.cat([app * x, mot * (1 - x)], 1))
    same = split(app, app)
    torch.testing.assert_close(same[:, :4] + same[:, 4:], app)
    with torch.no_grad():  # a fixed gate x = σ(0) = 1/2
        split.conv.weight.zero_()
    torch.testing.assert_close(split(app, mot), torch.cat([app, mot], 1) / 2)


def test_convex_fusion_chains_the_channel_and_spatial_splits():
    fusion = randomize(ConvexFusion(4))
    app, mot = rand(1, 4, 2, 5, 5, seed=8), rand(1, 4, 2, 5, 5, seed=9)
    f = fusion.channel.gate(app, mot)
    x = fusion.spatial.gate(app * f, mot * (1 - f))
    torch.testing.assert_close(fusion(app, mot), fusion.reduce(torch.cat([app * f * x, mot * (1 - f) * (1 - x)], 1)))
    assert fusion(app, mot).shape == (1, 4, 2, 5, 5)


# --- cross-connections ------------------------------------------------------------------------------------------

def coattention_by_hand(cc: CoAttention, pa: torch.Tensor, pm: torch.Tensor):
    """One round with einsum: (q_a, q_m, z_a, z_m) without the gate."""
    def attend(sa, p):
        score = lin(sa.score.weight, sa.score.bias, p)
        b, _, t, h, w = score.shape
        return p * torch.softmax(score.reshape(b, 1, t, h * w), -1).reshape(score.shape)

    qa, qm = attend(cc.sa_app, pa), attend(cc.sa_mot, pm)
    b, c, t, h, w = qa.shape
    ka = lin(cc.key_app.weight, cc.key_app.bias, qa).reshape(b, -1, t, h * w)
    km = lin(cc.key_mot.weight, cc.key_mot.bias, qm).reshape(b, -1, t, h * w)
    s = torch.tanh(torch.einsum("bdti,bdtj->btij", ka, km))  # i: app position, j: motion position
    za = torch.einsum("bcti,btij->bctj", qa.reshape(b, c, t, h * w), s)
    zm = torch.einsum("bctj,btij->bcti", qm.reshape(b, c, t, h * w), s)
    za, zm = F.normalize(za, dim=1).reshape(qa.shape), F.normalize(zm, dim=1).reshape(qm.shape)
    return qa, qm, za, zm


def test_coattention_by_hand_recip_and_uni():
    pa, pm = rand(2, 5, 3, 3, 4, seed=10).relu(), rand(2, 5, 3, 3, 4, seed=11).relu()
    recip = randomize(CoAttention(5, "recip"))
    _, _, za, zm = coattention_by_hand(recip, pa, pm)
    terms = recip(pa, pm)
    assert set(terms) == {"app", "mot"}
    torch.testing.assert_close(terms["app"], za)
    torch.testing.assert_close(terms["mot"], zm)
    torch.testing.assert_close(terms["app"].norm(dim=1), torch.ones(2, 3, 3, 4))  # unit norm at every position
    s = recip.affinity(recip.sa_app(pa), recip.sa_mot(pm))
    assert s.shape == (2 * 3, 12, 12) and s.abs().max() <= 1  # per frame, tanh
    uni = CoAttention(5, "uni")
    uni.load_state_dict(recip.state_dict())
    assert set(uni.eval()(pa, pm)) == {"app"}  # the motion stream receives nothing
    torch.testing.assert_close(uni(pa, pm)["app"], za)
    assert not torch.allclose(uni(pa, pm + 1)["app"], za)  # the appearance term depends on the motion stream


def test_coattention_is_per_frame():
    cc = randomize(CoAttention(4, "recip"))
    pa, pm = rand(1, 4, 3, 3, 3, seed=12), rand(1, 4, 3, 3, 3, seed=13)
    other = pm.clone()
    other[:, :, 2] += 1
    first, second = cc(pa, pm), cc(pa, other)
    torch.testing.assert_close(first["app"][:, :, :2], second["app"][:, :, :2])
    assert not torch.allclose(first["app"][:, :, 2], second["app"][:, :, 2])


def test_cc_gate_adds_the_gated_own_features():
    pa, pm = rand(1, 4, 2, 3, 3, seed=14).relu(), rand(1, 4, 2, 3, 3, seed=15).relu()
    gated = randomize(CoAttention(4, "recip", gated=True))
    plain = CoAttention(4, "recip").eval()
    plain.load_state_dict({k: v for k, v in gated.state_dict().items() if not k.startswith("gate.")})
    qa, qm, za, zm = coattention_by_hand(plain, pa, pm)
    g = torch.sigmoid(lin(gated.gate.weight, gated.gate.bias, torch.cat([qa, qm], 1)))
    assert g.shape == (1, 2, 2, 3, 3) and g.min() >= 0 and g.max() <= 1
    terms = gated(pa, pm)
    torch.testing.assert_close(terms["app"], za + qa * g[:, :1] + qa)
    torch.testing.assert_close(terms["mot"], zm + qm * g[:, 1:] + qm)
    torch.testing.assert_close(plain(pa, pm)["app"], za)
    assert CoAttention(4, "uni", gated=True).gate.out_channels == 1


def test_rounds_cascade_with_shared_weights():
    pa, pm = rand(1, 4, 2, 3, 3, seed=16).relu(), rand(1, 4, 2, 3, 3, seed=17).relu()
    for mode in ("recip", "uni"):
        one = randomize(CoAttention(4, mode, rounds=1))
        two = CoAttention(4, mode, rounds=2).eval()
        two.load_state_dict(one.state_dict())
        _, qm, za, zm = coattention_by_hand(one, pa, pm)
        nxt_a = F.relu(pa + za)
        nxt_m = F.relu(pm + (zm if mode == "recip" else qm))
        expected = coattention_by_hand(one, nxt_a, nxt_m)
        terms = two(pa, pm)
        torch.testing.assert_close(terms["app"], expected[2])
        if mode == "recip":
            torch.testing.assert_close(terms["mot"], expected[3])
        assert not torch.allclose(terms["app"], one(pa, pm)["app"])


def test_flow_fields_are_brought_to_the_frames():
    flow = rand(1, 2, 3, 8, 8)
    padded = flow_to_frames(flow, (4, 8, 8))
    assert padded.shape == (1, 2, 4, 8, 8)
    assert torch.equal(padded[:, :, :3], flow) and torch.equal(padded[:, :, 3], flow[:, :, 2])
    assert torch.equal(flow_to_frames(flow, (3, 8, 8)), flow)
    assert flow_to_frames(flow, (6, 16, 16)).shape == (1, 2, 6, 16, 16)


# --- the models ---------------------------------------------------------------------------------------------------

VARIANTS = [f"stlens:avos?fusion={f}&cc=none&width=4" for f in FUSIONS] + [
    f"stlens:avos?fusion={f}&cc={c}&cc_gate={g}&width=4"
    for f, c, g in itertools.product(FUSIONS, CROSS[1:], (0, 1))]


@pytest.mark.parametrize("spec", VARIANTS)
def test_every_variant_runs_forward_and_backward(spec):
    torch.manual_seed(0)
    model = stlens.load_model(spec).module.train()
    rgb, flow = two_stream(2, 4, 32, seed=1)
    logits = model(rgb, flow)
    assert logits.shape == (2, 4, 32, 32) and torch.isfinite(logits).all()
    target = (rgb[:, 0] > 0).float()
    F.binary_cross_entropy_with_logits(logits, target).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{spec}: no gradient for {name}"
        assert torch.isfinite(param.grad).all(), f"{spec}: {name}"
    moved = [name for name, p in model.named_parameters() if p.grad.abs().sum() > 0]
    assert len(moved) >= 0.9 * len(list(model.parameters()))


def test_cross_connections_change_the_streams():
    """With hooks: ``uni`` leaves the motion stream as its block made it and changes the appearance stream;
    ``recip`` changes both; ``none`` neither. The flow alone changes ``app.stage3`` only with a cross-connection."""
    rgb, flow = two_stream(2, 4, 32, seed=2)
    layers = ["app.stage3", "app.stage3.block", "mot.stage3", "mot.stage3.block"]
    for cc in CROSS:
        model = zoo.build("avos", seed=0, cc=cc, width=4).eval()
        with torch.no_grad(), LayerTaps(model, layers) as taps:
            model(rgb, flow)
            first = dict(taps.latents)
            taps.reset()
            model(rgb, -flow.flip(2))
            second = dict(taps.latents)
        app_changed = not torch.equal(first["app.stage3"], first["app.stage3.block"])
        mot_changed = not torch.equal(first["mot.stage3"], first["mot.stage3.block"])
        assert (app_changed, mot_changed) == {"none": (False, False), "uni": (True, False),
                                              "recip": (True, True)}[cc], cc
        assert first["app.stage3"].abs().sum() > 0
        assert torch.equal(first["app.stage3"], second["app.stage3"]) == (cc == "none"), cc


def test_handle_layers_and_dry_run():
    handle = stlens.load_model("stlens:avos?fusion=gated&cc=recip")
    assert handle.inputs == 2 and handle.input == SEG_INPUT
    assert (handle.input.frames, handle.input.size) == (8, 64)
    assert handle.default_layers == AVOS_LAYERS
    assert zoo.zoo_spec("avos", fusion="gated", cc="recip") == (SEG_INPUT, AVOS_LAYERS)
    assert handle.module.stlens_config == {"name": "avos", "options": {
        "fusion": "gated", "cc": "recip", "cc_gate": False, "rounds": 1, "width": 8, "blocks": 1, "kt": 3}}
    assert zoo.spec_of(handle.module) == "stlens:avos?cc=recip"
    table = describe_layers(handle)
    assert "inputs (rgb, flow) (1, 3, 8, 64, 64) + (1, 2, 7, 64, 64)" in table
    assert "* app.stage4" in table and ".app=(1, 64, 8, 4, 4), .mot=(1, 64, 8, 4, 4)" in table
    marked = [line for line in table.splitlines() if line.startswith("* ")]
    assert len(marked) == 12 and not any("not called" in line for line in marked)
    for spec in ("stlens:avos", "stlens:seg3d"):
        assert spec in stlens.list_models("stlens")
    seg = stlens.load_model("stlens:seg3d")
    assert seg.inputs == 1 and seg.default_layers == STAGES and seg.input == SEG_INPUT
    assert "* stage4" in describe_layers(seg)
    sizes = {spec: sum(p.numel() for p in stlens.load_model(spec).module.parameters())
             for spec in ("stlens:avos?cc=none&fusion=concat", "stlens:avos?cc=recip&cc_gate=1", "stlens:seg3d")}
    assert all(1e5 < n < 1e6 for n in sizes.values()), sizes


@pytest.fixture(scope="module")
def synth():
    return stlens.open_data("synth:motion?n=8&frames=4&size=32")


def test_measure_avos_on_two_stream_pairs(synth):
    handle = stlens.load_model("stlens:avos?fusion=gated&cc=recip", frames=4, size=32)
    assert handle.inputs == 2
    pairs = stlens.make_pairs(synth, handle.input, 8, flow="dis")
    result = stlens.measure(handle, pairs, bootstrap=0, batch_size=4, progress=False, workers=0)
    assert [layer.layer for layer in result.layers] == AVOS_LAYERS
    assert result.meta["pairs"] == {"dynamic": 8, "static": 8}
    for layer in result.layers:
        assert np.isfinite(list(layer.score.values())).all() and layer.channels in (8, 16, 32, 64)
    assert result["fusion.stage4"].channels == 64


def test_measure_avos_without_cross_connections_keeps_the_streams_apart(synth):
    """Dynamic pairs share the flow, static pairs the RGB: without cross-connections the motion stream gives identical
    latents within dynamic pairs and the appearance stream within static pairs (r = 1 for every live channel)."""
    handle = stlens.load_model("stlens:avos?fusion=concat&cc=none", frames=4, size=32)
    pairs = stlens.make_pairs(synth, handle.input, 8, flow="dis")
    result = stlens.measure(handle, pairs, ["app.stage3", "mot.stage3"], bootstrap=0, batch_size=4, progress=False,
                            workers=0)
    for layer, shared in ((result["app.stage3"], result["app.stage3"].r_static),
                          (result["mot.stage3"], result["mot.stage3"].r_dynamic)):
        live = np.array([c != "dead" for c in layer.classes])
        assert live.sum() >= 4
        np.testing.assert_allclose(shared[live], 1.0, atol=1e-5)


def test_seg3d_forward_backward_and_measure(synth):
    torch.manual_seed(0)
    model = stlens.load_model("stlens:seg3d?width=4").module.train()
    clip = rand(2, 3, 4, 32, 32, seed=3)
    logits = model(clip)
    assert logits.shape == (2, 4, 32, 32) and torch.isfinite(logits).all()
    F.binary_cross_entropy_with_logits(logits, (clip[:, 0] > 0).float()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    handle = stlens.load_model("stlens:seg3d", frames=4, size=32)
    result = stlens.measure(handle, stlens.make_pairs(synth, handle.input, 8), bootstrap=0, batch_size=4,
                            progress=False, workers=0)
    assert [layer.layer for layer in result.layers] == STAGES
    assert all(np.isfinite(list(layer.score.values())).all() for layer in result.layers)


def test_seg3d_is_the_avos_appearance_encoder():
    seg = zoo.build("seg3d", width=4)
    avos = zoo.build("avos", width=4)
    assert [n for n, _ in seg.stage3.named_parameters()] == [n for n, _ in avos.app.stage3.block.named_parameters()]


@pytest.mark.parametrize("spec, message", [
    ("stlens:avos?fusion=sum", r"fusion='sum' is unknown; choices: concat, gated, convex"),
    ("stlens:avos?cc=both", r"cc='both' is unknown; choices: none, uni, recip"),
    ("stlens:avos?rounds=0", r"rounds must be > 0"),
    ("stlens:avos?cc_gate=maybe", r"cc_gate='maybe' is not a valid bool"),
    ("stlens:avos?kt=2", r"kt must be odd"),
    ("stlens:avos?classes=3", r"unknown option 'classes' for stlens:avos; valid options: .*cc_gate"),
    ("stlens:seg3d?width=0", r"width must be > 0"),
    ("stlens:unet", r"unknown zoo model 'unet'.*avos, seg3d"),
])
def test_bad_options_are_clear_errors(spec, message):
    with pytest.raises(StlensError, match=message):
        stlens.load_model(spec)
