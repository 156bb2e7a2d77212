"""``speed`` pairs on synth worlds (read back from the rendering parameters, and a planted speed detector) and user
factors given as a function that makes a pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.pairs.factors import further_pairs, parse_factors, user_factors
from stlens.synth.dataset import open_synth
from stlens.synth.render import shape_mask
from stlens.synth.speed import SpeedPairs, speed_range

WORLD = "synth:motion?split=test&n=16&frames=8&size=32"


def speed_pairs(n: int) -> SpeedPairs:
    return open_synth(WORLD).speed_pairs(InputSpec(frames=8, size=32), n)


def test_a_speed_pair_shares_its_speed_and_nothing_else():
    ps, lo, hi = speed_pairs(6), *speed_range(8, 32)
    assert (lo, hi) == (0.25, 2.0)  # by hand: 0.5·32/64, min(4·32/64, (32 − round(.45·32)))/7 = (32 − 14)/7 → 2
    speeds = []
    for i in range(len(ps)):
        a, b = ps.clips(i)
        assert a.meta["speed"] == b.meta["speed"] and lo <= a.meta["speed"] <= hi
        assert a.meta["direction_deg"] != b.meta["direction_deg"] and a.meta["shape"] != b.meta["shape"]
        assert not {a.meta["object_texture"], a.meta["background_texture"]} & \
            {b.meta["object_texture"], b.meta["background_texture"]}
        for clip in (a, b):  # the object stays whole in every frame, and moves s px/frame on average
            whole = shape_mask(clip.meta["shape"], *clip.meta["box"]).sum()
            assert (clip.masks.sum(axis=(1, 2)) == whole).all()
            step = np.linalg.norm(clip.positions[-1] - clip.positions[0]) / 7
            assert abs(step - clip.meta["speed"]) <= 0.75 / 7 * 2
        speeds.append(a.meta["speed"])
        pair = ps[i]
        assert pair.factor == 2 and pair.a.shape == pair.b.shape == (3, 8, 32, 32)
    assert max(speeds) - min(speeds) > 0.5  # drawn over the range, not one speed


def test_a_planted_speed_channel_is_read_as_speed():
    # channel 0: mean absolute frame difference (grows with speed); channel 1: mean intensity (textures only)
    ps = speed_pairs(32)
    feats = []
    for i in range(len(ps)):
        pair = ps.clips(i)
        feats.append([(np.abs(np.diff(c.frames.astype(float), axis=0)).mean(), c.frames.mean()) for c in pair])
    z = np.asarray(feats)  # (N, 2 clips, 2 channels)
    a, b = z[:, 0], z[:, 1]
    mu = np.concatenate([a, b]).mean(axis=0)
    r = ((a - mu) * (b - mu)).mean(axis=0) / np.concatenate([a, b]).var(axis=0)
    assert r[0] > 0.3 and r[0] > r[1] + 0.3, r


def test_speed_needs_a_synth_world():
    with pytest.raises(StlensError, match="`factors`: speed needs a synth: world, whose ground truth gives the speed"):
        further_pairs("speed", object(), InputSpec(), 4, 0, 2)
    with pytest.raises(StlensError, match="`factors`"):
        parse_factors(["dynamic", "static", ("speed", lambda i, rng: None)])  # a built-in name
    with pytest.raises(StlensError, match="`factors`"):
        user_factors(["dynamic", "static", ("x", 3)])


def test_speed_and_a_user_factor_in_a_measurement(tmp_path):
    import csv

    import stlens

    def same(i: int, rng: np.random.Generator):  # one noise clip twice: r = 1 on every channel
        x = torch.from_numpy(rng.normal(size=(3, 4, 32, 32))).float()
        return x, x

    stlens.measure("stlens:i3d?classes=8", "synth:motion?split=test&n=8&frames=4&size=32", "default",
                            pairs=4, frames=4, size=32, bootstrap=0, factors=["dynamic", "static", "speed",
                                                                               ("same", same)],
                            workers=0, progress=False, device="cpu", out=tmp_path / "run")
    with (tmp_path / "run" / "units.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[-2:] == ["r_speed", "r_same"]
    r_same = np.array([float(r["r_same"]) for r in rows])  # 1, or 0 where a unit is silent on the noise clips
    assert np.all(np.isclose(r_same, 1.0, atol=1e-5) | (r_same == 0)) and np.isclose(r_same, 1.0).mean() > 0.5
    doc = (tmp_path / "run" / "result.json").read_text()
    assert '"speed": 4' in doc and '"same": 4' in doc
    config = (tmp_path / "run" / "config.json").read_text()
    assert "dynamic,static,speed,same" in config
