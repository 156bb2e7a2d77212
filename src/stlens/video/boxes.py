"""Bounding-box CSV files for ``moca:ROOT`` (see ``maskdata``): one box per row, read with the line it came from.

Two forms, told apart by the header: the first line that is neither empty nor a ``#`` comment, or a
``# CSV_HEADER = ...`` comment (as VGG Image Annotator 3 writes it).

- stlens' simple form, header ``sequence,frame,x,y,w,h`` (columns in any order, others ignored): ``frame`` names a
  frame of ``JPEGImages/<sequence>/`` by file name (``00005.jpg``), stem (``00005``) or number (``5`` for
  ``00005.jpg``); x, y (top-left corner), w, h in pixels of the original frame.
- MoCA's ``annotations.csv`` (a VGG Image Annotator 3 export after ``#`` preamble lines), with columns
  ``file_list`` (``["/<sequence>/<frame>.jpg"]`` or a plain path) and ``spatial_coordinates`` (``[2, x, y, w, h]``,
  2 = a rectangle; rows with ``[]`` carry no box and are skipped; other shapes are an error).

Several rows for one frame give the union of their boxes.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from stlens.errors import StlensError

SIMPLE_COLUMNS = ("sequence", "frame", "x", "y", "w", "h")
VIA_COLUMNS = ("file_list", "spatial_coordinates")
VIA_RECTANGLE = 2
VIA_HEADER = "CSV_HEADER"


@dataclass(frozen=True)
class BoxRow:
    """One box: its sequence, frame (as written), (x, y, w, h) in pixels and the line of the CSV it is on."""

    sequence: str
    frame: str
    box: tuple[float, float, float, float]
    line: int


def _records(path: Path) -> tuple[tuple[int, list[str]] | None, list[tuple[int, list[str]]]]:
    """A ``# CSV_HEADER = ...`` comment as (line number, fields) (None without one) and (line number, fields) of the
    non-empty, non-comment lines."""
    header, records = None, []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            for n, line in enumerate(f, 1):
                text = line.strip()
                if text.startswith("#") and text[1:].lstrip().startswith(VIA_HEADER):
                    header = (n, next(csv.reader([text[1:].lstrip().removeprefix(VIA_HEADER).lstrip(" =")])))
                elif text and not text.startswith("#"):
                    records.append((n, next(csv.reader([line]))))
    except UnicodeDecodeError as exc:
        raise StlensError(f"{path}: not a UTF-8 text file ({exc.reason})") from None
    return header, records


def _numbers(path: Path, line: int, values: list[str], what: str) -> list[float]:
    try:
        return [float(v) for v in values]
    except ValueError:
        raise StlensError(f"{path}:{line}: expected numbers for {what}, got {values}") from None


def _box(path: Path, line: int, x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
    if w < 0 or h < 0:
        raise StlensError(f"{path}:{line}: box width and height must be ≥ 0, got w={w:g}, h={h:g}")
    return x, y, w, h


def _simple_row(path: Path, line: int, fields: list[str], columns: dict[str, int]) -> BoxRow:
    if len(fields) <= max(columns.values()):
        raise StlensError(f"{path}:{line}: expected {max(columns.values()) + 1} fields, got {len(fields)}")
    value = {name: fields[i].strip() for name, i in columns.items()}
    if not value["sequence"] or not value["frame"]:
        raise StlensError(f"{path}:{line}: empty sequence or frame")
    x, y, w, h = _numbers(path, line, [value[k] for k in "xywh"], "x, y, w, h")
    return BoxRow(value["sequence"], value["frame"], _box(path, line, x, y, w, h), line)


def _via_row(path: Path, line: int, fields: list[str], columns: dict[str, int]) -> BoxRow | None:
    if len(fields) <= max(columns.values()):
        raise StlensError(f"{path}:{line}: expected at least {max(columns.values()) + 1} fields, got {len(fields)}")
    files, coords = fields[columns["file_list"]].strip(), fields[columns["spatial_coordinates"]].strip()
    try:
        shape = json.loads(coords) if coords else []
        listed = json.loads(files) if files.startswith("[") else [files]
    except json.JSONDecodeError:
        raise StlensError(f"{path}:{line}: cannot parse file_list {files!r} or spatial_coordinates {coords!r}") \
            from None
    if not shape:
        return None
    if not isinstance(listed, list) or not listed or not isinstance(shape, list):
        raise StlensError(f"{path}:{line}: expected file_list [\"/<sequence>/<frame>\"] and a coordinate list")
    if shape[0] != VIA_RECTANGLE or len(shape) != 5:
        raise StlensError(f"{path}:{line}: only rectangles [2, x, y, w, h] are supported, got {coords}")
    parts = Path(str(listed[0])).parts
    if len(parts) < 2:
        raise StlensError(f"{path}:{line}: file_list {listed[0]!r} does not name <sequence>/<frame>")
    x, y, w, h = _numbers(path, line, shape[1:], "the rectangle")
    return BoxRow(parts[-2], parts[-1], _box(path, line, x, y, w, h), line)


def read_boxes(path: Path) -> list[BoxRow]:
    """The boxes of a CSV in either form (see the module docstring); a ``StlensError`` naming the line otherwise."""
    if not path.is_file():
        raise StlensError(f"boxes CSV not found: {path}")
    comment, records = _records(path)
    if not records:
        raise StlensError(f"{path}: empty boxes CSV")
    if comment is not None and records[0][1] != comment[1]:
        (header_line, header), body = comment, records  # VIA: the header is the # CSV_HEADER comment
    else:
        (header_line, header), body = records[0], records[1:]
    names = [h.strip().lower() for h in header]
    if all(c in names for c in VIA_COLUMNS):
        columns = {c: names.index(c) for c in VIA_COLUMNS}
        rows = [_via_row(path, n, fields, columns) for n, fields in body]
    elif all(c in names for c in SIMPLE_COLUMNS):
        columns = {c: names.index(c) for c in SIMPLE_COLUMNS}
        rows = [_simple_row(path, n, fields, columns) for n, fields in body]
    else:
        raise StlensError(f"{path}:{header_line}: expected a header {','.join(SIMPLE_COLUMNS)} or MoCA's "
                          f"annotations.csv columns {', '.join(VIA_COLUMNS)}; got {','.join(header)}")
    found = [r for r in rows if r is not None]
    if not found:
        raise StlensError(f"{path}: no boxes")
    return found
