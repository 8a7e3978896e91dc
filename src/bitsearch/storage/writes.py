"""The writes of a collection: create, add / upsert, delete, compact and the approximate index.

Each write holds the store's locks (``Store.writing``), writes new files under temporary names, and
commits with one manifest write; the new ``State`` is installed after the commit.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..codecs import CodebookCodec, Codec, codec_class
from ..errors import CollectionError, DuplicateIdError, InvalidInputError, UnknownIdError
from ..files import fsync_dir, save_npy
from ..kernels import BinaryIVF
from ..quantize import calibrate_ranges, quantize_embeddings
from ..store import DocId, normalize_id
from .inputs import as_list, check_ids, check_meta, check_payload, check_text, check_unique, check_vectors
from .loading import extend_state, load_codec, load_state, seq_list
from .manifest import Manifest
from .paths import ROTATION
from .state import State

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "INT8_CLIP_WARN",
    "build_index",
    "compact",
    "delete",
    "drop_index",
    "fit_codebook",
    "write_documents",
]

log = logging.getLogger(__name__)

# a write with more int8 values clipped than this share warns; compact() recalibrates (from kept float32
# rows) when more than this share of the values written since the last calibration were clipped
INT8_CLIP_WARN = 0.01


# ----------------------------------------------------------------------------- files of a write


def fit_codebook(path: Path, m: Manifest, emb: np.ndarray) -> dict[str, Any]:
    """Calibrate the collection's codebook on ``emb``; a rotation matrix is written beside the manifest."""
    codec = codec_class(m.precision)
    assert issubclass(codec, CodebookCodec) and m.codes is not None
    book = codec.fit(emb, m.codes)
    d: dict[str, Any] = book.to_dict()
    d["rotation"] = None
    if book.rotation is not None:
        tmp = path / f".{ROTATION}.tmp"
        info = save_npy(tmp, book.rotation)
        os.replace(tmp, path / ROTATION)
        fsync_dir(path)
        d["rotation"] = {"file": ROTATION, **info}
    return d


def _write_seq_list(path: Path, m: Manifest, key: str, seqs: np.ndarray) -> dict[str, Any]:
    """Write sorted sequence numbers (``key``: "tombstones" or "novec") for the commit of ``m``;
    returns their manifest record."""
    fname = f"{key}-{m.generation + 1:06d}.npy"
    info = save_npy(path / f".{fname}.tmp", seqs)
    os.replace(path / f".{fname}.tmp", path / fname)
    fsync_dir(path)
    return {"file": fname, "count": int(seqs.size), **info}


def _write_dir(path: Path, name: str, tmp_name: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Write ``arrays`` as .npy files into a new folder ``path / name`` (through the temporary folder
    ``tmp_name``, fsynced, then renamed into place); returns the files' records."""
    tmp = path / tmp_name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files = {fname: save_npy(tmp / fname, arr) for fname, arr in arrays.items()}
    fsync_dir(tmp)
    final = path / name
    if final.exists():  # names are never reused (see Manifest.take_number): renaming onto one could replace it
        raise CollectionError(f"directory {final} already exists")
    os.rename(tmp, final)
    fsync_dir(path)
    return files


def _write_segment(path: Path, m: Manifest, arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], Manifest]:
    """A new segment folder of ``arrays`` (seqs.npy first); its manifest record and the manifest
    with the segment counter moved on."""
    number, m = m.take_number(path)
    name = f"{number:06d}"
    files = _write_dir(path / "segments", name, f".tmp-{name}-{os.getpid()}", arrays)
    return {"name": name, "rows": int(arrays["seqs.npy"].shape[0]), "files": files}, m


def _segment_arrays(
    codec: Codec, m: Manifest, emb: np.ndarray, seqs: np.ndarray, ranges: np.ndarray | None
) -> dict[str, np.ndarray]:
    """The files of a new segment for ``emb``: seqs, the stage-1 codes, the kept int8 / float32 rows."""
    arrays: dict[str, np.ndarray] = {"seqs.npy": seqs}
    codes = codec.encode(emb, ranges)
    if codes is not None:
        arrays[str(codec.codes_file)] = codes
    if m.keep_int8:
        arrays["int8.npy"] = quantize_embeddings(emb, "int8", ranges=ranges)
    if m.keep_float32:
        arrays["float32.npy"] = emb.astype(np.float32)
    return arrays


# ----------------------------------------------------------------------------- add / upsert


def write_documents(
    store: Store,
    embeddings: np.ndarray | Sequence[Any] | None,
    ids: Sequence[object] | None,
    texts: Sequence[str | None] | None,
    metadata: Sequence[dict[str, Any] | None] | None,
    *,
    replace: bool,
) -> list[DocId]:
    """``add`` (``replace=False``) or ``upsert``: checks, then a segment for the rows with vectors, the
    list of documents without, docs rows, tombstones of replaced documents, and one commit."""
    emb, has_vec, n = check_vectors(store.state.manifest.dim, embeddings, ids, texts, metadata)
    given_ids = None if ids is None else check_ids(ids, n)
    texts = check_payload(texts, n, "texts", check_text)
    metadata = check_payload(metadata, n, "metadata", check_meta)
    with store.writing() as state:
        m = state.manifest
        first_seq = m.next_seq
        doc_ids: list[DocId] = list(range(first_seq, first_seq + n)) if given_ids is None else given_ids
        existing, stale = store.live_seqs(doc_ids)
        if existing and not replace:
            shown = ", ".join(repr(i) for i in list(existing)[:5])
            raise DuplicateIdError(f"document id(s) already in the collection: {shown} (upsert replaces them)")
        if stale:  # left by a delete that committed before its rows were purged
            store.docs.purge_seqs(list(stale))
        if existing:  # the new rows go in beside the old ones until the commit tombstones those
            store.docs.allow_repeated_ids()
        seqs = np.arange(first_seq, first_seq + n, dtype=np.int64)
        seg_info = None
        if emb is not None:
            seg_info, m = _write_vectors(store, state, m, emb, seqs[has_vec])
        if not has_vec.all():
            novec = _write_seq_list(store.path, m, "novec", np.union1d(state.novec, seqs[~has_vec]))
            m = m.replace(novec=novec, format_version=max(m.format_version, 4))
        old = np.asarray(sorted(existing.values()), dtype=np.int64)
        if old.size:
            tomb = np.union1d(state.tombstones, old).astype(np.int64)
            m = m.replace(tombstones=_write_seq_list(store.path, m, "tombstones", tomb))
        store.docs.insert(first_seq, doc_ids, texts, metadata)
        m = store.commit(m.replace(next_seq=first_seq + n))
        store.state = _after_write(store.path, state, m, seg_info, old)
        if old.size:
            store.tidy(purge=old.tolist())
    return doc_ids


def _write_vectors(
    store: Store, state: State, m: Manifest, emb: np.ndarray, seqs: np.ndarray
) -> tuple[dict[str, Any], Manifest]:
    """The segment of a write's vectors (the dimension, int8 ranges and codebook set on the first)."""
    if m.dim is None:  # the first write of vectors fixes the dimension
        m = m.replace(dim=int(emb.shape[1]))
    m = _calibrate(store.path, m, emb)
    ranges = m.ranges_array
    if ranges is not None and m.keep_int8:
        m = _count_clipped(m, emb, ranges)
    codec = state.codec if m.codebook is state.manifest.codebook and m.dim == state.manifest.dim else None
    if codec is None:
        codec = load_codec(store.path, m)
    seg_info, m = _write_segment(store.path, m, _segment_arrays(codec, m, emb, seqs, ranges))
    return seg_info, m.replace(segments=(*m.segments, seg_info))


def _after_write(path: Path, state: State, m: Manifest, seg_info: dict[str, Any] | None, old: np.ndarray) -> State:
    """The state after a committed add or upsert: the new segment read back, documents without
    vectors and the tombstones of replaced documents taken in."""
    if seg_info is not None and state.manifest.dim is None:  # the first vectors: read it all afresh
        return load_state(path, m, verify=False)
    new = extend_state(state, m, path, seg_info) if seg_info is not None else state
    novec = seq_list(path, m.novec, m.next_seq)
    tomb = seq_list(path, m.tombstones, m.next_seq)
    deleted = new.deleted
    old_rows = np.setdiff1d(old, state.novec)  # replaced documents that had a vector
    if old_rows.size:
        deleted = deleted.copy()
        deleted[state.rows_of(old_rows)] = True
    return State(m, new.codec, new.segments, new.offsets, new.words, new.ram_rows, deleted, tomb, novec, new.ann)


def _calibrate(path: Path, m: Manifest, emb: np.ndarray) -> Manifest:
    """The manifest with int8 ranges (and the codebook) calibrated on ``emb`` where it has none yet."""
    n = emb.shape[0]
    if m.keep_int8 and m.ranges is None:
        if n < 100:
            warnings.warn(
                f"int8 ranges calibrated on only {n} embeddings; pass `ranges` or "
                "`calibration_embeddings` to Collection.create for stable int8 codes",
                stacklevel=5,
            )
        m = m.replace(ranges=calibrate_ranges(emb).tolist())
    if m.codes is not None and m.codebook is None:
        m = m.replace(codebook=fit_codebook(path, m, emb))
        version = codec_class(m.precision)(m, None).min_version()
        m = m.replace(format_version=max(m.format_version, version))
    return m


def _count_clipped(m: Manifest, emb: np.ndarray, ranges: np.ndarray) -> Manifest:
    """Add this write's int8 values outside the ranges (clipped to them) to the manifest's count, and
    warn when more than ``INT8_CLIP_WARN`` of them are: the data have outgrown the calibration."""
    clipped = int(np.count_nonzero((emb < ranges[0]) | (emb > ranges[1])))
    before = m.int8_clipped or (0, 0)
    m = m.replace(int8_clipped=(before[0] + clipped, before[1] + int(emb.size)))
    if clipped > INT8_CLIP_WARN * emb.size:
        fix = (
            "compact() recalibrates them from the kept float32 rows once over 1% of all values are clipped"
            if m.keep_float32 and not m.ranges_given
            else "recreate the collection with wider ranges (or keep_float32=True, which lets compact() recalibrate)"
        )
        warnings.warn(
            f"{clipped / emb.size:.1%} of this write's int8 values lie outside the collection's int8 ranges "
            f"and were clipped (int8 rescoring loses precision on them); {fix}",
            UserWarning,
            stacklevel=5,
        )
    return m


# ----------------------------------------------------------------------------- delete / compact


def delete(store: Store, ids: Sequence[object]) -> int:
    """Tombstone documents by id (see ``Collection.delete``); returns how many were deleted."""
    if isinstance(ids, (str, int, np.integer)):
        ids = [ids]
    norm = [normalize_id(i) for i in as_list(ids, "ids", "the ids to delete")]
    if not norm:
        return 0
    check_unique(norm)
    with store.writing() as state:
        live, stale = store.live_seqs(norm)
        missing = [i for i in norm if i not in live]
        if missing:
            if missing[0] in set(stale.values()):
                raise UnknownIdError(f"document id {missing[0]!r} was already deleted")
            shown = ", ".join(repr(i) for i in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise UnknownIdError(f"unknown document id(s): {shown}{more}")
        seqs = np.asarray([live[i] for i in norm], dtype=np.int64)
        tomb = np.union1d(state.tombstones, seqs).astype(np.int64)
        m = state.manifest
        m = store.commit(m.replace(tombstones=_write_seq_list(store.path, m, "tombstones", tomb)))
        store.state = load_state(store.path, m, verify=False, reuse=state)
        store.tidy(purge=seqs.tolist())
    return len(norm)


def _recalibrate_int8(m: Manifest) -> bool:
    """Whether ``compact`` recalibrates the int8 ranges: more than ``INT8_CLIP_WARN`` of the values
    written since the last calibration were clipped, the float32 originals are kept to re-encode from,
    and the ranges were calibrated rather than given to ``create``. A few clipped outliers leave the
    ranges (and so the int8 scores) as they are."""
    clipped, total = m.int8_clipped or (0, 0)
    return bool(m.keep_float32 and clipped > INT8_CLIP_WARN * total and not m.ranges_given)


def _kept_rows(state: State, m: Manifest, keep: np.ndarray, seqs: np.ndarray) -> tuple[dict[str, Any], Manifest]:
    """The files of the one segment compaction writes: the kept rows' seqs, codes and int8 / float32 rows."""
    arrays: dict[str, np.ndarray] = {"seqs.npy": seqs}
    codes = state.codec.compact(state, keep)
    if codes is not None:
        arrays[str(state.codec.codes_file)] = codes
    if m.keep_float32:
        arrays["float32.npy"] = state.gather("float32", keep)
    if m.keep_int8:
        if _recalibrate_int8(m):  # values were clipped: ranges from the kept originals
            ranges = calibrate_ranges(arrays["float32.npy"])
            arrays["int8.npy"] = quantize_embeddings(arrays["float32.npy"], "int8", ranges=ranges)
            m = m.replace(ranges=ranges.tolist(), int8_clipped=(0, int(arrays["int8.npy"].size)))
        else:
            arrays["int8.npy"] = state.gather("int8", keep)
    return arrays, m


def compact(store: Store) -> None:
    """Rewrite all segments into one without deleted rows, and drop the tombstones."""
    with store.writing() as state:
        m = state.manifest
        keep = np.flatnonzero(~state.deleted)
        seqs = state.gather("seqs", keep)
        docs = store.docs
        # the rows of deleted documents leave the document store before the tombstones that hide
        # them do, so no crash can leave a row that looks live; rows of no segment at all (left so
        # by older releases) go too. Idempotent: a crash before the commit loses nothing visible.
        docs.purge_seqs(state.tombstones.tolist())
        novec = state.live_novec
        if docs.count_below(m.next_seq) != keep.size + novec.size:
            stored = np.asarray(docs.stored_seqs(m.next_seq), dtype=np.int64)
            docs.purge_seqs(np.setdiff1d(stored, np.union1d(seqs, novec)).tolist())
        m = m.replace(novec=_write_seq_list(store.path, m, "novec", novec) if novec.size else None, segments=())
        if keep.size:
            arrays, m = _kept_rows(state, m, keep, seqs)
            seg_info, m = _write_segment(store.path, m, arrays)
            m = m.replace(segments=(seg_info,))
        m = m.replace(tombstones=None)
        if m.ann is not None:  # row numbers change: rebuild the index over the new rows
            params = {key: int(m.ann[key]) for key in ("nlist", "nprobe", "seed")}
            m = m.replace(ann=None)
            if keep.size and state.words is not None:
                m = _with_index(store.path, m, state.words[keep], **params)
        m = store.commit(m)
        store.state = load_state(store.path, m, verify=False)
        store.tidy()


# ----------------------------------------------------------------------------- approximate stage 1


def _with_index(path: Path, m: Manifest, words: np.ndarray, *, nlist: int, nprobe: int, seed: int) -> Manifest:
    """Train and fill an IVF over ``words``, write its arrays to ``ann-NNNNNN/``; the manifest naming it."""
    number, m = m.take_number(path)
    ivf = BinaryIVF.train(words, int(nlist), seed=int(seed))
    ivf.add(words)
    name = f"ann-{number:06d}"
    files = _write_dir(path, name, f".{name}.tmp-{os.getpid()}", {f"{k}.npy": v for k, v in ivf.to_arrays().items()})
    ann = {"kind": "ivf", "dir": name, "nlist": int(nlist), "nprobe": int(nprobe), "seed": int(seed),
           "rows": int(words.shape[0]), "files": files}  # fmt: skip
    return m.replace(ann=ann)


def build_index(store: Store, nlist: int | None, nprobe: int, seed: int) -> None:
    """Build the approximate stage 1 (see ``Collection.build_index``)."""
    with store.writing() as state:
        if not state.codec.supports_index or state.words is None:
            raise InvalidInputError("an approximate index needs a binary collection")
        if state.rows == 0:
            raise InvalidInputError("the collection is empty: add documents before building an index")
        if nlist is None:
            nlist = int(min(state.rows, max(1, round(4 * np.sqrt(state.rows)))))
        if nprobe < 1:
            raise InvalidInputError(f"nprobe must be >= 1, got {nprobe}")
        m = _with_index(store.path, state.manifest, state.words, nlist=nlist, nprobe=nprobe, seed=seed)
        m = store.commit(m)
        store.state = load_state(store.path, m, verify=False)
        store.tidy()


def drop_index(store: Store) -> None:
    """Remove the approximate index: stage 1 is an exact scan again."""
    with store.writing() as state:
        if state.manifest.ann is None:
            return
        m = store.commit(state.manifest.replace(ann=None))
        store.state = load_state(store.path, m, verify=False)
        store.tidy()
