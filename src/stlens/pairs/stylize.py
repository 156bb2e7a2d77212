"""Offline stylization of a video source into the paper's layout ``ROOT/style_k/<video>/frame_00001.jpg``.

Style k (1-based) uses the stylizer ``names[(k - 1) % len(names)]`` with a seed derived from (seed, k), the same on
every video (as the paper's fixed styles). Each video folder is written to a temporary folder and renamed, so a folder
that exists is complete; a rerun skips videos present in every style (resume).

Folder names (``video_names``): the file stem (frame folders: their name); where stems collide, the path relative to
the videos' common folder (suffix dropped) with ``/`` replaced by ``__``; then made safe and distinct by
``stlens.names.unique_safe_names`` (no ``.``/``..``, separators, control characters or leading dot, at most 200
bytes). The folders stay flat under ``style_k/`` (``stylized:ROOT`` reads its direct children).

``ROOT/stylize.json`` records the arguments (with ``device`` and ``precision``: what the neural stylizer ran on, null
when no stylizer of the run uses a device), the data (``data`` as given, ``data_path``: its absolute path when it is
a file or folder, ``root``: the folder the video paths are relative to) and, for each video, ``{"path", "size",
"mtime_ns", "name"}`` (path relative to ``root``, size in bytes, modification time, folder name; a frame folder's
size sums its files and its time is the newest). The record is written before any folder, so every folder stlens
writes is recorded first. A rerun into the same root:

- is refused (``StlensError``, before any work) with other fixed arguments (a larger number of styles is allowed;
  the device may change, the neural stylizer's precision may not),
  with other ``--data``, or when ``stylize.json`` is unreadable or not one that stlens wrote;
- finds each video's folder by its recorded path, never by its stem (``setA/clip.mp4`` and ``setB/clip.mp4`` get
  distinct folders); a new video gets a name that no recorded video and no existing folder uses;
- writes again a video whose size or modification time changed since it was recorded: its old folders are removed
  (with a warning) before any new work — frames are derived data, and a stale folder would be used silently.

Under ``torchrun`` (``stlens.core.distributed``) rank 0 alone claims and locks the root, checks and writes
``stylize.json`` and the run marker (before any video, and the result after every rank has finished); the plan is
broadcast, and rank r writes the videos of a contiguous share of it (``shard``, by index in source order), each
folder atomically as above, so the files are those of one process and a rerun resumes per video with any number of
processes. A rank that fails stops the others at their next video.

Nothing is ever removed recursively: the only removal is of a changed video's own folder, a direct child of
``style_k`` with the recorded safe name, holding nothing but ``frame_NNNNN.jpg`` files (else ``StlensError``). A folder
in the way that stlens did not write is left as it is and the video listed as skipped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stlens._version import __version__
from stlens.core.workers import Failed, guarded, in_order
from stlens.errors import StlensError
from stlens.files import check_format, versioned, write_json
from stlens.names import safe_name, unique_safe_names
from stlens.runs import RunFolder
from stlens.video.io import MAX_FRAMES, read_clip_source
from stlens.video.source import VideoSource, video_source
from stlens.video.sources import open_data
from stlens.video.stylizers import get_stylizer, uses_device

log = logging.getLogger("stlens")

FRAME_NAME = "frame_{:05d}.jpg"
FRAME_PATTERN = re.compile(r"frame_\d{5}\.jpg")
STYLE_PATTERN = re.compile(r"style_\d+")
JPEG_QUALITY = 95
CONFIG_NAME = "stylize.json"
FIXED_KEYS = ("stylizer", "seed", "short_side", "max_frames")


def style_seed(seed: int, k: int) -> int:
    """The stylizer seed of style k (1-based) for a run with ``seed``: the same for every video."""
    return int(np.random.default_rng((seed, k)).integers(2**31))


def _absolute(path: str | Path) -> Path:
    """``path`` made absolute and normalised without touching the disk (``a/../b`` → ``b``)."""
    return Path(os.path.abspath(path))


def _candidate_names(videos: tuple[Path, ...] | list[Path]) -> list[str]:
    """Unsafe folder names: stems (frame folders: names); on collisions, ``__``-joined paths from the common folder."""
    paths = [_absolute(p) for p in videos]
    stems = [p.name if Path(v).is_dir() else p.stem for v, p in zip(videos, paths, strict=True)]
    if len(set(stems)) == len(stems):
        return stems
    common = Path(os.path.commonpath([str(p.parent) for p in paths]))
    return ["__".join((*p.parent.relative_to(common).parts, stem)) for p, stem in zip(paths, stems, strict=True)]


def video_names(videos: tuple[Path, ...] | list[Path]) -> list[str]:
    """Safe, distinct folder names for the videos (the rule is in the module docstring)."""
    return unique_safe_names(_candidate_names(videos))


def write_frames(frames: np.ndarray, folder: Path) -> None:
    """Write (T, H, W, 3) uint8 frames as ``frame_00001.jpg``… into the new folder ``folder`` atomically (temporary
    folder, rename). ``folder.name`` must be safe; a folder that already exists is never replaced (``StlensError``)."""
    from PIL import Image

    if folder.name != safe_name(folder.name):
        raise ValueError(f"unsafe folder name {folder.name!r}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        for t, frame in enumerate(frames, 1):
            Image.fromarray(frame).save(tmp / FRAME_NAME.format(t), quality=JPEG_QUALITY)
        if folder.exists() or folder.is_symlink():
            raise StlensError(f"{folder} appeared while it was being written; left as it is")
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # the temporary folder made just above, nothing else
        raise


def _is_done(folder: Path) -> bool:
    return folder.is_dir() and any(folder.glob("frame_*.jpg"))


def _remove_own(style_dir: Path, name: str) -> bool:
    """Remove ``style_dir/name``, a folder stlens wrote for one video: a direct child of ``style_dir`` with a safe
    name holding only ``frame_NNNNN.jpg`` files. Never recursive; anything else raises ``StlensError``. Returns
    whether there was a folder."""
    target = style_dir / name
    if not (target.exists() or target.is_symlink()):
        return False
    where = "not removed; remove it yourself or use another `out`"
    if name != safe_name(name) or target.is_symlink() or not target.is_dir() \
            or target.resolve().parent != style_dir.resolve() or target.resolve().name != name:
        raise StlensError(f"{target} is not a folder that stlens wrote for a video; {where}")
    entries = list(target.iterdir())
    foreign = [p.name for p in entries if not FRAME_PATTERN.fullmatch(p.name) or p.is_symlink() or not p.is_file()]
    if foreign:
        raise StlensError(f"{target} holds files that stlens did not write ({', '.join(map(repr, foreign[:3]))}); "
                          f"{where}")
    for path in entries:
        path.unlink()
    target.rmdir()
    return True


def _clear_earlier(root: Path) -> None:
    """``overwrite``: remove the earlier stylize run in ``root``: the video folders its ``stylize.json`` records (each
    only if it holds nothing but frames, ``_remove_own``), style folders left empty, and ``stylize.json``."""
    old = _load_config(root / CONFIG_NAME)
    if old is None:
        return
    if "videos" not in old:
        raise StlensError(f"{root / CONFIG_NAME} records no videos (written by stlens 0.1.0), so `overwrite` cannot "
                          f"tell its folders from others: remove them yourself or use another `out`")
    styles = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and STYLE_PATTERN.fullmatch(p.name)]
    for video in old["videos"]:
        for style in styles:
            _remove_own(style, video["name"])
    for style in styles:
        if not any(style.iterdir()):
            style.rmdir()
    (root / CONFIG_NAME).unlink()


def _stat(path: Path) -> tuple[int, int]:
    """(size in bytes, modification time in ns) of a video file, or of a frame folder (sum of the files' sizes,
    newest time of the folder and its files)."""
    info = path.stat()
    if not path.is_dir():
        return info.st_size, info.st_mtime_ns
    files = [p.stat() for p in path.iterdir() if p.is_file()]
    return sum(f.st_size for f in files), max([info.st_mtime_ns, *(f.st_mtime_ns for f in files)])


def _data_path(spec: str) -> str | None:
    """The absolute path of ``spec`` when it names an existing file or folder, else None (``sample:``, ...)."""
    path = Path(spec).expanduser()
    return str(_absolute(path)) if path.exists() else None


def _data_root(source: VideoSource) -> Path:
    """The folder the video paths are recorded relative to: the ``--data`` folder, else the videos' common folder."""
    path = Path(source.spec).expanduser()
    if path.is_dir():
        return _absolute(path)
    return Path(os.path.commonpath([str(_absolute(p).parent) for p in source.videos]))


def _load_config(path: Path) -> dict[str, Any] | None:
    """The ``stylize.json`` of an earlier run (None when there is none), checked; ``StlensError`` naming the file
    when it cannot be read or is not one that stlens wrote."""
    if not (path.exists() or path.is_symlink()):
        return None
    advice = "repair or remove it, or use another `out`"
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StlensError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); {advice}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StlensError(f"{path}: cannot read ({exc}); {advice}") from None
    if not isinstance(old, dict):
        raise StlensError(f"{path}: expected a JSON object, got {type(old).__name__}; {advice}")
    check_format(old, path)
    videos = old.get("videos")
    if videos is None:
        return old
    types = {"path": str, "name": str, "size": int, "mtime_ns": int}
    if not isinstance(old.get("root"), str) or not isinstance(videos, list):
        raise StlensError(f"{path}: expected \"root\" (a string) and \"videos\" (a list); {advice}")
    for i, video in enumerate(videos, 1):
        if not isinstance(video, dict) or not all(isinstance(video.get(k), t) for k, t in types.items()) \
                or video["name"] != safe_name(video["name"]):
            raise StlensError(f"{path}: video {i} is not {{\"path\", \"size\", \"mtime_ns\", \"name\"}} with a safe "
                              f"name: {video!r:.200}; {advice}")
    return old


def _check_config(root: Path, old: dict[str, Any] | None, config: dict[str, Any]) -> None:
    """Refuse to resume into a root written with other fixed arguments (styles would not match) or other data."""
    if old is None:
        return
    changed = [k for k in FIXED_KEYS if old.get(k) != config[k]]
    # precision changes what the neural stylizer writes; a record from before it was recorded ran in fp32
    precision = old.get("precision", None if config["precision"] is None else "fp32")
    if precision != config["precision"]:
        changed.append("precision")
    if changed:
        details = ", ".join(f"{k}: {old.get(k, precision if k == 'precision' else None)!r} → {config[k]!r}"
                            for k in changed)
        raise StlensError(f"{root} was stylized with other arguments ({details}); use another `out`")
    before = old.get("data_path") or _data_path(str(old.get("data"))) or str(old.get("data"))
    if before != (config["data_path"] or config["data"]):
        raise StlensError(f"{root} was stylized from `data` {old.get('data')!r}, not {config['data']!r}; "
                          "stylize other data into another `out`")


def _plan_videos(source: VideoSource, old: dict[str, Any] | None, styles: list[Path]
                 ) -> tuple[Path, list[dict[str, Any]], list[tuple[Path, dict[str, Any]]], list[str],
                            list[dict[str, str]]]:
    """(data root, records to write, (video, record) to stylize in source order, names of changed videos, videos
    that cannot be stat'ed as bad entries)."""
    data_root = _data_root(source)
    records: dict[Path, dict[str, Any]] = {}  # absolute path → record, earlier videos first
    if old is not None and "videos" in old:
        for video in old["videos"]:
            records[_absolute(Path(old["root"]) / video["path"])] = dict(video)
    # a new video's name must not be a recorded one, nor (after a run that kept records) any existing entry
    taken = {r["name"] for r in records.values()}
    if old is None or "videos" in old:
        taken |= {p.name for style in styles if style.is_dir() for p in style.iterdir()}
    candidates = _candidate_names(source.videos)
    todo: list[tuple[Path, dict[str, Any]]] = []
    changed: list[str] = []
    bad: list[dict[str, str]] = []
    new: list[tuple[Path, dict[str, Any], str]] = []
    for path, candidate in zip(source.videos, candidates, strict=True):
        key = _absolute(path)
        try:
            size, mtime_ns = _stat(Path(path))
        except OSError as exc:
            bad.append({"source": str(path), "reason": f"cannot read ({exc.strerror or exc})"})
            continue
        record = records.get(key)
        if record is None:
            record = records[key] = {"path": "", "size": size, "mtime_ns": mtime_ns, "name": ""}
            new.append((key, record, candidate))
        elif (record["size"], record["mtime_ns"]) != (size, mtime_ns):
            if record["name"] not in changed:
                changed.append(record["name"])
                log.warning("%s changed since it was stylized (size or time); writing it again", path)
            record.update(size=size, mtime_ns=mtime_ns)
        todo.append((Path(path), record))
    for (_, record, _), name in zip(new, unique_safe_names([c for _, _, c in new], taken), strict=True):
        record["name"] = name
    for key, record in records.items():
        record["path"] = Path(os.path.relpath(key, data_root)).as_posix()
    return data_root, list(records.values()), todo, changed, bad


def stylizer_device(stylizer: str, device: str | torch.device = "auto",
                    precision: str = "fp32") -> tuple[torch.device, str, torch.device | None]:
    """(device, precision, device of the process group) of the stylizers ``stylizer`` (``NAME[,NAME...]``), checked
    before any work: ``device`` and ``precision`` are those of the neural stylizer (the only one that runs a model);
    under torchrun its ``cuda``/``auto`` means ``cuda:LOCAL_RANK``, and the process group uses NCCL only for it."""
    from stlens.core import distributed
    from stlens.core.device import resolve_device, resolve_precision

    on_device = uses_device(stylizer)
    if on_device and isinstance(device, str):
        device = distributed.rank_device(device, distributed.launched())
    place = resolve_device(device)
    used = resolve_precision(precision, place)
    if precision == "auto" and place.type == "cpu":
        # the optimisation through VGG16 in bf16 autocast measured 5.8x slower than fp32 on a CPU with AVX512_BF16
        # (73 vs 12.5 s per frame, 8 frames at 128 px): auto keeps fp32 on the CPU for the neural stylizer
        used = "fp32"
    return place, used, place if on_device else None


def stylize(data: VideoSource | str | Path, *, stylizer: str = "fourier", styles: int = 4, out: str | Path,
            seed: int = 0, short_side: int | None = None, frames_max: int = MAX_FRAMES,
            device: str | torch.device = "auto", precision: str = "fp32", workers: int | None = None,
            overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Write ``styles`` styles of every video of ``data`` as ``out/style_k/<video>/frame_00001.jpg``.

    This is the paper's stylized layout, read back by ``stylized:OUT``. ``out`` is written in place and resumable: a
    rerun into it resumes the incomplete run there (videos already written in every style are skipped; more styles
    may be added), and refuses, before any work, a root whose ``stylize.json`` records other fixed arguments
    (stylizer, seed, short side, frames) or other data, or that holds another verb's run. Each video folder is
    written to a temporary folder and renamed, so a folder that exists is complete; an interrupt loses at most the
    videos being written. Under ``torchrun`` rank 0 claims ``out`` and writes ``stylize.json``, and each rank writes
    its share of the videos.

    Args:
        data: a folder of videos or frame folders, a video file, an annotation file, ``sample:`` (a spec string), or a
            source (``stlens.open_data``).
        stylizer: ``NAME[,NAME...]``; style k uses name (k − 1) mod count, with a seed drawn from (``seed``, k), the
            same on every video.
        styles: the number of styles.
        out: the output root.
        seed: the seed of the styles.
        short_side: resize so that the short side has this many pixels (None: as decoded).
        frames_max: frames per video.
        device: the neural stylizer's device (``auto``, ``cpu``, ``cuda[:K]``, ``mps``); the other stylizers and the
            optical flow are numpy/OpenCV on the CPU. Checked before any work; ``out/stylize.json`` records it.
        precision: the neural stylizer's precision (``fp32``, ``bf16``, ``fp16``, ``auto``; auto is fp32 on a CPU).
        workers: processes that each decode, stylize and write whole videos with the CPU stylizers (None: min(4,
            CPUs − 1); 0: the main process; the neural stylizer runs in the main process); the files do not depend on
            it.
        overwrite: first remove the earlier stylize run in ``out`` (the video folders its ``stylize.json`` records,
            holding only frames stlens wrote, and ``stylize.json``; nothing else), then write anew.
        progress: show a progress bar.

    Returns:
        The counts ``{"videos", "written", "skipped", "changed", "frames", "bad"}``: videos in the source, videos
        written (in at least one style), videos skipped because already written, videos written again because they
        changed, frames written, and the videos that could not be read as ``{"source", "reason"}``.

    Examples:
        >>> import tempfile
        >>> counts = stlens.stylize("sample:", stylizer="palette", styles=2, out=tempfile.mkdtemp(), short_side=32,
        ...                         frames_max=8, workers=0, progress=False)
        >>> counts["written"] == counts["videos"], counts["bad"]
        (True, [])
    """
    from stlens.core import distributed
    from stlens.core.device import exact_fp32
    from stlens.core.workers import resolve_workers

    if isinstance(styles, bool) or not isinstance(styles, int) or styles < 1:
        raise StlensError(f"`styles` must be an integer ≥ 1, got {styles!r}")
    if frames_max < 1:
        raise StlensError(f"`frames_max` must be ≥ 1 (frames per video), got {frames_max}")
    if short_side is not None and short_side < 1:
        raise StlensError(f"`short_side` must be ≥ 1 pixels (or None: as decoded), got {short_side}")
    place, used, group_device = stylizer_device(stylizer, device, precision)  # before any work
    workers = resolve_workers(workers)
    # under torchrun: rank 0 claims out and writes stylize.json, each rank writes its share of the videos
    with distributed.joined(group_device), exact_fp32(used == "fp32"):
        return stylize_source(data, stylizer, styles, out, seed=seed, short_side=short_side, max_frames=frames_max,
                              progress=progress, device=place, precision=used, workers=workers, overwrite=overwrite)


def stylize_source(source: VideoSource | str | Path, stylizer: str, styles: int, out: str | Path, seed: int = 0,
                   short_side: int | None = None, max_frames: int = MAX_FRAMES, progress: bool = True,
                   device=None, precision: str = "fp32", workers: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Stylize every video of ``source`` in ``styles`` styles into ``out/style_k/<video>/frame_00001.jpg``.

    ``workers``: processes (a ``torch.utils.data.DataLoader``) that each decode, stylize and write whole videos, for
    the CPU stylizers; with the neural stylizer (which owns the device) the videos are done in the main process.
    The files do not depend on it (a style is a pure function of the frames and its seed).

    ``device`` (a ``torch.device``; default the CPU) and ``precision`` (resolved: fp32, bf16, fp16) are those of
    the neural stylizer; the other stylizers are numpy/OpenCV and run on the CPU (``stlens stylize`` resolves
    ``--device`` and ``--precision``).

    Returns ``{"videos", "written", "skipped", "changed", "frames", "bad"}``: videos in the source, videos written
    (in at least one style), videos skipped because every style was already written, videos written again because
    they changed, frames written, and the videos that could not be read as ``{"source", "reason"}``.
    """
    if styles < 1:
        raise StlensError(f"`styles` must be ≥ 1, got {styles}")
    from stlens.core import distributed

    root = Path(out)
    if root.exists() and not root.is_dir():
        raise StlensError(f"`out` {root} exists and is not a folder")
    world = distributed.current()
    group = distributed.Group(world) if world.distributed else None

    def claim() -> RunFolder:
        run = RunFolder(root, "stylize")
        run.resume()  # refuses a folder that holds another verb's run, or one being written by another process
        if overwrite:
            try:
                _clear_earlier(root)
            except BaseException:
                run.release()
                raise
        return run

    run = distributed.on_first_rank(world, claim, group)  # rank 0 only; every rank hears of a refusal
    try:
        return _stylize(source, stylizer, styles, root, seed, short_side, max_frames, progress, run, device,
                        precision, world, group, workers)
    finally:
        if run is not None:
            run.release()


def _stylize(source: VideoSource | str | Path, stylizer: str, styles: int, root: Path, seed: int,
             short_side: int | None, max_frames: int, progress: bool, run: RunFolder | None, device=None,
             precision: str = "fp32", world=None, group=None, workers: int = 0) -> dict[str, Any]:
    """The run in ``root`` (claimed by ``run`` on rank 0; None on the other ranks of a distributed run): rank 0
    checks and writes the record, every rank writes its share of the videos, rank 0 writes the result."""
    from tqdm.auto import tqdm

    from stlens.core import distributed

    world = world or distributed.World()
    source = video_source(source if isinstance(source, VideoSource) else open_data(source), "stylize")
    chosen = get_stylizer(stylizer, device, precision)
    on_device = uses_device(stylizer)
    plan = [(f"style_{k}", *chosen[(k - 1) % len(chosen)], style_seed(seed, k)) for k in range(1, styles + 1)]
    config = {"stlens_version": __version__, "data": source.spec, "data_path": _data_path(source.spec),
              "stylizer": stylizer, "styles": styles, "seed": seed, "short_side": short_side,
              "max_frames": max_frames,
              "device": (str(device) if device is not None else "cpu") if on_device else None,
              "precision": precision if on_device else None,
              "style": [{"folder": f, "stylizer": n, "seed": s} for f, n, _, s in plan]}

    def prepare() -> tuple[dict[str, Any], list[dict[str, Any]], list[tuple[Path, dict[str, Any]]], int,
                           list[dict[str, str]]]:
        """Rank 0: check the earlier record, plan the videos, remove changed ones, write the record."""
        old = _load_config(root / CONFIG_NAME)
        _check_config(root, old, config)
        style_dirs = sorted({root / f for f, *_ in plan} | ({p for p in root.iterdir() if p.is_dir()
                                                             and STYLE_PATTERN.fullmatch(p.name)}
                                                            if root.is_dir() else set()))
        data_root, records, todo_videos, changed, unreadable = _plan_videos(source, old, style_dirs)
        for name in changed:  # before the record says the video is current
            for style in style_dirs:
                _remove_own(style, name)
        root.mkdir(parents=True, exist_ok=True)
        recorded = config | {"root": str(data_root), "videos": records, "run_id": run.run_id}
        write_json(root / CONFIG_NAME, versioned(recorded))
        run.mark([CONFIG_NAME], "running")
        return recorded, records, todo_videos, len(changed), unreadable

    prepared = distributed.on_first_rank(world, prepare, group)
    if group is not None:
        prepared = group.broadcast(prepared)  # the plan of rank 0 (names of new videos included)
    config, records, todo_videos, changed, unreadable = prepared
    # rank r writes a contiguous share of the videos (by index in source order); a single process writes them all
    share = distributed.shard(len(todo_videos), world)
    mine: dict[str, Any] = {"written": 0, "skipped": 0, "frames": 0, "bad": []}
    jobs = [(path, record["name"]) for path, record in todo_videos[share.start:share.stop]]
    if uses_device(stylizer):
        workers = 0  # the neural stylizer runs where its device is: in the main process
    try:
        for done in tqdm(_videos_done(jobs, root, plan, short_side, max_frames, workers), total=len(jobs),
                         unit="video", desc="stylize", disable=not progress or world.rank != 0 or None):
            for key in ("written", "skipped", "frames"):
                mine[key] += done[key]
            mine["bad"].extend(done["bad"])
            if group is not None:
                group.stop_if_failed()
    except Exception as exc:
        if group is not None:
            group.fail_with(exc)
        raise
    shares = [mine]
    if group is not None:
        group.stop_if_failed()
        shares = group.gather(mine)  # in rank order: the videos' order
    counts: dict[str, Any] = {"videos": len(source), "written": sum(s["written"] for s in shares),
                              "skipped": sum(s["skipped"] for s in shares), "changed": changed,
                              "frames": sum(s["frames"] for s in shares),
                              "bad": [dict(m) for m in source.missing] + unreadable
                              + [b for s in shares for b in s["bad"]]}

    def finish() -> None:
        write_json(root / CONFIG_NAME, versioned(config | {"result": counts}))
        written = sorted(f"{f}/{r['name']}" for f, *_ in plan for r in records if _is_done(root / f / r["name"]))
        run.mark([CONFIG_NAME], "complete", info={"folders": written})

    distributed.on_first_rank(world, finish, group)
    return counts


def _new_counts() -> dict[str, Any]:
    return {"written": 0, "skipped": 0, "frames": 0, "bad": []}


class _VideoJobs(torch.utils.data.Dataset):
    """Job i → the counts of video i after its missing styles were written (``_stylize_video``)."""

    def __init__(self, jobs: list[tuple[Path, str]], root: Path, plan: list, short_side: int | None,
                 max_frames: int):
        self.jobs, self.root, self.plan, self.short_side, self.max_frames = jobs, root, plan, short_side, max_frames

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> dict[str, Any] | Failed:
        path, name = self.jobs[i]

        def stylized() -> dict[str, Any]:
            counts = _new_counts()
            _stylize_video(self.root, path, name, self.plan, self.short_side, self.max_frames, counts)
            return counts

        # a failure (e.g. a module: stylizer's own bug in a worker) stops the run with one line
        return guarded(stylized, f"{path}: the stylizer")


def _videos_done(jobs: list[tuple[Path, str]], root: Path, plan: list, short_side: int | None, max_frames: int,
                 workers: int) -> Iterator[dict[str, Any]]:
    """The counts of each video of ``jobs``, in order, done here or in ``workers`` processes."""
    return in_order(_VideoJobs(jobs, root, plan, short_side, max_frames), workers)


def _stylize_video(root: Path, path: Path, name: str, plan: list, short_side: int | None, max_frames: int,
                   counts: dict[str, Any]) -> None:
    """Write the styles of one video that are not written yet (``counts``: written, skipped, frames, bad)."""
    todo = [(root / folder / name, n, fn, s) for folder, n, fn, s in plan if not _is_done(root / folder / name)]
    if not todo:
        counts["skipped"] += 1
        return
    blocked = [str(folder) for folder, *_ in todo if folder.exists() or folder.is_symlink()]
    if blocked:
        reason = f"{blocked[0]} exists without frames (not written by stlens); left as it is"
        log.warning("skipping %s: %s", path, reason)
        counts["bad"].append({"source": str(path), "reason": reason})
        return
    try:
        frames = read_clip_source(path, short_side=short_side, max_frames=max_frames)
    except StlensError as exc:
        log.warning("skipping %s: %s", path, exc)
        counts["bad"].append({"source": str(path), "reason": str(exc).removeprefix(f"{path}: ")})
        return
    for folder, _, stylize, style in todo:
        write_frames(stylize(frames, style), folder)
        counts["frames"] += len(frames)
    counts["written"] += 1
