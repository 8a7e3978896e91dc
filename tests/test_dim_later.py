"""Collections created without a dimension: the first write of vectors fixes it (and calibrates int8
ranges and codebooks); int8 values outside the ranges later are counted and recalibrated on compact."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from bitsearch import Collection, CorruptCollectionError, DimensionMismatchError, FormatVersionError
from bitsearch.storage.manifest import FORMAT_VERSION
from bitsearch.storage.validate import validate_manifest

PRECISIONS = ["binary", "1.5bit", "2bit", "int8", "float32"]


def _x(n: int, dim: int, seed: int, scale: float = 1.0) -> np.ndarray:
    return (scale * np.random.default_rng(seed).normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_first_write_fixes_dim(tmp_path: Path, precision: str) -> None:
    c = Collection.create(tmp_path / "c", precision=precision, keep_float32=True)
    assert c.dim is None and len(c) == 0 and c.manifest["format_version"] == 4
    assert c.search(_x(1, 5, 0), k=3)[0] == []  # nothing has a vector yet
    c.add(None, ids=["t"], texts=["text first"])  # documents without vectors leave dim unset
    assert Collection.open(tmp_path / "c").dim is None
    x = _x(120, 6, 1)
    c.add(x, ids=[f"x{i}" for i in range(120)])
    assert c.dim == 6
    m = c.manifest
    assert m["dim"] == 6 and (m["ranges"] is not None) == m["keep_int8"]
    assert (m["codebook"] is not None) == (precision in ("binary", "1.5bit", "2bit"))  # calibrated on this write
    if m["codebook"] is not None:
        assert np.shape(m["codebook"]["levels"])[1] == 6
    with pytest.raises(DimensionMismatchError, match="dimension 7, expected 6"):
        c.add(_x(2, 7, 2), ids=["y0", "y1"])
    with pytest.raises(DimensionMismatchError):
        c.upsert([_x(1, 7, 2)[0], None], ids=["y0", "y1"])
    again = Collection.open(tmp_path / "c", verify=True)
    assert again.dim == 6 and len(again) == 121
    res = again.search(x[:3], k=1, rescore="float32", rescore_multiplier=200, exact=True)
    ref = np.argmax(x[:3] @ x.T, axis=1)
    assert [r[0].id for r in res] == [f"x{i}" for i in ref]
    with pytest.raises(DimensionMismatchError):
        again.add(_x(1, 5, 3), ids=["z"])


def test_dim_from_create_arguments(tmp_path: Path) -> None:
    assert Collection.create(tmp_path / "a", calibration_embeddings=_x(10, 9, 0)).dim == 9
    assert Collection.create(tmp_path / "b", ranges=np.stack([-np.ones(4), np.ones(4)])).dim == 4
    assert Collection.create(tmp_path / "c", truncate_dim=12).dim == 12
    assert Collection.create(tmp_path / "c", exist_ok=True).dim == 12
    assert Collection.create(tmp_path / "d").manifest["format_version"] == 4
    assert Collection.create(tmp_path / "e", 8).manifest["format_version"] == 2  # as before: old releases open it


def test_clipped_int8_values_are_counted_and_recalibrated_on_compact(tmp_path: Path) -> None:
    c = Collection.create(tmp_path / "c", precision="int8", keep_float32=True)
    c.add(_x(200, 8, 0), ids=[f"a{i}" for i in range(200)])
    assert c.stats()["int8_clipped_fraction"] == 0.0
    wide = _x(100, 8, 1, scale=4.0)
    with pytest.warns(UserWarning, match="outside the collection's int8 ranges"):
        c.add(wide, ids=[f"b{i}" for i in range(100)])
    expected = float(((wide < c.ranges[0]) | (wide > c.ranges[1])).sum()) / (300 * 8)  # type: ignore[index]
    assert c.stats()["int8_clipped_fraction"] == pytest.approx(expected) and expected > 0.1
    q = _x(5, 8, 2)
    old_ranges = c.ranges.copy()  # type: ignore[union-attr]
    c.compact()
    assert c.stats()["int8_clipped_fraction"] == 0.0
    assert (c.ranges[0] < old_ranges[0]).any()  # type: ignore[index]
    everything = np.concatenate([_x(200, 8, 0), wide])
    np.testing.assert_allclose(c.ranges, np.stack([everything.min(0), everything.max(0)]), rtol=1e-6)
    # int8 rows re-encoded: int8-only ranking now matches float32 closely for the wide rows
    res = c.search(q, k=5, rescore=None, exact=True)
    top = np.argsort(-(q @ everything.T), axis=1)[:, :5]
    ids = [f"a{i}" if i < 200 else f"b{i - 200}" for i in range(300)]
    overlap = np.mean([len({h.id for h in r} & {ids[j] for j in t}) / 5 for r, t in zip(res, top, strict=True)])
    assert overlap >= 0.6
    assert Collection.open(tmp_path / "c", verify=True).stats()["int8_clipped_fraction"] == 0.0


def test_given_ranges_or_no_float32_are_never_recalibrated(tmp_path: Path) -> None:
    ranges = np.stack([-np.ones(4), np.ones(4)]).astype(np.float32)
    given = Collection.create(tmp_path / "g", precision="int8", keep_float32=True, ranges=ranges)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        given.add(_x(50, 4, 0, scale=3.0), ids=list(range(50)))
        plain = Collection.create(tmp_path / "p", precision="int8")
        plain.add(_x(150, 4, 0), ids=list(range(150)))
    with pytest.warns(UserWarning, match="recreate the collection"):
        plain.add(_x(50, 4, 1, scale=5.0), ids=list(range(150, 200)))
    for col in (given, plain):
        before, frac = col.ranges.copy(), col.stats()["int8_clipped_fraction"]  # type: ignore[union-attr]
        assert frac > 0
        col.compact()
        np.testing.assert_array_equal(col.ranges, before)
        assert col.stats()["int8_clipped_fraction"] == frac


def test_crafted_manifests_are_refused(tmp_path: Path) -> None:
    c = Collection.create(tmp_path / "c", precision="int8", keep_float32=True)
    c.add(_x(20, 4, 0), ids=list(range(20)))
    good = c.manifest
    mpath = tmp_path / "c" / "manifest.json"

    def refused(change: dict) -> None:
        bad = {**json.loads(json.dumps(good)), **change}
        with pytest.raises(CorruptCollectionError):
            validate_manifest(bad, mpath)

    refused({"dim": None})  # segments hold rows
    refused({"int8_clipped": [5, 2]})
    refused({"int8_clipped": [1, -1]})
    refused({"int8_clipped": "x"})
    refused({"ranges_given": 1})
    empty = Collection.create(tmp_path / "e", precision="int8").manifest
    for change in ({"format_version": 3}, {"ranges": [[0.0], [1.0]]}):
        with pytest.raises(CorruptCollectionError):
            validate_manifest({**empty, **change}, mpath)
    validate_manifest(empty, mpath)
    bad = {**good, "format_version": FORMAT_VERSION + 1}
    mpath.write_text(json.dumps(bad))
    with pytest.raises(FormatVersionError):
        Collection.open(tmp_path / "c")
