"""torchcodec against PyAV on the same frames: the clips of ``benchmarks/pair_costs.py``'s plans (Kinetics-like
1280×720 h264, keyframe intervals 250 and 25; sample videos), decoded at the size the pairs need (short side 128).

Prints, per video kind, seconds per video (best of ``--repeats``) for: PyAV clip reads (``open_clip_source``),
torchcodec at full size then resized with OpenCV-free torch bilinear, torchcodec resizing in the decoder
(``transforms=[Resize]``), each with its threads; and the largest pixel difference from PyAV's frames (PyAV's are the
reference: what ``read_clip_source`` has always given). torchcodec needs FFmpeg's shared libraries; PyAV's wheel
bundles them under hashed names, so this runs with ``LD_LIBRARY_PATH`` pointing at links named as torchcodec expects
(see docs/scaling.md). Usage: python benchmarks/torchcodec_eval.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import pair_costs as pc  # noqa: E402

from stlens.video.io import open_clip_source, scaled_size  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torchcodec's num_ffmpeg_threads (0: as many as cores)")
    args = p.parse_args()
    torch.set_num_threads(1)
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    import stlens
    from stlens.video.source import VideoSource

    print("| video | clips' frames | PyAV clip reads (s) | torchcodec + resize in decoder (s) | torchcodec full size "
          "(s) | max |Δ| (resize in decoder) | pixels ≠ | max |Δ| full size rgb24 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, (videos, pairs) in pc.sources(["k400-g250", "k400-g25", "sample"]).items():
        made = stlens.make_pairs(VideoSource(kind, tuple(videos)), pc.SPEC, pairs, seed=0)
        for _v, (path, _length, clips) in pc.plan_clips(made).items():
            wanted = sorted({int(i) for _, _, idx in clips for i in idx})
            best = {"pyav": 1e9, "tc-resize": 1e9, "tc-full": 1e9}
            for _ in range(args.repeats):
                began = time.perf_counter()
                frames = open_clip_source(path, short_side=pc.SPEC.resize)
                ours = frames[wanted]
                frames.close()
                best["pyav"] = min(best["pyav"], time.perf_counter() - began)
                height, width = ours.shape[1:3]
                began = time.perf_counter()
                dec = VideoDecoder(str(path), dimension_order="NHWC", num_ffmpeg_threads=args.threads,
                                   transforms=[Resize((height, width))])
                theirs = dec.get_frames_at(wanted).data.numpy()
                best["tc-resize"] = min(best["tc-resize"], time.perf_counter() - began)
                began = time.perf_counter()
                dec = VideoDecoder(str(path), dimension_order="NHWC", num_ffmpeg_threads=args.threads)
                full = dec.get_frames_at(wanted).data
                best["tc-full"] = min(best["tc-full"], time.perf_counter() - began)
            whole = open_clip_source(path)  # PyAV at full size, the reference for the full-size comparison
            ref_full = whole[wanted]
            whole.close()
            diff = np.abs(theirs.astype(int) - ours.astype(int))
            diff_full = np.abs(full.numpy().astype(int) - ref_full.astype(int))
            print(f"| {kind}/{path.name} | {len(wanted)} | {best['pyav']:.3f} | {best['tc-resize']:.3f} | "
                  f"{best['tc-full']:.3f} | {diff.max()} | {np.mean(diff > 0):.1%} | {diff_full.max()} |", flush=True)
            assert scaled_size(ref_full.shape[2], ref_full.shape[1], pc.SPEC.resize) == (width, height)


if __name__ == "__main__":
    main()
