"""The filter language's $not, like-with-like ranges and {"$date": ...} values, against Python references."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bitsearch.errors import InvalidInputError
from bitsearch.store import DocStore, filter_fields, filter_sql

METAS: list[dict[str, Any] | None] = [
    {"n": 2, "s": "b", "when": "1969-07-21T20:17:40"},
    {"n": -10, "s": "a", "when": "1972-12-11T19:54:58+02:00"},
    {"n": "100", "s": 5, "when": "1989-11-09T17:53:00Z"},
    {"n": 2.5, "when": "not a date"},
    {"n": True, "when": 1972},
    {"s": "c", "when": "now"},
    {"when": "1972-12-11"},
    None,
]


@pytest.fixture
def store(tmp_path: Path) -> DocStore:
    docs = DocStore(tmp_path / "docs.sqlite", create=True)
    docs.insert(0, [f"d{i}" for i in range(len(METAS))], None, METAS)
    return docs


def _ids(store: DocStore, flt: dict[str, Any]) -> list[int]:
    return store.filter_seqs(filter_sql(flt), len(METAS))


def _where(pred: Any) -> list[int]:
    return [i for i, m in enumerate(METAS) if pred(m or {})]


def test_not_matches_the_complement_including_documents_without_the_field(store: DocStore) -> None:
    inner = {"n": 2, "s": "b"}
    assert _ids(store, inner) == [0]
    assert _ids(store, {"$not": inner}) == [1, 2, 3, 4, 5, 6, 7]
    assert _ids(store, {"$not": {"s": {"$in": ["a", "b"]}}}) == _where(lambda m: m.get("s") not in ("a", "b"))
    assert _ids(store, {"$or": [{"$not": {"n": {"$gt": 0}}}, {"s": "c"}]}) == _where(
        lambda m: not (type(m.get("n")) in (int, float, bool) and m["n"] > 0) or m.get("s") == "c"
    )
    assert _ids(store, {"$not": {"$not": inner}}) == [0]
    assert filter_fields({"$not": {"$or": [{"a": 1}, {"b.c": 2}]}}) == ["a", "b.c"]


def test_ranges_compare_like_with_like(store: DocStore) -> None:
    # SQLite orders every string after every number: "100" > 0 and 5 < "a" must not match
    assert _ids(store, {"n": {"$gt": 0}}) == [0, 3, 4]  # 2, 2.5 and True (1), not "100"
    assert _ids(store, {"s": {"$lt": "b"}}) == [1]  # "a", not the number 5
    assert _ids(store, {"s": {"$gte": "b"}}) == [0, 5]
    assert _ids(store, {"n": {"$lte": -10}}) == [1]


def test_dates_compare_as_points_in_time(store: DocStore) -> None:
    # 1972-12-11T19:54:58+02:00 is 17:54:58 UTC; "1972-12-11" is its midnight; 1972 (a number) and "now"
    # (which SQLite's date functions would read as the current time) are not dates
    after = {"when": {"$gt": {"$date": "1972-12-11T18:00:00"}}}
    assert _ids(store, after) == [2]
    assert _ids(store, {"when": {"$gte": {"$date": "1972-12-11T17:54:58Z"}}}) == [1, 2]
    assert _ids(store, {"when": {"$lt": {"$date": "1972-12-11T19:54:58+02:00"}}}) == [0, 6]
    assert _ids(store, {"when": {"$date": "1972-12-11T19:54:58.0004+02:00"}}) == [1]  # to the millisecond
    assert _ids(store, {"when": {"$ne": {"$date": "1972-12-11T00:00:00"}}}) == [0, 1, 2, 3, 4, 5, 7]
    assert _ids(store, {"$not": after}) == [0, 1, 3, 4, 5, 6, 7]


@pytest.mark.parametrize(
    "flt",
    [
        {"when": {"$gt": {"$date": "yesterday"}}},
        {"when": {"$gt": {"$date": 1972}}},
        {"when": {"$gt": {"$date": "1972-13-01"}}},
        {"when": {"$gt": {"$date": "1972-12-11", "x": 1}}},
        {"when": {"$in": [{"$date": "1972-12-11"}]}},
        {"$not": "x"},
        {"$not": {}},
    ],
)
def test_bad_date_and_not_filters_are_refused(flt: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        filter_sql(flt)


_SECONDS = st.integers(0, 200 * 365 * 86400)  # whole seconds from 1900: no rounding to the millisecond
_OFFSETS = st.sampled_from([None, 0, 90, -300, 330])


def _text(seconds: int, offset: int | None) -> str:
    when = dt.datetime(1900, 1, 1) + dt.timedelta(seconds=seconds)
    if offset is None:
        return when.isoformat()
    zone = dt.timezone(dt.timedelta(minutes=offset))
    return (when.replace(tzinfo=dt.timezone.utc).astimezone(zone)).isoformat()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stored=st.lists(st.tuples(_SECONDS, _OFFSETS), min_size=1, max_size=12),
    probe=st.tuples(_SECONDS, _OFFSETS),
    op=st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]),
    negate=st.booleans(),
)
def test_dates_match_python(tmp_path_factory: pytest.TempPathFactory, stored, probe, op, negate) -> None:
    """Stored ISO dates (with and without offsets; naive = UTC) against a Python datetime reference."""
    docs = DocStore(tmp_path_factory.mktemp("d") / "docs.sqlite", create=True)
    docs.insert(0, list(range(len(stored))), None, [{"t": _text(*s)} for s in stored])
    flt: dict[str, Any] = {"t": {op: {"$date": _text(*probe)}}}
    if negate:
        flt = {"$not": flt}
    compare = {
        "$eq": lambda a, b: a == b,
        "$ne": lambda a, b: a != b,
        "$gt": lambda a, b: a > b,
        "$gte": lambda a, b: a >= b,
        "$lt": lambda a, b: a < b,
        "$lte": lambda a, b: a <= b,
    }[op]
    expected = [i for i, (s, _) in enumerate(stored) if compare(s, probe[0]) != negate]
    assert docs.filter_seqs(filter_sql(flt), len(stored)) == expected
    docs.close()


def test_collection_ids_lists_live_documents_in_stored_order(tmp_path: Path) -> None:
    import numpy as np

    from bitsearch import Collection

    rng = np.random.default_rng(0)
    col = Collection.create(tmp_path / "c", 16)
    metas = [{"g": i % 3} for i in range(12)]
    col.add(rng.standard_normal((12, 16), dtype=np.float32), ids=[f"x{i}" for i in range(12)], metadata=metas)
    col.delete(["x0", "x4"])
    assert col.ids() == [f"x{i}" for i in range(12) if i not in (0, 4)]
    assert col.ids({"g": 1}) == ["x1", "x7", "x10"]
    assert col.ids({"$not": {"g": {"$in": [0, 1]}}}) == ["x2", "x5", "x8", "x11"]
    col.compact()
    assert col.ids({"g": 0}) == ["x3", "x6", "x9"]
    with pytest.raises(InvalidInputError):
        col.ids({"g": {"$regex": "1"}})
