"""Run folders (docs/reliability.md): one owner per folder, no partial result over a complete one, interrupts."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from stlens.cli import main
from stlens.errors import StlensError
from stlens.runs import LOCK, MARKER, RunFolder, read_marker

FAST = ["--model", "torchvision:r3d_18", "--frames", "4", "--size", "32", "--bootstrap", "20", "--data", "sample:"]


def measure(out: Path, *extra: str, pairs: int = 8) -> int:
    return main(["measure", *FAST, "--pairs", str(pairs), "--quiet", "--out", str(out), *extra])


def digest(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != LOCK}


RUNNING: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _kill_leftovers():
    yield
    while RUNNING:
        proc = RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("complete") / "run"
    assert measure(out) == 0
    return out


class Background:
    """``stlens measure`` started as a script would start it in the background: SIGINT inherited as ignored. Its
    stderr is a pseudo-terminal, so that the progress bar shows how far it got."""

    def __init__(self, out: Path, *extra: str, pairs: int = 2000):
        import pty

        def ignore_sigint() -> None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 160, 0, 0))  # tqdm needs a width
        self.proc = subprocess.Popen([sys.executable, "-m", "stlens", "measure", *FAST, "--pairs", str(pairs),
                                      "--out", str(out), *extra], stdout=subprocess.DEVNULL, stderr=slave,
                                     preexec_fn=ignore_sigint)
        os.close(slave)
        self.stderr: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        RUNNING.append(self.proc)

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                return
            if not chunk:
                return
            self.stderr.append(chunk.decode("utf-8", errors="replace"))

    def text(self) -> str:
        return "".join(self.stderr)

    def wait_for_pairs(self, count: int, timeout: float = 300) -> None:
        """Until the progress bar shows at least ``count`` pairs measured."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [int(n) for n in re.findall(r"(\d+)/\d+ \[", self.text())]
            if done and max(done) >= count:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"stlens ended early: {self.text()}")
            time.sleep(0.2)
        raise AssertionError(f"no progress in time: {self.text()[-500:]}")

    def stop(self, signum: int) -> int:
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=120)
        self.reader.join(timeout=10)
        return code


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_never_replaces_a_complete_run(tmp_path, complete_run, signum):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(complete_run, out)
    before = digest(out)
    job = Background(out, "--overwrite")
    job.wait_for_pairs(40)
    assert job.stop(signum) == 130
    assert digest(out) == before, "the complete earlier run was changed"
    partial = tmp_path / "run.interrupted"
    doc = json.loads((partial / "result.json").read_text())
    assert doc["interrupted"] is True and doc["pairs"]["dynamic"] + doc["pairs"]["static"] >= 40
    assert read_marker(partial)["status"] == "interrupted"
    assert "Traceback" not in job.text() and "partial result in" in job.text()
    assert signal.Signals(signum).name in job.text() or "interrupted after" in job.text()


def test_interrupt_into_a_fresh_folder_then_report_and_rerun(tmp_path):
    out = tmp_path / "run"
    job = Background(out)
    job.wait_for_pairs(40)
    assert job.stop(signal.SIGTERM) == 130
    doc = json.loads((out / "result.json").read_text())
    n = doc["pairs"]["dynamic"] + doc["pairs"]["static"]
    assert doc["interrupted"] is True and read_marker(out)["status"] == "interrupted"
    assert main(["report", str(out), "--out", str(tmp_path / "r.html"), "--examples", "0"]) == 0
    assert f"interrupted after {n} pairs" in (tmp_path / "r.html").read_text()
    # an interrupted run is not a complete one: the same command may replace it without --overwrite
    assert measure(out) == 0
    assert "interrupted" not in json.loads((out / "result.json").read_text())


def test_interrupt_before_enough_pairs_writes_nothing(tmp_path, complete_run):
    out = tmp_path / "fresh"
    job = Background(out, pairs=2000)
    deadline = time.monotonic() + 120
    while not any(out.glob(".stlens-staging-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.stop(signal.SIGINT) == 130
    assert not out.exists() or not [p for p in out.iterdir() if p.name != LOCK]
    assert not (tmp_path / "fresh.interrupted").exists()


def test_complete_run_is_refused_before_any_work(tmp_path, complete_run, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(complete_run, out)
    before = digest(out)
    started = time.perf_counter()
    assert main(["measure", "--model", "torchvision:no_such", "--data", "sample:", "--out", str(out)]) == 2
    assert time.perf_counter() - started < 5
    err = capsys.readouterr().err
    assert "already holds a complete stlens measure run" in err and "--overwrite" in err
    assert digest(out) == before


def test_overwrite_swaps_in_and_removes_stale_latents(tmp_path, complete_run):
    import shutil

    import stlens

    out = tmp_path / "run"
    shutil.copytree(complete_run, out)
    assert measure(out, "--overwrite", "--save-latents") == 0
    assert (out / "latents.npz").is_file() and stlens.load_result(out).latents is not None
    assert measure(out, "--overwrite") == 0
    assert not (out / "latents.npz").exists()
    assert stlens.load_result(out).latents is None
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MARKER, LOCK, "config.json", "layers.csv", "result.json", "units.csv"])


def test_files_of_another_run_are_detected(tmp_path, complete_run):
    import shutil

    import stlens

    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(complete_run, one)
    assert measure(two, "--seed", "1") == 0
    shutil.copy(two / "units.csv", one / "units.csv")
    with pytest.raises(StlensError, match="units.csv: changed since the run wrote it"):
        stlens.load_result(one)
    shutil.copytree(complete_run, tmp_path / "three")
    (tmp_path / "three" / "result.json").write_bytes((two / "result.json").read_bytes())
    with pytest.raises(StlensError, match="result.json"):
        stlens.load_result(tmp_path / "three")


def test_stale_latents_of_an_unlisted_file_are_not_attached(tmp_path, complete_run):
    import shutil

    import numpy as np

    import stlens

    out = tmp_path / "run"
    shutil.copytree(complete_run, out)
    np.savez(out / "latents.npz", factor=np.zeros(3))
    assert stlens.load_result(out).latents is None


def test_other_verbs_runs_and_user_files_are_left_alone(tmp_path, capsys):
    train_run = tmp_path / "train"
    train_run.mkdir()
    config = {"stlens_version": "0.1.0", "model": "stlens:i3d", "steps": 10}
    (train_run / "config.json").write_text(json.dumps(config))
    for extra in ([], ["--overwrite"]):
        assert measure(train_run, *extra) == 2
        assert "stlens train run" in capsys.readouterr().err
    assert json.loads((train_run / "config.json").read_text()) == config

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (mine / "result.json").write_text('{"mine": true}')
    assert measure(mine) == 2
    assert "not written by stlens" in capsys.readouterr().err
    (mine / "result.json").unlink()
    assert measure(mine) == 0
    assert (mine / "notes.txt").read_text() == "keep me"
    assert measure(mine, "--overwrite") == 0
    assert (mine / "notes.txt").read_text() == "keep me"


def test_out_that_is_a_file_or_not_writable(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert measure(target) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    if os.geteuid() == 0:
        pytest.skip("root can write into a read-only folder")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert measure(ro / "out") == 2
        assert "cannot create" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


def test_two_concurrent_writers(tmp_path, capsys):
    out = tmp_path / "run"
    job = Background(out)
    job.wait_for_pairs(8)
    assert measure(out) == 2
    assert "another stlens process is writing this folder" in capsys.readouterr().err
    with pytest.raises(StlensError, match="another stlens process"):
        RunFolder(out, "measure").claim()
    assert job.stop(signal.SIGINT) == 130
    # the lock dies with its process: the folder is usable again
    folder = RunFolder(out, "measure", overwrite=True).claim()
    folder.abandon()


def test_unmarked_legacy_run_loads_with_a_warning(tmp_path, complete_run, caplog):
    import shutil

    import stlens

    out = tmp_path / "old"
    shutil.copytree(complete_run, out)
    (out / MARKER).unlink()
    with caplog.at_level("WARNING", logger="stlens"):
        result = stlens.load_result(out)
    assert result.layers and "no run marker" in caplog.text
    assert measure(out) == 2  # still a complete run: refused without --overwrite


# -------------------------------------------------------------------- every verb: one owner per folder

TRAIN = ["train", "--model", "module:conftest:tiny_classifier", "--data", "synth:motion?n=16&frames=4&size=16&seed=0",
         "--frames", "4", "--size", "16", "--steps", "2", "--batch-size", "4", "--eval-clips", "4", "--quiet"]
TINY_VIS = ["visualize", "--model", "stlens:i3d?width=4", "--frames", "4", "--size", "16", "--steps", "2",
            "--natural-clips", "0", "--target", "class:0", "--batch", "1", "--quiet"]


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK}


def test_measure_into_a_train_run_and_train_into_a_measure_run_are_refused(tmp_path, complete_run, capsys):
    import shutil

    run = tmp_path / "train"
    assert main([*TRAIN, "--out", str(run)]) == 0
    marker = read_marker(run)
    assert marker["verb"] == "train" and marker["status"] == "complete"
    assert "config.json" in marker["files"] and any(n.startswith("checkpoints/") for n in marker["files"])
    assert json.loads((run / "config.json").read_text())["run_id"] == marker["run_id"]
    before = files_of(run)
    for extra in ([], ["--overwrite"]):
        assert measure(run, *extra) == 2
        assert "stlens train run" in capsys.readouterr().err
    assert files_of(run) == before  # the training can still resume
    assert main([*TRAIN, "--steps", "3", "--out", str(run)]) == 0  # resuming the same run is not a new run
    assert read_marker(run)["run_id"] == marker["run_id"]

    measured = tmp_path / "measured"
    shutil.copytree(complete_run, measured)
    assert main([*TRAIN, "--out", str(measured)]) == 2
    assert "stlens measure run" in capsys.readouterr().err


def test_track_and_visualize_runs_are_owned(tmp_path, capsys):
    vis = tmp_path / "vis"
    assert main([*TINY_VIS, "--out", str(vis)]) == 0
    assert read_marker(vis)["verb"] == "visualize" and "summary.json" in read_marker(vis)["files"]
    before = files_of(vis)
    assert main([*TINY_VIS, "--seed", "1", "--out", str(vis)]) == 2
    assert "already holds a complete stlens visualize run" in capsys.readouterr().err
    assert files_of(vis) == before
    assert main([*TINY_VIS, "--seed", "1", "--overwrite", "--out", str(vis)]) == 0
    assert files_of(vis) != before and read_marker(vis)["verb"] == "visualize"


def test_report_and_pairs_check_never_overwrite_a_file_stlens_did_not_write(tmp_path, complete_run, capsys):
    page = tmp_path / "mine.html"
    page.write_text("<html>my notes</html>")
    assert main(["report", str(complete_run), "--out", str(page), "--examples", "0"]) == 2
    assert "not a report written by stlens" in capsys.readouterr().err
    assert page.read_text() == "<html>my notes</html>"
    ours = tmp_path / "ours.html"
    for _ in range(2):  # its own report is replaced
        assert main(["report", str(complete_run), "--out", str(ours), "--examples", "0"]) == 0
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    assert main(["pairs", "check", "--data", "sample:", "--pairs", "1", "--frames", "4", "--size", "32", "--stylizer",
                 "palette", "--quiet", "--out", str(notes)]) == 2
    assert notes.read_text() == '{"mine": 1}'


INTERRUPT_BETWEEN_LAYERS = """
import json, os, signal, sys
# what this process inherited (shown when the test fails), then SIGINT as a fresh interpreter has it
blocked = sorted(signal.pthread_sigmask(signal.SIG_BLOCK, []))
print("inherited: SIGINT", signal.getsignal(signal.SIGINT), "blocked", blocked, file=sys.stderr)
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
import stlens
from stlens.measure import moments as moments_module

handle = stlens.load_model("stlens:i3d", "bundled:i3d-motion")
pairs = stlens.make_pairs(stlens.open_data("synth:motion?split=test&n=64&seed=0"), handle.input, 32, seed=0)
calls = {"n": 0}
original = moments_module.PairedMoments.update

def update(self, factor, a, b, index=None):
    calls["n"] += 1
    if calls["n"] == 5 * 2 * 4 + 3:  # 5 layers x 2 factors x 4 batches, then the 2nd layer of batch 5
        os.kill(os.getpid(), signal.SIGINT)
    return original(self, factor, a, b, index)

moments_module.PairedMoments.update = update
result = stlens.measure(handle, pairs, batch_size=4, bootstrap=10, progress=False, workers=0)
print(json.dumps({"interrupted": result.meta.get("interrupted"), "pairs": result.meta["pairs"],
                  "counts": sorted({tuple(int(x) for x in m.n) for m in result.moments.values()})}))
"""


def test_an_interrupt_between_two_layers_keeps_the_pairs_measured():
    """SIGINT while a batch is being added to the layers' moments (after the first layer, before the last): the batch
    enters every layer or none, so the pairs so far stay a usable partial result. Run in a process of its own, with
    SIGINT's default handler and unblocked: on fresh clones, after the whole suite, the interrupt was not seen, even
    in a subprocess (a signal ignored or blocked in this process is inherited by its children); what the child
    inherited is printed when it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(stlens_src()).parent)}
    run = subprocess.run([sys.executable, "-c", INTERRUPT_BETWEEN_LAYERS], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["interrupted"] is True, run.stderr[-3000:]
    assert result["pairs"]["dynamic"] + result["pairs"]["static"] == 5 * 4
    assert len(result["counts"]) == 1


def stlens_src() -> str:
    """The folder of the stlens package these tests import (so that the child process imports the same one)."""
    import stlens

    return str(Path(stlens.__file__).parent)
