"""The embedding cache: each dataset's document and query embeddings encoded once, then read from disk.

An entry is `<model>/<role>-<key>.npy` (no pickle) next to `<role>-<key>.json`, each written atomically.
The key hashes everything that changes the vectors: the model, truncation, normalization, the role's
prompt, the exact texts, and the backend where it changes them (see `encoder_key`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bitsearch.files import write_atomic

if TYPE_CHECKING:
    from .datasets import Dataset

__all__ = [
    "CACHE_ENV",
    "EncoderLike",
    "cache_dir",
    "cached_embeddings",
    "collection_embeddings",
    "embed_dataset",
    "encoder_key",
    "slug",
]

CACHE_ENV = "BITSEARCH_CACHE"
CACHE_FORMAT = 1
ROLES = ("documents", "queries")
# Backends whose vectors differ from the fp32 model's beyond float noise: their entries get their own key.
# torch and ONNX fp32 agree to 1e-6 and share entries (so entries written before the backend counted stay
# valid); the int8-quantized ONNX export moves vectors by ~1e-2.
DISTINCT_BACKENDS = frozenset({"onnx-int8"})


class EncoderLike(Protocol):
    """What the evaluation needs from `bitsearch.encode.Encoder`."""

    name: str

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...


def cache_dir() -> Path:
    """The embedding cache folder: $BITSEARCH_CACHE, else ~/.cache/bitsearch/embeddings."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path("~/.cache/bitsearch/embeddings").expanduser()


def encoder_key(encoder: EncoderLike, role: str) -> dict[str, Any]:
    """Everything about the encoder that changes the vectors of `role` (not device or batch size).

    The backend is named only when it is one of DISTINCT_BACKENDS, so that fp32 backends keep one key.
    """
    prompt = "document_prompt" if role == "documents" else "query_prompt"
    key = {
        "model": str(getattr(encoder, "name", type(encoder).__name__)),
        "truncate_dim": getattr(encoder, "truncate_dim", None),
        "normalize": bool(getattr(encoder, "normalize", True)),
        prompt: getattr(encoder, prompt, None),
    }
    backend = getattr(encoder, "backend", None)
    if backend in DISTINCT_BACKENDS:
        key["backend"] = backend
    return key


def _texts_hash(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def slug(name: str) -> str:
    """`name` as a safe file or folder name (model and dataset names hold slashes)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "model"


def _read_entry(npy: Path, info: Path, key: str, count: int) -> np.ndarray | None:
    """The cached array when both files are there, readable and match `key` and `count`; else None."""
    if not (npy.is_file() and info.is_file()):
        return None
    try:
        stored = json.loads(info.read_text())
        emb = np.load(npy, allow_pickle=False)
    except (OSError, ValueError):
        return None  # unreadable entry: encode again and overwrite it
    if stored.get("key") == key and emb.shape[0] == count:
        return emb
    return None


def _encode(texts: Sequence[str], role: str, encoder: EncoderLike, show_progress: bool) -> np.ndarray:
    """Embed `texts`; empty ones get zero vectors and are never sent to the encoder.

    Two Cranfield documents have neither title nor body: a zero vector matches nothing.
    """
    full = [i for i, t in enumerate(texts) if t.strip()]
    batch = [texts[i] for i in full]
    if role == "documents":
        got = encoder.encode_documents(batch, show_progress=show_progress)
    else:
        got = encoder.encode_queries(batch)
    got = np.asarray(got, dtype=np.float32)
    if got.ndim != 2 or got.shape[0] != len(batch):
        raise ValueError(f"encoder returned shape {got.shape} for {len(batch)} texts")
    emb = np.zeros((len(texts), got.shape[1]), dtype=np.float32)
    emb[full] = got
    return emb


def cached_embeddings(
    texts: Sequence[str],
    role: str,
    encoder: EncoderLike,
    *,
    cache: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Embeddings of `texts` as documents or queries (`role`), encoded once then read from disk."""
    if role not in ROLES:
        raise ValueError(f"role must be 'documents' or 'queries', not {role!r}")
    meta = {"format": CACHE_FORMAT, "role": role, **encoder_key(encoder, role)}
    meta["texts_sha256"] = _texts_hash(texts)
    meta["count"] = len(texts)
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:24]
    folder = (Path(cache) if cache is not None else cache_dir()) / slug(str(meta["model"]))
    npy, info = folder / f"{role}-{key}.npy", folder / f"{role}-{key}.json"
    emb = _read_entry(npy, info, key, len(texts))
    if emb is not None:
        return emb
    emb = _encode(texts, role, encoder, show_progress)
    meta["empty_texts"] = sum(1 for t in texts if not t.strip())
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, emb, allow_pickle=False)
    write_atomic(npy, buf.getvalue())
    record = {**meta, "key": key, "shape": list(emb.shape), "dtype": str(emb.dtype)}
    write_atomic(info, json.dumps(record, indent=1).encode())
    return emb


def collection_embeddings(dataset: Dataset, path: str | os.PathLike[str], model: str | None = None) -> np.ndarray:
    """The dataset's document embeddings read from a collection that holds them (built by ``bitsearch index``
    on the same corpus with ``--keep-float32``), instead of embedding the corpus again.

    The collection must hold every document of the dataset by id, with float32 rows, and record the model
    ``model`` names (when given). Its texts were embedded as title + newline + text where the evaluation
    embeds title + space + text: the same tokens for WordPiece models such as all-MiniLM-L6-v2.
    """
    from bitsearch.collection import Collection

    col = Collection.open(path)
    recorded = (col.manifest.get("model") or {}).get("name")
    if model is not None and recorded != model:
        raise ValueError(f"collection {path} was embedded with model {recorded!r}, not {model!r}")
    if not col.manifest["keep_float32"]:
        raise ValueError(
            f"collection {path} keeps no float32 rows to evaluate from: build it with `bitsearch index --keep-float32`"
        )
    docs = col.get(dataset.doc_ids, with_vectors=True)
    missing = [i for i, d in zip(dataset.doc_ids, docs, strict=True) if d is None]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3])
        raise ValueError(
            f"collection {path} lacks {len(missing):,} of the {len(docs):,} documents of {dataset.name} ({shown}...)"
        )
    col.close()
    return np.stack([d.vector for d in docs]).astype(np.float32, copy=False)  # type: ignore[union-attr]


def embed_dataset(
    dataset: Dataset,
    encoder: EncoderLike,
    *,
    cache: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(document embeddings, query embeddings) of `dataset`, from the cache when present."""
    docs = cached_embeddings(dataset.doc_texts, "documents", encoder, cache=cache, show_progress=show_progress)
    queries = cached_embeddings(dataset.query_texts, "queries", encoder, cache=cache)
    return docs, queries
