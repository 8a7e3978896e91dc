"""The LlamaIndex adapter end to end: VectorStoreIndex and its retrievers over a bitsearch collection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings
from llama_index.core.schema import MetadataMode, NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from word_vectors import DIM, METAS, TEXTS, word_vector

from bitsearch import Collection, InvalidInputError
from bitsearch.hybrid import reciprocal_rank_fusion
from bitsearch.integrations.llama_index import BitsearchVectorStore, to_bitsearch_filter


class WordEmbedding(BaseEmbedding):
    """``word_vector`` as a LlamaIndex embedding model."""

    dim: int = DIM

    def _get_query_embedding(self, query: str) -> list[float]:
        return word_vector(query, self.dim)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return word_vector(query, self.dim)

    def _get_text_embedding(self, text: str) -> list[float]:
        return word_vector(text, self.dim)


SOURCES = ["src-a", "src-a", "src-b", "src-b", "src-c", "src-c"]
IDS = [f"node-{i}" for i in range(len(TEXTS))]


def make_nodes() -> list[TextNode]:
    return [
        TextNode(
            id_=i,
            text=t,
            metadata=dict(m),
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=src)},
        )
        for i, t, m, src in zip(IDS, TEXTS, METAS, SOURCES, strict=True)
    ]


def build(path: Any = None, **options: Any) -> tuple[BitsearchVectorStore, VectorStoreIndex]:
    store = BitsearchVectorStore(path, **options)
    index = VectorStoreIndex(
        make_nodes(), storage_context=StorageContext.from_defaults(vector_store=store), embed_model=WordEmbedding()
    )
    return store, index


@pytest.fixture()
def built() -> Iterator[tuple[BitsearchVectorStore, VectorStoreIndex]]:
    store, index = build()
    try:
        yield store, index
    finally:
        store.close()


def embedded_rows() -> np.ndarray:
    """The unit vectors the index stores: LlamaIndex embeds each node's metadata with its text."""
    rows = np.asarray([word_vector(n.get_content(metadata_mode=MetadataMode.EMBED)) for n in make_nodes()])
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def cosines(query: str) -> np.ndarray:
    rows = embedded_rows()
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    q = np.asarray(word_vector(query))
    return rows @ (q / np.linalg.norm(q))


def ids_of(results: list[Any]) -> list[str]:
    return [r.node.node_id for r in results]


def test_retriever_ranks_by_cosine_and_returns_stored_nodes(built) -> None:
    store, index = built
    query = "vitamin d for bone fractures"
    got = index.as_retriever(similarity_top_k=4).retrieve(query)
    sims = cosines(query)
    order = np.argsort(-sims)[:4]
    assert ids_of(got) == [IDS[i] for i in order]
    np.testing.assert_allclose([r.score for r in got], sims[order], atol=1e-5)
    first = got[0].node
    i = IDS.index(first.node_id)
    assert (first.get_content(), first.metadata, first.ref_doc_id) == (TEXTS[i], METAS[i], SOURCES[i])
    assert store.stores_text and len(store.client) == len(TEXTS)


def flt(*filters: MetadataFilter | MetadataFilters, condition: str = "and") -> MetadataFilters:
    return MetadataFilters(filters=list(filters), condition=FilterCondition(condition))


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        (flt(MetadataFilter(key="topic", value="energy")), lambda m: m["topic"] == "energy"),
        (
            flt(
                MetadataFilter(key="lang", value="en"),
                MetadataFilter(key="year", value=2019, operator=FilterOperator.GTE),
            ),
            lambda m: m["lang"] == "en" and m["year"] >= 2019,
        ),
        (
            flt(MetadataFilter(key="year", value=[2018, 2021], operator=FilterOperator.IN)),
            lambda m: m["year"] in (2018, 2021),
        ),
        (
            flt(MetadataFilter(key="year", value=[2018, 2021], operator=FilterOperator.NIN)),
            lambda m: m["year"] not in (2018, 2021),
        ),
        (
            flt(
                MetadataFilter(key="lang", value="de", operator=FilterOperator.NE),
                flt(
                    MetadataFilter(key="year", value=2020, operator=FilterOperator.LT),
                    MetadataFilter(key="year", value=2022, operator=FilterOperator.GT),
                    condition="or",
                ),
            ),
            lambda m: m["lang"] != "de" and (m["year"] < 2020 or m["year"] > 2022),
        ),
    ],
)
def test_metadata_filters(built, filters: MetadataFilters, keep) -> None:
    _, index = built
    got = index.as_retriever(similarity_top_k=len(TEXTS), filters=filters).retrieve("energy vitamin grid")
    expected = {i for i, m in zip(IDS, METAS, strict=True) if keep(m)}
    assert expected and set(ids_of(got)) == expected


@pytest.mark.parametrize(
    "filters",
    [
        flt(MetadataFilter(key="topic", value="energy", operator=FilterOperator.CONTAINS)),
        flt(MetadataFilter(key="topic", value="ener", operator=FilterOperator.TEXT_MATCH)),
        flt(MetadataFilter(key="topic", value=None, operator=FilterOperator.IS_EMPTY)),
        flt(MetadataFilter(key="topic", value="energy"), condition="not"),
    ],
)
def test_unsupported_filters_are_a_clear_error(built, filters: MetadataFilters) -> None:
    _, index = built
    with pytest.raises(InvalidInputError, match="not supported"):
        index.as_retriever(filters=filters).retrieve("energy")
    with pytest.raises(InvalidInputError, match="not supported"):
        to_bitsearch_filter(filters)


def test_delete_ref_doc_removes_its_nodes_only(built) -> None:
    store, index = built
    index.delete_ref_doc("src-b")
    got = index.as_retriever(similarity_top_k=len(TEXTS)).retrieve("solar energy grid")
    assert set(ids_of(got)) == {i for i, s in zip(IDS, SOURCES, strict=True) if s != "src-b"}
    store.delete("no-such-source")  # nothing to delete is no error
    assert len(store.client) == 4


def test_reopen_by_path(tmp_path) -> None:
    path = tmp_path / "li.bits"
    store, index = build(path)
    before = index.as_retriever(similarity_top_k=3).retrieve("solar panels and batteries")
    store.close()
    again = BitsearchVectorStore(path)
    reopened = VectorStoreIndex.from_vector_store(again, embed_model=WordEmbedding())
    after = reopened.as_retriever(similarity_top_k=3).retrieve("solar panels and batteries")
    assert [(r.node.node_id, r.score, r.node.get_content(), r.node.metadata) for r in after] == [
        (r.node.node_id, r.score, r.node.get_content(), r.node.metadata) for r in before
    ]
    reopened.delete_ref_doc("src-c")
    again.close()
    assert BitsearchVectorStore(path).get_nodes() and len(BitsearchVectorStore(path).client) == 4


def test_hybrid_mode_is_collection_hybrid_search_and_alpha_weighs_it(built) -> None:
    store, index = built
    query = "batteries on the grid"
    got = index.as_retriever(similarity_top_k=4, vector_store_query_mode="hybrid").retrieve(query)
    q = np.asarray(word_vector(query), dtype=np.float32)
    q /= np.linalg.norm(q)
    direct = store.client.search(q, k=4, mode="hybrid", query_texts=[query], rescore="float32")[0]
    assert ids_of(got) == [h.id for h in direct]
    assert [r.score for r in got] == pytest.approx([h.score for h in direct])
    dense = ids_of(index.as_retriever(similarity_top_k=4).retrieve(query))
    only_dense = index.as_retriever(similarity_top_k=4, vector_store_query_mode="hybrid", alpha=1.0).retrieve(query)
    assert ids_of(only_dense) == dense
    only_bm25 = index.as_retriever(similarity_top_k=4, vector_store_query_mode="hybrid", alpha=0.0).retrieve(query)
    keyword = store.query(VectorStoreQuery(query_str=query, similarity_top_k=4, mode=VectorStoreQueryMode.TEXT_SEARCH))
    assert ids_of(only_bm25)[: len(keyword.ids)] == keyword.ids
    assert keyword.ids[0] == "node-5"


def test_mmr_mode(built) -> None:
    _, index = built
    query = "vitamin d bones"
    q = np.asarray(word_vector(query))
    rows = embedded_rows()
    _, order = get_top_k_mmr_embeddings(
        (q / np.linalg.norm(q)).tolist(), rows.tolist(), similarity_top_k=3, mmr_threshold=0.1
    )
    retriever = index.as_retriever(
        similarity_top_k=3,
        vector_store_query_mode="mmr",
        vector_store_kwargs={"mmr_threshold": 0.1, "mmr_prefetch_factor": 2},
    )
    got = retriever.retrieve(query)
    assert ids_of(got) == [IDS[i] for i in order]
    assert ids_of(got) != ids_of(index.as_retriever(similarity_top_k=3).retrieve(query))
    sims = cosines(query)
    np.testing.assert_allclose([r.score for r in got], sims[list(order)], atol=1e-5)  # scores: similarity


async def test_async_retrieval_matches_sync(built) -> None:
    _, index = built
    retriever = index.as_retriever(similarity_top_k=3)
    assert ids_of(await retriever.aretrieve("solar grid")) == ids_of(retriever.retrieve("solar grid"))


def test_add_with_stored_id_replaces_the_node(built) -> None:
    store, index = built
    node = TextNode(id_="node-0", text="wind farms at sea", metadata={"topic": "energy"})
    index.insert_nodes([node])
    assert len(store.client) == len(TEXTS)
    [got] = store.get_nodes(["node-0"])
    assert (got.get_content(), got.metadata) == ("wind farms at sea", {"topic": "energy"})
    assert ids_of(index.as_retriever(similarity_top_k=1).retrieve("wind farms at sea")) == ["node-0"]


def test_get_delete_nodes_and_clear(built) -> None:
    store, _ = built
    energy = flt(MetadataFilter(key="topic", value="energy"))
    assert {n.node_id for n in store.get_nodes(filters=energy)} == {"node-2", "node-3", "node-5"}
    assert [n.node_id for n in store.get_nodes(["node-3", "nope", "node-0"], filters=energy)] == ["node-3"]
    store.delete_nodes(["node-0", "node-2", "nope"], filters=energy)
    assert {n.node_id for n in store.get_nodes()} == set(IDS) - {"node-2"}
    store.clear()
    assert store.get_nodes() == []
    assert store.query(VectorStoreQuery(query_embedding=word_vector("x"), similarity_top_k=2)).ids == []


def test_empty_store_answers_empty() -> None:
    store = BitsearchVectorStore()
    result = store.query(VectorStoreQuery(query_embedding=word_vector("x"), similarity_top_k=2))
    assert (result.ids, result.similarities, result.nodes) == ([], [], [])
    assert store.get_nodes() == []
    store.delete("anything")
    store.close()


def emb_node(node_id: str, embedding: Any) -> TextNode:
    return TextNode(id_=node_id, text="x", embedding=embedding)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.add([emb_node("new", [float("nan")] * DIM)]),
        lambda s: s.add([emb_node("new", [0.0] * DIM)]),
        lambda s: s.add([emb_node("new", [1.0] * (DIM - 1))]),
        lambda s: s.add([emb_node("new", word_vector("x")), emb_node("new", word_vector("y"))]),
        lambda s: s.add([TextNode(id_="new", text="x", embedding=word_vector("x"), metadata={"bad": object()})]),
        lambda s: s.add([TextNode(id_="new", text="x", embedding=word_vector("x"), metadata={"bad": "\ud800"})]),
        lambda s: s.query(VectorStoreQuery(query_embedding=word_vector("x"), mode=VectorStoreQueryMode.SVM)),
        lambda s: s.query(VectorStoreQuery(query_embedding=word_vector("x"), similarity_top_k=0)),
        lambda s: s.query(VectorStoreQuery(query_embedding=None)),
        lambda s: s.query(VectorStoreQuery(query_embedding=word_vector("x"), mode=VectorStoreQueryMode.HYBRID)),
        lambda s: s.query(VectorStoreQuery(query_embedding=word_vector("x"), query_str="x", mode="hybrid", alpha=1.5)),
        lambda s: s.query(VectorStoreQuery(query_embedding=word_vector("x"), mode="mmr", mmr_threshold=3)),
        lambda s: s.query(VectorStoreQuery(query_embedding=word_vector("x")), search_options={"k": 3}),
        lambda s: s.delete(None),
    ],
)
def test_bad_input_raises_and_changes_nothing(built, call) -> None:
    store, _ = built
    before = [(n.node_id, n.get_content(), n.metadata) for n in store.get_nodes()]
    with pytest.raises((ValueError, TypeError)):
        call(store)
    assert [(n.node_id, n.get_content(), n.metadata) for n in store.get_nodes()] == before
    assert len(store.client) == len(TEXTS)


def test_unknown_collection_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unknown collection option"):
        BitsearchVectorStore(precison="int8")


def test_node_ids_restrict_dense_queries_exactly(built) -> None:
    store, index = built
    query = "solar energy and bones"
    sims = cosines(query)
    subset = ["node-1", "node-3", "node-5", "not-stored"]
    result = store.query(VectorStoreQuery(query_embedding=word_vector(query), similarity_top_k=2, node_ids=subset))
    ranked = sorted(((sims[IDS.index(i)], i) for i in subset[:3]), reverse=True)[:2]
    assert result.ids == [i for _, i in ranked]
    np.testing.assert_allclose(result.similarities, [s for s, _ in ranked], atol=1e-5)
    # an index that also keeps its nodes passes every node id to each query: the answer is the same
    listed = VectorStoreIndex(
        make_nodes(),
        storage_context=StorageContext.from_defaults(vector_store=BitsearchVectorStore()),
        embed_model=WordEmbedding(),
        store_nodes_override=True,
    )
    expected = index.as_retriever(similarity_top_k=3).retrieve(query)
    got = listed.as_retriever(similarity_top_k=3).retrieve(query)
    assert ids_of(got) == ids_of(expected)
    assert [r.score for r in got] == pytest.approx([r.score for r in expected], abs=1e-5)


def test_nodes_without_embedding_are_found_by_keyword_only(built) -> None:
    store, index = built
    plain = TextNode(id_="plain", text="batteries without any embedding", metadata={"topic": "energy"})
    assert store.add([plain, emb_node("with", word_vector("x"))]) == ["plain", "with"]
    assert len(store.client) == len(TEXTS) + 2
    [got] = store.get_nodes(["plain"])
    assert (got.get_content(), got.metadata) == ("batteries without any embedding", {"topic": "energy"})
    query = "batteries without embedding"
    keyword = store.query(VectorStoreQuery(query_str=query, similarity_top_k=3, mode=VectorStoreQueryMode.TEXT_SEARCH))
    assert keyword.ids[0] == "plain"
    hybrid = index.as_retriever(similarity_top_k=len(TEXTS) + 2, vector_store_query_mode="hybrid").retrieve(query)
    assert "plain" in ids_of(hybrid)
    dense = index.as_retriever(similarity_top_k=len(TEXTS) + 2).retrieve(query)
    assert "plain" not in ids_of(dense) and len(dense) == len(TEXTS) + 1
    energy = flt(MetadataFilter(key="topic", value="energy"))
    assert "plain" in {n.node_id for n in store.get_nodes(filters=energy)}
    store.clear()  # documents without vectors are listed, so deleted too
    assert len(store.client) == 0


def test_a_new_store_takes_nodes_without_embedding_first() -> None:
    store = BitsearchVectorStore()
    store.add([TextNode(id_="a", text="first words")])
    assert store.client.dim is None
    store.add([emb_node("b", word_vector("later"))])
    assert store.client.dim == DIM
    dense = store.query(VectorStoreQuery(query_embedding=word_vector("later"), similarity_top_k=5))
    assert dense.ids == ["b"]
    with pytest.raises(ValueError, match="dim"):
        store.add([emb_node("c", [1.0] * (DIM + 1))])
    assert len(store.client) == 2
    store.close()


def test_node_ids_restrict_hybrid_and_text_search(built) -> None:
    store, index = built
    query = "solar energy for the grid and bones"
    subset = ["node-0", "node-3", "node-4", "node-5", "not-stored"]
    kept = subset[:4]
    keyword_all = store.client.search([query], k=len(TEXTS), mode="keyword")[0]
    keyword_kept = [h.id for h in keyword_all if h.id in kept]
    text = store.query(
        VectorStoreQuery(query_str=query, similarity_top_k=2, mode=VectorStoreQueryMode.TEXT_SEARCH, node_ids=subset)
    )
    assert text.ids == keyword_kept[:2]
    assert text.similarities == pytest.approx([h.score for h in keyword_all if h.id in kept][:2])
    sims = cosines(query)
    dense_kept = [i for _, i in sorted(((sims[IDS.index(i)], i) for i in kept), reverse=True)]
    expected = reciprocal_rank_fusion([dense_kept, keyword_kept], 3)
    hybrid = store.query(
        VectorStoreQuery(
            query_embedding=word_vector(query), query_str=query, similarity_top_k=3, mode="hybrid", node_ids=subset
        )
    )
    assert hybrid.ids == [i for i, _ in expected]
    assert hybrid.similarities == pytest.approx([s for _, s in expected])
    assert {n.node_id for n in hybrid.nodes} <= set(kept)
    # an index that lists its nodes passes every id: its hybrid answer is the unrestricted one
    listed = VectorStoreIndex(
        make_nodes(),
        storage_context=StorageContext.from_defaults(vector_store=BitsearchVectorStore()),
        embed_model=WordEmbedding(),
        store_nodes_override=True,
    )
    for mode in ("hybrid", "text_search"):
        got = listed.as_retriever(similarity_top_k=4, vector_store_query_mode=mode).retrieve(query)
        expected_nodes = index.as_retriever(similarity_top_k=4, vector_store_query_mode=mode).retrieve(query)
        assert ids_of(got) == ids_of(expected_nodes)
        assert [r.score for r in got] == pytest.approx([r.score for r in expected_nodes], abs=1e-5)


def test_int_ids_of_a_collection_round_trip_as_strings(tmp_path) -> None:
    path = tmp_path / "ints.bits"
    col = Collection.create(path, DIM, keep_int8=False, keep_float32=True)
    rows = np.asarray([word_vector(t) for t in TEXTS[:3]], dtype=np.float32)
    col.add(rows / np.linalg.norm(rows, axis=1, keepdims=True), ids=[7, 8, 9], texts=TEXTS[:3])
    col.close()
    store = BitsearchVectorStore(path)
    result = store.query(VectorStoreQuery(query_embedding=word_vector(TEXTS[1]), similarity_top_k=1))
    assert result.ids == ["8"] and result.nodes[0].node_id == "8"
    assert [n.node_id for n in store.get_nodes(["9", "8", "08", "10"])] == ["9", "8"]
    store.add([TextNode(id_="8", text="replaced", embedding=word_vector("replaced"))])  # replaces int 8
    assert len(store.client) == 3 and store.client.get([8])[0].text == "replaced"
    store.delete_nodes(["7"])
    assert sorted(store.client.ids()) == [8, 9]
    store.close()
