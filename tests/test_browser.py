"""Render reports in headless Chromium: a screenshot that is not blank, and no script errors (``make browser-test``).

Skipped when /usr/bin/chromium is absent (Debian package ``chromium``; ``make browser-test`` installs it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_helpers import EVIL_LAYER, make_evil_run

from stlens.cli import main

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000"]

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (make browser-test)")]


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on a local file with a fresh profile folder."""
    command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def render(page: Path, tmp: Path, height: int = 2400) -> tuple[str, np.ndarray, str]:
    """The DOM after the page's scripts ran, the screenshot as an RGB array, and Chromium's log."""
    dom = chromium(page, tmp / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = tmp / "shot.png"
    run = chromium(page, tmp / "profile-shot", f"--screenshot={shot}", f"--window-size=1280,{height}")
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    return dom.stdout, np.asarray(Image.open(shot).convert("RGB"), dtype=float), dom.stderr + run.stderr


def check_page(dom: str, pixels: np.ndarray, log: str) -> None:
    assert re.search(r'<html[^>]*data-script-errors="0"', dom), "a script error was recorded by window.onerror"
    assert re.search(r'<body[^>]*data-report-ready="1"', dom), "the report's script did not run to its end"
    assert "Uncaught" not in log, [line for line in log.splitlines() if "Uncaught" in line]
    blocked = [line for line in log.splitlines() if "Refused to" in line or "violates the following Content Security"
               in line or "Content-Security-Policy" in line]
    assert not blocked, f"the Content-Security-Policy blocked something (an external resource?): {blocked[:3]}"
    assert pixels.std() > 20, f"blank screenshot (pixel std {pixels.std():.1f})"
    background = np.abs(pixels - pixels[5, -5]).sum(axis=2) > 30
    assert background.mean() > 0.05, f"only {100 * background.mean():.1f}% of the screenshot differs from the page"
    images = re.search(r'<body[^>]*data-images="(\d+) loaded, (\d+) broken"', dom)
    assert images and int(images[1]) > 0 and images[2] == "0", images and images[0]
    static = (np.abs(pixels - [230, 159, 0]).sum(axis=2) < 40).mean()  # the 'static' orange of the bar charts
    assert static > 0.001, f"the plots are not on screen ({100 * static:.2f}% orange pixels)"


def test_report_renders_without_script_errors(tmp_path):
    run = make_evil_run(tmp_path / "evil")
    page = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(page)]) == 0
    dom, pixels, log = render(page, tmp_path)
    check_page(dom, pixels, log)
    assert EVIL_LAYER not in dom and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom


@pytest.mark.slow
def test_demo_report_renders(tmp_path):
    """The demo over the bundled checkpoints (few pairs), then its report.html in Chromium."""
    from stlens.models.bundled import list_bundled
    from stlens.showcase import DEMO_MODELS, run_demo

    models = [m for m in DEMO_MODELS if m in set(list_bundled())]
    if not models:
        pytest.skip("no bundled checkpoint (make checkpoints)")
    rows = run_demo(tmp_path / "demo", pairs=8, models=models, progress=False)
    assert rows
    page = tmp_path / "demo" / "report.html"
    html = page.read_text()
    assert html.count('<section id="run-') == len(models) * 2
    dom, pixels, log = render(page, tmp_path, height=3000)
    check_page(dom, pixels, log)
