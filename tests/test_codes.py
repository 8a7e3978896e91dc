"""Low-bit codebooks (1, 1.5, 2 bits; centering; rotation), table-lookup stage 1, and their collections."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import unit_vectors
from hypothesis import given, settings
from hypothesis import strategies as st

from bitsearch import Collection, CorruptCollectionError, InvalidInputError, quantize_embeddings
from bitsearch.kernels import lut_planes_topk, lut_topk
from bitsearch.quantize import CODE_KINDS, CodeBook

DIM = 48


VARIANTS = [(kind, c, r) for kind in CODE_KINDS for c, r in ((False, False), (True, False), (False, 7), (True, 7))]


@pytest.mark.parametrize(("kind", "centering", "rotation"), VARIANTS)
def test_lut_scores_equal_decoded_dot_products(kind, centering, rotation):
    """Packed codes: sign bits, 2bit's packed form, and format 2's ternary 1.5bit (pairs=False)."""
    x, q = unit_vectors(400, 37, 1, shift=True), unit_vectors(3, 37, 2, shift=True)
    book = CodeBook.fit(x, kind, centering=centering, rotation=rotation, pairs=False)
    codes = book.encode(x)
    base, per_byte = CODE_KINDS[kind]
    assert codes.shape == (400, -(-37 // per_byte)) and codes.dtype == np.uint8
    if kind != "binary":
        assert codes.max() < base**per_byte
    rec = book.decode(codes).astype(np.float64)
    lut = book.lut(q)
    scores = np.stack([lut[i][np.arange(codes.shape[1]), codes].sum(1) for i in range(3)])
    np.testing.assert_allclose(scores, q.astype(np.float64) @ rec.T, atol=1e-4)
    # the reconstruction is a fair approximation (each level is its bucket's mean)
    assert np.mean((rec - x) ** 2) < np.mean(x**2)
    again = CodeBook.from_dict(json.loads(json.dumps(book.to_dict())), book.rotation)
    assert np.array_equal(again.encode(x), codes)


def test_more_bits_reconstruct_better():
    x = unit_vectors(2000, 64, 3, shift=True)
    err = {k: float(np.mean((CodeBook.fit(x, k).decode(CodeBook.fit(x, k).encode(x)) - x) ** 2)) for k in CODE_KINDS}
    assert err["2bit"] < err["1.5bit"] < err["binary"]


@pytest.mark.parametrize("dim", [1, 7, 8, 9, 16, 37, 48])
@pytest.mark.parametrize(("kind", "centering", "rotation"), [v for v in VARIANTS if v[0] != "binary"])
def test_bit_planes_score_like_decoded_vectors(kind, centering, rotation, dim):
    """2bit and 1.5bit bit planes: the plane kernel ranks exactly by the decoded dot products."""
    x, q = unit_vectors(300, dim, 1, shift=True), unit_vectors(3, dim, 2, shift=True)
    book = CodeBook.fit(x, kind, centering=centering, rotation=rotation)
    assert book.planes and book.pairs == (kind == "1.5bit")
    planes = book.encode_planes(x)
    plane = -(-dim // 8)
    second = -(-plane // 2) if kind == "1.5bit" else plane  # 1.5bit: one bit per pair of dimensions
    assert planes.shape == (300, plane + second) and planes.dtype == np.uint8
    assert np.array_equal(book.encode(x), planes) if kind == "1.5bit" else True
    lv = book.levels_of(x)
    assert np.array_equal(np.unpackbits(planes[:, :plane], axis=1)[:, :dim], lv >= 2)  # the median split
    if kind == "1.5bit":  # both dimensions of a pair share their large bit
        assert np.array_equal(lv[:, 0 : dim - 1 : 2] & 1, lv[:, 1:dim:2] & 1)
    rec = book.decode_planes(planes).astype(np.float64)
    assert np.mean((rec - x) ** 2) < np.mean(x**2)
    idx, val = lut_planes_topk(book.lut_planes(q), planes[:, :plane], planes[:, plane:], 20, pairs=book.pairs)
    for i in range(3):
        s = rec @ q[i].astype(np.float64)
        np.testing.assert_allclose(val[i], np.sort(s)[::-1][:20], atol=1e-4)
        np.testing.assert_allclose(s[idx[i]], val[i], atol=1e-4)  # the rows returned hold the best scores
    again = CodeBook.from_dict(json.loads(json.dumps(book.to_dict())), book.rotation)
    assert np.array_equal(again.encode_planes(x), planes)
    if plane > 1:
        with pytest.raises(InvalidInputError, match="do not fit"):
            lut_planes_topk(book.lut_planes(q), planes[:, :plane], planes[:, plane:], 5, pairs=not book.pairs)


def test_one_and_a_half_bits_beat_the_ternary_at_fewer_bytes():
    """The sign + pair-bit 1.5bit keeps the median split and reconstructs at least as well as format
    2's packed ternary (1.6 bits per dimension) on correlated, embedding-like data."""
    x = unit_vectors(3000, 64, 5, shift=True)
    pairs, ternary = CodeBook.fit(x, "1.5bit"), CodeBook.fit(x, "1.5bit", pairs=False)
    assert pairs.encode(x).shape[1] == 8 + 4 and ternary.encode(x).shape[1] == 13
    err = {name: float(np.mean((b.decode(b.encode(x)) - x) ** 2)) for name, b in (("p", pairs), ("t", ternary))}
    assert err["p"] < 1.1 * err["t"]


def test_plain_binary_codebook_is_sign_bits():
    x = unit_vectors(100, 40, shift=True)
    assert np.array_equal(CodeBook.fit(x, "binary").encode(x), quantize_embeddings(x, "ubinary"))


def test_unknown_kind():
    with pytest.raises(InvalidInputError, match="unknown code kind"):
        CodeBook.fit(unit_vectors(10, DIM, shift=True), "3bit")


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 400),
    groups=st.integers(1, 12),
    nq=st.integers(1, 3),
    k=st.integers(1, 450),
    seed=st.integers(0, 2**32 - 1),
    with_exclude=st.booleans(),
)
def test_lut_topk_matches_brute_force(n, groups, nq, k, seed, with_exclude):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, groups), dtype=np.uint8)
    luts = rng.integers(-2, 3, (nq, groups, 256)).astype(np.float32)  # small integers: many ties
    exclude = rng.random(n) < 0.3 if with_exclude else None
    idx, val = lut_topk(luts, codes, k, exclude)
    for i in range(nq):
        s = luts[i][np.arange(groups), codes].sum(1)
        order = np.lexsort((np.arange(n), -s))
        if exclude is not None:
            order = order[~exclude[order]]
        np.testing.assert_array_equal(idx[i], order[:k])
        np.testing.assert_allclose(val[i], s[order[:k]])


@pytest.mark.parametrize("precision", ["1.5bit", "2bit"])
@pytest.mark.parametrize("options", [{}, {"centering": True, "rotation": 3}])
def test_lowbit_collections(tmp_path: Path, precision: str, options: dict):
    x = unit_vectors(600, DIM, shift=True)
    col = Collection.create(tmp_path / "c", DIM, precision=precision, **options)
    col.add(x[:400], ids=[f"d{i}" for i in range(400)])
    col.add(x[400:], ids=[f"d{i}" for i in range(400, 600)])
    # rotation defaults to on for 1.5bit and 2bit (the worst (model, set) pair, docs/results.md)
    book = CodeBook.fit(x[:400], precision, **{"rotation": True, **options})
    rec = book.decode(book.encode(x)).astype(np.float64)
    q = unit_vectors(5, DIM, 9, shift=True)
    res = col.search(q, k=7, rescore=None, exact=True)  # exact: score every row
    assert res.stages == [precision]
    for qi, hits in zip(q, res, strict=True):
        order = np.argsort(-(rec @ qi.astype(np.float64)), kind="stable")[:7]
        assert [h.id for h in hits] == [f"d{i}" for i in order]
    # by default only the Hamming top k x preselect_depth on the median plane are scored (preselect=5
    # here so that 600 rows are more than it keeps)
    hi = book.levels_of(x) >= 2
    for qi, hits in zip(q, col.search(q, k=7, rescore=None, preselect=5), strict=True):
        ham = (hi != (book.levels_of(qi) >= 2)).sum(1)
        rows = np.sort(np.lexsort((np.arange(600), ham))[: 7 * 5])
        order = rows[np.argsort(-(rec[rows] @ qi.astype(np.float64)), kind="stable")[:7]]
        assert [h.id for h in hits] == [f"d{i}" for i in order]
    # a depth that keeps every row scores every row, as exact does
    assert col.search(q, k=7, rescore=None, preselect=100) == col.search(q, k=7, rescore=None, exact=True)
    # int8 rescoring refines the low-bit candidates
    ranked = col.search(x[10], k=1)
    assert ranked.stages == [precision, "int8"] and ranked[0][0].id == "d10"
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert m["format_version"] == (3 if precision == "1.5bit" else 2)  # 2: older releases still read it
    st_ = col.stats()
    # two bit planes, the median one held as 64-bit words for the Hamming pre-selection; 1.5bit's
    # second plane has one bit per pair of dimensions
    per_row = 8 * -(-DIM // 64) + (DIM // 8 if precision == "2bit" else DIM // 16)
    assert st_["stages"][precision]["ram_bytes"] == 600 * per_row
    col.delete(["d10"])
    col.compact()
    again = Collection.open(tmp_path / "c", verify=True)
    assert len(again) == 599 and again.search(x[10], k=1)[0][0].id != "d10"
    assert again.search(x[11], k=1)[0][0].id == "d11"


def test_rotation_file_is_checked(tmp_path: Path):
    col = Collection.create(tmp_path / "c", DIM, precision="2bit", rotation=True)
    col.add(unit_vectors(200, DIM, shift=True))
    rot = tmp_path / "c" / "rotation.npy"
    data = rot.read_bytes()
    rot.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CorruptCollectionError, match="rotation.npy fails its sha256"):
        Collection.open(tmp_path / "c").search(unit_vectors(1, DIM, shift=True)[0], rescore=None)


def test_binary_stage1_options(tmp_path: Path):
    x = unit_vectors(500, DIM, shift=True)
    q = unit_vectors(4, DIM, 5, shift=True)
    ham = Collection.create(tmp_path / "h", DIM, stage1="hamming")
    asym = Collection.create(tmp_path / "a", DIM, stage1="asymmetric")
    rot = Collection.create(tmp_path / "r", DIM, centering=True, rotation=11)
    for c in (ham, asym, rot):
        c.add(x)
    assert ham.search(q, rescore=None).stages == ["hamming"]
    assert asym.search(q).stages == ["asymmetric", "int8"]
    assert rot.search(q, rescore=None).stages == ["asymmetric"]
    # centred + rotated Hamming: the query goes through the same transform as the documents
    book = CodeBook.fit(x, "binary", centering=True, rotation=11)
    hits = rot.search(q[0], k=5, rescore_multiplier=1)  # Hamming then int8 over the same 5 rows
    d = np.bitwise_count(book.encode(x) ^ book.encode(q[:1])).sum(1)
    assert {h.id for h in hits[0]} <= set(np.flatnonzero(d <= np.sort(d)[4]).tolist())
    with pytest.raises(InvalidInputError, match="unknown stage1"):
        Collection.create(tmp_path / "z", DIM, stage1="fast")


def test_format_1_collection_still_opens_and_searches(tmp_path: Path):
    """A collection written before codebooks existed (format 1): plain sign bits, Hamming stage 1."""
    x = unit_vectors(300, DIM, shift=True)
    col = Collection.create(tmp_path / "c", DIM, stage1="hamming")
    col.add(x, ids=[str(i) for i in range(300)])
    q = unit_vectors(3, DIM, 4, shift=True)
    before = [[(h.id, h.score) for h in r] for r in col.search(q, k=5, rescore=None)]
    path = tmp_path / "c" / "manifest.json"
    m = json.loads(path.read_text())
    for key in ("stage1", "codes", "codebook"):
        m.pop(key)
    m["format_version"] = 1
    path.write_text(json.dumps(m))
    old = Collection.open(tmp_path / "c", verify=True)
    assert [[(h.id, h.score) for h in r] for r in old.search(q, k=5, rescore=None)] == before
    assert old.search(q, k=5, rescore=None).stages == ["hamming"]
    old.add(unit_vectors(2, DIM, 8, shift=True), ids=["new1", "new2"])
    assert len(Collection.open(tmp_path / "c")) == 302


@pytest.mark.parametrize("dtype", [np.int8, np.float32])
def test_dot_topk_matches_brute_force(dtype):
    from bitsearch.kernels import dot_topk

    rng = np.random.default_rng(1)
    rows = rng.integers(-128, 128, (700, 24)).astype(dtype)
    w = rng.integers(-3, 4, (3, 24)).astype(np.float32)  # integer weights: exact sums, many ties
    const = np.array([0.5, -2.0, 0.0], np.float32)
    exclude = rng.random(700) < 0.2
    idx, val = dot_topk(w, rows, 25, exclude, const)
    for i in range(3):
        s = rows.astype(np.float64) @ w[i] + const[i]
        order = np.lexsort((np.arange(700), -s))
        order = order[~exclude[order]][:25]
        np.testing.assert_array_equal(idx[i], order)
        np.testing.assert_allclose(val[i], s[order], rtol=1e-6)


@pytest.mark.parametrize("precision", ["int8", "float32"])
def test_exact_scan_paths_agree(tmp_path: Path, precision: str):
    """A few queries scan in numba, many go through BLAS: both give the same ranking."""
    x = unit_vectors(900, DIM, shift=True)
    col = Collection.create(tmp_path / "c", DIM, precision=precision, calibration_embeddings=x)
    col.add(x)
    q = unit_vectors(24, DIM, 3, shift=True)
    batch = col.search(q, k=10)
    single = [col.search(qi, k=10)[0] for qi in q]
    assert [[h.id for h in r] for r in batch] == [[h.id for h in r] for r in single]
    for a, b in zip(batch, single, strict=True):
        np.testing.assert_allclose([h.score for h in a], [h.score for h in b], rtol=1e-4, atol=1e-5)


def test_format_2_ternary_collection_still_opens_and_searches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """1.5bit collections written as packed ternary codes (format 2, before the sign + pair planes)
    open, search (a full table-lookup scan) and grow as before."""
    import bitsearch.codecs.base as codecs_base

    class Ternary(CodeBook):
        @classmethod
        def fit(cls, embeddings, kind="binary", **kw):  # type: ignore[override]
            return CodeBook.fit(embeddings, kind, pairs=False, **kw)

    monkeypatch.setattr(codecs_base, "CodeBook", Ternary)
    x = unit_vectors(500, DIM, shift=True)
    col = Collection.create(tmp_path / "c", DIM, precision="1.5bit", rotation=False)  # format 2's default
    col.add(x[:300], ids=[f"d{i}" for i in range(300)])
    monkeypatch.undo()
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert "pair_thresholds" not in m["codebook"]
    m["format_version"] = 2  # as format 2 wrote it
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(m))
    old = Collection.open(tmp_path / "c", verify=True)
    old.add(x[300:], ids=[f"d{i}" for i in range(300, 500)])
    book = CodeBook.fit(x[:300], "1.5bit", pairs=False)
    rec = book.decode(book.encode(x)).astype(np.float64)
    assert old.stats()["stages"]["1.5bit"]["ram_bytes"] == 500 * -(-DIM // 5)
    q = unit_vectors(4, DIM, 6, shift=True)
    for qi, hits in zip(q, old.search(q, k=6, rescore=None), strict=True):
        order = np.argsort(-(rec @ qi.astype(np.float64)), kind="stable")[:6]
        assert [h.id for h in hits] == [f"d{i}" for i in order]
    old.delete(["d3"])
    old.compact()
    assert len(Collection.open(tmp_path / "c", verify=True)) == 499


def test_empty_format_2_one_and_a_half_bit_collection_is_marked_format_3_on_first_add(tmp_path: Path):
    """Its first add fits sign + pair planes, which format-2 releases would misread: they must refuse it."""
    Collection.create(tmp_path / "c", DIM, precision="1.5bit", keep_int8=False)
    path = tmp_path / "c" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": 2}))
    Collection.open(tmp_path / "c").add(unit_vectors(50, DIM, shift=True))
    assert json.loads(path.read_text())["format_version"] == 3
    assert len(Collection.open(tmp_path / "c")) == 50


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    dim=st.integers(1, 140),
    bits=st.integers(1, 8),
    k=st.integers(1, 320),
    seed=st.integers(0, 2**32 - 1),
    with_exclude=st.booleans(),
)
def test_bitplane_topk_matches_brute_force(n, dim, bits, k, seed, with_exclude):
    """Popcounts per query bit plane give exactly base + low x |doc| + step x sum of the doc's weights."""
    from bitsearch.kernels import as_words, bitplane_topk

    rng = np.random.default_rng(seed)
    codes = np.packbits(rng.random((n, dim)) < 0.5, axis=1)
    book = CodeBook.fit(rng.normal(size=(50, dim)).astype(np.float32), "binary")
    q = rng.normal(size=(2, dim)).astype(np.float32)
    planes, step, low, base = book.query_planes(q, bits)
    assert planes.shape == (2, bits, -(-dim // 8))
    exclude = rng.random(n) < 0.3 if with_exclude else None
    idx, val = bitplane_topk(planes, step, low, base, as_words(codes), k, exclude)
    doc = np.unpackbits(codes, axis=1)[:, :dim].astype(np.int64)
    for i in range(2):
        u = sum(np.unpackbits(planes[i, b])[:dim].astype(np.int64) << b for b in range(bits))
        assert u.max() < 2**bits
        s = (base[i] + low[i] * doc.sum(1) + step[i] * (doc @ u)).astype(np.float32)  # ties as the kernel sees them
        order = np.lexsort((np.arange(n), -s))
        if exclude is not None:
            order = order[~exclude[order]]
        np.testing.assert_array_equal(idx[i], order[:k])
        np.testing.assert_allclose(val[i], s[order[:k]], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options", [{}, {"centering": True, "rotation": 2}])
def test_query_planes_approximate_the_float_query(options):
    """Rounding the query's weights to b bits moves each score by at most step / 2 per set bit."""
    from bitsearch.kernels import as_words, bitplane_topk

    x, q = unit_vectors(500, 40, 1, shift=True), unit_vectors(3, 40, 2, shift=True)
    book = CodeBook.fit(x, "binary", **options)
    codes = book.encode(x)
    exact = q.astype(np.float64) @ book.decode(codes).astype(np.float64).T
    ones = np.unpackbits(codes, axis=1)[:, :40].sum(1)
    for bits in (4, 8):
        planes, step, low, base = book.query_planes(q, bits)
        idx, val = bitplane_topk(planes, step, low, base, as_words(codes), 500)
        for i in range(3):
            approx = np.empty(500)
            approx[idx[i]] = val[i]
            assert np.all(np.abs(approx - exact[i]) <= step[i] / 2 * ones + 1e-4)
    with pytest.raises(InvalidInputError, match="from 1 to 8"):
        book.query_planes(q, 9)
    with pytest.raises(InvalidInputError, match="1-bit"):
        CodeBook.fit(x, "2bit").query_planes(q, 4)


def test_query_bits_collections(tmp_path: Path):
    x, q = unit_vectors(700, DIM, shift=True), unit_vectors(4, DIM, 3, shift=True)
    col = Collection.create(tmp_path / "c", DIM, query_bits=4)
    col.add(x, ids=[f"d{i}" for i in range(700)])
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["codes"]["query_bits"] == 4
    book = CodeBook.fit(x, "binary")
    planes, step, low, base = book.query_planes(q, 4)
    doc = np.unpackbits(book.encode(x), axis=1)[:, :DIM].astype(np.int64)
    res = col.search(q, k=6, rescore=None, exact=True)
    assert res.stages == ["asymmetric"]
    for i, hits in enumerate(res):
        u = sum(np.unpackbits(planes[i, b])[:DIM].astype(np.int64) << b for b in range(4))
        s = (base[i] + low[i] * doc.sum(1) + step[i] * (doc @ u)).astype(np.float32)
        assert [h.id for h in hits] == [f"d{j}" for j in np.lexsort((np.arange(700), -s))[:6]]
    default = col.search(q, k=6, rescore=None)  # the Hamming top 16 x k, then the 4-bit query
    assert default.stages == ["asymmetric"] and all(len(h) == 6 for h in default)
    assert col.search(x[5], k=1)[0][0].id == "d5"  # int8 rescoring as usual
    for bad, match in (
        ({"query_bits": 0}, "from 1 to 8"),
        ({"query_bits": True}, "from 1 to 8"),
        ({"query_bits": 4, "precision": "2bit"}, "binary and rabitq codes only"),
        ({"query_bits": 4, "stage1": "hamming"}, "binary and rabitq codes only"),
    ):
        with pytest.raises(InvalidInputError, match=match):
            Collection.create(tmp_path / "bad", DIM, **bad)
        assert not (tmp_path / "bad").exists()


def test_preselect_depth_per_family_and_checked(tmp_path: Path) -> None:
    """Each family's default pre-selection depth (chosen by the worst shared set, docs/results.md), an
    explicit depth, and bad depths refused before any work."""
    from bitsearch.codecs import CODECS
    from bitsearch.errors import InvalidInputError

    assert {n: CODECS[n].preselect_depth for n in ("binary", "1.5bit", "2bit")} == {
        "binary": 16, "1.5bit": 32, "2bit": 32,
    }  # fmt: skip
    x = unit_vectors(3000, DIM, 5)
    col = Collection.create(tmp_path / "c", DIM, precision="2bit")
    col.add(x)
    q = unit_vectors(4, DIM, 6)
    shallow = col.search(q, k=5, rescore=None, preselect=1)  # only the Hamming top 5: its own order
    assert col.search(q, k=5, rescore=None, preselect=600) == col.search(q, k=5, rescore=None, exact=True)
    assert shallow != col.search(q, k=5, rescore=None, exact=True)
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(InvalidInputError, match="preselect"):
            col.search(q, k=5, preselect=bad)
