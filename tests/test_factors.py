"""The estimator over named factors (Esser et al.'s K factors): against an independent batch computation and a hand
computation; the default factors unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stlens.errors import StlensError
from stlens.measure.accumulator import Accumulator
from stlens.measure.estimate import factor_dims, layer_statistics
from stlens.measure.layer import estimate_layer
from stlens.measure.moments import PairedMoments

NAMES = ("dynamic", "static", "playback")


def reference(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Batch computation written apart from stlens: total variance over every vector of every factor, ddof=0."""
    sigma2 = np.concatenate([np.concatenate(p) for p in pairs]).var(axis=0).sum()
    scores, ratios = [], []
    for a, b in pairs:
        mu = np.concatenate([a, b]).mean(axis=0)
        cov = ((a - mu) * (b - mu)).mean(axis=0)
        scores.append(cov.sum() / sigma2)
        ratios.append(cov / np.concatenate([a, b]).var(axis=0))
    e = np.exp(np.array([*scores, 1.0]))
    c = pairs[0][0].shape[1]
    dims = [math.floor(p * c) for p in (e / e.sum())[:-1]]
    return {"scores": scores, "r": ratios, "dims": (*dims, c - sum(dims))}


def three_factors(rng, c=12):
    out = []
    for n, shared in ((40, 2.0), (30, 0.5), (35, 1.0)):
        base = rng.normal(5.0, shared, size=(n, c))
        out.append((base + rng.normal(0, 1.0, (n, c)), base + rng.normal(0, 1.0, (n, c))))
    return out


def test_three_factors_match_an_independent_batch_computation():
    pairs = three_factors(np.random.default_rng(3))
    m = PairedMoments(12, bootstrap=0, factors=3)
    for f, (a, b) in enumerate(pairs):
        for i in range(0, len(a), 8):
            m.update(f, a[i:i + 8], b[i:i + 8])
    st = layer_statistics(m.factor_sums(0), m.factor_sums(1), 0.5, (m.factor_sums(2),))
    ref = reference(pairs)
    assert np.max(np.abs(st.scores - ref["scores"])) <= 1e-9
    assert np.max(np.abs(st.ratios - np.stack(ref["r"]))) <= 1e-9
    assert tuple(st.dims) == ref["dims"]
    layer = estimate_layer("x", m, 0.5, NAMES)
    assert list(layer.score) == list(NAMES) and list(layer.dims) == [*NAMES, "residual"]
    assert layer.dims["playback"] == ref["dims"][2] and set(layer.r_further) == {"playback"}


def test_dims_over_three_zero_scores_by_hand():
    # softmax([0, 0, 0, 1]): p_f = 1/(3 + e) = 0.17488 → ⌊174.88⌋ = 174 each; the residual takes 1000 − 522 = 478
    assert tuple(factor_dims([0.0, 0.0, 0.0], 1000)) == (174, 174, 174, 478)
    # a further factor lowers the others: with two, 1/(2 + e) = 0.21194 → 211
    assert tuple(factor_dims([0.0, 0.0], 1000)) == (211, 211, 578)


def test_accumulator_keeps_the_factor_names_through_its_state_and_refuses_others():
    rng = np.random.default_rng(0)
    acc = Accumulator(bootstrap=3, seed=1, factors=NAMES)
    acc.add(np.array([0, 1, 2, 2]), np.arange(4), {"l": rng.normal(size=(8, 5))})
    back = Accumulator.from_state(acc.state())
    assert back.factor_names == NAMES and back.counts() == {"dynamic": 1, "static": 1, "playback": 2}
    assert np.array_equal(back.moments["l"].n, [1, 1, 2])
    with pytest.raises(StlensError, match="`factors`"):
        Accumulator(bootstrap=0, seed=0, factors=("static", "dynamic"))
    with pytest.raises(StlensError, match="factors"):
        back.merge(Accumulator(bootstrap=3, seed=1))


def test_playback_windows_share_their_middle_frame_at_two_strides():
    from stlens.pairs.factors import playback_span, playback_windows

    video = np.arange(40)[:, None, None, None] * np.ones((1, 2, 2, 3), dtype=np.int64)
    slow, fast = playback_windows(video, 4, 2, centre=20)
    # by hand: T = 4, T//2 = 2, s = 2 → 16, 18, 20, 22 and 12, 16, 20, 24
    assert list(slow[:, 0, 0, 0]) == [16, 18, 20, 22] and list(fast[:, 0, 0, 0]) == [12, 16, 20, 24]
    assert playback_span(4, 2) == 13
    with pytest.raises(StlensError, match="playback"):
        playback_windows(video, 4, 2, centre=3)


def test_unknown_factor_is_refused_naming_the_argument():
    from stlens.pairs.factors import parse_factors

    assert parse_factors("playback,dynamic,static") == NAMES
    with pytest.raises(StlensError, match="`factors`: unknown factor 'x'; choose from dynamic, static"):
        parse_factors("dynamic,static,x")


def test_measure_with_playback_on_a_synth_world(tmp_path):
    import csv
    import json

    import stlens

    stlens.measure("stlens:i3d?classes=8", "synth:motion?split=test&n=8&frames=4&size=32", "default", pairs=4,
                   frames=4, size=32, bootstrap=5, factors="dynamic,static,playback", workers=0, progress=False,
                   device="cpu", out=tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "result.json").read_text())
    assert doc["pairs"] == {"dynamic": 4, "static": 4, "playback": 4}
    layer = doc["layers"][0]
    assert list(layer["dims"]) == [*NAMES, "residual"] and sum(layer["dims"].values()) == layer["channels"]
    assert set(layer["ci95"]) == set(NAMES)
    with (tmp_path / "run" / "units.csv").open() as f:
        assert next(csv.reader(f))[-1] == "r_playback"
    back = stlens.load_result(tmp_path / "run")
    assert set(back.layers[0].r_further) == {"playback"}
