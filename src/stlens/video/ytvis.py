"""Video instance segmentation (VIS) data: ``ytvis:`` opens YouTube-VIS 2019, YouTube-VIS 2021 and OVIS annotation
files to a ``YtvisSource``, and ``YtvisClips`` gives their clips with ``Instances`` targets (``core.instances``).

Spec: ``ytvis:ROOT[?split=S&valid_fraction=F&seed=N&frames=DIR]`` or ``ytvis:FILE.json[?...]``. Layouts of ROOT
(tried in this order; ``<s>`` is ``train`` for splits all/train_sub/valid_sub, else ``valid`` or ``test``):

- YouTube-VIS 2019: ``ROOT/<s>.json`` with frames ``ROOT/<s>/JPEGImages/<file_name>``;
- YouTube-VIS 2021: ``ROOT/<s>/instances.json`` with frames ``ROOT/<s>/JPEGImages/<file_name>``;
- OVIS: ``ROOT/annotations_<s>.json`` with frames ``ROOT/<s>/<file_name>``.

A FILE is read as given, its frames under ``frames=DIR`` (default: the first folder of ``FILE's folder/JPEGImages``,
``FILE's folder/<stem>/JPEGImages``, ``FILE's folder/<stem without annotations_>`` that exists).

``split``: ``all`` (default: every video of the file), ``train_sub`` / ``valid_sub`` (a seeded split of the training
file's videos: ``valid_fraction`` of them, default 0.2, at least one, go to valid_sub; ``seed`` default 0; the split
depends only on the set of video ids), ``valid`` / ``test`` (the official files, whose videos carry no annotations:
their clips have no targets, ``has_targets`` is False, and ``YtvisClips.batch`` refuses them).

JSON: ``videos`` [{id, width, height, length, file_names}], ``categories`` [{id, name}], ``annotations`` [{id,
video_id, category_id, segmentations, iscrowd, ...}] (null or absent on valid/test). A segmentation per frame is a
COCO RLE dict (``counts`` a string, or a list: uncompressed), a list of polygons, or null (absent in that frame).
Categories map to 0..K−1 in id order; a track's id is its annotation id.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stlens.core.instances import Instances
from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.video.io import scaled_size
from stlens.video.maskclips import sample_window
from stlens.video.sampling import to_model_input
from stlens.video.source import VideoSource

log = logging.getLogger("stlens")

SPLITS = ("all", "train_sub", "valid_sub", "valid", "test")
OPTIONS = ("split", "valid_fraction", "seed", "frames")
#: layout → (annotation file, frames folder) under ROOT, ``{s}`` the official split (train, valid, test)
LAYOUTS = {
    "youtube-vis-2019": ("{s}.json", "{s}/JPEGImages"),
    "youtube-vis-2021": ("{s}/instances.json", "{s}/JPEGImages"),
    "ovis": ("annotations_{s}.json", "{s}"),
}
DEFAULT_VALID_FRACTION = 0.2


@dataclass(frozen=True)
class VisTrack:
    """One annotation: ``id`` (the track id), ``category`` (index in 0..K−1), ``crowd`` and the raw per-frame
    ``segmentations`` (checked when opened, decoded when a clip needs them)."""

    id: int
    category: int
    crowd: bool
    segmentations: tuple[Any, ...]


@dataclass(frozen=True)
class VisVideo:
    """One video: its id, size (as the JSON gives it), frame files (relative to the frames folder) and tracks."""

    id: int
    width: int
    height: int
    files: tuple[str, ...]
    tracks: tuple[VisTrack, ...] = ()


@dataclass(frozen=True, eq=False)
class YtvisSource(VideoSource):
    """A ``VideoSource`` (videos: each video's frame folder) with the VIS annotations of ``annotation_file``:
    ``entries`` (one ``VisVideo`` per video), ``classes`` (category names by index), ``category_ids``, the
    ``frames_root``, ``layout``, ``split`` and ``has_targets`` (False for the official valid/test files). Equality
    and hash are ``VideoSource``'s (the raw segmentations are lists, not hashable)."""

    annotation_file: Path = Path()
    frames_root: Path = Path()
    layout: str = ""
    split: str = "all"
    entries: tuple[VisVideo, ...] = ()
    category_ids: tuple[int, ...] = ()
    has_targets: bool = False
    task: str = "instances"

    def where(self, index: int) -> str:
        return f"{self.annotation_file}: video {self.entries[index].id}"

    def shape(self, index: int, short_side: int | None) -> tuple[int, int, int]:
        """(T, H, W) of video ``index`` with its short side resized to ``short_side``."""
        video = self.entries[index]
        width, height = scaled_size(video.width, video.height, short_side)
        return len(video.files), height, width

    def read_frames(self, index: int, frames: np.ndarray, short_side: int | None) -> np.ndarray:
        """Frames ``frames`` of video ``index``: uint8 (T, H, W, 3), short side resized (bilinear)."""
        from PIL import Image

        video = self.entries[index]
        size = scaled_size(video.width, video.height, short_side)
        out = []
        for t in frames:
            path = self.frames_root / video.files[int(t)]
            if not path.is_file():
                raise StlensError(f"{path}: frame {int(t)} of video {video.id} of {self.annotation_file} not found")
            try:
                with Image.open(path) as image:
                    if image.size != (video.width, video.height):
                        raise StlensError(f"{path}: frame {int(t)} of video {video.id} is {image.width}x"
                                          f"{image.height} px but {self.annotation_file} gives {video.width}x"
                                          f"{video.height}")
                    out.append(np.asarray(image.convert("RGB").resize(size, Image.BILINEAR)))
            except (OSError, ValueError, SyntaxError) as exc:
                raise StlensError(f"{path}: cannot read frame {int(t)} of video {video.id} of "
                                  f"{self.annotation_file} ({exc})") from exc
        return np.stack(out)

    def read_masks(self, index: int, frames: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The masks of every track of video ``index`` in ``frames``: bool (N, T, len(rows), len(cols)), the
        native masks sampled at native ``rows`` × ``cols`` (see ``nearest``)."""
        video = self.entries[index]
        out = np.zeros((len(video.tracks), len(frames), len(rows), len(cols)), bool)
        with warnings.catch_warnings():  # pycocotools 2.0's decode warns under numpy 2 (__array__ without copy)
            warnings.simplefilter("ignore", DeprecationWarning)
            for n, track in enumerate(video.tracks):
                for k, t in enumerate(frames):
                    where = f"{self.where(index)}, annotation {track.id}, frame {int(t)}"
                    mask = decode_segmentation(track.segmentations[int(t)], video.height, video.width, where)
                    if mask is not None:
                        out[n, k] = mask[np.ix_(rows, cols)]
        return out


def nearest(native: int, size: int) -> np.ndarray:
    """Nearest-neighbour source index of each of ``size`` output pixels over ``native`` input pixels (pixel centres
    aligned, as the frames are resized): floor((i + ½)·native/size), in exact integer arithmetic."""
    return ((2 * np.arange(size, dtype=np.int64) + 1) * native) // (2 * size)


def decode_segmentation(segmentation: Any, height: int, width: int, where: str) -> np.ndarray | None:
    """One frame's segmentation (RLE dict, uncompressed RLE, polygons, or None/[]) → bool (H, W), None if absent."""
    import pycocotools.mask as mask_util

    if segmentation is None or (isinstance(segmentation, list) and not segmentation):
        return None
    check_segmentation(segmentation, height, width, where)
    try:
        if isinstance(segmentation, list):
            rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation["counts"], list):
            rle = mask_util.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        return mask_util.decode(rle).astype(bool)
    except Exception as exc:  # noqa: BLE001 - pycocotools raises bare errors on malformed RLE
        raise StlensError(f"{where}: cannot decode the segmentation ({type(exc).__name__}: {exc})") from exc


def check_segmentation(segmentation: Any, height: int, width: int, where: str) -> None:
    """A StlensError naming ``where`` unless ``segmentation`` is None, an RLE of the video's size or polygons."""
    if segmentation is None:
        return
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not isinstance(counts, str | bytes | list):
            raise StlensError(f"{where}: an RLE segmentation needs counts (a string or a list)")
        if not isinstance(size, list | tuple) or [int(v) for v in size] != [height, width]:
            raise StlensError(f"{where}: RLE size {size} is not the video's height×width [{height}, {width}]")
        return
    if isinstance(segmentation, list):
        for polygon in segmentation:
            if (not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2
                    or not all(isinstance(v, int | float) for v in polygon)):
                raise StlensError(f"{where}: a polygon must be a list of x, y coordinates (at least 3 points)")
        return
    raise StlensError(f"{where}: a segmentation must be an RLE dict, a list of polygons or null, not "
                      f"{type(segmentation).__name__}")


# ----------------------------------------------------------------------------------------------------------- opening


def parse_spec(spec: str) -> tuple[Path, dict[str, str]]:
    """``ytvis:TARGET?k=v&...`` → (TARGET, options); unknown options are an error."""
    text, _, query = spec.removeprefix("ytvis:").partition("?")
    if not text:
        raise StlensError(f"{spec}: name the data set's root folder or annotation file, as ytvis:ROOT")
    found: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        if not sep or key not in OPTIONS:
            raise StlensError(f"{spec}: unknown option {part!r}; options: {', '.join(OPTIONS)}")
        found[key] = value
    return Path(text).expanduser(), found


def locate(target: Path, split: str, frames: str | None) -> tuple[Path, Path, str]:
    """(annotation file, frames folder, layout name) of a ROOT folder or an annotation file."""
    if target.is_file():
        if split in ("valid", "test"):
            raise StlensError(f"{target}: split={split} names an official file under a ROOT folder; an annotation "
                              f"file is read as given (split all, train_sub or valid_sub)")
        if frames is not None:
            return target, _frames_dir(Path(frames).expanduser(), target), "file"
        guesses = [target.parent / "JPEGImages", target.parent / target.stem / "JPEGImages",
                   target.parent / target.stem.removeprefix("annotations_")]
        found = next((g for g in guesses if g != target.parent and g.is_dir()), None)
        if found is None:
            raise StlensError(f"{target}: no frames folder found (looked for {', '.join(map(str, guesses))}); name "
                              f"it with ?frames=DIR")
        return target, found, "file"
    if not target.is_dir():
        raise StlensError(f"ytvis: annotation file or root folder not found: {target}")
    official = {"valid": "valid", "test": "test"}.get(split, "train")
    for layout, (listing, images) in LAYOUTS.items():
        path = target / listing.format(s=official)
        if path.is_file():
            folder = Path(frames).expanduser() if frames is not None else target / images.format(s=official)
            return path, _frames_dir(folder, path), layout
    looked = ", ".join(str(target / a.format(s=official)) for a, _ in LAYOUTS.values())
    raise StlensError(f"{target}: no YouTube-VIS or OVIS annotation file for split {split} (looked for {looked})")


def _frames_dir(folder: Path, annotations: Path) -> Path:
    if not folder.is_dir():
        raise StlensError(f"frames folder of {annotations} not found: {folder}")
    return folder


def load_json(path: Path) -> dict:
    """The annotation file, checked to be a YouTube-VIS layout (videos and categories lists)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise StlensError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise StlensError(f"{path}: cannot read ({exc})") from exc
    if (not isinstance(data, dict) or not isinstance(data.get("videos"), list)
            or not isinstance(data.get("categories"), list)
            or not isinstance(data.get("annotations"), list | None)):
        keys = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise StlensError(f"{path}: not a YouTube-VIS/OVIS annotation file (expected an object with videos and "
                          f"categories lists and annotations; found {keys})")
    return data


def _int(record: dict, key: str, where: str) -> int:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise StlensError(f"{where}: {key} must be an integer, got {value!r}")
    return value


def parse(path: Path, data: dict) -> tuple[list[VisVideo], list[str], list[int], bool]:
    """Videos (with tracks), category names and ids (in id order) and whether the file carries annotations."""
    categories: dict[int, str] = {}
    for n, record in enumerate(data["categories"]):
        where = f"{path}: category {n}"
        if not isinstance(record, dict):
            raise StlensError(f"{where}: not an object")
        cid = _int(record, "id", where)
        if cid in categories:
            raise StlensError(f"{where}: id {cid} appears twice")
        categories[cid] = str(record.get("name", cid))
    ids = sorted(categories)
    index = {cid: k for k, cid in enumerate(ids)}
    videos: dict[int, dict] = {}
    for n, record in enumerate(data["videos"]):
        if not isinstance(record, dict):
            raise StlensError(f"{path}: video {n} is not an object")
        vid = _int(record, "id", f"{path}: video number {n}")
        where = f"{path}: video {vid}"
        if vid in videos:
            raise StlensError(f"{where}: the id appears twice")
        files = record.get("file_names")
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            raise StlensError(f"{where}: file_names must be a non-empty list of frame paths")
        length = record.get("length", len(files))
        if length != len(files):
            raise StlensError(f"{where}: length {length} but {len(files)} file_names")
        width, height = _int(record, "width", where), _int(record, "height", where)
        if width < 1 or height < 1:
            raise StlensError(f"{where}: width and height must be positive, got {width}x{height}")
        videos[vid] = {"video": VisVideo(vid, width, height, tuple(files)), "tracks": []}
    annotations = data.get("annotations")
    for n, record in enumerate(annotations or []):
        if not isinstance(record, dict):
            raise StlensError(f"{path}: annotation {n} is not an object")
        vid = _int(record, "video_id", f"{path}: annotation number {n}")
        if vid not in videos:
            raise StlensError(f"{path}: annotation {record.get('id', n)} names video {vid}, which is not in videos")
        video = videos[vid]["video"]
        aid = _int(record, "id", f"{path}: video {vid}, annotation number {n}")
        where = f"{path}: video {vid}, annotation {aid}"
        cid = _int(record, "category_id", where)
        if cid not in index:
            raise StlensError(f"{where}: unknown category id {cid} (categories: {', '.join(map(str, ids))})")
        segmentations = record.get("segmentations")
        if not isinstance(segmentations, list) or len(segmentations) != len(video.files):
            count = len(segmentations) if isinstance(segmentations, list) else type(segmentations).__name__
            raise StlensError(f"{where}: {count} segmentations but the video has {len(video.files)} frames")
        for t, segmentation in enumerate(segmentations):
            check_segmentation(segmentation, video.height, video.width, f"{where}, frame {t}")
        videos[vid]["tracks"].append(VisTrack(aid, index[cid], bool(record.get("iscrowd", 0)), tuple(segmentations)))
    entries = [VisVideo(v["video"].id, v["video"].width, v["video"].height, v["video"].files, tuple(v["tracks"]))
               for v in videos.values()]
    return entries, [categories[c] for c in ids], ids, isinstance(annotations, list)


def split_ids(ids: list[int], split: str, fraction: float, seed: int) -> set[int]:
    """The video ids of ``split`` (train_sub or valid_sub): a seeded permutation of the sorted ids, its first
    round(fraction·n) (at least 1, at most n − 1) to valid_sub."""
    order = np.random.default_rng(seed).permutation(np.array(sorted(ids), dtype=np.int64))
    n_valid = min(len(ids) - 1, max(1, round(len(ids) * fraction))) if len(ids) > 1 else 0
    chosen = order[:n_valid] if split == "valid_sub" else order[n_valid:]
    return {int(v) for v in chosen}


def open_ytvis(spec: str) -> YtvisSource:
    """``ytvis:ROOT|FILE[?split=S&valid_fraction=F&seed=N&frames=DIR]`` (see the module docstring)."""
    target, options = parse_spec(spec)
    split = options.get("split", "all")
    if split not in SPLITS:
        raise StlensError(f"{spec}: unknown split {split!r}; splits: {', '.join(SPLITS)}")
    subset = split in ("train_sub", "valid_sub")
    if not subset and ("valid_fraction" in options or "seed" in options):
        raise StlensError(f"{spec}: valid_fraction and seed choose split=train_sub/valid_sub, not split={split}")
    try:
        fraction = float(options.get("valid_fraction", DEFAULT_VALID_FRACTION))
        seed = int(options.get("seed", 0))
    except ValueError as exc:
        raise StlensError(f"{spec}: valid_fraction must be a number and seed an integer ({exc})") from None
    if not 0 < fraction < 1:
        raise StlensError(f"{spec}: valid_fraction must lie strictly between 0 and 1, got {fraction}")
    path, frames_root, layout = locate(target, split, options.get("frames"))
    entries, names, ids, has_targets = parse(path, load_json(path))
    if subset:
        if not has_targets:
            raise StlensError(f"{path}: split={split} splits a training file's annotated videos, but this file has "
                              f"no annotations (an official valid/test file)")
        chosen = split_ids([v.id for v in entries], split, fraction, seed)
        entries = [v for v in entries if v.id in chosen]
    if not entries:
        raise StlensError(f"{path}: split {split} holds no videos")
    for video in entries:
        first = frames_root / video.files[0]
        if not first.is_file():
            raise StlensError(f"{first}: frame 0 of video {video.id} of {path} not found")
    folders = tuple((frames_root / v.files[0]).parent for v in entries)
    return YtvisSource(spec, folders, classes=tuple(names), annotation_file=path, frames_root=frames_root,
                       layout=layout, split=split, entries=tuple(entries), category_ids=tuple(ids),
                       has_targets=has_targets)


# ------------------------------------------------------------------------------------------------------------- clips


@dataclass
class YtvisClips:
    """The ``LabelledClips`` of a ``YtvisSource``: one clip per usable video per draw (videos shorter than a clip are
    left out, listed in ``skipped``). ``batch(indices, rng) -> (inputs (B, 3, T, S, S), list[Instances])``: masks
    resized like the frames (nearest neighbour) and cropped at the same window; tracks absent from every sampled
    frame are dropped. ``augment``: a random crop instead of the centre crop. Without targets (official valid/test)
    ``batch`` is refused; ``inputs`` gives the clips alone. ``videos``: the usable videos' frame folders,
    ``video_ids`` their ids in the annotation file."""

    source: YtvisSource
    spec: InputSpec
    augment: bool = False
    task: str = field(default="instances", init=False)
    skipped: list[dict[str, str]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.num_classes = len(self.source.classes)
        self.class_names = tuple(self.source.classes)
        self.has_targets = self.source.has_targets
        self.indices = []
        for i, video in enumerate(self.source.entries):
            if len(video.files) < self.spec.frames:
                self.skipped.append({"source": self.source.where(i), "reason": f"shorter than a clip "
                                     f"({len(video.files)} < {self.spec.frames} frames)"})
            else:
                self.indices.append(i)
        if self.skipped:
            log.warning("%d of %d videos of %s left out: %s (first: %s)", len(self.skipped), len(self.source),
                        self.source.spec, self.skipped[0]["reason"], self.skipped[0]["source"])
        if not self.indices:
            raise StlensError(f"{self.source.spec}: no video has a clip's {self.spec.frames} frames")
        self.videos = tuple(self.source.videos[i] for i in self.indices)
        self.video_ids = tuple(self.source.entries[i].id for i in self.indices)

    def __len__(self) -> int:
        return len(self.indices)

    def require_targets(self, purpose: str) -> None:
        """A StlensError when the clips have no targets (``purpose``: what needs them, e.g. "training")."""
        if not self.has_targets:
            raise StlensError(f"{self.source.annotation_file} has no annotations (an official valid/test file): "
                              f"{purpose} needs instance targets; use split=valid_sub of the training file")

    def item(self, index: int, rng: np.random.Generator, targets: bool = True) -> tuple[torch.Tensor, Instances | None]:
        """Clip ``index`` (of the usable videos): (input (3, T, S, S), its Instances or None)."""
        i = self.indices[int(index)]
        shape = self.source.shape(i, self.spec.resize)
        idx, top, left = sample_window(shape, self.spec, rng, random_crop=self.augment)
        size = self.spec.size
        frames = self.source.read_frames(i, idx, self.spec.resize)[:, top:top + size, left:left + size]
        rgb = to_model_input(frames, self.spec)
        if not targets:
            return rgb, None
        video = self.source.entries[i]
        rows = nearest(video.height, shape[1])[top:top + size]
        cols = nearest(video.width, shape[2])[left:left + size]
        masks = self.source.read_masks(i, idx, rows, cols)
        keep = masks.reshape(len(masks), -1).any(axis=1)
        tracks = [t for t, k in zip(video.tracks, keep, strict=True) if k]
        return rgb, Instances(masks[keep], [t.category for t in tracks], [t.id for t in tracks],
                              [t.crowd for t in tracks])

    def batch(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, list[Instances]]:
        self.require_targets("a batch with targets (training, AP)")
        items = [self.item(i, rng) for i in indices]
        return torch.stack([x for x, _ in items]), [y for _, y in items]

    def inputs(self, indices: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """The clips alone (B, 3, T, S, S), drawn as ``batch`` draws them (for data without targets too)."""
        return torch.stack([self.item(i, rng, targets=False)[0] for i in indices])


def instance_clips(source: YtvisSource, spec: InputSpec, *, flow: bool = False, augment: bool = False,
                   task: str | None = None) -> YtvisClips:
    """``YtvisClips`` for ``open_clips``: ``task`` must be None or ``instances``; no two-stream inputs."""
    if task not in (None, "instances"):
        raise StlensError(f"{source.spec}: ytvis: data gives instance targets (masks, classes and track ids per "
                          f"clip), not `task` {task}")
    if flow:
        raise StlensError(f"{source.spec}: instance clips give RGB inputs only, not (RGB, flow) for a two-stream "
                          f"model")
    return YtvisClips(source, spec, augment=augment)
