"""Exception types: every error bitsearch raises on bad input names the problem."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class BitsearchError(Exception):
    """Base class of all bitsearch errors."""


class InvalidInputError(BitsearchError, ValueError):
    """Embeddings, ids, texts or parameters that cannot be accepted (shape, NaN, duplicates, ...)."""


class DuplicateIdError(InvalidInputError):
    """An id given to ``add`` already exists in the collection (or twice in the same call)."""


class NoModelError(InvalidInputError):
    """Text to embed (a query or a document) for a collection that records no embedding model: its documents
    came as vectors, so queries must come as vectors too."""


class DimensionMismatchError(InvalidInputError):
    """Vectors whose dimension differs from the collection's (set at create, or by its first write of vectors)."""


class UnknownIdError(BitsearchError, KeyError):
    """An id given to ``delete`` (or a lookup) is not in the collection."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class CollectionError(BitsearchError):
    """A collection on disk is missing, corrupt, or of a format this version cannot read."""


class CorruptCollectionError(CollectionError):
    """A file of the collection is missing, truncated or fails its checksum."""


class FormatVersionError(CollectionError):
    """The collection was written by a newer bitsearch format version."""


class ReadOnlyCollectionError(CollectionError):
    """A write to a collection this process can only read (read-only media, no write permission)."""


class DiskFullError(CollectionError):
    """A write failed for lack of disk space; the collection was left as it was (or the write committed)."""


class ModelLoadError(BitsearchError):
    """An embedding model could not be loaded (unknown name, no network, missing files)."""


class ShardUnavailableError(BitsearchError):
    """A shard of a sharded collection did not answer (its actor died and could not be restarted).

    ``shards`` names the shards that did not answer.
    """

    def __init__(self, message: str, shards: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.shards = list(shards)


class PartialWriteError(BitsearchError):
    """A write to a sharded collection committed on some shards and failed on others.

    ``stored_ids`` are the ids the write applied (stored by ``add``, deleted by ``delete``), ``failed_ids``
    those it did not, ``shards`` the shards that failed. Re-running an ``add`` with the same ids and
    ``skip_existing=True`` stores the rest without duplicates.
    """

    def __init__(
        self, message: str, stored_ids: Sequence[Any] = (), failed_ids: Sequence[Any] = (), shards: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.stored_ids = list(stored_ids)
        self.failed_ids = list(failed_ids)
        self.shards = list(shards)


class ClusterUnavailableError(BitsearchError):
    """The Ray cluster named by an address could not be reached (nothing listens there, or it refused)."""
