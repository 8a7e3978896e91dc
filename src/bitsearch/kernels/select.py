"""Selection: the k best candidates, in one order everywhere (best score first, ties to the lower row).

Compiled primitives for the scans: a counting sort over the small range of Hamming distances
(``kth_distance``, ``compact_by_position``, ``compact_by_row``) and a histogram threshold over float
scores (``select_rows``, driven by ``scan_topk``). ``topk_by_row`` is the one merge of scored
candidates in Python: rescoring, the blocks of an exact scan, an IVF's lists with the rows added since,
and the shards of a sharded collection all keep their best k through it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit, prange

from ..errors import InvalidInputError
from .bits import exclude_mask
from .threads import ensure_threads, serial_twin

__all__ = [
    "NO_ROW",
    "compact_by_position",
    "compact_by_row",
    "kth_distance",
    "scan_topk",
    "select_row",
    "select_rows",
    "top_scored",
    "topk_by_row",
]

_BINS = 2048
# sort key of a -inf score: above every negated float32 score, below NaN's (+inf)
_AFTER_FINITE = 1.0e300
# bytes of the (queries x rows) float32 score matrix one step of ``scan_topk`` fills
_DIST_BUDGET = 64 * 1024 * 1024
# a row number above every real one (row ids fit 40 bits)
NO_ROW = np.int64(1) << 62


# ---------------------------------------------------------------- small integer distances


@njit(cache=True, nogil=True)
def kth_distance(cd, c, k, maxd, hist):  # pragma: no cover - compiled
    """Counting sort over 0..maxd of the first c distances: the k-th smallest distance t, and how many
    candidates at distance t make up the k (the rest of the k lie below t)."""
    hist[:] = 0
    for m in range(c):
        hist[cd[m]] += 1
    total = 0
    t = maxd
    for d in range(maxd + 1):
        if total + hist[d] >= k:
            t = d
            break
        total += hist[d]
    return t, k - total


@njit(cache=True, nogil=True)
def compact_by_position(ci, cd, c, k, maxd, hist):  # pragma: no cover - compiled
    """Keep the best k of the c candidates (ci, cd) in place, in their order; ties by earlier position.

    Candidates arrive in ascending row order, so "earlier" is "lower row". Returns (kept, accept):
    later rows are accepted only when their distance is <= accept."""
    if c <= k:
        return c, maxd
    t, need = kth_distance(cd, c, k, maxd, hist)
    w = 0
    for m in range(c):
        d = cd[m]
        if d < t or (d == t and need > 0):
            if d == t:
                need -= 1
            ci[w] = ci[m]
            cd[w] = d
            w += 1
    # k kept: a later row must beat the k-th (an equal distance loses: it is a higher row)
    return w, t - 1


@njit(cache=True, nogil=True)
def compact_by_row(ci, cd, c, k, maxd, hist):  # pragma: no cover - compiled
    """Keep the best k of c candidates by (distance, row id) in place, rows in any order. Returns
    (kept, t, rmax): a later candidate can only enter with distance < t, or distance == t and row < rmax."""
    if c <= k:
        return c, maxd, NO_ROW
    t, need = kth_distance(cd, c, k, maxd, hist)
    tied = np.empty(hist[t], dtype=np.int64)
    j = 0
    for m in range(c):
        if cd[m] == t:
            tied[j] = ci[m]
            j += 1
    tied.sort()
    rmax = tied[need - 1]
    w = 0
    for m in range(c):
        d = cd[m]
        if d < t or (d == t and ci[m] <= rmax):
            ci[w] = ci[m]
            cd[w] = d
            w += 1
    return w, t, rmax


# ---------------------------------------------------------------- float scores


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
def _finite_span(scores, excluded):  # pragma: no cover - compiled
    """(hi, bins per unit of score) of the histogram spanning the finite scores of rows not excluded."""
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
    return hi, (_BINS / (hi - lo) if hi > lo else 1.0)


@njit(cache=True, nogil=True)
def select_row(scores, excluded, k, out_idx, out_val):  # pragma: no cover - compiled
    """Top-k of one score row by (score desc, index asc), skipping excluded rows; +inf ranks first,
    -inf and NaN last (NaN below -inf), so any float input gives k rows (k <= rows not excluded)."""
    n = scores.shape[0]
    has_ex = excluded.shape[0] == n
    hi, inv = _finite_span(scores, excluded)
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
def select_rows(scores, excluded, k, out_idx, out_val):  # pragma: no cover - compiled
    """``select_row`` for every row of ``scores`` (queries in parallel)."""
    for qi in prange(scores.shape[0]):
        select_row(scores[qi], excluded, k, out_idx[qi], out_val[qi])


def scan_topk(
    nq: int, n: int, k: int, exclude: np.ndarray | None, score: Callable[[int, int, np.ndarray], None]
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per query of scores that ``score(first, last, out)`` writes for queries first..last-1,
    computed in chunks of queries so the (queries x rows) score matrix stays bounded."""
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    excl, live = exclude_mask(exclude, n)
    ensure_threads()
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
        serial_twin(select_rows, e - s)(scores, excl, kk, out_idx[s:e], out_val[s:e])
    return out_idx, out_val


# ---------------------------------------------------------------- merging scored candidates


def top_scored(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One query's k best candidates (rows, scores), highest score first, ties to the lower row,
    NaN and inf scores left out: one compiled call for what takes a handful of numpy calls."""
    if scores.ndim != 1 or rows.shape != scores.shape:
        raise InvalidInputError(f"scores {scores.shape} and rows {rows.shape} must be 1-D of one length")
    return _top_scored(scores, rows, max(0, int(k)))


@njit(cache=True, nogil=True)
def _top_scored(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    keep = np.empty(scores.shape[0], dtype=np.int64)
    c = 0
    for i in range(scores.shape[0]):
        if np.isfinite(scores[i]):
            keep[c] = i
            c += 1
    keep = keep[:c]
    by_row = keep[np.argsort(rows[keep], kind="mergesort")]
    best = by_row[np.argsort(-scores[by_row], kind="mergesort")[: min(k, c)]]  # stable: row order in ties
    return rows[best], scores[best]


def topk_by_row(scores: np.ndarray, rows: np.ndarray, k: int, *, trim: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the k best of the candidates (rows, scores), both (nq, m): highest score first, ties
    to the lower row (deterministic); NaN and inf scores left out. Rows may repeat across calls but
    not within one query.

    A query with fewer than k finite scores is padded with row -1 and score -inf; with ``trim`` the
    padding is cut off, so every query keeps as many as the shortest has. Returns (rows int64,
    scores of ``scores``' dtype)."""
    k = min(max(0, int(k)), scores.shape[1])
    if k == 0:
        return np.empty((scores.shape[0], 0), np.int64), np.empty((scores.shape[0], 0), scores.dtype)
    if scores.shape[0] == 1 and scores.shape[1] <= 4 * k:  # one query, few candidates: one compiled sort
        r, s = top_scored(scores[0], rows[0].astype(np.int64, copy=False), k)
        if trim or r.size == k:
            return r[None], s[None]
        return np.concatenate([r, np.full(k - r.size, -1, np.int64)])[None], np.concatenate(
            [s, np.full(k - s.size, -np.inf, s.dtype)]
        )[None]
    out_rows = np.empty((scores.shape[0], k), dtype=np.int64)
    out_scores = np.empty((scores.shape[0], k), dtype=scores.dtype)
    for i in range(scores.shape[0]):
        s, r = scores[i], rows[i]
        finite = np.isfinite(s)
        if not finite.all():
            s, r = s[finite], r[finite]
        if s.size > 4 * k:
            part = np.argpartition(-s, k - 1)[:k]
            kth = s[part].min()
            sel = np.flatnonzero(s >= kth)
            s, r = s[sel], r[sel]
        order = np.lexsort((r, -s))[:k]
        kk = order.size
        out_rows[i, :kk] = r[order]
        out_scores[i, :kk] = s[order]
        if kk < k:  # fewer finite scores than k (deleted rows masked out, empty slots)
            out_rows[i, kk:] = -1
            out_scores[i, kk:] = -np.inf
    if trim and (out_rows < 0).any():
        kk = int((out_rows >= 0).sum(axis=1).min())
        out_rows, out_scores = out_rows[:, :kk], out_scores[:, :kk]
    return out_rows, out_scores
