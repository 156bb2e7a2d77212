"""Loading checkpoints safely: safetensors, or torch files with ``weights_only=True`` (never a full unpickle)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from stlens.errors import StlensError

STATE_DICT_KEYS = ("state_dict", "model_state", "model", "model_state_dict")
#: what to do about a damaged weights file given by the user
ADVICE = "copy or download the weights file again"


def read_state_dict(path: str | Path, advice: str = ADVICE) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``.safetensors`` or ``.pt/.pth/.pyth`` (tensors only, ``weights_only=True``); a damaged
    file is a ``StlensError`` naming it with ``advice``."""
    path = Path(path)
    if not path.is_file():
        raise StlensError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise StlensError(f"weights file {path} is empty (0 bytes); {advice}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, advice)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal or a truncated file becomes a clear message
        raise StlensError(f"{path}: damaged or truncated, or not a tensors-only checkpoint (weights_only=True; "
                          f"truncated or not a torch checkpoint?): {type(exc).__name__}: {exc}; {advice}") from exc
    for key in STATE_DICT_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise StlensError(f"{path} does not hold a state_dict of tensors; {advice}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _read_safetensors(path: Path, advice: str) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file, or a clear error for a truncated file or a torch/pickle file under that name."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - SafetensorError and OS errors alike become a clear message
        with open(path, "rb") as f:
            head = f.read(4)
        if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
            hint = ("it looks like a torch/pickle checkpoint (zip or pickle data) named .safetensors; "
                    "rename it to .pt to load it tensors-only")
        else:
            hint = f"damaged or truncated, or not a safetensors file; {advice}"
        raise StlensError(f"{path}: cannot read the weights as safetensors ({exc}): {hint}") from exc


def load_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load strictly; a mismatch raises an error listing missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" … (+{len(keys) - 8})" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if shapes:
            mismatched = [f"{k} {tuple(state[k].shape)}≠{tuple(own[k].shape)}" for k in shapes]
            parts.append("shape mismatch: " + show(mismatched))
        raise StlensError(f"weights {source} do not fit the model; " + "; ".join(parts))
    model.load_state_dict(state)
