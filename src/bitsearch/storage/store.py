"""The on-disk collection: a manifest, immutable segments of codes, tombstones and a document store.

Layout of a collection directory::

    manifest.json            format version, dim, precision, ranges, model, segments + checksums, tombstones
    segments/NNNNNN/         binary.npy or codes.npy (stage-1 codes), int8.npy, float32.npy, seqs.npy
    tombstones-NNNNNN.npy    sorted sequence numbers of deleted rows (until compaction)
    novec-NNNNNN.npy         sorted sequence numbers of documents stored without a vector
    docs.sqlite              seq -> id, text, metadata (``bitsearch.store.DocStore``)

Every write goes to a temporary name, is fsynced, then renamed into place; the manifest's rename is
the single commit point, so a process killed at any moment leaves the previous contents loadable.
Opening loads the stage-1 codes into RAM; int8 and float32 rows stay on disk, read with pread per search.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptCollectionError, DiskFullError, ReadOnlyCollectionError
from ..store import DocId, DocStore, filter_sql, normalize_id
from .loading import load_state
from .manifest import Manifest, read_manifest
from .paths import DOCS, check_layout, remove_inside
from .state import State

__all__ = ["Document", "Store", "failed_write", "is_disk_full", "read_checked"]

log = logging.getLogger(__name__)

_RELOAD_ATTEMPTS = 5  # manifests re-read when a concurrent writer removes files while we load them
_TEMPORARY = (".manifest.json.tmp-*", ".tombstones-*.tmp", ".novec-*.tmp", ".rotation.npy.tmp", ".ann-*.tmp-*")


@dataclass(frozen=True)
class Document:
    """A stored document as ``get`` returns it: id, text, metadata, and the float32 vector when asked for."""

    id: DocId
    text: str | None
    metadata: dict[str, Any] | None
    vector: np.ndarray | None = None


def read_checked(path: Path) -> Manifest:
    """The collection's manifest, validated, with its folders checked (no symbolic links)."""
    m = read_manifest(path)
    check_layout(path, m)
    return m


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` reports a full disk (or quota), from the file system or from SQLite."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc)


def failed_write(store: Store, exc: BaseException, generation: int | None) -> DiskFullError | None:
    """Remove what a failed write left (best effort); for a full disk, the error to raise instead.

    ``generation`` is the state's when the write began (None: it failed before, writing nothing).
    """
    m = None
    if generation is not None:
        try:
            m = read_checked(store.path)
            store.remove_unlisted(m)
        except Exception as cleanup:  # the write's own error is the one to report
            log.warning("could not remove the files of a failed write to %s: %s", store.path, cleanup)
    if not is_disk_full(exc):
        return None
    if m is not None and generation is not None and m.generation == generation:
        outcome = "nothing was changed; free some space and retry"
    else:
        outcome = "the write may have committed; open the collection again to see"
    return DiskFullError(f"no space left on device while writing to the collection at {store.path}: {outcome}")


class Store:
    """A collection folder: its snapshots (``state``), its document store and every write to them."""

    def __init__(self, path: Path, state: State, docs: DocStore) -> None:
        self.path = path
        self.state = state
        self.docs = docs
        self.write_lock = threading.RLock()
        self.read_only = docs.read_only  # writes need write access to the folder and the document store

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, verify: bool = False) -> Store:
        """Open the collection at ``path`` (see ``Collection.open``)."""
        p = Path(path)
        dir_writable = os.access(p, os.W_OK)
        read_only = not (dir_writable and os.access(p / DOCS, os.W_OK))
        for _ in range(_RELOAD_ATTEMPTS):
            manifest = read_checked(p)
            state = load_state(p, manifest, verify=verify)
            # immutable: SQLite creates no -wal/-shm files, which a folder it cannot write would refuse
            docs = DocStore(p / DOCS, read_only=read_only, immutable=not dir_writable)
            stored = docs.count_below(manifest.next_seq)
            if stored >= state.live:
                return cls(p, state, docs)
            docs.close()
            # a concurrent delete purges its rows after committing a newer manifest: look again
            if read_checked(p).generation == manifest.generation:
                break
        raise CorruptCollectionError(
            f"collection at {p}: the manifest counts {state.live} documents but {DOCS} holds {stored} "
            f"(copied without {DOCS}-wal, or that file left unread on read-only media?)"
        )

    def refresh(self) -> None:
        """Reload the manifest if another process has written to the collection since it was opened."""
        with self.write_lock:  # never put back an older state than a writer of ours installed
            for _ in range(_RELOAD_ATTEMPTS):
                manifest = read_checked(self.path)
                if manifest.generation <= self.state.manifest.generation:
                    return
                try:
                    self.state = load_state(self.path, manifest, verify=False)
                    return
                except (FileNotFoundError, CorruptCollectionError):
                    # another process committed again and removed files of the manifest just read:
                    # only a real fault if the manifest on disk has not moved on since
                    if read_checked(self.path).generation == manifest.generation:
                        raise
            self.state = load_state(self.path, read_checked(self.path), verify=False)

    def verify(self) -> None:
        """Check every file of the collection against its sha256 in the manifest."""
        load_state(self.path, read_checked(self.path), verify=True)

    def close(self) -> None:
        """Release the document store connection."""
        self.docs.close()

    # -------------------------------------------------------------- reads

    def live_seqs(self, ids: Sequence[DocId]) -> tuple[dict[DocId, int], dict[int, DocId]]:
        """The live sequence number of each of ``ids`` that is a live document, and the tombstoned rows of
        ``ids`` not purged yet (seq -> id). Rows at or above next_seq (a write that never committed, or an
        upsert's new version before its commit) are neither."""
        state = self.state
        next_seq = state.manifest.next_seq
        rows = [(i, s) for i, s in self.docs.find_rows(ids) if s < next_seq]
        dead = np.isin(np.fromiter((s for _, s in rows), np.int64, len(rows)), state.tombstones)
        live: dict[DocId, int] = {}
        stale: dict[int, DocId] = {}
        for (doc_id, seq), d in zip(rows, dead.tolist(), strict=True):
            if d:
                stale[seq] = doc_id
            else:
                live[doc_id] = seq
        return live, stale

    def ids(self, filter: dict[str, Any] | None = None) -> list[DocId]:
        """The ids of the live documents in storage order, those whose metadata match ``filter`` if given."""
        state = self.state
        where = filter_sql(filter) if filter is not None else ("1", [])
        seqs = np.asarray(self.docs.filter_seqs(where, state.manifest.next_seq), dtype=np.int64)
        if state.tombstones.size:
            seqs = seqs[~np.isin(seqs, state.tombstones)]
        stored = self.docs.fetch(seqs.tolist(), with_text=False)
        return [stored[s][0] for s in seqs.tolist() if s in stored]  # a row purged meanwhile was deleted

    def get(self, ids: list[DocId], with_vectors: bool) -> list[Document | None]:
        """The stored documents for normalized ``ids`` (see ``Collection.get``)."""
        state = self.state
        seqs, _ = self.live_seqs(ids)
        wanted = sorted(set(seqs.values()))
        stored = self.docs.fetch(wanted)
        vectors: dict[int, np.ndarray] = {}
        if with_vectors and wanted:
            with_rows = np.setdiff1d(np.asarray(wanted, dtype=np.int64), state.novec)  # the rest have none
            if with_rows.size:
                rows = state.rows_of(with_rows)
                vectors = dict(zip(with_rows.tolist(), state.gather("float32", rows), strict=True))
        out: list[Document | None] = []
        for i in ids:
            seq = seqs.get(i)
            if seq is None:
                out.append(None)
                continue
            doc_id, text, meta = stored[seq]
            out.append(Document(doc_id, text, meta, vectors.get(seq)))
        return out

    def existing_ids(self, ids: Sequence[object]) -> list[DocId]:
        """The subset of ``ids`` that are live documents (for resumable indexing)."""
        norm = [normalize_id(i) for i in ids]
        live, _ = self.live_seqs(norm)
        return [i for i in norm if i in live]

    # -------------------------------------------------------------- writes

    @contextlib.contextmanager
    def writing(self) -> Iterator[State]:
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
        with self.write_lock:
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
                    state = self.state
                    generation = state.manifest.generation
                    # files first: removing them needs no space, and frees what SQLite may need next
                    self.remove_unlisted(state.manifest)
                    self.docs.purge_from(state.manifest.next_seq)  # rows of adds that never committed
                    yield state
                except BaseException as exc:
                    error = failed_write(self, exc, generation)
                    if error is not None:
                        raise error from exc
                    raise
            finally:
                fcntl.flock(lockfile, fcntl.LOCK_UN)
                lockfile.close()

    def remove_unlisted(self, m: Manifest) -> None:
        """Remove what manifest ``m`` does not name: temporary files of writes that never committed,
        and the files earlier commits replaced. Called with the process write lock held; every removal
        goes through ``remove_inside`` (nothing outside the folder, nothing through a symbolic link)."""
        root = self.path
        for pattern in _TEMPORARY:
            for f in root.glob(pattern):
                remove_inside(root, f)
        if not (m.codebook or {}).get("rotation"):
            remove_inside(root, root / "rotation.npy")
        listed = {s["name"] for s in m.segments}
        for d in (root / "segments").iterdir():
            if d.name not in listed:
                remove_inside(root, d)
        for d in root.glob("ann-*"):
            if m.ann is None or d.name != m.ann["dir"]:
                remove_inside(root, d)
        for key, record in (("tombstones", m.tombstones), ("novec", m.novec)):
            for f in root.glob(f"{key}-*.npy"):
                if record is None or f.name != record["file"]:
                    remove_inside(root, f)

    def commit(self, manifest: Manifest) -> Manifest:
        """Write the next generation of the manifest: its rename is the commit of the write."""
        m = manifest.replace(generation=manifest.generation + 1)
        m.write(self.path)
        return m

    def tidy(self, purge: Sequence[int] = ()) -> None:
        """After a commit: remove the files it replaced and purge the rows it tombstoned.

        Best effort: the commit stands whatever happens here; files are removed by the next write,
        rows of tombstoned documents stay hidden by their tombstones and leave at compaction.
        """
        try:
            self.remove_unlisted(self.state.manifest)
            self.docs.purge_seqs(purge)
        except (OSError, sqlite3.Error, CorruptCollectionError) as exc:
            log.warning("could not tidy the collection at %s after a write: %s", self.path, exc)

    # -------------------------------------------------------------- stats

    def stats(self) -> dict[str, Any]:
        """Counts and the bytes each stage holds in RAM and on disk, with compression against float32."""
        state = self.state
        m = state.manifest
        codec = state.codec
        n, dim = state.rows, int(m.dim or 0)

        def disk_bytes(fname: str) -> int:
            return int(sum(s["files"][fname]["bytes"] for s in m.segments if fname in s["files"]))

        stages: dict[str, dict[str, int]] = {}
        codes_file = codec.codes_file or f"{codec.keeps}.npy"
        stages[codec.name] = {"ram_bytes": codec.ram_bytes(state), "disk_bytes": disk_bytes(codes_file)}
        for kind, kept in (("int8", m.keep_int8), ("float32", m.keep_float32)):
            if kept and kind not in stages:
                stages[kind] = {"ram_bytes": 0, "disk_bytes": disk_bytes(f"{kind}.npy")}
        if m.ann is not None and state.ann is not None:
            ann_disk = int(sum(f["bytes"] for f in m.ann["files"].values()))
            stages["ivf"] = {"ram_bytes": int(state.ann.nbytes), "disk_bytes": ann_disk}
        docs_disk = sum(f.stat().st_size for f in self.path.glob(DOCS + "*"))
        ram = sum(v["ram_bytes"] for v in stages.values()) + int(state.deleted.nbytes)
        disk = sum(v["disk_bytes"] for v in stages.values()) + disk_bytes("seqs.npy") + docs_disk
        float32_bytes = n * dim * 4
        stage1_ram = stages[codec.name]["ram_bytes"]
        clipped, total = m.int8_clipped or (0, 0)
        return {
            "documents": state.live,
            "documents_without_vectors": int(state.live_novec.size),
            "int8_clipped_fraction": (clipped / total if total else 0.0) if m.keep_int8 else None,
            "rows": n,
            "deleted": int(state.tombstones.size),
            "segments": len(state.segments),
            "dim": m.dim,
            "precision": m.precision,
            "model": m.model,
            "truncate_dim": m.truncate_dim,
            "stages": stages,
            "ram_bytes": ram,
            "disk_bytes": disk,
            "docs_disk_bytes": docs_disk,
            "float32_bytes": float32_bytes,
            "bytes_per_document_ram": stage1_ram / n if n else 0.0,
            "compression_vs_float32": float32_bytes / stage1_ram if stage1_ram else None,
        }
