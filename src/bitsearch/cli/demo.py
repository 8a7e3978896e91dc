"""`bitsearch demo`: Python's own documentation indexed twice (float32, and binary codes with int8 rescoring)
and the two compared on a few queries: results side by side, RAM, disk and latency."""

from __future__ import annotations

import ast
import contextlib
import random
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from bitsearch import Collection
from bitsearch.cli import models
from bitsearch.cli.common import CliError, app, reported
from bitsearch.cli.options import BatchSize, ResultsK
from bitsearch.cli.output import format_bytes, format_ms, snippet
from bitsearch.indexing import encode_in_steps
from bitsearch.readers import Doc

__all__ = ["DEMO_QUERIES", "chunk_text", "demo", "python_doc_passages"]

DEMO_QUERIES = [
    "how do I read a file line by line",
    "copy a directory tree recursively",
    "parse command line arguments",
    "what does the with statement do",
    "temporary file that is deleted automatically",
    "sort a list of dictionaries by a key",
]
_DEMO_SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtledemo", "test", "lib2to3", "pydoc_data"}


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
    k: ResultsK = 5,
    batch_size: BatchSize = 32,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Index Python's own documentation twice (float32 and binary + int8 rescoring) and compare them."""
    with reported(), contextlib.ExitStack() as stack:
        if out is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bitsearch-demo-")))
        else:
            root = out
            for sub in ("float32", "binary"):
                if (root / sub).exists():
                    raise CliError(f"{root / sub} already exists; choose another --out")
        _run_demo(root, limit, query or DEMO_QUERIES, k, batch_size, quiet, keep=out is not None)


def chunk_text(text: str, size: int = 1000) -> list[str]:
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


def _long_docstring(node: ast.AST) -> str | None:
    doc = ast.get_docstring(node)  # type: ignore[arg-type]
    return doc if doc and len(doc) > 40 else None


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
        if doc := _long_docstring(node):
            yield f"{name}.{node.name}", doc
        if isinstance(node, ast.ClassDef):  # public methods too
            for member in node.body:
                public = isinstance(member, defs[:2]) and not member.name.startswith("_")
                if public and (doc := _long_docstring(member)):
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
            for i, chunk in enumerate(chunk_text(doc)):
                passage = Doc(f"{qualname}#{i}", f"{qualname}\n{chunk}", {"source": source}, qualname)
                (summaries if qualname == name and i == 0 else rest).append(passage)
    topics = [
        Doc(f"topic:{topic}#{i}", f"{topic}\n{chunk}", {"source": "language reference"}, topic)
        for topic, text in sorted(pydoc_data.topics.topics.items())
        for i, chunk in enumerate(chunk_text(text))
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


def _run_demo(root: Path, limit: int, queries: list[str], k: int, batch_size: int, quiet: bool, keep: bool) -> None:
    """Embed the passages once, store them as float32 and as binary (+ int8 rows), compare the two."""
    from tqdm import tqdm

    typer.echo("collecting passages from Python's documentation (pydoc topics, stdlib docstrings)...")
    docs = python_doc_passages(limit)
    encoder = models.load_encoder(None, batch_size=batch_size)
    typer.echo(f"embedding {len(docs):,} passages with {encoder.name} ({encoder.dim} dims)...")
    start = time.perf_counter()
    with tqdm(total=len(docs), unit="doc", desc="embedding", disable=quiet, file=sys.stderr) as bar:
        embeddings = encode_in_steps(encoder, [d.text or "" for d in docs], max(1, batch_size * 8), bar)
    typer.echo(f"embedded in {time.perf_counter() - start:.1f} s")
    cols: dict[str, Collection] = {}
    for name in ("float32", "binary"):
        col = Collection.create(
            root / name, encoder.dim, precision=name, calibration_embeddings=embeddings, model=encoder.manifest_info()
        )
        col.add(embeddings, ids=[d.id for d in docs], texts=[d.text for d in docs], metadata=[d.metadata for d in docs])
        cols[name] = col
    qvecs = encoder.encode_queries(queries)
    exact = cols["float32"].search(qvecs, k=k, rescore=None)
    quant = cols["binary"].search(qvecs, k=k, rescore_multiplier=4, rescore="int8")
    agree = _side_by_side(queries, exact, quant, k)
    f32, b1 = cols["float32"].stats(), cols["binary"].stats()
    t_f32 = _time_search(cols["float32"], qvecs, k, None)
    t_b1 = _time_search(cols["binary"], qvecs, k, "int8")
    typer.echo("")
    typer.echo(f"{'':<24}{'float32':>14}{'binary + int8':>16}")
    typer.echo(f"{'vectors in RAM':<24}{format_bytes(f32['ram_bytes']):>14}{format_bytes(b1['ram_bytes']):>16}")
    typer.echo(f"{'on disk (with texts)':<24}{format_bytes(f32['disk_bytes']):>14}{format_bytes(b1['disk_bytes']):>16}")
    typer.echo(f"{'search, per query':<24}{format_ms(t_f32):>14}{format_ms(t_b1):>16}")
    total = k * len(queries)
    typer.echo(
        f"binary + int8 rescoring found {agree}/{total} ({agree / total:.0%}) of float32's top-{k} results "
        f"with {f32['ram_bytes'] / max(1, b1['ram_bytes']):.1f}x less RAM"
    )
    if keep:
        typer.echo(f"collections kept: {root / 'float32'} and {root / 'binary'} (try `bitsearch info` on them)")


def _side_by_side(queries: list[str], exact: Any, quant: Any, k: int) -> int:
    """Print each query's two result lists side by side; how many of the exact results the quantized found."""
    width = shutil.get_terminal_size((120, 24)).columns
    half = max(30, (width - 8) // 2)
    agree = 0
    for text, a, b in zip(queries, exact, quant, strict=True):
        agree += len({h.id for h in a} & {h.id for h in b})
        typer.echo("")
        typer.secho(f"query: {text}", bold=True)
        typer.echo(f"{'#':>2}  {'float32 (exact)':<{half}}  binary + int8 rescore")
        for rank in range(k):
            left = _demo_cell(a[rank] if rank < len(a) else None, half)
            right = _demo_cell(b[rank] if rank < len(b) else None, half)
            typer.echo(f"{rank + 1:>2}  {left:<{half}}  {right}")
    return agree


def _demo_cell(hit: Any, width: int) -> str:
    if hit is None:
        return ""
    return snippet(f"{hit.score:.3f} {hit.id}: {(hit.text or '').split(chr(10), 1)[-1]}", width)
