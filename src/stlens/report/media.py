"""Animated GIFs for reports: example pairs remade from a run's data and config, and ``stlens visualize`` outputs."""

from __future__ import annotations

import io
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from stlens.errors import StlensError
from stlens.files import check_format

log = logging.getLogger("stlens")

MAX_GIF_BYTES = 4_000_000
MIN_SIDE = 128  # shown at least this high (scaled in the browser, pixelated; the GIF keeps the native size)


@dataclass
class PairExample:
    """One example pair as a GIF: the panels' captions (left to right) and the encoded animation."""

    factor: str
    source: str
    captions: list[str]
    gif: bytes
    width: int = 0  # display width in px (the GIF's width × an integer scale)


def _rgb_frames(x: torch.Tensor, mean: list[float], std: list[float]) -> np.ndarray:
    """Normalized (3, T, H, W) → uint8 (T, H, W, 3)."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1)
    video = (x.float() * s + m).clamp(0, 1).mul(255).round().to(torch.uint8)
    return video.permute(1, 2, 3, 0).numpy()


def _flow_frames(x: torch.Tensor) -> np.ndarray:
    """A (2, T, H, W) flow input → uint8 (T, H, W, 3), colour-coded: hue = direction, value = magnitude."""
    from matplotlib.colors import hsv_to_rgb

    u, v = x[0].float().numpy(), x[1].float().numpy()
    angle = (np.arctan2(v, u) / (2 * np.pi)) % 1.0
    magnitude = np.hypot(u, v)
    value = np.clip(magnitude / max(float(np.percentile(magnitude, 99)), 1e-6), 0, 1)
    hsv = np.stack([angle, np.ones_like(angle), value], axis=-1)
    return (hsv_to_rgb(hsv) * 255).round().astype(np.uint8)


def _panels(member: Any, mean: list[float], std: list[float]) -> list[np.ndarray]:
    """One pair member (a tensor, or a tuple for multi-input models) → its displayable clips."""
    parts = member if isinstance(member, tuple | list) else (member,)
    clips = []
    for part in parts:
        if part.dim() == 4 and part.shape[0] == 3:
            clips.append(_rgb_frames(part, mean, std))
        elif part.dim() == 4 and part.shape[0] == 2:
            clips.append(_flow_frames(part))
    return clips


def display_scale(height: int) -> int:
    """The integer zoom that shows a clip of this height at least ``MIN_SIDE`` px high."""
    return max(1, int(np.ceil(MIN_SIDE / max(height, 1))))


def encode_gif(panels: list[np.ndarray], fps: float = 8.0, gap: int = 2) -> bytes:
    """Clips (T, H, W, 3) uint8 side by side (white gaps), at their own resolution → animated GIF bytes."""
    if not panels:
        raise StlensError("no frames to encode")
    frames = min(len(p) for p in panels)
    height = max(p.shape[1] for p in panels)
    images = []
    for t in range(frames):
        tiles = []
        for p in panels:
            tile = np.full((height, p.shape[2], 3), 255, np.uint8)
            tile[: p.shape[1]] = p[t]
            tiles.append(tile)
            tiles.append(np.full((height, gap, 3), 255, np.uint8))
        strip = np.concatenate(tiles[:-1], axis=1)
        images.append(Image.fromarray(strip))
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0,
                   optimize=False)
    return buffer.getvalue()


def pair_examples(meta: dict[str, Any], config: dict[str, Any], count: int = 2) -> list[PairExample]:
    """Remake the first ``count`` dynamic and static pairs of a run from its data spec, input spec, seed, stylizer and
    flow method (the same generator seeds as the measurement); ``StlensError`` when the data cannot be opened."""
    import stlens
    from stlens.core.spec import InputSpec

    spec_fields = config.get("input")
    if not isinstance(spec_fields, dict):
        raise StlensError("config.json has no input spec")
    spec = InputSpec(**{k: tuple(v) if k in ("mean", "std") else v for k, v in spec_fields.items()
                        if k in InputSpec.__dataclass_fields__})
    data = meta.get("data")
    if not data:
        raise StlensError("result.json names no data source")
    stylizer = meta.get("stylizer")
    if stylizer in (None, "stylized folders"):
        stylizer = None
    pairs_per_factor = int((meta.get("pairs") or {}).get("dynamic") or count)
    source = stlens.open_data(data)
    maker = stlens.make_pairs(source, spec, pairs_per_factor, stylizer=stylizer, seed=int(meta.get("seed") or 0),
                              flow=meta.get("flow"))
    taken: dict[int, list] = {0: [], 1: []}
    for pair in itertools.islice(maker, 4 * count):
        if len(taken[pair.factor]) < count:
            taken[pair.factor].append(pair)
        if all(len(v) >= count for v in taken.values()):
            break
    examples = []
    mean, std = list(spec.mean), list(spec.std)
    for factor, name in ((0, "dynamic"), (1, "static")):
        for pair in taken[factor]:
            a, b = _panels(pair.a, mean, std), _panels(pair.b, mean, std)
            if len(a) == 2:  # two-stream: rgb a, rgb b, flow a, flow b
                panels = [a[0], b[0], a[1], b[1]]
                captions = (["RGB a", "RGB b (other style)", "flow a", "flow b (the same flow)"] if factor == 0 else
                            ["RGB a", "RGB b (the same RGB)", "flow a", "flow b (a's flow jittered)"])
            else:
                panels = [a[0], b[0]]
                captions = ["a", "b (the same clip, other style)"] if factor == 0 else \
                    ["a", "b (a with its frames shuffled)"]
            gif = encode_gif(panels)
            width = (sum(p.shape[2] for p in panels) + 2 * (len(panels) - 1)) * display_scale(panels[0].shape[1])
            examples.append(PairExample(name, str(pair.source), captions, gif, width))
    return examples


@dataclass
class VisualItem:
    """One visualized target: its GIFs (label, bytes or None when too large) and the scalar fields of its JSON."""

    name: str
    gifs: list[tuple[str, bytes | None]]
    info: dict[str, Any]
    note: str = ""


#: GIFs of a ``stlens visualize`` target folder that the gallery shows, in this order
TARGET_GIFS = (("video.gif", "RGB"), ("flow_paper.gif", "flow"))


def _gif(path: Path) -> bytes | None:
    return path.read_bytes() if path.stat().st_size <= MAX_GIF_BYTES else None


def _scalars(doc: Any) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if isinstance(v, str | int | float | bool)} if isinstance(doc, dict) else {}


def visual_config(folder: str | Path) -> dict[str, Any]:
    """The scalar settings of a ``stlens visualize`` output (summary.json ``config``), else {}."""
    from stlens.report.load import read_json

    path = Path(folder) / "summary.json"
    try:
        doc = read_json(path) if path.is_file() else {}
    except StlensError:
        return {}
    config = doc.get("config") if isinstance(doc, dict) else None
    flat = _scalars(config)
    for inner in (config or {}).values() if isinstance(config, dict) else ():
        flat.update({k: v for k, v in _scalars(inner).items() if k not in flat})
    return flat


def visual_items(folder: str | Path, limit: int = 48) -> list[VisualItem]:
    """The targets of a ``stlens visualize`` output (summary.json + ``<target>/video.gif``, ``flow_paper.gif``,
    ``result.json``, or ``lambda_t=<v>/<target>/`` for a λ_T sweep), or, for any other folder, each GIF with the
    JSON of the same stem. A GIF over 4 MB is listed but not embedded."""
    from stlens.report.load import read_json

    folder = Path(folder)
    items: list[VisualItem] = []
    summary = folder / "summary.json"
    doc = read_json(summary) if summary.is_file() else None
    check_format(doc, summary)
    if isinstance(doc, dict) and isinstance(doc.get("targets"), list):
        sweep = len({r.get("lambda_t") for r in doc["targets"] if isinstance(r, dict)}) > 1
        for record in doc["targets"][:limit]:
            if not isinstance(record, dict):
                continue
            name = str(record.get("target", "?"))
            place = folder / f"lambda_t={record.get('lambda_t'):g}" / name if sweep else folder / name
            gifs = [(label, _gif(place / file)) for file, label in TARGET_GIFS if (place / file).is_file()]
            note = "" if gifs else f"no GIF in {place}"
            if any(g is None for _, g in gifs):
                note = "a GIF over 4 MB is not embedded"
            items.append(VisualItem(name, gifs, _scalars(record), note))
        return items
    for gif in sorted(folder.glob("*.gif"))[:limit]:
        own = gif.with_suffix(".json") if gif.with_suffix(".json").is_file() else folder / "result.json"
        info: dict[str, Any] = {}
        if own.is_file():
            try:
                info = _scalars(read_json(own))
            except StlensError as exc:
                log.warning("%s", exc)
        data = _gif(gif)
        items.append(VisualItem(gif.name, [(gif.stem, data)], info, "" if data else "over 4 MB: not embedded"))
    return items
