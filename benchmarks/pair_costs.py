"""Where the time of one pair goes, per source kind, next to its decode floor.

For each source kind (``sample:`` mp4s; a Kinetics-like 10 s 1280×720 h264 video written here with PyAV at x264's
defaults, keyframe interval 250 with B-frames, and a keyframe-interval-25 variant; a folder of JPEG frames written
here; a synth world) the pairs of one plan (``VideoPairs`` with the default ``palette`` stylizer and r3d_18's input:
16 frames every 2, short side 128, crop 112) are made twice:

- **pair**: by the library itself (``stlens.make_pairs(...)``, every pair in index order, each video decoded as the
  library decodes it), the time per pair;
- **stages**: by a replica of the same steps with a timer around each: open (container or file list), seek, decode
  (the codec's work; for JPEG files, reading and decompressing), colour conversion and resize (to RGB at the short
  side the spec resizes to), crop (``sample_clip``), stylize (``draw_style``, both members of a dynamic pair), shuffle
  (``frame_shuffle``), to float (``to_model_input``), collate (``PairBatch.of`` on batches of 8 pairs), transfer (to
  the device: n/a on a CPU), and flow (``dis`` on the clip's frames, as ``TwoStreamPairs`` computes it; reported
  apart, not part of the pair).

The **decode floor** is the time to decode exactly the frames the plan's clips need, at the size they need
(converted and resized by libswscale in ``to_ndarray``), with the seeks they need: for each video, one open, then
per clip (in frame order) a seek to the keyframe before its first frame unless the decoder is already at or past that
keyframe, decoding forward and converting only the clip's frames. The keyframes and the frames' timestamps are read
beforehand (not timed). For a JPEG folder: reading and resizing only the clip's files. ratio = pair / floor (the goal:
≤ 1.3 on video files and frame folders, flow excluded).

``--path full`` replicates whole-video decoding (each video decoded to its end and every frame converted, as
``decode_video`` did before clip reads); ``--path clip`` times the library's clip reader (``open_clip_source``;
what ``VideoPairs`` uses when it exists). Both may be given (``--path full,clip``) for a side-by-side run.

Timings are the best of ``--repeats`` runs, with one torch/OpenCV thread (PyAV's decoder threads as the library asks
for them). Usage: python benchmarks/pair_costs.py [--kinds sample,k400-g250,k400-g25,jpeg,synth] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import stlens
from stlens.core.pair import DYNAMIC, STATIC, Pair, frame_shuffle
from stlens.core.spec import InputSpec
from stlens.measure.loading import PairBatch
from stlens.video import io
from stlens.video.io import IMAGE_SUFFIXES, scaled_size
from stlens.video.sampling import clip_indices, sample_clip, to_model_input
from stlens.video.source import VideoSource
from stlens.video.sources import sample_videos
from stlens.video.stylizers import draw_style, get_stylizer

WORK = Path(os.environ.get("STLENS_BENCH_DIR", "/tmp/stlens-pair-costs"))
SPEC = InputSpec()  # r3d_18's: 16 frames every 2, short side 128, crop 112
READER = ("open", "seek", "decode", "convert+resize")  # the stages a ClipFrames times itself
STAGES = ("open", "seek", "decode", "convert+resize", "crop", "stylize", "shuffle", "to float", "collate", "transfer")


def now() -> float:
    return time.perf_counter()


# --- the benchmark's own data -------------------------------------------------------------------------------------


def kinetics_like(path: Path, gop: int | None, seconds: int = 10, fps: int = 30) -> Path:
    """A 10 s 1280×720 h264 video at x264's defaults (``gop`` None: keyframe interval 250, B-frames), a slow pan over
    a textured scene with a moving object and some noise (so that the encoder has real work)."""
    if path.exists():
        return path
    import av
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    scene = cv2.resize(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8), (1280 + 400, 720 + 200),
                       interpolation=cv2.INTER_CUBIC)
    detail = rng.integers(0, 40, scene.shape, dtype=np.uint8)
    scene = cv2.add(scene, detail)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        for t in range(seconds * fps):
            x, y = int(400 * t / (seconds * fps)), int(100 + 80 * np.sin(t / 40))
            frame = scene[y:y + 720, x:x + 1280].copy()
            cx, cy = 200 + 3 * t, 360 + int(150 * np.sin(t / 15))
            cv2.circle(frame, (cx % 1280, cy), 60, (250, 240, 30), -1)
            frame = cv2.add(frame, rng.integers(0, 6, frame.shape, dtype=np.uint8))
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.rename(path)
    return path


def copies(video: Path, folder: Path, n: int) -> list[Path]:
    """``n`` names for one video (symbolic links): each is its own video to the plan, so its clips lie elsewhere."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        link = folder / f"v{k}{video.suffix if video.is_file() else ''}"
        if not link.exists():
            link.symlink_to(video.resolve())
        out.append(link)
    return out


def jpeg_folder(video: Path, folder: Path) -> Path:
    """Every frame of ``video`` as a JPEG file (quality 90) in ``folder``."""
    if folder.is_dir() and any(folder.iterdir()):
        return folder
    from PIL import Image

    tmp = folder.with_name(folder.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for k, frame in enumerate(io.decode_video(video)):
        Image.fromarray(frame).save(tmp / f"{k:05d}.jpg", quality=90)
    tmp.rename(folder)
    return folder


def sources(kinds: list[str]) -> dict[str, tuple[list[Path], int]]:
    """kind → (videos, pairs per factor)."""
    out = {}
    for kind in kinds:
        if kind == "sample":
            out[kind] = (sample_videos(), 8)
        elif kind in ("k400-g250", "k400-g25"):
            video = kinetics_like(WORK / f"{kind}.mp4", None if kind == "k400-g250" else 25)
            out[kind] = (copies(video, WORK / f"{kind}-videos", 3), 3)
        elif kind == "jpeg":
            folder = jpeg_folder(kinetics_like(WORK / "k400-g25.mp4", 25), WORK / "jpeg-frames")
            out[kind] = (copies(folder, WORK / "jpeg-videos", 3), 3)
    return out


# --- the plan's clips -----------------------------------------------------------------------------------------------


def plan_clips(made) -> dict[int, tuple[Path, int, list[tuple[int, int, np.ndarray]]]]:
    """video → (path, length, [(factor, i, frame indices)]) for every pair of the plan, drawn as the pair maker
    draws them (the clip's indices are the first draw of the pair's generator)."""
    out = {}
    for share in made.plan()._plan:
        path = made.source.videos[share.video]
        length = share.probe[0]
        clips = []
        for i in range(share.pairs):
            for factor in (DYNAMIC, STATIC):
                rng = np.random.default_rng((made.seed, share.video, factor, i))
                clips.append((factor, i, clip_indices(length, SPEC.frames, SPEC.stride, rng)))
        out[share.video] = (path, length, clips)
    return out


def video_index(path: Path) -> tuple[list[int], list[int]]:
    """Frame timestamps in presentation order, and the frame indices of the keyframes (demuxed, no decoding)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size and p.pts is not None]
    pts = sorted(p for p, _ in packets)
    where = {p: k for k, p in enumerate(pts)}
    return pts, sorted(where[p] for p, key in packets if key)


# --- the floor --------------------------------------------------------------------------------------------------------


def floor_video(path: Path, clips: list[np.ndarray], index: tuple[list[int], list[int]], t: dict) -> None:
    """Decode exactly the clips' frames, at the spec's size, with the seeks they need (see the module docstring)."""
    import bisect

    import av

    pts, keys = index
    where = {p: k for k, p in enumerate(pts)}
    began = now()
    container = av.open(str(path))
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    t["open"] += now() - began
    position = -1  # the last frame decoded (presentation order); -1: none
    decoder = None
    for n in sorted({int(i) for idx in clips for i in idx}):  # every frame any clip needs, once
        key = keys[bisect.bisect_right(keys, n) - 1]
        if decoder is None or key > position + 1:
            began = now()
            container.seek(pts[key], stream=stream, backward=True)
            decoder = container.decode(stream)
            t["seek"] += now() - began
        while position < n:
            began = now()
            frame = next(decoder)
            t["decode"] += now() - began
            position = where[frame.pts]
        began = now()
        width, height = scaled_size(frame.width, frame.height, SPEC.resize)
        frame.to_ndarray(format="rgb24", width=width, height=height)
        t["convert+resize"] += now() - began
    container.close()


def floor_folder(path: Path, clips: list[np.ndarray], t: dict) -> None:
    from PIL import Image

    began = now()
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    t["open"] += now() - began
    for i in sorted({int(i) for idx in clips for i in idx}):  # every frame any clip needs, once
        began = now()
        image = Image.open(files[i]).convert("RGB")
        t["decode"] += now() - began
        began = now()
        image.resize(scaled_size(image.width, image.height, SPEC.resize), Image.BILINEAR)
        t["convert+resize"] += now() - began


# --- the stages ----------------------------------------------------------------------------------------------------


def full_decode(path: Path, t: dict) -> np.ndarray:
    """``decode_video``/``read_frame_folder`` as they were before clip reads, with timers: the whole video."""
    if path.is_dir():
        from PIL import Image

        began = now()
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:io.MAX_FRAMES]
        t["open"] += now() - began
        frames = []
        for file in files:
            began = now()
            image = Image.open(file).convert("RGB")
            t["decode"] += now() - began
            began = now()
            frames.append(np.asarray(image.resize(scaled_size(image.width, image.height, SPEC.resize),
                                                  Image.BILINEAR)))
            t["convert+resize"] += now() - began
        return np.stack(frames)
    import av

    began = now()
    container = av.open(str(path))
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    decoder = container.decode(stream)
    t["open"] += now() - began
    frames = []
    while len(frames) < io.MAX_FRAMES:
        began = now()
        frame = next(decoder, None)
        t["decode"] += now() - began
        if frame is None:
            break
        began = now()
        width, height = scaled_size(frame.width, frame.height, SPEC.resize)
        frames.append(frame.to_ndarray(format="rgb24", width=width, height=height))
        t["convert+resize"] += now() - began
    container.close()
    return np.stack(frames)


def stages(plan: dict, path_kind: str, stylizers, t: dict, flow_t: list) -> int:
    """Make the plan's pairs step by step with timers (``path_kind``: ``full`` or ``clip``); returns the pairs."""
    from stlens.video.flow import compute_flow

    pairs: list[Pair] = []
    for v, (path, _length, clips) in plan.items():
        if path_kind == "full":
            frames = full_decode(path, t)
        else:
            frames = io.open_clip_source(path, SPEC.resize, timings=t)
            if hasattr(frames, "expect"):  # as VideoPairs does: the decoder keeps the frames of later clips it passes
                frames.expect(np.unique(np.concatenate([c for _, _, c in clips])))
        for factor, i, _ in clips:
            rng = np.random.default_rng((0, v, factor, i))
            reading = sum(t[k] for k in READER)
            began = now()
            idx, clip = sample_clip(frames, SPEC, rng)  # (clip reads decode here: their time is the reader's)
            t["crop"] += now() - began - (sum(t[k] for k in READER) - reading)
            began = now()
            first, seed_a = draw_style(clip, stylizers, rng)
            second = draw_style(clip, stylizers, rng, avoid=seed_a)[0] if factor == DYNAMIC else None
            t["stylize"] += now() - began
            if factor == STATIC:
                began = now()
                second = frame_shuffle(first, rng)
                t["shuffle"] += now() - began
            began = now()
            pairs.append(Pair(factor, to_model_input(first, SPEC), to_model_input(second, SPEC), str(path)))
            t["to float"] += now() - began
            began = now()
            compute_flow(frames[idx], "dis")
            flow_t[0] += now() - began
        if path_kind == "clip" and hasattr(frames, "close"):
            frames.close()
    began = now()
    for b in range(0, len(pairs), 8):
        PairBatch.of(pairs[b:b + 8])
    t["collate"] += now() - began
    return len(pairs)


# --- one source kind --------------------------------------------------------------------------------------------------


def measure(kind: str, videos: list[Path], pairs: int, paths: list[str], repeats: int) -> dict:
    source = VideoSource(kind, tuple(videos))
    made = stlens.make_pairs(source, SPEC, pairs, seed=0)
    plan = plan_clips(made)
    count = sum(len(c) for _, _, c in plan.values())
    indexes = {v: video_index(p) for v, (p, _, _) in plan.items() if p.is_file()}
    stylizers = get_stylizer("palette")
    best: dict = {}

    def keep(name: str, value) -> None:
        if name not in best or value["total"] < best[name]["total"]:
            best[name] = value

    for _ in range(repeats):
        fresh = stlens.make_pairs(source, SPEC, pairs, seed=0)
        fresh.plan()
        began = now()
        for _pair in fresh:
            pass
        keep("pair", {"total": (now() - began) / count})
        t = defaultdict(float)
        for v, (path, _, clips) in plan.items():
            idx = [c for _, _, c in clips]
            if path.is_file():
                floor_video(path, idx, indexes[v], t)
            else:
                floor_folder(path, idx, t)
        keep("floor", {**{k: x / count for k, x in t.items()}, "total": sum(t.values()) / count})
        for path_kind in paths:
            t, flow_t = defaultdict(float), [0.0]
            stages(plan, path_kind, stylizers, t, flow_t)
            keep(path_kind, {**{k: x / count for k, x in t.items()}, "total": sum(t.values()) / count,
                             "flow": flow_t[0] / count})
    return {"best": best, "count": count, "videos": len(plan),
            "frames": {v: length for v, (_, length, _) in plan.items()}}


def measure_synth(repeats: int) -> dict:
    made = stlens.make_pairs(stlens.open_data("synth:motion?split=test&n=16&seed=0"), SPEC.with_overrides(16, 64),
                             8, seed=0)
    best = float("inf")
    for _ in range(repeats):
        began = now()
        count = sum(1 for _ in made)
        best = min(best, (now() - began) / count)
    return {"best": {"pair": {"total": best}}, "count": count}


def decoder_options(path: Path, repeats: int) -> dict[str, float]:
    """What io.py's decoder settings give on the whole of one video: threads (``thread_type`` AUTO against none)
    and resizing in ``to_ndarray`` (libswscale) against converting at full size then resizing with OpenCV."""
    import av
    import cv2

    out = {}
    for name, threads, in_decoder in (("AUTO threads, resize in to_ndarray", True, True),
                                      ("one thread, resize in to_ndarray", False, True),
                                      ("AUTO threads, full-size rgb24 + cv2.resize", True, False),
                                      ("AUTO threads, decode only (no conversion)", True, None)):
        best = float("inf")
        for _ in range(repeats):
            began = now()
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                if threads:
                    stream.thread_type = "AUTO"
                for frame in container.decode(stream):
                    width, height = scaled_size(frame.width, frame.height, SPEC.resize)
                    if in_decoder:
                        frame.to_ndarray(format="rgb24", width=width, height=height)
                    elif in_decoder is False:
                        cv2.resize(frame.to_ndarray(format="rgb24"), (width, height), interpolation=cv2.INTER_LINEAR)
            best = min(best, now() - began)
        out[name] = best
    return out


def table(kind: str, result: dict, paths: list[str]) -> str:
    best = result["best"]
    if "floor" not in best:
        return (f"| {kind} | {1e3 * best['pair']['total']:.1f} ms/pair (rendered; no decode: no floor) |\n")
    cols = ["floor"] + paths
    lines = [f"**{kind}** ({result['videos']} videos, {result['count']} pairs; frames per video: "
             f"{sorted(set(result['frames'].values()))})", "",
             "| stage (ms/pair) | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for stage in STAGES:
        cells = []
        for col in cols:
            if stage == "transfer":
                cells.append("n/a (CPU)")
            else:
                cells.append(f"{1e3 * best[col].get(stage, 0.0):.1f}")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| sum of stages | " + " | ".join(f"{1e3 * best[c]['total']:.1f}" for c in cols) + " |")
    lines.append("| flow (dis, apart) | – | " + " | ".join(f"{1e3 * best[c]['flow']:.1f}" for c in paths) + " |")
    pair, floor = best["pair"]["total"], best["floor"]["total"]
    lines += ["", f"pair (library, end to end): **{1e3 * pair:.1f} ms**, decode floor **{1e3 * floor:.1f} ms**, "
                  f"ratio **{pair / floor:.2f}**", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kinds", default="sample,k400-g250,k400-g25,jpeg,synth")
    p.add_argument("--path", default="full" if not hasattr(io, "open_clip_source") else "full,clip")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--options", action="store_true", help="also time io.py's decoder settings on the k400 video")
    p.add_argument("--pair-only", action="store_true",
                   help="only the pair and its floor, one line per kind (to compare two versions of stlens: run "
                        "with each on PYTHONPATH, alternately)")
    args = p.parse_args()
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)
    kinds = args.kinds.split(",")
    paths = args.path.split(",")
    for kind, (videos, pairs) in sources([k for k in kinds if k != "synth"]).items():
        if args.pair_only:
            best = measure(kind, videos, pairs, [], args.repeats)["best"]
            pair, floor = best["pair"]["total"], best["floor"]["total"]
            print(f"{kind}: pair {1e3 * pair:.1f} ms, floor {1e3 * floor:.1f} ms, ratio {pair / floor:.2f} "
                  f"({stlens.__file__})", flush=True)
            continue
        print(table(kind, measure(kind, videos, pairs, paths, args.repeats), paths), flush=True)
    if "synth" in kinds and not args.pair_only:
        print(table("synth", measure_synth(args.repeats), paths), flush=True)
    if args.options:
        print("\n| whole k400-g250 video (300 frames, 1280×720 → 228×128) | s |\n|---|---:|")
        for name, seconds in decoder_options(kinetics_like(WORK / "k400-g250.mp4", None), args.repeats).items():
            print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
