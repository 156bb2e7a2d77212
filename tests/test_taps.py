"""Layer taps: pooling rules, one forward for all layers, names, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stlens.errors import StlensError
from stlens.models.taps import LayerTaps, flatten_output, pool_tensor


def test_pool_rules_by_hand():
    x5 = torch.arange(2 * 3 * 2 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2, 2)
    assert torch.equal(pool_tensor(x5), x5.reshape(2, 3, -1).mean(-1))
    x4 = torch.rand(2, 3, 4, 4)
    assert torch.allclose(pool_tensor(x4), x4.reshape(2, 3, -1).mean(-1))
    tokens = torch.rand(2, 7, 5)
    assert torch.allclose(pool_tensor(tokens), tokens.mean(1))
    last = torch.rand(2, 2, 3, 3, 6)  # (B, T, H, W, C)
    assert torch.allclose(pool_tensor(last, "channels_last"), last.reshape(2, -1, 6).mean(1))
    assert pool_tensor(torch.ones(2, 4, 3, 3, 3, dtype=torch.bfloat16)).dtype == torch.float32


def test_flatten_names():
    t = torch.zeros(1, 2)
    assert [n for n, _ in flatten_output("l", [t, t])] == ["l.0", "l.1"]
    assert [n for n, _ in flatten_output("l", {"slow": t, "fast": t})] == ["l.slow", "l.fast"]
    assert [n for n, _ in flatten_output("blocks.1", (t, [8, 7, 7]))] == ["blocks.1"]


class Multi(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 1)
        self.flat = nn.Conv2d(4, 5, 1)
        self.relu = nn.ReLU()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        y = self.relu(self.conv(x))
        z = self.relu(self.flat(y.mean(2)))
        return z


def test_one_forward_captures_all_layers_and_repeated_calls():
    model = Multi().eval()
    x = torch.rand(3, 3, 2, 4, 4)
    with LayerTaps(model, ["conv", "flat", "relu"]) as taps:
        model(x)
    assert model.calls == 1
    assert set(taps.latents) == {"conv", "flat", "relu", "relu@2"}
    assert taps.latents["conv"].shape == (3, 4)
    assert taps.latents["relu@2"].shape == (3, 5)
    expected = torch.relu(model.flat(torch.relu(model.conv(x)).mean(2))).mean((2, 3))
    assert torch.allclose(taps.latents["relu@2"], expected, atol=1e-6)
    # hooks are removed on exit
    assert not model.conv._forward_hooks


def test_unknown_layer_lists_closest_names():
    with pytest.raises(StlensError, match="unknown layer 'cnv'.*conv"):
        LayerTaps(Multi(), ["cnv"])


def test_non_finite_activations_name_the_layer():
    model = Multi().eval()
    with torch.no_grad():
        model.flat.bias.fill_(float("nan"))
    with pytest.raises(StlensError, match="non-finite.*'flat'"), LayerTaps(model, ["conv", "flat"]):
        model(torch.rand(1, 3, 2, 4, 4))
