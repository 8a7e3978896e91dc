"""BEIR datasets: a corpus, its queries and their relevance judgments, read from a folder (plain or .gz)."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = ["Dataset", "doc_text", "load_dataset"]


@dataclass(frozen=True)
class Dataset:
    """A BEIR dataset restricted to the queries that have relevance judgments."""

    name: str
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    path: str = ""

    def __len__(self) -> int:
        return len(self.doc_ids)

    def subset(self, n_docs: int, n_queries: int | None = None) -> Dataset:
        """First `n_docs` documents and the first `n_queries` queries judged on one of them (tests)."""
        doc_ids = self.doc_ids[:n_docs]
        keep = set(doc_ids)
        qrels: dict[str, dict[str, int]] = {}
        for qid in self.query_ids:
            judged = {d: r for d, r in self.qrels[qid].items() if d in keep}
            if any(r > 0 for r in judged.values()):
                qrels[qid] = judged
            if n_queries is not None and len(qrels) >= n_queries:
                break
        qtext = dict(zip(self.query_ids, self.query_texts, strict=True))
        return Dataset(
            name=f"{self.name}[:{n_docs}]",
            doc_ids=doc_ids,
            doc_texts=self.doc_texts[:n_docs],
            query_ids=list(qrels),
            query_texts=[qtext[q] for q in qrels],
            qrels=qrels,
            path=self.path,
        )


def doc_text(title: str | None, text: str | None) -> str:
    """The text encoded for a BEIR document: MTEB's `(title + " " + text).strip()`.

    MTEB (and BEIR's SentenceBERT wrapper) join title and body with one space; an empty title leaves
    the body alone. For WordPiece models such as all-MiniLM-L6-v2 a space and a newline tokenize
    identically, so this also equals `title + "\\n" + text`.
    """
    return (f"{title or ''} {text or ''}").strip()


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder}: neither {name} nor {name}.gz")


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with _open_text(path) as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with _open_text(path) as fh:
        for n, line in enumerate(fh):
            parts = line.split()
            if not parts:
                continue
            if len(parts) == 4:  # TREC layout: qid iteration docid rel
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise ValueError(f"{path}:{n + 1}: expected 'query-id corpus-id score'")
            qid, did, score = parts
            try:
                rel = int(float(score))
            except ValueError:
                if n == 0:  # header line
                    continue
                raise
            qrels.setdefault(qid, {})[did] = rel
    return qrels


def _read_queries(folder: Path, qrels: dict[str, dict[str, int]]) -> tuple[list[str], list[str]]:
    """(ids, texts) of the queries with a positive judgment: queries.jsonl first, then queries_all.jsonl."""
    query_ids: list[str] = []
    query_texts: list[str] = []
    seen: set[str] = set()
    for name in ("queries.jsonl", "queries_all.jsonl"):
        try:
            qpath = _find(folder, name)
        except FileNotFoundError:
            continue
        for row in _read_jsonl(qpath):
            qid = str(row["_id"])
            if qid in seen or not any(r > 0 for r in qrels.get(qid, {}).values()):
                continue
            seen.add(qid)
            query_ids.append(qid)
            query_texts.append(str(row.get("text") or ""))
    return query_ids, query_texts


def load_dataset(path: str | os.PathLike[str], split: str = "test") -> Dataset:
    """Read a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv; each may be .gz).

    Only queries with at least one positive judgment are kept, in queries.jsonl order; judged queries
    missing there are looked up in queries_all.jsonl (where the shared datasets keep every query).
    """
    folder = Path(path)
    doc_ids: list[str] = []
    doc_texts: list[str] = []
    for row in _read_jsonl(_find(folder, "corpus.jsonl")):
        doc_ids.append(str(row["_id"]))
        doc_texts.append(doc_text(row.get("title"), row.get("text")))
    qrels = _read_qrels(_find(folder / "qrels", f"{split}.tsv"))
    query_ids, query_texts = _read_queries(folder, qrels)
    if not query_ids:
        raise ValueError(f"{folder}: no query has a positive judgment in qrels/{split}.tsv")
    return Dataset(
        name=folder.resolve().name,
        doc_ids=doc_ids,
        doc_texts=doc_texts,
        query_ids=query_ids,
        query_texts=query_texts,
        qrels={q: qrels[q] for q in query_ids},
        path=str(folder),
    )
