"""BinaryIVF: exact when every list is probed, high recall on clustered codes, exclude, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from bitsearch import InvalidInputError
from bitsearch.kernels import BinaryIVF, hamming_topk, set_num_threads


def _clustered(n: int, nbytes: int, centers: int, flip: float, seed: int) -> np.ndarray:
    """Codes drawn around random centre codes with each bit flipped with probability ``flip``."""
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 2, (centers, nbytes * 8), dtype=np.uint8)
    bits = c[rng.integers(0, centers, n)] ^ (rng.random((n, nbytes * 8)) < flip)
    return np.packbits(bits.astype(np.uint8), axis=1)


@pytest.fixture(scope="module")
def data():
    db = _clustered(6000, 48, 40, 0.15, 0)
    q = _clustered(20, 48, 40, 0.15, 0)[:20] ^ np.uint8(1)
    ivf = BinaryIVF.train(db, nlist=32, seed=0)
    ivf.add(db)
    return db, q, ivf


def test_all_lists_probed_is_exact(data):
    db, q, ivf = data
    k = 30
    rows, dist = ivf.search(q, k, nprobe=ivf.nlist)
    ref_rows, ref_dist = hamming_topk(q, db, k)
    np.testing.assert_array_equal(dist, ref_dist)
    np.testing.assert_array_equal(rows, ref_rows)  # ties resolved by row id, as the exact scan does
    for threads in (1, 2):  # one query: its probes split over the threads
        set_num_threads(threads)
        one = ivf.search(q[3], k, nprobe=ivf.nlist)
        np.testing.assert_array_equal(one[0][0], ref_rows[3])
    set_num_threads(2)


@pytest.mark.parametrize("rank", ["expected", "hamming"])
def test_few_probes_high_recall(data, rank):
    db, q, ivf = data
    rows, _ = ivf.search(q, 10, nprobe=4, rank=rank)
    ref_rows, _ = hamming_topk(q, db, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, ref_rows, strict=True)])
    assert recall >= 0.9
    assert ivf.means.shape == (ivf.nlist, 384) and ivf.means.min() >= 0 and ivf.means.max() <= 1
    assert len(ivf) == len(db) and np.diff(ivf.offsets).sum() == len(db)


def test_exclude_and_padding(data):
    db, q, ivf = data
    ex = np.random.default_rng(1).random(len(db)) < 0.5
    rows, dist = ivf.search(q[:3], 25, nprobe=ivf.nlist, exclude=ex)
    ref_rows, ref_dist = hamming_topk(q[:3], db, 25, exclude=ex)
    assert not ex[rows].any()
    np.testing.assert_array_equal(dist, ref_dist)
    np.testing.assert_array_equal(rows, ref_rows)
    small = BinaryIVF.train(db[:50], nlist=5, seed=0)
    small.add(db[:50])
    rows, dist = small.search(q[0], 80, nprobe=5)
    assert rows.shape == (1, 80) and (rows[0, 50:] == -1).all() and (dist[0, 50:] == 48 * 8 + 1).all()
    assert sorted(rows[0, :50]) == list(range(50))


def test_incremental_add_and_save_load(data, tmp_path):
    db, q, ivf = data
    two = BinaryIVF.from_arrays({"centroids": ivf.centroids, "offsets": np.zeros(ivf.nlist + 1, np.int64),
                                 "rows": np.zeros(0, np.int64), "codes": np.zeros((0, 6), np.uint64)})  # fmt: skip
    two.add(db[:2500])
    two.add(db[2500:])
    for name, arr in ivf.to_arrays().items():
        np.testing.assert_array_equal(arr, two.to_arrays()[name])
    ivf.save(tmp_path / "ivf")
    for mmap in (False, True):
        back = BinaryIVF.load(tmp_path / "ivf", mmap=mmap)
        a, b = ivf.search(q, 10, nprobe=3), back.search(q, 10, nprobe=3)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert back.nbytes == ivf.nbytes


def test_bad_input(data):
    db, q, ivf = data
    with pytest.raises(InvalidInputError, match="nlist"):
        BinaryIVF.train(db[:10], nlist=11)
    with pytest.raises(InvalidInputError, match="bits"):
        ivf.search(np.zeros((1, 16), np.uint8), 5)
    with pytest.raises(InvalidInputError, match="k must"):
        ivf.search(q, 0)
    with pytest.raises(InvalidInputError, match="exclude"):
        ivf.search(q, 5, exclude=np.zeros(10, bool))
    with pytest.raises(InvalidInputError, match="rank"):
        ivf.search(q, 5, rank="nope")
    with pytest.raises(InvalidInputError, match="inconsistent"):
        BinaryIVF(ivf.centroids, ivf.offsets, ivf.rows[:-1], ivf.codes)


def test_expected_rank_is_mean_distance_to_list_rows(data):
    from bitsearch.kernels.ivf import _bits, _rank_scores

    _, q, ivf = data
    score = np.empty((2, ivf.nlist), np.float32)
    qw = np.ascontiguousarray(np.frombuffer(q[:2].tobytes(), np.uint64).reshape(2, -1))
    _rank_scores(_bits(qw), ivf._rank_w, ivf._rank_b, score)
    for lst in (0, 5, ivf.nlist - 1):
        rows = ivf.codes[ivf.offsets[lst] : ivf.offsets[lst + 1]]
        mean_d = np.bitwise_count(qw[:, None, :] ^ rows[None]).sum(-1).mean(1)
        np.testing.assert_allclose(score[:, lst], mean_d, rtol=1e-4)
