"""The ``shortcut`` option of synth worlds: a corner cue whose colour gives the class, lying in 1 − P of the clips."""

from __future__ import annotations

import numpy as np
import pytest

from stlens.errors import StlensError
from stlens.synth import open_synth
from stlens.synth.shortcut import CUE_COLOURS, cue_rng


def _lies_expected(seed: int, n: int, p: float) -> int:
    return sum(cue_rng(seed, "train", i).random() >= p for i in range(n))


def test_cue_has_the_right_colour_box_and_lies_in_one_minus_p_of_clips():
    ds = open_synth("synth:motion?n=200&frames=4&size=32&seed=3&shortcut=0.8")
    assert ds.spec.endswith("&shortcut=0.8") and ds.canonical_spec.endswith("&shortcut=0.8")
    cues = [ds.describe(i)["cue"] for i in range(len(ds))]
    lies = sum(c["lies"] for c in cues)
    assert lies == _lies_expected(3, 200, 0.8) and 25 <= lies <= 55  # ≈ 40 of 200
    for cue, label in zip(cues, ds.labels, strict=True):
        assert (cue["class"] != label) == cue["lies"]
        assert cue["box"] == [0, 0, 3, 3]  # 6 px at 64 px → 3 px at 32 px
    for i in (0, 1, 2):
        clip = ds[i]
        assert (clip.frames[:, :3, :3] == CUE_COLOURS[cues[i]["class"]]).all()
        assert not clip.masks[:, :3, :3].any()


def test_other_pixels_and_defaults_are_unchanged():
    plain = open_synth("synth:motion?n=8&frames=4&size=32&seed=1")
    cued = open_synth("synth:motion?n=8&frames=4&size=32&seed=1&shortcut=1")
    assert "shortcut" not in plain.spec and "cue" not in plain.describe(0)
    for i in range(8):
        a, b = plain[i], cued[i]
        assert a.label == b.label
        assert np.array_equal(a.frames[:, 3:], b.frames[:, 3:])
        assert np.array_equal(a.frames[:, :, 3:], b.frames[:, :, 3:])
        assert cued.describe(i)["cue"]["lies"] is False
    for i in range(8):  # shortcut=None: the cue step leaves the rendering bit-identical
        raw = plain._render_clip(i, None)
        clip = plain[i]
        assert np.array_equal(raw.frames, clip.frames) and np.array_equal(raw.masks, clip.masks)


def test_segment_world_with_a_cue_and_zero_shortcut_always_lies():
    ds = open_synth("synth:motion?n=6&frames=3&size=32&task=segment&distractor=1&flow=truth&shortcut=0")
    for i in range(6):
        clip = ds[i]
        assert clip.meta["cue"]["lies"] is True
        assert not clip.masks[:, :3, :3].any() and not clip.distractor_masks[:, :3, :3].any()


@pytest.mark.parametrize("value", ["1.5", "-0.1", "x"])
def test_bad_shortcut_is_refused(value):
    with pytest.raises(StlensError, match="shortcut"):
        open_synth(f"synth:motion?n=2&shortcut={value}")
