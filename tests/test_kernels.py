"""Kernels: Hamming top-k against a brute-force numpy reference (ties included), rescoring exactness."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitsearch import InvalidInputError, calibrate_ranges, dequantize_int8, quantize_embeddings
from bitsearch.kernels import as_words, hamming_topk, rescore_bits, rescore_float32, rescore_int8


def _reference(q: np.ndarray, db: np.ndarray, k: int, exclude: np.ndarray | None = None):
    """Brute force: all distances with numpy's popcount, ordered by (distance, index)."""
    d = np.bitwise_count(q[:, None, :] ^ db[None, :, :]).sum(-1).astype(np.int64)
    idx, dist = [], []
    for row in d:
        order = np.lexsort((np.arange(db.shape[0]), row))
        if exclude is not None:
            order = order[~exclude[order]]
        idx.append(order[:k])
        dist.append(row[order[:k]])
    return np.array(idx), np.array(dist)


@pytest.mark.parametrize("nbytes", [1, 5, 8, 48, 96, 128])
@pytest.mark.parametrize("nq", [1, 7])
def test_hamming_topk_matches_reference(nbytes, nq):
    rng = np.random.default_rng(nbytes * 10 + nq)
    db = rng.integers(0, 256, (3000, nbytes), dtype=np.uint8)
    q = rng.integers(0, 256, (nq, nbytes), dtype=np.uint8)
    idx, dist = hamming_topk(q, db, 50)
    ref_idx, ref_dist = _reference(q, db, 50)
    assert idx.dtype == np.int64 and dist.dtype == np.int32
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def test_ties_come_back_in_index_order():
    # many exact duplicates: all rows at the same distance, the lowest indices win, in order
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (1, 6), dtype=np.uint8)
    db = np.repeat(base, 500, axis=0)
    db[::7] ^= 1  # some rows one bit further away
    q = base.copy()
    idx, dist = hamming_topk(q, db, 100)
    ref_idx, _ = _reference(q, db, 100)
    np.testing.assert_array_equal(idx, ref_idx)
    assert (dist == 0).all() and (np.diff(idx[0]) > 0).all()


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 300),
    nbytes=st.integers(1, 20),
    k=st.integers(1, 320),
    nq=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    with_exclude=st.booleans(),
    low_entropy=st.booleans(),
)
def test_hamming_topk_property(n, nbytes, k, nq, seed, with_exclude, low_entropy):
    rng = np.random.default_rng(seed)
    high = 2 if low_entropy else 256  # few distinct distances -> many ties
    db = rng.integers(0, high, (n, nbytes), dtype=np.uint8)
    q = rng.integers(0, high, (nq, nbytes), dtype=np.uint8)
    exclude = rng.random(n) < 0.3 if with_exclude else None
    idx, dist = hamming_topk(q, db, k, exclude=exclude)
    ref_idx, ref_dist = _reference(q, db, k, exclude)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def test_binary_int8_codes_and_words_accepted():
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(200, 64)).astype(np.float32)
    ub, b = quantize_embeddings(emb, "ubinary"), quantize_embeddings(emb, "binary")
    i1, d1 = hamming_topk(ub[:3], ub, 10)
    i2, d2 = hamming_topk(b[:3], b, 10)
    i3, d3 = hamming_topk(as_words(ub[:3]), as_words(ub), 10)
    assert (i1 == i2).all() and (i1 == i3).all() and (d1 == d2).all() and (d1 == d3).all()
    assert (i1[:, 0] == np.arange(3)).all() and (d1[:, 0] == 0).all()


def test_hamming_bad_input():
    db = np.zeros((10, 8), dtype=np.uint8)
    with pytest.raises(InvalidInputError, match="bits"):
        hamming_topk(np.zeros((1, 16), dtype=np.uint8), db, 3)
    with pytest.raises(InvalidInputError, match="k must be"):
        hamming_topk(db[:1], db, 0)
    with pytest.raises(InvalidInputError, match="uint8"):
        hamming_topk(db[:1].astype(np.float32), db, 3)
    with pytest.raises(InvalidInputError, match="exclude"):
        hamming_topk(db[:1], db, 3, exclude=np.zeros(3, bool))
    idx, _ = hamming_topk(db[:1], db, 30, exclude=np.arange(10) < 8)
    assert idx.tolist() == [[8, 9]]


def test_rescore_int8_equals_dequantized_dot_in_float64():
    rng = np.random.default_rng(3)
    emb = rng.normal(size=(500, 96)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    r = calibrate_ranges(emb)
    codes = quantize_embeddings(emb, "int8", ranges=r)
    q = emb[7] + 0.01 * rng.normal(size=96).astype(np.float32)
    ours = rescore_int8(q, codes, r)
    ref = dequantize_int8(codes, r).astype(np.float64) @ q.astype(np.float64)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # rank order equals the float64 reference (and is not the raw-code order sentence-transformers once used)
    assert np.argsort(-ours)[:20].tolist() == np.argsort(-ref)[:20].tolist()
    assert np.argsort(-ours)[0] == 7


def test_rescore_raw_codes_would_be_wrong():
    # per-dimension ranges differ: raw codes rank differently from the dequantized values
    rng = np.random.default_rng(4)
    emb = rng.normal(size=(300, 8)).astype(np.float32) * np.array([10, 0.1, 1, 1, 5, 0.5, 2, 3], np.float32)
    r = calibrate_ranges(emb)
    codes = quantize_embeddings(emb, "int8", ranges=r)
    q = rng.normal(size=8).astype(np.float32)
    exact = emb @ q
    good = rescore_int8(q, codes, r)
    raw = codes.astype(np.float32) @ q
    top = set(np.argsort(-exact)[:10])
    assert len(top & set(np.argsort(-good)[:10])) >= 9
    assert len(top & set(np.argsort(-raw)[:10])) < len(top & set(np.argsort(-good)[:10]))


def test_rescore_bits_and_float32():
    rng = np.random.default_rng(5)
    emb = rng.normal(size=(100, 40)).astype(np.float32)
    q = rng.normal(size=40).astype(np.float32)
    ub = quantize_embeddings(emb, "ubinary")
    signs = np.where(emb > 0, 1.0, -1.0)
    np.testing.assert_allclose(rescore_bits(q, ub, 40), signs @ q, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rescore_float32(q, emb), emb.astype(np.float64) @ q, rtol=1e-5, atol=1e-5)


# ---- code paths of the fused top-k kernel: batch (vectorized over queries) vs single, row parts,
# ---- buffer compaction (k larger than a block), generic width, thread counts


@pytest.mark.parametrize("nq", [1, 3, 8, 40])  # < _BATCH_MIN: per-query kernel; >= : batch kernel
@pytest.mark.parametrize("nparts", [1, 3, 8])
@pytest.mark.parametrize("with_exclude", [False, True])
def test_topk_paths_and_parts(nq, nparts, with_exclude):
    from bitsearch.kernels.hamming import _topk_into

    rng = np.random.default_rng(nq * 100 + nparts)
    n, nbytes, k = 5000, 48, 60
    db = rng.integers(0, 2, (n, nbytes), dtype=np.uint8)  # low entropy: many ties across parts
    q = rng.integers(0, 2, (nq, nbytes), dtype=np.uint8)
    exclude = rng.random(n) < 0.25 if with_exclude else None
    out_i = np.empty((nq, k), np.int64)
    out_d = np.empty((nq, k), np.int32)
    ex = exclude if exclude is not None else np.zeros(0, bool)
    _topk_into(as_words(q), as_words(db), k, ex, nparts, out_i, out_d)
    ref_idx, ref_dist = _reference(q, db, k, exclude)
    np.testing.assert_array_equal(out_i, ref_idx)
    np.testing.assert_array_equal(out_d, ref_dist)


@pytest.mark.parametrize("nbytes", [264, 40])  # 33 words: generic (not unrolled) loop; 5 words
@pytest.mark.parametrize("nq", [2, 12])
def test_topk_generic_width_and_large_k(nbytes, nq):
    rng = np.random.default_rng(nbytes + nq)
    db = rng.integers(0, 256, (2500, nbytes), dtype=np.uint8)
    q = rng.integers(0, 256, (nq, nbytes), dtype=np.uint8)
    for k in (1, 700, 2500):  # k beyond a 512-row block, and k == n
        idx, dist = hamming_topk(q, db, k)
        ref_idx, ref_dist = _reference(q, db, k)
        np.testing.assert_array_equal(idx, ref_idx)
        np.testing.assert_array_equal(dist, ref_dist)


@pytest.mark.parametrize("threads", [1, 2])
def test_topk_thread_counts(threads):
    import numba

    from bitsearch.kernels import hamming_distances, set_num_threads

    before = numba.get_num_threads()
    set_num_threads(threads)
    try:
        rng = np.random.default_rng(threads)
        db = rng.integers(0, 256, (9000, 128), dtype=np.uint8)
        q = rng.integers(0, 256, (10, 128), dtype=np.uint8)
        ex = rng.random(9000) < 0.1
        for qq in (q[:1], q):
            idx, dist = hamming_topk(qq, db, 25, exclude=ex)
            ref_idx, ref_dist = _reference(qq, db, 25, ex)
            np.testing.assert_array_equal(idx, ref_idx)
            np.testing.assert_array_equal(dist, ref_dist)
        full = hamming_distances(as_words(q), as_words(db))
        np.testing.assert_array_equal(full, np.bitwise_count(q[:, None, :] ^ db[None]).sum(-1))
    finally:
        set_num_threads(before)


def test_topk_query_chunks_for_large_k(monkeypatch):
    import bitsearch.kernels.hamming as hamming

    monkeypatch.setattr(hamming, "_CAND_BUDGET", 12 * (2 * 300 + 64) * 5)  # 5 queries per kernel call
    rng = np.random.default_rng(9)
    db = rng.integers(0, 256, (4000, 48), dtype=np.uint8)
    q = rng.integers(0, 256, (23, 48), dtype=np.uint8)
    idx, dist = hamming_topk(q, db, 300)
    ref_idx, ref_dist = _reference(q, db, 300)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def test_single_small_scan_equals_batch_path():
    # one query over a small collection takes _topk_one; in a batch the same query takes _topk_into
    rng = np.random.default_rng(10)
    for n, nbytes in ((20000, 48), (700, 8), (3000, 264)):
        db = rng.integers(0, 4, (n, nbytes), dtype=np.uint8)  # low entropy: many ties
        q = rng.integers(0, 4, (9, nbytes), dtype=np.uint8)
        ex = rng.random(n) < 0.2
        for k in (1, 40, 600):
            for exclude in (None, ex):
                batch_i, batch_d = hamming_topk(q, db, k, exclude=exclude)
                for i in range(len(q)):
                    one_i, one_d = hamming_topk(q[i : i + 1], db, k, exclude=exclude)
                    np.testing.assert_array_equal(one_i, batch_i[i : i + 1])
                    np.testing.assert_array_equal(one_d, batch_d[i : i + 1])


def test_int8_weights_with_cached_steps_are_identical():
    from bitsearch.kernels import int8_query_weights
    from bitsearch.quantize import int8_steps

    rng = np.random.default_rng(11)
    emb = rng.normal(size=(300, 96)).astype(np.float32)
    r = calibrate_ranges(emb)
    codes = quantize_embeddings(emb, "int8", ranges=r)
    steps = int8_steps(r)
    for q in (emb[:5], emb[3], emb[:1].astype(np.float64)):
        w0, c0 = int8_query_weights(q, r)
        w1, c1 = int8_query_weights(q, r, steps)
        assert w0.dtype == w1.dtype == c0.dtype == c1.dtype == np.float32
        assert np.array_equal(w0, w1) and np.array_equal(c0, c1)
    assert np.array_equal(rescore_int8(emb[3], codes, r), rescore_int8(emb[3], codes, r, steps))


def _row_files(tmp_path, sizes, width, dtype, seed=0):
    """.npy files of ``sizes`` rows each, their descriptors / data offsets / row starts, and all rows."""
    import os

    from bitsearch.storage.diskrows import DiskRows

    rng = np.random.default_rng(seed)
    parts, arrays = [], []
    for f, n in enumerate(sizes):
        a = rng.integers(-100, 100, (n, width)).astype(dtype)
        np.save(tmp_path / f"p{f}.npy", a)
        parts.append(DiskRows(tmp_path / f"p{f}.npy"))
        arrays.append(a)
    fds = np.array([os.open(p.path, os.O_RDONLY) for p in parts], np.int64)
    offsets = np.array([p.offset for p in parts], np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return parts, fds, offsets, starts, np.concatenate(arrays)


def test_pread_rows_reads_any_order_across_files(tmp_path):
    import os

    from bitsearch.rows import pread_rows

    parts, fds, offsets, starts, full = _row_files(tmp_path, [7, 1, 300, 40], 24, np.float32)
    try:
        rng = np.random.default_rng(12)
        total = int(starts[-1])
        cases = [
            np.arange(total),  # one file after another: runs cross file boundaries
            np.arange(total)[::-1],
            rng.integers(0, total, 200),  # duplicates
            np.array([7, 7, 7, 6, 8, 5]),  # repeats of a one-row file, neighbours in other files
            np.array([], np.int64),
            np.sort(rng.choice(total, 60, replace=False)),
        ]
        for rows in cases:
            rows = rows.astype(np.int64)
            out = np.full((rows.size, full.shape[1] * 4), 0xAB, np.uint8)
            assert pread_rows(fds, offsets, starts, rows, out) == 0
            assert np.array_equal(out.view(np.float32), full[rows])
        out = np.empty((3, full.shape[1] * 4), np.uint8)
        assert pread_rows(fds, offsets, starts, np.array([0, total, 1]), out) == 2  # rows[1] out of range
        assert pread_rows(fds, offsets, starts, np.array([-1, 0, 1]), out) == 1
        os.truncate(parts[2].path, parts[2].offset + 10 * 96)  # the file ends early: the read fails
        assert pread_rows(fds, offsets, starts, np.array([3, 8 + 50]), out[:2]) == -1
    finally:
        for fd in fds:
            os.close(int(fd))


def test_top_scored_orders_by_score_then_row():
    from bitsearch.kernels import top_scored

    rng = np.random.default_rng(13)
    for trial in range(200):
        m = int(rng.integers(1, 60))
        scores = rng.integers(-3, 4, m).astype(np.float32) / 2  # many ties
        if trial % 3 == 0:
            scores[rng.random(m) < 0.2] = [np.nan, np.inf, -np.inf][(trial // 3) % 3]
        scores[scores == 0] = np.where(rng.random(int((scores == 0).sum())) < 0.5, -0.0, 0.0)
        rows = rng.permutation(10 * m)[:m].astype(np.int64)
        k = int(rng.integers(1, 70))
        ok = np.isfinite(scores)
        s, r = scores[ok], rows[ok]
        order = np.lexsort((r, -s))[:k]
        got_r, got_s = top_scored(scores, rows, k)
        assert got_s.dtype == np.float32 and got_r.dtype == np.int64
        np.testing.assert_array_equal(got_r, r[order])
        np.testing.assert_array_equal(got_s, s[order])


@pytest.mark.parametrize(("explicit", "expected"), [(None, "2 1"), (2, "2 2")])
def test_thread_count_from_the_environment_is_set_by_the_first_scan_not_at_import(explicit, expected):
    """BITSEARCH_NUM_THREADS takes effect when the first scan runs; a count set before that wins."""
    import os
    import subprocess
    import sys

    code = (
        "import numba, numpy as np\n"
        "import bitsearch.kernels as k\n"
        "before = numba.get_num_threads()\n"
        + (f"k.set_num_threads({explicit})\n" if explicit else "")
        + "k.hamming_topk(np.zeros((1, 8), np.uint8), np.zeros((4, 8), np.uint8), 2)\n"
        "print(before, numba.get_num_threads())\n"
    )
    env = {**os.environ, "BITSEARCH_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == expected.split()
