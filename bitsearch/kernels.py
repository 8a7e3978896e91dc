"""Hot loops: exact Hamming top-k over packed sign bits, and rescoring of candidates.

Stage 1 runs in numba (popcount on 64-bit words, counting-sort selection over the small range of
Hamming distances), chosen by measurement against numpy's ``bitwise_count`` and FAISS
(see benchmarks/). Rescoring is a few small matrix products in numpy.
"""

from __future__ import annotations

import os

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from .errors import InvalidInputError

__all__ = [
    "as_words",
    "exact_topk",
    "hamming_distances",
    "hamming_topk",
    "rescore_bits",
    "rescore_float32",
    "rescore_int8",
    "set_num_threads",
]

# Rows of codes handled per parallel task: 16k rows x 48 bytes stays in L2 for a batch of queries.
_BLOCK = 16384
# Bytes of distances one batch step may hold; queries are processed in chunks below this.
_DIST_BUDGET = 32 * 1024 * 1024


@intrinsic
def _popcount64(typingctx, x):
    """Hardware popcount of a uint64 (LLVM ctpop)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@njit(parallel=True, cache=True, nogil=True)
def _distances_kernel(q64, db64, out):  # pragma: no cover - compiled
    n = db64.shape[0]
    nq = q64.shape[0]
    w = db64.shape[1]
    nblocks = (n + _BLOCK - 1) // _BLOCK
    for b in prange(nblocks):
        start = b * _BLOCK
        end = min(n, start + _BLOCK)
        for qi in range(nq):
            for i in range(start, end):
                d = np.uint64(0)
                for j in range(w):
                    d += _popcount64(q64[qi, j] ^ db64[i, j])
                out[qi, i] = d


@njit(cache=True, nogil=True)
def _select_row(dist, excluded, k, maxd, out_idx, out_dist):  # pragma: no cover - compiled
    """Top-k smallest of one distance row, ties by index; counting sort over 0..maxd."""
    n = dist.shape[0]
    has_ex = excluded.shape[0] == n
    hist = np.zeros(maxd + 1, dtype=np.int64)
    for i in range(n):
        if has_ex and excluded[i]:
            continue
        hist[dist[i]] += 1
    # threshold t: smallest distance at which the running count reaches k
    total = 0
    t = maxd
    for d in range(maxd + 1):
        if total + hist[d] >= k:
            t = d
            break
        total += hist[d]
    need_t = k - total  # rows to take at distance t (by ascending index)
    offsets = np.zeros(maxd + 1, dtype=np.int64)
    acc = 0
    for d in range(t + 1):
        offsets[d] = acc
        acc += hist[d]
    taken_t = 0
    for i in range(n):
        d = dist[i]
        if d > t or (has_ex and excluded[i]):
            continue
        if d == t:
            if taken_t >= need_t:
                continue
            taken_t += 1
        pos = offsets[d]
        offsets[d] = pos + 1
        out_idx[pos] = i
        out_dist[pos] = d


@njit(parallel=True, cache=True, nogil=True)
def _select_rows(dists, excluded, k, maxd, out_idx, out_dist):  # pragma: no cover - compiled
    for qi in prange(dists.shape[0]):
        _select_row(dists[qi], excluded, k, maxd, out_idx[qi], out_dist[qi])


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
    out = np.empty((query_words.shape[0], code_words.shape[0]), dtype=np.uint16)
    if code_words.shape[0]:
        _distances_kernel(query_words, code_words, out)
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
        exclude = np.zeros(0, dtype=np.bool_)
        live = n
    kk = min(int(k), live)
    nq = q.shape[0]
    out_idx = np.empty((nq, kk), dtype=np.int64)
    out_dist = np.empty((nq, kk), dtype=np.int32)
    if kk == 0:
        return out_idx, out_dist
    maxd = q.shape[1] * 64
    chunk = max(1, _DIST_BUDGET // max(1, 2 * n))
    q = np.ascontiguousarray(q)
    db = np.ascontiguousarray(db)
    for s in range(0, nq, chunk):
        dists = hamming_distances(q[s : s + chunk], db)
        _select_rows(dists, exclude, kk, maxd, out_idx[s : s + chunk], out_dist[s : s + chunk])
    return out_idx, out_dist


def exact_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k largest scores per row (nq, n), ties by ascending index. Returns (indices, scores)."""
    nq, n = scores.shape
    kk = min(k, n)
    if kk == 0:
        return np.empty((nq, 0), np.int64), np.empty((nq, 0), scores.dtype)
    if kk < n:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        # argpartition may cut through a tie at the k-th score: gather every index tying with it
        kth = np.take_along_axis(scores, part, 1).min(axis=1)
        idx_rows = []
        for r in range(nq):
            cand = np.flatnonzero(scores[r] >= kth[r])
            order = np.lexsort((cand, -scores[r, cand]))[:kk]
            idx_rows.append(cand[order])
        idx = np.asarray(idx_rows, dtype=np.int64)
    else:
        idx = np.lexsort((np.broadcast_to(np.arange(n), scores.shape), -scores), axis=1).astype(np.int64)
    return idx, np.take_along_axis(scores, idx, 1)


def rescore_int8(query: np.ndarray, codes: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Dot products of a float32 query (dim,) with *dequantized* int8 rows (m, dim).

    Equal to ``dequantize_int8(codes, ranges) @ query`` but folds the per-dimension scale into the
    query, so the candidate rows are only converted, never rescaled.
    """
    r = np.asarray(ranges, dtype=np.float32)
    steps = (r[1] - r[0]) / np.float32(255)
    steps = np.where(steps == 0, 1, steps).astype(np.float32)
    w = query.astype(np.float32) * steps
    const = np.float32(query.astype(np.float32) @ r[0]) + np.float32(128.5) * w.sum(dtype=np.float32)
    return np.asarray(codes).astype(np.float32) @ w + const


def rescore_bits(query: np.ndarray, codes: np.ndarray, dim: int) -> np.ndarray:
    """Dot products of a float32 query (dim,) with +-1 sign vectors unpacked from ubinary rows."""
    bits = np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=-1)[:, :dim].astype(np.float32)
    # sum q_i * (2 b_i - 1) = 2 q.b - sum q
    q = query.astype(np.float32)
    return 2 * (bits @ q) - q.sum(dtype=np.float32)


def rescore_float32(query: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Dot products of a float32 query (dim,) with float32 rows (m, dim)."""
    return np.asarray(rows, dtype=np.float32) @ query.astype(np.float32)
