"""Hardening: no input reaches an out-of-bounds index in the kernels, and extreme finite queries search.

Every stage-1 and rescoring kernel is fed extreme finite values (+-3.4e38, subnormals, mixed signs,
zeros, all-equal rows, k beyond the rows) and checked against a numpy reference (or a named error);
collections of every precision answer queries of +-3e38, 1e37, float64 1e300 and subnormals with k
hits and finite scores, ranked as the same query at a sane scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitsearch import Collection, InvalidInputError
from bitsearch.kernels import (
    BinaryIVF,
    as_words,
    bitplane_topk,
    dot_topk,
    hamming_distances,
    hamming_topk,
    int8_query_weights,
    lut_planes_topk,
    lut_topk,
    rescore_bits,
    rescore_float32,
    rescore_int8,
    top_scored,
    topk_by_row,
)
from bitsearch.quantize import check_queries, dequantize_int8, int8_steps
from bitsearch.rows import pread_rows

F32_MAX = float(np.finfo(np.float32).max)
EXTREMES = [
    float(np.float32(v)) for v in (F32_MAX, -F32_MAX, 3e38, -3e38, 1e37, -1e37, 1e-40, -1e-40, 1e-45, 0, -0.0, 1, -1)
]
PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# float32 values weighted towards the extremes: the listed ones, or any finite float32
floats32 = st.one_of(st.sampled_from(EXTREMES), st.floats(width=32, allow_nan=False, allow_infinity=False))


def f32_arrays(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    """float32 arrays of extreme finite values; sometimes a single value everywhere (all-equal rows)."""
    mixed = hnp.arrays(np.float32, shape, elements=floats32)
    constant = floats32.map(lambda v: np.full(shape, v, dtype=np.float32))
    return st.one_of(mixed, constant)


def u8_codes(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    """uint8 codes: random bytes, all zeros, all ones, or one row repeated."""
    return st.one_of(
        hnp.arrays(np.uint8, shape),
        st.sampled_from([0, 255]).map(lambda v: np.full(shape, v, dtype=np.uint8)),
        hnp.arrays(np.uint8, shape[1:]).map(lambda r: np.ascontiguousarray(np.broadcast_to(r, shape))),
    )


def ref_select(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reference top-k of one score row: score desc (+inf first), -inf then NaN last, ties by row."""
    n = scores.shape[0]
    s = scores.astype(np.float64)
    cls = np.where(np.isnan(s), 2, np.where(s == -np.inf, 1, 0))
    key = np.where(cls == 0, -s, 0.0)
    order = np.lexsort((np.arange(n), key, cls))
    if exclude is not None:
        order = order[~exclude[order]]
    return order[:k], scores[order[:k]]


def check_scan(got: tuple[np.ndarray, np.ndarray], ref_scores: np.ndarray, k: int, exclude: np.ndarray | None) -> None:
    """A scan's (rows, scores) equal the reference selection over the reference scores, per query."""
    rows, vals = got
    live = ref_scores.shape[1] - (0 if exclude is None else int(exclude.sum()))
    assert rows.shape == vals.shape == (ref_scores.shape[0], min(k, live))
    for qi in range(ref_scores.shape[0]):
        r, v = ref_select(ref_scores[qi], k, exclude)
        np.testing.assert_array_equal(rows[qi], r)
        np.testing.assert_array_equal(vals[qi], v)


def sequential_sum(terms: np.ndarray) -> np.ndarray:
    """float32 sums over the last axis in loop order (what the kernels compute), not numpy's pairwise sum."""
    with np.errstate(all="ignore"):
        return np.cumsum(terms, axis=-1, dtype=np.float32)[..., -1]


shapes = st.tuples(st.integers(1, 3), st.integers(1, 40), st.integers(1, 6))  # (queries, rows, code bytes)


@PROPERTY
@given(data=st.data(), shape=shapes, k=st.integers(1, 50), with_exclude=st.booleans())
def test_lut_topk_extremes(data, shape, k, with_exclude):
    nq, n, groups = shape
    luts = data.draw(f32_arrays((nq, groups, 256)))
    codes = data.draw(u8_codes((n, groups)))
    exclude = data.draw(hnp.arrays(np.bool_, n)) if with_exclude else None
    ref = sequential_sum(luts[:, np.arange(groups)[None, :], codes])  # (nq, n, groups) -> (nq, n)
    check_scan(lut_topk(luts, codes, k, exclude=exclude), ref, k, exclude)


@PROPERTY
@given(data=st.data(), shape=shapes, k=st.integers(1, 50), pairs=st.booleans())
def test_lut_planes_topk_extremes(data, shape, k, pairs):
    nq, n, nbytes = shape
    groups = 2 * nbytes
    luts = data.draw(f32_arrays((nq, groups, 256)))
    hi = data.draw(u8_codes((n, nbytes)))
    lo = data.draw(u8_codes((n, -(-nbytes // 2) if pairs else nbytes)))
    g = np.arange(groups)
    nibble = (hi[:, g >> 1] >> (4 - 4 * (g & 1))) & 15
    if pairs:
        idx = (nibble.astype(np.int64) << 2) | ((lo[:, g >> 2] >> (6 - 2 * (g & 3))) & 3)
    else:
        idx = (nibble.astype(np.int64) << 4) | ((lo[:, g >> 1] >> (4 - 4 * (g & 1))) & 15)
    ref = sequential_sum(luts[:, g[None, :], idx])
    check_scan(lut_planes_topk(luts, hi, lo, k, pairs=pairs), ref, k, None)


@PROPERTY
@given(data=st.data(), shape=shapes, k=st.integers(1, 50), nbits=st.integers(1, 8))
def test_bitplane_topk_extremes(data, shape, k, nbits):
    nq, n, nbytes = shape
    planes = data.draw(u8_codes((nq, nbits, nbytes)))
    step, low, base = (data.draw(hnp.arrays(np.float64, nq, elements=floats32)) for _ in range(3))
    codes = data.draw(u8_codes((n, nbytes)))
    total = np.bitwise_count(codes).sum(axis=1).astype(np.float64)
    acc = sum(
        np.bitwise_count(codes[None, :, :] & planes[:, b, None, :]).sum(axis=2).astype(np.int64) << b
        for b in range(nbits)
    )
    with np.errstate(all="ignore"):
        ref = (base[:, None] + low[:, None] * total[None, :] + step[:, None] * acc).astype(np.float32)
    check_scan(bitplane_topk(planes, step, low, base, as_words(codes), k), ref, k, None)


@PROPERTY
@given(data=st.data(), shape=shapes, k=st.integers(1, 50), int8=st.booleans(), with_exclude=st.booleans())
def test_dot_topk_extremes(data, shape, k, int8, with_exclude):
    nq, n, dim = shape
    w = data.draw(f32_arrays((nq, dim)))
    const = data.draw(f32_arrays((nq,)))
    rows = data.draw(hnp.arrays(np.int8, (n, dim))) if int8 else data.draw(f32_arrays((n, dim)))
    exclude = data.draw(hnp.arrays(np.bool_, n)) if with_exclude else None
    got_rows, got_vals = dot_topk(w, rows, k, exclude=exclude, const=const)
    live = n - (0 if exclude is None else int(exclude.sum()))
    assert got_rows.shape == got_vals.shape == (nq, min(k, live))
    w64, r64, c64 = w.astype(np.float64), rows.astype(np.float64), const.astype(np.float64)
    ref = r64 @ w64.T + c64  # (n, nq); float64 never overflows here
    mag = np.abs(r64) @ np.abs(w64).T + np.abs(c64)
    for qi in range(nq):
        r = got_rows[qi]
        assert len(set(r.tolist())) == r.size and ((r >= 0) & (r < n)).all()
        if exclude is not None:
            assert not exclude[r].any()
        # ordered like the reference selection orders its own scores (NaN/inf included)
        np.testing.assert_array_equal(ref_select(got_vals[qi], k)[0], np.arange(r.size))
        if mag[:, qi].max() < 1e36:  # no overflow possible: the rows are a true top-k within rounding
            tol = 1e-5 * mag[:, qi].max() + 1e-30
            others = np.setdiff1d(np.flatnonzero(np.ones(n, bool) if exclude is None else ~exclude), r)
            if r.size and others.size:
                assert ref[others, qi].max() <= ref[r, qi].min() + tol
            np.testing.assert_allclose(got_vals[qi], ref[r, qi], rtol=0, atol=tol)


@PROPERTY
@given(data=st.data(), n=st.integers(1, 60), nbytes=st.integers(1, 20), k=st.integers(1, 70), words=st.booleans())
def test_hamming_topk_and_distances_any_codes(data, n, nbytes, k, words):
    codes = data.draw(u8_codes((n, nbytes)))
    q = data.draw(u8_codes((2, nbytes)))
    exclude = data.draw(st.one_of(st.none(), hnp.arrays(np.bool_, n)))
    d = np.bitwise_count(q[:, None, :] ^ codes[None, :, :]).sum(-1)
    np.testing.assert_array_equal(hamming_distances(as_words(q), as_words(codes)), d)
    for nq in (1, 2):
        a, b = (as_words(q[:nq]), as_words(codes)) if words else (q[:nq], codes)
        idx, dist = hamming_topk(a, b, k, exclude=exclude)
        ref = [ref_select(-d[i].astype(np.float32), k, exclude) for i in range(nq)]
        np.testing.assert_array_equal(idx, np.array([r for r, _ in ref]).reshape(idx.shape))
        np.testing.assert_array_equal(dist, np.array([-v for _, v in ref]).reshape(dist.shape))


@PROPERTY
@given(data=st.data(), n=st.integers(1, 60), nbytes=st.integers(1, 9), k=st.integers(1, 70), nlist=st.integers(1, 4))
def test_ivf_search_matches_exact_scan(data, n, nbytes, k, nlist):
    codes = data.draw(u8_codes((n, nbytes)))
    q = data.draw(u8_codes((3, nbytes)))
    exclude = data.draw(st.one_of(st.none(), hnp.arrays(np.bool_, n)))
    nlist = min(nlist, n)
    ivf = BinaryIVF.train(codes, nlist)
    ivf.add(codes)
    for rank in ("expected", "hamming"):
        rows, dist = ivf.search(q, k, nprobe=nlist, exclude=exclude, rank=rank)
        assert rows.shape == dist.shape == (3, k)
        ref_rows, ref_dist = hamming_topk(q, codes, k, exclude=exclude)
        found = ref_rows.shape[1]  # min(k, live): the rest is padding, row -1 at distance bits + 1
        np.testing.assert_array_equal(rows[:, :found], ref_rows)
        np.testing.assert_array_equal(dist[:, :found], ref_dist)
        assert (rows[:, found:] == -1).all() and (dist[:, found:] == as_words(q).shape[1] * 64 + 1).all()


@PROPERTY
@given(data=st.data(), m=st.integers(0, 40), k=st.integers(-2, 50))
def test_top_scored_any_scores(data, m, k):
    special = st.sampled_from([np.nan, np.inf, -np.inf])
    scores = data.draw(hnp.arrays(np.float32, m, elements=st.one_of(floats32, special)))
    rows = np.array(data.draw(st.permutations(list(range(m)))), dtype=np.int64) * 3
    got_rows, got_scores = top_scored(scores, rows, k)
    finite = np.isfinite(scores)
    s, r = scores[finite], rows[finite]
    order = np.lexsort((r, -s.astype(np.float64)))[: max(k, 0)]
    np.testing.assert_array_equal(got_rows, r[order])
    np.testing.assert_array_equal(got_scores, s[order])


@PROPERTY
@given(data=st.data(), nq=st.integers(1, 3), n=st.integers(0, 40), k=st.integers(0, 50), trim=st.booleans())
def test_topk_by_row_any_scores(data, nq, n, k, trim):
    special = st.sampled_from([np.nan, np.inf, -np.inf])
    scores = data.draw(hnp.arrays(np.float32, (nq, n), elements=st.one_of(floats32, special)))
    rows = np.stack([np.random.default_rng(data.draw(st.integers(0, 99))).permutation(3 * n)[:n] for _ in range(nq)])
    got_rows, got_scores = topk_by_row(scores, rows, k)  # trimmed: as many per query as the shortest has
    padded_rows, padded_scores = topk_by_row(scores, rows, k, trim=False)
    kk = min(k, n)
    assert padded_rows.shape == padded_scores.shape == (nq, kk)
    refs = []
    for q in range(nq):
        finite = np.isfinite(scores[q])
        s, r = scores[q][finite], rows[q][finite]
        order = np.lexsort((r, -s.astype(np.float64)))[:kk]
        refs.append((r[order], s[order]))
        np.testing.assert_array_equal(padded_rows[q], np.r_[r[order], [-1] * (kk - order.size)])
        np.testing.assert_array_equal(padded_scores[q], np.r_[s[order], [-np.inf] * (kk - order.size)])
    shortest = min(len(r) for r, _ in refs) if refs else 0
    assert got_rows.shape == got_scores.shape == (nq, shortest)
    for q, (r, s) in enumerate(refs):
        np.testing.assert_array_equal(got_rows[q], r[:shortest])
        np.testing.assert_array_equal(got_scores[q], s[:shortest])


@PROPERTY
@given(data=st.data(), m=st.integers(1, 30), dim=st.integers(1, 70))
def test_rescoring_extremes(data, m, dim):
    q = data.draw(f32_arrays((dim,)))
    q64 = q.astype(np.float64)
    # int8: the folded weights, or a named error when they overflow float32
    lo_hi = np.sort(data.draw(hnp.arrays(np.float32, (2, dim), elements=st.floats(-1e3, 1e3, width=32))), axis=0)
    codes = data.draw(hnp.arrays(np.int8, (m, dim)))
    try:
        with np.errstate(all="ignore"):
            got = rescore_int8(q, codes, lo_hi)
    except InvalidInputError as exc:
        assert "overflow" in str(exc)
        with pytest.raises(InvalidInputError):
            int8_query_weights(q, lo_hi)
    else:
        assert got.shape == (m,)
        deq = dequantize_int8(codes, lo_hi).astype(np.float64)
        mag = float(np.abs(q64) @ (np.abs(lo_hi[0].astype(np.float64)) + 256 * int8_steps(lo_hi).astype(np.float64)))
        if mag < 1e36:
            np.testing.assert_allclose(got, deq @ q64, rtol=0, atol=1e-4 * mag + 1e-30)
    bits = data.draw(u8_codes((m, -(-dim // 8))))
    signs = np.unpackbits(bits, axis=1)[:, :dim].astype(np.float64) * 2 - 1
    with np.errstate(all="ignore"):
        got = rescore_bits(q, bits, dim)
    assert got.shape == (m,)
    if np.abs(q64).sum() < 1e36:
        np.testing.assert_allclose(got, signs @ q64, rtol=0, atol=1e-5 * np.abs(q64).sum() + 1e-30)
    rows = data.draw(f32_arrays((m, dim)))
    with np.errstate(all="ignore"):
        got = rescore_float32(q, rows)
    assert got.shape == (m,)
    mag = float((np.abs(rows.astype(np.float64)) @ np.abs(q64)).max())
    if mag < 1e36:
        np.testing.assert_allclose(got, rows.astype(np.float64) @ q64, rtol=0, atol=1e-5 * mag + 1e-30)


def test_scans_reject_what_would_index_out_of_bounds():
    luts = np.zeros((1, 4, 256), np.float32)
    codes = np.zeros((10, 4), np.uint8)
    with pytest.raises(InvalidInputError, match="k must be"):
        lut_topk(luts, codes, 0)
    with pytest.raises(InvalidInputError, match="exclude"):
        lut_topk(luts, codes, 3, exclude=np.zeros(11, bool))  # a longer mask made k negative
    with pytest.raises(InvalidInputError):
        lut_planes_topk(np.zeros((1, 4, 16), np.float32), codes[:, :2], codes[:, :2], 3)  # tables too narrow
    with pytest.raises(InvalidInputError):
        dot_topk(np.ones((1, 3), np.float32), np.ones((10, 4), np.float32), 3)  # weights shorter than rows
    with pytest.raises(InvalidInputError):
        dot_topk(np.ones((2, 4), np.float32), np.ones((10, 4), np.float32), 3, const=np.zeros(1, np.float32))
    planes = np.zeros((2, 4, 8), np.uint8)
    words = as_words(np.zeros((10, 8), np.uint8))
    with pytest.raises(InvalidInputError):
        bitplane_topk(planes, np.ones(1), np.ones(2), np.ones(2), words, 3)  # one step for two queries
    with pytest.raises(InvalidInputError):
        bitplane_topk(planes, np.ones(2), np.ones(2), np.ones(2), np.zeros((10, 8), np.uint8), 3)
    with pytest.raises(InvalidInputError):
        top_scored(np.zeros(5, np.float32), np.arange(3), 2)  # fewer rows than scores
    with pytest.raises(InvalidInputError):
        int8_query_weights(np.ones((1, 5), np.float32), np.zeros((2, 4), np.float32))
    with pytest.raises(InvalidInputError):
        hamming_topk(np.zeros((1, 1), np.uint64), np.zeros(1, np.uint64), 1)  # 1-D word codes
    with pytest.raises(InvalidInputError):  # two queries of 2 words read as four of one: written past ``out``
        hamming_distances(np.zeros((2, 2), np.uint64), np.zeros((5, 1), np.uint64))
    # empty rows: empty answers of the right shape, not garbage
    assert lut_topk(luts, codes[:0], 5)[0].shape == (1, 0)
    assert hamming_topk(np.zeros((2, 3), np.uint8), np.zeros((0, 3), np.uint8), 5)[0].shape == (2, 0)
    assert topk_by_row(np.zeros((2, 0), np.float32), np.zeros((2, 0), np.int64), 3)[0].shape == (2, 0)


def test_pread_rows_refuses_arrays_that_do_not_fit(tmp_path):
    f = tmp_path / "rows.bin"
    f.write_bytes(bytes(range(40)))
    import os

    fd = os.open(f, os.O_RDONLY)
    try:
        fds, offsets, starts = np.array([fd], np.int64), np.zeros(1, np.int64), np.array([0, 10], np.int64)
        out = np.zeros((2, 4), np.uint8)
        assert pread_rows(fds, offsets, starts, np.array([1, 3], np.int64), out) == 0
        assert out.tolist() == [[4, 5, 6, 7], [12, 13, 14, 15]]
        # more rows than ``out`` holds: refused (-1: the caller's checked path), never written past it
        assert pread_rows(fds, offsets, starts, np.array([1, 2, 3], np.int64), out) == -1
        assert pread_rows(fds[:0], offsets, starts, np.array([1], np.int64), out) == -1
        two = np.array([fd, fd], np.int64), np.zeros(2, np.int64)
        assert pread_rows(*two, np.array([0, 6, 3], np.int64), np.array([1], np.int64), out) == -1  # descending
    finally:
        os.close(fd)


def test_check_queries_rescales_only_extremes():
    q = np.array([[0.5, -0.25], [3e38, -1.5e38], [0, 0], [1e-40, -5e-41]], np.float32)
    out = check_queries(q, 2)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0], q[0])  # sane queries untouched: their scores are as before
    np.testing.assert_allclose(out[1], [1, -0.5])
    np.testing.assert_array_equal(out[2], [0, 0])
    np.testing.assert_allclose(out[3], [1, -0.5], rtol=1e-4)  # subnormal: few bits of precision
    np.testing.assert_allclose(check_queries(np.array([1e300, -1e299]), 2), [[1, -0.1]], rtol=1e-6)
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(InvalidInputError, match="NaN or inf"):
            check_queries(np.array([1.0, bad]), 2)


# ---------------------------------------------------------------- collections

DIM = 100  # not a multiple of 64: padded words
CONFIGS = {
    "binary": ({}, [None, "int8"]),
    "binary-asymmetric": ({"stage1": "asymmetric"}, [None, "int8"]),
    "binary-query-bits": ({"stage1": "asymmetric", "query_bits": 4}, [None]),
    "binary-rotation-centering": ({"rotation": True, "centering": True}, [None, "int8"]),
    "binary-ivf": ({}, [None, "int8"]),
    "1.5bit": ({"precision": "1.5bit"}, [None, "int8"]),
    "2bit": ({"precision": "2bit"}, [None, "int8"]),
    "int8": ({"precision": "int8"}, [None]),
    "float32": ({"precision": "float32", "keep_float32": True}, [None]),
}


def extreme_queries(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """(extreme query, the same query at a sane scale): each pair must rank alike."""
    signs = np.where(rng.random(DIM) < 0.5, -1.0, 1.0)
    pairs = [(np.full(DIM, v, np.float32), np.full(DIM, np.sign(v), np.float32)) for v in (3e38, -3e38, 1e37, 1e-40)]
    pairs += [
        (np.full(DIM, 1e300), np.ones(DIM, np.float32)),  # float64: no float32 value
        (np.full(DIM, -1e-300), -np.ones(DIM, np.float32)),  # float64: zero in float32
        ((signs * F32_MAX).astype(np.float32), signs.astype(np.float32)),  # mixed signs at float32's max
    ]
    return pairs


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    rng = np.random.default_rng(7)
    data = rng.standard_normal((300, DIM)).astype(np.float32)
    out = {}
    for name, (kwargs, _) in CONFIGS.items():
        c = Collection.create(tmp_path_factory.mktemp(name) / "c", dim=DIM, keyword_index=False, **kwargs)
        c.add(data)
        if name.endswith("ivf"):
            c.build_index(nlist=4, nprobe=4)
        out[name] = c
    return out


@pytest.mark.parametrize("name", list(CONFIGS))
def test_extreme_finite_queries_search_every_precision(collections, name):
    c = collections[name]
    k = 10
    pairs = extreme_queries(np.random.default_rng(1))
    with pytest.raises(InvalidInputError, match="NaN or inf"):
        c.search(np.full(DIM, np.nan, np.float32), rescore=None)
    for rescore in CONFIGS[name][1]:
        # one at a time (the one-query paths) and as a batch (the batch paths)
        for extreme, sane in pairs:
            got, want = (c.search(v, k=k, rescore=rescore, with_text=False)[0] for v in (extreme, sane))
            assert len(got) == k, (name, rescore, extreme[:2])
            assert all(np.isfinite(h.score) for h in got), (name, rescore, extreme[:2])
            assert [h.id for h in got] == [h.id for h in want], (name, rescore, extreme[:2])
        batch = np.stack([e.astype(np.float64) for e, _ in pairs])
        res = c.search(batch, k=k, rescore=rescore, with_text=False)
        assert [len(r) for r in res] == [k] * len(pairs)
        assert all(np.isfinite(h.score) for r in res for h in r)


def test_ivf_refuses_arrays_that_would_index_out_of_bounds():
    rng = np.random.default_rng(3)
    codes = as_words(rng.integers(0, 256, (60, 8), dtype=np.uint8))
    ivf = BinaryIVF.train(codes, 3)
    ivf.add(codes)
    good = ivf.to_arrays()
    bad_offsets = good["offsets"].copy()
    bad_offsets[1] = 10_000  # a list running past the codes: its scan would read beyond them
    bad_offsets[2] = 5
    broken = [
        {**good, "offsets": bad_offsets},
        {**good, "rows": good["rows"] - 100},  # negative row ids index the exclude mask from its end
        {**good, "codes": good["codes"][:, :0]},  # codes narrower than the centroids
    ]
    for arrays in broken:
        with pytest.raises(InvalidInputError, match="inconsistent IVF arrays"):
            BinaryIVF.from_arrays(arrays)
    rows, _ = BinaryIVF.from_arrays(good).search(codes[:2], 5, nprobe=3)
    np.testing.assert_array_equal(rows, hamming_topk(codes[:2], codes, 5)[0])


@pytest.mark.parametrize("precision", ["binary", "int8", "2bit"])
def test_stored_values_beyond_2_60_are_refused_before_writing(tmp_path: Path, precision: str) -> None:
    """A stored row cannot be rescaled like a query: values near 3e38 overflowed every stage-1 score and int8
    range (inf/NaN scores, or every search failing), so they are a named error and nothing is written."""
    rng = np.random.default_rng(5)
    good = rng.standard_normal((20, 16)).astype(np.float32)
    col = Collection.create(tmp_path / precision, 16, precision=precision, calibration_embeddings=good)
    col.add(good, ids=[f"g{i}" for i in range(20)])
    huge = good[:3].copy()
    huge[1, 4] = 3e38
    with pytest.raises(InvalidInputError, match=r"row 1, column 4.*2\*\*60"):
        col.add(huge, ids=["h0", "h1", "h2"])
    assert len(col) == 20 and "h0" not in col
    hits = col.search(good[0], k=3)[0]
    assert hits[0].id == "g0" and all(np.isfinite(h.score) for h in hits)
    with pytest.raises(InvalidInputError, match="calibration_embeddings"):
        Collection.create(tmp_path / "cal", 16, calibration_embeddings=huge)
