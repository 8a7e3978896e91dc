"""A collection directory may come from someone else: crafted manifests, symbolic links, copies
without their SQLite -wal file and read-only media must never delete anything outside the
collection, nor give silently wrong answers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import unit_vectors

from bitsearch import Collection
from bitsearch.errors import CollectionError, CorruptCollectionError

DIM = 32
N = 200


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two segments, a rotation matrix, an IVF index and a tombstone file, built once and closed."""
    path = tmp_path_factory.mktemp("base") / "c"
    x = unit_vectors(N, DIM)
    col = Collection.create(path, DIM, calibration_embeddings=x, rotation=True)
    col.add(x[:120], ids=[f"d{i}" for i in range(120)], texts=[f"text {i}" for i in range(120)])
    col.add(x[120:], ids=[f"d{i}" for i in range(120, N)], texts=[f"text {i}" for i in range(120, N)])
    col.build_index(nlist=8)
    col.delete(["d5"])
    col.close()
    m = json.loads((path / "manifest.json").read_text())
    assert m["ann"] and m["tombstones"] and m["codebook"]["rotation"] and len(m["segments"]) == 2
    return path


@pytest.fixture
def copy(base: Path, tmp_path: Path) -> Path:
    """A private copy of the base collection at tmp_path / "c"."""
    path = tmp_path / "c"
    shutil.copytree(base, path)
    return path


def _manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / "manifest.json").read_text())


def _write_manifest(path: Path, m: dict[str, Any]) -> None:
    (path / "manifest.json").write_text(json.dumps(m))


def _victim(where: Path) -> Path:
    """A folder outside the collection holding a file someone cares about."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "precious.txt").write_text("keep me")
    return where


# ----------------------------------------------------------------------------- crafted names


def _segment_name(path: Path, victim: Path, absolute: bool) -> Callable[[Collection], object]:
    """The first segment's folder moved outside and named by a relative or absolute path."""
    m = _manifest(path)
    shutil.move(path / "segments" / m["segments"][0]["name"], victim)
    _victim(victim)
    m["segments"][0]["name"] = str(victim) if absolute else "../../victim"
    _write_manifest(path, m)
    return lambda col: col.compact()


def _ann_dir(path: Path, victim: Path, absolute: bool) -> Callable[[Collection], object]:
    m = _manifest(path)
    shutil.move(path / m["ann"]["dir"], victim)
    _victim(victim)
    m["ann"]["dir"] = str(victim) if absolute else "../victim"
    _write_manifest(path, m)
    return lambda col: col.drop_index()


def _tombstone_file(path: Path, victim: Path, absolute: bool) -> Callable[[Collection], object]:
    m = _manifest(path)
    target = victim.with_suffix(".npy")
    shutil.move(path / m["tombstones"]["file"], target)
    m["tombstones"]["file"] = str(target) if absolute else "../victim.npy"
    _write_manifest(path, m)
    return lambda col: col.delete(["d6"])  # a delete removes the previous tombstone file


@pytest.mark.parametrize("absolute", [False, True], ids=["relative", "absolute"])
@pytest.mark.parametrize("craft", [_segment_name, _ann_dir, _tombstone_file])
def test_crafted_names_never_delete_outside_the_collection(
    copy: Path, tmp_path: Path, craft: Callable[..., Callable[[Collection], object]], absolute: bool
):
    victim = tmp_path / "victim"
    operation = craft(copy, victim, absolute)
    outside = victim if victim.exists() else victim.with_suffix(".npy")
    with pytest.raises(CorruptCollectionError, match="not a valid"):
        operation(Collection.open(copy))
    assert outside.exists()
    if outside.is_dir():
        assert (outside / "precious.txt").read_text() == "keep me"


def test_crafted_file_names_are_refused(copy: Path, tmp_path: Path):
    """The rotation file and the files listed inside segments and the index: known names only."""
    pristine = _manifest(copy)
    # the rotation matrix read from outside the collection
    m = json.loads(json.dumps(pristine))
    shutil.copy(copy / "rotation.npy", tmp_path / "outside.npy")
    m["codebook"]["rotation"]["file"] = "../outside.npy"
    _write_manifest(copy, m)
    with pytest.raises(CorruptCollectionError, match="rotation.file"):
        Collection.open(copy)
    # a file of a segment named by a path (anything but the format's own names)
    m = json.loads(json.dumps(pristine))
    files = m["segments"][0]["files"]
    files["../../../outside.npy"] = files["int8.npy"]
    _write_manifest(copy, m)
    with pytest.raises(CorruptCollectionError, match="unknown files"):
        Collection.open(copy)
    # an index array read from the collection's root instead of its folder
    m = json.loads(json.dumps(pristine))
    shutil.copy(copy / m["ann"]["dir"] / "means.npy", copy / "means.npy")
    m["ann"]["files"]["../means.npy"] = m["ann"]["files"].pop("means.npy")
    _write_manifest(copy, m)
    with pytest.raises(CorruptCollectionError, match="ann.files"):
        Collection.open(copy)
    _write_manifest(copy, pristine)
    assert len(Collection.open(copy, verify=True)) == N - 1


# ----------------------------------------------------------------------------- symbolic links


def test_symlinked_segments_folder_is_refused_and_nothing_is_deleted_through_it(copy: Path, tmp_path: Path):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(copy / "segments", elsewhere)
    unrelated = _victim(elsewhere / "unrelated")
    (copy / "segments").symlink_to(elsewhere)
    with pytest.raises(CorruptCollectionError, match="symbolic link"):
        Collection.open(copy)
    # planted after the collection was opened: the next write refuses too
    (copy / "segments").unlink()
    shutil.move(elsewhere, copy / "segments")
    col = Collection.open(copy)
    shutil.move(copy / "segments", elsewhere)
    (copy / "segments").symlink_to(elsewhere)
    with pytest.raises(CorruptCollectionError, match="symbolic link"):
        col.add(unit_vectors(3, DIM, 9), ids=["x1", "x2", "x3"])
    assert (unrelated / "precious.txt").read_text() == "keep me"
    assert len(list(elsewhere.iterdir())) == 3  # both segments and the unrelated folder


@pytest.mark.parametrize("which", ["segment", "index"])
def test_symlinked_collection_folders_are_refused(copy: Path, tmp_path: Path, which: str):
    m = _manifest(copy)
    folder = copy / "segments" / m["segments"][1]["name"] if which == "segment" else copy / m["ann"]["dir"]
    shutil.move(folder, tmp_path / "real")
    folder.symlink_to(tmp_path / "real")
    with pytest.raises(CorruptCollectionError, match="symbolic link"):
        Collection.open(copy)
    assert (tmp_path / "real").is_dir()


def test_remove_inside_refuses_outside_paths_and_symlinks(tmp_path: Path):
    from bitsearch.storage.paths import remove_inside

    root = tmp_path / "root"
    (root / "segments" / "000001").mkdir(parents=True)
    (root / "segments" / "000001" / "seqs.npy").write_bytes(b"x")
    victim = _victim(tmp_path / "victim")
    (root / "link").symlink_to(victim)
    (root / "segments" / "000002").symlink_to(victim)
    for target in (root / ".." / "victim", victim, root / "link", root / "segments" / "000002", root / "link" / "x"):
        with pytest.raises(CorruptCollectionError, match="refusing to delete"):
            remove_inside(root, target)
    assert (victim / "precious.txt").exists()
    remove_inside(root, root / "segments" / "000001")
    (root / "tombstones-000001.npy").write_bytes(b"x")
    remove_inside(root, root / "tombstones-000001.npy")
    assert not (root / "tombstones-000001.npy").exists()
    remove_inside(root, root / "segments" / "000003")  # already gone: nothing to do
    assert not (root / "segments" / "000001").exists()


# ----------------------------------------------------------------------------- the manifest's values


def test_unknown_precision_is_refused_at_open(copy: Path):
    _write_manifest(copy, {**_manifest(copy), "precision": "int4"})
    with pytest.raises(CorruptCollectionError, match="unknown precision 'int4'"):
        Collection.open(copy).search(unit_vectors(1, DIM), k=3)


def test_tampered_counters_are_refused_and_no_document_is_purged(copy: Path):
    pristine = _manifest(copy)
    _write_manifest(copy, {**pristine, "next_seq": 50})  # the next add would purge seq >= 50
    with pytest.raises(CorruptCollectionError, match="next_seq"):
        Collection.open(copy).add(unit_vectors(2, DIM, 5), ids=["n1", "n2"])
    with sqlite3.connect(copy / "docs.sqlite") as con:
        assert con.execute("SELECT COUNT(*) FROM docs").fetchone()[0] == N - 1
    # the next add would overwrite (first delete) a listed segment
    _write_manifest(copy, {**pristine, "next_segment": 1})
    with pytest.raises(CorruptCollectionError, match="next_segment"):
        Collection.open(copy).add(unit_vectors(2, DIM, 5), ids=["n1", "n2"])
    _write_manifest(copy, pristine)
    assert len(Collection.open(copy)) == N - 1


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """An edit of the manifest at a dotted path (list indices as numbers)."""

    def edit(m: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = m
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return edit


SCHEMA_CASES = {
    "dim as a string": _set("dim", "32"),
    "keep_int8 not a bool": _set("keep_int8", "yes"),
    "ranges with NaN": lambda m: m["ranges"][0].__setitem__(3, float("nan")),
    "ranges of the wrong width": lambda m: m["ranges"][1].pop(),
    "ranges with max below min": lambda m: m["ranges"][1].__setitem__(0, m["ranges"][0][0] - 1),
    "negative generation": _set("generation", -1),
    "rows as a string": _set("segments.0.rows", "120"),
    "segments not a list": _set("segments", {"000000": {}}),
    "bad sha256": lambda m: m["segments"][1]["files"]["seqs.npy"].__setitem__("sha256", "x"),
    "tombstone count above the rows": _set("tombstones.count", N + 5),
    "nlist zero": _set("ann.nlist", 0),
    "codebook kind mismatch": _set("codebook.kind", "2bit"),
    "model a list": _set("model", ["name"]),
    "stage1 unknown": _set("stage1", "fast"),
    "query_bits out of range": _set("codes.query_bits", 12),
    "keep_float32 without its files": _set("keep_float32", True),
}


@pytest.mark.parametrize("edit", list(SCHEMA_CASES.values()), ids=list(SCHEMA_CASES))
def test_manifest_schema_violations_are_refused_at_open(copy: Path, edit: Callable[[dict[str, Any]], None]):
    m = _manifest(copy)
    edit(m)
    _write_manifest(copy, m)
    with pytest.raises(CorruptCollectionError, match=r"manifest\.json: "):
        Collection.open(copy).search(unit_vectors(2, DIM), k=5)


# ----------------------------------------------------------------------------- the document store


def test_copy_without_the_wal_file_is_complete_or_refused(base: Path, tmp_path: Path):
    """Committed documents are in docs.sqlite itself, not only in its -wal file."""
    path = tmp_path / "c"
    shutil.copytree(base, path)
    col = Collection.open(path)  # stays open: nothing checkpoints on close before the copy
    col.add(unit_vectors(50, DIM, 3), ids=[f"w{i}" for i in range(50)], texts=["late"] * 50)
    copied = tmp_path / "copied"
    shutil.copytree(path, copied, ignore=shutil.ignore_patterns("docs.sqlite-wal", "docs.sqlite-shm"))
    try:
        other = Collection.open(copied)
    except CorruptCollectionError as exc:  # refusing the copy is as good as completing it
        assert "docs.sqlite" in str(exc)
        return
    ids = [f"d{i}" for i in range(N) if i != 5] + [f"w{i}" for i in range(50)]
    assert len(other) == N - 1 + 50
    assert other.existing_ids(ids) == ids


def test_store_missing_documents_is_detected_at_open(copy: Path):
    with sqlite3.connect(copy / "docs.sqlite") as con:
        con.execute("DELETE FROM docs WHERE seq >= 150")
    con.close()
    with pytest.raises(CorruptCollectionError, match=r"counts 199 documents but docs\.sqlite holds 149"):
        Collection.open(copy)


def _files(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


def test_read_only_collection_opens_and_searches(copy: Path, monkeypatch: pytest.MonkeyPatch):
    """Decided by os.access, so simulated here: root (CI) can write anything whatever the mode bits."""
    real_access = os.access

    def access(p: Any, mode: int, *args: Any, **kw: Any) -> bool:
        inside = Path(os.path.abspath(p)).is_relative_to(copy)
        return False if inside and mode & os.W_OK else real_access(p, mode, *args, **kw)

    monkeypatch.setattr(os, "access", access)
    before = _files(copy)
    col = Collection.open(copy)
    hits = col.search(unit_vectors(3, DIM, 2), k=5)
    assert all(len(h) == 5 and h[0].text for h in hits)
    assert col.search(query_texts="text 7", mode="keyword", k=3)[0][0].id == "d7"
    assert len(col) == N - 1
    assert _files(copy) == before  # no -wal, no -shm, no lock file: nothing written
    with pytest.raises(CollectionError, match="read-only"):
        col.add(unit_vectors(1, DIM, 4), ids=["new"])
    with pytest.raises(CollectionError, match="read-only"):
        col.delete(["d1"])
    col.close()
    assert _files(copy) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any mode bits (the simulated test covers it)")
def test_read_only_permissions_open_and_search(copy: Path):
    for p in [copy, *copy.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        col = Collection.open(copy)
        assert len(col.search(unit_vectors(2, DIM, 2), k=4)[0]) == 4
        with pytest.raises(CollectionError, match="read-only"):
            col.add(unit_vectors(1, DIM, 4), ids=["new"])
    finally:
        for p in [copy, *copy.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


def _replace_array(path: Path, info: dict[str, Any], array: np.ndarray) -> None:
    """Rewrite a collection array and its manifest record, as a crafted collection would."""
    np.save(path, array, allow_pickle=False)
    info["bytes"] = path.stat().st_size
    info["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()


def test_crafted_arrays_with_matching_checksums_are_refused(copy: Path):
    """Checksums prove nothing in a crafted collection: index arrays that would send the compiled
    scans out of bounds, and segment arrays of another type, are refused at open."""
    pristine = _manifest(copy)
    ann = copy / pristine["ann"]["dir"]
    saved = {f: (ann / f).read_bytes() for f in ("rows.npy", "offsets.npy")}
    m = json.loads(json.dumps(pristine))
    rows = np.load(ann / "rows.npy")
    rows[3] = 10**9
    _replace_array(ann / "rows.npy", m["ann"]["files"]["rows.npy"], rows)
    _write_manifest(copy, m)
    with pytest.raises(CorruptCollectionError, match="rows.npy is not a permutation"):
        Collection.open(copy)
    (ann / "rows.npy").write_bytes(saved["rows.npy"])
    m = json.loads(json.dumps(pristine))
    offsets = np.load(ann / "offsets.npy")
    offsets[1], offsets[2] = offsets[2] + 5, offsets[1]
    _replace_array(ann / "offsets.npy", m["ann"]["files"]["offsets.npy"], offsets)
    _write_manifest(copy, m)
    with pytest.raises(CorruptCollectionError, match="offsets.npy does not split"):
        Collection.open(copy)
    (ann / "offsets.npy").write_bytes(saved["offsets.npy"])
    m = json.loads(json.dumps(pristine))
    seg = copy / "segments" / m["segments"][0]["name"]
    unsigned = np.load(seg / "int8.npy").view(np.uint8)  # same shape, read as other values
    _replace_array(seg / "int8.npy", m["segments"][0]["files"]["int8.npy"], unsigned)
    _write_manifest(copy, m)
    with pytest.raises(CorruptCollectionError, match="int8.npy holds uint8"):
        Collection.open(copy)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a manifest, not descending into arrays of numbers (ranges, thresholds, ...)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list) and node and isinstance(node[0], dict):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def test_any_junk_value_is_refused_or_harmless(copy: Path):
    """Every field of the manifest replaced by values of other types and ranges: the open either
    fails with CorruptCollectionError (FormatVersionError for a newer version), or the collection opens
    and searches (never another error)."""
    pristine = _manifest(copy)
    junk: list[Any] = [None, -1, "../x", [], {}, True, 2**70]
    q = unit_vectors(2, DIM, 7)
    for path in _paths(pristine):
        for value in junk:
            m = json.loads(json.dumps(pristine))
            node: Any = m
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            _write_manifest(copy, m)
            try:
                col = Collection.open(copy)
            except CollectionError:
                continue
            col.search(q, k=5)
            col.close()
    _write_manifest(copy, pristine)
