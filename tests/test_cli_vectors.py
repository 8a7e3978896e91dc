"""Bring your own embeddings: `bitsearch index --vector-field` (JSONL, Parquet) without loading a model, vector
queries from the command line (`search --vector-file`), and the clear errors when text meets a model-less
collection (CLI and server). No model is ever loaded here: Encoder is made to fail if anything tries."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from bitsearch import Collection
from bitsearch.cli import app
from bitsearch.readers import parse_vector

DIM = 16
N = 20
runner = CliRunner()


def invoke(*args: object) -> Any:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(autouse=True)
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any model load fails the test: precomputed vectors must index and search without one."""
    import bitsearch.encode

    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(bitsearch.encode.Encoder, "__init__", refuse)


@pytest.fixture
def vectors() -> np.ndarray:
    v = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def records(vectors: np.ndarray) -> list[dict[str, Any]]:
    return [
        {"_id": f"doc{i}", "text": f"document number {i}", "emb": vectors[i].tolist(), "lang": "en" if i % 2 else "de"}
        for i in range(len(vectors))
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]], fixed: bool = False) -> Path:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    emb_type = pa.list_(pa.float32(), DIM) if fixed else pa.list_(pa.float32())
    table = pa.table(
        {
            "_id": [r["_id"] for r in rows],
            "text": [r["text"] for r in rows],
            "emb": pa.array([r["emb"] for r in rows], type=emb_type),
            "lang": [r["lang"] for r in rows],
        }
    )
    pq.write_table(table, path)
    return path


def top_ids(col: Collection, queries: np.ndarray, k: int = 3) -> list[list[str]]:
    return [[h.id for h in hits] for hits in col.search(queries, k=k)]


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "parquet-fixed"])
def test_index_reads_vectors_and_searches_them(tmp_path: Path, vectors: np.ndarray, kind: str) -> None:
    rows = records(vectors)
    src = (
        write_jsonl(tmp_path / "in.jsonl", rows)
        if kind == "jsonl"
        else write_parquet(tmp_path / "in.parquet", rows, fixed=kind == "parquet-fixed")
    )
    out = tmp_path / "col"
    res = invoke("index", src, "--out", out, "--vector-field", "emb", "-q")
    assert res.exit_code == 0, res.output
    col = Collection.open(out)
    assert len(col) == N and col.dim == DIM and col.manifest["model"] is None
    doc = col.get(["doc3"])[0]
    assert doc is not None and doc.text == "document number 3" and doc.metadata == {"lang": "en"}  # no vector
    assert [ids[0] for ids in top_ids(col, vectors)] == [f"doc{i}" for i in range(N)]


def test_text_queries_on_a_model_less_collection_say_to_pass_a_vector(tmp_path: Path, vectors: np.ndarray) -> None:
    out = tmp_path / "col"
    assert invoke("index", write_jsonl(tmp_path / "in.jsonl", records(vectors)), "--out", out, "--vector-field", "emb")
    res = invoke("search", out, "what is document 3")
    assert res.exit_code == 1 and "--vector-file" in res.output and "no embedding model" in res.output
    assert "Traceback" not in res.output


def test_search_takes_query_vectors_from_npy_and_json(tmp_path: Path, vectors: np.ndarray) -> None:
    out = tmp_path / "col"
    invoke("index", write_jsonl(tmp_path / "in.jsonl", records(vectors)), "--out", out, "--vector-field", "emb")
    want = top_ids(Collection.open(out), vectors[[3, 11]])
    np.save(tmp_path / "q.npy", vectors[[3, 11]])
    (tmp_path / "q.json").write_text(json.dumps(vectors[[3, 11]].tolist()))
    (tmp_path / "one.json").write_text(json.dumps(vectors[3].tolist()))
    for name, expect in (("q.npy", want), ("q.json", want), ("one.json", want[:1])):
        res = invoke("search", out, "--vector-file", tmp_path / name, "-k", 3, "--json")
        assert res.exit_code == 0, res.output
        got = [[h["id"] for h in q["hits"]] for q in json.loads(res.output)["results"]]
        assert got == expect and got[0][0] == "doc3"
    (tmp_path / "bad.json").write_text(json.dumps([vectors[3].tolist(), vectors[4].tolist()[:5]]))
    res = invoke("search", out, "--vector-file", tmp_path / "bad.json")
    assert res.exit_code == 1 and "vector 1 has 5 dimensions" in res.output
    np.save(tmp_path / "wide.npy", np.ones((1, DIM + 1), np.float32))
    res = invoke("search", out, "--vector-file", tmp_path / "wide.npy")
    assert res.exit_code == 1 and f"{DIM + 1}-dim" in res.output


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ([0.1] * (DIM - 1), "15 dimensions; earlier records have 16"),
        ([0.1] * (DIM - 1) + [math.nan], "finite"),
        ([0.1] * (DIM - 1) + [1e39], "float32"),
        ([0.1] * (DIM - 1) + ["x"], "non-numbers"),
        ([0.1] * (DIM - 1) + [True], "boolean"),
        ("0.1 0.2", "not a list of numbers"),
        ([], "empty"),
        ([[0.1] * DIM], "not a flat list"),
    ],
)
def test_a_bad_vector_is_named_with_its_line_and_nothing_is_written(
    tmp_path: Path, vectors: np.ndarray, bad: Any, needle: str
) -> None:
    rows = records(vectors)
    rows[6]["emb"] = bad  # line 7
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
    out = tmp_path / "col"
    res = invoke("index", src, "--out", out, "--vector-field", "emb", "-q")
    assert res.exit_code == 1 and "line 7" in res.output and needle in res.output, res.output
    assert not (out / "manifest.json").exists()  # the only chunk held the bad record: nothing committed
    res = invoke("index", src, "--out", out, "--vector-field", "emb", "-q", "--skip-bad")
    assert res.exit_code == 0 and len(Collection.open(out)) == N - 1


def test_a_bad_parquet_row_is_named_and_a_missing_field_too(tmp_path: Path, vectors: np.ndarray) -> None:
    rows = records(vectors)
    rows[4]["emb"] = rows[4]["emb"][:3]
    src = write_parquet(tmp_path / "in.parquet", rows)
    res = invoke("index", src, "--out", tmp_path / "a", "--vector-field", "emb")
    assert res.exit_code == 1 and "row 4" in res.output and "3 dimensions" in res.output
    res = invoke("index", write_jsonl(tmp_path / "in.jsonl", rows), "--out", tmp_path / "b", "--vector-field", "vec")
    assert res.exit_code == 1 and "line 1" in res.output and "no 'vec' vector field" in res.output
    (tmp_path / "in.csv").write_text("_id,text\n1,hello\n")
    res = invoke("index", tmp_path / "in.csv", "--out", tmp_path / "c", "--vector-field", "emb")
    assert res.exit_code == 1 and "JSONL or Parquet" in res.output


def test_a_run_stopped_by_a_bad_record_keeps_whole_chunks_and_resumes(tmp_path: Path, vectors: np.ndarray) -> None:
    rows = records(vectors)
    good = rows[12]["emb"]
    rows[12]["emb"] = [*good, 0.5]  # line 13, in the third chunk of 5
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "col"
    res = invoke("index", src, "--out", out, "--vector-field", "emb", "--chunk-size", 5, "-q")
    assert res.exit_code == 1 and "line 13" in res.output
    col = Collection.open(out)
    assert len(col) == 10 and col.existing_ids([f"doc{i}" for i in range(N)]) == [f"doc{i}" for i in range(10)]
    rows[12]["emb"] = good
    res = invoke("index", write_jsonl(src, rows), "--out", out, "--vector-field", "emb", "--chunk-size", 5)
    assert res.exit_code == 0 and "10 documents already in the collection" in res.output, res.output
    assert len(Collection.open(out)) == N
    wide = [dict(r, _id=f"w{i}", emb=[0.1] * (DIM + 2)) for i, r in enumerate(rows[:2])]
    res = invoke("index", write_jsonl(tmp_path / "wide.jsonl", wide), "--out", out, "--vector-field", "emb")
    assert res.exit_code == 1 and "the collection holds 16" in res.output


def test_a_named_model_is_recorded_for_text_queries_and_its_dim_checked(tmp_path: Path, vectors: np.ndarray) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", records(vectors))
    res = invoke("index", src, "--out", tmp_path / "a", "--vector-field", "emb", "--model", "all-MiniLM-L6-v2")
    assert res.exit_code == 1 and "384-dim" in res.output and "16" in res.output
    assert not (tmp_path / "a" / "manifest.json").exists()
    res = invoke("index", src, "--out", tmp_path / "b", "--vector-field", "emb", "--model", "my-org/my-embedder")
    assert res.exit_code == 0, res.output
    model = Collection.open(tmp_path / "b").manifest["model"]
    assert model["name"] == "my-org/my-embedder" and model["dim"] == DIM and model["documents"] == "precomputed"
    rows = [dict(r, emb=np.resize(r["emb"], 384).tolist()) for r in records(vectors)]
    res = invoke(
        "index", write_jsonl(tmp_path / "wide.jsonl", rows), "-o", tmp_path / "c", "--vector-field", "emb", "--model",
        "sentence-transformers/all-MiniLM-L6-v2",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert Collection.open(tmp_path / "c").manifest["model"]["name"] == "all-MiniLM-L6-v2"


def test_records_without_text_are_stored_with_vectors_only(tmp_path: Path, vectors: np.ndarray) -> None:
    rows = [{"id": i, "emb": vectors[i].tolist()} for i in range(5)]
    rows[2]["text"] = 17  # a text field that is there must be text
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    res = invoke("index", src, "--out", tmp_path / "col", "--vector-field", "emb")
    assert res.exit_code == 1 and "line 3" in res.output and "not text" in res.output
    del rows[2]["text"]
    res = invoke("index", write_jsonl(src, rows), "--out", tmp_path / "col", "--vector-field", "emb")
    assert res.exit_code == 0, res.output
    col = Collection.open(tmp_path / "col")
    assert len(col) == 5 and col.get(["2"])[0].text is None


def test_the_server_answers_400_to_text_on_a_model_less_collection(tmp_path: Path, vectors: np.ndarray) -> None:
    pytest.importorskip("fastapi")
    import httpx
    from serving import ServerThread

    from bitsearch.server import create_app

    out = tmp_path / "col"
    invoke("index", write_jsonl(tmp_path / "in.jsonl", records(vectors)), "--out", out, "--vector-field", "emb")
    with ServerThread(create_app(out, refresh_seconds=None)) as srv:
        res = httpx.post(srv.url + "/search", json={"query": "document 3"}, timeout=30)
        assert res.status_code == 400 and "send `vector`" in res.json()["detail"], res.text
        add = httpx.post(srv.url + "/documents", json={"texts": ["new"]}, timeout=30)
        assert add.status_code == 400 and "no embedding model" in add.json()["detail"]
        hits = httpx.post(srv.url + "/search", json={"vector": vectors[5].tolist(), "k": 1}, timeout=30).json()
        assert hits["results"][0][0]["id"] == "doc5"


finite = st.floats(allow_nan=False, allow_infinity=False, width=32)


@given(st.lists(st.one_of(finite, st.integers(-(2**31), 2**31)), min_size=1, max_size=40))
def test_parse_vector_keeps_every_finite_number(values: list[float]) -> None:
    out = parse_vector(values)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.asarray(values, dtype=np.float64), rtol=1e-6)


@given(
    st.lists(finite, min_size=0, max_size=10),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e39, True, None, "1.0", [1.0]]),
    st.integers(0, 10),
)
def test_parse_vector_names_anything_else(values: list[float], bad: Any, at: int) -> None:
    values.insert(min(at, len(values)), bad)
    assert isinstance(parse_vector(values), str)
