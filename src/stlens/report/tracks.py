"""Training tracks (``stlens track`` output) read tolerantly into one table: step, layer, dynamic %, static %.

Accepted: ``track.csv`` / ``tracks.csv`` with a step column, a layer column and percent columns named
``percent_dynamic`` / ``dynamic_percent`` / ``dynamic_pct`` / ``dynamic`` (likewise static; CI columns
``dynamic_lo`` / ``dynamic_hi`` (as ``stlens track`` writes), ``ci95_dynamic_low`` / ``dynamic_low`` ...
optional), or ``track.json`` / ``tracks.json`` holding a list of such records
(or ``{"rows"|"steps"|"records"|"track": [...]}``), where a record may also nest ``{"percent": {"dynamic": ..}}``
like result.json, or hold a ``layers`` list of result.json layer entries. Task metric columns (``train_acc``,
``test_acc``; ``train_miou``, ``test_miou``, ``test_msr`` of a segmentation run) are kept when present;
``track_scores`` gives them per step, or, when the track holds none, the evaluations of the training run it tracked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from stlens.errors import StlensError
from stlens.files import check_format
from stlens.report.load import TRACK_FILES, read_json
from stlens.report.training import METRIC_COLUMNS, load_training, number, task_of
from stlens.runs import check_files, read_marker

#: what to do about a damaged track file
RERUN = "rerun stlens track to write it again"

_PERCENT = {key: (f"percent_{key}", f"{key}_percent", f"{key}_pct", f"{key}%", key) for key in ("dynamic", "static")}
_LOW = {key: (f"ci95_{key}_low", f"{key}_lo", f"{key}_low", f"{key}_ci_low") for key in ("dynamic", "static")}
_HIGH = {key: (f"ci95_{key}_high", f"{key}_hi", f"{key}_high", f"{key}_ci_high") for key in ("dynamic", "static")}
_STEP = ("step", "global_step", "iteration", "checkpoint_step", "epoch")


def _flatten(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A JSON record → flat rows; a record with a ``layers`` list becomes one row per layer."""
    if isinstance(record.get("layers"), list):
        base = {k: v for k, v in record.items() if k != "layers"}
        return [row for entry in record["layers"] if isinstance(entry, dict) for row in _flatten(base | entry)]
    row = {}
    for key, value in record.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                if isinstance(inner, list) and len(inner) == 2:
                    row[f"{key}_{sub}_low"], row[f"{key}_{sub}_high"] = inner
                else:
                    row[f"{key}_{sub}"] = inner
        else:
            row[key] = value
    return [row]


def _records(doc: Any, path: Path) -> list[dict[str, Any]]:
    if isinstance(doc, dict):
        for key in ("rows", "steps", "records", "track"):
            if isinstance(doc.get(key), list):
                doc = doc[key]
                break
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise StlensError(f"{path}: expected a list of records (or rows/steps/records/track: [...])")
    return [row for record in doc for row in _flatten(record)]


def _pick(frame: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    lowered = {str(c).lower(): c for c in frame.columns}
    return next((lowered[n] for n in names if n in lowered), None)


def load_track(folder: str | Path) -> pd.DataFrame:
    """The track table in ``folder``: columns step, layer, dynamic, static (+ *_low/_high when given), sorted."""
    folder = Path(folder)
    path = next((folder / n for n in TRACK_FILES if (folder / n).is_file()), None)
    if path is None:
        raise StlensError(f"{folder}: no {' / '.join(TRACK_FILES)}")
    for name in TRACK_FILES:  # the JSON of a track says which format its files are in
        if name.endswith(".json") and (folder / name).is_file():
            check_format(read_json(folder / name, RERUN), folder / name)
    marker = read_marker(folder)
    if marker is not None and marker.get("verb") == "track" and path.name in marker["files"]:
        check_files(folder, marker, [path.name])  # a damaged or truncated file stlens wrote is named as such
    if path.suffix == ".csv":
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise StlensError(f"{path}: cannot read as CSV, damaged or truncated ({exc}); {RERUN}") from exc
    else:
        frame = pd.DataFrame(_records(read_json(path, RERUN), path))
    step = _pick(frame, _STEP)
    if step is None:
        raise StlensError(f"{path}: no step column (one of {', '.join(_STEP)}); columns: {', '.join(map(str, frame))}")
    out = pd.DataFrame({"step": pd.to_numeric(frame[step], errors="coerce")})
    layer = _pick(frame, ("layer", "latent", "name"))
    out["layer"] = frame[layer].astype(str) if layer is not None else "all"
    for key in ("dynamic", "static"):
        column = _pick(frame, _PERCENT[key])
        if column is None:
            raise StlensError(f"{path}: no {key} percent column (one of {', '.join(_PERCENT[key])})")
        out[key] = pd.to_numeric(frame[column], errors="coerce")
        low, high = _pick(frame, _LOW[key]), _pick(frame, _HIGH[key])
        if low is not None and high is not None:
            out[f"{key}_low"] = pd.to_numeric(frame[low], errors="coerce")
            out[f"{key}_high"] = pd.to_numeric(frame[high], errors="coerce")
    for key in METRIC_COLUMNS:
        column = _pick(frame, (key,))
        if column is not None:
            out[key] = pd.to_numeric(frame[column], errors="coerce")
    out = out.dropna(subset=["step", "dynamic", "static"])
    if out.empty:
        raise StlensError(f"{path}: no rows with a step and numeric dynamic/static percents")
    return out.sort_values(["layer", "step"], kind="stable").reset_index(drop=True)


def _tracked_run(folder: Path) -> Path | None:
    """The training run a track measured (track.json's ``meta.checkpoints``: the run folder or its checkpoints/)."""
    path = folder / "track.json"
    if not path.is_file():
        return None
    try:
        doc = read_json(path)
    except StlensError:
        return None
    given = (doc.get("meta") or {}).get("checkpoints") if isinstance(doc, dict) else None
    if not isinstance(given, str) or not given:
        return None
    run = Path(given)
    run = run if run.is_dir() else run.parent
    return next((r for r in (run, run.parent) if (r / "metrics.jsonl").is_file() and (r / "config.json").is_file()),
                None)


def track_scores(folder: str | Path, table: pd.DataFrame) -> tuple[str, pd.DataFrame, str]:
    """The task metrics of a track per step: ``(task, frame with step + metric columns, source)``. From the track's
    own columns when any holds a value (``source`` ""); else from the eval lines of the training run it tracked, at
    the tracked steps (``source`` names that metrics.jsonl); an empty frame when neither has any."""
    have = [k for k in METRIC_COLUMNS if k in table and table[k].notna().any()]
    if have:
        frame = table.groupby("step", sort=True)[have].first().reset_index()
        return task_of(None, set(have)), frame, ""
    run = _tracked_run(Path(folder))
    if run is not None:
        try:
            training = load_training(run)
        except StlensError:
            training = None
        steps = set(table["step"].tolist())
        rows = [{"step": r["step"], **{k: number(r.get(k)) for k in METRIC_COLUMNS}}
                for r in training.evals if r["step"] in steps] if training else []
        if rows:
            frame = pd.DataFrame(rows).drop_duplicates("step", keep="last").sort_values("step")
            frame = frame[["step"] + [k for k in METRIC_COLUMNS if frame[k].notna().any()]]
            if len(frame.columns) > 1:
                return training.task, frame.reset_index(drop=True), str(run / "metrics.jsonl")
    return "classify", pd.DataFrame({"step": []}), ""
