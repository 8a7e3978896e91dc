"""Paths inside a collection folder: plain names only, no symbolic links, deletions kept inside."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

from ..errors import CorruptCollectionError
from .manifest import MANIFEST, Manifest

__all__ = ["DOCS", "check_layout", "inside", "interrupted_create", "remove_inside"]

DOCS = "docs.sqlite"
ROTATION = "rotation.npy"


def interrupted_create(path: Path) -> bool:
    """Whether ``path`` holds only what a ``create`` killed before its manifest leaves behind: an
    empty ``segments/``, the new document store, a rotation matrix, temporary files."""
    if not path.is_dir() or (path / MANIFEST).exists() or not (path / "segments").is_dir():
        return False
    if any((path / "segments").iterdir()):
        return False
    names = {"segments", ".lock", DOCS, f"{DOCS}-wal", f"{DOCS}-shm", f"{DOCS}-journal", ROTATION, f".{ROTATION}.tmp"}
    return all(f.name in names or f.name.startswith(f".{MANIFEST}.tmp-") for f in path.iterdir())


def inside(root: Path, *names: str) -> Path:
    """``root / names...`` for plain names only (no separator, "..", "." or empty name)."""
    for name in names:
        if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\0" in name:
            raise CorruptCollectionError(f"{name!r} is not a plain file name inside the collection at {root}")
        if os.sep != "/" and os.sep in name:  # pragma: no cover - POSIX only today
            raise CorruptCollectionError(f"{name!r} is not a plain file name inside the collection at {root}")
    return root.joinpath(*names)


def check_layout(path: Path, m: Manifest) -> None:
    """Refuse a collection whose own folders are symbolic links (deleting in them would reach elsewhere)."""
    dirs = [inside(path, "segments")]
    dirs += [inside(path, "segments", s["name"]) for s in m.segments]
    if m.ann is not None:
        dirs.append(inside(path, m.ann["dir"]))
    for d in dirs:
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            continue  # a missing folder is reported when its files are loaded
        if stat.S_ISLNK(st.st_mode):
            raise CorruptCollectionError(f"{d} is a symbolic link: a collection's folders must be real folders")
        if not stat.S_ISDIR(st.st_mode):
            raise CorruptCollectionError(f"{d} is not a folder")


def remove_inside(root: Path, target: Path) -> None:
    """Delete ``target`` (a file or a folder tree) of the collection at ``root``, and nothing else.

    Refuses, with CorruptCollectionError, a path that is not below ``root``, one reached through a
    symbolic link (any folder between ``root`` and it), and a symbolic link itself; folder trees go
    through ``shutil.rmtree``, which never follows links inside them. A missing target is not an error.
    """
    try:
        rel = target.relative_to(root)
    except ValueError:
        raise CorruptCollectionError(f"refusing to delete {target}: it is outside the collection at {root}") from None
    if not rel.parts or ".." in rel.parts:
        raise CorruptCollectionError(f"refusing to delete {target}: it is not inside the collection at {root}")
    real_root = Path(os.path.realpath(root))
    if Path(os.path.realpath(target.parent)) != real_root / rel.parent:
        raise CorruptCollectionError(f"refusing to delete {target}: a folder on its path is a symbolic link")
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise CorruptCollectionError(f"refusing to delete {target}: it is a symbolic link")
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(target, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
