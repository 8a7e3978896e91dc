"""Stage-1 scans other than Hamming: table lookups over low-bit codes, popcounts against a query's
bit planes, exact dot products over rows.

Asymmetric stage 1: a float query scores low-bit codes by table lookup. Packed codes (8 sign bits or
5 ternary levels per byte) take one lookup per byte (``lut_topk``); bit-plane codes (2bit, 1.5bit)
one lookup per 4 dimensions, indexed by a nibble of the median plane and that group's bits of the
second plane (``lut_planes_topk``). A query rounded to a few bits scores sign bits by popcounts per
query bit plane (``bitplane_topk``). Top-k selection is a histogram threshold plus a sort of the
survivors, ordered by (score desc, row asc) like every stage. A kernel whose parallel loop would
have one iteration runs as its serial twin (``_threads``).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, prange

from .errors import InvalidInputError
from .kernels import _popcount64, as_words

__all__ = ["bitplane_topk", "dot_topk", "lut_planes_topk", "lut_topk"]

_BLOCK = 4096
_BINS = 2048
# sort key of a -inf score: above every negated float32 score, below NaN's (+inf)
_AFTER_FINITE = 1.0e300


_TWINS: dict[Any, Any] = {}


def _threads(kernel: Any, parts: int) -> Any:
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


def _blocks(n: int) -> int:
    """Iterations of the kernels' parallel loop over ``n`` rows."""
    return (n + _BLOCK - 1) // _BLOCK


@njit(parallel=True, cache=True, nogil=True)
def _lut_scores(luts, codes, out):  # pragma: no cover - compiled
    n, groups = codes.shape
    nq = luts.shape[0]
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        start = b * _BLOCK
        end = min(n, start + _BLOCK)
        for qi in range(nq):
            table = luts[qi]
            for i in range(start, end):
                s = np.float32(0.0)
                for g in range(groups):
                    s += table[g, codes[i, g]]
                out[qi, i] = s


@njit(cache=True, nogil=True, inline="always")
def _bucket(v, hi, inv):  # pragma: no cover - compiled
    """Histogram bin of score ``v``: 0 (best) to _BINS, whatever ``v`` is (+inf: 0; -inf, NaN: _BINS).

    The one place a score becomes an index: computed in float64 and clamped, so no score (huge,
    infinite or NaN) can index outside the histogram."""
    x = (hi - np.float64(v)) * inv
    if not x < _BINS:  # also NaN
        return _BINS
    if x > 0.0:
        return int(x)
    return 0


@njit(cache=True, nogil=True)
def _select_row(scores, excluded, k, out_idx, out_val):  # pragma: no cover - compiled
    """Top-k of one score row by (score desc, index asc), skipping excluded rows; +inf ranks first,
    -inf and NaN last (NaN below -inf), so any float input gives k rows (k <= rows not excluded)."""
    n = scores.shape[0]
    has_ex = excluded.shape[0] == n
    lo = np.inf
    hi = -np.inf
    for i in range(n):
        if has_ex and excluded[i]:
            continue
        v = np.float64(scores[i])
        if v - v == 0.0:  # finite: the histogram spans the finite scores (float64: no overflow)
            lo = min(lo, v)
            hi = max(hi, v)
    if hi < lo:  # no finite score
        hi = lo = 0.0
    inv = _BINS / (hi - lo) if hi > lo else 1.0  # bins per unit of score
    hist = np.zeros(_BINS + 1, dtype=np.int64)
    for i in range(n):
        if has_ex and excluded[i]:
            continue
        hist[_bucket(scores[i], hi, inv)] += 1
    total = 0
    cut = _BINS
    for b in range(_BINS + 1):
        total += hist[b]
        if total >= k:
            cut = b
            break
    cand = np.empty(total, dtype=np.int64)
    m = 0
    for i in range(n):
        if has_ex and excluded[i]:
            continue
        if m < total and _bucket(scores[i], hi, inv) <= cut:
            cand[m] = i
            m += 1
    cand = cand[:m]
    # stable sort by score desc (equal scores keep index order), -inf next to last, NaN last
    key = np.empty(m, dtype=np.float64)
    for j in range(m):
        v = np.float64(scores[cand[j]])
        key[j] = np.inf if v != v else (_AFTER_FINITE if v == -np.inf else -v)
    order = np.argsort(key, kind="mergesort")
    for j in range(min(k, m)):
        out_idx[j] = cand[order[j]]
        out_val[j] = scores[cand[order[j]]]


@njit(parallel=True, cache=True, nogil=True)
def _select_rows(scores, excluded, k, out_idx, out_val):  # pragma: no cover - compiled
    for qi in prange(scores.shape[0]):
        _select_row(scores[qi], excluded, k, out_idx[qi], out_val[qi])


_DIST_BUDGET = 64 * 1024 * 1024


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
    kernel = _threads(_lut_scores, _blocks(codes.shape[0]))
    return _scan_topk(luts.shape[0], codes.shape[0], k, exclude, lambda a, b, out: kernel(luts[a:b], codes, out))


def _scan_topk(
    nq: int, n: int, k: int, exclude: np.ndarray | None, score: Callable[[int, int, np.ndarray], None]
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per query of scores that ``score(first, last, out)`` writes for queries first..last-1,
    computed in chunks of queries so the (queries x rows) score matrix stays bounded."""
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    excl = np.zeros(0, dtype=np.bool_) if exclude is None else np.ascontiguousarray(exclude, dtype=np.bool_)
    if exclude is not None and excl.shape != (n,):
        raise InvalidInputError(f"exclude mask must have shape ({n},), got {excl.shape}")
    live = n - (int(excl.sum()) if exclude is not None else 0)
    kk = min(int(k), live)
    out_idx = np.empty((nq, kk), dtype=np.int64)
    out_val = np.empty((nq, kk), dtype=np.float32)
    if kk == 0:
        return out_idx, out_val
    chunk = max(1, _DIST_BUDGET // max(1, 4 * n))
    for s in range(0, nq, chunk):
        e = min(nq, s + chunk)
        scores = np.empty((e - s, n), dtype=np.float32)
        score(s, e, scores)
        _threads(_select_rows, e - s)(scores, excl, kk, out_idx[s:e], out_val[s:e])
    return out_idx, out_val


@njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _dot_scores(w, const, rows, out):  # pragma: no cover - compiled
    n, dim = rows.shape
    nq = w.shape[0]
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        start = b * _BLOCK
        end = min(n, start + _BLOCK)
        for qi in range(nq):
            for i in range(start, end):
                s = np.float32(0.0)
                for j in range(dim):
                    s += w[qi, j] * np.float32(rows[i, j])
                out[qi, i] = s + const[qi]


def dot_topk(
    weights: np.ndarray, rows: np.ndarray, k: int, exclude: np.ndarray | None = None, const: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of ``rows @ weights[q] + const[q]`` over int8 or float32 rows, ties by row.

    For int8 rows pass the query with each dimension's bucket width folded in, and the offset as
    ``const`` (see ``kernels.rescore_int8``): the scan then scores dequantized values without
    converting the rows, in numba rather than BLAS (whose threads thrash on a busy machine).
    """
    w = np.ascontiguousarray(np.atleast_2d(weights), dtype=np.float32)
    c = np.zeros(w.shape[0], np.float32) if const is None else np.ascontiguousarray(const, dtype=np.float32)
    if w.ndim != 2 or rows.ndim != 2 or rows.dtype not in (np.int8, np.float32) or w.shape[1] != rows.shape[1]:
        raise InvalidInputError(f"weights {w.shape} do not fit int8 or float32 rows {rows.dtype} {rows.shape}")
    if c.shape != (w.shape[0],):
        raise InvalidInputError(f"const must have shape ({w.shape[0]},), got {c.shape}")
    kernel = _threads(_dot_scores, _blocks(rows.shape[0]))
    return _scan_topk(w.shape[0], rows.shape[0], k, exclude, lambda a, b, out: kernel(w[a:b], c[a:b], rows, out))


@njit(parallel=True, cache=True, nogil=True)
def _lut_planes_scores(luts, hi, lo, out):  # pragma: no cover - compiled
    """2bit: group g is nibble g of the high plane and the same nibble of the low plane."""
    n = hi.shape[0]
    groups = luts.shape[1]
    nq = luts.shape[0]
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        start = b * _BLOCK
        end = min(n, start + _BLOCK)
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
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        start = b * _BLOCK
        end = min(n, start + _BLOCK)
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
    kernel = _threads(_lut_pairs_scores if pairs else _lut_planes_scores, _blocks(hi.shape[0]))
    return _scan_topk(luts.shape[0], hi.shape[0], k, exclude, lambda a, b, out: kernel(luts[a:b], hi, lo, out))


@njit(inline="always")
def _bitplane_scores(qplanes, step, low, base, words, out, bits):  # pragma: no cover - compiled
    n, nw = words.shape
    nq = qplanes.shape[0]
    for b in prange((n + _BLOCK - 1) // _BLOCK):
        start = b * _BLOCK
        end = min(n, start + _BLOCK)
        for qi in range(nq):
            planes = qplanes[qi]
            for i in range(start, end):
                total = 0
                acc = 0
                for j in range(nw):
                    w = words[i, j]
                    total += _popcount64(w)
                    for k in range(bits):
                        acc += _popcount64(w & planes[k, j]) << k
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
    kernel = _threads(_bitplane4_scores if nplanes == 4 else _bitplane8_scores, _blocks(words.shape[0]))

    def score(a: int, b: int, out: np.ndarray) -> None:
        kernel(qw[a:b], st[a:b], lo[a:b], ba[a:b], words, out)

    return _scan_topk(p.shape[0], words.shape[0], k, exclude, score)
