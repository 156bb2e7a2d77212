"""Offline stylization of a video source into the paper's layout ``ROOT/style_k/<video>/frame_00001.jpg``.

Style k (1-based) uses the stylizer ``names[(k - 1) % len(names)]`` with a seed derived from (seed, k), the same on
every video (as the paper's fixed styles). Each video folder is written to a temporary folder and renamed, so a folder
that exists is complete; a rerun skips videos present in every style (resume). ``ROOT/stylize.json`` records the
arguments; a rerun with other arguments into the same root is refused, except a larger number of styles.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from stlens import __version__
from stlens.errors import StlensError
from stlens.files import write_json
from stlens.pairs.stylizers import get_stylizer
from stlens.video.io import MAX_FRAMES, read_clip_source
from stlens.video.sources import VideoSource, open_data

log = logging.getLogger("stlens")

FRAME_NAME = "frame_{:05d}.jpg"
JPEG_QUALITY = 95
CONFIG_NAME = "stylize.json"
FIXED_KEYS = ("stylizer", "seed", "short_side", "max_frames")


def style_seed(seed: int, k: int) -> int:
    """The stylizer seed of style k (1-based) for a run with ``seed``: the same for every video."""
    return int(np.random.default_rng((seed, k)).integers(2**31))


def video_names(videos: tuple[Path, ...] | list[Path]) -> list[str]:
    """Folder names for the videos: file stems (frame folders: their name); where names collide, the path relative
    to the videos' common folder (suffix dropped) with ``/`` replaced by ``__``."""
    names = [p.name if p.is_dir() else p.stem for p in videos]
    if len(set(names)) == len(names):
        return names
    paths = [Path(p).absolute() for p in videos]
    common = Path(os.path.commonpath([str(p.parent) for p in paths]))
    names = ["__".join((p if p.is_dir() else p.with_suffix("")).relative_to(common).parts) for p in paths]
    if len(set(names)) != len(names):
        raise StlensError("two videos in the source have the same path without suffix; cannot name their folders")
    return names


def write_frames(frames: np.ndarray, folder: Path) -> None:
    """Write (T, H, W, 3) uint8 frames as ``frame_00001.jpg``… into ``folder`` atomically (temporary folder, rename)."""
    from PIL import Image

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        for t, frame in enumerate(frames, 1):
            Image.fromarray(frame).save(tmp / FRAME_NAME.format(t), quality=JPEG_QUALITY)
        if folder.exists():  # an incomplete folder (complete ones are skipped before decoding)
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _is_done(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("frame_*.jpg"))


def _check_config(root: Path, config: dict[str, Any]) -> None:
    """Refuse to resume into a root written with other fixed arguments (styles would not match)."""
    path = root / CONFIG_NAME
    if not path.exists():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    changed = [k for k in FIXED_KEYS if old.get(k) != config[k]]
    if changed:
        details = ", ".join(f"{k}: {old.get(k)!r} → {config[k]!r}" for k in changed)
        raise StlensError(f"{root} was stylized with other arguments ({details}); use another --out")


def stylize_source(source: VideoSource | str | Path, stylizer: str, styles: int, out: str | Path, seed: int = 0,
                   short_side: int | None = None, max_frames: int = MAX_FRAMES, progress: bool = True
                   ) -> dict[str, Any]:
    """Stylize every video of ``source`` in ``styles`` styles into ``out/style_k/<video>/frame_00001.jpg``.

    Returns ``{"videos", "written", "skipped", "frames", "bad"}``: videos in the source, videos written (in at least
    one style), videos skipped because every style was already written, frames written, and the videos that could
    not be read as ``{"source", "reason"}``.
    """
    from tqdm.auto import tqdm

    if styles < 1:
        raise StlensError(f"--styles must be ≥ 1, got {styles}")
    source = source if isinstance(source, VideoSource) else open_data(source)
    chosen = get_stylizer(stylizer)
    root = Path(out)
    plan = [(f"style_{k}", *chosen[(k - 1) % len(chosen)], style_seed(seed, k)) for k in range(1, styles + 1)]
    config = {"stlens_version": __version__, "data": source.spec, "stylizer": stylizer, "styles": styles, "seed": seed,
              "short_side": short_side, "max_frames": max_frames,
              "style": [{"folder": f, "stylizer": n, "seed": s} for f, n, _, s in plan]}
    _check_config(root, config)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / CONFIG_NAME, config)
    counts: dict[str, Any] = {"videos": len(source), "written": 0, "skipped": 0, "frames": 0,
                              "bad": [dict(m) for m in source.missing]}
    names = video_names(source.videos)
    for path, name in tqdm(list(zip(source.videos, names, strict=True)), unit="video", desc="stylize",
                           disable=not progress or None):
        todo = [(root / folder / name, n, fn, s) for folder, n, fn, s in plan if not _is_done(root / folder / name)]
        if not todo:
            counts["skipped"] += 1
            continue
        try:
            frames = read_clip_source(path, short_side=short_side, max_frames=max_frames)
        except StlensError as exc:
            log.warning("skipping %s: %s", path, exc)
            counts["bad"].append({"source": str(path), "reason": str(exc).removeprefix(f"{path}: ")})
            continue
        for folder, _, stylize, style in todo:
            write_frames(stylize(frames, style), folder)
            counts["frames"] += len(frames)
        counts["written"] += 1
    write_json(root / CONFIG_NAME, config | {"result": counts})
    return counts
