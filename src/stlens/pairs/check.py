"""``stlens pairs check`` as a function: do the stylizers keep the motion, change the appearance, add no flicker?
The checks themselves are ``stlens.pairs.quality.check_pairs``; this verb checks its arguments before any work, owns
the report file ``out`` and runs under torchrun."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from stlens.errors import StlensError
from stlens.video.flow import FLOW_METHODS
from stlens.video.source import VideoSource

#: a pairs-check report holds this (how ``out`` is recognised as a file stlens wrote)
SIGNATURE = '"flow_method"'


def check_pairs(data: VideoSource | str | Path, *, stylizer: str = "palette,fourier,npr", clips: int = 8,
                frames: int = 16, size: int = 112, check_flow: str = "dis", seed: int = 0, examples: bool = False,
                device: str | torch.device = "auto", precision: str = "fp32", workers: int | None = None,
                out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Check each stylizer (and the frame shuffle) on ``clips`` real clips.

    Per stylizer: flow kept (end-point error against the original's optical flow), appearance changed (colour,
    structure), temporal flicker added. Under ``torchrun`` each rank checks its share of the clips and rank 0 writes
    ``out``.

    Args:
        data: videos to check on (a folder, a video file, an annotation file, ``sample:``; or a source from
            ``stlens.open_data``).
        stylizer: ``NAME[,NAME...]``.
        clips: the number of clips (≥ 1), spread over the videos.
        frames: frames per clip.
        size: the clip's size in pixels.
        check_flow: the optical-flow method of the check (``tvl1``, ``dis`` or ``farneback``).
        seed: which clips and styles.
        examples: also write example GIFs (original | style A | style B) into the folder named like ``out`` without
            ``.json`` (``out`` must end in ``.json``).
        device: the neural stylizer's device (``auto``, ``cpu``, ``cuda[:K]``, ``mps``), checked before any work; the
            other stylizers are numpy/OpenCV on the CPU.
        precision: the neural stylizer's precision (``fp32``, ``bf16``, ``fp16``, ``auto``; auto is fp32 on a CPU).
        workers: processes that each check whole clips with the CPU stylizers (None: min(4, CPUs − 1); 0: the main
            process); the report does not depend on it.
        out: the report's JSON file (None: not written), written atomically; an existing file is replaced only when
            stlens wrote it (a pairs-check report), and a folder is refused, both before any work.
        progress: show a progress bar.

    Returns:
        The report: the settings, and per stylizer ``flow_epe``, ``flow_magnitude``, ``appearance_change``
        (``colour``, ``structure``) and ``temporal_flicker``; ``shuffle``: the fraction of frames moved.

    Examples:
        >>> report = stlens.check_pairs("sample:", stylizer="palette", clips=1, frames=4, size=32, workers=0,
        ...                             progress=False)
        >>> sorted(report["stylizers"]["palette"])
        ['appearance_change', 'flow_epe', 'flow_magnitude', 'temporal_flicker']
    """
    from stlens.core import distributed
    from stlens.core.device import exact_fp32
    from stlens.core.workers import resolve_workers
    from stlens.files import versioned, write_json
    from stlens.pairs import quality
    from stlens.pairs.stylize import stylizer_device
    from stlens.runs import own_file
    from stlens.video.sources import open_data

    if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
        raise StlensError(f"`clips` must be ≥ 1 (the number of clips to check), got {clips!r}")
    if check_flow not in FLOW_METHODS:
        raise StlensError(f"`check_flow` must be one of {', '.join(FLOW_METHODS)}, got {check_flow!r}")
    path = None if out is None else Path(out)
    if path is not None and path.is_dir():
        raise StlensError(f"`out` is the report's JSON file, but {path} is a folder; use e.g. {path / 'pairs.json'}")
    if examples and path is None:
        raise StlensError("`examples` writes its GIFs into the folder named like `out` without .json: give `out`")
    if examples and path.suffix.lower() != ".json":
        raise StlensError(f"`out` {path}: with `examples`, `out` must end in .json (the example GIFs go into the "
                          f"folder of the same name without .json); use e.g. {path.with_name(path.name + '.json')}")
    place, used, group_device = stylizer_device(stylizer, device, precision)  # before any work
    workers = resolve_workers(workers)
    # under torchrun: rank 0 checks out and writes the report, each rank checks its share of the clips
    with distributed.joined(group_device) as world:
        if path is not None:
            distributed.on_first_rank(world, lambda: own_file(path, SIGNATURE, "pairs check report"))
        source = open_data(data) if isinstance(data, str | Path) else data
        with exact_fp32(used == "fp32"):
            report = quality.check_pairs(source, stylizer, n=clips, frames=frames, size=size, flow_method=check_flow,
                                         seed=seed, examples_dir=path.with_suffix("") if examples else None,
                                         progress=progress, device=place, precision=used, workers=workers)
    report = versioned(report)  # the report file's document, returned as written
    if path is not None and world.rank == 0:
        write_json(path, report)
    return report
