"""StaticDropout (TPAMI, Kowal et al.): channel dropout on the channels a measurement calls *static*.

``StaticDropout(channels, p)`` is the bare module: in training mode it zeroes each chosen channel (its whole T×H×W
map, independently per clip) with probability p and multiplies the chosen channels that survive by 1/(1−p); the
other channels pass unchanged; in eval mode it is the identity. ``RandomChannelDropout`` is the control: the same
operation on channels drawn at random.

``DropoutSchedule`` puts one after a layer of a model (a forward hook, so the state_dict and layer names do not
change) and re-selects the channels every E steps from a measurement of the current model (``select=static``: the
channels classified static; ``topk:K``: the K largest r_static − r_dynamic; the random control draws the same number
of channels at random). It is a ``stlens train`` callback; each selection is logged to ``OUT/dropout.jsonl``.

Under torchrun every rank calls the schedule at the same steps: the selection is one ``stlens.measure`` over all the
ranks (each measures its share of the pairs; the merged result, hence the channel set, is the same on every rank),
only the rank that ``writes`` logs it, and with ``rows`` each rank draws the masks of the whole global batch and
keeps the rows of its own piece, so that the clips get the masks they get in one process.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stlens.errors import StlensError

log = logging.getLogger("stlens")

SELECTIONS = ("static", "topk")


def _check_p(p: float) -> float:
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise StlensError(f"StaticDropout p must be in [0, 1), got {p}")
    return p


def _as_channels(channels: Sequence[int] | torch.Tensor | np.ndarray, allow_empty: bool) -> torch.Tensor:
    values = torch.as_tensor(np.asarray(channels, dtype=np.int64).reshape(-1))
    if values.numel() == 0 and not allow_empty:
        raise StlensError("StaticDropout got an empty channel set (no static channels were found: use "
                          "select=topk:K, a lower threshold=T in the spec, or another layer)")
    if (values < 0).any():
        raise StlensError(f"StaticDropout channels must be ≥ 0, got {values.tolist()}")
    return torch.unique(values)


class StaticDropout(nn.Module):
    """Zero each of ``channels`` of a clip with probability ``p`` in training mode; identity in eval mode.

    Each chosen channel (dim 1 of a (B, C, T, H, W) or (B, C, H, W) tensor) is zeroed per clip with probability
    ``p``, and the chosen survivors are rescaled by 1/(1−p).

    Args:
        channels: the channels that may be dropped (the static set).
        p: the probability of dropping each of them, per clip.
        generator: a ``torch.Generator`` that makes the draws reproducible (optional).
        layer: the layer it follows (information, shown in training logs).

    Examples:
        >>> import torch
        >>> dropout = stlens.StaticDropout([0, 2], p=0.5, generator=torch.Generator().manual_seed(0))
        >>> x = torch.ones(2, 4, 3, 8, 8)
        >>> dropout(x)[:, :, 0, 0, 0]  # channels 1 and 3 untouched; 0 and 2 dropped or doubled
        tensor([[0., 1., 2., 1.],
                [0., 1., 0., 1.]])
        >>> torch.equal(dropout.eval()(x), x)
        True
    """

    def __init__(self, channels: Sequence[int], p: float = 0.5, generator: torch.Generator | None = None,
                 layer: str = "input"):
        super().__init__()
        self.p = _check_p(p)
        self.layer = layer
        self.generator = generator
        self.channels = _as_channels(channels, allow_empty=False)
        #: (global batch, start, stop): a batch of stop − start clips is rows start:stop of a global batch (one
        #: process's piece of a data-parallel step); its masks are those rows of the global batch's masks
        self.rows: tuple[int, int, int] | None = None

    def set_channels(self, channels: Sequence[int], allow_empty: bool = False) -> None:
        """Replace the channel set (e.g. after re-estimating the static channels); empty only when allowed."""
        self.channels = _as_channels(channels, allow_empty)

    def extra_repr(self) -> str:
        return f"p={self.p}, channels={len(self.channels)}"

    def check_input(self, x: Any) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim not in (4, 5):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise StlensError(f"StaticDropout after '{self.layer}': expected channels in dim 1 of a (B, C, T, H, W) "
                              f"or (B, C, H, W) output, got {shape}")
        if len(self.channels) and int(self.channels.max()) >= x.shape[1]:
            raise StlensError(f"StaticDropout after '{self.layer}': channel {int(self.channels.max())} does not exist "
                              f"(the output has {x.shape[1]} channels)")

    def mask(self, batch: int, num_channels: int, device: torch.device | None = None) -> torch.Tensor:
        """The (B, C) multiplier: 1 for other channels, 0 or 1/(1−p) for the chosen ones."""
        mask = torch.ones(batch, num_channels)
        if len(self.channels) and self.p > 0:
            rows = self.rows
            if rows is not None and rows[2] - rows[1] == batch:
                keep = (torch.rand(rows[0], len(self.channels), generator=self.generator) >= self.p)[rows[1]:rows[2]]
            else:
                keep = torch.rand(batch, len(self.channels), generator=self.generator) >= self.p
            mask[:, self.channels] = keep.float() / (1.0 - self.p)
        return mask if device is None else mask.to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        if not self.training or self.p == 0 or not len(self.channels):
            return x
        mask = self.mask(x.shape[0], x.shape[1], x.device).to(x.dtype)
        return x * mask.view(*mask.shape, *([1] * (x.ndim - 2)))


class RandomChannelDropout(StaticDropout):
    """The control of ``StaticDropout``: ``count`` channels out of ``num_channels`` drawn at random.

    ``redraw`` draws a new set.

    Args:
        count: how many channels may be dropped (1 … ``num_channels``).
        num_channels: the channels of the layer it follows.
        p: the probability of dropping each of them, per clip.
        seed: the seed of the draw of the channels.
        generator: a ``torch.Generator`` that makes the dropout draws reproducible (optional).
        layer: the layer it follows (information, shown in training logs).

    Examples:
        >>> control = stlens.RandomChannelDropout(count=2, num_channels=8, seed=0)
        >>> len(control.channels), all(0 <= c < 8 for c in control.channels.tolist())
        (2, True)
    """

    def __init__(self, count: int, num_channels: int, p: float = 0.5, seed: int = 0,
                 generator: torch.Generator | None = None, layer: str = "input"):
        if not 0 < count <= num_channels:
            raise StlensError(f"RandomChannelDropout count must be in 1..{num_channels}, got {count}")
        self.num_channels = num_channels
        super().__init__(random_channels(count, num_channels, np.random.default_rng(seed)), p, generator, layer)

    def redraw(self, rng: np.random.Generator, count: int | None = None) -> None:
        self.set_channels(random_channels(len(self.channels) if count is None else count, self.num_channels, rng),
                          allow_empty=True)


def random_channels(count: int, num_channels: int, rng: np.random.Generator) -> list[int]:
    return sorted(int(c) for c in rng.choice(num_channels, size=min(count, num_channels), replace=False))


def select_channels(r_static: np.ndarray, r_dynamic: np.ndarray, classes: Sequence[str], select: str,
                    k: int | None = None) -> list[int]:
    """The static set: channels of class ``static``, or the ``k`` largest r_static − r_dynamic (ties: lower index)."""
    if select == "static":
        return [i for i, c in enumerate(classes) if c == "static"]
    if select == "topk":
        if not k or k < 1:
            raise StlensError("select=topk needs K ≥ 1 (select=topk:K)")
        margin = np.asarray(r_static, dtype=np.float64) - np.asarray(r_dynamic, dtype=np.float64)
        return sorted(int(i) for i in np.argsort(-margin, kind="stable")[:k])
    raise StlensError(f"select must be one of {', '.join(SELECTIONS)}, got '{select}'")


@dataclass(frozen=True)
class DropoutPlan:
    """``LAYER:p=0.5:select=static|topk:K:every=E[:start=S][:pairs=N][:threshold=T]`` parsed; ``random`` makes it
    the random-channel control (same count and p, channels drawn at random at the same schedule)."""

    layer: str
    p: float = 0.5
    select: str = "static"
    k: int | None = None
    every: int = 0
    start: int = 0
    pairs: int = 32
    threshold: float = 0.5
    random: bool = False

    @classmethod
    def parse(cls, text: str, random: bool = False) -> DropoutPlan:
        parts = [part.strip() for part in text.split(":")]
        if not parts[0] or "=" in parts[0]:
            raise StlensError(f"dropout spec '{text}' must start with a layer name (LAYER:p=0.5:select=static...)")
        values: dict[str, Any] = {"layer": parts[0], "random": random}
        converters = {"p": float, "every": int, "start": int, "pairs": int, "threshold": float, "k": int}
        previous = None
        for part in parts[1:]:
            if "=" not in part:
                if previous == "select" and part.isdigit():
                    values["k"] = int(part)
                    continue
                raise StlensError(f"dropout spec '{text}': cannot read '{part}' (expected key=value)")
            key, value = part.split("=", 1)
            previous = key
            if key == "select":
                values["select"] = value
            elif key in converters:
                try:
                    values[key] = converters[key](value)
                except ValueError:
                    raise StlensError(f"dropout spec '{text}': {key} must be a number, got '{value}'") from None
            else:
                raise StlensError(f"dropout spec '{text}': unknown option '{key}' (p, select, every, start, pairs, "
                                  f"threshold)")
        plan = cls(**values)
        plan.validate(text)
        return plan

    def validate(self, text: str = "") -> None:
        where = f"dropout spec '{text}': " if text else ""
        _check_p(self.p)
        if self.select not in SELECTIONS:
            raise StlensError(f"{where}select must be static or topk:K, got '{self.select}'")
        if self.select == "topk" and (self.k is None or self.k < 1):
            raise StlensError(f"{where}select=topk needs K ≥ 1 (select=topk:K)")
        if self.every < 0 or self.start < 0:
            raise StlensError(f"{where}every and start must be ≥ 0")
        if self.pairs < 8:
            raise StlensError(f"{where}pairs must be ≥ 8 per factor")


class DropoutSchedule:
    """A StaticDropout (or the random control) after ``plan.layer`` of ``handle.module``, whose channels are
    selected at step ``plan.start`` and re-selected every ``plan.every`` steps (0: once) by measuring the current
    model on ``pairs``. Use as a training callback ``(step, model, trainer)``; ``seed`` fixes the dropout draws
    (reseeded per step, so a resumed run draws the same masks) and the random control's channels. ``writes``:
    whether this process writes the log (rank 0 of a distributed run); ``rows``: see ``StaticDropout.rows``."""

    def __init__(self, plan: DropoutPlan, handle, pairs, seed: int = 0, log_path: str | Path | None = None,
                 precision: str = "fp32", workers: int | None = None, writes: bool = True,
                 rows: tuple[int, int, int] | None = None):
        from stlens.models.taps import resolve_layers

        self.plan, self.handle, self.pairs, self.seed = plan, handle, pairs, seed
        self.precision, self.workers = precision, workers  # of the selection measurements (on the model's device)
        self.log_path = Path(log_path) if log_path else None
        model = handle.module
        resolve_layers(model, [plan.layer])
        self.generator = torch.Generator().manual_seed(seed)
        self.dropout = _empty_dropout(plan.p, self.generator, plan.layer)
        self.dropout.rows = rows
        self.writes = writes
        self.layer_module = dict(model.named_modules())[plan.layer]
        self.selections: list[dict[str, Any]] = []
        self._hook = self.layer_module.register_forward_hook(self._apply)

    def _apply(self, module: nn.Module, _inputs, output):
        self.dropout.train(module.training)
        return self.dropout(output)

    def remove(self) -> None:
        self._hook.remove()

    def due(self, step: int) -> bool:
        plan = self.plan
        if step < plan.start:
            return False
        if step == plan.start or not self.selections:
            return True
        return plan.every > 0 and (step - plan.start) % plan.every == 0

    def select(self, step: int) -> list[int]:
        """Measure the current model and set the channels for the steps after ``step``."""
        from stlens.measure.run import measure

        model = self.handle.module
        was_training = model.training
        result = measure(self.handle, self.pairs, [self.plan.layer], batch_size=8, bootstrap=0,
                         threshold=self.plan.threshold, seed=self.seed, progress=False, precision=self.precision,
                         workers=self.workers)
        model.train(was_training)
        layer = result[self.plan.layer]
        chosen = select_channels(layer.r_static, layer.r_dynamic, layer.classes, self.plan.select, self.plan.k)
        num_channels = layer.channels
        if self.plan.random and chosen:
            chosen = random_channels(len(chosen), num_channels, np.random.default_rng((self.seed, step, 11)))
        if not chosen:
            if not self.selections:
                raise StlensError(f"StaticDropout after '{self.plan.layer}': no static channels at step {step} "
                                  f"(units {layer.units}); use select=topk:K or a lower threshold")
            warnings.warn(f"StaticDropout after '{self.plan.layer}': no static channels at step {step}; dropping "
                          f"nothing until the next re-estimate", RuntimeWarning, stacklevel=2)
        self.dropout.set_channels(chosen, allow_empty=True)
        record = {"step": step, "layer": self.plan.layer, "select": self.plan.select, "random": self.plan.random,
                  "p": self.plan.p, "channels": chosen, "of": num_channels, "units": layer.units,
                  "percent": layer.percent}
        self.selections.append(record)
        if self.log_path is not None and self.writes:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        return chosen

    def restore(self, step: int) -> bool:
        """Reload the last selection at or before ``step`` from the log (a resumed run); False when there is none."""
        if self.log_path is None or not self.log_path.is_file():
            return False
        from stlens.core.damaged import reading

        with reading(self.log_path, "delete its damaged lines, or train again into another `out`"):
            records = [json.loads(line) for line in self.log_path.read_text(encoding="utf-8").splitlines()
                       if line.strip()]
            kept = [r for r in records if r["step"] <= step]
            channels = kept[-1]["channels"] if kept else None
        if not kept:
            return False
        if self.writes:  # (atomically: another process of the run may be reading it)
            from stlens.files import write_text

            write_text(self.log_path, "".join(json.dumps(r) + "\n" for r in kept))
        self.selections = kept
        self.dropout.set_channels(channels, allow_empty=True)
        return True

    def __call__(self, step: int, model: nn.Module, trainer=None) -> None:
        first = not self.selections
        if first and step > 0 and self.restore(step):
            pass  # a resumed run: the channels the uninterrupted run had after ``step``
        elif self.due(step):
            self.select(step)
        self.generator.manual_seed(int(np.random.default_rng((self.seed, step, 13)).integers(2**62)))


def _empty_dropout(p: float, generator: torch.Generator, layer: str) -> StaticDropout:
    dropout = StaticDropout([0], p, generator, layer)
    dropout.set_channels([], allow_empty=True)
    return dropout
