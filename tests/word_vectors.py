"""A deterministic, meaningful toy embedding for adapter tests: each word hashes to a signed coordinate.

Texts that share words get similar vectors (bag of words); no model is loaded.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

DIM = 64

# a small corpus the adapter tests share: two topics, years and languages to filter on
TEXTS = [
    "vitamin d prevents bone fractures in older adults",
    "vitamin d and calcium supplements for bones",
    "solar panels convert sunlight into electricity",
    "wind turbines and solar energy on the grid",
    "fractures of the hip need surgery",
    "the grid stores energy in batteries",
]
METAS = [
    {"topic": "health", "year": 2019, "lang": "en"},
    {"topic": "health", "year": 2021, "lang": "de"},
    {"topic": "energy", "year": 2020, "lang": "en"},
    {"topic": "energy", "year": 2022, "lang": "de"},
    {"topic": "health", "year": 2023, "lang": "en"},
    {"topic": "energy", "year": 2018, "lang": "en"},
]


def word_vector(text: str, dim: int = DIM) -> list[float]:
    """The bag-of-words vector of ``text``: each word adds +-1 at a coordinate chosen by its hash."""
    v = np.zeros(dim, dtype=np.float64)
    v[-1] = 0.05  # no text is the zero vector, which has no direction
    for word in re.findall(r"\w+", text.lower()):
        h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
        v[h % (dim - 1)] += 1.0 if (h >> 32) & 1 else -1.0
    return v.tolist()
