"""Bundled checkpoints: small, loadable with --weights bundled:<name>, and as accurate as their records say."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from stlens.errors import StlensError
from stlens.models.bundled import bundled_dir, bundled_info, list_bundled
from stlens.models.registry import load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bundle_segmenters import SEGMENTERS, sample_miou  # noqa: E402
from make_checkpoints import RECIPES, sample_accuracy  # noqa: E402
from vis_train import BUNDLED as VIS_BUNDLED  # noqa: E402
from vis_train import CHECK_DATA as VIS_CHECK_DATA  # noqa: E402
from vis_train import check_sample as vis_check_sample  # noqa: E402

BUNDLED = list_bundled()
CLASSIFIERS = [name for name in BUNDLED if name in RECIPES]


def test_every_recipe_is_bundled_and_small():
    assert sorted(BUNDLED) == sorted([*RECIPES, *SEGMENTERS, *VIS_BUNDLED])
    sizes = {name: (bundled_dir() / f"{name}.safetensors").stat().st_size for name in BUNDLED}
    assert max(sizes.values()) < 5 * 2**20
    assert sum(sizes.values()) < 25 * 2**20


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_bundled_checkpoint_reaches_its_recorded_accuracy(name):
    info = bundled_info(name)
    assert info["model"] == RECIPES[name]["model"] and info["data"] == RECIPES[name]["data"]
    recorded = info["check_sample"]["accuracy"]
    found = sample_accuracy(info["model"], f"bundled:{name}", info["data"])
    assert found == pytest.approx(recorded, abs=1 / 64 + 1e-9)  # at most one clip may flip across machines
    assert json.loads(json.dumps(info["metrics"]))["test_acc"] >= 0.0


@pytest.mark.parametrize("name", sorted(SEGMENTERS))
def test_bundled_segmenter_reaches_its_recorded_miou(name):
    """The study's segmenters: their spec names the study variant, and the float16 copy segments the fixed sample as
    well as the record says (mIoU is a mean over 32 clips: a flipped pixel moves it by far less than 1e-3)."""
    info = bundled_info(name)
    assert info["task"] == "segment" and info["study"]["variant"] == SEGMENTERS[name]
    assert info["model"] == f"stlens:avos?fusion={SEGMENTERS[name].replace('-', '&cc=')}"
    found = sample_miou(info["model"], f"bundled:{name}", info["check_sample"]["data"], info["check_sample"]["clips"])
    assert found == pytest.approx(info["check_sample"]["miou"], abs=1e-3)
    assert found > 0.5  # trained: an untrained avos (seed 0) scored 0.093 on this sample
    assert set(info["study"]["fusion"]) == {f"fusion.stage{k}" for k in (1, 2, 3, 4)}


@pytest.mark.parametrize("name", sorted(VIS_BUNDLED))
def test_bundled_vis_model_reaches_its_recorded_ap(name):
    """The bundled instance segmenter loads from its spec and scores its recorded track AP on the first 16 test
    clips, above the trivial baseline's there (one track per class over all instances' pixels). Only just: it misses
    the issue's bar of 2x the baseline (docs/vis.md: the classes are not learned)."""
    info = bundled_info(name)
    world = name.removeprefix("vis-")
    assert info["task"] == "instances" and info["check_sample"]["data"] == VIS_CHECK_DATA.format(world=world)
    found = vis_check_sample(info["model"], f"bundled:{name}", info["check_sample"]["data"])
    assert found["ap"] == pytest.approx(info["check_sample"]["ap"], abs=0.02)  # a flipped mask pixel moves IoU
    assert found["ap"] > found["baseline"]["ap"] and found["best_iou_ge_0.5"] > 0.5


def test_bundled_segmenter_refuses_other_architecture_options():
    load_model("stlens:avos?cc=recip&fusion=gated", weights="bundled:avos-gated-recip")  # any option order
    with pytest.raises(StlensError, match=r"cc=uni \(the checkpoint's: recip\).*`model` 'stlens:avos\?fusion=gated"):
        load_model("stlens:avos", weights="bundled:avos-gated-recip")
    with pytest.raises(StlensError, match="fusion=gated \\(the checkpoint's: concat\\)"):
        load_model("stlens:avos?cc=none", weights="bundled:avos-concat-none")


def test_bundled_weights_for_another_model_are_refused():
    with pytest.raises(StlensError, match="holds weights for stlens:i3d"):
        load_model("stlens:c2d", weights="bundled:i3d-motion")
    with pytest.raises(StlensError, match="unknown bundled checkpoint 'nope'.*i3d-motion"):
        load_model("stlens:i3d", weights="bundled:nope")


def test_demo_finds_the_motion_trained_net_more_dynamic(tmp_path):
    """The demo's claim on the synthetic pairs: i3d-motion's last stage is more dynamic than its appearance twin and
    the order-blind C2D, with 95% CIs apart (32 pairs per factor; measured margin at 64 pairs: 46 vs 15-16 %)."""
    from stlens.showcase import last_stage_checks, run_demo

    rows = run_demo(tmp_path, pairs=32, models=["i3d-motion", "i3d-appearance", "c2d-motion"], data=["synth"],
                    progress=False)
    checks = last_stage_checks(rows)
    assert {c["other"] for c in checks} == {"i3d-appearance", "c2d-motion"}
    for check in checks:
        assert check["more_dynamic"] and check["cis_apart"], check
    assert (tmp_path / "summary.md").is_file()
