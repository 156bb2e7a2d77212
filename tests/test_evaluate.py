"""stlens.train.evaluate: top-1/top-5 and per-class accuracy of planted classifiers against counts made by hand,
mIoU/mSR of planted masks against IoUs worked out by hand (and of a tiny segmenter against the scores functions),
the bootstrap intervals, the run folder (refused, replaced only when complete) and its files, bad arguments."""

from __future__ import annotations

import csv
import inspect
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from stlens._version import FORMAT_VERSION
from stlens.errors import StlensError
from stlens.train.evaluate import EvaluateResult, evaluate, load_evaluation

CLASSES = 6


class PlantedClips:
    """Clip i has label i % classes; its input carries the class scores the planted model returns, built so that
    the true label is ranked ``rank(i)`` (0 = first)."""

    task = "classify"

    def __init__(self, n: int, classes: int = CLASSES, rank=lambda i: (i * 7) % CLASSES):
        self.n, self.num_classes, self.rank = n, classes, rank

    def __len__(self) -> int:
        return self.n

    def label(self, i: int) -> int:
        return i % self.num_classes

    def scores(self, i: int) -> torch.Tensor:
        others = [c for c in range(self.num_classes) if c != self.label(i)]
        order = others[: self.rank(i)] + [self.label(i)] + others[self.rank(i):]
        values = torch.zeros(self.num_classes)
        for position, c in enumerate(order):
            values[c] = float(self.num_classes - position)
        return values

    def batch(self, indices, rng):
        x = torch.zeros(len(indices), 3, 2, 2, self.num_classes)
        for row, i in enumerate(indices):
            x[row, 0, 0, 0] = self.scores(int(i))
        return x, torch.tensor([self.label(int(i)) for i in indices])


class Planted(nn.Module):
    """Returns the class scores written into its input."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Linear(1, 1)  # a parameter, so that the module has a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 0, 0, :]


def run(model, data, **kwargs) -> EvaluateResult:
    return evaluate(model, data, progress=False, device="cpu", **kwargs)


# ------------------------------------------------------------------------------------------------ classification

def test_top1_top5_and_per_class_against_the_planted_ranks():
    n = 30
    ranks = [(i * 7) % CLASSES for i in range(n)]  # rank 0 → right at top-1; rank < 5 → right at top-5
    result = run(Planted(), PlantedClips(n), bootstrap=0, batch_size=4)
    assert result.task == "classify" and result.clips == n
    assert result.metrics["top1"] == pytest.approx(sum(r == 0 for r in ranks) / n)  # 5 / 30
    assert result.metrics["top5"] == pytest.approx(sum(r < 5 for r in ranks) / n)  # 25 / 30
    assert result.metrics["top1"] == pytest.approx(5 / 30) and result.metrics["top5"] == pytest.approx(25 / 30)
    for row in result.per_class:
        clips = [i for i in range(n) if i % CLASSES == row["class"]]
        assert row["clips"] == len(clips) == 5
        assert row["top1"] == pytest.approx(np.mean([ranks[i] == 0 for i in clips]))
    # (i * 7) % 6 == i % 6: every clip of class 0 is right, no other clip is
    assert [row["top1"] for row in result.per_class] == [1.0, 0, 0, 0, 0, 0]


def test_clips_takes_the_first_n_and_top5_needs_five_class_scores():
    result = run(Planted(), PlantedClips(30), clips=12, bootstrap=0)
    assert result.clips == 12 and result.metrics["top1"] == pytest.approx(2 / 12)
    four = run(Planted(), PlantedClips(8, classes=4, rank=lambda i: i % 2), bootstrap=0)
    assert list(four.metrics) == ["top1"] and four.metrics["top1"] == 0.5
    five = run(Planted(), PlantedClips(10, classes=5, rank=lambda i: i % 5), bootstrap=0)
    assert five.metrics == {"top1": pytest.approx(0.2), "top5": 1.0}


def test_a_zoo_classifier_on_a_synth_world_matches_argmax_by_hand():
    import stlens
    from stlens.video.labelled import open_clips

    world = "synth:motion?n=20&frames=4&size=32"
    torch.manual_seed(0)
    handle = stlens.load_model("stlens:c2d?classes=8&width=8", frames=4, size=32)
    result = run(handle, world, batch_size=8, bootstrap=0)
    clips = open_clips(world, handle.input)
    inputs, labels = clips.batch(np.arange(20), np.random.default_rng(0))
    with torch.no_grad():
        logits = handle.module.eval()(inputs)
    assert result.metrics["top1"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    top5 = logits.topk(5, dim=1).indices
    assert result.metrics["top5"] == pytest.approx((top5 == labels[:, None]).any(1).float().mean().item())
    assert sum(row["clips"] for row in result.per_class) == 20
    # the spec string builds the same untrained weights from the seed
    again = run("stlens:c2d?classes=8&width=8", world, frames=4, size=32, batch_size=8, bootstrap=0)
    assert again.metrics == result.metrics and again.model == "stlens:c2d?classes=8&width=8"


# ---------------------------------------------------------------------------------------------------- segmentation

class PlantedMasks:
    """Three clips of three 8×8 frames (the third unannotated); the model returns the logits planted in the input
    (channel 0)."""

    task = "segment"
    num_classes = 1

    def __init__(self):
        square = np.zeros((8, 8), np.float32)
        square[0:4, 0:4] = 1
        shifted = np.zeros((8, 8), np.float32)
        shifted[0:4, 2:6] = 1  # overlaps the square in 8 pixels, union 24: IoU 1/3
        empty = np.zeros((8, 8), np.float32)
        speck = square.copy()
        speck[7, 7] = 1  # the square plus a far pixel: mask IoU 16/17, box IoU 1 (largest component)
        self.predicted = np.stack([np.stack([shifted, square, square]), np.stack([empty, speck, square]),
                                   np.stack([empty, empty, empty])])
        truth = np.stack([np.stack([square, square, square]), np.stack([empty, square, square]),
                          np.stack([square, square, square])])
        truth[0, 2] = np.nan  # an unannotated frame
        truth[2] = np.nan  # a clip without any annotated frame: no score, left out of the means
        self.truth = truth

    def __len__(self) -> int:
        return 3

    def batch(self, indices, rng):
        x = torch.zeros(len(indices), 3, 3, 8, 8)
        x[:, 0] = torch.from_numpy(np.where(self.predicted[indices] > 0, 5.0, -5.0).astype(np.float32))
        return x, torch.from_numpy(self.truth[indices])


class PlantedSegmenter(Planted):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


def test_miou_and_msr_of_planted_masks_by_hand():
    result = run(PlantedSegmenter(), PlantedMasks(), bootstrap=0)
    # clip 0: frames IoU 1/3 and 1 (frame 2 unannotated); clip 1: empty/empty = 1, 16/17, 1
    clip0, clip1 = (1 / 3 + 1) / 2, (1 + 16 / 17 + 1) / 3
    assert result.task == "segment" and result.clips == 3 and result.per_class == []
    assert result.settings["unscored_clips"] == 1
    assert result.metrics["miou"] == pytest.approx((clip0 + clip1) / 2)
    # success rate over τ = .5 … .9: clip 0 has one frame above every τ of 2 → 1/2; clip 1 all 3 frames → 1
    assert result.metrics["msr"] == pytest.approx((0.5 + 1.0) / 2)
    box = run(PlantedSegmenter(), PlantedMasks(), bootstrap=0, iou="box")
    assert box.metrics["miou"] == pytest.approx((clip0 + 1.0) / 2)  # the speck is not the largest component
    assert box.settings["iou"] == "box" and box.settings["mask_threshold"] == 0.5


def test_a_tiny_segmenter_against_the_scores_functions():
    import stlens
    from stlens.measure.scores import mask_iou
    from stlens.video.labelled import open_clips

    world = "synth:motion?task=segment&n=3&frames=4&size=32"
    torch.manual_seed(0)
    handle = stlens.load_model("stlens:seg3d?width=4", frames=4, size=32)
    result = run(handle, world, bootstrap=0, batch_size=2, mask_threshold=0.4)
    inputs, masks = open_clips(world, handle.input, task=None).batch(np.arange(3), np.random.default_rng(0))
    with torch.no_grad():
        predicted = (torch.sigmoid(handle.module.eval()(inputs)) > 0.4).numpy()
    per_clip = [np.mean([mask_iou(p, t > 0.5) for p, t in zip(clip_p, clip_t, strict=True)])
                for clip_p, clip_t in zip(predicted, masks.numpy(), strict=True)]
    assert result.metrics["miou"] == pytest.approx(np.mean(per_clip))


# ------------------------------------------------------------------------------------------------------ intervals

def test_intervals_contain_the_estimate_shrink_with_clips_and_are_ablates():
    from stlens.ablate.metrics import bootstrap_indices, summarise

    def coin(i: int) -> int:
        return 0 if (i * 2654435761) % 97 < 48 else 1  # right at top-1 about half the time, scattered

    few = run(Planted(), PlantedClips(12, rank=coin), bootstrap=500, seed=3)
    many = run(Planted(), PlantedClips(300, rank=coin), bootstrap=500, seed=3)
    for result in (few, many):
        low, high = result.ci95["top1"]
        assert low <= result.metrics["top1"] <= high and low < high
    assert many.ci95["top1"][1] - many.ci95["top1"][0] < 0.5 * (few.ci95["top1"][1] - few.ci95["top1"][0])
    scores = np.array([float(coin(i) == 0) for i in range(300)])
    summary = summarise(scores, scores, bootstrap_indices(300, 500, 3))
    assert many.ci95["top1"] == [pytest.approx(summary["low"]), pytest.approx(summary["high"])]
    assert run(Planted(), PlantedClips(300, rank=coin), bootstrap=500, seed=3).ci95 == many.ci95  # seeded
    none = run(Planted(), PlantedClips(12, rank=coin), bootstrap=0)
    assert all(math.isnan(v) for v in none.ci95["top1"])


# ------------------------------------------------------------------------------------------ run folder and files

def test_out_writes_json_and_csv_and_refuses_a_complete_run(tmp_path):
    out = tmp_path / "eval"
    result = run(Planted(), PlantedClips(30), out=out, bootstrap=200)
    assert result.path == out
    doc = json.loads((out / "evaluation.json").read_text())
    marker = json.loads((out / ".stlens-run.json").read_text())
    assert doc["format_version"] == FORMAT_VERSION and isinstance(doc["format_version"], int)
    assert doc["run_id"] == marker["run_id"] == result.run_id and marker["verb"] == "evaluate"
    assert set(marker["files"]) == {"evaluation.json", "evaluation.csv"}
    with open(out / "evaluation.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["metric"] for r in rows] == ["top1", "top5"]
    assert float(rows[0]["value"]) == pytest.approx(5 / 30)
    assert [float(rows[0]["ci_low"]), float(rows[0]["ci_high"])] == pytest.approx(result.ci95["top1"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(StlensError, match="already holds"):  # refused before the (unknown) model is built
        evaluate("stlens:no-such-model", PlantedClips(3), out=out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    loaded = load_evaluation(out)
    assert loaded.metrics == result.metrics and loaded.ci95 == result.ci95 and loaded.per_class == result.per_class
    assert loaded.table() == result.table()


class Broken(Planted):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("planted failure")


def test_a_failed_run_leaves_the_folder_as_it_was_and_overwrite_replaces_a_complete_one(tmp_path):
    out = tmp_path / "eval"
    first = run(Planted(), PlantedClips(30), out=out, bootstrap=0)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(StlensError, match="planted failure"):
        run(Broken(), PlantedClips(30), out=out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging folder left either
    second = run(Planted(), PlantedClips(12), out=out, overwrite=True, bootstrap=0)
    assert second.run_id != first.run_id and load_evaluation(out).clips == 12
    fresh = tmp_path / "fresh"
    with pytest.raises(StlensError):
        run(Broken(), PlantedClips(3), out=fresh)
    assert not fresh.exists()


def test_load_evaluation_names_the_file_when_it_is_damaged_or_newer(tmp_path):
    out = tmp_path / "eval"
    run(Planted(), PlantedClips(6), out=out, bootstrap=0)
    text = (out / "evaluation.json").read_text()
    copy = tmp_path / "copy.json"
    assert load_evaluation(out / "evaluation.json").clips == 6
    newer = f'"format_version": {FORMAT_VERSION + 1}'
    for bad, message in [(text[: len(text) // 2], "damaged or truncated"), ("garbage\x00", "damaged or truncated"),
                         ("[1, 2]", "not a stlens evaluation.json"),
                         (text.replace(f'"format_version": {FORMAT_VERSION}', newer), "newer stlens"),
                         (text.replace(f'"format_version": {FORMAT_VERSION}', '"format_version": "2"'),
                          "not a positive integer"),
                         (text.replace('"metrics"', '"other"'), "not a complete evaluation.json")]:
        copy.write_text(bad)
        with pytest.raises(StlensError, match=message) as caught:
            load_evaluation(copy)
        assert str(copy) in str(caught.value)
    (out / "evaluation.json").write_text(text.replace("top1", "top9"))
    with pytest.raises(StlensError, match="changed since the run wrote it"):
        load_evaluation(out)


# ---------------------------------------------------------------------------------------------------- the surface

def test_signature():
    parameters = inspect.signature(evaluate).parameters
    assert list(parameters) == ["model", "data", "weights", "frames", "size", "clips", "batch_size", "task",
                                "mask_threshold", "iou", "bootstrap", "seed", "workers", "device", "precision",
                                "out", "overwrite", "progress", "offline"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for name, p in parameters.items()
               if name not in ("model", "data"))
    assert parameters["task"].default == "auto" and parameters["bootstrap"].default == 1000
    assert parameters["batch_size"].default == 16 and parameters["clips"].default is None


@pytest.mark.parametrize("kwargs, argument", [
    ({"clips": 0}, "`clips`"), ({"task": "detect"}, "`task`"), ({"batch_size": 0}, "`batch_size`"),
    ({"iou": "area"}, "`iou`"), ({"mask_threshold": 1.0}, "`mask_threshold`"), ({"bootstrap": -1}, "`bootstrap`"),
    ({"seed": -1}, "`seed`"), ({"workers": -2}, "`workers`"), ({"precision": "fp8"}, "`precision`"),
    ({"device": "tpu"}, "`device`"),
])
def test_bad_arguments_are_refused_before_any_model_is_built(tmp_path, kwargs, argument):
    out = tmp_path / "never"
    with pytest.raises(StlensError, match=argument):
        evaluate("stlens:no-such-model", "synth:no-such-world", out=out, progress=False, **kwargs)
    assert not out.exists()
    with pytest.raises(StlensError, match="`data`"):
        evaluate("stlens:no-such-model", 42)


def test_a_task_that_does_not_fit_the_data_or_the_model():
    with pytest.raises(StlensError, match="`task` is segment but .* gives classify targets"):
        run(Planted(), PlantedClips(4), task="segment")
    with pytest.raises(StlensError, match="not class scores"):
        run(PlantedSegmenter(), PlantedClips(4))
    with pytest.raises(StlensError, match="gives 4 class scores but .* has 6 classes"):
        run(nn.Sequential(Planted(), _Slice(4)), PlantedClips(4))


class _Slice(nn.Module):
    def __init__(self, keep: int):
        super().__init__()
        self.keep = keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.keep]


def test_table_repr_and_escaped_html():
    result = EvaluateResult(model="<script>m</script>", data="a&b", task="classify", clips=3,
                            metrics={"top1": 2 / 3}, ci95={"top1": [0.25, 1.0]},
                            per_class=[{"class": 0, "clips": 3, "top1": 2 / 3, "name": "<i>x</i>"}])
    assert "top1" in repr(result) and "0.667" in repr(result) and "[0.250, 1.000]" in repr(result)
    page = result._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page and "a&amp;b" in page and "&lt;i&gt;" in page


def test_workers_give_the_same_clips_and_progress_counts_batches(monkeypatch):
    import tqdm.auto

    bars = []

    class Bar(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "disable": True})
            bars.append({"total": kwargs["total"], "desc": kwargs["desc"], "shown": kwargs["disable"] is not True,
                         "updates": 0})

        def update(self, n=1):
            bars[-1]["updates"] += n

    world = "synth:motion?n=5&frames=4&size=32"
    here = run("stlens:c2d?classes=8&width=8", world, frames=4, size=32, batch_size=2, bootstrap=0)
    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    made = evaluate("stlens:c2d?classes=8&width=8", world, frames=4, size=32, batch_size=2, bootstrap=0, workers=2,
                    device="cpu", progress=True)
    assert made.metrics == here.metrics and made.settings["workers"] == 2
    assert bars == [{"total": 3, "desc": "evaluate", "shown": True, "updates": 3}]
