"""Where and how a verb computes: ``device`` (``resolve_device``) and ``precision`` (``resolve_precision``), checked
before any work by every verb (measure, track, visualize, stylize, pairs check, ...), and the one home of running in
a precision: ``autocast``, ``exact_fp32``, ``warn_slow_bf16``. (``workers``: ``stlens.core.workers``.)

Errors name the Python argument in backticks (`` `device` ``); the CLI shows the option the user typed."""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from stlens.errors import StlensError

DEVICE_FORMS = "auto, cpu, cuda, cuda:K or mps"


def resolve_device(device: str | torch.device) -> torch.device:
    """A ``device`` value → the device to run on: ``auto`` is the current CUDA GPU when CUDA is available, else the
    CPU; ``cuda`` is the current CUDA GPU (``cuda:0`` unless changed), ``cuda:K`` GPU K, ``mps`` Apple's GPU.

    Raises a ``StlensError`` naming `` `device` `` for an unknown device or one this machine does not have."""
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    match = re.fullmatch(r"(cpu|mps|cuda)(?::(\d+))?", text)
    if match is None or (match[2] is not None and match[1] != "cuda"):
        raise StlensError(f"`device`: unknown device '{device}'; use {DEVICE_FORMS}")
    if match[1] == "cpu":
        return torch.device("cpu")
    if match[1] == "mps":
        if not torch.backends.mps.is_available():
            raise StlensError("`device` mps: Apple's Metal (MPS) backend is not available on this machine; use "
                              "`device` cpu or auto")
        return torch.device("mps")
    if not torch.cuda.is_available():
        why = ("this PyTorch is built without CUDA" if torch.version.cuda is None
               else "no CUDA GPU is visible (driver, CUDA_VISIBLE_DEVICES?)")
        raise StlensError(f"`device` {text}: CUDA is not available: {why} (torch {torch.__version__}); use "
                          f"`device` cpu or auto")
    count = torch.cuda.device_count()
    index = torch.cuda.current_device() if match[2] is None else int(match[2])
    if index >= count:
        raise StlensError(f"`device` {text}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
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


def cuda_native_bf16(device: torch.device) -> bool:
    """True when the CUDA GPU ``device`` computes in bf16 natively (Ampere and later), not by emulation."""
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """A ``precision`` value → the precision used on ``device``: ``fp32``, ``bf16`` or ``fp16``.

    ``auto`` picks bf16 on CUDA GPUs with native bf16 and on CPUs with native bf16 (AVX512_BF16 or AMX; a CPU that
    cannot be checked counts as without), fp32 otherwise (and on mps). fp16 is CUDA autocast only; bf16 runs on CPUs
    and CUDA GPUs. Anything else raises a ``StlensError`` naming `` `precision` ``."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise StlensError(f"`precision` must be one of {', '.join(PRECISIONS)}, got {precision}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if cuda_native_bf16(device) else "fp32"
        if device.type == "cpu":
            return "bf16" if cpu_has_native_bf16(unknown=False) else "fp32"
        return "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise StlensError(f"`precision` fp16 is CUDA autocast only, and the device is {device}; use fp32"
                          + (" or bf16" if device.type == "cpu" else "") + " (or `device` cuda)")
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise StlensError(f"`precision` bf16 runs on CPUs and CUDA GPUs, and the device is {device}; use fp32")
    return precision


@contextlib.contextmanager
def exact_fp32(enabled: bool = True) -> Iterator[None]:
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


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""The resolved precisions that run under autocast, and their dtype (fp32 runs without)."""


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on ``device``'s type (``torch.autocast``); nothing (``nullcontext``) for fp32.
    ``precision`` is a resolved one (``resolve_precision``): fp32, bf16 or fp16."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in AUTOCAST_DTYPES:
        raise StlensError(f"`precision` must be resolved (fp32, bf16 or fp16) to run in it, got {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=AUTOCAST_DTYPES[precision])


def warn_slow_bf16(device: torch.device | str) -> None:
    """A ``RuntimeWarning`` when bf16 on ``device`` is slow: a CPU without native bf16, a CUDA GPU that emulates it."""
    device = torch.device(device)
    if device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn("this CPU has no native bf16 (AVX512_BF16/AMX): bf16 convolutions take a slow fallback "
                      "path (measured 128-380x slower than fp32 for r3d_18 on an AVX2-only CPU); prefer fp32",
                      RuntimeWarning, stacklevel=3)
    if device.type == "cuda" and not cuda_native_bf16(device):
        warnings.warn(f"{torch.cuda.get_device_name(device)} has no native bf16: bf16 is emulated (slow); prefer "
                      f"fp32 (or fp16)", RuntimeWarning, stacklevel=3)
