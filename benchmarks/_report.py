"""Shared helpers for benchmarks: machine description, medians, and writing a section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
RESULTS = DOC.with_name("results.md")  # retrieval quality: what each precision and default keeps
HEADER = "# Benchmarks\n\nEach section is written by the benchmark named in it; rerun the command to reproduce.\n"


def machine() -> str:
    """One line describing the CPU, cores, memory and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        m = re.search(r"Model name:\s*(.+)", out)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import numba
    import numpy

    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}, "
        f"numpy {numpy.__version__}, numba {numba.__version__}"
    )


def median_time(fn: Callable[[], object], repeat: int = 7, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write_section(name: str, body: str, doc: Path = DOC) -> None:
    """Replace (or append) the section ``name`` of ``doc`` (docs/benchmarks.md) with ``body``."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text() if doc.exists() else HEADER
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = doc.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(doc)


def results_ndcg(ds: Any, results: Any) -> float:
    """NDCG@10 of ``SearchResults`` (one list of hits per query of the dataset ``ds``) against its qrels."""
    from bitsearch.evaluate import compute_metrics

    run = {q: {str(h.id): h.score for h in hits} for q, hits in zip(ds.query_ids, results, strict=True)}
    return compute_metrics(ds.qrels, run, ("ndcg@10",))["ndcg@10"]


def rows_ndcg(ds: Any, rows: Any, scores: Any) -> float:
    """NDCG@10 of row numbers into ``ds.doc_ids`` and their scores (nq, k) (a peer's output; -1: no row)."""
    from bitsearch.evaluate import compute_metrics

    run = {
        q: {ds.doc_ids[int(j)]: float(s) for j, s in zip(r, sc, strict=True) if j >= 0}
        for q, r, sc in zip(ds.query_ids, rows, scores, strict=True)
    }
    return compute_metrics(ds.qrels, run, ("ndcg@10",))["ndcg@10"]
