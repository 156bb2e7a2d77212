"""Indexable pair sources (groundwork for pair making in worker processes): ``ps[k]`` is pair k alone, equal to the
k-th pair of iteration, in any order, after pickling and in ``DataLoader`` workers; a video is decoded once per
process when its pairs are visited in order."""

from __future__ import annotations

import pickle
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stlens.core.pair import DYNAMIC, STATIC, Pair
from stlens.core.source import PairSource
from stlens.errors import StlensError
from stlens.models.registry import InputSpec
from stlens.pairs import makers, stylized
from stlens.pairs.compose import make_pairs
from stlens.pairs.makers import VideoPairs
from stlens.pairs.stylized import StylizedPairs
from stlens.pairs.twostream import TwoStreamPairs
from stlens.synth import SynthPairs, open_synth
from stlens.video.sources import open_data

SPEC = InputSpec(frames=4, stride=2, size=32, resize=36)
RAW = InputSpec(frames=4, stride=1, size=16, resize=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
SYNTH = InputSpec(frames=8, size=32, resize=32)


def same_input(x, y) -> bool:
    if isinstance(x, tuple):
        return isinstance(y, tuple) and len(x) == len(y) and all(map(same_input, x, y))
    return isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)


def same_pairs(first: list[Pair], second: list[Pair]) -> bool:
    return len(first) == len(second) and all(
        p.factor == q.factor and p.source == q.source and same_input(p.a, q.a) and same_input(p.b, q.b)
        for p, q in zip(first, second, strict=True))


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory, small_video) -> Path:
    """Three copies of the real clip (so three videos with their own shares) and a broken file (skipped)."""
    folder = tmp_path_factory.mktemp("videos")
    for name in ("a.mp4", "b.mp4", "d.mp4"):
        (folder / name).write_bytes(small_video.read_bytes())
    (folder / "c_broken.mp4").write_bytes(b"not a video")
    return folder


@pytest.fixture(scope="module")
def stylized_root(tmp_path_factory) -> Path:
    """Two videos in three styles (flat frames coding frame and style, as in test_stylize) and one missing in a
    style (skipped)."""
    root = tmp_path_factory.mktemp("stylized")
    for k in (1, 2, 3):
        for v, video in enumerate(("a", "b")):
            folder = root / f"style_{k}" / video
            folder.mkdir(parents=True)
            for t in range(9):
                Image.fromarray(np.full((16, 16, 3), 20 * t + 3 * k + v, np.uint8)).save(folder / f"f_{t:03d}.jpg")
    (root / "style_1" / "c_missing").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "style_1" / "c_missing" / "f_000.jpg")
    return root


def sources(kind: str, video_dir: Path, stylized_root: Path) -> PairSource:
    if kind == "folder":
        return make_pairs(open_data(video_dir), SPEC, 5, seed=4)
    if kind == "sample":
        return make_pairs(open_data("sample:"), SPEC, 2, stylizer="palette,fourier", seed=1)  # 2 videos decoded
    if kind == "stylized":
        return make_pairs(open_data(f"stylized:{stylized_root}"), RAW, 5, seed=2)
    if kind == "twostream":
        return make_pairs(open_data(video_dir), SPEC, 3, seed=5, flow="dis")
    if kind == "synth":
        return make_pairs(open_synth("synth:motion?n=3&frames=8&size=32&seed=1"), SYNTH, 4, seed=6)
    if kind == "synth-flow-styled":
        return make_pairs(open_synth("synth:motion?n=3&frames=8&size=32&seed=1"), SYNTH, 3, stylizer="palette",
                          seed=6, flow="dis")
    raise AssertionError(kind)


KINDS = ["folder", "sample", "stylized", "twostream", "synth", "synth-flow-styled"]
TYPES = {"folder": VideoPairs, "sample": VideoPairs, "stylized": StylizedPairs, "twostream": TwoStreamPairs,
         "synth": SynthPairs, "synth-flow-styled": SynthPairs}


@pytest.mark.parametrize("kind", KINDS)
def test_indexing_equals_iteration_in_any_order_and_after_pickling(kind, video_dir, stylized_root):
    iterated = list(sources(kind, video_dir, stylized_root))
    ps = sources(kind, video_dir, stylized_root)
    assert type(ps) is TYPES[kind] and isinstance(ps, PairSource)
    assert ps.plan() is ps and len(ps) == len(iterated)
    assert [p.factor for p in iterated] == [DYNAMIC, STATIC] * (len(iterated) // 2)
    assert same_pairs([ps[k] for k in range(len(ps))], iterated)
    assert same_pairs(list(ps), iterated)  # iterating again (planned once) gives the same pairs
    order = list(range(len(ps)))
    random.Random(0).shuffle(order)
    shuffled = sources(kind, video_dir, stylized_root).plan()
    assert same_pairs([shuffled[k] for k in order], [iterated[k] for k in order])
    assert same_pairs([ps[-1]], iterated[-1:])
    with pytest.raises(IndexError):
        ps[len(ps)]
    clone = pickle.loads(pickle.dumps(ps))
    assert clone.skipped == ps.skipped and len(clone) == len(ps)
    assert same_pairs([clone[k] for k in reversed(range(len(ps)))], iterated[::-1])
    spans = ps.spans()
    assert [k for span in spans for k in span] == list(range(len(ps)))
    assert all(len({iterated[k].source for k in span}) == 1 for span in spans)


def test_the_plan_probes_once_and_fills_skipped(video_dir, stylized_root, monkeypatch):
    ps = make_pairs(open_data(video_dir), SPEC, 5, seed=4)
    probed = Counter()
    probe = makers.probe_clip_source
    monkeypatch.setattr(makers, "probe_clip_source", lambda path, *a, **k: probed.update([Path(path).name])
                        or probe(path, *a, **k))
    assert len(ps) == 10 and ps.plan() is ps and len(ps) == 10
    assert probed == Counter({"a.mp4": 1, "b.mp4": 1, "c_broken.mp4": 1, "d.mp4": 1})
    assert [Path(s["source"]).name for s in ps.skipped] == ["c_broken.mp4"]
    assert [len(span) for span in ps.spans()] == [4, 4, 2]  # shares 2, 2, 1 over the three usable videos
    clone = pickle.loads(pickle.dumps(ps))
    list(clone)
    assert sum(probed.values()) == 4  # the plan travelled with the pickle: nothing probed again
    styled = make_pairs(open_data(f"stylized:{stylized_root}"), RAW, 5)
    assert [Path(s["source"]).name for s in styled.plan().skipped] == ["c_missing"]


@pytest.mark.parametrize("kind", ["folder", "sample", "stylized", "twostream"])
def test_each_video_is_decoded_once_when_visited_in_order(kind, video_dir, stylized_root, monkeypatch):
    decoded = Counter()
    for module, name in ((makers, "open_clip_source"), (stylized, "open_clip_source")):  # clip reads, every style
        read = getattr(module, name)
        monkeypatch.setattr(module, name, lambda path, *a, _read=read, **k: decoded.update(
            [Path(path).name]) or _read(path, *a, **k))
    ps = sources(kind, video_dir, stylized_root).plan()
    decoded.clear()  # (a probe may decode a video whose frame count is only estimated)
    pairs = [ps[k] for k in range(len(ps))]
    videos = Counter(Path(p.source).name for p in pairs)
    per_video = 3 if kind == "stylized" else 1  # a stylized video is read once in each of its 3 styles
    assert decoded == Counter({name: per_video for name in videos})
    assert ps._cache is not None and ps._cache[0] == ps._plan[-1].video  # at most the last video is kept
    decoded.clear()
    list(ps)
    assert decoded == Counter({name: per_video for name in videos}) and ps._cache is None  # let go after iterating
    decoded.clear()
    clone = pickle.loads(pickle.dumps(ps))  # the decoded video is not pickled: decoded again, once
    assert clone._cache is None
    [clone[k] for k in range(len(clone))]
    assert decoded == Counter({name: per_video for name in videos})


def test_a_video_that_fails_to_decode_after_the_plan_is_named(video_dir, monkeypatch):
    ps = make_pairs(open_data(video_dir), SPEC, 5, seed=4).plan()
    first = ps[0]
    read = makers.open_clip_source

    def fail_on_b(path, *args, **kwargs):
        if Path(path).name == "b.mp4":
            raise StlensError(f"{path}: cannot decode (damaged)")
        return read(path, *args, **kwargs)

    monkeypatch.setattr(makers, "open_clip_source", fail_on_b)
    with pytest.raises(StlensError, match=r"b\.mp4: cannot decode.*passed the first check"):
        ps[4]
    assert same_pairs([ps[1], ps[0]], [pickle.loads(pickle.dumps(ps))[1], first])  # other videos still work


def test_pickling_drops_the_decoded_video_and_the_stylizer_functions(video_dir):
    stylizer = "module:stlens.video.stylizers:palette"  # wrapped in a closure by get_stylizer: it does not pickle
    ps = make_pairs(open_data(video_dir), SPEC, 5, stylizer=stylizer, seed=4)
    first = ps[0]
    state = ps.__getstate__()
    assert state["_cache"] is None and state["_stylizer_list"] is None and state["_plan"] is not None
    clone = pickle.loads(pickle.dumps(ps))
    assert same_pairs([clone[0]], [first])
    synth = make_pairs(open_synth("synth:motion?n=3&frames=8&size=32"), SYNTH, 2, stylizer=stylizer)
    assert same_pairs([pickle.loads(pickle.dumps(synth))[3]], [synth[3]])


def collate_pairs(batch: list[Pair]) -> list[Pair]:
    return batch


@pytest.mark.parametrize("kind", ["folder", "twostream", "synth"])
def test_a_dataloader_with_two_workers_gives_the_pairs_of_iteration(kind, video_dir, stylized_root):
    iterated = list(sources(kind, video_dir, stylized_root))
    ps = sources(kind, video_dir, stylized_root).plan()  # in the parent: the workers get the plan
    single = torch.utils.data.DataLoader(ps, batch_size=None, num_workers=2)
    assert same_pairs(list(single), iterated)
    batched = torch.utils.data.DataLoader(ps, batch_size=3, num_workers=2, collate_fn=collate_pairs)
    assert same_pairs([p for batch in batched for p in batch], iterated)


def test_a_decoding_error_in_a_worker_stays_a_stlens_error_naming_the_video(video_dir, monkeypatch):
    ps = make_pairs(open_data(video_dir), SPEC, 5, seed=4).plan()
    read = makers.open_clip_source

    def fail_on_d(path, *args, **kwargs):
        if Path(path).name == "d.mp4":
            raise StlensError(f"{path}: cannot decode (damaged)")
        return read(path, *args, **kwargs)

    monkeypatch.setattr(makers, "open_clip_source", fail_on_d)  # inherited by the forked workers
    loader = torch.utils.data.DataLoader(ps, batch_size=None, num_workers=2, multiprocessing_context="fork")
    with pytest.raises(StlensError, match=r"d\.mp4: cannot decode"):
        list(loader)


@pytest.mark.slow
def test_a_dataloader_under_spawn_gives_the_pairs_of_iteration(video_dir):
    iterated = list(make_pairs(open_data(video_dir), SPEC, 5, seed=4))
    ps = make_pairs(open_data(video_dir), SPEC, 5, seed=4).plan()
    loader = torch.utils.data.DataLoader(ps, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    assert same_pairs(list(loader), iterated)
