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
import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import (
    CollectionError,
    CorruptCollectionError,
    DuplicateIdError,
    FormatVersionError,
    InvalidInputError,
    UnknownIdError,
)
from .kernels import as_words, pread_rows
from .quantize import CODE_KINDS, CodeBook, _check_ranges, calibrate_ranges, check_embeddings, quantize_embeddings
from .store import DocId, DocStore, check_metadata, check_unicode, normalize_id

__all__ = ["FORMAT_VERSION", "STAGE1_PRECISIONS", "CollectionFiles"]

log = logging.getLogger(__name__)

# 1: sign bits / int8 / float32 stage 1.  2: adds 1.5bit / 2bit codes, codebooks, stage1 choice.
# 3: 1.5bit as a sign plane + one bit per pair of dimensions (format 2's was packed ternary).
# A new collection gets the lowest version that describes it, so older releases still open all
# but the new 1.5bit ones, and refuse those rather than misread them.
FORMAT_VERSION = 3
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
_HASH_BLOCK = 1 << 22
_FD_LOCK = threading.Lock()
_RELOAD_ATTEMPTS = 5  # manifests re-read when a concurrent writer removes files while we load them


# ----------------------------------------------------------------------------- atomic file helpers


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a fsynced temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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
        """Every row, read into memory (compaction, tombstone masks)."""
        count = int(np.prod(self.shape, dtype=np.int64))
        return np.fromfile(self.path, dtype=self.dtype, count=count, offset=self.offset).reshape(self.shape)

    def _fd(self) -> int:
        """A read-only descriptor, opened on first use and kept: a snapshot whose files a compaction
        has since removed can still finish reading them."""
        fd = self._fd_cache
        if fd is None:
            with _FD_LOCK:
                if self._fd_cache is None:
                    self._fd_cache = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                fd = self._fd_cache
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
    global row number with one compiled loop of ``pread`` calls (``kernels.pread_rows``).

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

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def live(self) -> int:
        return self.rows - int(self.tombstones.size)

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
            width = () if kind == "seqs" else (int(self.manifest["dim"]),)
            return np.empty((0, *width), dtype=dtype)
        return self.row_files(kind).take(rows)

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

    # -------------------------------------------------------------- create / open

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        dim: int,
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
        is opened instead (its settings must match). ``keyword_index`` keeps a BM25 (SQLite FTS5) index
        of the texts for keyword and hybrid search.
        """
        p = Path(path)
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
            if m["dim"] != dim or m["precision"] != precision:
                raise CollectionError(
                    f"existing collection at {p} has dim {m['dim']} and precision {m['precision']!r}, "
                    f"not {dim} and {precision!r}"
                )
            return col
        if p.exists() and any(p.iterdir()):
            raise CollectionError(f"{p} exists and is not an empty directory or a collection")
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
        if ranges is not None:
            ranges = _valid_ranges(ranges, dim)
        elif calibration_embeddings is not None:
            ranges = calibrate_ranges(check_embeddings(calibration_embeddings, dim, name="calibration_embeddings"))
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION if precision == "1.5bit" else 2,
            "dim": dim,
            "precision": precision,
            "keep_int8": keep_int8,
            "keep_float32": keep_float32,
            "ranges": None if ranges is None else np.asarray(ranges, dtype=np.float32).tolist(),
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
            cal = check_embeddings(calibration_embeddings, dim, name="calibration_embeddings")
            manifest["codebook"] = _fit_codebook(p, manifest, cal)
        _write_atomic(p / MANIFEST, json.dumps(manifest, indent=1).encode())
        _fsync_dir(p)
        return cls.open(p)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, verify: bool = False) -> CollectionFiles:
        """Open the collection at ``path``: binary codes into RAM, int8 and float32 rows left on disk.

        File sizes are always checked against the manifest; ``verify=True`` also checks every file's
        sha256 (reads everything once).
        """
        p = Path(path)
        manifest = _read_manifest(p)
        state = _load_state(p, manifest, verify=verify)
        return cls(p, state, DocStore(p / DOCS))

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
    def dim(self) -> int:
        return int(self._state.manifest["dim"])

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
        found = self._docs.find_existing(norm)
        state = self._state
        live = [i for i in norm if i in found and found[i] < state.manifest["next_seq"]]
        if state.tombstones.size:
            seqs = np.asarray([found[i] for i in live], dtype=np.int64)
            dead = np.isin(seqs, state.tombstones)
            live = [i for i, d in zip(live, dead, strict=True) if not d]
        return live

    # -------------------------------------------------------------- writes

    @contextlib.contextmanager
    def _writing(self) -> Iterator[State]:
        """Hold the thread and process write locks, with the newest state and stale rows purged."""
        with self._write_lock:
            lockfile = open(self.path / ".lock", "a+b")  # noqa: SIM115 - held for the block
            try:
                fcntl.flock(lockfile, fcntl.LOCK_EX)
                self.refresh()
                state = self._state
                # rows of adds that never committed, and segment dirs no manifest lists
                self._docs.purge_from(state.manifest["next_seq"])
                listed = {s["name"] for s in state.manifest["segments"]}
                for d in (self.path / "segments").iterdir():
                    if d.name not in listed:
                        shutil.rmtree(d, ignore_errors=True)
                ann = state.manifest.get("ann")
                for d in self.path.glob("ann-*"):
                    if ann is None or d.name != ann["dir"]:
                        shutil.rmtree(d, ignore_errors=True)
                for d in self.path.glob(".ann-*.tmp-*"):
                    shutil.rmtree(d, ignore_errors=True)
                for f in self.path.glob("tombstones-*.npy"):
                    tomb = state.manifest["tombstones"]
                    if tomb is None or f.name != tomb["file"]:
                        f.unlink(missing_ok=True)
                yield state
            finally:
                fcntl.flock(lockfile, fcntl.LOCK_UN)
                lockfile.close()

    def _commit(self, manifest: dict[str, Any]) -> None:
        manifest["generation"] = int(manifest["generation"]) + 1
        _write_atomic(self.path / MANIFEST, json.dumps(manifest, indent=1).encode())

    def add(
        self,
        embeddings: np.ndarray,
        ids: Sequence[object] | None = None,
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[DocId]:
        """Add documents; returns their ids. Atomic: all are added or (on any error) none.

        ``ids`` are unique str or int (default: consecutive ints from the collection's row counter);
        a duplicate, in the call or already stored, is an error. ``texts`` and ``metadata`` (JSON
        objects) are stored with the vectors and returned by search.

        Limits (InvalidInputError, checked before anything is written): int ids fit SQLite's signed
        64 bits; ids, texts and metadata keys and strings are valid Unicode (no lone surrogates);
        metadata nests at most ``bitsearch.store.MAX_METADATA_DEPTH`` (64) levels, has str keys and
        finite floats.
        """
        emb = check_embeddings(embeddings, self.dim)
        n = emb.shape[0]
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
            existing = self._docs.find_existing(doc_ids)
            if existing:
                stale = [s for s in existing.values() if _is_tombstoned(state, s)]
                if stale:  # left by a delete that committed before its rows were purged
                    self._docs.purge_seqs(stale)
                    existing = {i: s for i, s in existing.items() if s not in set(stale)}
                if existing:
                    shown = ", ".join(repr(i) for i in list(existing)[:5])
                    raise DuplicateIdError(f"document id(s) already in the collection: {shown}")
            ranges = None if m["ranges"] is None else np.asarray(m["ranges"], dtype=np.float32)
            if m["keep_int8"] and ranges is None:
                if n < 100:
                    warnings.warn(
                        f"int8 ranges calibrated on only {n} embeddings; pass `ranges` or "
                        "`calibration_embeddings` to Collection.create for stable int8 codes",
                        stacklevel=2,
                    )
                ranges = calibrate_ranges(emb)
                m["ranges"] = ranges.tolist()
            if m.get("codes") is not None and m.get("codebook") is None:
                m["codebook"] = _fit_codebook(self.path, m, emb)
                if "pair_thresholds" in m["codebook"]:  # an empty format-2 1.5bit collection gets pair planes
                    m["format_version"] = max(int(m["format_version"]), 3)
            name = f"{int(m['next_segment']):06d}"
            seg_info = self._write_segment(name, emb, np.arange(first_seq, first_seq + n, dtype=np.int64), m, ranges)
            self._docs.insert(first_seq, doc_ids, texts, metadata)
            m["segments"].append(seg_info)
            m["next_seq"] = first_seq + n
            m["next_segment"] = int(m["next_segment"]) + 1
            self._commit(m)
            self._state = _extend_state(state, m, self.path, seg_info)
        return doc_ids

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
        _fsync_dir(tmp)
        final = segdir / name
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        _fsync_dir(segdir)
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
            seqs = np.asarray(self._docs.seqs_for(norm), dtype=np.int64)
            dead = np.isin(seqs, state.tombstones)
            if dead.any():
                raise UnknownIdError(f"document id {norm[int(np.argmax(dead))]!r} was already deleted")
            tomb = np.union1d(state.tombstones, seqs).astype(np.int64)
            m = json.loads(json.dumps(state.manifest))
            fname = f"tombstones-{int(m['generation']) + 1:06d}.npy"
            info = _save_npy(self.path / f".{fname}.tmp", tomb)
            os.replace(self.path / f".{fname}.tmp", self.path / fname)
            _fsync_dir(self.path)
            m["tombstones"] = {"file": fname, "count": int(tomb.size), **info}
            old = state.manifest["tombstones"]
            self._commit(m)
            self._state = _load_state(self.path, m, verify=False, reuse=state)
            # after the commit: purge rows and the old tombstone file (a crash here is repaired later)
            self._docs.purge_seqs(seqs.tolist())
            if old is not None:
                (self.path / old["file"]).unlink(missing_ok=True)
        return len(norm)

    def compact(self) -> None:
        """Rewrite all segments into one without deleted rows, and drop the tombstones."""
        with self._writing() as state:
            m = json.loads(json.dumps(state.manifest))
            keep = np.flatnonzero(~state.deleted)
            name = f"{int(m['next_segment']):06d}"
            arrays: dict[str, np.ndarray] = {"seqs.npy": state.gather("seqs", keep)}
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
            if m["keep_int8"]:
                arrays["int8.npy"] = state.gather("int8", keep)
            if m["keep_float32"]:
                arrays["float32.npy"] = state.gather("float32", keep)
            old_segments = [s["name"] for s in m["segments"]]
            old_tomb = m["tombstones"]
            m["segments"] = [self._write_segment_arrays(name, arrays)] if keep.size else []
            m["next_segment"] = int(m["next_segment"]) + 1
            m["tombstones"] = None
            old_ann = m.get("ann")
            if old_ann is not None:  # row numbers change: rebuild the index over the new rows
                m["ann"] = None
                if keep.size and state.words is not None:
                    m["ann"] = self._write_ann(state.words[keep], int(m["next_segment"]), **_ann_params(old_ann))
            self._commit(m)
            self._state = _load_state(self.path, m, verify=False)
            if old_ann is not None:
                shutil.rmtree(self.path / old_ann["dir"], ignore_errors=True)
            if state.tombstones.size:
                self._docs.purge_seqs(state.tombstones.tolist())
            for seg in old_segments:
                shutil.rmtree(self.path / "segments" / seg, ignore_errors=True)
            if old_tomb is not None:
                (self.path / old_tomb["file"]).unlink(missing_ok=True)

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
            old = m.get("ann")
            m["ann"] = self._write_ann(state.words, int(m["next_segment"]), nlist=nlist, nprobe=nprobe, seed=seed)
            m["next_segment"] = int(m["next_segment"]) + 1
            self._commit(m)
            self._state = _load_state(self.path, m, verify=False)
            if old is not None:
                shutil.rmtree(self.path / old["dir"], ignore_errors=True)

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
            shutil.rmtree(self.path / old["dir"], ignore_errors=True)

    def _write_ann(self, words: np.ndarray, number: int, *, nlist: int, nprobe: int, seed: int) -> dict[str, Any]:
        """Train and fill an IVF over ``words`` and write its arrays to ``ann-NNNNNN/`` (atomically)."""
        from .ann import BinaryIVF

        ivf = BinaryIVF.train(words, int(nlist), seed=int(seed))
        ivf.add(words)
        name = f"ann-{number:06d}"
        tmp = self.path / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        files = {f"{k}.npy": _save_npy(tmp / f"{k}.npy", v) for k, v in ivf.to_arrays().items()}
        _fsync_dir(tmp)
        os.rename(tmp, self.path / name)
        _fsync_dir(self.path)
        return {"kind": "ivf", "dir": name, "nlist": int(nlist), "nprobe": int(nprobe), "seed": int(seed),
                "rows": int(words.shape[0]), "files": files}  # fmt: skip

    # -------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        """Counts and the bytes each stage holds in RAM and on disk, with compression against float32."""
        state = self._state
        m = state.manifest
        n, dim = state.rows, int(m["dim"])
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
            "rows": n,
            "deleted": int(state.tombstones.size),
            "segments": len(state.segments),
            "dim": dim,
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
        _fsync_dir(path)
        d["rotation"] = {"file": ROTATION, **info}
    return d


def _codebook(path: Path, m: dict[str, Any]) -> CodeBook | None:
    """The collection's codebook (None for plain sign bits and for int8/float32 collections)."""
    d = m.get("codebook")
    if d is None:
        return None
    rotation = None
    if d.get("rotation"):
        rotation = _load_npy(path / d["rotation"]["file"], d["rotation"], verify=True)
    return CodeBook.from_dict(d, rotation)


def _ann_params(ann: dict[str, Any]) -> dict[str, int]:
    return {"nlist": int(ann["nlist"]), "nprobe": int(ann["nprobe"]), "seed": int(ann["seed"])}


def _load_ann(path: Path, m: dict[str, Any]) -> Any:
    """The IVF index named by the manifest (arrays checked against their sizes / checksums)."""
    ann = m.get("ann")
    if ann is None:
        return None
    from .ann import BinaryIVF

    d = path / ann["dir"]
    arrays = {f[:-4]: _load_npy(d / f, info, verify=True) for f, info in ann["files"].items()}
    return BinaryIVF.from_arrays(arrays)


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


def _is_tombstoned(state: State, seq: int) -> bool:
    t = state.tombstones
    pos = int(np.searchsorted(t, seq))
    return pos < t.size and int(t[pos]) == seq


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
    mpath = path / MANIFEST
    if not path.is_dir():
        raise CollectionError(f"no collection at {path}: directory not found")
    if not mpath.is_file():
        raise CollectionError(f"no collection at {path}: {MANIFEST} not found")
    try:
        m = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptCollectionError(f"{mpath} is not valid JSON: {exc}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT_NAME:
        raise CorruptCollectionError(f"{mpath} is not a bitsearch collection manifest")
    version = m.get("format_version")
    if not isinstance(version, int):
        raise CorruptCollectionError(f"{mpath} has no valid format_version")
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"collection at {path} has format version {version}; this bitsearch reads up to "
            f"{FORMAT_VERSION}: upgrade bitsearch"
        )
    required = ("dim", "precision", "keep_int8", "keep_float32", "segments", "next_seq", "generation")
    missing = [k for k in required if k not in m]
    if missing:
        raise CorruptCollectionError(f"{mpath} lacks {', '.join(missing)}")
    return m


def _load_segment(
    path: Path, info: dict[str, Any], m: dict[str, Any], verify: bool
) -> tuple[Segment, np.ndarray | None]:
    segdir = path / "segments" / info["name"]
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
        fpath = segdir / fname
        if in_ram:
            arr = _load_npy(fpath, files[fname], verify=True)
            shape = arr.shape
        else:
            _load_npy_check(fpath, files[fname], verify)
            rows_on_disk = DiskRows(fpath)
            shape = rows_on_disk.shape
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
        seq_start = first if last - first == rows - 1 else None
    return Segment(info["name"], rows, seqs, disk["int8"], disk["float32"], seq_start), ram


def _assemble(
    m: dict[str, Any], segments: list[Segment], ram_parts: list[np.ndarray]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Concatenate the stage-1 RAM parts: binary codes as uint64 words, or int8/float32 rows."""
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
    t = m.get("tombstones")
    if t is None:
        return np.zeros(0, dtype=np.int64)
    arr = _load_npy(path / t["file"], t, verify=True)
    if arr.ndim != 1 or arr.size != t["count"]:
        raise CorruptCollectionError(f"{path / t['file']} does not hold {t['count']} sequence numbers")
    return arr.astype(np.int64)


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
        return State(m, reuse.segments, reuse.offsets, reuse.words, reuse.ram_rows, deleted, tomb, extra)
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
    return State(m, tuple(segments), offsets, words, ram_rows, deleted, tomb, {"ann": _load_ann(path, m)})


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
    return State(m, segments, _offsets(segments), words, ram_rows, deleted, state.tombstones, extra)
