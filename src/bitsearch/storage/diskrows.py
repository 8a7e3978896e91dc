"""Rows of .npy files read from disk on demand with ``pread`` (not memory-mapped: see ``DiskRows``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import CollectionError, CorruptCollectionError
from ..rows import pread_rows

__all__ = ["DiskRows", "RowFiles"]


class DiskRows:
    """The rows of a .npy file on disk, read with ``pread`` on demand.

    Not memory-mapped on purpose: mapped pages (and the kernel's fault-around) count as resident
    memory, which then creeps toward the file size as searches touch random rows. pread keeps the
    rows in the page cache only, so an open collection's RSS stays near its binary codes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd_cache: int | None = None
        with open(path, "rb") as f:
            # the descriptor is kept from the start: a snapshot whose files a later write removes
            # (compaction, or another process's) still reads them, and never opens a path again
            self._fd_cache = os.dup(f.fileno())
            try:
                major, _ = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(f)
            except ValueError as exc:
                raise CorruptCollectionError(f"collection file {path} is not a valid .npy file: {exc}") from None
            self.offset = f.tell()
        if fortran or dtype.hasobject:
            raise CorruptCollectionError(f"collection file {path} has an unsupported layout")
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        expected = self.offset + self.shape[0] * self.row_bytes
        if path.stat().st_size != expected:
            size = path.stat().st_size
            raise CorruptCollectionError(f"collection file {path} is truncated: {size} of {expected} bytes")

    def read_all(self) -> np.ndarray:
        """Every row, read into memory through the kept descriptor (compaction, masks, filters)."""
        out = np.empty(self.shape, dtype=self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        fd, done = self._fd(), 0
        while done < view.nbytes:  # one pread returns at most ~2 GiB
            got = os.preadv(fd, [view[done:]], self.offset + done)
            if got <= 0:
                raise CorruptCollectionError(f"collection file {self.path} ended early while reading rows")
            done += got
        return out

    def _fd(self) -> int:
        """The read-only descriptor opened with the file and kept for the object's life."""
        fd = self._fd_cache
        if fd is None:
            raise CollectionError(f"collection file {self.path} was closed")
        return fd

    def __del__(self) -> None:
        fd = getattr(self, "_fd_cache", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The given rows, in the given order (any order, repeats allowed)."""
        return RowFiles([self], np.array([0, self.shape[0]], dtype=np.int64)).take(rows)

    def take_slowly(self, rows: np.ndarray) -> np.ndarray:
        """``take`` with one Python ``os.preadv`` per run of consecutive rows: raises the read's
        error (OSError, or CorruptCollectionError for a file that ends early) where the compiled
        loop only reports failure."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        rl = rows[order].tolist()
        n = len(rl)
        rb = self.row_bytes
        buf = bytearray(n * rb)
        view = memoryview(buf)
        if n and (rl[0] < 0 or rl[-1] >= self.shape[0]):
            raise IndexError(f"row {rl[0] if rl[0] < 0 else rl[-1]} is out of range for {self.path}")
        fd = self._fd()
        a = 0
        while a < n:
            b = a + 1
            while b < n and rl[b] == rl[b - 1] + 1:
                b += 1
            if os.preadv(fd, [view[a * rb : b * rb]], self.offset + rl[a] * rb) != (b - a) * rb:
                raise CorruptCollectionError(f"collection file {self.path} ended early while reading rows")
            a = b
        out = np.empty((n, *self.shape[1:]), dtype=self.dtype)
        out[order] = np.frombuffer(buf, dtype=self.dtype).reshape((n, *self.shape[1:]))
        return out


class RowFiles:
    """Files of one row layout laid end to end (the segments' int8, float32 or seqs files), read by
    global row number with one compiled loop of ``pread`` calls (``rows.pread_rows``).

    ``starts`` (files + 1,) are the first global row of each file and the total. Built once per
    state and kind: the descriptors stay open as long as the DiskRows do.
    """

    def __init__(self, parts: Sequence[DiskRows], starts: np.ndarray) -> None:
        self.parts = tuple(parts)
        self.starts = np.ascontiguousarray(starts, dtype=np.int64)
        self.fds = np.array([p._fd() for p in self.parts], dtype=np.int64)
        self.data_offsets = np.array([p.offset for p in self.parts], dtype=np.int64)
        self.total = int(self.starts[-1])
        first = self.parts[0]
        self.row_shape = first.shape[1:]
        self.dtype = first.dtype
        self.row_bytes = first.row_bytes

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows by global row number, in the given order (any order, repeats allowed)."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if rows.ndim != 1:
            rows = rows.reshape(-1)
        if rows.size * 8 > self.total:  # a large share of the rows: file by file, maybe whole files
            return self._take_by_file(rows)
        out = np.empty((rows.size, self.row_bytes), dtype=np.uint8)
        status = pread_rows(self.fds, self.data_offsets, self.starts, rows, out)
        if status > 0:
            raise IndexError(f"row {int(rows[status - 1])} is out of range for {self.total} rows")
        if status < 0:  # a read failed or came up short: again in Python, which raises the error
            return self._take_by_file(rows, slowly=True)
        block = out.view(self.dtype)
        return block if self.row_shape == block.shape[1:] else block.reshape((rows.size, *self.row_shape))

    def _take_by_file(self, rows: np.ndarray, slowly: bool = False) -> np.ndarray:
        """``take`` one file at a time; a file asked for a large share of its rows is read whole."""
        if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= self.total):
            bad = int(rows.min()) if int(rows.min()) < 0 else int(rows.max())
            raise IndexError(f"row {bad} is out of range for {self.total} rows")
        out = np.empty((rows.size, *self.row_shape), dtype=self.dtype)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        for f in np.unique(part).tolist():
            where = np.flatnonzero(part == f)
            local = rows[where] - self.starts[f]
            src = self.parts[f]
            if slowly:
                out[where] = src.take_slowly(local)
            elif local.size * 8 > src.shape[0]:
                out[where] = src.read_all()[local]
            else:
                out[where] = RowFiles([src], self.starts[f : f + 2] - self.starts[f]).take(local)
        return out
