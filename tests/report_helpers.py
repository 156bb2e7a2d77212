"""Shared fixtures for the report tests: a real measurement whose layer and video names are HTML injections."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

EVIL_LAYER = "<script>alert(1)</script>"
EVIL_VIDEO = "<img src=x onerror=alert(2)>"
EVIL_BROKEN = "<svg onload=alert(3)>.mp4"

NET = textwrap.dedent(f'''
    import torch
    from torch import nn


    class EvilNet(nn.Module):
        """A tiny 3-D CNN whose second block is registered under an HTML-injection name."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv3d(3, 6, 3, padding=1)
            self.add_module({EVIL_LAYER!r}, nn.Conv3d(6, 8, (3, 1, 1), padding=(1, 0, 0)))

        def forward(self, x):
            x = torch.relu(self.stem(x))
            return getattr(self, {EVIL_LAYER!r})(x).mean(dim=(2, 3, 4))


    def build():
        torch.manual_seed(0)
        return EvilNet()
''')


def write_frames(folder: Path, frames: int, seed: int) -> None:
    """A textured square moving over a noisy background, as JPEG frames."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    colour = rng.integers(0, 255, 3)
    folder.mkdir(parents=True)
    for t in range(frames):
        image = background.copy()
        x = 2 + 2 * t
        image[12:24, x:x + 12] = colour
        Image.fromarray(image).save(folder / f"frame_{t:05d}.jpg", quality=95)


def make_evil_run(root: Path) -> Path:
    """Measure the injection-named net on frame folders (one named like an <img onerror> tag, plus an undecodable
    .mp4) through the CLI; return the run folder."""
    from stlens.cli import main

    root.mkdir(parents=True, exist_ok=True)
    (root / "evilnet.py").write_text(NET)
    data = root / "data"
    write_frames(data / EVIL_VIDEO, 14, 1)
    write_frames(data / "clip_b", 14, 2)
    (data / EVIL_BROKEN).write_bytes(b"not a video at all")
    run = root / "run"
    sys.path.insert(0, str(root))
    try:
        code = main(["measure", "--model", "module:evilnet:build", "--data", str(data), "--frames", "8", "--size",
                     "32", "--layers", f"stem,{EVIL_LAYER}", "--pairs", "8", "--bootstrap", "20", "--out", str(run),
                     "--quiet"])
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("evilnet", None)
    assert code == 0
    return run
