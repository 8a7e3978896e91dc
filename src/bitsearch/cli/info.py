"""`bitsearch info`: what a collection holds and what each stage costs in RAM and on disk."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from bitsearch import Collection
from bitsearch.cli.common import app, reported, require_collection
from bitsearch.cli.options import CollectionArg
from bitsearch.cli.output import format_bytes

__all__ = ["describe", "info"]


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
    collection: CollectionArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Describe a collection: documents, model, precision and memory per stage."""
    with reported():
        require_collection(collection)
        stats = describe(Collection.open(collection))
        if as_json:
            typer.echo(json.dumps(stats, ensure_ascii=False, indent=1))
        else:
            typer.echo("\n".join(_summary(stats)))


def _summary(stats: dict[str, Any]) -> list[str]:
    """The lines of `bitsearch info`: settings, then RAM and disk per stage."""
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
        lines.append(f"{name:<10} {format_bytes(st['ram_bytes']):>12} {format_bytes(st['disk_bytes']):>12}")
    lines.append(f"{'documents':<10} {'':>12} {format_bytes(stats['docs_disk_bytes']):>12}   (texts and metadata)")
    lines.append(f"{'total':<10} {format_bytes(stats['ram_bytes']):>12} {format_bytes(stats['disk_bytes']):>12}")
    lines.append("")
    ratio = stats.get("compression_vs_float32")
    lines.append(
        f"float32 vectors would take {format_bytes(stats['float32_bytes'])} in RAM; stage 1 here takes "
        f"{format_bytes(stats['stages'][stats['precision']]['ram_bytes'])}"
        + (f" ({ratio:.1f}x smaller)" if ratio else "")
    )
    return lines
