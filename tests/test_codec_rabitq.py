"""``precision="rabitq"`` collections: RaBitQ's estimator as a stage 1 (full scan, Hamming pre-selection,
IVF), filters, int8 rescoring, and the codes and parameters surviving save, reopen and compaction."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import unit_vectors

from bitsearch import Collection, rabitq
from bitsearch.codecs import CODECS
from bitsearch.errors import CorruptCollectionError, InvalidInputError

DIM = 100  # not a multiple of 64: the sign plane is padded to two words


def _collection(path: Path, n: int = 1500, **kw: object) -> tuple[Collection, np.ndarray]:
    x = unit_vectors(n, DIM, 1, shift=True)
    kw.setdefault("rotation", True)  # RaBitQ's random rotation (seed 0); the default is none
    col = Collection.create(path, DIM, precision="rabitq", **kw)
    col.add(x, ids=[f"d{i}" for i in range(n)], metadata=[{"g": i % 3} for i in range(n)])
    return col, x


def _reference(x: np.ndarray, q: np.ndarray, seed: int = 0, query_bits: int | None = None) -> np.ndarray:
    """The estimator of ``bitsearch.rabitq`` fitted on ``x`` as the collection fits it: (nq, n)."""
    params = rabitq.fit(x, bits=1, rotation=True, seed=seed)
    codes, factors = rabitq.encode(params, x)
    return rabitq.estimate(params, codes, factors, q, query_bits)


def _ids(res: object) -> list[list[str]]:
    return [[h.id for h in hits] for hits in res]  # type: ignore[attr-defined]


def test_full_scan_equals_the_reference_estimator(tmp_path: Path) -> None:
    col, x = _collection(tmp_path / "c")
    q = unit_vectors(6, DIM, 9, shift=True)
    est = _reference(x, q)
    res = col.search(q, k=8, rescore=None, exact=True)
    assert res.stages == ["rabitq"]
    for i, hits in enumerate(res):
        order = np.lexsort((np.arange(x.shape[0]), -est[i]))[:8]
        assert [h.id for h in hits] == [f"d{j}" for j in order]
        np.testing.assert_allclose([h.score for h in hits], est[i, order], rtol=1e-5, atol=1e-5)


def test_preselection_scores_the_hamming_top_rows(tmp_path: Path) -> None:
    """By default only the Hamming top depth x k of the sign plane (query and codes centred and rotated
    alike) are scored by the estimator; a depth that keeps every row equals the full scan."""
    col, x = _collection(tmp_path / "c")
    q = unit_vectors(4, DIM, 9, shift=True)
    params = rabitq.fit(x, bits=1, rotation=True, seed=0)
    signs = np.unpackbits(params.encode_signs(x), axis=1, bitorder="little")
    est = _reference(x, q)
    for i, hits in enumerate(col.search(q, k=5, rescore=None, preselect=4)):
        qs = np.unpackbits(params.encode_signs(q[i : i + 1]), axis=1, bitorder="little")
        ham = (signs != qs).sum(1)
        rows = np.sort(np.lexsort((np.arange(x.shape[0]), ham))[: 5 * 4])
        order = rows[np.lexsort((rows, -est[i, rows]))[:5]]
        assert [h.id for h in hits] == [f"d{j}" for j in order]
    assert col.search(q, k=5, rescore=None, preselect=300) == col.search(q, k=5, rescore=None, exact=True)
    assert CODECS["rabitq"].preselect_depth == 32  # chosen by the worst shared set (docs/results.md)


def test_four_bit_query_option(tmp_path: Path) -> None:
    col, x = _collection(tmp_path / "c", query_bits=4)
    q = unit_vectors(3, DIM, 4, shift=True)
    est = _reference(x, q, query_bits=4)
    for i, hits in enumerate(col.search(q, k=6, rescore=None, exact=True)):
        np.testing.assert_allclose([h.score for h in hits], np.sort(est[i])[::-1][:6], rtol=1e-4, atol=1e-4)
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["codes"]["query_bits"] == 4
    with pytest.raises(InvalidInputError, match="query_bits of rabitq codes must be 4"):
        Collection.create(tmp_path / "bad", DIM, precision="rabitq", query_bits=2)
    assert not (tmp_path / "bad").exists()


def test_int8_rescoring_filters_and_ids(tmp_path: Path) -> None:
    col, x = _collection(tmp_path / "c")
    q = x[:5] + 0.01 * unit_vectors(5, DIM, 3)
    res = col.search(q, k=3)
    assert res.stages == ["rabitq", "int8"]
    assert [hits[0].id for hits in res] == [f"d{i}" for i in range(5)]
    # a filter: only matching documents, the same as the exact scan over them
    f = col.search(q, k=10, rescore=None, filter={"g": 2}, exact=True)
    assert all(h.metadata["g"] == 2 for hits in f for h in hits) and all(len(h) == 10 for h in f)
    est = _reference(x, q)
    allowed = np.arange(x.shape[0]) % 3 == 2
    for i, hits in enumerate(f):
        s = np.where(allowed, est[i], -np.inf)
        assert [h.id for h in hits] == [f"d{j}" for j in np.lexsort((np.arange(x.shape[0]), -s))[:10]]
    # a binary rescoring stage ranks below the estimator: nothing to gain, so it is left out
    assert col.search(q, rescore=["binary", "int8"]).stages == ["rabitq", "int8"]


def test_ivf_stage1_and_filters(tmp_path: Path) -> None:
    col, x = _collection(tmp_path / "c", n=3000)
    q = x[:20]
    col.build_index(nlist=20, nprobe=20)  # every list probed: the IVF finds what the Hamming scan finds
    res = col.search(q, k=5, rescore=None)
    assert res.stages == ["ivf"]
    assert res == col.search(q, k=5, rescore=None, preselect=CODECS["rabitq"].preselect_depth, nprobe=20)
    col.drop_index()
    scan = col.search(q, k=5, rescore=None)
    col.build_index(nlist=20, nprobe=20)
    assert _ids(res) == _ids(scan)
    col.build_index(nlist=20, nprobe=2)
    hits = col.search(q, k=5, filter={"g": 1})
    assert all(h.metadata["g"] == 1 for r in hits for h in r) and all(len(r) == 5 for r in hits)
    # 2 of 20 lists probed: most documents are still found by their own vector (17 of 20 here)
    assert sum(r[0].id == f"d{i}" for i, r in enumerate(col.search(q, k=1))) >= 15


def test_survives_reopen_compaction_and_corruption(tmp_path: Path) -> None:
    col, x = _collection(tmp_path / "c")
    q = unit_vectors(3, DIM, 7, shift=True)
    before = col.search(q, k=10, rescore=None, exact=True)
    again = Collection.open(tmp_path / "c", verify=True)
    assert again.search(q, k=10, rescore=None, exact=True) == before
    # a second write is coded with the parameters fitted on the first
    extra = unit_vectors(200, DIM, 8, shift=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # another shift: some int8 values clip, which is not the point here
        again.add(extra, ids=[f"e{i}" for i in range(200)])
    again.delete([f"d{i}" for i in range(0, 1500, 2)])
    kept = np.concatenate([x[1::2], extra])
    est = _reference(x, q)  # fitted on the first write only
    params = rabitq.fit(x, bits=1, rotation=True, seed=0)
    codes, factors = rabitq.encode(params, kept)
    est = rabitq.estimate(params, codes, factors, q)
    names = [f"d{i}" for i in range(1, 1500, 2)] + [f"e{i}" for i in range(200)]
    want = [[names[j] for j in np.lexsort((np.arange(len(names)), -e))[:10]] for e in est]
    assert _ids(again.search(q, k=10, rescore=None, exact=True)) == want
    again.compact()
    reopened = Collection.open(tmp_path / "c", verify=True)
    assert _ids(reopened.search(q, k=10, rescore=None, exact=True)) == want
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert m["format_version"] == 5 and m["codebook"]["kind"] == "rabitq" and m["codes"]["centering"] is True
    seg = m["segments"][0]
    assert np.load(tmp_path / "c" / "segments" / seg["name"] / "rabitq.npy").shape == (seg["rows"], 16 + 8)
    assert reopened.stats()["stages"]["rabitq"]["ram_bytes"] == len(names) * (16 + 8)
    # a manifest whose centre has the wrong length is refused when opened
    bad = dict(m, codebook=dict(m["codebook"], centre=m["codebook"]["centre"][:-1]))
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(CorruptCollectionError, match="codebook.centre"):
        Collection.open(tmp_path / "c")
    for field, value, match in (
        ("codes", dict(m["codes"], centering=False), "always centre"),
        ("codes", dict(m["codes"], query_bits=3), "query_bits 3"),
        ("codebook", dict(m["codebook"], bits=2), "bits must be 1"),
        ("format_version", 4, "format_version 5"),
    ):
        (tmp_path / "c" / "manifest.json").write_text(json.dumps(dict(m, **{field: value})))
        with pytest.raises(CorruptCollectionError, match=match):
            Collection.open(tmp_path / "c")


def test_dimension_set_by_the_first_write_and_no_rotation_by_default(tmp_path: Path) -> None:
    x = unit_vectors(400, DIM, 2, shift=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # int8 ranges from a small first write
        col = Collection.create(tmp_path / "c", precision="rabitq")
        col.add(x)
    assert (
        col.dim == DIM and col.manifest["codebook"]["rotation"] is None and col.manifest["codes"]["rotation"] is False
    )
    q = unit_vectors(2, DIM, 3, shift=True)
    params = rabitq.fit(x, bits=1, rotation=False)
    codes, factors = rabitq.encode(params, x)
    est = rabitq.estimate(params, codes, factors, q)
    for i, hits in enumerate(col.search(q, k=5, rescore=None, exact=True)):
        np.testing.assert_allclose([h.score for h in hits], np.sort(est[i])[::-1][:5], rtol=1e-5, atol=1e-5)
    assert not (tmp_path / "c" / "rotation.npy").exists()
