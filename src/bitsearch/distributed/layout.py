"""The sharded collection's folder: its manifest (``sharded.json``), where each document goes (``shard_of``),
the shards' shared encoding (``codebook_digest``), and the creation of the shards."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..codecs import CODEBOOK_PRECISIONS
from ..collection import Collection
from ..errors import (
    CollectionError,
    CorruptCollectionError,
    InvalidInputError,
)
from ..files import read_versioned_json, write_atomic
from ..quantize import check_documents
from ..store import normalize_id

MANIFEST = "sharded.json"
FORMAT_NAME = "bitsearch-sharded"
FORMAT_VERSION = 1
SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # a plain name inside the directory
_CREATE_OPTIONS = frozenset(inspect.signature(Collection.create).parameters) - {"cls", "path", "dim", "exist_ok"}


def shard_of(doc_id: object, shards: int) -> int:
    """The shard (0 .. shards-1) that holds ``doc_id``: blake2b of its canonical form, modulo ``shards``.

    The canonical form keeps the id's type (the int 7 and the string "7" are different ids).
    """
    norm = normalize_id(doc_id)
    key = b"i" + str(norm).encode() if isinstance(norm, int) else b"s" + norm.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % int(shards)


def codebook_digest(manifest: dict[str, Any]) -> str | None:
    """sha256 of a collection manifest's codebook (its JSON, keys sorted; rotation by its checksum)."""
    book = manifest.get("codebook")
    if book is None:
        return None
    return hashlib.sha256(json.dumps(book, sort_keys=True).encode()).hexdigest()


def read_manifest(path: Path) -> dict[str, Any]:
    m = read_versioned_json(path, MANIFEST, FORMAT_NAME, FORMAT_VERSION, "sharded collection")
    mpath = path / MANIFEST
    for key in ("dim", "shards", "options", "created", "next_id", "generation"):
        if key not in m:
            raise CorruptCollectionError(f"{mpath} lacks {key}")
    names = m["shards"]
    if not isinstance(names, list) or not names or len(set(map(str, names))) != len(names):
        raise CorruptCollectionError(f"{mpath} names no shards, or one twice")
    for name in names:
        if not isinstance(name, str) or not SHARD_NAME.match(name):
            raise CorruptCollectionError(f"{mpath} names an invalid shard directory {name!r}: a plain name is required")
    return m


@contextlib.contextmanager
def locked(path: Path) -> Any:
    """The sharded manifest's write lock (across processes)."""
    with open(path / ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def create_shards(path: Path, m: dict[str, Any], ranges: np.ndarray | None, calibration: np.ndarray | None) -> None:
    """Create every shard directory with the same encoding; record the shared parameters in ``m``."""
    infos = []
    for name in m["shards"]:
        shard = path / name
        shutil.rmtree(shard, ignore_errors=True)  # left by an earlier attempt that never committed
        col = Collection.create(shard, m["dim"], ranges=ranges, calibration_embeddings=calibration, **m["options"])
        man = col.manifest
        col.close()
        infos.append((man["ranges"], codebook_digest(man)))
    if any(info != infos[0] for info in infos):
        raise CorruptCollectionError("the shards were created with different encodings")  # pragma: no cover
    m["ranges"], m["codebook_sha256"] = infos[0]
    m["created"] = True


def create_layout(
    p: Path,
    dim: int,
    shards: int,
    ranges: np.ndarray | None,
    calibration_embeddings: np.ndarray | None,
    collection_options: dict[str, Any],
) -> dict[str, Any]:
    """Check ``ShardedCollection.create``'s arguments and write the new sharded manifest at ``p``; the shards
    are created now when nothing needs calibrating or ``calibration_embeddings`` are given. Returns the manifest."""
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise InvalidInputError(f"shards must be a positive integer, got {shards!r}")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
    unknown = sorted(set(collection_options) - _CREATE_OPTIONS)
    if unknown:
        raise InvalidInputError(f"unknown collection option(s) {', '.join(unknown)}")
    if (p / MANIFEST).exists():
        raise CollectionError(f"a sharded collection already exists at {p}")
    if p.exists() and any(p.iterdir()):
        raise CollectionError(f"{p} exists and is not an empty directory")
    try:
        json.dumps(collection_options)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"collection options must be JSON values: {exc}") from None
    precision = collection_options.get("precision", "binary")
    keep_int8 = collection_options.get("keep_int8", True) or precision == "int8"
    if ranges is not None:
        ranges = np.asarray(ranges, dtype=np.float32)
    if calibration_embeddings is not None:
        calibration_embeddings = check_documents(calibration_embeddings, int(dim), name="calibration_embeddings")
    width = len(str(shards - 1))
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "dim": int(dim),
        "shards": [f"shard-{i:0{max(3, width)}d}" for i in range(shards)],
        "options": collection_options,
        "ranges": None if ranges is None else ranges.tolist(),
        "codebook_sha256": None,
        "created": False,
        "next_id": 0,
        "generation": 0,
    }
    p.mkdir(parents=True, exist_ok=True)
    with locked(p):
        needs_sample = precision in CODEBOOK_PRECISIONS or (keep_int8 and ranges is None)
        if calibration_embeddings is not None or not needs_sample:
            create_shards(p, manifest, ranges, calibration_embeddings)
        write_atomic(p / MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest
