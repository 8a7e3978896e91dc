"""Merging the shards' answers: the global top k of their top k, summed keyword statistics, query splits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..hybrid import reciprocal_rank_fusion
from ..kernels import topk_by_row


def merge_ranked(per_shard: list[list[list[tuple[Any, ...]]]], k: int) -> list[list[tuple[Any, ...]]]:
    """Per query, the k best (id, score, ...) of every shard's ranking: score descending, then shard
    order, then the shard's own order (a deterministic tie-break): ``kernels.topk_by_row`` over the
    hits laid end to end, their positions as rows."""
    if not per_shard:
        return []
    merged = []
    for q in range(len(per_shard[0])):
        hits = [h for s in per_shard for h in s[q]]
        scores = np.fromiter((h[1] for h in hits), np.float64, len(hits))
        pos, _ = topk_by_row(scores[None], np.arange(len(hits))[None], k)
        merged.append([hits[i] for i in pos[0].tolist()])
    return merged


def sum_statistics(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """BM25 statistics of the whole collection: the shards' counts summed."""
    if not parts:
        return {"df": [], "rows": 0, "tokens": 0}
    return {
        "df": [int(sum(col)) for col in zip(*(p["df"] for p in parts), strict=True)],
        "rows": int(sum(p["rows"] for p in parts)),
        "tokens": int(sum(p["tokens"] for p in parts)),
    }


def fuse_ranked(
    dense: list[list[tuple[Any, ...]]],
    keyword: list[list[tuple[Any, ...]]],
    k: int,
    rrf_k: float,
    weights: Sequence[float] | None,
) -> list[list[tuple[Any, ...]]]:
    """Hybrid: per query, the RRF of the merged dense and keyword rankings, as (id, fused score, text, metadata)."""
    ranked = []
    for d, kw in zip(dense, keyword, strict=True):
        payload = {h[0]: h for h in kw}
        payload.update({h[0]: h for h in d})
        fused = reciprocal_rank_fusion([[h[0] for h in d], [h[0] for h in kw]], k, rrf_k=rrf_k, weights=weights)
        ranked.append([(key, score, payload[key][2], payload[key][3]) for key, score in fused])
    return ranked
