"""Exception types: every error bitsearch raises on bad input names the problem."""

from __future__ import annotations


class BitsearchError(Exception):
    """Base class of all bitsearch errors."""


class InvalidInputError(BitsearchError, ValueError):
    """Embeddings, ids, texts or parameters that cannot be accepted (shape, NaN, duplicates, ...)."""


class DuplicateIdError(InvalidInputError):
    """An id given to ``add`` already exists in the collection (or twice in the same call)."""


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
