"""Resumable, chunked indexing of records into a collection: the engine of ``bitsearch index``.

Library-level (no command-line machinery): records come from ``bitsearch.readers``; each chunk is embedded
(or carries its vectors) and added atomically, so a killed run leaves whole chunks, and re-running skips the
ids already stored. The Ray indexer (``distributed_index``) shares the report and the settings check.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bitsearch import Collection
from bitsearch.errors import CollectionError, InvalidInputError
from bitsearch.readers import Bad, Doc
from bitsearch.storage.paths import interrupted_create

if TYPE_CHECKING:  # imported lazily: loading the encoder module is the caller's choice
    from bitsearch.encode import Encoder

__all__ = [
    "IndexOptions",
    "IndexReport",
    "Progress",
    "batched",
    "check_new_target",
    "check_settings",
    "encode_in_steps",
    "index_records",
    "precomputed_model",
]


class Progress(Protocol):
    """What ``index_records`` reports progress to (a tqdm bar fits)."""

    def update(self, n: int) -> Any: ...

    def set_postfix_str(self, text: str, refresh: bool = True) -> Any: ...


@dataclass(frozen=True)
class IndexOptions:
    """How records are indexed: the codes of a new collection (see ``Collection.create``) and the walk."""

    precision: str = "binary"
    keep_float32: bool = False
    keyword_index: bool = True
    stage1: str = "auto"
    centering: bool = False
    rotation: bool | None = None  # None: the precision's default
    query_bits: int | None = None
    chunk_size: int = 1000  # documents per atomic add: the unit of resuming
    skip_bad: bool = False  # skip malformed records (counted) instead of stopping at the first

    def create_options(self) -> dict[str, Any]:
        """``Collection.create``'s code options besides the precision and the rows kept."""
        extra = {"query_bits": self.query_bits} if self.query_bits else {}
        return {"stage1": self.stage1, "centering": self.centering, "rotation": self.rotation, **extra}


@dataclass
class IndexReport:
    """What an indexing run did: documents added, skipped as already stored, skipped as malformed, records read."""

    added: int = 0
    already: int = 0
    bad: int = 0
    records: int = 0

    def skipped_note(self) -> str:
        """'skipped 3 already indexed, 1 malformed': the progress bar's postfix."""
        parts = [f"{self.already:,} already indexed"] if self.already else []
        if self.bad:
            parts.append(f"{self.bad:,} malformed")
        return "skipped " + ", ".join(parts)


def batched(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    """Lists of ``n`` items (the last may be shorter)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def check_new_target(out: Path) -> None:
    """Refuse to create a collection at ``out`` unless it is absent, empty, or a create that was killed midway."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not interrupted_create(out):
        raise CollectionError(f"{out} exists and is neither a collection nor an empty directory")


def check_settings(
    where: str,
    recorded: Mapping[str, Any],
    dim: int,
    *,
    model: str | None,
    precision: str | None,
    truncate_dim: int | None,
    keep_float32: bool,
) -> None:
    """Refuse to continue a collection (``recorded``: the settings its manifest records) with other settings."""
    from bitsearch.encode import canonical_model_name

    built = (recorded.get("model") or {}).get("name")
    if model is not None and built is not None and canonical_model_name(model) != built:
        raise InvalidInputError(
            f"{where} was built with model {built!r}, not {model!r}: "
            "re-run without --model to add to it, or index into a new directory"
        )
    have = recorded.get("precision", "binary")
    if precision is not None and precision != have:
        raise InvalidInputError(f"{where} has precision {have!r}, not {precision!r}")
    if truncate_dim is not None and truncate_dim != (recorded.get("truncate_dim") or dim):
        raise InvalidInputError(
            f"{where} was built with truncate_dim {recorded.get('truncate_dim')}, not {truncate_dim}"
        )
    if keep_float32 and not recorded.get("keep_float32"):
        raise InvalidInputError(
            f"{where} was built without --keep-float32; index into a new directory to keep float32 rows"
        )


def precomputed_model(model: str | None) -> dict[str, Any] | None:
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


def encode_in_steps(encoder: Encoder, texts: list[str], step: int, progress: Progress | None = None) -> np.ndarray:
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
class _Triage:
    """Sorts a chunk's records into documents to add and malformed ones, across chunks: ids seen so far and,
    for records that carry their vectors, the dim they must all have."""

    report: IndexReport
    skip_bad: bool
    vectors: bool  # the records carry their vectors (no encoder)
    dim: int | None  # the collection's, else the first vector's
    continuing: bool  # a collection existed before this run (for the dim message)

    def __post_init__(self) -> None:
        self.seen: set[str] = set()

    def docs(self, chunk: list[Doc | Bad]) -> list[Doc]:
        docs: list[Doc] = []
        for rec in chunk:
            if isinstance(rec, Doc):
                rec = self._check(rec)
            if isinstance(rec, Bad):
                if not self.skip_bad:
                    raise InvalidInputError(f"{rec.where}: {rec.reason} (pass --skip-bad to skip such records)")
                self.report.bad += 1
                continue
            self.seen.add(rec.id)
            docs.append(rec)
        return docs

    def _check(self, rec: Doc) -> Doc | Bad:
        if rec.id in self.seen:
            return Bad(rec.where, f"duplicate id {rec.id!r}")
        if self.vectors and rec.vector is not None:
            self.dim = self.dim or len(rec.vector)
            if len(rec.vector) != self.dim:
                earlier = "the collection holds" if self.continuing else "earlier records have"
                return Bad(rec.where, f"vector has {len(rec.vector)} dimensions; {earlier} {self.dim}")
        return rec


def _create(
    out: Path, dim: int, encoder: Encoder | None, model_info: dict[str, Any] | None, options: IndexOptions
) -> Collection:
    """The new collection, on the first chunk with documents (its dim is theirs)."""
    info = encoder.manifest_info() if encoder is not None else model_info
    if info is not None and info.get("dim") not in (None, dim):
        raise InvalidInputError(
            f"model {info['name']!r} gives {info['dim']}-dim embeddings but the vectors have {dim}: "
            "name the model that made them, or none"
        )
    return Collection.create(
        out,
        dim,
        precision=options.precision,
        keep_int8=True,
        keep_float32=options.keep_float32,
        model=None if info is None else {**info, "dim": dim},
        truncate_dim=encoder.truncate_dim if encoder is not None else None,
        keyword_index=options.keyword_index,
        **options.create_options(),
    )


def index_records(
    records: Iterable[Doc | Bad],
    out: Path,
    encoder: Encoder | None,
    *,
    col: Collection | None,
    options: IndexOptions,
    progress: Progress | None = None,
    model_info: dict[str, Any] | None = None,
) -> tuple[Collection | None, IndexReport]:
    """Encode and add records chunk by chunk; ids already in the collection are skipped (resume).

    ``col`` None: a collection is created at ``out`` with the first chunk that holds documents. ``encoder``
    None: the records carry their vectors (--vector-field), all of one dim (the collection's, else the first
    record's); ``model_info`` is then the model a new collection records for text queries, or None.
    """
    report = IndexReport()
    triage = _Triage(report, options.skip_bad, encoder is None, col.dim if col is not None else None, col is not None)
    step = max(1, encoder.batch_size * 8) if encoder is not None else 0
    for chunk in batched(records, options.chunk_size):
        report.records += len(chunk)
        docs = triage.docs(chunk)
        if col is not None and docs:
            existing = set(col.existing_ids([d.id for d in docs]))
            report.already += len(existing)
            docs = [d for d in docs if d.id not in existing]
        if progress is not None:
            if report.already or report.bad:
                progress.set_postfix_str(report.skipped_note(), refresh=False)
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
            col = _create(out, embeddings.shape[1], encoder, model_info, options)
            triage.continuing = True
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="int8 ranges calibrated on only")
            col.add(
                embeddings, ids=[d.id for d in docs], texts=[d.text for d in docs], metadata=[d.metadata for d in docs]
            )
        report.added += len(docs)
    return col, report
