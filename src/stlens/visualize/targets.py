"""Target specs of ``stlens visualize --target``: ``class:0-7``, ``channel:0-15``, ``neuron:C[,C...][@t,y,x]`` and
``top-dynamic:K`` / ``top-static:K`` / ``top-joint:K`` (channels of a layer ranked from a ``stlens measure`` run)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stlens.errors import StlensError
from stlens.measure.result import units_of
from stlens.visualize.objectives import Objective, channel, class_logit, neuron

RANKINGS = {"top-dynamic": "dynamic", "top-static": "static", "top-joint": "joint"}


@dataclass(frozen=True)
class Target:
    """An objective with a file-safe ``name`` and what a measurement said about the unit (if it came from one)."""

    objective: Objective
    name: str
    measured: dict | None = None


def parse_indices(text: str, what: str) -> list[int]:
    """``"0-3,7"`` → [0, 1, 2, 3, 7]."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise StlensError(f"cannot read {what} indices '{text}'; write e.g. 0-7 or 0,3,5") from None
        if first < 0 or last < first:
            raise StlensError(f"bad {what} range '{part}' in '{text}'")
        out.extend(range(first, last + 1))
    return list(dict.fromkeys(out))


def _need_layer(layer: str | None, kind: str) -> str:
    if not layer:
        raise StlensError(f"`target` {kind}:... needs `layers`")
    return layer


def rank_units(units: list[dict], kind: str, k: int) -> list[dict]:
    """The ``k`` channels most ``kind`` (dynamic/static/joint): channels of that class first, then by the score
    r_D − r_S (dynamic), r_S − r_D (static) or min(r_D, r_S) (joint), highest first; ties by channel index."""
    def score(u: dict) -> float:
        rd, rs = u["r_dynamic"], u["r_static"]
        return {"dynamic": rd - rs, "static": rs - rd, "joint": min(rd, rs)}[kind]

    ranked = sorted(units, key=lambda u: (u["class"] != kind, -score(u), u["channel"]))
    return ranked[:k]


def parse_target(spec: str, layer: str | None = None, from_run: str | Path | None = None) -> list[Target]:
    """A ``--target`` string → targets (see the module docstring)."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise StlensError(f"cannot read `target` '{spec}'; use class:0-7, channel:0-15, neuron:C@t,y,x or "
                          f"top-dynamic:K / top-static:K / top-joint:K")
    if kind == "class":
        return [Target(class_logit(i), f"class_{i}") for i in parse_indices(rest, "class")]
    if kind == "channel":
        name = _need_layer(layer, kind)
        return [Target(channel(name, i), f"{name}_ch{i}") for i in parse_indices(rest, "channel")]
    if kind == "neuron":
        name = _need_layer(layer, kind)
        chans, at, where = rest.partition("@")
        pos: list[int | None] = [None, None, None]
        if at:
            try:
                pos = [int(v) for v in where.split(",")]
            except ValueError:
                raise StlensError(f"cannot read the neuron position '{where}'; write neuron:C@t,y,x") from None
            if len(pos) != 3:
                raise StlensError(f"a neuron position needs t,y,x, got '{where}'")
        tag = "" if not at else "_at" + "-".join(str(v) for v in pos)
        return [Target(neuron(name, i, *pos), f"{name}_n{i}{tag}") for i in parse_indices(chans, "channel")]
    if kind in RANKINGS:
        name = _need_layer(layer, kind)
        if from_run is None:
            raise StlensError(f"`target` {kind}:K needs `from_run` (a stlens measure run)")
        try:
            k = int(rest)
        except ValueError:
            raise StlensError(f"`target` {kind}:K needs an integer K, got '{rest}'") from None
        if k < 1:
            raise StlensError(f"`target` {kind}:K needs K ≥ 1, got {k}")
        units = rank_units(units_of(from_run, name), RANKINGS[kind], k)
        return [Target(channel(name, u["channel"]), f"{name}_ch{u['channel']}", u) for u in units]
    raise StlensError(f"unknown target kind '{kind}'; use class, channel, neuron, top-dynamic, top-static, top-joint")
