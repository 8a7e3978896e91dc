"""What an evaluation measured: a `Report`, with one `ConfigResult` per configuration.

The plain records that the runner fills in and the report and plots read (below both of them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ConfigResult", "Report"]


@dataclass
class ConfigResult:
    """Quality, memory and speed of one configuration on one dataset."""

    name: str
    precision: str
    rescore: list[str]
    multiplier: int
    dim: int
    truncate_dim: int | None
    metrics: dict[str, float]
    kept: dict[str, float] = field(default_factory=dict)  # % of the float32 reference
    ram_bytes_per_doc: float = 0.0
    disk_bytes_per_doc: float = 0.0
    build_s: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    batch_qps: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    mode: str = "dense"  # "dense", "keyword" or "hybrid"


@dataclass
class Report:
    """Everything one evaluation measured, plus how it was produced."""

    dataset: str
    documents: int
    queries: int
    model: str
    k: int
    recall_k: int
    metrics: list[str]
    results: list[ConfigResult]
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def result(self, name: str) -> ConfigResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)
