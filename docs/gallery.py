"""Make docs/images/stylizers.png: each built-in stylizer (3 seeds) on a real frame of the bikes sample video.

Run: .venv/bin/python docs/gallery.py [--neural]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stlens.video.io import decode_video
from stlens.video.sampling import centre_crop
from stlens.video.sources import sample_videos
from stlens.video.stylizers import get_stylizer

SEEDS = (1, 2, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--neural", action="store_true", help="add the (slow) neural stylizer row")
    parser.add_argument("--out", default=str(Path(__file__).parent / "images" / "stylizers.png"))
    args = parser.parse_args()
    bikes = next(p for p in sample_videos() if p.stem == "bikes")
    clip = centre_crop(decode_video(bikes, short_side=128, max_frames=60)[59:60], 128)
    names = "palette,fourier,npr" + (",neural" if args.neural else "")
    rows = []
    for name, stylize in get_stylizer(names):
        tiles = [clip[0]] + [stylize(clip, seed)[0] for seed in SEEDS]
        rows.append((name, np.concatenate(tiles, axis=1)))
    label_width = 80
    height, width = rows[0][1].shape[:2]
    canvas = Image.new("RGB", (label_width + width, height * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (name, strip) in enumerate(rows):
        canvas.paste(Image.fromarray(strip), (label_width, r * height))
        draw.text((6, r * height + height // 2 - 6), name, fill="black")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out)
    print(f"wrote {args.out}: original + seeds {SEEDS} per stylizer")


if __name__ == "__main__":
    main()
