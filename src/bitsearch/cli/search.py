"""`bitsearch search`: text queries embedded by the collection's model (or query vectors), searched in stages,
shown as tables or JSON."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bitsearch import Collection
from bitsearch.cli import models
from bitsearch.cli.common import CliError, app, reported, require_collection
from bitsearch.cli.options import NO_RESCORE, CollectionArg, Device, EncoderBackend, Mode, Rescore, ResultsK, value
from bitsearch.cli.output import format_ms, hits_table
from bitsearch.readers import read_queries, read_query_vectors

__all__ = ["search"]

Query = tuple[str | None, str]  # (query id or None, text)

Queries = Annotated[list[str] | None, typer.Argument(help="Query texts ('-' reads one query per line from stdin).")]
Multiplier = Annotated[int, typer.Option(min=1, help="Stage 1 keeps k x this many candidates to rescore.")]
RescoreOpt = Annotated[Rescore, typer.Option(help="Rows that rescore the stage-1 candidates.")]
QueriesFile = Annotated[str | None, typer.Option(help="One query per line (or JSON lines with 'text'); '-': stdin.")]
ModeOpt = Annotated[Mode, typer.Option(help="dense vectors, keyword (BM25), or hybrid (both, fused by RRF).")]
Filter = Annotated[
    str | None,
    typer.Option("--filter", help='Metadata filter as JSON, e.g. \'{"lang": "en"}\' or \'{"year": {"$gte": 2020}}\'.'),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
_BACKEND_HELP = "Model runtime for the queries (default: the one the collection records)."
_VECTOR_FILE_HELP = (
    "Query vectors instead of embedding text: .npy (one vector or a matrix) or .json (a list of numbers, or of "
    "lists); query texts, if given too, serve keyword/hybrid modes, one per vector."
)


@app.command()
def search(
    collection: CollectionArg,
    queries: Queries = None,
    k: ResultsK = 10,
    rescore_multiplier: Multiplier = 4,
    rescore: RescoreOpt = Rescore.int8,
    queries_file: QueriesFile = None,
    mode: ModeOpt = Mode.dense,
    filter_json: Filter = None,
    as_json: AsJson = False,
    device: Device = "cpu",
    encoder_backend: Annotated[EncoderBackend | None, typer.Option("--encoder", help=_BACKEND_HELP)] = None,
    vector_file: Annotated[Path | None, typer.Option(help=_VECTOR_FILE_HELP)] = None,
) -> None:
    """Search a collection with text queries, embedded by the model the collection was built with (or vectors)."""
    with reported():
        flt = _parse_filter(filter_json)
        items = _gather_queries(queries, queries_file)
        given = read_query_vectors(vector_file) if vector_file is not None else None
        if given is not None and items and len(items) != len(given):
            raise CliError(f"{len(items)} query texts for {len(given)} query vectors: give one text per vector")
        if given is not None and not items and mode is not Mode.dense:
            raise CliError(f"--mode {mode.value} ranks query text: give the query texts too, one per vector")
        if not items and given is None:
            raise CliError("no queries: give query text, --queries-file FILE, '-' to read stdin, or --vector-file")
        require_collection(collection)
        embed = mode is not Mode.keyword and given is None  # keyword search needs no model
        options = {"device": device, "backend": value(encoder_backend)}
        early = models.early_encoder(collection, **options) if embed else None  # loads while the collection opens
        col = Collection.open(collection)
        if given is not None and given.shape[1] != col.dim:
            raise CliError(f"{vector_file} holds {given.shape[1]}-dim vectors; {collection} holds {col.dim}")
        items = items or [(None, f"vector {i}") for i in range(len(given))]  # type: ignore[arg-type]
        texts = [text for _, text in items]
        timings: dict[str, float] = {}
        vectors = _embed_queries(col, texts, early, options, timings) if embed else given
        results = col.search(
            vectors,
            k=k,
            rescore_multiplier=rescore_multiplier,
            rescore=None if rescore.value == NO_RESCORE else rescore.value,
            mode=mode.value,
            query_texts=texts if given is None or mode is not Mode.dense else None,
            filter=flt,
        )
        timings.update(results.timings)
        for note in results.warnings:
            typer.secho(f"warning: {note}", err=True, fg="yellow")
        if as_json:
            _print_json(collection, k, mode.value, items, results, timings)
        else:
            _print_tables(items, results, timings)


def _parse_filter(filter_json: str | None) -> Any:
    if filter_json is None:
        return None
    try:
        return json.loads(filter_json)
    except json.JSONDecodeError as exc:
        raise CliError(f"--filter is not valid JSON ({exc.msg}): {filter_json}") from None


def _gather_queries(queries: list[str] | None, queries_file: str | None) -> list[Query]:
    """The query texts given as arguments ('-': stdin) and in --queries-file."""
    items: list[Query] = []
    for q in queries or []:
        items.extend(read_queries("-") if q == "-" else [(None, q)])
    if queries_file is not None:
        items.extend(read_queries(queries_file))
    return items


def _embed_queries(
    col: Collection, texts: list[str], early: Any, options: dict[str, Any], timings: dict[str, float]
) -> np.ndarray:
    """The query texts embedded by the collection's model; the time it took goes into ``timings``."""
    encoder = models.encoder_for(col, early, **options)
    # one-time costs (torch's first forward pass, loading the compiled kernels) stay out of the timings
    col.search(encoder.encode_queries(texts[:1]), k=1, rescore=None, with_text=False)
    t0 = time.perf_counter()
    vectors = encoder.encode_queries(texts)
    timings["encode"] = time.perf_counter() - t0
    return vectors


def _print_json(
    collection: Path, k: int, mode: str, items: list[Query], results: Any, timings: dict[str, float]
) -> None:
    payload = {
        "collection": str(collection),
        "k": k,
        "mode": mode,
        "stages": results.stages,
        "timings": timings,
        "warnings": results.warnings,
        "results": [
            {"query": text, "query_id": qid, "hits": [{"rank": r, **hit.to_dict()} for r, hit in enumerate(hits, 1)]}
            for (qid, text), hits in zip(items, results, strict=True)
        ],
    }
    typer.echo(json.dumps(payload, ensure_ascii=False, indent=1))


def _print_tables(items: list[Query], results: Any, timings: dict[str, float]) -> None:
    width = shutil.get_terminal_size((100, 24)).columns
    for (qid, text), hits in zip(items, results, strict=True):
        label = f"[{qid}] " if qid is not None else ""
        typer.secho(f"query: {label}{text}", bold=True)
        typer.echo("\n".join(hits_table(hits, width)))
        typer.echo("")
    stages = " -> ".join(results.stages)
    per = " · ".join(f"{name} {format_ms(sec)}" for name, sec in timings.items())
    many = f" for {len(items)} queries" if len(items) > 1 else ""
    typer.echo(f"stages: {stages}; time{many}: {per}")
