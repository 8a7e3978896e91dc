"""Exact Hamming top-k over packed sign bits, fused with the selection.

Chosen by measurement against FAISS IndexBinaryFlat, usearch and numpy (benchmarks/bench_kernels.py,
bench_peers.py): popcount on 64-bit words with the word loop unrolled per code width (``bits``),
fused with the selection: each task keeps, per query, the rows under a running threshold in a small
buffer shrunk by counting sort over the small range of distances (``select``); no N-length distance
array is written. Single queries vectorize over rows and split the rows over a few parallel parts;
batches vectorize over queries (one row word against 4 queries per instruction) and reuse each row
block from cache for the whole query group. Results are exact, ordered by (distance, row).
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
from numba import njit, prange

from ..errors import InvalidInputError
from .bits import ROW_BLOCK, as_words, block_distances, exclude_mask, popcount64, width_tuple
from .select import compact_by_position
from .threads import ensure_threads, serial_twin

__all__ = ["hamming_distances", "hamming_topk", "hamming_topk_allowed", "preselected_topk"]

# Queries handed to one kernel call; bounds the per-part candidate buffers (parts x queries x cap).
_QCHUNK = 512
# Scans with fewer (queries x rows x words) than this run serially: a few hundred microseconds at most.
_SERIAL_WORDS = 1 << 21
# Bytes the candidate buffers of one kernel call may take (fewer row parts for large k).
_CAND_BUDGET = 64 * 1024 * 1024
# Queries scored together by the batch kernel (its vectorized inner loop).
_QG = 64
# Rows per step of the batch kernel: a (rows x queries) int32 block of distances stays in L1/L2.
_RBQ = 128
# Batches at least this large use the kernel vectorized over queries.
_BATCH_MIN = 8
# Row parts per thread for one search: more than one evens out threads slowed by other work.
_PARTS_PER_THREAD = 2


@njit(cache=True, nogil=True)
def _merge_one(qi, cidx, cdist, cnt, k, maxd, out_idx, out_dist):  # pragma: no cover - compiled
    """One query: concatenate the parts' candidates in row order, keep the best k, sort them."""
    nparts = cidx.shape[0]
    m = 0
    for p in range(nparts):
        m += cnt[p, qi]
    ci = np.empty(m, dtype=np.int64)
    cd = np.empty(m, dtype=np.int32)
    m = 0
    for p in range(nparts):
        for j in range(cnt[p, qi]):
            ci[m] = cidx[p, qi, j]
            cd[m] = cdist[p, qi, j]
            m += 1
    hist = np.zeros(maxd + 2, dtype=np.int64)
    m, _ = compact_by_position(ci, cd, m, k, maxd, hist[: maxd + 1])
    # stable counting sort of the k survivors by distance (row order kept within a distance)
    hist[:] = 0
    for j in range(m):
        hist[cd[j] + 1] += 1
    for d in range(maxd + 1):
        hist[d + 1] += hist[d]
    for j in range(m):
        pos = hist[cd[j]]
        hist[cd[j]] = pos + 1
        out_idx[qi, pos] = ci[j]
        out_dist[qi, pos] = cd[j]


@njit(cache=True, nogil=True)
def _scan_single(qrow, db, wt, excluded, k, maxd, start, end, ci, cd, hist):  # pragma: no cover - compiled
    """One query against rows start..end: each 512-row block scored vectorized over rows, the rows at
    or under the running threshold kept in (ci, cd), compacted when full. Returns the count kept."""
    has_ex = excluded.shape[0] == db.shape[0]
    cap = ci.shape[0]
    buf = np.empty(ROW_BLOCK, dtype=np.int32)
    t = maxd
    c = 0
    for b0 in range(start, end, ROW_BLOCK):
        b1 = min(end, b0 + ROW_BLOCK)
        block_distances(qrow, db, b0, b1, wt, buf)
        for i in range(b1 - b0):
            d = buf[i]
            if d <= t:
                r = b0 + i
                if has_ex and excluded[r]:
                    continue
                ci[c] = r
                cd[c] = d
                c += 1
                if c == cap:
                    c, t = compact_by_position(ci, cd, c, k, maxd, hist)
    c, _ = compact_by_position(ci, cd, c, k, maxd, hist)
    return c


@njit(cache=True, nogil=True)
def _scan_batch(p, qt, g0, g1, db, wt, excluded, k, maxd, start, end, cidx, cdist, cnt, hist):  # pragma: no cover
    """Queries g0..g1 (columns of ``qt``, words x queries) against rows start..end, 128-row blocks
    scored vectorized over queries; candidates kept per query in part ``p`` of the buffers."""
    has_ex = excluded.shape[0] == db.shape[0]
    cap = cidx.shape[2]
    c_p = cnt[p]
    qg = qt[:, g0:g1].copy()
    dist = np.empty((_RBQ, g1 - g0), dtype=np.int32)
    thr = np.full(g1 - g0, maxd, dtype=np.int64)
    for b0 in range(start, end, _RBQ):
        b1 = min(end, b0 + _RBQ)
        _block_dist_queries(qg, db[b0:b1], wt, dist)
        for i in range(b1 - b0):
            r = b0 + i
            if has_ex and excluded[r]:
                continue
            for gi in range(g1 - g0):
                d = dist[i, gi]
                if d <= thr[gi]:
                    qi = g0 + gi
                    c = c_p[qi]
                    cidx[p, qi, c] = r
                    cdist[p, qi, c] = d
                    c += 1
                    if c == cap:
                        c, thr[gi] = compact_by_position(cidx[p, qi], cdist[p, qi], c, k, maxd, hist)
                    c_p[qi] = c
    for qi in range(g0, g1):
        c_p[qi], _ = compact_by_position(cidx[p, qi], cdist[p, qi], c_p[qi], k, maxd, hist)


@njit(cache=True, nogil=True)
def _scan_task(task, ntasks_q, q, qt, db, wt, excluded, k, maxd, per, cidx, cdist, cnt):  # pragma: no cover
    """One parallel task: a contiguous part of the rows against one query (``qt`` empty) or one group
    of queries (``qt``: words x queries). Keeps per query the rows at or under a running threshold in
    a small buffer (cidx/cdist of this part); no N-length distance array is ever written."""
    p = task // ntasks_q
    start = p * per
    end = min(db.shape[0], start + per)
    hist = np.empty(maxd + 1, dtype=np.int64)
    if qt.shape[1] == 0:
        qi = task % ntasks_q
        cnt[p, qi] = _scan_single(q[qi], db, wt, excluded, k, maxd, start, end, cidx[p, qi], cdist[p, qi], hist)
        return
    nq = qt.shape[1]
    per_g = (nq + ntasks_q - 1) // ntasks_q
    g0 = (task % ntasks_q) * per_g
    g1 = min(nq, g0 + per_g)
    if g0 < g1:
        _scan_batch(p, qt, g0, g1, db, wt, excluded, k, maxd, start, end, cidx, cdist, cnt, hist)


@njit(cache=True, nogil=True)
def _block_dist_queries(qt, sub, wt, dist):  # pragma: no cover - compiled
    """Distances of every row of ``sub`` to every query of ``qt`` (words x queries, transposed) into
    dist (rows x queries). The inner loop runs over queries, so it vectorizes without shuffles: one
    broadcast row word against 4 queries' words per instruction."""
    w = len(wt) if len(wt) > 0 else sub.shape[1]
    nq = qt.shape[1]
    for i in range(sub.shape[0]):
        for qi in range(nq):
            d = np.uint64(0)
            for j in range(w):
                d += popcount64(qt[j, qi] ^ sub[i, j])
            dist[i, qi] = d


@njit(parallel=True, cache=True, nogil=True)
def _topk_parallel(
    q, qt, db, wt, excluded, k, maxd, nparts, ntasks_q, per, cidx, cdist, cnt, out_idx, out_dist
):  # pragma: no cover
    for task in prange(nparts * ntasks_q):
        _scan_task(task, ntasks_q, q, qt, db, wt, excluded, k, maxd, per, cidx, cdist, cnt)
    for qi in prange(out_idx.shape[0]):
        _merge_one(qi, cidx, cdist, cnt, k, maxd, out_idx, out_dist)


# as ``_topk_parallel`` without a parallel region: waking threads costs more than small scans
_topk_serial = serial_twin(_topk_parallel, 1)


@njit(cache=True, nogil=True)
def _topk_one(q, db, wt, excluded, k):  # pragma: no cover - compiled
    """``_topk_serial`` for one query over the rows in one part, its buffers allocated here (what
    ``_topk_into`` sets up for a single small scan, without the Python-side setup per call)."""
    words = db.shape[1]
    cap = 2 * k + 64
    per = -(-db.shape[0] // ROW_BLOCK) * ROW_BLOCK
    cidx = np.empty((1, 1, cap), dtype=np.int64)
    cdist = np.empty((1, 1, cap), dtype=np.int32)
    cnt = np.zeros((1, 1), dtype=np.int64)
    out_idx = np.empty((1, k), dtype=np.int64)
    out_dist = np.empty((1, k), dtype=np.int32)
    qt = np.zeros((words, 0), dtype=np.uint64)
    _topk_serial(q, qt, db, wt, excluded, k, words * 64, 1, 1, per, cidx, cdist, cnt, out_idx, out_dist)
    return out_idx, out_dist


@njit(parallel=True, cache=True, nogil=True)
def _distances_kernel(q, db, wt, out):  # pragma: no cover - compiled
    n = db.shape[0]
    nblocks = (n + ROW_BLOCK - 1) // ROW_BLOCK
    for b in prange(nblocks):
        b0 = b * ROW_BLOCK
        b1 = min(n, b0 + ROW_BLOCK)
        buf = np.empty(ROW_BLOCK, dtype=np.int32)
        for qi in range(q.shape[0]):
            block_distances(q[qi], db, b0, b1, wt, buf)
            for i in range(b1 - b0):
                out[qi, b0 + i] = buf[i]


def hamming_distances(query_words: np.ndarray, code_words: np.ndarray) -> np.ndarray:
    """All Hamming distances (nq, n) as uint16 between uint64-word codes (see ``as_words``)."""
    q, db = np.asarray(query_words), np.asarray(code_words)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or db.ndim != 2 or q.dtype != np.uint64 or db.dtype != np.uint64 or q.shape[1] != db.shape[1]:
        raise InvalidInputError(f"query words {q.shape} and code words {db.shape} must be 2-D uint64 of one width")
    if db.shape[1] * 64 > np.iinfo(np.uint16).max:
        raise InvalidInputError(f"codes of {db.shape[1] * 64} bits: distances would not fit uint16")
    ensure_threads()
    out = np.empty((q.shape[0], db.shape[0]), dtype=np.uint16)
    if db.shape[0]:
        _distances_kernel(np.ascontiguousarray(q), np.ascontiguousarray(db), width_tuple(q.shape[1]), out)
    return out


def hamming_topk(
    queries: np.ndarray,
    codes: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k smallest Hamming distances between packed query and document codes.

    ``queries`` (nq, nbytes) and ``codes`` (n, nbytes) are ubinary uint8 (or binary int8), or uint64
    words from ``as_words``. ``exclude`` is an optional bool mask (n,) of rows never returned.
    Returns (indices int64, distances int32), each (nq, min(k, rows left)), ordered by distance then
    by row index, so ties always come back in the same order.
    """
    q = queries if queries.dtype == np.uint64 else as_words(queries)
    db = codes if codes.dtype == np.uint64 else as_words(codes)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or db.ndim != 2:
        raise InvalidInputError(f"query codes {q.shape} and document codes {db.shape} must be 2-D")
    if q.shape[1] != db.shape[1]:
        raise InvalidInputError(f"query codes have {q.shape[1] * 64} bits, documents {db.shape[1] * 64}")
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    n = db.shape[0]
    exclude, live = exclude_mask(exclude, n)
    ensure_threads()
    kk = min(int(k), live)
    nq = q.shape[0]
    words = db.shape[1]
    if nq == 1 and kk > 0 and n * words < _SERIAL_WORDS:  # one small scan: one compiled call, no setup here
        return _topk_one(np.ascontiguousarray(q), np.ascontiguousarray(db), width_tuple(words), exclude, kk)
    out_idx = np.empty((nq, kk), dtype=np.int64)
    out_dist = np.empty((nq, kk), dtype=np.int32)
    if kk == 0:
        return out_idx, out_dist
    q = np.ascontiguousarray(q)
    db = np.ascontiguousarray(db)
    _topk_into(q, db, kk, exclude, None, out_idx, out_dist)
    return out_idx, out_dist


def _topk_into(
    q: np.ndarray,
    db: np.ndarray,
    k: int,
    exclude: np.ndarray,
    nparts: int | None,
    out_idx: np.ndarray,
    out_dist: np.ndarray,
) -> None:
    """Run the fused top-k kernels over query chunks; k <= live rows, arrays already validated.

    ``nparts`` (row parts) defaults by case: single queries split the rows over a few parts per
    thread (evens out threads slowed by other work); batches use one part per thread and split the
    queries into groups; scans smaller than _SERIAL_WORDS word-pairs run without a parallel region."""
    n, words = db.shape
    maxd = words * 64
    wt = width_tuple(words)
    cap = 2 * k + 64
    threads = numba.get_num_threads()
    nblocks = max(1, n // (4 * ROW_BLOCK))
    qchunk = max(1, min(_QCHUNK, _CAND_BUDGET // (12 * cap)))  # large k: fewer queries per call
    for s in range(0, q.shape[0], qchunk):
        e = min(q.shape[0], s + qchunk)
        nq = e - s
        serial = threads == 1 or nq * n * words < _SERIAL_WORDS
        if nq >= _BATCH_MIN:
            qt = np.ascontiguousarray(q[s:e].T)
            parts = nparts or (1 if serial else min(threads, nblocks))
            ntasks_q = -(-nq // _QG) if serial else max(-(-nq // _QG), -(-threads // parts))
        else:
            qt = np.zeros((words, 0), np.uint64)
            parts = nparts or (1 if serial else min(threads * _PARTS_PER_THREAD, nblocks))
            ntasks_q = nq
        while parts > 1 and parts * nq * cap * 12 > _CAND_BUDGET:
            parts //= 2
        per = -(-n // parts)
        per = -(-per // ROW_BLOCK) * ROW_BLOCK
        cidx = np.empty((parts, nq, cap), dtype=np.int64)
        cdist = np.empty((parts, nq, cap), dtype=np.int32)
        cnt = np.zeros((parts, nq), dtype=np.int64)
        run = _topk_serial if serial else _topk_parallel
        run(q[s:e], qt, db, wt, exclude, k, maxd, parts, ntasks_q, per, cidx, cdist, cnt, out_idx[s:e], out_dist[s:e])


def hamming_topk_allowed(
    qwords: np.ndarray, words: np.ndarray, k: int, exclude: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Hamming top-k over the rows ``exclude`` leaves, gathered first: cheaper than a masked scan
    when a few of many rows are left. Same answer as ``hamming_topk(..., exclude=exclude)``."""
    keep = np.flatnonzero(~exclude)
    if keep.size == 0:
        return np.empty((qwords.shape[0], 0), np.int64), np.empty((qwords.shape[0], 0), np.int32)
    r, d = hamming_topk(qwords, words[keep], k)
    return keep[r], d  # ``keep`` ascends: ties still go to the lower row


def preselected_topk(
    qcodes: np.ndarray,
    words: np.ndarray,
    k: int,
    exclude: np.ndarray | None,
    score: Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray]],
    factor: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Score only the Hamming-nearest ``k x factor`` rows of each query with ``score(query, rows)``,
    which returns (positions into ``rows``, scores) of its best k, each (1, k).

    Hamming distance over sign-like bits (sign bits; the median plane of 2bit and 1.5bit codes) is a
    cheap filter for an asymmetric score: on the four shared datasets the top 16 x k by Hamming hold
    the asymmetric top k (NDCG@10 equal to a full scan), at about the cost of the Hamming scan
    (benchmarks/bench_codes.py).
    """
    cand, _ = hamming_topk(qcodes, words, k * factor, exclude=exclude)
    kk = min(k, cand.shape[1])
    rows = np.empty((qcodes.shape[0], kk), np.int64)
    scores = np.empty((qcodes.shape[0], kk), np.float32)
    for i in range(qcodes.shape[0]):
        c = np.sort(cand[i])  # ascending rows: score ties go to the lower row, as everywhere
        r, s = score(i, c)
        rows[i], scores[i] = c[r[0]], s[0]
    return rows, scores
