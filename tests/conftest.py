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

    metrics = ("ndcg@10", "mrr@10", "recall@100")
    # the shapes that take their own compilation: several queries, one query with graded judgments, a query
    # with no hit, and one metric at a time (ranx then returns a float)
    compute_metrics(
        {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}}, {"q1": {"d2": 0.9, "d1": 0.5}, "q2": {"d4": 0.7}}, metrics
    )
    compute_metrics({"q": {"d1": 3, "d2": 1}}, {"q": {"d2": 2.0, "d1": 1.0}}, metrics)
    compute_metrics({"q1": {"d1": 1}, "q2": {"d2": 1}}, {"q1": {"d1": 1.0}}, metrics)
    for metric in metrics:
        compute_metrics({"q": {"d1": 1}}, {"q": {"d1": 1.0}}, (metric,))
