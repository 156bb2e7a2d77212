"""What one ``stlens perturb`` pass costs next to one clean evaluation of the same clips (goal: the model work of a
pass with P perturbations ≤ (1 + P) × the clean evaluation's, the clips decoded once), and the synthesis time of
each perturbation beside it.

The clean evaluation is the plain loop perturb itself runs on: the same ``LabelledBatches`` (same clips, batch size
and seed), each batch decoded, moved to the device and passed through the model under inference mode; its decode
seconds and forward seconds are timed apart. The perturb pass is ``stlens.perturb`` with its own timing
(``forward_seconds``, ``decode_seconds``, per perturbation ``synthesis_seconds``). The two alternate ``--repeats``
times (clean, perturb, clean, perturb, …) so that a change in the machine's load hits both; the best of each is
printed, and the ratios.

Usage: .venv/bin/python benchmarks/perturb_cost.py [--model stlens:i3d --weights bundled:i3d-motion]
       [--data "synth:motion?split=test&n=64"] [--batch-size 16] [--repeats 2] [--device cpu]
       [--perturbations DEFAULT]
"""

from __future__ import annotations

import argparse
import time

import torch

import stlens
from stlens.core.device import exact_fp32
from stlens.measure.verb import at_input_spec, resolve_model
from stlens.perturb.perturbations import DEFAULT
from stlens.video.labelled import LabelledBatches, open_clips


def clean_evaluation(handle, data: str, clips: int, batch_size: int, device: str) -> dict[str, float]:
    """Decode and forward every batch once, timing the two apart."""
    labelled = open_clips(at_input_spec(data, handle), handle.input, flow=handle.inputs == 2, task=None)
    count = min(clips, len(labelled))
    module = handle.module.eval().to(device)
    batches = LabelledBatches(labelled, count, batch_size, 0)
    decode = forward = 0.0
    with exact_fp32(True), torch.inference_mode():
        for b in range(len(batches)):
            began = time.perf_counter()
            inputs, _labels = batches[b]
            middle = time.perf_counter()
            inputs = tuple(x.to(device) for x in inputs) if isinstance(inputs, tuple) else inputs.to(device)
            module(*inputs) if isinstance(inputs, tuple) else module(inputs)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            decode += middle - began
            forward += time.perf_counter() - middle
    return {"decode": decode, "forward": forward, "forwards": len(batches), "clips": count}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="stlens:i3d")
    p.add_argument("--weights", default="bundled:i3d-motion")
    p.add_argument("--data", default="synth:motion?split=test&n=64")
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--perturbations", default=",".join(DEFAULT))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    handle = resolve_model(args.model, weights=args.weights, device=args.device)
    chosen = [n for n in args.perturbations.split(",") if n]
    clean, passes = [], []
    for _ in range(args.repeats):
        clean.append(clean_evaluation(handle, args.data, args.clips, args.batch_size, args.device))
        passes.append(stlens.perturb(handle, args.data, perturbations=chosen, clips=args.clips,
                                     batch_size=args.batch_size, bootstrap=0, device=args.device, progress=False))
    best_clean = min(clean, key=lambda c: c["forward"])
    best = min(passes, key=lambda r: r.timing["forward_seconds"])
    timing = best.timing
    budget = (1 + len(chosen)) * best_clean["forward"]
    print(f"{args.model} ({args.weights}) on {args.data}: {best_clean['clips']} clips, batch {args.batch_size}, "
          f"{args.device}, {torch.get_num_threads()} threads, {torch.__version__}; best of {args.repeats}")
    print(f"clean evaluation: decode {best_clean['decode']:.2f} s, model {best_clean['forward']:.2f} s "
          f"({best_clean['forwards']} forwards)")
    print(f"perturb, P = {len(chosen)}: decode {timing['decode_seconds']:.2f} s, "
          f"model {timing['forward_seconds']:.2f} s "
          f"({timing['forwards']} forwards), whole call {timing['seconds']:.2f} s")
    print(f"model work: {timing['forward_seconds'] / best_clean['forward']:.2f}x the clean evaluation's "
          f"(goal <= 1 + P = {1 + len(chosen)}x: {'met' if timing['forward_seconds'] <= budget else 'NOT met'}); "
          f"per forward {timing['forward_seconds'] / timing['forwards'] * 1e3:.0f} ms vs "
          f"{best_clean['forward'] / best_clean['forwards'] * 1e3:.0f} ms")
    print(f"decoding: {timing['decode_seconds'] / max(best_clean['decode'], 1e-9):.2f}x the clean evaluation's "
          f"(decoded once)")
    print(f"{'perturbation':<18}{'synthesis s':>12}{'ms/clip':>10}{'x one clean forward pass':>26}")
    for name, seconds in timing["synthesis_seconds"].items():
        print(f"{name:<18}{seconds:>12.2f}{seconds / best_clean['clips'] * 1e3:>10.1f}"
              f"{seconds / best_clean['forward']:>26.2f}")


if __name__ == "__main__":
    main()
