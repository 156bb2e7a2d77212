"""stlens ablate, the parts: the ranking rules against hand-made rankings, masking exactly the selected channels (all
other values bit-identical) in every layout, mean mode's means against a numpy mean over all clips and positions,
top-k accuracy and the bootstrap intervals by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from stlens.ablate.masking import ChannelMask, ChannelMeans, Target, channel_axis, find_target, masking
from stlens.ablate.metrics import Accuracy, bootstrap_indices, summarise
from stlens.ablate.selection import (
    Units,
    check_k,
    check_selections,
    count_for,
    plan,
    select_channels,
)
from stlens.errors import StlensError

# ------------------------------------------------------------------------------------------------------ selection

#            channel:  0     1     2     3     4     5     6     7     8     9
R_DYNAMIC = np.array([0.9, 0.1, 0.5, 0.8, 0.0, 0.3, 0.7, 0.2, 0.6, 0.4])
R_STATIC = np.array([0.1, 0.9, 0.5, 0.3, 0.0, 0.6, 0.6, 0.8, 0.2, 0.4])
CLASSES = ("dynamic", "static", "joint", "dynamic", "dead", "static", "joint", "static", "dynamic", "none")
UNITS = Units("stage", R_DYNAMIC, R_STATIC, CLASSES)


def hand_ranking(score: list[float], live: list[int]) -> list[int]:
    """Channels by score descending, ties by lower index: written as a plain sort over (−score, channel)."""
    return [c for _, c in sorted((-score[c], c) for c in live)]


LIVE = [0, 1, 2, 3, 5, 6, 7, 8, 9]  # channel 4 is dead


def test_count_is_round_half_up_of_k_percent_and_at_least_one():
    assert count_for(25, 10) == 3  # 2.5 → 3
    assert count_for(10, 10) == 1 and count_for(1, 10) == 1  # 0.1 → at least 1
    assert count_for(50, 64) == 32 and count_for(90, 64) == 58  # 57.6 → 58
    assert count_for(100, 7) == 7


@pytest.mark.parametrize("factor, score", [
    ("dynamic", list(R_DYNAMIC - R_STATIC)),
    ("static", list(R_STATIC - R_DYNAMIC)),
    ("joint", list(np.minimum(R_DYNAMIC, R_STATIC))),
])
@pytest.mark.parametrize("k", [10, 25, 50, 90])
def test_ranked_selections_are_the_top_n_live_channels_by_their_score(factor, score, k):
    chosen = select_channels(UNITS, factor, k)
    n = count_for(k, 10)
    assert chosen.channels == tuple(sorted(hand_ranking(score, LIVE)[:n]))
    assert 4 not in chosen.channels and chosen.asked == n and not chosen.short


def test_the_joint_ranking_by_hand():
    # min(r_D, r_S) per live channel: 0:.1 1:.1 2:.5 3:.3 5:.3 6:.6 7:.2 8:.2 9:.4 → top 3 = 6, 2, 9
    assert select_channels(UNITS, "joint", 25).channels == (2, 6, 9)
    # r_D − r_S: 0:.8 3:.5 8:.4 → the top 3 dynamic channels
    assert select_channels(UNITS, "dynamic", 25).channels == (0, 3, 8)


def test_dead_channels_are_never_chosen_and_all_live_ones_are_used_when_too_few():
    for select in ("dynamic", "static", "joint", "random", "random-least-dynamic", "random-least-static"):
        for draw in range(30):
            assert 4 not in select_channels(UNITS, select, 50, draw).channels
    everything = select_channels(UNITS, "dynamic", 100)
    assert everything.channels == tuple(LIVE) and everything.asked == 10 and everything.short


def test_random_least_draws_from_the_k_plus_5_percent_least_biased_channels():
    units = Units("wide", np.linspace(0, 1, 40), np.zeros(40), ("dynamic",) * 40)  # r_D − r_S grows with the index
    for draw in range(20):
        chosen = select_channels(units, "random-least-dynamic", 10, draw)
        assert len(chosen.channels) == 4 and set(chosen.channels) <= set(range(6))  # round(15% of 40) = 6 lowest
        other = select_channels(units, "random-least-static", 10, draw)  # r_S − r_D is lowest at the high indices
        assert set(other.channels) <= set(range(34, 40))
    seen = {c for d in range(50) for c in select_channels(units, "random", 10, d).channels}
    assert len(seen) > 30  # uniform over the live channels, not a fixed subset


def test_a_random_draw_depends_only_on_seed_layer_select_k_and_draw():
    alone = plan({"stage": UNITS}, ["stage"], ["random"], [50.0], 3, seed=7)
    mixed = plan({"stage": UNITS}, ["stage"], ["dynamic", "random", "static"], [25.0, 50.0], 3, seed=7)
    assert [s.channels for s in alone] == [s.channels for s in mixed if s.select == "random" and s.k == 50]
    assert len({s.channels for s in alone}) > 1  # the draws differ
    other_seed = plan({"stage": UNITS}, ["stage"], ["random"], [50.0], 3, seed=8)
    assert [s.channels for s in other_seed] != [s.channels for s in alone]


def test_bad_k_and_selection_names_are_refused_naming_the_argument():
    for bad in ([0], [-5], [100.5], [float("nan")], []):
        with pytest.raises(StlensError, match="`k`"):
            check_k(bad)
    with pytest.raises(StlensError, match="`select`: unknown selection 'dynamc'"):
        check_selections(["dynamic", "dynamc"])
    with pytest.raises(StlensError, match="`draws`"):
        plan({"stage": UNITS}, ["stage"], ["random"], [10.0], 0, 0)


# -------------------------------------------------------------------------------------------------------- masking


class Planted(nn.Module):
    """A layer ``feat`` whose output is the input itself (any shape), then a sum as the 'head'."""

    def __init__(self):
        super().__init__()
        self.feat = nn.Identity()

    def forward(self, x):
        return self.feat(x)


@pytest.mark.parametrize("shape, layout, axis", [
    ((3, 6, 4, 5, 5), "channels_first", 1),
    ((3, 6, 5, 5), "channels_first", 1),
    ((3, 4, 5, 5, 6), "channels_last", 4),
    ((3, 7, 6), "channels_first", 2),  # tokens (B, N, D)
    ((3, 6), "channels_first", 1),
])
@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_masking_changes_exactly_the_selected_channels(shape, layout, axis, mode):
    model = Planted()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) + 3.0
    channels = [1, 4]
    means = torch.arange(6, dtype=torch.float32) * 10 + 0.5
    mask = ChannelMask(Target("feat", "feat"), channels, mode, means if mode == "mean" else None)
    with torch.inference_mode(), masking(model, [mask], lambda _: layout):
        out = model(x)
    kept = [c for c in range(6) if c not in channels]
    assert torch.equal(out.index_select(axis, torch.tensor(kept)), x.index_select(axis, torch.tensor(kept)))
    for c in channels:
        expected = 0.0 if mode == "zero" else float(means[c])
        assert bool((out.select(axis, c) == expected).all())
    assert torch.equal(model(x), x)  # the hook is gone after the block


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.pathways = nn.Identity()

    def forward(self, slow, fast):  # a two-input model whose layer gives a tuple (as SlowFast's pathways)
        both = self.pathways((slow, fast))
        return both[0].mean(dim=(2, 3, 4)) + both[1].mean(dim=(2, 3, 4))


def test_an_element_of_a_tuple_output_of_a_two_input_model_is_masked_alone():
    model = TupleOut()
    slow, fast = torch.ones(2, 4, 2, 3, 3), torch.full((2, 4, 4, 3, 3), 2.0)
    target = find_target(model, "pathways.1")
    assert target == Target("pathways.1", "pathways", 1)
    with torch.inference_mode(), masking(model, [ChannelMask(target, [0, 2])]):
        logits = model(slow, fast)
    # slow (all 1) is untouched; fast (all 2) loses channels 0 and 2: the per-channel sums of the means
    assert torch.equal(logits, torch.tensor([[1.0, 3.0, 1.0, 3.0]] * 2))


def test_a_layer_without_a_channel_axis_or_unknown_is_refused_naming_it():
    with pytest.raises(StlensError, match="layer 'head.out' gives an output of shape \\(4,\\): no channel axis"):
        channel_axis((4,), "channels_first", "head.out")
    with pytest.raises(StlensError, match="layer 'nowhere' is not a module"):
        find_target(Planted(), "nowhere")


def test_another_channel_count_than_the_units_is_refused_naming_the_layer():
    model = Planted()
    mask = ChannelMask(Target("feat", "feat"), [0])
    with pytest.raises(StlensError, match="layer 'feat' has 6 channels but the units.csv of `from_run` lists 8"):
        with torch.inference_mode(), masking(model, [mask], expected={"feat": 8}):
            model(torch.zeros(2, 6, 2, 2, 2))


def test_mean_mode_means_are_the_mean_over_all_clips_and_positions():
    model = Planted()
    rng = np.random.default_rng(3)
    batches = [rng.normal(size=(b, 5, 3, 4, 4)) * 4 + np.arange(5).reshape(1, 5, 1, 1, 1) for b in (3, 2, 4)]
    means = ChannelMeans(model, [Target("feat", "feat")])
    with torch.inference_mode(), means.gathering():
        for batch in batches:
            model(torch.from_numpy(batch).float())
    every = np.concatenate([b.astype(np.float32).astype(np.float64) for b in batches])  # all clips together
    hand = every.transpose(1, 0, 2, 3, 4).reshape(5, -1).mean(axis=1)
    np.testing.assert_allclose(means.means("feat").numpy(), hand, rtol=1e-6)


# -------------------------------------------------------------------------------------------------------- metrics


def test_top1_and_top5_accuracy_by_hand():
    logits = torch.tensor([[0.0, 5, 4, 3, 2, 1, 0.5], [9, 8, 7, 6, 5, 4, 3], [0, 0, 0, 0, 0, 0, 1.0]])
    labels = torch.tensor([1, 6, 6])
    scores = Accuracy(7).scores(logits, labels)
    assert scores["top1"].tolist() == [1.0, 0.0, 1.0]
    assert scores["top5"].tolist() == [1.0, 0.0, 1.0]  # class 6 is 7th for clip 1, 1st for clip 2
    assert Accuracy(5).names == ("top1",)


def test_bootstrap_intervals_resample_clips_and_pair_the_drop():
    base = np.array([1.0, 1, 1, 1, 0, 1, 1, 1])
    masked = np.array([1.0, 0, 1, 0, 0, 1, 0, 1])
    index = bootstrap_indices(8, 2000, seed=0)
    s = summarise(masked, base, index)
    assert s["value"] == 0.5 and s["drop"] == 0.375
    replicates = (base - masked)[index].mean(axis=1)
    assert (s["drop_low"], s["drop_high"]) == tuple(np.percentile(replicates, [2.5, 97.5]))
    assert s["low"] <= s["value"] <= s["high"] and s["drop_low"] <= s["drop"] <= s["drop_high"]
    same = summarise(base, base, index)
    assert same["drop"] == same["drop_low"] == same["drop_high"] == 0.0
