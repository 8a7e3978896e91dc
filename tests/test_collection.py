"""Collection: round trip, staged search, delete and compaction, bad input, corruption, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import unit_vectors

from bitsearch import (
    Collection,
    CollectionError,
    CorruptCollectionError,
    DuplicateIdError,
    FormatVersionError,
    InvalidInputError,
    UnknownIdError,
    calibrate_ranges,
    dequantize_int8,
    quantize_embeddings,
)

DIM = 64


def _snapshot(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != ".lock"
    }


@pytest.fixture
def emb() -> np.ndarray:
    return unit_vectors(500, DIM)


@pytest.fixture
def col(tmp_path: Path, emb: np.ndarray) -> Collection:
    c = Collection.create(tmp_path / "c", DIM, keep_float32=True)
    c.add(
        emb[:300],
        ids=[f"d{i}" for i in range(300)],
        texts=[f"text {i}" for i in range(300)],
        metadata=[{"i": i, "even": i % 2 == 0} for i in range(300)],
    )
    c.add(emb[300:], ids=list(range(300, 500)))
    return c


def test_round_trip(col: Collection, emb: np.ndarray, tmp_path: Path):
    assert len(col) == 500
    before = col.search(emb[:5], k=7)
    again = Collection.open(tmp_path / "c", verify=True)
    assert len(again) == 500 and again.dim == DIM and again.precision == "binary"
    after = again.search(emb[:5], k=7)
    assert [[(h.id, h.score) for h in r] for r in before] == [[(h.id, h.score) for h in r] for r in after]
    top = after[0][0]
    assert top.id == "d0" and top.text == "text 0" and top.metadata == {"i": 0, "even": True}
    assert after[4][0].id == "d4"
    hit = again.search(emb[400], k=1)[0][0]
    assert hit.id == 400 and isinstance(hit.id, int) and hit.text is None and hit.metadata is None
    # the codes on disk are sentence-transformers' codes
    m = again.manifest
    seg = tmp_path / "c" / "segments" / m["segments"][0]["name"]
    assert np.array_equal(np.load(seg / "binary.npy"), quantize_embeddings(emb[:300], "ubinary"))
    ranges = np.asarray(m["ranges"], dtype=np.float32)
    assert np.array_equal(np.load(seg / "int8.npy"), quantize_embeddings(emb[:300], "int8", ranges=ranges))


@pytest.mark.parametrize("rescore", ["int8", "float32", "binary", ("int8", "float32")])
def test_rescoring_ranks_like_float64_reference(col: Collection, emb: np.ndarray, rescore):
    rng = np.random.default_rng(9)
    queries = emb[rng.choice(500, 20, replace=False)] + 0.3 * unit_vectors(20, DIM, 5)
    res = col.search(queries, k=10, rescore_multiplier=50, rescore=rescore)  # candidates = everything
    ranges = col.ranges
    last = rescore if isinstance(rescore, str) else rescore[-1]
    if last == "int8":
        rows = dequantize_int8(quantize_embeddings(emb, "int8", ranges=ranges), ranges).astype(np.float64)
    elif last == "binary":
        rows = np.where(emb > 0, 1.0, -1.0)
    else:
        rows = emb.astype(np.float64)
    ids = [f"d{i}" for i in range(300)] + list(range(300, 500))
    for q, hits in zip(queries, res, strict=True):
        ref = rows @ q.astype(np.float64)
        order = np.argsort(-ref, kind="stable")[:10]
        assert [h.id for h in hits] == [ids[i] for i in order]
        np.testing.assert_allclose([h.score for h in hits], ref[order], rtol=1e-4, atol=1e-4)
    assert res.stages[0] == "hamming" and set(res.timings) >= {"stage1", "fetch", last}


def test_binary_without_rescore_scores_hamming(tmp_path: Path, emb: np.ndarray):
    col = Collection.create(tmp_path / "h", DIM, stage1="hamming")
    col.add(emb, ids=[f"d{i}" for i in range(500)])
    res = col.search(emb[3], k=5, rescore=None)
    bits = np.where(emb > 0, 1, -1)
    expected = np.sort(bits @ bits[3] / DIM)[::-1][:5]
    np.testing.assert_allclose([h.score for h in res[0]], expected, rtol=1e-6)
    assert res[0][0].id == "d3" and res.stages == ["hamming"]


def test_asymmetric_stage1_scores_bucket_means(tmp_path: Path, col: Collection, emb: np.ndarray):
    """The float query scores the sign bits' bucket means: exactly over every row with
    stage1="asymmetric", over the Hamming top 16 x k with "auto" (the default) when nothing rescores."""
    from bitsearch.codecs import BinaryCodec
    from bitsearch.quantize import CodeBook

    book = CodeBook.fit(emb[:300], "binary")  # the first add calibrated the codebook
    rec = book.decode(book.encode(emb)).astype(np.float64)
    ids = [f"d{i}" for i in range(300)] + list(range(300, 500))
    full = Collection.create(tmp_path / "a", DIM, stage1="asymmetric")
    full.add(emb[:300], ids=ids[:300])
    full.add(emb[300:], ids=ids[300:])
    queries = unit_vectors(10, DIM, 21)
    bits = np.where(emb > 0, 1, -1)
    for c, preselect in ((full, False), (col, True)):
        res = c.search(queries, k=8, rescore=None)
        assert res.stages == ["asymmetric"]
        for q, hits in zip(queries, res, strict=True):
            ref = rec @ q.astype(np.float64)
            rows = np.arange(500)
            if preselect:
                ham = (bits != np.where(q > 0, 1, -1)).sum(1)
                rows = np.sort(np.lexsort((np.arange(500), ham))[: 8 * BinaryCodec.preselect_depth])
            order = rows[np.argsort(-ref[rows], kind="stable")[:8]]
            assert [h.id for h in hits] == [ids[i] for i in order]
            np.testing.assert_allclose([h.score for h in hits], ref[order], rtol=1e-4, atol=1e-5)
    assert col.search(queries, k=8).stages == ["hamming", "int8"]  # a rescoring stage follows


def test_search_survives_concurrent_deletes_and_compaction(col: Collection, emb: np.ndarray, tmp_path: Path):
    import threading

    other = Collection.open(tmp_path / "c")  # another handle: its snapshot goes stale on disk
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader(c: Collection) -> None:
        try:
            while not stop.is_set():
                for hits in c.search(emb[:20], k=10):
                    assert len({h.id for h in hits}) == len(hits)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(c,)) for c in (col, other)]
    for t in threads:
        t.start()
    for i in range(0, 200, 10):
        col.delete([f"d{j}" for j in range(i, i + 10)])
        if i % 50 == 0:
            col.compact()
        other.refresh()
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(col) == 300


@pytest.mark.parametrize("precision", ["int8", "float32"])
def test_plain_int8_and_float32_collections(tmp_path: Path, emb: np.ndarray, precision: str):
    c = Collection.create(tmp_path / precision, DIM, precision=precision, calibration_embeddings=emb)
    c.add(emb, ids=[str(i) for i in range(500)])
    q = unit_vectors(5, DIM, 11)
    res = c.search(q, k=10)
    if precision == "float32":
        rows = emb.astype(np.float64)
    else:
        r = c.ranges
        rows = dequantize_int8(quantize_embeddings(emb, "int8", ranges=r), r).astype(np.float64)
    for qi, hits in zip(q, res, strict=True):
        ref = np.argsort(-(rows @ qi.astype(np.float64)), kind="stable")[:10]
        assert [h.id for h in hits] == [str(i) for i in ref]
    st = c.stats()
    assert st["stages"][precision]["ram_bytes"] == 500 * DIM * (1 if precision == "int8" else 4)
    assert "binary" not in st["stages"]
    with pytest.raises(InvalidInputError, match="no float32 rows"):
        Collection.create(tmp_path / "x", DIM, precision="int8").search(q, rescore="float32")


def test_stats_bytes(col: Collection):
    st = col.stats()
    assert st["documents"] == 500 and st["dim"] == DIM
    assert st["stages"]["binary"]["ram_bytes"] == 500 * DIM // 8
    assert st["stages"]["int8"] == {"ram_bytes": 0, "disk_bytes": st["stages"]["int8"]["disk_bytes"]}
    assert st["stages"]["int8"]["disk_bytes"] >= 500 * DIM
    assert st["stages"]["float32"]["disk_bytes"] >= 500 * DIM * 4
    assert st["compression_vs_float32"] == 32.0 and st["bytes_per_document_ram"] == DIM / 8


def test_delete_and_compact(col: Collection, emb: np.ndarray, tmp_path: Path):
    assert col.delete(["d0", 301, "d7"]) == 3
    assert len(col) == 497
    for c in (col, Collection.open(tmp_path / "c")):
        for rescore in (None, "int8", "float32", "binary"):
            res = c.search(emb[[0, 301, 7]], k=600, rescore=rescore, rescore_multiplier=1)
            for hits in res:
                ids = [h.id for h in hits]
                assert len(ids) == 497 and not {"d0", 301, "d7"} & set(ids)
    with pytest.raises(UnknownIdError, match="unknown document id.*'d0'"):
        col.delete(["d0"])
    with pytest.raises(UnknownIdError, match="'nope'"):
        col.delete(["d1", "nope"])
    assert len(col) == 497 and "d1" in col
    before = col.search(emb[:20], k=10)
    col.compact()
    assert col.stats()["segments"] == 1 and col.stats()["deleted"] == 0
    reopened = Collection.open(tmp_path / "c", verify=True)
    after = reopened.search(emb[:20], k=10)
    assert [[h.id for h in r] for r in before] == [[h.id for h in r] for r in after]
    assert len(reopened) == 497
    assert sorted(p.name for p in (tmp_path / "c" / "segments").iterdir()) == [reopened.manifest["segments"][0]["name"]]
    # a deleted id may be added again, and is found again
    reopened.add(emb[0], ids=["d0"], texts=["back"])
    assert reopened.search(emb[0], k=1)[0][0].text == "back"


def test_delete_everything(col: Collection, emb: np.ndarray):
    col.delete([f"d{i}" for i in range(300)] + list(range(300, 500)))
    assert len(col) == 0
    assert col.search(emb[:2], k=3) == [[], []]
    col.compact()
    assert len(col) == 0 and col.search(emb[0]) == [[]]
    col.add(emb[:2], ids=["a", "b"])
    assert col.search(emb[1], k=1)[0][0].id == "b"


def test_auto_ids_continue(tmp_path: Path, emb: np.ndarray):
    c = Collection.create(tmp_path / "c", DIM, ranges=calibrate_ranges(emb))
    assert c.add(emb[:3]) == [0, 1, 2]
    assert c.add(emb[3:5]) == [3, 4]
    assert c.search(emb[4], k=1)[0][0].id == 4


BAD_ADDS = [
    (lambda e: {"embeddings": e[:3, :10]}, InvalidInputError, "dimension 10, expected 64"),
    (lambda e: {"embeddings": np.where(np.eye(3, DIM) > 0, np.nan, e[:3])}, InvalidInputError, "NaN"),
    (lambda e: {"embeddings": np.where(np.eye(3, DIM) > 0, np.inf, e[:3])}, InvalidInputError, "NaN or inf"),
    (lambda e: {"embeddings": np.zeros((0, DIM))}, InvalidInputError, "empty"),
    (lambda e: {"embeddings": e[:3], "ids": ["x", "y"]}, InvalidInputError, "2 ids for 3"),
    (lambda e: {"embeddings": e[:3], "texts": ["a"]}, InvalidInputError, "1 texts for 3"),
    (lambda e: {"embeddings": e[:3], "texts": ["a", "", "c"]}, InvalidInputError, r"texts\[1\] is empty"),
    (lambda e: {"embeddings": e[:2], "metadata": [{"a": 1}, {"b": object()}]}, InvalidInputError, "JSON"),
    (lambda e: {"embeddings": e[:2], "ids": ["x", "x"]}, DuplicateIdError, "more than once"),
    (lambda e: {"embeddings": e[:2], "ids": ["new", "d5"]}, DuplicateIdError, "'d5'"),
    (lambda e: {"embeddings": e[:2], "ids": [1.5, 2]}, InvalidInputError, "str or int"),
]


@pytest.mark.parametrize(("make", "exc", "match"), BAD_ADDS)
def test_bad_add_changes_nothing(col: Collection, emb: np.ndarray, tmp_path: Path, make, exc, match):
    before = _snapshot(tmp_path / "c")
    with pytest.raises(exc, match=match):
        col.add(**make(emb))
    assert len(col) == 500
    reopened = Collection.open(tmp_path / "c", verify=True)
    assert len(reopened) == 500 and reopened.search(emb[5], k=1)[0][0].id == "d5"
    after = _snapshot(tmp_path / "c")
    assert after.keys() == before.keys()
    assert {k: v for k, v in after.items() if "sqlite" not in k} == {
        k: v for k, v in before.items() if "sqlite" not in k
    }


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must be"),
        ({"rescore_multiplier": 0}, "rescore_multiplier"),
        ({"rescore": "int4"}, "unknown rescore stage 'int4'"),
        ({"queries": np.zeros((1, 3))}, "dimension 3, expected 64"),
        ({"queries": np.full((1, DIM), np.nan)}, "NaN"),
    ],
)
def test_bad_search(col: Collection, emb: np.ndarray, kwargs, match):
    args = {"queries": emb[:1], **kwargs}
    with pytest.raises(InvalidInputError, match=match):
        col.search(**args)


def test_rescore_needs_stored_rows(tmp_path: Path, emb: np.ndarray):
    c = Collection.create(tmp_path / "c", DIM, keep_int8=False)
    c.add(emb)
    with pytest.raises(InvalidInputError, match="keeps no int8 rows"):
        c.search(emb[0])
    assert c.search(emb[0], rescore="binary")[0][0].id == 0
    with pytest.raises(InvalidInputError, match="keeps no float32"):
        c.search(emb[0], rescore="float32")


def test_create_errors(tmp_path: Path, emb: np.ndarray):
    with pytest.raises(InvalidInputError, match="unknown collection precision 'int4'"):
        Collection.create(tmp_path / "a", DIM, precision="int4")
    with pytest.raises(InvalidInputError, match="dim must be"):
        Collection.create(tmp_path / "a", 0)
    with pytest.raises(InvalidInputError, match="zero width"):
        Collection.create(tmp_path / "a", 2, ranges=np.array([[0, 1], [0, 2]]))
    Collection.create(tmp_path / "b", DIM)
    with pytest.raises(CollectionError, match="already exists"):
        Collection.create(tmp_path / "b", DIM)
    assert Collection.create(tmp_path / "b", DIM, exist_ok=True).dim == DIM
    with pytest.raises(CollectionError, match="dim 64"):
        Collection.create(tmp_path / "b", 32, exist_ok=True)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    with pytest.raises(CollectionError, match="not an empty directory"):
        Collection.create(tmp_path / "junk", DIM)


def test_open_errors(col: Collection, tmp_path: Path):
    path = tmp_path / "c"
    with pytest.raises(CollectionError, match="not found"):
        Collection.open(tmp_path / "missing")
    m = json.loads((path / "manifest.json").read_text())
    # newer format version
    (path / "manifest.json").write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(FormatVersionError, match="format version 99"):
        Collection.open(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptCollectionError, match="not valid JSON"):
        Collection.open(path)
    (path / "manifest.json").write_text(json.dumps(m))
    seg = path / "segments" / m["segments"][0]["name"]
    # a truncated int8 file
    data = (seg / "int8.npy").read_bytes()
    (seg / "int8.npy").write_bytes(data[:-10])
    with pytest.raises(CorruptCollectionError, match="int8.npy has .* bytes"):
        Collection.open(path)
    # same size, flipped bytes: caught at open for the RAM codes, by verify() for the rest
    (seg / "int8.npy").write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    Collection.open(path)
    with pytest.raises(CorruptCollectionError, match="int8.npy fails its sha256"):
        Collection.open(path, verify=True)
    (seg / "int8.npy").write_bytes(data)
    b = (seg / "binary.npy").read_bytes()
    (seg / "binary.npy").write_bytes(b[:-1] + bytes([b[-1] ^ 0xFF]))
    with pytest.raises(CorruptCollectionError, match="binary.npy fails its sha256"):
        Collection.open(path)
    (seg / "binary.npy").write_bytes(b)
    (seg / "seqs.npy").unlink()
    with pytest.raises(CorruptCollectionError, match="seqs.npy is missing"):
        Collection.open(path)


def test_reader_sees_writes_after_refresh(col: Collection, emb: np.ndarray, tmp_path: Path):
    reader = Collection.open(tmp_path / "c")
    col.add(unit_vectors(3, DIM, 42), ids=["n1", "n2", "n3"])
    col.delete(["d1"])
    assert len(reader) == 500
    reader.refresh()
    assert len(reader) == 502 and "n2" in reader and "d1" not in reader


_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import bitsearch.storage.writes as bw
    import bitsearch.storage.manifest as bm
    from bitsearch import Collection
    from bitsearch.store import DocStore
    path, mode = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(123)
    col = Collection.open(path)
    if mode != "loop":
        # die at a chosen point inside the next add
        target = {"segment": "save_npy", "docs": "DocStore.insert", "manifest": "write_atomic"}[mode]
        def killer(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
        if target == "DocStore.insert":
            DocStore.insert = killer
        elif target == "write_atomic":
            real = bm.write_atomic
            def half(p, data):
                tmp = p.with_name(".manifest.json.tmp-crash")
                tmp.write_bytes(data[: len(data) // 2])
                killer()
            bm.write_atomic = half
        else:
            calls = {"n": 0}
            real = bw.save_npy
            def some(p, arr):
                calls["n"] += 1
                if calls["n"] == 2:
                    killer()
                return real(p, arr)
            bw.save_npy = some
    i = len(col) - 500
    print("ready", flush=True)
    while True:
        e = rng.normal(size=(2000, 64)).astype(np.float32)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        col.add(e, ids=[f"w{j}" for j in range(i, i + 2000)], texts=[f"t{j}" for j in range(i, i + 2000)])
        i += 2000
    """
)


def _check_consistent(path: Path, emb: np.ndarray) -> int:
    c = Collection.open(path, verify=True)
    n = len(c)
    assert (n - 500) % 2000 == 0
    assert c.search(emb[9], k=1)[0][0].id == "d9"
    if n > 500:
        last = f"w{n - 500 - 1}"
        assert last in c and f"w{n - 500}" not in c
    # and it still takes writes
    c.add(unit_vectors(2, DIM, 77), ids=[f"after{n}", f"after{n}b"])
    assert len(Collection.open(path)) == n + 2
    c.delete([f"after{n}", f"after{n}b"])
    return n


@pytest.mark.parametrize("mode", ["segment", "docs", "manifest"])
def test_sigkill_at_each_step_of_add(col: Collection, emb: np.ndarray, tmp_path: Path, mode: str):
    proc = subprocess.run([sys.executable, "-c", _WRITER, str(tmp_path / "c"), mode], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert _check_consistent(tmp_path / "c", emb) == 500


def test_sigkill_at_random_moments(col: Collection, emb: np.ndarray, tmp_path: Path):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "c"), "loop"], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(float(rng.uniform(0.05, 0.6)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        seen.add(_check_consistent(tmp_path / "c", emb))
    assert max(seen) >= 500


def _all_rows(path: Path, kind: str) -> np.ndarray:
    m = json.loads((path / "manifest.json").read_text())
    return np.concatenate([np.load(path / "segments" / s["name"] / f"{kind}.npy") for s in m["segments"]])


def test_gather_reads_the_rows_on_disk(col: Collection, emb: np.ndarray, tmp_path: Path):
    path = tmp_path / "c"
    col.add(emb[:1] * -1, ids=["one"])  # a third, one-row segment
    col.delete(["d3", 305, "d100"])  # deleted rows are still rows until compaction
    rng = np.random.default_rng(0)

    def check(state) -> None:
        n = state.rows
        full = {kind: _all_rows(path, kind) for kind in ("int8", "float32", "seqs")}
        edges = np.concatenate([state.offsets[1:-1] - 1, state.offsets[:-1], [n - 1, n - 1]])
        cases = [
            rng.integers(0, n, 40),  # any order, duplicates likely
            edges,  # around segment boundaries, one row repeated
            np.arange(n)[::-1],  # a large share: whole files
            np.array([], np.int64),
        ]
        for rows in cases:
            for kind in ("int8", "float32", "seqs"):
                got = state.gather(kind, rows)
                assert got.dtype == full[kind].dtype and np.array_equal(got, full[kind][rows]), (kind, rows)
        with pytest.raises(IndexError):
            state.gather("int8", np.array([0, n]))
        with pytest.raises(IndexError):
            state.gather("float32", np.array([-1]))

    check(col._state)
    assert col._state.seq_shift == 0  # appended segments: seq = row, computed
    col.compact()  # one segment whose seqs skip the deleted ones: read from disk
    check(col._state)
    assert col._state.seq_shift is None


def test_single_queries_equal_the_batch(col: Collection, emb: np.ndarray):
    col.delete(["d1", "d2", 310])
    q = unit_vectors(12, DIM, 5)
    q[3] = emb[4]  # an exact match
    for stage in (None, "int8", "float32", ("int8", "float32")):
        for k, mult in ((1, 1), (7, 4), (60, 3)):
            for _ in range(2):
                batch = col.search(q, k=k, rescore=stage, rescore_multiplier=mult)
                for i in range(len(q)):
                    one = col.search(q[i], k=k, rescore=stage, rescore_multiplier=mult)
                    assert [h.to_dict() for h in one[0]] == [h.to_dict() for h in batch[i]], (stage, k, i)
                col.compact()


def test_rows_file_truncated_after_open(col: Collection, emb: np.ndarray, tmp_path: Path):
    seg = tmp_path / "c" / "segments" / col.manifest["segments"][0]["name"] / "int8.npy"
    size = seg.stat().st_size
    os.truncate(seg, size - 100 * DIM)
    with pytest.raises(CorruptCollectionError, match="ended early"):
        for i in range(300):  # some query reads a row past the new end
            col.search(emb[i], k=10, rescore="int8")


def test_get_returns_stored_documents_in_order_and_none_for_missing(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    emb = rng.standard_normal((40, 24)).astype(np.float32)
    col = Collection.create(tmp_path / "g", 24, keep_float32=True, calibration_embeddings=emb)
    col.add(emb[:20], ids=[f"a{i}" for i in range(20)], texts=[f"t{i}" for i in range(20)])
    col.add(emb[20:], ids=list(range(100, 120)), metadata=[{"n": i} for i in range(20)])
    col.delete(["a3", 105])
    got = col.get(["a7", 105, "nope", 119, "a3", "a0"], with_vectors=True)
    assert [None if d is None else d.id for d in got] == ["a7", None, None, 119, None, "a0"]
    assert got[0].text == "t7" and got[0].metadata is None
    assert got[3].text is None and got[3].metadata == {"n": 19}
    np.testing.assert_array_equal(got[0].vector, emb[7])
    np.testing.assert_array_equal(got[3].vector, emb[39])
    assert got[0].vector.dtype == np.float32
    col.compact()  # rows move: the vectors must still be the documents' own
    again = col.get(["a0", "a19", 100, 119], with_vectors=True)
    for d, row in zip(again, (0, 19, 20, 39), strict=True):
        np.testing.assert_array_equal(d.vector, emb[row])
    assert col.get(["a7"])[0].vector is None
    with pytest.raises(InvalidInputError, match="keep_float32"):
        Collection.create(tmp_path / "h", 24).get(["x"], with_vectors=True)
    with pytest.raises(InvalidInputError):
        col.get("a7")
