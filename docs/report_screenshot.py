"""Screenshot of a report for the README: ``python docs/report_screenshot.py runs/demo/report.html``.

Renders the page in headless Chromium (the flags of tests/test_browser.py, a fresh profile) at 1280 px wide and writes
the top ``--height`` pixels to docs/images/report.png (downscaled to ``--width``)."""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars",
         "--virtual-time-budget=3000"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("images") / "report.png")
    parser.add_argument("--height", type=int, default=1900, help="page pixels to keep from the top")
    parser.add_argument("--width", type=int, default=1000, help="width of the written PNG")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "shot.png"
        subprocess.run(["/usr/bin/chromium", *FLAGS, f"--user-data-dir={tmp}/profile", f"--screenshot={shot}",
                        f"--window-size=1280,{args.height}", args.report.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
        image = Image.open(shot).convert("RGB")
    image = image.resize((args.width, round(image.height * args.width / image.width)), Image.Resampling.LANCZOS)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out, optimize=True)
    print(f"{args.out}: {image.width}×{image.height}")


if __name__ == "__main__":
    main()
