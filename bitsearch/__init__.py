"""bitsearch: retrieval over quantized text embeddings (sign bits in RAM, int8/float32 rescoring from disk).

``import bitsearch`` needs only numpy and numba; the embedding model (torch, sentence-transformers)
is loaded lazily by ``bitsearch.encode`` when text is given.
"""

import os

# Threads that wait at the end of a parallel region sleep instead of spinning. On a machine whose
# cores are shared, spinning OpenMP threads steal the working thread's core: measured 12-40 ms per
# region with the default policy, 4 us with this one. Set here, first, so it precedes the OpenMP
# runtimes of numba, torch and faiss; the user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .collection import Document
from .errors import (
    BitsearchError,
    CollectionError,
    CorruptCollectionError,
    DiskFullError,
    DuplicateIdError,
    FormatVersionError,
    InvalidInputError,
    ModelLoadError,
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
from .search import Collection, Hit, SearchResults

__version__ = "0.1.0"

__all__ = [
    "BitsearchError",
    "Collection",
    "CollectionError",
    "CorruptCollectionError",
    "DiskFullError",
    "Document",
    "DuplicateIdError",
    "FormatVersionError",
    "Hit",
    "InvalidInputError",
    "ModelLoadError",
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
