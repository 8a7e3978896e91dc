"""Quantization of float embeddings: sign bits, int8/uint8 scalar codes, Matryoshka truncation.

Pure numpy. ``quantize_embeddings`` is byte-compatible with sentence-transformers'
``quantize_embeddings`` (6.x) for the same inputs and ranges, so codes move freely between the two.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .errors import DimensionMismatchError, InvalidInputError

Precision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
PRECISIONS: tuple[str, ...] = ("float32", "int8", "uint8", "binary", "ubinary")

__all__ = [
    "CODE_KINDS",
    "PRECISIONS",
    "CodeBook",
    "calibrate_ranges",
    "check_documents",
    "check_embeddings",
    "check_queries",
    "check_ranges",
    "dequantize_int8",
    "quantize_embeddings",
    "truncate_embeddings",
    "unpack_bits",
]


def check_embeddings(embeddings: object, dim: int | None = None, *, name: str = "embeddings") -> np.ndarray:
    """Return ``embeddings`` as a finite 2-D float array, or raise an error naming what is wrong.

    A 1-D array is taken as one vector. ``dim``, when given, is the required number of columns.
    """
    try:
        arr = np.asarray(embeddings)
    except (TypeError, ValueError) as exc:  # ragged lists and the like
        raise InvalidInputError(f"{name} must be a 2-D array of numbers: {exc}") from None
    kind = arr.dtype.kind  # "f" floating, "i" / "u" integer (numpy's np.floating / np.integer)
    if kind not in ("f", "i", "u"):
        raise InvalidInputError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InvalidInputError(f"{name} must be 1-D (one vector) or 2-D (n, dim), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InvalidInputError(f"{name} is empty: no vectors given")
    if arr.shape[1] == 0:
        raise InvalidInputError(f"{name} has zero dimensions")
    if dim is not None and arr.shape[1] != dim:
        raise DimensionMismatchError(f"{name} have dimension {arr.shape[1]}, expected {dim}")
    if kind != "f":
        arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise InvalidInputError(f"{name} contain NaN or inf (first at row {int(bad[0])}, column {int(bad[1])})")
    return arr


# Queries whose largest |component| lies outside [2**-60, 2**60] are rescaled to a largest |component|
# of 1: every score stays far inside float32 (dim x 2**60 x row values up to ~1e18), and tiny float64
# queries keep their signs and ratios when cast to float32.
QUERY_SCALE_RANGE = (2.0**-60, 2.0**60)


def check_documents(embeddings: object, dim: int | None = None, *, name: str = "embeddings") -> np.ndarray:
    """``check_embeddings`` for vectors to store: also refuses a component beyond ``QUERY_SCALE_RANGE``'s
    upper bound (2**60 in magnitude), whose scores and int8 ranges would overflow float32 (a stored row,
    unlike a query, cannot be rescaled without changing the ranking)."""
    arr = check_embeddings(embeddings, dim, name=name)
    big = np.abs(arr) > QUERY_SCALE_RANGE[1]
    if big.any():
        i, j = (int(x) for x in np.argwhere(big)[0])
        raise InvalidInputError(
            f"{name} hold {float(arr[i, j]):.3g} at row {i}, column {j}: stored values must be within +-2**60 "
            "(about 1.15e18), or scores overflow float32; normalize the embeddings"
        )
    return arr


def check_queries(queries: object, dim: int | None = None, *, name: str = "queries") -> np.ndarray:
    """``queries`` as a finite float32 (n, dim) array, each query rescaled (in float64, by a positive
    factor, so no ranking changes) when its largest |component| is outside ``QUERY_SCALE_RANGE``.

    Scores of such queries would overflow float32 (or a float64 query would not even cast to it);
    NaN and inf are an ``InvalidInputError`` (``check_embeddings``). An all-zero query is kept as is.
    """
    arr = check_embeddings(queries, dim, name=name)
    big = np.abs(arr).max(axis=1)  # exact in the input's dtype
    lo, hi = QUERY_SCALE_RANGE
    off = ((big < lo) | (big > hi)) & (big > 0)
    if not off.any():
        return arr.astype(np.float32, copy=False)
    out = arr.astype(np.float64)  # copies: the caller's array is left alone
    out[off] /= big[off, None].astype(np.float64)
    return out.astype(np.float32)


def quantize_embeddings(
    embeddings: np.ndarray,
    precision: Precision,
    ranges: np.ndarray | None = None,
    calibration_embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """Quantize float embeddings to ``precision``, exactly as sentence-transformers does.

    float32: a float32 copy. int8/uint8: per-dimension buckets between ``ranges`` (2, dim) =
    (min, max), taken from ``calibration_embeddings`` or else from ``embeddings`` itself; values
    outside saturate. binary/ubinary: the sign bits (> 0) packed 8 per byte, binary offset by -128.
    """
    if precision not in PRECISIONS:
        raise InvalidInputError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    arr = np.asarray(embeddings)
    if arr.dtype in (np.int8, np.uint8):
        raise InvalidInputError("embeddings to quantize must be float, not int8 or uint8 codes")
    arr = check_embeddings(arr)
    if precision == "float32":
        return arr.astype(np.float32)
    if precision in ("binary", "ubinary"):
        packed = np.packbits(arr > 0, axis=-1)
        return (packed - 128).astype(np.int8) if precision == "binary" else packed
    if ranges is None:
        if calibration_embeddings is None:
            if arr.shape[0] == 1:
                raise InvalidInputError(
                    f"cannot compute {precision} ranges from a single embedding; pass `ranges` "
                    "(see calibrate_ranges) or `calibration_embeddings`"
                )
            calibration_embeddings = arr
        cal = check_embeddings(calibration_embeddings, arr.shape[1], name="calibration_embeddings")
        ranges = np.vstack((cal.min(axis=0), cal.max(axis=0)))
    ranges = check_ranges(ranges, arr.shape[1]).astype(np.float32, copy=False)
    starts = ranges[0, :]
    steps = (ranges[1, :] - starts) / 255
    steps = np.where(steps == 0, 1, steps)
    q_vals = np.clip(np.floor((arr - starts) / steps), 0, 255)
    if precision == "uint8":
        return q_vals.astype(np.uint8)
    return (q_vals - 128).astype(np.int8)


def calibrate_ranges(embeddings: np.ndarray) -> np.ndarray:
    """Per-dimension (min, max) ranges, shape (2, dim) float32, that never have zero width.

    A dimension whose values are all equal (one vector, or a constant dimension) gets the range
    ``value +- h`` with ``h`` half the median width of the other dimensions, or ``max(|value|, 1e-6)``
    when no dimension has any width; the value then lands in the middle bucket instead of NaN/inf.
    """
    arr = check_embeddings(embeddings, name="calibration embeddings").astype(np.float32)
    lo, hi = arr.min(axis=0), arr.max(axis=0)
    width = hi - lo
    flat = ~(width > 0)
    if flat.any():
        positive = width[~flat]
        if positive.size:
            half = np.full(lo.shape, 0.5 * float(np.median(positive)), dtype=np.float32)
        else:
            half = np.maximum(np.abs(lo), np.float32(1e-6))
        lo = np.where(flat, lo - half, lo)
        hi = np.where(flat, hi + half, hi)
        # Huge values can absorb a tiny half-width in float32; widen until it shows.
        still = ~(hi > lo)
        if still.any():
            lo = np.where(still, np.nextafter(lo, np.float32(-np.inf)), lo)
            hi = np.where(still, np.nextafter(hi, np.float32(np.inf)), hi)
    return np.vstack((lo, hi)).astype(np.float32)


def check_ranges(ranges: object, dim: int) -> np.ndarray:
    """Validate int8 ranges: shape (2, dim), finite, min <= max."""
    r = np.asarray(ranges, dtype=np.float64)
    if r.shape != (2, dim):
        raise InvalidInputError(f"ranges must have shape (2, {dim}), got {r.shape}")
    if not np.isfinite(r).all():
        raise InvalidInputError("ranges contain NaN or inf")
    if (r[1] < r[0]).any():
        raise InvalidInputError(f"ranges have max < min in dimension {int(np.argmax(r[1] < r[0]))}")
    return np.asarray(ranges)


def dequantize_int8(codes: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Map int8 codes back to float32 values at the middle of their buckets.

    The inverse of ``quantize_embeddings(..., "int8", ranges)`` up to half a bucket. Rescoring uses these
    values, never the raw codes (whose scale and offset differ per dimension).
    """
    r = np.asarray(ranges, dtype=np.float32)
    return (np.asarray(codes).astype(np.float32) + np.float32(128.5)) * int8_steps(r) + r[0]


def int8_steps(ranges: np.ndarray) -> np.ndarray:
    """Bucket width per dimension of int8 codes, float32; a zero-width range counts as 1 (as in
    ``quantize_embeddings``), so nothing divides by zero."""
    r = np.asarray(ranges, dtype=np.float32)
    steps = (r[1] - r[0]) / np.float32(255)
    return np.where(steps == 0, 1, steps).astype(np.float32)


def unpack_bits(codes: np.ndarray, dim: int | None = None) -> np.ndarray:
    """Unpack (u)binary codes into +-1 float32 vectors (bit 1 -> +1, bit 0 -> -1), trimmed to ``dim``."""
    c = np.asarray(codes)
    if c.dtype == np.int8:
        c = (c.astype(np.int16) + 128).astype(np.uint8)
    bits = np.unpackbits(c, axis=-1)
    if dim is not None:
        bits = bits[..., :dim]
    return bits.astype(np.float32) * 2 - 1


def truncate_embeddings(embeddings: np.ndarray, truncate_dim: int, normalize: bool = True) -> np.ndarray:
    """Matryoshka truncation: keep the first ``truncate_dim`` dimensions, then L2-renormalize each row."""
    arr = check_embeddings(embeddings)
    if not isinstance(truncate_dim, (int, np.integer)) or truncate_dim < 1:
        raise InvalidInputError(f"truncate_dim must be a positive integer, got {truncate_dim!r}")
    if truncate_dim > arr.shape[1]:
        raise InvalidInputError(f"truncate_dim {truncate_dim} exceeds the embedding dimension {arr.shape[1]}")
    out = np.ascontiguousarray(arr[:, :truncate_dim], dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = out / np.where(norms > 0, norms, 1)
    return out.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- low-bit codebooks

# code kind -> (levels per dimension, dimensions packed per byte)
CODE_KINDS: dict[str, tuple[int, int]] = {"binary": (2, 8), "1.5bit": (3, 5), "2bit": (4, 4)}


class CodeBook:
    """How float vectors become 1-, 1.5- or 2-bit codes per dimension, and what each code stands for.

    Optionally centred (subtract a per-dimension offset) and rotated (a random orthogonal matrix, as
    in RaBitQ) first; then per-dimension thresholds split each dimension into levels. ``levels`` holds
    each level's reconstruction value (the mean of the calibration values in its bucket), so a float
    query scores codes without decoding them: ``lut(query)[g, byte]`` is the query's dot product with
    the reconstruction of that byte.

    Two layouts. Packed: several dimensions per byte in base 2, 3 or 4 (sign bits; the format-2
    ternary 1.5bit). Bit planes (``planes``): a sign-like plane that Hamming distance can pre-select
    on, then a second plane: 2bit's low bits, or for 1.5bit one "large" bit per *pair* of dimensions
    (the pair's summed deviation from the median above its median), so 1.5 bits per dimension and a
    level ``2 x sign + large`` for each dimension.
    """

    def __init__(
        self,
        kind: str,
        thresholds: np.ndarray,
        levels: np.ndarray,
        offset: np.ndarray | None = None,
        rotation: np.ndarray | None = None,
        pair_scale: np.ndarray | None = None,
        pair_thresholds: np.ndarray | None = None,
    ) -> None:
        if kind not in CODE_KINDS:
            raise InvalidInputError(f"unknown code kind {kind!r}; expected one of {', '.join(CODE_KINDS)}")
        self.kind = kind
        self.base, self.per_byte = CODE_KINDS[kind]
        # 1.5bit as a sign plane + one bit per pair of dimensions (else the packed ternary of format 2)
        self.pairs = kind == "1.5bit" and pair_thresholds is not None
        self.pair_scale = None if pair_scale is None else np.asarray(pair_scale, dtype=np.float32)
        self.pair_thresholds = None if pair_thresholds is None else np.asarray(pair_thresholds, dtype=np.float32)
        self.thresholds = np.asarray(thresholds, dtype=np.float32)  # (base - 1, dim), ascending
        self.levels = np.asarray(levels, dtype=np.float32)  # (base, dim)
        self.dim = int(self.levels.shape[1])
        self.offset = None if offset is None else np.asarray(offset, dtype=np.float32)
        self.rotation = None if rotation is None else np.asarray(rotation, dtype=np.float32)
        self.groups = -(-self.dim // self.per_byte)
        digits = np.arange(self.base**self.per_byte)[:, None] // self.base ** np.arange(self.per_byte)[::-1] % self.base
        self._digits = digits.astype(np.int64)  # (patterns, per_byte), most significant first
        self._selectors: dict[tuple[int, int], np.ndarray] = {}

    @classmethod
    def fit(
        cls,
        embeddings: np.ndarray,
        kind: str = "binary",
        *,
        centering: bool = False,
        rotation: bool | int = False,
        sign_threshold: bool = True,
        lloyd_iterations: int = 5,
        zero_fraction: float = 0.2,
        pairs: bool = True,
    ) -> CodeBook:
        """Calibrate thresholds and levels on ``embeddings`` (the corpus or a sample of it).

        binary: threshold 0 (plain sign; after centering, the mean) unless ``sign_threshold=False``
        (the median). 2bit: quartiles refined by ``lloyd_iterations`` of Lloyd-Max. 1.5bit: a sign
        plane at the median and a pair plane (``pairs``, the default: each pair's summed deviation,
        scaled per dimension, above its median), or with ``pairs=False`` the packed ternary of format
        2, a zero bucket around the median holding ``zero_fraction`` of the values. ``rotation`` may
        be a seed.
        """
        if kind not in CODE_KINDS:
            raise InvalidInputError(f"unknown code kind {kind!r}; expected one of {', '.join(CODE_KINDS)}")
        x = check_embeddings(embeddings, name="calibration embeddings").astype(np.float32)
        dim = x.shape[1]
        offset = x.mean(axis=0) if centering else None
        rot = None
        if rotation is not False and rotation is not None:
            seed = 0 if rotation is True else int(rotation)
            q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
            rot = (q * np.sign(np.diag(r))).astype(np.float32)  # Haar-distributed orthogonal matrix
        book = cls(kind, np.zeros((CODE_KINDS[kind][0] - 1, dim)), np.zeros((CODE_KINDS[kind][0], dim)), offset, rot)
        t = book.transform(x)
        if kind == "binary":
            thr = np.zeros((1, dim), np.float32) if sign_threshold else np.median(t, axis=0, keepdims=True)
        elif kind == "2bit":
            thr = np.quantile(t, [0.25, 0.5, 0.75], axis=0)
            for _ in range(lloyd_iterations):
                thr = _midpoints(_bucket_means(t, thr))
        elif pairs:
            med = np.median(t, axis=0)
            scale = np.median(np.abs(t - med), axis=0)
            book.pair_scale = np.where(scale > 0, scale, 1).astype(np.float32)
            book.pair_thresholds = np.median(_pair_sums(t, med, book.pair_scale), axis=0).astype(np.float32)
            book.pairs = True
            book.thresholds = med[None, :].astype(np.float32)
            book.levels = _level_means(t, book.levels_of_transformed(t), med, book.pair_scale)
            return book
        else:
            med = np.median(t, axis=0)
            half = np.quantile(np.abs(t - med), zero_fraction, axis=0)
            thr = np.stack([med - half, med + half])
        book.thresholds = np.asarray(thr, dtype=np.float32)
        book.levels = _bucket_means(t, book.thresholds)
        return book

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Centre and rotate (where configured): the space the thresholds live in."""
        out = np.asarray(x, dtype=np.float32)
        if self.offset is not None:
            out = out - self.offset
        if self.rotation is not None:
            out = out @ self.rotation
        return out

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """Codes (n, groups) uint8: each dimension's level, ``per_byte`` dimensions per byte
        (1.5bit with pairs has no packed form: its bit planes)."""
        if self.pairs:
            return self.encode_planes(embeddings)
        lv = self.levels_of(embeddings)
        if self.kind == "binary":
            return np.packbits(lv.astype(bool), axis=-1)
        lv = np.pad(lv, ((0, 0), (0, self.groups * self.per_byte - self.dim)))  # padded dims: level 0
        weights = self.base ** np.arange(self.per_byte)[::-1]
        return (lv.reshape(lv.shape[0], self.groups, self.per_byte) @ weights).astype(np.uint8)

    def lut(self, queries: np.ndarray) -> np.ndarray:
        """Per-query lookup tables (nq, groups, 256) float32: dot products with each byte's reconstruction.

        Summing ``lut[g, codes[g]]`` over the groups gives the query's dot product with the decoded
        document (plus the offset's contribution when centred), so ranking needs no decoding.
        """
        if self.pairs:
            return self.lut_planes(queries)
        return self._table(queries, self._digits, self.groups)

    def query_planes(self, queries: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A float query rounded to ``bits``-bit weights, as bit planes, for popcount scoring of 1-bit codes.

        Returns (planes (nq, bits, bytes) uint8 packed like the codes, step, low, base) float64 (nq,)
        such that ``base + low x popcount(doc) + step x sum_k 2^k popcount(doc & plane_k)`` is the
        query's dot product with the document's reconstruction (as ``lut``), each dimension's weight
        (query x level gap) rounded to one of 2^bits steps: the asymmetric scoring of Qdrant's and
        Elasticsearch BBQ's 4/8-bit queries.
        """
        if self.kind != "binary":
            raise InvalidInputError("query bit planes score 1-bit (binary) codes only")
        if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
            raise InvalidInputError(f"query_bits must be an integer from 1 to 8, got {bits!r}")
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32)).astype(np.float64)
        tq = q @ self.rotation if self.rotation is not None else q
        lv = self.levels.astype(np.float64)
        w = tq * (lv[1] - lv[0])  # what a set bit adds to the score, per dimension
        base = tq @ lv[0] + (q @ self.offset if self.offset is not None else 0.0)
        low, high = w.min(axis=1), w.max(axis=1)
        step = (high - low) / (2**bits - 1)
        step = np.where(step > 0, step, 1.0)
        u = np.clip(np.rint((w - low[:, None]) / step[:, None]), 0, 2**bits - 1).astype(np.int64)
        planes = np.stack([np.packbits((u >> k) & 1, axis=-1) for k in range(bits)], axis=1)
        return planes, step, low, base

    @property
    def planes(self) -> bool:
        """Whether codes are stored as bit planes (``encode_planes``): 2bit, and 1.5bit with pairs."""
        return self.kind == "2bit" or self.pairs

    def lut_planes(self, queries: np.ndarray) -> np.ndarray:
        """Lookup tables (nq, 2 x bytes, 256) for codes stored as bit planes (``encode_planes``).

        Group g covers 4 dimensions: one nibble of the sign-like plane and their bits of the second
        plane (2bit: the same nibble of the low plane; 1.5bit: two pair bits); entry
        ``(nibble << width) | second`` holds the query's dot product with their reconstruction.
        """
        if not self.planes:
            raise InvalidInputError("bit planes exist for 2bit and 1.5bit (pairs) codes only")
        return self._table(queries, _PAIR_DIGITS if self.pairs else _PLANE_DIGITS, 2 * self.plane_bytes)

    def _table(self, queries: np.ndarray, digits: np.ndarray, groups: int) -> np.ndarray:
        """Tables (nq, groups, 256): entry [g, p] = sum over the group's dimensions j of
        q[g*per + j] x level[digits[p, j]], as one matrix product with a fixed 0/1 selector (a loop
        of gathers cost ~0.2 ms per query, more than the pre-selected scan it feeds)."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        nq, per, nlev = q.shape[0], digits.shape[1], self.levels.shape[0]
        tq = np.zeros((nq, groups * per), dtype=np.float32)  # padded dimensions decode to 0
        tq[:, : self.dim] = q @ self.rotation if self.rotation is not None else q  # offset: added below
        lv = np.zeros((nlev, groups * per), dtype=np.float32)
        lv[:, : self.dim] = self.levels
        # contrib[n, level * per + j, g] = q[n, g*per + j] x that dimension's value at that level
        contrib = (tq[:, None, :] * lv[None, :, :]).reshape(nq, nlev, groups, per).transpose(0, 1, 3, 2)
        key = (id(digits), nlev)  # digits: this book's or a module constant, alive as long as the book
        if key not in self._selectors:
            self._selectors[key] = _selector(digits, nlev)
        selector = self._selectors[key]  # (patterns, nlev x per)
        table = np.zeros((nq, groups, 256), dtype=np.float32)
        table[:, :, : digits.shape[0]] = np.matmul(selector, contrib.reshape(nq, nlev * per, groups)).transpose(0, 2, 1)
        if self.offset is not None:
            table[:, 0, :] += (q @ self.offset)[:, None]
        return table

    @property
    def plane_bytes(self) -> int:
        """Bytes of one bit plane of one vector."""
        return -(-self.dim // 8)

    def levels_of(self, embeddings: np.ndarray) -> np.ndarray:
        """Each dimension's level (n, dim) int64: how many thresholds its value exceeds
        (1.5bit with pairs: 2 x above the median + the pair's large bit)."""
        return self.levels_of_transformed(self.transform(check_embeddings(embeddings, self.dim)))

    def levels_of_transformed(self, t: np.ndarray) -> np.ndarray:
        """``levels_of`` for values already centred and rotated (``transform``)."""
        if self.pairs:
            assert self.pair_scale is not None and self.pair_thresholds is not None
            large = _pair_sums(t, self.thresholds[0], self.pair_scale) > self.pair_thresholds
            return 2 * (t > self.thresholds[0]).astype(np.int64) + np.repeat(large, 2, axis=1)[:, : self.dim]
        lv = np.zeros(t.shape, dtype=np.int64)
        for thr in self.thresholds:
            lv += t > thr
        return lv

    def encode_planes(self, embeddings: np.ndarray) -> np.ndarray:
        """Codes as two bit planes (n, plane + second plane bytes): the sign-like plane (level >= 2,
        the median split, which Hamming distance can pre-select on), then 2bit's low bits or
        1.5bit's pair bits."""
        if not self.planes:
            raise InvalidInputError("bit planes exist for 2bit and 1.5bit (pairs) codes only")
        lv = self.levels_of(embeddings)
        second = lv[:, 0::2] & 1 if self.pairs else lv & 1
        return np.concatenate([np.packbits(lv >= 2, axis=-1), np.packbits(second, axis=-1)], axis=1)

    def decode_planes(self, planes: np.ndarray) -> np.ndarray:
        """Reconstructed vectors from ``encode_planes`` output."""
        b = self.plane_bytes
        p = np.asarray(planes, dtype=np.uint8)
        hi = np.unpackbits(p[:, :b], axis=-1)[:, : self.dim].astype(np.int64)
        lo = np.unpackbits(p[:, b:], axis=-1).astype(np.int64)
        lo = np.repeat(lo[:, : -(-self.dim // 2)], 2, axis=1) if self.pairs else lo
        return self._reconstruct(2 * hi + lo[:, : self.dim])

    def _reconstruct(self, lv: np.ndarray) -> np.ndarray:
        rec = self.levels[lv, np.arange(self.dim)]
        if self.rotation is not None:
            rec = rec @ self.rotation.T
        if self.offset is not None:
            rec = rec + self.offset
        return rec.astype(np.float32)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Reconstructed vectors (n, dim) float32, in the original (uncentred, unrotated) space."""
        if self.pairs:
            return self.decode_planes(codes)
        c = np.asarray(codes, dtype=np.uint8)
        if self.kind == "binary":
            lv = np.unpackbits(c, axis=-1)[:, : self.dim].astype(np.int64)
        else:
            lv = self._digits[c.astype(np.int64)].reshape(c.shape[0], -1)[:, : self.dim]
        return self._reconstruct(lv)

    def to_dict(self) -> dict[str, object]:
        """JSON-safe description (the rotation matrix is stored beside it as .npy by the collection)."""
        return {
            "kind": self.kind,
            "thresholds": self.thresholds.tolist(),
            "levels": self.levels.tolist(),
            "offset": None if self.offset is None else self.offset.tolist(),
            **(self._pair_dict() if self.pairs else {}),
        }

    def _pair_dict(self) -> dict[str, object]:
        assert self.pair_scale is not None and self.pair_thresholds is not None
        return {
            "layout": "sign+pairs",
            "pair_scale": self.pair_scale.tolist(),
            "pair_thresholds": self.pair_thresholds.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, object], rotation: np.ndarray | None = None) -> CodeBook:
        return cls(
            str(d["kind"]),
            np.asarray(d["thresholds"], np.float32),
            np.asarray(d["levels"], np.float32),
            None if d.get("offset") is None else np.asarray(d["offset"], np.float32),
            rotation,
            None if d.get("pair_scale") is None else np.asarray(d["pair_scale"], np.float32),
            None if d.get("pair_thresholds") is None else np.asarray(d["pair_thresholds"], np.float32),
        )


# pattern (high nibble << 4 | low nibble) -> the 4 dimensions' levels, most significant bit first
_PLANE_DIGITS = np.array(
    [[2 * ((p >> 4) >> (3 - j) & 1) + ((p & 15) >> (3 - j) & 1) for j in range(4)] for p in range(256)], dtype=np.int64
)


# 1.5bit pattern (sign nibble << 2 | the two pair bits) -> the 4 dimensions' levels (2 x sign + large)
_PAIR_DIGITS = np.array([[2 * (p >> (5 - j) & 1) + (p >> (1 - j // 2) & 1) for j in range(4)] for p in range(64)])


def _selector(digits: np.ndarray, nlev: int) -> np.ndarray:
    """(patterns, nlev x per) float32: 1 where pattern p puts position j at that level."""
    per = digits.shape[1]
    sel = np.zeros((digits.shape[0], nlev * per), dtype=np.float32)
    for j in range(per):
        sel[np.arange(digits.shape[0]), digits[:, j] * per + j] = 1
    return sel


def _pair_sums(t: np.ndarray, median: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(n, ceil(dim / 2)): each pair of dimensions' summed |deviation from the median| / scale."""
    a = np.abs(t - median) / scale
    if a.shape[1] % 2:
        a = np.pad(a, ((0, 0), (0, 1)))
    return a[:, 0::2] + a[:, 1::2]


def _level_means(t: np.ndarray, lv: np.ndarray, median: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """1.5bit levels (4, dim): the mean of the values at each (sign, large) level; an empty level
    takes median -+ 0.5 or 1.5 x scale."""
    out = np.zeros((4, t.shape[1]), dtype=np.float64)
    for level, step in enumerate((-0.5, -1.5, 0.5, 1.5)):  # level = 2 x above + large
        mask = lv == level
        count = mask.sum(axis=0)
        total = np.where(mask, t, 0).sum(axis=0, dtype=np.float64)
        out[level] = np.where(count > 0, total / np.maximum(count, 1), median + step * scale)
    return out.astype(np.float32)


def _bucket_means(t: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Mean of the values in each level's bucket, per dimension; an empty bucket takes its edge."""
    lv = np.zeros(t.shape, dtype=np.int64)
    for thr in thresholds:
        lv += t > thr
    nlev = thresholds.shape[0] + 1
    out = np.zeros((nlev, t.shape[1]), dtype=np.float64)
    for level in range(nlev):
        mask = lv == level
        count = mask.sum(axis=0)
        total = np.where(mask, t, 0).sum(axis=0, dtype=np.float64)
        lo = thresholds[level - 1] if level > 0 else thresholds[0]
        hi = thresholds[level] if level < nlev - 1 else thresholds[-1]
        edge = (lo + hi) / 2 if 0 < level < nlev - 1 else (lo if level == 0 else hi)
        out[level] = np.where(count > 0, total / np.maximum(count, 1), edge)
    return out.astype(np.float32)


def _midpoints(levels: np.ndarray) -> np.ndarray:
    return ((levels[1:] + levels[:-1]) / 2).astype(np.float32)
