"""Tracking the static/dynamic bias over training (``stlens track``, ``BiasTracker``).

Every checkpoint (or every K steps of a live run) is measured on the *same* pairs with the same seed, all layers in
one forward per batch (``stlens.measure``). The result is a table step × layer (dynamic %, static %, their 95% CIs,
unit-class counts, bias) and, per layer, the convergence step: the first tracked step from which on both the
dynamic % and the static % stay inside the final step's 95% CIs ("converged at X% of training").
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stlens.core.summary import MAX_ROWS, clip_lines, html_table
from stlens.errors import StlensError
from stlens.files import atomic_write, versioned, write_json, write_text

log = logging.getLogger("stlens")

COLUMNS = ["step", "layer", "channels", "dynamic", "dynamic_lo", "dynamic_hi", "static", "static_lo", "static_hi",
           "residual", "bias", "units_dynamic", "units_static", "units_joint", "units_none", "units_dead",
           "train_acc", "test_acc", "train_miou", "test_miou", "test_msr"]
#: a checkpoint's evaluation scores copied into every row (accuracy for classifiers, mIoU/mSR for segmenters)
SCORES = ("train_acc", "test_acc", "train_miou", "test_miou", "test_msr")
CACHE_BYTES = 256 * 2**20


def layer_rows(result, step: int, metrics: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One table row per layer of a ``MeasureResult`` measured at ``step``."""
    metrics = metrics or {}
    rows = []
    for layer in result.layers:
        ci = {k: (v if v is not None else [None, None]) for k, v in layer.ci95.items()}
        rows.append({
            "step": int(step), "layer": layer.layer, "channels": layer.channels,
            "dynamic": layer.percent["dynamic"], "dynamic_lo": ci["dynamic"][0], "dynamic_hi": ci["dynamic"][1],
            "static": layer.percent["static"], "static_lo": ci["static"][0], "static_hi": ci["static"][1],
            "residual": layer.percent["residual"], "bias": layer.bias,
            **{f"units_{k}": int(layer.units.get(k, 0)) for k in ("dynamic", "static", "joint", "none", "dead")},
            **{key: metrics.get(key) for key in SCORES},
        })
    return rows


def _inside(value: float, low: float | None, high: float | None, point: float) -> bool:
    if low is None or high is None:  # no bootstrap: the final point itself is the band
        low = high = point
    return low - 1e-9 <= value <= high + 1e-9


def convergence(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """For one layer's rows: the first step from which both percentages stay within the final step's 95% CIs."""
    rows = sorted(rows, key=lambda r: r["step"])
    if not rows:
        raise StlensError("no tracked steps")
    final = rows[-1]
    converged = final["step"]
    for row in reversed(rows):
        if not (_inside(row["dynamic"], final["dynamic_lo"], final["dynamic_hi"], final["dynamic"])
                and _inside(row["static"], final["static_lo"], final["static_hi"], final["static"])):
            break
        converged = row["step"]
    first, last = rows[0]["step"], final["step"]
    share = 100.0 * (converged - first) / (last - first) if last > first else 100.0
    return {"step": converged, "percent_of_training": round(share, 1), "final_step": last,
            "final": {"dynamic": final["dynamic"], "static": final["static"],
                      "dynamic_ci95": [final["dynamic_lo"], final["dynamic_hi"]],
                      "static_ci95": [final["static_lo"], final["static_hi"]]}}


@dataclass(repr=False)
class TrackResult:
    """Rows (one per step × layer; see ``COLUMNS``), the convergence per layer, and what was run. It prints as a
    summary, the table and the convergence per layer (``repr``; HTML in Jupyter)."""

    rows: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # the run folder it was saved into (``track(out=...)``)

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(r["layer"] for r in self.rows))

    def layer(self, name: str) -> list[dict[str, Any]]:
        return sorted((r for r in self.rows if r["layer"] == name), key=lambda r: r["step"])

    def convergence(self) -> dict[str, dict[str, Any]]:
        return {name: convergence(self.layer(name)) for name in self.layers}

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=COLUMNS)

    def _ordered(self) -> list[dict[str, Any]]:
        return sorted(self.rows, key=lambda r: (r["step"], self.layers.index(r["layer"])))

    def _row_lines(self) -> list[str]:
        lines = []
        for r in self._ordered():
            units = f"{r['units_dynamic']}/{r['units_static']}/{r['units_joint']}/{r['units_none']}"
            lines.append(f"{r['step']:>7} {r['layer']:<16} {r['dynamic']:>9.1f} {r['static']:>9.1f} {units:>14}")
        return lines

    def _convergence_lines(self) -> list[str]:
        return [f"{name}: converged at step {conv['step']} ({conv['percent_of_training']}% of training; "
                f"final dynamic {conv['final']['dynamic']}%, static {conv['final']['static']}%)"
                for name, conv in self.convergence().items()] if self.rows else []

    _HEAD = f"{'step':>7} {'layer':<16} {'dynamic %':>9} {'static %':>9} {'units D/S/J/N':>14}"

    def table(self) -> str:
        return "\n".join([self._HEAD, *self._row_lines(), *self._convergence_lines()])

    def _caption(self) -> str:
        m = self.meta
        steps = len({r["step"] for r in self.rows})
        return (f"{m.get('model')} on {m.get('data')}: {steps} steps × {len(self.layers)} layers, "
                f"{m.get('pairs')} pairs per factor")

    def __repr__(self) -> str:
        rows = clip_lines(self._row_lines(), MAX_ROWS, "result.table() shows all")
        return "\n".join([f"TrackResult: {self._caption()}", self._HEAD, *rows, *self._convergence_lines()])

    def _repr_html_(self) -> str:
        """The table and the convergence per layer as HTML for Jupyter (every value escaped)."""
        head = ["step", "layer", "dynamic %", "static %", "units D/S/J/N", "bias"]
        rows = [(r["step"], r["layer"], f"{r['dynamic']:.1f}", f"{r['static']:.1f}",
                 f"{r['units_dynamic']}/{r['units_static']}/{r['units_joint']}/{r['units_none']}", f"{r['bias']:.2f}")
                for r in self._ordered()]
        notes = "".join(f"<p>{escape(line)}</p>" for line in self._convergence_lines())
        return html_table(self._caption(), head, rows) + notes

    def save(self, out: str | Path, plots: bool = True) -> Path:
        """``track.csv``, ``track.json`` (rows, convergence, meta) and ``track_<layer>.png`` per layer."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(self.rows, key=lambda r: (r["step"], self.layers.index(r["layer"]))))
        write_text(out / "track.csv", buffer.getvalue())
        write_json(out / "track.json", versioned({"meta": self.meta, "convergence": self.convergence(),
                                                   "rows": self.rows}))
        if plots:
            for name in self.layers:
                plot_layer(self.layer(name), name, self.convergence()[name], out / f"track_{_safe(name)}.png")
        return out


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def plot_layer(rows: Sequence[dict[str, Any]], name: str, conv: dict[str, Any], path: Path, title: str = "") -> None:
    """Dynamic % and static % (95% CI bands) against training step, with the convergence step marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(6.4, 3.8), dpi=110)  # not pyplot: the caller's backend is left alone
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for key, colour in (("dynamic", "tab:blue"), ("static", "tab:orange")):
        ax.plot(steps, [r[key] for r in rows], "o-", color=colour, label=f"{key} %", markersize=3)
        if all(r[f"{key}_lo"] is not None for r in rows):
            ax.fill_between(steps, [r[f"{key}_lo"] for r in rows], [r[f"{key}_hi"] for r in rows], color=colour,
                            alpha=0.2, linewidth=0)
    ax.axvline(conv["step"], color="grey", linestyle="--", linewidth=1,
               label=f"converged: step {conv['step']} ({conv['percent_of_training']}%)")
    ax.set_xlabel("training step")
    ax.set_ylabel("% of units")
    if any(r.get(key) is not None for r in rows for key in SCORES):
        twin = ax.twinx()
        styles = {"train_acc": ":", "test_acc": "-.", "train_miou": ":", "test_miou": "-.", "test_msr": "--"}
        for key, style in styles.items():
            if any(r.get(key) is not None for r in rows):
                twin.plot(steps, [r.get(key) for r in rows], style, color="black", linewidth=1, label=key)
        twin.set_ylim(0, 1.02)
        twin.set_ylabel("accuracy" if any(r.get("test_acc") is not None for r in rows) else "score")
        twin.legend(loc="lower right", fontsize=7)
    ax.legend(loc="upper left", fontsize=7)
    ax.set_title(title or f"static/dynamic bias over training: {name}", fontsize=9)
    fig.tight_layout()

    def write(handle) -> None:
        fig.savefig(handle, format="png")

    atomic_write(path, write)


def cache_pairs(pairs, limit_bytes: int = CACHE_BYTES, workers: int = 0, seed: int = 0):
    """The pairs as a list when they fit in ``limit_bytes`` (made once, re-used for every checkpoint); otherwise
    the (deterministic, re-iterable) pair source itself. An indexable source's pairs are made in ``workers``
    processes (``measure.loading.pair_batches``; the same pairs, in order)."""
    from stlens.measure.loading import indexable, pair_batches

    if not hasattr(pairs, "__len__"):
        return list(pairs)
    first = next(iter(pairs), None)
    if first is None:
        raise StlensError("the pair source is empty")

    def size(x) -> int:
        return sum(size(t) for t in x) if isinstance(x, (tuple, list)) else x.numel() * x.element_size()

    if 2 * size(first.a) * len(pairs) > limit_bytes:
        return pairs
    if not workers or not indexable(pairs):
        return list(pairs)
    made: list = []
    with pair_batches(pairs, 4, workers, "cpu", seed) as batches:
        for _, batch in sorted(batches, key=lambda item: item[0]):  # workers deliver chunks out of order
            made.extend(_unstack(batch) if not isinstance(batch, list) else batch)
    return made


def _unstack(batch) -> list:
    """The pairs of a ``PairBatch`` made by workers (n first videos, then the n second ones) as ``Pair`` objects."""
    from stlens.core.pair import Pair

    n = len(batch)

    def video(j: int):
        return tuple(x[j] for x in batch.inputs) if isinstance(batch.inputs, tuple) else batch.inputs[j]

    return [Pair(int(batch.factor[k]), video(k), video(n + k), index=batch.index[k]) for k in range(n)]


def _resolve_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    from stlens.train.checkpoints import list_checkpoints

    folder = Path(folder)
    if not folder.is_dir():
        raise StlensError(f"`checkpoints` {folder}: no such folder")
    found = list_checkpoints(folder) or list_checkpoints(folder / "checkpoints")
    if not found:
        raise StlensError(f"`checkpoints` {folder}: no step_NNNNNN.safetensors + .json checkpoints (the run folder "
                          f"of a train run or its checkpoints/ folder)")
    return found


def track(model: str, checkpoints: str | Path, data: str, layers: str | list[str] | None = "default", *,
          pairs: int = 64, stylizer: str | None = None, frames: int | None = None, size: int | None = None,
          batch_size: int = 4, workers: int | None = None, device: str | torch.device = "auto",
          precision: str = "fp32", bootstrap: int = 200, threshold: float = 0.5, seed: int = 0,
          out: str | Path | None = None, overwrite: bool = False, progress: bool = True) -> TrackResult:
    """Measure every checkpoint of a ``stlens train`` run on the same pairs (made once from ``data`` and ``seed``):
    the static/dynamic bias over training, one row per step × layer, and each layer's convergence step.

    ``model``: the run's model spec (e.g. ``stlens:i3d``). ``checkpoints``: a ``stlens train`` run folder or its
    ``checkpoints/`` folder. ``data``: the data of the pairs (a spec, as for ``stlens.measure``). ``layers``:
    ``default``, ``all`` or dotted layer names (a list or ``L1,L2``). ``pairs``: pairs per factor, the same for every
    checkpoint. ``stylizer``: the appearance change of the pairs (as for measure). ``frames``/``size``: frames per
    clip and crop size (default: the run's own, from the checkpoint info). ``batch_size``: pairs per forward pass.
    ``workers``: processes that make the pairs (None: min(4, CPUs − 1); 0: the main process). ``device``: ``auto``,
    ``cpu``, ``cuda[:K]`` or ``mps``; ``precision``: ``fp32``, ``bf16``, ``fp16`` or ``auto`` (device, precision and
    workers are checked before any work; the weights are read onto the CPU and copied to the device; ``meta``
    records the device and precision used). ``bootstrap``: bootstrap replicates for the 95% CIs (0: none);
    ``threshold``: the per-channel class threshold τ; ``seed``: the pairs' and the bootstrap's seed. ``progress``:
    a progress bar over the checkpoints.

    ``out``: the run folder (``track.csv``, ``track.json`` — rows, convergence and meta — and ``track_<layer>.png``
    per layer), claimed before any work: a folder holding a complete run is refused unless ``overwrite``, which
    replaces only a track run, and only once the new one is complete; an error or interrupt leaves ``out`` as it
    was. Pairs that fit in memory (``cache_pairs``) are made once and re-used; larger ones are made again for each
    checkpoint. A checkpoint whose files cannot be read (truncated, invalid JSON) is skipped with a warning and
    listed in ``meta["skipped"]``.

    Under ``torchrun`` rank r of W measures the checkpoints of its contiguous share (``distributed.shard``), each
    one whole on all the pairs; the rows are gathered in checkpoint order, so every rank returns the table of a
    single process; rank 0 claims and writes ``out``. A rank that fails tells the others, which stop before their
    next checkpoint.

    >>> result = stlens.track("stlens:i3d", "runs/train", "synth:motion", out="runs/track")  # doctest: +SKIP
    """
    from stlens.core import distributed
    from stlens.core.device import resolve_device, resolve_precision
    from stlens.core.workers import resolve_workers

    _check(pairs=pairs, batch_size=batch_size, bootstrap=bootstrap, threshold=threshold)
    world = distributed.launched()
    device = distributed.rank_device(device, world) if isinstance(device, str) else device
    target = resolve_device(device)  # checked before any work
    resolve_precision(precision, target)
    workers = resolve_workers(workers)
    with distributed.joined(target) as world:
        run = None
        if out is not None:  # torchrun: rank 0 claims (every rank hears of a refusal), the ranks split the checkpoints
            from stlens.runs import RunFolder

            run = distributed.on_first_rank(world, lambda: RunFolder(out, "track", overwrite=overwrite).claim())
        group = distributed.Group(world) if world.distributed else None
        try:
            result = _track(model, checkpoints, data, layers, pairs=pairs, stylizer=stylizer, frames=frames,
                            size=size, batch_size=batch_size, bootstrap=bootstrap, threshold=threshold, seed=seed,
                            progress=progress, device=target, precision=precision, workers=workers, world=world,
                            group=group)
            if run is not None:
                result.save(run.staging)
                run.commit()
                result.path = run.out
        except BaseException as exc:
            if group is not None and isinstance(exc, Exception):
                group.fail(str(exc) if isinstance(exc, StlensError) else f"{type(exc).__name__}: {exc}")
            if run is not None:
                run.abandon()
            raise
    return result


def _check(*, pairs: int, batch_size: int, bootstrap: int, threshold: float) -> None:
    """The arguments that need no model or data, checked before any work (errors name the Python argument)."""
    checks = [
        (isinstance(pairs, int) and pairs >= 1, f"`pairs` must be an integer ≥ 1 (pairs per factor), got {pairs!r}"),
        (batch_size >= 1, f"`batch_size` must be ≥ 1 (pairs per forward pass), got {batch_size}"),
        (bootstrap >= 0, f"`bootstrap` must be ≥ 0 (0: no CIs), got {bootstrap}"),
        (0.0 <= threshold < 1.0, f"`threshold` must be in [0, 1), got {threshold}"),
    ]
    for ok, message in checks:
        if not ok:
            raise StlensError(message)


def _track(model, checkpoints, data, layers, *, pairs, stylizer, frames, size, batch_size, bootstrap, threshold,
           seed, progress, device, precision, workers, world, group) -> TrackResult:
    from tqdm.auto import tqdm

    from stlens.core import distributed
    from stlens.core.device import resolve_device, resolve_precision
    from stlens.core.handle import takes_two_inputs
    from stlens.core.workers import resolve_workers
    from stlens.measure.run import measure
    from stlens.models.registry import load_model
    from stlens.pairs.compose import make_pairs
    from stlens.train.checkpoints import CorruptCheckpoint, load_checkpoint, read_info
    from stlens.video.sources import open_data

    target = resolve_device(device)  # the options are checked before any work
    used = resolve_precision(precision, target)
    workers = resolve_workers(workers)
    found = _resolve_checkpoints(checkpoints)
    info: dict[str, Any] = {}
    for _, weights in reversed(found):  # the run's config, from the last checkpoint whose JSON can be read
        try:
            info = read_info(weights).get("config") or {}
            break
        except CorruptCheckpoint:
            continue
    frames = frames if frames is not None else info.get("frames")
    size = size if size is not None else info.get("size")
    handle = load_model(model, None, frames=frames, size=size, device=target)
    flow = "tvl1" if takes_two_inputs(handle.module) else None
    names = handle.layers(layers)
    share = distributed.shard(len(found), world)
    mine = found[share.start:share.stop]
    fixed = None
    if mine:  # (a rank without checkpoints makes no pairs)
        fixed = cache_pairs(make_pairs(open_data(data), handle.input, pairs, stylizer=stylizer, seed=seed,
                                       flow=flow), workers=workers, seed=seed)
    rows: list[dict[str, Any]] = []
    measured: list[int] = []
    skipped: list[dict[str, Any]] = []
    for step, weights in tqdm(mine, desc="track", unit="ckpt", disable=not progress or world.rank != 0):
        if group is not None:
            group.stop_if_failed()
        try:
            checkpoint = load_checkpoint(weights, handle.module)
        except CorruptCheckpoint as exc:
            log.warning("skipped the damaged checkpoint of step %d: %s", step, exc)
            skipped.append({"step": step, "weights": str(weights), "reason": str(exc)})
            continue
        result = measure(handle, fixed, names, batch_size=batch_size, bootstrap=bootstrap, threshold=threshold,
                         seed=seed, progress=False, device=target, precision=used, workers=workers, split=False)
        rows.extend(layer_rows(result, step, checkpoint.info.get("metrics")))
        measured.append(step)
    if group is not None:  # the ranks' shares in rank order = checkpoint order
        group.stop_if_failed()
        parts = group.gather((rows, measured, skipped))
        rows = [r for part in parts for r in part[0]]
        measured = [s for part in parts for s in part[1]]
        skipped = [s for part in parts for s in part[2]]
    if not measured:
        raise StlensError(f"`checkpoints` {checkpoints}: no checkpoint can be read (" +
                          "; ".join(s["reason"] for s in skipped) + ")")
    meta = {"model": model, "checkpoints": str(checkpoints), "data": data, "layers": names, "pairs": pairs,
            "seed": seed, "bootstrap": bootstrap, "threshold": threshold, "frames": handle.input.frames,
            "size": handle.input.size, "steps": measured, "run": info.get("data"), "skipped": skipped,
            "device": str(target), "precision": used, "precision_option": precision, "workers": workers,
            "processes": world.size}
    return TrackResult(rows, meta)


class BiasTracker:
    """A training callback that measures ``layers`` of the model being trained every ``every`` steps (and at step 0
    and, given a ``Trainer``, at its last step) on fixed ``pairs``; ``.result()`` gives the ``TrackResult``.

    ``handle`` is a ``ModelHandle`` or the module itself (its layers must then be named explicitly)."""

    def __init__(self, pairs: Iterable, layers: str | list[str] | None = "default", every: int = 100, *,
                 handle=None, bootstrap: int = 200, threshold: float = 0.5, seed: int = 0, batch_size: int = 8):
        if every < 1:
            raise StlensError(f"BiasTracker every must be ≥ 1, got {every}")
        self.pairs = cache_pairs(pairs)
        self.layers, self.every, self.handle = layers, every, handle
        self.bootstrap, self.threshold, self.seed, self.batch_size = bootstrap, threshold, seed, batch_size
        self.rows: list[dict[str, Any]] = []

    def measure_now(self, step: int, model: nn.Module) -> None:
        from stlens.measure.run import measure
        from stlens.models.registry import as_handle

        handle = self.handle if self.handle is not None else as_handle(model)
        was_training = model.training
        result = measure(handle, self.pairs, handle.layers(self.layers), batch_size=self.batch_size,
                         bootstrap=self.bootstrap, threshold=self.threshold, seed=self.seed, progress=False,
                         split=False)  # (each rank of a data-parallel run measures its own copy of the model)
        model.train(was_training)
        self.rows = [r for r in self.rows if r["step"] != step] + layer_rows(result, step)

    def __call__(self, step: int, model: nn.Module, trainer=None) -> None:
        last = trainer is not None and step == trainer.config.steps
        if step % self.every == 0 or last:
            self.measure_now(step, model)

    def result(self) -> TrackResult:
        if not self.rows:
            raise StlensError("BiasTracker has measured nothing yet")
        return TrackResult(list(self.rows), {"every": self.every, "seed": self.seed, "bootstrap": self.bootstrap})
