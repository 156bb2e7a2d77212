"""--device and --precision: explicit CPU runs equal the default, every available device gives the CPU's dims and
classes (so the CUDA/MPS paths run wherever there is a GPU), and unavailable devices or precisions are refused."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

import stlens
from stlens.cli import main
from stlens.core.device import autocast, cpu_has_native_bf16, exact_fp32, resolve_device, resolve_precision
from stlens.errors import StlensError
from stlens.measure.run import to_device
from stlens.models.taps import LayerTaps

DEVICES = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
           + (["mps"] if torch.backends.mps.is_available() else []))
DATA = "synth:motion?split=test&n=32"
MODEL = ["--model", "stlens:i3d", "--weights", "bundled:i3d-motion"]
FAST = [*MODEL, "--data", DATA, "--pairs", "8", "--bootstrap", "20", "--quiet"]
VOLATILE = ("timing", "run_id")


def _result(folder) -> dict:
    doc = json.loads((folder / "result.json").read_text())
    return {k: v for k, v in doc.items() if k not in VOLATILE}


def _arguments(folder) -> dict:
    return json.loads((folder / "config.json").read_text())["arguments"]


@pytest.fixture(scope="module")
def pairs():
    handle = stlens.load_model("stlens:i3d", "bundled:i3d-motion")
    return list(stlens.make_pairs(stlens.open_data(DATA), handle.input, 8, seed=0))


@pytest.fixture(scope="module")
def cpu_result(pairs):
    handle = stlens.load_model("stlens:i3d", "bundled:i3d-motion", device="cpu")
    return stlens.measure(handle, pairs, bootstrap=20, progress=False)


def test_explicit_cpu_equals_the_default(tmp_path):
    assert main(["measure", *FAST, "--out", str(tmp_path / "default")]) == 0
    assert main(["measure", *FAST, "--device", "cpu", "--out", str(tmp_path / "cpu")]) == 0
    default, cpu = _result(tmp_path / "default"), _result(tmp_path / "cpu")
    assert cpu["device"] == "cpu" and cpu["precision"] == "fp32"
    assert _arguments(tmp_path / "default")["device"] == "auto" and _arguments(tmp_path / "cpu")["device"] == "cpu"
    if str(resolve_device("auto")) == "cpu":
        assert default == cpu
    else:  # auto chose a GPU: the same dims and classes, numbers up to float rounding
        assert default["device"] == str(resolve_device("auto"))
        assert [layer["dims"] for layer in default["layers"]] == [layer["dims"] for layer in cpu["layers"]]


@pytest.mark.parametrize("device", DEVICES)
def test_every_device_gives_the_cpu_dims_and_classes(device, pairs, cpu_result):
    handle = stlens.load_model("stlens:i3d", "bundled:i3d-motion", device=device)
    assert handle.device.type == device
    assert all(x.device.type == device for x in handle.example_inputs(2))
    result = stlens.measure(handle, pairs, bootstrap=20, progress=False)  # device=None: where the model is
    assert result.meta["device"] == str(resolve_device(device)) and result.meta["precision"] == "fp32"
    assert result.config["arguments"]["device"] == str(resolve_device(device))
    for ours, cpu in zip(result.layers, cpu_result.layers, strict=True):
        assert ours.layer == cpu.layer and ours.dims == cpu.dims and list(ours.classes) == list(cpu.classes)
        assert abs(ours.score["dynamic"] - cpu.score["dynamic"]) < 1e-4
    assert handle.device.type == device  # left where it was put


@pytest.mark.parametrize("device", DEVICES)
def test_measure_moves_the_model_and_the_pairs(device, pairs):
    handle = stlens.load_model("stlens:i3d", "bundled:i3d-motion")  # built on the CPU
    result = stlens.measure(handle, pairs, ["stem"], bootstrap=0, device=device, progress=False)
    assert handle.device.type == device
    assert result.meta["device"] == str(resolve_device(device))
    batch = to_device((torch.zeros(2, 3), torch.ones(1)), resolve_device(device))
    assert all(x.device.type == device for x in batch)


@pytest.mark.parametrize("device", DEVICES)
def test_pooled_latents_stay_on_the_device_and_non_finite_ones_are_named(device):
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3, padding=1), torch.nn.Flatten(2)).to(device)
    x = torch.rand(2, 3, 4, 8, 8, device=device)
    with LayerTaps(model, ["0", "1"]) as taps, torch.inference_mode():
        taps.reset(batch=2)
        model(x)
        latents = taps.checked(strict=True)
    assert {name: (t.device.type, tuple(t.shape)) for name, t in latents.items()} == {
        "0": (device, (2, 4)), "1": (device, (2, 256))}  # (B, C, T·H·W) tokens: mean over C
    with torch.no_grad():
        model[0].bias.fill_(float("inf"))
    with pytest.raises(StlensError, match="non-finite.*'0'"), LayerTaps(model, ["0"]) as taps, torch.inference_mode():
        taps.reset(batch=2)
        model(x)
        taps.checked(strict=True)


@pytest.mark.parametrize("device", DEVICES)
def test_precision_auto_resolves_per_device_and_is_recorded(device, pairs):
    resolved = resolve_precision("auto", resolve_device(device))
    if device == "cpu":
        assert resolved == ("bf16" if cpu_has_native_bf16(unknown=False) else "fp32")
    elif device == "cuda":
        assert resolved == ("bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp32")
    else:
        assert resolved == "fp32"
    handle = stlens.load_model("stlens:i3d", "bundled:i3d-motion")
    result = stlens.measure(handle, pairs, ["stem"], bootstrap=0, precision="auto", device=device, progress=False)
    assert result.meta["precision"] == resolved
    assert result.config["arguments"]["precision"] == "auto"
    assert all(p.is_contiguous() for p in handle.module.parameters())  # given back in the default layout


def test_precision_auto_is_recorded_by_the_cli(tmp_path):
    out = tmp_path / "auto"
    assert main(["measure", *FAST, "--layers", "stem", "--device", "cpu", "--precision", "auto", "--out",
                 str(out)]) == 0
    assert _result(out)["precision"] == resolve_precision("auto", "cpu")
    assert _arguments(out)["precision"] == "auto"


def test_fp32_runs_without_tf32_and_restores_the_flags():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with exact_fp32():
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == saved


def test_autocast_runs_bf16_and_fp32_runs_as_it_is():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with autocast("cpu", "bf16"):
        reduced = a @ b
    assert reduced.dtype == torch.bfloat16
    assert torch.allclose(reduced.float(), a @ b, rtol=0.05, atol=0.1)
    plain = autocast(torch.device("cpu"), "fp32")
    assert isinstance(plain, contextlib.nullcontext)
    with plain:
        assert (a @ b).dtype == torch.float32
    with pytest.raises(StlensError, match="^`precision` must be resolved"):
        autocast("cpu", "auto")


def test_resolve_device_names_the_argument():
    with pytest.raises(StlensError) as caught:
        resolve_device("tpu")
    assert str(caught.value) == "`device`: unknown device 'tpu'; use auto, cpu, cuda, cuda:K or mps"


def test_resolve_precision():
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(StlensError, match="`precision` fp16 is CUDA autocast only"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(StlensError, match="`precision` must be one of"):
        resolve_precision("fp64", "cpu")
    with pytest.raises(StlensError, match="`precision` bf16 runs on CPUs and CUDA GPUs"):
        resolve_precision("bf16", torch.device("mps"))
    assert resolve_precision("auto", torch.device("mps")) == "fp32"


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cpu:0", "cuda:x", "tpu", ""):
        with pytest.raises(StlensError, match="^`device`: unknown device .*; use auto, cpu, cuda, cuda:K or mps$"):
            resolve_device(bad)
    if torch.cuda.is_available():
        assert resolve_device("cuda").index is not None
        with pytest.raises(StlensError, match="CUDA GPU"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def _refused_args(command: str, tmp_path, video) -> list[str]:
    out = str(tmp_path / "run")
    return {
        "measure": ["measure", *FAST, "--out", out],
        "layers": ["layers", "stlens:i3d"],
        "train": ["train", *MODEL, "--data", "synth:motion?n=16", "--steps", "1", "--out", out],
        "track": ["track", "--model", "stlens:i3d", "--checkpoints", str(tmp_path), "--data", DATA, "--out", out],
        "stylize": ["stylize", "--data", str(video), "--stylizer", "neural", "--out", out],
        "pairs check": ["pairs", "check", "--data", str(video), "--stylizer", "neural", "--out", f"{out}/x.json"],
        "visualize": ["visualize", "--model", "stlens:i3d?width=4", "--target", "class:0", "--out", out],
    }[command]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["measure", "layers", "train", "track", "stylize", "pairs check", "visualize"])
def test_cuda_without_cuda_is_refused_before_any_work(command, tmp_path, capsys, small_video):
    args = _refused_args(command, tmp_path, small_video)
    assert main([*args, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: CUDA is not available" in err
    assert not (tmp_path / "run").exists()


def test_fp16_on_the_cpu_and_unknown_devices_are_refused(tmp_path, capsys):
    assert main(["measure", *FAST, "--device", "cpu", "--precision", "fp16", "--out", str(tmp_path / "a")]) == 2
    assert "--precision fp16 is CUDA autocast only" in capsys.readouterr().err
    assert main(["measure", *FAST, "--device", "gpu0", "--out", str(tmp_path / "b")]) == 2
    assert "--device: unknown device 'gpu0'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_layers_on_an_explicit_device(capsys):
    assert main(["layers", "stlens:i3d", "--device", "cpu"]) == 0
    assert "* = default layer" in capsys.readouterr().out
