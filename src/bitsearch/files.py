"""Crash-safe file writes (a fsynced temporary file renamed into place, a fsynced directory), and the
reading of a format-versioned JSON manifest."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from .errors import CollectionError, CorruptCollectionError, FormatVersionError

__all__ = ["fsync_dir", "read_versioned_json", "write_atomic"]


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename inside it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file in the same folder and a rename: a reader
    sees the old contents or the new, never a part. A failed write (a full disk) removes its temporary file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


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
