"""bitsearch: retrieval over quantized text embeddings (sign bits in RAM, int8/float32 rescoring from disk).

``import bitsearch`` imports only numpy: ``Collection``, ``Hit``, ``SearchResults`` and ``Document`` (and with them
numba's kernels) load on first use, and the embedding model (ONNX Runtime, or torch) when text is given.
"""

import os

# Threads that wait at the end of a parallel region sleep instead of spinning. On a machine whose
# cores are shared, spinning OpenMP threads steal the working thread's core: measured 12-40 ms per
# region with the default policy, 4 us with this one. Set here, first, so it precedes the OpenMP
# runtimes of numba, torch and faiss; the user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import (
    BitsearchError,
    CollectionError,
    CorruptCollectionError,
    DimensionMismatchError,
    DiskFullError,
    DuplicateIdError,
    FormatVersionError,
    InvalidInputError,
    ModelLoadError,
    NoModelError,
    ReadOnlyCollectionError,
    UnknownIdError,
)
from .quantize import (
    calibrate_ranges,
    dequantize_int8,
    quantize_embeddings,
    truncate_embeddings,
    unpack_bits,
)

__version__ = "0.1.0"

_LAZY = {"Collection": "collection", "Hit": "results", "SearchResults": "results", "Document": "collection"}


def __getattr__(name: str) -> object:
    """Import the search and collection modules (numba kernels) only when one of their names is first used."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "BitsearchError",
    "Collection",
    "CollectionError",
    "CorruptCollectionError",
    "DimensionMismatchError",
    "DiskFullError",
    "Document",
    "DuplicateIdError",
    "FormatVersionError",
    "Hit",
    "InvalidInputError",
    "ModelLoadError",
    "NoModelError",
    "ReadOnlyCollectionError",
    "SearchResults",
    "UnknownIdError",
    "__version__",
    "calibrate_ranges",
    "dequantize_int8",
    "quantize_embeddings",
    "truncate_embeddings",
    "unpack_bits",
]
