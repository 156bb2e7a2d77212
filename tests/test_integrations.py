"""stlens inside the training loop: the Lightning and Hugging Face ``BiasCallback`` measure the model being trained
every N steps and log a curve identical (1e-9) to ``stlens track`` on the checkpoints the framework saved at those
steps (Lightning ``.ckpt``, Hugging Face ``checkpoint-N/``); the TensorBoard event files are read back. Also
``--tensorboard`` of ``stlens track`` and ``stlens train``, and the key-prefix stripping of foreign checkpoints."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import stlens
from stlens.cli import main
from stlens.train.foreign import strip_prefix

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "stlens:c2d?classes=2&width=4"
DATA = "synth:motion?n=16&frames=8&size=16&seed=0"
LAYERS = ["stage3", "stage4"]
PAIRS, BOOTSTRAP, SEED = 8, 20, 3
COMPARED = ("dynamic", "static", "residual", "bias", "dynamic_lo", "dynamic_hi", "static_lo", "static_hi")


def clips(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 8, 16, 16, generator=generator), torch.arange(n) % 2


def events(folder) -> dict[str, dict[int, float]]:
    """tag → {step: value} of every TensorBoard event file under ``folder``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, dict[int, float]] = {}
    for path in sorted(p for p in folder.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            found.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    return found


def tracked(out, checkpoints, tensorboard=None) -> dict:
    args = ["track", "--model", MODEL, "--frames", "8", "--size", "16", "--checkpoints", str(checkpoints),
            "--data", DATA, "--layers", ",".join(LAYERS), "--pairs", str(PAIRS), "--bootstrap", str(BOOTSTRAP),
            "--seed", str(SEED), "--workers", "0", "--device", "cpu", "--out", str(out), "--quiet"]
    assert main(args + (["--tensorboard", str(tensorboard)] if tensorboard else [])) == 0
    return json.loads((out / "track.json").read_text())


def same_curve(live: list[dict], offline: list[dict], steps: list[int]) -> float:
    """The largest difference between the callback's rows and track's at ``steps`` (every layer, every column)."""
    key = {(r["step"], r["layer"]): r for r in offline}
    worst = 0.0
    for row in live:
        if row["step"] not in steps:
            continue
        other = key[(row["step"], row["layer"])]
        for column in COMPARED:
            if row[column] is None or other[column] is None:
                assert row[column] is None and other[column] is None
                continue
            worst = max(worst, abs(row[column] - other[column]))
        assert row["units_dynamic"] == other["units_dynamic"] and row["units_static"] == other["units_static"]
    assert {(r["step"], r["layer"]) for r in live if r["step"] in steps} == {(s, n) for s in steps for n in LAYERS}
    return worst


def test_lightning_callback_equals_track_on_its_checkpoints(tmp_path):
    lightning = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from stlens.integrations.lightning import BiasCallback

    class Lit(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.model = stlens.load_model(MODEL, frames=8, size=16).module.train()
            self.loss = nn.CrossEntropyLoss()  # another attribute: its keys (none here) are not the model's
            self.modes: list[bool] = []

        def training_step(self, batch, index):
            self.modes.append(all(m.training for m in self.model.modules()))  # after each measurement too
            x, y = batch
            return self.loss(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    class SaveStepZero(lightning.Callback):
        def on_train_start(self, trainer, pl_module):
            trainer.save_checkpoint(tmp_path / "ckpt" / "step=0.ckpt")

    x, y = clips()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=2)
    callback = BiasCallback(DATA, LAYERS, every=2, out=tmp_path / "live", model=MODEL, frames=8, size=16,
                            pairs=PAIRS, bootstrap=BOOTSTRAP, seed=SEED)
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1, filename="{step}")
    trainer = lightning.Trainer(max_steps=4, accelerator="cpu", devices=1, logger=TensorBoardLogger(tmp_path / "tb"),
                                callbacks=[SaveStepZero(), callback, saver], enable_progress_bar=False,
                                enable_model_summary=False, enable_checkpointing=True, num_sanity_val_steps=0)
    module = Lit()
    trainer.fit(module, loader)
    assert module.modes == [True] * 4  # the training mode was given back after each measurement

    live = json.loads((tmp_path / "live" / "track.json").read_text())
    assert live["meta"]["steps"] == [0, 2, 4] and live["meta"]["framework"] == "lightning"
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt")) == ["step=0.ckpt", "step=2.ckpt",
                                                                          "step=4.ckpt"]
    offline = tracked(tmp_path / "track", tmp_path / "ckpt")
    assert offline["meta"]["steps"] == [0, 2, 4]
    assert same_curve(live["rows"], offline["rows"], [0, 2, 4]) <= 1e-9
    # the curve moved (the comparison is not of three identical models)
    assert len({(r["dynamic"], r["static"]) for r in live["rows"] if r["layer"] == "stage4"}) > 1

    logged = events(tmp_path / "tb")  # the Lightning logger's event files
    for row in live["rows"]:
        for key in ("dynamic", "static"):
            assert math.isclose(logged[f"stlens/{row['layer']}/{key}"][row["step"]], row[key], rel_tol=1e-6)
    assert (tmp_path / "live" / "track_stage4.png").is_file()
    # stlens report shows the callback's curve
    assert main(["report", str(tmp_path / "live"), "--out", str(tmp_path / "r.html"), "--examples", "0"]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "3 steps (0 … 4)" in html[html.index('id="tracks"'):]


def test_hf_callback_equals_track_on_its_checkpoint_folders(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from stlens.integrations.hf import BiasCallback

    class Wrapped(nn.Module):  # what a Trainer trains: forward(**batch) -> {"loss", "logits"}
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.model = stlens.load_model(MODEL, frames=8, size=16).module.train()
            self.modes: list[bool] = []

        def forward(self, video, labels=None):
            self.modes.append(all(m.training for m in self.model.modules()))
            logits = self.model(video)
            return {"loss": F.cross_entropy(logits, labels), "logits": logits}

    x, y = clips()
    dataset = [{"video": x[i], "labels": y[i]} for i in range(len(y))]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=4, save_steps=2, save_strategy="steps",
        per_device_train_batch_size=2, learning_rate=0.05, report_to="none", use_cpu=True, logging_steps=1,
        disable_tqdm=True, dataloader_num_workers=0, seed=0)
    callback = BiasCallback(DATA, LAYERS, every=2, out=tmp_path / "live", model=MODEL, frames=8, size=16,
                            pairs=PAIRS, bootstrap=BOOTSTRAP, seed=SEED, tensorboard=tmp_path / "tb")
    model = Wrapped()
    transformers.Trainer(model=model, args=args, train_dataset=dataset, callbacks=[callback]).train()
    assert model.modes == [True] * 4  # the training mode was given back after each measurement

    live = json.loads((tmp_path / "live" / "track.json").read_text())
    assert live["meta"]["steps"] == [0, 2, 4] and live["meta"]["framework"] == "hf"
    assert sorted(p.name for p in (tmp_path / "hf").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    offline = tracked(tmp_path / "track", tmp_path / "hf", tensorboard=tmp_path / "track-tb")
    assert offline["meta"]["steps"] == [2, 4]
    assert same_curve(live["rows"], offline["rows"], [2, 4]) <= 1e-9

    logged = events(tmp_path / "tb")
    from_track = events(tmp_path / "track-tb")  # stlens track --tensorboard
    for row in live["rows"]:
        for key in ("dynamic", "static", "bias"):
            tag = f"stlens/{row['layer']}/{key}"
            assert math.isclose(logged[tag][row["step"]], row[key], rel_tol=1e-6)
            if row["step"] in (2, 4):
                assert math.isclose(from_track[tag][row["step"]], row[key], rel_tol=1e-6)

    # a pytorch_model.bin checkpoint (weights_only) reads the same
    folder = tmp_path / "bin" / "checkpoint-4"
    folder.mkdir(parents=True)
    from safetensors.torch import load_file

    torch.save(load_file(str(tmp_path / "hf" / "checkpoint-4" / "model.safetensors")), folder / "pytorch_model.bin")
    again = tracked(tmp_path / "track-bin", tmp_path / "bin")
    assert same_curve([r for r in offline["rows"] if r["step"] == 4], again["rows"], [4]) == 0.0


def test_strip_prefix_finds_the_attribute_of_the_model():
    own = {"stem.weight", "stem.bias", "head.weight"}
    tensor = torch.zeros(1)
    state = {f"model.{k}": tensor for k in own} | {"ema.stem.weight": tensor, "ema.stem.bias": tensor,
                                                   "ema.head.weight": tensor, "criterion.weight": tensor}
    assert set(strip_prefix(state, own)) == own
    assert set(strip_prefix({f"model.module._orig_mod.{k}": tensor for k in own}, own)) == own
    assert set(strip_prefix({k: tensor for k in own}, own)) == own
    partial = strip_prefix({"model.stem.weight": tensor, "model.other": tensor}, own)  # the closest: load names it
    assert set(partial) == {"stem.weight", "other"}


def test_train_tensorboard_writes_the_metrics_lines(tmp_path):
    pytest.importorskip("tensorboard")
    run, board = tmp_path / "run", tmp_path / "tb"
    assert main(["train", "--model", "module:conftest:tiny_classifier", "--frames", "8", "--size", "16", "--data",
                 DATA, "--test-data", "none", "--steps", "3", "--batch-size", "2", "--eval-clips", "2",
                 "--checkpoint-every-steps", "3", "--device", "cpu", "--out", str(run), "--tensorboard", str(board),
                 "--quiet"]) == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = events(board)
    for line in lines:
        kind = line["kind"]
        for key, value in line.items():
            if key not in ("step", "kind", "seconds", "steps_averaged") and isinstance(value, float):
                assert math.isclose(logged[f"{kind}/{key}"][line["step"]], value, rel_tol=1e-6)
    assert "train/loss" in logged and "eval/train_acc" in logged


def test_the_integrations_load_only_when_imported():
    code = ("import sys, stlens, stlens.integrations, stlens.train.tracking; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', "
            "'transformers', 'tensorboard')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_clear_errors(monkeypatch, tmp_path):
    import importlib

    from stlens.errors import StlensError
    from stlens.integrations.live import LiveTrack, resolve_handle

    class Root(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = stlens.load_model(MODEL, frames=8, size=16).module

    with pytest.raises(StlensError, match="`every` must be"):
        LiveTrack(DATA, every=0)
    with pytest.raises(StlensError, match="`pairs` must be"):
        LiveTrack(DATA, pairs=0)
    with pytest.raises(StlensError, match="does not describe its attribute `model`"):
        resolve_handle("stlens:i3d?classes=2&width=4", "model", Root(), frames=8, size=16)
    root = Root()
    handle = resolve_handle(MODEL, "model", root, frames=8, size=16)
    assert handle.module is root.model and handle.default_layers[-1] == "stage4"
    # a folder holding a complete track run is refused before any measurement (unless overwrite)
    out = tmp_path / "track"
    live = LiveTrack(DATA, LAYERS, 2, out, model=MODEL, frames=8, size=16, pairs=4, bootstrap=0)
    live.start(root)
    live.measure(0)
    live.finish()
    with pytest.raises(StlensError, match="already holds"):
        LiveTrack(DATA, LAYERS, 2, out, model=MODEL, frames=8, size=16, pairs=4).start(root)
    # without the framework: a clear error naming the extra
    for name in ("lightning.pytorch", "pytorch_lightning", "stlens.integrations.lightning"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "stlens.integrations.lightning")
    with pytest.raises(StlensError, match=r"stlens\[lightning\]"):
        importlib.import_module("stlens.integrations.lightning")


class Settings:  # a class instance in a checkpoint: weights_only refuses it
    pass


def test_track_skips_unreadable_lightning_checkpoints(tmp_path, caplog):
    handle = stlens.load_model(MODEL, frames=8, size=16)
    state = {f"model.{k}": v for k, v in handle.module.state_dict().items()}
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"global_step": 2, "state_dict": state, "hyper_parameters": {"lr": 0.1}}, folder / "epoch=0-step=2.ckpt")
    (folder / "epoch=0-step=4.ckpt").write_bytes((folder / "epoch=0-step=2.ckpt").read_bytes()[:100])  # truncated
    torch.save({"global_step": 6, "state_dict": state, "hyper_parameters": Settings()}, folder / "step=6.ckpt")
    result = stlens.track(MODEL, tmp_path, DATA, LAYERS, pairs=4, frames=8, size=16, bootstrap=0, workers=0,
                          device="cpu", progress=False)
    assert result.meta["steps"] == [2]
    reasons = {s["step"]: s["reason"] for s in result.meta["skipped"]}
    assert set(reasons) == {4, 6} and "weights_only" in reasons[6] and "plain values" in reasons[6]
    direct = stlens.measure(handle, stlens.train.tracking.track_pairs(handle, DATA, 4), LAYERS, bootstrap=0,
                            progress=False)
    assert [r["dynamic"] for r in result.rows] == [direct[name].percent["dynamic"] for name in LAYERS]


def test_a_bf16_model_is_measured_in_fp32_and_left_as_it_was():
    import copy

    from stlens.train.tracking import BiasTracker, track_pairs

    handle = stlens.load_model(MODEL, frames=8, size=16)
    handle.module.to(torch.bfloat16).train()
    handle.module.stage4.eval()  # a submodule in its own mode
    pairs = track_pairs(handle, DATA, 4)
    rows = BiasTracker(pairs, LAYERS, handle=handle, bootstrap=0).measure_now(0, handle.module)
    assert all(p.dtype == torch.bfloat16 for p in handle.module.parameters())
    assert handle.module.training and not handle.module.stage4.training and handle.module.stage3.training
    widened = copy.deepcopy(handle.module).float()
    direct = stlens.measure(widened, pairs, LAYERS, bootstrap=0, progress=False)
    assert [r["dynamic"] for r in rows] == [direct[name].percent["dynamic"] for name in LAYERS]
