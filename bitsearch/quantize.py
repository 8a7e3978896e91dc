"""Quantization of float embeddings: sign bits, int8/uint8 scalar codes, Matryoshka truncation.

Pure numpy. ``quantize_embeddings`` is byte-compatible with sentence-transformers'
``quantize_embeddings`` (6.x) for the same inputs and ranges, so codes move freely between the two.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .errors import InvalidInputError

Precision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
PRECISIONS: tuple[str, ...] = ("float32", "int8", "uint8", "binary", "ubinary")

__all__ = [
    "PRECISIONS",
    "calibrate_ranges",
    "check_embeddings",
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
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
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
        raise InvalidInputError(f"{name} have dimension {arr.shape[1]}, expected {dim}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise InvalidInputError(f"{name} contain NaN or inf (first at row {int(bad[0])}, column {int(bad[1])})")
    return arr


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
    ranges = _check_ranges(ranges, arr.shape[1]).astype(np.float32, copy=False)
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


def _check_ranges(ranges: object, dim: int) -> np.ndarray:
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
    steps = (r[1] - r[0]) / 255
    steps = np.where(steps == 0, 1, steps).astype(np.float32)
    return (np.asarray(codes).astype(np.float32) + np.float32(128.5)) * steps + r[0]


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
