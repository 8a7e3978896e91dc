"""A LangChain ``VectorStore`` over a bitsearch collection (``pip install 'bitsearch[langchain]'``).

```python
from bitsearch.integrations.langchain import BitsearchVectorStore

store = BitsearchVectorStore(embeddings, path="notes.bits")  # no path: a temporary collection
store.add_texts(["first note", "second note"], metadatas=[{"lang": "en"}, {"lang": "de"}], ids=["a", "b"])
store.similarity_search("note", k=1, filter={"lang": "en"})
store.as_retriever(search_type="hybrid", search_kwargs={"k": 5})
```

Scores are bitsearch's similarities, higher is better: embeddings are stored and queried at unit length
(``normalize=True``), so dense scores are cosine similarities (from the float32 rows by default);
``mode="hybrid"`` gives fused reciprocal-rank scores and ``mode="keyword"`` BM25 scores. Filters use
bitsearch's filter language: ``{"field": value}``, ``$eq $ne $gt $gte $lt $lte $in $nin``, ``$and``/``$or``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

import numpy as np

from ..errors import InvalidInputError
from ..results import Hit
from .common import CollectionHandle, check_search_options, unit_vectors

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.runnables.config import run_in_executor
    from langchain_core.vectorstores import VectorStore, VectorStoreRetriever
    from langchain_core.vectorstores.utils import maximal_marginal_relevance
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "bitsearch.integrations.langchain needs langchain-core: pip install 'bitsearch[langchain]'"
    ) from exc

__all__ = ["BitsearchRetriever", "BitsearchVectorStore"]

MODES = ("dense", "hybrid", "keyword")


class BitsearchVectorStore(VectorStore):
    """A LangChain vector store whose documents live in a bitsearch collection.

    ``path``: the collection's folder, opened if a collection is there and otherwise created (its dimension
    set by the first write); without it the collection lives in a temporary folder removed by ``close``.
    ``collection_options`` go to ``Collection.create`` (defaults: binary codes in RAM and float32 rows on
    disk for exact rescoring and MMR). ``search_options`` are defaults for ``Collection.search``
    (``rescore``, ``rescore_multiplier``, ``rrf_k``, ``weights``, ``nprobe``, ``exact``); each search may
    override them as keyword arguments. ``normalize`` stores and queries unit vectors, so that scores are
    cosine similarities.

    Adding a document whose id is stored replaces it (text, metadata and vector). Ids are strings: a
    collection's int id comes back as its decimal form, which names it again (``get_by_ids(["5"])``,
    ``delete``, adding it replaces it). Bad input raises
    ``ValueError`` (bitsearch's ``InvalidInputError``) or ``TypeError`` and leaves the collection as it was.
    """

    def __init__(
        self,
        embedding: Embeddings,
        path: str | os.PathLike[str] | None = None,
        *,
        normalize: bool = True,
        search_options: dict[str, Any] | None = None,
        **collection_options: Any,
    ) -> None:
        if not isinstance(embedding, Embeddings):
            raise TypeError(f"embedding must be a langchain_core Embeddings, got {type(embedding).__name__}")
        self.embedding = embedding
        self.normalize = bool(normalize)
        self.search_options = check_search_options(search_options or {})
        self._handle = CollectionHandle(path, collection_options)

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    @property
    def path(self) -> str:
        """The collection's folder (a temporary one when no path was given)."""
        return str(self._handle.path)

    @property
    def collection(self) -> Any:
        """The ``bitsearch.Collection``."""
        return self._handle.collection

    def close(self) -> None:
        """Close the collection; a temporary one is removed."""
        self._handle.close()

    # ------------------------------------------------------------------ writes

    def _prepare(self, documents: Sequence[Document], kwargs: dict[str, Any]) -> tuple[list[str], list[str], list[Any]]:
        """Ids (given, the documents', or new UUIDs), texts and metadata of ``documents``, checked."""
        ids = kwargs.pop("ids", None)
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(map(repr, sorted(kwargs)))}")
        if ids is not None:
            ids = list(ids)
            if len(ids) != len(documents):
                raise ValueError(f"got {len(ids)} ids for {len(documents)} documents")
        else:
            ids = [d.id for d in documents]
        ids = [str(uuid.uuid4()) if i is None else i for i in ids]
        for i in ids:
            if not isinstance(i, str) or not i:
                raise InvalidInputError(f"document ids must be non-empty strings, got {i!r}")
        for d in documents:
            if not isinstance(d, Document):
                raise TypeError(f"expected langchain_core Documents, got {type(d).__name__}")
        return ids, [d.page_content for d in documents], [dict(d.metadata) for d in documents]

    def _upsert(self, ids: list[str], texts: list[str], metadata: list[Any], vectors: Any) -> list[str]:
        vec = unit_vectors(vectors, "embeddings", self.normalize)
        if vec.shape[0] != len(ids):
            raise InvalidInputError(f"the embedding model returned {vec.shape[0]} vectors for {len(ids)} texts")
        self._handle.collection.upsert(vec, ids=self._handle.write_ids(ids), texts=texts, metadata=metadata)
        return list(ids)

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Embed and store ``documents``; ``ids=`` (or each document's ``id``) replaces stored ones."""
        documents = list(documents)
        ids, texts, metadata = self._prepare(documents, kwargs)
        if not documents:
            return []
        return self._upsert(ids, texts, metadata, self.embedding.embed_documents(texts))

    async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        documents = list(documents)
        ids, texts, metadata = self._prepare(documents, kwargs)
        if not documents:
            return []
        vectors = await self.embedding.aembed_documents(texts)
        return await run_in_executor(None, self._upsert, ids, texts, metadata, vectors)

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and store ``texts`` with ``metadatas``; a stored id is replaced."""
        docs = _documents(texts, metadatas)
        return self.add_documents(docs, ids=ids, **kwargs)

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        docs = _documents(texts, metadatas)
        return await self.aadd_documents(docs, ids=ids, **kwargs)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete the documents with ``ids`` (ids not stored are skipped); ``None`` deletes every document."""
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(map(repr, sorted(kwargs)))}")
        if ids is not None:
            if isinstance(ids, str):
                raise TypeError("ids must be a list of ids, not one string")
            wanted = list(self._handle.stored(ids).values())
        else:
            wanted = self._handle.ids()
        if wanted:
            self._handle.collection.delete(wanted)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents with ``ids``, in their order; ids not stored (and repeats) are skipped."""
        stored = list(self._handle.stored(ids).values())
        if not stored:
            return []
        return [
            Document(id=str(d.id), page_content=d.text or "", metadata=d.metadata or {})
            for d in self._handle.collection.get(stored)
            if d is not None
        ]

    # ------------------------------------------------------------------ search

    def _hits(
        self,
        vector: Any,
        text: str | None,
        k: int,
        filter: dict[str, Any] | None,
        mode: str = "dense",
        **options: Any,
    ) -> list[Hit]:
        """The collection's hits for one query: ``vector`` (dense, hybrid) and ``text`` (hybrid, keyword)."""
        if mode not in MODES:
            raise InvalidInputError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        opts = {**self.search_options, **check_search_options(options)}
        q = None if vector is None else unit_vectors(vector, "query embedding", self.normalize)
        col = self._handle.collection
        if "rescore" not in opts:
            m = col.manifest
            opts["rescore"] = "float32" if m["keep_float32"] else "int8" if m["keep_int8"] else None
        queries = q if mode != "keyword" else [text]
        texts = [text] if mode == "hybrid" else None
        return list(col.search(queries, k=k, mode=mode, query_texts=texts, filter=filter, **opts)[0])

    def _pairs(self, hits: list[Hit]) -> list[tuple[Document, float]]:
        return [
            (Document(id=str(h.id), page_content=h.text or "", metadata=h.metadata or {}), float(h.score)) for h in hits
        ]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, *, mode: str = "dense", **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The ``k`` best documents for ``query`` with their scores (higher is better).

        ``mode``: "dense" (cosine similarity), "hybrid" (dense and BM25 fused by reciprocal rank fusion) or
        "keyword" (BM25); ``filter`` in bitsearch's filter language; other keyword arguments are
        ``Collection.search`` options (``rescore``, ``rescore_multiplier``, ``rrf_k``, ``weights``, ...).
        """
        vector = self.embedding.embed_query(query) if mode != "keyword" else None
        return self._pairs(self._hits(vector, query, k, filter, mode, **kwargs))

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, *, mode: str = "dense", **kwargs: Any
    ) -> list[tuple[Document, float]]:
        vector = await self.embedding.aembed_query(query) if mode != "keyword" else None
        hits = await run_in_executor(None, self._hits, vector, query, k, filter, mode, **kwargs)
        return self._pairs(hits)

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` best documents for ``query`` (see ``similarity_search_with_score``)."""
        return [d for d, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    async def asimilarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """The ``k`` documents nearest to ``embedding`` (dense search)."""
        return [d for d, _ in self._pairs(self._hits(embedding, None, k, filter, **kwargs))]

    async def asimilarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        hits = await run_in_executor(None, self._hits, embedding, None, k, filter, **kwargs)
        return [d for d, _ in self._pairs(hits)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Cosine similarity (-1..1) to LangChain's 0..1 relevance."""
        return lambda score: (score + 1.0) / 2.0

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` documents picked by maximal marginal relevance among the ``fetch_k`` best (rescored) ones.

        The candidates' stored float32 vectors measure their similarity to each other, so the collection
        must keep float32 rows (the adapter's default). ``lambda_mult``: 1 ranks by relevance alone, 0 by
        diversity alone.
        """
        for name, value in (("k", k), ("fetch_k", fetch_k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(lambda_mult, bool) or not isinstance(lambda_mult, (int, float)) or not 0 <= lambda_mult <= 1:
            raise InvalidInputError(f"lambda_mult must be a number from 0 to 1, got {lambda_mult!r}")
        hits = self._hits(embedding, None, max(k, fetch_k), filter, **kwargs)
        if not hits:
            return []
        docs = self._handle.collection.get([h.id for h in hits], with_vectors=True)
        # a concurrent delete may have removed some since the search
        kept = [(h, d.vector) for h, d in zip(hits, docs, strict=True) if d is not None]
        if not kept:
            return []
        q = unit_vectors(embedding, "query embedding", self.normalize)[0]
        picked = maximal_marginal_relevance(q, np.stack([v for _, v in kept]), lambda_mult=lambda_mult, k=k)
        return [d for d, _ in self._pairs([kept[i][0] for i in picked])]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Maximal marginal relevance for ``query`` (see ``max_marginal_relevance_search_by_vector``)."""
        vector = self.embedding.embed_query(query)
        return self.max_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, filter, **kwargs)

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        vector = await self.embedding.aembed_query(query)
        return await run_in_executor(
            None, self.max_marginal_relevance_search_by_vector, vector, k, fetch_k, lambda_mult, filter, **kwargs
        )

    # ------------------------------------------------------------------ construction, retriever

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        path: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> BitsearchVectorStore:
        """A store at ``path`` (or a temporary one) holding ``texts``; ``kwargs`` go to the constructor."""
        store = cls(embedding, path, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def as_retriever(self, **kwargs: Any) -> BitsearchRetriever:
        """A retriever; besides LangChain's search types, ``search_type="hybrid"`` (dense + BM25, fused)."""
        tags = kwargs.pop("tags", None) or [*self._get_retriever_tags()]
        return BitsearchRetriever(vectorstore=self, tags=tags, **kwargs)


def _documents(texts: Iterable[str], metadatas: list[dict[str, Any]] | None) -> list[Document]:
    """``texts`` and their ``metadatas`` as Documents."""
    texts = list(texts)
    if metadatas is None:
        metadatas = [{}] * len(texts)
    elif len(metadatas) != len(texts):
        raise ValueError(f"got {len(metadatas)} metadatas for {len(texts)} texts")
    return [Document(page_content=t, metadata=m or {}) for t, m in zip(texts, metadatas, strict=True)]


class BitsearchRetriever(VectorStoreRetriever):
    """LangChain's vector-store retriever, plus ``search_type="hybrid"``: dense and BM25 fused by RRF."""

    allowed_search_types: ClassVar[tuple[str, ...]] = ("similarity", "similarity_score_threshold", "mmr", "hybrid")

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        if self.search_type == "hybrid":
            return self.vectorstore.similarity_search(query, mode="hybrid", **(self.search_kwargs | kwargs))
        return super()._get_relevant_documents(query, run_manager=run_manager, **kwargs)

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        if self.search_type == "hybrid":
            return await self.vectorstore.asimilarity_search(query, mode="hybrid", **(self.search_kwargs | kwargs))
        return await super()._aget_relevant_documents(query, run_manager=run_manager, **kwargs)
