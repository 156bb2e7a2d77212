"""Numerical robustness of PairedMoments → estimate against an independent two-pass float64 computation.

The reference below is written from docs/formats.md §1 with numpy (ddof=0), weighted so that it also gives the
Poisson-bootstrap replicates: every mean is taken first, then the centred products.
"""

from __future__ import annotations

import numpy as np
import pytest

from stlens.measure.estimate import CLASS_CODES, FactorSums, layer_statistics
from stlens.measure.moments import PairedMoments

OUTLIER = 1e5


def two_pass(pa, pb, weights=None) -> dict:
    """Scores and per-channel r of formats.md §1, two passes in float64; ``weights`` (one (N_f,) array per factor)
    weight each pair (a bootstrap replicate), None = all 1."""
    if weights is None:
        weights = [np.ones(len(a)) for a in pa]
    w_all = np.concatenate(weights + weights)
    z_all = np.concatenate(pa + pb)
    mean_all = (w_all[:, None] * z_all).sum(axis=0) / w_all.sum()
    sigma2 = ((w_all[:, None] * (z_all - mean_all) ** 2).sum(axis=0) / w_all.sum()).sum()
    scores, ratios = [], []
    for a, b, w in zip(pa, pb, weights, strict=True):
        total = w.sum()
        mu = 0.5 * ((w[:, None] * a).sum(axis=0) + (w[:, None] * b).sum(axis=0)) / total
        cov = (w[:, None] * (a - mu) * (b - mu)).sum(axis=0) / total
        var_f = (w[:, None] * ((a - mu) ** 2 + (b - mu) ** 2)).sum(axis=0) / (2 * total)
        scores.append(cov.sum() / sigma2)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios.append(cov / var_f)
    return {"scores": scores, "r": ratios}


def streamed(pa, pb, batch: int, bootstrap: int = 0, seed: int = 0) -> PairedMoments:
    m = PairedMoments(pa[0].shape[1], bootstrap=bootstrap, seed=seed)
    for f in (0, 1):
        for i in range(0, len(pa[f]), batch):
            m.update(f, pa[f][i:i + batch], pb[f][i:i + batch])
    return m


def point(m: PairedMoments):
    return layer_statistics(m.factor_sums(0), m.factor_sums(1))


def first_vector_centring(pa, pb):
    """What PairedMoments did before: raw sums about the first vector seen (a[0] of the first factor updated)."""
    shift = pa[0][0]
    sums = []
    for a, b in zip(pa, pb, strict=True):
        x, y = a - shift, b - shift
        sums.append(FactorSums(np.asarray(len(a)), x.sum(0), y.sum(0), (x * x).sum(0), (y * y).sum(0),
                               (x * y).sum(0)))
    return layer_statistics(*sums)


def pairs(rng, n=(120, 100), c=24, offset=0.0, scale=1.0):
    """Correlated N(0,1)-ish pairs per factor: a shared part plus independent noise, times ``scale``, + ``offset``."""
    pa, pb = [], []
    for nf in n:
        base = rng.normal(0.0, 1.0, size=(nf, c))
        pa.append(offset + scale * (base + rng.normal(0.0, 0.8, size=(nf, c))))
        pb.append(offset + scale * (base * rng.uniform(0.3, 1.5, size=c) + rng.normal(0.0, 0.8, size=(nf, c))))
    return pa, pb


def with_outlier(pa, pb, factor: int):
    """The first pair of ``factor`` moved by +1e5 on every channel (a and b), and that factor put first."""
    pa, pb = [x.copy() for x in pa], [x.copy() for x in pb]
    pa[factor][0] += OUTLIER
    pb[factor][0] += OUTLIER
    return pa, pb


def max_error(st, ref, index=()) -> float:
    return max(float(np.max(np.abs(st.r_dynamic[index] - ref["r"][0]))),
               float(np.max(np.abs(st.r_static[index] - ref["r"][1]))),
               abs(float(st.score_dynamic[index]) - ref["scores"][0]),
               abs(float(st.score_static[index]) - ref["scores"][1]))


@pytest.mark.parametrize("batch", [1, 7])
def test_outlying_first_pair_keeps_r_and_scores_within_1e9_of_two_pass(batch):
    pa, pb = with_outlier(*pairs(np.random.default_rng(0)), factor=0)
    ref = two_pass(pa, pb)
    st = point(streamed(pa, pb, batch))
    assert max_error(st, ref) <= 1e-9  # measured: ≤ 1e-14
    # The former centring on the first vector seen (here the outlier) lost about 4e-6 of r_static: every static
    # vector sat 1e5 from the shift, so Var = Σx²/N − x̄² cancelled ~1e10 down to ~1.
    old = first_vector_centring(pa, pb)
    assert np.max(np.abs(old.r_static - ref["r"][1])) > 1e-7
    # The classes follow.
    expected = np.where(ref["r"][0] > 0.5, 1, 0) + np.where(ref["r"][1] > 0.5, 2, 0)
    names = {0: "none", 1: "dynamic", 2: "static", 3: "joint"}
    assert [CLASS_CODES[names[e]] for e in expected] == st.classes.tolist()


def test_outlier_in_the_static_factor_and_in_a_merged_instance():
    pa, pb = with_outlier(*pairs(np.random.default_rng(1)), factor=1)
    ref = two_pass(pa, pb)
    # The outlier arrives in a second instance, merged into one that has already seen ordinary pairs.
    first = streamed([pa[0], pb[0][:0]], [pb[0], pb[1][:0]], batch=5)
    second = streamed([pa[0][:0], pa[1]], [pb[0][:0], pb[1]], batch=9)
    assert max_error(point(first.merge(second)), ref) <= 1e-9


def test_large_common_offset_and_small_variance():
    rng = np.random.default_rng(2)
    pa, pb = pairs(rng, offset=1e8, scale=1e-2)
    ref = two_pass(pa, pb)
    for m in (streamed(pa, pb, batch=1), streamed(pa, pb, batch=16),
              streamed([pa[0][:50], pa[1][:30]], [pb[0][:50], pb[1][:30]], batch=4).merge(
                  streamed([pa[0][50:], pa[1][30:]], [pb[0][50:], pb[1][30:]], batch=4))):
        st = point(m)
        assert max_error(st, ref) <= 1e-9
        assert not (st.classes == CLASS_CODES["dead"]).any()
    # A negative offset on half the channels, the outlier on top: still exact.
    signs = np.where(np.arange(pa[0].shape[1]) % 2 == 0, 1.0, -1.0)
    pa = [(x - 1e8) * signs + 1e8 * signs for x in pa]
    pb = [(x - 1e8) * signs + 1e8 * signs for x in pb]
    pa, pb = with_outlier(pa, pb, factor=0)
    assert max_error(point(streamed(pa, pb, batch=3)), two_pass(pa, pb)) <= 1e-9


def _scaled_close(x, y, tol=1e-12):
    """Equal within ``tol`` of the largest magnitude of that kind of sum (per factor and kind)."""
    scale = max(float(np.max(np.abs(x))), float(np.max(np.abs(y))), 1e-300)
    return float(np.max(np.abs(x - y))) <= tol * scale


def test_any_split_of_the_same_pairs_gives_the_same_sums_within_1e12():
    pa, pb = with_outlier(*pairs(np.random.default_rng(3), n=(90, 70)), factor=0)
    bootstrap = 8
    table = [np.random.default_rng(10 + f).poisson(1.0, size=(len(pa[f]), bootstrap)).astype(float) for f in (0, 1)]

    def run(splits, batch):
        """Instances over consecutive index ranges [lo, hi) of both factors, merged in order; each pair keeps its
        replicate weights from ``table`` whatever instance and batch it lands in."""
        merged = None
        for lo, hi in splits:
            m = PairedMoments(pa[0].shape[1], bootstrap=bootstrap)
            rows = iter([table[f][i:min(i + batch, hi[f])] for f in (0, 1) for i in range(lo[f], hi[f], batch)])
            m._weights = lambda count, rows=rows: next(rows)
            for f in (0, 1):
                for i in range(lo[f], hi[f], batch):
                    m.update(f, pa[f][i:min(i + batch, hi[f])], pb[f][i:min(i + batch, hi[f])])
            merged = m if merged is None else merged.merge(m)
        return merged

    whole = ((0, 0), (90, 70))
    runs = [run([whole], 90), run([whole], 1), run([whole], 4),
            run([((0, 0), (45, 20)), ((45, 20), (90, 70))], 6),
            run([((0, 0), (1, 1)), ((1, 1), (60, 33)), ((60, 33), (90, 70))], 5)]
    reference = runs[0]
    ref_point = point(reference)
    ref_boot = layer_statistics(reference.replicate_sums(0), reference.replicate_sums(1))
    for m in runs[1:]:
        assert m.n.tolist() == [90, 70]
        np.testing.assert_array_equal(m.boot_n, reference.boot_n)
        for k in range(5):
            for f in (0, 1):
                assert _scaled_close(m.sums[f, k], reference.sums[f, k])
                assert _scaled_close(m.boot_sums[f, k], reference.boot_sums[f, k])
        st = point(m)
        assert max_error(st, {"r": [ref_point.r_dynamic, ref_point.r_static],
                              "scores": [ref_point.score_dynamic, ref_point.score_static]}) <= 1e-12
        boot = layer_statistics(m.replicate_sums(0), m.replicate_sums(1))
        assert np.max(np.abs(boot.r_dynamic - ref_boot.r_dynamic)) <= 1e-12
        assert np.max(np.abs(boot.r_static - ref_boot.r_static)) <= 1e-12
        assert np.max(np.abs(boot.score_dynamic - ref_boot.score_dynamic)) <= 1e-12


def test_constant_channel_is_exactly_zero_variance_and_dead():
    rng = np.random.default_rng(4)
    pa, pb = pairs(rng, c=6)
    for x in pa + pb:
        x[:, 0] = 0.1  # not a sum of binary fractions: a naive mean of copies rounds
        x[:, 1] = 1e8 + 0.3
        x[:, 2] = -7.0
    pa[1][:, 3] = pb[1][:, 3] = 0.0  # a ReLU that never fires on static pairs: constant in that factor only
    pa, pb = with_outlier(pa, pb, factor=0)
    for x in pa + pb:  # the outlier row leaves the constant channels constant
        x[:, :3] = [0.1, 1e8 + 0.3, -7.0]
    ref = two_pass(pa, pb)
    for m in (streamed(pa, pb, batch=1, bootstrap=16), streamed(pa, pb, batch=7, bootstrap=16),
              streamed([pa[0][:40], pa[1][:1]], [pb[0][:40], pb[1][:1]], 3, bootstrap=16).merge(
                  streamed([pa[0][40:], pa[1][1:]], [pb[0][40:], pb[1][1:]], 5, bootstrap=16, seed=1))):
        for f in (0, 1):
            s = m.factor_sums(f)
            for part in (s.sa, s.sb, s.saa, s.sbb, s.sab):
                assert (part[:3] == 0.0).all()
            r = m.replicate_sums(f)
            for part in (r.sa, r.sb, r.saa, r.sbb, r.sab):
                assert (part[:, :3] == 0.0).all()
        st = point(m)
        assert (st.classes[:3] == CLASS_CODES["dead"]).all()
        assert (st.r_dynamic[:3] == 0.0).all() and (st.r_static[:3] == 0.0).all()
        assert st.r_static[3] == 0.0 and abs(st.r_dynamic[3] - ref["r"][0][3]) <= 1e-9
        assert np.isfinite(st.r_dynamic).all() and np.isfinite(st.r_static).all()
        boot = layer_statistics(m.replicate_sums(0), m.replicate_sums(1))
        assert (boot.classes[boot.valid][:, :3] == CLASS_CODES["dead"]).all()
        assert np.isfinite(boot.r_dynamic).all() and np.isfinite(boot.r_static).all()


@pytest.mark.parametrize("batch", [1, 6])
def test_bootstrap_replicates_match_a_weighted_two_pass(batch):
    pa, pb = with_outlier(*pairs(np.random.default_rng(5), n=(60, 50)), factor=0)
    m = PairedMoments(pa[0].shape[1], bootstrap=24, seed=3)
    drawn = []
    draw = m._weights
    m._weights = lambda count: drawn.append(draw(count)) or drawn[-1]
    for f in (0, 1):
        for i in range(0, len(pa[f]), batch):
            m.update(f, pa[f][i:i + batch], pb[f][i:i + batch])
    weights = np.concatenate(drawn)  # pair-major, factor 0 first
    boot = layer_statistics(m.replicate_sums(0), m.replicate_sums(1))
    # Replicates that leave the outlier out (weight 0) are the hard ones: their pairs sit 1e5/N from the batch mean.
    left_out = np.flatnonzero(weights[0] == 0)
    assert len(left_out) >= 3
    for k in list(left_out[:4]) + list(np.flatnonzero(weights[0] > 0)[:4]):
        w = [weights[:60, k], weights[60:, k]]
        assert max_error(boot, two_pass(pa, pb, w), index=k) <= 1e-9


def test_a_state_of_raw_sums_written_before_the_centred_layout_still_loads():
    pa, pb = pairs(np.random.default_rng(6), c=5)
    shift = pa[0][0]
    sums = np.stack([np.stack([(a - shift).sum(0), (b - shift).sum(0), ((a - shift) ** 2).sum(0),
                               ((b - shift) ** 2).sum(0), ((a - shift) * (b - shift)).sum(0)])
                     for a, b in zip(pa, pb, strict=True)])
    old = {"shift": shift, "n": np.array([len(pa[0]), len(pa[1])]), "sums": sums, "boot_n": np.zeros((2, 0)),
           "boot_sums": np.zeros((2, 5, 0, 5)), "seed": np.asarray(0)}
    back = PairedMoments.from_state(old)
    assert back.n.tolist() == [120, 100] and back.bootstrap == 0
    assert max_error(point(back), two_pass(pa, pb)) <= 1e-9
    assert max_error(point(back.merge(streamed(pa, pb, batch=8))), two_pass([x.repeat(2, 0) for x in pa],
                                                                             [x.repeat(2, 0) for x in pb])) <= 1e-9
