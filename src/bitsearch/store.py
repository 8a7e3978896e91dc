"""The document store: a SQLite file mapping each row sequence number to the user's id, text and metadata.

It also holds the keyword index (SQLite FTS5, Porter stemming, BM25 ranking), kept in step with the
documents by triggers inside the same transactions, and translates metadata filters to SQL.

The collection's manifest is the source of truth: rows here whose sequence number the manifest has not
committed (an interrupted ``add``) or has tombstoned are garbage, removed by ``purge_*`` before writes.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import re
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CorruptCollectionError, DuplicateIdError, InvalidInputError, UnknownIdError

DocId = str | int

__all__ = [
    "MAX_FILTER_CONDITIONS",
    "MAX_FILTER_DEPTH",
    "MAX_METADATA_DEPTH",
    "DocId",
    "DocStore",
    "check_metadata",
    "check_unicode",
    "field_path",
    "filter_fields",
    "filter_sql",
    "keyword_query",
    "normalize_id",
]

# Integer ids and filter values are stored and compared as SQLite INTEGERs: signed 64-bit.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Metadata objects/arrays nest at most this deep (json.dumps and json.loads recurse per level).
MAX_METADATA_DEPTH = 64
# A filter's $and/$or nest at most this deep, and hold at most this many conditions (each field
# comparison and each $in/$nin value counts one): SQLite's parser and expression tree have fixed depths.
MAX_FILTER_DEPTH = 16
MAX_FILTER_CONDITIONS = 512

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
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    ]
)
_MAX_QUERY_TERMS = 64
_CHUNK = 500  # SQLite host parameters per statement stay well under its limit


def normalize_id(value: object) -> DocId:
    """Return a document id as a plain ``str`` or ``int``; anything else is an error.

    Strings must be non-empty valid Unicode (no lone surrogates); integers (Python or numpy) must
    fit SQLite's signed 64 bits, -2**63 to 2**63 - 1.
    """
    if isinstance(value, bool):
        raise InvalidInputError(f"document ids must be str or int, got bool {value!r}")
    if isinstance(value, str):
        if not value:
            raise InvalidInputError("document ids must not be empty strings")
        check_unicode(value, f"document id {value!r}")
        return str(value)
    try:
        import numpy as np

        if isinstance(value, np.integer):
            value = int(value)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidInputError(
                f"integer document id {value} does not fit SQLite's 64-bit integers (-2**63 to 2**63 - 1)"
            )
        return int(value)
    raise InvalidInputError(f"document ids must be str or int, got {type(value).__name__} {value!r}")


def check_unicode(text: str, where: str) -> None:
    """Raise InvalidInputError naming ``where`` if ``text`` cannot be encoded as UTF-8 (a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{where} contains a lone surrogate {text[exc.start]!r} at position {exc.start}: not valid Unicode"
        ) from None


def check_metadata(value: object, where: str = "metadata") -> str:
    """Check one document's metadata and return its JSON text; raise InvalidInputError naming the place.

    A JSON object: str keys, values str / int / finite float / bool / None / list / dict, nested at most
    ``MAX_METADATA_DEPTH`` deep, every string valid Unicode (no lone surrogates, which no JSON reader
    could return). Walked iteratively, so a deep object cannot exhaust the stack before it is refused.
    """
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where} must be a dict or None, got {type(value).__name__}")
    # each entry: (node, depth, path); a path is None (the top) or (parent path, key), named only on error
    stack: list[tuple[object, int, Any]] = [(value, 1, None)]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            if not node.isascii():
                check_unicode(node, _place(where, path))
        elif isinstance(node, dict):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidInputError(f"{where} nests deeper than MAX_METADATA_DEPTH={MAX_METADATA_DEPTH} levels")
            for key, sub in node.items():
                if not isinstance(key, str):
                    kind = type(key).__name__
                    raise InvalidInputError(f"{_place(where, path)} has a key {key!r} of type {kind}: keys must be str")
                if not key.isascii():
                    check_unicode(key, f"{_place(where, path)} key {key!r}")
                stack.append((sub, depth + 1, (path, key)))
        elif isinstance(node, (list, tuple)):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidInputError(f"{where} nests deeper than MAX_METADATA_DEPTH={MAX_METADATA_DEPTH} levels")
            stack.extend((sub, depth + 1, (path, i)) for i, sub in enumerate(node))
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise InvalidInputError(f"{_place(where, path)} is {node}: JSON has no NaN or infinity")
        elif node is not None and not isinstance(node, int):  # bool is an int
            raise InvalidInputError(f"{_place(where, path)} is a {type(node).__name__}: not a JSON value")
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. an int of more than 4,300 digits
        raise InvalidInputError(f"{where} is not JSON-serializable: {exc}") from None


def _place(where: str, path: Any) -> str:
    """``where`` followed by the keys and indices of ``path`` (see ``check_metadata``), e.g. metadata[3]['a'][0]."""
    keys = []
    while path is not None:
        path, key = path
        keys.append(f"[{key!r}]")
    return where + "".join(reversed(keys))


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
        phrases = _query_phrases(query)
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
        phrases = _query_phrases(query)
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
        values = _varints(bytes(row[0]))
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
                found[d] = sz[0] if len(sz) == 1 and sz[0] < 0x80 else sum(_varints(bytes(sz)))
        for i, d in enumerate(seqs.tolist()):
            out[i] = found.get(d, 0)
        return out


def _varints(blob: bytes) -> list[int]:
    """Decode SQLite's big-endian varints (7 bits a byte, the 9th byte whole), as FTS5 stores them."""
    out, i = [], 0
    while i < len(blob):
        v = 0
        for j in range(9):
            c = blob[i]
            i += 1
            if j == 8:
                v = (v << 8) | c
                break
            v = (v << 7) | (c & 0x7F)
            if not c & 0x80:
                break
        out.append(v)
    return out


_TOKENIZER = threading.local()


def _query_phrases(query: str) -> list[list[str]]:
    """The phrases of ``keyword_query(query)``, each as the tokens the index's tokenizer makes of it."""
    match = keyword_query(query)
    if match is None:
        return []
    words = [w.strip('"') for w in match.split(" OR ")]
    con = getattr(_TOKENIZER, "con", None)
    if con is None:  # an in-memory FTS5 table with the index's tokenizer: the exact tokens of each word
        con = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        con.execute("CREATE VIRTUAL TABLE q USING fts5(text, tokenize='porter unicode61 remove_diacritics 2')")
        con.execute("CREATE VIRTUAL TABLE q_instance USING fts5vocab(q, instance)")
        _TOKENIZER.con = con
    con.execute("DELETE FROM q")
    con.executemany("INSERT INTO q(rowid, text) VALUES (?, ?)", list(enumerate(words)))
    phrases: list[list[str]] = [[] for _ in words]
    for doc, term in con.execute("SELECT doc, term FROM q_instance ORDER BY doc, offset"):
        phrases[int(doc)].append(str(term))
    return phrases


def keyword_query(text: str) -> str | None:
    """An FTS5 MATCH expression OR-ing the query's words (stop words dropped, each quoted)."""
    if not isinstance(text, str):
        raise InvalidInputError(f"keyword queries must be strings, got {type(text).__name__}")
    words = [w for w in re.findall(r"\w+", text.lower()) if w not in STOPWORDS]
    if not words:
        words = re.findall(r"\w+", text.lower())  # a query of only stop words still searches them
    terms = list(dict.fromkeys(words))[:_MAX_QUERY_TERMS]
    return " OR ".join(f'"{t}"' for t in terms) if terms else None


_FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")
_OPS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def filter_fields(flt: dict[str, Any]) -> list[str]:
    """The metadata fields a filter (one ``filter_sql`` accepts) names, each once, in order."""
    fields: list[str] = []
    todo: list[object] = [flt]
    while todo:
        sub = todo.pop(0)
        if not isinstance(sub, dict):
            continue
        for key, cond in sub.items():
            if key in ("$and", "$or"):
                todo.extend(cond if isinstance(cond, list) else [])
            elif key == "$not":
                todo.append(cond)
            elif isinstance(key, str) and key not in fields:
                fields.append(key)
    return fields


def field_path(field: str) -> str:
    """The SQLite JSON path of a (validated) dotted metadata field."""
    return "$." + ".".join(f'"{seg}"' for seg in field.split("."))


def filter_sql(flt: dict[str, Any]) -> tuple[str, list[Any]]:
    """Translate a metadata filter into an SQL condition on ``docs.metadata`` and its parameters.

    ``{"field": value}`` is equality; ``{"field": {"$gt": 1, "$lte": 5}}`` ranges ($eq $ne $gt $gte
    $lt $lte); ``{"field": {"$in": [...]}}`` / ``$nin`` membership; ``{"$and": [...]}`` / ``{"$or": [...]}``
    combine filters and ``{"$not": filter}`` matches the documents the filter does not (those without
    its fields too). Dotted fields reach into nested objects. Several keys are AND-ed.

    Ranges compare like with like: a number matches stored numbers (and booleans, as 1 and 0), a string
    stored strings (by code point); SQLite alone would order every string after every number.
    ``{"$date": "1972-12-11T19:54:58"}`` in place of a value ($eq $ne $gt $gte $lt $lte) compares
    stored ISO 8601 strings as points in time, to the millisecond: offsets are applied, times without
    one are read as UTC, and stored values that are not ISO dates never match (``$ne``: always do).

    Values are str (valid Unicode), int (within SQLite's 64 bits), finite-or-infinite float, bool or
    None. ``$and``/``$or`` nest at most ``MAX_FILTER_DEPTH`` (16) deep and a filter holds at most
    ``MAX_FILTER_CONDITIONS`` (512) conditions, each comparison and each ``$in``/``$nin`` value
    counting one; anything else raises InvalidInputError before SQLite sees it.
    """
    count = [0]
    return _filter_sql(flt, 1, count)


def _filter_sql(flt: object, depth: int, count: list[int]) -> tuple[str, list[Any]]:
    """``filter_sql`` of one (sub)filter at nesting ``depth``; ``count`` tallies conditions so far."""
    if not isinstance(flt, dict) or not flt:
        raise InvalidInputError(f"a filter must be a non-empty dict, got {_short(flt)}")
    if depth > MAX_FILTER_DEPTH:
        raise InvalidInputError(f"filter nests $and/$or deeper than MAX_FILTER_DEPTH={MAX_FILTER_DEPTH} levels")
    parts: list[str] = []
    params: list[Any] = []

    def tally(n: int) -> None:
        count[0] += n
        if count[0] > MAX_FILTER_CONDITIONS:
            raise InvalidInputError(
                f"filter has more than MAX_FILTER_CONDITIONS={MAX_FILTER_CONDITIONS} conditions "
                "(each comparison and each $in/$nin value counts one)"
            )

    for key, cond in flt.items():
        if key == "$not":
            sql, sub_params = _filter_sql(cond, depth + 1, count)
            parts.append(f"NOT COALESCE(({sql}), 0)")  # a comparison with a missing field is NULL: not a match
            params.extend(sub_params)
            continue
        if key in ("$and", "$or"):
            if not isinstance(cond, list) or not cond:
                raise InvalidInputError(f"{key} takes a non-empty list of filters")
            subs = [_filter_sql(c, depth + 1, count) for c in cond]
            joiner = " AND " if key == "$and" else " OR "
            parts.append("(" + joiner.join(f"({sql})" for sql, _ in subs) + ")")
            for _, p in subs:
                params.extend(p)
            continue
        if not isinstance(key, str) or not _FIELD_RE.fullmatch(key):
            raise InvalidInputError(
                f"invalid filter field {_short(key)}: use letters, digits, _ and - (dots for nesting)"
            )
        path = field_path(key)
        col = "json_extract(docs.metadata, ?)"
        ops = cond if isinstance(cond, dict) and set(cond) != {"$date"} else {"$eq": cond}
        if not ops:
            raise InvalidInputError(f"empty condition for filter field {key!r}")
        for op, value in ops.items():
            if op in _OPS and isinstance(value, dict):
                tally(1)
                when = _date_value(key, value)
                # strftime reads a number as a Julian day and a few words ("now") as times: text shaped
                # like a date only
                date = (
                    f"(json_type(docs.metadata, ?) = 'text' AND {col} GLOB '{_DATE_GLOB}' "
                    f"AND strftime('{_DATE_FORMAT}', {col}) {_OPS['$eq' if op == '$ne' else op]} "
                    f"strftime('{_DATE_FORMAT}', ?))"
                )
                parts.append(f"NOT COALESCE({date}, 0)" if op == "$ne" else date)
                params.extend([path, path, path, when])
            elif op in _OPS:
                tally(1)
                _check_filter_value(key, value)
                if value is None:
                    parts.append(f"{col} IS {'NOT ' if op == '$ne' else ''}NULL")
                    params.append(path)
                elif op == "$ne":  # documents without the field also differ
                    parts.append(f"({col} IS NULL OR {col} != ?)")
                    params.extend([path, path, value])
                elif op == "$eq":
                    parts.append(f"{col} = ?")
                    params.extend([path, value])
                else:  # a range: stored values of the value's kind only
                    kinds = "'text'" if isinstance(value, str) else "'integer', 'real', 'true', 'false'"
                    parts.append(f"(json_type(docs.metadata, ?) IN ({kinds}) AND {col} {_OPS[op]} ?)")
                    params.extend([path, path, value])
            elif op in ("$in", "$nin"):
                if not isinstance(value, (list, tuple)) or not value:
                    raise InvalidInputError(f"{op} for filter field {key!r} takes a non-empty list")
                tally(len(value))
                for v in value:
                    _check_filter_value(key, v)
                marks = ",".join("?" * len(value))
                if op == "$in":
                    parts.append(f"{col} IN ({marks})")
                    params.extend([path, *value])
                else:
                    parts.append(f"({col} IS NULL OR {col} NOT IN ({marks}))")
                    params.extend([path, path, *value])
            else:
                raise InvalidInputError(
                    f"unknown filter operator {_short(op)} for field {key!r}; use $eq $ne $gt $gte $lt $lte $in $nin"
                )
    return " AND ".join(parts), params


_DATE_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%f"


def _date_value(key: str, value: dict[str, Any]) -> str:
    """The ISO 8601 text of a ``{"$date": ...}`` filter value, in UTC when it names an offset."""
    if set(value) != {"$date"} or not isinstance(value["$date"], str):
        raise InvalidInputError(
            f'filter values for {key!r} are scalars or {{"$date": "ISO 8601 string"}}, got {_short(value)}'
        )
    text = value["$date"]
    try:
        when = datetime.datetime.fromisoformat(text) if re.match(r"\d{4}-\d\d-\d\d", text) else None
    except ValueError:
        when = None
    if when is None:
        raise InvalidInputError(f"filter value for {key!r} is not an ISO 8601 date (YYYY-MM-DD...): {_short(text)}")
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return when.isoformat(sep="T", timespec="microseconds")


def _short(value: object, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: error messages about huge filters stay readable."""
    try:
        text = repr(value)
    except RecursionError:  # a self-containing list or dict
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_filter_value(key: str, value: object) -> None:
    if value is not None and not isinstance(value, (str, int, float, bool)):
        raise InvalidInputError(f"filter value for {key!r} must be a str, number, bool or null, got {_short(value)}")
    if isinstance(value, float) and value != value:
        raise InvalidInputError(f"filter value for {key!r} is NaN")
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        raise InvalidInputError(
            f"filter value {value} for {key!r} does not fit SQLite's 64-bit integers (-2**63 to 2**63 - 1)"
        )
    if isinstance(value, str):
        check_unicode(value, f"filter value for {key!r}")
