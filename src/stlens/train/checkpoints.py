"""Training checkpoints: ``DIR/checkpoints/step_NNNNNN.safetensors`` (model weights, what ``--weights`` and
``stlens track`` read), ``step_NNNNNN.json`` (step, metrics, the run config) and ``step_NNNNNN.state.safetensors``
(optimizer moments and RNG state, for an exact resume). Everything is tensors + JSON: nothing is unpickled."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from stlens.errors import StlensError
from stlens.files import atomic_write, write_json

STEP_FILE = re.compile(r"step_(\d+)\.safetensors$")


def checkpoint_path(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"step_{step:06d}.safetensors"


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, weights file) for every complete checkpoint in ``folder`` (weights and JSON both present), by step."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = STEP_FILE.fullmatch(path.name)
        if match and path.with_suffix(".json").is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}

    def write(handle) -> None:
        from safetensors.torch import save

        handle.write(save(tensors, metadata=metadata))

    atomic_write(path, write)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten an optimizer state into tensors (``state/<param>/<key>``) and JSON scalars."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{index}/{key}"] = value
            else:
                scalars["state"].setdefault(str(index), {})[key] = value
    return tensors, scalars


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                      scalars: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("state/"):
            _, index, key = name.split("/", 2)
            state.setdefault(int(index), {})[key] = value
    for index, entry in scalars["state"].items():
        state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})


@dataclass
class Checkpoint:
    step: int
    weights: Path
    info: dict[str, Any]


def save_checkpoint(folder: str | Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    info: dict[str, Any]) -> Path:
    """Write the three files of one checkpoint; the JSON is written last, so a checkpoint without it is incomplete
    (an interrupted save) and is ignored by ``list_checkpoints``."""
    weights = checkpoint_path(folder, step)
    _save_tensors(weights, model.state_dict(), metadata={"step": str(step)})
    tensors, scalars = optimizer_tensors(optimizer)
    tensors["rng/torch"] = torch.get_rng_state()
    _save_tensors(weights.with_name(weights.stem + ".state.safetensors"), tensors)
    write_json(weights.with_suffix(".json"), {**info, "step": step, "optimizer": scalars})
    return weights


def load_checkpoint(weights: str | Path, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None) -> Checkpoint:
    """Load the model (strict) and, when given, the optimizer and torch RNG state of a checkpoint."""
    from stlens.models.weights import load_state_dict

    weights = Path(weights)
    info_path = weights.with_suffix(".json")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StlensError(f"cannot read checkpoint info {info_path}: {exc}") from exc
    load_state_dict(model, load_file(str(weights)), str(weights))
    if optimizer is not None:
        state_path = weights.with_name(weights.stem + ".state.safetensors")
        if not state_path.is_file():
            raise StlensError(f"{state_path} is missing: cannot resume the optimizer from {weights}")
        tensors = load_file(str(state_path))
        torch.set_rng_state(tensors.pop("rng/torch"))
        restore_optimizer(optimizer, tensors, info["optimizer"])
    return Checkpoint(int(info["step"]), weights, info)


def save_weights(path: str | Path, model: nn.Module, metadata: dict[str, str] | None = None) -> Path:
    """Model weights only, as safetensors (for bundling)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(path), metadata=metadata)
    return path
