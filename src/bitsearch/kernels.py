"""Hot loops: exact Hamming top-k over packed sign bits, and rescoring of candidates.

Stage 1 runs in numba, chosen by measurement against FAISS IndexBinaryFlat, usearch and numpy
(benchmarks/bench_kernels.py, bench_peers.py): popcount on 64-bit words with the word loop unrolled
per code width (so LLVM vectorizes it, vpopcntq where the CPU has AVX-512 VPOPCNTDQ), fused with
the selection: each task keeps, per query, the rows under a running threshold in a small buffer
shrunk by counting sort over the small range of distances; no N-length distance array is written.
Single queries vectorize over rows and split the rows over a few parallel parts; batches vectorize
over queries (one row word against 4 queries per instruction) and reuse each row block from cache
for the whole query group. Results are exact, ordered by (distance, row). Rescoring is a few small
matrix products in numpy; the rows they need are read from disk by ``pread_rows``: one compiled
loop of ``pread`` calls, not one Python call per row.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from .errors import InvalidInputError
from .quantize import int8_steps

__all__ = [
    "as_words",
    "exact_topk",
    "hamming_distances",
    "hamming_topk",
    "pread_rows",
    "rescore_bits",
    "rescore_float32",
    "rescore_int8",
    "set_num_threads",
    "top_scored",
]

# Rows scored per step of the single-query kernel (distances of a block land in an L1 buffer).
_RB = 512
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
# Code widths (in 64-bit words) with a kernel specialized (loop fully unrolled) on the width.
_MAX_SPECIAL_WORDS = 32


# libc's pread(fd, buf, count, offset), bound by name so the compiled callers cache (a ctypes
# pointer would not); the buffer is passed as its address.
_pread = types.ExternalFunction("pread", types.intp(types.intc, types.intp, types.intp, types.int64))


@intrinsic
def _popcount64(typingctx, x):
    """Hardware popcount of a uint64 (LLVM ctpop; vectorized to vpopcntq where the CPU has it)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@njit(cache=True, nogil=True)
def _block_dist(qrow, db, b0, b1, wt, buf):  # pragma: no cover - compiled
    """Distances of rows b0..b1 to one query into buf (int32). ``wt`` is a tuple whose length is the
    word count: a compile-time constant, so the word loop unrolls and, reading the C-contiguous
    ``db`` through its flat view at that constant stride, the row loop vectorizes (a 2-D index
    carries the row stride at run time: LLVM kept it scalar, 1.35x slower at 6 words)."""
    w = len(wt) if len(wt) > 0 else db.shape[1]
    sub = db.reshape(-1)[b0 * w : b1 * w]  # a 0-based view: LLVM vectorizes this form, not db[b0 + i]
    for i in range(b1 - b0):
        d = np.uint64(0)
        for j in range(w):
            d += _popcount64(qrow[j] ^ sub[i * w + j])
        buf[i] = d


@njit(cache=True, nogil=True)
def _kth_distance(cd, c, k, maxd, hist):  # pragma: no cover - compiled
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
def _compact(ci, cd, c, k, maxd, hist):  # pragma: no cover - compiled
    """Keep the best k of the c candidates (ci, cd) in place, in their order; ties by earlier position.

    Candidates arrive in ascending row order, so "earlier" is "lower row". Returns (kept, accept):
    later rows are accepted only when their distance is <= accept."""
    if c <= k:
        return c, maxd
    t, need = _kth_distance(cd, c, k, maxd, hist)
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
    m, _ = _compact(ci, cd, m, k, maxd, hist[: maxd + 1])
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
def _scan_task(task, ntasks_q, q, qt, db, wt, excluded, k, maxd, per, cidx, cdist, cnt):  # pragma: no cover
    """One parallel task: a contiguous part of the rows against one group of queries.

    Keeps per query the rows at or under a running threshold in a small buffer (cidx/cdist of this
    part), shrunk by counting sort when full; no N-length distance array is ever written. Single
    queries (``qt`` empty) score each 512-row block vectorized over rows; batches score 128-row
    blocks against the whole group vectorized over queries (``qt``: words x queries)."""
    p = task // ntasks_q
    n = db.shape[0]
    has_ex = excluded.shape[0] == n
    start = p * per
    end = min(n, start + per)
    hist = np.empty(maxd + 1, dtype=np.int64)
    cap = cidx.shape[2]
    c_p = cnt[p]
    if qt.shape[1] == 0:
        qi = task % ntasks_q
        buf = np.empty(_RB, dtype=np.int32)
        ci = cidx[p, qi]
        cd = cdist[p, qi]
        t = maxd
        c = 0
        for b0 in range(start, end, _RB):
            b1 = min(end, b0 + _RB)
            _block_dist(q[qi], db, b0, b1, wt, buf)
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
                        c, t = _compact(ci, cd, c, k, maxd, hist)
        c_p[qi], _ = _compact(ci, cd, c, k, maxd, hist)
        return
    nq = qt.shape[1]
    per_g = (nq + ntasks_q - 1) // ntasks_q
    g0 = (task % ntasks_q) * per_g
    g1 = min(nq, g0 + per_g)
    if g0 >= g1:
        return
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
                        c, thr[gi] = _compact(cidx[p, qi], cdist[p, qi], c, k, maxd, hist)
                    c_p[qi] = c
    for qi in range(g0, g1):
        c_p[qi], _ = _compact(cidx[p, qi], cdist[p, qi], c_p[qi], k, maxd, hist)


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
                d += _popcount64(qt[j, qi] ^ sub[i, j])
            dist[i, qi] = d


@njit(parallel=True, cache=True, nogil=True)
def _topk_parallel(
    q, qt, db, wt, excluded, k, maxd, nparts, ntasks_q, per, cidx, cdist, cnt, out_idx, out_dist
):  # pragma: no cover
    for task in prange(nparts * ntasks_q):
        _scan_task(task, ntasks_q, q, qt, db, wt, excluded, k, maxd, per, cidx, cdist, cnt)
    for qi in prange(out_idx.shape[0]):
        _merge_one(qi, cidx, cdist, cnt, k, maxd, out_idx, out_dist)


@njit(cache=True, nogil=True)
def _topk_serial(
    q, qt, db, wt, excluded, k, maxd, nparts, ntasks_q, per, cidx, cdist, cnt, out_idx, out_dist
):  # pragma: no cover
    """As ``_topk_parallel`` without a parallel region: waking threads costs more than small scans."""
    for task in range(nparts * ntasks_q):
        _scan_task(task, ntasks_q, q, qt, db, wt, excluded, k, maxd, per, cidx, cdist, cnt)
    for qi in range(out_idx.shape[0]):
        _merge_one(qi, cidx, cdist, cnt, k, maxd, out_idx, out_dist)


@njit(cache=True, nogil=True)
def _topk_one(q, db, wt, excluded, k):  # pragma: no cover - compiled
    """``_topk_serial`` for one query over the rows in one part, its buffers allocated here (what
    ``_topk_into`` sets up for a single small scan, without the Python-side setup per call)."""
    words = db.shape[1]
    cap = 2 * k + 64
    per = -(-db.shape[0] // _RB) * _RB
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
    nblocks = (n + _RB - 1) // _RB
    for b in prange(nblocks):
        b0 = b * _RB
        b1 = min(n, b0 + _RB)
        buf = np.empty(_RB, dtype=np.int32)
        for qi in range(q.shape[0]):
            _block_dist(q[qi], db, b0, b1, wt, buf)
            for i in range(b1 - b0):
                out[qi, b0 + i] = buf[i]


# the kernels' "no exclusion mask" (empty, never written)
_NO_EXCLUDE = np.zeros(0, dtype=np.bool_)


def _width_tuple(words: int) -> tuple[int, ...]:
    """The tuple whose length tells the kernels the code width (empty: generic loop, not unrolled)."""
    return (0,) * words if words <= _MAX_SPECIAL_WORDS else ()


def set_num_threads(n: int) -> None:
    """Set the number of threads the stage-1 kernels use (default: all cores numba sees)."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


if os.environ.get("BITSEARCH_NUM_THREADS"):
    set_num_threads(int(os.environ["BITSEARCH_NUM_THREADS"]))


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


def hamming_distances(query_words: np.ndarray, code_words: np.ndarray) -> np.ndarray:
    """All Hamming distances (nq, n) as uint16 between uint64-word codes (see ``as_words``)."""
    q, db = np.asarray(query_words), np.asarray(code_words)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or db.ndim != 2 or q.dtype != np.uint64 or db.dtype != np.uint64 or q.shape[1] != db.shape[1]:
        raise InvalidInputError(f"query words {q.shape} and code words {db.shape} must be 2-D uint64 of one width")
    if db.shape[1] * 64 > np.iinfo(np.uint16).max:
        raise InvalidInputError(f"codes of {db.shape[1] * 64} bits: distances would not fit uint16")
    out = np.empty((q.shape[0], db.shape[0]), dtype=np.uint16)
    if db.shape[0]:
        _distances_kernel(np.ascontiguousarray(q), np.ascontiguousarray(db), _width_tuple(q.shape[1]), out)
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
    if exclude is not None:
        exclude = np.ascontiguousarray(exclude, dtype=np.bool_)
        if exclude.shape != (n,):
            raise InvalidInputError(f"exclude mask must have shape ({n},), got {exclude.shape}")
        live = n - int(exclude.sum())
    else:
        exclude = _NO_EXCLUDE
        live = n
    kk = min(int(k), live)
    nq = q.shape[0]
    words = db.shape[1]
    if nq == 1 and kk > 0 and n * words < _SERIAL_WORDS:  # one small scan: one compiled call, no setup here
        return _topk_one(np.ascontiguousarray(q), np.ascontiguousarray(db), _width_tuple(words), exclude, kk)
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
    wt = _width_tuple(words)
    cap = 2 * k + 64
    threads = numba.get_num_threads()
    nblocks = max(1, n // (4 * _RB))
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
        per = -(-per // _RB) * _RB
        cidx = np.empty((parts, nq, cap), dtype=np.int64)
        cdist = np.empty((parts, nq, cap), dtype=np.int32)
        cnt = np.zeros((parts, nq), dtype=np.int64)
        run = _topk_serial if serial else _topk_parallel
        run(q[s:e], qt, db, wt, exclude, k, maxd, parts, ntasks_q, per, cidx, cdist, cnt, out_idx[s:e], out_dist[s:e])


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


def exact_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k largest scores per row (nq, n), ties by ascending index, NaN after -inf. Returns (indices, scores)."""
    nq, n = scores.shape
    kk = min(k, n)
    if kk <= 0:
        return np.empty((nq, 0), np.int64), np.empty((nq, 0), scores.dtype)
    nan = np.isnan(scores)
    key = np.where(nan, -np.inf, scores)  # NaN compares as -inf while selecting, then sorts after it
    if kk < n:
        part = np.argpartition(-key, kk - 1, axis=1)[:, :kk]
        # argpartition may cut through a tie at the k-th score: gather every index tying with it
        kth = np.take_along_axis(key, part, 1).min(axis=1)
        idx_rows = []
        for r in range(nq):
            cand = np.flatnonzero(key[r] >= kth[r])
            order = np.lexsort((cand, nan[r, cand], -key[r, cand]))[:kk]
            idx_rows.append(cand[order])
        idx = np.asarray(idx_rows, dtype=np.int64)
    else:
        idx = np.lexsort((np.broadcast_to(np.arange(n), scores.shape), nan, -key), axis=1).astype(np.int64)
    return idx, np.take_along_axis(scores, idx, 1)


def int8_query_weights(
    queries: np.ndarray, ranges: np.ndarray, steps: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fold int8 dequantization into float queries (nq, dim): ``codes @ w[q] + const[q]`` equals
    ``dequantize_int8(codes, ranges) @ queries[q]``, so rows are only converted, never rescaled.
    ``steps`` is ``int8_steps(ranges)`` where the caller keeps it (saves recomputing it per query)."""
    r = np.asarray(ranges, dtype=np.float32)
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim < 2:
        q = q.reshape(1, -1)
    if q.ndim != 2 or r.shape != (2, q.shape[1]):
        raise InvalidInputError(f"queries {q.shape} do not fit int8 ranges {r.shape} (2, dim)")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked below
        w = (q * (int8_steps(r) if steps is None else steps)).astype(np.float32, copy=False)
        const = q @ r[0] + np.float32(128.5) * np.add.reduce(w, axis=1, dtype=np.float32)
    if not np.isfinite(const).all():  # an overflowing weight makes its query's sum inf or NaN
        raise InvalidInputError(
            "queries x int8 bucket widths overflow float32 (queries or stored int8 ranges too large to score)"
        )
    return w, const.astype(np.float32, copy=False)


def rescore_int8(
    query: np.ndarray, codes: np.ndarray, ranges: np.ndarray, steps: np.ndarray | None = None
) -> np.ndarray:
    """Dot products of a float32 query (dim,) with *dequantized* int8 rows (m, dim); ``steps`` as in
    ``int8_query_weights``."""
    w, const = int8_query_weights(query, ranges, steps)
    return np.asarray(codes).astype(np.float32) @ w[0] + const[0]


def rescore_bits(query: np.ndarray, codes: np.ndarray, dim: int) -> np.ndarray:
    """Dot products of a float32 query (dim,) with +-1 sign vectors unpacked from ubinary rows."""
    bits = np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=-1)[:, :dim].astype(np.float32)
    # sum q_i * (2 b_i - 1) = 2 q.b - sum q
    q = query.astype(np.float32)
    return 2 * (bits @ q) - q.sum(dtype=np.float32)


def rescore_float32(query: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Dot products of a float32 query (dim,) with float32 rows (m, dim)."""
    return np.asarray(rows, dtype=np.float32) @ query.astype(np.float32)


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
    Compiled, so a search pays one call, not one Python call per row; rows are read, not
    memory-mapped (see ``collection.DiskRows``).
    """
    m = rows.shape[0]
    row_bytes = out.shape[1]
    nfiles = starts.shape[0] - 1
    if out.shape[0] < m or nfiles < 0 or fds.shape[0] < nfiles or data_offsets.shape[0] < nfiles or starts[0] != 0:
        return -1  # arrays that do not fit: never written out of bounds, the caller's Python path decides
    for f in range(nfiles):
        if starts[f + 1] < starts[f]:  # a row's file is found by binary search over ascending starts
            return -1
    total = starts[nfiles]
    for i in range(m):
        if rows[i] < 0 or rows[i] >= total:
            return i + 1
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
        pos = data_offsets[s] + (r0 - starts[s]) * row_bytes
        got = 0
        while got < want:
            n = _pread(np.intc(fds[s]), dest + got, want - got, pos + got)
            if n <= 0:
                return -1
            got += n
        if b - a > 1:
            for j in range(b - a):
                out[order[a + j]] = tmp[j * row_bytes : (j + 1) * row_bytes]
        a = b
    return 0
