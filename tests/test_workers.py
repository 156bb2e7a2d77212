"""Pair making in worker processes (``--workers``): the result does not depend on the number of workers, errors in a
worker reach the user as the StlensError they are, and bad values are refused."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from launch import RUN_FIELDS, without

import stlens
from stlens.cli import main
from stlens.core.workers import default_workers, guarded, in_order, init_worker, resolve_workers
from stlens.errors import StlensError
from stlens.measure.loading import InOrder, chunk_batches
from stlens.measure.run import pair_batches
from stlens.pairs import makers

SAMPLE = ["--model", "torchvision:r3d_18", "--frames", "4", "--size", "32", "--pairs", "8", "--bootstrap", "20",
          "--data", "sample:"]
SYNTH = ["--model", "stlens:i3d", "--weights", "bundled:i3d-motion", "--data", "synth:motion?split=test&n=32",
         "--pairs", "16", "--bootstrap", "20"]
def without_timing(doc):
    return without(doc, RUN_FIELDS)


def measured(out: Path, args: list[str], workers: int) -> tuple[dict, float]:
    tick = time.perf_counter()
    assert main(["measure", *args, "--workers", str(workers), "--quiet", "--out", str(out)]) == 0
    seconds = time.perf_counter() - tick
    config = json.loads((out / "config.json").read_text())
    assert config["arguments"]["workers"] == workers
    return json.loads((out / "result.json").read_text()), seconds


@pytest.mark.parametrize("args", [SAMPLE, SYNTH], ids=["sample-r3d_18", "synth-i3d"])
def test_workers_0_and_2_give_the_same_result(tmp_path, args):
    serial, serial_s = measured(tmp_path / "w0", args, 0)
    parallel, parallel_s = measured(tmp_path / "w2", args, 2)
    print(f"wall time: --workers 0 {serial_s:.2f} s, --workers 2 {parallel_s:.2f} s")
    assert without_timing(parallel) == without_timing(serial)
    assert serial["pairs"]["dynamic"] == serial["pairs"]["static"] == int(args[args.index("--pairs") + 1])


def test_a_video_that_fails_to_decode_in_a_worker_is_named(tmp_path, small_video, monkeypatch, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (videos / name).write_bytes(small_video.read_bytes())
    read = makers.open_clip_source

    def fail_on_b(path, *args, **kwargs):  # passes the probe (probe_clip_source), fails to open
        if Path(path).name == "b.mp4":
            raise StlensError(f"{path}: cannot decode (damaged)")
        return read(path, *args, **kwargs)

    monkeypatch.setattr(makers, "open_clip_source", fail_on_b)  # inherited by the forked workers
    out = tmp_path / "run"
    code = main(["measure", "--model", "module:conftest:tiny_video_net", "--frames", "4", "--size", "32", "--data",
                 str(videos), "--pairs", "8", "--bootstrap", "0", "--workers", "2", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "b.mp4: cannot decode (damaged)" in err and "passed the first check" in err
    assert "Traceback" not in err and "DataLoader" not in err
    assert not (out / "result.json").exists()


def test_negative_workers_are_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["measure", *SAMPLE, "--workers", "-1", "--quiet", "--out", str(out)]) == 2
    assert "--workers must be an integer ≥ 0" in capsys.readouterr().err
    assert not (out / "result.json").exists()
    with pytest.raises(StlensError, match="^`workers` must be an integer ≥ 0"):
        resolve_workers(-1)


def test_default_workers_and_plain_iterables():
    assert 0 <= default_workers() <= 4 and resolve_workers(None) == default_workers()
    pairs = [(k % 2, k, k) for k in range(5)]  # a plain list: read in the main process, whatever workers says
    with pair_batches(iter(pairs), 2, workers=2) as made:
        assert [(start, [p.a for p in batch]) for start, batch in made] == [(0, [0, 1]), (2, [2, 3]), (4, [4])]


def test_the_api_takes_workers():
    handle = stlens.load_model("module:conftest:tiny_video_net", frames=4, size=32)
    data = "synth:motion?split=test&n=8&frames=4&size=32"
    serial = stlens.measure(handle, stlens.make_pairs(stlens.open_data(data), handle.input, 8), bootstrap=0,
                            progress=False, workers=0)
    tick = time.perf_counter()
    parallel = stlens.measure(handle, stlens.make_pairs(stlens.open_data(data), handle.input, 8), bootstrap=0,
                              progress=False, workers=2)
    wall = time.perf_counter() - tick
    assert without_timing(parallel.to_dict()) == without_timing(serial.to_dict())
    for result in (serial, parallel):  # the timing is of this run (a loop variable once shadowed its clock)
        assert 0 < result.timing["forward_seconds"] <= result.timing["seconds"]
    assert parallel.timing["seconds"] <= wall
    assert parallel.timing["pairs_per_second"] == pytest.approx(16 / parallel.timing["seconds"], rel=0.02)
    assert parallel.config["arguments"]["workers"] == 2


def test_chunks_keep_a_videos_batches_together_and_give_every_worker_work():
    spans = [range(0, 10), range(10, 12), range(12, 40)]
    chunks = chunk_batches(range(0, 40, 4), 40, 4, spans, workers=2)
    assert [r for chunk in chunks for r in chunk] == [range(s, min(s + 4, 40)) for s in range(0, 40, 4)]
    assert all(len(chunk) <= 3 for chunk in chunks)  # ⌈10 batches / (2 × 2 workers)⌉
    for chunk in chunks:  # every batch of a chunk starts in the same video
        assert len({sum(s.start <= r.start for s in spans) for r in chunk}) == 1
    assert len(chunk_batches(range(0, 40, 4), 40, 4, None, workers=4)) == 5  # chunks of ⌈10 / 8⌉ batches


def test_batches_that_come_out_of_order_are_applied_in_order():
    order = InOrder(8)
    applied = []
    for start, n in [(11, 3), (8, 3), (17, 1), (14, 3)]:
        order.put(start, n, f"batch {start}")
        applied.extend(order.ready())
    assert applied == [(8, "batch 8"), (11, "batch 11"), (14, "batch 14"), (17, "batch 17")] and not len(order)


def test_workers_decode_each_video_once(tmp_path, small_video, monkeypatch):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in "abcd":
        (videos / f"{name}.mp4").write_bytes(small_video.read_bytes())
    log = tmp_path / "decoded.txt"
    read = makers.open_clip_source

    def logged(path, *args, **kwargs):  # the forked workers append to one file
        with open(log, "a") as f:
            f.write(Path(path).name + "\n")
        return read(path, *args, **kwargs)

    monkeypatch.setattr(makers, "open_clip_source", logged)
    handle = stlens.load_model("module:conftest:tiny_video_net", frames=4, size=32)
    results = {}
    for workers in (0, 2):
        log.write_text("")
        pairs = stlens.make_pairs(stlens.open_data(str(videos)), handle.input, 8)
        results[workers] = stlens.measure(handle, pairs, bootstrap=20, batch_size=2, progress=False, workers=workers)
        decoded = log.read_text().split()
        assert sorted(decoded) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4"], (workers, decoded)
    assert without_timing(results[2].to_dict()) == without_timing(results[0].to_dict())


def test_a_worker_ignores_sigint_and_runs_one_thread():
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), torch.get_num_threads()
    try:
        init_worker(0)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, saved[1])
        assert torch.get_num_threads() == 1
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
        torch.set_num_threads(saved[2])


class _ReportsThreadErrors(torch.utils.data.Dataset):
    """Item i: reports an error as a helper thread of the worker would (``sys.excepthook``), as the file-descriptor
    server that hands tensors to the main process does when the main process breaks off (EOFError) or fails
    otherwise (ValueError)."""

    errors = (EOFError("the main process went away"), ConnectionResetError("reset by peer"), ValueError("a real bug"))

    def __len__(self) -> int:
        return len(self.errors)

    def __getitem__(self, i: int) -> int:
        error = self.errors[i]
        sys.excepthook(type(error), error, None)
        sys.stderr.flush()
        return i


def test_a_worker_prints_no_traceback_for_a_handoff_an_interrupt_broke_off(capfd):
    from stlens.core.workers import loader

    got = [int(x) for x in loader(_ReportsThreadErrors(), 1, batch_size=None)]
    assert got == [0, 1, 2]
    printed = capfd.readouterr().err
    assert "ValueError: a real bug" in printed  # anything else is still reported
    assert "EOFError" not in printed and "ConnectionResetError" not in printed


class _Squares(torch.utils.data.Dataset):
    """Item i: i², made in a worker (``guarded``); item 2 fails with a bug that is not a StlensError."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        def make() -> int:
            if i == 2:
                raise ValueError("no square today")
            return i * i

        return guarded(make, f"item {i}")


def test_in_order_names_the_item_that_failed_in_a_worker():
    made = []
    with pytest.raises(StlensError, match=r"^item 2: ValueError: no square today$"):
        for value in in_order(_Squares(), 2):
            made.append(value)
    assert made == [0, 1]
    with pytest.raises(ValueError, match="no square today"):  # in the main process a bug propagates as it is
        list(in_order(_Squares(), 0))
