"""Shared by the tests that run stlens in subprocesses: PYTHONPATH with the tests folder (for ``module:`` models and
stylizers defined there), ``stlens`` under torchrun, and result documents without their run-specific fields."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent
#: fields that differ between two runs of the same measurement
RUN_FIELDS = ("timing", "run_id", "seconds", "forward_seconds", "pairs_per_second", "started", "finished")


def with_tests(*more: Path) -> str:
    """PYTHONPATH with ``more`` and the tests folder first, keeping what it held."""
    return os.pathsep.join(p for p in (*map(str, more), str(TESTS), os.environ.get("PYTHONPATH")) if p)


def torchrun(args: list[str], nproc: int = 2, env: dict[str, str] | None = None, timeout: float = 300,
             **popen) -> subprocess.CompletedProcess | subprocess.Popen:
    """``stlens ARGS`` under torchrun with ``nproc`` gloo processes of one thread each (the tests folder on
    PYTHONPATH); with ``popen`` keywords a started ``Popen``, else the finished run (output captured)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "stlens", *args]
    full_env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": with_tests()} | (env or {})
    if popen:
        return subprocess.Popen(command, env=full_env, text=True, **popen)
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=timeout)


def without(doc, fields=RUN_FIELDS):
    """``doc`` (nested dicts and lists) without the keys in ``fields``, at any depth."""
    if isinstance(doc, dict):
        return {k: without(v, fields) for k, v in doc.items() if k not in fields}
    if isinstance(doc, list):
        return [without(v, fields) for v in doc]
    return doc
