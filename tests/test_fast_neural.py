"""The feed-forward ``neural-fast`` stylizer: its bundled float16 weights load and keep the stylizer contract, it runs
through ``stlens pairs check``, and its training script (benchmarks/train_stylizer.py) runs and resumes exactly."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from stlens.video.fastneural import NAME, STYLES, TransformNet, load_network, neural_fast, weights_dir
from stlens.video.stylizers import get_stylizer, uses_device

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """8 frames of a real sample video at 64×96."""
    from stlens.video.io import decode_video
    from stlens.video.sources import sample_videos

    bikes = next(p for p in sample_videos() if p.stem == "bikes")
    return np.ascontiguousarray(decode_video(bikes, short_side=64, max_frames=8)[:, :, :96])


def test_bundled_weights_are_small_float16_with_provenance():
    path = weights_dir() / f"{NAME}.safetensors"
    tensors = load_file(str(path))
    assert all(t.dtype == torch.float16 for t in tensors.values())
    assert path.stat().st_size < 4 * 2**20
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["styles"] == list(STYLES) and meta["train"]["step"] > 0 and meta["train"]["seconds"] > 0
    net, _ = load_network()
    assert isinstance(net, TransformNet) and next(net.parameters()).dtype == torch.float32
    from stlens.models.bundled import list_bundled

    assert NAME not in list_bundled()  # a stylizer, not a model


def test_stylizes_a_clip_deterministically(clip):
    out = neural_fast(clip, 3)
    assert out.shape == clip.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - clip).mean() > 5  # restyled
    assert np.array_equal(out, neural_fast(clip, 3))  # deterministic
    assert np.array_equal(out, neural_fast(clip, 3 + len(STYLES)))  # seed → style index
    # another style: a different look (a network whose last layer died gives every style the same constant shift)
    assert np.abs(out.astype(int) - neural_fast(clip, 4)).mean() > 3
    assert np.array_equal(neural_fast(clip[:3], 3), out[:3])  # frame by frame: a frame's style is its own
    odd = clip[:2, :61, :67]  # sizes that are not multiples of 4
    assert neural_fast(np.ascontiguousarray(odd), 1).shape == odd.shape
    assert neural_fast(clip[:0], 1).shape == clip[:0].shape
    # strength α: x + α·(net(x) − x); 0 gives the clip back, 1 the network as trained, more a larger change
    assert np.array_equal(neural_fast(clip, 3, strength=0.0), clip)
    raw, _ = load_network()
    change = [np.abs(neural_fast(clip, 3, strength=a).astype(int) - clip).mean() for a in (1.0, 2.0)]
    assert change[0] < change[1]
    assert np.array_equal(out, neural_fast(clip, 3, strength=raw.strength))


def test_registered_as_a_device_stylizer(clip):
    assert uses_device("palette,neural-fast")
    (name, stylize), = get_stylizer("neural-fast", torch.device("cpu"), "fp32")
    assert name == "neural-fast" and np.array_equal(stylize(clip, 2), neural_fast(clip, 2))
    bf16 = get_stylizer("neural-fast", torch.device("cpu"), "bf16")[0][1](clip, 2)
    assert bf16.shape == clip.shape and np.abs(bf16.astype(int) - neural_fast(clip, 2)).mean() < 8


def test_through_pairs_check(tmp_path, small_video):
    from stlens.pairs.check import check_pairs

    report = check_pairs(small_video, stylizer="neural-fast,palette", clips=1, frames=6, size=48, workers=0,
                         device="cpu", progress=False, out=tmp_path / "pairs.json")
    row = report["stylizers"]["neural-fast"]
    assert report["device"] == "cpu" and report["precision"] == "fp32"
    assert row["appearance_change"]["colour"] > 0 and np.isfinite(row["flow_epe"])


TINY = {"steps": 2, "crop": 32, "photos_per_step": 1, "lr": 1e-3, "norm_lr": 1e-2, "style_weight": 1.0,
        "content_weight": 1.0, "temporal_weight": 100.0, "width": 4, "blocks": 1, "seed": 0}


def test_training_runs_and_resumes_exactly(tmp_path):
    import train_stylizer

    torch.set_num_threads(1)
    straight = train_stylizer.train(tmp_path / "a", TINY, every=1, log_every=1)
    train_stylizer.train(tmp_path / "b", TINY | {"steps": 1}, every=1, log_every=1)
    resumed = train_stylizer.train(tmp_path / "b", TINY, every=1, log_every=1, bundle_to=tmp_path / "bundle")
    assert straight["step"] == resumed["step"] == 2
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed run is the straight run
    assert len((tmp_path / "b" / "train_log.csv").read_text().splitlines()) == 3  # header + steps 1, 2
    net, meta = load_network(tmp_path / "bundle" / f"{NAME}.safetensors")
    assert meta["network"] == {"styles": len(STYLES), "width": 4, "blocks": 1} and meta["train"]["step"] == 2
    with pytest.raises(SystemExit, match="other settings"):  # the data or the network may not change
        train_stylizer.train(tmp_path / "b", TINY | {"crop": 40})
    # the loss weights may: a new phase, recorded in the bundle
    train_stylizer.train(tmp_path / "b", TINY | {"steps": 3, "style_weight": 4.0}, bundle_to=tmp_path / "bundle")
    _, meta = load_network(tmp_path / "bundle" / f"{NAME}.safetensors")
    assert [(p["from_step"], p["style_weight"]) for p in meta["train"]["phases"]] == [(0, 1.0), (2, 4.0)]
    only = train_stylizer.bundle_checkpoint(tmp_path / "b", tmp_path / "only")  # a stopped run, bundled as it is
    assert load_network(only)[1]["train"]["phases"] == meta["train"]["phases"]


def test_a_leaky_network_keeps_its_activation_through_the_bundle(tmp_path):
    """``leaky`` (the negative slope of every activation) is part of the network: trained, bundled and loaded back, a
    leaky network gives what it gave before bundling (within float16), and its last layer lets negative values
    through (a ReLU network's dead units stay at 0)."""
    import train_stylizer

    torch.set_num_threads(1)
    settings = TINY | {"steps": 1, "leaky": 0.2, "head_std": 0.01}
    train_stylizer.train(tmp_path / "run", settings, every=1, log_every=1, bundle_to=tmp_path / "bundle")
    net, meta = load_network(tmp_path / "bundle" / f"{NAME}.safetensors")
    assert meta["network"]["leaky"] == 0.2 and meta["train"]["head_std"] == 0.01
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    trained = TransformNet(len(STYLES), 4, 1, leaky=0.2)
    trained.load_state_dict({k: v.half().float() for k, v in state.items()})
    trained.eval()
    x = torch.rand(2, 3, 20, 24)
    style = torch.tensor([0, 3])
    assert torch.equal(net(x, style), trained(x, style))
    assert net.head.weight.abs().sum() > 0  # head_std: the head starts non-zero
    hidden = x
    for layer in (*net.down, *net.res, *net.up):
        hidden = layer(hidden, style)
    assert (hidden < 0).any()  # leaky: negative activations pass (scaled by 0.2)
    relu = TransformNet(len(STYLES), 4, 1)
    assert "leaky" not in relu.config  # bundles of ReLU networks keep their config



def test_the_strength_rule_takes_the_smallest_alpha_reaching_both_targets():
    from calibrate_stylizer import alpha_name, choose

    def row(colour: float, structure: float) -> dict:
        return {"appearance_change": {"colour": colour, "structure": structure}}

    alphas = [1.0, 1.5, 2.0, 2.5]
    rows = {alpha_name(1.0): row(20, 0.10), alpha_name(1.5): row(35, 0.30), alpha_name(2.0): row(50, 0.45),
            alpha_name(2.5): row(60, 0.50)}
    neural, fourier = row(28, 0.44), row(30, 0.18)
    assert alpha_name(1.5) == "a150"
    assert choose(rows, alphas, neural, fourier) == 2.0  # 1.5 reaches fourier's colour, not neural's structure
    assert choose(rows, alphas, None, fourier) == 1.5  # no structure target: colour alone
    assert choose(rows, alphas, row(28, 0.9), fourier) == 2.5  # none reaches it: the largest
