"""`bitsearch eval`: what each precision costs on a BEIR dataset (``bitsearch.evaluate`` measures; this
command loads the model, runs it and writes the report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bitsearch import Collection
from bitsearch.cli import models
from bitsearch.cli.common import CliError, app, reported, require_collection
from bitsearch.cli.options import BatchSize

__all__ = ["eval_"]


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
    batch_size: BatchSize = 32,
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
    with reported():
        try:
            import matplotlib  # noqa: F401
            import ranx  # noqa: F401

            from bitsearch import evaluate as ev
        except ImportError as exc:
            raise CliError(f"bitsearch eval needs ranx and matplotlib ({exc}): pip install 'bitsearch[eval]'") from None
        ds = ev.load_dataset(dataset, split=split)
        embeddings = None
        if collection is not None:
            require_collection(collection)
            encoder = models.encoder_for(Collection.open(collection), batch_size=batch_size)
            if model is not None and encoder.name != models.load_encoder(model, batch_size=batch_size).name:
                raise CliError(f"--model {model} differs from the model of {collection} ({encoder.name})")
            docs = ev.collection_embeddings(ds, collection, encoder.name)
            embeddings = (docs, ev.cached_embeddings(ds.query_texts, "queries", encoder))
            source = f"document embeddings read from {collection} (not embedded again)"
        else:
            encoder = models.load_encoder(model, batch_size=batch_size)
            source = "document embeddings from the cache, or embedded now"
        typer.echo(
            f"{ds.name}: {len(ds.doc_ids):,} documents, {len(ds.query_ids):,} judged queries; "
            f"model {encoder.name} ({encoder.dim} dims); {source}",
            err=True,
        )
        report = ev.evaluate(
            ds, encoder, configs=configs, k=k, recall_k=recall_k, embeddings=embeddings, progress=not quiet,
            threads=threads,
        )  # fmt: skip
        command = _command_line(
            dataset, model=model, configs=configs, k=k, recall_k=recall_k, split=split, threads=threads,
            collection=collection, out=out,
        )  # fmt: skip
        paths = ev.write_report(report, out, plots=plots, command=command)
        typer.echo(ev.markdown_table(report))
        typer.echo("wrote " + ", ".join(str(p) for p in paths.values()), err=True)


def _command_line(dataset: Path, **given: Any) -> str:
    """The `bitsearch eval` command that reproduces a report (options left at their defaults are not named)."""
    g = given
    return " ".join(
        ["bitsearch eval", str(dataset)]
        + ([f"--model {g['model']}"] if g["model"] else [])
        + ([f"--configs '{g['configs']}'"] if g["configs"] else [])
        + ([f"--k {g['k']}"] if g["k"] != 10 else [])
        + ([f"--recall-k {g['recall_k']}"] if g["recall_k"] != 100 else [])
        + ([f"--split {g['split']}"] if g["split"] != "test" else [])
        + ([f"--threads {g['threads']}"] if g["threads"] else [])
        + ([f"--collection {g['collection']}"] if g["collection"] else [])
        + [f"--out {g['out']}"]
    )
