"""Offline mode and weight downloads: torchvision names through the torch hub cache, ``hf:`` hub ids and folders.

Nothing here reaches a network: downloads are monkeypatched, hub ids are looked up offline in an empty cache."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn

from stlens.cli import main
from stlens.errors import StlensError
from stlens.models import tvvideo
from stlens.models.offline import OFFLINE_VARS, is_offline, offline_scope
from stlens.models.registry import load_model


@pytest.fixture
def online(monkeypatch):
    for name in OFFLINE_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache: TORCH_HOME in a temporary folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a set_dir elsewhere would win over TORCH_HOME
    assert Path(torch.hub.get_dir()) == tmp_path / "torch" / "hub"
    return tmp_path / "torch" / "hub"


def _r3d_weights():
    from torchvision.models.video import R3D_18_Weights

    return R3D_18_Weights.KINETICS400_V1


def test_offline_scope_sets_and_restores(online, monkeypatch):
    assert not is_offline()
    with offline_scope(True) as offline:
        assert offline and is_offline()
        assert os.environ["STLENS_OFFLINE"] == os.environ["HF_HUB_OFFLINE"] == "1"
    assert not is_offline() and "STLENS_OFFLINE" not in os.environ and "HF_HUB_OFFLINE" not in os.environ
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")
    assert is_offline()
    with offline_scope(None) as offline:
        assert offline
    with offline_scope(False) as offline:
        assert not offline and not is_offline()
    assert os.environ["HF_HUB_OFFLINE"] == "true"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not is_offline()


def test_cached_torchvision_weights_load_without_download(torch_home, monkeypatch):
    weights = _r3d_weights()
    cache = torch_home / "checkpoints" / Path(weights.url).name
    assert tvvideo.weights_cache_path(weights.url) == cache
    saved = nn.Linear(3, 2)
    cache.parent.mkdir(parents=True)
    torch.save(saved.state_dict(), cache)

    def no_download(*args, **kwargs):
        raise AssertionError("a cached file was downloaded again")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    model = nn.Linear(3, 2)
    with offline_scope(True):
        tvvideo._load_torchvision_weights(model, "r3d_18", "R3D_18_Weights.KINETICS400_V1")
    assert torch.equal(model.weight, saved.weight) and torch.equal(model.bias, saved.bias)


def test_uncached_weights_offline_name_the_cache_and_the_switch(torch_home, online):
    cache = torch_home / "checkpoints" / Path(_r3d_weights().url).name
    with pytest.raises(StlensError, match="offline mode is on") as err:
        load_model("torchvision:r3d_18", weights="KINETICS400_V1", offline=True)
    assert str(cache) in str(err.value) and "STLENS_OFFLINE" in str(err.value) and "--offline" in str(err.value)
    assert not is_offline()  # the scope of load_model is over


def test_cli_offline_reaches_load_model(torch_home, online, capsys):
    assert main(["layers", "--model", "torchvision:r3d_18", "--weights", "KINETICS400_V1", "--offline"]) == 2
    err = capsys.readouterr().err
    assert "offline mode is on" in err and "checkpoints" in err
    assert not is_offline()


def test_uncached_weights_online_are_downloaded_with_a_progress_bar(torch_home, online, monkeypatch):
    weights = _r3d_weights()
    saved = nn.Linear(3, 2)
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, Path(dst), hash_prefix, progress))
        torch.save(saved.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = nn.Linear(3, 2)
    with offline_scope(False):
        tvvideo._load_torchvision_weights(model, "r3d_18", "KINETICS400_V1")
    cache = torch_home / "checkpoints" / Path(weights.url).name
    assert calls == [(weights.url, cache, "b3b3357e", True)]  # r3d_18-b3b3357e.pth: torch.hub's hash check
    assert torch.equal(model.weight, saved.weight)


def test_failed_download_says_how_to_place_the_file(torch_home, online, monkeypatch):
    weights = _r3d_weights()

    def no_network(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(StlensError, match="cannot download") as err:
        tvvideo._load_torchvision_weights(nn.Linear(3, 2), "r3d_18", "KINETICS400_V1")
    message = str(err.value)
    cache = torch_home / "checkpoints" / Path(weights.url).name
    assert weights.url in message and str(cache) in message and "by hand" in message


def _tiny_videomae(folder: Path) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.VideoMAEConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                         intermediate_size=64, num_frames=4, image_size=32, num_labels=3)
    transformers.VideoMAEForVideoClassification(config).save_pretrained(folder)


def test_hf_folder_spec_loads_with_its_family(tmp_path, online):
    folder = tmp_path / "videomae-tiny"
    _tiny_videomae(folder)
    handle = load_model(f"hf:{folder}?cls=include")
    assert handle.module.family == "videomae" and handle.weights == str(folder)
    assert (handle.input.frames, handle.input.size) == (4, 32)
    with torch.inference_mode():
        assert handle.module(torch.randn(1, 3, 4, 32, 32)).shape == (1, 3)
    with pytest.raises(StlensError, match="unknown option"):
        load_model(f"hf:{folder}?depth=2")
    with pytest.raises(StlensError, match="unknown hf model"):
        load_model("hf:no/such/deep/folder")


def test_hf_hub_id_offline_and_uncached_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(StlensError, match="not in the Hugging Face cache") as err:
        load_model("hf:stlens-tests/no-such-videomae")
    assert "HF_HUB_OFFLINE" in str(err.value) and "hf:FOLDER" in str(err.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(StlensError, match="offline mode is on"):
        load_model("hf:stlens-tests/no-such-videomae", offline=True)
