"""Asymmetric stage-1 scans: a float query scores low-bit codes by table lookups, or sign bits by
popcounts against the query's bit planes.

Packed codes (8 sign bits or 5 ternary levels per byte) take one lookup per byte (``lut_topk``);
bit-plane codes (2bit, 1.5bit) one lookup per 4 dimensions, indexed by a nibble of the median plane
and that group's bits of the second plane (``lut_planes_topk``). A query rounded to a few bits scores
sign bits by popcounts per query bit plane (``bitplane_topk``). The scores go to ``select.scan_topk``:
ordered by (score desc, row asc) like every stage. A kernel whose parallel loop would have one
iteration runs as its serial twin (``threads.serial_twin``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..errors import InvalidInputError
from .bits import as_words, popcount64
from .select import scan_topk
from .threads import SCAN_BLOCK, scan_blocks, serial_twin

__all__ = ["bitplane_topk", "lut_planes_topk", "lut_topk"]


@njit(parallel=True, cache=True, nogil=True)
def _lut_scores(luts, codes, out):  # pragma: no cover - compiled
    n, groups = codes.shape
    nq = luts.shape[0]
    for b in prange((n + SCAN_BLOCK - 1) // SCAN_BLOCK):
        start = b * SCAN_BLOCK
        end = min(n, start + SCAN_BLOCK)
        for qi in range(nq):
            table = luts[qi]
            for i in range(start, end):
                s = np.float32(0.0)
                for g in range(groups):
                    s += table[g, codes[i, g]]
                out[qi, i] = s


def lut_topk(
    luts: np.ndarray, codes: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows by summed table lookups: ``score[q, i] = sum_g luts[q, g, codes[i, g]]``.

    ``luts`` (nq, groups, 256) float32 from ``CodeBook.lut``; ``codes`` (n, groups) uint8. Returns
    (rows int64, scores float32), each (nq, min(k, rows not excluded)), best first, ties by row.
    """
    luts = np.ascontiguousarray(luts, dtype=np.float32)
    if luts.ndim != 3 or luts.shape[2] != 256:
        raise InvalidInputError(f"lookup tables must have shape (nq, groups, 256), got {luts.shape}")
    if codes.ndim != 2 or codes.dtype != np.uint8 or codes.shape[1] != luts.shape[1]:
        raise InvalidInputError(f"codes must be uint8 (n, {luts.shape[1]}), got {codes.dtype} {codes.shape}")
    kernel = serial_twin(_lut_scores, scan_blocks(codes.shape[0]))
    return scan_topk(luts.shape[0], codes.shape[0], k, exclude, lambda a, b, out: kernel(luts[a:b], codes, out))


@njit(parallel=True, cache=True, nogil=True)
def _lut_planes_scores(luts, hi, lo, out):  # pragma: no cover - compiled
    """2bit: group g is nibble g of the high plane and the same nibble of the low plane."""
    n = hi.shape[0]
    groups = luts.shape[1]
    nq = luts.shape[0]
    for b in prange((n + SCAN_BLOCK - 1) // SCAN_BLOCK):
        start = b * SCAN_BLOCK
        end = min(n, start + SCAN_BLOCK)
        for qi in range(nq):
            table = luts[qi]
            for i in range(start, end):
                s = np.float32(0.0)
                for g in range(groups):
                    byte = g >> 1
                    shift = 4 - 4 * (g & 1)
                    idx = (((hi[i, byte] >> shift) & 15) << 4) | ((lo[i, byte] >> shift) & 15)
                    s += table[g, idx]
                out[qi, i] = s


@njit(parallel=True, cache=True, nogil=True)
def _lut_pairs_scores(luts, hi, lo, out):  # pragma: no cover - compiled
    """1.5bit: group g is nibble g of the median plane and 2 bits (its two pairs) of the pair plane.

    Its own kernel rather than a width parameter: constant shifts keep the loop as fast as 2bit's. A
    runtime width made both 5x slower, and a shared body inlined with a constant width 1.7-1.9x
    slower (the parallel loop is compiled as its own function, where the width is an argument)."""
    n = hi.shape[0]
    groups = luts.shape[1]
    nq = luts.shape[0]
    for b in prange((n + SCAN_BLOCK - 1) // SCAN_BLOCK):
        start = b * SCAN_BLOCK
        end = min(n, start + SCAN_BLOCK)
        for qi in range(nq):
            table = luts[qi]
            for i in range(start, end):
                s = np.float32(0.0)
                for g in range(groups):
                    nibble = (hi[i, g >> 1] >> (4 - 4 * (g & 1))) & 15
                    pair = (lo[i, g >> 2] >> (6 - 2 * (g & 3))) & 3
                    s += table[g, (nibble << 2) | pair]
                out[qi, i] = s


def lut_planes_topk(
    luts: np.ndarray,
    hi: np.ndarray,
    lo: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
    *,
    pairs: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``lut_topk`` for codes kept as bit planes: ``hi`` (n, bytes) the sign-like plane, ``lo`` the
    second plane: 2bit's low bits (as wide), or with ``pairs`` 1.5bit's bit per pair (half as wide)."""
    luts = np.ascontiguousarray(luts, dtype=np.float32)
    width = 2 if pairs else 4
    if (
        luts.ndim != 3
        or luts.shape[2] < (64 if pairs else 256)  # the largest index a code can form
        or hi.ndim != 2
        or hi.dtype != np.uint8
        or lo.dtype != np.uint8
        or luts.shape[1] != 2 * hi.shape[1]
        or lo.shape != (hi.shape[0], -(-hi.shape[1] * width // 4))
    ):
        raise InvalidInputError(f"planes {hi.shape} / {lo.shape} do not fit tables {luts.shape}")
    kernel = serial_twin(_lut_pairs_scores if pairs else _lut_planes_scores, scan_blocks(hi.shape[0]))
    return scan_topk(luts.shape[0], hi.shape[0], k, exclude, lambda a, b, out: kernel(luts[a:b], hi, lo, out))


@njit(inline="always")
def _bitplane_scores(qplanes, step, low, base, words, out, bits):  # pragma: no cover - compiled
    n, nw = words.shape
    nq = qplanes.shape[0]
    for b in prange((n + SCAN_BLOCK - 1) // SCAN_BLOCK):
        start = b * SCAN_BLOCK
        end = min(n, start + SCAN_BLOCK)
        for qi in range(nq):
            planes = qplanes[qi]
            for i in range(start, end):
                total = 0
                acc = 0
                for j in range(nw):
                    w = words[i, j]
                    total += popcount64(w)
                    for k in range(bits):
                        acc += popcount64(w & planes[k, j]) << k
                out[qi, i] = base[qi] + low[qi] * total + step[qi] * acc


# a constant number of planes (inlined) lets LLVM unroll the plane loop: 1.5x faster than a runtime count
@njit(parallel=True, cache=True, nogil=True)
def _bitplane4_scores(qplanes, step, low, base, words, out):  # pragma: no cover - compiled
    _bitplane_scores(qplanes, step, low, base, words, out, 4)


@njit(parallel=True, cache=True, nogil=True)
def _bitplane8_scores(qplanes, step, low, base, words, out):  # pragma: no cover - compiled
    _bitplane_scores(qplanes, step, low, base, words, out, 8)


def bitplane_topk(
    planes: np.ndarray,
    step: np.ndarray,
    low: np.ndarray,
    base: np.ndarray,
    words: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of 1-bit codes against queries as bit planes (``CodeBook.query_planes``):
    ``base + low x popcount(doc) + step x sum_k 2^k popcount(doc & plane_k)``, ties by row.

    ``words`` (n, w) uint64 are the codes as ``kernels.as_words`` lays them out. Costs bits + 1
    popcounts per word where Hamming distance costs one.
    """
    p = np.asarray(planes, dtype=np.uint8)
    if p.ndim != 3 or words.ndim != 2 or words.dtype != np.uint64 or -(-p.shape[2] // 8) != words.shape[1]:
        raise InvalidInputError(f"query planes {p.shape} do not fit {words.dtype} codes {words.shape} (uint64 words)")
    if p.shape[1] > 8:
        raise InvalidInputError(f"at most 8 query bit planes, got {p.shape[1]}")
    nplanes = 4 if p.shape[1] <= 4 else 8  # zero planes pad to a kernel with a constant count
    qw = np.zeros((p.shape[0], nplanes, words.shape[1]), dtype=np.uint64)
    qw[:, : p.shape[1]] = as_words(p.reshape(-1, p.shape[2])).reshape(p.shape[0], p.shape[1], -1)
    st, lo, ba = (np.ascontiguousarray(a, dtype=np.float64) for a in (step, low, base))
    if not st.shape == lo.shape == ba.shape == (p.shape[0],):
        shapes = f"{st.shape} {lo.shape} {ba.shape}"
        raise InvalidInputError(f"step, low and base must have shape ({p.shape[0]},), got {shapes}")
    kernel = serial_twin(_bitplane4_scores if nplanes == 4 else _bitplane8_scores, scan_blocks(words.shape[0]))

    def score(a: int, b: int, out: np.ndarray) -> None:
        kernel(qw[a:b], st[a:b], lo[a:b], ba[a:b], words, out)

    return scan_topk(p.shape[0], words.shape[0], k, exclude, score)
