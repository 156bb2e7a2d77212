"""Bootstrap weights are a function of (seed, global pair index): results do not depend on batching, order or split."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from conftest import TinyVideoNet

import stlens
from stlens.core.pair import Pair
from stlens.measure.moments import PairedMoments, poisson_weights
from stlens.models.registry import InputSpec, ModelHandle

SPEC = InputSpec(frames=4, stride=2, size=32, resize=36)
SEED = 7
B = 64


@pytest.fixture(scope="module")
def sample_pairs():
    return stlens.make_pairs(stlens.open_data("sample:"), SPEC, pairs=12, seed=3)


def _result_json(pairs, batch_size, folder) -> dict:
    torch.manual_seed(0)
    handle = ModelHandle(TinyVideoNet().eval(), "tiny", SPEC, ["stem", "stage"])
    stlens.measure(handle, pairs, batch_size=batch_size, bootstrap=50, progress=False).save(folder)
    data = json.loads((folder / "result.json").read_text())
    data.pop("timing")
    data.pop("run_id")
    return data


def _assert_same(x, y, path="") -> None:
    """Equal structures; floats equal up to the rounding that a different batching may leave (1e-9 relative)."""
    if isinstance(x, dict):
        assert isinstance(y, dict) and x.keys() == y.keys(), path
        for k in x:
            _assert_same(x[k], y[k], f"{path}/{k}")
    elif isinstance(x, list):
        assert isinstance(y, list) and len(x) == len(y), path
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            _assert_same(u, v, f"{path}[{i}]")
    elif isinstance(x, float) and not isinstance(y, str):
        assert math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12), (path, x, y)
    else:
        assert x == y, (path, x, y)


def test_indexable_sources_number_their_pairs(sample_pairs):
    assert [sample_pairs[k].index for k in (0, 1, 5, 23)] == [0, 1, 5, 23]
    assert [p.index for p in sample_pairs] == list(range(len(sample_pairs)))
    assert Pair(0, torch.zeros(1), torch.zeros(1), "x").index is None  # positional construction unchanged


def test_measure_gives_the_same_result_json_for_batch_sizes_3_and_5(sample_pairs, tmp_path):
    three = _result_json(sample_pairs, 3, tmp_path / "b3")
    five = _result_json(sample_pairs, 5, tmp_path / "b5")
    assert three["layers"][0]["ci95"]["dynamic"] is not None
    _assert_same(three, five)


def test_pairs_without_indices_are_numbered_in_the_order_they_come(sample_pairs, tmp_path):
    plain = [dataclasses.replace(p, index=None) for p in sample_pairs]
    indexed, listed = _result_json(sample_pairs, 4, tmp_path / "indexed"), _result_json(plain, 5, tmp_path / "plain")
    _assert_same(indexed["layers"], listed["layers"])  # a plain list has no source to name in the metadata


def _data(n=60, c=5, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(3.0, 2.0, size=(n, c))
    b = a + rng.normal(size=(n, c))
    factor = np.arange(n) % 2
    return a, b, factor


def _feed(m: PairedMoments, a, b, factor, index, batch: int) -> PairedMoments:
    for s in range(0, len(a), batch):
        sl = slice(s, s + batch)
        for f in (0, 1):
            keep = factor[sl] == f
            if keep.any():
                m.update(f, a[sl][keep], b[sl][keep], index[sl][keep])
    return m


def _assert_same_replicates(m: PairedMoments, ref: PairedMoments) -> None:
    np.testing.assert_array_equal(m.n, ref.n)
    np.testing.assert_array_equal(m.boot_n, ref.boot_n)  # sums of small integers: exact
    for f in (0, 1):
        got, want = m.replicate_sums(f), ref.replicate_sums(f)
        for field in ("sa", "sb", "saa", "sbb", "sab"):
            g, w = getattr(got, field), getattr(want, field)
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12 * np.abs(w).max())


def test_orders_batchings_and_splits_with_merge_give_the_same_replicates():
    a, b, factor = _data()
    index = np.arange(len(a))
    ref = _feed(PairedMoments(5, bootstrap=B, seed=SEED), a, b, factor, index, batch=len(a))
    _assert_same_replicates(_feed(PairedMoments(5, bootstrap=B, seed=SEED), a, b, factor, index, batch=1), ref)
    _assert_same_replicates(_feed(PairedMoments(5, bootstrap=B, seed=SEED), a, b, factor, index, batch=7), ref)
    order = np.random.default_rng(1).permutation(len(a))
    shuffled = _feed(PairedMoments(5, bootstrap=B, seed=SEED), a[order], b[order], factor[order], index[order], 4)
    _assert_same_replicates(shuffled, ref)
    # two "processes": even and odd positions of a shuffled order, batched differently, then merged
    parts = [order[0::2], order[1::2]]
    left = _feed(PairedMoments(5, bootstrap=B, seed=SEED), a[parts[0]], b[parts[0]], factor[parts[0]], parts[0], 3)
    right = _feed(PairedMoments(5, bootstrap=B, seed=SEED), a[parts[1]], b[parts[1]], factor[parts[1]], parts[1], 5)
    _assert_same_replicates(left.merge(right), ref)


def test_without_indices_a_running_counter_numbers_the_pairs():
    a, b, factor = _data()
    m = PairedMoments(5, bootstrap=B, seed=SEED)
    for s in range(0, len(a), 6):  # the same order, no indices: pairs 0, 1, 2, … in the order given
        for f in (0, 1):
            keep = factor[s:s + 6] == f
            m.update(f, a[s:s + 6][keep], b[s:s + 6][keep])
    # within a batch the pairs of factor 0 come before those of factor 1, so number them the same way in ref
    order = np.concatenate([np.arange(s, min(s + 6, len(a)))[np.argsort(factor[s:s + 6], kind="stable")]
                            for s in range(0, len(a), 6)])
    ref = _feed(PairedMoments(5, bootstrap=B, seed=SEED), a[order], b[order], factor[order], np.arange(len(a)), 6)
    _assert_same_replicates(m, ref)


def test_the_weights_of_a_pair_do_not_depend_on_its_batch():
    alone = np.stack([poisson_weights(SEED, [k], B)[0] for k in range(40)])
    together = poisson_weights(SEED, np.arange(40), B)
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(poisson_weights(SEED, [31, 2, 17], B), alone[[31, 2, 17]])
    m = PairedMoments(3, bootstrap=B, seed=SEED)
    np.testing.assert_array_equal(m._weights(np.array([5, 6])), alone[[5, 6]])
    # one pair at a time: each replicate's total weight is the sum of the pairs' weights
    rng = np.random.default_rng(0)
    for k in (9, 3, 20):
        m.update(0, rng.normal(size=(1, 3)), rng.normal(size=(1, 3)), [k])
    np.testing.assert_array_equal(m.boot_n[0], alone[[9, 3, 20]].sum(axis=0))
    assert not np.array_equal(poisson_weights(SEED + 1, np.arange(40), B), alone)  # the seed matters


def test_the_weights_are_poisson_one():
    w = poisson_weights(0, np.arange(20000), 100)
    assert w.dtype == np.float64 and w.min() == 0 and (w == np.round(w)).all()
    assert abs(w.mean() - 1) < 0.005 and abs(w.var() - 1) < 0.01
    assert abs((w == 0).mean() - math.exp(-1)) < 0.003 and abs((w == 1).mean() - math.exp(-1)) < 0.003
    assert abs(np.corrcoef(w[:-1].ravel(), w[1:].ravel())[0, 1]) < 0.005  # neighbouring pairs are independent
    assert abs(np.corrcoef(w[:, :-1].ravel(), w[:, 1:].ravel())[0, 1]) < 0.005  # and neighbouring replicates
