"""The estimator against independent batch computations, hand-computed values and planted latents."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stlens.measure.estimate import (
    CLASS_CODES,
    bias_from_dims,
    dims_from_scores,
    layer_statistics,
)
from stlens.measure.moments import PairedMoments


def reference(pairs_a: list[np.ndarray], pairs_b: list[np.ndarray], threshold: float = 0.5) -> dict:
    """Direct batch computation of docs/formats.md §1, written independently of stlens (loops over factors, ddof=0)."""
    all_vectors = np.concatenate(pairs_a + pairs_b)
    var_total = all_vectors.var(axis=0)  # ddof=0 over all 2N vectors of both factors
    sigma2 = var_total.sum()
    scores, ratios = [], []
    for a, b in zip(pairs_a, pairs_b, strict=True):
        mu = 0.5 * (a.mean(axis=0) + b.mean(axis=0))
        cov = ((a - mu) * (b - mu)).mean(axis=0)
        var_f = np.concatenate([a, b]).var(axis=0)
        scores.append(cov.sum() / sigma2)
        ratios.append(cov / var_f)
    logits = np.array([scores[0], scores[1], 1.0])
    p = np.exp(logits) / np.exp(logits).sum()
    c = a.shape[1]
    d, s = math.floor(p[0] * c), math.floor(p[1] * c)
    classes = []
    for rd, rs in zip(ratios[0], ratios[1], strict=True):
        classes.append("joint" if rd > threshold and rs > threshold else "dynamic" if rd > threshold
                       else "static" if rs > threshold else "none")
    return {"scores": scores, "dims": (d, s, c - d - s), "r": ratios, "classes": classes}


def streamed(pairs_a, pairs_b, batch: int = 7, bootstrap: int = 0, seed: int = 0) -> PairedMoments:
    m = PairedMoments(pairs_a[0].shape[1], bootstrap=bootstrap, seed=seed)
    for f, (a, b) in enumerate(zip(pairs_a, pairs_b, strict=True)):
        for i in range(0, len(a), batch):
            m.update(f, a[i:i + batch], b[i:i + batch])
    return m


def random_pairs(rng, n=(50, 40), c=16, offset=100.0):
    pa, pb = [], []
    for nf in n:
        base = rng.normal(offset, 2.0, size=(nf, c))
        pa.append(base + rng.normal(0, 1.0, size=(nf, c)))
        pb.append(base * rng.uniform(0.5, 1.5, size=c) + rng.normal(0, 1.5, size=(nf, c)))
    return pa, pb


def test_streaming_matches_batch_reference_to_1e9():
    rng = np.random.default_rng(1)
    pa, pb = random_pairs(rng)
    ref = reference(pa, pb)
    st = layer_statistics(*(streamed(pa, pb).factor_sums(f) for f in (0, 1)))
    assert abs(st.score_dynamic - ref["scores"][0]) <= 1e-9
    assert abs(st.score_static - ref["scores"][1]) <= 1e-9
    assert np.max(np.abs(st.r_dynamic - ref["r"][0])) <= 1e-9
    assert np.max(np.abs(st.r_static - ref["r"][1])) <= 1e-9
    assert tuple(st.dims) == ref["dims"]


def test_merge_equals_single_pass_and_batching_does_not_matter():
    rng = np.random.default_rng(2)
    pa, pb = random_pairs(rng, offset=-30.0)
    whole = streamed(pa, pb, batch=1000)
    first = streamed([x[:20] for x in pa], [x[:20] for x in pb], batch=3)
    second = streamed([x[20:] + 0 for x in pa], [x[20:] for x in pb], batch=5)
    merged = first.merge(second)
    for f in (0, 1):
        one, two = whole.factor_sums(f), merged.factor_sums(f)
        assert one.n == two.n
    a = layer_statistics(whole.factor_sums(0), whole.factor_sums(1))
    b = layer_statistics(merged.factor_sums(0), merged.factor_sums(1))
    assert abs(a.score_dynamic - b.score_dynamic) < 1e-9 and abs(a.score_static - b.score_static) < 1e-9
    assert np.max(np.abs(a.r_dynamic - b.r_dynamic)) < 1e-9
    # Poisson weights are drawn per pair, so replicates do not depend on the batch size.
    x = streamed(pa, pb, batch=1, bootstrap=30, seed=5)
    y = streamed(pa, pb, batch=13, bootstrap=30, seed=5)
    np.testing.assert_allclose(x.boot_sums, y.boot_sums, rtol=1e-12, atol=1e-9)


def test_softmax_dims_by_hand():
    # s_D = s_S = 0: p = (1, 1, e)/(2 + e) = 0.2119, 0.2119, 0.5761 → 21.2 / 21.2 / 57.6 % (notes §3)
    assert tuple(dims_from_scores(0.0, 0.0, 1000)) == (211, 211, 578)
    assert tuple(dims_from_scores(1.0, 1.0, 999)) == (333, 333, 333)
    # s_D = 1, s_S = 0: p = (e, 1, e)/(2e + 1) = 0.4223, 0.1554 → 422 / 155 / 423
    assert tuple(dims_from_scores(1.0, 0.0, 1000)) == (422, 155, 423)
    assert bias_from_dims(10, 30) == pytest.approx(0.5)
    assert bias_from_dims(0, 0) == 0.0


def planted_latents(rng, n: int):
    """Channels 0-3 static (appearance), 4-7 dynamic (motion), 8-9 joint (video identity), 10-13 noise, 14 dead."""
    def latent(appearance, motion, identity):
        k = len(appearance)
        z = np.zeros((k, 15))
        z[:, 0:4] = appearance[:, None] * [1, 2, -1, 3] + 0.1 * rng.normal(size=(k, 4))
        z[:, 4:8] = motion[:, None] * [1, -2, 1, 0.5] + 0.1 * rng.normal(size=(k, 4))
        z[:, 8:10] = identity[:, None] * [1, 1] + 0.1 * rng.normal(size=(k, 2))
        z[:, 10:14] = rng.normal(size=(k, 4))
        z[:, 14] = 3.0
        return z

    ident = rng.normal(size=n)
    # dynamic pairs: same motion, different appearance; static pairs: same appearance, different motion.
    motion = rng.normal(size=n)
    dyn = (latent(rng.normal(size=n), motion, ident), latent(rng.normal(size=n), motion, ident))
    app = rng.normal(size=n)
    ident = rng.normal(size=n)
    sta = (latent(app, rng.normal(size=n), ident), latent(app, rng.normal(size=n), ident))
    return [dyn[0], sta[0]], [dyn[1], sta[1]]


def test_planted_latents_recover_classes():
    rng = np.random.default_rng(3)
    pa, pb = planted_latents(rng, 400)
    st = layer_statistics(*(streamed(pa, pb).factor_sums(f) for f in (0, 1)))
    codes = st.classes
    assert (codes[0:4] == CLASS_CODES["static"]).all()
    assert (codes[4:8] == CLASS_CODES["dynamic"]).all()
    assert (codes[8:10] == CLASS_CODES["joint"]).all()
    assert (codes[10:14] == CLASS_CODES["none"]).all()
    assert codes[14] == CLASS_CODES["dead"]
    assert np.isfinite(st.r_dynamic).all() and np.isfinite(st.r_static).all()
    assert st.r_dynamic[14] == 0.0 and st.r_static[14] == 0.0
    # The dead channel adds nothing; the rest agrees with the reference on the live channels.
    ref = reference([x[:, :14] for x in pa], [x[:, :14] for x in pb])
    assert abs(st.score_dynamic - ref["scores"][0]) < 1e-9
    assert ref["classes"] == [["dynamic", "static", "joint", "none", "dead"][c] for c in codes[:14]]


def test_bootstrap_interval_covers_point_and_narrows_with_more_pairs():
    from stlens.measure.layer import estimate_layer

    rng = np.random.default_rng(4)
    widths = []
    for n in (40, 640):
        pa, pb = planted_latents(rng, n)
        result = estimate_layer("z", streamed(pa, pb, bootstrap=200, seed=1), threshold=0.5)
        lo, hi = result.ci95["dynamic"]
        assert lo <= result.percent["dynamic"] <= hi
        widths.append(hi - lo)
        assert result.units_ci95["dead"] == [1.0, 1.0]
    assert widths[1] < widths[0]


def test_memory_does_not_grow_with_pairs():
    m = PairedMoments(64, bootstrap=50)
    rng = np.random.default_rng(5)
    m.update(0, rng.normal(size=(4, 64)), rng.normal(size=(4, 64)))
    size = sum(v.nbytes for v in m.state().values())
    for _ in range(200):
        m.update(1, rng.normal(size=(8, 64)), rng.normal(size=(8, 64)))
    assert sum(v.nbytes for v in m.state().values()) == size
    assert m.n.tolist() == [4, 1600]


def test_state_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    pa, pb = random_pairs(rng)
    m = streamed(pa, pb, bootstrap=10)
    m.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as data:
        back = PairedMoments.from_state(dict(data))
    np.testing.assert_array_equal(back.sums, m.sums)
    np.testing.assert_array_equal(back.boot_sums, m.boot_sums)
