"""Corrected low-bit codes for inner-product search: RaBitQ and extended RaBitQ.

RaBitQ (Gao & Long, "RaBitQ: Quantizing High-Dimensional Vectors with a Theoretical Error Bound for
Approximate Nearest Neighbor Search", SIGMOD 2024) stores, per vector, the sign bits of the centred,
randomly rotated vector plus a scalar correction, and estimates inner products without bias with an
O(1/sqrt(D)) error. Extended RaBitQ (Gao, Gou, Xu, Yang, Long, Wong, "Practical and Asymptotically
Optimal Quantization of High-Dimensional Vectors in Euclidean Space for Approximate Nearest Neighbor
Search", SIGMOD 2025) generalizes the code to B bits per dimension: each vector is snapped to the
uniform grid point of best cosine after a per-vector rescaling, with the same kind of correction.

What a vector ``x`` (dimension ``dim``) becomes, given the fitted ``RabitqParams``:

* ``r = (x - centre) @ rotation``: centred on the corpus mean, then rotated by a seeded Haar-random
  orthogonal matrix (optional), the RaBitQ preprocessing;
* ``u``: ``bits`` bits per dimension (1, 2 or 4), stored as ``bits`` bit planes of ``dim`` bits each,
  padded with zero bits to a multiple of 64 (``pdim``) so that a plane is whole uint64 words; the code
  vector is ``xbar = u - m`` with ``m = (2**bits - 1) / 2`` (for 1 bit: +-1/2, the sign);
* two float32 factors (8 bytes): ``scale = |r|**2 / <xbar, r>``, the RaBitQ correction, which makes
  ``<r, q'> ~ scale * <xbar, q'>`` unbiased over the random rotation and exact when ``q' = r``; and
  ``offset = <x - centre, centre>``.

A query ``q`` is scored against every code as ``<centre, q> + offset + scale * <xbar, (q - centre) @ rotation>``:
``<x, q> = <centre, q> + <x - centre, centre> + <x - centre, q - centre>``, the first two terms exact and the
last estimated. Estimating it with the centred query, as FAISS does, makes the error proportional to
``|q - centre|`` instead of ``|q|``: smaller for embeddings, whose mean is far from zero. With a
float32 query (a per-byte table of partial sums, exact up to float rounding) or with the rotated query
rounded to 4 bits per dimension (RaBitQ's B_q = 4) and scored with popcounts of bit-plane ANDs. Padding
bits are zero in every code and the padded query coordinates are zero, so they never change a score.

Everything is numpy and numba; ``search`` keeps the top k per query inside the scan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
from numba import njit, prange

from .errors import CorruptCollectionError, DimensionMismatchError, InvalidInputError
from .files import read_versioned_json, write_atomic
from .kernels.bits import popcount64
from .quantize import check_documents, check_queries

__all__ = [
    "BITS",
    "FORMAT_VERSION",
    "QUERY_BITS",
    "PreparedQueries",
    "RabitqParams",
    "bytes_per_vector",
    "encode",
    "estimate",
    "fit",
    "load_params",
    "prepare_queries",
    "quantize_query",
    "random_rotation",
    "save_params",
    "search",
    "transform",
    "unpack_codes",
]

BITS: tuple[int, ...] = (1, 2, 4)  # bits per dimension of the data code
QUERY_BITS: tuple[int | None, ...] = (None, 4)  # None: float32 query
FORMAT_VERSION = 1
WORD = 64  # a plane is padded to whole uint64 words
_FORMAT = "bitsearch-rabitq"


@dataclass(frozen=True)
class RabitqParams:
    """What ``fit`` learns and ``encode`` / ``search`` need: the centre, the rotation, the code width.

    ``rotation`` is (dim, dim) float32 and orthogonal, or None (identity); ``seed`` regenerates it.
    """

    dim: int
    bits: int
    centre: np.ndarray
    rotation: np.ndarray | None
    seed: int | None

    @property
    def pdim(self) -> int:
        """Dimensions per bit plane once padded to whole 64-bit words."""
        return -(-self.dim // WORD) * WORD

    @property
    def plane_bytes(self) -> int:
        return self.pdim // 8

    @property
    def code_bytes(self) -> int:
        """Bytes of one vector's code (``bits`` planes), factors not included."""
        return self.bits * self.plane_bytes

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(x - centre) @ rotation`` in float64 (the space the codes live in)."""
        return transform(self, x)

    def to_dict(self) -> dict[str, object]:
        """JSON-safe record of everything but the rotation matrix (a collection stores it beside)."""
        return {"kind": "rabitq", "bits": self.bits, "centre": self.centre.tolist(), "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, object], rotation: np.ndarray | None) -> RabitqParams:
        """The parameters of a ``to_dict`` record (already validated) and the rotation matrix read back."""
        centre = np.asarray(d["centre"], dtype=np.float32)
        seed = d.get("seed")
        return cls(int(centre.shape[0]), int(d["bits"]), centre, rotation, None if seed is None else int(seed))  # type: ignore[call-overload]

    def encode_signs(self, x: np.ndarray) -> np.ndarray:
        """The sign plane of ``x`` (n, dim) as ``encode`` packs it (n, ``plane_bytes``) uint8: what
        Hamming distance between a query and 1-bit codes compares."""
        r = self.transform(x)
        padded = np.zeros((r.shape[0], self.pdim), dtype=np.uint8)
        padded[:, : self.dim] = r > 0
        return np.packbits(padded, axis=1, bitorder="little")

    def describe(self) -> dict[str, object]:
        return {
            "family": "rabitq",
            "dim": self.dim,
            "bits": self.bits,
            "rotation": self.rotation is not None,
            "seed": self.seed,
            "bytes_per_vector": bytes_per_vector(self.dim, self.bits),
            "cites": "Gao & Long, SIGMOD 2024 (RaBitQ)"
            + (", Gao et al., SIGMOD 2025 (extended RaBitQ)" * (self.bits > 1)),
        }


def bytes_per_vector(dim: int, bits: int = 1) -> int:
    """RAM bytes per vector: ``bits`` padded planes of ``dim`` bits plus 8 bytes of factors."""
    return bits * (-(-dim // WORD) * WORD) // 8 + 8


def random_rotation(dim: int, seed: int) -> np.ndarray:
    """A Haar-distributed random orthogonal (dim, dim) float32 matrix from ``seed`` (QR of a Gaussian,
    signs fixed by R's diagonal), the same construction as ``quantize.CodeBook``'s rotation."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def fit(embeddings: object, bits: int = 1, rotation: bool = True, seed: int = 0) -> RabitqParams:
    """Learn the centre (mean of ``embeddings``, in float64) and draw the rotation (``seed``).

    ``bits``: 1 (RaBitQ) or 2 / 4 (extended RaBitQ). ``rotation=False`` keeps the coordinates as they
    are (no guarantee of unbiasedness then, but sometimes better on embeddings whose coordinates are
    already well spread).
    """
    if bits not in BITS:
        raise InvalidInputError(f"bits must be one of {BITS}, got {bits!r}")
    x = check_documents(embeddings, name="embeddings")
    dim = int(x.shape[1])
    centre = x.astype(np.float64).mean(axis=0).astype(np.float32)
    rot = random_rotation(dim, int(seed)) if rotation else None
    return RabitqParams(dim, int(bits), centre, rot, int(seed) if rotation else None)


def transform(params: RabitqParams, x: np.ndarray) -> np.ndarray:
    """Centre and rotate ``x`` (n, dim) in float64."""
    out = np.asarray(x, dtype=np.float64) - params.centre.astype(np.float64)
    if params.rotation is not None:
        out = out @ params.rotation.astype(np.float64)
    return out


def r_centre(params: RabitqParams, x: np.ndarray) -> np.ndarray:
    """``<x - centre, centre>`` per row (the exact term of the estimate that depends on the vector)."""
    c = params.centre.astype(np.float64)
    return (np.asarray(x, dtype=np.float64) - c) @ c


def encode(params: RabitqParams, embeddings: object) -> tuple[np.ndarray, np.ndarray]:
    """Codes (n, ``code_bytes``) uint8 (bit planes, least significant first, little-endian bits) and
    factors (n, 2) float32: ``scale`` (the RaBitQ correction) and ``offset`` (<x - centre, centre>).

    A vector equal to the centre gets scale 0: its estimate is ``<centre, q>``, which is exact.
    """
    x = check_documents(embeddings, params.dim, name="embeddings")
    n = x.shape[0]
    codes = np.zeros((n, params.code_bytes), dtype=np.uint8)
    factors = np.zeros((n, 2), dtype=np.float32)
    step = 65536
    for s in range(0, n, step):
        r = transform(params, x[s : s + step])
        u = _grid_codes(r, params.bits)
        xbar = u - (2**params.bits - 1) / 2
        norm2 = np.einsum("ij,ij->i", r, r)
        dot = np.einsum("ij,ij->i", xbar, r)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(dot > 0, norm2 / dot, 0.0)
        factors[s : s + step, 0] = scale
        factors[s : s + step, 1] = r_centre(params, x[s : s + step])
        codes[s : s + step] = _pack_planes(u, params.bits, params.pdim)
    return codes, factors


def _pack_planes(u: np.ndarray, bits: int, pdim: int) -> np.ndarray:
    n, dim = u.shape
    padded = np.zeros((n, pdim), dtype=np.uint8)
    out = []
    for b in range(bits):
        padded[:, :dim] = (u.astype(np.int64) >> b) & 1
        out.append(np.packbits(padded, axis=1, bitorder="little"))
    return np.concatenate(out, axis=1)


def unpack_codes(params: RabitqParams, codes: np.ndarray) -> np.ndarray:
    """The integer code ``u`` (n, dim) in 0 .. 2**bits - 1 of packed ``codes``."""
    pb = params.plane_bytes
    u = np.zeros((codes.shape[0], params.dim), dtype=np.int64)
    for b in range(params.bits):
        plane = np.unpackbits(codes[:, b * pb : (b + 1) * pb], axis=1, bitorder="little")[:, : params.dim]
        u += plane.astype(np.int64) << b
    return u


def _grid_codes(r: np.ndarray, bits: int) -> np.ndarray:
    """Extended RaBitQ's code: the grid point ``u - m`` (u in 0 .. 2**bits - 1) of best cosine with
    ``r`` over per-vector rescalings ``t`` (``u = clip(round(t * r + m))``); 1 bit is the sign."""
    if bits == 1:
        return (r > 0).astype(np.int64)
    return _best_grid(np.ascontiguousarray(r), bits, 48)


@njit(cache=True, parallel=True)
def _best_grid(r, bits, ncand):  # pragma: no cover - compiled
    n, dim = r.shape
    top = 2**bits - 1
    m = top / 2.0
    out = np.zeros((n, dim), dtype=np.int64)
    for i in prange(n):
        amax = 0.0
        for j in range(dim):
            amax = max(amax, abs(r[i, j]))
        if amax == 0.0:
            for j in range(dim):
                out[i, j] = int(m + 0.5)
            continue
        best = -1.0
        best_t = 0.0
        for c in range(ncand):
            # from "the largest coordinate just reaches the top level" to clipping a third of the range
            t = (m + 0.5) / amax * (0.25 + 1.75 * c / (ncand - 1))
            dot = 0.0
            nn = 0.0
            for j in range(dim):
                v = np.floor(t * r[i, j] + m + 0.5)
                v = min(max(v, 0.0), top)
                xb = v - m
                dot += xb * r[i, j]
                nn += xb * xb
            cos = dot / np.sqrt(nn) if nn > 0 else -1.0
            if cos > best:
                best = cos
                best_t = t
        for j in range(dim):
            v = np.floor(best_t * r[i, j] + m + 0.5)
            out[i, j] = int(min(max(v, 0.0), top))
    return out


# ----------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class PreparedQueries:
    """Rotated queries and what the kernels need from them (see ``prepare_queries``)."""

    qc: np.ndarray  # (nq,) float64: <centre, q>
    rq: np.ndarray  # (nq, pdim) float32: centred, rotated query, zero-padded
    qsum: np.ndarray  # (nq,) float64: sum of the rotated query's coordinates (the quantized ones for 4 bits)
    lut: np.ndarray | None  # (nq, plane_bytes, 256) float32: per byte, sum of rq over its set bits
    planes: np.ndarray | None  # (nq, 4, words) uint64: bit planes of the 4-bit query
    lo: np.ndarray | None  # (nq,) float64: value of the 4-bit level 0
    delta: np.ndarray | None  # (nq,) float64: step between 4-bit levels


def quantize_query(rq: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round rotated queries ``rq`` (nq, >= dim) to 4 bits per dimension on each query's own range.

    Returns ``(levels (nq, dim) int64 in 0..15, lo, delta)``: ``rq ~ lo + delta * levels``. Rounding to
    nearest (deterministic), as in RaBitQ with B_q = 4 but without its random dither.
    """
    v = np.asarray(rq, dtype=np.float64)[:, :dim]
    lo = v.min(axis=1)
    hi = v.max(axis=1)
    delta = (hi - lo) / 15.0
    delta = np.where(delta > 0, delta, 1.0)
    levels = np.clip(np.rint((v - lo[:, None]) / delta[:, None]), 0, 15).astype(np.int64)
    return levels, lo, delta


def prepare_queries(params: RabitqParams, queries: object, query_bits: int | None = None) -> PreparedQueries:
    """Validate, centre, rotate and (for ``query_bits=4``) quantize ``queries``; build the float table otherwise."""
    if query_bits not in QUERY_BITS:
        raise InvalidInputError(f"query_bits must be None (float32) or 4, got {query_bits!r}")
    q = check_queries(queries, params.dim, name="queries").astype(np.float64)
    nq = q.shape[0]
    qc = q @ params.centre.astype(np.float64)
    r = transform(params, q)
    rq = np.zeros((nq, params.pdim), dtype=np.float32)
    rq[:, : params.dim] = r
    if query_bits is None:
        sub = rq.reshape(nq, params.plane_bytes, 8)
        lut = np.ascontiguousarray(sub @ _BYTE_BITS.T)  # (nq, bytes, 256), float32
        return PreparedQueries(qc, rq, rq.astype(np.float64).sum(axis=1), lut, None, None, None)
    levels, lo, delta = quantize_query(r, params.dim)
    padded = np.zeros((nq, params.pdim), dtype=np.int64)
    padded[:, : params.dim] = levels
    planes = np.stack(
        [
            np.packbits(((padded >> p) & 1).astype(np.uint8), axis=1, bitorder="little").view(np.uint64)
            for p in range(4)
        ],
        axis=1,
    )
    qsum = lo * params.dim + delta * levels.sum(axis=1)
    return PreparedQueries(qc, rq, qsum, None, np.ascontiguousarray(planes), lo, delta)


_BYTE_BITS = ((np.arange(256)[:, None] >> np.arange(8)[None, :]) & 1).astype(np.float32)  # (256, 8), little-endian


# ----------------------------------------------------------------------------- kernels


@njit(cache=True, nogil=True, inline="always")
def _score_float(codes, i, qi, lut, nbytes, bits):  # pragma: no cover - compiled
    s = 0.0
    w = 1.0
    for b in range(bits):
        acc = np.float32(0.0)
        off = b * nbytes
        for g in range(nbytes):
            acc += lut[qi, g, codes[i, off + g]]
        s += w * acc
        w *= 2.0
    return s


@njit(cache=True, nogil=True, inline="always")
def _score_q4(words, i, qi, planes, nwords, bits, lo, delta):  # pragma: no cover - compiled
    acc_u = 0
    acc_uv = 0
    for b in range(bits):
        off = b * nwords
        pu = 0
        p0 = 0
        p1 = 0
        p2 = 0
        p3 = 0
        for j in range(nwords):
            c = words[i, off + j]
            pu += popcount64(c)
            p0 += popcount64(c & planes[qi, 0, j])
            p1 += popcount64(c & planes[qi, 1, j])
            p2 += popcount64(c & planes[qi, 2, j])
            p3 += popcount64(c & planes[qi, 3, j])
        acc_u += pu << b
        acc_uv += (p0 + 2 * p1 + 4 * p2 + 8 * p3) << b
    return lo[qi] * acc_u + delta[qi] * acc_uv


@njit(cache=True, parallel=True)
def _estimate_float(codes, scale, offset, lut, qc, qsum, m, bits, out):  # pragma: no cover - compiled
    n = codes.shape[0]
    nq = lut.shape[0]
    nbytes = lut.shape[1]
    for i in prange(n):
        for qi in range(nq):
            s = _score_float(codes, i, qi, lut, nbytes, bits)
            out[qi, i] = qc[qi] + offset[i] + scale[i] * (s - m * qsum[qi])


@njit(cache=True, parallel=True)
def _estimate_q4(words, scale, offset, planes, lo, delta, qc, qsum, m, bits, out):  # pragma: no cover - compiled
    n = words.shape[0]
    nq = planes.shape[0]
    nwords = planes.shape[2]
    for i in prange(n):
        for qi in range(nq):
            s = _score_q4(words, i, qi, planes, nwords, bits, lo, delta)
            out[qi, i] = qc[qi] + offset[i] + scale[i] * (s - m * qsum[qi])


@njit(cache=True, nogil=True, inline="always")
def _push(ts, ti, k, s, i):  # pragma: no cover - compiled
    """Insert (s, i) into the descending top list ts/ti of length k (caller checked s > ts[k-1])."""
    p = k - 1
    while p > 0 and ts[p - 1] < s:
        ts[p] = ts[p - 1]
        ti[p] = ti[p - 1]
        p -= 1
    ts[p] = s
    ti[p] = i


@njit(cache=True, nogil=True)
def _scan_rows(
    codes, words, scale, offset, lut, planes, lo, delta, qc, qsum, m, bits, excluded, use_excl, r0, r1, qi, ts, ti
):  # pragma: no cover - compiled
    """Rows r0..r1 against query qi, kept in the descending top list ts/ti."""
    k = ts.shape[0]
    quant = planes.shape[0] > 0
    nbytes = lut.shape[1]
    nwords = planes.shape[2]
    base = qc[qi]
    corr = m * qsum[qi]
    for i in range(r0, r1):
        if use_excl and excluded[i]:
            continue
        if quant:
            s = _score_q4(words, i, qi, planes, nwords, bits, lo, delta)
        else:
            s = _score_float(codes, i, qi, lut, nbytes, bits)
        est = base + offset[i] + scale[i] * (s - corr)
        if est > ts[k - 1]:
            _push(ts, ti, k, est, i)


@njit(cache=True, parallel=True)
def _topk_scan(
    codes, words, scale, offset, lut, planes, lo, delta, qc, qsum, m, bits, excluded, use_excl, block, tops, topi
):  # pragma: no cover - compiled
    """Each task scans one block of rows for every query and keeps its own top k per query."""
    n = scale.shape[0]
    for t in prange(tops.shape[0]):
        r0 = t * block
        r1 = min(n, r0 + block)
        for qi in range(qc.shape[0]):
            _scan_rows(codes, words, scale, offset, lut, planes, lo, delta, qc, qsum, m, bits, excluded, use_excl,
                       r0, r1, qi, tops[t, qi], topi[t, qi])  # fmt: skip


@njit(cache=True, nogil=True)
def _topk_serial(
    codes, words, scale, offset, lut, planes, lo, delta, qc, qsum, m, bits, excluded, use_excl, tops, topi
):  # pragma: no cover - compiled
    """One block, on the calling thread: for a few rows (a pre-selection's candidates), where starting the
    thread pool costs more than the scan."""
    for qi in range(qc.shape[0]):
        _scan_rows(codes, words, scale, offset, lut, planes, lo, delta, qc, qsum, m, bits, excluded, use_excl,
                   0, scale.shape[0], qi, tops[0, qi], topi[0, qi])  # fmt: skip


# at most this many rows x queries are scanned on the calling thread (see _topk_serial)
SERIAL_WORK = 1 << 15


def _check_codes(
    params: RabitqParams, codes: np.ndarray, factors: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, scale, offset) as the kernels take them, shapes and finiteness checked."""
    codes = np.ascontiguousarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != params.code_bytes:
        raise DimensionMismatchError(
            f"codes must be uint8 (n, {params.code_bytes}) for dim {params.dim} at {params.bits} bits, "
            f"got {codes.dtype} {codes.shape}"
        )
    factors = np.asarray(factors)
    if factors.shape != (codes.shape[0], 2):
        raise DimensionMismatchError(f"factors must be ({codes.shape[0]}, 2), got {factors.shape}")
    scale = np.ascontiguousarray(factors[:, 0], dtype=np.float64)
    offset = np.ascontiguousarray(factors[:, 1], dtype=np.float64)
    if not (np.isfinite(scale).all() and np.isfinite(offset).all()):
        raise CorruptCollectionError("rabitq factors hold NaN or inf")
    return codes, scale, offset


def estimate(
    params: RabitqParams, codes: np.ndarray, factors: np.ndarray, queries: object, query_bits: int | None = None
) -> np.ndarray:
    """Estimated inner products ``<x, q>`` (nq, n) float64 of every query with every coded vector."""
    codes, scale, offset = _check_codes(params, codes, factors)
    pq = prepare_queries(params, queries, query_bits)
    m = (2**params.bits - 1) / 2
    out = np.empty((pq.qc.shape[0], codes.shape[0]), dtype=np.float64)
    if codes.shape[0] == 0:
        return out
    if query_bits is None:
        _estimate_float(codes, scale, offset, pq.lut, pq.qc, pq.qsum, m, params.bits, out)
    else:
        words = codes.view(np.uint64)
        _estimate_q4(words, scale, offset, pq.planes, pq.lo, pq.delta, pq.qc, pq.qsum, m, params.bits, out)
    return out


def search(
    params: RabitqParams,
    codes: np.ndarray,
    factors: np.ndarray,
    queries: object,
    k: int,
    exclude: np.ndarray | None = None,
    query_bits: int | None = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of highest estimated inner product per query: ``(scores (nq, k) float32, rows
    (nq, k) int64)``, best first; -1 rows (score -inf) where fewer than k rows are left.

    ``exclude``: a boolean mask over rows (deleted or filtered out) never returned. Ties keep the lower
    row. One pass over the codes for the whole batch: each thread scans a block of rows for all queries.
    """
    codes, scale, offset = _check_codes(params, codes, factors)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    n = codes.shape[0]
    use_excl = exclude is not None
    if use_excl:
        excl = np.ascontiguousarray(exclude, dtype=np.bool_)
        if excl.shape != (n,):
            raise DimensionMismatchError(f"exclude must be a boolean mask of shape ({n},), got {excl.shape}")
    else:
        excl = np.zeros(1, dtype=np.bool_)
    pq = prepare_queries(params, queries, query_bits)
    nq = pq.qc.shape[0]
    m = (2**params.bits - 1) / 2
    threads = numba.get_num_threads()
    serial = n * nq <= SERIAL_WORK
    block = n if serial else max(1024, -(-n // (8 * threads)))
    nblocks = max(1, -(-n // max(block, 1)))
    tops = np.full((nblocks, nq, k), -np.inf, dtype=np.float64)
    topi = np.full((nblocks, nq, k), -1, dtype=np.int64)
    if n:
        lut = pq.lut if pq.lut is not None else np.zeros((1, 1, 256), np.float32)
        planes = pq.planes if pq.planes is not None else np.zeros((0, 4, 1), np.uint64)
        lo = pq.lo if pq.lo is not None else np.zeros(1)
        delta = pq.delta if pq.delta is not None else np.zeros(1)
        args = (codes, codes.view(np.uint64), scale, offset, lut, planes, lo, delta, pq.qc, pq.qsum, m,
                params.bits, excl, use_excl)  # fmt: skip
        if serial:
            _topk_serial(*args, tops, topi)
        else:
            _topk_scan(*args, block, tops, topi)
    s = tops.transpose(1, 0, 2).reshape(nq, -1)
    r = topi.transpose(1, 0, 2).reshape(nq, -1)
    # best first; among equal scores the lower row (blocks are in row order, each list stable)
    order = np.lexsort((np.where(r < 0, np.iinfo(np.int64).max, r), -s), axis=-1)[:, :k]
    rows = np.take_along_axis(r, order, axis=1)
    scores = np.take_along_axis(s, order, axis=1).astype(np.float32)
    scores[rows < 0] = -np.inf
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
    return scores, rows


# ----------------------------------------------------------------------------- on disk


def save_params(params: RabitqParams, folder: str | Path) -> None:
    """Write ``params`` into ``folder`` (rabitq.json + rabitq_centre.npy, no rotation file: the seed
    regenerates it), each file atomically."""
    import io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, params.centre.astype(np.float32), allow_pickle=False)
    write_atomic(folder / "rabitq_centre.npy", buf.getvalue())
    meta = {
        "format": _FORMAT,
        "format_version": FORMAT_VERSION,
        "dim": params.dim,
        "bits": params.bits,
        "rotation": params.rotation is not None,
        "seed": params.seed,
    }
    write_atomic(folder / "rabitq.json", json.dumps(meta).encode())


def load_params(folder: str | Path) -> RabitqParams:
    """Read what ``save_params`` wrote, validating every field."""
    folder = Path(folder)
    m = read_versioned_json(folder, "rabitq.json", _FORMAT, FORMAT_VERSION, "rabitq parameters")
    dim, bits, rot, seed = m.get("dim"), m.get("bits"), m.get("rotation"), m.get("seed")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1 or bits not in BITS or not isinstance(rot, bool):
        raise CorruptCollectionError(f"{folder / 'rabitq.json'} has invalid dim/bits/rotation")
    if rot and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise CorruptCollectionError(f"{folder / 'rabitq.json'} has a rotation but no integer seed")
    try:
        centre = np.load(folder / "rabitq_centre.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CorruptCollectionError(f"cannot read {folder / 'rabitq_centre.npy'}: {exc}") from None
    if centre.shape != (dim,) or centre.dtype != np.float32 or not np.isfinite(centre).all():
        raise CorruptCollectionError(f"{folder / 'rabitq_centre.npy'} is not a finite float32 ({dim},) array")
    return RabitqParams(dim, bits, centre, random_rotation(dim, seed) if rot else None, seed if rot else None)
