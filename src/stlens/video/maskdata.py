"""Video object segmentation data sets as data sources: ``davis:ROOT`` and ``moca:ROOT`` open to a ``MaskSource``
(frame folders with per-frame masks; see ``masks``). docs/segmentation.md has the layouts.

- ``davis:ROOT[?split=S&resolution=480p]``: ``ROOT/JPEGImages/<res>/<seq>/*.jpg`` with
  ``ROOT/Annotations/<res>/<seq>/*.png``, one mask per frame (paired in name order; the counts must match). The
  sequences of a split come from ``ROOT/ImageSets/<res>/<S>.txt`` (DAVIS-2016: ``/JPEGImages/480p/bear/00000.jpg
  /Annotations/...`` lines), else ``ImageSets/2017/<S>.txt`` or ``ImageSets/2016/<S>.txt`` or ``ImageSets/<S>.txt``
  (plain sequence names, one a line); without ``split`` every folder of ``JPEGImages/<res>``.
- ``moca:ROOT[?boxes=CSV]``: MoCA, ``ROOT/JPEGImages/<seq>/*.jpg`` with masks ``ROOT/Annotations/<seq>/*.png``, or
  boxes from a CSV (``boxes=``, default ``ROOT/Annotations/annotations.csv``; forms in ``boxes``); or MoCA-Mask,
  ``ROOT/<seq>/Imgs/*.jpg`` with ``ROOT/<seq>/GT/*.png``. MoCA masks are matched to frames by file stem: frames
  without one are unannotated.

Both take ``threshold=N`` (mask pixel > N is object; default 0) and ``flow=METHOD`` (the flow of two-stream clips).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from stlens.errors import StlensError
from stlens.video.boxes import read_boxes
from stlens.video.flow import FLOW_METHODS
from stlens.video.io import MAX_FRAMES
from stlens.video.masks import Annotation, MaskSource, MaskTrack, image_files

log = logging.getLogger("stlens")

COMMON_OPTIONS = ("threshold", "flow")


def parse_spec(spec: str, prefix: str, options: tuple[str, ...]) -> tuple[Path, dict[str, str]]:
    """``prefix:ROOT?k=v&...`` → (ROOT, options); unknown options are an error."""
    text, _, query = spec.removeprefix(f"{prefix}:").partition("?")
    if not text:
        raise StlensError(f"{spec}: name the data set's root folder, as {prefix}:ROOT")
    found: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        if not sep or key not in options + COMMON_OPTIONS:
            raise StlensError(f"{spec}: unknown option {part!r}; options: {', '.join(options + COMMON_OPTIONS)}")
        found[key] = value
    root = Path(text).expanduser()
    if not root.is_dir():
        raise StlensError(f"{prefix}: root folder not found: {root}")
    return root, found


def _common(spec: str, options: dict[str, str]) -> dict[str, object]:
    threshold = options.get("threshold", "0")
    if not threshold.isdigit() or int(threshold) > 255:
        raise StlensError(f"{spec}: threshold must be an integer 0-255, got {threshold!r}")
    flow = options.get("flow")
    if flow is not None and flow not in FLOW_METHODS:
        raise StlensError(f"{spec}: unknown flow method {flow!r}; choices: {', '.join(FLOW_METHODS)}")
    return {"threshold": int(threshold), "flow_method": flow}


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _frames(folder: Path) -> list[Path]:
    frames = image_files(folder)
    if not frames:
        raise StlensError(f"{folder}: no image frames")
    return frames


def _png(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")


# ------------------------------------------------------------------------------------------------------------ DAVIS


def imageset(root: Path, resolution: str, split: str) -> tuple[Path, list[tuple[str, int]]]:
    """The list file of ``split`` and its sequences with the line each first appears on."""
    sets = root / "ImageSets"
    candidates = [sets / resolution / f"{split}.txt", sets / "2017" / f"{split}.txt", sets / "2016" / f"{split}.txt",
                  sets / f"{split}.txt"]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        known = sorted({p.stem for folder in {c.parent for c in candidates} if folder.is_dir()
                        for p in folder.glob("*.txt")})
        looked = ", ".join(str(c.relative_to(root)) for c in candidates)
        raise StlensError(f"no list for split {split!r} under {sets} (looked for {looked}); splits found: "
                          f"{', '.join(known) or 'none'}")
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            token = line.split()[0] if line.split() else ""
            name = Path(token).parent.name if "/" in token else token
            if name and name not in seen:
                seen[name] = n
    if not seen:
        raise StlensError(f"{path}: split {split!r} lists no sequences")
    return path, list(seen.items())


def open_davis(spec: str) -> MaskSource:
    """``davis:ROOT[?split=S&resolution=R&threshold=N&flow=M]`` (see the module docstring)."""
    root, options = parse_spec(spec, "davis", ("split", "resolution"))
    resolution = options.get("resolution", "480p")
    images, annotations = root / "JPEGImages" / resolution, root / "Annotations" / resolution
    if not images.is_dir():
        here = [p.name for p in _subfolders(root / "JPEGImages")] if (root / "JPEGImages").is_dir() else []
        raise StlensError(f"DAVIS frames folder not found: {images} (expected ROOT/JPEGImages/<resolution>/<seq>/"
                          f"*.jpg; resolutions here: {', '.join(here) or 'none'})")
    if "split" in options:
        listing, listed = imageset(root, resolution, options["split"])
        for name, line in listed:
            if not (images / name).is_dir():
                raise StlensError(f"{listing}:{line}: sequence {name!r} is listed but its folder {images / name} "
                                  f"does not exist")
        names = [name for name, _ in listed]
    else:
        names = [p.name for p in _subfolders(images)]
        if not names:
            raise StlensError(f"{images}: no sequence folders")
    tracks = []
    for name in names:
        frames, masks = _frames(images / name), annotations / name
        if not masks.is_dir():
            raise StlensError(f"DAVIS mask folder not found: {masks} (for the {len(frames)} frames of "
                              f"{images / name})")
        files = _png(masks)[:MAX_FRAMES]
        if len(files) != len(frames):
            raise StlensError(f"{masks} has {len(files)} masks but {images / name} has {len(frames)} frames "
                              f"(DAVIS needs one mask per frame)")
        tracks.append(MaskTrack(tuple(frames), tuple(files)))
    return MaskSource(spec, tuple(images / n for n in names), tracks=tuple(tracks), layout="davis",
                      **_common(spec, options))


# ------------------------------------------------------------------------------------------------------------- MoCA


def masks_by_stem(frames_dir: Path, masks_dir: Path) -> MaskTrack:
    """Frames with the masks of the same file stem; frames without one are unannotated."""
    frames = _frames(frames_dir)
    if not masks_dir.is_dir():
        raise StlensError(f"mask folder not found: {masks_dir} (for the {len(frames)} frames of {frames_dir})")
    files = _png(masks_dir)
    every = {p.stem for p in image_files(frames_dir, limit=None)}
    stray = [p.name for p in files if p.stem not in every]
    if not files or stray:
        raise StlensError(f"{masks_dir} has {len(files)} masks but {frames_dir} has {len(frames)} frames"
                          + (f", and {len(stray)} masks name no frame (first: {stray[0]})" if stray else ""))
    by_stem = {p.stem: p for p in files}
    return MaskTrack(tuple(frames), tuple(by_stem.get(f.stem) for f in frames))


def frame_lookup(frames: list[Path]) -> dict[str, int]:
    """Frame position by file name, stem and (numeric stems) number."""
    lookup: dict[str, int] = {}
    for i, frame in enumerate(frames):
        lookup.update({frame.name: i, frame.stem: i})
        if frame.stem.isdigit():
            lookup.setdefault(str(int(frame.stem)), i)
    return lookup


def box_tracks(csv_path: Path, images: Path, names: list[str]) -> list[MaskTrack]:
    """Tracks of the sequences ``names`` of ``images`` with the boxes of a CSV (frames without a box: None)."""
    rows, unknown = defaultdict(list), []
    for row in read_boxes(csv_path):
        (rows[row.sequence] if row.sequence in names else unknown).append(row)
    if unknown:
        if not rows:
            raise StlensError(f"no row of {csv_path} names a sequence of {images} (first: {unknown[0].sequence!r}, "
                              f"line {unknown[0].line})")
        log.warning("%d rows of %s name sequences not in %s, skipped (first: %r, line %d)", len(unknown), csv_path,
                    images, unknown[0].sequence, unknown[0].line)
    tracks = []
    for name in names:
        frames = _frames(images / name)
        lookup, boxes = frame_lookup(frames), defaultdict(list)
        for row in rows[name]:
            if row.frame not in lookup and Path(row.frame).stem not in lookup:
                raise StlensError(f"{csv_path}:{row.line}: frame {row.frame!r} of sequence {name!r} is not in "
                                  f"{images / name}")
            boxes[lookup.get(row.frame, lookup.get(Path(row.frame).stem))].append(row.box)
        annotations: list[Annotation] = [tuple(boxes[i]) if i in boxes else None for i in range(len(frames))]
        tracks.append(MaskTrack(tuple(frames), tuple(annotations)))
    return tracks


def open_moca(spec: str) -> MaskSource:
    """``moca:ROOT[?boxes=CSV&threshold=N&flow=M]``: MoCA or MoCA-Mask (see the module docstring)."""
    root, options = parse_spec(spec, "moca", ("boxes",))
    common = _common(spec, options)
    images = root / "JPEGImages"
    if not images.is_dir():
        sequences = [p for p in _subfolders(root) if (p / "Imgs").is_dir()]
        if not sequences:
            splits = [p.name for p in _subfolders(root) if any((q / "Imgs").is_dir() for q in _subfolders(p))]
            hint = f"; MoCA-Mask splits here: {', '.join(splits)} (use moca:{root}/<split>)" if splits else ""
            raise StlensError(f"MoCA frames folder not found: {images} (expected MoCA's ROOT/JPEGImages/<seq>/*.jpg "
                              f"or MoCA-Mask's ROOT/<seq>/Imgs/*.jpg with ROOT/<seq>/GT/*.png){hint}")
        tracks = [masks_by_stem(p / "Imgs", p / "GT") for p in sequences]
        return MaskSource(spec, tuple(p / "Imgs" for p in sequences), tracks=tuple(tracks), layout="moca-mask",
                          **common)
    names = [p.name for p in _subfolders(images)]
    if not names:
        raise StlensError(f"{images}: no sequence folders")
    masks = root / "Annotations"
    if "boxes" not in options and masks.is_dir() and _subfolders(masks):
        tracks = [masks_by_stem(images / n, masks / n) for n in names]
        return MaskSource(spec, tuple(images / n for n in names), tracks=tuple(tracks), layout="moca", **common)
    csv_path = Path(options.get("boxes", masks / "annotations.csv")).expanduser()
    if not csv_path.is_absolute() and not csv_path.exists() and (root / csv_path).exists():
        csv_path = root / csv_path
    if not csv_path.is_file():
        raise StlensError(f"no MoCA annotations: neither mask folders {masks}/<seq>/ nor a boxes CSV {csv_path} "
                          f"(name one with ?boxes=FILE)")
    tracks = box_tracks(csv_path, images, names)
    return MaskSource(spec, tuple(images / n for n in names), tracks=tuple(tracks), layout="moca-boxes", **common)
