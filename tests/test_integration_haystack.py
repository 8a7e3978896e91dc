"""The Haystack adapter: Haystack's own DocumentStore test suites, unmodified, plus retrievers, filters
checked against Haystack's reference filter semantics, serialization, and bad input that changes nothing."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("haystack")

from haystack import Document, Pipeline
from haystack.components.joiners import DocumentJoiner
from haystack.dataclasses import ByteStream, SparseEmbedding
from haystack.document_stores.errors import DocumentStoreError, DuplicateDocumentError
from haystack.document_stores.types import DuplicatePolicy, FilterPolicy
from haystack.errors import FilterError
from haystack.testing.document_store import (
    CountDocumentsByFilterTest,
    CountUniqueMetadataByFilterTest,
    DocumentStoreBaseExtendedTests,
    GetMetadataFieldMinMaxTest,
    GetMetadataFieldsInfoTest,
    GetMetadataFieldUniqueValuesTest,
)
from haystack.utils.filters import document_matches_filter
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bitsearch import Collection
from bitsearch.integrations.haystack import (
    BitsearchBM25Retriever,
    BitsearchDocumentStore,
    BitsearchEmbeddingRetriever,
    convert_filters,
)


def _float32(doc: Document) -> Document:
    """``doc`` with its embedding rounded to float32, as the store keeps (and returns) it."""
    if doc.embedding is None:
        return doc
    return Document(
        id=doc.id,
        content=doc.content,
        blob=doc.blob,
        meta=doc.meta,
        score=doc.score,
        embedding=np.asarray(doc.embedding, dtype=np.float32).tolist(),
        sparse_embedding=doc.sparse_embedding,
    )


class TestBitsearchDocumentStore(
    DocumentStoreBaseExtendedTests,
    CountDocumentsByFilterTest,
    CountUniqueMetadataByFilterTest,
    GetMetadataFieldsInfoTest,
    GetMetadataFieldMinMaxTest,
    GetMetadataFieldUniqueValuesTest,
):
    """Haystack's suites, unmodified but for the comparison of documents."""

    @pytest.fixture
    def document_store(self, tmp_path: Path) -> BitsearchDocumentStore:
        return BitsearchDocumentStore(str(tmp_path / "store"))

    @staticmethod
    def assert_documents_are_equal(received: list[Document], expected: list[Document]) -> None:
        # The store keeps embeddings as float32 (the suites write float64 random numbers), so an embedding
        # read back equals the written one rounded to float32, exactly; everything else is compared as is.
        assert received == [_float32(d) for d in expected]

    def test_write_documents(self, document_store: BitsearchDocumentStore) -> None:
        """The default policy (NONE) fails on an id already stored, like FAIL, and writes nothing."""
        docs = [Document(id="1", content="one"), Document(id="2", content="two")]
        assert document_store.write_documents(docs) == 2
        with pytest.raises(DuplicateDocumentError):
            document_store.write_documents([Document(id="3", content="three"), Document(id="1", content="again")])
        self.assert_documents_are_equal(document_store.filter_documents(), docs)


# --------------------------------------------------------------------------- filters vs Haystack's reference

_DATES = st.builds(
    lambda s, z: (dt.datetime(1950, 1, 1) + dt.timedelta(seconds=s)).isoformat() + z,
    st.integers(0, 80 * 365 * 86400),
    st.sampled_from(["", "Z", "+00:00"]),  # naive times are UTC in both bitsearch and Haystack (copied tz)
)
_VALUES = {
    "n": st.one_of(st.integers(-5, 5), st.sampled_from([0.5, -2.5, 2.0])),
    "s": st.sampled_from(["a", "b", "c", "ab", "1"]),
    "d": _DATES,
    "b": st.booleans(),
}


def _comparisons() -> st.SearchStrategy[dict[str, Any]]:
    def one(field: str, op: str, value: Any) -> dict[str, Any]:
        return {"field": field, "operator": op, "value": value}

    fields = st.sampled_from(["meta.n", "meta.s", "meta.d", "meta.b", "meta.nest.x", "n"])
    scalar = st.one_of(*_VALUES.values(), st.none())
    return st.one_of(
        st.builds(one, fields, st.sampled_from(["==", "!="]), scalar),
        st.builds(one, fields, st.sampled_from([">", ">=", "<", "<="]), scalar),
        st.builds(one, fields, st.sampled_from(["in", "not in"]), st.lists(scalar, max_size=4)),
    )


_FILTERS = st.recursive(
    _comparisons(),
    lambda sub: st.builds(
        lambda op, conds: {"operator": op, "conditions": conds},
        st.sampled_from(["AND", "OR", "NOT"]),
        st.lists(sub, min_size=1, max_size=3),
    ),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[BitsearchDocumentStore, list[Document]]:
    """Documents whose metadata cover every kind (and gaps), written once for the property test."""
    rng = np.random.default_rng(0)
    metas: list[dict[str, Any]] = []
    for _i in range(60):
        meta: dict[str, Any] = {}
        for key, pool in (
            ("n", [-5, -1, 0, 0.5, 2, 2.0, 3, None]),
            ("s", ["a", "b", "ab", "1", None]),
            ("d", ["1969-07-21T20:17:40", "1972-12-11T19:54:58Z", "1989-11-09T17:53:00+00:00", "1972-12-11", None]),
            ("b", [True, False, None]),
        ):
            if rng.random() < 0.8:
                meta[key] = pool[int(rng.integers(len(pool)))]
        if rng.random() < 0.5:
            meta["nest"] = {"x": int(rng.integers(-3, 4))}
        metas.append(meta)
    docs = [Document(id=f"r{i}", content=f"doc {i}", meta=m) for i, m in enumerate(metas)]
    store = BitsearchDocumentStore(str(tmp_path_factory.mktemp("ref") / "store"))
    store.write_documents(docs)
    return store, docs


def _leaves(flt: dict[str, Any]) -> list[dict[str, Any]]:
    return [flt] if "field" in flt else [leaf for sub in flt["conditions"] for leaf in _leaves(sub)]


def _haystack_refuses(flt: dict[str, Any], docs: list[Document]) -> bool:
    """Whether Haystack raises on a comparison, or orders by a string that is not ISO 8601 (which it reads
    leniently with dateutil: "1" is the 1st of this month; bitsearch refuses to guess)."""
    if flt["operator"] in (">", ">=", "<", "<=") and isinstance(flt["value"], str):
        try:
            dt.datetime.fromisoformat(flt["value"])
        except ValueError:
            return True
    try:
        for doc in docs:
            document_matches_filter(flt, doc)
    except (FilterError, TypeError):
        return True
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flt=_FILTERS)
def test_filters_agree_with_haystack(reference_store, flt: dict[str, Any]) -> None:
    """Where Haystack's reference (in-memory) semantics answers a filter, bitsearch answers the same or
    refuses it because one of its comparisons is one Haystack itself refuses (its AND/OR stop early, so
    it can answer a filter holding such a comparison, depending on the documents' order). Where Haystack
    raises (strings that are not dates ordered, mixed kinds), bitsearch's answer is not compared."""
    store, docs = reference_store
    try:
        expected = [d.id for d in docs if document_matches_filter(flt, d)]
    except (FilterError, TypeError):
        assume(False)
    try:
        got = [d.id for d in store.filter_documents(flt)]
    except FilterError:
        assert any(_haystack_refuses(leaf, docs) for leaf in _leaves(flt))
        return
    assert got == expected


@pytest.mark.parametrize(
    "flt",
    [
        {"field": "content", "operator": "==", "value": "x"},
        {"field": "id", "operator": "in", "value": ["a"]},
        {"field": "meta.tags", "operator": "==", "value": ["a", "b"]},
        {"field": "meta.$and", "operator": "==", "value": 1},
        {"field": "meta.bad key", "operator": "==", "value": 1},
        {"field": "meta.n", "operator": ">", "value": "yesterday"},
        {"field": "meta.n", "operator": "~", "value": 1},
        {"operator": "XOR", "conditions": [{"field": "meta.n", "operator": "==", "value": 1}]},
        {"operator": "AND", "conditions": []},
        {"field": "meta.n", "operator": "==", "value": float("nan")},
        "meta.n == 1",
    ],
)
def test_filters_bitsearch_cannot_answer_exactly_are_refused(flt: Any, tmp_path: Path) -> None:
    with pytest.raises(FilterError):
        convert_filters(flt)
    store = BitsearchDocumentStore(str(tmp_path / "s"))
    store.write_documents([Document(id="a", content="x", meta={"n": 1})])
    with pytest.raises(FilterError):
        store.filter_documents(flt)
    assert store.count_documents() == 1


# --------------------------------------------------------------------------- writes: policies, bad input

DIM = 8


def _docs(n: int, seed: int = 0, start: int = 0) -> list[Document]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, DIM))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return [
        Document(
            id=f"d{start + i}", content=f"document number {start + i}", meta={"i": start + i}, embedding=e.tolist()
        )
        for i, e in enumerate(emb)
    ]


@pytest.fixture
def store(tmp_path: Path) -> BitsearchDocumentStore:
    return BitsearchDocumentStore(str(tmp_path / "store"))


def test_policies(store: BitsearchDocumentStore) -> None:
    docs = _docs(4)
    assert store.write_documents(docs[:2]) == 2
    changed = Document(id="d0", content="changed", meta={"i": 100}, embedding=docs[1].embedding)
    assert store.write_documents([changed, docs[2]], policy=DuplicatePolicy.SKIP) == 1
    assert store.filter_documents({"field": "meta.i", "operator": "==", "value": 0})[0].content == "document number 0"
    assert store.write_documents([changed, docs[3]], policy=DuplicatePolicy.OVERWRITE) == 2
    got = {d.id: d for d in store.filter_documents()}
    assert (got["d0"].content, got["d0"].meta, got["d0"].embedding) == (
        "changed",
        {"i": 100},
        _float32(docs[1]).embedding,
    )
    assert sorted(got) == ["d0", "d1", "d2", "d3"]
    with pytest.raises(DuplicateDocumentError):
        store.write_documents([docs[0], docs[0]], policy=DuplicatePolicy.FAIL)
    # repeated ids in one call: SKIP keeps the first, OVERWRITE the last
    a, b = Document(id="x", content="first"), Document(id="x", content="second")
    assert store.write_documents([a, b], policy=DuplicatePolicy.SKIP) == 1
    assert store.filter_documents({"field": "meta.i", "operator": "==", "value": None})[0].content == "first"
    assert store.write_documents([a, b], policy=DuplicatePolicy.OVERWRITE) == 1
    assert store.filter_documents({"field": "meta.i", "operator": "==", "value": None})[0].content == "second"
    assert store.count_documents() == 5


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (Document(id="bad", content="x", blob=ByteStream(b"\x00")), "blob"),
        (Document(id="bad", content="x", sparse_embedding=SparseEmbedding([1], [0.5])), "sparse"),
        (Document(id="bad", content="x", embedding=[0.1] * (DIM - 1)), "dim"),
        (Document(id="bad", content="x", embedding=[float("nan")] * DIM), "finite"),
        (Document(id="bad", content="x", embedding=[]), "non-empty"),
        (Document(id="bad", content="x", meta={"when": dt.datetime(2024, 1, 1)}), "JSON"),
        (Document(id="bad", content="x", meta={"x": float("inf")}), "infinity"),
        (Document(id="bad", content="lone \udfff surrogate"), "surrogate"),
    ],
)
def test_bad_documents_change_nothing(store: BitsearchDocumentStore, bad: Document, error: str) -> None:
    docs = _docs(3)
    store.write_documents(docs[:2])
    for policy in (DuplicatePolicy.NONE, DuplicatePolicy.OVERWRITE):
        with pytest.raises(DocumentStoreError, match=error):
            store.write_documents([docs[2], bad], policy=policy)
    assert [d.id for d in store.filter_documents()] == ["d0", "d1"]


def test_fail_policy_writes_nothing_when_one_id_is_stored(store: BitsearchDocumentStore) -> None:
    docs = _docs(4)
    store.write_documents(docs[:2])
    with pytest.raises(DuplicateDocumentError, match="d1"):
        store.write_documents([*docs[2:], docs[1]], policy=DuplicatePolicy.FAIL)
    assert store.count_documents() == 2
    with pytest.raises(ValueError):
        store.write_documents((docs[2],))  # type: ignore[arg-type]


def test_update_by_filter_keeps_embeddings_and_text(store: BitsearchDocumentStore) -> None:
    docs = [*_docs(4), Document(id="plain", content="no vector here", meta={"i": 1})]
    store.write_documents(docs)
    assert store.update_by_filter({"field": "meta.i", "operator": "<=", "value": 1}, {"tag": "low"}) == 3
    got = {d.id: d for d in store.filter_documents({"field": "meta.tag", "operator": "==", "value": "low"})}
    assert sorted(got) == ["d0", "d1", "plain"]
    assert got["d1"].embedding == _float32(docs[1]).embedding and got["d1"].content == docs[1].content
    assert got["plain"].embedding is None and got["plain"].content == "no vector here"
    with pytest.raises(DocumentStoreError):
        store.update_by_filter({"field": "meta.i", "operator": "==", "value": 2}, {"bad": float("nan")})
    assert store.count_documents_by_filter({"field": "meta.bad", "operator": "!=", "value": None}) == 0


# --------------------------------------------------------------------------- retrievers and hybrid


@pytest.fixture
def filled(store: BitsearchDocumentStore) -> tuple[BitsearchDocumentStore, list[Document]]:
    docs = _docs(40)
    plain = [
        Document(id=f"p{i}", content=f"plain text about document number {i}", meta={"i": i, "plain": True})
        for i in range(5)
    ]
    store.write_documents(docs[:20] + plain + docs[20:])
    return store, docs


def test_embedding_retriever_ranks_by_dot_product_and_skips_documents_without_vectors(filled) -> None:
    store, docs = filled
    emb = np.asarray([d.embedding for d in docs], dtype=np.float32)
    # 8 sign bits rank coarsely: with k x 8 >= 40 candidates every vector is rescored by its float32 row
    retriever = BitsearchEmbeddingRetriever(store, top_k=5, rescore_multiplier=8)
    for q in range(0, 40, 7):
        assert BitsearchEmbeddingRetriever(store).run(query_embedding=docs[q].embedding)["documents"][0].id == f"d{q}"
        found = retriever.run(query_embedding=docs[q].embedding)["documents"]
        exact = np.argsort(-(emb @ emb[q]), kind="stable")[:5]
        assert [d.id for d in found] == [docs[i].id for i in exact]
        assert [d.score for d in found] == pytest.approx((emb[exact] @ emb[q]).tolist(), abs=1e-5)
        assert all(d.embedding is None for d in found)
    everything = retriever.run(query_embedding=docs[0].embedding, top_k=100)["documents"]
    assert len(everything) == 40 and not any(d.id.startswith("p") for d in everything)
    even = {"field": "meta.i", "operator": "in", "value": list(range(0, 40, 2))}
    found = retriever.run(query_embedding=docs[3].embedding, filters=even, top_k=50, return_embedding=True)
    assert sorted(d.id for d in found["documents"]) == sorted(f"d{i}" for i in range(0, 40, 2))
    assert all(d.embedding == _float32(docs[int(d.id[1:])]).embedding for d in found["documents"])
    assert retriever.run(query_embedding=docs[0].embedding, top_k=0)["documents"] == []


def test_bm25_retriever_finds_documents_without_vectors(filled) -> None:
    store, _ = filled
    retriever = BitsearchBM25Retriever(store, top_k=3, filters={"field": "meta.plain", "operator": "==", "value": True})
    found = retriever.run(query="plain text about number 4")["documents"]
    assert found[0].id == "p4" and all(d.id.startswith("p") for d in found)
    assert found[0].score >= found[-1].score > 0
    merged = BitsearchBM25Retriever(
        store, filters={"field": "meta.i", "operator": "<", "value": 3}, filter_policy=FilterPolicy.MERGE
    )
    got = merged.run(query="document number", filters={"field": "meta.plain", "operator": "==", "value": True})
    assert sorted(d.id for d in got["documents"]) == ["p0", "p1", "p2"]
    with pytest.raises(ValueError):
        retriever.run(query="")


def test_empty_store_retrieves_nothing(store: BitsearchDocumentStore) -> None:
    assert BitsearchEmbeddingRetriever(store).run(query_embedding=[0.1] * DIM)["documents"] == []
    assert BitsearchBM25Retriever(store).run(query="anything")["documents"] == []
    store.write_documents([Document(id="t", content="text only")])
    assert BitsearchEmbeddingRetriever(store).run(query_embedding=[0.1] * DIM)["documents"] == []
    assert [d.id for d in BitsearchBM25Retriever(store).run(query="text")["documents"]] == ["t"]
    store.write_documents(_docs(2))
    for bad in ([], "text", [[0.1] * DIM], None):
        with pytest.raises(ValueError):
            BitsearchEmbeddingRetriever(store).run(query_embedding=bad)  # type: ignore[arg-type]
    with pytest.raises(DocumentStoreError, match="dim"):
        BitsearchEmbeddingRetriever(store).run(query_embedding=[0.1] * (DIM + 1))


def test_hybrid_pipeline_with_reciprocal_rank_fusion(filled) -> None:
    store, docs = filled
    pipe = Pipeline()
    pipe.add_component("dense", BitsearchEmbeddingRetriever(store, top_k=5))
    pipe.add_component("keyword", BitsearchBM25Retriever(store, top_k=5))
    pipe.add_component("joiner", DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=5))
    pipe.connect("dense", "joiner")
    pipe.connect("keyword", "joiner")
    out = pipe.run({"dense": {"query_embedding": docs[7].embedding}, "keyword": {"query": "plain text number 3"}})
    ids = [d.id for d in out["joiner"]["documents"]]
    assert len(ids) == 5 and "d7" in ids and "p3" in ids  # each ranking's best survives the fusion
    # the pipeline, its retrievers and their store serialize; Haystack loads classes from trusted modules only
    again = Pipeline.loads(pipe.dumps(), allowed_modules=["bitsearch.integrations.haystack"])
    out2 = again.run({"dense": {"query_embedding": docs[7].embedding}, "keyword": {"query": "plain text number 3"}})
    assert [d.id for d in out2["joiner"]["documents"]] == ids


# --------------------------------------------------------------------------- serialization, isolation


@pytest.mark.filterwarnings("ignore:int8 ranges calibrated on only:UserWarning")  # int8 codes of 3 documents
def test_store_and_retrievers_round_trip(tmp_path: Path) -> None:
    store = BitsearchDocumentStore(str(tmp_path / "s"), precision="int8")
    store.write_documents(_docs(3))
    data = store.to_dict()
    assert data["init_parameters"] == {"path": str(tmp_path / "s"), "precision": "int8"}
    again = BitsearchDocumentStore.from_dict(data)
    assert again.filter_documents() == store.filter_documents()
    assert again.collection.precision == "int8"
    for retriever in (
        BitsearchEmbeddingRetriever(store, filters={"field": "meta.i", "operator": ">", "value": 0}, top_k=2),
        BitsearchBM25Retriever(store, top_k=2, filter_policy=FilterPolicy.MERGE),
    ):
        copy = type(retriever).from_dict(retriever.to_dict())
        assert copy.to_dict() == retriever.to_dict()
        assert copy.document_store.count_documents() == 3
    with pytest.raises(TypeError):
        BitsearchBM25Retriever(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BitsearchEmbeddingRetriever(store, top_k=0)
    with pytest.raises(FilterError):
        BitsearchEmbeddingRetriever(store, filters={"field": "content", "operator": "==", "value": "x"})
    with pytest.raises(DocumentStoreError):
        BitsearchDocumentStore(str(tmp_path / "t"), keep_float32=False)


def test_temporary_store() -> None:
    store = BitsearchDocumentStore()
    where = store.collection.path
    store.write_documents(_docs(2))
    assert store.count_documents() == 2 and store.to_dict()["init_parameters"] == {"path": None}
    assert BitsearchDocumentStore.from_dict(store.to_dict()).count_documents() == 0
    store.close()
    assert not where.exists()


def test_import_bitsearch_does_not_import_haystack() -> None:
    code = (
        "import sys, bitsearch, bitsearch.integrations; bitsearch.Collection; "
        "assert not any(m == 'haystack' or m.startswith('haystack.') for m in sys.modules), 'haystack imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_int_ids_of_a_collection_round_trip_as_strings(tmp_path: Path) -> None:
    path = tmp_path / "ints.bits"
    col = Collection.create(path, 4, keep_int8=False, keep_float32=True)
    col.add(np.eye(4, dtype=np.float32)[:3], ids=[7, 8, 9], texts=["seven", "eight", "nine"], metadata=[{"n": 7}] * 3)
    col.close()
    store = BitsearchDocumentStore(str(path))
    assert [d.id for d in store.filter_documents()] == ["7", "8", "9"]
    hits = BitsearchEmbeddingRetriever(store, top_k=1).run(query_embedding=[0.0, 1.0, 0.0, 0.0])["documents"]
    assert [d.id for d in hits] == ["8"]
    with pytest.raises(DuplicateDocumentError):
        store.write_documents([Document(id="9", content="again")])
    assert store.write_documents([Document(id="8", content="eight again")], policy=DuplicatePolicy.OVERWRITE) == 1
    assert store.count_documents() == 3 and store.collection.get([8])[0].text == "eight again"
    assert store.update_by_filter({"field": "meta.n", "operator": "==", "value": 7}, {"seen": True}) == 2
    store.delete_documents(["7"])
    assert sorted(store.collection.ids()) == [8, 9]
    assert store.collection.get([9])[0].metadata == {"n": 7, "seen": True}
    store.close()
