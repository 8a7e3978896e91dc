"""The collection manifest as a frozen, validated value: read once from ``manifest.json``, changed by
``dataclasses.replace`` into the next commit's manifest, written as JSON.

Nested records (segments, file records, codebook, index, model) stay JSON objects: they are checked
with the rest when read (``validate_manifest``) and never changed in place: a write builds new ones.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..files import read_versioned_json, write_atomic
from .validate import validate_manifest

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "MANIFEST", "Manifest", "read_manifest"]

# 1: sign bits / int8 / float32 stage 1.  2: adds 1.5bit / 2bit codes, codebooks, stage1 choice.
# 3: 1.5bit as a sign plane + one bit per pair of dimensions (format 2's was packed ternary).
# A new collection gets the lowest version that describes it, so older releases still open all
# but the new 1.5bit ones, and refuse those rather than misread them.
# 4: documents without vectors (a "novec" list of sequence numbers) and a dim left unset (null) until
# the first write of vectors.  5: rabitq codes (sign plane + per-vector factors, ``codecs.rabitq``).
FORMAT_VERSION = 5
FORMAT_NAME = "bitsearch-collection"
MANIFEST = "manifest.json"

Record = dict[str, Any]


@dataclass(frozen=True)
class Manifest:
    """Everything a collection's manifest records (see docs/architecture.md for the format)."""

    format_version: int
    dim: int | None
    precision: str
    keep_int8: bool
    keep_float32: bool
    ranges: list[list[float]] | None  # (2, dim) int8 ranges as JSON lists; ``ranges_array`` as numpy
    model: Record | None
    truncate_dim: int | None
    keyword_index: bool
    stage1: str | None  # binary: "auto", "hamming" or "asymmetric"
    codes: Record | None  # code options: centering, rotation, query_bits
    codebook: Record | None
    next_seq: int
    next_segment: int
    generation: int
    segments: tuple[Record, ...]
    tombstones: Record | None
    novec: Record | None = None
    ann: Record | None = None
    ranges_given: bool = False  # ranges came from ``create``: compact() never recalibrates them
    int8_clipped: tuple[int, int] | None = None  # (values clipped, values written) since calibration

    @classmethod
    def from_dict(cls, m: Record) -> Manifest:
        """A manifest from its parsed, validated JSON object."""
        clip = m.get("int8_clipped")
        return cls(
            format_version=int(m["format_version"]),
            dim=None if m["dim"] is None else int(m["dim"]),
            precision=m["precision"],
            keep_int8=m["keep_int8"],
            keep_float32=m["keep_float32"],
            ranges=m["ranges"],
            model=m.get("model"),
            truncate_dim=m.get("truncate_dim"),
            keyword_index=m.get("keyword_index", True),
            stage1=m.get("stage1"),
            codes=m.get("codes"),
            codebook=m.get("codebook"),
            next_seq=m["next_seq"],
            next_segment=m["next_segment"],
            generation=m["generation"],
            segments=tuple(m["segments"]),
            tombstones=m["tombstones"],
            novec=m.get("novec"),
            ann=m.get("ann"),
            ranges_given=m.get("ranges_given", False),
            int8_clipped=None if clip is None else (int(clip[0]), int(clip[1])),
        )

    def to_dict(self) -> Record:
        """The JSON object written to disk (nested records shared, not copied: see ``copy_dict``)."""
        d: Record = {"format": FORMAT_NAME}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "ranges_given" and not value:
                continue  # written only when set, as before
            d[f.name] = list(value) if isinstance(value, tuple) else value
        return d

    def copy_dict(self) -> Record:
        """A deep copy of ``to_dict()``: the read-only view a caller may change freely."""
        return copy.deepcopy(self.to_dict())

    def write(self, path: Path) -> None:
        """Write ``manifest.json`` into the collection at ``path`` (atomically: the commit point)."""
        write_atomic(path / MANIFEST, json.dumps(self.to_dict(), indent=1).encode())

    def replace(self, **changes: Any) -> Manifest:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    @cached_property
    def ranges_array(self) -> np.ndarray | None:
        """The int8 ranges (2, dim) float32, parsed once."""
        return None if self.ranges is None else np.asarray(self.ranges, dtype=np.float32)

    def take_number(self, path: Path) -> tuple[int, Manifest]:
        """A number for a new segment or index directory that no directory uses, and the manifest with
        the counter moved past it. Segments and indexes share the counter, so a directory is never
        renamed onto an existing name."""
        n = self.next_segment
        while (path / "segments" / f"{n:06d}").exists() or (path / f"ann-{n:06d}").exists():
            n += 1
        return n, self.replace(next_segment=n + 1)


def read_manifest(path: Path) -> Manifest:
    """Read and validate the manifest of the collection at ``path``."""
    m = read_versioned_json(path, MANIFEST, FORMAT_NAME, FORMAT_VERSION, "collection")
    validate_manifest(m, path / MANIFEST)
    return Manifest.from_dict(m)
