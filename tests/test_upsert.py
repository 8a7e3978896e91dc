"""Collection.upsert: replaces stored documents and adds the rest in one commit."""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bitsearch.storage.store as bs
from bitsearch import Collection, DuplicateIdError, InvalidInputError

DIM = 6


def _vecs(n: int, seed: int) -> np.ndarray:
    """Unit vectors: each is its own best match by dot product."""
    v = np.random.default_rng(seed).normal(size=(n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def col(tmp_path: Path) -> Collection:
    c = Collection.create(tmp_path / "c", DIM, keep_float32=True, calibration_embeddings=_vecs(200, 99))
    c.add(_vecs(5, 0), ids=[f"a{i}" for i in range(5)], texts=[f"old apple {i}" for i in range(5)])
    return c


def _everything(c: Collection, queries: np.ndarray) -> dict[str, Any]:
    ids = [f"a{i}" for i in range(5)] + ["b0"]
    return {
        "len": len(c),
        "docs": [None if d is None else (d.id, d.text) for d in c.get(ids)],
        "dense": [[h.id for h in r] for r in c.search(queries, k=10, rescore="float32", rescore_multiplier=10)],
        "keyword": sorted(h.id for h in c.search("apple pear", k=10, mode="keyword")[0]),
    }


def test_upsert_replaces_and_adds(col: Collection, tmp_path: Path) -> None:
    new = _vecs(3, 1)
    assert col.upsert(new, ids=["a1", "a3", "b0"], texts=["pear 1", "pear 3", "pear b"]) == ["a1", "a3", "b0"]
    assert len(col) == 6
    docs = col.get(["a1", "a3", "b0", "a0"], with_vectors=True)
    assert [d.text for d in docs] == ["pear 1", "pear 3", "pear b", "old apple 0"]
    np.testing.assert_array_equal(np.stack([d.vector for d in docs[:3]]), new)
    # search finds only the new version: each new vector's nearest is itself, once
    res = col.search(new, k=6, rescore="float32", rescore_multiplier=10)
    assert [r[0].id for r in res] == ["a1", "a3", "b0"]
    for r in res:
        assert sorted(h.id for h in r) == ["a0", "a1", "a2", "a3", "a4", "b0"]
    kw = col.search("apple", k=10, mode="keyword")[0]
    assert sorted(h.id for h in kw) == ["a0", "a2", "a4"]  # the old texts of a1 and a3 are gone
    assert sorted(h.id for h in col.search("pear", k=10, mode="keyword")[0]) == ["a1", "a3", "b0"]
    again = Collection.open(tmp_path / "c", verify=True)
    assert _everything(again, new) == _everything(col, new)
    again.compact()
    assert _everything(again, new) == _everything(col, new)


def test_add_still_refuses_stored_ids(col: Collection) -> None:
    with pytest.raises(DuplicateIdError, match="a2"):
        col.add(_vecs(1, 2), ids=["a2"])
    assert len(col) == 5


def test_duplicate_ids_in_one_upsert_call(col: Collection) -> None:
    before = _everything(col, _vecs(2, 3))
    with pytest.raises(DuplicateIdError, match="more than once"):
        col.upsert(_vecs(2, 4), ids=["a1", "a1"])
    with pytest.raises(InvalidInputError, match="ids"):
        col.upsert(_vecs(1, 4), ids=None)  # type: ignore[arg-type]
    assert _everything(col, _vecs(2, 3)) == before


def test_a_failed_upsert_leaves_the_old_versions(col: Collection, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault after the new rows reached the document store, before the commit: nothing changes."""
    queries = _vecs(2, 5)
    before = _everything(col, queries)

    def fail(self: Any, manifest: Any) -> None:
        raise OSError("injected fault before the commit")

    monkeypatch.setattr(bs.Store, "commit", fail)
    with pytest.raises(OSError, match="injected"):
        col.upsert(_vecs(2, 6), ids=["a1", "b0"], texts=["pear x", "pear y"])
    monkeypatch.undo()
    assert _everything(col, queries) == before
    assert _everything(Collection.open(col.path), queries) == before
    col.upsert(_vecs(2, 6), ids=["a1", "b0"], texts=["pear x", "pear y"])  # and it works afterwards
    assert [d.text for d in col.get(["a1", "b0"])] == ["pear x", "pear y"]  # type: ignore[union-attr]


def test_upsert_into_a_store_of_an_older_release(col: Collection, tmp_path: Path) -> None:
    """Document stores that declared ids UNIQUE are rebuilt once, keeping texts and the keyword index."""
    con = sqlite3.connect(tmp_path / "c" / "docs.sqlite", isolation_level=None)
    con.executescript(
        """
        BEGIN;
        CREATE TABLE old (seq INTEGER PRIMARY KEY, id NOT NULL UNIQUE, text TEXT, metadata TEXT);
        INSERT INTO old SELECT * FROM docs;
        DROP TABLE docs;
        ALTER TABLE old RENAME TO docs;
        CREATE TRIGGER docs_fts_insert AFTER INSERT ON docs BEGIN
            INSERT INTO docs_fts(rowid, text) VALUES (new.seq, new.text);
        END;
        CREATE TRIGGER docs_fts_delete AFTER DELETE ON docs BEGIN
            INSERT INTO docs_fts(docs_fts, rowid, text) VALUES ('delete', old.seq, old.text);
        END;
        COMMIT;
        """
    )
    con.close()
    c = Collection.open(tmp_path / "c")
    assert c._docs.ids_unique()
    c.upsert(_vecs(1, 7), ids=["a2"], texts=["pear two"])
    assert not c._docs.ids_unique()
    assert sorted(h.id for h in c.search("apple", k=10, mode="keyword")[0]) == ["a0", "a1", "a3", "a4"]
    assert [h.id for h in c.search("pear", k=10, mode="keyword")[0]] == ["a2"]
    with pytest.raises(DuplicateIdError):
        c.add(_vecs(1, 8), ids=["a3"])


OPS = st.lists(
    st.tuples(st.sampled_from(["add", "upsert", "delete"]), st.lists(st.integers(0, 7), min_size=1, max_size=4)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=25, deadline=None)
@given(ops=OPS, seed=st.integers(0, 1000))
def test_writes_match_a_dictionary(tmp_path_factory: pytest.TempPathFactory, ops: list[Any], seed: int) -> None:
    """add / upsert / delete in any order: the collection holds what a dict of id -> vector holds,
    and exact search ranks it as numpy does."""
    path = tmp_path_factory.mktemp("ops") / "c"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = Collection.create(path, DIM, keep_float32=True, precision="int8")
    model: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(seed)
    for op, keys in ops:
        ids = [f"k{k}" for k in dict.fromkeys(keys)]
        vecs = rng.normal(size=(len(ids), DIM)).astype(np.float32)
        if op == "add":
            fresh = [i for i in ids if i not in model]
            if len(fresh) < len(ids):
                with pytest.raises(DuplicateIdError):
                    c.add(vecs, ids=ids)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                c.add(vecs, ids=ids, texts=[f"text {i}" for i in ids])
        elif op == "upsert":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                c.upsert(vecs, ids=ids, texts=[f"text {i}" for i in ids])
        else:
            ids = [i for i in ids if i in model]
            if ids:
                c.delete(ids)
            for i in ids:
                del model[i]
            continue
        model.update(zip(ids, vecs, strict=True))
    assert len(c) == len(model)
    assert sorted(c.existing_ids([f"k{k}" for k in range(8)])) == sorted(model)
    if model:
        keys = sorted(model)
        got = c.get(keys, with_vectors=True)
        np.testing.assert_array_equal(np.stack([d.vector for d in got]), np.stack([model[k] for k in keys]))
        q = rng.normal(size=(1, DIM)).astype(np.float32)
        res = c.search(q, k=len(model), rescore="float32", rescore_multiplier=len(model), exact=True)[0]
        ref = {k: float(q[0] @ v) for k, v in model.items()}
        assert sorted(h.id for h in res) == keys
        np.testing.assert_allclose([h.score for h in res], [ref[h.id] for h in res], rtol=1e-5, atol=1e-5)
        assert sorted(h.id for h in c.search("text", k=20, mode="keyword")[0]) == keys
