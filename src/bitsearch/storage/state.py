"""A consistent, immutable snapshot of a collection: what searches read while writers build the next one."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ..codecs import Codec
from ..errors import CollectionError, CorruptCollectionError
from ..quantize import int8_steps
from .diskrows import DiskRows, RowFiles
from .manifest import Manifest

__all__ = ["Segment", "State"]

_ROW_DTYPES = {"seqs": np.int64, "int8": np.int8, "float32": np.float32}


@dataclass(frozen=True)
class Segment:
    """One immutable segment as loaded: stage-1 codes live in the state, other rows stay on disk."""

    name: str
    rows: int
    seqs: DiskRows  # (rows,) int64, ascending
    int8: DiskRows | None  # (rows, dim) int8
    float32: DiskRows | None  # (rows, dim) float32
    seq_start: int | None = None  # seqs == seq_start + row when they are consecutive


@dataclass(frozen=True)
class State:
    """A consistent snapshot of a collection; writers build a new one and swap it in atomically.

    Values derived from it (the seqs of every row, the files of each row kind, int8 scales) are
    computed on first use and kept with the snapshot (``cached_property``: never stale, as a new
    write makes a new State).
    """

    manifest: Manifest
    codec: Codec
    segments: tuple[Segment, ...]
    offsets: np.ndarray  # (nseg + 1,) first global row of each segment
    words: np.ndarray | None  # sign-like bit plane as (N, W) uint64 words in RAM
    ram_rows: np.ndarray | None  # the codec's other stage-1 rows in RAM
    deleted: np.ndarray  # (N,) bool
    tombstones: np.ndarray  # sorted int64 seqs
    novec: np.ndarray  # sorted seqs of documents stored without a vector
    ann: Any = None  # the approximate index (kernels' BinaryIVF), or None

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def live(self) -> int:
        """Live documents: rows with vectors and documents without, less the tombstoned."""
        return self.rows + int(self.novec.size) - int(self.tombstones.size)

    @cached_property
    def live_novec(self) -> np.ndarray:
        """Sequence numbers of the live documents stored without a vector."""
        return self.novec[~np.isin(self.novec, self.tombstones)] if self.tombstones.size else self.novec

    @cached_property
    def ranges(self) -> np.ndarray | None:
        """The int8 ranges (2, dim) float32."""
        return self.manifest.ranges_array

    @cached_property
    def int8_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """The int8 ranges and their bucket widths."""
        if self.ranges is None:
            raise CollectionError("this collection has no int8 ranges yet")
        return self.ranges, int8_steps(self.ranges)

    @cached_property
    def seq_starts(self) -> np.ndarray:
        """Each segment's first sequence number, -1 where its seqs are not consecutive."""
        return np.array([-1 if s.seq_start is None else s.seq_start for s in self.segments], np.int64)

    @cached_property
    def seq_shift(self) -> int | None:
        """seq - row when it is the same for every row (segments appended, never compacted): no lookup."""
        starts = self.seq_starts
        shift = starts - self.offsets[:-1]
        uniform = bool(starts.size) and bool((starts >= 0).all()) and bool((shift == shift[0]).all())
        return int(shift[0]) if uniform else None

    @cached_property
    def all_seqs(self) -> np.ndarray:
        """The sequence number of every row, through the snapshot's descriptors (or arithmetic): its
        files may be gone since it loaded."""
        return self.gather("seqs", np.arange(self.rows, dtype=np.int64))

    @cached_property
    def known_fields(self) -> dict[str, bool]:
        """Metadata fields a search's filter named, and whether any stored document has them."""
        return {}

    @cached_property
    def _row_files(self) -> dict[str, RowFiles]:
        return {}

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map global row numbers to (segment index, row within segment)."""
        seg = np.searchsorted(self.offsets, rows, side="right") - 1
        return seg, rows - self.offsets[seg]

    def gather(self, kind: str, rows: np.ndarray) -> np.ndarray:
        """Rows of ``kind`` ("int8", "float32" or "seqs") for global row numbers, in the given order
        (any order, repeats allowed)."""
        rows = np.asarray(rows, dtype=np.int64)
        if kind != "seqs" and self.ram_rows is not None and self.codec.keeps == kind:
            return self.ram_rows[rows]
        if kind == "seqs":
            shift = self.seq_shift
            if shift is not None:
                return rows + shift
            starts = self.seq_starts
            if starts.size:
                seg, local = self.locate(rows)
                if (starts[seg] >= 0).all():
                    return starts[seg] + local
        if not self.segments:
            width = () if kind == "seqs" else (int(self.manifest.dim or 0),)
            return np.empty((0, *width), dtype=_ROW_DTYPES[kind])
        return self.row_files(kind).take(rows)

    def rows_of(self, seqs: np.ndarray) -> np.ndarray:
        """Global row numbers of stored sequence numbers (rows hold ascending seqs: adds append larger
        ones and compaction keeps their order), by one search over the seqs, read once per state."""
        seqs = np.asarray(seqs, dtype=np.int64)
        all_seqs = self.all_seqs
        rows = np.searchsorted(all_seqs, seqs)
        inside = rows < all_seqs.size
        if not inside.all() or (all_seqs[rows[inside]] != seqs[inside]).any():
            raise CorruptCollectionError("a document's sequence number is in no segment of the collection")
        return rows

    def row_files(self, kind: str) -> RowFiles:
        """The segments' ``kind`` files as one RowFiles, built once per state."""
        files = self._row_files.get(kind)
        if files is None:
            parts = [getattr(s, kind) for s in self.segments]
            if any(p is None for p in parts):
                raise CollectionError(f"this collection keeps no {kind} rows")
            files = self._row_files[kind] = RowFiles(parts, self.offsets)
        return files
