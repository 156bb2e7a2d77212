"""Checkpoints written by other training frameworks, for ``stlens track``: PyTorch Lightning ``.ckpt`` files and
Hugging Face ``Trainer`` ``checkpoint-N/`` folders.

- Lightning: ``*.ckpt`` in the folder given (or its ``checkpoints/``), e.g. ``lightning_logs/version_0/checkpoints``;
  the step is the file's ``global_step``; the weights are its ``state_dict``.
- Hugging Face: ``checkpoint-N/`` subfolders (N is the global step) holding ``model.safetensors`` or
  ``pytorch_model.bin``.

Everything is read tensors-only (safetensors, or ``torch.load(weights_only=True)``: nothing is unpickled). The keys
carry the prefix of the attribute that holds the video model (Lightning's ``model.`` of ``self.model``, a wrapper's
``model.``, DDP's ``module.``, ``torch.compile``'s ``_orig_mod.``): the prefix whose removal gives exactly the
model's own keys is stripped (``strip_prefix``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from stlens.errors import StlensError
from stlens.train.checkpoints import ADVICE, Checkpoint, CorruptCheckpoint

log = logging.getLogger("stlens")

LIGHTNING_SUFFIX = ".ckpt"
LIGHTNING_STEP = re.compile(r"(?:^|[-_])step=(\d+)")
HF_FOLDER = re.compile(r"checkpoint-(\d+)")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _lightning_step(path: Path) -> int | None:
    """The ``global_step`` a ``.ckpt`` records (read memory-mapped), else the ``step=N`` of its name; None when
    neither can be read."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if isinstance(obj, dict) and isinstance(obj.get("global_step"), int):
            return int(obj["global_step"])
    except Exception:  # noqa: BLE001 - a damaged file: its name may still say the step (then it is skipped on load)
        pass
    match = LIGHTNING_STEP.search(path.stem)
    return int(match.group(1)) if match else None


def lightning_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, file) for the Lightning ``.ckpt`` files in ``folder``, by step; of two files of one step (``last.ckpt``
    beside ``epoch=0-step=4.ckpt``) the first by name is kept."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found: dict[int, Path] = {}
    for path in sorted(folder.glob(f"*{LIGHTNING_SUFFIX}")):
        step = _lightning_step(path)
        if step is None:
            log.warning("skipped %s: neither its global_step nor a step=N in its name can be read", path)
            continue
        found.setdefault(step, path)
    return sorted(found.items())


def hf_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) for the Hugging Face ``checkpoint-N/`` folders in ``folder`` that hold model weights."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = HF_FOLDER.fullmatch(path.name)
        if match and path.is_dir() and any((path / name).is_file() for name in HF_WEIGHTS):
            found.append((int(match.group(1)), path))
    return sorted(found)


def foreign_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """Lightning checkpoints in ``folder`` or ``folder/checkpoints``, else Hugging Face ``checkpoint-N/`` folders."""
    folder = Path(folder)
    return (lightning_checkpoints(folder) or lightning_checkpoints(folder / "checkpoints")
            or hf_checkpoints(folder))


def is_foreign(path: str | Path) -> bool:
    """Whether ``path`` is a Lightning ``.ckpt`` file or a Hugging Face checkpoint folder (not a stlens one)."""
    path = Path(path)
    return path.suffix == LIGHTNING_SUFFIX or path.is_dir()


def read_foreign(path: str | Path) -> dict[str, torch.Tensor]:
    """The raw state dict (prefixes kept) of a Lightning ``.ckpt`` or a Hugging Face checkpoint folder;
    ``CorruptCheckpoint`` naming the file when it cannot be read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        weights = next((path / n for n in HF_WEIGHTS if (path / n).is_file()), None)
        if weights is None:
            raise CorruptCheckpoint(f"{path} holds no {' or '.join(HF_WEIGHTS)}")
        if weights.suffix == ".safetensors":
            try:
                return load_file(str(weights))
            except (SafetensorError, OSError, ValueError) as exc:
                raise CorruptCheckpoint(f"{weights}: damaged or truncated (not a readable safetensors file: {exc}); "
                                        f"{ADVICE}") from exc
    else:
        weights = path
    try:
        obj = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated file or a refused unpickle: one clear message
        raise CorruptCheckpoint(f"{weights}: damaged or truncated, or it holds objects other than tensors and plain "
                                f"values (read with weights_only=True: nothing is unpickled; e.g. hyper-parameters "
                                f"saved as a class instance: save them as plain values): {type(exc).__name__}: "
                                f"{str(exc)[:300]}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # Lightning
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CorruptCheckpoint(f"{weights} does not hold a state_dict of tensors")
    return obj


def strip_prefix(state: dict[str, torch.Tensor], own: set[str] | list[str]) -> dict[str, torch.Tensor]:
    """``state`` with the key prefix removed whose removal leaves exactly the keys ``own`` (the model's); keys with
    other prefixes (a LightningModule's other attributes) are dropped. Without such a prefix: the prefix that leaves
    the most of ``own`` (``load_state_dict`` then names the missing and unexpected keys)."""
    own = set(own)
    if not own or set(state) == own:
        return dict(state)
    counts: dict[str, int] = {}  # prefix → how many of the model's keys it gives
    for key in state:
        for i in [0] + [j + 1 for j, c in enumerate(key) if c == "."]:
            if key[i:] in own:
                counts[key[:i]] = counts.get(key[:i], 0) + 1
    best = ""
    for prefix in sorted(counts, key=lambda p: (-counts[p], len(p))):
        if {k[len(prefix):] for k in state if k.startswith(prefix)} == own:
            best = prefix
            break
    else:
        best = min(counts, key=lambda p: (-counts[p], len(p))) if counts else ""
    return {k[len(best):]: v for k, v in state.items() if k.startswith(best)}


def load_foreign(path: str | Path, model: nn.Module, step: int) -> Checkpoint:
    """Load a Lightning or Hugging Face checkpoint's weights into ``model`` (strict, after ``strip_prefix``)."""
    from stlens.models.weights import load_state_dict

    state = strip_prefix(read_foreign(path), set(model.state_dict()))
    try:
        load_state_dict(model, state, str(path))
    except StlensError as exc:
        raise StlensError(f"{exc} (the checkpoint's keys after removing the prefix of the attribute that holds the "
                          f"model; is `model` the spec of the module trained?)") from None
    return Checkpoint(step, Path(path), {"format": "lightning" if Path(path).suffix == LIGHTNING_SUFFIX else "hf"})
