"""``stlens track`` and ``stlens visualize`` under torchrun (2 gloo processes on the CPU): the ranks split the
checkpoints / the targets, rank 0 writes, and the run folder equals that of one process (docs/scaling.md); a rank
that fails stops the run."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import pytest
from launch import torchrun, without

from stlens.cli import main
from stlens.core.distributed import World
from stlens.runs import MARKER
from stlens.train import TrainConfig, Trainer
from stlens.visualize.api import share_of_jobs

MODEL = "module:conftest:tiny_classifier"
FAILING = "module:failing_classifier:build"  # the same classifier; FAIL_ON_RANK=R makes rank R fail
DATA = "synth:motion?n=16&frames=8&size=16&seed=0"
TRACK = ["--data", DATA, "--layers", "stem,stage", "--pairs", "8", "--bootstrap", "20", "--seed", "3",
         "--workers", "0", "--device", "cpu", "--quiet"]
VISUALIZE = ["--model", "stlens:i3d?width=4", "--frames", "4", "--size", "16", "--steps", "3", "--natural-clips",
             "2", "--device", "cpu", "--quiet"]
TIMING = {"seconds", "seconds_per_target", "processes"}
SCORE_TOLERANCE = 1e-9


pytestmark = pytest.mark.usefixtures("one_thread")  # the 1-process reference runs here, on one thread


def stlens(args: list[str], nproc: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess | None:
    """``stlens ARGS`` in this process (nproc 1: None) or under torchrun with ``nproc`` processes of one thread."""
    if nproc == 1:
        assert main(args) == 0
        return None
    return torchrun(args, nproc, env)


@pytest.fixture(scope="module")
def train_run(tmp_path_factory) -> Path:
    """A tiny training run with checkpoints at steps 0, 2 and 4 (2 + 1 under 2 processes)."""
    run = tmp_path_factory.mktemp("train") / "run"
    config = TrainConfig(model=MODEL, data=DATA, test_data=None, steps=4, out=str(run), checkpoint_every=2,
                         batch_size=4, frames=8, size=16, eval_clips=4, lr=1e-2, warmup=1, device="cpu")
    Trainer(config, [], progress=False).train()
    return run


def test_jobs_are_split_in_whole_batches():
    for jobs, batch, size in ((6, 2, 2), (7, 3, 2), (4, 8, 2), (5, 1, 3), (0, 2, 2)):
        parts = [share_of_jobs(jobs, batch, World(rank, size)) for rank in range(size)]
        assert [k for part in parts for k in part] == list(range(jobs))
        assert all(part.start % batch == 0 for part in parts if part)


def test_track_under_two_processes_writes_the_table_of_one(tmp_path, train_run):
    outs = {}
    for nproc in (1, 2):
        outs[nproc] = tmp_path / f"track-{nproc}"
        done = stlens(["track", "--model", MODEL, "--checkpoints", str(train_run), *TRACK, "--out",
                       str(outs[nproc])], nproc)
        assert done is None or done.returncode == 0, done.stderr[-3000:]
    tables = {}
    for nproc, out in outs.items():
        with open(out / "track.csv", newline="") as handle:
            tables[nproc] = list(csv.DictReader(handle))
    assert [(r["step"], r["layer"]) for r in tables[2]] == [(str(s), layer) for s in (0, 2, 4)
                                                            for layer in ("stem", "stage")]
    for one, two in zip(tables[1], tables[2], strict=True):
        for key in one:
            if one[key] and key in ("dynamic", "dynamic_lo", "dynamic_hi", "static", "static_lo", "static_hi",
                                    "residual", "bias"):
                assert math.isclose(float(one[key]), float(two[key]), rel_tol=0, abs_tol=SCORE_TOLERANCE), key
            else:
                assert one[key] == two[key], key
    saved = {n: json.loads((out / "track.json").read_text()) for n, out in outs.items()}
    assert saved[1]["convergence"] == saved[2]["convergence"]
    assert saved[2]["meta"]["steps"] == [0, 2, 4] and saved[2]["meta"]["processes"] == 2
    assert {k: v for k, v in saved[1]["meta"].items() if k != "processes"} == \
        {k: v for k, v in saved[2]["meta"].items() if k != "processes"}
    assert json.loads((outs[2] / MARKER).read_text())["status"] == "complete"
    assert sorted(p.name for p in outs[1].iterdir()) == sorted(p.name for p in outs[2].iterdir())


def without_timing(doc):
    return without(doc, TIMING)


def test_visualize_under_two_processes_writes_the_videos_of_one(tmp_path):
    # 3 targets × 2 λ_T = 6 jobs in batches of 2: rank 0 renders batch 0, rank 1 batches 1 and 2 (both λ_T)
    outs = {}
    for nproc in (1, 2):
        outs[nproc] = tmp_path / f"viz-{nproc}"
        done = stlens(["visualize", *VISUALIZE, "--target", "class:0-2", "--temporal-reg", "0.5,2",
                       "--batch-size", "2", "--out", str(outs[nproc])], nproc)
        assert done is None or done.returncode == 0, done.stderr[-3000:]
    files = {n: sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != MARKER)
             for n, out in outs.items()}
    assert files[1] == files[2]
    assert {"lambda_t=0.5/class_2/video.mp4", "lambda_t=2/class_0/video.gif", "summary.json"} <= set(files[2])
    assert not any(name.startswith(".stlens-staging-") for name in files[2])
    for name in files[1]:
        one, two = (outs[n] / name for n in (1, 2))
        if name.endswith(".json"):
            assert without_timing(json.loads(one.read_text())) == without_timing(json.loads(two.read_text())), name
        else:
            assert one.read_bytes() == two.read_bytes(), name  # videos, GIFs, mosaics: the same bytes
    summary = json.loads((outs[2] / "summary.json").read_text())
    assert summary["config"]["processes"] == 2
    assert [(t["target"], t["lambda_t"], t["seed"]) for t in summary["targets"]] == \
        [(f"class_{i}", lam, i) for lam in (0.5, 2.0) for i in range(3)]  # target i keeps seed + i
    assert json.loads((outs[2] / MARKER).read_text())["status"] == "complete"


def test_a_failing_rank_stops_the_run(tmp_path, train_run):
    out = tmp_path / "track"
    done = stlens(["track", "--model", FAILING, "--checkpoints", str(train_run), *TRACK, "--out", str(out)], 2,
                  env={"FAIL_ON_RANK": "1"})
    assert done.returncode != 0
    assert "stlens: error (rank 1 of 2):" in done.stderr and "planted failure" in done.stderr
    assert not out.exists()  # rank 0 claimed it (it did not exist) and gave it up: nothing is left
