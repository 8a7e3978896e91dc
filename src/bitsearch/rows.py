"""Rows read from disk by global row number: one compiled loop of ``pread`` calls for the rows a
search rescores, not one Python call per row (``storage.diskrows.RowFiles`` drives it)."""

from __future__ import annotations

import numpy as np
from numba import njit, types

__all__ = ["pread_rows"]

# libc's pread(fd, buf, count, offset), bound by name so the compiled callers cache (a ctypes
# pointer would not); the buffer is passed as its address.
_pread = types.ExternalFunction("pread", types.intp(types.intc, types.intp, types.intp, types.int64))


@njit(cache=True, nogil=True)
def _check_layout(fds, data_offsets, starts, rows, out):  # pragma: no cover - compiled
    """0 when the arrays fit one another and every row is in range; i + 1 when rows[i] is out of range;
    -1 when the arrays do not fit (never written out of bounds: the caller's Python path decides)."""
    m = rows.shape[0]
    nfiles = starts.shape[0] - 1
    if out.shape[0] < m or nfiles < 0 or fds.shape[0] < nfiles or data_offsets.shape[0] < nfiles or starts[0] != 0:
        return -1
    for f in range(nfiles):
        if starts[f + 1] < starts[f]:  # a row's file is found by binary search over ascending starts
            return -1
    total = starts[nfiles]
    for i in range(m):
        if rows[i] < 0 or rows[i] >= total:
            return i + 1
    return 0


@njit(cache=True, nogil=True)
def _read_fully(fd, dest, want, pos):  # pragma: no cover - compiled
    """``want`` bytes from ``fd`` at ``pos`` into the address ``dest``; False when a read failed or
    the file ended early."""
    got = 0
    while got < want:
        n = _pread(np.intc(fd), dest + got, want - got, pos + got)
        if n <= 0:
            return False
        got += n
    return True


@njit(cache=True, nogil=True)
def pread_rows(
    fds: np.ndarray, data_offsets: np.ndarray, starts: np.ndarray, rows: np.ndarray, out: np.ndarray
) -> int:  # pragma: no cover - compiled
    """Read rows scattered over files into ``out`` (m, row_bytes) uint8, one ``pread`` per run of
    consecutive rows, in ascending row order (duplicates read once).

    File f (descriptor ``fds[f]``, rows from byte ``data_offsets[f]``) holds the global rows
    ``starts[f]`` to ``starts[f + 1] - 1`` (all int64); ``rows`` (int64) are global row numbers in
    any order. Returns 0; i + 1 when rows[i] is out of range; -1 when a read failed or ended early,
    or the arrays do not fit one another (the caller retries in Python, which raises the error).
    Rows are read, not memory-mapped (see ``collection.DiskRows``).
    """
    status = _check_layout(fds, data_offsets, starts, rows, out)
    if status != 0:
        return status
    m = rows.shape[0]
    row_bytes = out.shape[1]
    order = np.argsort(rows)
    base = out.ctypes.data
    tmp = np.empty(0, dtype=np.uint8)
    a = 0
    while a < m:
        r0 = rows[order[a]]
        if a > 0 and r0 == rows[order[a - 1]]:  # a duplicate: copy the row already read
            out[order[a]] = out[order[a - 1]]
            a += 1
            continue
        s = np.searchsorted(starts, r0, side="right") - 1
        # a run of consecutive rows in the same file: one read
        b = a + 1
        while b < m and rows[order[b]] == rows[order[b - 1]] + 1 and rows[order[b]] < starts[s + 1]:
            b += 1
        want = (b - a) * row_bytes
        if b - a == 1:
            dest = base + order[a] * row_bytes
        else:
            if tmp.shape[0] < want:
                tmp = np.empty(want, dtype=np.uint8)
            dest = tmp.ctypes.data
        if not _read_fully(fds[s], dest, want, data_offsets[s] + (r0 - starts[s]) * row_bytes):
            return -1
        if b - a > 1:
            for j in range(b - a):
                out[order[a + j]] = tmp[j * row_bytes : (j + 1) * row_bytes]
        a = b
    return 0
