"""Tracking the static/dynamic bias over training (``stlens track``, ``BiasTracker``).

Every checkpoint (or every K steps of a live run) is measured on the *same* pairs with the same seed, all layers in
one forward per batch (``stlens.measure``). The result is a table step × layer (dynamic %, static %, their 95% CIs,
unit-class counts, bias) and, per layer, the convergence step: the first tracked step from which on both the
dynamic % and the static % stay inside the final step's 95% CIs ("converged at X% of training").
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
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
    """The static/dynamic bias over training: ``stlens.track`` and ``BiasTracker.result()`` return it.

    It prints as a summary, the table and the convergence per layer (``repr``; HTML in Jupyter).

    Args:
        rows: one row per step × layer (see ``COLUMNS``: step, layer, dynamic/static % with intervals, units, scores).
        meta: what was run (model, data, pairs, seed, ...).
        path: the run folder it was saved into (``track(out=...)``), or None.

    Examples:
        >>> spec = stlens.InputSpec(frames=4, size=16, resize=16)
        >>> pairs = stlens.make_pairs(stlens.open_data("synth:motion?n=8&frames=4&size=16"), spec, pairs=4)
        >>> handle = stlens.load_model("stlens:c2d?classes=8&width=4", frames=4, size=16)
        >>> tracker = stlens.BiasTracker(pairs, ["stage4"], handle=handle, bootstrap=0)
        >>> _ = tracker.measure_now(0, handle.module)
        >>> result = tracker.result()
        >>> isinstance(result, stlens.TrackResult), [(row["step"], row["layer"]) for row in result.rows]
        (True, [(0, 'stage4')])
    """

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
    """(step, checkpoint) of a ``stlens train`` run folder (or its ``checkpoints/``), else of a folder of Lightning
    ``.ckpt`` files (or its ``checkpoints/``), else of a Hugging Face ``Trainer`` output folder (``checkpoint-N/``)."""
    from stlens.train.checkpoints import list_checkpoints
    from stlens.train.foreign import foreign_checkpoints

    folder = Path(folder)
    if not folder.is_dir():
        raise StlensError(f"`checkpoints` {folder}: no such folder")
    found = list_checkpoints(folder) or list_checkpoints(folder / "checkpoints") or foreign_checkpoints(folder)
    if not found:
        raise StlensError(f"`checkpoints` {folder}: no step_NNNNNN.safetensors + .json checkpoints (the run folder "
                          f"of a train run or its checkpoints/ folder), no Lightning .ckpt files and no Hugging Face "
                          f"checkpoint-N/ folders")
    return found


def load_any(weights: Path, module: nn.Module, step: int):
    """Load one checkpoint of ``_resolve_checkpoints`` into ``module``: a stlens checkpoint (with its info), a
    Lightning ``.ckpt`` or a Hugging Face ``checkpoint-N/`` folder (``train.foreign``; prefixes stripped)."""
    from stlens.train.checkpoints import load_checkpoint
    from stlens.train.foreign import is_foreign, load_foreign

    return load_foreign(weights, module, step) if is_foreign(weights) else load_checkpoint(weights, module)


def track_pairs(handle, data, pairs: int, *, stylizer: str | None = None, seed: int = 0, workers: int = 0):
    """The fixed pairs of a track: ``pairs`` per factor made from the data spec ``data`` with ``seed`` for the input
    of ``handle`` (optical flow for a two-stream model), kept in memory when they fit (``cache_pairs``). ``stlens
    track`` and the training-loop callbacks (``stlens.integrations``) make them here, so both measure the same pairs.
    """
    from stlens.core.handle import takes_two_inputs
    from stlens.pairs.compose import make_pairs
    from stlens.video.sources import open_data

    flow = "tvl1" if takes_two_inputs(handle.module) else None
    return cache_pairs(make_pairs(open_data(data), handle.input, pairs, stylizer=stylizer, seed=seed, flow=flow),
                       workers=workers, seed=seed)


def measure_rows(handle, fixed, names: list[str], step: int, *, batch_size: int = 4, bootstrap: int = 200,
                 threshold: float = 0.5, seed: int = 0, device=None, precision: str = "fp32", workers: int = 0,
                 metrics: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One tracked step: ``stlens.measure`` of ``names`` on the fixed pairs (every pair in this process), as table
    rows. ``stlens track``, ``BiasTracker`` and the training-loop callbacks all measure here."""
    from stlens.measure.run import measure

    result = measure(handle, fixed, names, batch_size=batch_size, bootstrap=bootstrap, threshold=threshold,
                     seed=seed, progress=False, device=device, precision=precision, workers=workers, split=False)
    return layer_rows(result, step, metrics)


def track(model: str, checkpoints: str | Path, data: str, layers: str | list[str] | None = "default", *,
          pairs: int = 64, stylizer: str | None = None, frames: int | None = None, size: int | None = None,
          batch_size: int = 4, workers: int | None = None, device: str | torch.device = "auto",
          precision: str = "fp32", bootstrap: int = 200, threshold: float = 0.5, seed: int = 0,
          out: str | Path | None = None, overwrite: bool = False, progress: bool = True,
          tensorboard: str | Path | None = None) -> TrackResult:
    """Measure every checkpoint of a training run on the same pairs: the static/dynamic bias over training.

    The pairs are made once from ``data`` and ``seed``; the result has one row per step × layer, and each layer's
    convergence step. Checkpoints: a ``stlens train`` run, PyTorch Lightning ``.ckpt`` files (the step is each file's
    ``global_step``) or a Hugging Face ``Trainer`` output folder with ``checkpoint-N/`` folders (``model.safetensors``
    or ``pytorch_model.bin``): their weights are read tensors-only, onto the CPU, and the key prefix of the attribute
    that holds the model (e.g. ``model.``) is stripped (``stlens.train.foreign``). Pairs that fit in memory
    (``cache_pairs``) are made once and re-used; larger ones are made again for each checkpoint. A checkpoint whose
    files cannot be read (truncated, invalid JSON) is skipped with a warning and listed in ``meta["skipped"]``.
    Under ``torchrun`` rank r of W measures the checkpoints of its contiguous share (``distributed.shard``), each on
    all the pairs; the rows are gathered in checkpoint order, so every rank returns the table of a single process;
    rank 0 claims and writes ``out``. A rank that fails tells the others, which stop before their next checkpoint.

    Args:
        model: the run's model spec (e.g. ``stlens:i3d``).
        checkpoints: a ``stlens train`` run folder or its ``checkpoints/`` folder; a folder of Lightning ``.ckpt``
            files (or its ``checkpoints/``); or a Hugging Face ``Trainer`` output folder.
        data: the data of the pairs (a spec, as for ``stlens.measure``).
        layers: ``default``, ``all`` or dotted layer names (a list or ``L1,L2``).
        pairs: pairs per factor, the same for every checkpoint.
        stylizer: the appearance change of the pairs (as for ``stlens.measure``).
        frames: frames per clip (default: the run's own, from the checkpoint info).
        size: crop size (default: the run's own).
        batch_size: pairs per forward pass.
        workers: processes that make the pairs (None: min(4, CPUs − 1); 0: the main process).
        device: ``auto``, ``cpu``, ``cuda[:K]`` or ``mps`` (checked before any work; ``meta`` records the one used).
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto``.
        bootstrap: bootstrap replicates for the 95% CIs (0: none).
        threshold: the per-channel class threshold τ.
        seed: the pairs' and the bootstrap's seed.
        out: the run folder (``track.csv``, ``track.json`` — rows, convergence and meta — and ``track_<layer>.png`` per
            layer), claimed before any work: a folder holding a complete run is refused unless ``overwrite``; an error
            or interrupt leaves ``out`` as it was.
        overwrite: replace a track run in ``out``, once the new one is complete.
        progress: show a progress bar over the checkpoints.
        tensorboard: a folder for TensorBoard event files of the tracked percentages (tags
            ``stlens/<layer>/dynamic``, ``static``, ``residual``, ``bias``; needs the ``tensorboard`` package).

    Returns:
        The ``TrackResult`` (it prints as the table and the convergence per layer).

    Examples:
        >>> import tempfile
        >>> run = tempfile.mkdtemp()
        >>> _ = stlens.train("stlens:c2d?classes=8&width=4", "synth:motion?n=16&frames=4&size=16", steps=2, out=run,
        ...                  frames=4, size=16, batch_size=4, eval_clips=0, checkpoint_every_steps=1, workers=0,
        ...                  progress=False)
        >>> result = stlens.track("stlens:c2d?classes=8&width=4", run, "synth:motion?n=8&frames=4&size=16", "stage4",
        ...                       pairs=4, bootstrap=0, workers=0, progress=False)
        >>> [(row["step"], row["layer"]) for row in result.rows]
        [(0, 'stage4'), (1, 'stage4'), (2, 'stage4')]
    """
    from stlens.core import distributed
    from stlens.core.device import resolve_device, resolve_precision
    from stlens.core.workers import resolve_workers

    _check(pairs=pairs, batch_size=batch_size, bootstrap=bootstrap, threshold=threshold)
    if tensorboard is not None:
        from stlens.train.tensorboard import require_tensorboard

        require_tensorboard()
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
        with distributed.failing_together(group, run):
            result = _track(model, checkpoints, data, layers, pairs=pairs, stylizer=stylizer, frames=frames,
                            size=size, batch_size=batch_size, bootstrap=bootstrap, threshold=threshold, seed=seed,
                            progress=progress, device=target, precision=precision, workers=workers, world=world,
                            group=group)
            if run is not None:
                result.save(run.staging)
                run.commit()
                result.path = run.out
            if tensorboard is not None and world.rank == 0:
                from stlens.train.tensorboard import summary_writer, write_track

                writer = summary_writer(tensorboard)
                write_track(writer, result.rows)
                writer.close()
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
    from stlens.core.workers import resolve_workers
    from stlens.models.registry import load_model
    from stlens.train.checkpoints import CorruptCheckpoint, read_info
    from stlens.train.foreign import is_foreign

    target = resolve_device(device)  # the options are checked before any work
    used = resolve_precision(precision, target)
    workers = resolve_workers(workers)
    found = _resolve_checkpoints(checkpoints)
    info: dict[str, Any] = {}
    for _, weights in reversed(found):  # the run's config, from the last checkpoint whose JSON can be read
        if is_foreign(weights):  # (Lightning and Hugging Face checkpoints carry no stlens config)
            break
        try:
            info = read_info(weights).get("config") or {}
            break
        except CorruptCheckpoint:
            continue
    frames = frames if frames is not None else info.get("frames")
    size = size if size is not None else info.get("size")
    handle = load_model(model, None, frames=frames, size=size, device=target)
    names = handle.layers(layers)
    share = distributed.shard(len(found), world)
    mine = found[share.start:share.stop]
    fixed = None
    if mine:  # (a rank without checkpoints makes no pairs)
        fixed = track_pairs(handle, data, pairs, stylizer=stylizer, seed=seed, workers=workers)
    rows: list[dict[str, Any]] = []
    measured: list[int] = []
    skipped: list[dict[str, Any]] = []
    for step, weights in tqdm(mine, desc="track", unit="ckpt", disable=not progress or world.rank != 0):
        if group is not None:
            group.stop_if_failed()
        try:
            checkpoint = load_any(weights, handle.module, step)
        except CorruptCheckpoint as exc:
            log.warning("skipped the damaged checkpoint of step %d: %s", step, exc)
            skipped.append({"step": step, "weights": str(weights), "reason": str(exc)})
            continue
        rows.extend(measure_rows(handle, fixed, names, step, batch_size=batch_size, bootstrap=bootstrap,
                                 threshold=threshold, seed=seed, device=target, precision=used, workers=workers,
                                 metrics=checkpoint.info.get("metrics")))
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


@contextmanager
def measuring(model: nn.Module) -> Iterator[nn.Module]:
    """The model of a training loop as a tracker measures it: in eval mode, outside the loop's autocast, in fp32 (a
    float32 copy when its weights are in another dtype; ``measure`` runs without gradients, under
    ``torch.inference_mode``); afterwards every submodule gets its own training mode back."""
    modes = [(module, module.training) for module in model.modules()]
    from stlens.core.handle import module_device

    device = module_device(model)
    floats = [t for t in itertools.chain(model.parameters(), model.buffers()) if t.is_floating_point()]
    measured = model if all(t.dtype == torch.float32 for t in floats) else copy.deepcopy(model).float()
    try:
        with torch.autocast(device.type, enabled=False):
            yield measured.eval()
    finally:
        for module, mode in modes:
            module.training = mode


class BiasTracker:
    """A training callback that measures ``layers`` of the model being trained every ``every`` steps on fixed ``pairs``.

    It measures at step 0, every ``every`` steps and, given a ``Trainer``, at its last step; ``.result()`` gives the
    ``TrackResult``. Each measurement runs in ``measuring`` (eval mode, no gradients, fp32; the training modes
    restored) through the same ``measure_rows`` as ``stlens track``, so a step's row equals the row ``stlens track``
    computes from that step's checkpoint with the same pairs and seed.

    Args:
        pairs: the fixed pairs (``stlens.make_pairs``; kept in memory).
        layers: ``default``, ``all`` or layer names (a list or ``L1,L2``).
        every: measure every N steps.
        handle: a ``ModelHandle`` or the module itself (its layers must then be named explicitly); None: the model
            the trainer passes.
        bootstrap: bootstrap replicates for the 95% CIs (0: none).
        threshold: the per-channel class threshold τ.
        seed: the bootstrap's seed.
        batch_size: pairs per forward pass.
        meta: extra entries recorded in the result's ``meta``.

    Examples:
        >>> import tempfile
        >>> spec = stlens.InputSpec(frames=4, size=16, resize=16)
        >>> pairs = stlens.make_pairs(stlens.open_data("synth:motion?n=8&frames=4&size=16"), spec, pairs=4)
        >>> tracker = stlens.BiasTracker(pairs, ["stage4"], every=2, bootstrap=0)
        >>> _ = stlens.train("stlens:c2d?classes=8&width=4", "synth:motion?n=16&frames=4&size=16", steps=2,
        ...                  out=tempfile.mkdtemp(), frames=4, size=16, batch_size=4, eval_clips=0, workers=0,
        ...                  progress=False, callbacks=[tracker])
        >>> [(row["step"], row["layer"]) for row in tracker.result().rows]
        [(0, 'stage4'), (2, 'stage4')]
    """

    def __init__(self, pairs: Iterable, layers: str | list[str] | None = "default", every: int = 100, *,
                 handle=None, bootstrap: int = 200, threshold: float = 0.5, seed: int = 0, batch_size: int = 8,
                 meta: dict[str, Any] | None = None):
        if every < 1:
            raise StlensError(f"BiasTracker every must be ≥ 1, got {every}")
        self.pairs = cache_pairs(pairs)
        self.layers, self.every, self.handle = layers, every, handle
        self.bootstrap, self.threshold, self.seed, self.batch_size = bootstrap, threshold, seed, batch_size
        self.meta = dict(meta or {})
        self.rows: list[dict[str, Any]] = []

    def measure_now(self, step: int, model: nn.Module,
                    metrics: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Measure ``model`` now as step ``step``; returns (and keeps) its rows, replacing earlier rows of the step."""
        import dataclasses

        from stlens.models.registry import as_handle

        handle = self.handle if self.handle is not None else as_handle(model)
        with measuring(handle.module) as module:
            used = handle if module is handle.module else dataclasses.replace(handle, module=module)
            rows = measure_rows(used, self.pairs, handle.layers(self.layers), step, batch_size=self.batch_size,
                                bootstrap=self.bootstrap, threshold=self.threshold, seed=self.seed,
                                metrics=metrics)  # (each rank of a data-parallel run measures its own copy)
        self.rows = [r for r in self.rows if r["step"] != step] + rows
        return rows

    def __call__(self, step: int, model: nn.Module, trainer=None) -> None:
        last = trainer is not None and step == trainer.config.steps
        if step % self.every == 0 or last:
            self.measure_now(step, model)

    def result(self) -> TrackResult:
        if not self.rows:
            raise StlensError("BiasTracker has measured nothing yet")
        steps = sorted({r["step"] for r in self.rows})
        return TrackResult(list(self.rows), {"every": self.every, "seed": self.seed, "bootstrap": self.bootstrap,
                                             "threshold": self.threshold, **self.meta, "steps": steps})
