"""The LangChain adapter: langchain-tests' standard vector-store suite, unmodified, then what it does not cover."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores.utils import maximal_marginal_relevance
from langchain_tests.integration_tests import VectorStoreIntegrationTests
from word_vectors import DIM, METAS, TEXTS, word_vector

from bitsearch import Collection, InvalidInputError
from bitsearch.integrations.langchain import BitsearchVectorStore


class TestStandardSuite(VectorStoreIntegrationTests):
    """langchain-tests' suite, sync and async (its async tests run under pytest-asyncio's auto mode)."""

    @pytest.fixture()
    def vectorstore(self) -> Iterator[BitsearchVectorStore]:
        store = BitsearchVectorStore(self.get_embeddings())
        try:
            yield store
        finally:
            store.close()


class WordEmbeddings(Embeddings):
    """``word_vector`` as a LangChain embedding; counts its calls."""

    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
        self.calls = 0

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        return [word_vector(t, self.dim) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        self.calls += 1
        return word_vector(text, self.dim)


class NaNEmbeddings(WordEmbeddings):
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[float("nan")] * self.dim for _ in texts]


IDS = [f"doc-{i}" for i in range(len(TEXTS))]


@pytest.fixture()
def store() -> Iterator[BitsearchVectorStore]:
    s = BitsearchVectorStore.from_texts(TEXTS, WordEmbeddings(), METAS, ids=IDS)
    try:
        yield s
    finally:
        s.close()


def cosine(a: list[float], b: list[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


def snapshot(s: BitsearchVectorStore) -> list[tuple[str | None, str, dict]]:
    return [(d.id, d.page_content, d.metadata) for d in s.get_by_ids([*IDS, "new"])]


def test_scores_are_cosine_similarities_best_first(store: BitsearchVectorStore) -> None:
    query = "vitamin d for bone fractures"
    got = store.similarity_search_with_score(query, k=len(TEXTS))
    expected = sorted(((cosine(word_vector(query), word_vector(t)), i) for i, t in zip(IDS, TEXTS, strict=True)))[::-1]
    assert [d.id for d, _ in got] == [i for _, i in expected]
    np.testing.assert_allclose([s for _, s in got], [s for s, _ in expected], atol=1e-5)
    relevance = store.similarity_search_with_relevance_scores(query, k=2)
    np.testing.assert_allclose([r for _, r in relevance], [(s + 1) / 2 for s, _ in expected[:2]], atol=1e-5)


def test_filter_uses_bitsearch_filter_language(store: BitsearchVectorStore) -> None:
    query = "vitamin d fractures energy"
    assert {d.id for d in store.similarity_search(query, k=6, filter={"topic": "energy"})} == {
        "doc-2",
        "doc-3",
        "doc-5",
    }
    got = store.similarity_search(query, k=6, filter={"$and": [{"lang": "en"}, {"year": {"$gte": 2019}}]})
    assert {d.id for d in got} == {"doc-0", "doc-2", "doc-4"}
    got = store.similarity_search_by_vector(word_vector(query), k=6, filter={"year": {"$in": [2018, 2021]}})
    assert {d.id for d in got} == {"doc-1", "doc-5"}
    retriever = store.as_retriever(search_kwargs={"k": 6, "filter": {"lang": {"$ne": "en"}}})
    assert {d.id for d in retriever.invoke(query)} == {"doc-1", "doc-3"}


def test_mmr_reorders_rescored_candidates_as_langchain_would(store: BitsearchVectorStore) -> None:
    query = "vitamin d bones"
    q = np.asarray(word_vector(query))
    rows = np.asarray([word_vector(t) for t in TEXTS])
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    expected = [IDS[i] for i in maximal_marginal_relevance(q / np.linalg.norm(q), rows, lambda_mult=0.1, k=3)]
    got = store.max_marginal_relevance_search(query, k=3, fetch_k=len(TEXTS), lambda_mult=0.1)
    assert [d.id for d in got] == expected
    similar = [d.id for d in store.similarity_search(query, k=3)]
    assert expected != similar  # the case is one where diversity changes the answer
    mmr = store.as_retriever(search_type="mmr", search_kwargs={"k": 3, "fetch_k": 6, "lambda_mult": 0.1})
    assert [d.id for d in mmr.invoke(query)] == expected


async def test_async_variants_match_sync(store: BitsearchVectorStore) -> None:
    query = "solar energy grid"
    assert await store.asimilarity_search_with_score(query, k=3) == store.similarity_search_with_score(query, k=3)
    assert await store.asimilarity_search_by_vector(word_vector(query), k=2) == store.similarity_search_by_vector(
        word_vector(query), k=2
    )
    assert await store.amax_marginal_relevance_search(query, k=2, fetch_k=6) == store.max_marginal_relevance_search(
        query, k=2, fetch_k=6
    )
    hybrid = store.as_retriever(search_type="hybrid", search_kwargs={"k": 3})
    assert await hybrid.ainvoke(query) == hybrid.invoke(query)
    await store.adelete(["doc-2"])
    assert await store.aget_by_ids(["doc-2", "doc-3"]) == store.get_by_ids(["doc-3"])


def test_hybrid_retriever_is_collection_hybrid_search(store: BitsearchVectorStore) -> None:
    query = "batteries on the grid"
    docs = store.as_retriever(search_type="hybrid", search_kwargs={"k": 4}).invoke(query)
    col = store.collection
    q = np.asarray(word_vector(query), dtype=np.float32)
    direct = col.search(q / np.linalg.norm(q), k=4, mode="hybrid", query_texts=[query], rescore="float32")[0]
    assert [d.id for d in docs] == [h.id for h in direct]
    assert docs[0].id == "doc-5"
    scored = store.similarity_search_with_score(query, k=4, mode="hybrid")
    assert [s for _, s in scored] == pytest.approx([h.score for h in direct])
    keyword = store.similarity_search_with_score("batteries", k=4, mode="keyword")
    assert [d.id for d, _ in keyword] == ["doc-5"]  # BM25: only one text has the word


def test_add_with_stored_id_replaces_the_document(store: BitsearchVectorStore) -> None:
    store.add_texts(["wind farms at sea"], [{"topic": "energy"}], ids=["doc-0"])
    assert len(store.collection) == len(TEXTS)
    [doc] = store.get_by_ids(["doc-0"])
    assert (doc.page_content, doc.metadata) == ("wind farms at sea", {"topic": "energy"})
    assert store.similarity_search("wind farms at sea", k=1)[0].id == "doc-0"
    assert "doc-0" not in [d.id for d in store.similarity_search("vitamin d prevents bone fractures", k=2)]


def test_delete_skips_unknown_ids_and_none_deletes_all(store: BitsearchVectorStore) -> None:
    assert store.delete(["doc-1", "nope", "doc-1"]) is True
    assert [d.id for d in store.get_by_ids(IDS)] == [i for i in IDS if i != "doc-1"]
    store.delete()
    assert store.get_by_ids(IDS) == []
    assert store.similarity_search("vitamin", k=3) == []


def test_reopen_by_path_keeps_documents(tmp_path) -> None:
    path = tmp_path / "lc.bits"
    first = BitsearchVectorStore.from_texts(TEXTS, WordEmbeddings(), METAS, ids=IDS, path=path)
    before = first.similarity_search_with_score("solar panels", k=3)
    first.close()
    assert path.is_dir()  # a given path is the user's: close keeps it
    again = BitsearchVectorStore(WordEmbeddings(), path)
    assert again.similarity_search_with_score("solar panels", k=3) == before
    assert again.get_by_ids(["doc-4"])[0].metadata == METAS[4]


def test_temporary_collection_is_removed_on_close() -> None:
    s = BitsearchVectorStore.from_texts(["a text"], WordEmbeddings())
    path = s.path
    assert os.path.isdir(path)
    s.close()
    assert not os.path.exists(path)


def test_collection_and_search_options_pass_through(tmp_path) -> None:
    with pytest.warns(UserWarning, match="calibrated"):  # bitsearch's own warning: few samples for int8 ranges
        s = BitsearchVectorStore.from_texts(
            TEXTS, WordEmbeddings(), ids=IDS, path=tmp_path / "c", keep_int8=True, search_options={"rescore": "int8"}
        )
    assert s.collection.manifest["keep_int8"] is True
    assert s.similarity_search_with_score("solar panels", k=1) != s.similarity_search_with_score(
        "solar panels", k=1, rescore="float32"
    )  # int8 scores are approximate: the default came from search_options
    hits = s.similarity_search_with_score("solar panels", k=2, rescore="float32")
    assert hits[0][0].id == "doc-2"
    with pytest.raises(TypeError, match="unknown collection option"):
        BitsearchVectorStore(WordEmbeddings(), precison="int8")
    with pytest.raises(TypeError, match="unknown search option"):
        BitsearchVectorStore(WordEmbeddings(), search_options={"fetch_k": 3})


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.add_texts(["x", "y"], ids=["new"]),  # fewer ids than texts
        lambda s: s.add_texts(["x"], [{"a": 1}, {"b": 2}]),  # more metadatas than texts
        lambda s: s.add_texts(["x"], [{"when": object()}], ids=["new"]),  # metadata that is not JSON
        lambda s: s.add_texts(["x"], [{"n": float("nan")}], ids=["new"]),
        lambda s: s.add_texts(["x", "y"], ids=["new", "new"]),  # one id twice
        lambda s: s.add_texts(["x"], ids=[""]),
        lambda s: s.add_texts(["x"], ids=["new"], color="red"),
        lambda s: BitsearchVectorStore(NaNEmbeddings(), s.path).add_texts(["x"], ids=["new"]),
        lambda s: BitsearchVectorStore(WordEmbeddings(dim=32), s.path).add_texts(["x"], ids=["new"]),
        lambda s: s.similarity_search("x", k=0),
        lambda s: s.similarity_search("x", filter={"year": {"$regex": "1"}}),
        lambda s: s.similarity_search("x", mode="semantic"),
        lambda s: s.similarity_search("x", fetch_k=3),
        lambda s: s.max_marginal_relevance_search("x", lambda_mult=2),
        lambda s: s.as_retriever(search_type="rerank"),
        lambda s: s.delete("doc-1"),
    ],
)
def test_bad_input_raises_and_changes_nothing(store: BitsearchVectorStore, call) -> None:
    before = snapshot(store)
    with pytest.raises((ValueError, TypeError)):
        call(store)
    assert snapshot(store) == before
    assert len(store.collection) == len(TEXTS)


def test_mmr_needs_float32_rows(tmp_path) -> None:
    with pytest.warns(UserWarning, match="calibrated"):
        s = BitsearchVectorStore.from_texts(
            TEXTS, WordEmbeddings(), path=tmp_path / "c", keep_float32=False, keep_int8=True
        )
    with pytest.raises(InvalidInputError, match="keep_float32"):
        s.max_marginal_relevance_search("vitamin", k=2)


def test_import_bitsearch_does_not_import_frameworks() -> None:
    code = (
        "import sys, bitsearch, bitsearch.integrations; "
        "print(sorted(m for m in ('langchain_core', 'llama_index') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def unit_rows(texts: list[str]) -> np.ndarray:
    rows = np.asarray([word_vector(t) for t in texts], dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_int_ids_of_a_collection_round_trip_as_strings(tmp_path) -> None:
    path = tmp_path / "ints.bits"
    col = Collection.create(path, DIM, keep_int8=False, keep_float32=True)
    col.add(unit_rows(TEXTS[:3]), ids=[7, 8, 9], texts=TEXTS[:3])
    col.close()
    store = BitsearchVectorStore(WordEmbeddings(), path)
    assert store.similarity_search(TEXTS[1], k=1)[0].id == "8"
    assert [d.id for d in store.get_by_ids(["9", "8", "08", "+7", "x"])] == ["9", "8"]
    store.add_texts(["wind farms at sea"], ids=["8"])  # replaces int 8
    assert len(store.collection) == 3 and store.collection.get([8])[0].text == "wind farms at sea"
    store.delete(["7"])
    assert sorted(store.collection.ids()) == [8, 9]
    # a collection holding both "9" and 9 reports both as "9": the string id is the one found
    store.collection.add(unit_rows(["nine"]), ids=["9"], texts=["the string nine"])
    assert [d.page_content for d in store.get_by_ids(["9"])] == ["the string nine"]
    store.close()


def test_a_failed_first_write_leaves_the_dimension_unset(tmp_path) -> None:
    path = tmp_path / "new.bits"
    first = BitsearchVectorStore(WordEmbeddings(dim=32), path)
    assert (path / "manifest.json").is_file() and first.collection.dim is None
    with pytest.raises(ValueError):
        first.add_texts(["x"], [{"when": object()}])
    first.close()
    again = BitsearchVectorStore(WordEmbeddings(), path)  # another model: the failed write fixed nothing
    assert again.add_texts(TEXTS, METAS, ids=IDS) == IDS
    assert again.collection.dim == DIM and again.similarity_search("solar panels", k=1)[0].id == "doc-2"
    again.close()
