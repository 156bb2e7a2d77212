"""Diving48 start/end segments: every sampler draws its clips inside [start_frame, end_frame) (end exclusive).

The videos are synthetic: frame k is a flat grey of brightness ``BASE + STEP * k``, so the frame index of every
sampled frame can be read back from the pixels of the model inputs (the ``identity`` stylizer keeps them)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stlens.cli import main
from stlens.models.registry import InputSpec
from stlens.pairs.compose import make_pairs
from stlens.pairs.makers import VideoPairs
from stlens.pairs.twostream import TwoStreamPairs, flow_indices
from stlens.video.sources import open_data

LENGTH, BASE, STEP = 40, 10, 6
# Unit mean/std: a model input is the frame / 255, so brightness = 255 × input.
SPEC = InputSpec(frames=4, stride=2, size=16, resize=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory) -> Path:
    """A 40-frame h264 video whose frame k is a flat grey of brightness BASE + STEP × k."""
    import av

    path = tmp_path_factory.mktemp("segments") / "counter.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for k in range(LENGTH):
            frame = np.full((16, 16, 3), BASE + STEP * k, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_numbers(x: torch.Tensor) -> list[int]:
    """The frame index of each of the T frames of a (3, T, H, W) model input (unit mean/std) of the counter video."""
    brightness = x.float().mean(dim=(0, 2, 3)).numpy() * 255.0
    numbers = np.rint((brightness - BASE) / STEP)
    assert np.abs(brightness - (BASE + STEP * numbers)).max() < STEP / 3, brightness  # a clean read
    return numbers.astype(int).tolist()


def diving48(folder: Path, video: Path, segments: list[tuple[int, int] | None]) -> Path:
    """A Diving48 JSON listing one copy of ``video`` per segment (label i for entry i; None: no start/end frames)."""
    items = []
    for i, segment in enumerate(segments):
        name = f"dive_{i:05d}"
        (folder / f"{name}.mp4").write_bytes(video.read_bytes())
        item = {"vid_name": name, "label": i}
        if segment is not None:
            item.update(start_frame=segment[0], end_frame=segment[1])
        items.append(item)
    path = folder / "Diving48_V2_test.json"
    path.write_text(json.dumps(items))
    return path


def test_pairs_lie_inside_the_segments(tmp_path, counter_video):
    segments = [(20, 30), (3, 11), None]
    source = open_data(diving48(tmp_path, counter_video, segments))
    pairs = list(make_pairs(source, SPEC, 9, stylizer="identity", seed=1))
    assert len(pairs) == 18
    by_source: dict[str, set[int]] = {}
    for pair in pairs:
        a, b = frame_numbers(pair.a), frame_numbers(pair.b)
        assert sorted(a) == sorted(b)  # dynamic: same clip; static: the same frames shuffled
        by_source.setdefault(Path(pair.source).stem, set()).update(a)
    assert min(by_source["dive_00000"]) >= 20 and max(by_source["dive_00000"]) < 30
    assert min(by_source["dive_00001"]) >= 3 and max(by_source["dive_00001"]) < 11
    assert max(by_source["dive_00002"]) >= 11  # no segment: the whole video


def test_a_segment_over_the_whole_video_changes_nothing(tmp_path, counter_video):
    plain = list(VideoPairs(open_data(counter_video), SPEC, 3, stylizer="identity", seed=2))
    source = open_data(diving48(tmp_path, counter_video, [(0, LENGTH), (1, 9)]))
    segmented = list(VideoPairs(source, SPEC, 6, stylizer="identity", seed=2))
    for p, q in zip(plain, segmented[:6], strict=True):  # video 0: the same draws as the plain video
        assert p.factor == q.factor and torch.equal(p.a, q.a) and torch.equal(p.b, q.b)
    assert all(1 <= k < 9 for q in segmented[6:] for k in frame_numbers(q.a))  # video 1: inside its segment


def test_a_segment_shorter_than_the_clip_is_skipped_before_shares(tmp_path, counter_video):
    segments = [(5, 7), (12, 24), (38, 60)]  # 2 frames; fine; 2 frames inside the 40-frame video
    source = open_data(diving48(tmp_path, counter_video, segments))
    maker = VideoPairs(source, SPEC, 4, stylizer="identity", seed=0)
    pairs = list(maker)
    assert len(pairs) == 8  # all 4 pairs per factor come from the one usable video
    assert {Path(p.source).stem for p in pairs} == {"dive_00001"}
    assert all(12 <= k < 24 for p in pairs for k in frame_numbers(p.a))
    assert [(Path(s["source"]).stem, s["reason"]) for s in maker.skipped] == [
        ("dive_00000", "its segment [5, 7) is shorter than the clip (2 < 4 frames)"),
        ("dive_00002", "only 2 frames of its segment [38, 60) are in the video (40 frames), fewer than the 4 a clip "
                       "needs"),
    ]


def test_measure_lists_the_skipped_segment(tmp_path, counter_video):
    ann = diving48(tmp_path, counter_video, [(0, 3), (8, 30)])
    out = tmp_path / "out"
    code = main(["measure", "--model", "module:conftest:tiny_video_net", "--data", str(ann), "--frames", "4",
                 "--size", "16", "--pairs", "8", "--bootstrap", "20", "--quiet", "--out", str(out)])
    assert code == 0
    skipped = json.loads((out / "result.json").read_text())["skipped"]
    assert [(Path(s["source"]).stem, s["reason"]) for s in skipped] == [
        ("dive_00000", "its segment [0, 3) is shorter than the clip (3 < 4 frames)")]


def test_two_stream_pairs_and_their_flow_lie_inside_the_segment(tmp_path, counter_video, monkeypatch):
    from stlens.pairs import twostream

    flowed: list[list[int]] = []
    compute_flow = twostream.compute_flow

    def spy(frames, method):
        flowed.append(frame_numbers(torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255.0))
        return compute_flow(frames, method)

    monkeypatch.setattr(twostream, "compute_flow", spy)
    source = open_data(diving48(tmp_path, counter_video, [(25, 36), (2, 5)]))
    for flow_frames in (None, 8):
        flowed.clear()
        maker = TwoStreamPairs(source, SPEC, 3, stylizer="identity", seed=3, flow_method="farneback",
                               flow_frames=flow_frames)
        pairs = list(maker)
        assert len(pairs) == 6 and {Path(p.source).stem for p in pairs} == {"dive_00000"}
        assert all(25 <= k < 36 for p in pairs for x in (p.a[0], p.b[0]) for k in frame_numbers(x))
        assert flowed and all(25 <= k < 36 for ks in flowed for k in ks)
        assert [Path(s["source"]).stem for s in maker.skipped] == ["dive_00001"]
        assert "its segment [2, 5)" in maker.skipped[0]["reason"]


def test_flow_stacks_are_clamped_to_the_segment():
    assert flow_indices(np.array([20, 21, 22, 23]), 40, 6, segment=(20, 30)).tolist() == list(range(20, 27))
    assert flow_indices(np.array([27, 28, 29]), 40, 4, segment=(10, 30)).tolist() == list(range(25, 30))
    assert flow_indices(np.array([10, 12, 14, 16]), 40, 4, segment=None).tolist() == [12, 13, 14, 15, 16]


def test_training_clips_lie_inside_the_segments(tmp_path, counter_video):
    from stlens.video.labelled import open_clips

    ann = diving48(tmp_path, counter_video, [(30, 40), (0, 9), (2, 4)])
    clips = open_clips(str(ann), SPEC)
    assert len(clips) == 2 and clips.labels == (0, 1) and clips.num_classes == 3  # classes of the whole file
    assert [Path(s["source"]).stem for s in clips.skipped] == ["dive_00002"]
    rng = np.random.default_rng(0)
    for _ in range(4):
        inputs, labels = clips.batch(np.array([0, 1]), rng)
        assert labels.tolist() == [0, 1]
        assert all(30 <= k < 40 for k in frame_numbers(inputs[0]))
        assert all(0 <= k < 9 for k in frame_numbers(inputs[1]))


def test_natural_clips_lie_inside_the_segments(tmp_path, counter_video):
    from stlens.visualize.natural import natural_inputs

    ann = diving48(tmp_path, counter_video, [(14, 22), (31, 38)])
    (rgb,) = natural_inputs(str(ann), SPEC, two_stream=False, n=8, seed=0)
    assert len(rgb) == 8
    for clip in rgb:
        numbers = frame_numbers(clip)
        assert all(14 <= k < 22 for k in numbers) or all(31 <= k < 38 for k in numbers), numbers
