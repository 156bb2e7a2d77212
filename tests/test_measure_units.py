"""``measure(..., units="video"|"instance")`` on the VIS model: the per-video default (decoder layers pooled over
the queries) and the per-instance samples (the query matched to each ground-truth track present in both videos),
checked against computations written here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import stlens
from stlens.core.instances import Instances
from stlens.core.pair import DYNAMIC, STATIC, Pair
from stlens.errors import StlensError
from stlens.measure import units as units_module
from stlens.measure.moments import PairedMoments

VIS = "stlens:vis?width=8&queries=4&depth=1"
WORLD = "synth:motion?task=instances&n=8"
T, S, Q = 4, 32, 4


def vis_handle():
    torch.manual_seed(0)
    return stlens.load_model(VIS, frames=T, size=S, device="cpu")


def outputs_of(module: torch.nn.Module, inputs: torch.Tensor, layer: str) -> tuple[torch.Tensor, dict]:
    """``layer``'s unpooled output and the model's output dict, by a hook of this test's own."""
    seen = {}
    handle = dict(module.named_modules())[layer].register_forward_hook(lambda _m, _i, out: seen.update(x=out))
    with torch.no_grad():
        output = module.eval()(inputs)
    handle.remove()
    return seen["x"], output


def test_default_vis_layers_and_decoder_latents_are_the_mean_over_queries(tmp_path):
    handle = vis_handle()
    pairs = list(stlens.open_data(f"{WORLD}&frames={T}&size={S}").make_pairs(handle.input, 3, seed=0))
    result = stlens.measure(handle, pairs, bootstrap=0, progress=False, workers=0, min_pairs=1, save_latents=True,
                            out=tmp_path / "run")
    assert [layer.layer for layer in result.layers] == ["stage1", "stage2", "stage3", "pixel_decoder", "decoder.0"]
    latents = np.load(tmp_path / "run" / "latents.npz")
    a = torch.stack([p.a for p in pairs])
    decoded, _ = outputs_of(handle.module, a, "decoder.0")
    assert decoded.shape == (len(pairs), Q, 16)
    np.testing.assert_allclose(latents["decoder.0/a"], decoded.mean(1).numpy(), rtol=1e-5, atol=1e-6)
    stage3, _ = outputs_of(handle.module, a, "stage3")
    np.testing.assert_allclose(latents["stage3/a"], stage3.mean((2, 3, 4)).numpy(), rtol=1e-5, atol=1e-6)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert "units" not in saved and "instances" not in saved  # the default result.json is as before
    assert "units" not in json.loads((tmp_path / "run" / "config.json").read_text())["arguments"]


def test_instance_world_pairs_carry_targets_of_both_videos():
    handle = vis_handle()
    source = stlens.open_data(f"{WORLD}&frames={T}&size={S}")
    pairs = list(source.make_pairs(handle.input, 2, seed=0))
    for pair in pairs:
        first, second = pair.targets
        assert list(first.track_ids) == list(second.track_ids) and len(first) >= 1
        if pair.factor == DYNAMIC:  # a re-rendering keeps every object: the same masks
            np.testing.assert_array_equal(first.masks, second.masks)
            continue
        # static: b's frames are a's, shuffled; each b frame's masks must be those of the a frame it shows
        for t in range(T):
            same = [u for u in range(T) if torch.equal(pair.b[:, t], pair.a[:, u])]
            assert same, "a shuffled frame must be one of the clip's frames"
            assert any(np.array_equal(second.masks[:, t], first.masks[:, u]) for u in same)
        assert not np.array_equal(first.masks, second.masks) or not first.masks.any()
    plain = next(iter(stlens.open_data(f"synth:motion?n=4&frames={T}&size={S}").make_pairs(handle.input, 1)))
    assert plain.targets is None


def test_track_queries_uses_the_training_matcher_on_a_planted_output():
    """Query 3 predicts track 7 exactly, query 0 track 2 (crowd track 5 is never matched)."""
    masks = np.zeros((3, T, 8, 8), bool)
    masks[0, :, :3, :3] = True  # track 7
    masks[1, :, 5:, 5:] = True  # track 2
    masks[2, :, 3:5, :] = True  # track 5, crowd
    instances = Instances(masks, [1, 2, 0], [7, 2, 5], [False, False, True])
    logits = torch.full((Q, 5), -5.0)
    logits[:, 4] = 5.0  # no-object everywhere but the planted queries
    logits[3, 1], logits[0, 2] = 9.0, 9.0
    mask_logits = torch.full((Q, T, 8, 8), -9.0)
    mask_logits[3][torch.from_numpy(masks[0])] = 9.0
    mask_logits[0][torch.from_numpy(masks[1])] = 9.0
    assert units_module.track_queries(logits, mask_logits, instances) == {7: 3, 2: 0}


def _tracks(ids: list[int], crowd: list[bool], empty: tuple[int, ...] = (), seed: int = 0) -> Instances:
    rng = np.random.default_rng(seed)
    masks = rng.random((len(ids), T, S, S)) < 0.2
    masks[list(empty)] = False
    return Instances(masks, [0] * len(ids), ids, crowd)


def _planted_matched(logits, masks, instances, fix):
    """Non-crowd track c (in order) ↦ query Q − 1 − c."""
    count = int((~instances.crowd).sum())
    return np.arange(Q - 1, Q - 1 - count, -1), np.arange(count), None, None


def hand_pairs() -> list[Pair]:
    g = torch.Generator().manual_seed(1)
    clip = lambda: torch.randn(3, T, S, S, generator=g)  # noqa: E731
    return [
        # tracks 2 and 3 in both; 9 is crowd in a; 1 only in a; 5 only in b
        Pair(DYNAMIC, clip(), clip(), index=0, targets=(_tracks([9, 1, 2, 3], [True, False, False, False]),
                                                        _tracks([5, 3, 2, 9], [False] * 4, seed=1))),
        # track 1 has no mask in b: only track 2 is shared
        Pair(STATIC, clip(), clip(), index=1, targets=(_tracks([1, 2], [False, False], seed=2),
                                                       _tracks([1, 2], [False, False], empty=(0,), seed=3))),
        # nothing shared: the pair gives no sample
        Pair(DYNAMIC, clip(), clip(), index=2, targets=(_tracks([4], [False], seed=4),
                                                        _tracks([6], [False], seed=5))),
    ]


#: (pair, track, query in a, query in b) under ``_planted_matched``
EXPECTED = [(0, 2, 2, 1), (0, 3, 1, 2), (1, 2, 2, 2)]


def test_instance_samples_are_the_matched_queries_embeddings(tmp_path, monkeypatch):
    monkeypatch.setattr(units_module, "matched", _planted_matched)
    handle = vis_handle()
    pairs = hand_pairs()
    result = stlens.measure(handle, pairs, layers="stage3,decoder.0", units="instance", bootstrap=0, progress=False,
                            workers=0, min_pairs=1, save_latents=True, batch_size=2, out=tmp_path / "run")
    latents = np.load(tmp_path / "run" / "latents.npz")
    a = torch.stack([p.a for p in pairs])
    b = torch.stack([p.b for p in pairs])
    dec_a, _ = outputs_of(handle.module, a, "decoder.0")
    dec_b, _ = outputs_of(handle.module, b, "decoder.0")
    st_a, _ = outputs_of(handle.module, a, "stage3")
    st_b, _ = outputs_of(handle.module, b, "stage3")
    want_a = np.stack([dec_a[i, qa].numpy() for i, _, qa, _ in EXPECTED])
    want_b = np.stack([dec_b[i, qb].numpy() for i, _, _, qb in EXPECTED])
    np.testing.assert_allclose(latents["decoder.0/a"], want_a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(latents["decoder.0/b"], want_b, rtol=1e-5, atol=1e-6)
    # the backbone stays per video: each sample carries its videos' pooled stage3 latents
    rows = [i for i, *_ in EXPECTED]
    np.testing.assert_allclose(latents["stage3/a"], st_a.mean((2, 3, 4)).numpy()[rows], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(latents["stage3/b"], st_b.mean((2, 3, 4)).numpy()[rows], rtol=1e-5, atol=1e-6)
    assert list(latents["factor"]) == [DYNAMIC, DYNAMIC, STATIC]
    assert result.meta["pairs"] == {"dynamic": 2, "static": 1}
    assert result.meta["instances"] == {"dynamic": 2, "static": 1} and result.meta["units"] == "instance"
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["units"] == "instance" and saved["pairs"] == {"dynamic": 2, "static": 1}


def test_an_instance_sample_shares_its_pairs_bootstrap_weight(monkeypatch):
    monkeypatch.setattr(units_module, "matched", _planted_matched)
    handle = vis_handle()
    pairs = hand_pairs()
    result = stlens.measure(handle, pairs, layers="decoder.0", units="instance", bootstrap=16, seed=3,
                            progress=False, workers=0, min_pairs=1, save_latents=True, batch_size=3)
    moments = result.moments["decoder.0"]
    a, b = result.latents["decoder.0/a"].astype(np.float64), result.latents["decoder.0/b"].astype(np.float64)
    pair_index = np.array([i for i, *_ in EXPECTED])
    factor = np.array([pairs[i].factor for i in pair_index])

    def rebuilt(index: np.ndarray) -> np.ndarray:
        m = PairedMoments(a.shape[1], bootstrap=16, seed=3)
        for f in (DYNAMIC, STATIC):
            m.update(f, a[factor == f], b[factor == f], index[factor == f])
        return m.boot_sums

    np.testing.assert_allclose(moments.boot_sums, rebuilt(pair_index), rtol=1e-6, atol=1e-6)
    # numbered one per sample instead, pair 0's two samples would draw two weights: the check above can fail
    assert not np.allclose(moments.boot_sums, rebuilt(np.array([0, 5, 1])), rtol=1e-6, atol=1e-6)


def test_instance_units_are_refused_without_a_vis_model_or_instance_targets():
    small = dict(frames=T, size=S, pairs=4, bootstrap=0, progress=False, workers=0)
    with pytest.raises(StlensError, match="`units` must be one of video, instance, got 'query'"):
        stlens.measure(VIS, WORLD, units="query", **small)
    with pytest.raises(StlensError, match="`units` instance needs a query-based video instance segmenter"):
        stlens.measure("stlens:c2d?classes=4&width=8", WORLD, units="instance", **small)
    with pytest.raises(StlensError, match="`units` instance needs pairs that carry the ground-truth instance"):
        stlens.measure(VIS, "synth:motion?n=8", units="instance", **small)
    with pytest.raises(StlensError, match="`units` instance needs pairs"):  # an iterable of pairs without targets
        stlens.measure(vis_handle(), [Pair(p.factor, p.a, p.b) for p in hand_pairs()], units="instance",
                       bootstrap=0, progress=False, workers=0, min_pairs=1)
    with pytest.raises(StlensError, match="`units` instance measures the factors dynamic,static only"):
        stlens.measure(VIS, WORLD, units="instance", factors="dynamic,static,playback", **small)


def test_cli_units_instance_writes_the_setting_and_bad_uses_exit_2(tmp_path, capsys):
    from stlens.cli import UNITS, main

    assert UNITS == units_module.UNITS
    base = ["measure", "--model", VIS, "--data", WORLD, "--frames", str(T), "--size", str(S), "--pairs", "4",
            "--bootstrap", "0", "--workers", "0", "--quiet"]
    assert main([*base, "--units", "instance", "--out", str(tmp_path / "m")]) == 0
    saved = json.loads((tmp_path / "m" / "result.json").read_text())
    assert saved["units"] == "instance" and saved["pairs"] == {"dynamic": 4, "static": 4}
    assert sum(saved["instances"].values()) >= 8
    assert [layer["layer"] for layer in saved["layers"]] == ["stage1", "stage2", "stage3", "pixel_decoder",
                                                             "decoder.0"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["arguments"]["units"] == "instance"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*base, "--units", "query", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "--units" in capsys.readouterr().err
    bad = ["measure", "--model", "stlens:c2d?classes=4&width=8", *base[3:], "--units", "instance",
           "--out", str(tmp_path / "y")]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "--units instance needs a query-based" in err and "--from" not in err  # not ablate's `units`


def test_instance_results_do_not_depend_on_workers():
    runs = [stlens.measure(VIS, WORLD, layers="stage3,decoder.0", frames=T, size=S, pairs=4, bootstrap=8,
                           progress=False, units="instance", workers=workers, batch_size=1, seed=0)
            for workers in (0, 2)]
    assert runs[0].meta["instances"] == runs[1].meta["instances"]
    for first, second in zip(runs[0].layers, runs[1].layers, strict=True):
        np.testing.assert_array_equal(first.r_dynamic, second.r_dynamic)
        assert first.ci95 == second.ci95


def test_accumulator_keeps_pairs_apart_from_their_samples_through_a_checkpoint():
    from stlens.measure.accumulator import Accumulator

    acc = Accumulator(bootstrap=4, seed=0)
    rng = np.random.default_rng(0)
    # 3 pairs (factors 0, 1, 0; indices 5, 6, 7) giving 4 samples: pair 5 two, pair 6 none, pair 7 two
    acc.add(np.array([0, 0, 0, 0]), np.array([5, 5, 7, 7]), {"x": rng.normal(size=(8, 3))},
            pairs=(np.array([0, 1, 0]), np.array([5, 6, 7])))
    assert acc.pairs == 3 and acc.counts() == {"dynamic": 2, "static": 1} and acc.position == 8
    back = Accumulator.from_state(acc.state())
    assert back.pair_factors == [0, 1, 0] and back.factors == [0, 0, 0, 0] and back.pairs == 3
    merged = Accumulator(bootstrap=4, seed=0).merge(back)
    assert merged.pairs == 3 and merged.factors == [0, 0, 0, 0]
    plain = Accumulator(bootstrap=4, seed=0)
    plain.add(np.array([0, 1]), np.array([0, 1]), {"x": rng.normal(size=(4, 3))})
    assert "pair_factors" not in plain.state()  # a default run's checkpoint is as before
