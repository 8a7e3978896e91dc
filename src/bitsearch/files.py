"""Crash-safe file writes (a fsynced temporary file renamed into place, a fsynced directory), checksummed
.npy files, and the reading of a format-versioned JSON manifest."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import CollectionError, CorruptCollectionError, FormatVersionError

__all__ = [
    "check_npy",
    "fsync_dir",
    "load_npy",
    "read_versioned_json",
    "save_npy",
    "sha256_file",
    "write_atomic",
    "write_synced",
]

_HASH_BLOCK = 1 << 22


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename inside it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create ``path`` with ``write(file)`` and fsync it (the one place that writes collection bytes)."""
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def write_atomic(path: Path, data: bytes | Callable[[BinaryIO], object]) -> None:
    """Write ``data`` (bytes, or a function that writes to the open file) to ``path`` through a fsynced
    temporary file in the same folder and a rename: a reader sees the old contents or the new, never a
    part. A failed write (a full disk) removes its temporary file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    write = data if callable(data) else (lambda f: f.write(data))
    try:
        write_synced(tmp, write)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def sha256_file(path: Path) -> str:
    """The file's sha256, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def save_npy(path: Path, array: np.ndarray) -> dict[str, Any]:
    """Save an array as .npy (no pickle), fsynced; returns its record: size and sha256."""
    arr = np.ascontiguousarray(array)
    write_synced(path, lambda f: np.lib.format.write_array(f, arr, allow_pickle=False))
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def check_npy(path: Path, info: dict[str, Any], verify: bool) -> None:
    """Check a collection file's presence and size against its record, and its sha256 if ``verify``."""
    if not path.is_file():
        raise CorruptCollectionError(f"collection file {path} is missing")
    size = path.stat().st_size
    if size != info["bytes"]:
        raise CorruptCollectionError(f"collection file {path} has {size} bytes, the manifest says {info['bytes']}")
    if verify and sha256_file(path) != info["sha256"]:
        raise CorruptCollectionError(f"collection file {path} fails its sha256 checksum")


def load_npy(path: Path, info: dict[str, Any], *, verify: bool) -> np.ndarray:
    """Load a collection array into RAM after checking its size, and its checksum if ``verify``."""
    check_npy(path, info, verify)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise CorruptCollectionError(f"collection file {path} is not a valid .npy file: {exc}") from None


def read_versioned_json(path: Path, name: str, fmt: str, max_version: int, what: str) -> dict[str, Any]:
    """The JSON object in ``path / name`` whose ``format`` is ``fmt`` and whose integer ``format_version``
    is from 1 to ``max_version``; CollectionError when there is none, CorruptCollectionError when it is
    not such an object, FormatVersionError when a newer bitsearch wrote it. ``what`` names it in messages."""
    mpath = path / name
    if not path.is_dir():
        raise CollectionError(f"no {what} at {path}: directory not found")
    if not mpath.is_file():
        raise CollectionError(f"no {what} at {path}: {name} not found")
    try:
        m = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptCollectionError(f"{mpath} is not valid JSON: {exc}") from None
    if not isinstance(m, dict) or m.get("format") != fmt:
        raise CorruptCollectionError(f"{mpath} is not a bitsearch {what} manifest")
    version = m.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CorruptCollectionError(f"{mpath} has no valid format_version")
    if version > max_version:
        raise FormatVersionError(
            f"{what} at {path} has format version {version}; "
            f"this bitsearch reads up to {max_version}: upgrade bitsearch"
        )
    return m
