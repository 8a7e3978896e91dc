"""Stage-1 code families, one module each, registered by the precision that selects them.

A new family: a module with a ``Codec`` subclass (see ``codecs.base``) and a line in ``CODECS``.
"""

from __future__ import annotations

from ..errors import InvalidInputError
from .base import NO_SCORES, ROTATION, CodebookCodec, Codec, Stage1Plan
from .binary import STAGE1_MODES, BinaryCodec
from .exact import Float32Codec, Int8Codec
from .lowbit import OneAndHalfBitCodec, TwoBitCodec
from .rabitq import RabitqCodec

__all__ = [
    "STAGE1_MODES",
    "CODEBOOK_PRECISIONS",
    "CODECS",
    "NO_SCORES",
    "ROTATION",
    "STAGE1_PRECISIONS",
    "Codec",
    "CodebookCodec",
    "Stage1Plan",
    "codec_class",
]

CODECS: dict[str, type[Codec]] = {
    c.name: c for c in (BinaryCodec, OneAndHalfBitCodec, TwoBitCodec, RabitqCodec, Int8Codec, Float32Codec)
}
STAGE1_PRECISIONS = tuple(CODECS)
# the families whose codes come from a fitted codebook (centering and rotation apply)
CODEBOOK_PRECISIONS = tuple(name for name, c in CODECS.items() if c.uses_codebook)


def codec_class(precision: str) -> type[Codec]:
    """The code family of ``precision``, or InvalidInputError naming the known ones."""
    try:
        return CODECS[precision]
    except (KeyError, TypeError):
        raise InvalidInputError(
            f"unknown collection precision {precision!r}; expected one of {', '.join(STAGE1_PRECISIONS)}"
        ) from None
