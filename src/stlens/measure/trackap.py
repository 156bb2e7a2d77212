"""Track AP of video instance segmentation (the YouTube-VIS protocol; numpy only).

A predicted track and a ground-truth track are compared by their spatio-temporal mask IoU,
Σ_t |P_t ∩ G_t| / Σ_t |P_t ∪ G_t| (a frame where a track is absent contributes its empty mask); against a crowd
track the union is replaced by the prediction's area, Σ_t |P_t ∩ G_t| / Σ_t |P_t| (the COCO rule). An empty
denominator gives IoU 0.

AP follows COCO / YouTube-VIS exactly, with videos in the place of images:

- per video and category, the predictions of that category are sorted by score (stable, descending) and only the
  first 100 are kept;
- at each IoU threshold 0.50:0.05:0.95 each prediction in turn is matched to the still-unmatched non-crowd track of
  its category with the highest IoU ≥ the threshold (on a tie the later track, as pycocotools does); failing that,
  a prediction with IoU ≥ the threshold with a crowd track of its category is ignored; otherwise it is a false
  positive;
- per category the kept predictions of all videos are sorted by score (stable: video order, then rank in the video);
  precision at the 101 recall points linspace(0, 1, 101) is read from the monotone envelope of the precision curve;
- a category's AP is the mean over thresholds and recall points (maxDets 100); ``ap`` is the mean over the categories
  that have non-crowd tracks (a category without any is left out, as COCO's −1 is); ``ap50``/``ap75`` use one
  threshold; ``ar1``/``ar10`` are the recall with the first 1 / 10 predictions per video and category, averaged
  over thresholds and categories.

Only the area range "all" is computed (no small / medium / large split). AP is a statistic of the whole set of
clips, not a mean of per-clip scores, so its intervals (``track_ap_bootstrap``) recompute it on bootstrap resamples
of videos; each video's matches are computed once and reused by every resample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stlens.core.instances import Instances, TrackPredictions
from stlens.errors import StlensError
from stlens.measure.estimate import percentile_interval

__all__ = ["IOU_THRESHOLDS", "MAX_DETS", "RECALL_POINTS", "SUMMARY", "TrackMatches", "bootstrap_videos",
           "interval", "track_ap", "track_ap_bootstrap", "track_iou"]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)
#: the summary numbers of a result, in order
SUMMARY = ("ap", "ap50", "ap75", "ar1", "ar10")
_T50, _T75 = 0, 5  # IOU_THRESHOLDS[0] == 0.5, IOU_THRESHOLDS[5] == 0.75
_CHUNK = 1 << 24  # elements of one float32 block in track_iou (counts below 2**24 are exact in float32)


def track_iou(predicted: np.ndarray, target: np.ndarray, crowd: np.ndarray | None = None) -> np.ndarray:
    """(Q, N) spatio-temporal IoU of predicted masks (Q, T, H, W) with target masks (N, T, H, W); ``crowd`` (N,)
    marks the targets compared by intersection over the prediction's area. 0 where the denominator is 0."""
    predicted, target = np.asarray(predicted, dtype=bool), np.asarray(target, dtype=bool)
    if predicted.shape[1:] != target.shape[1:]:
        raise StlensError(f"`predicted` masks {predicted.shape[1:]} and `target` masks {target.shape[1:]} differ in "
                          "shape")
    pixels = int(np.prod(predicted.shape[1:]))
    p, g = predicted.reshape(len(predicted), pixels), target.reshape(len(target), pixels)
    crowd = np.zeros(len(g), bool) if crowd is None else np.asarray(crowd, dtype=bool).reshape(-1)
    inter = np.zeros((len(p), len(g)), np.float64)
    if len(p) and len(g):
        step = max(1, min(p.shape[1], _CHUNK // (len(p) + len(g))))
        for start in range(0, p.shape[1], step):
            block = slice(start, start + step)
            inter += p[:, block].astype(np.float32) @ g[:, block].astype(np.float32).T
    area_p = p.sum(1, dtype=np.int64).astype(np.float64)
    area_g = g.sum(1, dtype=np.int64).astype(np.float64)
    denominator = np.where(crowd[None, :], area_p[:, None], area_p[:, None] + area_g[None, :] - inter)
    return np.divide(inter, denominator, out=np.zeros_like(inter), where=denominator > 0)


@dataclass
class _Matches:
    """One video's predictions of one category, best first (at most 100): ``scores`` (D,), ``tp`` and ``ignored``
    (thresholds, D) bool; ``tracks``: the video's non-crowd tracks of the category."""

    scores: np.ndarray
    tp: np.ndarray
    ignored: np.ndarray
    tracks: int


def _match(iou: np.ndarray, crowd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of predictions (rows, best first) to tracks (columns) at every threshold: (tp, ignored)."""
    thresholds, count = len(IOU_THRESHOLDS), len(iou)
    tp = np.zeros((thresholds, count), bool)
    ignored = np.zeros((thresholds, count), bool)
    regular = ~crowd
    for t, threshold in enumerate(IOU_THRESHOLDS):
        free = regular.copy()
        for d in range(count):
            candidates = np.flatnonzero(free & (iou[d] >= threshold))
            if candidates.size:
                best = candidates[iou[d, candidates] == iou[d, candidates].max()][-1]
                free[best] = False
                tp[t, d] = True
            elif np.any(crowd & (iou[d] >= threshold)):
                ignored[t, d] = True
    return tp, ignored


def _video_matches(prediction: TrackPredictions, target: Instances) -> dict[int, _Matches]:
    """Category → the video's matches, for every category with a prediction or a track in the video."""
    iou = track_iou(prediction.masks, target.masks, target.crowd)
    found = {}
    for category in np.union1d(prediction.classes, target.classes).tolist():
        rows = np.flatnonzero(prediction.classes == category)
        rows = rows[np.argsort(-prediction.scores[rows], kind="stable")][: MAX_DETS[-1]]
        columns = np.flatnonzero(target.classes == category)
        tp, ignored = _match(iou[np.ix_(rows, columns)], target.crowd[columns])
        found[int(category)] = _Matches(prediction.scores[rows], tp, ignored, int((~target.crowd[columns]).sum()))
    return found


class _Pool:
    """The matches of one category over all videos, concatenated in video order, so that any list of videos (a
    bootstrap resample) is scored by gathering their slices."""

    def __init__(self, videos: Sequence[dict[int, _Matches]], category: int):
        empty = _Matches(np.zeros(0), np.zeros((len(IOU_THRESHOLDS), 0), bool),
                         np.zeros((len(IOU_THRESHOLDS), 0), bool), 0)
        parts = [video.get(category, empty) for video in videos]
        lengths = np.array([len(part.scores) for part in parts], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.lengths = lengths
        self.tracks = np.array([part.tracks for part in parts], np.int64)
        self.scores = np.concatenate([part.scores for part in parts] or [np.zeros(0)])
        self.rank = np.concatenate([np.arange(n) for n in lengths] or [np.zeros(0, np.int64)])
        self.tp = np.concatenate([part.tp for part in parts] or [empty.tp], axis=1)
        self.ignored = np.concatenate([part.ignored for part in parts] or [empty.ignored], axis=1)

    def score(self, videos: np.ndarray) -> tuple[float, float, float, np.ndarray] | None:
        """(AP, AP50, AP75, recall at each of MAX_DETS averaged over thresholds) of the category over ``videos``
        (indices, repeats count again), or None when they hold no non-crowd track of it."""
        tracks = int(self.tracks[videos].sum())
        if tracks == 0:
            return None
        lengths = self.lengths[videos]
        total = int(lengths.sum())
        offsets = np.repeat(self.starts[videos] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        rows = offsets + np.arange(total)
        rows = rows[np.argsort(-self.scores[rows], kind="stable")]
        counted = ~self.ignored[:, rows]
        tp = self.tp[:, rows] & counted
        recall = np.array([(tp[:, self.rank[rows] < m].sum(1) / tracks).mean() for m in MAX_DETS])
        tp_sum = np.cumsum(tp, axis=1)
        fp_sum = np.cumsum(~tp & counted, axis=1)
        seen = tp_sum + fp_sum
        precision = np.divide(tp_sum, seen, out=np.zeros(tp_sum.shape), where=seen > 0)
        envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        reached = tp_sum / tracks
        first = (reached[:, :, None] < RECALL_POINTS[None, None, :]).sum(1)  # searchsorted(side="left") per row
        padded = np.concatenate([envelope, np.zeros((len(IOU_THRESHOLDS), 1))], axis=1)
        points = np.take_along_axis(padded, first, axis=1)  # (thresholds, recall points); 0 beyond the curve
        means = points.mean(1)
        return float(means.mean()), float(means[_T50]), float(means[_T75]), recall


def _summarise(pools: Sequence[_Pool], videos: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """The summary numbers and the per-category AP (NaN without tracks) over ``videos``."""
    per_class = np.full(len(pools), np.nan)
    rows = []
    for category, pool in enumerate(pools):
        found = pool.score(videos)
        if found is not None:
            per_class[category] = found[0]
            rows.append([found[0], found[1], found[2], found[3][0], found[3][1]])
    if not rows:
        return dict.fromkeys(SUMMARY, float("nan")), per_class
    means = np.mean(rows, axis=0)
    return {name: float(value) for name, value in zip(SUMMARY, means, strict=True)}, per_class


def _check(predictions: Sequence[TrackPredictions], targets: Sequence[Instances], num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise StlensError(f"`num_classes` must be a positive integer, got {num_classes!r}")
    if len(predictions) != len(targets):
        raise StlensError(f"`predictions` has {len(predictions)} videos but `targets` has {len(targets)}")
    for i, (prediction, target) in enumerate(zip(predictions, targets, strict=True)):
        if not isinstance(prediction, TrackPredictions):
            raise StlensError(f"`predictions[{i}]` must be a TrackPredictions, got {type(prediction).__name__}")
        if not isinstance(target, Instances):
            raise StlensError(f"`targets[{i}]` must be an Instances, got {type(target).__name__}")
        if prediction.masks.shape[1:] != target.masks.shape[1:]:
            raise StlensError(f"video {i}: `predictions` masks are (T, H, W) = {prediction.masks.shape[1:]} but "
                              f"`targets` masks are {target.masks.shape[1:]}")
        for name, classes in (("predictions", prediction.classes), ("targets", target.classes)):
            outside = classes[(classes < 0) | (classes >= num_classes)]
            if outside.size:
                raise StlensError(f"video {i}: `{name}` has class {int(outside[0])} outside [0, `num_classes`="
                                  f"{num_classes})")
        if not np.isfinite(prediction.scores).all():
            raise StlensError(f"video {i}: `predictions` has a score that is not finite")


def _pools(predictions: Sequence[TrackPredictions], targets: Sequence[Instances], num_classes: int) -> list[_Pool]:
    _check(predictions, targets, num_classes)
    videos = [_video_matches(p, t) for p, t in zip(predictions, targets, strict=True)]
    return [_Pool(videos, category) for category in range(num_classes)]


def _counts(predictions: Sequence[TrackPredictions], targets: Sequence[Instances], num_classes: int) -> dict:
    regular = np.zeros(num_classes, np.int64)
    for target in targets:
        regular += np.bincount(target.classes[~target.crowd], minlength=num_classes)
    return {"videos": len(targets), "tracks": int(regular.sum()),
            "crowd": int(sum(int(t.crowd.sum()) for t in targets)),
            "predictions": int(sum(len(p) for p in predictions)),
            "classes_with_tracks": int((regular > 0).sum()), "tracks_per_class": regular.tolist()}


def track_ap(predictions: Sequence[TrackPredictions], targets: Sequence[Instances], num_classes: int) -> dict:
    """YouTube-VIS track AP of the predicted tracks of a set of clips against their ground truth (see the module;
    area range "all" only).

    Returns ``ap``, ``ap50``, ``ap75``, ``ar1``, ``ar10`` (NaN when no category has a non-crowd track),
    ``per_class`` (the AP of each category, NaN for one without non-crowd tracks) and ``counts`` (videos, tracks,
    crowd, predictions, classes_with_tracks, tracks_per_class)."""
    pools = _pools(predictions, targets, num_classes)
    summary, per_class = _summarise(pools, np.arange(len(targets)))
    return {**summary, "per_class": per_class.tolist(), "counts": _counts(predictions, targets, num_classes)}


def bootstrap_videos(videos: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, videos) indices of videos drawn with replacement: the resamples of ``track_ap_bootstrap``."""
    return np.random.default_rng([seed, 0x7AC4A9]).integers(0, videos, size=(resamples, videos))


def interval(samples: np.ndarray) -> list[float]:
    """The 95% percentile interval of bootstrap values (NaN values left out); [NaN, NaN] without a finite one."""
    found = percentile_interval(np.asarray(samples, dtype=float))
    return [float("nan"), float("nan")] if found is None else [float(found[0]), float(found[1])]


class TrackMatches:
    """The matches of a set of videos, added a batch at a time (their masks are not kept), scored as a whole or on
    any resample of the videos: ``track_ap`` and ``track_ap_bootstrap`` streamed, with the same numbers.

    ``add(predictions, targets)`` appends videos (checked as ``track_ap`` checks them); ``score(videos)`` gives the
    summary numbers and the per-category AP over ``videos`` (indices, repeats count again; None: all, in order);
    ``bootstrap(index)`` the replicates over the rows of ``index`` (``bootstrap_videos``)."""

    def __init__(self, num_classes: int):
        _check([], [], num_classes)
        self.num_classes = int(num_classes)
        self.videos: list[dict[int, _Matches]] = []
        self.tracks = np.zeros(self.num_classes, np.int64)
        self.crowd = 0
        self.predictions = 0
        self._pools: list[_Pool] | None = None

    def __len__(self) -> int:
        return len(self.videos)

    def add(self, predictions: Sequence[TrackPredictions], targets: Sequence[Instances]) -> None:
        _check(predictions, targets, self.num_classes)
        for prediction, target in zip(predictions, targets, strict=True):
            self.videos.append(_video_matches(prediction, target))
            self.tracks += np.bincount(target.classes[~target.crowd], minlength=self.num_classes)
            self.crowd += int(target.crowd.sum())
            self.predictions += len(prediction)
        self._pools = None

    def extend(self, other: TrackMatches) -> None:
        """Append ``other``'s videos after these (another process's share of the videos, in rank order)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot join matches of {other.num_classes} classes to {self.num_classes}")
        self.videos.extend(other.videos)
        self.tracks += other.tracks
        self.crowd += other.crowd
        self.predictions += other.predictions
        self._pools = None

    def counts(self) -> dict:
        """As ``track_ap``'s ``counts``."""
        return {"videos": len(self.videos), "tracks": int(self.tracks.sum()), "crowd": self.crowd,
                "predictions": self.predictions, "classes_with_tracks": int((self.tracks > 0).sum()),
                "tracks_per_class": self.tracks.tolist()}

    def score(self, videos: np.ndarray | None = None) -> tuple[dict[str, float], np.ndarray]:
        if self._pools is None:
            self._pools = [_Pool(self.videos, category) for category in range(self.num_classes)]
        chosen = np.arange(len(self.videos)) if videos is None else np.asarray(videos, dtype=np.int64)
        return _summarise(self._pools, chosen)

    def bootstrap(self, index: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """({name: (R,) values}, (R, num_classes) per-category AP) over the R resamples of ``index`` (R, videos)."""
        values = {name: np.full(len(index), np.nan) for name in SUMMARY}
        classes = np.full((len(index), self.num_classes), np.nan)
        for r, videos in enumerate(index):
            found, classes[r] = self.score(videos)
            for name in SUMMARY:
                values[name][r] = found[name]
        return values, classes


def track_ap_bootstrap(predictions: Sequence[TrackPredictions], targets: Sequence[Instances], num_classes: int,
                       resamples: int = 1000, seed: int = 0) -> dict:
    """``track_ap`` with 95% percentile intervals from recomputing it on ``resamples`` bootstrap resamples of the
    videos (``bootstrap_videos``; a video drawn twice counts twice).

    Adds to ``track_ap``'s result ``ci95`` ({name: [low, high]} for ap, ap50, ap75, ar1, ar10), ``per_class_ci95``
    ([low, high] per category), ``resamples``, ``seed`` and ``replicates`` ({name: (resamples,) array} and
    ``per_class``: (resamples, num_classes)); a resample without any track of a category gives NaN there, left out
    of the interval; an interval without any finite value is [NaN, NaN]."""
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 0:
        raise StlensError(f"`resamples` must be a non-negative integer, got {resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise StlensError(f"`seed` must be a non-negative integer, got {seed!r}")
    matches = TrackMatches(num_classes)
    matches.add(predictions, targets)
    summary, per_class = matches.score()
    index = bootstrap_videos(len(targets), resamples, seed) if len(targets) else np.zeros((0, 0), np.int64)
    values, classes = matches.bootstrap(index)
    if not len(targets):
        values = {name: np.full(resamples, np.nan) for name in SUMMARY}
        classes = np.full((resamples, num_classes), np.nan)
    return {**summary, "per_class": per_class.tolist(), "counts": matches.counts(),
            "ci95": {name: interval(values[name]) for name in SUMMARY},
            "per_class_ci95": [interval(classes[:, k]) for k in range(num_classes)],
            "resamples": int(resamples), "seed": int(seed), "replicates": {**values, "per_class": classes}}
