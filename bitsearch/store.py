"""The document store: a SQLite file mapping each row sequence number to the user's id, text and metadata.

The collection's manifest is the source of truth: rows here whose sequence number the manifest has not
committed (an interrupted ``add``) or has tombstoned are garbage, removed by ``purge_*`` before writes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import CorruptCollectionError, DuplicateIdError, InvalidInputError, UnknownIdError

DocId = str | int

__all__ = ["DocId", "DocStore", "normalize_id"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    seq INTEGER PRIMARY KEY,
    id NOT NULL UNIQUE,
    text TEXT,
    metadata TEXT
);
"""
_CHUNK = 500  # SQLite host parameters per statement stay well under its limit


def normalize_id(value: object) -> DocId:
    """Return a document id as a plain ``str`` or ``int``; anything else is an error."""
    if isinstance(value, bool):
        raise InvalidInputError(f"document ids must be str or int, got bool {value!r}")
    if isinstance(value, str):
        if not value:
            raise InvalidInputError("document ids must not be empty strings")
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise InvalidInputError(f"integer document id {value} does not fit in 64 bits")
        return int(value)
    try:
        import numpy as np

        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.str_):
            return normalize_id(str(value))
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    raise InvalidInputError(f"document ids must be str or int, got {type(value).__name__} {value!r}")


def _chunks(seq: Sequence[Any], n: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


class DocStore:
    """SQLite-backed id/text/metadata storage, safe for one writer and many reader threads."""

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise CorruptCollectionError(f"document store {self.path} is missing")
        self._local = threading.local()
        try:
            con = self._con()
            if create:
                con.executescript(_SCHEMA)
            else:
                con.execute("SELECT seq, id, text, metadata FROM docs LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            raise CorruptCollectionError(f"document store {self.path} is unreadable: {exc}") from None

    def _con(self) -> sqlite3.Connection:
        """One connection per thread (sqlite3 connections must not be shared across threads)."""
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            self._local.con = con
        return con

    def close(self) -> None:
        """Close this thread's connection."""
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    def find_existing(self, ids: Sequence[DocId]) -> dict[DocId, int]:
        """Map each of ``ids`` present in the store to its sequence number."""
        found: dict[DocId, int] = {}
        con = self._con()
        for part in _chunks(list(ids)):
            marks = ",".join("?" * len(part))
            for seq, doc_id in con.execute(f"SELECT seq, id FROM docs WHERE id IN ({marks})", part):
                found[doc_id] = seq
        return found

    def insert(
        self,
        first_seq: int,
        ids: Sequence[DocId],
        texts: Sequence[str | None] | None,
        metadata: Sequence[dict[str, Any] | None] | None,
    ) -> None:
        """Insert rows with sequence numbers first_seq, first_seq+1, ... in one transaction."""
        rows = []
        for i, doc_id in enumerate(ids):
            text = texts[i] if texts is not None else None
            meta = metadata[i] if metadata is not None else None
            rows.append((first_seq + i, doc_id, text, None if meta is None else json.dumps(meta, allow_nan=False)))
        con = self._con()
        try:
            con.execute("BEGIN IMMEDIATE")
            con.executemany("INSERT INTO docs (seq, id, text, metadata) VALUES (?, ?, ?, ?)", rows)
            con.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            con.execute("ROLLBACK")
            raise DuplicateIdError(f"duplicate document id: {exc}") from None
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def seqs_for(self, ids: Sequence[DocId]) -> list[int]:
        """Sequence numbers of ``ids`` in order; an unknown id raises UnknownIdError naming it."""
        found = self.find_existing(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise UnknownIdError(f"unknown document id(s): {shown}{more}")
        return [found[i] for i in ids]

    def fetch(self, seqs: Iterable[int]) -> dict[int, tuple[DocId, str | None, dict[str, Any] | None]]:
        """Map each sequence number to (id, text, metadata)."""
        out: dict[int, tuple[DocId, str | None, dict[str, Any] | None]] = {}
        con = self._con()
        for part in _chunks(sorted({int(s) for s in seqs})):
            marks = ",".join("?" * len(part))
            q = f"SELECT seq, id, text, metadata FROM docs WHERE seq IN ({marks})"
            for seq, doc_id, text, meta in con.execute(q, part):
                out[seq] = (doc_id, text, None if meta is None else json.loads(meta))
        return out

    def purge_from(self, seq: int) -> int:
        """Delete rows with sequence number >= ``seq`` (left by an add that never committed)."""
        con = self._con()
        cur = con.execute("DELETE FROM docs WHERE seq >= ?", (int(seq),))
        return cur.rowcount

    def purge_seqs(self, seqs: Iterable[int]) -> int:
        """Delete the rows with these sequence numbers (tombstoned documents)."""
        con = self._con()
        n = 0
        values = [int(s) for s in seqs]
        con.execute("BEGIN IMMEDIATE")
        try:
            for part in _chunks(values):
                marks = ",".join("?" * len(part))
                n += con.execute(f"DELETE FROM docs WHERE seq IN ({marks})", part).rowcount
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return n

    def count(self) -> int:
        """Number of rows (live or not yet purged)."""
        return int(self._con().execute("SELECT COUNT(*) FROM docs").fetchone()[0])
