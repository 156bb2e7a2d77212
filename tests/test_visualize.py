"""stlens.visualize: objectives, regularizers, params, transforms and the batched render loop (maths by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stlens.errors import StlensError
from stlens.models.registry import load_model
from stlens.visualize import objectives as obj
from stlens.visualize import outputs
from stlens.visualize.natural import angle_error, compass, frame_change
from stlens.visualize.params import VideoParam, spectrum_scale, video_param
from stlens.visualize.regularizers import (
    Regularization,
    lp_norm,
    penalty,
    range_bound,
    regularizer_values,
    spatial_tv,
    temporal_variation,
)
from stlens.visualize.render import Capture, Job, MomentumAdaGrad, RenderConfig, render
from stlens.visualize.targets import parse_indices, parse_target, rank_units
from stlens.visualize.transforms import Draw, Transforms, apply

TINY = "stlens:i3d?width=4"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)  # the untrained model's weights must not depend on the tests that ran before
    return load_model(TINY, frames=4, size=16)


def _acts(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(2, 3, 4, 5, 6, generator=g), "logits": torch.randn(2, 8, generator=g),
            "tok": torch.randn(2, 7, 3, generator=g)}


def test_objectives_match_hand_values():
    acts = _acts()
    a = acts["a"].numpy()
    np.testing.assert_allclose(obj.channel("a", 1)(acts).numpy(), a[:, 1].reshape(2, -1).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(obj.neuron("a", 2)(acts).numpy(), a[:, 2, 2, 2, 3])
    np.testing.assert_allclose(obj.neuron("a", 0, 1, 4, 5)(acts).numpy(), a[:, 0, 1, 4, 5])
    np.testing.assert_allclose(obj.class_logit(5)(acts).numpy(), acts["logits"][:, 5].numpy())
    vec = np.array([0.5, -1.0, 2.0])
    hand = np.einsum("bcthw,c->bthw", a, vec).reshape(2, -1).mean(axis=1)
    np.testing.assert_allclose(obj.direction("a", vec)(acts).numpy(), hand, rtol=1e-5)
    tok = acts["tok"].numpy()
    np.testing.assert_allclose(obj.channel("tok", 2)(acts).numpy(), tok[:, :, 2].mean(axis=1), rtol=1e-6)


def test_objectives_compose():
    acts = _acts(1)
    c0, c1, k3 = obj.channel("a", 0), obj.channel("a", 1), obj.class_logit(3)
    combo = 2 * c0 - c1 * 0.5 + k3 / 4 - 1.0
    hand = 2 * c0(acts) - 0.5 * c1(acts) + k3(acts) / 4 - 1.0
    torch.testing.assert_close(combo(acts), hand)
    torch.testing.assert_close((-c0)(acts), -c0(acts))
    torch.testing.assert_close(sum([c0, c1, k3])(acts), c0(acts) + c1(acts) + k3(acts))
    assert combo.layers == ("a", "logits")
    assert "channel a:0" in combo.name and "class 3" in combo.name
    with pytest.raises(TypeError):
        c0 * c1


def test_objective_errors():
    acts = _acts()
    with pytest.raises(StlensError, match="channel 3 is out of range"):
        obj.channel("a", 3)(acts)
    with pytest.raises(StlensError, match="x=9"):
        obj.neuron("a", 0, 0, 0, 9)(acts)
    with pytest.raises(StlensError, match="class 8"):
        obj.class_logit(8)(acts)
    with pytest.raises(StlensError, match="not captured"):
        obj.channel("b", 0)(acts)


def test_regularizers_match_hand_computation():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 3, 4, 5, generator=g)
    xn = x.numpy().astype(np.float64)
    b, d, t, h, w = xn.shape
    sigma, bound = 0.7, 1.2
    for k in range(b):
        lp = np.mean([(sum(xn[k, c, tt, i, j] ** 2 for c in range(d)) / sigma ** 2) ** 3
                      for tt in range(t) for i in range(h) for j in range(w)])
        assert lp_norm(x, 6.0, sigma)[k].item() == pytest.approx(lp, rel=1e-5)
        for beta in (2.0, 1.0):
            tv = np.mean([sum((xn[k, c, tt, i, j + 1] - xn[k, c, tt, i, j]) ** 2
                              + (xn[k, c, tt, i + 1, j] - xn[k, c, tt, i, j]) ** 2 for c in range(d)) ** (beta / 2)
                          for tt in range(t) for i in range(h - 1) for j in range(w - 1)])
            assert spatial_tv(x, beta)[k].item() == pytest.approx(tv, rel=1e-5)
        tvar = np.mean([sum((xn[k, c, tt + 1, i, j] - xn[k, c, tt, i, j]) ** 2 for c in range(d))
                        for tt in range(t - 1) for i in range(h) for j in range(w)])
        assert temporal_variation(x)[k].item() == pytest.approx(tvar, rel=1e-5)
        rb = np.mean([max(0.0, math.sqrt(sum(xn[k, c, tt, i, j] ** 2 for c in range(d))) - bound) ** 2
                      for tt in range(t) for i in range(h) for j in range(w)])
        assert range_bound(x, bound)[k].item() == pytest.approx(rb, rel=1e-4, abs=1e-7)
    assert temporal_variation(x[:, :, :1]).tolist() == [0.0, 0.0]


def test_regularizer_gradients_match_autograd_reference():
    x = torch.randn(2, 3, 3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    for fn in (lambda v: spatial_tv(v, 2.0), temporal_variation, lambda v: lp_norm(v, 6.0, 0.9),
               lambda v: lp_norm(v, 4.0, 1.1), lambda v: range_bound(v, 1.0)):
        assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-6)


def test_params_seeded_per_target_and_bounded():
    a = VideoParam("fourier", 4, 16, [5, 6], flow_fields=3)
    b = VideoParam("fourier", 4, 16, [6], flow_fields=3)
    torch.testing.assert_close(a.rgb()[1:], b.rgb())
    torch.testing.assert_close(a.flow()[1:], b.flow())
    with torch.no_grad():
        a.rgb_raw.mul_(1e4)
        a.flow_raw.mul_(1e4)
    rgb, flow = a.rgb(), a.flow()
    assert rgb.shape == (2, 3, 4, 16, 16) and flow.shape == (2, 2, 3, 16, 16)
    assert 0 <= rgb.min() and rgb.max() <= 1 and flow.abs().max() <= 20.0
    scale = spectrum_scale(4, 16, 16)
    assert scale[0, 0, 0] == pytest.approx(16.0) and scale[0, 0, 8] == pytest.approx(2.0)
    with pytest.raises(StlensError, match="parameterization"):
        VideoParam("wavelet", 4, 16, [0])


def test_transforms_shift_and_identity():
    x = torch.arange(2 * 1 * 2 * 8 * 8, dtype=torch.float32).view(2, 1, 2, 8, 8)
    none = Transforms(jitter=0, scale=(1.0, 1.0))
    d = Draw(torch.zeros(2, 2), torch.ones(2), [0, 0])
    torch.testing.assert_close(apply(x, d, none), x)
    d = Draw(torch.tensor([[1.0, 0.0], [0.0, -2.0]]), torch.ones(2), [0, 1])
    tf = Transforms(jitter=2, scale=(1.0, 1.0), temporal_roll=1)
    y = apply(x, d, tf)
    torch.testing.assert_close(y[0, :, :, :, 1:], x[0, :, :, :, :-1])  # element 0 moved 1 px right
    torch.testing.assert_close(y[1, :, :, :-2, :], torch.roll(x[1], 1, dims=1)[:, :, 2:, :])  # up 2 px, rolled
    flow = torch.ones(2, 2, 1, 8, 8)
    zoomed = apply(flow, Draw(torch.zeros(2, 2), torch.tensor([1.0, 1.1]), [0, 0]), Transforms(0, (1.0, 1.1)),
                   is_flow=True)
    assert zoomed[1].mean().item() == pytest.approx(1.1, rel=1e-4)  # flow vectors grow with the zoom


def test_momentum_adagrad_step_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = MomentumAdaGrad([p], lr=0.5)
    p.grad = torch.tensor([0.3, -4.0])
    opt.step()
    g = np.array([0.3, -4.0])
    step1 = g / (1 / 0.5 + np.sqrt(g ** 2))
    np.testing.assert_allclose(p.detach().numpy(), [1.0, -2.0] - step1, rtol=1e-6)
    opt.step()
    big_g = 0.9 * g ** 2 + g ** 2
    m = 0.9 * -step1 - g / (1 / 0.5 + np.sqrt(big_g))
    np.testing.assert_allclose(p.detach().numpy(), [1.0, -2.0] - step1 + m, rtol=1e-6)


def _render(handle, jobs, **kw):
    spec = handle.input
    config = RenderConfig(**{"steps": 6, "param": "pixel", "transforms": Transforms(jitter=1), **kw})
    return render(handle.module, jobs, spec.frames, spec.size, spec.mean, spec.std, False, config)


def test_batched_equals_one_at_a_time_and_seeds_are_deterministic(tiny):
    jobs = [Job(obj.channel("stage1", c), 10 + c, 1.0) for c in range(3)]
    batched = _render(tiny, jobs, batch_size=3)
    single = _render(tiny, jobs, batch_size=1)
    again = _render(tiny, jobs, batch_size=3)
    for x, y, z in zip(batched, single, again, strict=True):
        torch.testing.assert_close(x.rgb, y.rgb, atol=1e-4, rtol=0)  # fp reduction order only
        assert x.value == pytest.approx(y.value, rel=1e-3, abs=1e-5)
        assert torch.equal(x.rgb, z.rgb)  # same seeds, same batch: bit-identical
    other = _render(tiny, [Job(jobs[0].objective, 99, 1.0)], batch_size=1)
    assert not torch.equal(other[0].rgb, batched[0].rgb)
    assert batched[0].history[-1] > batched[0].history[0]  # the objective rises


def test_temporal_regularizer_slows_the_video(tiny):
    jobs = [Job(obj.channel("stage2", 0), 3, lam) for lam in (0.0, 300.0)]
    fast, slow = _render(tiny, jobs, steps=25, lr=0.1, transforms=Transforms(jitter=0, scale=(1.0, 1.0)))
    assert fast.regularizers["rgb.temporal_variation"] > 2 * slow.regularizers["rgb.temporal_variation"]


def test_nan_stops_only_that_target(tiny):
    poisoned = obj.Objective(lambda a: a["logits"][:, 0] * float("nan"), "poisoned", ("logits",))
    jobs = [Job(poisoned, 0, 1.0), Job(obj.class_logit(1), 1, 1.0)]
    bad, good = _render(tiny, jobs, batch_size=2)
    assert (bad.status, bad.stopped_at) == ("nan", 0) and torch.isfinite(bad.rgb).all()
    assert good.status == "ok" and math.isfinite(good.value) and len(good.history) == 6


def test_capture_unknown_layer(tiny):
    with pytest.raises(StlensError, match="stage9"):
        Capture(tiny.module, ["stage9"])


def test_target_parsing_and_ranking(tmp_path):
    assert parse_indices("0-2,5,1", "class") == [0, 1, 2, 5]
    assert [t.name for t in parse_target("class:1-2")] == ["class_1", "class_2"]
    assert parse_target("neuron:3@1,2,2", layer="stage1")[0].objective.name == "neuron stage1:3@1,2,2"
    for bad, message in [("channel:0-3", "needs `layers`"), ("class:x", "indices"), ("voxel:1", "unknown target"),
                         ("top-dynamic:2", "needs `layers`")]:
        with pytest.raises(StlensError, match=message):
            parse_target(bad)
    units = [{"channel": 0, "r_dynamic": 0.9, "r_static": 0.8, "class": "joint"},
             {"channel": 1, "r_dynamic": 0.6, "r_static": 0.1, "class": "dynamic"},
             {"channel": 2, "r_dynamic": 0.7, "r_static": 0.0, "class": "dynamic"},
             {"channel": 3, "r_dynamic": 0.1, "r_static": 0.9, "class": "static"}]
    assert [u["channel"] for u in rank_units(units, "dynamic", 3)] == [2, 1, 0]
    assert [u["channel"] for u in rank_units(units, "static", 2)] == [3, 0]
    assert [u["channel"] for u in rank_units(units, "joint", 2)] == [0, 1]


def test_flow_displays_and_angles():
    flow = np.zeros((1, 2, 2, 2), np.float32)
    flow[0, 0, 1] = (2.0, 0.0)  # east at full scale
    flow[0, 1, 0] = (0.0, -2.0)  # north
    paper = outputs.flow_paper(flow, 2.0)
    assert paper[0, 0, 0].tolist() == [128, 128, 128] and paper[0, 0, 1].tolist() == [255, 128, 235]
    assert paper[0, 1, 0].tolist() == [128, 1, 235]
    wheel = outputs.flow_wheel(flow, 2.0)
    assert wheel[0, 0, 0].tolist() == [255, 255, 255] and wheel[0, 0, 1].tolist() == [255, 0, 0]
    assert compass(1, 0) == 0 and compass(0, -1) == 90 and compass(-1, 0) == 180 and compass(0, 1) == 270
    assert angle_error(350, 10) == 20
    video = np.zeros((3, 2, 2, 3), np.uint8)
    video[1] = 10
    assert frame_change(video) == pytest.approx(10.0)


def test_regularization_defaults_documented():
    reg = Regularization()
    assert (reg.alpha, reg.beta) == (6.0, 2.0)


def test_bf16_and_momentum_adagrad_run(tiny):
    jobs = [Job(obj.channel("stage1", 0), 4, 1.0)]
    (fp32,) = _render(tiny, jobs, steps=3, optimizer="mv")
    (bf16,) = _render(tiny, jobs, steps=3, optimizer="mv", precision="bf16")
    assert fp32.status == bf16.status == "ok"
    assert torch.isfinite(bf16.rgb).all() and not torch.equal(bf16.rgb, fp32.rgb)
    with pytest.raises(StlensError, match="optimizer"):
        RenderConfig(optimizer="sgd")


def test_param_and_optimizer_are_factories_resolved_outside_the_loop(tiny):
    spec = tiny.input
    jobs = [Job(obj.channel("stage1", c), 20 + c, lam) for c, lam in ((0, 0.0), (1, 5.0))]
    by_name = _render(tiny, jobs, optimizer="mv")
    factories = _render(tiny, jobs, param=video_param("pixel", spec.frames, spec.size),
                        optimizer=lambda params: MomentumAdaGrad(params, lr=0.05))
    for x, y in zip(by_name, factories, strict=True):  # the built-ins through their factories: bit-identical
        assert torch.equal(x.rgb, y.rgb) and x.history == y.history
    made = []

    def sgd(params):  # a new optimizer: a factory, the loop untouched
        made.append(torch.optim.SGD(params, lr=10.0))
        return made[-1]

    (new,) = _render(tiny, jobs[:1], optimizer=sgd)
    assert len(made) == 1 and made[0].state_dict()["state"] == {}  # plain SGD keeps no state
    assert new.status == "ok" and not torch.equal(new.rgb, by_name[0].rgb)
    with pytest.raises(StlensError, match="parameterization"):
        RenderConfig(param="wavelet")


def test_penalty_weights_temporal_variation_per_job():
    g = torch.Generator().manual_seed(3)
    rgb = torch.rand(2, 3, 4, 8, 8, generator=g)
    reg = Regularization(lp=0.1, tv=0.2, bound=3.0)
    values = regularizer_values(rgb, None, reg)
    temporal_reg = torch.tensor([0.0, 7.0])
    hand = (0.1 * values["rgb.lp_norm"] + 0.2 * values["rgb.spatial_tv"] + 3.0 * values["rgb.range_bound"]
            + temporal_reg * values["rgb.temporal_variation"])
    torch.testing.assert_close(penalty(values, reg, temporal_reg), hand)


def test_one_name_for_lambda_t_and_batch_size():
    with pytest.raises(TypeError):
        Regularization(temporal=5.0)  # λ_T is per job (temporal_reg), not a shared weight
    assert "temporal" not in Regularization().to_dict()
    assert Job(obj.class_logit(0), 0, temporal_reg=2.0).temporal_reg == 2.0
    with pytest.warns(FutureWarning, match="batch_size"):
        config = RenderConfig(batch=3)
    assert config.batch_size == 3
    with pytest.raises(StlensError, match="disagree"), pytest.warns(FutureWarning):
        RenderConfig(batch=3, batch_size=2)
