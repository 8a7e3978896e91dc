"""The approximate stage 1 (IVF over binary codes) wired into Collection: exactness bounds, writes, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bitsearch import Collection, InvalidInputError

DIM = 64


def _clustered(n: int, seed: int = 0, centres: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, DIM))
    x = c[rng.integers(0, centres, n)] + 0.45 * rng.normal(size=(n, DIM))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def col(tmp_path: Path) -> Collection:
    c = Collection.create(tmp_path / "c", DIM, stage1="hamming")
    c.add(_clustered(6000), ids=[f"d{i}" for i in range(6000)])
    return c


def _ids(res) -> list[list[object]]:
    return [[h.id for h in r] for r in res]


def test_probing_every_list_is_exact(col: Collection, tmp_path: Path):
    q = _clustered(20, seed=1)
    exact = col.search(q, k=10, rescore=None)
    col.build_index(nlist=50, nprobe=5)
    assert col.search(q, k=10, rescore=None).stages == ["ivf"]
    assert _ids(col.search(q, k=10, rescore=None, nprobe=50)) == _ids(exact)
    # rows added after the build are scanned exactly; deleted rows never come back
    col.add(_clustered(500, seed=2), ids=[f"n{i}" for i in range(500)])
    col.delete(["d1", "d2", "n3"])
    for rescore in (None, "int8"):
        a = col.search(q, k=10, rescore=rescore, nprobe=50)
        e = col.search(q, k=10, rescore=rescore, exact=True)
        assert _ids(a) == _ids(e) and e.stages[0] == "hamming"
        assert not {"d1", "d2", "n3"} & {i for r in _ids(a) for i in r}
    again = Collection.open(tmp_path / "c", verify=True)
    assert _ids(again.search(q, k=10, nprobe=50)) == _ids(col.search(q, k=10, exact=True))
    assert again.stats()["stages"]["ivf"]["ram_bytes"] > 0


def test_recall_on_clustered_data(col: Collection):
    q = _clustered(50, seed=3)
    exact = col.search(q, k=10, rescore=None)
    col.build_index(nlist=40, nprobe=12)
    approx = col.search(q, k=10, rescore=None)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(_ids(approx), _ids(exact), strict=True)])
    assert recall >= 0.9, recall


def test_compact_rebuilds_and_drop(col: Collection, tmp_path: Path):
    col.build_index(nlist=30, nprobe=30)
    col.delete([f"d{i}" for i in range(0, 6000, 3)])
    col.compact()
    m = col.manifest
    assert m["ann"]["rows"] == 4000 and m["ann"]["nlist"] == 30
    dirs = sorted(p.name for p in (tmp_path / "c").glob("ann-*"))
    assert dirs == [m["ann"]["dir"]]
    q = _clustered(10, seed=4)
    assert _ids(col.search(q, k=10)) == _ids(col.search(q, k=10, exact=True))
    col.drop_index()
    assert col.manifest["ann"] is None and not list((tmp_path / "c").glob("ann-*"))
    assert col.search(q, k=10).stages == ["hamming", "int8"]


def test_index_errors(tmp_path: Path):
    c = Collection.create(tmp_path / "e", DIM)
    with pytest.raises(InvalidInputError, match="empty"):
        c.build_index()
    c.add(_clustered(100))
    with pytest.raises(InvalidInputError, match="nprobe"):
        c.build_index(nprobe=0)
    f = Collection.create(tmp_path / "f", DIM, precision="float32")
    f.add(_clustered(10))
    with pytest.raises(InvalidInputError, match="binary collection"):
        f.build_index()
