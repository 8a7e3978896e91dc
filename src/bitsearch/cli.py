"""The `bitsearch` command line: index text into a collection, search it, describe it, demo it.

A thin layer over `bitsearch.encode.Encoder` and `bitsearch.Collection`: input readers (BEIR JSONL,
JSONL, CSV, Parquet, folders of text files), resumable chunked indexing, and readable output.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import gzip
import json
import os
import random
import re
import shutil
import sys
import sysconfig
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

from bitsearch.collection import interrupted_create
from bitsearch.errors import BitsearchError
from bitsearch.search import Collection

if TYPE_CHECKING:  # imported lazily: the encoder by commands that embed text, tqdm by those that index
    from tqdm import tqdm

    from bitsearch.encode import Encoder

app = typer.Typer(
    name="bitsearch",
    help="Retrieval over quantized text embeddings: index text, search it, inspect collections.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

MANIFEST = "manifest.json"
_TEXT_SUFFIXES = {".txt", ".md"}


def main() -> None:
    """Entry point of the `bitsearch` console script."""
    app()


def _print_version(value: bool) -> None:
    if value:
        from bitsearch import __version__

        typer.echo(f"bitsearch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit.")
    ] = False,
) -> None:
    """Retrieval over quantized text embeddings: index text, search it, inspect collections."""


class CliError(Exception):
    """A problem to report to the user as one line, without a traceback."""


@contextlib.contextmanager
def _reported(on_interrupt: str = "interrupted") -> Iterator[None]:
    """Turn expected failures (bad input, unloadable model, broken collection) into `error: ...` and exit 1.

    Set BITSEARCH_DEBUG=1 to see the traceback instead.
    """
    try:
        yield
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1) from None
    except (CliError, BitsearchError, ValueError, OSError) as exc:
        if os.environ.get("BITSEARCH_DEBUG"):  # developers: the full traceback
            raise
        message = cli_words(str(exc) or type(exc).__name__)
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo(on_interrupt, err=True)
        raise typer.Exit(130) from None


# The library's errors name Python arguments; the command line shows the flags that do the same.
_CLI_WORDS = (
    (re.compile(r"\bkeep_float32=True\b"), "bitsearch index --keep-float32"),
    (re.compile(r"\bkeep_int8=True\b"), "int8 rows (bitsearch index keeps them always)"),
    (re.compile(r"\bprecision=\"binary\""), "bitsearch index --precision binary"),
    (re.compile(r"\brescore=None\b"), "--rescore none"),
    (re.compile(r"\brescore_multiplier\b"), "--rescore-multiplier"),
    (re.compile(r"\btruncate_dim\b"), "--truncate-dim"),
    (re.compile(r"\bquery_bits\b"), "--query-bits"),
    (re.compile(r"\bquery_texts\b"), "query text"),
    (re.compile(r"\bmode=\"(\w+)\""), r"--mode \1"),
)


def cli_words(message: str) -> str:
    """A library error message with Python argument names replaced by the CLI flags that set them."""
    for pattern, flag in _CLI_WORDS:
        message = pattern.sub(flag, message)
    return message


# ----------------------------------------------------------------------------- reading input


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


class InputFormat(str, Enum):
    auto = "auto"
    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"
    folder = "folder"


class Precision(str, Enum):
    binary = "binary"
    bits15 = "1.5bit"
    bits2 = "2bit"
    int8 = "int8"
    float32 = "float32"


class Stage1(str, Enum):
    auto = "auto"
    hamming = "hamming"
    asymmetric = "asymmetric"


class Mode(str, Enum):
    dense = "dense"
    keyword = "keyword"
    hybrid = "hybrid"


class EncoderBackend(str, Enum):
    auto = "auto"
    onnx = "onnx"
    onnx_int8 = "onnx-int8"
    torch = "torch"


class Rescore(str, Enum):
    int8 = "int8"
    binary = "binary"
    float32 = "float32"
    none = "none"


def _detect_format(path: Path) -> InputFormat:
    """Guess the input format from the path: a folder, or the file's suffix."""
    if path.is_dir():
        return InputFormat.folder
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in {".jsonl", ".ndjson", ".json"}:
        return InputFormat.jsonl
    if last in {".csv", ".tsv"}:
        return InputFormat.csv
    if last in {".parquet", ".pq"}:
        return InputFormat.parquet
    raise CliError(
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


def row_to_doc(row: object, number: int, where: str, fields: Fields) -> Doc | Bad:
    """Turn one record (a dict) into a Doc: text = title + newline + text when a title is present."""
    if not isinstance(row, dict):
        return Bad(where, f"expected an object with fields, got {type(row).__name__}")
    if None in row:
        return Bad(where, "more values than header fields")
    vector = None
    if fields.vector is not None:
        if fields.vector not in row:
            return Bad(where, f"no {fields.vector!r} vector field (fields: {', '.join(map(repr, list(row)[:8]))})")
        vector = parse_vector(row[fields.vector])
        if isinstance(vector, str):
            return Bad(where, f"vector field {fields.vector!r} {vector}")
        row = {k: v for k, v in row.items() if k != fields.vector}
        given = row.get(fields.text)
        if given is None or (isinstance(given, str) and not given.strip()):
            row[fields.text] = None  # a vector needs no text: stored without one
    if vector is not None and row[fields.text] is None:
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
    id_field = fields.id
    if id_field is None:
        id_field = "_id" if "_id" in row else "id" if "id" in row else None
    if id_field is None:
        doc_id = str(number)
    elif id_field not in row:
        return Bad(where, f"no {id_field!r} id field; choose it with --id-field")
    else:
        raw_id = row[id_field]
        doc_id = "" if raw_id is None else str(raw_id)
        if not doc_id.strip():
            return Bad(where, f"empty id in field {id_field!r}")
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


def _json_array_file(path: Path) -> bool:
    """Whether a .json file holds one JSON array (read whole) rather than JSON lines (streamed)."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if not suffixes or suffixes[-1] != ".json":
        return False
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def _read_json_array(path: Path, fields: Fields) -> Iterator[Doc | Bad]:
    """A .json file holding an array of records (loaded at once: use JSON lines for large inputs)."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig") as f:
        try:
            rows = json.load(f)
        except json.JSONDecodeError as exc:
            raise CliError(f"{path}, line {exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    for number, row in enumerate(rows):
        yield row_to_doc(row, number, f"{path}, record {number}", fields)


def _read_jsonl(path: Path, fields: Fields) -> Iterator[Doc | Bad]:
    """Stream JSON lines; blank lines are ignored, every other line is one record."""
    if _json_array_file(path):
        yield from _read_json_array(path, fields)
        return
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    number = 0
    with opener(path, "rb") as f:
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
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        try:
            for number, row in enumerate(reader):
                yield row_to_doc(row, number, f"{path}, line {reader.line_num}", fields)
        except csv.Error as exc:
            raise CliError(f"{path}, line {reader.line_num}: malformed CSV ({exc})") from None
        except UnicodeDecodeError as exc:
            raise CliError(f"{path}: not UTF-8 text ({exc.reason})") from None


def _parquet_file(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise CliError("reading Parquet needs pyarrow: pip install 'bitsearch[io]'") from None
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own error types for bad files
        raise CliError(f"{path}: cannot read Parquet ({exc})") from None


def _read_parquet(path: Path, fields: Fields, batch_rows: int) -> Iterator[Doc | Bad]:
    """Stream Parquet rows batch by batch (pyarrow)."""
    number = 0
    for batch in _parquet_file(path).iter_batches(batch_size=max(1, batch_rows)):
        for row in batch.to_pylist():
            yield row_to_doc(row, number, f"{path}, row {number}", fields)
            number += 1


def _text_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES)


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


_DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".pq", ".jsonl.gz", ".json.gz", ".csv.gz")


def beir_corpus(path: Path) -> Path | None:
    """The corpus file of a BEIR dataset folder (corpus.jsonl[.gz] inside it), or None."""
    if not path.is_dir():
        return None
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (path / name).is_file():
            return path / name
    return None


def _check_text_folder(path: Path) -> None:
    """A folder read as text files that also holds data files: say which were left out, or refuse when
    the data files are surely what was meant (a BEIR dataset inside, or no more text files than data files)."""
    data = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(_DATA_SUFFIXES))
    if not data:
        return
    texts = _text_files(path)
    shown = ", ".join(str(p.relative_to(path)) for p in data[:3]) + (", ..." if len(data) > 3 else "")
    hint = f"index a data file directly (bitsearch index {data[0]} ...)"
    nested = [p.parent for p in data if beir_corpus(p.parent) is not None]
    if nested:
        hint = f"index a BEIR folder directly (bitsearch index {nested[0]} ...)"
    if nested or len(texts) <= len(data):
        raise CliError(
            f"{path} holds {len(texts)} .txt/.md file(s) but also data files ({shown}) that a folder is not read "
            f"for: {hint}, or pass --format folder to index the text files only"
        )
    typer.secho(f"warning: {path} also holds data files that are not indexed ({shown}); {hint}", err=True, fg="yellow")


def read_input(
    path: Path, fmt: InputFormat, fields: Fields, chunk_size: int = 1000
) -> tuple[Iterator[Doc | Bad], int | None]:
    """Open INPUT: the records (streamed) and how many there are, where that is cheap to know."""
    if not path.exists():
        raise CliError(f"input {path} does not exist")
    if fmt is InputFormat.auto:
        corpus = beir_corpus(path)
        if corpus is not None:  # `bitsearch eval` takes the same folder: index its corpus, not SOURCE.md
            typer.echo(f"{path} is a BEIR dataset folder: indexing its {corpus.name}", err=True)
            return _read_jsonl(corpus, fields), _count_lines(corpus)
        fmt = _detect_format(path)
        if fmt is InputFormat.folder:
            _check_text_folder(path)
    if fmt is InputFormat.folder:
        if not path.is_dir():
            raise CliError(f"{path} is not a folder")
        return _read_folder(path), len(_text_files(path))
    if path.is_dir():
        raise CliError(f"{path} is a folder, not a {fmt.value} file")
    if fmt is InputFormat.jsonl:
        return _read_jsonl(path, fields), _count_lines(path)
    if fmt is InputFormat.csv:
        lines = _count_lines(path)
        return _read_csv(path, fields), None if lines is None else max(lines - 1, 0)
    return _read_parquet(path, fields, chunk_size), _parquet_file(path).metadata.num_rows


def _batched(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


# ----------------------------------------------------------------------------- index


def _is_collection(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def _load_encoder(model: str | None, **kw: Any) -> Encoder:
    from bitsearch.encode import Encoder

    return Encoder(model, **kw)


def _early_encoder(path: Path, **kw: Any) -> Future[tuple[Any, Encoder]] | None:
    """Start loading the encoder that ``path``'s manifest names, in a thread, before the collection is
    opened and validated; ``_encoder_for`` uses it only if the validated manifest names the same model."""
    try:
        info = json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(info, dict) or not info.get("name"):
        return None

    def load() -> tuple[Any, Encoder]:
        from bitsearch.encode import Encoder

        return info, Encoder.for_manifest(info, **kw)

    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder").submit(load)


def _encoder_for(col: Collection, early: Future[tuple[Any, Encoder]] | None = None, **kw: Any) -> Encoder:
    """The encoder a collection was built with (from its manifest), for queries or more documents;
    ``early`` is one ``_early_encoder`` started loading, used when it loaded the same model."""
    from bitsearch.encode import Encoder

    info = col.manifest.get("model")
    if not isinstance(info, dict) or not info.get("name"):
        raise CliError(
            f"collection {col.path} records no embedding model (its documents came as vectors), so text cannot "
            "be embedded for it: search it with --vector-file FILE (.npy or JSON), add documents with --vector-field, "
            "or index into a new collection with --model NAME to record a model for text queries"
        )
    encoder = None
    if early is not None:
        with contextlib.suppress(Exception):  # any failure: load again here, where errors are reported
            loaded_info, loaded = early.result()
            encoder = loaded if loaded_info == info else None
    if encoder is None:
        encoder = Encoder.for_manifest(info, **kw)
    if encoder.dim != col.dim:
        raise CliError(f"model {encoder.name!r} gives {encoder.dim}-dim embeddings but {col.path} holds {col.dim}")
    return encoder


def _check_settings(
    col: Collection, model: str | None, precision: Precision | None, truncate_dim: int | None, keep_float32: bool
) -> None:
    """Refuse to continue an existing collection with settings it was not built with."""
    from bitsearch.encode import canonical_model_name

    m = col.manifest
    recorded = (m.get("model") or {}).get("name")
    where = f"the collection at {col.path}"
    if model is not None and recorded is not None and canonical_model_name(model) != recorded:
        raise CliError(
            f"{where} was built with model {recorded!r}, not {model!r}: "
            "re-run without --model to add to it, or index into a new directory"
        )
    if precision is not None and precision.value != m["precision"]:
        raise CliError(f"{where} has precision {m['precision']!r}, not {precision.value!r}")
    if truncate_dim is not None and truncate_dim != (m.get("truncate_dim") or m["dim"]):
        raise CliError(f"{where} was built with truncate_dim {m.get('truncate_dim')}, not {truncate_dim}")
    if keep_float32 and not m.get("keep_float32"):
        raise CliError(f"{where} was built without --keep-float32; index into a new directory to keep float32 rows")


def _precomputed_target(
    out: Path,
    model: str | None,
    precision: Precision | None,
    truncate_dim: int | None,
    keep_float32: bool,
    fmt: InputFormat,
    source: Path,
) -> Collection | None:
    """`index --vector-field`: the collection to continue (None: a new one), its settings checked; no model loads."""
    if truncate_dim is not None:
        raise CliError("--truncate-dim cuts a model's embeddings; with --vector-field give vectors of the size to keep")
    kind = fmt if fmt is not InputFormat.auto else None
    if kind is None and beir_corpus(source) is None and not source.is_dir():
        kind = _detect_format(source)
    if kind in (InputFormat.csv, InputFormat.folder):
        raise CliError(f"--vector-field reads JSONL or Parquet records, not {kind.value}")
    if not _is_collection(out):
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not interrupted_create(out):
            raise CliError(f"{out} exists and is neither a collection nor an empty directory")
        return None
    col = Collection.open(out)
    _check_settings(col, model, precision, None, keep_float32)
    return col


def _precomputed_model(model: str | None) -> dict[str, Any] | None:
    """What a collection of precomputed vectors records of ``model`` (to embed text queries later), without
    loading it: the name and its known prompts; the dim is known for the packaged model (checked at index time),
    for others it is checked when a query first loads the model."""
    if model is None:
        return None
    from bitsearch.encode import DEFAULT_MODEL, DEFAULT_MODEL_DIM, canonical_model_name, known_prompts

    name = canonical_model_name(model)
    query, document = known_prompts(name)
    return {
        "name": name,
        "dim": DEFAULT_MODEL_DIM if name == DEFAULT_MODEL else None,
        "truncate_dim": None,
        "normalize": True,
        "query_prompt": query,
        "document_prompt": document,
        "documents": "precomputed",  # the documents' vectors came with the input, not from this model
    }


def encode_in_steps(encoder: Encoder, texts: list[str], step: int, progress: tqdm | None = None) -> np.ndarray:
    """Embed documents shortest first (less padding per batch), `step` at a time for the progress bar."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    for i in range(0, len(texts), step):
        rows = order[i : i + step]
        out[rows] = encoder.encode_documents([texts[r] for r in rows])
        if progress is not None:
            progress.update(len(rows))
    return out


@dataclass
class IndexReport:
    added: int = 0
    already: int = 0
    bad: int = 0
    records: int = 0


def plural(n: int, word: str) -> str:
    """'1 document', '2 documents' (with thousands separators)."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _skipped_note(report: IndexReport) -> str:
    parts = []
    if report.already:
        parts.append(f"{report.already:,} already indexed")
    if report.bad:
        parts.append(f"{report.bad:,} malformed")
    return "skipped " + ", ".join(parts)


class LineProgress:
    """Progress for a log rather than a terminal: one line at most every `interval` seconds, with the
    rate and the time left, and nothing repeated at the end (a tqdm bar's \r updates pile up in a log)."""

    def __init__(self, total: int | None, interval: float = 10.0) -> None:
        self.total, self.interval, self.n, self.postfix = total, interval, 0, ""
        self.start = self.last = time.perf_counter()

    def update(self, n: int) -> None:
        self.n += n
        now = time.perf_counter()
        if now - self.last >= self.interval:
            self.last = now
            typer.echo(f"indexing: {self.describe(now)}", err=True)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def describe(self, now: float) -> str:
        rate = self.n / max(now - self.start, 1e-9)
        done = f"{self.n:,}" + (f"/{self.total:,}" if self.total else "") + " documents"
        eta = f", {(self.total - self.n) / rate:,.0f} s left" if self.total and rate > 0 else ""
        return f"{done}, {rate:,.1f} docs/s{eta}" + (f" ({self.postfix})" if self.postfix else "")

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def index_progress(total: int | None, quiet: bool) -> Any:
    """A tqdm bar on a terminal; periodic lines when stderr is a file or a pipe; nothing when quiet."""
    if not quiet and not sys.stderr.isatty():
        return LineProgress(total)
    from tqdm import tqdm

    return tqdm(total=total, unit="doc", desc="indexing", disable=quiet, dynamic_ncols=True, file=sys.stderr)


def index_records(
    records: Iterable[Doc | Bad],
    out: Path,
    encoder: Encoder | None,
    *,
    col: Collection | None,
    precision: str,
    keep_float32: bool,
    chunk_size: int,
    skip_bad: bool,
    keyword_index: bool = True,
    progress: tqdm | None = None,
    create_options: dict[str, Any] | None = None,
    model_info: dict[str, Any] | None = None,
) -> tuple[Collection | None, IndexReport]:
    """Encode and add records chunk by chunk; ids already in the collection are skipped (resume).

    ``encoder`` None: the records carry their vectors (--vector-field), all of one dim (the collection's, else
    the first record's); ``model_info`` is then the model a new collection records for text queries, or None.
    """
    report = IndexReport()
    seen: set[str] = set()
    step = max(1, encoder.batch_size * 8) if encoder is not None else 0
    dim = col.dim if col is not None else None
    for chunk in _batched(records, chunk_size):
        report.records += len(chunk)
        docs: list[Doc] = []
        for rec in chunk:
            if isinstance(rec, Doc) and rec.id in seen:
                rec = Bad(rec.where, f"duplicate id {rec.id!r}")
            if isinstance(rec, Doc) and encoder is None and rec.vector is not None:
                dim = dim or len(rec.vector)
                if len(rec.vector) != dim:
                    earlier = "the collection holds" if col is not None else "earlier records have"
                    rec = Bad(rec.where, f"vector has {len(rec.vector)} dimensions; {earlier} {dim}")
            if isinstance(rec, Bad):
                if not skip_bad:
                    raise CliError(f"{rec.where}: {rec.reason} (pass --skip-bad to skip such records)")
                report.bad += 1
                continue
            seen.add(rec.id)
            docs.append(rec)
        if col is not None and docs:
            existing = set(col.existing_ids([d.id for d in docs]))
            report.already += len(existing)
            docs = [d for d in docs if d.id not in existing]
        if progress is not None:
            if report.already or report.bad:
                progress.set_postfix_str(_skipped_note(report), refresh=False)
            progress.update(len(chunk) - len(docs))
        if not docs:
            continue
        if encoder is None:
            embeddings = np.stack([d.vector for d in docs])  # type: ignore[misc]
            if progress is not None:
                progress.update(len(docs))
        else:
            embeddings = encode_in_steps(encoder, [d.text or "" for d in docs], step, progress)
        if col is None:
            info = encoder.manifest_info() if encoder is not None else model_info
            if info is not None and info.get("dim") not in (None, embeddings.shape[1]):
                raise CliError(
                    f"model {info['name']!r} gives {info['dim']}-dim embeddings but the vectors have "
                    f"{embeddings.shape[1]}: name the model that made them, or none"
                )
            col = Collection.create(
                out,
                embeddings.shape[1],
                precision=precision,
                keep_int8=True,
                keep_float32=keep_float32,
                model=None if info is None else {**info, "dim": embeddings.shape[1]},
                truncate_dim=encoder.truncate_dim if encoder is not None else None,
                keyword_index=keyword_index,
                **(create_options or {}),
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="int8 ranges calibrated on only")
            col.add(
                embeddings, ids=[d.id for d in docs], texts=[d.text for d in docs], metadata=[d.metadata for d in docs]
            )
        report.added += len(docs)
    return col, report


@app.command()
def index(
    input: Annotated[
        Path, typer.Argument(help="BEIR corpus.jsonl, JSONL, CSV/TSV, Parquet, or a folder of .txt/.md files.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Collection directory (created, or continued if it exists).")
    ],
    model: Annotated[
        str | None,
        typer.Option(help="sentence-transformers model name or path (default: all-MiniLM-L6-v2, packaged)."),
    ] = None,
    precision: Annotated[Precision | None, typer.Option(help="Stage-1 codes kept in RAM (default: binary).")] = None,
    truncate_dim: Annotated[int | None, typer.Option(help="Keep the first N dimensions (Matryoshka models).")] = None,
    keep_float32: Annotated[
        bool, typer.Option("--keep-float32", help="Also keep float32 rows on disk for rescoring.")
    ] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per model forward pass.")] = 32,
    chunk_size: Annotated[int, typer.Option(min=1, help="Documents per atomic add (the unit of resuming).")] = 1000,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip malformed records instead of stopping.")] = False,
    keyword_index: Annotated[
        bool, typer.Option("--keyword-index/--no-keyword-index", help="Keep a BM25 index for keyword/hybrid search.")
    ] = True,
    stage1: Annotated[
        Stage1,
        typer.Option(
            help="binary: Hamming, asymmetric (float query vs bits), or auto (asymmetric when nothing rescores)."
        ),
    ] = Stage1.auto,
    centering: Annotated[
        bool, typer.Option("--centering", help="Subtract the corpus mean before binary/1.5bit/2bit codes.")
    ] = False,
    rotation: Annotated[
        bool | None,
        typer.Option(
            "--rotation/--no-rotation", help="Random orthogonal rotation before the codes (default: 2bit only)."
        ),
    ] = None,
    query_bits: Annotated[
        int | None,
        typer.Option(
            min=1, max=8, help="binary, asymmetric scoring: round the query to this many bits (popcounts per plane)."
        ),
    ] = None,
    text_field: Annotated[str, typer.Option(help="Field holding the text (JSONL, CSV, Parquet).")] = "text",
    id_field: Annotated[
        str | None, typer.Option(help="Field holding the id (default: _id, else id, else the record number).")
    ] = None,
    title_field: Annotated[
        str, typer.Option(help="Field prepended to the text when non-empty ('' for none).")
    ] = "title",
    vector_field: Annotated[
        str | None,
        typer.Option(
            help="Field holding each record's precomputed embedding (JSONL, Parquet): no model is loaded, and the "
            "text is optional. Queries then come as vectors, or as text embedded by --model (recorded, loaded "
            "only at query time).",
        ),
    ] = None,
    fmt: Annotated[
        InputFormat, typer.Option("--format", help="Input format (auto: from the file name).")
    ] = InputFormat.auto,
    device: Annotated[str, typer.Option(help="Torch device for the model.")] = "cpu",
    encoder_backend: Annotated[
        EncoderBackend | None,
        typer.Option(
            "--encoder",
            help="Model runtime: auto (torch for 1,000+ documents when installed, the faster there; else ONNX "
            "Runtime), onnx or torch. onnx-int8 is for queries only (search/serve --encoder): int8 document "
            "embeddings lost up to 0.76% NDCG@10 on the shared sets (docs/benchmarks.md).",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Index into a sharded collection on Ray (the cluster at --ray-address or RAY_ADDRESS, else a "
            "local Ray); reads JSONL, Parquet or a BEIR folder with Ray Data.",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(metavar="ADDRESS", help="The Ray cluster for --ray (host:port, ray://host:port, auto)."),
    ] = None,
    shards: Annotated[
        int | None, typer.Option(min=1, help="With --ray: shards of a new sharded collection (default: as it has).")
    ] = None,
    encoders: Annotated[
        int, typer.Option(min=1, help="With --ray: encoder actors (one GPU each when the cluster has GPUs).")
    ] = 1,
) -> None:
    """Embed documents and add them to a collection; re-running continues where a killed run stopped.

    Models other than the packaged default are downloaded once (HF_HUB_OFFLINE=1: cached copies only).
    With --ray (and --shards N), a Ray cluster encodes in parallel into a sharded collection.
    """
    with _reported("interrupted: documents added so far are kept; run the same command again to resume"):
        if encoder_backend is EncoderBackend.onnx_int8 and not _records_int8(out):
            raise CliError(
                "--encoder onnx-int8 embeds queries only: int8 document embeddings lost up to 0.76% NDCG@10 on "
                "the shared sets; index with the default (or onnx) and pass --encoder onnx-int8 to search or serve"
            )
        fields = Fields(text=text_field, id=id_field, title=title_field or None, vector=vector_field)
        if ray or ray_address:
            if vector_field is not None:
                raise CliError("--vector-field is not supported with --ray: index precomputed embeddings without it")
            _index_on_ray(
                input, out, ray_address, shards, encoders, fields, fmt.value, model, precision, truncate_dim,
                keep_float32, keyword_index, batch_size, chunk_size, skip_bad, encoder_backend, quiet,
                {"stage1": stage1.value, "centering": centering, "rotation": rotation,
                 **({"query_bits": query_bits} if query_bits else {})},
            )  # fmt: skip
            return
        if shards is not None or encoders != 1:
            raise CliError("--shards and --encoders go with --ray (indexing into a sharded collection on Ray)")
        records, total = read_input(input, fmt, fields, chunk_size)
        if not quiet and vector_field is None:
            typer.echo("loading the embedding model...", err=True)
        col: Collection | None = None
        encoder: Encoder | None = None
        if vector_field is not None:
            col = _precomputed_target(out, model, precision, truncate_dim, keep_float32, fmt, input)
        elif _is_collection(out):
            col = Collection.open(out)
            _check_settings(col, model, precision, truncate_dim, keep_float32)
            from bitsearch.encode import indexing_backend

            recorded = (col.manifest.get("model") or {}).get("encoder")
            backend = encoder_backend.value if encoder_backend else None
            if backend is None and recorded != "onnx-int8":  # int8 collections keep their int8 model
                backend = indexing_backend(total)
            encoder = _encoder_for(col, device=device, batch_size=batch_size, backend=backend)
        else:
            if out.exists() and (not out.is_dir() or any(out.iterdir())) and not interrupted_create(out):
                raise CliError(f"{out} exists and is neither a collection nor an empty directory")
            from bitsearch.encode import indexing_backend

            backend = encoder_backend.value if encoder_backend else indexing_backend(total)
            encoder = _load_encoder(
                model, device=device, batch_size=batch_size, truncate_dim=truncate_dim, backend=backend
            )
        start = time.perf_counter()
        with index_progress(total, quiet) as bar:
            col, report = index_records(
                records,
                out,
                encoder,
                col=col,
                precision=(precision or Precision.binary).value,
                keep_float32=keep_float32,
                chunk_size=chunk_size,
                skip_bad=skip_bad,
                keyword_index=keyword_index,
                progress=bar,
                model_info=_precomputed_model(model) if vector_field is not None else None,
                create_options={
                    "stage1": stage1.value,
                    "centering": centering,
                    "rotation": rotation,
                    **({"query_bits": query_bits} if query_bits else {}),
                },
            )
        elapsed = time.perf_counter() - start
        if report.records == 0:
            raise CliError(f"no documents found in {input}")
        if col is None:
            raise CliError(f"no valid documents in {input}: all {report.bad} records were malformed")
        rate = report.added / elapsed if elapsed > 0 else 0.0
        parts = [f"indexed {plural(report.added, 'document')} into {out} in {elapsed:.1f} s ({rate:,.1f} docs/s)"]
        if report.already:
            were = "was" if report.already == 1 else "were"
            parts.append(f"{plural(report.already, 'document')} already in the collection {were} skipped")
        if report.bad:
            parts.append(f"skipped {plural(report.bad, 'malformed record')}")
        typer.echo("; ".join(parts))
        typer.echo(f"the collection holds {plural(len(col), 'document')}")


def _index_on_ray(
    source: Path, out: Path, address: str | None, shards: int | None, encoders: int, fields: Fields, fmt: str,
    model: str | None, precision: Precision | None, truncate_dim: int | None, keep_float32: bool,
    keyword_index: bool, batch_size: int, chunk_size: int, skip_bad: bool, backend: EncoderBackend | None,
    quiet: bool, create_options: dict[str, Any],
) -> None:  # fmt: skip
    """`bitsearch index --ray`: bitsearch.distributed_index does the work; this reports it."""
    from bitsearch.distributed_index import index_distributed

    if not quiet:
        typer.echo("starting Ray and loading the embedding model...", err=True)
    start = time.perf_counter()
    with index_progress(None, quiet) as bar:
        col, report = index_distributed(
            source, out, shards=shards, address=address, encoders=encoders,
            fmt=fmt, fields=fields, model=model, precision=precision.value if precision else None,
            truncate_dim=truncate_dim, keep_float32=keep_float32, keyword_index=keyword_index,
            create_options=create_options, batch_size=batch_size, chunk_size=chunk_size, skip_bad=skip_bad,
            backend=backend.value if backend else None, progress=bar,
        )  # fmt: skip
    elapsed = time.perf_counter() - start
    if report.records == 0:
        raise CliError(f"no documents found in {source}")
    if col is None:
        raise CliError(f"no valid documents in {source}: all {report.bad} records were malformed")
    with col:
        rate = report.added / elapsed if elapsed > 0 else 0.0
        parts = [
            f"indexed {plural(report.added, 'document')} into {out} ({len(col.shard_names)} shards) "
            f"in {elapsed:.1f} s ({rate:,.1f} docs/s)"
        ]
        if report.already:
            were = "was" if report.already == 1 else "were"
            parts.append(f"{plural(report.already, 'document')} already in the collection {were} skipped")
        if report.bad:
            parts.append(f"skipped {plural(report.bad, 'malformed record')}")
        typer.echo("; ".join(parts))
        typer.echo(f"the collection holds {plural(len(col), 'document')}")


# ----------------------------------------------------------------------------- search


def _read_queries(source: str) -> list[tuple[str | None, str]]:
    """Queries from a file or stdin ('-'): one per line, or JSON lines with `text` (and `_id`/`id`)."""
    if source == "-":
        lines = sys.stdin.read().splitlines()
        is_jsonl = False
    else:
        path = Path(source)
        if not path.is_file():
            raise CliError(f"queries file {path} does not exist")
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
            raise CliError(f"{source}, line {lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
            raise CliError(f"{source}, line {lineno}: expected an object with a non-empty 'text' field")
        qid = row.get("_id", row.get("id"))
        queries.append((None if qid is None else str(qid), row["text"]))
    return queries


def read_query_vectors(path: Path) -> np.ndarray:
    """Query vectors from a .npy file (no pickles) or a .json file (a list of numbers, or a list of them)."""
    if not path.is_file():
        raise CliError(f"vector file {path} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            raw: Any = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise CliError(f"{path}: not a readable .npy array ({exc})") from None
    elif path.suffix.lower() == ".json":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CliError(f"{path}: invalid JSON ({exc})") from None
    else:
        raise CliError(f"{path}: give query vectors as .npy or .json")
    if isinstance(raw, np.ndarray):
        rows = raw[None] if raw.ndim == 1 else raw
    else:
        rows = [raw] if isinstance(raw, list) and raw and not isinstance(raw[0], list) else raw
    if isinstance(rows, np.ndarray) and rows.ndim != 2:
        raise CliError(f"{path}: expected one vector or a matrix of them, got shape {rows.shape}")
    if not isinstance(rows, (list, np.ndarray)) or len(rows) == 0:
        raise CliError(f"{path}: expected a list of numbers, or a list of such lists")
    out = []
    for i, row in enumerate(rows):
        vec = parse_vector(row.tolist() if isinstance(row, np.ndarray) else row)
        if isinstance(vec, str):
            raise CliError(f"{path}: vector {i} {vec}")
        if out and len(vec) != len(out[0]):
            raise CliError(f"{path}: vector {i} has {len(vec)} dimensions, vector 0 has {len(out[0])}")
        out.append(vec)
    return np.stack(out)


def _snippet(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


def _format_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _hits_table(hits: list[Any], width: int) -> list[str]:
    """Rows of rank, score, id and a snippet that fit `width` columns."""
    if not hits:
        return ["  (no results)"]
    id_width = min(32, max(2, *(len(str(h.id)) for h in hits)))
    lines = [f"{'rank':>4}  {'score':>7}  {'id':<{id_width}}  text"]
    room = max(20, width - id_width - 19)
    for rank, hit in enumerate(hits, 1):
        doc_id = _snippet(str(hit.id), id_width)
        lines.append(f"{rank:>4}  {hit.score:>7.4f}  {doc_id:<{id_width}}  {_snippet(hit.text, room)}")
    return lines


@app.command()
def search(
    collection: Annotated[Path, typer.Argument(help="Collection directory.")],
    queries: Annotated[
        list[str] | None, typer.Argument(help="Query texts ('-' reads one query per line from stdin).")
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Results per query.")] = 10,
    rescore_multiplier: Annotated[
        int, typer.Option(min=1, help="Stage 1 keeps k x this many candidates to rescore.")
    ] = 4,
    rescore: Annotated[Rescore, typer.Option(help="Rows that rescore the stage-1 candidates.")] = Rescore.int8,
    queries_file: Annotated[
        str | None, typer.Option(help="One query per line (or JSON lines with 'text'); '-': stdin.")
    ] = None,
    mode: Annotated[
        Mode, typer.Option(help="dense vectors, keyword (BM25), or hybrid (both, fused by RRF).")
    ] = Mode.dense,
    filter_json: Annotated[
        str | None,
        typer.Option(
            "--filter", help='Metadata filter as JSON, e.g. \'{"lang": "en"}\' or \'{"year": {"$gte": 2020}}\'.'
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    device: Annotated[str, typer.Option(help="Torch device for the model.")] = "cpu",
    encoder_backend: Annotated[
        EncoderBackend | None,
        typer.Option("--encoder", help="Model runtime for the queries (default: the one the collection records)."),
    ] = None,
    vector_file: Annotated[
        Path | None,
        typer.Option(
            help="Query vectors instead of embedding text: .npy (one vector or a matrix) or .json (a list of "
            "numbers, or of lists); query texts, if given too, serve keyword/hybrid modes, one per vector.",
        ),
    ] = None,
) -> None:
    """Search a collection with text queries, embedded by the model the collection was built with (or vectors)."""
    with _reported():
        flt = None
        if filter_json is not None:
            try:
                flt = json.loads(filter_json)
            except json.JSONDecodeError as exc:
                raise CliError(f"--filter is not valid JSON ({exc.msg}): {filter_json}") from None
        items: list[tuple[str | None, str]] = []
        for q in queries or []:
            items.extend(_read_queries("-") if q == "-" else [(None, q)])
        if queries_file is not None:
            items.extend(_read_queries(queries_file))
        given = read_query_vectors(vector_file) if vector_file is not None else None
        if given is not None and items and len(items) != len(given):
            raise CliError(f"{len(items)} query texts for {len(given)} query vectors: give one text per vector")
        if given is not None and not items and mode is not Mode.dense:
            raise CliError(f"--mode {mode.value} ranks query text: give the query texts too, one per vector")
        if not items and given is None:
            raise CliError("no queries: give query text, --queries-file FILE, '-' to read stdin, or --vector-file")
        if not _is_collection(collection):
            raise CliError(f"{collection} is not a bitsearch collection (no {MANIFEST})")
        backend = encoder_backend.value if encoder_backend else None
        early = None
        if mode is not Mode.keyword and given is None:  # the model loads while the collection opens
            early = _early_encoder(collection, device=device, backend=backend)
        col = Collection.open(collection)
        if given is not None and given.shape[1] != col.dim:
            raise CliError(f"{vector_file} holds {given.shape[1]}-dim vectors; {collection} holds {col.dim}")
        items = items or [(None, f"vector {i}") for i in range(len(given))]  # type: ignore[arg-type]
        texts = [text for _, text in items]
        vectors = given
        timings: dict[str, float] = {}
        if mode is not Mode.keyword and given is None:  # keyword search needs no model
            encoder = _encoder_for(col, early, device=device, backend=backend)
            # one-time costs (torch's first forward pass, loading the compiled kernels) stay out of the timings
            col.search(encoder.encode_queries(texts[:1]), k=1, rescore=None, with_text=False)
            t0 = time.perf_counter()
            vectors = encoder.encode_queries(texts)
            timings["encode"] = time.perf_counter() - t0
        results = col.search(
            vectors,
            k=k,
            rescore_multiplier=rescore_multiplier,
            rescore=None if rescore is Rescore.none else rescore.value,
            mode=mode.value,
            query_texts=texts if given is None or mode is not Mode.dense else None,
            filter=flt,
        )
        timings.update(results.timings)
        for note in results.warnings:
            typer.secho(f"warning: {note}", err=True, fg="yellow")
        if as_json:
            payload = {
                "collection": str(collection),
                "k": k,
                "mode": mode.value,
                "stages": results.stages,
                "timings": timings,
                "warnings": results.warnings,
                "results": [
                    {
                        "query": text,
                        "query_id": qid,
                        "hits": [{"rank": r, **hit.to_dict()} for r, hit in enumerate(hits, 1)],
                    }
                    for (qid, text), hits in zip(items, results, strict=True)
                ],
            }
            typer.echo(json.dumps(payload, ensure_ascii=False, indent=1))
            return
        width = shutil.get_terminal_size((100, 24)).columns
        for (qid, text), hits in zip(items, results, strict=True):
            label = f"[{qid}] " if qid is not None else ""
            typer.secho(f"query: {label}{text}", bold=True)
            typer.echo("\n".join(_hits_table(hits, width)))
            typer.echo("")
        stages = " -> ".join(results.stages)
        per = " · ".join(f"{name} {_format_ms(sec)}" for name, sec in timings.items())
        many = f" for {len(items)} queries" if len(items) > 1 else ""
        typer.echo(f"stages: {stages}; time{many}: {per}")


# ----------------------------------------------------------------------------- info


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} TiB"  # pragma: no cover


def describe(col: Collection) -> dict[str, Any]:
    """Everything `info` shows, as one JSON-ready dict (the collection's stats plus path and settings)."""
    stats = dict(col.stats())
    m = col.manifest
    stats["path"] = str(col.path)
    stats["keep_int8"] = bool(m.get("keep_int8"))
    stats["keep_float32"] = bool(m.get("keep_float32"))
    return stats


@app.command()
def info(
    collection: Annotated[Path, typer.Argument(help="Collection directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Describe a collection: documents, model, precision and memory per stage."""
    with _reported():
        if not _is_collection(collection):
            raise CliError(f"{collection} is not a bitsearch collection (no {MANIFEST})")
        col = Collection.open(collection)
        stats = describe(col)
        if as_json:
            typer.echo(json.dumps(stats, ensure_ascii=False, indent=1))
            return
        model = stats.get("model") or {}
        lines = [
            f"collection   {stats['path']}",
            f"documents    {stats['documents']:,} (rows {stats['rows']:,}, deleted {stats['deleted']:,}, "
            f"segments {stats['segments']:,})",
            f"model        {model.get('name', '(none recorded)')}"
            + (f" (documents embedded with {model['encoder']})" if model.get("encoder") else ""),
            f"dims         {stats['dim']}"
            + (" (truncated from the model's full size)" if stats.get("truncate_dim") else ""),
        ]
        if model.get("query_prompt") or model.get("document_prompt"):
            lines.append(f"prompts      query {model.get('query_prompt')!r}, document {model.get('document_prompt')!r}")
        kept = [s for s in ("int8", "float32") if stats.get(f"keep_{s}") and s != stats["precision"]]
        lines.append(f"precision    stage 1: {stats['precision']}; rescoring rows on disk: {', '.join(kept) or 'none'}")
        lines.append("")
        lines.append(f"{'stage':<10} {'RAM':>12} {'disk':>12}")
        for name, st in stats["stages"].items():
            lines.append(f"{name:<10} {_bytes(st['ram_bytes']):>12} {_bytes(st['disk_bytes']):>12}")
        lines.append(f"{'documents':<10} {'':>12} {_bytes(stats['docs_disk_bytes']):>12}   (texts and metadata)")
        lines.append(f"{'total':<10} {_bytes(stats['ram_bytes']):>12} {_bytes(stats['disk_bytes']):>12}")
        lines.append("")
        ratio = stats.get("compression_vs_float32")
        lines.append(
            f"float32 vectors would take {_bytes(stats['float32_bytes'])} in RAM; stage 1 here takes "
            f"{_bytes(stats['stages'][stats['precision']]['ram_bytes'])}"
            + (f" ({ratio:.1f}x smaller)" if ratio else "")
        )
        typer.echo("\n".join(lines))


# ----------------------------------------------------------------------------- demo

DEMO_QUERIES = [
    "how do I read a file line by line",
    "copy a directory tree recursively",
    "parse command line arguments",
    "what does the with statement do",
    "temporary file that is deleted automatically",
    "sort a list of dictionaries by a key",
]
_DEMO_SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtledemo", "test", "lib2to3", "pydoc_data"}


def _chunk_text(text: str, size: int = 1000) -> list[str]:
    """Split text into ~`size`-character passages (at most ~1.2 x size) at paragraph, line, then word boundaries."""
    pieces: list[str] = []
    for para in text.split("\n\n"):
        para = para.strip()
        while len(para) > size:
            cut = para.rfind("\n", 0, size)
            cut = cut if cut > size // 2 else para.rfind(" ", 0, size)
            cut = cut if cut > size // 2 else size
            pieces.append(para[:cut].strip())
            para = para[cut:].strip()
        if para:
            pieces.append(para)
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        if current and len(current) + 2 + len(piece) > size:
            chunks.append(current)
            current = piece
        else:
            current = f"{current}\n\n{piece}" if current else piece
    if current:
        chunks.append(current)
    merged: list[str] = []  # a short fragment (a heading, a last line) joins its neighbour
    for chunk in chunks:
        if merged and (len(chunk) < size // 5 or len(merged[-1]) < size // 5):
            merged[-1] = f"{merged[-1]}\n\n{chunk}"
        else:
            merged.append(chunk)
    return merged


def _module_docs(name: str) -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) of a stdlib module and its public functions, classes and methods.

    Read from the source with `ast`, so no module is imported (some have side effects).
    """
    stdlib = Path(sysconfig.get_path("stdlib"))
    source = next((p for p in (stdlib / f"{name}.py", stdlib / name / "__init__.py") if p.is_file()), None)
    if source is None:  # extension modules have no Python source
        return
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return
    doc = ast.get_docstring(tree)
    if doc:
        yield name, doc
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in tree.body:
        if not isinstance(node, defs) or node.name.startswith("_"):
            continue
        doc = ast.get_docstring(node)
        if doc and len(doc) > 40:
            yield f"{name}.{node.name}", doc
        if isinstance(node, ast.ClassDef):  # public methods too
            for member in node.body:
                if isinstance(member, defs[:2]) and not member.name.startswith("_"):
                    doc = ast.get_docstring(member)
                    if doc and len(doc) > 40:
                        yield f"{name}.{node.name}.{member.name}", doc


def python_doc_passages(limit: int) -> list[Doc]:
    """Up to `limit` passages of Python's own documentation, the most useful first.

    Order: each stdlib module's summary (first passage of its docstring), the language reference
    topics of `pydoc_data`, then the rest (more module text, function and class docstrings) in a
    fixed random order, so any limit gives a spread of the standard library.
    """
    import pydoc_data.topics

    names = sorted(n for n in sys.stdlib_module_names if not n.startswith("_") and n not in _DEMO_SKIP)
    summaries: list[Doc] = []
    rest: list[Doc] = []
    for name in names:
        for qualname, doc in _module_docs(name):
            source = "module docstring" if qualname == name else "docstring"
            for i, chunk in enumerate(_chunk_text(doc)):
                passage = Doc(f"{qualname}#{i}", f"{qualname}\n{chunk}", {"source": source}, qualname)
                (summaries if qualname == name and i == 0 else rest).append(passage)
    topics = [
        Doc(f"topic:{topic}#{i}", f"{topic}\n{chunk}", {"source": "language reference"}, topic)
        for topic, text in sorted(pydoc_data.topics.topics.items())
        for i, chunk in enumerate(_chunk_text(text))
    ]
    random.Random(0).shuffle(rest)
    return (summaries + topics + rest)[:limit]


def _time_search(col: Collection, vectors: np.ndarray, k: int, rescore: str | None, repeat: int = 20) -> float:
    """Seconds per query, one query at a time: each query's fastest of `repeat` runs (robust to a busy
    machine), median over the queries."""
    best = np.full(len(vectors), np.inf)
    for _ in range(repeat):
        for i, q in enumerate(vectors):
            t0 = time.perf_counter()
            col.search(q, k=k, rescore=rescore, with_text=False)
            best[i] = min(best[i], time.perf_counter() - t0)
    return float(np.median(best))


@app.command()
def demo(
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Keep the two collections here (default: a temporary folder)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=10, help="Passages of Python documentation to index.")] = 2000,
    query: Annotated[
        list[str] | None, typer.Option("--query", help="Queries to run (repeatable) (default: a few samples).")
    ] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Results per query.")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per model forward pass.")] = 32,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Index Python's own documentation twice (float32 and binary + int8 rescoring) and compare them."""
    with _reported(), contextlib.ExitStack() as stack:
        if out is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bitsearch-demo-")))
        else:
            root = out
            for sub in ("float32", "binary"):
                if (root / sub).exists():
                    raise CliError(f"{root / sub} already exists; choose another --out")
        _run_demo(root, limit, query or DEMO_QUERIES, k, batch_size, quiet, keep=out is not None)


def _run_demo(root: Path, limit: int, queries: list[str], k: int, batch_size: int, quiet: bool, keep: bool) -> None:
    """Embed the passages once, store them as float32 and as binary (+ int8 rows), compare the two."""
    from tqdm import tqdm

    typer.echo("collecting passages from Python's documentation (pydoc topics, stdlib docstrings)...")
    docs = python_doc_passages(limit)
    encoder = _load_encoder(None, batch_size=batch_size)
    typer.echo(f"embedding {len(docs):,} passages with {encoder.name} ({encoder.dim} dims)...")
    start = time.perf_counter()
    with tqdm(total=len(docs), unit="doc", desc="embedding", disable=quiet, file=sys.stderr) as bar:
        embeddings = encode_in_steps(encoder, [d.text for d in docs], max(1, batch_size * 8), bar)
    typer.echo(f"embedded in {time.perf_counter() - start:.1f} s")
    ids = [d.id for d in docs]
    texts = [d.text for d in docs]
    meta = [d.metadata for d in docs]
    cols: dict[str, Collection] = {}
    for name, precision in (("float32", "float32"), ("binary", "binary")):
        col = Collection.create(
            root / name,
            encoder.dim,
            precision=precision,
            calibration_embeddings=embeddings,
            model=encoder.manifest_info(),
        )
        col.add(embeddings, ids=ids, texts=texts, metadata=meta)
        cols[name] = col
    qvecs = encoder.encode_queries(queries)
    exact = cols["float32"].search(qvecs, k=k, rescore=None)
    quant = cols["binary"].search(qvecs, k=k, rescore_multiplier=4, rescore="int8")
    width = shutil.get_terminal_size((120, 24)).columns
    half = max(30, (width - 8) // 2)
    agree = 0
    for text, a, b in zip(queries, exact, quant, strict=True):
        overlap = {h.id for h in a} & {h.id for h in b}
        agree += len(overlap)
        typer.echo("")
        typer.secho(f"query: {text}", bold=True)
        typer.echo(f"{'#':>2}  {'float32 (exact)':<{half}}  binary + int8 rescore")
        for rank in range(k):
            left = _demo_cell(a[rank] if rank < len(a) else None, half)
            right = _demo_cell(b[rank] if rank < len(b) else None, half)
            typer.echo(f"{rank + 1:>2}  {left:<{half}}  {right}")
    f32, b1 = cols["float32"].stats(), cols["binary"].stats()
    t_f32 = _time_search(cols["float32"], qvecs, k, None)
    t_b1 = _time_search(cols["binary"], qvecs, k, "int8")
    typer.echo("")
    typer.echo(f"{'':<24}{'float32':>14}{'binary + int8':>16}")
    typer.echo(f"{'vectors in RAM':<24}{_bytes(f32['ram_bytes']):>14}{_bytes(b1['ram_bytes']):>16}")
    typer.echo(f"{'on disk (with texts)':<24}{_bytes(f32['disk_bytes']):>14}{_bytes(b1['disk_bytes']):>16}")
    typer.echo(f"{'search, per query':<24}{_format_ms(t_f32):>14}{_format_ms(t_b1):>16}")
    total = k * len(queries)
    typer.echo(
        f"binary + int8 rescoring found {agree}/{total} ({agree / total:.0%}) of float32's top-{k} results "
        f"with {f32['ram_bytes'] / max(1, b1['ram_bytes']):.1f}x less RAM"
    )
    if keep:
        typer.echo(f"collections kept: {root / 'float32'} and {root / 'binary'} (try `bitsearch info` on them)")


def _demo_cell(hit: Any, width: int) -> str:
    if hit is None:
        return ""
    return _snippet(f"{hit.score:.3f} {hit.id}: {(hit.text or '').split(chr(10), 1)[-1]}", width)


# ----------------------------------------------------------------------------- eval


@app.command("eval")
def eval_(
    dataset: Annotated[
        Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv (each may be .gz).")
    ],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="sentence-transformers model (default: all-MiniLM-L6-v2).")
    ] = None,
    configs: Annotated[
        str | None,
        typer.Option(
            "--configs",
            "-c",
            help="Comma-separated configuration names or globs, e.g. 'binary,binary+int8@*,int8/d128', "
            "'keyword' (BM25), 'hybrid:binary+int8@4' or 'hybrid:*' (default: the full grid; float32 always "
            "runs as the reference).",
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for <dataset>.md, .json and PNG plots.")] = Path(
        "eval-out"
    ),
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="Search depth and cutoff of NDCG and MRR.")] = 10,
    recall_k: Annotated[int, typer.Option("--recall-k", min=1, help="Search depth and cutoff of Recall.")] = 100,
    split: Annotated[str, typer.Option(help="qrels file to score against: qrels/<split>.tsv.")] = "test",
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per model forward pass.")] = 32,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the PNG plots.")] = True,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="Cap BLAS and numba threads while searching (steadier latencies on a busy machine)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
    collection: Annotated[
        Path | None,
        typer.Option(
            help="Read the document embeddings from this collection (bitsearch index --keep-float32 of the same "
            "corpus) instead of embedding the corpus again; queries use its model."
        ),
    ] = None,
) -> None:
    """Measure what each precision costs on a BEIR dataset: NDCG/Recall/MRR, bytes, build time, latency."""
    with _reported():
        try:
            import matplotlib  # noqa: F401
            import ranx  # noqa: F401

            from bitsearch import evaluate as ev
        except ImportError as exc:
            raise CliError(f"bitsearch eval needs ranx and matplotlib ({exc}): pip install 'bitsearch[eval]'") from None
        ds = ev.load_dataset(dataset, split=split)
        embeddings = None
        if collection is not None:
            if not _is_collection(collection):
                raise CliError(f"{collection} is not a bitsearch collection (no {MANIFEST})")
            encoder = _encoder_for(Collection.open(collection), batch_size=batch_size)
            if model is not None and encoder.name != _load_encoder(model, batch_size=batch_size).name:
                raise CliError(f"--model {model} differs from the model of {collection} ({encoder.name})")
            docs = ev.collection_embeddings(ds, collection, encoder.name)
            embeddings = (docs, ev.cached_embeddings(ds.query_texts, "queries", encoder))
            source = f"document embeddings read from {collection} (not embedded again)"
        else:
            encoder = _load_encoder(model, batch_size=batch_size)
            source = "document embeddings from the cache, or embedded now"
        typer.echo(
            f"{ds.name}: {len(ds.doc_ids):,} documents, {len(ds.query_ids):,} judged queries; "
            f"model {encoder.name} ({encoder.dim} dims); {source}",
            err=True,
        )
        report = ev.evaluate(
            ds,
            encoder,
            configs=configs,
            k=k,
            recall_k=recall_k,
            embeddings=embeddings,
            progress=not quiet,
            threads=threads,
        )
        command = " ".join(
            ["bitsearch eval", str(dataset)]
            + ([f"--model {model}"] if model else [])
            + ([f"--configs '{configs}'"] if configs else [])
            + ([f"--k {k}"] if k != 10 else [])
            + ([f"--recall-k {recall_k}"] if recall_k != 100 else [])
            + ([f"--split {split}"] if split != "test" else [])
            + ([f"--threads {threads}"] if threads else [])
            + ([f"--collection {collection}"] if collection else [])
            + [f"--out {out}"]
        )
        paths = ev.write_report(report, out, plots=plots, command=command)
        typer.echo(ev.markdown_table(report))
        typer.echo("wrote " + ", ".join(str(p) for p in paths.values()), err=True)


def _records_int8(out: Path) -> bool:
    """Whether `out` is a collection indexed with int8 document embeddings (older versions allowed it)."""
    if not _is_collection(out):
        return False
    return (Collection.open(out).manifest.get("model") or {}).get("encoder") == "onnx-int8"


@app.command("serve")
def serve(
    collection: Annotated[Path, typer.Argument(help="Collection directory.")],
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="BITSEARCH_API_KEY",
            help="Require 'Authorization: Bearer KEY' or 'X-API-Key: KEY' on every route but /health and the page.",
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="Requests worked on at once (default: 4 x cores, at least 8).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME",
            help="Without --api-key, a Host name to answer besides localhost, 127.0.0.1 and [::1] (repeatable; "
            "'*': any). Other names get 421, so web pages cannot reach the server through DNS rebinding.",
        ),
    ] = None,
    header_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a connection may take to send complete request headers.")
    ] = 10.0,
    body_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a client may take to send a whole request body (else 408).")
    ] = 30.0,
    max_connections: Annotated[
        int,
        typer.Option(min=1, help="Open connections at most; past it the oldest connection not being served is closed."),
    ] = 1000,
    batch_window_ms: Annotated[
        float,
        typer.Option(
            min=0,
            max=100,
            help="Concurrent /search requests share encoder and search calls; a free worker waits at most this "
            "long for requests on their way (0: no batching).",
        ),
    ] = 1.0,
    access_log: Annotated[bool, typer.Option(help="Log every request (uvicorn's access log, at info level).")] = False,
    encoder_backend: Annotated[
        EncoderBackend | None,
        typer.Option(
            "--encoder",
            help="Model runtime for text queries (default: the one the collection records); onnx-int8 embeds "
            "queries with int8 weights, about 2x less CPU, within 0.1% NDCG@10 on the shared sets.",
        ),
    ] = None,
) -> None:
    """Serve a collection over HTTP: POST /search, POST /documents, DELETE /documents/ID, GET /info, a page at /.

    A sharded collection (sharded.json) is served through its shard actors on Ray (RAY_ADDRESS: a running
    cluster; else a local one is started).
    """
    with _reported():
        try:
            import uvicorn  # noqa: F401  (checked here, used by run_server)

            from bitsearch.server import create_app, run_server
        except ImportError as exc:
            raise CliError(
                f"bitsearch serve needs fastapi and uvicorn ({exc}): pip install 'bitsearch[server]'"
            ) from None
        if not _is_collection(collection) and not (collection / "sharded.json").is_file():
            raise CliError(f"{collection} is not a bitsearch collection (no {MANIFEST}, nor sharded.json)")
        hosts = list(allowed_host or [])
        if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
            typer.secho(
                f"warning: serving on {host} without --api-key: anyone who can reach it can add and delete"
                + ("" if hosts else " (and only loopback Host names are answered: add --allowed-host NAME)"),
                fg=typer.colors.YELLOW,
                err=True,
            )
            if host not in ("0.0.0.0", "::", ""):
                hosts.append(host)  # the address itself is a name no rebinding page can give
        api = create_app(
            collection,
            api_key=api_key,
            threads=threads,
            preload_model=True,
            body_timeout=body_timeout,
            allowed_hosts=hosts,
            batch_window_ms=batch_window_ms,
            encoder_backend=encoder_backend.value if encoder_backend else None,
        )
        run_server(
            api,
            host=host,
            port=port,
            log_level=log_level,
            header_timeout=header_timeout,
            max_connections=max_connections,
            access_log=access_log,
        )


if __name__ == "__main__":  # pragma: no cover
    main()
