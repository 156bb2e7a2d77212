"""Read saved runs back: ``load_result`` (a ``stlens measure`` folder → ``MeasureResult``) and the discovery of
measure runs, training tracks and visualization runs under the folders given to ``stlens report``."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stlens._version import __version__
from stlens.errors import StlensError
from stlens.measure.estimate import CLASSES
from stlens.measure.result import UNIT_COLUMNS, LayerResult, MeasureResult
from stlens.runs import STAGING_PREFIX, check_files, describe, read_marker

log = logging.getLogger("stlens")

#: the files every ``stlens measure`` run folder holds (DESIGN.md section 3)
RUN_FILES = ("result.json", "layers.csv", "units.csv", "config.json")
#: a folder holding one of these is a training track (``stlens track``)
TRACK_FILES = ("track.csv", "track.json", "tracks.csv", "tracks.json")
_LAYER_KEYS = ("layer", "channels", "score", "dims", "percent", "ci95", "units", "bias")


def read_json(path: Path) -> Any:
    """A JSON file, or a ``StlensError`` naming the file and the position of the problem."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StlensError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise StlensError(f"{path}: cannot read ({exc})") from exc


def _read_units(path: Path) -> dict[str, list[tuple[int, float, float, str]]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header != UNIT_COLUMNS:
                raise StlensError(f"{path}: header {header} is not {','.join(UNIT_COLUMNS)}")
            rows: dict[str, list[tuple[int, float, float, str]]] = {}
            for number, row in enumerate(reader, start=2):
                if len(row) != len(UNIT_COLUMNS):
                    raise StlensError(f"{path}, line {number}: expected {len(UNIT_COLUMNS)} fields, got {len(row)}")
                if row[4] not in CLASSES:
                    raise StlensError(f"{path}, line {number}: unknown class '{row[4]}' (one of {', '.join(CLASSES)})")
                try:
                    rows.setdefault(row[0], []).append((int(row[1]), float(row[2]), float(row[3]), row[4]))
                except ValueError as exc:
                    raise StlensError(f"{path}, line {number}: {exc}") from exc
            return rows
    except OSError as exc:
        raise StlensError(f"{path}: cannot read ({exc})") from exc


def _layer(entry: dict[str, Any], units: list[tuple[int, float, float, str]], where: Path) -> LayerResult:
    missing = [k for k in _LAYER_KEYS if k not in entry]
    if missing:
        raise StlensError(f"{where}: layer entry {entry.get('layer', '?')!r} lacks {', '.join(missing)}")
    name, channels = str(entry["layer"]), int(entry["channels"])
    units = sorted(units)
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
    )


def load_result(run_dir: str | Path, *, check_version: bool = True) -> MeasureResult:
    """Read a saved ``stlens measure`` folder (result.json, layers.csv, units.csv, config.json, optional latents.npz)
    back into a ``MeasureResult`` (without the streamed moments). A missing file, a malformed file or a run written
    by another stlens version (unless ``check_version=False``) raises ``StlensError`` naming the file."""
    run = Path(run_dir)
    if not run.is_dir():
        raise StlensError(f"{run}: not a folder (expected a stlens measure output folder)")
    missing = [name for name in RUN_FILES if not (run / name).is_file()]
    if missing:
        raise StlensError(f"{run}: missing {', '.join(missing)} (a stlens measure run holds {', '.join(RUN_FILES)})")
    doc = read_json(run / "result.json")
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list):
        raise StlensError(f"{run / 'result.json'}: not a stlens result (no 'layers' list)")
    if not doc["layers"]:
        raise StlensError(f"{run / 'result.json'}: no layers were measured")
    version = doc.get("stlens_version")
    if version is None:
        raise StlensError(f"{run / 'result.json'}: no stlens_version field; not written by stlens measure")
    if check_version and version != __version__:
        raise StlensError(f"{run / 'result.json'}: written by stlens {version}, this is stlens {__version__} "
                          f"(re-run the measurement with this version, or use stlens {version})")
    listed = _check_run(run, doc)
    units = _read_units(run / "units.csv")
    layers = [_layer(entry, units.get(str(entry.get("layer")), []), run / "result.json") for entry in doc["layers"]]
    meta = {k: v for k, v in doc.items() if k not in ("layers", "timing", "run_id")}
    latents = None
    if (run / "latents.npz").is_file() and (listed is None or "latents.npz" in listed):
        try:
            with np.load(run / "latents.npz", allow_pickle=False) as npz:
                latents = {key: npz[key] for key in npz.files}
        except (OSError, ValueError) as exc:
            raise StlensError(f"{run / 'latents.npz'}: cannot read ({exc})") from exc
    return MeasureResult(meta, layers, dict(doc.get("timing") or {}), latents=latents, run_id=doc.get("run_id"))


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
    config = read_json(run / "config.json")
    for name, found in (("result.json", doc.get("run_id")), ("config.json", isinstance(config, dict)
                                                            and config.get("run_id"))):
        if found != marker.get("run_id"):
            raise StlensError(f"{run / name}: belongs to run {found!r}, the folder holds run {marker.get('run_id')!r}")
    return set(marker["files"])


@dataclass
class Found:
    """What ``find_inputs`` found: measure run folders, track folders, visualization folders, and skipped paths."""

    runs: list[Path] = field(default_factory=list)
    tracks: list[Path] = field(default_factory=list)
    visuals: list[Path] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def _has_gif(folder: Path) -> bool:
    return any(folder.glob("*.gif"))


def _is_visual_root(folder: Path) -> bool:
    """A ``stlens visualize`` output: summary.json with a ``targets`` list (per-target folders below it)."""
    if not (folder / "summary.json").is_file():
        return False
    try:
        doc = read_json(folder / "summary.json")
    except StlensError:
        return False
    return isinstance(doc, dict) and isinstance(doc.get("targets"), list)


def _is_track(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TRACK_FILES)


def _is_visual(folder: Path) -> bool:
    """GIFs with JSON beside them and no measure tables (a visualize target folder, or any folder of GIF + JSON)."""
    return (_has_gif(folder) and any(folder.glob("*.json")) and not (folder / "units.csv").is_file()
            and not (folder / "layers.csv").is_file())


def _is_run_like(folder: Path) -> bool:
    return any((folder / name).is_file() for name in RUN_FILES) and not _is_track(folder) and not _is_visual(folder)


def _in_staging(folder: Path, root: Path) -> bool:
    """Inside a staging folder of a run still being written (never shown)."""
    return any(part.startswith(STAGING_PREFIX) for part in folder.relative_to(root).parts)


def find_inputs(paths: list[str | Path]) -> Found:
    """Classify the given folders, searching nested folders: a folder with any of result.json / layers.csv /
    units.csv / config.json is a measure run (the demo root holds several, ``<model>/<data>/``), one with
    track.csv/track.json a training track; a ``stlens visualize`` output (summary.json with ``targets``, read as one
    whole) or any other folder of GIFs + JSON without measure tables is a visualization run."""
    found = Found()
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            found.skipped.append({"source": str(path), "reason": "not a folder" if path.exists() else "not found"})
            continue
        before = len(found.runs) + len(found.tracks) + len(found.visuals)
        roots: list[Path] = []
        nested = sorted(p for p in path.rglob("*") if p.is_dir() and not _in_staging(p, path))
        for folder in [path, *nested]:
            if any(root in folder.parents for root in roots):
                continue  # inside a visualize output: its target folders belong to it
            if _is_visual_root(folder):
                roots.append(folder)
                found.visuals.append(folder)
            elif _is_track(folder):
                found.tracks.append(folder)
            elif _is_run_like(folder):
                found.runs.append(folder)
            elif _is_visual(folder):
                found.visuals.append(folder)
        if len(found.runs) + len(found.tracks) + len(found.visuals) == before:
            found.skipped.append({"source": str(path), "reason": "no stlens run found (no result.json, track.csv/"
                                  "track.json or visualization GIF + JSON in it or below it)"})
    for group in (found.runs, found.tracks, found.visuals):
        group[:] = list(dict.fromkeys(group))
    # per-step measurements inside a track folder belong to the track, not to the per-model sections
    found.runs = [r for r in found.runs if not any(t in r.parents for t in found.tracks)]
    return found
