"""How the commands show things: counts, sizes, snippets, tables of hits, and indexing progress."""

from __future__ import annotations

import sys
import time
from typing import Any

import typer

__all__ = ["LineProgress", "format_bytes", "format_ms", "hits_table", "index_progress", "plural", "snippet"]


def plural(n: int, word: str) -> str:
    """'1 document', '2 documents' (with thousands separators)."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def format_bytes(n: float | None) -> str:
    """A size in B, KiB, MiB or GiB; '-' for None."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} TiB"  # pragma: no cover


def format_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def snippet(text: str | None, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


def hits_table(hits: list[Any], width: int) -> list[str]:
    """Rows of rank, score, id and a snippet that fit `width` columns."""
    if not hits:
        return ["  (no results)"]
    id_width = min(32, max(2, *(len(str(h.id)) for h in hits)))
    lines = [f"{'rank':>4}  {'score':>7}  {'id':<{id_width}}  text"]
    room = max(20, width - id_width - 19)
    for rank, hit in enumerate(hits, 1):
        doc_id = snippet(str(hit.id), id_width)
        lines.append(f"{rank:>4}  {hit.score:>7.4f}  {doc_id:<{id_width}}  {snippet(hit.text, room)}")
    return lines


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
