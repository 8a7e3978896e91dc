"""RaBitQ / extended RaBitQ codes (bitsearch.rabitq): unbiased estimates, kernels equal to a numpy
reference, padding, extreme inputs, save/load."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bitsearch import rabitq as rb
from bitsearch.errors import CorruptCollectionError, DimensionMismatchError, InvalidInputError
from bitsearch.quantize import QUERY_SCALE_RANGE


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reference(params: rb.RabitqParams, codes: np.ndarray, factors: np.ndarray, queries: np.ndarray, qb: int | None):
    """Slow numpy version of the estimator, from the unpacked integer codes."""
    u = rb.unpack_codes(params, codes).astype(np.float64)
    m = (2**params.bits - 1) / 2
    q = queries.astype(np.float32).astype(np.float64)
    c = params.centre.astype(np.float64)
    qc = q @ c
    rq = q - c  # the query is centred like the vectors: the estimated term is <x - c, q - c>
    rq = rq @ params.rotation.astype(np.float64) if params.rotation is not None else rq
    scale = factors[:, 0].astype(np.float64)
    qc = qc[:, None] + factors[:, 1].astype(np.float64)[None, :]  # + <x - c, c>, exact
    if qb is None:
        rq = rq.astype(np.float32).astype(np.float64)
        return qc + scale[None, :] * (rq @ u.T - m * rq.sum(axis=1)[:, None])
    levels, lo, delta = rb.quantize_query(rq, params.dim)
    acc_u = u.sum(axis=1)[None, :]
    acc_uv = levels.astype(np.float64) @ u.T
    s = lo[:, None] * acc_u + delta[:, None] * acc_uv
    qsum = lo * params.dim + delta * levels.sum(axis=1)
    return qc + scale[None, :] * (s - m * qsum[:, None])


def pairs(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Data vectors and one query per vector with a spread of true inner products in [-0.9, 0.9]."""
    x = unit(rng, n, d).astype(np.float64)
    z = unit(rng, n, d).astype(np.float64)
    z -= np.einsum("ij,ij->i", z, x)[:, None] * x
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    a = rng.uniform(-0.9, 0.9, n)[:, None]
    return x.astype(np.float32), (a * x + np.sqrt(1 - a**2) * z).astype(np.float32)


# ----------------------------------------------------------------------------- unbiased, O(1/sqrt(D))


def test_unbiased_over_rotations_error_shrinks_with_dimension():
    """For fixed, strongly anisotropic pairs (where plain sign bits are biased), the mean error over
    random rotations is ~0 and its spread scales like 1/sqrt(D) (D=1024 is covered on random data
    below, one rotation per fit: 1024-d QR decompositions by the hundred are slow)."""
    rng = np.random.default_rng(1)
    stds = {}
    for d in (64, 256):
        x = np.zeros((1, d), np.float32)
        x[0, :4] = [3.0, 1.0, 0.5, 0.25]  # a few large coordinates: sign bits alone are far off
        x[0, 4:] = 0.05 * rng.standard_normal(d - 4)
        x /= np.linalg.norm(x)
        q = np.zeros((1, d), np.float32)
        q[0, 0] = 1.0
        true = float(x[0] @ q[0])
        seeds = 200
        errs = []
        for s in range(seeds):
            p = rb.RabitqParams(d, 1, np.zeros(d, np.float32), rb.random_rotation(d, s), s)
            codes, f = rb.encode(p, x)
            errs.append(rb.estimate(p, codes, f, q)[0, 0] - true)
        errs = np.array(errs)
        stds[d] = errs.std()
        assert abs(errs.mean()) < 4 * errs.std() / np.sqrt(seeds) + 1e-3, (d, errs.mean(), errs.std())
        # unrotated sign bits: the same pair estimated with a clear bias
        p0 = rb.RabitqParams(d, 1, np.zeros(d, np.float32), None, None)
        c0, f0 = rb.encode(p0, x)
        assert abs(rb.estimate(p0, c0, f0, q)[0, 0] - true) > 5 * errs.std() / np.sqrt(seeds)
    assert 1.4 < stds[64] / stds[256] < 3.0  # sqrt(256 / 64) = 2


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_error_small_and_centred_on_random_data(bits):
    rng = np.random.default_rng(bits)
    spread = {}
    for d in (64, 256, 1024):
        x, q = pairs(rng, 1500, d)
        p = rb.fit(x, bits=bits, seed=3)
        codes, f = rb.encode(p, x)
        est = np.diag(rb.estimate(p, codes[::3], f[::3], q[::3]))
        true = np.einsum("ij,ij->i", x[::3], q[::3])
        err = est - true
        assert abs(err.mean()) < 4 * err.std() / np.sqrt(len(err)) + 1e-4, (bits, d, err.mean(), err.std())
        spread[d] = err.std() * np.sqrt(d)
    # std ~ c / sqrt(D): the normalized spread stays within a factor of 2 across a 16x range of D
    assert max(spread.values()) < 2 * min(spread.values()), spread
    assert spread[256] / np.sqrt(256) < {1: 0.06, 2: 0.025, 4: 0.006}[bits]


def test_more_bits_estimate_better():
    rng = np.random.default_rng(5)
    x, q = pairs(rng, 600, 128)
    true = np.einsum("ij,ij->i", x, q)
    errs = []
    for bits in (1, 2, 4):
        p = rb.fit(x, bits=bits)
        codes, f = rb.encode(p, x)
        est = rb.estimate(p, codes, f, q)[np.arange(600), np.arange(600)]
        errs.append(np.abs(est - true).mean())
    assert errs[0] > 1.8 * errs[1] > 1.8 * 1.8 * errs[2], errs


# ----------------------------------------------------------------------------- kernels vs numpy


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("qb", [None, 4])
@pytest.mark.parametrize("d", [6, 100, 384])
def test_kernel_matches_numpy_reference(bits, qb, d):
    rng = np.random.default_rng(d + bits)
    x = rng.standard_normal((300, d)).astype(np.float32) + 0.3
    q = rng.standard_normal((7, d)).astype(np.float32)
    p = rb.fit(x, bits=bits, seed=d)
    codes, f = rb.encode(p, x)
    got = rb.estimate(p, codes, f, q, query_bits=qb)
    want = reference(p, codes, f, q, qb)
    if qb is None:  # table of float32 partial sums: equal up to summation order
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    else:  # integer popcounts: the same float64 arithmetic
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("qb", [None, 4])
@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("serial", [False, True])
def test_search_is_topk_of_estimate(qb, bits, serial, monkeypatch):
    """The threaded scan (row blocks merged) and the scan on the calling thread give the same answer."""
    monkeypatch.setattr(rb, "SERIAL_WORK", 10**9 if serial else 0)
    rng = np.random.default_rng(11)
    x = unit(rng, 5000, 64)
    x[100:110] = x[100]  # duplicates: tied scores, lower row first
    q = unit(rng, 13, 64)
    q[0] = x[100]
    p = rb.fit(x, bits=bits)
    codes, f = rb.encode(p, x)
    excl = np.zeros(5000, bool)
    excl[rng.choice(5000, 700, replace=False)] = True
    excl[103] = True
    est = rb.estimate(p, codes, f, q, query_bits=qb)
    for exclude in (None, excl):
        scores, rows = rb.search(p, codes, f, q, 25, exclude=exclude, query_bits=qb)
        e = est.copy()
        if exclude is not None:
            e[:, exclude] = -np.inf
        for i in range(len(q)):
            want = np.lexsort((np.arange(5000), -e[i]))[:25]
            np.testing.assert_array_equal(rows[i], want)
            np.testing.assert_allclose(scores[i], e[i, want].astype(np.float32), rtol=1e-6)
        if exclude is not None:
            assert not exclude[rows].any()
    assert 103 not in rb.search(p, codes, f, q[0], 20, exclude=excl, query_bits=qb)[1][0]


def test_search_fewer_rows_than_k_and_all_excluded():
    rng = np.random.default_rng(2)
    x = unit(rng, 5, 32)
    p = rb.fit(x)
    codes, f = rb.encode(p, x)
    scores, rows = rb.search(p, codes, f, x[:2], 8)
    assert sorted(rows[0][:5]) == [0, 1, 2, 3, 4] and (rows[:, 5:] == -1).all()
    assert np.isneginf(scores[:, 5:]).all() and np.isfinite(scores[:, :5]).all()
    scores, rows = rb.search(p, codes, f, x[0], 3, exclude=np.ones(5, bool))
    assert (rows == -1).all() and np.isneginf(scores).all()


# ----------------------------------------------------------------------------- padding


@pytest.mark.parametrize("d", [6, 100])
def test_padding_bits_are_zero_and_change_nothing(d):
    rng = np.random.default_rng(d)
    x = rng.standard_normal((200, d)).astype(np.float32)
    q = rng.standard_normal((5, d)).astype(np.float32)
    p = rb.fit(x, rotation=False)
    codes, f = rb.encode(p, x)
    assert codes.shape[1] == p.pdim // 8 and p.pdim % 64 == 0
    tail = np.unpackbits(codes, axis=1, bitorder="little")[:, d:]
    assert not tail.any()
    # the same vectors with zero coordinates appended up to the padded width: identical estimates
    xp = np.zeros((200, p.pdim), np.float32)
    xp[:, :d] = x
    qp = np.zeros((5, p.pdim), np.float32)
    qp[:, :d] = q
    pp = rb.fit(xp, rotation=False)
    cp, fp = rb.encode(pp, xp)
    np.testing.assert_array_equal(cp, codes)
    np.testing.assert_allclose(fp, f, rtol=1e-6)
    np.testing.assert_allclose(rb.estimate(pp, cp, fp, qp), rb.estimate(p, codes, f, q), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- extreme inputs


@pytest.mark.parametrize("qb", [None, 4])
def test_extreme_inputs_give_finite_scores(qb):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 40)).astype(np.float32)
    x[0] = 0  # zero vector
    x[1:5] = x[5]  # duplicates
    x[6] *= 1e17  # huge (within the +-2**60 bound on stored values)
    x[7] *= 1e-30  # tiny
    x[8] = np.float32(1e-45)  # subnormal
    p = rb.fit(x, bits=2)
    codes, f = rb.encode(p, x)
    assert np.isfinite(f).all()
    for q in (x[:9], np.zeros((1, 40)), 1e-38 * x[10:12], 1e30 * x[10:12]):
        est = rb.estimate(p, codes, f, q, query_bits=qb)
        assert np.isfinite(est).all()
        scores, rows = rb.search(p, codes, f, q, 5, query_bits=qb)
        assert np.isfinite(scores).all() and (rows >= 0).all()
    # a vector equal to the centre: scale 0, estimate <centre, q> exactly
    p1 = rb.fit(np.ones((3, 8), np.float32))
    c1, f1 = rb.encode(p1, np.ones((3, 8), np.float32))
    assert (f1 == 0).all()
    np.testing.assert_allclose(rb.estimate(p1, c1, f1, np.arange(8.0)), 28.0)


def test_bad_input_is_named_error():
    rng = np.random.default_rng(0)
    x = unit(rng, 20, 16)
    p = rb.fit(x)
    codes, f = rb.encode(p, x)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(InvalidInputError):
        rb.fit(bad)
    with pytest.raises(InvalidInputError):
        rb.encode(p, bad)
    with pytest.raises(InvalidInputError):
        rb.encode(p, x * 1e19 * 1e3)  # beyond +-2**60
    with pytest.raises(DimensionMismatchError):
        rb.encode(p, x[:, :8])
    with pytest.raises(DimensionMismatchError):
        rb.estimate(p, codes[:, :4], f, x[0])
    with pytest.raises(DimensionMismatchError):
        rb.search(p, codes, f, x[0], 3, exclude=np.zeros(3, bool))
    with pytest.raises(InvalidInputError):
        rb.fit(x, bits=3)
    with pytest.raises(InvalidInputError):
        rb.search(p, codes, f, x[0], 0)
    with pytest.raises(InvalidInputError):
        rb.estimate(p, codes, f, x[0], query_bits=8)


# ----------------------------------------------------------------------------- save / load


def test_save_load_roundtrip(tmp_path):
    rng = np.random.default_rng(4)
    x = unit(rng, 100, 48)
    for rot in (True, False):
        p = rb.fit(x, bits=2, rotation=rot, seed=9)
        rb.save_params(p, tmp_path / str(rot))
        p2 = rb.load_params(tmp_path / str(rot))
        assert (p2.dim, p2.bits, p2.seed) == (p.dim, p.bits, p.seed)
        codes, f = rb.encode(p, x)
        np.testing.assert_array_equal(rb.encode(p2, x)[0], codes)
        np.testing.assert_array_equal(rb.estimate(p2, codes, f, x[:3]), rb.estimate(p, codes, f, x[:3]))
    (tmp_path / "True" / "rabitq.json").write_text('{"format": "bitsearch-rabitq", "format_version": 1, "dim": -1}')
    with pytest.raises(CorruptCollectionError):
        rb.load_params(tmp_path / "True")


# ----------------------------------------------------------------------------- invariants (hypothesis)

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=arrays(np.float32, st.tuples(st.integers(2, 30), st.integers(1, 70)), elements=finite),
    bits=st.sampled_from([1, 2, 4]),
    rotation=st.booleans(),
)
def test_exact_for_the_vector_itself(x, bits, rotation):
    """scale = |r|^2 / <xbar, r> makes the estimate exact when the centred query is the centred vector
    (q = x: the estimate of <x, x> is exact); and the estimate is affine in the query.

    Queries whose largest component is below QUERY_SCALE_RANGE are rescaled before scoring (the ranking of
    exact scores does not change, the estimate's does): those rows are left out here."""
    big = np.abs(x).max(axis=1)
    assume(((big == 0) | (big >= QUERY_SCALE_RANGE[0])).all())
    p = rb.fit(x, bits=bits, rotation=rotation)
    codes, f = rb.encode(p, x)
    q = x.astype(np.float64)
    est = rb.estimate(p, codes, f, q)
    true = np.einsum("ij,ij->i", q, q)
    tol = 1e-4 * (np.abs(x).max() ** 2 * x.shape[1] + 1)
    np.testing.assert_allclose(np.diag(est), true, atol=tol)
    assert np.isfinite(est).all()
    at_zero = rb.estimate(p, codes, f, np.zeros_like(q))
    np.testing.assert_allclose(rb.estimate(p, codes, f, 2 * q), 2 * est - at_zero, rtol=1e-4, atol=3 * tol)
