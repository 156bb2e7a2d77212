"""Labelled clips (for training and unit masking): synthetic worlds (rendered on the fly) and labelled video sources
(annotation files).

A ``LabelledClips`` gives ``len()``, ``num_classes`` and ``batch(indices, rng) -> (inputs, labels)`` where inputs is a
float tensor (B, 3, T, H, W) normalized with the model's ``InputSpec`` — or, for two-stream models, a tuple
``(rgb, flow)`` with flow (B, 2, T − 1, H, W) encoded as in ``stlens.video.flow.encode_flow``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from stlens.core.spec import InputSpec
from stlens.errors import StlensError
from stlens.video.io import ClipFrames, clip_or_whole, close_frames, open_clip_source, read_clip_source
from stlens.video.sampling import sample_clip, segment_of, to_model_input
from stlens.video.source import VideoSource

log = logging.getLogger("stlens")


class LabelledClips(Protocol):
    num_classes: int

    def __len__(self) -> int: ...

    def batch(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor | tuple, torch.Tensor]: ...


class LabelledBatches(torch.utils.data.Dataset):
    """Item b: the inputs and targets of clips [b·size, (b+1)·size) of ``clips``, drawn with the generator (seed, b),
    so that worker processes give the same clips; a batch that fails is ``core.workers.Failed`` (raised by the main
    process as one line naming the clips)."""

    def __init__(self, clips: LabelledClips, count: int, size: int, seed: int):
        self.clips, self.count, self.size, self.seed = clips, count, size, seed

    def __len__(self) -> int:
        return -(-self.count // self.size)

    def __getitem__(self, b: int):
        from stlens.core.workers import guarded

        indices = np.arange(b * self.size, min(self.count, (b + 1) * self.size))
        return guarded(lambda: self.clips.batch(indices, np.random.default_rng((self.seed, b))),
                       f"clips {indices[0]}..{indices[-1]}")


def _stack(inputs: list) -> torch.Tensor | tuple:
    if isinstance(inputs[0], tuple):
        return tuple(torch.stack([x[i] for x in inputs]) for i in range(len(inputs[0])))
    return torch.stack(inputs)


@dataclass
class SynthClips:
    """Clips of a ``stlens.synth`` world, rendered when asked (deterministic per clip index)."""

    dataset: object
    spec: InputSpec
    flow: bool = False
    task: str = "classify"  # segment: the clip's object masks (T, H, W) in {0, 1}; instances: its ``Instances``

    def __post_init__(self) -> None:
        if (self.dataset.frames, self.dataset.size) != (self.spec.frames, self.spec.size):
            raise StlensError(
                f"{self.dataset.spec} renders {self.dataset.frames} frames at {self.dataset.size} px but the model "
                f"expects {self.spec.frames} frames at {self.spec.size} px: pass frames=/size= in the synth spec "
                f"or `frames`/`size` to the model")
        self.num_classes = int(self.dataset.num_classes)
        if self.task == "segment" and getattr(self.dataset, "task", "classify") != "segment":
            raise StlensError(f"`task` segment needs a segmentation world, where the camera moves too: add "
                              f"task=segment to {self.dataset.spec.split('?')[0]} (e.g. synth:motion?task=segment)")
        world, own = self.dataset.spec.split("?")[0], getattr(self.dataset, "task", "classify")
        if self.task == "instances" and own != "instances":
            raise StlensError(f"`task` instances needs an instance world: add task=instances to {world} "
                              f"(e.g. synth:motion?task=instances)")
        if own == "instances" and self.task != "instances":
            raise StlensError(f"`task` {self.task}: {world} with task=instances gives instance targets; use task "
                              f"instances (or None: the data's own task)")

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self) -> tuple[int, ...]:
        return tuple(self.dataset.labels)

    def item(self, index: int) -> tuple[torch.Tensor | tuple, int | torch.Tensor]:
        from stlens.video.flow import encode_flow

        clip = self.dataset[int(index)]
        rgb = to_model_input(clip.frames, self.spec)
        if self.task == "instances":
            target = clip.instances
        elif self.task == "segment":
            target = torch.from_numpy(np.asarray(clip.masks, dtype=np.float32))
        else:
            target = int(clip.label)
        if not self.flow:
            return rgb, target
        flow = clip.flow() if callable(clip.flow) else clip.flow
        encoded = torch.from_numpy(np.ascontiguousarray(encode_flow(flow))).permute(3, 0, 1, 2).float()
        return (rgb, encoded), target

    @property
    def render_parts(self):
        """``render_parts(index) -> (background uint8 (T, H, W, 3), object pixels bool (T, H, W))`` of a classify
        world (``SynthDataset.render_parts``; ``stlens perturb``'s background-only and object-only), else None."""
        return self.dataset.render_parts if self.task == "classify" and hasattr(self.dataset, "render_parts") else None

    def batch(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor | tuple, torch.Tensor]:
        items = [self.item(i) for i in indices]
        if self.task == "instances":  # clips hold different numbers of instances: a list, one per clip
            return _stack([x for x, _ in items]), [y for _, y in items]
        if self.task == "segment":
            return _stack([x for x, _ in items]), torch.stack([y for _, y in items])
        return _stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.long)


@dataclass
class VideoClips:
    """Clips of a labelled ``VideoSource``: a random clip of each video per draw (videos without a label are left
    out). A video is read clip by clip (``open_clip_source``: only the frames a clip needs are decoded, the frames of
    a whole decode bit for bit; a video whose frames do not come out of a seek as they should is decoded whole), and
    the last ``cache_size`` videos stay open. ``augment`` adds a random crop instead of the centre crop.

    Where the source gives a video a (start, end) segment (Diving48), its clips lie inside frames [start, end) (end
    exclusive, as in ``clip_indices``); videos whose segment is shorter than a clip are left out with a warning and
    listed in ``skipped``. ``num_classes`` counts the labels of the whole source."""

    source: VideoSource
    spec: InputSpec
    augment: bool = False
    cache_size: int = 64
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False)
    skipped: list[dict[str, str]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if not self.source.labels or all(label is None for label in self.source.labels):
            raise StlensError(f"{self.source.spec} has no labels, and this needs labelled clips: they come "
                              f"from an annotation file (Kinetics CSV, SSv2, Diving48, UCF101, mmaction2 "
                              f"lists), classes:ROOT class folders, davis:/moca: masks, ytvis: instances or a synth: "
                              f"world")
        kept = [(v, int(y), segment_of(self.source, i))
                for i, (v, y) in enumerate(zip(self.source.videos, self.source.labels, strict=True)) if y is not None]
        self.num_classes = max(max(y for _, y, _ in kept) + 1, len(self.source.classes))
        self.skipped = [{"source": str(v), "reason": f"its segment [{s[0]}, {s[1]}) is shorter than the clip "
                                                    f"({s[1] - s[0]} < {self.spec.frames} frames)"}
                        for v, _, s in kept if s is not None and s[1] - s[0] < self.spec.frames]
        if self.skipped:
            log.warning("%d of %d labelled videos of %s left out: %s (first: %s)", len(self.skipped), len(kept),
                        self.source.spec, self.skipped[0]["reason"], self.skipped[0]["source"])
            kept = [k for k in kept if k[2] is None or k[2][1] - k[2][0] >= self.spec.frames]
            if not kept:
                raise StlensError(f"{self.source.spec}: every labelled video has a segment shorter than the clip "
                                  f"({self.spec.frames} frames)")
        self.videos = [v for v, _, _ in kept]
        self._labels = [y for _, y, _ in kept]
        self._segments = [s for _, _, s in kept]

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def labels(self) -> tuple[int, ...]:
        return tuple(self._labels)

    def _frames(self, index: int, whole: bool = False) -> np.ndarray | ClipFrames:
        """Video ``index`` opened for clip reads (``open_clip_source``: only the frames a clip needs are decoded,
        the same frames as a whole decode), or decoded whole (``whole``; kept in the cache in place of the reader)."""
        path = self.videos[index]
        cached = self._cache.get(path)
        if cached is not None and (not whole or isinstance(cached, np.ndarray)):
            self._cache.move_to_end(path)
            return cached
        frames = (read_clip_source if whole else open_clip_source)(path, short_side=self.spec.resize)
        if len(frames) < self.spec.frames:
            raise StlensError(f"{path}: shorter than a clip ({len(frames)} < {self.spec.frames} frames)")
        segment = self._segments[index]
        if segment is not None and min(segment[1], len(frames)) - segment[0] < self.spec.frames:
            inside = max(0, min(segment[1], len(frames)) - segment[0])
            raise StlensError(f"{path}: only {inside} frames of its segment [{segment[0]}, {segment[1]}) are in the "
                              f"video ({len(frames)} frames), fewer than a clip ({self.spec.frames} frames)")
        if cached is not None:  # a reader replaced by the whole decode
            close_frames(cached)
        self._cache[path] = frames
        self._cache.move_to_end(path)
        if len(self._cache) > self.cache_size:
            close_frames(self._cache.popitem(last=False)[1])
        return frames

    def item(self, index: int, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        index = int(index)
        state = rng.bit_generator.state

        def draw(whole: bool) -> np.ndarray:
            rng.bit_generator.state = state  # after a failed clip read, the same draw again
            return sample_clip(self._frames(index, whole), self.spec, rng, segment=self._segments[index],
                               random_crop=self.augment)[1]

        clip = clip_or_whole(draw, str(self.videos[index]))
        return to_model_input(clip, self.spec), self._labels[index]

    def batch(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self.item(i, rng) for i in indices]
        return _stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.long)


def class_names(labelled: object) -> list[str] | None:
    """The data's class names by label (a synth world's, an annotation file's labels, ``classes:`` folder names), or
    None when the data does not name its classes."""
    owner = getattr(labelled, "dataset", None) or getattr(labelled, "source", None)
    names = getattr(owner, "classes", None) or getattr(labelled, "classes", None)
    return [str(n) for n in names] if names else None


def heldout_spec(data: str) -> str | None:
    """The default held-out data for a training source: a synth world's ``test`` split; none for video sources."""
    if not data.startswith("synth:"):
        return None
    base, _, query = data.partition("?")
    options = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
    options["split"] = "test"
    options["n"] = str(min(int(options.get("n", 512)), 512)) if options.get("n", "").isdigit() else "512"
    return base + "?" + "&".join(f"{k}={v}" for k, v in options.items())


def _instance_clips(data: str, source, spec: InputSpec) -> LabelledClips:
    """An instance source that gives ``(inputs, list[Instances])`` batches itself; its clips must have the model's
    frames and size."""
    shape = (getattr(source, "frames", spec.frames), getattr(source, "size", spec.size))
    if shape != (spec.frames, spec.size):
        raise StlensError(f"{data} gives {shape[0]} frames at {shape[1]} px but the model expects {spec.frames} "
                          f"frames at {spec.size} px: pass `frames`/`size` to the model or change the data")
    return source


def open_clips(data: str, spec: InputSpec, flow: bool = False, augment: bool = False,
               task: str | None = "classify") -> LabelledClips:
    """Training clips from a data spec (``synth:...`` or a labelled source: an annotation file, ``classes:ROOT``);
    ``task`` ``segment``: the targets are per-frame masks (B, T, H, W); ``instances``: a ``list[Instances]`` (a synth
    world with task=instances, ytvis:, or any source with ``task == "instances"`` that makes its own batches); None:
    the data's own task (segment or instances for a synth world with that task, segment for davis:/moca: sources,
    instances for ytvis:, classify otherwise)."""
    from stlens.video.sources import open_data

    source = open_data(data)
    if data.startswith("ytvis:"):  # video instance segmentation (YouTube-VIS, OVIS)
        from stlens.video.ytvis import instance_clips

        return instance_clips(source, spec, flow=flow, augment=augment, task=task)
    if data.startswith("synth:"):
        return SynthClips(source, spec, flow=flow, task=task or getattr(source, "task", "classify"))
    if getattr(source, "task", None) == "instances" and callable(getattr(source, "batch", None)):
        return _instance_clips(data, source, spec)  # an instance source that is its own labelled clips
    if task == "instances":
        raise StlensError(f"{data}: `task` instances needs instance tracks: an instance source such as "
                          f"synth:motion?task=instances or ytvis:ROOT")
    if getattr(source, "tracks", None) is not None:  # davis:/moca: sources with per-frame masks
        from stlens.video.maskclips import MaskClips

        return MaskClips(source, spec, flow=flow, augment=augment)
    if task == "segment":
        raise StlensError(f"{data}: `task` segment needs masks: a synth: world with task=segment, davis:ROOT or "
                          f"moca:ROOT")
    if flow:
        raise StlensError(f"{data}: labelled clips for a two-stream model (RGB + flow) come from synth: worlds "
                          f"(ground-truth flow) only")
    return VideoClips(source, spec, augment=augment)
