"""Throughput, speed-up and memory benchmark of ``stlens.measure`` on CPU.

Measured side by side in one run:

(a) engine overhead: ``stlens.measure`` vs bare ``module(x)`` inference on the same in-memory batches of pairs;
(b) speed-up over the reference protocol (one truncated forward per stage, the two videos of a pair in separate
    forwards, latents kept in memory, estimator at the end);
(c) end to end from the sample videos (decoding and stylizing included), and a bf16 vs fp32 comparison on a tiny
    config (bf16 is pathologically slow on CPUs without AVX512_BF16/AMX);
(d) peak RSS of measuring 200 vs 2000 pairs, each in a fresh subprocess.

Usage::

    .venv/bin/python benchmarks/measure_throughput.py                # defaults, ~7-8 min on a 2-core AVX2 CPU
    .venv/bin/python benchmarks/measure_throughput.py --skip-bf16    # without the bf16 comparison
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import queue
import resource
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import stlens
from stlens.core.device import cpu_has_native_bf16
from stlens.core.pair import Pair
from stlens.measure.layer import estimate_layer
from stlens.measure.moments import PairedMoments
from stlens.measure.run import batches, run_forward

MODEL = "torchvision:r3d_18"
DEFAULT_JSON = "runs/bench/measure_throughput.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--frames", type=int, default=8, help="clip length for (a), (b), (c)")
    p.add_argument("--size", type=int, default=112, help="crop size for (a), (b), (c)")
    p.add_argument("--pairs", type=int, default=16, help="pairs per factor for (a), (b), (c)")
    p.add_argument("--batch-size", type=int, default=4, help="pairs per forward (2x clips)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates of the engine runs")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of engine and bare in (a) (best kept)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--skip-bf16", action="store_true", help="skip the bf16 vs fp32 comparison in (c)")
    p.add_argument("--bf16-frames", type=int, default=4)
    p.add_argument("--bf16-size", type=int, default=32)
    p.add_argument("--bf16-pairs", type=int, default=8, help="pairs per factor of the bf16 comparison")
    p.add_argument("--bf16-timeout", type=float, default=60.0,
                   help="skip bf16 when one bf16 forward of one batch takes longer than this (s)")
    p.add_argument("--skip-memory", action="store_true", help="skip the peak-RSS part (d)")
    p.add_argument("--memory-pairs", default="200,2000", help="total pairs of the two memory runs (d)")
    p.add_argument("--json", default=DEFAULT_JSON, help="where to write the numbers")
    # hidden: child processes
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--bf16-probe-child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------------------- helpers


LOADS: list[float] = []


def rule(title: str) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    LOADS.append(load)
    print(f"\n{'=' * 100}\n{title}\n{'=' * 100}\n  [1-min load average {load:.2f}]", flush=True)


def maxrss_mb() -> float:
    """Peak RSS of this process so far (ru_maxrss is in KiB on Linux, bytes on macOS).

    On Linux ru_maxrss survives fork + exec: a child started from this (large) process reports at least the parent's
    RSS at fork time, so children use ``hwm_mb`` (VmHWM, per address space, fresh after exec) as well."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def hwm_mb() -> float | None:
    """VmHWM (peak resident set of the current address space) from /proc/self/status, or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
    except OSError:
        pass
    return []


def percents(result) -> dict[str, dict[str, float]]:
    return {r.layer: {"dynamic": r.percent["dynamic"], "static": r.percent["static"]} for r in result.layers}


def scores(result) -> dict[str, dict[str, float]]:
    return {r.layer: dict(r.score) for r in result.layers}


def max_percent_diff(p: dict[str, dict[str, float]], q: dict[str, dict[str, float]]) -> float:
    return max(abs(p[layer][k] - q[layer][k]) for layer in p for k in ("dynamic", "static"))


def timed_measure(handle, pairs, args, **kwargs):
    kwargs = {"batch_size": args.batch_size, "bootstrap": args.bootstrap, "progress": False, **kwargs}
    tick = time.perf_counter()
    result = stlens.measure(handle, pairs, "default", **kwargs)
    return result, time.perf_counter() - tick


def bare_pass(module: nn.Module, pairs: list[Pair], batch_size: int) -> float:
    """Bare inference on the same batches as the engine: stack a's then b's, one forward, no hooks."""
    tick = time.perf_counter()
    with torch.inference_mode():
        for batch in batches(pairs, batch_size):
            x = torch.stack([p.a for p in batch] + [p.b for p in batch])
            module(x)
    return time.perf_counter() - tick


def reference_protocol(module: nn.Module, layers: list[str], pairs: list[Pair], batch_size: int):
    """The reference protocol: per stage a truncated network, a's and b's of a batch in separate forwards, latents
    kept in memory, the estimator (no bootstrap) run at the end. Returns (seconds, per-stage seconds, percents)."""
    children = list(module.named_children())
    names = [name for name, _ in children]
    if names[:len(layers)] != layers:
        raise SystemExit(f"reference protocol expects the default layers {layers} to be the first children {names}")
    tick = time.perf_counter()
    latents: dict[str, dict[str, list[np.ndarray]]] = {}
    stage_seconds: dict[str, float] = {}
    for k, layer in enumerate(layers):
        stage_tick = time.perf_counter()
        trunk = nn.Sequential(*[m for _, m in children[:k + 1]]).eval()
        kept: dict[str, list[np.ndarray]] = {"a": [], "b": [], "factor": []}
        with torch.inference_mode():
            for batch in batches(pairs, batch_size):
                for side in ("a", "b"):
                    x = torch.stack([getattr(p, side) for p in batch])
                    kept[side].append(trunk(x).float().mean(dim=(2, 3, 4)).numpy())
                kept["factor"].append(np.array([p.factor for p in batch]))
        latents[layer] = kept
        stage_seconds[layer] = time.perf_counter() - stage_tick
    out = {}
    for layer, kept in latents.items():
        a, b, factor = (np.concatenate(kept[key]) for key in ("a", "b", "factor"))
        moments = PairedMoments(a.shape[1], bootstrap=0)
        for f in (0, 1):
            moments.update(f, a[factor == f], b[factor == f])
        r = estimate_layer(layer, moments, 0.5)
        out[layer] = {"dynamic": r.percent["dynamic"], "static": r.percent["static"]}
    return time.perf_counter() - tick, stage_seconds, out


# ------------------------------------------------------------------------------------------------------ child modes


class TinyNet(nn.Sequential):
    """Conv3d(3,32,3) → ReLU → Conv3d(32,64,3); taps '0' and '2'. Padding 1: without it two 3x3x3 convolutions
    leave no frames of a 4-frame clip (4 → 2 → error)."""

    def __init__(self):
        super().__init__(nn.Conv3d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv3d(32, 64, 3, padding=1))


def random_pairs(total: int, seed: int = 0):
    """A generator (never a list) of ``total`` random (3, 4, 16, 16) pairs, factors alternating."""
    gen = torch.Generator().manual_seed(seed)
    for i in range(total):
        yield Pair(i % 2, torch.randn(3, 4, 16, 16, generator=gen), torch.randn(3, 4, 16, 16, generator=gen))


def memory_child(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = TinyNet().eval()
    baseline, baseline_ru = hwm_mb(), maxrss_mb()
    tick = time.perf_counter()
    result = stlens.measure(model, random_pairs(args.memory_child), ["0", "2"], batch_size=8,
                            bootstrap=args.bootstrap, progress=False)
    seconds = time.perf_counter() - tick
    peak, peak_ru = hwm_mb(), maxrss_mb()
    print(json.dumps({
        "pairs": args.memory_child, "seconds": round(seconds, 2), "measured": result.meta["pairs"],
        "baseline_mb": round(baseline if baseline is not None else baseline_ru, 1),
        "peak_mb": round(peak if peak is not None else peak_ru, 1), "source": "VmHWM" if peak else "ru_maxrss",
        "ru_maxrss_baseline_mb": round(baseline_ru, 1), "ru_maxrss_peak_mb": round(peak_ru, 1),
    }), flush=True)


def bf16_probe_child(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    handle = stlens.load_model(MODEL, frames=args.bf16_frames, size=args.bf16_size)
    module = handle.module.to(memory_format=torch.channels_last_3d)
    spec = handle.input
    x = torch.randn(2 * args.batch_size, 3, spec.frames, spec.size, spec.size)
    print("READY", flush=True)
    tick = time.perf_counter()
    run_forward(module, x, "bf16")
    print(f"SECONDS {time.perf_counter() - tick:.3f}", flush=True)


def child_command(*extra: str) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), *extra]


def bf16_probe(args: argparse.Namespace) -> tuple[float | None, str]:
    """Time one bf16 forward of one batch of the tiny config in a subprocess, killed after ``--bf16-timeout``."""
    cmd = child_command("--bf16-probe-child", "--threads", str(args.threads), "--batch-size", str(args.batch_size),
                        "--bf16-frames", str(args.bf16_frames), "--bf16-size", str(args.bf16_size))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def reader():
        for line in proc.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    deadline = time.monotonic() + 180.0  # imports and model construction
    seconds: float | None = None
    status = "probe failed"
    try:
        while True:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                break
            if line == "READY":
                deadline = time.monotonic() + args.bf16_timeout
            elif line.startswith("SECONDS"):
                seconds = float(line.split()[1])
                status = "ok"
                break
    except queue.Empty:
        status = f"one bf16 forward took > {args.bf16_timeout:.0f} s (probe killed)"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return seconds, status


# ------------------------------------------------------------------------------------------------------------- parts


def part_a(handle, pairs: list[Pair], args, report: dict) -> dict:
    rule(f"(a) engine overhead: stlens.measure vs bare module(x) on the same {len(pairs)} in-memory pairs")
    module = handle.module.eval()
    n = len(pairs)
    # warm-up: one bare forward and one engine call on the first batch
    bare_pass(module, pairs[:args.batch_size], args.batch_size)
    timed_measure(handle, pairs[:args.batch_size], args, min_pairs=1)
    engine_times, bare_times, engine_forward = [], [], []
    result = None
    for rep in range(args.repeats):
        order = ("engine", "bare") if rep % 2 == 0 else ("bare", "engine")
        for which in order:
            if which == "engine":
                result, seconds = timed_measure(handle, pairs, args)
                engine_times.append(seconds)
                engine_forward.append(result.timing["forward_seconds"])
            else:
                bare_times.append(bare_pass(module, pairs, args.batch_size))
        print(f"  repeat {rep + 1}/{args.repeats}: engine {engine_times[-1]:7.2f} s "
              f"(forward {engine_forward[-1]:.2f} s)   bare {bare_times[-1]:7.2f} s", flush=True)
    engine, bare = min(engine_times), min(bare_times)
    ratio = bare / engine  # = engine throughput / bare throughput
    out = {
        "pairs": n, "clips_per_forward": 2 * args.batch_size, "bootstrap": args.bootstrap,
        "engine_seconds": engine_times, "bare_seconds": bare_times, "engine_forward_seconds": engine_forward,
        "engine_pairs_per_s": n / engine, "bare_pairs_per_s": n / bare, "ratio": ratio, "goal": 0.9,
        "engine_percents": percents(result),
    }
    print(f"  engine  {n / engine:6.2f} pairs/s (best of {args.repeats}: {engine:.2f} s, wall incl. estimator)")
    print(f"  bare    {n / bare:6.2f} pairs/s (best of {args.repeats}: {bare:.2f} s)")
    print(f"  ratio engine/bare throughput = {ratio:.3f}   (goal >= 0.9: {'PASS' if ratio >= 0.9 else 'FAIL'})")
    report["a_engine_overhead"] = out
    return out


def part_b(handle, pairs: list[Pair], args, report: dict, engine: dict) -> None:
    rule("(b) speed-up over the reference protocol (per-stage truncated forwards, a's and b's separately)")
    layers = handle.layers("default")
    print(f"  stages: {', '.join(layers)}; {len(pairs)} pairs; forwards of {args.batch_size} clips", flush=True)
    runs = [reference_protocol(handle.module, layers, pairs, args.batch_size) for _ in range(args.repeats)]
    times = [r[0] for r in runs]
    seconds = min(times)  # best of the same number of repeats as the engine's (a), on both sides
    stages, ref_percents = runs[times.index(seconds)][1:]
    engine_seconds = min(engine["engine_seconds"])
    speedup = seconds / engine_seconds
    median_speedup = float(np.median(times) / np.median(engine["engine_seconds"]))
    diff = max_percent_diff(ref_percents, engine["engine_percents"])
    for layer, s in stages.items():
        print(f"    {layer:<8} {s:7.2f} s")
    print(f"  reference (best of {args.repeats}) {seconds:7.2f} s   engine (a, best of {args.repeats}) "
          f"{engine_seconds:7.2f} s")
    print(f"  speed-up = {speedup:.2f}x best/best, {median_speedup:.2f}x median/median   "
          f"(goal >= 2.5x: {'PASS' if speedup >= 2.5 else 'FAIL'})")
    print(f"  max |reference - engine| dynamic/static % over layers = {diff:.2f} pp (same pairs; batch shapes differ)")
    report["b_reference_speedup"] = {
        "reference_seconds": seconds, "stage_seconds": stages, "engine_seconds": engine_seconds,
        "speedup": speedup, "median_speedup": median_speedup, "reference_seconds_all": times, "goal": 2.5,
        "reference_percents": ref_percents, "max_percent_diff_vs_engine": diff,
    }


def speed_words(reference_s: float, other_s: float) -> str:
    """'2.41x faster' when ``other`` took less time than ``reference``, '3.10x slower' otherwise."""
    return (f"{reference_s / other_s:.2f}x faster" if other_s <= reference_s
            else f"{other_s / reference_s:.2f}x slower")


def part_c_end_to_end(handle, args, report: dict) -> None:
    rule(f"(c) end to end from video files (sample:), fp32, {args.pairs} pairs/factor, decoding + stylizing included")
    pairs = stlens.make_pairs(stlens.open_data("sample:"), handle.input, args.pairs, seed=0)
    result, wall = timed_measure(handle, pairs, args)
    t = result.timing
    outside = 1.0 - t["forward_seconds"] / t["seconds"]
    print(f"  wall {wall:.2f} s (incl. estimator)   timing.seconds {t['seconds']:.2f} s   "
          f"forward_seconds {t['forward_seconds']:.2f} s   {t['pairs_per_second']:.2f} pairs/s")
    print(f"  share outside the forward: {100 * outside:.1f}% of timing.seconds "
          f"({t['seconds'] - t['forward_seconds']:.2f} s decode/stylize/hooks/moments); "
          f"estimator after the loop: {wall - t['seconds']:.2f} s")
    report["c_end_to_end"] = {"wall_seconds": wall, "timing": t, "share_outside_forward": outside,
                              "estimator_seconds": wall - t["seconds"], "pairs": result.meta["pairs"]}


def part_c_bf16(args, report: dict) -> None:
    rule(f"(c) bf16 vs fp32 on a tiny config: {MODEL} frames={args.bf16_frames} size={args.bf16_size}, "
         f"{args.bf16_pairs} pairs/factor")
    native = cpu_has_native_bf16()
    out: dict = {"native_bf16": native, "frames": args.bf16_frames, "size": args.bf16_size,
                 "pairs_per_factor": args.bf16_pairs}
    report["c_bf16"] = out
    if args.skip_bf16:
        print("  skipped (--skip-bf16)")
        out["status"] = "skipped (--skip-bf16)"
        return
    print(f"  probe: one bf16 forward of {2 * args.batch_size} clips in a subprocess "
          f"(killed after {args.bf16_timeout:.0f} s) ...", flush=True)
    probe, status = bf16_probe(args)
    out["probe_seconds"], out["status"] = probe, status
    if probe is None:
        print(f"  {status}: bf16 comparison skipped")
        return
    print(f"  probe: {probe:.2f} s per bf16 forward")
    torch.manual_seed(0)
    handle = stlens.load_model(MODEL, frames=args.bf16_frames, size=args.bf16_size)
    pairs = list(stlens.make_pairs(stlens.open_data("sample:"), handle.input, args.bf16_pairs, seed=0))
    timed_measure(handle, pairs[:args.batch_size], args, min_pairs=1)  # warm-up
    fp32, fp32_s = timed_measure(handle, pairs, args)
    bf16_handle = dataclasses.replace(handle, module=copy.deepcopy(handle.module))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bf16, bf16_s = timed_measure(bf16_handle, pairs, args, precision="bf16")
    for w in caught:
        print(f"  warning from stlens.measure: {w.category.__name__}: {w.message}")
    weight = next(bf16_handle.module.parameters())
    mutated = weight.ndim == 5 and weight.is_contiguous(memory_format=torch.channels_last_3d) \
        and not weight.is_contiguous()
    p32, p16 = percents(fp32), percents(bf16)
    diff = max_percent_diff(p32, p16)
    score_diff = max_percent_diff(scores(fp32), scores(bf16))
    print(f"  fp32 {fp32_s:7.2f} s ({len(pairs) / fp32_s:.2f} pairs/s)   bf16 {bf16_s:7.2f} s "
          f"({len(pairs) / bf16_s:.2f} pairs/s)   bf16 is {speed_words(fp32_s, bf16_s)} than fp32")
    print(f"  {'layer':<8}{'dyn fp32':>10}{'dyn bf16':>10}{'sta fp32':>10}{'sta bf16':>10}")
    for layer in p32:
        print(f"  {layer:<8}{p32[layer]['dynamic']:>10.1f}{p16[layer]['dynamic']:>10.1f}"
              f"{p32[layer]['static']:>10.1f}{p16[layer]['static']:>10.1f}")
    print(f"  max |fp32 - bf16| dynamic/static % over layers = {diff:.2f} pp "
          f"(max |diff| of the underlying scores: {score_diff:.2e})")
    if mutated:
        print("  note: measure(precision='bf16') left the caller's module in channels_last_3d (in-place .to())")
    out.update({"fp32_seconds": fp32_s, "bf16_seconds": bf16_s, "slowdown": bf16_s / fp32_s,
                "fp32_percents": p32, "bf16_percents": p16, "max_percent_diff": diff,
                "max_score_diff": score_diff, "warnings": [str(w.message) for w in caught],
                "module_left_channels_last": bool(mutated)})


def part_d(args, report: dict) -> None:
    sizes = [int(s) for s in args.memory_pairs.split(",")]
    rule(f"(d) peak RSS, fresh subprocess each: tiny Conv3d net, layers 0,2, (3,4,16,16) pairs from a generator, "
         f"bootstrap={args.bootstrap}")
    print("  (ru_maxrss of a child started from this process inherits this process's RSS through fork+exec on Linux,"
          " so the peak is read from VmHWM; ru_maxrss shown for reference)")
    runs = []
    for n in sizes:
        cmd = child_command("--memory-child", str(n), "--bootstrap", str(args.bootstrap), "--threads",
                            str(args.threads))
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            print(f"  {n} pairs: child failed (rc {done.returncode}): {done.stderr.strip()[-500:]}")
            runs.append({"pairs": n, "error": done.stderr.strip()[-2000:]})
            continue
        child = json.loads(done.stdout.strip().splitlines()[-1])
        runs.append(child)
        print(f"  {n:>6} pairs: peak RSS {child['peak_mb']:8.1f} MB ({child['source']}; after imports "
              f"{child['baseline_mb']:.1f} MB, +{child['peak_mb'] - child['baseline_mb']:.1f} MB during measure) "
              f"in {child['seconds']:.1f} s   [ru_maxrss {child['ru_maxrss_peak_mb']:.1f} MB]", flush=True)
    out: dict = {"runs": runs, "goal_mb": 50}
    ok = [r for r in runs if "peak_mb" in r]
    if len(ok) >= 2:
        diff = ok[-1]["peak_mb"] - ok[0]["peak_mb"]
        out["peak_diff_mb"] = diff
        out["ru_maxrss_peak_diff_mb"] = ok[-1]["ru_maxrss_peak_mb"] - ok[0]["ru_maxrss_peak_mb"]
        print(f"  peak difference {ok[-1]['pairs']} vs {ok[0]['pairs']} pairs: {diff:+.1f} MB "
              f"(goal within 50 MB: {'PASS' if abs(diff) <= 50 else 'FAIL'})")
    report["d_memory"] = out


# -------------------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        memory_child(args)
        return 0
    if args.bf16_probe_child:
        bf16_probe_child(args)
        return 0

    start = time.perf_counter()
    native = cpu_has_native_bf16()
    report: dict = {
        "config": {k: v for k, v in vars(args).items() if k not in ("memory_child", "bf16_probe_child")},
        "env": {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                "native_bf16": native, "torch": torch.__version__, "stlens": stlens.__version__,
                "python": platform.python_version(), "simd_flags": cpu_flags()},
    }
    rule("stlens measure throughput benchmark")
    env = report["env"]
    print(f"  CPU: {env['cpu']} ({env['cpu_count']} cores), torch threads {env['torch_threads']}, "
          f"flags: {' '.join(env['simd_flags']) or '?'}")
    print(f"  native bf16 (AVX512_BF16/AMX): {'yes' if native else 'NO - bf16 runs a slow fallback path'}")
    print(f"  torch {env['torch']}, stlens {env['stlens']}, python {env['python']}")
    print(f"  model {MODEL} (random init) frames={args.frames} size={args.size}, {args.pairs} pairs/factor, "
          f"batch {args.batch_size} pairs = {2 * args.batch_size} clips/forward, bootstrap {args.bootstrap}, "
          f"best of {args.repeats}")
    print("  defaults sized to fit well under 10 min on 2 cores: 8 frames (r3d_18 default 16), 16 pairs/factor, "
          f"bf16 only on {args.bf16_frames}x{args.bf16_size}x{args.bf16_size} clips, 8 pairs/factor")
    print("  timings are wall-clock on a possibly shared machine: expect noise", flush=True)

    torch.manual_seed(0)
    handle = stlens.load_model(MODEL, frames=args.frames, size=args.size)
    tick = time.perf_counter()
    pairs = list(stlens.make_pairs(stlens.open_data("sample:"), handle.input, args.pairs, seed=0))
    build = time.perf_counter() - tick
    print(f"  built {len(pairs)} pairs from sample: in {build:.2f} s (held in memory for (a) and (b))", flush=True)
    report["pairs_build_seconds"] = build

    engine = part_a(handle, pairs, args, report)
    part_b(handle, pairs, args, report, engine)
    part_c_end_to_end(handle, args, report)
    part_c_bf16(args, report)
    if args.skip_memory:
        report["d_memory"] = {"status": "skipped (--skip-memory)"}
    else:
        part_d(args, report)

    total = time.perf_counter() - start
    report["total_seconds"] = total
    rule("summary")
    a, b = report["a_engine_overhead"], report["b_reference_speedup"]
    print(f"  (a) engine/bare throughput ratio   {a['ratio']:.3f}   (goal >= 0.9)")
    print(f"  (b) speed-up over reference         {b['speedup']:.2f}x  (goal >= 2.5x)")
    c = report["c_end_to_end"]
    print(f"  (c) end to end {c['wall_seconds']:.1f} s, {100 * c['share_outside_forward']:.1f}% outside the forward")
    bf = report["c_bf16"]
    if "slowdown" in bf:
        print(f"      bf16 {speed_words(bf['fp32_seconds'], bf['bf16_seconds'])} than fp32, max |diff| "
              f"{bf['max_percent_diff']:.2f} pp "
              f"(native bf16: {bf['native_bf16']})")
    else:
        print(f"      bf16: {bf.get('status')}")
    d = report["d_memory"]
    if "peak_diff_mb" in d:
        print(f"  (d) peak RSS difference {d['peak_diff_mb']:+.1f} MB   (goal within 50 MB)")
    report["load_averages"] = LOADS
    print(f"  total {total:.0f} s; 1-min load averages at the section starts: {' '.join(f'{x:.1f}' for x in LOADS)}")
    print(f"  (this benchmark alone accounts for ~{args.threads}; clearly more means other processes competed for "
          f"the {os.cpu_count()} cores and the timings are noisy)")
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"  numbers written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
