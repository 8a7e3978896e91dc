"""The on-disk collection: a manifest, immutable segments of codes, tombstones and a document store.

Layout of a collection directory::

    manifest.json            format version, dim, precision, ranges, model, segments + checksums, tombstones
    segments/NNNNNN/         binary.npy (n, dim/8) uint8, int8.npy (n, dim) int8, float32.npy, seqs.npy
    tombstones-NNNNNN.npy    sorted sequence numbers of deleted rows (until compaction)
    docs.sqlite              seq -> id, text, metadata

Every write goes to a temporary name, is fsynced, then renamed into place; the manifest's rename is
the single commit point, so a process killed at any moment leaves the previous contents loadable.
Opening loads the stage-1 codes into RAM; int8 and float32 rows stay on disk, read with pread per search.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import stat
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .errors import (
    CollectionError,
    CorruptCollectionError,
    DiskFullError,
    DuplicateIdError,
    InvalidInputError,
    ReadOnlyCollectionError,
    UnknownIdError,
)
from .files import fsync_dir, read_versioned_json, write_atomic
from .kernels import BinaryIVF, as_words
from .quantize import (
    CODE_KINDS,
    CodeBook,
    _check_ranges,
    calibrate_ranges,
    check_documents,
    quantize_embeddings,
)
from .rows import pread_rows
from .store import DocId, DocStore, check_metadata, check_unicode, filter_sql, normalize_id

__all__ = [
    "FORMAT_VERSION",
    "STAGE1_PRECISIONS",
    "CollectionFiles",
    "Document",
    "interrupted_create",
    "remove_inside",
    "validate_manifest",
]

log = logging.getLogger(__name__)

# 1: sign bits / int8 / float32 stage 1.  2: adds 1.5bit / 2bit codes, codebooks, stage1 choice.
# 3: 1.5bit as a sign plane + one bit per pair of dimensions (format 2's was packed ternary).
# A new collection gets the lowest version that describes it, so older releases still open all
# but the new 1.5bit ones, and refuse those rather than misread them.
# 4: documents without vectors (a "novec" list of sequence numbers) and a dim left unset (null) until
# the first write of vectors.
FORMAT_VERSION = 4
FORMAT_NAME = "bitsearch-collection"
STAGE1_PRECISIONS = ("binary", "1.5bit", "2bit", "int8", "float32")
LOWBIT = ("1.5bit", "2bit")
STAGE1_MODES = ("auto", "hamming", "asymmetric")
ROTATION = "rotation.npy"
MANIFEST = "manifest.json"
DOCS = "docs.sqlite"
_ARRAY_FILES = {
    "binary": "binary.npy",
    "1.5bit": "codes.npy",
    "2bit": "codes.npy",
    "int8": "int8.npy",
    "float32": "float32.npy",
}
_SEGMENT_DTYPES = {"seqs": np.int64, "binary": np.uint8, "codes": np.uint8, "int8": np.int8, "float32": np.float32}
_HASH_BLOCK = 1 << 22
# a write with more int8 values clipped than this share warns; compact() recalibrates (from kept float32
# rows) when more than this share of the values written since the last calibration were clipped
INT8_CLIP_WARN = 0.01
_RELOAD_ATTEMPTS = 5  # manifests re-read when a concurrent writer removes files while we load them


# ----------------------------------------------------------------------------- atomic file helpers


def _is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` reports a full disk (or quota), from the file system or from SQLite."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc)


def _take_number(path: Path, m: dict[str, Any]) -> int:
    """A number for a new segment or index directory that no directory uses; the counter moves past it.

    Segments and indexes share the counter, so a directory is never renamed onto an existing name.
    """
    n = int(m["next_segment"])
    while (path / "segments" / f"{n:06d}").exists() or (path / f"ann-{n:06d}").exists():
        n += 1
    m["next_segment"] = n + 1
    return n


def _save_npy(path: Path, array: np.ndarray) -> dict[str, Any]:
    """Save an array as .npy (no pickle), fsync it, and return its size and sha256."""
    with open(path, "wb") as f:
        np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def _load_npy_check(path: Path, info: dict[str, Any], verify: bool) -> None:
    """Check a collection file's presence and size against the manifest, and its sha256 if ``verify``."""
    if not path.is_file():
        raise CorruptCollectionError(f"collection file {path} is missing")
    size = path.stat().st_size
    if size != info["bytes"]:
        raise CorruptCollectionError(f"collection file {path} has {size} bytes, the manifest says {info['bytes']}")
    if verify and _sha256(path) != info["sha256"]:
        raise CorruptCollectionError(f"collection file {path} fails its sha256 checksum")


def _load_npy(path: Path, info: dict[str, Any], *, verify: bool) -> np.ndarray:
    """Load a collection array into RAM after checking its size, and its checksum if ``verify``."""
    _load_npy_check(path, info, verify)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CorruptCollectionError(f"collection file {path} is not a valid .npy file: {exc}") from None


# ----------------------------------------------------------------------------- in-memory state


class DiskRows:
    """The rows of a .npy file on disk, read with ``pread`` on demand.

    Not memory-mapped on purpose: mapped pages (and the kernel's fault-around) count as resident
    memory, which then creeps toward the file size as searches touch random rows. pread keeps the
    rows in the page cache only, so an open collection's RSS stays near its binary codes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd_cache: int | None = None
        with open(path, "rb") as f:
            # the descriptor is kept from the start: a snapshot whose files a later write removes
            # (compaction, or another process's) still reads them, and never opens a path again
            self._fd_cache = os.dup(f.fileno())
            try:
                major, _ = np.lib.format.read_magic(f)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read_header(f)
            except ValueError as exc:
                raise CorruptCollectionError(f"collection file {path} is not a valid .npy file: {exc}") from None
            self.offset = f.tell()
        if fortran or dtype.hasobject:
            raise CorruptCollectionError(f"collection file {path} has an unsupported layout")
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        expected = self.offset + self.shape[0] * self.row_bytes
        if path.stat().st_size != expected:
            size = path.stat().st_size
            raise CorruptCollectionError(f"collection file {path} is truncated: {size} of {expected} bytes")

    def read_all(self) -> np.ndarray:
        """Every row, read into memory through the kept descriptor (compaction, masks, filters)."""
        out = np.empty(self.shape, dtype=self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        fd, done = self._fd(), 0
        while done < view.nbytes:  # one pread returns at most ~2 GiB
            got = os.preadv(fd, [view[done:]], self.offset + done)
            if got <= 0:
                raise CorruptCollectionError(f"collection file {self.path} ended early while reading rows")
            done += got
        return out

    def _fd(self) -> int:
        """The read-only descriptor opened with the file and kept for the object's life."""
        fd = self._fd_cache
        if fd is None:
            raise CollectionError(f"collection file {self.path} was closed")
        return fd

    def __del__(self) -> None:
        fd = getattr(self, "_fd_cache", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The given rows, in the given order (any order, repeats allowed)."""
        return RowFiles([self], np.array([0, self.shape[0]], dtype=np.int64)).take(rows)

    def take_slowly(self, rows: np.ndarray) -> np.ndarray:
        """``take`` with one Python ``os.preadv`` per run of consecutive rows: raises the read's
        error (OSError, or CorruptCollectionError for a file that ends early) where the compiled
        loop only reports failure."""
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        rl = rows[order].tolist()
        n = len(rl)
        rb = self.row_bytes
        buf = bytearray(n * rb)
        view = memoryview(buf)
        if n and (rl[0] < 0 or rl[-1] >= self.shape[0]):
            raise IndexError(f"row {rl[0] if rl[0] < 0 else rl[-1]} is out of range for {self.path}")
        fd = self._fd()
        a = 0
        while a < n:
            b = a + 1
            while b < n and rl[b] == rl[b - 1] + 1:
                b += 1
            if os.preadv(fd, [view[a * rb : b * rb]], self.offset + rl[a] * rb) != (b - a) * rb:
                raise CorruptCollectionError(f"collection file {self.path} ended early while reading rows")
            a = b
        out = np.empty((n, *self.shape[1:]), dtype=self.dtype)
        out[order] = np.frombuffer(buf, dtype=self.dtype).reshape((n, *self.shape[1:]))
        return out


class RowFiles:
    """Files of one row layout laid end to end (the segments' int8, float32 or seqs files), read by
    global row number with one compiled loop of ``pread`` calls (``rows.pread_rows``).

    ``starts`` (files + 1,) are the first global row of each file and the total. Built once per
    state and kind: the descriptors stay open as long as the DiskRows do.
    """

    def __init__(self, parts: Sequence[DiskRows], starts: np.ndarray) -> None:
        self.parts = tuple(parts)
        self.starts = np.ascontiguousarray(starts, dtype=np.int64)
        self.fds = np.array([p._fd() for p in self.parts], dtype=np.int64)
        self.data_offsets = np.array([p.offset for p in self.parts], dtype=np.int64)
        self.total = int(self.starts[-1])
        first = self.parts[0]
        self.row_shape = first.shape[1:]
        self.dtype = first.dtype
        self.row_bytes = first.row_bytes

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows by global row number, in the given order (any order, repeats allowed)."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if rows.ndim != 1:
            rows = rows.reshape(-1)
        if rows.size * 8 > self.total:  # a large share of the rows: file by file, maybe whole files
            return self._take_by_file(rows)
        out = np.empty((rows.size, self.row_bytes), dtype=np.uint8)
        status = pread_rows(self.fds, self.data_offsets, self.starts, rows, out)
        if status > 0:
            raise IndexError(f"row {int(rows[status - 1])} is out of range for {self.total} rows")
        if status < 0:  # a read failed or came up short: again in Python, which raises the error
            return self._take_by_file(rows, slowly=True)
        block = out.view(self.dtype)
        return block if self.row_shape == block.shape[1:] else block.reshape((rows.size, *self.row_shape))

    def _take_by_file(self, rows: np.ndarray, slowly: bool = False) -> np.ndarray:
        """``take`` one file at a time; a file asked for a large share of its rows is read whole."""
        if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= self.total):
            bad = int(rows.min()) if int(rows.min()) < 0 else int(rows.max())
            raise IndexError(f"row {bad} is out of range for {self.total} rows")
        out = np.empty((rows.size, *self.row_shape), dtype=self.dtype)
        part = np.searchsorted(self.starts, rows, side="right") - 1
        for f in np.unique(part).tolist():
            where = np.flatnonzero(part == f)
            local = rows[where] - self.starts[f]
            src = self.parts[f]
            if slowly:
                out[where] = src.take_slowly(local)
            elif local.size * 8 > src.shape[0]:
                out[where] = src.read_all()[local]
            else:
                out[where] = RowFiles([src], self.starts[f : f + 2] - self.starts[f]).take(local)
        return out


@dataclass(frozen=True)
class Document:
    """A stored document as ``get`` returns it: id, text, metadata, and the float32 vector when asked for."""

    id: DocId
    text: str | None
    metadata: dict[str, Any] | None
    vector: np.ndarray | None = None


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
    """A consistent snapshot of a collection; writers build a new one and swap it in atomically."""

    manifest: dict[str, Any]
    segments: tuple[Segment, ...]
    offsets: np.ndarray  # (nseg + 1,) first global row of each segment
    words: np.ndarray | None  # binary stage: (N, W) uint64 in RAM
    ram_rows: np.ndarray | None  # int8 / float32 stage-1 rows in RAM
    deleted: np.ndarray  # (N,) bool
    tombstones: np.ndarray  # sorted int64 seqs
    extra: dict[str, Any] = field(default_factory=dict)
    novec: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # sorted seqs, no vector

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def live(self) -> int:
        """Live documents: rows with vectors and documents without, less the tombstoned."""
        return self.rows + int(self.novec.size) - int(self.tombstones.size)

    @property
    def live_novec(self) -> np.ndarray:
        """Sequence numbers of the live documents stored without a vector."""
        got = self.extra.get("live_novec")
        if got is None:
            got = self.novec[~np.isin(self.novec, self.tombstones)] if self.tombstones.size else self.novec
            self.extra["live_novec"] = got
        return got

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map global row numbers to (segment index, row within segment)."""
        seg = np.searchsorted(self.offsets, rows, side="right") - 1
        return seg, rows - self.offsets[seg]

    def gather(self, kind: str, rows: np.ndarray) -> np.ndarray:
        """Rows of ``kind`` ("int8", "float32" or "seqs") for global row numbers, in the given order
        (any order, repeats allowed)."""
        rows = np.asarray(rows, dtype=np.int64)
        if kind != "seqs" and self.ram_rows is not None and self.manifest["precision"] == kind:
            return self.ram_rows[rows]
        if kind == "seqs":
            starts = self.extra.get("seq_starts")
            if starts is None:
                starts = np.array([-1 if s.seq_start is None else s.seq_start for s in self.segments], np.int64)
                shift = starts - self.offsets[:-1]
                # seq = row + one shift for every row (segments appended, never compacted): no lookup
                uniform = bool(starts.size) and bool((starts >= 0).all()) and bool((shift == shift[0]).all())
                self.extra["seq_shift"] = int(shift[0]) if uniform else None
                self.extra["seq_starts"] = starts
            shift = self.extra["seq_shift"]
            if shift is not None:
                return rows + shift
            if starts.size:
                seg, local = self.locate(rows)
                if (starts[seg] >= 0).all():
                    return starts[seg] + local
        if not self.segments:
            dtype = {"seqs": np.int64, "int8": np.int8, "float32": np.float32}[kind]
            width = () if kind == "seqs" else (int(self.manifest["dim"] or 0),)
            return np.empty((0, *width), dtype=dtype)
        return self.row_files(kind).take(rows)

    def rows_of(self, seqs: np.ndarray) -> np.ndarray:
        """Global row numbers of stored sequence numbers (rows hold ascending seqs: adds append larger
        ones and compaction keeps their order), by one search over the seqs, read once per state."""
        seqs = np.asarray(seqs, dtype=np.int64)
        all_seqs = self.extra.get("all_seqs")
        if all_seqs is None:
            all_seqs = self.gather("seqs", np.arange(self.rows, dtype=np.int64))
            self.extra["all_seqs"] = all_seqs
        rows = np.searchsorted(all_seqs, seqs)
        inside = rows < all_seqs.size
        if not inside.all() or (all_seqs[rows[inside]] != seqs[inside]).any():
            raise CorruptCollectionError("a document's sequence number is in no segment of the collection")
        return rows

    def row_files(self, kind: str) -> RowFiles:
        """The segments' ``kind`` files as one RowFiles, built once per state."""
        key = f"files:{kind}"
        files = self.extra.get(key)
        if files is None:
            parts = [getattr(s, kind) for s in self.segments]
            if any(p is None for p in parts):
                raise CollectionError(f"this collection keeps no {kind} rows")
            files = RowFiles(parts, self.offsets)
            self.extra[key] = files
        return files


# ----------------------------------------------------------------------------- the collection


def _check_dim(dim: object) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
    return int(dim)


class CollectionFiles:
    """A collection on disk: create/open, add, delete, compact, stats. Search lives in ``Collection``."""

    def __init__(self, path: Path, state: State, docs: DocStore) -> None:
        self.path = path
        self._state = state
        self._docs = docs
        self._write_lock = threading.RLock()
        self.read_only = docs.read_only  # writes need write access to the folder and the document store

    # -------------------------------------------------------------- create / open

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        dim: int | None = None,
        *,
        precision: str = "binary",
        keep_int8: bool = True,
        keep_float32: bool = False,
        ranges: np.ndarray | None = None,
        calibration_embeddings: np.ndarray | None = None,
        model: dict[str, Any] | None = None,
        truncate_dim: int | None = None,
        keyword_index: bool = True,
        stage1: str = "auto",
        centering: bool = False,
        rotation: bool | int | None = None,
        query_bits: int | None = None,
        exist_ok: bool = False,
    ) -> CollectionFiles:
        """Create an empty collection directory at ``path`` and open it.

        ``precision`` is the stage-1 code kept in RAM: "binary" (1 bit per dimension), "1.5bit" (a
        median bit per dimension and a "large" bit per pair), "2bit", "int8" or "float32";
        ``keep_int8`` / ``keep_float32`` keep those rows on disk for rescoring.
        For binary, ``stage1`` picks Hamming distance or "asymmetric" scoring (the float query against
        the bits' bucket means: better ranking, more work); "auto" uses asymmetric scoring when no
        rescoring stage follows and Hamming when one does. ``centering`` (subtract the corpus mean) and
        ``rotation`` (a seeded random orthogonal rotation; an int is the seed) apply before the codes of
        binary, 1.5bit and 2bit collections; both are measured options (benchmarks/bench_codes.py):
        centering is off, rotation (None) is on for 2bit only, where it won on every shared dataset.
        ``query_bits`` (1 to 8; binary) makes asymmetric scoring round the query to that many bits
        and score by popcounts per query bit plane, as Qdrant and BBQ do, instead of the float query
        (the default: better ranking, and no slower after the Hamming pre-selection).
        int8 ranges come from ``ranges``,
        ``calibration_embeddings``, or else the first ``add``. With ``exist_ok`` an existing collection
        is opened instead (its settings must match).

        ``dim=None`` leaves the dimension to the first write of vectors (or to ``ranges``,
        ``calibration_embeddings`` or ``truncate_dim`` when given): it is then recorded in the manifest,
        and later writes of another dimension raise DimensionMismatchError. int8 ranges and codebooks
        not given are calibrated on that first write; later values outside the ranges are clipped,
        counted (``stats()["int8_clipped_fraction"]``, a warning above 1% of a write), and with
        ``keep_float32`` a ``compact()`` after more than 1% of them were clipped recalibrates the ranges
        (unless given here as ``ranges``) and re-encodes the int8 rows. ``keyword_index`` keeps a BM25
        (SQLite FTS5) index of the texts for keyword and hybrid search.
        """
        p = Path(path)
        if dim is None:  # left to the first write, unless something given here fixes it
            if ranges is not None:
                if np.ndim(ranges) != 2:
                    raise InvalidInputError(f"ranges must have shape (2, dim), got {np.shape(ranges)}")
                dim = int(np.shape(ranges)[1])
            elif calibration_embeddings is not None:
                dim = check_documents(calibration_embeddings, name="calibration_embeddings").shape[1]
            elif truncate_dim is not None:
                dim = truncate_dim
        if dim is not None:
            dim = _check_dim(dim)
        if precision not in STAGE1_PRECISIONS:
            raise InvalidInputError(
                f"unknown collection precision {precision!r}; expected one of {', '.join(STAGE1_PRECISIONS)}"
            )
        if (p / MANIFEST).exists():
            if not exist_ok:
                raise CollectionError(f"a collection already exists at {p}")
            col = cls.open(p)
            m = col.manifest
            if (dim is not None and m["dim"] not in (dim, None)) or m["precision"] != precision:
                raise CollectionError(
                    f"existing collection at {p} has dim {m['dim']} and precision {m['precision']!r}, "
                    f"not {dim} and {precision!r}"
                )
            return col
        if p.exists() and any(p.iterdir()):
            if not interrupted_create(p):
                raise CollectionError(f"{p} exists and is not an empty directory or a collection")
            for f in p.iterdir():  # start again from nothing: the next manifest names none of these
                remove_inside(p, f)
        if truncate_dim is not None and truncate_dim != dim:
            raise InvalidInputError(f"truncate_dim {truncate_dim} differs from the collection dim {dim}")
        if query_bits is not None:
            if precision != "binary" or stage1 == "hamming":
                raise InvalidInputError("query_bits applies to asymmetric scoring of binary codes only")
            if isinstance(query_bits, bool) or not isinstance(query_bits, int) or not 1 <= query_bits <= 8:
                raise InvalidInputError(f"query_bits must be an integer from 1 to 8, got {query_bits!r}")
        if rotation is None:
            rotation = precision == "2bit"
        if stage1 not in STAGE1_MODES:
            raise InvalidInputError(f"unknown stage1 {stage1!r}; expected one of {', '.join(STAGE1_MODES)}")
        keep_int8 = bool(keep_int8) or precision == "int8"
        keep_float32 = bool(keep_float32) or precision == "float32"
        ranges_given = ranges is not None
        if ranges is not None:
            assert dim is not None
            ranges = _valid_ranges(ranges, dim)
        elif calibration_embeddings is not None:
            ranges = calibrate_ranges(check_documents(calibration_embeddings, dim, name="calibration_embeddings"))
        manifest = {
            "format": FORMAT_NAME,
            "format_version": 4 if dim is None else 3 if precision == "1.5bit" else 2,
            "dim": dim,
            "precision": precision,
            "keep_int8": keep_int8,
            "keep_float32": keep_float32,
            "ranges": None if ranges is None else np.asarray(ranges, dtype=np.float32).tolist(),
            **({"ranges_given": True} if ranges_given else {}),
            "model": model,
            "truncate_dim": truncate_dim,
            "keyword_index": bool(keyword_index),
            "stage1": stage1 if precision == "binary" else None,
            "codes": None
            if precision not in ("binary", *LOWBIT)
            else {
                "centering": bool(centering),
                "rotation": rotation if isinstance(rotation, int) else bool(rotation),
                **({"query_bits": query_bits} if query_bits else {}),
            },
            "codebook": None,
            "next_seq": 0,
            "next_segment": 0,
            "generation": 0,
            "segments": [],
            "tombstones": None,
        }
        p.mkdir(parents=True, exist_ok=True)
        (p / "segments").mkdir(exist_ok=True)
        DocStore(p / DOCS, create=True, keyword_index=keyword_index).close()
        if calibration_embeddings is not None and manifest["codes"] is not None:
            cal = check_documents(calibration_embeddings, dim, name="calibration_embeddings")
            manifest["codebook"] = _fit_codebook(p, manifest, cal)
        write_atomic(p / MANIFEST, json.dumps(manifest, indent=1).encode())
        fsync_dir(p)
        return cls.open(p)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, verify: bool = False) -> CollectionFiles:
        """Open the collection at ``path``: binary codes into RAM, int8 and float32 rows left on disk.

        File sizes are always checked against the manifest; ``verify=True`` also checks every file's
        sha256 (reads everything once). The manifest is validated (``validate_manifest``) and its
        counts checked against the document store. A collection whose folder or document store this
        process cannot write is opened read-only: searches work, writes raise CollectionError.
        """
        p = Path(path)
        dir_writable = os.access(p, os.W_OK)
        read_only = not (dir_writable and os.access(p / DOCS, os.W_OK))
        for _ in range(_RELOAD_ATTEMPTS):
            manifest = _read_manifest(p)
            state = _load_state(p, manifest, verify=verify)
            # immutable: SQLite creates no -wal/-shm files, which a folder it cannot write would refuse
            docs = DocStore(p / DOCS, read_only=read_only, immutable=not dir_writable)
            stored = docs.count_below(int(manifest["next_seq"]))
            if stored >= state.live:
                return cls(p, state, docs)
            docs.close()
            # a concurrent delete purges its rows after committing a newer manifest: look again
            if _read_manifest(p)["generation"] == manifest["generation"]:
                break
        raise CorruptCollectionError(
            f"collection at {p}: the manifest counts {state.live} documents but {DOCS} holds {stored} "
            f"(copied without {DOCS}-wal, or that file left unread on read-only media?)"
        )

    def refresh(self) -> None:
        """Reload the manifest if another process has written to the collection since it was opened."""
        with self._write_lock:  # never put back an older state than a writer of ours installed
            for _ in range(_RELOAD_ATTEMPTS):
                manifest = _read_manifest(self.path)
                if manifest["generation"] <= self._state.manifest["generation"]:
                    return
                try:
                    self._state = _load_state(self.path, manifest, verify=False)
                    return
                except (FileNotFoundError, CorruptCollectionError):
                    # another process committed again and removed files of the manifest just read:
                    # only a real fault if the manifest on disk has not moved on since
                    if _read_manifest(self.path)["generation"] == manifest["generation"]:
                        raise
            self._state = _load_state(self.path, _read_manifest(self.path), verify=False)

    def verify(self) -> None:
        """Check every file of the collection against its sha256 in the manifest."""
        _load_state(self.path, _read_manifest(self.path), verify=True)

    # -------------------------------------------------------------- properties

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the manifest (model, dim, precision, ranges, segments, ...)."""
        return json.loads(json.dumps(self._state.manifest))

    @property
    def dim(self) -> int | None:
        """The vectors' dimension; None until the first write of vectors to a collection created without one."""
        dim = self._state.manifest["dim"]
        return None if dim is None else int(dim)

    @property
    def precision(self) -> str:
        return str(self._state.manifest["precision"])

    @property
    def ranges(self) -> np.ndarray | None:
        """The int8 ranges (2, dim), parsed once per state."""
        state = self._state
        if "ranges" not in state.extra:
            r = state.manifest["ranges"]
            state.extra["ranges"] = None if r is None else np.asarray(r, dtype=np.float32)
        return state.extra["ranges"]

    def __len__(self) -> int:
        return self._state.live

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({str(self.path)!r}, documents={len(self)}, dim={self.dim}, precision={self.precision!r})"

    def __contains__(self, doc_id: object) -> bool:
        return bool(self.existing_ids([doc_id]))

    def existing_ids(self, ids: Sequence[object]) -> list[DocId]:
        """The subset of ``ids`` that are live documents of this collection (for resumable indexing)."""
        norm = [normalize_id(i) for i in ids]
        live, _ = _live_seqs(self._state, self._docs, norm)
        return [i for i in norm if i in live]

    def ids(self, filter: dict[str, Any] | None = None) -> list[DocId]:
        """The ids of the live documents in the order they were stored (an overwritten one counts as
        stored anew); with ``filter`` (see ``bitsearch.store.filter_sql``) those whose metadata match.
        For frameworks' filter-only listing, deletion and counting; ``get`` fetches the documents."""
        state = self._state
        where = filter_sql(filter) if filter is not None else ("1", [])
        seqs = np.asarray(self._docs.filter_seqs(where, int(state.manifest["next_seq"])), dtype=np.int64)
        if state.tombstones.size:
            seqs = seqs[~np.isin(seqs, state.tombstones)]
        stored = self._docs.fetch(seqs.tolist(), with_text=False)
        return [stored[s][0] for s in seqs.tolist() if s in stored]  # a row purged meanwhile was deleted

    def get(self, ids: Sequence[object], *, with_vectors: bool = False) -> list[Document | None]:
        """The stored documents for ``ids``, in order: id, text, metadata and, with ``with_vectors``, the
        float32 vector (needs ``keep_float32=True``: int8 rows would only approximate it). An id that is
        not a live document gives None in its place (frameworks' get-by-ids skips those)."""
        norm = [normalize_id(i) for i in _as_list(ids, "ids", "one id per document")]
        state = self._state
        if with_vectors and not state.manifest["keep_float32"]:
            raise InvalidInputError(
                "this collection keeps no float32 rows to return vectors from: create it with keep_float32=True"
            )
        seqs, _ = _live_seqs(state, self._docs, norm)
        wanted = sorted(set(seqs.values()))
        stored = self._docs.fetch(wanted)
        vectors: dict[int, np.ndarray] = {}
        if with_vectors and wanted:
            with_rows = np.setdiff1d(np.asarray(wanted, dtype=np.int64), state.novec)  # the rest have none
            if with_rows.size:
                rows = state.rows_of(with_rows)
                vectors = dict(zip(with_rows.tolist(), state.gather("float32", rows), strict=True))
        out: list[Document | None] = []
        for i in norm:
            seq = seqs.get(i)
            if seq is None:
                out.append(None)
                continue
            doc_id, text, meta = stored[seq]
            out.append(Document(doc_id, text, meta, vectors.get(seq)))
        return out

    # -------------------------------------------------------------- writes

    @contextlib.contextmanager
    def _writing(self) -> Iterator[State]:
        """Hold the thread and process write locks, with the newest state and stale files and rows removed.

        A write that fails before its commit leaves the collection as it was: what it wrote is removed
        at once, and a full disk is reported as such (a CollectionError) rather than as the OS's or
        SQLite's error.
        """
        if self.read_only:
            raise ReadOnlyCollectionError(
                f"the collection at {self.path} is read-only (this process cannot write its folder or {DOCS}): "
                "adding, deleting, compacting and indexing need write access"
            )
        with self._write_lock:
            # O_NOFOLLOW: a planted .lock symlink must not create or touch a file outside the folder
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
            try:
                fd = os.open(self.path / ".lock", flags, 0o644)
            except OSError as exc:
                raise CorruptCollectionError(f"cannot open the lock file of {self.path}: {exc}") from None
            lockfile = os.fdopen(fd, "r+b")
            try:
                fcntl.flock(lockfile, fcntl.LOCK_EX)
                generation = None
                try:
                    self.refresh()
                    state = self._state
                    generation = int(state.manifest["generation"])
                    # files first: removing them needs no space, and frees what SQLite may need next
                    self._remove_unlisted(state.manifest)
                    self._docs.purge_from(state.manifest["next_seq"])  # rows of adds that never committed
                    yield state
                except BaseException as exc:
                    error = self._failed(exc, generation)
                    if error is not None:
                        raise error from exc
                    raise
            finally:
                fcntl.flock(lockfile, fcntl.LOCK_UN)
                lockfile.close()

    def _remove_unlisted(self, m: dict[str, Any]) -> None:
        """Remove what manifest ``m`` does not name: temporary files of writes that never committed,
        and the files earlier commits replaced. Called with the process write lock held; every removal
        goes through ``remove_inside`` (nothing outside the folder, nothing through a symbolic link)."""
        root = self.path
        for pattern in (f".{MANIFEST}.tmp-*", ".tombstones-*.tmp", ".novec-*.tmp", f".{ROTATION}.tmp", ".ann-*.tmp-*"):
            for f in root.glob(pattern):
                remove_inside(root, f)
        if not (m.get("codebook") or {}).get("rotation"):
            remove_inside(root, root / ROTATION)
        listed = {s["name"] for s in m["segments"]}
        for d in (root / "segments").iterdir():
            if d.name not in listed:
                remove_inside(root, d)
        ann = m.get("ann")
        for d in root.glob("ann-*"):
            if ann is None or d.name != ann["dir"]:
                remove_inside(root, d)
        for key in ("tombstones", "novec"):
            listed_file = m.get(key)
            for f in root.glob(f"{key}-*.npy"):
                if listed_file is None or f.name != listed_file["file"]:
                    remove_inside(root, f)

    def _failed(self, exc: BaseException, generation: int | None) -> DiskFullError | None:
        """Remove what a failed write left (best effort); for a full disk, the error to raise instead.

        ``generation`` is the state's when the write began (None: it failed before, writing nothing).
        """
        m = None
        if generation is not None:
            try:
                m = _read_manifest(self.path)
                self._remove_unlisted(m)
            except Exception as cleanup:  # the write's own error is the one to report
                log.warning("could not remove the files of a failed write to %s: %s", self.path, cleanup)
        if not _is_disk_full(exc):
            return None
        if m is not None and generation is not None and int(m["generation"]) == generation:
            outcome = "nothing was changed; free some space and retry"
        else:
            outcome = "the write may have committed; open the collection again to see"
        return DiskFullError(f"no space left on device while writing to the collection at {self.path}: {outcome}")

    def _commit(self, manifest: dict[str, Any]) -> None:
        """Write the new manifest: its rename is the commit of the write."""
        manifest["generation"] = int(manifest["generation"]) + 1
        write_atomic(self.path / MANIFEST, json.dumps(manifest, indent=1).encode())

    def _tidy(self, purge: Sequence[int] = ()) -> None:
        """After a commit: remove the files it replaced and purge the rows it tombstoned.

        Best effort: the commit stands whatever happens here; files are removed by the next write,
        rows of tombstoned documents stay hidden by their tombstones and leave at compaction.
        """
        try:
            self._remove_unlisted(self._state.manifest)
            self._docs.purge_seqs(purge)
        except (OSError, sqlite3.Error, CorruptCollectionError) as exc:
            log.warning("could not tidy the collection at %s after a write: %s", self.path, exc)

    def add(
        self,
        embeddings: np.ndarray | Sequence[Any] | None,
        ids: Sequence[object] | None = None,
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[DocId]:
        """Add documents; returns their ids. Atomic: all are added or (on any error) none.

        ``ids`` are unique str or int (default: consecutive ints from the collection's row counter);
        a duplicate, in the call or already stored, is a DuplicateIdError (``upsert`` replaces stored
        documents instead). ``texts`` and ``metadata`` (JSON objects) are stored with the vectors and
        returned by search.

        Documents without vectors: ``embeddings=None`` stores every document of the call without one
        (their number comes from ``ids``, else ``texts``, else ``metadata``), and a list whose entries
        are vectors or None stores the None ones without. Such documents are counted, filtered, found
        by keyword search, returned by ``get`` (vector None) and deleted like the others, and never
        returned by dense search (nor by hybrid search's dense ranking).

        Limits (InvalidInputError, checked before anything is written): int ids fit SQLite's signed
        64 bits; ids, texts and metadata keys and strings are valid Unicode (no lone surrogates);
        metadata nests at most ``bitsearch.store.MAX_METADATA_DEPTH`` (64) levels, has str keys and
        finite floats.
        """
        return self._write_documents(embeddings, ids, texts, metadata, replace=False)

    def upsert(
        self,
        embeddings: np.ndarray | Sequence[Any] | None,
        ids: Sequence[object],
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[DocId]:
        """Store documents, replacing those whose id is already stored; returns the ids.

        One commit: the replaced documents' old rows are tombstoned and the new rows appended by the
        same manifest write, so a reader (or a crash at any point) sees every document's old version or
        every document's new version, never both or neither. ``ids`` are required and unique within
        the call (DuplicateIdError); the other arguments and limits are ``add``'s.
        """
        if ids is None:
            raise InvalidInputError("upsert needs the documents' ids")
        return self._write_documents(embeddings, ids, texts, metadata, replace=True)

    def _write_documents(
        self,
        embeddings: np.ndarray | Sequence[Any] | None,
        ids: Sequence[object] | None,
        texts: Sequence[str | None] | None,
        metadata: Sequence[dict[str, Any] | None] | None,
        *,
        replace: bool,
    ) -> list[DocId]:
        """``add`` (``replace=False``) or ``upsert``: checks, then a segment for the rows with vectors, the
        list of documents without, docs rows, tombstones of replaced documents, and one commit."""
        emb, has_vec, n = self._check_vectors(embeddings, ids, texts, metadata)
        given_ids: list[DocId] | None = None
        if ids is not None:
            given_ids = [normalize_id(i) for i in _as_list(ids, "ids", "one id per embedding")]
            if len(given_ids) != n:
                raise InvalidInputError(f"got {len(given_ids)} ids for {n} embeddings")
            _check_unique(given_ids)
        texts = _check_payload(texts, n, "texts", _check_text)
        metadata = _check_payload(metadata, n, "metadata", _check_meta)
        with self._writing() as state:
            m = json.loads(json.dumps(state.manifest))
            first_seq = int(m["next_seq"])
            doc_ids: list[DocId] = list(range(first_seq, first_seq + n)) if given_ids is None else given_ids
            existing, stale = _live_seqs(state, self._docs, doc_ids)
            if existing and not replace:
                shown = ", ".join(repr(i) for i in list(existing)[:5])
                raise DuplicateIdError(f"document id(s) already in the collection: {shown} (upsert replaces them)")
            if stale:  # left by a delete that committed before its rows were purged
                self._docs.purge_seqs(list(stale))
            if existing:  # the new rows go in beside the old ones until the commit tombstones those
                self._docs.allow_repeated_ids()
            seqs = np.arange(first_seq, first_seq + n, dtype=np.int64)
            seg_info = None
            if emb is not None:
                if m["dim"] is None:  # the first write of vectors fixes the dimension
                    m["dim"] = int(emb.shape[1])
                ranges = self._calibrate(m, emb)
                if ranges is not None and m["keep_int8"]:
                    _count_clipped(m, emb, ranges)
                name = f"{_take_number(self.path, m):06d}"
                seg_info = self._write_segment(name, emb, seqs[has_vec], m, ranges)
                m["segments"].append(seg_info)
            if not has_vec.all():
                m["novec"] = self._write_seq_list(m, "novec", np.union1d(state.novec, seqs[~has_vec]))
                m["format_version"] = max(int(m["format_version"]), 4)
            old = np.asarray(sorted(existing.values()), dtype=np.int64)
            if old.size:
                tomb = np.union1d(state.tombstones, old).astype(np.int64)
                m["tombstones"] = self._write_seq_list(m, "tombstones", tomb)
            self._docs.insert(first_seq, doc_ids, texts, metadata)
            m["next_seq"] = first_seq + n
            self._commit(m)
            self._state = self._after_write(state, m, seg_info, old)
            if old.size:
                self._tidy(purge=old.tolist())
        return doc_ids

    def _check_vectors(
        self,
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
                    n = len(_as_list(given, name, "one entry per document"))
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
            return check_documents(stacked, self.dim), has_vec, has_vec.size
        emb = check_documents(embeddings, self.dim)
        return emb, np.ones(emb.shape[0], dtype=np.bool_), emb.shape[0]

    def _after_write(self, state: State, m: dict[str, Any], seg_info: dict[str, Any] | None, old: np.ndarray) -> State:
        """The state after a committed add or upsert: the new segment read back, documents without
        vectors and the tombstones of replaced documents taken in."""
        if seg_info is not None and state.manifest["dim"] is None:  # the first vectors: read it all afresh
            return _load_state(self.path, m, verify=False)
        new = _extend_state(state, m, self.path, seg_info) if seg_info is not None else state
        novec = _seq_list(self.path, m, "novec")
        tomb = _seq_list(self.path, m, "tombstones")
        deleted = new.deleted
        old_rows = np.setdiff1d(old, state.novec)  # replaced documents that had a vector
        if old_rows.size:
            deleted = deleted.copy()
            deleted[state.rows_of(old_rows)] = True
        extra = {"ann": new.extra.get("ann")}
        return dataclasses.replace(new, manifest=m, deleted=deleted, tombstones=tomb, novec=novec, extra=extra)

    def _calibrate(self, m: dict[str, Any], emb: np.ndarray) -> np.ndarray | None:
        """The int8 ranges (and the codebook) for a write of ``emb``, calibrated on it when the
        collection has none yet (recorded in ``m``)."""
        ranges = None if m["ranges"] is None else np.asarray(m["ranges"], dtype=np.float32)
        n = emb.shape[0]
        if m["keep_int8"] and ranges is None:
            if n < 100:
                warnings.warn(
                    f"int8 ranges calibrated on only {n} embeddings; pass `ranges` or "
                    "`calibration_embeddings` to Collection.create for stable int8 codes",
                    stacklevel=4,
                )
            ranges = calibrate_ranges(emb)
            m["ranges"] = ranges.tolist()
        if m.get("codes") is not None and m.get("codebook") is None:
            m["codebook"] = _fit_codebook(self.path, m, emb)
            if "pair_thresholds" in m["codebook"]:  # an empty format-2 1.5bit collection gets pair planes
                m["format_version"] = max(int(m["format_version"]), 3)
        return ranges

    def _write_seq_list(self, m: dict[str, Any], key: str, seqs: np.ndarray) -> dict[str, Any]:
        """Write sorted sequence numbers (``key``: "tombstones" or "novec") for the commit of ``m``;
        returns their manifest record."""
        fname = f"{key}-{int(m['generation']) + 1:06d}.npy"
        info = _save_npy(self.path / f".{fname}.tmp", seqs)
        os.replace(self.path / f".{fname}.tmp", self.path / fname)
        fsync_dir(self.path)
        return {"file": fname, "count": int(seqs.size), **info}

    def _write_segment(
        self,
        name: str,
        emb: np.ndarray,
        seqs: np.ndarray,
        manifest: dict[str, Any],
        ranges: np.ndarray | None,
    ) -> dict[str, Any]:
        """Write a segment directory under a temporary name, fsync it, and rename it into place."""
        arrays: dict[str, np.ndarray] = {"seqs.npy": seqs}
        book = _codebook(self.path, manifest)
        if manifest["precision"] == "binary":
            arrays["binary.npy"] = quantize_embeddings(emb, "ubinary") if book is None else book.encode(emb)
        elif manifest["precision"] in LOWBIT:
            assert book is not None
            arrays["codes.npy"] = book.encode_planes(emb) if book.planes else book.encode(emb)
        if manifest["keep_int8"]:
            arrays["int8.npy"] = quantize_embeddings(emb, "int8", ranges=ranges)
        if manifest["keep_float32"]:
            arrays["float32.npy"] = emb.astype(np.float32)
        return self._write_segment_arrays(name, arrays)

    def _write_segment_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        segdir = self.path / "segments"
        tmp = segdir / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        files = {fname: _save_npy(tmp / fname, arr) for fname, arr in arrays.items()}
        fsync_dir(tmp)
        final = segdir / name
        if final.exists():  # names are never reused: renaming onto one could replace a listed segment
            raise CollectionError(f"segment directory {final} already exists")
        os.rename(tmp, final)
        fsync_dir(segdir)
        rows = int(arrays["seqs.npy"].shape[0])
        return {"name": name, "rows": rows, "files": files}

    def delete(self, ids: Sequence[object]) -> int:
        """Delete documents by id (tombstones until ``compact``); returns how many were deleted.

        ``ids``: one id, or a list/tuple/1-d array of them. An unknown or already deleted id is an
        error and nothing is deleted.
        """
        if isinstance(ids, (str, int, np.integer)):
            ids = [ids]
        norm = [normalize_id(i) for i in _as_list(ids, "ids", "the ids to delete")]
        if not norm:
            return 0
        _check_unique(norm)
        with self._writing() as state:
            live, stale = _live_seqs(state, self._docs, norm)
            missing = [i for i in norm if i not in live]
            if missing:
                gone = set(stale.values())
                if missing[0] in gone:
                    raise UnknownIdError(f"document id {missing[0]!r} was already deleted")
                shown = ", ".join(repr(i) for i in missing[:5])
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                raise UnknownIdError(f"unknown document id(s): {shown}{more}")
            seqs = np.asarray([live[i] for i in norm], dtype=np.int64)
            tomb = np.union1d(state.tombstones, seqs).astype(np.int64)
            m = json.loads(json.dumps(state.manifest))
            m["tombstones"] = self._write_seq_list(m, "tombstones", tomb)
            self._commit(m)
            self._state = _load_state(self.path, m, verify=False, reuse=state)
            self._tidy(purge=seqs.tolist())
        return len(norm)

    def compact(self) -> None:
        """Rewrite all segments into one without deleted rows, and drop the tombstones."""
        with self._writing() as state:
            m = json.loads(json.dumps(state.manifest))
            keep = np.flatnonzero(~state.deleted)
            arrays: dict[str, np.ndarray] = {"seqs.npy": state.gather("seqs", keep)}
            # the rows of deleted documents leave the document store before the tombstones that hide
            # them do, so no crash can leave a row that looks live; rows of no segment at all (left so
            # by older releases) go too. Idempotent: a crash before the commit loses nothing visible.
            self._docs.purge_seqs(state.tombstones.tolist())
            novec = state.live_novec
            if self._docs.count_below(int(m["next_seq"])) != keep.size + novec.size:
                stored = np.asarray(self._docs.stored_seqs(int(m["next_seq"])), dtype=np.int64)
                self._docs.purge_seqs(np.setdiff1d(stored, np.union1d(arrays["seqs.npy"], novec)).tolist())
            m["novec"] = self._write_seq_list(m, "novec", novec) if novec.size else None
            m["segments"] = []
            if keep.size:
                if m["precision"] == "binary":
                    nbytes = -(-int(m["dim"]) // 8)
                    assert state.words is not None
                    arrays["binary.npy"] = state.words[keep].view(np.uint8)[:, :nbytes]
                elif _planes(m):
                    assert state.ram_rows is not None and state.words is not None
                    hi = state.words[keep].view(np.uint8)[:, : -(-int(m["dim"]) // 8)]
                    arrays["codes.npy"] = np.concatenate([hi, state.ram_rows[keep]], axis=1)
                elif m["precision"] in LOWBIT:
                    assert state.ram_rows is not None
                    arrays["codes.npy"] = state.ram_rows[keep]
                if m["keep_float32"]:
                    arrays["float32.npy"] = state.gather("float32", keep)
                if m["keep_int8"]:
                    if _recalibrate_int8(m):  # values were clipped: ranges from the kept originals
                        ranges = calibrate_ranges(arrays["float32.npy"])
                        m["ranges"] = ranges.tolist()
                        arrays["int8.npy"] = quantize_embeddings(arrays["float32.npy"], "int8", ranges=ranges)
                        m["int8_clipped"] = [0, int(arrays["int8.npy"].size)]
                    else:
                        arrays["int8.npy"] = state.gather("int8", keep)
                name = f"{_take_number(self.path, m):06d}"
                m["segments"] = [self._write_segment_arrays(name, arrays)]
            m["tombstones"] = None
            old_ann = m.get("ann")
            if old_ann is not None:  # row numbers change: rebuild the index over the new rows
                m["ann"] = None
                if keep.size and state.words is not None:
                    number = _take_number(self.path, m)
                    m["ann"] = self._write_ann(state.words[keep], number, **_ann_params(old_ann))
            self._commit(m)
            self._state = _load_state(self.path, m, verify=False)
            self._tidy()

    # -------------------------------------------------------------- approximate stage 1

    def build_index(self, nlist: int | None = None, nprobe: int = 32, seed: int = 0) -> None:
        """Build an approximate stage 1 (an IVF over the binary codes) for very large collections.

        ``nlist`` lists (default ~4 x sqrt(rows)); searches scan the ``nprobe`` nearest lists (see
        ``search(nprobe=...)``). Rows added later are scanned exactly until the next build;
        ``compact`` rebuilds it. ``drop_index`` goes back to exact search.
        """
        with self._writing() as state:
            m = json.loads(json.dumps(state.manifest))
            if m["precision"] != "binary" or state.words is None:
                raise InvalidInputError("an approximate index needs a binary collection")
            if state.rows == 0:
                raise InvalidInputError("the collection is empty: add documents before building an index")
            if nlist is None:
                nlist = int(min(state.rows, max(1, round(4 * np.sqrt(state.rows)))))
            if nprobe < 1:
                raise InvalidInputError(f"nprobe must be >= 1, got {nprobe}")
            number = _take_number(self.path, m)
            m["ann"] = self._write_ann(state.words, number, nlist=nlist, nprobe=nprobe, seed=seed)
            self._commit(m)
            self._state = _load_state(self.path, m, verify=False)
            self._tidy()

    def drop_index(self) -> None:
        """Remove the approximate index: stage 1 is an exact scan again."""
        with self._writing() as state:
            m = json.loads(json.dumps(state.manifest))
            old = m.get("ann")
            if old is None:
                return
            m["ann"] = None
            self._commit(m)
            self._state = _load_state(self.path, m, verify=False)
            self._tidy()

    def _write_ann(self, words: np.ndarray, number: int, *, nlist: int, nprobe: int, seed: int) -> dict[str, Any]:
        """Train and fill an IVF over ``words`` and write its arrays to ``ann-NNNNNN/`` (atomically)."""
        ivf = BinaryIVF.train(words, int(nlist), seed=int(seed))
        ivf.add(words)
        name = f"ann-{number:06d}"
        tmp = self.path / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        files = {f"{k}.npy": _save_npy(tmp / f"{k}.npy", v) for k, v in ivf.to_arrays().items()}
        fsync_dir(tmp)
        if (self.path / name).exists():  # numbers are never reused: see _take_number
            raise CollectionError(f"index directory {self.path / name} already exists")
        os.rename(tmp, self.path / name)
        fsync_dir(self.path)
        return {"kind": "ivf", "dir": name, "nlist": int(nlist), "nprobe": int(nprobe), "seed": int(seed),
                "rows": int(words.shape[0]), "files": files}  # fmt: skip

    # -------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        """Counts and the bytes each stage holds in RAM and on disk, with compression against float32."""
        state = self._state
        m = state.manifest
        n, dim = state.rows, int(m["dim"] or 0)
        stages: dict[str, dict[str, int]] = {}
        for kind, fname in _ARRAY_FILES.items():
            disk = sum(s["files"][fname]["bytes"] for s in m["segments"] if fname in s["files"])
            present = m["precision"] == kind or m.get(f"keep_{kind}", False)
            if not present:
                continue
            if kind == "binary":
                ram = int(state.words.nbytes) if state.words is not None else 0
            elif m["precision"] == kind and state.ram_rows is not None:
                ram = int(state.ram_rows.nbytes) + (int(state.words.nbytes) if state.words is not None else 0)
            else:
                ram = 0
            stages[kind] = {"ram_bytes": ram, "disk_bytes": int(disk)}
        if m.get("ann") is not None and state.extra.get("ann") is not None:
            stages["ivf"] = {
                "ram_bytes": int(state.extra["ann"].nbytes),
                "disk_bytes": int(sum(f["bytes"] for f in m["ann"]["files"].values())),
            }
        seq_disk = sum(s["files"]["seqs.npy"]["bytes"] for s in m["segments"])
        docs_disk = sum(f.stat().st_size for f in self.path.glob(DOCS + "*"))
        ram = sum(v["ram_bytes"] for v in stages.values()) + int(state.deleted.nbytes)
        disk = sum(v["disk_bytes"] for v in stages.values()) + seq_disk + docs_disk
        float32_bytes = n * dim * 4
        stage1_ram = stages[m["precision"]]["ram_bytes"]
        return {
            "documents": state.live,
            "documents_without_vectors": int(state.live_novec.size),
            "int8_clipped_fraction": _clipped_fraction(m),
            "rows": n,
            "deleted": int(state.tombstones.size),
            "segments": len(state.segments),
            "dim": m["dim"],
            "precision": m["precision"],
            "model": m.get("model"),
            "truncate_dim": m.get("truncate_dim"),
            "stages": stages,
            "ram_bytes": ram,
            "disk_bytes": disk,
            "docs_disk_bytes": docs_disk,
            "float32_bytes": float32_bytes,
            "bytes_per_document_ram": stage1_ram / n if n else 0.0,
            "compression_vs_float32": float32_bytes / stage1_ram if stage1_ram else None,
        }

    def close(self) -> None:
        """Release the document store connection (the memory maps go with the object)."""
        self._docs.close()


# ----------------------------------------------------------------------------- loading


def interrupted_create(path: Path) -> bool:
    """Whether ``path`` holds only what a ``create`` killed before its manifest leaves behind: an
    empty ``segments/``, the new document store, a rotation matrix, temporary files."""
    if not path.is_dir() or (path / MANIFEST).exists() or not (path / "segments").is_dir():
        return False
    if any((path / "segments").iterdir()):
        return False
    names = {"segments", ".lock", DOCS, f"{DOCS}-wal", f"{DOCS}-shm", f"{DOCS}-journal", ROTATION, f".{ROTATION}.tmp"}
    return all(f.name in names or f.name.startswith(f".{MANIFEST}.tmp-") for f in path.iterdir())


def _fit_codebook(path: Path, m: dict[str, Any], emb: np.ndarray) -> dict[str, Any]:
    """Calibrate the collection's codebook on ``emb``; a rotation matrix is written beside the manifest."""
    opts = m["codes"]
    kind = "binary" if m["precision"] == "binary" else m["precision"]
    book = CodeBook.fit(emb, kind, centering=opts["centering"], rotation=opts["rotation"])
    d: dict[str, Any] = book.to_dict()
    d["rotation"] = None
    if book.rotation is not None:
        tmp = path / f".{ROTATION}.tmp"
        info = _save_npy(tmp, book.rotation)
        os.replace(tmp, path / ROTATION)
        fsync_dir(path)
        d["rotation"] = {"file": ROTATION, **info}
    return d


def _codebook(path: Path, m: dict[str, Any]) -> CodeBook | None:
    """The collection's codebook (None for plain sign bits and for int8/float32 collections)."""
    d = m.get("codebook")
    if d is None:
        return None
    rotation = None
    if d.get("rotation"):
        rotation = _load_npy(_inside(path, d["rotation"]["file"]), d["rotation"], verify=True)
        dim = int(m["dim"])
        if rotation.shape != (dim, dim) or not np.isfinite(rotation).all():
            raise CorruptCollectionError(f"{path / ROTATION} is not a finite ({dim}, {dim}) rotation matrix")
    return CodeBook.from_dict(d, rotation)


def _ann_params(ann: dict[str, Any]) -> dict[str, int]:
    return {"nlist": int(ann["nlist"]), "nprobe": int(ann["nprobe"]), "seed": int(ann["seed"])}


def _load_ann(path: Path, m: dict[str, Any]) -> Any:
    """The IVF index named by the manifest (arrays checked against their sizes / checksums)."""
    ann = m.get("ann")
    if ann is None:
        return None
    d = _inside(path, ann["dir"])
    arrays = {f[:-4]: _load_npy(_inside(d, f), info, verify=True) for f, info in ann["files"].items()}
    _check_ivf_arrays(d, arrays, ann, int(m["dim"]))
    try:
        return BinaryIVF.from_arrays(arrays)
    except InvalidInputError as exc:
        raise CorruptCollectionError(f"index {d}: {exc}") from None


def _check_ivf_arrays(d: Path, arrays: dict[str, np.ndarray], ann: dict[str, Any], dim: int) -> None:
    """The index arrays index each other inside compiled loops with no bounds checks: check them first."""
    nlist, n, words = int(ann["nlist"]), int(ann["rows"]), -(-dim // 64)
    expected = {
        "centroids": ((nlist, words), "u"),
        "offsets": ((nlist + 1,), "i"),
        "rows": ((n,), "i"),
        "codes": ((n, words), "u"),
        "means": ((nlist, words * 64), "f"),
    }
    for name, arr in arrays.items():
        shape, kind = expected[name]
        if arr.shape != shape or arr.dtype.kind != kind:
            raise CorruptCollectionError(f"index {d}: {name}.npy has {arr.dtype} {arr.shape}, expected {shape}")
    offsets, rows = arrays["offsets"], arrays["rows"]
    if offsets[0] != 0 or offsets[-1] != n or (np.diff(offsets) < 0).any():
        raise CorruptCollectionError(f"index {d}: offsets.npy does not split {n} rows into {nlist} lists")
    if n and (rows.min() < 0 or rows.max() >= n or np.unique(rows).size != n):
        raise CorruptCollectionError(f"index {d}: rows.npy is not a permutation of its {n} rows")


def _valid_ranges(ranges: object, dim: int) -> np.ndarray:
    r = _check_ranges(ranges, dim).astype(np.float32)
    if not (r[1] > r[0]).all():
        bad = int(np.argmax(~(r[1] > r[0])))
        raise InvalidInputError(
            f"ranges have zero width in dimension {bad}; use calibrate_ranges() for ranges that never do"
        )
    return r


def _check_unique(ids: Sequence[DocId]) -> None:
    if len(set(ids)) != len(ids):
        seen: set[DocId] = set()
        for i in ids:
            if i in seen:
                raise DuplicateIdError(f"document id {i!r} appears more than once in this call")
            seen.add(i)


def _count_clipped(m: dict[str, Any], emb: np.ndarray, ranges: np.ndarray) -> None:
    """Add this write's int8 values outside the ranges (clipped to them) to the manifest's count, and
    warn when more than ``INT8_CLIP_WARN`` of them are: the data have outgrown the calibration."""
    clipped = int(np.count_nonzero((emb < ranges[0]) | (emb > ranges[1])))
    before = m.get("int8_clipped") or [0, 0]
    m["int8_clipped"] = [int(before[0]) + clipped, int(before[1]) + int(emb.size)]
    if clipped > INT8_CLIP_WARN * emb.size:
        fix = (
            "compact() recalibrates them from the kept float32 rows once over 1% of all values are clipped"
            if m["keep_float32"] and not m.get("ranges_given", False)
            else "recreate the collection with wider ranges (or keep_float32=True, which lets compact() recalibrate)"
        )
        warnings.warn(
            f"{clipped / emb.size:.1%} of this write's int8 values lie outside the collection's int8 ranges "
            f"and were clipped (int8 rescoring loses precision on them); {fix}",
            UserWarning,
            stacklevel=4,
        )


def _clipped_fraction(m: dict[str, Any]) -> float | None:
    """The share of int8 values written since the ranges were last calibrated that lay outside them."""
    if not m["keep_int8"]:
        return None
    clipped, total = m.get("int8_clipped") or [0, 0]
    return clipped / total if total else 0.0


def _recalibrate_int8(m: dict[str, Any]) -> bool:
    """Whether ``compact`` recalibrates the int8 ranges: more than ``INT8_CLIP_WARN`` of the values
    written since the last calibration were clipped, the float32 originals are kept to re-encode from,
    and the ranges were calibrated rather than given to ``create``. A few clipped outliers leave the
    ranges (and so the int8 scores) as they are."""
    clipped, total = m.get("int8_clipped") or [0, 0]
    heavy = clipped > INT8_CLIP_WARN * total
    return bool(m["keep_float32"] and heavy and not m.get("ranges_given", False))


def _live_seqs(state: State, docs: DocStore, ids: Sequence[DocId]) -> tuple[dict[DocId, int], dict[int, DocId]]:
    """The live sequence number of each of ``ids`` that is a live document, and the tombstoned rows of
    ``ids`` not purged yet (seq -> id). Rows at or above next_seq (a write that never committed, or an
    upsert's new version before its commit) are neither."""
    next_seq = int(state.manifest["next_seq"])
    rows = [(i, s) for i, s in docs.find_rows(ids) if s < next_seq]
    dead = np.isin(np.fromiter((s for _, s in rows), np.int64, len(rows)), state.tombstones)
    live: dict[DocId, int] = {}
    stale: dict[int, DocId] = {}
    for (doc_id, seq), d in zip(rows, dead.tolist(), strict=True):
        if d:
            stale[seq] = doc_id
        else:
            live[doc_id] = seq
    return live, stale


def _check_text(i: int, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidInputError(f"texts[{i}] must be a str or None, got {type(value).__name__}")
    if not value.strip():
        raise InvalidInputError(f"texts[{i}] is empty")
    check_unicode(value, f"texts[{i}]")


def _check_meta(i: int, value: object) -> None:
    if value is not None:
        check_metadata(value, f"metadata[{i}]")


def _check_payload(values: Sequence[Any] | None, n: int, name: str, check: Any) -> list[Any] | None:
    if values is None:
        return None
    vals = _as_list(values, name, "one entry per embedding")
    if len(vals) != n:
        raise InvalidInputError(f"got {len(vals)} {name} for {n} embeddings")
    for i, v in enumerate(vals):
        check(i, v)
    return vals


# ----------------------------------------------------------------------------- manifest validation
#
# A collection directory may come from someone else: every value of its manifest is checked here, once,
# when it is read, so that the code after it can index ``m["..."]`` and trust types, ranges and names.
# Names become paths only through ``_inside``: plain names of the format's own patterns, never "..",
# a separator or an absolute path.

_SEGMENT_NAME = re.compile(r"\d{6}")
_ANN_DIR = re.compile(r"ann-(\d{6})")
_TOMBSTONE_FILE = re.compile(r"tombstones-\d{6}\.npy")
_NOVEC_FILE = re.compile(r"novec-\d{6}\.npy")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SEGMENT_FILES = frozenset({"seqs.npy", *_ARRAY_FILES.values()})
_ANN_FILES = ("centroids.npy", "offsets.npy", "rows.npy", "codes.npy")  # and optionally means.npy
_MAX_INT = 2**63 - 1  # counters and sizes are int64 on disk and in SQLite
_MAX_DIM = 1 << 20


class _ManifestCheck:
    """Checks values of one manifest, raising CorruptCollectionError that names the file and the field."""

    def __init__(self, mpath: Path) -> None:
        self.mpath = mpath

    def fail(self, msg: str) -> NoReturn:
        raise CorruptCollectionError(f"{self.mpath}: {msg}")

    def integer(self, value: object, name: str, minimum: int = 0, maximum: int = _MAX_INT) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            self.fail(f"{name} must be an integer from {minimum} to {maximum}, got {value!r}")
        return value

    def boolean(self, value: object, name: str) -> bool:
        if not isinstance(value, bool):
            self.fail(f"{name} must be true or false, got {value!r}")
        return value

    def mapping(self, value: object, name: str, required: Sequence[str] = ()) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(f"{name} must be an object, got {type(value).__name__}")
        missing = [k for k in required if k not in value]
        if missing:
            self.fail(f"{name} lacks {', '.join(missing)}")
        return value

    def floats(self, value: object, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A finite float array of exactly ``shape`` (nested JSON lists of numbers)."""
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            self.fail(f"{name} must be an array of numbers of shape {shape}")
        if arr.shape != shape:
            self.fail(f"{name} must have shape {shape}, got {arr.shape}")
        if not np.isfinite(arr).all():
            self.fail(f"{name} contains NaN or infinity")
        return arr

    def name(self, value: object, field: str, pattern: re.Pattern[str], what: str) -> str:
        """A plain file or folder name matching the format's own ``pattern``."""
        if not isinstance(value, str) or not pattern.fullmatch(value):
            self.fail(f"{field} {value!r} is not a valid {what} name")
        return value

    def file_info(self, value: object, name: str) -> dict[str, Any]:
        """A file's {bytes, sha256} record."""
        info = self.mapping(value, name, ("bytes", "sha256"))
        self.integer(info["bytes"], f"{name}.bytes")
        if not isinstance(info["sha256"], str) or not _SHA256.fullmatch(info["sha256"]):
            self.fail(f"{name}.sha256 must be 64 lowercase hex digits, got {info['sha256']!r}")
        return info


def validate_manifest(m: dict[str, Any], mpath: Path) -> None:
    """Check every field of a parsed manifest (types, ranges, names, counts), or raise CorruptCollectionError.

    The file checks against these values (sizes, checksums, shapes, sequence numbers) come when the
    files are loaded; this makes sure nothing read from the manifest can name a path outside the
    collection or reach the code as a type or value it does not expect.
    """
    c = _ManifestCheck(mpath)
    required = (
        "dim", "precision", "keep_int8", "keep_float32", "ranges", "segments", "tombstones",
        "next_seq", "next_segment", "generation",
    )  # fmt: skip
    c.mapping(m, "the manifest", required)
    version = m.get("format_version")
    version = version if isinstance(version, int) and not isinstance(version, bool) else 0
    if m["dim"] is None:  # format 4: left to the first write of vectors, so nothing may depend on it yet
        if version < 4:
            c.fail(f"dim is null, which needs format_version 4, got {m.get('format_version')!r}")
        for key in ("ranges", "codebook", "ann"):
            if m.get(key) is not None:
                c.fail(f"dim is null but the manifest has {key}")
        dim = 0
    else:
        dim = c.integer(m["dim"], "dim", 1, _MAX_DIM)
    precision = m["precision"]
    if precision not in STAGE1_PRECISIONS:
        c.fail(f"unknown precision {precision!r}; expected one of {', '.join(STAGE1_PRECISIONS)}")
    keep = {kind: c.boolean(m[f"keep_{kind}"], f"keep_{kind}") for kind in ("int8", "float32")}
    if precision in keep and not keep[precision]:
        c.fail(f"a {precision} collection must have keep_{precision} true")
    for key in ("generation", "next_seq", "next_segment"):
        c.integer(m[key], key)
    if m.get("model") is not None:
        c.mapping(m["model"], "model")
    if m.get("truncate_dim") is not None:
        c.integer(m["truncate_dim"], "truncate_dim", 1, _MAX_DIM)
    if "keyword_index" in m:
        c.boolean(m["keyword_index"], "keyword_index")
    if "ranges_given" in m:
        c.boolean(m["ranges_given"], "ranges_given")
    if m.get("int8_clipped") is not None:
        clip = m["int8_clipped"]
        if not isinstance(clip, list) or len(clip) != 2:
            c.fail(f"int8_clipped must be [clipped, total], got {clip!r}")
        c.integer(clip[1], "int8_clipped[1]")
        c.integer(clip[0], "int8_clipped[0]", 0, clip[1])
    if m.get("stage1") is not None and (precision != "binary" or m["stage1"] not in STAGE1_MODES):
        c.fail(f"stage1 {m['stage1']!r} is not one of {', '.join(STAGE1_MODES)} for a binary collection")
    segments = m["segments"]
    if not isinstance(segments, list):
        c.fail("segments must be a list")
    total = _validate_segments(c, m, segments)
    if m["dim"] is None and total:
        c.fail("dim is null but segments hold rows")
    if total > m["next_seq"]:
        c.fail(f"next_seq {m['next_seq']} is below the {total} rows of the segments")
    if m["ranges"] is not None:
        r = c.floats(m["ranges"], "ranges", (2, dim))
        if not (r[1] > r[0]).all():
            c.fail(f"ranges have max <= min in dimension {int(np.argmax(~(r[1] > r[0])))}")
    elif keep["int8"] and total:
        c.fail("ranges are missing, and the segments hold int8 rows")
    _validate_codes(c, m, dim, precision, total)
    novec = 0
    if m.get("novec") is not None:
        if version < 4:
            c.fail(f"documents without vectors (novec) need format_version 4, got {m.get('format_version')!r}")
        t = c.file_info(m["novec"], "novec")
        c.mapping(t, "novec", ("file", "count"))
        c.name(t["file"], "novec.file", _NOVEC_FILE, "novec file")
        novec = c.integer(t["count"], "novec.count", 1, m["next_seq"])
        if total + novec > m["next_seq"]:
            c.fail(f"next_seq {m['next_seq']} is below the {total} rows and {novec} documents without vectors")
    t = m["tombstones"]
    if t is not None:
        t = c.file_info(t, "tombstones")
        c.mapping(t, "tombstones", ("file", "count"))
        c.name(t["file"], "tombstones.file", _TOMBSTONE_FILE, "tombstone file")
        c.integer(t["count"], "tombstones.count", 0, total + novec)
    if m.get("ann") is not None:
        _validate_ann(c, m, precision, total)


def _validate_segments(c: _ManifestCheck, m: dict[str, Any], segments: list[Any]) -> int:
    """Check the segment list against the collection's settings; returns the total number of rows."""
    expected = {"seqs.npy", _ARRAY_FILES[m["precision"]]}
    expected |= {f"{kind}.npy" for kind in ("int8", "float32") if m[f"keep_{kind}"]}
    seen: set[str] = set()
    total = 0
    for i, info in enumerate(segments):
        where = f"segments[{i}]"
        c.mapping(info, where, ("name", "rows", "files"))
        name = c.name(info["name"], f"{where}.name", _SEGMENT_NAME, "segment")
        if name in seen:
            c.fail(f"segment {name} is listed twice")
        seen.add(name)
        if int(name) >= m["next_segment"]:
            c.fail(f"segment {name} is not below next_segment {m['next_segment']}")
        total += c.integer(info["rows"], f"{where}.rows")
        files = c.mapping(info["files"], f"{where}.files")
        unknown = sorted(str(f) for f in files if f not in _SEGMENT_FILES)
        if unknown:
            c.fail(f"{where}.files names unknown files {unknown}; known: {sorted(_SEGMENT_FILES)}")
        if set(files) != expected:
            c.fail(f"segment {name} has files {sorted(files)}; this collection's segments hold {sorted(expected)}")
        for fname, finfo in files.items():
            c.file_info(finfo, f"{where}.files[{fname!r}]")
    return total


def _validate_codes(c: _ManifestCheck, m: dict[str, Any], dim: int, precision: str, total: int) -> None:
    """The code options and the fitted codebook (thresholds, levels, offset, rotation, pairs)."""
    codes = m.get("codes")
    if codes is not None:
        if precision not in ("binary", *LOWBIT):
            c.fail(f"codes options apply to binary, 1.5bit and 2bit collections, not {precision}")
        c.mapping(codes, "codes", ("centering", "rotation"))
        c.boolean(codes["centering"], "codes.centering")
        if not isinstance(codes["rotation"], bool):
            c.integer(codes["rotation"], "codes.rotation")
        if "query_bits" in codes:
            c.integer(codes["query_bits"], "codes.query_bits", 1, 8)
    book = m.get("codebook")
    if book is None:
        if precision in LOWBIT and total:
            c.fail(f"a {precision} collection with rows needs a codebook")
        return
    if codes is None:
        c.fail("a codebook without codes options")
    c.mapping(book, "codebook", ("kind", "thresholds", "levels"))
    if book["kind"] != precision:
        c.fail(f"codebook kind {book['kind']!r} differs from the precision {precision!r}")
    pairs = "pair_thresholds" in book or "pair_scale" in book
    if pairs:
        if precision != "1.5bit":
            c.fail("pair thresholds belong to 1.5bit codebooks only")
        c.floats(book.get("pair_scale"), "codebook.pair_scale", (dim,))
        c.floats(book.get("pair_thresholds"), "codebook.pair_thresholds", (-(-dim // 2),))
        if book.get("layout", "sign+pairs") != "sign+pairs":
            c.fail(f"unknown codebook layout {book['layout']!r}")
    base = 4 if pairs else CODE_KINDS[precision][0]
    c.floats(book["thresholds"], "codebook.thresholds", (1 if pairs else base - 1, dim))
    c.floats(book["levels"], "codebook.levels", (base, dim))
    if book.get("offset") is not None:
        c.floats(book["offset"], "codebook.offset", (dim,))
    if book.get("rotation") is not None:
        rot = c.file_info(book["rotation"], "codebook.rotation")
        c.mapping(rot, "codebook.rotation", ("file",))
        if rot["file"] != ROTATION:
            c.fail(f"codebook.rotation.file {rot['file']!r} is not {ROTATION!r}")


def _validate_ann(c: _ManifestCheck, m: dict[str, Any], precision: str, total: int) -> None:
    """The approximate index record: its folder name, parameters, row count and files."""
    ann = c.mapping(m["ann"], "ann", ("dir", "nlist", "nprobe", "seed", "rows", "files"))
    if precision != "binary":
        c.fail("an approximate index exists for binary collections only")
    if ann.get("kind", "ivf") != "ivf":
        c.fail(f"unknown index kind {ann['kind']!r}")
    c.name(ann["dir"], "ann.dir", _ANN_DIR, "index folder")
    # <=: compact() has numbered its rebuilt index with the new next_segment itself
    if int(ann["dir"][4:]) > m["next_segment"]:
        c.fail(f"index folder {ann['dir']} is above next_segment {m['next_segment']}")
    c.integer(ann["nlist"], "ann.nlist", 1)
    c.integer(ann["nprobe"], "ann.nprobe", 1)
    c.integer(ann["seed"], "ann.seed", 0, 2**32 - 1)
    c.integer(ann["rows"], "ann.rows", 0, total)
    files = c.mapping(ann["files"], "ann.files")
    names = set(files)
    if not set(_ANN_FILES) <= names <= {*_ANN_FILES, "means.npy"}:
        c.fail(f"ann.files must be {list(_ANN_FILES)} (and optionally means.npy), got {sorted(map(str, names))}")
    for fname, finfo in files.items():
        c.file_info(finfo, f"ann.files[{fname!r}]")


def _inside(root: Path, *names: str) -> Path:
    """``root / names...`` for plain names only (no separator, "..", "." or empty name)."""
    for name in names:
        if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name:
            raise CorruptCollectionError(f"{name!r} is not a plain file name inside the collection at {root}")
        if os.sep != "/" and os.sep in name:  # pragma: no cover - POSIX only today
            raise CorruptCollectionError(f"{name!r} is not a plain file name inside the collection at {root}")
    return root.joinpath(*names)


def _check_layout(path: Path, m: dict[str, Any]) -> None:
    """Refuse a collection whose own folders are symbolic links (deleting in them would reach elsewhere)."""
    dirs = [_inside(path, "segments")]
    dirs += [_inside(path, "segments", s["name"]) for s in m["segments"]]
    if m.get("ann") is not None:
        dirs.append(_inside(path, m["ann"]["dir"]))
    for d in dirs:
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            continue  # a missing folder is reported when its files are loaded
        if stat.S_ISLNK(st.st_mode):
            raise CorruptCollectionError(f"{d} is a symbolic link: a collection's folders must be real folders")
        if not stat.S_ISDIR(st.st_mode):
            raise CorruptCollectionError(f"{d} is not a folder")


def remove_inside(root: Path, target: Path) -> None:
    """Delete ``target`` (a file or a folder tree) of the collection at ``root``, and nothing else.

    Refuses, with CorruptCollectionError, a path that is not below ``root``, one reached through a
    symbolic link (any folder between ``root`` and it), and a symbolic link itself; folder trees go
    through ``shutil.rmtree``, which never follows links inside them. A missing target is not an error.
    """
    try:
        rel = target.relative_to(root)
    except ValueError:
        raise CorruptCollectionError(f"refusing to delete {target}: it is outside the collection at {root}") from None
    if not rel.parts or ".." in rel.parts:
        raise CorruptCollectionError(f"refusing to delete {target}: it is not inside the collection at {root}")
    real_root = Path(os.path.realpath(root))
    if Path(os.path.realpath(target.parent)) != real_root / rel.parent:
        raise CorruptCollectionError(f"refusing to delete {target}: a folder on its path is a symbolic link")
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise CorruptCollectionError(f"refusing to delete {target}: it is a symbolic link")
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(target, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)


def _as_list(values: object, name: str, what: str) -> list[Any]:
    """``values`` as a list; a str, bytes, dict, set or non-iterable is an InvalidInputError."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise InvalidInputError(f"{name} must be one-dimensional, got an array of shape {values.shape}")
        return values.tolist()
    if isinstance(values, (str, bytes, dict, set, frozenset)) or not isinstance(values, Iterable):
        raise InvalidInputError(f"{name} must be a list or tuple with {what}, got {type(values).__name__}")
    return list(values)


def _read_manifest(path: Path) -> dict[str, Any]:
    m = read_versioned_json(path, MANIFEST, FORMAT_NAME, FORMAT_VERSION, "collection")
    validate_manifest(m, path / MANIFEST)
    _check_layout(path, m)
    return m


def _load_segment(
    path: Path, info: dict[str, Any], m: dict[str, Any], verify: bool
) -> tuple[Segment, np.ndarray | None]:
    segdir = _inside(path, "segments", info["name"])
    files = info["files"]
    rows = int(info["rows"])
    disk: dict[str, DiskRows | None] = {"int8": None, "float32": None}
    ram: np.ndarray | None = None
    for kind in ("seqs", "binary", "codes", "int8", "float32"):
        fname = f"{kind}.npy"
        if fname not in files:
            if kind == "seqs":
                raise CorruptCollectionError(f"manifest lists no seqs.npy for segment {info['name']}")
            continue
        in_ram = m["precision"] == kind or (kind == "codes" and m["precision"] in LOWBIT)
        fpath = _inside(segdir, fname)
        if in_ram:
            arr = _load_npy(fpath, files[fname], verify=True)
            shape, dtype = arr.shape, arr.dtype
        else:
            _load_npy_check(fpath, files[fname], verify)
            rows_on_disk = DiskRows(fpath)
            shape, dtype = rows_on_disk.shape, rows_on_disk.dtype
        if dtype != _SEGMENT_DTYPES[kind]:  # the compiled scans and pread rows assume these exact types
            raise CorruptCollectionError(f"{fpath} holds {dtype}, expected {np.dtype(_SEGMENT_DTYPES[kind])}")
        width: tuple[int, ...] = ()
        if kind == "binary":
            width = (-(-int(m["dim"]) // 8),)
        elif kind == "codes":
            width = (_codes_width(m),)
        elif kind != "seqs":
            width = (int(m["dim"]),)
        if shape != (rows, *width):
            raise CorruptCollectionError(f"{fpath} has shape {shape}, expected {(rows, *width)}")
        if in_ram:
            ram = arr
        elif kind == "seqs":
            seqs = rows_on_disk
        else:
            disk[kind] = rows_on_disk
    seq_start = None
    if rows:  # sequence numbers are consecutive until a compaction drops rows: then row -> seq is arithmetic
        first, last = seqs.take(np.array([0, rows - 1])).tolist()
        # ascending and below next_seq, or the next add would reuse (and first purge) stored sequence numbers
        if first < 0 or last - first < rows - 1 or last >= int(m["next_seq"]):
            raise CorruptCollectionError(
                f"segment {info['name']} holds sequence numbers {first}..{last}, which do not fit its "
                f"{rows} rows below the manifest's next_seq {m['next_seq']}"
            )
        seq_start = first if last - first == rows - 1 else None
    return Segment(info["name"], rows, seqs, disk["int8"], disk["float32"], seq_start), ram


def _assemble(
    m: dict[str, Any], segments: list[Segment], ram_parts: list[np.ndarray]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Concatenate the stage-1 RAM parts: binary codes as uint64 words, or int8/float32 rows."""
    if m["dim"] is None:  # no vectors yet, and no width to give the empty arrays
        if m["precision"] == "binary":
            return np.zeros((0, 0), np.uint64), None
        if _planes(m):
            return np.zeros((0, 0), np.uint64), np.zeros((0, 0), np.uint8)
        return None, np.zeros((0, 0), {"int8": np.int8, "float32": np.float32}.get(m["precision"], np.uint8))
    if m["precision"] == "binary":
        nbytes = -(-int(m["dim"]) // 8)
        width = -(-nbytes // 8)
        words = np.zeros((sum(s.rows for s in segments), width), dtype=np.uint64)
        pos = 0
        for part in ram_parts:
            words.view(np.uint8)[pos : pos + part.shape[0], :nbytes] = part
            pos += part.shape[0]
        return words, None
    if _planes(m):  # bit planes: the sign-like plane as words for Hamming, the second plane as bytes
        splits = [_split_planes(part, m) for part in ram_parts] or [_split_planes(None, m)]
        return np.concatenate([w for w, _ in splits]), np.concatenate([lo for _, lo in splits])
    dtype = {"int8": np.int8, "float32": np.float32}.get(m["precision"], np.uint8)
    if not ram_parts:
        width = int(m["dim"]) if m["precision"] not in LOWBIT else _codes_width(m)
        return None, np.zeros((0, width), dtype=dtype)
    return None, ram_parts[0] if len(ram_parts) == 1 else np.concatenate(ram_parts)


def _planes(m: dict[str, Any]) -> bool:
    """Whether the low-bit codes are bit planes: 2bit, and 1.5bit but for format 2's packed ternary."""
    book = m.get("codebook")
    return m["precision"] == "2bit" or (m["precision"] == "1.5bit" and (book is None or "pair_thresholds" in book))


def _codes_width(m: dict[str, Any]) -> int:
    """Bytes per row of a low-bit segment's codes.npy (bit planes: the sign-like plane, then the second)."""
    plane = -(-int(m["dim"]) // 8)
    if _planes(m):
        return plane + (plane if m["precision"] == "2bit" else -(-plane // 2))
    return -(-int(m["dim"]) // CODE_KINDS[m["precision"]][1])


def _split_planes(part: np.ndarray | None, m: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Bit-plane rows -> (the sign-like plane as uint64 words, the second plane's bytes)."""
    nbytes = -(-int(m["dim"]) // 8)
    if part is None:
        part = np.zeros((0, _codes_width(m)), np.uint8)
    words = np.zeros((part.shape[0], -(-nbytes // 8)), dtype=np.uint64)
    words.view(np.uint8)[:, :nbytes] = part[:, :nbytes]
    return words, np.ascontiguousarray(part[:, nbytes:])


def _tombstones(path: Path, m: dict[str, Any]) -> np.ndarray:
    """The sorted sequence numbers of deleted rows (a small file, always checksummed)."""
    return _seq_list(path, m, "tombstones")


def _seq_list(path: Path, m: dict[str, Any], key: str) -> np.ndarray:
    """A sorted list of sequence numbers the manifest names under ``key`` ("tombstones": deleted
    documents; "novec": documents stored without a vector), checksummed."""
    t = m.get(key)
    if t is None:
        return np.zeros(0, dtype=np.int64)
    tpath = _inside(path, t["file"])
    arr = _load_npy(tpath, t, verify=True)
    if arr.ndim != 1 or arr.size != t["count"] or arr.dtype.kind not in "iu":
        raise CorruptCollectionError(f"{tpath} does not hold {t['count']} sequence numbers")
    arr = arr.astype(np.int64)
    if arr.size and (arr[0] < 0 or arr[-1] >= int(m["next_seq"]) or (np.diff(arr) <= 0).any()):
        raise CorruptCollectionError(f"{tpath} does not hold distinct sorted sequence numbers below next_seq")
    return arr


def _deleted_mask(segments: Sequence[Segment], tomb: np.ndarray, total: int) -> np.ndarray:
    deleted = np.zeros(total, dtype=np.bool_)
    if tomb.size:
        pos = 0
        for s in segments:
            deleted[pos : pos + s.rows] = np.isin(s.seqs.read_all(), tomb)
            pos += s.rows
    return deleted


def _offsets(segments: Sequence[Segment]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([s.rows for s in segments])]).astype(np.int64)


def _load_state(path: Path, m: dict[str, Any], *, verify: bool, reuse: State | None = None) -> State:
    """Build the in-memory state for manifest ``m``; ``reuse`` shares segments already loaded."""
    if reuse is not None and [s.name for s in reuse.segments] == [s["name"] for s in m["segments"]]:
        tomb = _tombstones(path, m)
        deleted = _deleted_mask(reuse.segments, tomb, reuse.rows)
        extra = {"ann": reuse.extra.get("ann")} if m.get("ann") == reuse.manifest.get("ann") else {}
        if "ann" not in extra:
            extra["ann"] = _load_ann(path, m)
        novec = _seq_list(path, m, "novec")
        return State(m, reuse.segments, reuse.offsets, reuse.words, reuse.ram_rows, deleted, tomb, extra, novec)
    segments, ram_parts = [], []
    for info in m["segments"]:
        seg, ram = _load_segment(path, info, m, verify)
        segments.append(seg)
        if ram is not None:
            ram_parts.append(ram)
    words, ram_rows = _assemble(m, segments, ram_parts)
    tomb = _tombstones(path, m)
    offsets = _offsets(segments)
    deleted = _deleted_mask(segments, tomb, int(offsets[-1]))
    novec = _seq_list(path, m, "novec")
    extra = {"ann": _load_ann(path, m)}
    return State(m, tuple(segments), offsets, words, ram_rows, deleted, tomb, extra, novec)


def _extend_state(state: State, m: dict[str, Any], path: Path, info: dict[str, Any]) -> State:
    """The state after appending one freshly written segment (reads back only that segment)."""
    seg, ram = _load_segment(path, info, m, verify=False)
    segments = (*state.segments, seg)
    words, ram_rows = state.words, state.ram_rows
    if m["precision"] == "binary":
        assert ram is not None
        new_words = as_words(ram)
        words = new_words if words is None or words.shape[0] == 0 else np.concatenate([words, new_words])
    elif _planes(m):
        assert ram is not None and words is not None and ram_rows is not None
        new_words, new_lo = _split_planes(ram, m)
        words, ram_rows = np.concatenate([words, new_words]), np.concatenate([ram_rows, new_lo])
    else:
        assert ram is not None
        ram_rows = ram if ram_rows is None or ram_rows.shape[0] == 0 else np.concatenate([ram_rows, ram])
    deleted = np.concatenate([state.deleted, np.zeros(seg.rows, dtype=np.bool_)])
    extra = {"ann": state.extra.get("ann")}
    return State(m, segments, _offsets(segments), words, ram_rows, deleted, state.tombstones, extra, state.novec)
