"""bitsearch: retrieval over quantized text embeddings (sign bits in RAM, int8/float32 rescoring from disk).

``import bitsearch`` needs only numpy and numba; the embedding model (torch, sentence-transformers)
is loaded lazily by ``bitsearch.encode`` when text is given.
"""

from .errors import (
    BitsearchError,
    CollectionError,
    CorruptCollectionError,
    DuplicateIdError,
    FormatVersionError,
    InvalidInputError,
    ModelLoadError,
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
    "DuplicateIdError",
    "FormatVersionError",
    "Hit",
    "InvalidInputError",
    "ModelLoadError",
    "SearchResults",
    "UnknownIdError",
    "__version__",
    "calibrate_ranges",
    "dequantize_int8",
    "quantize_embeddings",
    "truncate_embeddings",
    "unpack_bits",
]
