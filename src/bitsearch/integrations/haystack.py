"""Haystack adapter: a bitsearch collection as a Haystack ``DocumentStore``, and its two retrievers.

``BitsearchDocumentStore`` keeps each Haystack ``Document`` as one collection document: ``content`` as its
text, ``meta`` as its metadata (JSON), ``embedding`` as its vector (kept as float32 rows, so documents read
back carry their embeddings rounded to float32). Documents without an embedding are stored, filtered and
found by keyword, never by vector. ``blob`` and ``sparse_embedding`` are refused (DocumentStoreError):
nothing in bitsearch could search or return them faithfully.

Haystack filters are translated to bitsearch's filter language (``bitsearch.store.filter_sql``); a filter
that it cannot express exactly raises Haystack's ``FilterError`` instead of answering differently:
filters apply to ``meta`` fields only, ``>``/``>=``/``<``/``<=`` compare numbers with numbers and strings
only as ISO 8601 dates (as Haystack does), never a list.

``BitsearchEmbeddingRetriever`` and ``BitsearchBM25Retriever`` are Haystack components; for hybrid
retrieval join their outputs with Haystack's ``DocumentJoiner(join_mode="reciprocal_rank_fusion")``.
Install with ``pip install 'bitsearch[haystack]'``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

try:
    from haystack import Document, component, default_from_dict, default_to_dict
    from haystack.document_stores.errors import DocumentStoreError, DuplicateDocumentError
    from haystack.document_stores.types import DuplicatePolicy, FilterPolicy, apply_filter_policy
    from haystack.errors import FilterError
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "bitsearch.integrations.haystack needs Haystack: pip install 'bitsearch[haystack]' (haystack-ai)"
    ) from exc

from ..collection import Collection
from ..errors import BitsearchError, DuplicateIdError, InvalidInputError
from ..store import check_metadata, check_unicode, filter_sql
from .common import CollectionHandle, optional_unit_vectors

__all__ = ["BitsearchBM25Retriever", "BitsearchDocumentStore", "BitsearchEmbeddingRetriever", "convert_filters"]

# Document attributes that are not metadata: a filter on them cannot be answered from metadata
_DOCUMENT_FIELDS = frozenset({"id", "content", "blob", "meta", "score", "embedding", "sparse_embedding", "dataframe"})
_RANGES = {">": "$gt", ">=": "$gte", "<": "$lt", "<=": "$lte"}
_LOGIC = {"AND": "$and", "OR": "$or"}


# ---------------------------------------------------------------------------------------------- filters


def convert_filters(filters: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Haystack filter as a bitsearch filter (None or ``{}``: no filter); FilterError where none is exact.

    Comparisons: ``==``/``!=`` (None: the field is missing or null; an ISO 8601 date string also matches
    stored strings naming the same time), ``in``/``not in`` (a list), ``>``/``>=``/``<``/``<=`` (a number
    matches stored numbers, an ISO 8601 date string stored dates as times, None nothing); logic: AND, OR,
    NOT (of the AND of its conditions). ``!=``, ``not in`` and NOT match documents without the field.
    """
    if filters is None:
        return None
    if not isinstance(filters, dict):
        raise FilterError(f"filters must be a dict, got {type(filters).__name__}")
    if not filters:
        return None
    converted = _convert(filters)
    try:
        filter_sql(converted)  # what bitsearch cannot run is refused now, as Haystack's error
    except InvalidInputError as exc:
        raise FilterError(f"bitsearch cannot apply this filter: {exc}") from None
    return converted


def _convert(node: object) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise FilterError(f"a filter condition must be a dict, got {node!r}")
    if "field" in node:
        return _comparison(node)
    if "operator" not in node:
        raise FilterError(f"'operator' key missing in {node}")
    if "conditions" not in node:
        raise FilterError(f"'conditions' key missing in {node}")
    operator, conditions = node["operator"], node["conditions"]
    if operator not in ("AND", "OR", "NOT"):
        raise FilterError(f"unknown logical operator {operator!r}; use AND, OR or NOT")
    if not isinstance(conditions, list) or not conditions:
        raise FilterError(f"'conditions' of {operator} must be a non-empty list, got {conditions!r}")
    subs = [_convert(c) for c in conditions]
    both = subs[0] if len(subs) == 1 else {"$and": subs}
    if operator == "NOT":
        return {"$not": both}
    return both if len(subs) == 1 else {_LOGIC[operator]: subs}


def _comparison(node: dict[str, Any]) -> dict[str, Any]:
    for key in ("operator", "value"):
        if key not in node:
            raise FilterError(f"'{key}' key missing in {node}")
    field, operator, value = _field(node["field"]), node["operator"], node["value"]
    if operator == "==":
        return _equal(field, value)
    if operator == "!=":
        return {"$not": _equal(field, value)}
    if operator in _RANGES:
        if value is None:  # Haystack: nothing is greater or smaller than None
            return _nothing(field)
        if isinstance(value, (bool, int, float)):
            return {field: {_RANGES[operator]: value}}
        date = _date(value)
        if date is None:
            raise FilterError(
                f"{operator} compares numbers, or strings only as ISO 8601 dates; got {value!r} for {node['field']!r}"
            )
        return {field: {_RANGES[operator]: {"$date": date}}}
    if operator in ("in", "not in"):
        if not isinstance(value, list):
            raise FilterError(f"'{operator}' takes a list, got {type(value).__name__} for {node['field']!r}")
        plain: list[Any] = []  # scalars compared as they are: one $in
        alternatives: list[dict[str, Any]] = []  # None and dates: their own equality
        for v in value:
            if isinstance(v, (bool, int, float, str)) and _date(v) is None:
                plain.append(v)
            else:
                alternatives.append(_equal(field, v))
        if plain:
            alternatives.insert(0, {field: {"$in": plain}})
        found = {"$or": alternatives} if len(alternatives) > 1 else alternatives[0] if alternatives else _nothing(field)
        return found if operator == "in" else {"$not": found}
    raise FilterError(f"unknown comparison operator {operator!r}; use == != > >= < <= in 'not in'")


def _field(name: object) -> str:
    """The metadata path of a Haystack field: ``meta.a.b`` (or a bare legacy ``a.b``) is ``a.b``."""
    if not isinstance(name, str):
        raise FilterError(f"a filter field must be a string, got {name!r}")
    if name.startswith("meta."):
        path = name[len("meta.") :]
    elif name.split(".")[0] in _DOCUMENT_FIELDS:
        raise FilterError(f"bitsearch filters on metadata only (fields 'meta.<name>'), not on {name!r}")
    else:
        path = name  # Haystack reads a field that is no Document attribute as a metadata field
    if not path or path.startswith("$"):
        raise FilterError(f"invalid metadata field {name!r}")
    return path


def _equal(field: str, value: object) -> dict[str, Any]:
    if isinstance(value, dt.datetime):
        return {field: {"$date": value.isoformat()}}
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise FilterError(f"bitsearch compares metadata with single values (str, number, bool, None), got {value!r}")
    if isinstance(value, str) and _date(value) is not None:  # Haystack: the same string, or the same time
        return {"$or": [{field: value}, {field: {"$date": value}}]}
    return {field: value}


def _nothing(field: str) -> dict[str, Any]:
    """A filter no document matches (the field is null and is not)."""
    return {"$and": [{field: None}, {"$not": {field: None}}]}


def _date(value: object) -> str | None:
    """``value`` as ISO 8601 text when it is a datetime or a string Haystack reads as a date, else None."""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if not isinstance(value, str) or len(value) < 10 or (len(value) > 10 and value[10] not in "Tt "):
        return None
    if not (value[:4].isdigit() and value[4] == "-" and value[5:7].isdigit() and value[7] == "-"):
        return None
    if not value[8:10].isdigit():
        return None
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return value


# ---------------------------------------------------------------------------------------------- the store


@contextlib.contextmanager
def _haystack_errors() -> Iterator[None]:
    """bitsearch's errors as Haystack's: a duplicate id as DuplicateDocumentError, the rest DocumentStoreError."""
    try:
        yield
    except DuplicateIdError as exc:
        raise DuplicateDocumentError(str(exc)) from exc
    except BitsearchError as exc:
        raise DocumentStoreError(str(exc)) from exc


class BitsearchDocumentStore:
    """A Haystack DocumentStore over a bitsearch collection at ``path`` (opened, or created if absent).

    Without ``path`` the collection lives in a temporary directory removed with the store (and ``to_dict``
    carries no documents). ``collection_options`` go to ``Collection.create`` (``precision``, ``keep_int8``,
    ...; the defaults are the other adapters': binary codes, float32 rows, no int8 rows); ``keep_float32``
    is always on, so embeddings read back are the float32 values written. The dimension is set by the
    first document with an embedding. Document ids are strings: a collection's int id comes back as its
    decimal form, which names it again.
    """

    def __init__(self, path: str | None = None, **collection_options: Any) -> None:
        if collection_options.get("keep_float32", True) is not True:
            raise DocumentStoreError("BitsearchDocumentStore keeps float32 rows to return embeddings (keep_float32)")
        self.path = path
        self.collection_options = dict(collection_options)
        with _haystack_errors():
            self._handle = CollectionHandle(path, {**collection_options, "keep_float32": True})
        if not self.collection.manifest["keep_float32"]:
            where = self._handle.path
            self._handle.close()
            raise DocumentStoreError(
                f"the collection at {where} keeps no float32 rows, so Haystack documents could not be "
                "read back with their embeddings: use a collection created with keep_float32=True"
            )

    @property
    def collection(self) -> Collection:
        """The ``bitsearch.Collection``."""
        return self._handle.collection

    def close(self) -> None:
        """Close the collection (and remove a temporary one)."""
        self._handle.close()

    # ------------------------------------------------------------------ serialization

    def to_dict(self) -> dict[str, Any]:
        """The store's init parameters (the path and collection options, not the documents)."""
        return default_to_dict(self, path=self.path, **self.collection_options)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BitsearchDocumentStore:
        """The store ``to_dict`` described (the same collection when it has a path)."""
        return default_from_dict(cls, data)

    # ------------------------------------------------------------------ the DocumentStore protocol

    def count_documents(self) -> int:
        """Number of documents stored."""
        return len(self.collection)

    def filter_documents(self, filters: dict[str, Any] | None = None) -> list[Document]:
        """The documents matching Haystack ``filters`` (all without), in the order they were written."""
        flt = convert_filters(filters)
        with _haystack_errors():
            return self._documents(self.collection.ids(flt), with_embeddings=True)

    def write_documents(self, documents: list[Document], policy: DuplicatePolicy = DuplicatePolicy.NONE) -> int:
        """Write ``documents``; returns how many were written. ``policy`` for ids already stored (or repeated
        in ``documents``): NONE and FAIL raise DuplicateDocumentError, SKIP keeps the stored (first) one,
        OVERWRITE replaces it. All are checked before any is written: bad input changes nothing."""
        if not isinstance(documents, list) or any(not isinstance(d, Document) for d in documents):
            raise ValueError("write_documents takes a list of haystack Document objects")
        if policy == DuplicatePolicy.NONE:
            policy = DuplicatePolicy.FAIL
        rows = [_row(d) for d in documents]
        by_id: dict[str, tuple[str | None, dict[str, Any], np.ndarray | None]] = {}
        for doc_id, text, meta, vector in rows:
            if doc_id in by_id:
                if policy == DuplicatePolicy.FAIL:
                    raise DuplicateDocumentError(f"document id {doc_id!r} is given twice")
                if policy == DuplicatePolicy.SKIP:
                    continue
            by_id[doc_id] = (text, meta, vector)
        dims = sorted({v.shape[0] for _, _, v in by_id.values() if v is not None} | {self.collection.dim} - {None})
        if len(dims) > 1:
            raise DocumentStoreError(
                f"embeddings of {' and '.join(map(str, dims))} dimensions: a collection has one dim "
                f"({'set to ' + str(self.collection.dim) if self.collection.dim else 'set by its first embedding'})"
            )
        with _haystack_errors():
            stored = self._handle.stored(list(by_id))
            if policy != DuplicatePolicy.OVERWRITE:
                if stored and policy == DuplicatePolicy.FAIL:
                    shown = ", ".join(repr(i) for i in sorted(stored)[:5])
                    raise DuplicateDocumentError(f"document id(s) already stored: {shown}")
                by_id = {i: v for i, v in by_id.items() if i not in stored}
            self._write({stored.get(i, i): v for i, v in by_id.items()}, overwrite=policy == DuplicatePolicy.OVERWRITE)
        return len(by_id)

    def delete_documents(self, document_ids: list[str]) -> None:
        """Delete the documents with these ids; ids not stored are ignored."""
        with _haystack_errors():
            stored = list(self._handle.stored(document_ids).values())
            if stored:
                self.collection.delete(stored)

    # ------------------------------------------------------------------ beyond the protocol

    def delete_all_documents(self, recreate_index: bool = False) -> None:
        """Delete every document; ``recreate_index`` also rewrites the files without them (compaction)."""
        with _haystack_errors():
            ids = self.collection.ids()
            if ids:
                self.collection.delete(ids)
            if recreate_index:
                self.collection.compact()

    def delete_by_filter(self, filters: dict[str, Any]) -> int:
        """Delete the documents matching ``filters``; returns how many."""
        flt = convert_filters(filters)
        with _haystack_errors():
            ids = self.collection.ids(flt)
            if ids:
                self.collection.delete(ids)
        return len(ids)

    def update_by_filter(self, filters: dict[str, Any], meta: dict[str, Any]) -> int:
        """Merge ``meta`` into the metadata of the documents matching ``filters``; returns how many."""
        flt = convert_filters(filters)
        with _haystack_errors():
            check_metadata(meta, "meta")
            ids = self.collection.ids(flt)
            docs = self.collection.get(ids, with_vectors=True) if ids else []
            # keyed by the stored ids (an int id stays an int), so the upsert replaces each document
            updated = {d.id: (d.text, {**(d.metadata or {}), **meta}, d.vector) for d in docs if d is not None}
            self._write(updated, overwrite=True)
        return len(updated)

    def count_documents_by_filter(self, filters: dict[str, Any]) -> int:
        """Number of documents matching ``filters``."""
        flt = convert_filters(filters)
        with _haystack_errors():
            return len(self.collection.ids(flt)) if flt is not None else len(self.collection)

    def count_unique_metadata_by_filter(self, filters: dict[str, Any], metadata_fields: list[str]) -> dict[str, int]:
        """For each field (``meta.`` prefix optional), the number of distinct non-null values among the
        documents matching ``filters``; values of different JSON types are distinct (1, 1.0, "1", true)."""
        metas = self._metadata(filters)
        out: dict[str, int] = {}
        for name in metadata_fields:
            key = name.removeprefix("meta.")
            out[key] = len({_typed_key(m[key]) for m in metas if m.get(key) is not None})
        return out

    def get_metadata_fields_info(self) -> dict[str, dict[str, str]]:
        """Each top-level metadata field with the type of its (last seen non-null) values:
        "boolean", "int", "float" or "keyword" (strings, lists, objects)."""
        kinds: dict[str, str] = {}
        for meta in self._metadata(None):
            for key, value in meta.items():
                if value is not None:
                    kinds[key] = _kind(value)
        return {k: {"type": v} for k, v in kinds.items()}

    def get_metadata_field_min_max(self, metadata_field: str) -> dict[str, Any]:
        """The smallest and largest number (or, for a field of strings, string) of a metadata field;
        ``{"min": None, "max": None}`` when no document has one or its values mix numbers and strings."""
        key = metadata_field.removeprefix("meta.")
        values = [m[key] for m in self._metadata(None) if isinstance(m.get(key), (int, float, str))]
        values = [v for v in values if not isinstance(v, bool)]
        if not values or len({isinstance(v, str) for v in values}) > 1:
            return {"min": None, "max": None}
        return {"min": min(values), "max": max(values)}

    def get_metadata_field_unique_values(
        self,
        metadata_field: str,
        search_term: str | None = None,
        from_: int = 0,
        size: int = 10,
        filters: dict[str, Any] | None = None,
    ) -> tuple[list[Any], int]:
        """Distinct non-null values of a metadata field among the documents matching ``filters``, those
        containing ``search_term`` (case-insensitive) only, ordered by their text, ``size`` from ``from_``;
        and how many there are in all."""
        key = metadata_field.removeprefix("meta.")
        unique: dict[tuple[str, str], Any] = {}
        for meta in self._metadata(filters):
            value = meta.get(key)
            if value is not None:
                unique.setdefault(_typed_key(value), value)
        if search_term:
            term = search_term.lower()
            unique = {k: v for k, v in unique.items() if term in str(v).lower()}
        order = sorted(unique, key=lambda k: (str(unique[k]), k))
        return [unique[k] for k in order[from_ : from_ + size]], len(order)

    # ------------------------------------------------------------------ retrieval (used by the retrievers)

    def embedding_retrieval(
        self,
        query_embedding: Sequence[float] | np.ndarray,
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        *,
        return_embedding: bool = False,
        rescore: str | Sequence[str] | None = "float32",
        rescore_multiplier: int = 4,
    ) -> list[Document]:
        """The ``top_k`` documents whose embeddings score best against ``query_embedding`` (dot product;
        cosine for normalized embeddings), best first, with ``score`` set. Documents without an embedding
        are never returned. ``rescore``/``rescore_multiplier`` as in ``Collection.search``."""
        flt = convert_filters(filters)
        _check_top_k(top_k)
        try:
            query = np.asarray(query_embedding, dtype=np.float32)
        except (TypeError, ValueError):
            query = None
        if query is None or query.ndim != 1 or not query.size:
            raise ValueError("query_embedding must be a non-empty list of numbers")
        col = self.collection
        if top_k == 0 or col.dim is None or len(col) == 0:
            return []
        with _haystack_errors():
            hits = col.search(query, k=top_k, filter=flt, rescore=rescore, rescore_multiplier=rescore_multiplier)[0]
            return self._found(hits, return_embedding)

    def bm25_retrieval(
        self, query: str, filters: dict[str, Any] | None = None, top_k: int = 10, *, return_embedding: bool = False
    ) -> list[Document]:
        """The ``top_k`` documents whose content best matches ``query`` by BM25 (SQLite FTS5), best first,
        with ``score`` set (higher is better)."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty string")
        flt = convert_filters(filters)
        _check_top_k(top_k)
        if top_k == 0 or len(self.collection) == 0:
            return []
        with _haystack_errors():
            hits = self.collection.search(query, k=top_k, mode="keyword", filter=flt)[0]
            return self._found(hits, return_embedding)

    # ------------------------------------------------------------------ helpers

    def _write(self, docs: dict[Any, tuple[str | None, dict[str, Any], np.ndarray | None]], *, overwrite: bool) -> None:
        """Store ``docs`` (id -> text, metadata, vector or None) in one commit; ``overwrite`` replaces stored
        documents of the same ids."""
        if not docs:
            return
        ids = list(docs)
        texts = [docs[i][0] for i in ids]
        metas = [docs[i][1] for i in ids]
        vectors = optional_unit_vectors([docs[i][2] for i in ids], "embeddings", normalize=False)
        write = self.collection.upsert if overwrite else self.collection.add
        write(vectors, ids=ids, texts=texts, metadata=metas)

    def _documents(self, ids: list[Any], *, with_embeddings: bool) -> list[Document]:
        found = self.collection.get(ids, with_vectors=with_embeddings) if ids else []
        return [
            Document(
                id=str(d.id),
                content=d.text,
                meta=d.metadata or {},
                embedding=None if d.vector is None else d.vector.tolist(),
            )
            for d in found
            if d is not None  # deleted meanwhile
        ]

    def _found(self, hits: list[Any], return_embedding: bool) -> list[Document]:
        vectors: dict[Any, list[float] | None] = {}
        if return_embedding and hits:
            for d in self.collection.get([h.id for h in hits], with_vectors=True):
                if d is not None:
                    vectors[d.id] = None if d.vector is None else d.vector.tolist()
        return [
            Document(
                id=str(h.id), content=h.text, meta=h.metadata or {}, score=float(h.score), embedding=vectors.get(h.id)
            )
            for h in hits
        ]

    def _metadata(self, filters: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The metadata of the documents matching ``filters`` (a scan of the matching rows)."""
        flt = convert_filters(filters)
        with _haystack_errors():
            ids = self.collection.ids(flt)
            return [d.metadata or {} for d in (self.collection.get(ids) if ids else []) if d is not None]


def _row(doc: Document) -> tuple[str, str | None, dict[str, Any], np.ndarray | None]:
    """(id, text, metadata, float32 vector or None) of a Haystack document; DocumentStoreError if it has
    what bitsearch cannot store."""
    if not isinstance(doc.id, str) or not doc.id:
        raise DocumentStoreError(f"document ids must be non-empty strings, got {doc.id!r}")
    if doc.blob is not None:
        raise DocumentStoreError(f"document {doc.id!r} has a blob: BitsearchDocumentStore stores text, not bytes")
    if doc.sparse_embedding is not None:
        raise DocumentStoreError(
            f"document {doc.id!r} has a sparse embedding: BitsearchDocumentStore searches dense embeddings only"
        )
    try:
        check_unicode(doc.id, "document id")
        if doc.content is not None:
            check_unicode(doc.content, f"content of document {doc.id!r}")
        check_metadata(doc.meta, f"meta of document {doc.id!r}")
    except InvalidInputError as exc:
        raise DocumentStoreError(str(exc)) from None
    vector = None
    if doc.embedding is not None:
        try:
            vector = np.asarray(doc.embedding, dtype=np.float64)
        except (TypeError, ValueError):
            raise DocumentStoreError(f"the embedding of document {doc.id!r} is not a list of numbers") from None
        if vector.ndim != 1 or not vector.size or not np.isfinite(vector).all() or np.abs(vector).max() > 3.4e38:
            raise DocumentStoreError(f"the embedding of document {doc.id!r} must be a non-empty list of finite floats")
        vector = vector.astype(np.float32)
    return doc.id, doc.content, dict(doc.meta), vector


def _check_top_k(top_k: object) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0, got {top_k!r}")


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "keyword"


def _typed_key(value: Any) -> tuple[str, str]:
    """A hashable key of a JSON value that keeps 1, 1.0, "1" and true apart."""
    return type(value).__name__, json.dumps(value, sort_keys=True)


# ---------------------------------------------------------------------------------------------- components


def _store_from(data: dict[str, Any]) -> None:
    """Turn the serialized document store and filter policy in component ``data`` back into objects."""
    params = data.get("init_parameters", {})
    store = params.get("document_store")
    if isinstance(store, dict):
        params["document_store"] = BitsearchDocumentStore.from_dict(store)
    if "filter_policy" in params:
        params["filter_policy"] = FilterPolicy.from_str(params["filter_policy"])


def _check_store(document_store: object, top_k: object) -> None:
    if not isinstance(document_store, BitsearchDocumentStore):
        raise TypeError("document_store must be a BitsearchDocumentStore")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
        raise ValueError(f"top_k must be an integer > 0, got {top_k!r}")


@component
class BitsearchEmbeddingRetriever:
    """Retrieves documents from a ``BitsearchDocumentStore`` by embedding (staged quantized search).

    ``filters`` apply to every run (with ``filter_policy`` REPLACE, a run's own filters replace them; MERGE
    AND-s both); ``rescore`` and ``rescore_multiplier`` choose the rescoring stages as in
    ``Collection.search``. Documents without an embedding are never returned.
    """

    def __init__(
        self,
        document_store: BitsearchDocumentStore,
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        filter_policy: FilterPolicy = FilterPolicy.REPLACE,
        return_embedding: bool = False,
        rescore: str | list[str] | None = "float32",
        rescore_multiplier: int = 4,
    ) -> None:
        _check_store(document_store, top_k)
        convert_filters(filters)
        self.document_store = document_store
        self.filters = filters
        self.top_k = top_k
        self.filter_policy = FilterPolicy.from_str(filter_policy) if isinstance(filter_policy, str) else filter_policy
        self.return_embedding = return_embedding
        self.rescore = rescore
        self.rescore_multiplier = rescore_multiplier

    def to_dict(self) -> dict[str, Any]:
        """The component with its document store's init parameters."""
        return default_to_dict(
            self,
            document_store=self.document_store.to_dict(),
            filters=self.filters,
            top_k=self.top_k,
            filter_policy=self.filter_policy.value,
            return_embedding=self.return_embedding,
            rescore=self.rescore,
            rescore_multiplier=self.rescore_multiplier,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BitsearchEmbeddingRetriever:
        """The component ``to_dict`` described."""
        _store_from(data)
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(
        self,
        query_embedding: list[float],
        filters: dict[str, Any] | None = None,
        top_k: int | None = None,
        return_embedding: bool | None = None,
    ) -> dict[str, list[Document]]:
        """The ``top_k`` documents closest to ``query_embedding``, best first, each with its score."""
        docs = self.document_store.embedding_retrieval(
            query_embedding,
            filters=apply_filter_policy(self.filter_policy, self.filters, filters),
            top_k=self.top_k if top_k is None else top_k,
            return_embedding=self.return_embedding if return_embedding is None else return_embedding,
            rescore=self.rescore,
            rescore_multiplier=self.rescore_multiplier,
        )
        return {"documents": docs}


@component
class BitsearchBM25Retriever:
    """Retrieves documents from a ``BitsearchDocumentStore`` by BM25 over their content (SQLite FTS5).

    ``filters`` and ``filter_policy`` as for ``BitsearchEmbeddingRetriever``.
    """

    def __init__(
        self,
        document_store: BitsearchDocumentStore,
        filters: dict[str, Any] | None = None,
        top_k: int = 10,
        filter_policy: FilterPolicy = FilterPolicy.REPLACE,
    ) -> None:
        _check_store(document_store, top_k)
        convert_filters(filters)
        self.document_store = document_store
        self.filters = filters
        self.top_k = top_k
        self.filter_policy = FilterPolicy.from_str(filter_policy) if isinstance(filter_policy, str) else filter_policy

    def to_dict(self) -> dict[str, Any]:
        """The component with its document store's init parameters."""
        return default_to_dict(
            self,
            document_store=self.document_store.to_dict(),
            filters=self.filters,
            top_k=self.top_k,
            filter_policy=self.filter_policy.value,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BitsearchBM25Retriever:
        """The component ``to_dict`` described."""
        _store_from(data)
        return default_from_dict(cls, data)

    @component.output_types(documents=list[Document])
    def run(
        self, query: str, filters: dict[str, Any] | None = None, top_k: int | None = None
    ) -> dict[str, list[Document]]:
        """The ``top_k`` documents whose content best matches ``query``, best first, each with its score."""
        docs = self.document_store.bm25_retrieval(
            query,
            filters=apply_filter_policy(self.filter_policy, self.filters, filters),
            top_k=self.top_k if top_k is None else top_k,
        )
        return {"documents": docs}
