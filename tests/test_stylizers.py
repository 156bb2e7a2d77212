"""Stylizers: seeded, frame-consistent and shape-keeping; fourier keeps the phase; npr changes appearance; user code."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stlens.errors import StlensError
from stlens.video.io import decode_video
from stlens.video.sources import sample_videos
from stlens.video.stylizers import (
    STYLIZERS,
    fourier,
    fourier_params,
    get_stylizer,
    low_frequency_window,
    npr,
    npr_filter,
)


def shift_colours(clip: np.ndarray, seed: int) -> np.ndarray:
    """A user stylizer, imported by the tests as module:test_stylizers:shift_colours."""
    return ((clip.astype(np.int64) + seed) % 256).astype(np.uint8)


def wrong_shape(clip: np.ndarray, seed: int) -> np.ndarray:
    return clip[:, ::2]


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """6 real frames of the Big Buck Bunny sample at 48×64; frame 4 repeats frame 1."""
    bunny = next(p for p in sample_videos() if p.stem == "bigbuckbunny")
    frames = decode_video(bunny, short_side=48, max_frames=6)[:, :, :64].copy()
    frames[4] = frames[1]
    return frames


def gradient_magnitude(frame: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)).ravel()


@pytest.mark.parametrize("name", ["palette", "fourier", "npr"])
def test_stylizer_is_seeded_shape_keeping_and_flicker_free(name, clip):
    stylize = STYLIZERS[name]
    out = stylize(clip, 3)
    assert out.shape == clip.shape and out.dtype == np.uint8
    assert np.array_equal(out, stylize(clip.copy(), 3))
    assert np.array_equal(out[4], out[1])  # identical input frames stay identical
    assert not np.array_equal(out, clip)
    assert not np.array_equal(out, stylize(clip, 4))


def test_fourier_keeps_phase_and_edges_and_changes_colours(clip):
    colour_changes = []
    for seed in range(6):
        out = fourier(clip, seed)
        for a, b in zip(clip, out, strict=True):
            assert np.corrcoef(gradient_magnitude(a), gradient_magnitude(b))[0, 1] > 0.8
        spectrum_in = np.fft.rfft2(clip.astype(np.float64), axes=(1, 2))
        spectrum_out = np.fft.rfft2(out.astype(np.float64), axes=(1, 2))
        strong = np.abs(spectrum_in) > np.median(np.abs(spectrum_in))
        phase_error = np.abs(np.angle(spectrum_in * np.conj(spectrum_out)))[strong]
        assert np.median(phase_error) < 0.1
        colour_changes.append(np.abs(out.astype(np.float64) - clip).mean())
    assert np.median(colour_changes) > 12  # the low-frequency amplitude (mean colour) comes from the style image


def test_fourier_window_and_styles():
    rows, cols = low_frequency_window(112, 112, 0.05)
    assert rows.tolist() == [0, 1, 2, 3, 4, 5, 107, 108, 109, 110, 111] and cols == slice(0, 6)
    rows, cols = low_frequency_window(8, 8, 0.01)  # at least the DC and its neighbours
    assert rows.tolist() == [0, 1, 7] and cols == slice(0, 2)
    assert len({fourier_params(seed)["image"] for seed in range(40)}) >= 5


def test_npr_uses_every_filter_and_changes_appearance(clip):
    seeds = {}
    for seed in range(60):
        seeds.setdefault(npr_filter(seed)[0], seed)
    assert set(seeds) == {"stylization", "pencil", "edge_preserving", "oil", "cartoon"}
    for kind, seed in seeds.items():
        out = npr(clip, seed)
        assert np.abs(out.astype(np.float64) - clip).mean() > 5, kind
        assert np.array_equal(out[4], out[1]), kind


def test_module_stylizer():
    (name_a, palette), (name_b, user) = get_stylizer("palette,module:test_stylizers:shift_colours")
    assert name_a == "palette" and name_b == "module:test_stylizers:shift_colours"
    clip = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    assert np.all(user(clip, 5) == 5)


@pytest.mark.parametrize(("spec", "message"), [
    ("module:no_such_module_xyz:f", "cannot import stylizer f from no_such_module_xyz"),
    ("module:test_stylizers:missing", "cannot import stylizer missing"),
    ("module:test_stylizers", "must be module:<pkg.mod>:<callable>"),
    ("module:test_stylizers:STYLIZERS", "not a callable"),
    ("fourrier", "unknown stylizer 'fourrier'"),
])
def test_bad_stylizer_spec(spec, message):
    with pytest.raises(StlensError, match=message):
        get_stylizer(spec)


def test_user_stylizer_with_wrong_output_is_reported():
    [(_, user)] = get_stylizer("module:test_stylizers:wrong_shape")
    with pytest.raises(StlensError, match="returned uint8"):
        user(np.zeros((2, 4, 4, 3), dtype=np.uint8), 0)
