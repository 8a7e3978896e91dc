"""What the framework adapters share: a collection at a path or in a temporary folder, unit vectors, ids.

No framework is imported here.
"""

from __future__ import annotations

import inspect
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..collection import Collection
from ..errors import InvalidInputError
from ..quantize import check_embeddings
from ..storage.manifest import MANIFEST
from ..store import INT64_MAX, INT64_MIN, DocId

__all__ = [
    "COLLECTION_DEFAULTS",
    "SEARCH_OPTIONS",
    "CollectionHandle",
    "check_search_options",
    "dedupe",
    "unit_vectors",
]

# Adapter defaults for new collections: binary codes in RAM, float32 rows on disk. Documents arrive a few
# at a time, so int8 ranges calibrated on the first write would fit later ones badly; float32 rows rescore
# exactly and give MMR the stored vectors. Any ``Collection.create`` option overrides these.
COLLECTION_DEFAULTS: dict[str, Any] = {"keep_int8": False, "keep_float32": True}

# ``Collection.search`` options an adapter passes through (k, mode, filter and the query are its own).
SEARCH_OPTIONS = ("rescore", "rescore_multiplier", "rrf_k", "weights", "nprobe", "exact")

_CREATE_OPTIONS = frozenset(inspect.signature(Collection.create).parameters) - {"cls", "path", "dim", "exist_ok"}
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]{0,18})")  # an int's own decimal form (str(int)), within 19 digits


def check_search_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` if every key is a ``Collection.search`` option an adapter passes through; else TypeError."""
    unknown = sorted(set(options) - set(SEARCH_OPTIONS))
    if unknown:
        shown = ", ".join(map(repr, unknown))
        raise TypeError(f"unknown search option(s) {shown}; expected {', '.join(SEARCH_OPTIONS)}")
    return dict(options)


def unit_vectors(vectors: object, name: str, normalize: bool) -> np.ndarray:
    """``vectors`` as a finite float32 (n, dim) array, each row scaled to unit length when ``normalize``.

    Unit rows make bitsearch's dot-product scores cosine similarities whatever the embedding model's scale;
    an all-zero row has no direction and is an InvalidInputError.
    """
    arr = check_embeddings(vectors, name=name).astype(np.float32)
    if not normalize:
        return arr
    norms = np.linalg.norm(arr.astype(np.float64), axis=1)
    if (norms == 0).any():
        raise InvalidInputError(f"{name}: row {int(np.argmin(norms))} is all zeros and cannot be normalized")
    return (arr / norms[:, None]).astype(np.float32)


def optional_unit_vectors(vectors: Sequence[Any], name: str, normalize: bool) -> np.ndarray | list[Any] | None:
    """``vectors`` (each a vector or None) for ``Collection.upsert``: a (n, dim) array of ``unit_vectors``
    when none is None, None when all are (documents without vectors), else a list with the None entries
    kept in place."""
    given = [i for i, v in enumerate(vectors) if v is not None]
    if not given:
        return None
    rows = unit_vectors([vectors[i] for i in given], name, normalize)
    if len(given) == len(vectors):
        return rows
    out: list[Any] = [None] * len(vectors)
    for i, row in zip(given, rows, strict=True):
        out[i] = row
    return out


class CollectionHandle:
    """The collection behind an adapter: opened at ``path`` if one is there, else created there now.

    A new collection's dimension is set by its first write of vectors. Without ``path`` the collection
    lives in a temporary folder removed by ``close`` or when the handle is garbage collected.
    """

    def __init__(self, path: str | os.PathLike[str] | None, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - _CREATE_OPTIONS)
        if unknown:
            raise TypeError(
                f"unknown collection option(s) {', '.join(map(repr, unknown))}; see Collection.create for the options"
            )
        self._tmp = tempfile.TemporaryDirectory(prefix="bitsearch-") if path is None else None
        self.path = Path(self._tmp.name) / "collection" if self._tmp is not None else Path(path)  # type: ignore[arg-type]
        self.options = {**COLLECTION_DEFAULTS, **options}
        try:
            if (self.path / MANIFEST).exists():
                self.collection: Collection = Collection.open(self.path)
            else:
                self.collection = Collection.create(self.path, None, **self.options)
        except BaseException:
            if self._tmp is not None:
                self._tmp.cleanup()
            raise

    def ids(self, flt: dict[str, Any] | None = None) -> list[DocId]:
        """The ids of the live documents whose metadata match ``flt`` (all of them without one)."""
        return self.collection.ids(flt)

    def stored(self, ids: Sequence[Any]) -> dict[Any, DocId]:
        """Which of the frameworks' ``ids`` name a live document, and its stored id.

        Adapters report every id as a string, an int id as its decimal form (5 as "5"), so a string id
        names the document of that string id if one is stored, else the one whose int id it spells.
        A collection holding both "5" and 5 reports both as "5": the string one is the one found.
        """
        wanted = dedupe(ids)
        if not wanted:
            return {}
        col = self.collection
        found: dict[Any, DocId] = {i: i for i in col.existing_ids(wanted)}
        spelled = {
            i: int(i)
            for i in wanted
            if i not in found and isinstance(i, str) and _DECIMAL.fullmatch(i) and INT64_MIN <= int(i) <= INT64_MAX
        }
        live = set(col.existing_ids(list(spelled.values()))) if spelled else set()
        found.update({i: n for i, n in spelled.items() if n in live})
        return {i: found[i] for i in wanted if i in found}

    def write_ids(self, ids: Sequence[Any]) -> list[Any]:
        """``ids`` with each that names a stored document (see ``stored``) replaced by its stored id, so
        that writing a document read back replaces it instead of adding a second one."""
        known = self.stored(ids)
        return [known.get(i, i) for i in ids]

    def close(self) -> None:
        """Close the collection; a temporary one is removed."""
        self.collection.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def dedupe(ids: Sequence[Any]) -> list[Any]:
    """``ids`` without repeats, in first-seen order."""
    return list(dict.fromkeys(ids))
