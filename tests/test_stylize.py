"""``stlens stylize`` (layout, resume, same style on every video) and pairs from ``stylized:ROOT``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from stlens.cli import main
from stlens.core.pair import DYNAMIC, STATIC
from stlens.errors import StlensError
from stlens.models.registry import InputSpec
from stlens.pairs.compose import make_pairs
from stlens.pairs.stylize import stylize_source, video_names
from stlens.pairs.stylized import StylizedPairs
from stlens.video.io import read_frame_folder
from stlens.video.sources import open_data

RAW = InputSpec(frames=4, stride=1, size=16, resize=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def stylized_root(tmp_path_factory, small_video):
    """Two copies of the real clip and a broken file, stylized in 2 styles by ``stlens stylize``."""
    data = tmp_path_factory.mktemp("data")
    for name in ("a.mp4", "b.mp4"):
        (data / name).write_bytes(small_video.read_bytes())
    (data / "broken.mp4").write_bytes(b"not a video")
    root = tmp_path_factory.mktemp("stylized") / "root"
    argv = ["stylize", "--data", str(data), "--stylizer", "fourier,npr", "--styles", "2", "--out", str(root),
            "--frames-max", "12", "--short-side", "40", "--seed", "3"]
    assert main([*argv, "--quiet"]) == 0
    return data, root, argv


def test_stylize_writes_the_layout(stylized_root):
    _, root, _ = stylized_root
    for k in (1, 2):
        for video in ("a", "b"):
            files = sorted(p.name for p in (root / f"style_{k}" / video).iterdir())
            assert files == [f"frame_{t:05d}.jpg" for t in range(1, 13)]
    assert not (root / "style_1" / "broken").exists()
    config = json.loads((root / "stylize.json").read_text())
    assert config["styles"] == 2 and config["stylizer"] == "fourier,npr" and config["seed"] == 3
    assert [s["stylizer"] for s in config["style"]] == ["fourier", "npr"]
    result = config["result"]
    assert result["written"] == 2 and result["frames"] == 48
    assert [b["source"].rsplit("/", 1)[-1] for b in result["bad"]] == ["broken.mp4"]
    a1, b1, a2 = (read_frame_folder(root / f"style_{k}" / v) for k, v in ((1, "a"), (1, "b"), (2, "a")))
    assert a1.shape[:2] == (12, 40) and a1.shape[3] == 3
    assert np.array_equal(a1, b1)  # the same style on every video
    assert np.abs(a1.astype(float) - a2).mean() > 5  # two different styles


def test_stylize_resumes(stylized_root, capsys):
    _, root, argv = stylized_root
    frame = root / "style_1" / "a" / "frame_00001.jpg"
    stamp = frame.stat().st_mtime_ns
    assert main(argv) == 0
    assert "0 video(s) written (0 frames), 2 already done, 1 skipped" in capsys.readouterr().out
    assert frame.stat().st_mtime_ns == stamp
    # a style lost for one video: only that folder is written again
    for path in (root / "style_2" / "b").iterdir():
        path.unlink()
    (root / "style_2" / "b").rmdir()
    counts = stylize_source(stylized_root[0], "fourier,npr", 2, root, seed=3, short_side=40, max_frames=12,
                            progress=False)
    assert (counts["written"], counts["skipped"], counts["frames"]) == (1, 1, 12)
    assert len(list((root / "style_2" / "b").iterdir())) == 12 and frame.stat().st_mtime_ns == stamp
    assert not [p for p in (root / "style_2").iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_stylize_refuses_other_arguments(stylized_root):
    data, root, _ = stylized_root
    with pytest.raises(StlensError, match="other arguments"):
        stylize_source(data, "palette", 2, root, seed=3, short_side=40, max_frames=12, progress=False)


def test_video_names_disambiguate(tmp_path):
    paths = [tmp_path / "x" / "v.mp4", tmp_path / "y" / "v.mp4", tmp_path / "w.avi"]
    assert video_names(paths) == ["x__v", "y__v", "w"]
    assert video_names(paths[:1] + paths[2:]) == ["v", "w"]


def test_measure_from_stylized_root(stylized_root, tmp_path):
    _, root, _ = stylized_root
    out = tmp_path / "run"
    argv = ["measure", "--model", "torchvision:r3d_18", "--frames", "4", "--size", "32", "--pairs", "8",
            "--bootstrap", "10", "--quiet", "--data", f"stylized:{root}", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["pairs"] == {"dynamic": 8, "static": 8} and result["skipped"] == []
    assert result["data"] == f"stylized:{root}"


def write_styled(root, style: int, video: str, length: int, value) -> None:
    """A frame folder whose frame t is a flat colour ``value(t)`` (exact through JPEG)."""
    folder = root / f"style_{style}" / video
    folder.mkdir(parents=True)
    for t in range(length):
        Image.fromarray(np.full((16, 16, 3), value(t), dtype=np.uint8)).save(folder / f"frame_{t + 1:05d}.jpg")


@pytest.fixture()
def coded_root(tmp_path):
    """Three styles of ``c_good`` whose grey values encode the frame: style k, frame t → 20·t + 3·k; ``a_missing``
    only in style 1, ``b_short`` too short for a clip."""
    for k in (1, 2, 3):
        write_styled(tmp_path, k, "c_good", 10, lambda t, k=k: 20 * t + 3 * k)
        write_styled(tmp_path, k, "b_short", 3, lambda t: 0)
    write_styled(tmp_path, 1, "a_missing", 10, lambda t: 0)
    return tmp_path


def decode_codes(clip) -> tuple[list[int], list[int]]:
    """(frame indices, styles) of a (3, T, H, W) clip in [0, 1] written by ``coded_root``."""
    values = np.rint(clip[0, :, 8, 8].numpy() * 255).astype(int)
    return (values // 20).tolist(), np.rint(values % 20 / 3).astype(int).tolist()


def test_stylized_pairs_read_the_same_clip_from_two_styles(coded_root):
    source = open_data(f"stylized:{coded_root}")
    assert [p.name for p in source.styles] == ["style_1", "style_2", "style_3"]
    assert [p.name for p in source.videos] == ["a_missing", "b_short", "c_good"]
    pairs = make_pairs(source, RAW, pairs=6, seed=1)
    assert isinstance(pairs, StylizedPairs) and len(pairs) == 12
    made = list(pairs)
    assert [p.factor for p in made] == [DYNAMIC, STATIC] * 6
    for pair in made:
        (frames_a, styles_a), (frames_b, styles_b) = decode_codes(pair.a), decode_codes(pair.b)
        assert len(set(styles_a)) == 1 and len(set(styles_b)) == 1
        assert np.all(np.diff(frames_a) == 1)
        if pair.factor == DYNAMIC:
            assert frames_a == frames_b and styles_a[0] != styles_b[0]
        else:
            assert sorted(frames_b) == frames_a and frames_b != frames_a and styles_a == styles_b
    reasons = {s["source"].rsplit("/", 1)[-1]: s["reason"] for s in pairs.skipped}
    assert reasons == {"a_missing": "missing in style_2, style_3", "b_short": "shorter than the clip (3 < 4 frames)"}
    again = list(make_pairs(source, RAW, pairs=6, seed=1))
    assert all(p.a.equal(q.a) and p.b.equal(q.b) for p, q in zip(made, again, strict=True))


def test_stylized_source_errors(tmp_path):
    write_styled(tmp_path, 1, "v1", 6, lambda t: 10 * t)
    with pytest.raises(StlensError, match="≥ 2 style_k folders"):
        make_pairs(open_data(f"stylized:{tmp_path}"), RAW, pairs=2)
    with pytest.raises(StlensError, match="no style_1"):
        open_data(f"stylized:{tmp_path / 'style_1'}")
    with pytest.raises(StlensError, match="not found"):
        open_data(f"stylized:{tmp_path / 'nowhere'}")


def test_workers_write_the_files_of_the_main_process(tmp_path, small_video):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "b", "c"):
        (videos / f"{name}.mp4").write_bytes(small_video.read_bytes())
    (videos / "broken.mp4").write_bytes(b"not a video")
    trees = {}
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        assert main(["stylize", "--data", str(videos), "--stylizer", "palette,npr", "--styles", "2", "--frames-max",
                     "6", "--short-side", "32", "--workers", workers, "--out", str(out), "--quiet"]) == 0
        trees[workers] = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.jpg"))}
        record = json.loads((out / "stylize.json").read_text())
        assert record["result"]["written"] == 3 and len(record["result"]["bad"]) == 1
    assert len(trees["0"]) == 3 * 2 * 6 and trees["2"] == trees["0"]


def test_stylize_overwrite_replaces_an_earlier_run_and_keeps_the_users_files(tmp_path, small_video):
    """Other arguments are refused without --overwrite; with it the recorded video folders and stylize.json are
    removed first and the new run is written; a file and a folder of the user's stay."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.mp4").write_bytes(small_video.read_bytes())
    root = tmp_path / "root"
    base = ["stylize", "--data", str(data), "--out", str(root), "--frames-max", "3", "--short-side", "24", "--quiet"]
    assert main([*base, "--stylizer", "fourier", "--styles", "3"]) == 0
    (root / "mine.txt").write_text("mine")
    (root / "style_1" / "mine").mkdir()
    assert main([*base, "--stylizer", "palette", "--styles", "1"]) == 2  # other arguments
    assert main([*base, "--stylizer", "palette", "--styles", "1", "--overwrite"]) == 0
    config = json.loads((root / "stylize.json").read_text())
    assert config["stylizer"] == "palette" and config["styles"] == 1
    assert not (root / "style_2").exists() and not (root / "style_3").exists()  # the earlier run's styles are gone
    assert len(list((root / "style_1" / "a").glob("frame_*.jpg"))) == 3
    assert (root / "mine.txt").read_text() == "mine" and (root / "style_1" / "mine").is_dir()
