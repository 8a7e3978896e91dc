"""Checks of what callers pass to a collection's writes, made before anything is written."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import DuplicateIdError, InvalidInputError
from ..quantize import check_documents, check_ranges
from ..store import DocId, check_metadata, check_unicode, normalize_id

__all__ = [
    "as_list",
    "check_dim",
    "check_meta",
    "check_payload",
    "check_text",
    "check_unique",
    "check_vectors",
    "valid_ranges",
]


def check_dim(dim: object) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
    return int(dim)


def valid_ranges(ranges: object, dim: int) -> np.ndarray:
    r = check_ranges(ranges, dim).astype(np.float32)
    if not (r[1] > r[0]).all():
        bad = int(np.argmax(~(r[1] > r[0])))
        raise InvalidInputError(
            f"ranges have zero width in dimension {bad}; use calibrate_ranges() for ranges that never do"
        )
    return r


def check_unique(ids: Sequence[DocId]) -> None:
    if len(set(ids)) != len(ids):
        seen: set[DocId] = set()
        for i in ids:
            if i in seen:
                raise DuplicateIdError(f"document id {i!r} appears more than once in this call")
            seen.add(i)


def check_ids(ids: object, n: int) -> list[DocId]:
    """The ids given for ``n`` embeddings, normalized: one per embedding, none repeated."""
    given = [normalize_id(i) for i in as_list(ids, "ids", "one id per embedding")]
    if len(given) != n:
        raise InvalidInputError(f"got {len(given)} ids for {n} embeddings")
    check_unique(given)
    return given


def as_list(values: object, name: str, what: str) -> list[Any]:
    """``values`` as a list; a str, bytes, dict, set or non-iterable is an InvalidInputError."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise InvalidInputError(f"{name} must be one-dimensional, got an array of shape {values.shape}")
        return values.tolist()
    if isinstance(values, (str, bytes, dict, set, frozenset)) or not isinstance(values, Iterable):
        raise InvalidInputError(f"{name} must be a list or tuple with {what}, got {type(values).__name__}")
    return list(values)


def check_text(i: int, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidInputError(f"texts[{i}] must be a str or None, got {type(value).__name__}")
    if not value.strip():
        raise InvalidInputError(f"texts[{i}] is empty")
    check_unicode(value, f"texts[{i}]")


def check_meta(i: int, value: object) -> None:
    if value is not None:
        check_metadata(value, f"metadata[{i}]")


def check_payload(values: Sequence[Any] | None, n: int, name: str, check: Any) -> list[Any] | None:
    if values is None:
        return None
    vals = as_list(values, name, "one entry per embedding")
    if len(vals) != n:
        raise InvalidInputError(f"got {len(vals)} {name} for {n} embeddings")
    for i, v in enumerate(vals):
        check(i, v)
    return vals


def check_vectors(
    dim: int | None,
    embeddings: np.ndarray | Sequence[Any] | None,
    ids: Sequence[object] | None,
    texts: Sequence[str | None] | None,
    metadata: Sequence[dict[str, Any] | None] | None,
) -> tuple[np.ndarray | None, np.ndarray, int]:
    """(the rows that have vectors, checked; which documents have one; how many documents).

    ``embeddings`` None: no document has a vector (their count comes from ids, texts or metadata);
    a list or tuple with None entries: those documents have none.
    """
    if embeddings is None:
        for name, given in (("ids", ids), ("texts", texts), ("metadata", metadata)):
            if given is not None:
                n = len(as_list(given, name, "one entry per document"))
                break
        else:
            raise InvalidInputError("no documents given: pass embeddings, or ids / texts for documents without")
        if n == 0:
            raise InvalidInputError("no documents given: the lists are empty")
        return None, np.zeros(n, dtype=np.bool_), n
    if isinstance(embeddings, (list, tuple)) and any(e is None for e in embeddings):
        has_vec = np.array([e is not None for e in embeddings], dtype=np.bool_)
        rows = [e for e in embeddings if e is not None]
        if not rows:
            return None, has_vec, has_vec.size
        for i, e in zip(np.flatnonzero(has_vec).tolist(), rows, strict=True):
            if np.ndim(e) != 1:
                raise InvalidInputError(f"embeddings[{i}] must be one vector or None, got shape {np.shape(e)}")
        try:
            stacked = np.asarray(rows)
        except ValueError:
            raise InvalidInputError("embeddings must all have the same dimension") from None
        return check_documents(stacked, dim), has_vec, has_vec.size
    emb = check_documents(embeddings, dim)
    return emb, np.ones(emb.shape[0], dtype=np.bool_), emb.shape[0]
