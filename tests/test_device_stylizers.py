"""Stylizing and frame shuffling on the device (``stlens.video.device_stylizers``): the torch versions of palette,
fourier and the frame shuffle equal the numpy ones on real frames within the stated tolerance (palette and the shuffle
exactly on this CPU; fourier ≤ 1 grey level on a few pixels), video pairs made with their styling left to the device
equal the workers' pairs, and measure gives the same result either way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stlens
from stlens.core.pair import DYNAMIC, STATIC, frame_shuffle, shuffle_order
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.measure.loading import PairBatch, styled_where
from stlens.pairs.makers import VideoPairs
from stlens.video.device_stylizers import ClipStyles, clip_style, fourier_on, palette_on, runs_on_device
from stlens.video.io import read_clip_source
from stlens.video.sampling import centre_crop, to_model_input
from stlens.video.sources import open_data, sample_videos
from stlens.video.stylizers import fourier, palette

#: the stated tolerance of the device path on the CPU, per stylizer: (largest |difference| in grey levels, largest
#: fraction of differing pixels). Measured on this suite's frames: palette 0 and 0, fourier 1 and ~2e-5.
TOLERANCE = {"palette": (0, 0.0), "fourier": (1, 1e-3)}
SPEC = InputSpec(frames=4, stride=2, size=32, resize=36)


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Real frames: 6-frame 48×48 centre crops of two sample videos (one odd-sized crop: 48×40)."""
    out = []
    for path in sample_videos()[:2]:
        frames = read_clip_source(path, short_side=56, partial=True)[:6]
        out.append(np.ascontiguousarray(centre_crop(frames, 48)))
    out.append(np.ascontiguousarray(out[0][:, :, :40]))
    return out


def differences(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(d.max()), float((d > 0).mean())


@pytest.mark.parametrize("kind, numpy_version", [("palette", palette), ("fourier", fourier)])
def test_each_stylizer_equals_numpy_within_tolerance(clips, kind, numpy_version):
    worst, share = TOLERANCE[kind]
    for seed in range(6):
        for clip in clips:
            styles = ClipStyles([clip_style(kind, seed, *clip.shape[:3])])
            out = styles.stylize(torch.from_numpy(clip)[None])[0].numpy()
            most, fraction = differences(out, numpy_version(clip, seed))
            assert most <= worst and fraction <= share, (kind, seed, clip.shape, most, fraction)


def test_a_mixed_batch_equals_each_clip_alone(clips):
    clip = clips[0]
    styles = [clip_style("palette", 3, *clip.shape[:3]), clip_style("fourier", 4, *clip.shape[:3]),
              clip_style("identity", 5, *clip.shape[:3]), clip_style("fourier", 6, *clip.shape[:3])]
    batch = ClipStyles(styles).stylize(torch.from_numpy(np.stack([clip] * 4)))
    for style, out in zip(styles, batch, strict=True):
        assert torch.equal(out, ClipStyles([style]).stylize(torch.from_numpy(clip)[None])[0])
    assert torch.equal(batch[2], torch.from_numpy(clip))  # identity


def test_the_functions_take_batches():
    clips = torch.randint(0, 256, (2, 3, 8, 10, 3), dtype=torch.uint8)
    lut = torch.arange(256, dtype=torch.uint8).repeat(2, 3, 1)
    assert torch.equal(palette_on(clips, torch.eye(3).repeat(2, 1, 1), lut), clips)  # identity tables
    owner, cell = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 6])  # clip 0: 2 cells, clip 1: 1
    same = fourier_on(clips, owner, cell, torch.zeros(3, 3), torch.zeros(2))  # weight 0: the clip back
    assert (same.int() - clips.int()).abs().max() <= 1
    flat = fourier_on(clips, owner, cell, torch.zeros(3, 3), torch.ones(2))  # no amplitude at DC: mean ~0 (clipped)
    assert flat.float().mean() < clips.float().mean()


def test_shuffle_order_draws_as_frame_shuffle_and_the_device_shuffle_is_exact(clips):
    clip = clips[1]
    for seed in range(5):
        order = shuffle_order(len(clip), np.random.default_rng(seed))
        expected = frame_shuffle(clip, np.random.default_rng(seed))
        assert np.array_equal(clip[order], expected)
        style = clip_style("palette", seed, *clip.shape[:3])
        out = ClipStyles([style.shuffled(order)]).stylize(torch.from_numpy(clip)[None])[0].numpy()
        assert np.array_equal(out, frame_shuffle(palette(clip, seed), np.random.default_rng(seed)))
    assert np.array_equal(shuffle_order(1, np.random.default_rng(0)), [0])


def test_normalise_equals_to_model_input(clips):
    clip = clips[0]
    styles = ClipStyles([clip_style("identity", 0, *clip.shape[:3], mean=SPEC.mean, std=SPEC.std)])
    assert torch.equal(styles.apply(torch.from_numpy(clip)[None])[0], to_model_input(clip, SPEC))


@pytest.mark.parametrize("stylizer", ["palette", "palette,fourier,identity"])
def test_device_pairs_equal_workers_pairs(stylizer):
    made = VideoPairs(open_data("sample:"), SPEC, 4, stylizer, seed=1)
    deferred = made.on_device()
    assert deferred is not None and deferred is not made and len(deferred) == len(made)
    assert made[0].styles is None  # the original is unchanged
    pairs = [deferred[k] for k in range(len(deferred))]
    assert {p.factor for p in pairs} == {DYNAMIC, STATIC}
    assert all(p.a.dtype == torch.uint8 and p.a.shape == (4, 32, 32, 3) for p in pairs)
    batch = PairBatch.of(pairs)
    assert batch.inputs.shape == (len(pairs), 4, 32, 32, 3)  # one uint8 clip per pair
    inputs = batch.model_inputs(torch.device("cpu"))
    expected = PairBatch.of([made[k] for k in range(len(made))])
    assert inputs.shape == expected.inputs.shape and np.array_equal(batch.factor, expected.factor)
    std = torch.tensor(SPEC.std).view(3, 1, 1, 1)
    grey = ((inputs - expected.inputs) * std * 255).abs().amax(dim=(1, 2, 3, 4))  # in grey levels
    worst = max(TOLERANCE[name.strip()][0] for name in stylizer.split(",") if name.strip() in TOLERANCE)
    assert grey.max() <= worst + 1e-3, grey


def test_which_pairs_run_on_the_device(sample_dir):
    source = open_data("sample:")
    assert runs_on_device(["palette", "fourier"]) and not runs_on_device(["palette", "npr"])
    assert VideoPairs(source, SPEC, 2, "palette,npr").on_device() is None
    flow_pairs = stlens.make_pairs(source, SPEC, 2, flow="farneback")
    assert flow_pairs.on_device() is None
    made = VideoPairs(source, SPEC, 2)
    assert styled_where(made, "auto", torch.device("cpu")) == (made, "workers")
    assert styled_where(made, "workers", torch.device("cuda")) == (made, "workers")
    assert styled_where(made, "auto", torch.device("cuda"))[1] == "device"
    assert styled_where(flow_pairs, "auto", torch.device("cuda")) == (flow_pairs, "workers")
    assert styled_where([(0, 1, 2)], "auto", torch.device("cuda"))[1] == "workers"
    with pytest.raises(StlensError, match="`stylize_on` device needs video pairs"):
        styled_where(flow_pairs, "device", torch.device("cpu"))
    with pytest.raises(StlensError, match="runs on CUDA or the CPU, not mps"):
        styled_where(made, "device", torch.device("mps"))
    assert styled_where(made, "auto", torch.device("mps")) == (made, "workers")
    with pytest.raises(StlensError, match="`stylize_on` must be one of"):
        styled_where(made, "gpu", torch.device("cpu"))


def without_run(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in ("timing", "run_id", "stylize_on")}


@pytest.mark.parametrize("stylizer, workers", [("palette", 0), ("fourier", 2)])
def test_measure_on_the_device_path_gives_the_workers_result(stylizer, workers):
    handle = stlens.load_model("module:conftest:tiny_video_net", frames=4, size=32)
    results = {}
    for where in ("workers", "device"):
        pairs = stlens.make_pairs(stlens.open_data("sample:"), handle.input, 8, stylizer=stylizer)
        results[where] = stlens.measure(handle, pairs, bootstrap=20, batch_size=4, progress=False, workers=workers,
                                        stylize_on=where)
    on_workers, on_device = (without_run(results[w].to_dict()) for w in ("workers", "device"))
    assert results["device"].meta["stylize_on"] == "device" and "stylize_on" not in results["workers"].meta
    if stylizer == "palette":  # exact on this CPU
        assert on_device == on_workers
        return
    # fourier: a few pixels a grey level apart (TOLERANCE) move the estimate by float noise: the same dims, the
    # scores and percentages within 1e-4 relative (measured: ≤ 6e-6, percentages equal)
    for a, b in zip(results["workers"].layers, results["device"].layers, strict=True):
        assert a.dims == b.dims and a.units == b.units
        for name in ("static", "dynamic"):
            assert a.percent[name] == pytest.approx(b.percent[name], rel=1e-4)
            assert a.score[name] == pytest.approx(b.score[name], rel=1e-4)


#: the tolerance stated for a GPU (cuda): palette exact (the same float32 product and float64 sums as on the CPU),
#: fourier ≤ 1 grey level on ≤ 1e-3 of the pixels (cuFFT rounds otherwise than pocketfft), the shuffle exact
GPU_TOLERANCE = {"palette": (0, 0.0), "fourier": (1, 1e-3)}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind, numpy_version", [("palette", palette), ("fourier", fourier)])
def test_on_a_gpu_within_the_stated_tolerance(clips, kind, numpy_version):
    worst, share = GPU_TOLERANCE[kind]
    clip = clips[0]
    for seed in range(4):
        style = clip_style(kind, seed, *clip.shape[:3]).shuffled(shuffle_order(len(clip), np.random.default_rng(seed)))
        out = ClipStyles([style]).stylize(torch.from_numpy(clip)[None].cuda())[0].cpu().numpy()
        expected = frame_shuffle(numpy_version(clip, seed), np.random.default_rng(seed))
        most, fraction = differences(out, expected)
        assert most <= worst and fraction <= share, (kind, seed, most, fraction)


def test_the_cli_takes_stylize_on_and_config_records_it(tmp_path):
    import json

    from stlens.cli import main

    fast = ["--model", "module:conftest:tiny_video_net", "--frames", "4", "--size", "32", "--pairs", "4",
            "--bootstrap", "0", "--workers", "0", "--quiet", "--data", "sample:"]
    assert main(["measure", *fast, "--stylize-on", "device", "--out", str(tmp_path / "device")]) == 0
    assert main(["measure", *fast, "--out", str(tmp_path / "auto")]) == 0
    device, auto = (json.loads((tmp_path / name / "config.json").read_text()) for name in ("device", "auto"))
    assert device["arguments"]["stylize_on"] == "device" and "stylize_on" not in auto["arguments"]
    on_device, on_workers = (json.loads((tmp_path / name / "result.json").read_text()) for name in ("device", "auto"))
    assert on_device["stylize_on"] == "device" and "stylize_on" not in on_workers  # on the CPU auto: the workers
    assert on_device["layers"] == on_workers["layers"]  # palette: exact on this CPU


def test_a_batch_of_pairs_with_two_clips_each(clips):
    from stlens.core.pair import Pair

    a, b = (torch.from_numpy(c[:4, :32, :32].copy()) for c in clips[:2])
    style = clip_style("palette", 1, 4, 32, 32, mean=SPEC.mean, std=SPEC.std)
    pairs = [Pair(DYNAMIC, a, b, styles=(style, style)),
             Pair(STATIC, b, a, styles=(style, style.shuffled([1, 0, 3, 2])))]
    batch = PairBatch.of(pairs)
    assert batch.inputs.shape == (4, 4, 32, 32, 3) and batch.styles.source is None
    inputs = batch.model_inputs(torch.device("cpu"))
    expected = [palette(x.numpy(), 1) for x in (a, b, b, a)]
    expected[3] = expected[3][[1, 0, 3, 2]]
    assert torch.equal(inputs, torch.stack([to_model_input(x, SPEC) for x in expected]))
    with pytest.raises(StlensError, match="mixes pairs styled on the device"):
        PairBatch.of([pairs[0], Pair(DYNAMIC, torch.zeros(3, 4, 32, 32), torch.zeros(3, 4, 32, 32))])
