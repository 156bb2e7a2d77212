"""The measurement is right where the truth is known: planted latents (analytic answer) and CI coverage."""

from __future__ import annotations

import numpy as np
import pytest

from stlens.measure.simulate import PlantedWorld, ci_coverage, simulate_run


def test_population_scores_by_hand_on_a_two_channel_world():
    world = PlantedWorld(channels=3, motion_channels=1, appearance_channels=1, code_dims=1, noise=1.0)
    motion, appearance = world.loadings()
    m, a = motion[0, 0] ** 2, appearance[1, 0] ** 2
    total = m + 1 + a + 1 + 1  # three channels, each with unit noise variance
    assert world.population_scores() == pytest.approx((m / total, a / total))


@pytest.mark.parametrize("world", [PlantedWorld(), PlantedWorld(motion_channels=80, appearance_channels=8, seed=3),
                                   PlantedWorld(motion_channels=4, appearance_channels=100, noise=0.2, seed=5)])
def test_estimator_recovers_the_planted_percentages(world):
    expected = world.population_percent()
    found = simulate_run(world, pairs=20_000, bootstrap=0, seed=1)["percent"]
    step = 100 / world.channels  # one dim; the floor in dims may flip at a boundary
    for key in ("dynamic", "static"):
        assert abs(found[key] - expected[key]) <= step + 1e-9


def test_more_motion_channels_give_more_dynamic_dims():
    low = PlantedWorld(motion_channels=8).population_percent()["dynamic"]
    high = PlantedWorld(motion_channels=64).population_percent()["dynamic"]
    assert high > low + 5


def test_bootstrap_intervals_cover_the_population_value():
    coverage = ci_coverage(PlantedWorld(), pairs=100, runs=100, bootstrap=200)
    assert coverage["coverage_dynamic"] >= 0.9
    assert coverage["coverage_static"] >= 0.9
    assert np.isfinite(coverage["mean_width_dynamic"]) and coverage["mean_width_dynamic"] > 0
