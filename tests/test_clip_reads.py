"""Clip reads (``open_clip_source``): only the frames a clip needs are decoded, and they are those of a whole decode
(``read_clip_source``) bit for bit — on videos with B-frames and short or long keyframe intervals, on frame folders,
in any order, after a fork — so that the pairs do not change with the way a video is read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_mp4
from PIL import Image

from stlens.models.registry import InputSpec
from stlens.pairs import makers
from stlens.pairs.compose import make_pairs
from stlens.video import io
from stlens.video.io import ClipFrames, ClipReadError, open_clip_source, read_clip_source
from stlens.video.sources import open_data, sample_videos

SPEC = InputSpec(frames=4, stride=2, size=32, resize=36)


def write_gop(path: Path, frames: np.ndarray, gop: int) -> Path:
    """An h264 mp4 with a keyframe every ``gop`` frames and x264's B-frames."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.gop_size = gop
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory, small_video) -> Path:
    """A folder with the small clip (x264's defaults: one keyframe), the same frames with a keyframe every 8 frames,
    and as a folder of PNG frames."""
    folder = tmp_path_factory.mktemp("clipreads")
    whole = read_clip_source(small_video)
    (folder / "a.mp4").write_bytes(small_video.read_bytes())
    write_gop(folder / "b_gop8.mp4", whole, 8)
    frames = folder / "c_frames"
    frames.mkdir()
    for t, frame in enumerate(whole):
        Image.fromarray(frame).save(frames / f"f_{t:03d}.png")
    return folder


def kinds(videos: Path) -> list[Path]:
    return [videos / "a.mp4", videos / "b_gop8.mp4", videos / "c_frames",
            next(p for p in sample_videos() if p.stem == "bikes")]  # 250 frames, 6 keyframes, B-frames


def test_clip_reads_are_the_frames_of_a_whole_decode(videos):
    rng = np.random.default_rng(0)
    for path in kinds(videos):
        whole = read_clip_source(path, short_side=36)
        frames = open_clip_source(path, short_side=36)
        assert isinstance(frames, ClipFrames) and frames.shape == whole.shape and len(frames) == len(whole)
        for _ in range(6):  # clips in random order: seeks back and forth, and on from where the decoder is
            start = int(rng.integers(0, len(whole) - 7))
            idx = start + 2 * np.arange(4)
            assert np.array_equal(frames[idx], whole[idx]), (path.name, start)
        order = rng.permutation(len(whole))
        assert np.array_equal(frames[order], whole[order]), path.name  # every frame, some kept, some decoded
        fresh = open_clip_source(path, short_side=36)
        assert np.array_equal(fresh[np.arange(len(whole))[::-1]], whole[::-1]) and np.array_equal(fresh[3], whole[3])
        frames.close()
        fresh.close()


def test_pairs_are_those_of_a_whole_decode(videos, monkeypatch):
    """End to end: the pairs (RGB and two-stream) from clip reads equal those from whole decodes."""
    def pairs():
        return [list(make_pairs(open_data(str(videos)), SPEC, 6, seed=3)),
                list(make_pairs(open_data(str(videos)), SPEC, 3, seed=5, flow="dis"))]

    clip_read = pairs()
    monkeypatch.setattr(makers, "open_clip_source", read_clip_source)  # as before: every video decoded whole
    whole = pairs()
    for ours, theirs in zip(clip_read, whole, strict=True):
        assert len(ours) == len(theirs) > 0
        for p, q in zip(ours, theirs, strict=True):
            a, b = (p.a, p.b) if isinstance(p.a, torch.Tensor) else (torch.cat([x.flatten() for x in p.a]),
                                                                       torch.cat([x.flatten() for x in p.b]))
            c, d = (q.a, q.b) if isinstance(q.a, torch.Tensor) else (torch.cat([x.flatten() for x in q.a]),
                                                                       torch.cat([x.flatten() for x in q.b]))
            assert p.source == q.source and p.factor == q.factor and torch.equal(a, c) and torch.equal(b, d)


def test_a_frame_that_does_not_come_out_of_a_seek_falls_back_to_a_whole_decode(videos, monkeypatch):
    expected = list(make_pairs(open_data(str(videos)), SPEC, 4, seed=1))

    def fail(self, indices):
        raise ClipReadError("frame missing after a seek")

    monkeypatch.setattr(io._VideoFrames, "_read", fail)
    fallen = list(make_pairs(open_data(str(videos)), SPEC, 4, seed=1))
    assert all(torch.equal(p.a, q.a) and torch.equal(p.b, q.b) for p, q in zip(expected, fallen, strict=True))


def test_a_truncated_video_is_decoded_whole(tmp_path, small_video):
    whole = write_mp4(tmp_path / "whole.mp4", read_clip_source(small_video), faststart=True)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])  # its header still counts 40 frames: fewer packets than that
    frames = open_clip_source(cut, partial=True)
    assert isinstance(frames, np.ndarray) and np.array_equal(frames, read_clip_source(cut, partial=True))


def test_a_forked_child_reads_a_video_its_parent_opened(videos):
    """A worker forked while its parent holds a video open (a frame-threaded decoder) opens the file again."""
    path = videos / "b_gop8.mp4"
    whole = read_clip_source(path, short_side=36)
    frames = open_clip_source(path, short_side=36)
    assert np.array_equal(frames[[20, 22]], whole[[20, 22]])
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 when its reads are right
        ok = np.array_equal(frames[[5, 20, 33]], whole[[5, 20, 33]])
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert np.array_equal(frames[[30, 1]], whole[[30, 1]])  # the parent's decoder goes on


@pytest.mark.parametrize("spec", [SPEC, InputSpec(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
                                  InputSpec(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))])
def test_model_inputs_by_table_are_those_of_the_float_arithmetic(spec):
    """``to_model_input`` looks uint8 values up in a table: the numbers of (x/255 − mean)/std, bit for bit."""
    from stlens.video.sampling import _normalize, to_model_input

    rng = np.random.default_rng(1)
    video = rng.integers(0, 256, (5, 40, 48, 3), dtype=np.uint8)
    video[1] = np.arange(40 * 48 * 3).reshape(40, 48, 3) % 256  # every value in every channel
    crop = video[:, 3:35, 5:37]  # a view, as sample_clip gives
    for frames in (video, crop):
        assert torch.equal(to_model_input(frames, spec), _normalize(frames, tuple(spec.mean), tuple(spec.std)))


def test_a_video_longer_than_max_frames_is_read_from_its_first_packets():
    """Past ``max_frames`` only a margin of packets is demuxed; the frames are still those of a whole decode."""
    bikes = next(p for p in sample_videos() if p.stem == "bikes")
    whole = read_clip_source(bikes, short_side=36, max_frames=30)
    frames = open_clip_source(bikes, short_side=36, max_frames=30)
    assert isinstance(frames, ClipFrames) and frames.shape == whole.shape
    assert len(frames._packets) == 30 + io._REORDER
    assert np.array_equal(frames[np.arange(30)[::-1]], whole[::-1])


def labelled_videos(videos: Path, root: Path) -> str:
    """``classes:ROOT`` of the mp4s of ``kinds``: the small clip and its keyframe-every-8 copy, and a sample video."""
    import shutil

    for cls, paths in (("mp4", kinds(videos)[:2]), ("more", [kinds(videos)[3]])):
        (root / cls).mkdir(parents=True)
        for path in paths:
            shutil.copy(path, root / cls / path.name)
    return f"classes:{root}"


@pytest.mark.parametrize("augment", [False, True])
def test_labelled_clips_are_those_of_a_whole_decode(videos, tmp_path, monkeypatch, augment):
    """Evaluate, perturb, selectivity and train draw labelled clips: read clip by clip, they are the clips of a whole
    decode (random crops too), and a frame that does not come out of a seek falls back to a whole decode."""
    from stlens.video import labelled

    spec = SPEC
    data = labelled_videos(videos, tmp_path / "root")

    def draws() -> list[torch.Tensor]:
        clips = labelled.open_clips(data, spec, augment=augment)
        rng = np.random.default_rng(7)
        return [clips.batch(np.array([0, 1, 2, 0, 2]), rng)[0] for _ in range(3)]

    clip_read = draws()
    with monkeypatch.context() as patch:
        patch.setattr(labelled, "open_clip_source", read_clip_source)  # as before: every video decoded whole
        whole = draws()
    assert all(torch.equal(a, b) for a, b in zip(clip_read, whole, strict=True))

    def fail(self, indices):
        raise ClipReadError("frame missing after a seek")

    monkeypatch.setattr(io._VideoFrames, "_read", fail)
    assert all(torch.equal(a, b) for a, b in zip(draws(), whole, strict=True))


def test_playback_pairs_are_those_of_a_whole_decode(videos, monkeypatch):
    """The playback factor's pairs (two strides around one centre frame) from clip reads, and after a fallback to a
    whole decode, equal those of whole decodes."""
    from stlens.pairs import factors

    def pairs() -> list:
        made = factors.PlaybackPairs(open_data(str(videos)), SPEC, 6, seed=2)
        return [made[i] for i in range(len(made))]

    clip_read = pairs()
    with monkeypatch.context() as patch:
        patch.setattr(factors, "open_clip_source", read_clip_source)  # as before: every video decoded whole
        whole = pairs()

    def same(ours: list, theirs: list) -> bool:
        return all(p.source == q.source and torch.equal(p.a, q.a) and torch.equal(p.b, q.b)
                   for p, q in zip(ours, theirs, strict=True))

    assert len(clip_read) == 6 and same(clip_read, whole)
    assert not torch.equal(whole[0].a, whole[0].b)

    def fail(self, indices):
        raise ClipReadError("frame missing after a seek")

    monkeypatch.setattr(io._VideoFrames, "_read", fail)
    assert same(pairs(), whole)


def test_stylized_pairs_are_those_of_a_whole_decode(tmp_path, monkeypatch):
    """Pre-stylized videos (``stylized:``, every style a frame folder) read clip by clip give the pairs of whole
    decodes, also after a fallback to a whole decode."""
    import stlens
    from stlens.pairs import stylized

    root = tmp_path / "styled"
    stlens.stylize("sample:", stylizer="palette", styles=3, out=root, short_side=40, frames_max=24, workers=0,
                   progress=False)

    def pairs() -> list:
        return list(stylized.StylizedPairs(open_data(f"stylized:{root}"), SPEC, 5, seed=4))

    clip_read = pairs()
    with monkeypatch.context() as patch:
        patch.setattr(stylized, "open_clip_source", read_clip_source)  # as before: every style decoded whole
        whole = pairs()

    def same(ours: list, theirs: list) -> bool:
        return all(p.source == q.source and p.factor == q.factor and torch.equal(p.a, q.a) and torch.equal(p.b, q.b)
                   for p, q in zip(ours, theirs, strict=True))

    assert len(clip_read) == 10 and same(clip_read, whole)

    def fail(self, indices):
        raise ClipReadError("frame missing")

    monkeypatch.setattr(io._FolderFrames, "_read", fail)
    assert same(pairs(), whole)
