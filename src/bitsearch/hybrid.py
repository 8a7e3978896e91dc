"""Reciprocal rank fusion (RRF) of several rankings, e.g. dense and BM25.

``score(d) = sum_i weight_i / (rrf_k + rank_i(d))`` with ranks from 1 (Cormack, Clarke and Buettcher,
2009). Only ranks matter, so rankings on incomparable scales (cosine, BM25) fuse without tuning.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from numbers import Real

from .errors import InvalidInputError

__all__ = ["check_fusion_args", "reciprocal_rank_fusion"]


def _finite_non_negative(x: object) -> bool:
    """A real number (not a bool) that is finite as a float and >= 0."""
    if isinstance(x, bool) or not isinstance(x, Real):
        return False
    try:
        return math.isfinite(float(x)) and x >= 0
    except OverflowError:  # an int beyond float's range
        return False


def check_fusion_args(rrf_k: object, weights: object, n_rankings: int) -> list[float] | None:
    """Validate RRF's parameters; return the weights as floats (None when not given).

    ``rrf_k`` must be a finite real number >= 0 (with ranks from 1 no score divides by zero);
    ``weights`` None or a list/tuple of ``n_rankings`` finite real numbers >= 0. A NaN or infinity
    would make every fused score NaN or 0 and the ranking meaningless, so both are errors.
    """
    if not _finite_non_negative(rrf_k):
        raise InvalidInputError(f"rrf_k must be a finite number >= 0, got {rrf_k!r}")
    if weights is None:
        return None
    if isinstance(weights, (str, bytes, dict, set, frozenset)) or not isinstance(weights, Iterable):
        raise InvalidInputError(f"weights must be a list of {n_rankings} numbers, got {type(weights).__name__}")
    ws = list(weights)
    if len(ws) != n_rankings:
        raise InvalidInputError(f"got {len(ws)} weights for {n_rankings} rankings")
    for w in ws:
        if not _finite_non_negative(w):
            raise InvalidInputError(f"weights must be finite numbers >= 0, got {ws!r}")
    out = [float(w) for w in ws]
    if not math.isfinite(sum(out)):  # a fused score is at most the weights' sum: keep it finite
        raise InvalidInputError(f"weights {ws!r} sum to more than a float can hold")
    return out


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Hashable]],
    k: int | None = None,
    *,
    rrf_k: float = 60.0,
    weights: Sequence[float] | None = None,
) -> list[tuple[Hashable, float]]:
    """Fuse rankings (each a list of keys, best first) into one list of (key, fused score), best first.

    Ties in fused score go to the key ranked best in the earliest ranking it appears in, so the order
    is deterministic. ``k`` truncates the result. ``rrf_k`` and ``weights``: see ``check_fusion_args``.
    """
    checked = check_fusion_args(rrf_k, weights, len(rankings))
    weights = [1.0] * len(rankings) if checked is None else checked
    rrf_k = float(rrf_k)
    scores: dict[Hashable, float] = {}
    first_seen: dict[Hashable, tuple[int, int]] = {}
    for i, (ranking, w) in enumerate(zip(rankings, weights, strict=True)):
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + w / (rrf_k + rank)
            first_seen.setdefault(key, (rank, i))
    fused = sorted(scores.items(), key=lambda kv: (-kv[1], first_seen[kv[0]]))
    return fused if k is None else fused[:k]
