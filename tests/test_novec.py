"""Documents stored without vectors (Haystack's embedding=None): kept, counted, filtered, found by keyword
search and ``get``, deleted, and never returned by dense search."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitsearch import Collection, CorruptCollectionError, DimensionMismatchError, InvalidInputError

DIM = 6


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _create(path: Path, **kw: Any) -> Collection:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Collection.create(path, DIM, keep_float32=True, **kw)


def test_embeddings_none_and_none_rows(tmp_path: Path) -> None:
    c = _create(tmp_path / "c")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c.add(np.stack([_vec(i) for i in range(4)]), ids=["v0", "v1", "v2", "v3"], texts=["plain"] * 4)
    assert c.add(None, ids=["t0", "t1"], texts=["lonely text", "other text"], metadata=[{"g": 1}, {"g": 2}]) == [
        "t0",
        "t1",
    ]
    assert c.add(None, texts=["numbered text"]) == [6]  # ids default to sequence numbers, as with vectors
    c.upsert([_vec(9), None], ids=["m0", "m1"], texts=["mixed text", "mixed none"])
    assert len(c) == 9 and c.stats()["documents_without_vectors"] == 4
    assert c.manifest["format_version"] == 4
    got = c.get(["t0", "m1", "m0", "v0"], with_vectors=True)
    assert [d.vector is None for d in got] == [True, True, False, False]  # type: ignore[union-attr]
    np.testing.assert_array_equal(got[2].vector, _vec(9))  # type: ignore[union-attr]
    dense = c.search(np.stack([_vec(i) for i in range(3)]), k=20, rescore="float32")
    assert all(sorted(h.id for h in r) == ["m0", "v0", "v1", "v2", "v3"] for r in dense)
    kw = {h.id for h in c.search("text", k=20, mode="keyword")[0]}
    assert kw == {6, "m0", "t0", "t1"}
    assert [h.id for h in c.search("lonely", k=5, mode="keyword", filter={"g": 1})[0]] == ["t0"]
    assert c.search("lonely", k=5, mode="keyword", filter={"g": 2})[0] == []
    hybrid = c.search(_vec(0), k=20, mode="hybrid", query_texts=["zzz"])[0]  # the keyword part finds nothing
    assert "t0" not in {h.id for h in hybrid}
    with pytest.raises(InvalidInputError, match="no documents"):
        c.add(None)
    with pytest.raises(DimensionMismatchError):
        c.add([np.zeros(DIM + 1, np.float32), None], ids=["x", "y"])
    with pytest.raises(InvalidInputError, match="embeddings\\[0\\]"):
        c.add([np.zeros((2, DIM), np.float32), None], ids=["x", "y"])
    assert len(c) == 9


def test_survive_delete_build_index_compact_and_reopen(tmp_path: Path) -> None:
    c = _create(tmp_path / "c")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c.add([_vec(i) if i % 3 else None for i in range(12)], ids=[f"d{i}" for i in range(12)], texts=["x"] * 12)
    novec = {f"d{i}" for i in range(0, 12, 3)}
    c.delete(["d3", "d4"])
    c.build_index(nlist=2, nprobe=2)
    for col in (c, Collection.open(tmp_path / "c", verify=True)):
        assert len(col) == 10 and col.stats()["documents_without_vectors"] == 3
        col.compact()
        assert len(col) == 10 and col.stats()["documents_without_vectors"] == 3
        again = Collection.open(tmp_path / "c", verify=True)
        ids = {h.id for h in again.search(_vec(1), k=20)[0]}
        assert ids == {f"d{i}" for i in range(12)} - novec - {"d4"}
        assert {h.id for h in again.search("x", k=20, mode="keyword")[0]} == {f"d{i}" for i in range(12)} - {"d3", "d4"}
    c.delete(["d0", "d6", "d9"])
    c.compact()
    assert c.manifest.get("novec") is None and len(c) == 7


def test_a_crafted_novec_record_is_refused(tmp_path: Path) -> None:
    c = _create(tmp_path / "c")
    c.add(None, ids=["a"], texts=["t"])
    mpath = tmp_path / "c" / "manifest.json"
    good = json.loads(mpath.read_text())
    for field, value in (("file", "../novec-000001.npy"), ("count", 5), ("count", True)):
        bad = json.loads(json.dumps(good))
        bad["novec"][field] = value
        mpath.write_text(json.dumps(bad))
        with pytest.raises(CorruptCollectionError):
            Collection.open(tmp_path / "c")
    bad = json.loads(json.dumps(good))
    bad["format_version"] = 3
    mpath.write_text(json.dumps(bad))
    with pytest.raises(CorruptCollectionError, match="format_version 4"):
        Collection.open(tmp_path / "c")
    mpath.write_text(json.dumps(good))
    assert len(Collection.open(tmp_path / "c", verify=True)) == 1


@settings(max_examples=20, deadline=None)
@given(
    batches=st.lists(st.lists(st.booleans(), min_size=1, max_size=5), min_size=1, max_size=4),
    precision=st.sampled_from(["binary", "2bit", "int8"]),
    deletes=st.sets(st.integers(0, 19), max_size=6),
)
def test_dense_search_never_returns_documents_without_vectors(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[bool]], precision: str, deletes: set[int]
) -> None:
    path = tmp_path_factory.mktemp("nv") / "c"
    c = _create(path, precision=precision)
    has: dict[str, bool] = {}
    for batch in batches:
        ids = [f"d{len(has) + j}" for j in range(len(batch))]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c.add([_vec(len(has) + j) if v else None for j, v in enumerate(batch)], ids=ids, texts=["w"] * len(ids))
        has.update(zip(ids, batch, strict=True))
    gone = [f"d{i}" for i in deletes if f"d{i}" in has]
    if gone:
        c.delete(gone)
    live = {i: v for i, v in has.items() if i not in gone}
    for col in (c, Collection.open(path, verify=True)):
        assert len(col) == len(live)
        with_vec = {i for i, v in live.items() if v}
        dense = col.search(_vec(99), k=30, rescore=None, exact=True)[0]
        assert {h.id for h in dense} == with_vec
        assert {h.id for h in col.search("w", k=30, mode="keyword")[0]} == set(live)
        docs = col.get(sorted(live), with_vectors=True)
        assert {d.id for d in docs if d is not None and d.vector is None} == set(live) - with_vec
    c.compact()
    assert {h.id for h in c.search(_vec(99), k=30, rescore=None, exact=True)[0]} == with_vec
