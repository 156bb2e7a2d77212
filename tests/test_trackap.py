"""Track AP of video instance segmentation (stlens.measure.trackap): hand-computed multi-frame cases, agreement with
pycocotools' COCOeval (one-frame clips, and multi-frame clips laid out as one wide image, which has the same IoU),
and the bootstrap over videos."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stlens.core.instances import Instances, TrackPredictions
from stlens.errors import StlensError
from stlens.measure import trackap
from stlens.measure.trackap import bootstrap_videos, track_ap, track_ap_bootstrap, track_iou


def _lines(frames: int, width: int, spans: list[dict[int, tuple[int, int]]]) -> np.ndarray:
    """(N, T, 1, W) masks: spans[n][t] = (start, stop) of track n's pixels in frame t (absent frames left out)."""
    masks = np.zeros((len(spans), frames, 1, width), bool)
    for n, span in enumerate(spans):
        for t, (start, stop) in span.items():
            masks[n, t, 0, start:stop] = True
    return masks


# video 1: T=3, 12 pixels a frame. Category 0: g1 (frames 0-1 only), g2 (all frames), a crowd track (frame 2 only).
G1, G2, CROWD = {0: (0, 6), 1: (0, 6)}, {0: (6, 12), 1: (6, 12), 2: (6, 12)}, {2: (0, 6)}
P1 = {0: (0, 5), 1: (0, 6)}  # g1 less one pixel: IoU 11/12
P2 = {0: (6, 12), 1: (6, 12)}  # g2 in two of its three frames: IoU 12/18
P3 = {2: (0, 4)}  # inside the crowd track: 4/4 of the prediction
P4 = dict(G1)  # g1 exactly, but scored below p1


def _hand_case() -> tuple[list[TrackPredictions], list[Instances]]:
    video1 = Instances(_lines(3, 12, [G1, G2, CROWD]), [0, 0, 0], [1, 2, 3], [False, False, True])
    pred1 = TrackPredictions(_lines(3, 12, [P1, P2, P3, P4, G1, {1: (3, 9)}]), [0, 0, 0, 0, 1, 2],
                             [0.9, 0.8, 0.7, 0.6, 0.99, 0.5])
    # video 2: T=2, category 1: one track h1; a wrong prediction scored above the right one
    h1 = {0: (0, 6), 1: (0, 6)}
    video2 = Instances(_lines(2, 12, [h1]), [1], [7], [False])
    pred2 = TrackPredictions(_lines(2, 12, [{0: (6, 12)}, h1]), [1, 1], [0.95, 0.5])
    return [pred1, pred2], [video1, video2]


def test_track_iou_by_hand():
    predictions, targets = _hand_case()
    iou = track_iou(predictions[0].masks[:4], targets[0].masks, targets[0].crowd)
    expected = np.array([[11 / 12, 0, 0], [0, 12 / 18, 0], [0, 0, 4 / 4], [1, 0, 0]])
    np.testing.assert_allclose(iou, expected, rtol=0, atol=1e-15)
    # the same crowd track compared as a regular one: intersection over union 4 / 6
    assert track_iou(predictions[0].masks[2:3], targets[0].masks[2:3])[0, 0] == pytest.approx(4 / 6)
    # an empty prediction against a crowd track has no area: IoU 0, not NaN
    empty = np.zeros((1, 3, 1, 12), bool)
    assert track_iou(empty, targets[0].masks, targets[0].crowd).tolist() == [[0.0, 0.0, 0.0]]


def test_track_iou_in_blocks_equals_one_block(monkeypatch):
    rng = np.random.default_rng(5)
    a, b = rng.random((4, 3, 7, 9)) > 0.5, rng.random((5, 3, 7, 9)) > 0.6
    whole = track_iou(a, b, np.array([0, 1, 0, 0, 1], bool))
    monkeypatch.setattr(trackap, "_CHUNK", 20)  # blocks of 2 pixels
    np.testing.assert_array_equal(track_iou(a, b, np.array([0, 1, 0, 0, 1], bool)), whole)
    inter = (a[:, None] & b[None]).sum((2, 3, 4))
    union = (a[:, None] | b[None]).sum((2, 3, 4))
    np.testing.assert_allclose(whole[:, 0], inter[:, 0] / union[:, 0])
    np.testing.assert_allclose(whole[:, 1], inter[:, 1] / a.sum((1, 2, 3)))


def test_track_ap_by_hand():
    result = track_ap(*_hand_case(), num_classes=4)
    # Category 0 (2 regular tracks; p3 is matched to the crowd track at every threshold and ignored):
    #   t = .50-.65 (4 thresholds): p1 TP, p2 TP, p4 FP → recall 1, precision 1 at every recall point: AP 1
    #   t = .70-.90 (5): p1 TP, p2 FP, p4 FP (g1 taken) → precision 1 up to recall .5 (51 of 101 points), recall .5
    #   t = .95 (1): p1 FP (11/12 < .95), p2 FP, p4 TP → precision 1/3 up to recall .5, recall .5
    ap0_per_threshold = [1.0] * 4 + [51 / 101] * 5 + [17 / 101]
    ap0 = sum(ap0_per_threshold) / 10
    assert ap0 == pytest.approx(676 / 1010)
    ar1_0 = (9 * 0.5 + 0) / 10  # the first prediction per video only: p1, TP up to .90
    ar10_0 = (4 * 1 + 6 * 0.5) / 10
    # Category 1: 0.99 (video 1, no track of it there) FP, 0.95 FP, 0.5 TP at every threshold → precision 1/3
    # at every recall point; with one prediction per video both kept ones are FPs → AR1 0
    ap1, ar1_1, ar10_1 = 1 / 3, 0.0, 1.0
    assert result["ap"] == pytest.approx((ap0 + ap1) / 2, abs=1e-12)
    assert result["ap50"] == pytest.approx((1 + ap1) / 2, abs=1e-12)
    assert result["ap75"] == pytest.approx((51 / 101 + ap1) / 2, abs=1e-12)
    assert result["ar1"] == pytest.approx((ar1_0 + ar1_1) / 2, abs=1e-12)
    assert result["ar10"] == pytest.approx((ar10_0 + ar10_1) / 2, abs=1e-12)
    assert result["ar1"] < result["ar10"]  # maxDets: the wrong first predictions cut AR1
    assert result["per_class"][:2] == pytest.approx([ap0, ap1], abs=1e-12)
    assert math.isnan(result["per_class"][2]) and math.isnan(result["per_class"][3])  # no tracks: left out
    assert result["counts"] == {"videos": 2, "tracks": 3, "crowd": 1, "predictions": 8, "classes_with_tracks": 2,
                                "tracks_per_class": [2, 1, 0, 0]}


def test_a_tie_goes_to_the_later_track(tmp_path):
    # p1 has IoU 5/7 with both overlapping tracks a (pixels 0-5) and b (2-7); it takes b, the later one, as
    # pycocotools does, which leaves a to p2 (a exactly; IoU 4/8 with b).
    targets = [Instances(_lines(1, 12, [{0: (0, 6)}, {0: (2, 8)}]), [0, 0], [1, 2], [False, False])]
    predictions = [TrackPredictions(_lines(1, 12, [{0: (1, 7)}, {0: (0, 6)}]), [0, 0], [0.9, 0.8])]
    # t = .50-.70: both TP → AP 1; t = .75-.95: p1 FP, p2 TP → precision 1/2 up to recall 1/2 (51 points)
    expected = (5 * 1 + 5 * 51 / 101 / 2) / 10
    assert track_ap(predictions, targets, 1)["ap"] == pytest.approx(expected, abs=1e-12)
    assert _coco_eval(predictions, targets, 1, tmp_path).stats[0] == pytest.approx(expected, abs=1e-12)


def test_only_the_first_100_predictions_of_a_video_and_category_count():
    track = {0: (0, 6)}
    targets = [Instances(_lines(1, 12, [track]), [0], [1], [False])]
    masks = _lines(1, 12, [{0: (6, 12)}] * 100 + [track])  # 100 misses scored above the hit
    scores = np.r_[np.full(100, 0.9), 0.1]
    assert track_ap([TrackPredictions(masks, np.zeros(101), scores)], targets, 1)["ap"] == 0.0
    # 99 misses: the hit is the 100th, recall 1 at precision 1/100 everywhere
    kept = track_ap([TrackPredictions(masks[1:], np.zeros(100), scores[1:])], targets, 1)
    assert kept["ap"] == pytest.approx(1 / 100) and kept["ar10"] == 0.0


def test_a_prediction_on_a_crowd_track_would_otherwise_be_a_false_positive():
    predictions, targets = _hand_case()
    targets[0].crowd[:] = False  # the crowd track becomes a regular track that p3 matches at IoU 4/6
    result = track_ap(predictions, targets, num_classes=4)
    assert result["counts"]["tracks_per_class"][0] == 3
    assert result["per_class"][0] != pytest.approx(676 / 1010)


def test_no_tracks_and_no_videos_give_nan():
    assert all(math.isnan(track_ap([], [], 3)[name]) for name in trackap.SUMMARY)
    empty = Instances.empty(2, 4, 4)
    prediction = TrackPredictions(np.ones((1, 2, 4, 4), bool), [0], [0.5])
    result = track_ap([prediction], [empty], 2)
    assert math.isnan(result["ap"]) and result["counts"]["predictions"] == 1


def test_clear_errors():
    predictions, targets = _hand_case()
    with pytest.raises(StlensError, match="`predictions` has 2 videos but `targets` has 1"):
        track_ap(predictions, targets[:1], 4)
    swapped = [predictions[1], predictions[0]]
    with pytest.raises(StlensError, match=r"video 0: `predictions` masks .* \(2, 1, 12\) .* \(3, 1, 12\)"):
        track_ap(swapped, targets, 4)
    with pytest.raises(StlensError, match=r"video 0: `predictions` has class 2 outside \[0, `num_classes`=2\)"):
        track_ap(predictions, targets, 2)
    with pytest.raises(StlensError, match="`num_classes`"):
        track_ap(predictions, targets, 0)
    with pytest.raises(StlensError, match=r"`targets\[1\]`"):
        track_ap(predictions, [targets[0], predictions[1]], 4)
    bad = TrackPredictions(predictions[1].masks, predictions[1].classes, [0.5, float("nan")])
    with pytest.raises(StlensError, match="video 1: `predictions` has a score"):
        track_ap([predictions[0], bad], targets, 4)
    with pytest.raises(StlensError, match="`resamples`"):
        track_ap_bootstrap(predictions, targets, 4, resamples=-1)


# --- agreement with pycocotools ---------------------------------------------------------------------------------

def _box(rng, height, width) -> tuple[int, int, int, int]:
    y0, x0 = int(rng.integers(0, height - 3)), int(rng.integers(0, width - 3))
    return y0, x0, int(rng.integers(y0 + 2, height + 1)), int(rng.integers(x0 + 2, width + 1))


def _random_set(seed: int, videos: int, frames: int, classes: int, size: int = 16):
    """Random tracks (a box per frame, absent in some frames), a few crowd tracks, predictions that are jittered
    copies (sometimes of the wrong class or missing frames) and false positives; scores rounded to give ties."""
    rng = np.random.default_rng(seed)
    predictions, targets = [], []
    for v in range(videos):
        count = int(rng.integers(1, 5))
        masks = np.zeros((count, frames, size, size), bool)
        for n in range(count):
            present = rng.random(frames) < 0.7
            present[rng.integers(frames)] = True
            for t in np.flatnonzero(present):
                y0, x0, y1, x1 = _box(rng, size, size)
                masks[n, t, y0:y1, x0:x1] = True
        crowd = np.zeros(count, bool)
        if v % 4 == 1:
            crowd[-1] = True
        gt_classes = rng.integers(0, classes, count)
        targets.append(Instances(masks, gt_classes, np.arange(count), crowd))
        pred_masks, pred_classes = [], []
        for n in range(count):
            for _ in range(int(rng.integers(0, 3))):
                copy = np.roll(masks[n], tuple(rng.integers(-1, 2, 2)), axis=(1, 2))
                copy[rng.random(frames) < 0.2] = False
                if not copy.any():
                    continue
                pred_masks.append(copy)
                pred_classes.append(gt_classes[n] if rng.random() < 0.85 else rng.integers(classes))
        for _ in range(int(rng.integers(0, 4))):
            mask = np.zeros((frames, size, size), bool)
            y0, x0, y1, x1 = _box(rng, size, size)
            mask[:, y0:y1, x0:x1] = True
            pred_masks.append(mask)
            pred_classes.append(rng.integers(classes))
        scores = np.round(rng.random(len(pred_masks)), 1)
        stacked = np.stack(pred_masks) if pred_masks else np.zeros((0, frames, size, size), bool)
        predictions.append(TrackPredictions(stacked, np.array(pred_classes, np.int64), scores))
    return predictions, targets


def _coco_eval(predictions, targets, classes, folder):
    """COCOeval(segm) on the clips, each laid out as one image of its frames side by side (the same IoU)."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(track: np.ndarray) -> dict:
        frames, height, width = track.shape
        wide = np.asfortranarray(track.transpose(1, 0, 2).reshape(height, frames * width).astype(np.uint8))
        encoded = mask_utils.encode(wide)
        return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}

    images, annotations, results = [], [], []
    for v, (prediction, target) in enumerate(zip(predictions, targets, strict=True)):
        _, frames, height, width = target.masks.shape
        images.append({"id": v + 1, "height": height, "width": frames * width})
        for n in range(len(target)):
            annotations.append({"id": len(annotations) + 1, "image_id": v + 1,
                                "category_id": int(target.classes[n]) + 1, "segmentation": rle(target.masks[n]),
                                "area": float(target.masks[n].sum()), "iscrowd": int(target.crowd[n])})
        for q in range(len(prediction)):
            results.append({"image_id": v + 1, "category_id": int(prediction.classes[q]) + 1,
                            "segmentation": rle(prediction.masks[q]), "score": float(prediction.scores[q])})
    gt_file, dt_file = folder / "gt.json", folder / "dt.json"
    gt_file.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations,
                                   "categories": [{"id": k + 1, "name": str(k)} for k in range(classes)]}))
    dt_file.write_text(json.dumps(results))
    gt = COCO(str(gt_file))
    evaluation = COCOeval(gt, gt.loadRes(str(dt_file)), iouType="segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return evaluation


@pytest.mark.parametrize(("seed", "frames", "classes"), [(0, 1, 3), (1, 1, 2), (2, 1, 3), (3, 3, 3), (4, 4, 2)])
def test_equals_cocoeval(seed, frames, classes, tmp_path):
    predictions, targets = _random_set(seed, videos=10, frames=frames, classes=classes)
    assert sum(int(t.crowd.sum()) for t in targets) >= 1
    evaluation = _coco_eval(predictions, targets, classes, tmp_path)
    ours = track_ap(predictions, targets, classes)
    stats = evaluation.stats  # [0] AP, [1] AP50, [2] AP75 (area all, maxDets 100); [6] AR1, [7] AR10 (area all)
    for name, index in (("ap", 0), ("ap50", 1), ("ap75", 2), ("ar1", 6), ("ar10", 7)):
        assert ours[name] == pytest.approx(stats[index], abs=1e-6), name
    precision = evaluation.eval["precision"][:, :, :, 0, 2]  # (thresholds, recall points, categories)
    for k in range(classes):
        expected = precision[:, :, k].mean() if (precision[:, :, k] > -1).all() else float("nan")
        assert ours["per_class"][k] == pytest.approx(expected, abs=1e-6, nan_ok=True)
    assert 0 < ours["ap"] < 1 and ours["ar1"] < ours["ar10"]  # a case that tests something


# --- bootstrap over videos --------------------------------------------------------------------------------------

def test_bootstrap_intervals():
    predictions, targets = _random_set(11, videos=14, frames=2, classes=3)
    first = track_ap_bootstrap(predictions, targets, 3, resamples=60, seed=4)
    point = track_ap(predictions, targets, 3)
    for name in trackap.SUMMARY:
        assert first[name] == point[name]
        low, high = first["ci95"][name]
        assert low <= point[name] <= high and low < high, name
    again = track_ap_bootstrap(predictions, targets, 3, resamples=60, seed=4)
    assert again["ci95"] == first["ci95"] and again["per_class_ci95"] == first["per_class_ci95"]
    other = track_ap_bootstrap(predictions, targets, 3, resamples=60, seed=5)
    assert not np.array_equal(other["replicates"]["ap"], first["replicates"]["ap"])
    # a resample is track AP of the resampled list of videos (repeats included)
    index = bootstrap_videos(len(targets), 60, 4)
    assert len(set(index[0].tolist())) < len(targets)  # this resample draws some video twice
    for r in (0, 7):
        direct = track_ap([predictions[i] for i in index[r]], [targets[i] for i in index[r]], 3)
        for name in trackap.SUMMARY:
            assert first["replicates"][name][r] == pytest.approx(direct[name], abs=1e-12), name
        np.testing.assert_allclose(first["replicates"]["per_class"][r], direct["per_class"], atol=1e-12)


def test_matches_added_batch_by_batch_score_as_track_ap():
    predictions, targets = _random_set(12, videos=9, frames=2, classes=3)
    matches = trackap.TrackMatches(3)
    for start in (0, 4, 5):  # batches of 4, 1 and 4 videos
        stop = {0: 4, 4: 5, 5: 9}[start]
        matches.add(predictions[start:stop], targets[start:stop])
    summary, per_class = matches.score()
    direct = track_ap(predictions, targets, 3)
    assert len(matches) == 9 and matches.counts() == direct["counts"]
    for name in trackap.SUMMARY:
        assert summary[name] == pytest.approx(direct[name], abs=1e-12), name
    np.testing.assert_allclose(per_class, direct["per_class"], atol=1e-12)
    picked = np.array([2, 2, 7, 0])  # a resample: video 2 twice
    again = track_ap([predictions[i] for i in picked], [targets[i] for i in picked], 3)
    assert matches.score(picked)[0]["ap"] == pytest.approx(again["ap"], abs=1e-12)
    with pytest.raises(StlensError, match="`num_classes` must be a positive integer"):
        trackap.TrackMatches(0)


def test_bootstrap_without_resamples_has_nan_intervals():
    predictions, targets = _hand_case()
    result = track_ap_bootstrap(predictions, targets, 4, resamples=0)
    assert all(math.isnan(v) for v in result["ci95"]["ap"]) and result["resamples"] == 0


def test_imports_neither_torch_nor_pycocotools():
    import subprocess
    import sys

    code = ("import sys, stlens.measure.trackap; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'pycocotools', 'scipy')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
