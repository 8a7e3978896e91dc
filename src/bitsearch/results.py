"""Search results: per query, the hits' ids, scores, texts and metadata in columns, read as one list
of ``Hit`` per query (built on access), with the time each stage took."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from .store import DocId

__all__ = ["Hit", "SearchResults"]


@dataclass
class Hit:
    """One search result: the document id, its score, and its text and metadata where stored."""

    id: DocId
    score: float
    text: str | None = None
    metadata: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "text": self.text, "metadata": self.metadata}


class SearchResults(Sequence[list[Hit]]):
    """One list of ``Hit`` per query (index, iterate, slice and compare it like a list of lists), plus
    ``timings``: seconds spent in each stage, ``stages``: the stages that ranked, and ``warnings``: what
    may explain a short answer (a filter field that no stored document has).

    The hits are kept as columns (``ids``, ``scores`` as float64 arrays, ``texts``, ``metadata``);
    ``Hit`` objects are built when a query's hits are first read, so large k and batches cost little
    for callers that read the columns. A slice keeps the timings, stages and warnings.
    """

    def __init__(
        self,
        hits: Sequence[Sequence[Hit]],
        timings: dict[str, float],
        stages: list[str],
        warnings: list[str] | None = None,
    ) -> None:
        self.ids = [[h.id for h in q] for q in hits]
        self.scores = [np.fromiter((h.score for h in q), np.float64, len(q)) for q in hits]
        self.texts = [[h.text for h in q] for q in hits]
        self.metadata = [[h.metadata for h in q] for q in hits]
        self.timings, self.stages, self.warnings = timings, stages, list(warnings or [])
        self._hits: dict[int, list[Hit]] = {i: list(q) for i, q in enumerate(hits)}

    @classmethod
    def from_columns(
        cls,
        ids: list[list[DocId]],
        scores: list[np.ndarray],
        texts: list[list[str | None]],
        metadata: list[list[dict[str, Any] | None]],
        timings: dict[str, float],
        stages: list[str],
        warnings: list[str] | None = None,
    ) -> SearchResults:
        """Results from per-query columns (no ``Hit`` built until read)."""
        out = cls.__new__(cls)
        out.ids, out.scores, out.texts, out.metadata = ids, scores, texts, metadata
        out.timings, out.stages, out.warnings = timings, stages, list(warnings or [])
        out._hits = {}
        return out

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, i: int) -> list[Hit]: ...

    @overload
    def __getitem__(self, i: slice) -> SearchResults: ...

    def __getitem__(self, i: int | slice) -> list[Hit] | SearchResults:
        if isinstance(i, slice):
            return SearchResults.from_columns(
                self.ids[i], self.scores[i], self.texts[i], self.metadata[i], self.timings, self.stages, self.warnings
            )
        n = len(self.ids)
        if not -n <= i < n:
            raise IndexError("search results index out of range")
        i %= n
        got = self._hits.get(i)
        if got is None:  # built once: a caller may keep and change its Hits
            got = self._hits[i] = [
                Hit(d, s, t, m)
                for d, s, t, m in zip(
                    self.ids[i], self.scores[i].tolist(), self.texts[i], self.metadata[i], strict=True
                )
            ]
        return got

    def __iter__(self) -> Iterator[list[Hit]]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == list(b) for a, b in zip(self, other, strict=False))

    __hash__ = None  # type: ignore[assignment]  # compared by value, like the list it reads as

    def __repr__(self) -> str:
        return repr(list(self))
