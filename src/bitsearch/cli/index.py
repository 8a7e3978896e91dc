"""`bitsearch index`: read an input, embed it (or take its vectors), add it to a collection chunk by chunk,
on this machine (``bitsearch.indexing``) or on Ray (``bitsearch.distributed_index``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bitsearch import Collection
from bitsearch.cli import models
from bitsearch.cli.common import CliError, app, is_collection, reported
from bitsearch.cli.options import BatchSize, Device, EncoderBackend, InputFormat, Precision, Stage1, value
from bitsearch.cli.output import index_progress, plural
from bitsearch.indexing import (
    IndexOptions,
    IndexReport,
    check_new_target,
    check_settings,
    index_records,
    precomputed_model,
)
from bitsearch.readers import Fields, beir_corpus, detect_format, read_input

if TYPE_CHECKING:
    from bitsearch.encode import Encoder

__all__ = ["index"]

_INT8_DOCUMENTS = "onnx-int8"  # the backend that embeds queries only (int8 document embeddings lose quality)

# the options of `bitsearch index` (named here: the command's signature stays readable)
Input = Annotated[
    Path, typer.Argument(help="BEIR corpus.jsonl, JSONL, CSV/TSV, Parquet, or a folder of .txt/.md files.")
]
Out = Annotated[Path, typer.Option("--out", "-o", help="Collection directory (created, or continued if it exists).")]
Model = Annotated[
    str | None, typer.Option(help="sentence-transformers model name or path (default: all-MiniLM-L6-v2, packaged).")
]
PrecisionOpt = Annotated[Precision | None, typer.Option(help="Stage-1 codes kept in RAM (default: binary).")]
TruncateDim = Annotated[int | None, typer.Option(help="Keep the first N dimensions (Matryoshka models).")]
KeepFloat32 = Annotated[bool, typer.Option("--keep-float32", help="Also keep float32 rows on disk for rescoring.")]
ChunkSize = Annotated[int, typer.Option(min=1, help="Documents per atomic add (the unit of resuming).")]
SkipBad = Annotated[bool, typer.Option("--skip-bad", help="Skip malformed records instead of stopping.")]
KeywordIndex = Annotated[
    bool, typer.Option("--keyword-index/--no-keyword-index", help="Keep a BM25 index for keyword/hybrid search.")
]
Stage1Opt = Annotated[
    Stage1,
    typer.Option(help="binary: Hamming, asymmetric (float query vs bits), or auto (asymmetric when nothing rescores)."),
]
Centering = Annotated[
    bool, typer.Option("--centering", help="Subtract the corpus mean before binary/1.5bit/2bit codes.")
]
Rotation = Annotated[
    bool | None,
    typer.Option("--rotation/--no-rotation", help="Random orthogonal rotation before the codes (default: 2bit only)."),
]
QueryBits = Annotated[
    int | None,
    typer.Option(
        min=1, max=8, help="binary, asymmetric scoring: round the query to this many bits (popcounts per plane)."
    ),
]
TextField = Annotated[str, typer.Option(help="Field holding the text (JSONL, CSV, Parquet).")]
IdField = Annotated[
    str | None, typer.Option(help="Field holding the id (default: _id, else id, else the record number).")
]
TitleField = Annotated[str, typer.Option(help="Field prepended to the text when non-empty ('' for none).")]
VectorField = Annotated[
    str | None,
    typer.Option(
        help="Field holding each record's precomputed embedding (JSONL, Parquet): no model is loaded, and the "
        "text is optional. Queries then come as vectors, or as text embedded by --model (recorded, loaded "
        "only at query time).",
    ),
]
Format = Annotated[InputFormat, typer.Option("--format", help="Input format (auto: from the file name).")]
Backend = Annotated[
    EncoderBackend | None,
    typer.Option(
        "--encoder",
        help="Model runtime: auto (torch for 1,000+ documents when installed, the faster there; else ONNX "
        "Runtime), onnx or torch. onnx-int8 is for queries only (search/serve --encoder): int8 document "
        "embeddings lost up to 0.76% NDCG@10 on the shared sets (docs/benchmarks.md).",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
Ray = Annotated[
    bool,
    typer.Option(
        "--ray",
        help="Index into a sharded collection on Ray (the cluster at --ray-address or RAY_ADDRESS, else a "
        "local Ray); reads JSONL, Parquet or a BEIR folder with Ray Data.",
    ),
]
RayAddress = Annotated[
    str | None, typer.Option(metavar="ADDRESS", help="The Ray cluster for --ray (host:port, ray://host:port, auto).")
]
Shards = Annotated[
    int | None, typer.Option(min=1, help="With --ray: shards of a new sharded collection (default: as it has).")
]
Encoders = Annotated[
    int, typer.Option(min=1, help="With --ray: encoder actors (one GPU each when the cluster has GPUs).")
]


@app.command()
def index(
    input: Input,
    out: Out,
    model: Model = None,
    precision: PrecisionOpt = None,
    truncate_dim: TruncateDim = None,
    keep_float32: KeepFloat32 = False,
    batch_size: BatchSize = 32,
    chunk_size: ChunkSize = 1000,
    skip_bad: SkipBad = False,
    keyword_index: KeywordIndex = True,
    stage1: Stage1Opt = Stage1.auto,
    centering: Centering = False,
    rotation: Rotation = None,
    query_bits: QueryBits = None,
    text_field: TextField = "text",
    id_field: IdField = None,
    title_field: TitleField = "title",
    vector_field: VectorField = None,
    fmt: Format = InputFormat.auto,
    device: Device = "cpu",
    encoder_backend: Backend = None,
    quiet: Quiet = False,
    ray: Ray = False,
    ray_address: RayAddress = None,
    shards: Shards = None,
    encoders: Encoders = 1,
) -> None:
    """Embed documents and add them to a collection; re-running continues where a killed run stopped.

    Models other than the packaged default are downloaded once (HF_HUB_OFFLINE=1: cached copies only).
    With --ray (and --shards N), a Ray cluster encodes in parallel into a sharded collection.
    """
    with reported("interrupted: documents added so far are kept; run the same command again to resume"):
        backend = value(encoder_backend)
        if backend == _INT8_DOCUMENTS and not _records_int8(out):
            raise CliError(
                "--encoder onnx-int8 embeds queries only: int8 document embeddings lost up to 0.76% NDCG@10 on "
                "the shared sets; index with the default (or onnx) and pass --encoder onnx-int8 to search or serve"
            )
        fields = Fields(text=text_field, id=id_field, title=title_field or None, vector=vector_field)
        options = IndexOptions(
            precision=value(precision) or "binary", keep_float32=keep_float32, keyword_index=keyword_index,
            stage1=stage1.value, centering=centering, rotation=rotation, query_bits=query_bits,
            chunk_size=chunk_size, skip_bad=skip_bad,
        )  # fmt: skip
        settings = {"model": model, "precision": value(precision), "truncate_dim": truncate_dim}
        if ray or ray_address:
            if vector_field is not None:
                raise CliError("--vector-field is not supported with --ray: index precomputed embeddings without it")
            ray_options = {"address": ray_address, "shards": shards, "encoders": encoders, "batch_size": batch_size}
            _index_on_ray(input, out, fields, fmt.value, options, settings, ray_options, backend, quiet)
            return
        if shards is not None or encoders != 1:
            raise CliError("--shards and --encoders go with --ray (indexing into a sharded collection on Ray)")
        _index_here(input, out, fields, fmt.value, options, settings, backend, device, batch_size, quiet)


def _index_here(
    source: Path, out: Path, fields: Fields, fmt: str, options: IndexOptions, settings: dict[str, Any],
    backend: str | None, device: str, batch_size: int, quiet: bool,
) -> None:  # fmt: skip
    """`bitsearch index` on this machine: bitsearch.indexing does the work; this picks the target and reports."""
    records, total = read_input(source, fmt, fields, options.chunk_size, note=_note, warn=_warn)
    if not quiet and fields.vector is None:
        typer.echo("loading the embedding model...", err=True)
    col: Collection | None = None
    encoder: Encoder | None = None
    if fields.vector is not None:
        col = _precomputed_target(out, settings, options.keep_float32, fmt, source)
    elif is_collection(out):
        col = Collection.open(out)
        _check_continue(col, settings, options.keep_float32)
        from bitsearch.encode import indexing_backend

        recorded = (col.manifest.get("model") or {}).get("encoder")
        if backend is None and recorded != _INT8_DOCUMENTS:  # int8 collections keep their int8 model
            backend = indexing_backend(total)
        encoder = models.encoder_for(col, device=device, batch_size=batch_size, backend=backend)
    else:
        check_new_target(out)
        from bitsearch.encode import indexing_backend

        encoder = models.load_encoder(
            settings["model"], device=device, batch_size=batch_size, truncate_dim=settings["truncate_dim"],
            backend=backend or indexing_backend(total),
        )  # fmt: skip
    start = time.perf_counter()
    with index_progress(total, quiet) as bar:
        model_info = precomputed_model(settings["model"]) if fields.vector is not None else None
        col, report = index_records(
            records, out, encoder, col=col, options=options, progress=bar, model_info=model_info
        )
    _report(source, out, col, report, time.perf_counter() - start)


def _index_on_ray(
    source: Path, out: Path, fields: Fields, fmt: str, options: IndexOptions, settings: dict[str, Any],
    ray_options: dict[str, Any], backend: str | None, quiet: bool,
) -> None:  # fmt: skip
    """`bitsearch index --ray`: bitsearch.distributed_index does the work; this reports it."""
    from bitsearch.distributed_index import index_distributed

    if not quiet:
        typer.echo("starting Ray and loading the embedding model...", err=True)
    start = time.perf_counter()
    with index_progress(None, quiet) as bar:
        col, report = index_distributed(
            source, out, fmt=fmt, fields=fields, keep_float32=options.keep_float32,
            keyword_index=options.keyword_index, create_options=options.create_options(),
            chunk_size=options.chunk_size, skip_bad=options.skip_bad, backend=backend, progress=bar,
            **settings, **ray_options,
        )  # fmt: skip
    elapsed = time.perf_counter() - start
    if col is None:
        _report(source, out, col, report, elapsed)
        return
    with col:
        _report(source, out, col, report, elapsed, shards=len(col.shard_names))


def _report(source: Path, out: Path, col: Any, report: IndexReport, elapsed: float, shards: int | None = None) -> None:
    """The closing lines of a run (what was added, what was skipped), or why nothing was."""
    if report.records == 0:
        raise CliError(f"no documents found in {source}")
    if col is None:
        raise CliError(f"no valid documents in {source}: all {report.bad} records were malformed")
    rate = report.added / elapsed if elapsed > 0 else 0.0
    into = f"{out} ({shards} shards)" if shards is not None else f"{out}"
    parts = [f"indexed {plural(report.added, 'document')} into {into} in {elapsed:.1f} s ({rate:,.1f} docs/s)"]
    if report.already:
        were = "was" if report.already == 1 else "were"
        parts.append(f"{plural(report.already, 'document')} already in the collection {were} skipped")
    if report.bad:
        parts.append(f"skipped {plural(report.bad, 'malformed record')}")
    typer.echo("; ".join(parts))
    typer.echo(f"the collection holds {plural(len(col), 'document')}")


def _note(message: str) -> None:
    typer.echo(message, err=True)


def _warn(message: str) -> None:
    typer.secho(f"warning: {message}", err=True, fg="yellow")


def _check_continue(col: Collection, settings: dict[str, Any], keep_float32: bool) -> None:
    """Refuse to continue an existing collection with settings it was not built with."""
    m = col.manifest
    check_settings(f"the collection at {col.path}", m, m["dim"], keep_float32=keep_float32, **settings)


def _precomputed_target(
    out: Path, settings: dict[str, Any], keep_float32: bool, fmt: str, source: Path
) -> Collection | None:
    """`index --vector-field`: the collection to continue (None: a new one), its settings checked; no model loads."""
    if settings["truncate_dim"] is not None:
        raise CliError("--truncate-dim cuts a model's embeddings; with --vector-field give vectors of the size to keep")
    kind = fmt if fmt != "auto" else None
    if kind is None and beir_corpus(source) is None and not source.is_dir():
        kind = detect_format(source)
    if kind in ("csv", "folder"):
        raise CliError(f"--vector-field reads JSONL or Parquet records, not {kind}")
    if not is_collection(out):
        check_new_target(out)
        return None
    col = Collection.open(out)
    _check_continue(col, settings, keep_float32)
    return col


def _records_int8(out: Path) -> bool:
    """Whether `out` is a collection indexed with int8 document embeddings (older versions allowed it)."""
    if not is_collection(out):
        return False
    from bitsearch.storage.manifest import read_manifest

    return ((read_manifest(out).model or {}).get("encoder")) == _INT8_DOCUMENTS
