"""Bit-level building blocks: hardware popcount, packed codes as 64-bit words, the distances of a
block of rows to one query, and the checks every scan shares (exclusion masks).

The word loop of ``block_distances`` is unrolled per code width: the kernels pass a tuple whose
length is the word count (``width_tuple``), a compile-time constant, so LLVM vectorizes the row loop
(vpopcntq where the CPU has AVX-512 VPOPCNTDQ).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from ..errors import InvalidInputError

__all__ = [
    "NO_EXCLUDE",
    "ROW_BLOCK",
    "as_words",
    "block_distances",
    "exclude_mask",
    "popcount64",
    "width_tuple",
]

# Rows scored per step of a single-query scan (distances of a block land in an L1 buffer).
ROW_BLOCK = 512
# Code widths (in 64-bit words) with a kernel specialized (loop fully unrolled) on the width.
MAX_SPECIAL_WORDS = 32
# the kernels' "no exclusion mask" (empty, never written)
NO_EXCLUDE = np.zeros(0, dtype=np.bool_)


@intrinsic
def popcount64(typingctx, x):
    """Hardware popcount of a uint64 (LLVM ctpop; vectorized to vpopcntq where the CPU has it)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@njit(cache=True, nogil=True)
def block_distances(qrow, db, b0, b1, wt, buf):  # pragma: no cover - compiled
    """Distances of rows b0..b1 to one query into buf (int32). ``wt`` is a tuple whose length is the
    word count: a compile-time constant, so the word loop unrolls and, reading the C-contiguous
    ``db`` through its flat view at that constant stride, the row loop vectorizes (a 2-D index
    carries the row stride at run time: LLVM kept it scalar, 1.35x slower at 6 words)."""
    w = len(wt) if len(wt) > 0 else db.shape[1]
    sub = db.reshape(-1)[b0 * w : b1 * w]  # a 0-based view: LLVM vectorizes this form, not db[b0 + i]
    for i in range(b1 - b0):
        d = np.uint64(0)
        for j in range(w):
            d += popcount64(qrow[j] ^ sub[i * w + j])
        buf[i] = d


def width_tuple(words: int) -> tuple[int, ...]:
    """The tuple whose length tells the kernels the code width (empty: generic loop, not unrolled)."""
    return (0,) * words if words <= MAX_SPECIAL_WORDS else ()


def as_words(codes: np.ndarray) -> np.ndarray:
    """View packed codes (n, nbytes) as uint64 words, zero-padding each row to a multiple of 8 bytes.

    binary (int8, offset by -128) codes are converted to their ubinary bytes first.
    """
    c = np.asarray(codes)
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2:
        raise InvalidInputError(f"packed codes must be 2-D (n, bytes), got shape {c.shape}")
    if c.dtype == np.int8:
        c = (c.astype(np.int16) + 128).astype(np.uint8)
    elif c.dtype != np.uint8:
        raise InvalidInputError(f"packed codes must be uint8 (ubinary) or int8 (binary), got {c.dtype}")
    nbytes = c.shape[1]
    padded = -(-nbytes // 8) * 8
    if padded != nbytes or not c.flags.c_contiguous:
        out = np.zeros((c.shape[0], padded), dtype=np.uint8)
        out[:, :nbytes] = c
        c = out
    return c.view(np.uint64)


def exclude_mask(exclude: np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    """The kernels' form of an optional bool mask of rows never returned (``NO_EXCLUDE`` for none),
    and how many of the ``n`` rows it leaves; InvalidInputError unless it has one entry per row."""
    if exclude is None:
        return NO_EXCLUDE, n
    mask = np.ascontiguousarray(exclude, dtype=np.bool_)
    if mask.shape != (n,):
        raise InvalidInputError(f"exclude mask must have shape ({n},), got {mask.shape}")
    return mask, n - int(mask.sum())
