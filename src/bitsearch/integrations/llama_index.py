"""A LlamaIndex vector store over a bitsearch collection (``pip install 'bitsearch[llama-index]'``).

```python
from llama_index.core import StorageContext, VectorStoreIndex
from bitsearch.integrations.llama_index import BitsearchVectorStore

store = BitsearchVectorStore(path="notes.bits")  # no path: a temporary collection
index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store))
# later, in another process: the collection holds the nodes' text and metadata
index = VectorStoreIndex.from_vector_store(BitsearchVectorStore(path="notes.bits"), embed_model=...)
```

Scores (``VectorStoreQueryResult.similarities``) are bitsearch's similarities, higher is better: vectors are
stored and queried at unit length (``normalize=True``), so DEFAULT and MMR scores are cosine similarities
(MMR only reorders), HYBRID scores are fused reciprocal-rank scores and TEXT_SEARCH scores BM25.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..hybrid import reciprocal_rank_fusion
from ..results import Hit
from ..search import HYBRID_DEPTH
from .common import CollectionHandle, check_search_options, optional_unit_vectors, unit_vectors

try:
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings
    from llama_index.core.schema import BaseNode, MetadataMode, TextNode
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        FilterOperator,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "bitsearch.integrations.llama_index needs llama-index-core: pip install 'bitsearch[llama-index]'"
    ) from exc

__all__ = ["BitsearchVectorStore", "to_bitsearch_filter"]

_OPERATORS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}
_CONDITIONS = {FilterCondition.AND: "$and", FilterCondition.OR: "$or"}
_MODES = {
    VectorStoreQueryMode.DEFAULT: "dense",
    VectorStoreQueryMode.MMR: "dense",
    VectorStoreQueryMode.HYBRID: "hybrid",
    VectorStoreQueryMode.TEXT_SEARCH: "keyword",
}
MMR_PREFETCH_FACTOR = 4  # MMR picks among similarity_top_k x this many rescored candidates (default)


def to_bitsearch_filter(filters: MetadataFilters) -> dict[str, Any]:
    """LlamaIndex ``MetadataFilters`` as a bitsearch filter; an operator or condition bitsearch lacks is an
    InvalidInputError naming it (supported: == != > >= < <= in nin, and/or)."""
    if not isinstance(filters, MetadataFilters):
        raise InvalidInputError(f"filters must be MetadataFilters, got {type(filters).__name__}")
    if not filters.filters:
        raise InvalidInputError("MetadataFilters holds no filters")
    condition = filters.condition or FilterCondition.AND
    if condition not in _CONDITIONS:
        raise InvalidInputError(f"filter condition {condition.value!r} is not supported; use 'and' or 'or'")
    parts = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            parts.append(to_bitsearch_filter(f))
            continue
        op = _OPERATORS.get(f.operator)
        if op is None:
            supported = ", ".join(o.value for o in _OPERATORS)
            raise InvalidInputError(f"filter operator {f.operator.value!r} is not supported; use one of {supported}")
        parts.append({f.key: {op: f.value}})
    return parts[0] if len(parts) == 1 else {_CONDITIONS[condition]: parts}


class BitsearchVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store whose nodes (vector, text and metadata) live in a bitsearch collection.

    ``path``: the collection's folder, opened if a collection is there (reopening an index needs nothing
    else: ``stores_text`` is true) and otherwise created (its dimension set by the first embedding
    stored); without it the collection lives in a temporary folder removed by ``close``.
    ``collection_options`` go to ``Collection.create`` (defaults: binary codes in RAM, float32 rows on disk
    for exact rescoring and MMR); ``search_options``
    are defaults for ``Collection.search`` (``rescore``, ``rescore_multiplier``, ``rrf_k``, ``weights``,
    ``nprobe``, ``exact``). Query modes: DEFAULT, MMR (``mmr_threshold``: 1 relevance only, 0 diversity
    only), HYBRID (dense and BM25 fused by reciprocal rank fusion; ``alpha`` weighs dense against BM25)
    and TEXT_SEARCH (BM25).

    Adding a node whose id is stored replaces it. A node without an embedding is stored without a vector:
    TEXT_SEARCH and the BM25 side of HYBRID find it, DEFAULT and MMR never do. Node ids are strings: a
    collection's int id comes back as its decimal form, which names it again. Bad input raises
    ``ValueError`` (bitsearch's ``InvalidInputError``) and leaves the collection as it was.
    """

    stores_text: bool = True
    flat_metadata: bool = False
    normalize: bool = True
    search_options: dict[str, Any] = Field(default_factory=dict)

    _handle: CollectionHandle = PrivateAttr()

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        normalize: bool = True,
        search_options: dict[str, Any] | None = None,
        **collection_options: Any,
    ) -> None:
        super().__init__(normalize=normalize, search_options=check_search_options(search_options or {}))
        self._handle = CollectionHandle(path, collection_options)

    @classmethod
    def class_name(cls) -> str:
        return "BitsearchVectorStore"

    @property
    def client(self) -> Any:
        """The ``bitsearch.Collection``."""
        return self._handle.collection

    @property
    def path(self) -> str:
        """The collection's folder (a temporary one when no path was given)."""
        return str(self._handle.path)

    def close(self) -> None:
        """Close the collection; a temporary one is removed."""
        self._handle.close()

    # ------------------------------------------------------------------ writes

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Store ``nodes`` (those without an embedding without a vector); a stored node id is replaced.
        Returns the node ids."""
        nodes = list(nodes)
        if not nodes:
            return []
        ids, texts, metadata, vectors = [], [], [], []
        for node in nodes:
            if not isinstance(node, BaseNode):
                raise InvalidInputError(f"expected LlamaIndex nodes, got {type(node).__name__}")
            try:
                meta = node_to_metadata_dict(node, remove_text=True, flat_metadata=self.flat_metadata)
            except ValueError as exc:  # pydantic cannot serialize the node (metadata that is not JSON)
                raise InvalidInputError(f"node {node.node_id!r} cannot be stored: {exc}") from None
            ids.append(node.node_id)
            texts.append(node.get_content(metadata_mode=MetadataMode.NONE))
            metadata.append(meta)
            vectors.append(node.embedding)
        vec = optional_unit_vectors(vectors, "node embeddings", self.normalize)
        self._handle.collection.upsert(vec, ids=self._handle.write_ids(ids), texts=texts, metadata=metadata)
        return ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id`` (none stored: nothing happens)."""
        if not isinstance(ref_doc_id, str):
            raise InvalidInputError(f"ref_doc_id must be a string, got {type(ref_doc_id).__name__}")
        ids = self._handle.ids({"ref_doc_id": ref_doc_id})
        if ids:
            self._handle.collection.delete(ids)

    def _matching(self, node_ids: list[str] | None, flt: dict[str, Any] | None) -> list[Any]:
        """Stored ids among ``node_ids`` (all without them) whose metadata pass the bitsearch filter ``flt``."""
        if node_ids is None:
            return self._handle.ids(flt)
        stored = list(self._handle.stored(node_ids).values())
        if flt is None or not stored:
            return stored
        passing = set(self._handle.ids(flt))
        return [i for i in stored if i in passing]

    def delete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        """Delete the stored nodes among ``node_ids`` (all without them) that pass ``filters``."""
        ids = self._matching(node_ids, None if filters is None else to_bitsearch_filter(filters))
        if ids:
            self._handle.collection.delete(ids)

    def clear(self) -> None:
        """Delete every node."""
        self.delete_nodes()

    def get_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        """The stored nodes among ``node_ids`` (all without them) that pass ``filters``."""
        ids = self._matching(node_ids, None if filters is None else to_bitsearch_filter(filters))
        if not ids:
            return []
        docs = self._handle.collection.get(ids)
        return [_to_node(d.id, d.text, d.metadata) for d in docs if d is not None]

    # ------------------------------------------------------------------ query

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The best nodes for ``query`` with their scores (higher is better); see the class for the modes."""
        supported = ", ".join(m.value for m in _MODES)
        try:
            qmode = VectorStoreQueryMode(query.mode)
        except ValueError:
            raise InvalidInputError(f"unknown query mode {query.mode!r}; use one of {supported}") from None
        mode = _MODES.get(qmode)
        if mode is None:
            raise InvalidInputError(f"query mode {qmode.value!r} is not supported; use one of {supported}")
        k = query.hybrid_top_k if mode == "hybrid" and query.hybrid_top_k else query.similarity_top_k
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError(f"similarity_top_k must be a positive integer, got {k!r}")
        flt = self._query_filter(query)
        options = {**self.search_options, **check_search_options(kwargs.get("search_options") or {})}
        if mode == "hybrid" and query.alpha is not None:
            if not 0 <= query.alpha <= 1:
                raise InvalidInputError(f"alpha must be from 0 (BM25 only) to 1 (dense only), got {query.alpha!r}")
            options["weights"] = (float(query.alpha), 1.0 - float(query.alpha))
        if mode != "dense" and not query.query_str:
            raise InvalidInputError(f"query mode {qmode.value!r} needs query_str")
        q = None
        if mode != "keyword":
            if query.query_embedding is None:
                raise InvalidInputError(f"query mode {qmode.value!r} needs query_embedding")
            q = unit_vectors(query.query_embedding, "query embedding", self.normalize)
        mmr = qmode == VectorStoreQueryMode.MMR
        if mmr:
            threshold = query.mmr_threshold if query.mmr_threshold is not None else kwargs.get("mmr_threshold")
            if threshold is not None and not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
                raise InvalidInputError(f"mmr_threshold must be a number from 0 to 1, got {threshold!r}")
            prefetch = kwargs.get("mmr_prefetch_factor", MMR_PREFETCH_FACTOR)
            if isinstance(prefetch, bool) or not isinstance(prefetch, (int, float)) or prefetch < 1:
                raise InvalidInputError(f"mmr_prefetch_factor must be a number >= 1, got {prefetch!r}")
        col = self._handle.collection
        if "rescore" not in options:
            m = col.manifest
            options["rescore"] = "float32" if m["keep_float32"] else "int8" if m["keep_int8"] else None
        fetch = int(k * prefetch) if mmr else k
        queries = q if mode != "keyword" else [query.query_str]
        texts = [query.query_str] if mode == "hybrid" else None
        if query.node_ids:  # an index that lists its nodes passes them all; rank just those
            nodes = self._matching(query.node_ids, flt)
            dense = self._score_nodes(col, q[0], nodes) if q is not None else []
            keyword = self._keyword_among(col, query.query_str, nodes, flt) if mode != "dense" else []
            hits = self._restricted(col, mode, dense, keyword, fetch, options)
        else:
            hits = list(col.search(queries, k=fetch, mode=mode, query_texts=texts, filter=flt, **options)[0])
        if mmr and hits:
            hits = self._mmr(col, q[0], hits, k, threshold)  # type: ignore[index]
        return VectorStoreQueryResult(
            nodes=[_to_node(h.id, h.text, h.metadata) for h in hits],
            similarities=[float(h.score) for h in hits],
            ids=[str(h.id) for h in hits],
        )

    def _query_filter(self, query: VectorStoreQuery) -> dict[str, Any] | None:
        """The query's metadata filters and ``doc_ids`` as one bitsearch filter."""
        parts = []
        if query.filters is not None:
            parts.append(to_bitsearch_filter(query.filters))
        if query.doc_ids is not None:
            parts.append({"ref_doc_id": {"$in": list(query.doc_ids)}})
        return None if not parts else parts[0] if len(parts) == 1 else {"$and": parts}

    @staticmethod
    def _score_nodes(col: Any, q: Any, ids: list[Any]) -> list[Hit]:
        """The stored documents ``ids`` that have a vector, ranked exactly by the dot product of ``q`` with
        their float32 rows."""
        docs = [d for d in col.get(ids, with_vectors=True) if d is not None and d.vector is not None]
        if not docs:
            return []
        scores = np.stack([d.vector for d in docs]) @ q
        order = np.argsort(-scores, kind="stable")
        return [Hit(docs[i].id, float(scores[i]), docs[i].text, docs[i].metadata) for i in order]

    @staticmethod
    def _keyword_among(col: Any, text: str, ids: list[Any], flt: dict[str, Any] | None) -> list[Hit]:
        """The BM25 ranking of the stored documents ``ids``: the whole collection's, those kept (BM25
        statistics are the collection's, as for a query without ``node_ids``)."""
        if not ids:
            return []
        wanted = set(ids)
        ranked = col.search([text], k=max(len(col), 1), mode="keyword", filter=flt, with_text=False)[0]
        return [h for h in ranked if h.id in wanted]

    @staticmethod
    def _restricted(
        col: Any, mode: str, dense: list[Hit], keyword: list[Hit], k: int, options: dict[str, Any]
    ) -> list[Hit]:
        """The ``k`` best hits of ``mode`` from the rankings of the restricted documents: ``dense``,
        ``keyword``, or both fused as ``Collection.search`` fuses them (each cut at ``HYBRID_DEPTH``)."""
        if mode == "dense":
            return dense[:k]
        if mode == "keyword":
            ranked = [(h.id, h.score) for h in keyword[:k]]
        else:
            depth = max(k, HYBRID_DEPTH)
            ranked = reciprocal_rank_fusion(
                [[h.id for h in dense[:depth]], [h.id for h in keyword[:depth]]],
                k,
                rrf_k=options.get("rrf_k", 60.0),
                weights=options.get("weights"),
            )
        docs = col.get([i for i, _ in ranked]) if ranked else []
        return [
            Hit(d.id, float(score), d.text, d.metadata)
            for (_, score), d in zip(ranked, docs, strict=True)
            if d is not None  # deleted meanwhile
        ]

    @staticmethod
    def _mmr(col: Any, q: Any, hits: list[Hit], k: int, threshold: float | None) -> list[Hit]:
        """``k`` of the rescored ``hits`` in maximal-marginal-relevance order, by their stored float32 vectors."""
        docs = col.get([h.id for h in hits], with_vectors=True)
        kept = [(h, d.vector) for h, d in zip(hits, docs, strict=True) if d is not None]
        _, order = get_top_k_mmr_embeddings(
            q.tolist(),
            [v.tolist() for _, v in kept],
            similarity_top_k=k,
            embedding_ids=list(range(len(kept))),
            mmr_threshold=threshold,
        )
        return [kept[i][0] for i in order]


def _to_node(doc_id: Any, text: str | None, metadata: dict[str, Any] | None) -> BaseNode:
    """A stored document as the node ``add`` stored; a document stored otherwise becomes a TextNode."""
    meta = metadata or {}
    if "_node_content" in meta:
        try:
            node = metadata_dict_to_node(meta, text=text)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"document {doc_id!r} holds a node that cannot be read back: {exc}") from None
        node.embedding = None
        return node
    return TextNode(id_=str(doc_id), text=text or "", metadata=meta)
