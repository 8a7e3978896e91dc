"""Keyword queries: a query's words as an FTS5 MATCH expression, its phrases as the index's tokens, and
the varints FTS5 stores its statistics in (for BM25 over a subset of the documents)."""

from __future__ import annotations

import re
import sqlite3
import threading

from ..errors import InvalidInputError

__all__ = ["STOPWORDS", "keyword_query", "query_phrases", "varints"]

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


def varints(blob: bytes) -> list[int]:
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


def query_phrases(query: str) -> list[list[str]]:
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
