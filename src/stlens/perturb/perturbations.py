"""The perturbations of ``stlens perturb``, each a function of a decoded, normalised batch (B, 3, T, H, W).

Motion removed (the frames kept, their order or count changed; ``order`` gives the frame index for each output frame):

- ``shuffle``: the T frames permuted, a permutation drawn per clip from (seed, clip index), never the identity;
- ``freeze``: the middle frame (index ⌊T/2⌋) repeated T times;
- ``reverse``: frames T−1, …, 0;
- ``stride``: the temporal stride doubled within the decoded clip: frames 0, 2, 4, …, 2(⌈T/2⌉−1), then the last of
  these repeated to T frames (T = 16: 0, 2, …, 14, then 14 eight more times).

Appearance changed (every frame restyled alike, the motion kept): ``palette`` and ``fourier`` apply the stylizers of
``stlens.video.stylizers`` to the clip's uint8 frames (a style drawn per clip from (seed, clip index)).

``static-mix`` (StillMix-style): each clip blended with a still frame of a clip of another class,
``(1 − α)·clip + α·still`` on every frame, α = ``MIX_ALPHA`` = 0.5 (normalisation is affine, so blending the
normalised tensors blends the pixels). The still is the middle frame of the most recent clip seen (this batch or an
earlier one) of a class drawn per clip from (seed, clip index) among the other classes seen so far; a clip with no
other class seen yet is left unscored (NaN; ``Context.donors`` −1).

A user perturbation is ``(name, fn)``: ``fn`` maps one normalised clip (3, T, H, W) to one of the same shape.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from stlens.core.spec import InputSpec
from stlens.errors import StlensError

MIX_ALPHA = 0.5
MOTION = ("shuffle", "freeze", "reverse", "stride")
APPEARANCE = ("palette", "fourier")
BUILT_IN = (*MOTION, *APPEARANCE, "static-mix")
DEFAULT = BUILT_IN
CLEAN = "clean"
_SALT = 0x9E27B


def clip_rng(seed: int, name: str, clip: int) -> np.random.Generator:
    """The generator of one clip's perturbation: the same clip gets the same draw whatever the batch size."""
    return np.random.default_rng([seed, _SALT, zlib.crc32(name.encode()), clip])


def shuffle_order(frames: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of ``frames`` frames that is not the identity (for ≥ 2 frames)."""
    order = rng.permutation(frames)
    while frames > 1 and np.array_equal(order, np.arange(frames)):
        order = rng.permutation(frames)
    return order


def freeze_order(frames: int) -> np.ndarray:
    """The middle frame ⌊T/2⌋, T times."""
    return np.full(frames, frames // 2)


def reverse_order(frames: int) -> np.ndarray:
    return np.arange(frames)[::-1].copy()


def stride_order(frames: int) -> np.ndarray:
    """Frames 0, 2, 4, … of the clip, the last of them repeated to ``frames`` frames."""
    kept = np.arange(0, frames, 2)
    return np.concatenate([kept, np.full(frames - len(kept), kept[-1])])


def blend(clip: torch.Tensor, still: torch.Tensor, alpha: float = MIX_ALPHA) -> torch.Tensor:
    """``(1 − alpha)·clip + alpha·still``, the still (3, H, W) on every frame of the clip (3, T, H, W)."""
    return (1 - alpha) * clip + alpha * still[:, None]


@dataclass
class Context:
    """What a perturbation may use besides the batch: the clips' indices and labels, the input spec, the seed, and
    static-mix's pool of stills (class → the middle frame of the most recent clip of that class)."""

    indices: np.ndarray
    labels: np.ndarray
    spec: InputSpec
    seed: int
    stills: dict[int, torch.Tensor] = field(default_factory=dict)
    donors: np.ndarray | None = None  # static-mix: the class mixed into each clip (−1: none)


@dataclass(frozen=True)
class Perturbation:
    """A named perturbation: ``apply(batch, context) -> batch``; ``kind``: motion, appearance, static-mix or user."""

    name: str
    kind: str
    apply: Callable[[torch.Tensor, Context], torch.Tensor]


def _ordered(name: str, order_of: Callable[[int, np.random.Generator], np.ndarray]):
    def apply(batch: torch.Tensor, context: Context) -> torch.Tensor:
        frames = batch.shape[2]
        return torch.stack([clip[:, torch.from_numpy(order_of(frames, clip_rng(context.seed, name, int(i))))]
                            for clip, i in zip(batch, context.indices, strict=True)])

    return apply


def _restyled(name: str):
    def apply(batch: torch.Tensor, context: Context) -> torch.Tensor:
        from stlens.video.sampling import to_frames, to_model_input
        from stlens.video.stylizers import fourier, palette

        stylize = palette if name == "palette" else fourier
        out = []
        for clip, i in zip(batch, context.indices, strict=True):
            style = int(clip_rng(context.seed, name, int(i)).integers(2**31 - 1))
            out.append(to_model_input(stylize(to_frames(clip, context.spec), style), context.spec))
        return torch.stack(out).to(batch.dtype)

    return apply


def _static_mix(batch: torch.Tensor, context: Context) -> torch.Tensor:
    middle = batch.shape[2] // 2
    for clip, label in zip(batch, context.labels, strict=True):
        context.stills[int(label)] = clip[:, middle].clone()
    out, donors = batch.clone(), np.full(len(batch), -1)
    for b, (label, i) in enumerate(zip(context.labels, context.indices, strict=True)):
        others = sorted(c for c in context.stills if c != int(label))
        if not others:
            continue  # left as it is and unscored
        donors[b] = others[int(clip_rng(context.seed, "static-mix", int(i)).integers(len(others)))]
        out[b] = blend(batch[b], context.stills[int(donors[b])])
    context.donors = donors
    return out


def _user(name: str, fn: Callable[[torch.Tensor], torch.Tensor]):
    def apply(batch: torch.Tensor, context: Context) -> torch.Tensor:
        out = []
        for clip in batch:
            changed = fn(clip.clone())
            if not isinstance(changed, torch.Tensor) or tuple(changed.shape) != tuple(clip.shape):
                shape = tuple(changed.shape) if isinstance(changed, torch.Tensor) else type(changed).__name__
                raise StlensError(f"`perturbations`: '{name}' must map a clip {tuple(clip.shape)} to a tensor of the "
                                  f"same shape, got {shape}")
            out.append(changed.to(clip.dtype))
        return torch.stack(out)

    return apply


def built_in(name: str) -> Perturbation:
    if name == "shuffle":
        return Perturbation(name, "motion", _ordered(name, shuffle_order))
    if name in ("freeze", "reverse", "stride"):
        order = {"freeze": freeze_order, "reverse": reverse_order, "stride": stride_order}[name]
        return Perturbation(name, "motion", _ordered(name, lambda frames, _rng: order(frames)))
    if name in APPEARANCE:
        return Perturbation(name, "appearance", _restyled(name))
    if name == "static-mix":
        return Perturbation(name, "static-mix", _static_mix)
    raise StlensError(f"`perturbations`: unknown '{name}'; built in: {', '.join(BUILT_IN)}, or pass (name, fn)")


def parse_perturbations(value: str | Sequence) -> list[Perturbation]:
    """``"shuffle,freeze"``, or a sequence of built-in names and ``(name, fn)`` user perturbations."""
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
    found: list[Perturbation] = []
    for item in items:
        if isinstance(item, Perturbation):
            found.append(item)
        elif isinstance(item, str):
            found.append(built_in(item))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and callable(item[1]):
            if not item[0] or item[0] in BUILT_IN:
                raise StlensError(f"`perturbations`: a user perturbation needs its own name, got '{item[0]}'")
            found.append(Perturbation(item[0], "user", _user(*item)))
        else:
            raise StlensError(f"`perturbations`: each item is a built-in name or (name, fn), got {item!r}")
    names = [p.name for p in found]
    if not found:
        raise StlensError("`perturbations` is empty; built in: " + ", ".join(BUILT_IN))
    repeated = sorted({n for n in names if names.count(n) > 1} | ({CLEAN} & set(names)))
    if repeated:
        raise StlensError(f"`perturbations`: each name once and none called '{CLEAN}', got {', '.join(repeated)}")
    return found
