"""Fixtures shared by the test modules. Importable helpers (the shared data path, unit vectors) are in helpers.py."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ranx_warm() -> None:
    """`bitsearch.evaluate.compute_metrics` (ranx) warmed up once per session.

    ranx's first use in a process builds numba typed dicts and loads (on a fresh install, compiles: ~2
    minutes on 2 cores) its metric kernels; paying that here once keeps it out of each test that scores a
    few toy queries, and out of the grid tests that score real runs after them.
    """
    pytest.importorskip("ranx")
    from bitsearch.evaluate import compute_metrics

    qrels = {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}}
    run = {"q1": {"d2": 0.9, "d1": 0.5}, "q2": {"d4": 0.7}}
    compute_metrics(qrels, run, ("ndcg@10", "mrr@10", "recall@100"))
    for metric in ("ndcg@10", "mrr@10", "recall@100"):
        compute_metrics(qrels, run, (metric,))
