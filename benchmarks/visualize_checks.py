"""The "done when" experiments of ``stlens visualize`` on the bundled checkpoints (docs/visualize.md):

1. i3d-motion class visualizations move in their class direction (mean OpenCV DIS flow within 45°, ≥ 6 of 8);
2. i3d-appearance class visualizations show the class colour rather than a direction;
3. the mean frame-to-frame change falls monotonically as λ_T rises over 0, 1, 10, 100;
4. optimized channel activations are ≥ 10× the channel's mean activation on natural clips;
5. twostream-motion with joint RGB + flow: the optimized flow of each class follows its direction.

    python benchmarks/visualize_checks.py [--steps 150] [--only motion,appearance,sweep,twostream,variants]
                                          [--out runs/visualize_checks]

``variants`` (not run by default) repeats check 1 with λ_T = 10, λ_T = 100 and 300 steps.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from stlens.core.handle import takes_two_inputs
from stlens.models.bundled import list_bundled
from stlens.models.registry import load_model
from stlens.synth import open_synth
from stlens.synth.textures import FAMILIES, texture_bank
from stlens.video.flow import encode_flow, flow_clip
from stlens.video.sampling import to_model_input
from stlens.visualize import visualize
from stlens.visualize.natural import angle_error

IMAGES = Path("docs/images")


def class_direction(k: int) -> float:
    return 360.0 * k / 8


def model_tuning(model: str, weights: str, n: int = 160) -> dict:
    """The model's own direction preference: mean logit of each class over synth:motion test clips of each true
    direction; a class's preferred direction is the one with the highest mean logit. Also the accuracy."""
    handle = load_model(model, weights)
    two = takes_two_inputs(handle.module)
    data = open_synth(f"synth:motion?split=test&n={n}&seed=0")
    clips = [data[i] for i in range(n)]
    labels = np.array([c.label for c in clips])
    inputs = [torch.stack([to_model_input(c.frames, handle.input) for c in clips])]
    if two:
        inputs.append(torch.stack([torch.from_numpy(flow_clip(encode_flow(c.flow()))) for c in clips]))
    with torch.no_grad():
        logits = handle.module(*inputs).numpy()
    table = np.stack([logits[labels == d].mean(axis=0) for d in range(8)])  # (true direction, class)
    preferred = [class_direction(int(d)) for d in table.argmax(axis=0)]
    return {"accuracy": float((logits.argmax(1) == labels).mean()), "preferred_deg": preferred,
            "mean_logit_by_direction": np.round(table, 2).tolist()}


def direction_check(result, key: str, preferred: list[float] | None = None) -> dict:
    rows, hits, agree = [], 0, 0
    for k, t in enumerate(result.targets):
        flow = t.stats[key]
        err = angle_error(flow["direction_deg"], class_direction(k))
        hits += err <= 45.0
        if preferred is not None:
            agree += angle_error(flow["direction_deg"], preferred[k]) <= 45.0
        rows.append({"class": k, "expected_deg": class_direction(k), "measured_deg": round(flow["direction_deg"], 1),
                     "model_preferred_deg": None if preferred is None else preferred[k],
                     "error_deg": round(err, 1), "speed_px": round(flow["speed"], 3),
                     "mean_magnitude_px": round(flow["mean_magnitude"], 3), "objective": round(t.value, 3),
                     "natural_mean": round(t.natural["mean"], 3) if t.natural else None})
    return {"within_45": int(hits), "within_45_of_model_preferred": int(agree) if preferred else None,
            "of": len(rows), "classes": rows}


def colour_check(result) -> dict:
    """Nearest appearance family of each class visualization by the cosine between centred mean colours (colour −
    127.5), for the whole video and for its 10% most saturated pixels (distance from grey; the object), and the rank
    of the class's own family among the eight by the latter."""
    means = texture_bank(64).means[: len(FAMILIES)] - 127.5
    rows, hits, salient_hits, top2 = [], 0, 0, 0

    def cosines(colour: np.ndarray) -> np.ndarray:
        return means @ colour / (np.linalg.norm(means, axis=1) * np.linalg.norm(colour) + 1e-9)

    for k, t in enumerate(result.targets):
        pixels = t.rgb.reshape(-1, 3).astype(np.float64)
        whole = cosines(pixels.mean(axis=0) - 127.5)
        chroma = np.linalg.norm(pixels - pixels.mean(axis=1, keepdims=True), axis=1)
        salient = pixels[chroma >= np.percentile(chroma, 90)].mean(axis=0)
        cos = cosines(salient - 127.5)
        rank = int((cos > cos[k]).sum()) + 1
        hits += int(np.argmax(whole)) == k
        salient_hits += rank == 1
        top2 += rank <= 2
        flow = t.stats["video_flow_opencv_dis"]
        rows.append({"class": k, "family": FAMILIES[k], "nearest_family_whole": FAMILIES[int(np.argmax(whole))],
                     "nearest_family_salient": FAMILIES[int(np.argmax(cos))], "own_family_rank": rank,
                     "salient_rgb": [round(float(c), 1) for c in salient], "flow_speed_px": round(flow["speed"], 3),
                     "flow_direction_deg": round(flow["direction_deg"], 1)})
    return {"nearest_family_whole": hits, "nearest_family_salient": salient_hits, "own_family_in_top2": top2,
            "of": len(rows), "classes": rows}


def docs_image(source: Path, target: Path) -> None:
    """A small copy of a mosaic for the docs: every other frame column kept, 128-colour palette PNG."""
    from PIL import Image

    image = Image.open(source).convert("RGB")
    image = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS) \
        if image.width > 1200 else image
    image.quantize(128).save(target, optimize=True)


def run(name: str, out: Path, **kwargs):
    began = time.perf_counter()
    result = visualize(out=out / name, **kwargs)
    print(f"{name}: {time.perf_counter() - began:.0f} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--only", default="motion,appearance,sweep,twostream")
    parser.add_argument("--out", default="runs/visualize_checks")
    args = parser.parse_args()
    out, only = Path(args.out), set(args.only.split(","))
    bundled = set(list_bundled())
    report: dict = {"steps": args.steps}
    path = out / "checks.json"
    if path.is_file():
        report = {**json.loads(path.read_text()), "steps": args.steps}
    common = dict(steps=args.steps, seed=0)
    IMAGES.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")

    if "motion" in only and "i3d-motion" in bundled:
        r = run("i3d_motion_classes", out, model="stlens:i3d", weights="bundled:i3d-motion", target="class:0-7",
                **common)
        tuning = model_tuning("stlens:i3d", "bundled:i3d-motion")
        report["i3d_motion_tuning"] = tuning
        report["i3d_motion_classes"] = direction_check(r, "video_flow_opencv_dis", tuning["preferred_deg"])
        docs_image(out / "i3d_motion_classes" / "mosaic.png", IMAGES / "visualize_i3d_motion_classes.png")
        save()
    if "appearance" in only and "i3d-appearance" in bundled:
        r = run("i3d_appearance_classes", out, model="stlens:i3d", weights="bundled:i3d-appearance",
                target="class:0-7", **common)
        report["i3d_appearance_classes"] = {**colour_check(r), "direction": direction_check(r, "video_flow_opencv_dis")}
        docs_image(out / "i3d_appearance_classes" / "mosaic.png", IMAGES / "visualize_i3d_appearance_classes.png")
        save()
    if "sweep" in only and "i3d-motion" in bundled:
        r = run("i3d_motion_sweep", out, model="stlens:i3d", weights="bundled:i3d-motion", layer="stage3",
                target="channel:0-1", temporal_reg=[0.0, 1.0, 10.0, 100.0], **common)
        rows = [{"target": t.name, "lambda_t": t.temporal_reg,  # checks.json keeps its "lambda_t" key
                 "frame_change_grey": round(t.stats["frame_change_grey"], 3), "objective": round(t.value, 3),
                 "natural_mean": round(t.natural["mean"], 4),
                 "ratio": round(t.value / t.natural["mean"], 1) if t.natural["mean"] > 0 else None}
                for t in r.targets]
        monotonic = {}
        for name in dict.fromkeys(t.name for t in r.targets):
            changes = [row["frame_change_grey"] for row in rows if row["target"] == name]
            monotonic[name] = all(a > b for a, b in zip(changes, changes[1:], strict=False))
        report["temporal_sweep"] = {"rows": rows, "monotonic": monotonic}
        docs_image(out / "i3d_motion_sweep" / "lambda_t=0" / "mosaic.png", IMAGES / "visualize_sweep_lt0.png")
        docs_image(out / "i3d_motion_sweep" / "lambda_t=100" / "mosaic.png", IMAGES / "visualize_sweep_lt100.png")
        save()
    if "twostream" in only and "twostream-motion" in bundled:
        r = run("twostream_motion_classes", out, model="stlens:twostream", weights="bundled:twostream-motion",
                target="class:0-7", **common)
        tuning = model_tuning("stlens:twostream", "bundled:twostream-motion")
        report["twostream_tuning"] = tuning
        report["twostream_classes"] = {"input_flow": direction_check(r, "input_flow", tuning["preferred_deg"]),
                                       "rgb_flow": direction_check(r, "video_flow_opencv_dis")}
        docs_image(out / "twostream_motion_classes" / "mosaic.png", IMAGES / "visualize_twostream_classes.png")
        save()
    if "variants" in only and "i3d-motion" in bundled:
        variants = {}
        for name, extra in [("lt10", dict(temporal_reg=10.0)), ("lt100", dict(temporal_reg=100.0)),
                            ("steps300", dict(steps=300))]:
            settings = {**common, **extra}
            r = run(f"variant_{name}", out, model="stlens:i3d", weights="bundled:i3d-motion", target="class:0-7",
                    **settings)
            check = direction_check(r, "video_flow_opencv_dis")
            variants[name] = {"settings": settings, "within_45": check["within_45"],
                              "measured_deg": [c["measured_deg"] for c in check["classes"]],
                              "speed_px": [c["speed_px"] for c in check["classes"]]}
        report["i3d_motion_variants"] = variants
    save()
    print(json.dumps({k: (v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items() if kk != "classes"
                                                             and kk != "rows"}) for k, v in report.items()}, indent=1))


if __name__ == "__main__":
    main()
