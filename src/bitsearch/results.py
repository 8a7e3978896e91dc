"""Search results: one list of ``Hit`` per query, with the time each stage took."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


class SearchResults(list):  # type: ignore[type-arg]
    """A list with one list of ``Hit`` per query, plus ``timings``: seconds spent in each stage, and
    ``warnings``: what may explain a short answer (a filter field that no stored document has)."""

    def __init__(
        self,
        hits: list[list[Hit]],
        timings: dict[str, float],
        stages: list[str],
        warnings: list[str] | None = None,
    ) -> None:
        super().__init__(hits)
        self.timings = timings
        self.stages = stages
        self.warnings = list(warnings or [])
