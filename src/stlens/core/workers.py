"""Items of a map-style dataset in index order, made in the main process or in DataLoader worker processes.

Used by the verbs whose work per item is independent (stylize: a video; pairs check: a clip; ablate: a batch of
clips). A worker cannot raise an error the main process shows as one line, so an item that failed is returned as
``Failed(message)`` and ``in_order`` raises it there as a ``StlensError``. PyTorch's worker loop runs one torch thread
per worker (GNU OpenMP is not fork-safe with more); on Linux the workers are forked.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from stlens.errors import StlensError

log = logging.getLogger("stlens")


@dataclass(frozen=True)
class Failed:
    """An item whose making failed: ``message`` is raised by ``in_order`` as a ``StlensError``."""

    message: str


def guarded(make: Callable[[], Any], what: str) -> Any:
    """``make()``, or ``Failed``: a ``StlensError`` as it is; in a worker, any other exception as ``what``, its type
    and message, its traceback logged (in the main process it propagates, as without workers)."""
    try:
        return make()
    except StlensError as exc:
        return Failed(str(exc))
    except Exception as exc:
        if torch.utils.data.get_worker_info() is None:
            raise
        log.error("%s failed in a worker process:\n%s", what, traceback.format_exc())
        return Failed(f"{what}: {type(exc).__name__}: {exc}")


def in_order(dataset: torch.utils.data.Dataset, workers: int) -> Iterator[Any]:
    """``dataset[0]``, ``dataset[1]``, … made here (``workers`` 0, or a single item) or in ``workers`` processes; a
    ``Failed`` item raises its message as a ``StlensError``."""
    count = len(dataset)
    if workers <= 0 or count <= 1:
        made: Any = (dataset[i] for i in range(count))
    else:
        made = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=min(workers, count),
                                           multiprocessing_context="fork" if sys.platform.startswith("linux") else None)
    for item in made:
        if isinstance(item, Failed):
            raise StlensError(item.message)
        yield item
