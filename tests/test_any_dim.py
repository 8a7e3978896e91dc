"""Collections of any dimension: codes of a dim that is no multiple of 8 are padded with zero bits that
never change a distance, and int8/float32 rows keep the true dim (LangChain's standard tests use 6)."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bitsearch import Collection

DIMS = st.one_of(st.sampled_from([1, 3, 6, 7, 9, 13, 100]), st.integers(1, 70))


def _vectors(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def _create(path: Path, dim: int, precision: str, rotation: bool, x: np.ndarray, **kw: object) -> Collection:
    with warnings.catch_warnings():  # int8 ranges calibrated on a few rows: expected here
        warnings.simplefilter("ignore")
        col = Collection.create(
            path, dim, precision=precision, rotation=rotation if precision not in ("int8", "float32") else None, **kw
        )
        col.add(x, ids=[f"x{i}" for i in range(x.shape[0])])
    return col


@settings(max_examples=40, deadline=None)
@given(
    dim=DIMS,
    precision=st.sampled_from(["binary", "1.5bit", "2bit", "rabitq", "int8", "float32"]),
    rotation=st.booleans(),
    index=st.booleans(),
    reopen=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_exact_search_equals_brute_force_for_any_dim(
    dim: int, precision: str, rotation: bool, index: bool, reopen: bool, seed: int
) -> None:
    """Every row a candidate, rescored with the kept float32 rows: numpy's dot-product ranking."""
    n, k = 30, 5
    x, q = _vectors(n, dim, seed), _vectors(3, dim, seed + 1)
    with tempfile.TemporaryDirectory() as tmp:
        col = _create(Path(tmp) / "c", dim, precision, rotation, x, keep_float32=True)
        if index and precision in ("binary", "rabitq"):
            col.build_index(nlist=3, nprobe=1)
        if reopen:
            col.compact()
            col = Collection.open(Path(tmp) / "c", verify=True)
        assert col.dim == dim
        res = col.search(q, k=k, rescore="float32", rescore_multiplier=n, exact=True)
        ref = q.astype(np.float64) @ x.T.astype(np.float64)
        for i, hits in enumerate(res):
            got_rows = [int(h.id[1:]) for h in hits]
            want = np.sort(ref[i])[::-1][:k]
            # the true scores of the returned rows are the k best (ties may swap rows of equal score)
            np.testing.assert_allclose(np.sort(ref[i, got_rows])[::-1], want, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose([h.score for h in hits], ref[i, got_rows], rtol=1e-4, atol=1e-4)
        vecs = col.get([f"x{j}" for j in range(n)], with_vectors=True)
        np.testing.assert_array_equal(np.stack([d.vector for d in vecs]), x)
        for seg in col.manifest["segments"]:  # int8 / float32 rows hold the true dim, no padding
            for name in ("int8.npy", "float32.npy"):
                if name in seg["files"]:
                    arr = np.load(Path(tmp) / "c" / "segments" / seg["name"] / name)
                    assert arr.shape == (seg["rows"], dim)


@settings(max_examples=40, deadline=None)
@given(dim=DIMS, index=st.booleans(), seed=st.integers(0, 2**16))
def test_hamming_of_padded_codes_equals_unpadded_bit_count(dim: int, index: bool, seed: int) -> None:
    """Binary stage 1 alone: score = 1 - 2 * hamming / dim with hamming counted on the dim true bits."""
    n = 40
    x, q = _vectors(n, dim, seed), _vectors(2, dim, seed + 1)
    with tempfile.TemporaryDirectory() as tmp:
        col = _create(Path(tmp) / "c", dim, "binary", False, x, stage1="hamming")
        if index:
            col.build_index(nlist=2, nprobe=2)
        res = col.search(q, k=n, rescore=None, exact=True)
        for i, hits in enumerate(res):
            assert len(hits) == n
            ham = ((x > 0) != (q[i] > 0)).sum(axis=1)
            got = {int(h.id[1:]): h.score for h in hits}
            np.testing.assert_allclose([got[j] for j in range(n)], 1.0 - 2.0 * ham / dim, atol=1e-6)
        codes = np.load(Path(tmp) / "c" / "segments" / col.manifest["segments"][0]["name"] / "binary.npy")
        assert codes.shape == (n, -(-dim // 8))
        bits = np.unpackbits(codes, axis=1)
        assert not bits[:, dim:].any()  # the padding bits are zero
        np.testing.assert_array_equal(bits[:, :dim].astype(bool), x > 0)
