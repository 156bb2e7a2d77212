"""``stlens:vis?masked=true`` (Mask2Former's masked attention): the attention mask against its definition on a hand
case, the mask each decoder layer is given (forward hooks), the shapes, and the default forward left unchanged."""

from __future__ import annotations

import pytest
import torch

import stlens
from stlens.models.zoo.vis import attention_mask

#: bundled:vis-motion's logits[0, :3] on ``torch.randn(2, 3, 8, 64, 64)`` (generator seed 0), recorded with the code
#: before ``masked`` existed
RECORDED_LOGITS = [[0.05671525, 0.20762289, -0.33026081, -0.74096763, -0.17961645],
                   [0.22625190, -0.26229244, 0.45585084, -0.02984595, -0.12198317],
                   [-0.19163117, 0.81580007, -0.68829864, -0.57452452, -0.10591678]]
RECORDED_SUM = -14.400655195116997


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_attention_mask_by_hand():
    # 2 clips × 3 queries, T = 2, 4×4 logits constant on 2×2 blocks, so the resize to the 2×2 grid is exact
    logits = torch.full((2, 3, 2, 2, 2), -1.0)
    logits[0, 0, 0, 0, 0] = 2.0  # query 0: on in one block of frame 0
    logits[0, 1, 1] = 0.0  # query 1: sigmoid exactly 0.5 everywhere is not > 0.5: no token, so fully open
    logits[0, 2, 1, :, 1] = 3.0  # query 2: the right column of frame 1
    logits[1, 0] = 1.0  # clip 1, query 0: on everywhere
    logits = logits.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)  # (2, 3, 2, 4, 4)
    blocked = attention_mask(logits, (2, 2, 2), heads=2)
    assert blocked.dtype == torch.bool and blocked.shape == (4, 3, 8)  # (B·heads, Q, T·h·w)
    expect = torch.ones(2, 3, 8, dtype=torch.bool)  # tokens time-major: t·4 + y·2 + x
    expect[0, 0, 0] = False
    expect[0, 1] = False
    expect[0, 2, [5, 7]] = False
    expect[1, 0] = False
    expect[1, 1:] = False  # clip 1, queries 1–2: no open token → fully open
    assert torch.equal(blocked, expect.repeat_interleave(2, dim=0))  # row b·heads + h, as nn.MultiheadAttention
    assert torch.equal(attention_mask(logits[:, :, :, ::2, ::2], (2, 2, 2)), expect)  # already on the grid


def capture(model: torch.nn.Module, clip: torch.Tensor) -> tuple[dict, list, list]:
    """Run ``model`` on ``clip`` recording its output, the pixel embeddings, each decoder layer's input queries and
    the ``attn_mask`` its cross-attention got."""
    seen: dict = {}
    queries: list = []
    masks: list = []
    hooks = [model.pixel_decoder.register_forward_hook(lambda _m, _i, out: seen.__setitem__("pixels", out))]
    for layer in model.decoder:
        hooks.append(layer.register_forward_pre_hook(lambda _m, args: queries.append(args[0])))
        hooks.append(layer.cross.register_forward_pre_hook(
            lambda _m, _args, kwargs: masks.append(kwargs.get("attn_mask")), with_kwargs=True))
    with torch.no_grad():
        seen["out"] = model(clip)
    for hook in hooks:
        hook.remove()
    return seen, queries, masks


def test_each_layer_attends_inside_the_mask_of_the_queries_it_gets():
    torch.manual_seed(0)
    handle = stlens.load_model("stlens:vis?width=8&queries=4&depth=2&heads=2&masked=true", frames=4, size=32)
    model = handle.module
    seen, queries, masks = capture(model, torch.randn(2, 3, 4, 32, 32))
    assert seen["out"]["logits"].shape == (2, 4, 5) and seen["out"]["masks"].shape == (2, 4, 4, 32, 32)
    assert torch.equal(queries[0], model.query_feat.weight.expand(2, -1, -1))  # decoder.0: the learned queries
    partial = 0
    for query, mask in zip(queries, masks, strict=True):
        assert mask.shape == (2 * 2, 4, 4 * 4 * 4)  # (B·heads, Q, T·(32/8)²)
        logits = model.mask_logits(query, seen["pixels"])  # (B, Q, T, 16, 16)
        assert torch.equal(mask, attention_mask(logits, (4, 4, 4), heads=2))
        open_ = ~mask[::2]  # head 0 of each clip
        assert torch.equal(open_, ~mask[1::2])
        coarse = torch.nn.functional.interpolate(logits.flatten(0, 1), size=(4, 4), mode="bilinear",
                                                 align_corners=False).unflatten(0, (2, 4)).flatten(2)
        inside = coarse > 0
        assert torch.equal(open_, torch.where(inside.any(-1, keepdim=True), inside, torch.ones_like(inside)))
        partial += int((open_.any(-1) & ~open_.all(-1)).sum())
    assert partial > 0  # some query really is restricted


def test_an_empty_mask_everywhere_is_the_unmasked_model():
    torch.manual_seed(0)
    masked = stlens.load_model("stlens:vis?width=8&queries=4&depth=2&masked=true", frames=4, size=32).module
    plain = stlens.load_model("stlens:vis?width=8&queries=4&depth=2", frames=4, size=32).module
    assert masked.state_dict().keys() == plain.state_dict().keys()  # no new parameters
    last = masked.mask_embed[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()  # every mask logit 0: sigmoid 0.5, no token on, every query fully open
    plain.load_state_dict(masked.state_dict())
    clip = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(masked(clip)["logits"], plain(clip)["logits"], atol=1e-6)


def test_the_default_forward_is_unchanged():
    handle = stlens.load_model("stlens:vis", weights="bundled:vis-motion")
    assert handle.module.masked is False
    clip = torch.randn(2, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    seen, _, masks = capture(handle.module, clip)
    assert masks == [None, None, None]  # plain cross-attention
    logits = seen["out"]["logits"]
    assert torch.allclose(logits[0, :3], torch.tensor(RECORDED_LOGITS), atol=1e-5)
    assert float(logits.double().sum()) == pytest.approx(RECORDED_SUM, abs=1e-3)


def test_a_masked_model_trains():
    torch.manual_seed(0)
    model = stlens.load_model("stlens:vis?width=8&queries=4&depth=2&masked=true", frames=4, size=32).module.train()
    out = model(torch.randn(2, 3, 4, 32, 32))
    (out["logits"].logsumexp(-1).sum() + out["masks"].sigmoid().mean()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_the_attention_probe_runs(tmp_path):
    import sys
    from pathlib import Path

    from safetensors.torch import save_file

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from vis_attention import probe

    spec = "stlens:vis?width=8&queries=4&depth=2&masked=true"
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_file(stlens.load_model(spec).module.state_dict(), str(weights))
    found = probe(spec, str(weights), "synth:motion?task=instances&frames=8&size=64&n=4", batch=2)
    assert [layer["layer"] for layer in found["layers"]] == ["decoder.0", "decoder.1"]
    assert 0 < found["track_share_of_tokens"] < 1 and found["tracks"] > 0
    for layer in found["layers"]:
        assert all(0 <= layer[k] <= 1 for k in ("queries_fully_open", "best_query_fully_open",
                                                 "best_query_precision", "best_query_recall"))
