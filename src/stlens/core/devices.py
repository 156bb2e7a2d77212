"""Where and how a verb computes: ``device`` (``resolve_device``), ``precision`` (``resolve_precision``,
``exact_fp32``) and ``workers`` (``resolve_workers``), checked before any work by every verb (measure, track,
visualize, stylize, pairs check, ...)."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import torch

from stlens.errors import StlensError

DEVICE_FORMS = "auto, cpu, cuda, cuda:K or mps"


def resolve_device(device: str | torch.device) -> torch.device:
    """A ``--device`` value → the device to run on: ``auto`` is the current CUDA GPU when CUDA is available, else the
    CPU; ``cuda`` is the current CUDA GPU (``cuda:0`` unless changed), ``cuda:K`` GPU K, ``mps`` Apple's GPU.

    Raises a ``StlensError`` naming ``--device`` for an unknown device or one this machine does not have."""
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    match = re.fullmatch(r"(cpu|mps|cuda)(?::(\d+))?", text)
    if match is None or (match[2] is not None and match[1] != "cuda"):
        raise StlensError(f"--device: unknown device '{device}'; use {DEVICE_FORMS}")
    if match[1] == "cpu":
        return torch.device("cpu")
    if match[1] == "mps":
        if not torch.backends.mps.is_available():
            raise StlensError("--device mps: Apple's Metal (MPS) backend is not available on this machine; use "
                              "--device cpu or auto")
        return torch.device("mps")
    if not torch.cuda.is_available():
        why = ("this PyTorch is built without CUDA" if torch.version.cuda is None
               else "no CUDA GPU is visible (driver, CUDA_VISIBLE_DEVICES?)")
        raise StlensError(f"--device {text}: CUDA is not available: {why} (torch {torch.__version__}); use "
                          f"--device cpu or auto")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if match[2] is None else int(match[2])
    if index >= count:
        raise StlensError(f"--device {text}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)


PRECISIONS = ("fp32", "bf16", "fp16", "auto")


def cpu_has_native_bf16(unknown: bool = True) -> bool:
    """True when the CPU has bf16 instructions (AVX512_BF16 or AMX); without them bf16 convolutions are very slow.
    ``unknown``: the answer when it cannot be told (no /proc/cpuinfo: not Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return unknown
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _cuda_native_bf16(device: torch.device) -> bool:
    """True when the CUDA GPU ``device`` computes in bf16 natively (Ampere and later), not by emulation."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """A ``--precision`` value → the precision used on ``device``: ``fp32``, ``bf16`` or ``fp16``.

    ``auto`` picks bf16 on CUDA GPUs with native bf16 and on CPUs with native bf16 (AVX512_BF16 or AMX; a CPU that
    cannot be checked counts as without), fp32 otherwise (and on mps). fp16 is CUDA autocast only; bf16 runs on CPUs
    and CUDA GPUs. Anything else raises a ``StlensError`` naming ``--precision``."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise StlensError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if _cuda_native_bf16(device) else "fp32"
        if device.type == "cpu":
            return "bf16" if cpu_has_native_bf16(unknown=False) else "fp32"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise StlensError(f"--precision fp16 is CUDA autocast only, and the device is {device}; use fp32"
                          + (" or bf16" if device.type == "cpu" else "") + " (or --device cuda)")
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise StlensError(f"--precision bf16 runs on CPUs and CUDA GPUs, and the device is {device}; use fp32")
    return precision


@contextlib.contextmanager
def exact_fp32(enabled: bool = True):
    """fp32 means fp32 on CUDA GPUs too: TF32 convolutions (cuDNN's default) and matmuls are off inside, so that an
    fp32 measurement on a GPU equals the CPU's up to float rounding; the flags are restored on exit (they do nothing
    on the CPU)."""
    if not enabled:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity (what Slurm or taskset grant), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers() -> int:
    """The default number of pair-making worker processes: min(4, usable CPUs − 1), at least 0 (on 1 CPU the pairs
    are made in the main process)."""
    return max(0, min(4, usable_cpus() - 1))


def resolve_workers(workers: int | None) -> int:
    """A ``--workers`` value → the number of worker processes: None = ``default_workers()``; 0 = the main process;
    anything else than an integer ≥ 0 raises a ``StlensError`` naming ``--workers``."""
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise StlensError(f"--workers must be an integer ≥ 0 (0: pairs made in the main process), got {workers}")
    return workers
