"""Evaluation: what each precision costs, measured on real benchmarks.

Loads BEIR-format datasets (`datasets`), caches their embeddings on disk (`cache`), runs a grid of search
configurations (`configs`) through the real `Collection` search path (`runner`), scores them with ranx
(NDCG@10, Recall@100, MRR@10) and reports quality next to memory, disk, build time and latency
(`report`: markdown and JSON; `plots`: PNG).

Configuration names are described in `bitsearch.evaluate.configs`. Bytes per document count the vector
codes (`Collection.stats()["stages"]`) for dense; keyword counts nothing in RAM and only `docs.sqlite` (ids,
texts and the FTS5 index, `stats()["docs_disk_bytes"]`) on disk; hybrid counts its dense codes plus
`docs.sqlite` on disk.
"""

from __future__ import annotations

from .cache import CACHE_ENV, EncoderLike, cache_dir, cached_embeddings, collection_embeddings, embed_dataset
from .configs import (
    DEFAULT_MULTIPLIER,
    HYBRID_PREFIX,
    KEYWORD,
    MULTIPLIERS,
    SEARCH_MODES,
    TRUNCATE_DIMS,
    Config,
    default_grid,
    parse_config,
    select_configs,
)
from .datasets import Dataset, doc_text, load_dataset
from .plots import label_groups, label_points, pareto_front, plot_report
from .report import SUMMARY_CONFIGS, ConfigResult, Report, load_report, markdown_table, summary_table, write_report
from .runner import compute_metrics, evaluate, run_config

__all__ = [
    "CACHE_ENV",
    "DEFAULT_MULTIPLIER",
    "HYBRID_PREFIX",
    "KEYWORD",
    "MULTIPLIERS",
    "SEARCH_MODES",
    "SUMMARY_CONFIGS",
    "TRUNCATE_DIMS",
    "Config",
    "ConfigResult",
    "Dataset",
    "EncoderLike",
    "Report",
    "cache_dir",
    "cached_embeddings",
    "collection_embeddings",
    "compute_metrics",
    "default_grid",
    "doc_text",
    "embed_dataset",
    "evaluate",
    "label_groups",
    "label_points",
    "load_dataset",
    "load_report",
    "markdown_table",
    "parse_config",
    "pareto_front",
    "plot_report",
    "run_config",
    "select_configs",
    "summary_table",
    "write_report",
]
