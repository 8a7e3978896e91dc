"""Dot products of float queries with int8, float32 and sign-bit rows: the rescoring stages, and the
exact stage-1 scan over int8 / float32 rows held in RAM (``dot_topk``).

int8 rows are scored without being rescaled: each dimension's bucket width is folded into the query
(``int8_query_weights``), so a row is only converted to float. Rescoring is a few small matrix
products in numpy; the exact scan runs in numba rather than BLAS (whose threads thrash on a busy
machine).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..errors import InvalidInputError
from ..quantize import int8_steps
from .select import scan_topk
from .threads import SCAN_BLOCK, scan_blocks, serial_twin

__all__ = [
    "dot_topk",
    "int8_block_scores",
    "int8_query_weights",
    "rescore_bits",
    "rescore_float32",
    "rescore_int8",
]


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


def int8_block_scores(queries: np.ndarray, block: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Scores (nq, m) of many float queries against a block of int8 rows (m, dim), dequantized: one
    BLAS product, the scale folded into the queries."""
    w, const = int8_query_weights(queries, ranges)
    return w @ block.astype(np.float32).T + const[:, None]


def rescore_bits(query: np.ndarray, codes: np.ndarray, dim: int) -> np.ndarray:
    """Dot products of a float32 query (dim,) with +-1 sign vectors unpacked from ubinary rows."""
    bits = np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=-1)[:, :dim].astype(np.float32)
    # sum q_i * (2 b_i - 1) = 2 q.b - sum q
    q = query.astype(np.float32)
    return 2 * (bits @ q) - q.sum(dtype=np.float32)


def rescore_float32(query: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Dot products of a float32 query (dim,) with float32 rows (m, dim)."""
    return np.asarray(rows, dtype=np.float32) @ query.astype(np.float32)


@njit(parallel=True, cache=True, nogil=True, fastmath=True)
def _dot_scores(w, const, rows, out):  # pragma: no cover - compiled
    n, dim = rows.shape
    nq = w.shape[0]
    for b in prange((n + SCAN_BLOCK - 1) // SCAN_BLOCK):
        start = b * SCAN_BLOCK
        end = min(n, start + SCAN_BLOCK)
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
    ``const`` (see ``int8_query_weights``): the scan then scores dequantized values without
    converting the rows.
    """
    w = np.ascontiguousarray(np.atleast_2d(weights), dtype=np.float32)
    c = np.zeros(w.shape[0], np.float32) if const is None else np.ascontiguousarray(const, dtype=np.float32)
    if w.ndim != 2 or rows.ndim != 2 or rows.dtype not in (np.int8, np.float32) or w.shape[1] != rows.shape[1]:
        raise InvalidInputError(f"weights {w.shape} do not fit int8 or float32 rows {rows.dtype} {rows.shape}")
    if c.shape != (w.shape[0],):
        raise InvalidInputError(f"const must have shape ({w.shape[0]},), got {c.shape}")
    kernel = serial_twin(_dot_scores, scan_blocks(rows.shape[0]))
    return scan_topk(w.shape[0], rows.shape[0], k, exclude, lambda a, b, out: kernel(w[a:b], c[a:b], rows, out))
