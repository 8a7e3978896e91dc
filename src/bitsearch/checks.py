"""Checks of values read from a JSON file (a manifest), each failing with a CorruptCollectionError.

Below both ``bitsearch.storage`` (which validates a whole manifest) and ``bitsearch.codecs`` (each
code family validates its own fields), so neither has to import the other to check a value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .errors import CorruptCollectionError

__all__ = ["MAX_INT", "SHA256", "ManifestCheck"]

MAX_INT = 2**63 - 1  # counters and sizes are int64 on disk and in SQLite
SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestCheck:
    """Checks values of one manifest, raising CorruptCollectionError that names the file and the field."""

    def __init__(self, mpath: Path) -> None:
        self.mpath = mpath

    def fail(self, msg: str) -> NoReturn:
        raise CorruptCollectionError(f"{self.mpath}: {msg}")

    def integer(self, value: object, name: str, minimum: int = 0, maximum: int = MAX_INT) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            self.fail(f"{name} must be an integer from {minimum} to {maximum}, got {value!r}")
        return value

    def boolean(self, value: object, name: str) -> bool:
        if not isinstance(value, bool):
            self.fail(f"{name} must be true or false, got {value!r}")
        return value

    def mapping(self, value: object, name: str, required: Sequence[str] = ()) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(f"{name} must be an object, got {type(value).__name__}")
        missing = [k for k in required if k not in value]
        if missing:
            self.fail(f"{name} lacks {', '.join(missing)}")
        return value

    def floats(self, value: object, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A finite float array of exactly ``shape`` (nested JSON lists of numbers)."""
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            self.fail(f"{name} must be an array of numbers of shape {shape}")
        if arr.shape != shape:
            self.fail(f"{name} must have shape {shape}, got {arr.shape}")
        if not np.isfinite(arr).all():
            self.fail(f"{name} contains NaN or infinity")
        return arr

    def name(self, value: object, field: str, pattern: re.Pattern[str], what: str) -> str:
        """A plain file or folder name matching the format's own ``pattern``."""
        if not isinstance(value, str) or not pattern.fullmatch(value):
            self.fail(f"{field} {value!r} is not a valid {what} name")
        return value

    def file_info(self, value: object, name: str) -> dict[str, Any]:
        """A file's {bytes, sha256} record."""
        info = self.mapping(value, name, ("bytes", "sha256"))
        self.integer(info["bytes"], f"{name}.bytes")
        if not isinstance(info["sha256"], str) or not SHA256.fullmatch(info["sha256"]):
            self.fail(f"{name}.sha256 must be 64 lowercase hex digits, got {info['sha256']!r}")
        return info
