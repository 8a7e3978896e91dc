"""Reciprocal rank fusion (RRF) of several rankings, e.g. dense and BM25.

``score(d) = sum_i weight_i / (rrf_k + rank_i(d))`` with ranks from 1 (Cormack, Clarke and Buettcher,
2009). Only ranks matter, so rankings on incomparable scales (cosine, BM25) fuse without tuning.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from .errors import InvalidInputError

__all__ = ["reciprocal_rank_fusion"]


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[Hashable]],
    k: int | None = None,
    *,
    rrf_k: float = 60.0,
    weights: Sequence[float] | None = None,
) -> list[tuple[Hashable, float]]:
    """Fuse rankings (each a list of keys, best first) into one list of (key, fused score), best first.

    Ties in fused score go to the key ranked best in the earliest ranking it appears in, so the order
    is deterministic. ``k`` truncates the result.
    """
    if rrf_k < 0:
        raise InvalidInputError(f"rrf_k must be >= 0, got {rrf_k}")
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise InvalidInputError(f"got {len(weights)} weights for {len(rankings)} rankings")
    if any(w < 0 for w in weights):
        raise InvalidInputError(f"weights must be >= 0, got {list(weights)}")
    scores: dict[Hashable, float] = {}
    first_seen: dict[Hashable, tuple[int, int]] = {}
    for i, (ranking, w) in enumerate(zip(rankings, weights, strict=True)):
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + w / (rrf_k + rank)
            first_seen.setdefault(key, (rank, i))
    fused = sorted(scores.items(), key=lambda kv: (-kv[1], first_seen[kv[0]]))
    return fused if k is None else fused[:k]
