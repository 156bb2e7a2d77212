"""Annotation files as data sources: Kinetics, PySlowFast, SSv2, Diving48, UCF101 and mmaction2 lists.

Spec: ``PATH[?root=DIR]`` or ``ann:FORMAT:PATH[?root=DIR]`` with FORMAT one of ``FORMATS``. Listed videos are looked
up under ``root`` (default: the annotation file's folder; for UCF101 lists a ``UCF-101`` folder beside the list or
beside its folder, when there is one); absolute paths in a list are kept as they are.

Format detection, when not named (first rule that matches):

1. ``*.json``: ``"vid_name"`` in the first entries → diving48; ``"id"`` → ssv2.
2. file name ``trainlist*`` / ``testlist*`` → ucf101.
3. first line mentions ``youtube_id`` (the official CSV header) → kinetics.
4. first line ends with two integers (``dir total_frames label``) → mmaction-rawframes.
5. first line ends with one integer (``path label``) → pyslowfast for ``*.csv``, else mmaction-video.

Anything else is an error that asks for ``ann:FORMAT:PATH``.

Labels: Kinetics class names → index in the sorted class names of the file; SSv2 templates (brackets stripped) →
index from ``something-something-v2-labels.json`` beside the file (else None); UCF101 1-indexed → 0-indexed
(testlists through ``classInd.txt`` beside the list, else None); the other formats as written. Class names
(``VideoSource.classes``, by label): the Kinetics label names, the SSv2 templates of the labels file, the UCF101
``classInd.txt`` names (a label without a name: its number); none for the other formats. Diving48 start/end frames
go to ``VideoSource.segments``: clips are drawn inside [start_frame, end_frame). Listed files that do not exist are
skipped and listed in ``VideoSource.missing``; malformed files raise ``StlensError`` naming the file and
the line (JSON: the entry).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stlens.errors import StlensError
from stlens.video.source import VideoSource

log = logging.getLogger("stlens")

ANNOTATION_SUFFIXES = {".csv", ".json", ".txt", ".lst"}
SSV2_LABELS = "something-something-v2-labels.json"


@dataclass(frozen=True)
class Entry:
    """One listed video: candidate paths (the first that exists is used), label, optional (start, end) frames and
    the label's class name where the file (or its class list) gives one."""

    candidates: tuple[Path, ...]
    label: int | None = None
    segment: tuple[int, int] | None = None
    name: str | None = None


# ----------------------------------------------------------------------------------------------------- file reading


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped text) of the non-empty lines of a text file."""
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield n, line.strip()


def _int(path: Path, where: str, value: Any) -> int:
    """``value`` as an int, or an error naming the file and the line / entry."""
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StlensError(f"{path}:{where}: expected an integer, got {value!r}") from None


def _json_entries(path: Path) -> list[dict[str, Any]]:
    """A JSON file holding a list of objects."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise StlensError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise StlensError(f"{path}: expected a JSON list of objects")
    return data


def _key(path: Path, i: int, item: dict[str, Any], key: str) -> Any:
    if item.get(key) in (None, ""):
        raise StlensError(f"{path}:entry {i + 1}: missing {key!r}")
    return item[key]


# ---------------------------------------------------------------------------------------------------------- parsers


def parse_kinetics(path: Path, root: Path) -> list[Entry]:
    """Official CSV ``label,youtube_id,time_start,time_end,split`` (``label`` may be absent in test splits)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if "youtube_id" not in (reader.fieldnames or []):
            raise StlensError(f"{path}:1: expected a header with youtube_id, time_start, time_end")
        rows = [(reader.line_num, row) for row in reader]
    classes = {name: i for i, name in enumerate(sorted({row.get("label") or "" for _, row in rows} - {""}))}
    entries = []
    for n, row in rows:
        if not row.get("youtube_id"):
            raise StlensError(f"{path}:{n}: missing youtube_id")
        try:
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
        except (KeyError, TypeError, ValueError):
            raise StlensError(f"{path}:{n}: bad time_start/time_end in {row}") from None
        name = f"{row['youtube_id']}_{start:06d}_{end:06d}.mp4"
        label, split = row.get("label") or "", row.get("split") or ""
        dirs = (root / label, root / label.replace(" ", "_"), root / split / label, root)  # "" leaves root as is
        entries.append(Entry(tuple(dict.fromkeys(d / name for d in dirs)), classes.get(label), name=label or None))
    return entries


def parse_path_label(path: Path, root: Path) -> list[Entry]:
    """PySlowFast / mmaction2 video list: ``path label`` (space separated; a comma also works)."""
    entries = []
    for n, line in _lines(path):
        parts = line.rsplit(None, 1)
        if len(parts) == 1 and "," in line:
            parts = line.rsplit(",", 1)
        if len(parts) != 2:
            raise StlensError(f"{path}:{n}: expected 'path label', got {line!r}")
        entries.append(Entry((root / parts[0],), _int(path, str(n), parts[1])))
    return entries


def parse_rawframes(path: Path, root: Path) -> list[Entry]:
    """mmaction2 rawframe list: ``dir total_frames label``."""
    entries = []
    for n, line in _lines(path):
        parts = line.rsplit(None, 2)
        if len(parts) != 3:
            raise StlensError(f"{path}:{n}: expected 'dir total_frames label', got {line!r}")
        _int(path, str(n), parts[1])
        entries.append(Entry((root / parts[0],), _int(path, str(n), parts[2])))
    return entries


def parse_ssv2(path: Path, root: Path) -> list[Entry]:
    """SSv2 JSON list of ``{"id", "template", ...}``; videos ``<root>/<id>.webm``."""
    labels_file = path.parent / SSV2_LABELS
    classes: dict[str, int] = {}
    if labels_file.is_file():
        try:
            classes = {k: int(v) for k, v in json.loads(labels_file.read_text(encoding="utf-8")).items()}
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            raise StlensError(f"{labels_file}: expected a JSON object template → index ({exc})") from None
    entries = []
    for i, item in enumerate(_json_entries(path)):
        template = str(item.get("template", "")).replace("[", "").replace("]", "")
        entries.append(Entry((root / f"{_key(path, i, item, 'id')}.webm",), classes.get(template),
                             name=template if template in classes else None))
    return entries


def parse_diving48(path: Path, root: Path) -> list[Entry]:
    """Diving48 JSON list of ``{"vid_name", "label", "start_frame", "end_frame"}``; ``<vid_name>.mp4`` or a folder.
    Clips are sampled inside [start_frame, end_frame) (see ``stlens.video.sampling.clip_indices``)."""
    entries = []
    for i, item in enumerate(_json_entries(path)):
        name, where = _key(path, i, item, "vid_name"), f"entry {i + 1}"
        label = _int(path, where, item["label"]) if "label" in item else None
        segment = None
        if "start_frame" in item and "end_frame" in item:
            segment = (_int(path, where, item["start_frame"]), _int(path, where, item["end_frame"]))
            if segment[0] < 0 or segment[1] <= segment[0]:
                raise StlensError(f"{path}:{where}: expected 0 ≤ start_frame < end_frame, got start_frame "
                                  f"{segment[0]}, end_frame {segment[1]}")
        entries.append(Entry((root / f"{name}.mp4", root / name), label, segment))
    return entries


def parse_ucf101(path: Path, root: Path) -> list[Entry]:
    """UCF101 ``trainlist0N.txt`` (``Class/v_X.avi idx``, 1-indexed) or ``testlist0N.txt`` (``Class/v_X.avi``)."""
    class_file = path.parent / "classInd.txt"
    classes = {}
    if class_file.is_file():
        for n, line in _lines(class_file):
            index, _, name = line.partition(" ")
            classes[name.strip()] = _int(class_file, str(n), index) - 1
    names = {k: v for v, k in classes.items()}
    entries = []
    for n, line in _lines(path):
        parts = line.split()
        if len(parts) == 2:
            label = _int(path, str(n), parts[1]) - 1
        elif len(parts) == 1:
            label = classes.get(Path(parts[0]).parent.name)
        else:
            raise StlensError(f"{path}:{n}: expected 'Class/v_X.avi [index]', got {line!r}")
        entries.append(Entry((root / parts[0],), label, name=names.get(label) if label is not None else None))
    return entries


PARSERS: dict[str, Callable[[Path, Path], list[Entry]]] = {
    "kinetics": parse_kinetics,
    "pyslowfast": parse_path_label,
    "ssv2": parse_ssv2,
    "diving48": parse_diving48,
    "ucf101": parse_ucf101,
    "mmaction-video": parse_path_label,
    "mmaction-rawframes": parse_rawframes,
}
FORMATS = tuple(PARSERS)


# -------------------------------------------------------------------------------------------------- spec and format


def split_root(spec: str) -> tuple[str, Path | None]:
    """``PATH?root=DIR`` → (PATH, DIR); a spec without a query (or an existing path) → (spec, None)."""
    if "?" not in spec or Path(spec).exists():
        return spec, None
    text, _, query = spec.partition("?")
    if not query.startswith("root=") or len(query) == len("root="):
        raise StlensError(f"unknown query '?{query}' in {spec} (only ?root=DIR is understood)")
    return text, Path(query.removeprefix("root=")).expanduser()


def is_annotation(spec: str) -> bool:
    """Whether ``spec`` names an annotation file (``ann:...``, or an existing file with an annotation suffix)."""
    if spec.startswith("ann:"):
        return True
    path = Path(split_root(spec)[0])
    return path.is_file() and path.suffix.lower() in ANNOTATION_SUFFIXES


def detect_format(path: Path) -> str:
    """The annotation format of ``path`` from its name and first line (rules in the module docstring)."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        head = f.read(4096)
    if path.suffix.lower() == ".json":
        if '"vid_name"' in head:
            return "diving48"
        if '"id"' in head:
            return "ssv2"
    elif re.match(r"(train|test)list", path.name.lower()):
        return "ucf101"
    else:
        first = next((line for line in head.splitlines() if line.strip()), "")
        tokens = first.replace(",", " ").split()
        if "youtube_id" in tokens:
            return "kinetics"
        if len(tokens) >= 3 and all(t.isdigit() for t in tokens[-2:]):
            return "mmaction-rawframes"
        if len(tokens) >= 2 and tokens[-1].isdigit():
            return "pyslowfast" if path.suffix.lower() == ".csv" else "mmaction-video"
    raise StlensError(f"cannot tell the annotation format of {path}; name it as ann:FORMAT:{path} "
                      f"with FORMAT one of {', '.join(FORMATS)}")


def default_root(fmt: str, path: Path) -> Path:
    """The annotation file's folder, or for UCF101 a ``UCF-101`` folder beside the list or beside its folder."""
    if fmt == "ucf101":
        for folder in (path.parent / "UCF-101", path.parent.parent / "UCF-101"):
            if folder.is_dir():
                return folder
    return path.parent


# ------------------------------------------------------------------------------------------------------------- open


def open_annotation(spec: str) -> VideoSource:
    """Open an annotation file spec (see the module docstring); missing videos are skipped and reported."""
    fmt, rest = None, spec
    if spec.startswith("ann:"):
        fmt, sep, rest = spec.removeprefix("ann:").partition(":")
        if not sep or fmt not in PARSERS:
            raise StlensError(f"bad spec {spec!r}: use ann:FORMAT:PATH with FORMAT one of {', '.join(FORMATS)}")
    text, root = split_root(rest)
    path = Path(text).expanduser()
    if not path.is_file():
        raise StlensError(f"annotation file not found: {path}")
    fmt = fmt or detect_format(path)
    root = root or default_root(fmt, path)
    try:
        entries = PARSERS[fmt](path, root)
    except UnicodeDecodeError as exc:
        raise StlensError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    if not entries:
        raise StlensError(f"{path}: no entries")
    found: list[tuple[Path, Entry]] = []
    missing: list[dict[str, str]] = []
    for entry in entries:
        hit = next((c for c in entry.candidates if c.exists()), None)
        if hit is None:
            missing.append({"source": str(entry.candidates[0]), "reason": f"listed in {path} but not found"})
        else:
            found.append((hit, entry))
    first = ", ".join(m["source"] for m in missing[:3])
    if not found:
        raise StlensError(f"none of the {len(entries)} files listed in {path} ({fmt}) exist under {root}; "
                          f"first missing: {first}")
    if missing:
        log.warning("%d of %d files listed in %s not found, skipped (first: %s)", len(missing), len(entries), path,
                    first)
    labels = tuple(e.label for _, e in found)
    named = {e.label: e.name for e in entries if e.label is not None and e.name}
    classes = tuple(named.get(k, str(k)) for k in range(max(named) + 1)) if named else ()
    segments = tuple(e.segment for _, e in found)
    return VideoSource(spec, tuple(p for p, _ in found),
                       labels=labels if any(x is not None for x in labels) else (),
                       segments=segments if any(s is not None for s in segments) else (),
                       missing=tuple(missing), classes=classes)
