"""Loading a collection snapshot (``State``) from the files its manifest names, every file checked
against its record (size always, sha256 for what goes into RAM or when asked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..codecs import CodebookCodec, Codec, codec_class
from ..errors import CorruptCollectionError, InvalidInputError
from ..files import check_npy, load_npy
from ..kernels import BinaryIVF
from .diskrows import DiskRows
from .manifest import Manifest
from .paths import ROTATION, inside
from .state import Segment, State

__all__ = ["extend_state", "load_codec", "load_state", "offsets_of", "seq_list"]

_SEGMENT_DTYPES = {"seqs": np.int64, "int8": np.int8, "float32": np.float32}


def load_codec(path: Path, m: Manifest) -> Codec:
    """The collection's code family bound to its manifest and codebook (a rotation matrix read and checked)."""
    d = m.codebook
    book = None
    if d is not None:
        rotation = None
        if d.get("rotation"):
            rotation = load_npy(inside(path, d["rotation"]["file"]), d["rotation"], verify=True)
            dim = int(m.dim or 0)
            if rotation.shape != (dim, dim) or not np.isfinite(rotation).all():
                raise CorruptCollectionError(f"{path / ROTATION} is not a finite ({dim}, {dim}) rotation matrix")
        family = codec_class(m.precision)
        assert issubclass(family, CodebookCodec)  # validate_manifest refuses a codebook of other families
        book = family.book_from_dict(d, rotation)
    return codec_class(m.precision)(m, book)


def _load_ann(path: Path, m: Manifest) -> Any:
    """The IVF index named by the manifest (arrays checked against their sizes / checksums)."""
    ann = m.ann
    if ann is None:
        return None
    d = inside(path, ann["dir"])
    arrays = {f[:-4]: load_npy(inside(d, f), info, verify=True) for f, info in ann["files"].items()}
    check_ivf_arrays(d, arrays, ann, int(m.dim or 0))
    try:
        return BinaryIVF.from_arrays(arrays)
    except InvalidInputError as exc:
        raise CorruptCollectionError(f"index {d}: {exc}") from None


def check_ivf_arrays(d: Path, arrays: dict[str, np.ndarray], ann: dict[str, Any], dim: int) -> None:
    """The index arrays index each other inside compiled loops with no bounds checks: check them first."""
    nlist, n, words = int(ann["nlist"]), int(ann["rows"]), -(-dim // 64)
    expected = {
        "centroids": ((nlist, words), "u"),
        "offsets": ((nlist + 1,), "i"),
        "rows": ((n,), "i"),
        "codes": ((n, words), "u"),
        "means": ((nlist, words * 64), "f"),
    }
    for name, arr in arrays.items():
        shape, kind = expected[name]
        if arr.shape != shape or arr.dtype.kind != kind:
            raise CorruptCollectionError(f"index {d}: {name}.npy has {arr.dtype} {arr.shape}, expected {shape}")
    offsets, rows = arrays["offsets"], arrays["rows"]
    if offsets[0] != 0 or offsets[-1] != n or (np.diff(offsets) < 0).any():
        raise CorruptCollectionError(f"index {d}: offsets.npy does not split {n} rows into {nlist} lists")
    if n and (rows.min() < 0 or rows.max() >= n or np.unique(rows).size != n):
        raise CorruptCollectionError(f"index {d}: rows.npy is not a permutation of its {n} rows")


def _segment_file(
    segdir: Path, fname: str, info: dict[str, Any], dtype: Any, shape: tuple[int, ...], in_ram: bool, verify: bool
) -> np.ndarray | DiskRows:
    """One segment file checked against its record, dtype and shape: in RAM (checksummed) or on disk."""
    fpath = inside(segdir, fname)
    if in_ram:
        got: np.ndarray | DiskRows = load_npy(fpath, info, verify=True)
    else:
        check_npy(fpath, info, verify)
        got = DiskRows(fpath)
    if got.dtype != dtype:  # the compiled scans and pread rows assume these exact types
        raise CorruptCollectionError(f"{fpath} holds {got.dtype}, expected {np.dtype(dtype)}")
    if got.shape != shape:
        raise CorruptCollectionError(f"{fpath} has shape {got.shape}, expected {shape}")
    return got


def _load_segment(
    path: Path, info: dict[str, Any], m: Manifest, codec: Codec, verify: bool
) -> tuple[Segment, np.ndarray | None]:
    """A segment's files: its codes into RAM (returned apart), the other rows left on disk."""
    segdir = inside(path, "segments", info["name"])
    files = info["files"]
    rows = int(info["rows"])
    if "seqs.npy" not in files:
        raise CorruptCollectionError(f"manifest lists no seqs.npy for segment {info['name']}")
    seqs = _segment_file(segdir, "seqs.npy", files["seqs.npy"], np.int64, (rows,), False, verify)
    assert isinstance(seqs, DiskRows)
    ram: np.ndarray | None = None
    if codec.codes_file is not None and codec.codes_file in files:
        shape = (rows, codec.width())
        got = _segment_file(segdir, codec.codes_file, files[codec.codes_file], codec.codes_dtype, shape, True, True)
        ram = np.asarray(got)
    disk: dict[str, DiskRows | None] = {"int8": None, "float32": None}
    for kind in disk:
        fname = f"{kind}.npy"
        if fname in files:
            in_ram = codec.keeps == kind
            got = _segment_file(segdir, fname, files[fname], _SEGMENT_DTYPES[kind], (rows, m.dim or 0), in_ram, verify)
            if isinstance(got, DiskRows):
                disk[kind] = got
            else:
                ram = got
    seq_start = None
    if rows:  # sequence numbers are consecutive until a compaction drops rows: then row -> seq is arithmetic
        first, last = seqs.take(np.array([0, rows - 1])).tolist()
        # ascending and below next_seq, or the next add would reuse (and first purge) stored sequence numbers
        if first < 0 or last - first < rows - 1 or last >= m.next_seq:
            raise CorruptCollectionError(
                f"segment {info['name']} holds sequence numbers {first}..{last}, which do not fit its "
                f"{rows} rows below the manifest's next_seq {m.next_seq}"
            )
        seq_start = first if last - first == rows - 1 else None
    return Segment(info["name"], rows, seqs, disk["int8"], disk["float32"], seq_start), ram


def seq_list(path: Path, record: dict[str, Any] | None, next_seq: int) -> np.ndarray:
    """A sorted list of sequence numbers a manifest record names (tombstones: deleted documents;
    novec: documents stored without a vector), checksummed."""
    if record is None:
        return np.zeros(0, dtype=np.int64)
    tpath = inside(path, record["file"])
    arr = load_npy(tpath, record, verify=True)
    if arr.ndim != 1 or arr.size != record["count"] or arr.dtype.kind not in "iu":
        raise CorruptCollectionError(f"{tpath} does not hold {record['count']} sequence numbers")
    arr = arr.astype(np.int64)
    if arr.size and (arr[0] < 0 or arr[-1] >= next_seq or (np.diff(arr) <= 0).any()):
        raise CorruptCollectionError(f"{tpath} does not hold distinct sorted sequence numbers below next_seq")
    return arr


def _deleted_mask(segments: tuple[Segment, ...], tomb: np.ndarray, total: int) -> np.ndarray:
    deleted = np.zeros(total, dtype=np.bool_)
    if tomb.size:
        pos = 0
        for s in segments:
            deleted[pos : pos + s.rows] = np.isin(s.seqs.read_all(), tomb)
            pos += s.rows
    return deleted


def offsets_of(segments: tuple[Segment, ...]) -> np.ndarray:
    """The first global row of each segment, and the total."""
    return np.concatenate([[0], np.cumsum([s.rows for s in segments])]).astype(np.int64)


def load_state(path: Path, m: Manifest, *, verify: bool, reuse: State | None = None) -> State:
    """Build the in-memory state for manifest ``m``; ``reuse`` shares segments already loaded."""
    tomb = seq_list(path, m.tombstones, m.next_seq)
    novec = seq_list(path, m.novec, m.next_seq)
    if reuse is not None and [s.name for s in reuse.segments] == [s["name"] for s in m.segments]:
        deleted = _deleted_mask(reuse.segments, tomb, reuse.rows)
        ann = reuse.ann if m.ann == reuse.manifest.ann else _load_ann(path, m)
        codec = reuse.codec if m.codebook == reuse.manifest.codebook else load_codec(path, m)
        return State(m, codec, reuse.segments, reuse.offsets, reuse.words, reuse.ram_rows, deleted, tomb, novec, ann)
    codec = load_codec(path, m)
    segments, ram_parts = [], []
    for info in m.segments:
        seg, ram = _load_segment(path, info, m, codec, verify)
        segments.append(seg)
        if ram is not None:
            ram_parts.append(ram)
    words, ram_rows = codec.load(ram_parts)
    offsets = offsets_of(tuple(segments))
    deleted = _deleted_mask(tuple(segments), tomb, int(offsets[-1]))
    return State(m, codec, tuple(segments), offsets, words, ram_rows, deleted, tomb, novec, _load_ann(path, m))


def extend_state(state: State, m: Manifest, path: Path, info: dict[str, Any]) -> State:
    """The state after appending one freshly written segment (reads back only that segment)."""
    codec = state.codec if m.codebook == state.manifest.codebook else load_codec(path, m)
    seg, ram = _load_segment(path, info, m, codec, verify=False)
    assert ram is not None
    segments = (*state.segments, seg)
    words, ram_rows = codec.append(state.words, state.ram_rows, ram)
    deleted = np.concatenate([state.deleted, np.zeros(seg.rows, dtype=np.bool_)])
    return State(
        m, codec, segments, offsets_of(segments), words, ram_rows, deleted, state.tombstones, state.novec, state.ann
    )
