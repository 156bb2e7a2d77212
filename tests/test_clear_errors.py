"""Bad inputs get a clear one-line error and exit code 2 (no traceback), and small things done right: weights files,
--seed, user model code that raises, pairs check options, file modes, the report's CSP, Diving48 segments."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import shutil
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from stlens.cli import build_parser, main

TINY = "module:conftest:tiny_video_net"


def error_of(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------------------------ weights files


@pytest.fixture(scope="module")
def good_weights(tmp_path_factory) -> Path:
    from conftest import tiny_video_net

    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_file({k: v.clone() for k, v in tiny_video_net().state_dict().items()}, str(path))
    return path


def _truncated(good: Path, path: Path) -> None:
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _header_only(good: Path, path: Path) -> None:
    data = good.read_bytes()
    path.write_bytes(data[: 8 + int.from_bytes(data[:8], "little") + 10])  # the header and 10 bytes of tensor data


def _empty(good: Path, path: Path) -> None:
    path.write_bytes(b"")


def _torch_zip(good: Path, path: Path) -> None:
    from safetensors.torch import load_file

    torch.save(load_file(str(good)), path)


def _truncated_torch(good: Path, path: Path) -> None:
    _torch_zip(good, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])


def _plain_pickle(good: Path, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump({"weight": [1.0, 2.0]}, f)


@pytest.mark.parametrize(("make", "name", "says"), [
    (_truncated, "cut.safetensors", "truncated, or not a safetensors file"),
    (_header_only, "cut2.safetensors", "truncated, or not a safetensors file"),
    (_empty, "empty.safetensors", "is empty"),
    (_torch_zip, "torch.safetensors", "rename it to .pt"),
    (_plain_pickle, "pickle.safetensors", "rename it to .pt"),
    (_empty, "empty.pt", "is empty"),
    (_truncated_torch, "cut.pt", "truncated or not a torch checkpoint"),
    (_truncated, "safetensors_data.pt", "truncated or not a torch checkpoint"),
])
def test_bad_weights_file_is_a_clear_error(good_weights, tmp_path, capsys, make, name, says):
    path = tmp_path / name
    make(good_weights, path)
    assert main(["layers", TINY, "--weights", str(path)]) == 2
    err = error_of(capsys)
    assert err.startswith("stlens: error: ") and str(path) in err and says in err, err
    assert main(["layers", TINY, "--weights", str(good_weights)]) == 0  # the intact file still loads
    assert "stem" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------------------- --seed

VERBS = {
    "measure": ["measure", "--model", TINY, "--data", "nowhere", "--out", "nowhere_out"],
    "train": ["train", "--model", TINY, "--data", "nowhere", "--steps", "1", "--out", "nowhere_out"],
    "track": ["track", "--model", TINY, "--checkpoints", "nowhere", "--data", "nowhere", "--out", "nowhere_out"],
    "stylize": ["stylize", "--data", "nowhere", "--out", "nowhere_out"],
    "pairs check": ["pairs", "check", "--data", "nowhere", "--out", "nowhere.json"],
    "visualize": ["visualize", "--model", TINY, "--target", "class:0", "--out", "nowhere_out"],
}


@pytest.mark.parametrize("verb", list(VERBS))
@pytest.mark.parametrize("seed", ["-1", str(2**63)])
def test_seed_out_of_range_is_refused_when_parsing(verb, seed, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([*VERBS[verb], f"--seed={seed}"])
    assert exit_info.value.code == 2
    err = error_of(capsys)
    assert "argument --seed" in err and seed in err, err
    assert not (tmp_path / "nowhere_out").exists() and not (tmp_path / "nowhere.json").exists()
    parser = build_parser()  # the ends of the range are accepted
    assert parser.parse_args([*VERBS[verb], "--seed", "0"]).seed == 0
    assert parser.parse_args([*VERBS[verb], "--seed", str(2**63 - 1)]).seed == 2**63 - 1


# -------------------------------------------------------------------------------------- user code that raises


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write a module of user code into a folder on sys.path; return a function that writes one."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name

    yield write


def test_module_factory_that_raises_says_so_then_shows_the_user_traceback(user_module, capsys):
    name = user_module("stlens_test_badfactory", '''
        def helper():
            raise ValueError("the factory is broken")


        def make():
            return helper()
    ''')
    spec = f"module:{name}:make"
    assert main(["layers", spec]) == 2
    err = capsys.readouterr().err
    first, rest = err.split("\n", 1)
    assert first == (f"stlens: error: {spec}: calling make() raised ValueError: the factory is broken "
                     f"(the traceback of that code follows)")
    assert rest.startswith("Traceback (most recent call last):")
    assert f"{name}.py\", line 7, in make" in rest and f"{name}.py\", line 3, in helper" in rest
    assert "registry.py" not in rest and "importlib" not in rest  # only the user's frames
    assert rest.rstrip().endswith("ValueError: the factory is broken")
    # a module or factory that is not there stays a one-line error
    assert main(["layers", "module:stlens_test_no_such_module:make"]) == 2
    assert error_of(capsys).strip() == ("stlens: error: cannot import make from stlens_test_no_such_module: "
                                        "No module named 'stlens_test_no_such_module'")
    assert main(["layers", f"module:{name}:build"]) == 2
    assert "cannot import build from stlens_test_badfactory" in error_of(capsys)


def test_module_that_raises_on_import_says_so_then_shows_the_user_traceback(user_module, capsys):
    name = user_module("stlens_test_badimport", '''
        import not_a_module_anywhere_xyz  # a missing dependency of the user's module
    ''')
    spec = f"module:{name}:make"
    assert main(["layers", spec]) == 2
    first, rest = capsys.readouterr().err.split("\n", 1)
    assert first.startswith(f"stlens: error: {spec}: importing {name} raised ModuleNotFoundError: ")
    assert f"{name}.py\", line 2, in <module>" in rest and "_bootstrap" not in rest

    name = user_module("stlens_test_badimport2", '''
        x = 1 / 0
    ''')
    assert main(["layers", f"module:{name}:make"]) == 2
    first, rest = capsys.readouterr().err.split("\n", 1)
    assert first.startswith(f"stlens: error: module:{name}:make: importing {name} raised ZeroDivisionError")
    assert "x = 1 / 0" in rest


# -------------------------------------------------------------------------------------------------------- pairs check

FAST_CHECK = ["--stylizer", "palette", "--frames", "4", "--size", "32", "--quiet"]


def test_pairs_check_examples_needs_a_json_out(small_video, tmp_path, capsys):
    out = tmp_path / "check"
    assert main(["pairs", "check", "--data", str(small_video), "--pairs", "1", *FAST_CHECK, "--examples",
                 "--out", str(out)]) == 2
    err = error_of(capsys)
    assert f"--out {out}" in err and ".json" in err and str(out) + ".json" in err
    assert not out.exists()


def test_pairs_check_out_that_is_a_folder_is_refused(small_video, tmp_path, capsys):
    out = tmp_path / "folder"
    out.mkdir()
    assert main(["pairs", "check", "--data", str(small_video), "--pairs", "1", *FAST_CHECK, "--out", str(out)]) == 2
    err = error_of(capsys)
    assert "--out" in err and "is a folder" in err and str(out / "pairs.json") in err
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("n", ["0", "-3"])
def test_pairs_check_n_below_one(small_video, tmp_path, capsys, n):
    out = tmp_path / "check.json"
    assert main(["pairs", "check", "--data", str(small_video), "--clips", n, *FAST_CHECK, "--out", str(out)]) == 2
    assert f"--clips must be ≥ 1 (the number of clips to check), got {n}" in error_of(capsys)
    assert not out.exists()


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_pairs_check_with_examples_writes_readable_files(small_video, tmp_path, umask_022):
    out = tmp_path / "check.json"
    assert main(["pairs", "check", "--data", str(small_video), "--pairs", "1", *FAST_CHECK, "--examples",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["clips"] == 1
    assert sorted(p.name for p in (tmp_path / "check").iterdir()) == ["palette_clip0.gif"]
    assert out.stat().st_mode & 0o777 == 0o644


# -------------------------------------------------------------------------------------------------------- file modes


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_get_the_umask_default_mode(tmp_path, umask, mode):
    from stlens.files import atomic_write, write_json, write_text

    old = os.umask(umask)
    try:
        written = [write_json(tmp_path / "a.json", {"x": 1}), write_text(tmp_path / "b.txt", "b"),
                   atomic_write(tmp_path / "c.bin", lambda f: f.write(b"c"))]
        (tmp_path / "a.json").chmod(0o600)
        written.append(write_json(tmp_path / "a.json", {"x": 2}))  # a rewrite gets the umask default again
    finally:
        os.umask(old)
    assert [oct(p.stat().st_mode & 0o777) for p in written] == [oct(mode)] * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.txt", "c.bin"]  # no temp file left


# ------------------------------------------------------------------------------------------------------ report's CSP


class _Scripts(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.csp: list[str] = []
        self.scripts: list[str] = []
        self._script: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "meta" and (attrs.get("http-equiv") or "").lower() == "content-security-policy":
            self.csp.append(attrs["content"])
        if tag == "script":
            assert "src" not in attrs
            self._script = []

    def handle_data(self, data):
        if self._script is not None:
            self._script.append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            self.scripts.append("".join(self._script))
            self._script = None


def test_report_csp_allows_exactly_its_own_scripts_by_hash(tmp_path):
    from report_helpers import make_evil_run

    run = make_evil_run(tmp_path / "evil")
    out = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(out), "--examples", "0"]) == 0
    page = _Scripts()
    page.feed(out.read_text(encoding="utf-8"))
    assert len(page.csp) == 1
    policy = {d.split()[0]: d.split()[1:] for d in page.csp[0].split(";") if d.strip()}
    assert policy["default-src"] == ["'none'"]
    sources = policy["script-src"]
    assert "'unsafe-inline'" not in sources and "'unsafe-eval'" not in sources and "*" not in sources
    assert page.scripts, "the report's scripts (sorting, error flag) are gone"
    hashes = {"'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
              for s in page.scripts}
    assert set(sources) == hashes  # every inline script is hashed, and nothing else is allowed


# --------------------------------------------------------------------------------------------------- Diving48 segments


def test_clip_indices_without_a_segment_are_unchanged():
    from stlens.video.sampling import clip_indices

    for length, frames, stride in [(40, 8, 2), (40, 16, 4), (9, 8, 2), (100, 1, 3)]:
        plain = [clip_indices(length, frames, stride, np.random.default_rng(s)) for s in range(20)]
        assert [clip_indices(length, frames, stride, np.random.default_rng(s), segment=None).tolist()
                for s in range(20)] == [p.tolist() for p in plain]
        assert [clip_indices(length, frames, stride, np.random.default_rng(s), segment=(0, length)).tolist()
                for s in range(20)] == [p.tolist() for p in plain]
    assert clip_indices(7, 8, 2, np.random.default_rng(0), segment=None) is None


def test_clip_indices_stay_inside_the_segment():
    from stlens.video.sampling import clip_indices

    for s in range(50):
        idx = clip_indices(40, 8, 2, np.random.default_rng(s), segment=(20, 36))
        assert idx.min() >= 20 and idx.max() < 36 and np.all(np.diff(idx) == 2)
        idx = clip_indices(40, 8, 4, np.random.default_rng(s), segment=(5, 15))  # stride shrinks to fit
        assert idx.min() >= 5 and idx.max() < 15 and np.all(np.diff(idx) == 1)
        idx = clip_indices(40, 4, 2, np.random.default_rng(s), segment=(30, 100))  # end past the video
        assert idx.min() >= 30 and idx.max() < 40
    assert clip_indices(40, 8, 2, np.random.default_rng(0), segment=(35, 40)) is None  # segment shorter than a clip
    assert clip_indices(40, 8, 2, np.random.default_rng(0), segment=(45, 60)) is None  # segment past the video


def _diving48(folder: Path, video: Path, entries: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(video, folder / "bikes_small.mp4")
    path = folder / "diving48_test.json"
    path.write_text(json.dumps(entries))
    return path


def test_diving48_clips_are_sampled_inside_the_segment(small_video, tmp_path, monkeypatch):
    import stlens
    from stlens.pairs import quality
    from stlens.video import sampling
    from stlens.video.sampling import clip_indices

    ann = _diving48(tmp_path / "d48", small_video,
                    [{"vid_name": "bikes_small", "label": 3, "start_frame": 20, "end_frame": 36}])
    source = stlens.open_data(str(ann))
    assert source.segments == ((20, 36),)
    drawn = []

    def spy(*args, **kwargs):
        idx = clip_indices(*args, **kwargs)
        drawn.append(idx)
        return idx

    monkeypatch.setattr(sampling, "clip_indices", spy)  # every sampler draws through video.sampling.sample_clip
    clips = list(quality.sample_clips(source, n=12, frames=8, stride=2, size=32, seed=0))
    assert len(clips) == 12 and len(drawn) == 12
    assert all(idx.min() >= 20 and idx.max() < 36 for idx in drawn), [idx.tolist() for idx in drawn]


def test_diving48_bad_segment_names_the_entry(small_video, tmp_path, capsys):
    ann = _diving48(tmp_path / "d48", small_video,
                    [{"vid_name": "bikes_small", "label": 3, "start_frame": 0, "end_frame": 30},
                     {"vid_name": "bikes_small", "label": 3, "start_frame": 30, "end_frame": 30}])
    out = tmp_path / "check.json"
    assert main(["pairs", "check", "--data", str(ann), "--pairs", "1", *FAST_CHECK, "--out", str(out)]) == 2
    err = error_of(capsys)
    assert f"{ann}:entry 2: expected 0 ≤ start_frame < end_frame, got start_frame 30, end_frame 30" in err
    assert not out.exists()


def test_a_verbs_arguments_are_checked_in_order_naming_the_first_bad_one():
    from stlens.core.arguments import checked_device, labelled_data, raise_first_failed, whole
    from stlens.errors import StlensError

    assert whole(3, 1) and whole(0, 0) and not whole(0, 1) and not whole(True, 0) and not whole(2.0, 1)
    assert labelled_data("synth:motion") and labelled_data(Path("a.json")) and not labelled_data(3)
    raise_first_failed([(True, "fine")])
    with pytest.raises(StlensError, match="^`clips` bad$"):
        raise_first_failed([(True, "fine"), (False, "`clips` bad"), (False, "`seed` bad")])
    assert checked_device(None, "fp32") is None
    assert checked_device("cpu", "fp32") == torch.device("cpu")
    with pytest.raises(StlensError, match="precision"):
        checked_device("cpu", "fp8")
    from stlens.explain.run import _check

    with pytest.raises(StlensError, match="`batch_size` must be ≥ 1"):  # a verb: the first bad argument, named
        _check(data="synth:motion", method="saliency", layer=None, target="predicted", clips=2, steps=4,
               batch_size=0, seed=-1, device=None, precision="fp32", errors=None, error_steps=1)
