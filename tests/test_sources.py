"""Data sources join through the registry, satisfy the clip-source protocol, and make pairs through one dispatcher;
one sampling function (``sample_clip``) for every reader of videos."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import stlens
from stlens.core import registry
from stlens.core.pair import Pair
from stlens.core.source import ClipSource, PairSource
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.pairs.compose import make_pairs
from stlens.pairs.quality import sample_clips
from stlens.pairs.stylize import stylize_source
from stlens.synth import SynthDataset, SynthPairs
from stlens.video.sampling import centre_crop, clip_indices, sample_clip
from stlens.video.source import VideoSource
from stlens.video.sources import open_data

SPEC = InputSpec(frames=4, stride=2, size=32, resize=36)


def test_the_sources_register_their_prefixes():
    assert set(registry.names("data")) >= {"ann", "sample", "stylized", "synth"}
    assert stlens.make_pairs is make_pairs


def test_open_data_dispatches_through_the_registry(monkeypatch):
    opened = []

    def open_mine(spec: str) -> VideoSource:
        opened.append(spec)
        return VideoSource(spec, ())

    monkeypatch.setitem(registry.DATA_SOURCES, "mine", f"{__name__}:_opener")
    monkeypatch.setitem(globals(), "_opener", open_mine)
    source = open_data("mine:anything?x=1")
    assert opened == ["mine:anything?x=1"] and source.spec == "mine:anything?x=1"
    with pytest.raises(StlensError, match="data source not found"):
        open_data("unregistered:thing")


def test_video_and_synth_sources_satisfy_the_protocol():
    video = open_data("sample:")
    synth = open_data("synth:motion?n=3")
    for source in (video, synth):
        assert isinstance(source, ClipSource)
        assert len(source) > 0 and source.missing == () and source.name(0)
    assert video.name(0) == str(video.videos[0])
    assert synth.name(2) == "synth:motion/train/000002" and len(synth.labels) == 3
    for placeholder in ("videos", "segments", "styles"):  # VideoSource's own fields, which synth clips do not have
        assert not hasattr(synth, placeholder)


def test_make_pairs_asks_a_source_for_its_own_pairs():
    @dataclass
    class Own:
        spec: str = "own:"
        labels: tuple = ()
        missing: tuple = ()
        calls: list | None = None

        def __len__(self) -> int:
            return 1

        def name(self, index: int) -> str:
            return "own"

        def make_pairs(self, spec, pairs, **options):
            self.calls = [(spec, pairs, options)]
            return "made"

    own = Own()
    assert make_pairs(own, SPEC, 3, seed=5, flow="dis") == "made"
    assert own.calls == [(SPEC, 3, {"stylizer": None, "seed": 5, "flow": "dis", "flow_cache": None})]


def test_synth_pairs_come_from_the_dataset_itself():
    ds = SynthDataset("motion", n=4, frames=4, size=32)
    pairs = stlens.make_pairs(ds, SPEC, 2, seed=1)
    assert isinstance(pairs, SynthPairs) and isinstance(pairs, PairSource) and pairs.stylizer == "rerender"
    first = next(iter(pairs))
    assert isinstance(first, Pair) and first.source == ds.name(0)


def test_a_source_without_videos_or_pair_maker_is_refused_clearly():
    @dataclass
    class Bare:
        spec: str = "bare:"
        labels: tuple = ()
        missing: tuple = ()

        def __len__(self) -> int:
            return 1

        def name(self, index: int) -> str:
            return "bare"

    with pytest.raises(StlensError, match="bare:: making pairs needs videos"):
        make_pairs(Bare(), SPEC, 2)
    synth = open_data("synth:motion?n=3")
    with pytest.raises(StlensError, match="pairs check needs videos"):
        list(sample_clips(synth, 2, 4, 2, 32, 0))


def test_stylize_refuses_synthetic_data(tmp_path):
    with pytest.raises(StlensError, match="stylize needs videos"):
        stylize_source("synth:motion?n=3", "palette", 2, tmp_path / "out")


def test_sample_clip_is_the_chain_it_replaces():
    frames = np.random.default_rng(0).integers(0, 256, size=(30, 40, 50, 3), dtype=np.uint8)
    for segment in (None, (5, 20)):
        idx, clip = sample_clip(frames, SPEC, np.random.default_rng(7), segment=segment)
        old = clip_indices(len(frames), SPEC.frames, SPEC.stride, np.random.default_rng(7), segment=segment)
        assert np.array_equal(idx, old) and np.array_equal(clip, centre_crop(frames[old], SPEC.size))
    # random crop: drawn after the start, top then left (as training's augmentation drew it)
    rng, again = np.random.default_rng(3), np.random.default_rng(3)
    _, cropped = sample_clip(frames, SPEC, rng, random_crop=True)
    old = frames[clip_indices(len(frames), SPEC.frames, SPEC.stride, again)]
    top, left = int(again.integers(0, 40 - 32 + 1)), int(again.integers(0, 50 - 32 + 1))
    assert np.array_equal(cropped, old[:, top:top + 32, left:left + 32])
    assert rng.integers(1000) == again.integers(1000)  # the same number of draws
    # several styles of one video stacked in front: every style at the same frames
    styles = np.stack([frames, 255 - frames])
    idx, both = sample_clip(styles, SPEC, np.random.default_rng(9))
    assert both.shape == (2, 4, 32, 32, 3)
    assert np.array_equal(both[1], centre_crop(styles[1, idx], SPEC.size))
    assert sample_clip(frames[:3], SPEC, np.random.default_rng(0)) is None
