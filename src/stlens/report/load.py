"""Discovery of what ``stlens report`` shows: measure runs, ablate runs, selectivity runs, perturb runs, training
runs, training tracks and visualization runs under the folders it is given. Reading a measure run back is
``stlens.measure.result.load_result`` (re-exported here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stlens.errors import StlensError
from stlens.files import read_json
from stlens.measure.result import RUN_FILES, load_result
from stlens.runs import STAGING_PREFIX, read_marker

__all__ = ["ABLATION_FILE", "EXPLAIN_FILE", "PERTURB_FILE", "RUN_FILES", "SELECTIVITY_FILE", "TRACK_FILES",
           "TRAIN_FILE", "Found", "find_inputs", "load_result", "read_json"]

#: a folder holding one of these is a training track (``stlens track``)
TRACK_FILES = ("track.csv", "track.json", "tracks.csv", "tracks.json")
#: a folder holding this (or whose run marker names the verb ``ablate``) is an ablate run (``stlens ablate``)
ABLATION_FILE = "ablation.json"
#: a folder holding this (or whose run marker names the verb ``selectivity``) is a selectivity run
SELECTIVITY_FILE = "selectivity.json"
#: a folder holding this (or whose run marker names the verb ``explain``) is an explain run (``stlens explain``)
EXPLAIN_FILE = "explain.json"
#: a folder holding this (or whose run marker names the verb ``perturb``) is a perturb run (``stlens perturb``)
PERTURB_FILE = "perturb.json"
#: a folder whose run marker names this verb is a dataset report (``stlens perturb --dataset-report``)
DATASET_VERB = "perturb-dataset"
#: a folder holding this (or whose run marker names the verb ``train``) is a training run (``stlens train``)
TRAIN_FILE = "metrics.jsonl"


@dataclass
class Found:
    """What ``find_inputs`` found: measure run folders, ablate run folders, training run folders, track folders,
    visualization folders, and skipped paths."""

    runs: list[Path] = field(default_factory=list)
    ablations: list[Path] = field(default_factory=list)
    selectivity: list[Path] = field(default_factory=list)
    explains: list[Path] = field(default_factory=list)
    perturbs: list[Path] = field(default_factory=list)
    datasets: list[Path] = field(default_factory=list)
    trainings: list[Path] = field(default_factory=list)
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


def _verb(folder: Path) -> str | None:
    """The verb the folder's run marker names (None: no readable marker)."""
    try:
        marker = read_marker(folder)
    except StlensError:
        return None
    return marker.get("verb") if marker else None


def _marked(folder: Path, name: str, verb: str) -> bool:
    """A ``verb`` output: its marker names the verb, or (marker lost or unreadable) it holds ``name``, so that a
    damaged one is listed as skipped with the reason instead of being passed over."""
    if (folder / name).is_file():
        return True
    try:
        marker = read_marker(folder)
    except StlensError:
        return False
    return bool(marker and marker.get("verb") == verb)


def _is_ablation(folder: Path) -> bool:
    """A ``stlens ablate`` output: its marker names the verb ablate, or (marker lost or unreadable) it holds
    ablation.json, so that a damaged one is listed as skipped with the reason instead of being passed over."""
    if (folder / ABLATION_FILE).is_file():
        return True
    try:
        marker = read_marker(folder)
    except StlensError:
        return False
    return bool(marker and marker.get("verb") == "ablate")


def _is_selectivity(folder: Path) -> bool:
    """A ``stlens selectivity`` output: its marker names the verb selectivity, or (marker lost or unreadable) it holds
    selectivity.json, so that a damaged one is listed as skipped with the reason."""
    if (folder / SELECTIVITY_FILE).is_file():
        return True
    try:
        marker = read_marker(folder)
    except StlensError:
        return False
    return bool(marker and marker.get("verb") == "selectivity")


def _is_explain(folder: Path) -> bool:
    """A ``stlens explain`` output: its marker names the verb explain, or (marker lost or unreadable) it holds
    explain.json, so that a damaged one is listed as skipped with the reason."""
    if (folder / EXPLAIN_FILE).is_file():
        return True
    try:
        marker = read_marker(folder)
    except StlensError:
        return False
    return bool(marker and marker.get("verb") == "explain")


def _is_training(folder: Path) -> bool:
    """A ``stlens train`` output: its marker names the verb train, or (no readable marker) it holds metrics.jsonl and
    no result.json."""
    try:
        marker = read_marker(folder)
    except StlensError:
        marker = None
    if marker is not None:
        return marker.get("verb") == "train"
    return (folder / TRAIN_FILE).is_file() and not (folder / "result.json").is_file()


def _is_run_like(folder: Path) -> bool:
    return any((folder / name).is_file() for name in RUN_FILES) and not _is_track(folder) and not _is_visual(folder)


def _in_staging(folder: Path, root: Path) -> bool:
    """Inside a staging folder of a run still being written (never shown)."""
    return any(part.startswith(STAGING_PREFIX) for part in folder.relative_to(root).parts)


def _count(found: Found) -> int:
    return sum(map(len, (found.runs, found.ablations, found.selectivity, found.explains, found.perturbs,
                         found.datasets, found.trainings, found.tracks, found.visuals)))


def find_inputs(paths: list[str | Path]) -> Found:
    """Classify the given folders, searching nested folders: a folder with any of result.json / layers.csv /
    units.csv / config.json is a measure run (the demo root holds several, ``<model>/<data>/``), one with an ablate
    run marker or ablation.json an ablate run, one with a selectivity run marker or selectivity.json a selectivity
    run, one with a perturb run marker or perturb.json a perturb run, one with a perturb-dataset run marker a dataset
    report (``stlens perturb --dataset-report``), one with track.csv/track.json a training track;
    a ``stlens
    visualize`` output (summary.json with ``targets``, read as one whole) or any other folder of GIFs + JSON without
    measure tables is a visualization run; one with a train run marker or metrics.jsonl (no result.json) a training
    run."""
    found = Found()
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            found.skipped.append({"source": str(path), "reason": "not a folder" if path.exists() else "not found"})
            continue
        before = _count(found)
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
            elif _is_ablation(folder):
                found.ablations.append(folder)
            elif _is_selectivity(folder):
                found.selectivity.append(folder)
            elif _is_explain(folder):
                found.explains.append(folder)
            elif _marked(folder, PERTURB_FILE, "perturb"):
                found.perturbs.append(folder)
            elif _verb(folder) == DATASET_VERB:
                found.datasets.append(folder)
            elif _is_training(folder):
                found.trainings.append(folder)
            elif _is_run_like(folder):
                found.runs.append(folder)
            elif _is_visual(folder):
                found.visuals.append(folder)
        if _count(found) == before:
            found.skipped.append({"source": str(path), "reason": "no stlens run found (no result.json, ablation.json, "
                                  "selectivity.json, explain.json, perturb.json, a dataset report, metrics.jsonl, "
                                  "track.csv/track.json "
                                  "or visualization GIF + JSON in it or below it)"})
    for group in (found.runs, found.ablations, found.selectivity, found.explains, found.perturbs, found.datasets,
                  found.trainings, found.tracks, found.visuals):
        group[:] = list(dict.fromkeys(group))
    # per-step measurements inside a track folder belong to the track, not to the per-model sections
    found.runs = [r for r in found.runs if not any(t in r.parents for t in found.tracks)]
    return found
