"""Tests for bitsearch.evaluate: BEIR loading, ranx metrics on hand-computed cases, the embedding
cache, configuration names, and the grid run end to end on a slice of a real dataset."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np
import pytest
from helpers import shared_data

from bitsearch import evaluate as ev

CRANFIELD = shared_data("cranfield")
SCIFACT = shared_data("scifact")
needs_cranfield = pytest.mark.skipif(not CRANFIELD.is_dir(), reason="shared/data/cranfield not present")


class HashingEncoder:
    """Deterministic bag-of-words encoder: each word adds a fixed random vector (seeded by the word).

    Lexical overlap gives real retrieval signal on Cranfield, in milliseconds and without torch.
    """

    def __init__(self, dim: int = 64, name: str = "test/hashing") -> None:
        self.name = name
        self.dim = dim
        self.calls = 0
        self._vectors: dict[str, np.ndarray] = {}

    def _word(self, w: str) -> np.ndarray:
        if w not in self._vectors:
            seed = int.from_bytes(hashlib.sha256(w.encode()).digest()[:8], "little")
            self._vectors[w] = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return self._vectors[w]

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            if not t.strip():
                raise ValueError(f"text at index {i} is empty")  # as bitsearch.encode.Encoder does
            for w in re.findall(r"[a-z0-9]{3,}", t.lower()):
                out[i] += self._word(w)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1)

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray:
        return self._encode(texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)


def _write_beir(folder: Path, ds: ev.Dataset, *, gz: bool) -> None:
    """Write `ds` as a BEIR folder (the test's own tiny slice, in tmp_path)."""
    (folder / "qrels").mkdir(parents=True)

    def opener(path: Path) -> IO[str]:
        return gzip.open(f"{path}.gz", "wt", encoding="utf-8") if gz else path.open("w", encoding="utf-8")

    with opener(folder / "corpus.jsonl") as fh:
        for did, text in zip(ds.doc_ids, ds.doc_texts, strict=True):
            fh.write(json.dumps({"_id": did, "title": "", "text": text}) + "\n")
    with opener(folder / "queries.jsonl") as fh:
        for qid, text in zip(ds.query_ids, ds.query_texts, strict=True):
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with opener(folder / "qrels" / "test.tsv") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in ds.qrels.items():
            for did, rel in docs.items():
                fh.write(f"{qid}\t{did}\t{rel}\n")


@pytest.fixture(scope="module")
def cranfield_slice() -> ev.Dataset:
    if not CRANFIELD.is_dir():
        pytest.skip("shared/data/cranfield not present")
    return ev.load_dataset(CRANFIELD).subset(300, 40)


# ------------------------------------------------------------------------------------ loading


def test_doc_text_matches_mteb() -> None:
    # MTEB/BEIR: (title + " " + text).strip(); an empty title leaves the body alone
    assert ev.doc_text("A title", "the body") == "A title the body"
    assert ev.doc_text("", "the body") == "the body"
    assert ev.doc_text(None, "the body") == "the body"
    assert ev.doc_text("only title", "") == "only title"


def test_load_beir_folder(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    docs = [
        {"_id": "d1", "title": "Wings", "text": "lift and drag"},
        {"_id": "d2", "title": "", "text": "boundary layer"},
        {"_id": 3, "title": "Shock", "text": "waves"},
    ]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = [{"_id": "q1", "text": "lift"}, {"_id": "q2", "text": "unjudged"}, {"_id": "q3", "text": "shock"}]
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq3\t3\t2\nq3\td2\t0\n")
    ds = ev.load_dataset(tmp_path)
    assert ds.doc_ids == ["d1", "d2", "3"]
    assert ds.doc_texts == ["Wings lift and drag", "boundary layer", "Shock waves"]
    assert ds.query_ids == ["q1", "q3"]  # q2 has no judgments: not evaluated
    assert ds.query_texts == ["lift", "shock"]
    assert ds.qrels == {"q1": {"d1": 1}, "q3": {"3": 2, "d2": 0}}
    # a judged query found only in queries_all.jsonl is evaluated too
    (tmp_path / "queries_all.jsonl").write_text(json.dumps({"_id": "q4", "text": "drag"}) + "\n")
    with (tmp_path / "qrels" / "test.tsv").open("a") as fh:
        fh.write("q4\td1\t1\n")
    assert ev.load_dataset(tmp_path).query_ids == ["q1", "q3", "q4"]


@needs_cranfield
def test_load_gz_variant_equals_plain(tmp_path: Path, cranfield_slice: ev.Dataset) -> None:
    _write_beir(tmp_path / "plain", cranfield_slice, gz=False)
    _write_beir(tmp_path / "gz", cranfield_slice, gz=True)
    a, b = ev.load_dataset(tmp_path / "plain"), ev.load_dataset(tmp_path / "gz")
    assert (a.doc_ids, a.doc_texts, a.query_ids, a.qrels) == (b.doc_ids, b.doc_texts, b.query_ids, b.qrels)
    assert a.doc_texts == cranfield_slice.doc_texts
    assert a.query_ids == cranfield_slice.query_ids


@needs_cranfield
def test_real_dataset_shape() -> None:
    ds = ev.load_dataset(CRANFIELD)
    assert len(ds.doc_ids) == 1400
    assert len(ds.query_ids) == len(ds.qrels) == 225
    assert all(any(r > 0 for r in ds.qrels[q].values()) for q in ds.query_ids)


# ------------------------------------------------------------------------------------ metrics


@pytest.mark.usefixtures("ranx_warm")
def test_metrics_hand_computed() -> None:
    qrels = {
        "q1": {"d1": 1, "d3": 1},
        "q2": {"d4": 1},
        "q3": {"d6": 1, "d7": 1},
    }
    run = {
        "q1": {"d1": 0.9, "d2": 0.8, "d3": 0.7},  # hits at ranks 1 and 3
        "q2": {"d5": 0.9, "d4": 0.8},  # hit at rank 2
        "q3": {"d8": 0.9},  # no hit
    }
    m = ev.compute_metrics(qrels, run, ("ndcg@10", "mrr@10", "recall@100", "recall@1"))
    # q1: DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) = 1.6309; NDCG = 0.91972
    # q2: DCG = 1/log2(3) = 0.63093; IDCG = 1; NDCG = 0.63093.  q3: 0.  mean = 0.51688
    q1 = 1.5 / (1 + 1 / math.log2(3))
    q2 = 1 / math.log2(3)
    assert m["ndcg@10"] == pytest.approx((q1 + q2 + 0) / 3, abs=1e-6)
    assert m["ndcg@10"] == pytest.approx(0.51688, abs=1e-4)
    # MRR@10: 1/1, 1/2, 0 -> 0.5
    assert m["mrr@10"] == pytest.approx(0.5)
    # Recall@100: 2/2, 1/1, 0/2 -> 2/3; Recall@1: 1/2, 0/1, 0/2 -> 1/6
    assert m["recall@100"] == pytest.approx(2 / 3)
    assert m["recall@1"] == pytest.approx(1 / 6)


@pytest.mark.usefixtures("ranx_warm")
def test_metrics_graded_and_cutoff() -> None:
    # graded judgments use the relevance as gain (trec_eval / pytrec_eval, as MTEB reports):
    # run b, a with rel(a)=3, rel(b)=1: DCG = 1 + 3/log2(3) = 2.89279; IDCG = 3 + 1/log2(3) = 3.63093
    qrels = {"q": {"a": 3, "b": 1}}
    m = ev.compute_metrics(qrels, {"q": {"b": 2.0, "a": 1.0}}, ("ndcg@10",))
    assert m["ndcg@10"] == pytest.approx((1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3)), abs=1e-6)
    # the only relevant document at rank 11 counts for nothing at 10
    run = {"q": {f"x{i}": 1.0 - i / 100 for i in range(10)} | {"a": 0.5}}
    m = ev.compute_metrics({"q": {"a": 1}}, run, ("ndcg@10", "mrr@10", "recall@100"))
    assert m == pytest.approx({"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 1.0})


@pytest.mark.usefixtures("ranx_warm")
def test_metrics_unanswered_query_counts_zero() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    m = ev.compute_metrics(qrels, {"q1": {"d1": 1.0}}, ("ndcg@10", "mrr@10"))
    assert m == pytest.approx({"ndcg@10": 0.5, "mrr@10": 0.5})


# ------------------------------------------------------------------------------ configurations


def test_config_names_round_trip() -> None:
    for c in ev.default_grid(384):
        assert ev.parse_config(c.name) == c
    names = [c.name for c in ev.default_grid(384)]
    assert len(names) == len(set(names))
    for expected in (
        "float32",
        "int8",
        "int8+float32@4",
        "binary",
        "binary+int8@1",
        "binary+int8@16",
        "binary+binary@4",
        "binary+int8+float32@4",
        "binary+int8@4/d128",
        "float32/d64",
        "binary-hamming",
        "1.5bit",
        "2bit",
        "keyword",
        "hybrid:float32",
        "hybrid:binary+int8@4",
    ):
        assert expected in names
    assert not any(n.endswith("/d384") for n in names)  # the full dimension is the base grid
    c = ev.parse_config("int8+float32")
    assert (c.precision, c.rescore, c.multiplier, c.name) == ("int8", ("float32",), 4, "int8+float32@4")
    assert ev.parse_config("binary+int8@8/d256") == ev.Config("binary", ("int8",), 8, 256)
    c = ev.parse_config("2bit-center-rot+int8@2")
    assert (c.precision, c.centering, c.rotation, c.stage1) == ("2bit", True, True, "auto")
    assert c.name == "2bit-center-rot+int8@2"
    assert c.create_options() == {"centering": True, "rotation": True}
    assert ev.parse_config("binary-hamming").create_options() == {"stage1": "hamming"}
    assert ev.parse_config("binary-asym+int8").name == "binary-asym+int8@4"
    assert ev.parse_config("binary").create_options() == {}
    c = ev.parse_config("binary-rot-q4")
    assert (c.query_bits, c.rotation, c.name) == (4, True, "binary-rot-q4")
    assert c.create_options() == {"rotation": True, "query_bits": 4}
    assert ev.parse_config("binary-asym-q8+int8").create_options() == {"stage1": "asymmetric", "query_bits": 8}
    for bad in (
        "binary-q4-q8",
        "binary-q9",
        "2bit-q4",
        "binary-hamming-q4",
        "binary+",
        "int4",
        "binary@0",
        "binary+int8@x",
        "",
        "int8-rot",
        "2bit-hamming",
        "binary-asym-hamming",
        "binary-rot-rot",
        "binary+2bit",
        "hybrid:",
        "hybrid:keyword",
        "hybrid:hybrid:float32",
        "hybrid:int4",
        "keyword+int8",
        "keyword@4",
        "dense:float32",
    ):
        with pytest.raises(ValueError):
            ev.parse_config(bad)


def test_search_mode_names() -> None:
    kw = ev.parse_config("keyword")
    assert (kw.mode, kw.name, kw.needs_texts, kw.keep_int8, kw.keep_float32) == (
        "keyword",
        "keyword",
        True,
        False,
        False,
    )
    assert ev.parse_config(" keyword ") == kw
    h = ev.parse_config("hybrid:binary+int8@4")
    assert (h.mode, h.precision, h.rescore, h.multiplier, h.name) == (
        "hybrid",
        "binary",
        ("int8",),
        4,
        "hybrid:binary+int8@4",
    )
    assert h.dense_name == "binary+int8@4" and h.needs_texts and h.keep_int8
    assert ev.parse_config("hybrid:binary+int8") == h  # @4 by default, as for dense names
    h = ev.parse_config("hybrid:binary-hamming+int8+float32@8/d128")
    assert (h.stage1, h.rescore, h.multiplier, h.truncate_dim) == ("hamming", ("int8", "float32"), 8, 128)
    assert ev.parse_config(h.name) == h
    assert ev.parse_config("hybrid:float32") == ev.Config("float32", mode="hybrid")
    with pytest.raises(ValueError):
        ev.Config("float32", mode="sparse")
    with pytest.raises(ValueError):
        ev.Config("int8", mode="keyword")  # one keyword configuration, one name
    # dense names are unchanged: no mode prefix, no texts stored
    d = ev.parse_config("binary+int8@4")
    assert (d.mode, d.name, d.needs_texts) == ("dense", "binary+int8@4", False)


def test_select_configs() -> None:
    sel = ev.select_configs("binary+int8@*", 384)  # globs match the default grid's names
    assert [c.name for c in sel] == [
        "float32",
        *(f"binary+int8@{m}" for m in (1, 2, 4, 8, 16)),
        *(f"binary+int8@4/d{d}" for d in (256, 128, 64)),
    ]
    sel = ev.select_configs("binary+int8@?", 384)
    assert [c.name for c in sel] == ["float32", *(f"binary+int8@{m}" for m in (1, 2, 4, 8))]
    sel = ev.select_configs("hybrid:*", 384)
    assert [c.name for c in sel] == ["float32", "hybrid:float32", "hybrid:binary+int8@4"]
    sel = ev.select_configs("float32,binary+int8@4,keyword,hybrid:*", 384)
    assert [c.name for c in sel] == ["float32", "binary+int8@4", "keyword", "hybrid:float32", "hybrid:binary+int8@4"]
    sel = ev.select_configs("binary, int8+float32", 384)
    assert [c.name for c in sel] == ["float32", "binary", "int8+float32@4"]  # float32: the reference
    assert len(ev.select_configs(None, 384)) == len(ev.default_grid(384))
    with pytest.raises(ValueError):
        ev.select_configs("binary/d512", 384)
    with pytest.raises(ValueError):
        ev.select_configs("nothing*", 384)


# -------------------------------------------------------------------------------------- cache


def test_cache_second_call_does_not_encode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ev.CACHE_ENV, str(tmp_path / "cache"))
    ds = ev.Dataset(
        "tiny", ["a", "b", "c"], ["lift on wings", "drag", "shock waves"], ["q"], ["wings"], {"q": {"a": 1}}
    )
    enc = HashingEncoder(dim=16)
    d1, q1 = ev.embed_dataset(ds, enc)
    assert enc.calls == 2
    d2, q2 = ev.embed_dataset(ds, enc)
    assert enc.calls == 2  # both read back from disk
    np.testing.assert_array_equal(d1, d2)
    np.testing.assert_array_equal(q1, q2)
    files = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert len(files) == 4 and all(f.endswith((".npy", ".json")) for f in files)
    assert not any(f.startswith(".") for f in files)  # no temporary files left behind
    for npy in (tmp_path / "cache").rglob("*.npy"):
        np.load(npy, allow_pickle=False)  # plain arrays, no pickle
    # different texts, prompts or models are different entries
    ds2 = ev.Dataset(
        "tiny", ["a", "b", "c"], ["lift on wings", "drag", "shock wave"], ["q"], ["wings"], {"q": {"a": 1}}
    )
    ev.embed_dataset(ds2, enc)
    assert enc.calls == 3  # documents changed, queries cached
    enc.query_prompt = "query: "  # type: ignore[attr-defined]
    ev.embed_dataset(ds2, enc)
    assert enc.calls == 4  # queries only: the documents' key has no query prompt
    other = HashingEncoder(dim=16, name="test/other")
    ev.embed_dataset(ds, other)
    assert other.calls == 2


def test_cache_key_separates_int8_backend(tmp_path: Path) -> None:
    # torch and ONNX fp32 agree to 1e-6 and share entries, including those written before the backend
    # counted; the int8 ONNX export changes the vectors and gets its own entries
    ds = ev.Dataset("tiny", ["a", "b"], ["lift", "drag"], ["q"], ["lift"], {"q": {"a": 1}})
    enc = HashingEncoder(dim=8)
    ev.embed_dataset(ds, enc, cache=tmp_path)
    assert enc.calls == 2
    for backend in ("torch", "onnx"):
        enc.backend = backend  # type: ignore[attr-defined]
        ev.embed_dataset(ds, enc, cache=tmp_path)
        assert enc.calls == 2, backend
    enc.backend = "onnx-int8"  # type: ignore[attr-defined]
    ev.embed_dataset(ds, enc, cache=tmp_path)
    assert enc.calls == 4
    ev.embed_dataset(ds, enc, cache=tmp_path)
    assert enc.calls == 4
    assert len(list(tmp_path.rglob("*.npy"))) == 4


def test_empty_texts_get_zero_vectors(tmp_path: Path) -> None:
    # Cranfield has two documents with neither title nor text; the encoder refuses empty strings
    ds = ev.Dataset("tiny", ["a", "b", "c"], ["lift", "", "drag"], ["q"], ["lift"], {"q": {"a": 1}})
    d, _ = ev.embed_dataset(ds, HashingEncoder(dim=8), cache=tmp_path)
    assert not d[1].any() and np.linalg.norm(d[[0, 2]], axis=1) == pytest.approx(1.0)


def test_cache_rejects_corrupt_entry(tmp_path: Path) -> None:
    ds = ev.Dataset("tiny", ["a", "b"], ["lift", "drag"], ["q"], ["lift"], {"q": {"a": 1}})
    enc = HashingEncoder(dim=8)
    ev.embed_dataset(ds, enc, cache=tmp_path)
    for npy in tmp_path.rglob("documents-*.npy"):
        npy.write_bytes(b"garbage")
    d, _ = ev.embed_dataset(ds, enc, cache=tmp_path)
    assert enc.calls == 3 and d.shape == (2, 8)


# ----------------------------------------------------------------------------------- the grid


@needs_cranfield
def test_grid_on_cranfield_slice(tmp_path: Path, cranfield_slice: ev.Dataset) -> None:
    enc = HashingEncoder(dim=128)
    configs = [
        "int8",
        "int8+float32",
        "binary",
        "binary+int8@1",
        "binary+int8@4",
        "binary+binary",
        "binary+int8+float32",
        "binary+int8@4/d64",
        "float32/d64",
        "binary-hamming",
        "binary-rot",
        "2bit",
    ]
    report = ev.evaluate(cranfield_slice, enc, configs=configs, cache=tmp_path / "cache", progress=False, repeats=1)
    names = [r.name for r in report.results]
    assert names[0] == "float32" and len(names) == 13
    assert report.metrics == ["ndcg@10", "recall@100", "mrr@10"]
    by = {r.name: r for r in report.results}
    f32 = by["float32"]
    assert f32.metrics["ndcg@10"] > 0.1  # lexical hashing finds Cranfield's relevant documents
    assert f32.kept == pytest.approx({m: 100.0 for m in report.metrics})
    # float32 rescoring of int8 candidates recovers exact float32 scores: nothing lost on NDCG@10
    # beyond ties within the top-40 candidates
    assert by["int8+float32@4"].metrics["ndcg@10"] == pytest.approx(f32.metrics["ndcg@10"], abs=0.02)
    for r in report.results:
        for m in report.metrics:
            assert 0.0 <= r.metrics[m] <= 1.0
        assert r.latency_p50_ms > 0 and r.latency_p95_ms >= r.latency_p50_ms and r.batch_qps > 0
        assert r.build_s > 0
    # memory: codes in RAM are 4 bytes/dim, 1 byte/dim, 1 bit/dim
    assert f32.ram_bytes_per_doc == 128 * 4
    assert by["int8"].ram_bytes_per_doc == 128
    assert by["binary"].ram_bytes_per_doc == 16
    assert by["binary+int8@4"].ram_bytes_per_doc == 16
    assert by["binary-hamming"].ram_bytes_per_doc == 16
    # asymmetric scoring of the same bits (the library default without rescoring) ranks no worse here
    assert by["binary"].metrics["ndcg@10"] >= by["binary-hamming"].metrics["ndcg@10"] - 0.05
    assert by["binary-rot"].stats["stages"]
    assert by["binary+int8@4"].disk_bytes_per_doc > by["binary"].disk_bytes_per_doc
    assert by["binary+int8@4/d64"].ram_bytes_per_doc == 8 and by["binary+int8@4/d64"].dim == 64
    assert by["float32/d64"].ram_bytes_per_doc == 64 * 4

    paths = ev.write_report(report, tmp_path / "out", command="pytest")
    md = paths["markdown"].read_text()
    assert "`binary+int8@4`" in md and "% f32" in md
    data = json.loads(paths["json"].read_text())
    assert data["command"] == "pytest"
    assert [r["name"] for r in data["results"]] == names
    for key in ("pareto", "rescore", "latency"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = ev.load_report(paths["json"])
    assert again == report
    summary = ev.summary_table([again], ["binary", "binary+int8@4", "binary+int8@2"])
    row = summary.splitlines()[2]
    assert row.startswith("| cranfield[:300] (300, ") and row.endswith(" | -- |".replace("--", "-"))
    assert f"{by['binary'].kept['ndcg@10']:.1f}%" in row


@needs_cranfield
def test_keyword_and_hybrid_on_cranfield_slice(
    tmp_path: Path, cranfield_slice: ev.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bitsearch import Collection

    calls: list[tuple[str, int, list[int]]] = []
    search = Collection.search

    def spy(self: Collection, *args: object, **kw: object) -> object:
        res = search(self, *args, **kw)  # type: ignore[arg-type]
        calls.append((str(kw.get("mode", "dense")), int(kw["k"]), [len(h) for h in res]))  # type: ignore[call-overload]
        return res

    monkeypatch.setattr(Collection, "search", spy)
    enc = HashingEncoder(dim=128)
    configs = "binary+int8@4,keyword,hybrid:*"
    report = ev.evaluate(cranfield_slice, enc, configs=configs, cache=tmp_path / "cache", progress=False, repeats=1)
    by = {r.name: r for r in report.results}
    assert list(by) == ["float32", "binary+int8@4", "keyword", "hybrid:float32", "hybrid:binary+int8@4"]
    assert [by[n].mode for n in by] == ["dense", "dense", "keyword", "hybrid", "hybrid"]
    kw, hyb = by["keyword"], by["hybrid:binary+int8@4"]
    # BM25 finds Cranfield's relevant documents (word overlap is what its judgments reward)
    assert kw.metrics["ndcg@10"] > 0.2 and kw.metrics["recall@100"] > 0.5
    for r in report.results:
        assert all(0.0 <= v <= 1.0 for v in r.metrics.values())
        assert r.latency_p50_ms > 0 and r.batch_qps > 0
    for name in ("hybrid:float32", "hybrid:binary+int8@4"):
        # fusing two rankings that both carry signal lands at least near the weaker one
        worse = min(kw.metrics["ndcg@10"], by[name.removeprefix("hybrid:")].metrics["ndcg@10"])
        assert by[name].metrics["ndcg@10"] >= worse - 0.02
    # every mode searched as asked, and hybrid and keyword return k hits per query at both depths
    modes = {m for m, _, _ in calls}
    assert modes == {"dense", "keyword", "hybrid"}
    for mode, k, lens in calls:
        if mode == "hybrid":
            assert all(n == k for n in lens), (k, lens)
    assert any(m == "hybrid" and k == 100 for m, k, _ in calls)
    # bytes: keyword holds nothing in RAM and docs.sqlite on disk; hybrid adds docs.sqlite to its codes
    n = len(cranfield_slice.doc_ids)
    assert kw.ram_bytes_per_doc == 0 and kw.disk_bytes_per_doc == pytest.approx(kw.stats["docs_disk_bytes"] / n)
    assert kw.disk_bytes_per_doc > 100  # texts + FTS5 index
    assert hyb.ram_bytes_per_doc == by["binary+int8@4"].ram_bytes_per_doc == 16
    docs = hyb.stats["docs_disk_bytes"] / n
    assert hyb.disk_bytes_per_doc == pytest.approx(by["binary+int8@4"].disk_bytes_per_doc + docs)
    # reports and plots take the new rows (keyword's 0 RAM stays off the log-scale Pareto plot)
    paths = ev.write_report(report, tmp_path / "out")
    md = paths["markdown"].read_text()
    assert "| `keyword` |" in md and "| `hybrid:binary+int8@4` |" in md
    assert ev.load_report(paths["json"]) == report


@pytest.mark.filterwarnings("ignore:int8 ranges calibrated on only")
def test_keyword_config_stores_empty_texts_as_none(tmp_path: Path) -> None:
    # Cranfield has documents with neither title nor text: the collection rejects empty strings
    ds = ev.Dataset(
        "tiny", ["a", "b", "c"], ["lift on wings", "", "shock waves"], ["q1", "q2"], ["wings", "shock"],
        {"q1": {"a": 1}, "q2": {"c": 1}},
    )  # fmt: skip
    d, q = ev.embed_dataset(ds, HashingEncoder(dim=16), cache=tmp_path / "cache")
    for name in ("keyword", "hybrid:binary+int8@2"):
        r = ev.run_config(ev.parse_config(name), ds, d, q, k=2, recall_k=3, workdir=tmp_path, repeats=1)
        assert r.metrics["mrr@2"] == 1.0 and r.metrics["recall@3"] == 1.0, name


def test_pareto_front() -> None:
    pts = [(1536.0, 100.0), (384.0, 99.9), (48.0, 91.0), (48.0, 99.0), (16.0, 85.0), (100.0, 95.0)]
    assert ev.pareto_front(pts) == [4, 3, 1, 0]


# ------------------------------------------------------------------------- real model (slow)


@pytest.mark.slow
@pytest.mark.skipif(not SCIFACT.is_dir(), reason="shared/data/scifact not present")
def test_scifact_float32_reproduces_mteb() -> None:
    """Acceptance: all-MiniLM-L6-v2 float32 NDCG@10 on SciFact = MTEB's 64.51 (+-0.01).

    Encodes 5,183 abstracts (~2.5 min on 2 cores) unless the embedding cache already holds them.
    """
    pytest.importorskip("sentence_transformers")
    from bitsearch.encode import Encoder

    report = ev.evaluate(SCIFACT, Encoder(), configs="float32,binary+int8@4", progress=False, repeats=1)
    f32 = report.result("float32").metrics["ndcg@10"]
    assert abs(f32 - 0.6451) <= 0.01
    assert report.result("binary+int8@4").kept["ndcg@10"] > 95.0


# ------------------------------------------------------------------------------------------ CLI


@needs_cranfield
def test_cli_eval(tmp_path: Path, cranfield_slice: ev.Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from bitsearch import cli
    from bitsearch.cli import models

    monkeypatch.setenv(ev.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(models, "load_encoder", lambda model, **kw: HashingEncoder(dim=128, name=model or "hash"))
    data = tmp_path / "tiny"
    _write_beir(data, cranfield_slice.subset(120, 10), gz=True)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        cli.app,
        [
            "eval",
            str(data),
            "--configs",
            "binary,binary+int8@2,keyword,hybrid:binary+int8@2",
            "--out",
            str(out),
            "--quiet",
            "--no-plots",
            "--threads",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "`binary+int8@2`" in res.output and "`float32`" in res.output and "`keyword`" in res.output
    report = json.loads((out / "tiny.json").read_text())
    names = [r["name"] for r in report["results"]]
    assert names == ["float32", "binary", "binary+int8@2", "keyword", "hybrid:binary+int8@2"]
    assert report["command"].startswith(f"bitsearch eval {data} --configs")
    assert "--threads 1" in report["command"] and report["environment"]["threads"] == 1
    assert not list(out.glob("*.png"))
    bad = CliRunner().invoke(cli.app, ["eval", str(data), "--configs", "int4", "--out", str(out), "--quiet"])
    assert bad.exit_code == 1 and "bad configuration name" in bad.output
    missing = CliRunner().invoke(cli.app, ["eval", str(tmp_path / "nope"), "--quiet"])
    assert missing.exit_code == 1 and "error:" in missing.output
