"""What every command shares: the Typer app, the entry point, and errors reported as one line."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from bitsearch.errors import BitsearchError

__all__ = ["MANIFEST", "CliError", "app", "cli_words", "is_collection", "main", "reported", "require_collection"]

app = typer.Typer(
    name="bitsearch",
    help="Retrieval over quantized text embeddings: index text, search it, inspect collections.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

MANIFEST = "manifest.json"


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
def reported(on_interrupt: str = "interrupted") -> Iterator[None]:
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


def is_collection(path: Path) -> bool:
    """Whether ``path`` holds a (single-machine) collection."""
    return (path / MANIFEST).is_file()


def require_collection(path: Path) -> None:
    """CliError unless ``path`` holds a collection."""
    if not is_collection(path):
        raise CliError(f"{path} is not a bitsearch collection (no {MANIFEST})")
