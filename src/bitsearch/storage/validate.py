"""The checks of a collection manifest read from disk: every value, once, when it is read.

A collection directory may come from someone else: after these checks the code can trust the
manifest's types, ranges and names. Names become paths only through ``inside`` (storage.paths):
plain names of the format's own patterns, never "..", a separator or an absolute path. A code
family checks its own options and codebook (``Codec.validate``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import ManifestCheck
from ..codecs import CODECS, STAGE1_MODES, codec_class

__all__ = ["STAGE1_MODES", "ManifestCheck", "validate_manifest"]  # STAGE1_MODES: from codecs, for old importers


_SEGMENT_NAME = re.compile(r"\d{6}")
_ANN_DIR = re.compile(r"ann-(\d{6})")
_TOMBSTONE_FILE = re.compile(r"tombstones-\d{6}\.npy")
_NOVEC_FILE = re.compile(r"novec-\d{6}\.npy")
_SEGMENT_FILES = frozenset(
    {"seqs.npy", "int8.npy", "float32.npy", *(c.codes_file for c in CODECS.values() if c.codes_file)}
)
_ANN_FILES = ("centroids.npy", "offsets.npy", "rows.npy", "codes.npy")  # and optionally means.npy
_MAX_DIM = 1 << 20


def validate_manifest(m: dict[str, Any], mpath: Path) -> None:
    """Check every field of a parsed manifest (types, ranges, names, counts), or raise CorruptCollectionError.

    The file checks against these values (sizes, checksums, shapes, sequence numbers) come when the
    files are loaded; this makes sure nothing read from the manifest can name a path outside the
    collection or reach the code as a type or value it does not expect.
    """
    c = ManifestCheck(mpath)
    required = (
        "dim", "precision", "keep_int8", "keep_float32", "ranges", "segments", "tombstones",
        "next_seq", "next_segment", "generation",
    )  # fmt: skip
    c.mapping(m, "the manifest", required)
    version = m.get("format_version")
    version = version if isinstance(version, int) and not isinstance(version, bool) else 0
    dim = _validate_dim(c, m, version)
    precision = m["precision"]
    if not isinstance(precision, str) or precision not in CODECS:
        c.fail(f"unknown precision {precision!r}; expected one of {', '.join(CODECS)}")
    keep = {kind: c.boolean(m[f"keep_{kind}"], f"keep_{kind}") for kind in ("int8", "float32")}
    kept = codec_class(precision).keeps
    if kept is not None and not keep[kept]:
        c.fail(f"a {precision} collection must have keep_{kept} true")
    _validate_settings(c, m, precision)
    segments = m["segments"]
    if not isinstance(segments, list):
        c.fail("segments must be a list")
    total = _validate_segments(c, m, segments)
    if m["dim"] is None and total:
        c.fail("dim is null but segments hold rows")
    if total > m["next_seq"]:
        c.fail(f"next_seq {m['next_seq']} is below the {total} rows of the segments")
    if m["ranges"] is not None:
        r = c.floats(m["ranges"], "ranges", (2, dim))
        if not (r[1] > r[0]).all():
            c.fail(f"ranges have max <= min in dimension {int(np.argmax(~(r[1] > r[0])))}")
    elif keep["int8"] and total:
        c.fail("ranges are missing, and the segments hold int8 rows")
    codec_class(precision).validate(c, m, dim, total)
    _validate_seq_lists(c, m, version, total)
    if m.get("ann") is not None:
        _validate_ann(c, m, precision, total)


def _validate_dim(c: ManifestCheck, m: dict[str, Any], version: int) -> int:
    """The dimension (0 while unset: format 4 leaves it to the first write of vectors)."""
    if m["dim"] is not None:
        return c.integer(m["dim"], "dim", 1, _MAX_DIM)
    if version < 4:
        c.fail(f"dim is null, which needs format_version 4, got {m.get('format_version')!r}")
    for key in ("ranges", "codebook", "ann"):  # nothing may depend on the dimension yet
        if m.get(key) is not None:
            c.fail(f"dim is null but the manifest has {key}")
    return 0


def _validate_settings(c: ManifestCheck, m: dict[str, Any], precision: str) -> None:
    """Counters, the model record and the optional settings."""
    for key in ("generation", "next_seq", "next_segment"):
        c.integer(m[key], key)
    if m.get("model") is not None:
        c.mapping(m["model"], "model")
    if m.get("truncate_dim") is not None:
        c.integer(m["truncate_dim"], "truncate_dim", 1, _MAX_DIM)
    if "keyword_index" in m:
        c.boolean(m["keyword_index"], "keyword_index")
    if "ranges_given" in m:
        c.boolean(m["ranges_given"], "ranges_given")
    if m.get("int8_clipped") is not None:
        clip = m["int8_clipped"]
        if not isinstance(clip, list) or len(clip) != 2:
            c.fail(f"int8_clipped must be [clipped, total], got {clip!r}")
        c.integer(clip[1], "int8_clipped[1]")
        c.integer(clip[0], "int8_clipped[0]", 0, clip[1])
    if m.get("stage1") is not None and (not codec_class(precision).stage1_modes or m["stage1"] not in STAGE1_MODES):
        c.fail(f"stage1 {m['stage1']!r} is not one of {', '.join(STAGE1_MODES)} for a binary collection")


def _validate_seq_lists(c: ManifestCheck, m: dict[str, Any], version: int, total: int) -> None:
    """The records of the documents without vectors and of the tombstones."""
    novec = 0
    if m.get("novec") is not None:
        if version < 4:
            c.fail(f"documents without vectors (novec) need format_version 4, got {m.get('format_version')!r}")
        t = c.file_info(m["novec"], "novec")
        c.mapping(t, "novec", ("file", "count"))
        c.name(t["file"], "novec.file", _NOVEC_FILE, "novec file")
        novec = c.integer(t["count"], "novec.count", 1, m["next_seq"])
        if total + novec > m["next_seq"]:
            c.fail(f"next_seq {m['next_seq']} is below the {total} rows and {novec} documents without vectors")
    t = m["tombstones"]
    if t is not None:
        t = c.file_info(t, "tombstones")
        c.mapping(t, "tombstones", ("file", "count"))
        c.name(t["file"], "tombstones.file", _TOMBSTONE_FILE, "tombstone file")
        c.integer(t["count"], "tombstones.count", 0, total + novec)


def _validate_segments(c: ManifestCheck, m: dict[str, Any], segments: list[Any]) -> int:
    """Check the segment list against the collection's settings; returns the total number of rows."""
    expected = {"seqs.npy", *codec_class(m["precision"]).segment_files()}
    expected |= {f"{kind}.npy" for kind in ("int8", "float32") if m[f"keep_{kind}"]}
    seen: set[str] = set()
    total = 0
    for i, info in enumerate(segments):
        where = f"segments[{i}]"
        c.mapping(info, where, ("name", "rows", "files"))
        name = c.name(info["name"], f"{where}.name", _SEGMENT_NAME, "segment")
        if name in seen:
            c.fail(f"segment {name} is listed twice")
        seen.add(name)
        if int(name) >= m["next_segment"]:
            c.fail(f"segment {name} is not below next_segment {m['next_segment']}")
        total += c.integer(info["rows"], f"{where}.rows")
        files = c.mapping(info["files"], f"{where}.files")
        unknown = sorted(str(f) for f in files if f not in _SEGMENT_FILES)
        if unknown:
            c.fail(f"{where}.files names unknown files {unknown}; known: {sorted(_SEGMENT_FILES)}")
        if set(files) != expected:
            c.fail(f"segment {name} has files {sorted(files)}; this collection's segments hold {sorted(expected)}")
        for fname, finfo in files.items():
            c.file_info(finfo, f"{where}.files[{fname!r}]")
    return total


def _validate_ann(c: ManifestCheck, m: dict[str, Any], precision: str, total: int) -> None:
    """The approximate index record: its folder name, parameters, row count and files."""
    ann = c.mapping(m["ann"], "ann", ("dir", "nlist", "nprobe", "seed", "rows", "files"))
    if not codec_class(precision).supports_index:
        c.fail("an approximate index exists for binary collections only")
    if ann.get("kind", "ivf") != "ivf":
        c.fail(f"unknown index kind {ann['kind']!r}")
    c.name(ann["dir"], "ann.dir", _ANN_DIR, "index folder")
    # <=: compact() has numbered its rebuilt index with the new next_segment itself
    if int(ann["dir"][4:]) > m["next_segment"]:
        c.fail(f"index folder {ann['dir']} is above next_segment {m['next_segment']}")
    c.integer(ann["nlist"], "ann.nlist", 1)
    c.integer(ann["nprobe"], "ann.nprobe", 1)
    c.integer(ann["seed"], "ann.seed", 0, 2**32 - 1)
    c.integer(ann["rows"], "ann.rows", 0, total)
    files = c.mapping(ann["files"], "ann.files")
    names = set(files)
    if not set(_ANN_FILES) <= names <= {*_ANN_FILES, "means.npy"}:
        c.fail(f"ann.files must be {list(_ANN_FILES)} (and optionally means.npy), got {sorted(map(str, names))}")
    for fname, finfo in files.items():
        c.file_info(finfo, f"ann.files[{fname!r}]")
