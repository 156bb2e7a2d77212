"""The bottom layer (stlens.core): model handles know their inputs and layouts, for every family and verb."""

from __future__ import annotations

import torch
from torch import nn

from stlens.cli import main
from stlens.core.handle import ModelHandle, input_count
from stlens.core.spec import InputSpec


class ChannelsLast(nn.Module):
    """A clip → (B, T, H, W, C) stage (like Swin3D's), then a linear head."""

    def __init__(self, channels: int = 6):
        super().__init__()
        self.conv = nn.Conv3d(3, channels, 3, padding=1)
        self.last = nn.Identity()
        self.head = nn.Linear(channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.last(self.conv(x).permute(0, 2, 3, 4, 1))  # (B, T, H, W, C)
        return self.head(y.mean(dim=(1, 2, 3)))


def channels_last_handle() -> ModelHandle:
    torch.manual_seed(0)
    return ModelHandle(ChannelsLast(), "test:channels-last", InputSpec(frames=4, size=16, resize=16), ["last"],
                       layout=lambda name: "channels_last" if name == "last" else "channels_first")


def test_visualize_channel_of_a_channels_last_layer_optimizes_that_channel():
    import stlens

    handle = channels_last_handle()
    # channel 5 exists (C = 6) but the layer has only T = 4 frames: indexing the wrong axis would fail
    result = stlens.visualize(handle, "channel:5", layer="last", steps=3, natural_clips=0, batch_size=1)
    target = result.targets[0]
    assert target.status == "ok" and target.history[-1] > target.history[0]  # channel 5's mean went up
    from stlens.visualize.render import Capture

    x = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad(), Capture(handle.module, ["last"], handle.layout) as capture:
        acts = capture.run([x])["last"]
        expected = handle.module.conv(x)  # (B, C, T, H, W): what channel k means
    assert acts.shape == (2, 6, 4, 16, 16) and torch.allclose(acts, expected, atol=1e-6)
    objective = stlens.visualize.objectives.channel("last", 5)
    assert torch.allclose(objective({"last": acts}), expected[:, 5].mean(dim=(1, 2, 3)), atol=1e-6)


def test_input_count_and_example_inputs_for_two_stream_models():
    import stlens

    handle = stlens.load_model("stlens:twostream?width=4", frames=4, size=16)
    assert handle.inputs == 2 and input_count(handle.module) == 2
    rgb, flow = handle.example_inputs(2)
    assert rgb.shape == (2, 3, 4, 16, 16) and flow.shape == (2, 2, 3, 16, 16)
    with torch.no_grad():
        assert handle.module(rgb, flow).shape[0] == 2
    assert stlens.load_model("stlens:i3d?width=4", frames=4, size=16).inputs == 1


def test_layers_command_lists_both_streams_of_a_two_stream_model(capsys):
    assert main(["layers", "stlens:twostream?width=4", "--frames", "4", "--size", "16"]) == 0
    out = capsys.readouterr().out
    assert "inputs (rgb, flow) (1, 3, 4, 16, 16) + (1, 2, 3, 16, 16)" in out
    starred = [line.split()[1] for line in out.splitlines() if line.startswith("*")]
    assert {"rgb.stage4", "flow.stage4", "fusion"} <= set(starred)
    assert "not called" not in next(line for line in out.splitlines() if line.startswith("* flow.stage2"))
