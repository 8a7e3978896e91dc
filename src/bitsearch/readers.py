"""Reading documents and queries from files: BEIR JSONL, JSON lines or arrays, CSV/TSV, Parquet, folders of
text files, and query vectors (.npy, .json).

Library-level (no command-line machinery): ``bitsearch index`` and the Ray indexer (``distributed_index``)
both turn records into ``Doc`` or ``Bad`` here. Errors that stop a whole input are ``InvalidInputError``;
a malformed record is a ``Bad`` that the caller skips or reports.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitsearch.errors import InvalidInputError

__all__ = [
    "INPUT_FORMATS",
    "Bad",
    "Doc",
    "Fields",
    "beir_corpus",
    "detect_format",
    "is_json_array",
    "parse_vector",
    "read_input",
    "read_queries",
    "read_query_vectors",
    "row_to_doc",
]

# an input's format: auto (from the path), JSON lines (or a .json array), CSV/TSV, Parquet, a folder of text files
INPUT_FORMATS = ("auto", "jsonl", "csv", "parquet", "folder")

TEXT_SUFFIXES = {".txt", ".md"}
DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".pq", ".jsonl.gz", ".json.gz", ".csv.gz")


@dataclass
class Doc:
    """One document read from the input, and where it came from (for messages)."""

    id: str
    text: str | None  # None only for a record whose vector was given (--vector-field) without text
    metadata: dict[str, Any] | None
    where: str
    vector: np.ndarray | None = None  # precomputed embedding (--vector-field), float32


@dataclass
class Bad:
    """A record that cannot be indexed, and why."""

    where: str
    reason: str


@dataclass
class Fields:
    """Which fields of a record hold the text, the id and the title (BEIR: `text`, `_id`, `title`)."""

    text: str = "text"
    id: str | None = None  # None: `_id`, else `id`, else the record number
    title: str | None = "title"
    vector: str | None = None  # the field holding a precomputed embedding (then the text may be absent)


def _opener(path: Path) -> Callable[..., Any]:
    return gzip.open if path.suffix.lower() == ".gz" else open


def detect_format(path: Path) -> str:
    """The input format guessed from the path: a folder, or the file's suffix."""
    if path.is_dir():
        return "folder"
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    if last in {".csv", ".tsv"}:
        return "csv"
    if last in {".parquet", ".pq"}:
        return "parquet"
    raise InvalidInputError(
        f"cannot tell the format of {path} from its name; pass --format jsonl|csv|parquet (or give a folder)"
    )


def _jsonable(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata as plain JSON (dates and other objects become strings)."""
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))


def parse_vector(value: object) -> np.ndarray | str:
    """A precomputed embedding (a list of numbers) as float32, or why it cannot be one."""
    if not isinstance(value, (list, tuple, np.ndarray)):
        return f"is {type(value).__name__}, not a list of numbers"
    if len(value) == 0:
        return "is empty"
    if any(isinstance(x, (bool, np.bool_)) for x in value):
        return "holds a boolean, not a number"
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged nesting
        return "is not a flat list of numbers"
    if arr.ndim != 1 or arr.dtype.kind not in "iuf":
        return "is not a flat list of numbers" if arr.ndim != 1 else f"holds non-numbers ({arr.dtype.kind!r} values)"
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        return f"has {float(arr[bad[0]])!r} at position {int(bad[0])}: values must be finite and within float32's range"
    return out


def _split_vector(row: dict[str, Any], where: str, fields: Fields) -> tuple[dict[str, Any], np.ndarray | None] | Bad:
    """The record without its vector field, and the vector (None when ``fields`` names none); a record with a
    vector needs no text: a missing or blank text becomes None."""
    if fields.vector is None:
        return row, None
    if fields.vector not in row:
        return Bad(where, f"no {fields.vector!r} vector field (fields: {', '.join(map(repr, list(row)[:8]))})")
    vector = parse_vector(row[fields.vector])
    if isinstance(vector, str):
        return Bad(where, f"vector field {fields.vector!r} {vector}")
    row = {k: v for k, v in row.items() if k != fields.vector}
    given = row.get(fields.text)
    if given is None or (isinstance(given, str) and not given.strip()):
        row[fields.text] = None  # stored without text
    return row, vector


def _record_text(row: dict[str, Any], where: str, fields: Fields, has_vector: bool) -> str | Bad | None:
    """The text to embed and store: title + newline + text when a title is present."""
    if has_vector and row[fields.text] is None:
        text: str | None = None
    elif fields.text not in row:
        shown = ", ".join(repr(k) for k in list(row)[:8])
        return Bad(where, f"no {fields.text!r} field (fields: {shown}); choose the text field with --text-field")
    else:
        text = row[fields.text]
        if text is None:
            text = ""
        if not isinstance(text, str):
            return Bad(where, f"field {fields.text!r} is {type(text).__name__}, not text")
    title = row.get(fields.title) if fields.title else None
    if isinstance(title, str) and title.strip():
        text = f"{title}\n{text}" if text and text.strip() else title
    if text is not None and not text.strip():
        return Bad(where, f"empty text in field {fields.text!r}")
    return text


def _record_id(row: dict[str, Any], number: int, where: str, fields: Fields) -> tuple[str, str | None] | Bad:
    """The record's id and the field it came from (None: the record number)."""
    id_field = fields.id
    if id_field is None:
        id_field = "_id" if "_id" in row else "id" if "id" in row else None
    if id_field is None:
        return str(number), None
    if id_field not in row:
        return Bad(where, f"no {id_field!r} id field; choose it with --id-field")
    raw_id = row[id_field]
    doc_id = "" if raw_id is None else str(raw_id)
    if not doc_id.strip():
        return Bad(where, f"empty id in field {id_field!r}")
    return doc_id, id_field


def row_to_doc(row: object, number: int, where: str, fields: Fields) -> Doc | Bad:
    """Turn one record (a dict) into a Doc: text = title + newline + text when a title is present."""
    if not isinstance(row, dict):
        return Bad(where, f"expected an object with fields, got {type(row).__name__}")
    if None in row:
        return Bad(where, "more values than header fields")
    split = _split_vector(row, where, fields)
    if isinstance(split, Bad):
        return split
    row, vector = split
    text = _record_text(row, where, fields, vector is not None)
    if isinstance(text, Bad):
        return text
    ident = _record_id(row, number, where, fields)
    if isinstance(ident, Bad):
        return ident
    doc_id, id_field = ident
    meta = {k: v for k, v in row.items() if k not in {id_field, fields.text}}
    return Doc(doc_id, text, _jsonable(meta) if meta else None, where, vector)


def _count_lines(path: Path) -> int | None:
    """Lines in a plain file (for the progress bar's total); None for compressed files."""
    if path.suffix.lower() == ".gz":
        return None
    count = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
    return count


def is_json_array(path: Path) -> bool:
    """Whether a file starts as one JSON array (read whole) rather than JSON lines (streamed)."""
    with _opener(path)(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def _read_json_array(path: Path, fields: Fields) -> Iterator[Doc | Bad]:
    """A .json file holding an array of records (loaded at once: use JSON lines for large inputs)."""
    with _opener(path)(path, "rt", encoding="utf-8-sig") as f:
        try:
            rows = json.load(f)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"{path}, line {exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
            ) from None
    for number, row in enumerate(rows):
        yield row_to_doc(row, number, f"{path}, record {number}", fields)


def _read_jsonl(path: Path, fields: Fields) -> Iterator[Doc | Bad]:
    """Stream JSON lines; blank lines are ignored, every other line is one record. A .json file holding one
    array is read as that array."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] == ".json" and is_json_array(path):
        yield from _read_json_array(path, fields)
        return
    number = 0
    with _opener(path)(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
            if not raw.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                yield Bad(where, f"invalid JSON ({exc.msg} at column {exc.colno})")
            except UnicodeDecodeError as exc:
                yield Bad(where, f"not UTF-8 ({exc.reason})")
            else:
                yield row_to_doc(row, number, where, fields)
            number += 1


def _read_csv(path: Path, fields: Fields) -> Iterator[Doc | Bad]:
    """Stream CSV (or TSV) rows with a header line."""
    csv.field_size_limit(2**31 - 1)
    delimiter = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
    with _opener(path)(path, "rt", encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        try:
            for number, row in enumerate(reader):
                yield row_to_doc(row, number, f"{path}, line {reader.line_num}", fields)
        except csv.Error as exc:
            raise InvalidInputError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _parquet_file(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidInputError("reading Parquet needs pyarrow: pip install 'bitsearch[io]'") from None
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own error types for bad files
        raise InvalidInputError(f"{path}: cannot read Parquet ({exc})") from None


def _read_parquet(path: Path, fields: Fields, batch_rows: int) -> Iterator[Doc | Bad]:
    """Stream Parquet rows batch by batch (pyarrow)."""
    number = 0
    for batch in _parquet_file(path).iter_batches(batch_size=max(1, batch_rows)):
        for row in batch.to_pylist():
            yield row_to_doc(row, number, f"{path}, row {number}", fields)
            number += 1


def _text_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)


def _read_folder(root: Path) -> Iterator[Doc | Bad]:
    """Each .txt/.md file under the folder is one document; its id is the path relative to the folder."""
    for path in _text_files(root):
        rel = path.relative_to(root).as_posix()
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            yield Bad(str(path), f"not UTF-8 ({exc.reason})")
            continue
        if not text.strip():
            yield Bad(str(path), "empty file")
            continue
        yield Doc(rel, text, None, str(path))


def beir_corpus(path: Path) -> Path | None:
    """The corpus file of a BEIR dataset folder (corpus.jsonl[.gz] inside it), or None."""
    if not path.is_dir():
        return None
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (path / name).is_file():
            return path / name
    return None


def _check_text_folder(path: Path, warn: Callable[[str], None]) -> None:
    """A folder read as text files that also holds data files: say which were left out, or refuse when
    the data files are surely what was meant (a BEIR dataset inside, or no more text files than data files)."""
    data = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(DATA_SUFFIXES))
    if not data:
        return
    texts = _text_files(path)
    shown = ", ".join(str(p.relative_to(path)) for p in data[:3]) + (", ..." if len(data) > 3 else "")
    hint = f"index a data file directly (bitsearch index {data[0]} ...)"
    nested = [p.parent for p in data if beir_corpus(p.parent) is not None]
    if nested:
        hint = f"index a BEIR folder directly (bitsearch index {nested[0]} ...)"
    if nested or len(texts) <= len(data):
        raise InvalidInputError(
            f"{path} holds {len(texts)} .txt/.md file(s) but also data files ({shown}) that a folder is not read "
            f"for: {hint}, or pass --format folder to index the text files only"
        )
    warn(f"{path} also holds data files that are not indexed ({shown}); {hint}")


def _ignore(message: str) -> None:
    """The default of ``read_input``'s ``note`` and ``warn``: say nothing."""


def read_input(
    path: Path,
    fmt: str,
    fields: Fields,
    chunk_size: int = 1000,
    *,
    note: Callable[[str], None] = _ignore,
    warn: Callable[[str], None] = _ignore,
) -> tuple[Iterator[Doc | Bad], int | None]:
    """Open an input: the records (streamed) and how many there are, where that is cheap to know.

    ``fmt`` is one of ``INPUT_FORMATS``; ``note`` is told what "auto" chose for a BEIR folder, ``warn`` of data
    files a folder of text files also holds (not indexed).
    """
    if fmt not in INPUT_FORMATS:
        raise InvalidInputError(f"unknown input format {fmt!r}; expected one of {', '.join(INPUT_FORMATS)}")
    if not path.exists():
        raise InvalidInputError(f"input {path} does not exist")
    if fmt == "auto":
        corpus = beir_corpus(path)
        if corpus is not None:  # `bitsearch eval` takes the same folder: index its corpus, not SOURCE.md
            note(f"{path} is a BEIR dataset folder: indexing its {corpus.name}")
            return _read_jsonl(corpus, fields), _count_lines(corpus)
        fmt = detect_format(path)
        if fmt == "folder":
            _check_text_folder(path, warn)
    if fmt == "folder":
        if not path.is_dir():
            raise InvalidInputError(f"{path} is not a folder")
        return _read_folder(path), len(_text_files(path))
    if path.is_dir():
        raise InvalidInputError(f"{path} is a folder, not a {fmt} file")
    if fmt == "jsonl":
        return _read_jsonl(path, fields), _count_lines(path)
    if fmt == "csv":
        lines = _count_lines(path)
        return _read_csv(path, fields), None if lines is None else max(lines - 1, 0)
    return _read_parquet(path, fields, chunk_size), _parquet_file(path).metadata.num_rows


# ----------------------------------------------------------------------------- queries


def read_queries(source: str) -> list[tuple[str | None, str]]:
    """Queries from a file or stdin ('-'): one per line, or JSON lines with `text` (and `_id`/`id`)."""
    if source == "-":
        lines = sys.stdin.read().splitlines()
        is_jsonl = False
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidInputError(f"queries file {path} does not exist")
        lines = path.read_text(encoding="utf-8").splitlines()
        is_jsonl = path.suffix.lower() in {".jsonl", ".ndjson"}
    queries: list[tuple[str | None, str]] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not is_jsonl:
            queries.append((None, line.strip()))
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{source}, line {lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
            raise InvalidInputError(f"{source}, line {lineno}: expected an object with a non-empty 'text' field")
        qid = row.get("_id", row.get("id"))
        queries.append((None if qid is None else str(qid), row["text"]))
    return queries


def _load_vector_rows(path: Path) -> Any:
    """The rows of a query vector file as loaded: a 2-d array, or a list of lists of numbers."""
    if not path.is_file():
        raise InvalidInputError(f"vector file {path} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            raw: Any = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InvalidInputError(f"{path}: not a readable .npy array ({exc})") from None
    elif path.suffix.lower() == ".json":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"{path}: invalid JSON ({exc})") from None
    else:
        raise InvalidInputError(f"{path}: give query vectors as .npy or .json")
    if isinstance(raw, np.ndarray):
        rows = raw[None] if raw.ndim == 1 else raw
    else:
        rows = [raw] if isinstance(raw, list) and raw and not isinstance(raw[0], list) else raw
    if isinstance(rows, np.ndarray) and rows.ndim != 2:
        raise InvalidInputError(f"{path}: expected one vector or a matrix of them, got shape {rows.shape}")
    if not isinstance(rows, (list, np.ndarray)) or len(rows) == 0:
        raise InvalidInputError(f"{path}: expected a list of numbers, or a list of such lists")
    return rows


def read_query_vectors(path: Path) -> np.ndarray:
    """Query vectors from a .npy file (no pickles) or a .json file (a list of numbers, or a list of them)."""
    out: list[np.ndarray] = []
    for i, row in enumerate(_load_vector_rows(path)):
        vec = parse_vector(row.tolist() if isinstance(row, np.ndarray) else row)
        if isinstance(vec, str):
            raise InvalidInputError(f"{path}: vector {i} {vec}")
        if out and len(vec) != len(out[0]):
            raise InvalidInputError(f"{path}: vector {i} has {len(vec)} dimensions, vector 0 has {len(out[0])}")
        out.append(vec)
    return np.stack(out)
