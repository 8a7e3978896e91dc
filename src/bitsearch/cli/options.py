"""The choices of the commands' options, generated from the core's tuples so that each option has one
spelling, the core's (a new precision or mode appears here without an edit)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from bitsearch.codecs import STAGE1_MODES, STAGE1_PRECISIONS
from bitsearch.encode import BACKENDS
from bitsearch.options import MODES, RESCORE_STAGES
from bitsearch.readers import INPUT_FORMATS

__all__ = [
    "NO_RESCORE",
    "BatchSize",
    "CollectionArg",
    "Device",
    "EncoderBackend",
    "InputFormat",
    "Mode",
    "Precision",
    "Rescore",
    "ResultsK",
    "Stage1",
    "choices",
    "value",
]

NO_RESCORE = "none"  # --rescore none: the stage-1 ranking is final (the library's rescore=None)


def choices(name: str, values: Sequence[str]) -> type[Enum]:
    """A str Enum for Typer whose members are ``values`` (each member's name is its value)."""
    return Enum(name, [(v, v) for v in values], type=str)  # type: ignore[return-value]


def value(option: Enum | None) -> str | None:
    """An option's spelling, None when not given."""
    return None if option is None else option.value


Precision = choices("Precision", STAGE1_PRECISIONS)
Stage1 = choices("Stage1", STAGE1_MODES)
Mode = choices("Mode", MODES)
EncoderBackend = choices("EncoderBackend", BACKENDS)
Rescore = choices("Rescore", (*RESCORE_STAGES, NO_RESCORE))
InputFormat = choices("InputFormat", INPUT_FORMATS)


# ----------------------------------------------------------------------------- options several commands take

CollectionArg = Annotated[Path, typer.Argument(help="Collection directory.")]
Device = Annotated[str, typer.Option(help="Torch device for the model.")]
BatchSize = Annotated[int, typer.Option(min=1, help="Texts per model forward pass.")]
ResultsK = Annotated[int, typer.Option("-k", "--k", min=1, help="Results per query.")]
