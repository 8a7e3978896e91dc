"""Keyword (BM25) search, reciprocal rank fusion, hybrid mode, metadata filters, text queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import shared_data, unit_vectors

from bitsearch import Collection, InvalidInputError
from bitsearch.hybrid import reciprocal_rank_fusion
from bitsearch.store import filter_sql, keyword_query

SCIFACT = shared_data("scifact")
DIM = 32


# ------------------------------------------------------------------------------------------- RRF


def test_rrf_hand_computed():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]], rrf_k=60)
    scores = dict(fused)
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62)
    assert scores["d"] == pytest.approx(1 / 63)
    assert [k for k, _ in fused] == ["a", "c", "b", "d"]


def test_rrf_weights_ties_and_k():
    # equal fused scores: the key ranked better in the earlier ranking comes first
    assert [k for k, _ in reciprocal_rank_fusion([["x"], ["y"]])] == ["x", "y"]
    assert [k for k, _ in reciprocal_rank_fusion([["x"], ["y"]], weights=[1, 2])] == ["y", "x"]
    assert reciprocal_rank_fusion([["a", "b", "c"]], k=2) == [("a", 1 / 61), ("b", 1 / 62)]
    assert reciprocal_rank_fusion([["a"], ["a"]], weights=[0, 1], rrf_k=0) == [("a", 1.0)]
    with pytest.raises(InvalidInputError, match="2 rankings"):
        reciprocal_rank_fusion([["a"], ["b"]], weights=[1])
    with pytest.raises(InvalidInputError, match="rrf_k"):
        reciprocal_rank_fusion([["a"]], rrf_k=-1)


# --------------------------------------------------------------------------------- filters to SQL


def test_keyword_query_building():
    assert keyword_query("The cat and the HAT!") == '"cat" OR "hat"'
    assert keyword_query("the and") == '"the" OR "and"'  # only stop words: still searched
    assert keyword_query("  ...  ") is None
    assert keyword_query('he said "quote" OR NOT x') == '"he" OR "said" OR "quote" OR "x"'


@pytest.mark.parametrize(
    ("flt", "match"),
    [
        ({}, "non-empty dict"),
        ({"a; DROP": 1}, "invalid filter field"),
        ({"a": {"$regex": "x"}}, "unknown filter operator"),
        ({"a": {"$in": []}}, "non-empty list"),
        ({"a": [1, 2]}, "str, number, bool or null"),
        ({"a": {"$gt": float("nan")}}, "NaN"),
        ({"$or": "x"}, "non-empty list"),
    ],
)
def test_bad_filters(flt, match):
    with pytest.raises(InvalidInputError, match=match):
        filter_sql(flt)


# ---------------------------------------------------------------------- collection with metadata

SOURCES = ["wiki", "news", "blog"]


def _matches(meta: dict, flt: dict) -> bool:
    """Python reference semantics of a filter."""
    for key, cond in flt.items():
        if key == "$and":
            if not all(_matches(meta, c) for c in cond):
                return False
            continue
        if key == "$or":
            if not any(_matches(meta, c) for c in cond):
                return False
            continue
        value = meta
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        ops = cond if isinstance(cond, dict) else {"$eq": cond}
        for op, v in ops.items():
            ok = {
                "$eq": lambda a, b: a is not None and a == b,
                "$ne": lambda a, b: a is None or a != b,
                "$gt": lambda a, b: a is not None and a > b,
                "$gte": lambda a, b: a is not None and a >= b,
                "$lt": lambda a, b: a is not None and a < b,
                "$lte": lambda a, b: a is not None and a <= b,
                "$in": lambda a, b: a in b,
                "$nin": lambda a, b: a not in b,
            }[op](value, v)
            if not ok:
                return False
    return True


WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "theta",
    "kappa",
    "lambda",
    "sigma",
    "omega",
    "quantum",
    "binary",
    "vector",
]


@pytest.fixture(scope="module")
def meta_col(tmp_path_factory: pytest.TempPathFactory):
    rng = np.random.default_rng(0)
    n = 600
    emb = unit_vectors(n, DIM)
    metas = []
    texts = []
    for i in range(n):
        m = {"source": SOURCES[i % 3], "year": int(1990 + i % 35), "nested": {"score": float(i % 10)}}
        if i % 7 == 0:
            m["rare"] = True
        metas.append(m)
        texts.append(" ".join(rng.choice(WORDS, size=8)) + f" doc{i}")
    col = Collection.create(tmp_path_factory.mktemp("meta") / "c", DIM, keep_float32=True)
    col.add(emb, ids=[f"d{i}" for i in range(n)], texts=texts, metadata=metas)
    deleted = [f"d{i}" for i in range(0, n, 11)]
    col.delete(deleted)
    return col, emb, metas, texts, set(deleted)


FILTERS = [
    {"source": "news"},
    {"year": {"$gte": 2000, "$lt": 2005}},
    {"source": {"$in": ["wiki", "blog"]}, "year": {"$lte": 1995}},
    {"rare": True},
    {"nested.score": {"$gt": 7.5}},
    {"source": {"$ne": "wiki"}, "year": 2001},
    {"$or": [{"source": "blog", "year": 1999}, {"rare": True, "year": {"$gt": 2015}}]},
    {"year": {"$nin": [1990, 1991, 1992]}, "source": "wiki"},
    {"year": 2024, "source": "news", "rare": True},  # few or no matches
]


@pytest.mark.parametrize("flt", FILTERS)
@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_filters_exact_and_full(meta_col, flt, mode):
    col, emb, metas, texts, deleted = meta_col
    allowed = {f"d{i}" for i, m in enumerate(metas) if _matches(m, flt)} - deleted
    k = 10
    rng = np.random.default_rng(len(str(flt)))
    for qi in rng.choice(len(emb), 3, replace=False):
        query_text = " ".join(texts[qi].split()[:3])
        if mode == "keyword":
            res = col.search(query_text, k=k, mode=mode, filter=flt)
        else:
            res = col.search(emb[qi], k=k, mode=mode, query_texts=[query_text], filter=flt)
        ids = [h.id for h in res[0]]
        assert set(ids) <= allowed, f"hits outside the filter: {set(ids) - allowed}"
        assert len(ids) == len(set(ids))
        if mode != "keyword":
            assert len(ids) == min(k, len(allowed))
        else:  # keyword only returns documents sharing a term with the query
            sharing = {
                f"d{i}"
                for i in range(len(texts))
                if f"d{i}" in allowed and set(texts[i].split()) & set(query_text.split())
            }
            assert len(ids) == min(k, len(sharing))


def test_dense_filter_matches_brute_force(meta_col):
    col, emb, metas, _, deleted = meta_col
    flt = {"source": "blog", "year": {"$gte": 2010}}
    allowed = [i for i, m in enumerate(metas) if _matches(m, flt) and f"d{i}" not in deleted]
    q = unit_vectors(1, DIM, 5)[0]
    res = col.search(q, k=5, rescore="float32", rescore_multiplier=1000, filter=flt)
    ref = sorted(allowed, key=lambda i: -float(emb[i] @ q))[:5]
    assert [h.id for h in res[0]] == [f"d{i}" for i in ref]


@pytest.mark.parametrize("mode", ["dense", "keyword", "hybrid"])
def test_deleted_never_come_back(meta_col, mode):
    col, emb, _, texts, deleted = meta_col
    for i in range(0, 600, 11):  # each deleted doc's own vector and text as the query
        res = col.search(emb[i], k=50, mode=mode, query_texts=[texts[i]], rescore_multiplier=20)
        assert not {h.id for h in res[0]} & deleted


def test_keyword_finds_rare_term_and_hybrid_fuses(meta_col):
    col, emb, _, texts, _ = meta_col
    res = col.search("doc123", k=3, mode="keyword")
    assert res[0][0].id == "d123" and res[0][0].text == texts[123]
    assert res.stages == ["keyword"] and "keyword" in res.timings
    # hybrid: the keyword side finds d123 by its unique token even when the vector points elsewhere
    res = col.search(emb[5], k=5, mode="hybrid", query_texts="doc123")
    assert {"d5", "d123"} <= {h.id for h in res[0]}
    assert res.stages == ["hamming", "int8", "keyword"] and "fusion" in res.timings
    # hybrid scores are RRF scores: best possible is 2 / (60 + 1)
    assert res[0][0].score <= 2 / 61 + 1e-12
    weighted = col.search(emb[5], k=1, mode="hybrid", query_texts="doc123", weights=[0.0, 1.0])
    assert weighted[0][0].id == "d123"


def test_mode_errors(meta_col):
    col, emb, *_ = meta_col
    with pytest.raises(InvalidInputError, match="unknown search mode"):
        col.search(emb[0], mode="sparse")
    with pytest.raises(InvalidInputError, match="needs query strings"):
        col.search(emb[0], mode="keyword")
    with pytest.raises(InvalidInputError, match="records no embedding model"):
        col.search("some text")
    with pytest.raises(InvalidInputError, match="query text 1 is empty"):
        col.search(["ok", " "], mode="keyword")
    with pytest.raises(InvalidInputError, match="2 query texts for 1"):
        col.search(emb[0], mode="hybrid", query_texts=["a", "b"])


def test_no_keyword_index(tmp_path: Path):
    col = Collection.create(tmp_path / "c", DIM, keyword_index=False)
    col.add(unit_vectors(5, DIM), texts=[f"text {i}" for i in range(5)])
    with pytest.raises(InvalidInputError, match="no keyword index"):
        col.search("text", mode="keyword")
    assert col.search(unit_vectors(1, DIM)[0], k=2)[0]


def test_keyword_index_follows_compaction_and_readd(tmp_path: Path):
    col = Collection.create(tmp_path / "c", DIM)
    col.add(unit_vectors(4, DIM), ids=["a", "b", "c", "d"], texts=["red apple", "green apple", "red car", "blue sky"])
    col.delete(["a"])
    assert [h.id for h in col.search("red", mode="keyword")[0]] == ["c"]
    col.compact()
    col.add(unit_vectors(1, DIM, 3), ids=["a"], texts=["red red red balloon"])
    reopened = Collection.open(tmp_path / "c")
    assert [h.id for h in reopened.search("red", mode="keyword")[0]] == ["a", "c"]


# ------------------------------------------------------------------------ real model and dataset


@pytest.fixture(scope="module")
def scifact():
    if not (SCIFACT / "corpus.jsonl").exists():
        pytest.skip("shared SciFact data not found")
    from bitsearch.evaluate import load_dataset

    return load_dataset(SCIFACT)


def test_bm25_reaches_beir_figure_on_scifact(scifact, tmp_path: Path):
    """BM25 alone: BEIR reports NDCG@10 = 0.665 on SciFact; tokenizers differ, so +-0.03."""
    from bitsearch.evaluate import compute_metrics

    col = Collection.create(tmp_path / "c", 8, precision="float32")
    col.add(unit_vectors(len(scifact.doc_ids), 8), ids=list(scifact.doc_ids), texts=list(scifact.doc_texts))
    res = col.search(query_texts=list(scifact.query_texts), k=10, mode="keyword")
    run = {q: {str(h.id): h.score for h in hits} for q, hits in zip(scifact.query_ids, res, strict=True)}
    ndcg = compute_metrics(scifact.qrels, run, ("ndcg@10",))["ndcg@10"]
    assert abs(ndcg - 0.665) <= 0.03, ndcg


def test_text_queries_with_recorded_model(tmp_path: Path, scifact):
    pytest.importorskip("sentence_transformers")
    from bitsearch.encode import Encoder

    enc = Encoder()
    docs = list(scifact.doc_texts[:60])
    col = Collection.create(tmp_path / "c", enc.dim, model=enc.manifest_info())
    col.add(enc.encode_documents(docs), ids=list(scifact.doc_ids[:60]), texts=docs)
    reopened = Collection.open(tmp_path / "c")  # the model comes from the manifest
    title = docs[42].split("\n")[0]
    for mode in ("dense", "hybrid", "keyword"):
        res = reopened.search(title, k=3, mode=mode)
        assert res[0][0].id == scifact.doc_ids[42], mode
    res = reopened.search([title, docs[7].split("\n")[0]], k=1)
    assert [r[0].id for r in res] == [scifact.doc_ids[42], scifact.doc_ids[7]]
    assert "embed" in res.timings
    with pytest.raises(InvalidInputError, match="384"):
        reopened.encoder = type("E", (), {"dim": 768})()
