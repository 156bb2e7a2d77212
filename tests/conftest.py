"""Shared fixtures: tiny models and small real videos so that the suite stays fast on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

torch.set_num_threads(2)


class TemporalMeanEncoder(nn.Module):
    """Per-frame 2-D convolutions then a mean over time: blind to frame order by construction."""

    def __init__(self, channels: int = 12):
        super().__init__()
        self.frame_conv = nn.Sequential(nn.Conv3d(3, channels, (1, 3, 3), padding=(0, 1, 1)), nn.ReLU())
        self.head = nn.Linear(channels, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.frame_conv(x).mean(dim=(2, 3, 4)))


class TinyVideoNet(nn.Module):
    """A small 3-D conv net with a 5-D stage, a 4-D branch, a token output, a list output and a dict output."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 6, 3, padding=1), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv3d(6, 8, 3, stride=(1, 2, 2), padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.stage(self.stem(x)).mean(dim=(2, 3, 4)))


def tiny_video_net() -> nn.Module:
    torch.manual_seed(0)
    return TinyVideoNet()


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    from stlens.video.sources import sample_videos

    return sample_videos()[0].parent


@pytest.fixture(scope="session")
def small_video(tmp_path_factory) -> Path:
    """A real 40-frame h264 clip cut from the bikes sample video at 96x64, written with PyAV."""
    from stlens.video.io import decode_video
    from stlens.video.sources import sample_videos

    bikes = next(p for p in sample_videos() if p.stem == "bikes")
    frames = decode_video(bikes, short_side=64, max_frames=40)
    return write_mp4(tmp_path_factory.mktemp("videos") / "bikes_small.mp4", frames)


def write_mp4(path: Path, frames: np.ndarray, faststart: bool = False) -> Path:
    """(T, H, W, 3) uint8 frames as an h264 mp4 (even width and height), written with PyAV; ``faststart`` puts the
    index at the start of the file (so that a truncated copy still decodes partly)."""
    import av

    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = frames.shape[2] // 2 * 2, frames.shape[1] // 2 * 2
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[: stream.height, : stream.width]),
                                               format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


class TinyClassifier(nn.Module):
    """A 3-D conv classifier with BatchNorm (its running statistics must survive a checkpoint round trip)."""

    def __init__(self, classes: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv3d(8, 12, 3, stride=(1, 2, 2), padding=1), nn.ReLU())
        self.head = nn.Linear(12, classes)
        self.stlens_config = {"name": "tiny_classifier", "options": {"classes": classes}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage(self.stem(x)).mean(dim=(2, 3, 4)))


def tiny_classifier() -> nn.Module:
    return TinyClassifier()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and far faster on a busy machine); use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _signal_handlers_restored(request):
    """A test that leaves the SIGINT/SIGTERM handlers changed (e.g. SIGINT ignored, as a pair-making worker's start
    does, run in this process) would change how the interrupts of later tests behave: put them back after every
    test, and name the test that changed them."""
    import signal
    import warnings

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    changed = [signal.Signals(s).name for s, handler in saved.items() if signal.getsignal(s) is not handler]
    for s, handler in saved.items():
        signal.signal(s, handler)
    if changed:
        warnings.warn(f"{request.node.nodeid} left the {', '.join(changed)} handler changed (restored)", stacklevel=1)
