"""``MeasureResult`` — what ``stlens.measure`` returns — and the run folder of a measurement, in one place:
``save_result`` writes result.json, layers.csv, units.csv, config.json and latents.npz (through a ``RunFolder``: all
or nothing), ``load_result`` reads them back and checks that they belong to one run, ``read_units`` / ``units_of``
read units.csv. The formats: docs/formats.md §3."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stlens.core.damaged import damaged, load_npz, reading
from stlens.core.summary import ci_text, html_table, text_summary
from stlens.errors import StlensError
from stlens.files import check_format, read_json, versioned
from stlens.measure.layer import CLASSES, UNIT_COLUMNS, LayerResult, flatten_layer, unit_columns, unit_rows
from stlens.runs import RunFolder, check_files, describe, read_marker

#: what to do about a damaged file of a measure run
RERUN = "rerun the measurement (stlens measure) to write it again"


@dataclass(repr=False)
class MeasureResult:
    """What ``stlens.measure`` returns: run metadata, one ``LayerResult`` per latent, and optionally the latents.

    It prints as a summary and the per-layer table (``repr``; HTML in Jupyter), never the per-unit arrays;
    ``save`` writes it as a run folder and ``stlens.load_result`` reads one back.

    Args:
        meta: what was run: model, data, pairs, seed, versions, devices (result.json ``meta``).
        layers: one ``LayerResult`` per latent, in the order measured.
        timing: seconds spent per phase.
        moments: layer → the streamed ``PairedMoments`` (not saved; empty when loaded).
        latents: latent name → the per-pair latents, with ``save_latents`` (else None).
        run_id: the id of the run folder it was saved into, or None.
        config: the arguments of the call, as config.json records them.

    Examples:
        >>> result = stlens.measure("stlens:c2d?classes=8&width=4", "synth:motion?n=16", frames=4, size=16, pairs=8,
        ...                         bootstrap=0, workers=0, progress=False)
        >>> isinstance(result, stlens.MeasureResult), len(result.layers)
        (True, 5)
        >>> print(result)  # doctest: +ELLIPSIS
        MeasureResult: stlens:c2d?classes=8&width=4 on synth:motion?n=16: 8+8 pairs, τ = 0.5
        layer ...
    """

    meta: dict[str, Any]
    layers: list[LayerResult]
    timing: dict[str, float] = field(default_factory=dict)
    moments: dict[str, Any] = field(default_factory=dict, repr=False)  # layer → PairedMoments
    latents: dict[str, np.ndarray] | None = field(default=None, repr=False)
    #: the id of the run folder this result was saved to or loaded from (docs/reliability.md)
    run_id: str | None = None
    #: config.json: how the result was made (command, arguments, input spec, layers, versions, timing)
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    def __getitem__(self, layer: str) -> LayerResult:
        for item in self.layers:
            if item.layer == layer:
                return item
        raise KeyError(f"no layer '{layer}' in this result; layers: {', '.join(x.layer for x in self.layers)}")

    def to_dict(self) -> dict[str, Any]:
        """The result.json document (docs/formats.md §3)."""
        doc = versioned({**self.meta, "layers": [layer.to_dict() for layer in self.layers], "timing": self.timing})
        return doc if self.run_id is None else doc | {"run_id": self.run_id}

    def to_frame(self):
        """A pandas DataFrame with one row per layer and the result.json fields flattened."""
        import pandas as pd

        return pd.DataFrame([flatten_layer(layer) for layer in self.layers])

    def units_frame(self):
        """A pandas DataFrame with one row per channel: layer, channel, r_dynamic, r_static, class, then r_<factor> for
        each further factor."""
        import pandas as pd

        return pd.DataFrame(list(unit_rows(self.layers)), columns=unit_columns(self.layers))

    def save(self, out: str | Path | RunFolder, config: dict[str, Any] | None = None, *,
             overwrite: bool = False) -> Path:
        """Write the run folder (result.json, layers.csv, units.csv, config.json, latents.npz when kept) into
        ``out``: all files or none; a folder holding a complete run is refused unless ``overwrite``
        (docs/reliability.md). ``config`` None: the settings ``stlens.measure`` recorded (``self.config``)."""
        return save_result(self, out, config, overwrite=overwrite)

    def _caption(self) -> str:
        pairs = self.meta.get("pairs") or {}
        weights = f" ({self.meta['weights']})" if self.meta.get("weights") else ""
        interrupted = ", interrupted" if self.meta.get("interrupted") else ""
        return (f"{self.meta.get('model')}{weights} on {self.meta.get('data')}: {pairs.get('dynamic')}+"
                f"{pairs.get('static')} pairs, τ = {self.meta.get('threshold')}{interrupted}")

    def __repr__(self) -> str:
        run = f", run {self.run_id}" if self.run_id else ""
        return text_summary([f"MeasureResult: {self._caption()}{run}"], self.table(), "result.table() shows all")

    def _repr_html_(self) -> str:
        """An HTML table for Jupyter: one row per layer (every value escaped)."""
        head = ["layer", "C", "dynamic %", "95% CI", "static %", "95% CI", "residual %", "units D/S/J/N/dead", "bias"]
        rows = [[r.layer, r.channels, f"{r.percent['dynamic']:.1f}", ci_text(r.ci95.get("dynamic")),
                 f"{r.percent['static']:.1f}", ci_text(r.ci95.get("static")), f"{r.percent['residual']:.1f}",
                 "/".join(str(r.units.get(k, 0)) for k in CLASSES), f"{r.bias:.2f}"] for r in self.layers]
        return html_table(self._caption(), head, rows)

    def plot(self, kind: str = "layers"):
        """A matplotlib Figure: ``layers`` (dynamic / static / residual % with 95% CIs), ``classes`` (channel classes
        per layer) or ``channels`` (r_static vs r_dynamic per channel with the τ lines)."""
        from stlens.measure import plots

        makers = {"layers": plots.layer_bars, "classes": plots.unit_classes, "channels": plots.channel_scatter}
        if kind not in makers:
            from stlens.errors import StlensError

            raise StlensError(f"unknown plot kind '{kind}'; choose one of {', '.join(makers)}")
        return makers[kind](self)

    def table(self) -> str:
        """A per-layer table for the terminal."""
        head = (f"{'layer':<18}{'C':>6}{'dynamic %':>11}{'95% CI':>15}{'static %':>10}{'95% CI':>15}"
                f"{'resid %':>9}  {'units D/S/J/N/dead':<20}{'bias':>7}")
        lines = [head, "-" * len(head)]
        for r in self.layers:
            def ci(key: str, r: LayerResult = r) -> str:
                v = r.ci95.get(key)
                return f"[{v[0]:.1f}, {v[1]:.1f}]" if v else "-"

            units = "/".join(str(r.units.get(k, 0)) for k in CLASSES)
            lines.append(f"{r.layer:<18}{r.channels:>6}{r.percent['dynamic']:>11.1f}{ci('dynamic'):>15}"
                         f"{r.percent['static']:>10.1f}{ci('static'):>15}{r.percent['residual']:>9.1f}  "
                         f"{units:<20}{r.bias:>7.2f}")
        return "\n".join(lines)



log = logging.getLogger("stlens")

#: the files every ``stlens measure`` run folder holds (docs/formats.md)
RUN_FILES = ("result.json", "layers.csv", "units.csv", "config.json")
_LAYER_KEYS = ("layer", "channels", "score", "dims", "percent", "ci95", "units", "bias")


def save_result(result: MeasureResult, out: str | Path | RunFolder, config: dict[str, Any] | None = None, *,
                overwrite: bool = False) -> Path:
    """Write the run folder of ``result`` (docs/reliability.md): all files or none; a folder holding a complete run is
    refused unless ``overwrite``; ``out`` may be a ``RunFolder`` claimed before the work started. ``config`` None:
    the result's own (the settings ``stlens.measure`` recorded)."""
    folder = out if isinstance(out, RunFolder) else RunFolder(out, "measure", overwrite=overwrite)
    with folder:
        write_files(result, folder.staging, config if config is not None else result.config, folder.run_id)
        saved = folder.commit("interrupted" if result.meta.get("interrupted") else "complete")
    result.run_id = folder.run_id
    return saved


def write_files(result: MeasureResult, out: Path, config: dict[str, Any] | None, run_id: str | None = None) -> None:
    """The files of a measure run, written into ``out`` (a staging folder); ``run_id`` goes into the JSONs."""
    from stlens.files import atomic_write, write_json, write_text

    if result.latents is not None:
        atomic_write(out / "latents.npz", lambda f: np.savez(f, **result.latents))
    write_text(out / "units.csv", _csv(unit_columns(result.layers), unit_rows(result.layers)))
    rows = [flatten_layer(layer) for layer in result.layers]
    write_text(out / "layers.csv", _csv(list(rows[0]) if rows else [], (r.values() for r in rows)))
    config = versioned(dict(config) if config else {"meta": result.meta})
    doc = result.to_dict()
    if run_id is not None:
        config["run_id"] = doc["run_id"] = run_id
    write_json(out / "config.json", config)
    write_json(out / "result.json", doc)


def _csv(header: list[str], rows) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return buffer.getvalue()


def read_units(path: Path, further: bool = False) -> dict[str, list[tuple]]:
    """The rows of a units.csv by layer: (channel, r_dynamic, r_static, class), and with ``further`` a fifth item,
    {factor: r} of the further factors' r_<factor> columns."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None) or []
            names = [h.removeprefix("r_") for h in header[len(UNIT_COLUMNS):]]
            if header[:len(UNIT_COLUMNS)] != UNIT_COLUMNS or not all(h.startswith("r_") for h in
                                                                    header[len(UNIT_COLUMNS):]):
                raise StlensError(f"{path}: header {header} is not {','.join(UNIT_COLUMNS)} (then r_<factor> "
                                  f"columns); {RERUN}")
            rows: dict[str, list[tuple]] = {}
            for number, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise StlensError(f"{path}, line {number}: damaged or truncated (expected {len(header)} "
                                      f"fields, got {len(row)}); {RERUN}")
                if row[4] not in CLASSES:
                    raise StlensError(f"{path}, line {number}: unknown class '{row[4]}' (one of {', '.join(CLASSES)}); "
                                      f"{RERUN}")
                try:
                    entry = (int(row[1]), float(row[2]), float(row[3]), row[4])
                    if further:
                        entry += ({name: float(v) for name, v in zip(names, row[len(UNIT_COLUMNS):], strict=True)},)
                    rows.setdefault(row[0], []).append(entry)
                except ValueError as exc:
                    raise StlensError(f"{path}, line {number}: damaged or truncated ({exc}); {RERUN}") from exc
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise damaged(path, exc, RERUN) from exc


def _layer(entry: dict[str, Any], units: list[tuple], where: Path) -> LayerResult:
    missing = [k for k in _LAYER_KEYS if k not in entry]
    if missing:
        raise StlensError(f"{where}: layer entry {entry.get('layer', '?')!r} lacks {', '.join(missing)}")
    name, channels = str(entry["layer"]), int(entry["channels"])
    units = sorted(units, key=lambda u: u[0])
    if [u[0] for u in units] != list(range(channels)):
        raise StlensError(f"{where.parent / 'units.csv'}: layer {name!r} has {len(units)} channel rows, "
                          f"result.json says {channels} channels")
    return LayerResult(
        layer=name, channels=channels, score=dict(entry["score"]), dims=dict(entry["dims"]),
        percent=dict(entry["percent"]), ci95=dict(entry["ci95"]),
        units=dict(entry["units"]), units_ci95=dict(entry.get("units_ci95") or {k: None for k in CLASSES}),
        bias=float(entry["bias"]), bias_ci95=entry.get("bias_ci95"),
        r_dynamic=np.array([u[1] for u in units], dtype=np.float64),
        r_static=np.array([u[2] for u in units], dtype=np.float64),
        classes=[u[3] for u in units],
        r_further={name: np.array([u[4][name] for u in units], dtype=np.float64) for name in
                   (units[0][4] if units else {})},
    )


def load_result(run_dir: str | Path, *, check_version: bool = True) -> MeasureResult:
    """Read a saved ``stlens measure`` folder back into a ``MeasureResult`` (without the streamed moments).

    The folder holds result.json, layers.csv, units.csv, config.json and an optional latents.npz. The stlens version
    that wrote the run (``meta["stlens_version"]``) is information only.

    Args:
        run_dir: the run folder (``stlens measure --out``).
        check_version: refuse a file of a newer ``format_version`` than this stlens reads.

    Returns:
        The ``MeasureResult``; a missing file, a malformed file or (with ``check_version``) a file of a newer format
        raises ``StlensError`` naming the file.

    Examples:
        >>> import tempfile
        >>> out = tempfile.mkdtemp() + "/measure"
        >>> _ = stlens.measure("stlens:c2d?classes=8&width=4", "synth:motion?n=16", frames=4, size=16, pairs=8,
        ...                    bootstrap=0, workers=0, progress=False, out=out)
        >>> loaded = stlens.load_result(out)
        >>> [layer.layer for layer in loaded.layers]
        ['stem', 'stage1', 'stage2', 'stage3', 'stage4']
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise StlensError(f"{run}: not a folder (expected a stlens measure output folder)")
    missing = [name for name in RUN_FILES if not (run / name).is_file()]
    if missing:
        raise StlensError(f"{run}: missing {', '.join(missing)} (a stlens measure run holds {', '.join(RUN_FILES)})")
    doc = read_json(run / "result.json", RERUN)
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list):
        raise StlensError(f"{run / 'result.json'}: not a stlens result (no 'layers' list); {RERUN}")
    if not doc["layers"]:
        raise StlensError(f"{run / 'result.json'}: no layers were measured")
    config = read_json(run / "config.json", RERUN)
    if check_version:
        check_format(doc, run / "result.json")
        check_format(config, run / "config.json")
    listed = _check_run(run, doc)
    units = read_units(run / "units.csv", further=True)
    with reading(run / "result.json", RERUN):
        layers = [_layer(entry, units.get(str(entry.get("layer")), []), run / "result.json")
                  for entry in doc["layers"]]
    meta = {k: v for k, v in doc.items() if k not in ("format_version", "layers", "timing", "run_id")}
    latents = None
    if (run / "latents.npz").is_file() and (listed is None or "latents.npz" in listed):
        latents = load_npz(run / "latents.npz", RERUN)
    return MeasureResult(meta, layers, dict(doc.get("timing") or {}), latents=latents, run_id=doc.get("run_id"),
                         config=config if isinstance(config, dict) else {})


def _check_run(run: Path, doc: dict[str, Any]) -> set[str] | None:
    """Check the run marker: a measure run, complete (or interrupted), every listed file as written, result.json and
    config.json of the same run. Returns the listed file names; None for an unmarked folder (stlens 0.1.0)."""
    marker = read_marker(run)
    if marker is None:
        log.warning("%s has no run marker (written by stlens 0.1.0 or by hand): its files are not checked", run)
        return None
    if marker["verb"] != "measure":
        raise StlensError(f"{run}: holds {describe(marker)}, not a measure run")
    if marker.get("status") not in ("complete", "interrupted"):
        raise StlensError(f"{run}: the run was not completely written (status {marker.get('status')!r}); run it again")
    check_files(run, marker, [*RUN_FILES, *(["latents.npz"] if "latents.npz" in marker["files"] else [])])
    config = read_json(run / "config.json", RERUN)
    for name, found in (("result.json", doc.get("run_id")), ("config.json", isinstance(config, dict)
                                                            and config.get("run_id"))):
        if found != marker.get("run_id"):
            raise StlensError(f"{run / name}: belongs to run {found!r}, the folder holds run {marker.get('run_id')!r}")
    return set(marker["files"])


def units_path(source: str | Path) -> Path:
    """units.csv of a measure run given its folder, its result.json or the units.csv itself."""
    path = Path(source)
    candidates = [path / "units.csv"] if path.is_dir() else [path.with_name("units.csv"), path]
    for candidate in candidates:
        if candidate.is_file() and candidate.name == "units.csv":
            return candidate
    raise StlensError(f"no units.csv for `from_run` {source} (give a stlens measure run folder or its result.json)")


def units_of(source: str | Path, layer: str) -> list[dict[str, Any]]:
    """The units.csv rows of ``layer`` (channel, r_dynamic, r_static, class) of the run at ``source``."""
    path = units_path(source)
    rows = read_units(path)
    if layer not in rows:
        raise StlensError(f"layer '{layer}' is not in {path}; measured layers: {', '.join(rows) or 'none'}")
    return [{"channel": c, "r_dynamic": rd, "r_static": rs, "class": k} for c, rd, rs, k in rows[layer]]
