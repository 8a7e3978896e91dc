"""The document store: a SQLite file mapping each row sequence number to the user's id, text and metadata.

It also holds the keyword index (SQLite FTS5, Porter stemming, BM25 ranking), kept in step with the
documents by triggers inside the same transactions, and translates metadata filters to SQL.

The collection's manifest is the source of truth: rows here whose sequence number the manifest has not
committed (an interrupted ``add``) or has tombstoned are garbage, removed by ``purge_*`` before writes."""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptCollectionError, DuplicateIdError, InvalidInputError, UnknownIdError
from .filters import field_path
from .keywords import keyword_query, query_phrases, varints
from .values import DocId

__all__ = ["DocStore"]


# An id may have several rows for a moment: an upsert stores a document's new version (above the
# manifest's next_seq, invisible) before its commit tombstones the old one; the manifest says which
# row is live. Stores of older releases declared id UNIQUE: ``allow_repeated_ids`` rebuilds them.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    seq INTEGER PRIMARY KEY,
    id NOT NULL,
    text TEXT,
    metadata TEXT
);
CREATE INDEX IF NOT EXISTS docs_id ON docs(id);
"""
_FTS_TRIGGERS = """
CREATE TRIGGER IF NOT EXISTS docs_fts_insert AFTER INSERT ON docs BEGIN
    INSERT INTO docs_fts(rowid, text) VALUES (new.seq, new.text);
END;
CREATE TRIGGER IF NOT EXISTS docs_fts_delete AFTER DELETE ON docs BEGIN
    INSERT INTO docs_fts(docs_fts, rowid, text) VALUES ('delete', old.seq, old.text);
END;
"""
_FTS_SCHEMA = (
    """
CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(
    text, content='docs', content_rowid='seq', tokenize='porter unicode61 remove_diacritics 2'
);
"""
    + _FTS_TRIGGERS
)
# Lucene's default English stop set: dropped from keyword queries (not from the index), which keeps
# OR-queries off the longest posting lists (3-4x faster on the shared datasets, same NDCG@10).
_CHUNK = 500  # SQLite host parameters per statement stay well under its limit


def _chunks(seq: Sequence[Any], n: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


class DocStore:
    """SQLite-backed id/text/metadata storage, safe for one writer and many reader threads."""

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = False,
        keyword_index: bool = False,
        read_only: bool = False,
        immutable: bool = False,
    ) -> None:
        """Open (or ``create``) the store at ``path``.

        ``read_only`` opens it with SQLite's ``mode=ro`` (read-only media, a copy without write
        permission); ``immutable`` also promises SQLite that nobody changes the file, so it needs no
        -wal/-shm files beside it (a folder it cannot write).
        """
        self.path = Path(path)
        if not create and not self.path.exists():
            raise CorruptCollectionError(f"document store {self.path} is missing")
        self.read_only = read_only or immutable
        self._uri: str | None = None
        if self.read_only:
            self._uri = self.path.absolute().as_uri() + "?mode=ro" + ("&immutable=1" if immutable else "")
        self._local = threading.local()
        try:
            con = self._con()
            if create:
                con.executescript(_SCHEMA)
                if keyword_index:
                    con.executescript(_FTS_SCHEMA)
            else:
                con.execute("SELECT seq, id, text, metadata FROM docs LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            raise CorruptCollectionError(f"document store {self.path} is unreadable: {exc}") from None

    def _con(self) -> sqlite3.Connection:
        """One connection per thread (sqlite3 connections must not be shared across threads)."""
        con = getattr(self._local, "con", None)
        if con is None:
            if self._uri is not None:
                con = sqlite3.connect(self._uri, uri=True, timeout=30, isolation_level=None, check_same_thread=False)
            else:
                con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA cache_size=-16384")  # 16 MiB of pages: texts of recent hits stay parsed
            self._local.con = con
        return con

    def _checkpoint(self, con: sqlite3.Connection) -> None:
        """Copy committed transactions from the -wal file into the database file.

        After each write and on close, so that ``docs.sqlite`` alone (a copy made without its -wal
        file) holds every committed document. PASSIVE never waits for readers or writers; a reader
        still on an older snapshot can leave frames behind, which the next checkpoint copies. A
        checkpoint that cannot run loses nothing (the -wal file still holds the commit), so it never
        fails a write.
        """
        with contextlib.suppress(sqlite3.OperationalError):
            con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def close(self) -> None:
        """Close this thread's connection (after a checkpoint)."""
        con = getattr(self._local, "con", None)
        if con is not None:
            if not self.read_only:
                self._checkpoint(con)
            con.close()
            self._local.con = None

    def find_existing(self, ids: Sequence[DocId]) -> dict[DocId, int]:
        """Map each of ``ids`` present in the store to a sequence number (the largest, where an id has
        several rows: see ``find_rows``)."""
        found: dict[DocId, int] = {}
        for doc_id, seq in self.find_rows(ids):
            if seq > found.get(doc_id, -1):
                found[doc_id] = seq
        return found

    def find_rows(self, ids: Sequence[DocId]) -> list[tuple[DocId, int]]:
        """Every (id, sequence number) row of ``ids``: live, tombstoned or not yet committed, which only
        the manifest can tell apart."""
        rows: list[tuple[DocId, int]] = []
        con = self._con()
        for part in _chunks(list(dict.fromkeys(ids))):
            marks = ",".join("?" * len(part))
            rows.extend(
                (doc_id, int(seq))
                for seq, doc_id in con.execute(f"SELECT seq, id FROM docs WHERE id IN ({marks})", part)
            )
        return rows

    def ids_unique(self) -> bool:
        """Whether the table declares ids UNIQUE (stores of older releases), which forbids upserts."""
        row = self._con().execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'docs'").fetchone()
        return row is not None and "UNIQUE" in str(row[0]).upper()

    def allow_repeated_ids(self) -> None:
        """Rebuild an older store's table without its UNIQUE id constraint (one transaction: all or nothing).

        Sequence numbers, texts and metadata are kept, so the keyword index (keyed by sequence number)
        stays valid; its triggers, dropped with the old table, are made again.
        """
        if not self.ids_unique():
            return
        con = self._con()
        fts = con.execute("SELECT 1 FROM sqlite_master WHERE name = 'docs_fts'").fetchone() is not None
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute("CREATE TABLE docs_new (seq INTEGER PRIMARY KEY, id NOT NULL, text TEXT, metadata TEXT)")
            con.execute("INSERT INTO docs_new (seq, id, text, metadata) SELECT seq, id, text, metadata FROM docs")
            con.execute("DROP TABLE docs")  # its triggers go with it; DROP fires no delete trigger
            con.execute("ALTER TABLE docs_new RENAME TO docs")
            con.execute("CREATE INDEX docs_id ON docs(id)")
            if fts:
                for stmt in _FTS_TRIGGERS.split("END;")[:-1]:
                    con.execute(stmt + "END;")
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        self._checkpoint(con)

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
        self._checkpoint(con)

    def seqs_for(self, ids: Sequence[DocId]) -> list[int]:
        """Sequence numbers of ``ids`` in order; an unknown id raises UnknownIdError naming it."""
        found = self.find_existing(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise UnknownIdError(f"unknown document id(s): {shown}{more}")
        return [found[i] for i in ids]

    def fetch(
        self, seqs: Iterable[int], with_text: bool = True
    ) -> dict[int, tuple[DocId, str | None, dict[str, Any] | None]]:
        """Map each sequence number to (id, text, metadata); text and metadata None unless ``with_text``."""
        out: dict[int, tuple[DocId, str | None, dict[str, Any] | None]] = {}
        con = self._con()
        wanted = sorted(set(map(int, seqs)))
        cols = "seq, id, text, metadata" if with_text else "seq, id"
        for i in range(0, len(wanted), _CHUNK):
            part = wanted[i : i + _CHUNK]
            rows = con.execute(f"SELECT {cols} FROM docs WHERE seq IN ({','.join('?' * len(part))})", part)
            if with_text:
                for seq, doc_id, text, meta in rows:
                    out[seq] = (doc_id, text, None if meta is None else json.loads(meta))
            else:
                for seq, doc_id in rows:
                    out[seq] = (doc_id, None, None)
        return out

    def purge_from(self, seq: int) -> int:
        """Delete rows with sequence number >= ``seq`` (left by an add that never committed).

        Looks first and writes only when there is something to delete: on a full disk, a write that
        finds nothing to purge must not fail here.
        """
        con = self._con()
        if con.execute("SELECT 1 FROM docs WHERE seq >= ? LIMIT 1", (int(seq),)).fetchone() is None:
            return 0
        cur = con.execute("DELETE FROM docs WHERE seq >= ?", (int(seq),))
        if cur.rowcount > 0:
            self._checkpoint(con)
        return cur.rowcount

    def stored_seqs(self, below: int) -> list[int]:
        """Sequence numbers of the stored rows below ``below``, ascending (live or not yet purged)."""
        rows = self._con().execute("SELECT seq FROM docs WHERE seq < ? ORDER BY seq", (int(below),))
        return [int(r[0]) for r in rows]

    def purge_seqs(self, seqs: Iterable[int]) -> int:
        """Delete the rows with these sequence numbers (tombstoned documents), in one transaction.

        Looks first and writes only the rows still there: purging again after a crash, or on a full
        disk when nothing is left to purge, writes nothing.
        """
        con = self._con()
        present: list[int] = []
        for part in _chunks([int(s) for s in seqs]):
            marks = ",".join("?" * len(part))
            present.extend(int(r[0]) for r in con.execute(f"SELECT seq FROM docs WHERE seq IN ({marks})", part))
        if not present:
            return 0
        n = 0
        con.execute("BEGIN IMMEDIATE")
        try:
            for part in _chunks(present):
                marks = ",".join("?" * len(part))
                n += con.execute(f"DELETE FROM docs WHERE seq IN ({marks})", part).rowcount
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:  # SQLite may have rolled back already (a full disk does)
                con.execute("ROLLBACK")
            raise
        self._checkpoint(con)
        return n

    def count_below(self, seq: int) -> int:
        """Number of rows with a sequence number below ``seq`` (the committed ones, for a manifest's next_seq).

        All rows minus those at or above ``seq``: a plain COUNT(*) scans the small id index (1M
        documents: ~13 ms) where a range on seq walks the whole table with its texts (~400 ms).
        """
        try:
            # one statement, so one snapshot for both counts: a concurrent add inserts rows above seq
            total, above = (
                self._con()
                .execute("SELECT (SELECT COUNT(*) FROM docs), (SELECT COUNT(*) FROM docs WHERE seq >= ?)", (int(seq),))
                .fetchone()
            )
            return int(total) - int(above)
        except sqlite3.DatabaseError as exc:
            if "disk is full" in str(exc):  # not a damaged store: the writer reports a full disk as such
                raise
            raise CorruptCollectionError(f"document store {self.path} is unreadable: {exc}") from None

    def has_field(self, field: str, max_seq: int) -> bool:
        """Whether any committed document's metadata holds ``field`` (a dotted path; a JSON null counts)."""
        row = self._con().execute(
            "SELECT 1 FROM docs WHERE seq < ? AND json_type(metadata, ?) IS NOT NULL LIMIT 1",
            (int(max_seq), field_path(field)),
        )
        return row.fetchone() is not None

    def keyword_search(
        self, query: str, k: int, where: tuple[str, list[Any]] | None = None, max_seq: int | None = None
    ) -> list[tuple[int, float]]:
        """BM25 ranking of documents for ``query``: up to ``k`` (seq, score) pairs, best first.

        ``where`` is a filter from ``filter_sql``; ``max_seq`` excludes rows not yet committed.
        Scores are FTS5's bm25() negated, so higher is better.
        """
        match = keyword_query(query)
        if match is None:
            return []
        sql = "SELECT docs_fts.rowid, -bm25(docs_fts) AS score FROM docs_fts"
        params: list[Any] = [match]
        conds = ["docs_fts MATCH ?"]
        if where is not None:
            sql += " JOIN docs ON docs.seq = docs_fts.rowid"
            conds.append(where[0])
            params.extend(where[1])
        if max_seq is not None:
            conds.append("docs_fts.rowid < ?")
            params.append(int(max_seq))
        sql += " WHERE " + " AND ".join(conds) + " ORDER BY bm25(docs_fts), docs_fts.rowid LIMIT ?"
        params.append(int(k))
        try:
            return [(int(r), float(sc)) for r, sc in self._con().execute(sql, params)]
        except sqlite3.OperationalError as exc:
            if "no such table: docs_fts" in str(exc):
                msg = "this collection has no keyword index (created with keyword_index=False)"
                raise InvalidInputError(msg) from None
            raise

    def filter_seqs(self, where: tuple[str, list[Any]], max_seq: int) -> list[int]:
        """Sequence numbers of the committed documents that match a filter from ``filter_sql``."""
        sql = f"SELECT seq FROM docs WHERE ({where[0]}) AND seq < ? ORDER BY seq"
        return [int(r[0]) for r in self._con().execute(sql, [*where[1], int(max_seq)])]

    # -------------------------------------------------------------- BM25 with outside statistics

    def keyword_statistics(self, query: str) -> dict[str, Any]:
        """What BM25 needs from this store for ``query``, to be summed over the shards of a collection.

        ``{"df": [documents containing each phrase of the query], "rows": documents indexed, "tokens":
        tokens indexed}``; the phrases are ``keyword_query``'s, tokenized by the index's own tokenizer.
        """
        phrases = query_phrases(query)
        rows, tokens = self._fts_totals()
        return {"df": [self._phrase_df(p) for p in phrases], "rows": rows, "tokens": tokens}

    def keyword_search_global(
        self,
        query: str,
        k: int,
        statistics: dict[str, Any],
        where: tuple[str, list[Any]] | None = None,
        max_seq: int | None = None,
    ) -> list[tuple[int, float]]:
        """``keyword_search`` scored with ``statistics`` (``keyword_statistics`` summed over shards).

        The score is FTS5's bm25() (k1 = 1.2, b = 0.75, idf = ln((N - n + 0.5) / (n + 0.5)), at least
        1e-6), computed here from the index's postings and document sizes because bm25() only knows
        its own table's N, n and average length. With this store's own statistics it equals
        ``keyword_search``'s scores; every document matching a phrase is scored (the cost of a MATCH).
        """
        phrases = query_phrases(query)
        df = [int(x) for x in statistics["df"]]
        if len(df) != len(phrases):
            raise InvalidInputError(f"statistics give {len(df)} document frequencies for {len(phrases)} phrases")
        n_rows, n_tokens = int(statistics["rows"]), int(statistics["tokens"])
        if not phrases or n_rows <= 0:
            return []
        avgdl = n_tokens / n_rows
        k1, b = 1.2, 0.75
        freqs = [self._phrase_freqs(p) for p in phrases]
        docs = np.unique(np.concatenate([f[0] for f in freqs]))
        if max_seq is not None:
            docs = docs[docs < max_seq]
        if where is not None:
            allowed = self.filter_seqs(where, int(max_seq) if max_seq is not None else 2**63 - 1)
            docs = docs[np.isin(docs, np.asarray(allowed, dtype=np.int64))]
        if not docs.size:
            return []
        dl = self._doc_sizes(docs)
        norm = k1 * (1 - b + b * dl / avgdl)
        score = np.zeros(docs.size, dtype=np.float64)
        for n_hit, (f_docs, f_counts) in zip(df, freqs, strict=True):
            idf = math.log((n_rows - n_hit + 0.5) / (n_hit + 0.5))
            idf = idf if idf > 0.0 else 1e-6
            tf = np.zeros(docs.size, dtype=np.float64)
            pos = np.searchsorted(docs, f_docs)
            ok = (pos < docs.size) & (docs[np.minimum(pos, docs.size - 1)] == f_docs)
            tf[pos[ok]] = f_counts[ok]
            score += idf * ((tf * (k1 + 1.0)) / (tf + norm))  # the operations of FTS5's bm25(), in order
        order = np.lexsort((docs, -score))[: int(k)]  # FTS5 orders by bm25() (the negated score), then rowid
        return [(int(d), float(s)) for d, s in zip(docs[order].tolist(), score[order].tolist(), strict=True)]

    def _fts_totals(self) -> tuple[int, int]:
        """(documents, tokens) of the FTS5 index: its averages record (rowid 1 of the data table)."""
        try:
            row = self._con().execute("SELECT block FROM docs_fts_data WHERE id = 1").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                msg = "this collection has no keyword index (created with keyword_index=False)"
                raise InvalidInputError(msg) from None
            raise
        if row is None or not row[0]:
            return 0, 0
        values = varints(bytes(row[0]))
        return values[0], sum(values[1:])

    def _vocab(self, kind: str = "instance") -> str:
        """A per-connection fts5vocab table over the index (in the temp schema: nothing is written)."""
        name, con = f"temp.docs_fts_{kind}", self._con()
        made = getattr(self._local, "vocab", None)
        if made is None or made[0] is not con:  # a new connection: its temp schema is empty
            made = self._local.vocab = (con, set())
        if kind not in made[1]:
            con.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS {name} USING fts5vocab(main, docs_fts, {kind})")
            made[1].add(kind)
        return name

    def _phrase_df(self, tokens: list[str]) -> int:
        """Documents that hold a phrase (a single token's from the vocabulary: no posting list read)."""
        if len(tokens) != 1:
            return int(self._phrase_freqs(tokens)[0].size)
        got = self._con().execute(f"SELECT doc FROM {self._vocab('row')} WHERE term = ?", tokens).fetchone()
        return 0 if got is None else int(got[0])

    def _phrase_freqs(self, tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(documents, occurrences) of a phrase (consecutive tokens), documents ascending."""
        empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        if not tokens:
            return empty
        con, vocab = self._con(), self._vocab()
        if len(tokens) == 1:
            sql = f"SELECT doc, COUNT(*) FROM {vocab} WHERE term = ? GROUP BY doc ORDER BY doc"
            got = np.asarray(con.execute(sql, tokens).fetchall(), dtype=np.int64).reshape(-1, 2)
            return got[:, 0].copy(), got[:, 1].copy()
        positions: list[dict[int, set[int]]] = []
        for t in tokens:
            per_doc: dict[int, set[int]] = {}
            for d, off in con.execute(f"SELECT doc, offset FROM {vocab} WHERE term = ?", (t,)):
                per_doc.setdefault(int(d), set()).add(int(off))
            positions.append(per_doc)
        out: dict[int, int] = {}
        for d, starts in positions[0].items():
            hits = sum(1 for p in starts if all(p + j in positions[j].get(d, ()) for j in range(1, len(tokens))))
            if hits:
                out[d] = hits
        if not out:
            return empty
        keys = np.asarray(sorted(out), dtype=np.int64)
        return keys, np.asarray([out[int(d)] for d in keys], dtype=np.int64)

    def _doc_sizes(self, seqs: np.ndarray) -> np.ndarray:
        """Tokens per document (float64, in the order of ``seqs``), from the FTS5 docsize table."""
        out = np.zeros(seqs.size, dtype=np.float64)
        con = self._con()
        found: dict[int, int] = {}
        for part in _chunks(seqs.tolist()):
            marks = ",".join("?" * len(part))
            for d, sz in con.execute(f"SELECT id, sz FROM docs_fts_docsize WHERE id IN ({marks})", part):
                found[d] = sz[0] if len(sz) == 1 and sz[0] < 0x80 else sum(varints(bytes(sz)))
        for i, d in enumerate(seqs.tolist()):
            out[i] = found.get(d, 0)
        return out
