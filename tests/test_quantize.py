"""Quantization: byte-compatibility with sentence-transformers, ranges, truncation, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import unit_vectors
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bitsearch import (
    InvalidInputError,
    calibrate_ranges,
    dequantize_int8,
    quantize_embeddings,
    truncate_embeddings,
    unpack_bits,
)

PRECISIONS = ["float32", "int8", "uint8", "binary", "ubinary"]


@pytest.fixture(scope="module")
def st_quantize():
    util = pytest.importorskip("sentence_transformers.util")
    return util.quantize_embeddings


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("dim", [384, 64, 20])
def test_byte_identical_to_sentence_transformers(st_quantize, precision, dim):
    emb = unit_vectors(300, dim)
    ours = quantize_embeddings(emb, precision)
    theirs = st_quantize(emb, precision)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert ours.tobytes() == theirs.tobytes()


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_byte_identical_with_ranges_and_calibration(st_quantize, precision):
    emb, cal = unit_vectors(50, 128, 1), unit_vectors(500, 128, 2)
    ranges = np.vstack([cal.min(0), cal.max(0)])
    for kwargs in ({"ranges": ranges}, {"calibration_embeddings": cal}):
        ours = quantize_embeddings(emb, precision, **kwargs)
        theirs = st_quantize(emb, precision, **kwargs)
        assert ours.tobytes() == theirs.tobytes()
    # values outside the ranges saturate in both
    wide = emb * 5
    assert (
        quantize_embeddings(wide, precision, ranges=ranges).tobytes()
        == st_quantize(wide, precision, ranges=ranges).tobytes()
    )


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float32, st.tuples(st.integers(2, 30), st.integers(1, 40)), elements=st.floats(-4, 4, width=32)),
    st.sampled_from(PRECISIONS),
)
def test_byte_identical_property(st_quantize, emb, precision):
    assert quantize_embeddings(emb, precision).tobytes() == st_quantize(emb, precision).tobytes()


def test_binary_bits_are_signs():
    emb = np.array([[0.5, -0.1, 0.0, 2.0, -3.0, 1e-9, -1e-9, 0.3, 7.0]], dtype=np.float32)
    ub = quantize_embeddings(emb, "ubinary")
    assert ub.shape == (1, 2)
    assert ub[0, 0] == 0b10010101 and ub[0, 1] == 0b10000000
    assert (quantize_embeddings(emb, "binary").astype(np.int16) + 128 == ub).all()
    assert (unpack_bits(ub, 9) == np.where(emb > 0, 1, -1)).all()


@pytest.mark.parametrize(
    "data",
    [
        np.array([[0.1, -0.2, 0.3]], dtype=np.float32),  # one vector
        np.array([[0.1, 0.5, 0.3], [0.1, -0.5, 0.9]], dtype=np.float32),  # a constant dimension
        np.zeros((3, 4), dtype=np.float32),  # nothing has width
        np.full((2, 3), 1e30, dtype=np.float32),  # huge constant values
    ],
)
def test_calibrated_ranges_never_zero_width(data):
    r = calibrate_ranges(data)
    assert r.shape == (2, data.shape[1]) and r.dtype == np.float32
    assert np.isfinite(r).all() and (r[1] > r[0]).all()
    codes = quantize_embeddings(data, "int8", ranges=r)
    back = dequantize_int8(codes, r)
    assert np.isfinite(back).all()
    # a value alone in its dimension lands inside its range
    assert ((data >= r[0]) & (data <= r[1])).all()


def test_calibrated_ranges_equal_min_max_when_wide():
    emb = unit_vectors(200, 32)
    r = calibrate_ranges(emb)
    assert np.array_equal(r, np.vstack([emb.min(0), emb.max(0)]))


def test_dequantize_is_within_half_a_bucket():
    emb = unit_vectors(400, 48, 3)
    r = calibrate_ranges(emb)
    back = dequantize_int8(quantize_embeddings(emb, "int8", ranges=r), r)
    step = (r[1] - r[0]) / 255
    assert (np.abs(back - emb) <= step * 0.5 + 1e-6).all()


def test_truncate_keeps_prefix_and_renormalizes():
    emb = unit_vectors(10, 64)
    t = truncate_embeddings(emb, 16)
    assert t.shape == (10, 16)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(t * np.linalg.norm(emb[:, :16], axis=1, keepdims=True), emb[:, :16], rtol=1e-5)
    with pytest.raises(InvalidInputError, match="exceeds"):
        truncate_embeddings(emb, 65)
    with pytest.raises(InvalidInputError, match="positive"):
        truncate_embeddings(emb, 0)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.array([[np.nan, 1.0]]), "NaN or inf"),
        (np.array([[np.inf, 1.0]]), "NaN or inf"),
        (np.zeros((0, 4)), "empty"),
        (np.zeros((2, 2, 2)), "1-D .* or 2-D"),
        (np.array([["a", "b"]]), "numeric"),
    ],
)
def test_bad_embeddings_rejected(bad, match):
    with pytest.raises(InvalidInputError, match=match):
        quantize_embeddings(bad, "binary")


def test_unknown_precision_and_single_vector_int8():
    with pytest.raises(InvalidInputError, match="unknown precision 'int4'"):
        quantize_embeddings(unit_vectors(3, 8), "int4")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="single embedding"):
        quantize_embeddings(unit_vectors(1, 8), "int8")
    with pytest.raises(InvalidInputError, match=r"shape \(2, 8\)"):
        quantize_embeddings(unit_vectors(3, 8), "int8", ranges=np.zeros((2, 7)))
    with pytest.raises(InvalidInputError, match="must be float"):
        quantize_embeddings(np.zeros((2, 8), dtype=np.int8), "binary")
