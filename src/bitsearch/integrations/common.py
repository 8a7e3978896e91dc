"""What the framework adapters share: a collection at a path or in a temporary folder, unit vectors, id listing.

No framework is imported here.
"""

from __future__ import annotations

import inspect
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..collection import Collection
from ..errors import InvalidInputError
from ..quantize import check_embeddings

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


class CollectionHandle:
    """The collection behind an adapter: opened at ``path`` if one is there, else created at the first write.

    The first write fixes the dimension (that of its embeddings). Without ``path`` the collection lives in
    a temporary folder removed by ``close`` or when the handle is garbage collected.
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
        self._lock = threading.Lock()
        self.collection: Collection | None = None
        if self.path.is_dir() and any(self.path.iterdir()):
            self.collection = Collection.open(self.path)

    def for_write(self, dim: int) -> Collection:
        """The collection, created with ``dim`` dimensions if there is none yet."""
        with self._lock:
            if self.collection is None:
                self.collection = Collection.create(self.path, dim, **self.options)
            return self.collection

    def ids(self, flt: dict[str, Any] | None = None) -> list[Any]:
        """The ids of the live documents whose metadata match ``flt`` (all of them without one)."""
        col = self.collection
        if col is None or len(col) == 0:
            return []
        # a dense search for every document: the collection's filter runs in SQLite, the zero query ranks
        # nothing, and k = the number of live documents returns every match. Documents stored without a
        # vector (never written by these adapters) are not listed: dense search does not see them.
        hits = col.search(np.zeros(col.dim, np.float32), k=len(col), rescore=None, filter=flt, with_text=False)
        return [h.id for h in hits[0]]

    def close(self) -> None:
        """Close the collection; a temporary one is removed."""
        if self.collection is not None:
            self.collection.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def dedupe(ids: Sequence[Any]) -> list[Any]:
    """``ids`` without repeats, in first-seen order."""
    return list(dict.fromkeys(ids))
