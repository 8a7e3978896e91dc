"""bitsearch.readers and bitsearch.indexing used as a library, without the command line: records to documents,
resumable chunked indexing, the settings check shared with the Ray indexer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import unit_vectors
from hypothesis import given, settings
from hypothesis import strategies as st

from bitsearch import Collection
from bitsearch.errors import InvalidInputError
from bitsearch.indexing import IndexOptions, check_settings, index_records
from bitsearch.readers import Bad, Doc, Fields, row_to_doc

DIM = 16


def _docs(ids: list[str], vectors: np.ndarray) -> list[Doc | Bad]:
    return [Doc(i, f"text of {i}", None, f"record {i}", v) for i, v in zip(ids, vectors, strict=True)]


@pytest.mark.filterwarnings("ignore:.*int8 values lie outside")  # 3-row chunks calibrate the int8 ranges roughly
def test_index_records_with_vectors_resumes_where_it_stopped(tmp_path: Path) -> None:
    """A first run over 7 records, a second over 10 (the 7 again first): 3 added, 7 skipped, same rows."""
    vectors = unit_vectors(10, DIM, seed=3)
    ids = [f"d{i}" for i in range(10)]
    options = IndexOptions(chunk_size=3)
    col, first = index_records(_docs(ids[:7], vectors[:7]), tmp_path / "c", None, col=None, options=options)
    assert col is not None and (first.added, first.already, first.records) == (7, 0, 7)
    again = Collection.open(tmp_path / "c")
    col2, second = index_records(_docs(ids, vectors), tmp_path / "c", None, col=again, options=options)
    assert col2 is again and (second.added, second.already, second.bad) == (3, 7, 0)
    reopened = Collection.open(tmp_path / "c")
    assert sorted(reopened.ids()) == sorted(ids)
    hit = reopened.search(vectors[8], k=1, rescore="int8")[0][0]
    assert hit.id == "d8" and hit.text == "text of d8"


def test_malformed_records_stop_the_run_or_are_counted(tmp_path: Path) -> None:
    vectors = unit_vectors(4, DIM, seed=1)
    records = [*_docs(["a", "b"], vectors[:2]), Bad("line 3", "invalid JSON"), *_docs(["a"], vectors[2:3])]
    with pytest.raises(InvalidInputError, match=r"line 3: invalid JSON \(pass --skip-bad"):
        index_records(records, tmp_path / "stop", None, col=None, options=IndexOptions())
    col, report = index_records(records, tmp_path / "skip", None, col=None, options=IndexOptions(skip_bad=True))
    assert col is not None and len(col) == 2
    assert (report.added, report.bad) == (2, 2)  # the malformed line, and "a" given twice
    assert report.skipped_note() == "skipped 2 malformed"


def test_vectors_of_another_dim_are_malformed(tmp_path: Path) -> None:
    records = [*_docs(["a"], unit_vectors(1, DIM)), *_docs(["b"], unit_vectors(1, DIM + 1))]
    with pytest.raises(InvalidInputError, match="vector has 17 dimensions; earlier records have 16"):
        index_records(records, tmp_path / "c", None, col=None, options=IndexOptions())


def test_check_settings_refuses_other_settings() -> None:
    recorded = {"model": {"name": "all-MiniLM-L6-v2"}, "precision": "2bit", "truncate_dim": None}
    same = {"model": "all-MiniLM-L6-v2", "precision": "2bit", "truncate_dim": 384, "keep_float32": False}
    check_settings("c", recorded, 384, **same)
    for change, words in (
        ({"model": "intfloat/e5-small-v2"}, "built with model 'all-MiniLM-L6-v2'"),
        ({"precision": "binary"}, "has precision '2bit', not 'binary'"),
        ({"truncate_dim": 128}, "truncate_dim None, not 128"),
        ({"keep_float32": True}, "without --keep-float32"),
    ):
        with pytest.raises(InvalidInputError, match=words):
            check_settings("c", recorded, 384, **{**same, **change})


def test_the_library_modules_need_no_command_line() -> None:
    """readers, indexing and the Ray indexer import neither typer nor the CLI (nor Ray, until it runs)."""
    code = (
        "import sys, bitsearch.readers, bitsearch.indexing, bitsearch.distributed_index; "
        "print(sorted(m for m in ('typer', 'bitsearch.cli', 'ray', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


_text = st.text(min_size=1, max_size=40).filter(lambda t: t.strip())


@settings(max_examples=60, deadline=None)
@given(
    doc_id=st.one_of(st.integers(), _text),
    text=_text,
    title=st.one_of(st.none(), st.just(""), _text),
    extra=st.dictionaries(st.sampled_from(["lang", "year", "tags"]), st.integers(), max_size=3),
)
def test_row_to_doc_keeps_id_text_title_and_metadata(
    doc_id: int | str, text: str, title: str | None, extra: dict[str, int]
) -> None:
    row = {"_id": doc_id, "text": text, "title": title, **extra}
    doc = row_to_doc(row, 5, "here", Fields())
    assert isinstance(doc, Doc)
    assert doc.id == str(doc_id) and doc.where == "here"
    assert doc.text == (f"{title}\n{text}" if title and title.strip() else text)
    assert doc.metadata == {"title": title, **extra}
