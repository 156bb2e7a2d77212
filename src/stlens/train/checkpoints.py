"""Training checkpoints: ``DIR/checkpoints/step_NNNNNN.safetensors`` (model weights, what ``--weights`` and
``stlens track`` read), ``step_NNNNNN.json`` (step, metrics, the run config) and ``step_NNNNNN.state.safetensors``
(optimizer moments and RNG state, for an exact resume). Everything is tensors + JSON: nothing is unpickled.

A checkpoint is *complete* once its JSON is written (it is written last). A complete checkpoint whose files cannot be
read (a truncated ``.safetensors``, an invalid JSON) raises ``CorruptCheckpoint``; ``stlens train`` resumes from the
previous readable one and ``stlens track`` skips it, both with a warning naming the file. The damaged files are never
deleted: when a resumed run writes that step again, they are first renamed to ``<name>.corrupt`` beside it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from stlens.errors import StlensError
from stlens.files import atomic_write, check_format, versioned, write_json

STEP_FILE = re.compile(r"step_(\d+)\.safetensors$")


class CorruptCheckpoint(StlensError):
    """A complete checkpoint (its JSON exists) whose files cannot be read; the message names the file."""


#: what to do about a damaged checkpoint (``stlens train`` and ``stlens track`` skip it on their own)
ADVICE = "delete it, or resume from an earlier checkpoint"


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


def state_path(weights: str | Path) -> Path:
    """The optimizer + RNG file of the checkpoint whose weights are ``weights``."""
    weights = Path(weights)
    return weights.with_name(weights.stem + ".state.safetensors")


def read_info(weights: str | Path) -> dict[str, Any]:
    """The JSON of a checkpoint (step, metrics, run config, optimizer scalars); ``CorruptCheckpoint`` when it cannot
    be read or is not a checkpoint's."""
    path = Path(weights).with_suffix(".json")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpoint(f"{path}: damaged or truncated checkpoint info ({exc}); {ADVICE}") from exc
    if not isinstance(info, dict) or not isinstance(info.get("step"), int):
        raise CorruptCheckpoint(f"{path}: damaged or truncated checkpoint info (not a JSON object with its step); "
                                f"{ADVICE}")
    check_format(info, path)  # a newer format is not damage: a StlensError, never skipped as corrupt
    return info


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint's ``.safetensors`` file; ``CorruptCheckpoint`` naming it when it is missing, truncated or not a
    safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise CorruptCheckpoint(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CorruptCheckpoint(f"{path}: damaged or truncated (not a readable safetensors file: {exc}); {ADVICE}"
                                ) from exc


def set_aside(weights: str | Path) -> list[Path]:
    """Rename the existing files of a damaged checkpoint to ``<name>.corrupt`` (``.corrupt2`` … when taken), so that
    writing the same step again destroys nothing; returns the new names."""
    weights = Path(weights)
    moved = []
    for path in (weights, state_path(weights), weights.with_suffix(".json")):
        if not path.exists():
            continue
        number = 1
        target = path.with_name(path.name + ".corrupt")
        while target.exists():
            number += 1
            target = path.with_name(f"{path.name}.corrupt{number}")
        path.rename(target)
        moved.append(target)
    return moved


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
    _save_tensors(state_path(weights), tensors)
    write_json(weights.with_suffix(".json"), versioned({**info, "step": step, "optimizer": scalars}))
    return weights


def update_info(weights: str | Path, changes: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a complete checkpoint's JSON with ``changes`` merged in (atomically: the checkpoint stays complete)."""
    info = versioned({**read_info(weights), **changes})
    write_json(Path(weights).with_suffix(".json"), info)
    return info


def load_checkpoint(weights: str | Path, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None = None) -> Checkpoint:
    """Load the model (strict) and, when given, the optimizer and torch RNG state of a checkpoint. Every file is
    read before anything is loaded, so an unreadable file (``CorruptCheckpoint``, naming it) leaves the model, the
    optimizer and the RNG as they were."""
    from stlens.models.weights import load_state_dict

    weights = Path(weights)
    info = read_info(weights)
    state = read_tensors(weights)
    tensors = None
    if optimizer is not None:
        tensors = read_tensors(state_path(weights))
        if "rng/torch" not in tensors or not isinstance(info.get("optimizer"), dict):
            raise CorruptCheckpoint(f"{state_path(weights)} holds no optimizer/RNG state: cannot resume from it")
    load_state_dict(model, state, str(weights))
    if optimizer is not None and tensors is not None:
        torch.set_rng_state(tensors.pop("rng/torch"))
        try:
            restore_optimizer(optimizer, tensors, info["optimizer"])
        except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
            raise CorruptCheckpoint(f"the optimizer state in {state_path(weights)} and {weights.with_suffix('.json')}"
                                    f" cannot be restored ({type(exc).__name__}: {exc})") from exc
    return Checkpoint(int(info["step"]), weights, info)
