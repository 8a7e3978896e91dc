"""How many threads the kernels use, and serial twins of parallel kernels.

Nothing happens at import: ``BITSEARCH_NUM_THREADS`` is read by ``ensure_threads``, which every scan
calls before its first kernel runs.
"""

from __future__ import annotations

import os
import types
from typing import Any

import numba
from numba import njit

__all__ = ["SCAN_BLOCK", "THREADS_ENV", "ensure_threads", "scan_blocks", "serial_twin", "set_num_threads"]

# environment variable: the thread count the kernels start with (default: all cores numba sees)
THREADS_ENV = "BITSEARCH_NUM_THREADS"

# rows per iteration of a score kernel's parallel loop (lut, rescore)
SCAN_BLOCK = 4096

_configured = False
_TWINS: dict[Any, Any] = {}


def set_num_threads(n: int) -> None:
    """Set the number of threads the stage-1 kernels use (default: all cores numba sees)."""
    global _configured
    _configured = True  # an explicit count wins over the environment's
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def ensure_threads() -> None:
    """Apply ``BITSEARCH_NUM_THREADS`` once per process, before the first kernel runs, unless a count
    was set already (``set_num_threads``, or ``numba.set_num_threads`` in this thread)."""
    global _configured
    if _configured:
        return
    _configured = True
    value = os.environ.get(THREADS_ENV)
    if value and numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS:
        set_num_threads(int(value))


def serial_twin(kernel: Any, parts: int) -> Any:
    """``kernel``, or when its parallel loop has a single iteration (one block of rows, one query)
    the same code compiled without threads, under its own cache name: starting the thread pool costs
    ~50-100 us, more than such a scan."""
    if parts > 1:
        return kernel
    twin = _TWINS.get(kernel)
    if twin is None:
        f = kernel.py_func
        g = types.FunctionType(f.__code__, f.__globals__, f.__name__ + "_serial", f.__defaults__, f.__closure__)
        g.__qualname__ = f.__qualname__ + "_serial"
        twin = _TWINS[kernel] = njit(cache=True, nogil=True)(g)
    return twin


def scan_blocks(n: int) -> int:
    """Iterations of a score kernel's parallel loop over ``n`` rows (``serial_twin``'s ``parts``)."""
    return (n + SCAN_BLOCK - 1) // SCAN_BLOCK
