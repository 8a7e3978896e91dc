"""Input hardening: bad ids, texts, metadata, filters and search arguments are named errors that change
nothing, and a filtered search returns k hits whenever k documents match, on every stage-1 path."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import unit_vectors
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bitsearch import Collection, InvalidInputError
from bitsearch.options import MAX_SEARCH_INT
from bitsearch.store import MAX_FILTER_CONDITIONS, MAX_FILTER_DEPTH, MAX_METADATA_DEPTH

DIM = 64
N = 5000  # rows of the filtered-search collections
GROUPS = 500  # metadata "g" = row % GROUPS: {"g": x} matches N / GROUPS = 10 rows
HGROUPS = 200  # metadata "h" = row % HGROUPS: {"h": x} matches 25 rows


def _nested(depth: int, leaf: object = 1) -> dict[str, Any]:
    """A dict nested ``depth`` levels deep (the outer dict is level 1), built without recursion."""
    out: Any = leaf
    for _ in range(depth):
        out = {"a": out}
    return out


def _deep_filter(depth: int, op: str = "$and") -> dict[str, Any]:
    flt: dict[str, Any] = {"g": 1}
    for _ in range(depth - 1):
        flt = {op: [flt]}
    return flt


# ---------------------------------------------------------------- a small collection for the error cases


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Collection:
    col = Collection.create(tmp_path_factory.mktemp("small") / "c", DIM, keep_float32=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # int8 ranges calibrated on few rows
        col.add(
            unit_vectors(60, DIM, 1),
            ids=[f"d{i}" for i in range(60)],
            texts=[f"document number {i} about topic{i % 3}" for i in range(60)],
            metadata=[{"g": i % 6, "tags": ["x", i]} for i in range(60)],
        )
    return col


def _state(col: Collection) -> tuple[Any, ...]:
    """What a failed call must leave as it was: documents, commit point, segments, one search's answer."""
    hits = col.search(unit_vectors(1, DIM, 99)[0], k=5, filter={"g": {"$gte": 0}})[0]
    segs = sorted(p.name for p in (col.path / "segments").iterdir())
    return len(col), col.manifest["next_seq"], segs, [(h.id, h.score, h.text, h.metadata) for h in hits]


def _assert_refused(col: Collection, call: Callable[[], object], *words: str) -> None:
    before = _state(col)
    with pytest.raises(InvalidInputError) as info:
        call()
    for w in words:
        assert w in str(info.value), str(info.value)
    assert _state(col) == before


ONE = unit_vectors(1, DIM, 7)


# item 4: lone surrogates are refused at add time, naming where, before anything is written
@pytest.mark.parametrize(
    "kwargs, where",
    [
        ({"ids": ["\udfff"]}, "document id"),
        ({"ids": ["s1"], "texts": ["text \ud800 here"]}, "texts[0]"),
        ({"ids": ["s2"], "metadata": [{"k": "\udfff"}]}, "metadata[0]['k']"),
        ({"ids": ["s3"], "metadata": [{"\udc80": 1}]}, "metadata[0] key"),
        ({"ids": ["s4"], "metadata": [{"a": {"b": [1, {"c": "x\udfffy"}]}}]}, "metadata[0]['a']['b'][1]['c']"),
        ({"ids": ["s5"], "metadata": [_nested(40, ["\ud83d"])]}, "lone surrogate"),
    ],
)
def test_lone_surrogates_refused_at_add(small: Collection, kwargs: dict[str, Any], where: str):
    _assert_refused(small, lambda: small.add(ONE, **kwargs), where, "lone surrogate")


@pytest.mark.parametrize("mode", ["keyword", "hybrid", "dense"])
def test_lone_surrogate_in_query_string(small: Collection, mode: str):
    vec = None if mode == "keyword" else ONE
    _assert_refused(
        small, lambda: small.search(vec, k=3, mode=mode, query_texts=["topic1 \udfff"]), "query text 0", "surrogate"
    )


def test_surrogate_free_unicode_round_trips(small: Collection):
    meta = {"k": "\U0001f600 caf\u00e9", "\u00fc": [None, True, 1.5, {"x": "\u4e2d"}]}
    small.add(unit_vectors(1, DIM, 8), ids=["\u00e9t\u00e9"], texts=["caf\u00e9 \U0001f600"], metadata=[meta])
    try:
        hit = small.search(unit_vectors(1, DIM, 8)[0], k=1, rescore="float32")[0][0]
        assert (hit.id, hit.text, hit.metadata) == ("\u00e9t\u00e9", "caf\u00e9 \U0001f600", meta)
    finally:
        small.delete(["\u00e9t\u00e9"])


# item 12: raw exceptions become named errors, and the collection is unchanged
REFUSED: list[tuple[str, Callable[[Collection], object], str]] = [
    ("uint64 id", lambda c: c.add(ONE, ids=[np.uint64(2**64 - 1)]), "64-bit"),
    ("int id 2**63", lambda c: c.add(ONE, ids=[2**63]), "64-bit"),
    ("uint64 id array", lambda c: c.add(ONE, ids=np.array([2**64 - 1], dtype=np.uint64)), "64-bit"),
    ("deep metadata 990", lambda c: c.add(ONE, ids=["x"], metadata=[_nested(990)]), "MAX_METADATA_DEPTH"),
    ("deep metadata 65", lambda c: c.add(ONE, ids=["x"], metadata=[_nested(MAX_METADATA_DEPTH + 1)]), "nests"),
    ("metadata int key", lambda c: c.add(ONE, ids=["x"], metadata=[{1: "a"}]), "keys must be str"),
    ("metadata inf", lambda c: c.add(ONE, ids=["x"], metadata=[{"a": [math.inf]}]), "metadata[0]['a'][0]"),
    ("ids a str", lambda c: c.add(ONE, ids="x"), "ids"),
    ("ids an int", lambda c: c.add(ONE, ids=5), "ids"),
    ("texts an int", lambda c: c.add(ONE, ids=["x"], texts=5), "texts"),
    ("filter $gt 2**70", lambda c: c.search(ONE, k=3, filter={"g": {"$gt": 2**70}}), "64-bit"),
    ("filter $in -2**64", lambda c: c.search(ONE, k=3, filter={"g": {"$in": [1, -(2**64)]}}), "64-bit"),
    ("filter $and depth 50", lambda c: c.search(ONE, k=3, filter=_deep_filter(50)), "MAX_FILTER_DEPTH"),
    ("filter $or depth 17", lambda c: c.search(ONE, k=3, filter=_deep_filter(17, "$or")), "MAX_FILTER_DEPTH"),
    ("filter $or 999", lambda c: c.search(ONE, k=3, filter={"$or": [{"g": i} for i in range(999)]}), "CONDITIONS"),
    ("filter $in 5000", lambda c: c.search(ONE, k=3, filter={"g": {"$in": list(range(5000))}}), "CONDITIONS"),
    ("filter surrogate", lambda c: c.search(ONE, k=3, filter={"g": "\udfff"}), "surrogate"),
    ("filter key newline", lambda c: c.search(ONE, k=3, filter={"g\n": 1}), "invalid filter field"),
    ("delete None", lambda c: c.delete(None), "ids"),
    ("delete bytes", lambda c: c.delete(b"d1"), "ids"),
    ("delete surrogate", lambda c: c.delete(["\udfff"]), "surrogate"),
    ("rescore dict", lambda c: c.search(ONE, k=3, rescore={"int8": 1}), "rescore"),
    ("rescore set", lambda c: c.search(ONE, k=3, rescore={"int8"}), "rescore"),
    ("rrf_k nan", lambda c: c.search(ONE, k=3, mode="hybrid", query_texts="topic1", rrf_k=math.nan), "rrf_k"),
    ("rrf_k inf", lambda c: c.search(ONE, k=3, mode="hybrid", query_texts="topic1", rrf_k=math.inf), "rrf_k"),
    ("rrf_k str", lambda c: c.search(ONE, k=3, mode="hybrid", query_texts="topic1", rrf_k="60"), "rrf_k"),
    ("rrf_k 10**400", lambda c: c.search(ONE, k=3, mode="hybrid", query_texts="topic1", rrf_k=10**400), "rrf_k"),
    ("weights nan", lambda c: c.search(ONE, k=3, mode="hybrid", query_texts="topic1", weights=[math.nan, 1]), "weig"),
    ("weights str", lambda c: c.search(ONE, k=3, mode="hybrid", query_texts="topic1", weights="ab"), "weights"),
    ("weights huge", lambda c: c.search(ONE, k=3, mode="hybrid", query_texts="t1", weights=[1e308, 1e308]), "sum"),
    ("k huge", lambda c: c.search(ONE, k=2**62), "k must be"),
    ("k 2**70", lambda c: c.search(ONE, k=2**70, mode="hybrid", query_texts="topic1"), "k must be"),
    ("multiplier huge", lambda c: c.search(ONE, k=10, rescore_multiplier=2**62), "rescore_multiplier"),
    ("nprobe huge", lambda c: c.search(ONE, k=3, nprobe=2**70), "nprobe"),
    ("mode ndarray", lambda c: c.search(ONE, k=3, mode=np.array(["dense", "keyword"])), "mode"),
    ("exact str", lambda c: c.search(ONE, k=3, exact="no"), "exact"),
    ("with_text None", lambda c: c.search(ONE, k=3, with_text=None), "with_text"),
    ("query_texts int", lambda c: c.search(ONE, k=3, mode="hybrid", query_texts=5), "query_texts"),
    ("query_texts bytes", lambda c: c.search(ONE, k=3, mode="hybrid", query_texts=b"ab"), "query_texts"),
    ("query_texts set", lambda c: c.search(ONE, k=3, mode="hybrid", query_texts={"a"}), "query_texts"),
]


@pytest.mark.parametrize("call, words", [pytest.param(c, w, id=n) for n, c, w in REFUSED])
def test_named_error_and_state_unchanged(small: Collection, call: Callable[[Collection], object], words: str):
    _assert_refused(small, lambda: call(small), words)


# argument checks that already held on main: kept with the rest so the class stays covered
GUARDS: list[tuple[str, Callable[[Collection], object]]] = [
    ("weights 3", lambda c: c.search(ONE, k=3, mode="hybrid", query_texts="topic1", weights=[1, 1, 1])),
    ("rescore list of int", lambda c: c.search(ONE, k=3, rescore=[1])),
    ("k float", lambda c: c.search(ONE, k=5.0)),
    ("k bool", lambda c: c.search(ONE, k=True)),
    ("k zero", lambda c: c.search(ONE, k=0)),
    ("nprobe float", lambda c: c.search(ONE, k=3, nprobe=1.5)),
    ("mode list", lambda c: c.search(ONE, k=3, mode=["dense"])),
    ("mode None", lambda c: c.search(ONE, k=3, mode=None)),
    ("filter list", lambda c: c.search(ONE, k=3, filter=[1])),
    ("filter str", lambda c: c.search(ONE, k=3, filter="g=1")),
    ("filter empty", lambda c: c.search(ONE, k=3, filter={})),
    ("query_texts list of int", lambda c: c.search(ONE, k=3, mode="hybrid", query_texts=[1])),
]


@pytest.mark.parametrize("call", [pytest.param(c, id=n) for n, c in GUARDS])
def test_argument_guards(small: Collection, call: Callable[[Collection], object]):
    _assert_refused(small, lambda: call(small))


def test_limits_are_inclusive(small: Collection):
    """The documented limits themselves are accepted."""
    small.add(unit_vectors(1, DIM, 9), ids=["deep"], metadata=[_nested(MAX_METADATA_DEPTH)])
    try:
        hit = small.search(unit_vectors(1, DIM, 9)[0], k=1, rescore="float32")[0][0]
        assert hit.id == "deep" and hit.metadata == _nested(MAX_METADATA_DEPTH)
    finally:
        small.delete("deep")
    for flt in (
        _deep_filter(MAX_FILTER_DEPTH),
        _deep_filter(MAX_FILTER_DEPTH, "$or"),
        {"$or": [{"g": {"$ne": i % 6}} for i in range(MAX_FILTER_CONDITIONS)]},
        {"$and": [{"$or": [{"g": {"$nin": [7, 8]}}, {"tags": None}]}] * (MAX_FILTER_CONDITIONS // 3)},
        {"g": {"$in": list(range(MAX_FILTER_CONDITIONS))}},
        {"g": {"$gt": -(2**63), "$lte": 2**63 - 1}},
    ):
        assert len(small.search(ONE, k=60, filter=flt)[0]) > 0
        assert len(small.search(None, k=60, mode="keyword", query_texts="topic1", filter=flt)[0]) > 0
    assert len(small.add(unit_vectors(1, DIM, 10), ids=[2**63 - 1])) == 1
    small.delete([np.int64(2**63 - 1)])
    hits = small.search(ONE, k=MAX_SEARCH_INT, rescore_multiplier=MAX_SEARCH_INT, nprobe=MAX_SEARCH_INT)[0]
    assert len(hits) == len(small)
    hybrid = small.search(ONE, k=MAX_SEARCH_INT, mode="hybrid", query_texts="topic1", rrf_k=0, weights=(0, 2.5))
    assert len(hybrid[0]) == len(small)


# ---------------------------------------------------------------- hypothesis: invariants


def _text(max_size: int = 8) -> st.SearchStrategy[str]:
    """Unicode text that holds lone surrogates."""
    char = st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))
    return st.lists(char, min_size=1, max_size=max_size).map("".join)


def _json(text: st.SearchStrategy[str], floats: st.SearchStrategy[float], ints: st.SearchStrategy[int]) -> Any:
    scalars = st.one_of(st.none(), st.booleans(), ints, floats, text)
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=12
    )


_finite = st.floats(allow_nan=False, allow_infinity=False)
_clean_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), _finite, st.text(max_size=8))
_wild_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), _text(), st.text(max_size=8)
)
_clean_json = _json(st.text(max_size=8), _finite, st.integers())
_wild_json = _json(st.one_of(_text(4), st.text(max_size=4)), st.floats(), st.integers(-(2**70), 2**70))
# about two thirds clean (stored), a third with a lone surrogate, a NaN or infinity somewhere
_values = st.one_of(_clean_json, _clean_json, _wild_json)
_keys = st.one_of(st.text(max_size=4), st.text(max_size=4), _text(4))
# wrapped in 0-80 levels: beyond MAX_METADATA_DEPTH (64) refused
_meta = st.tuples(st.dictionaries(_keys, _values, max_size=4), st.integers(0, 80)).map(
    lambda mt: _nested(mt[1], mt[0]) if mt[1] else mt[0]
)
_ids = st.one_of(
    st.text(min_size=1, max_size=6), st.integers(-(2**63), 2**63 - 1), _text(6), st.integers(-(2**65), 2**65)
)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Collection:
    """float32 rows scanned exactly: a document's own vector finds it first."""
    return Collection.create(tmp_path_factory.mktemp("plain") / "c", DIM, precision="float32", keep_int8=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(meta=_meta, text=st.one_of(st.none(), st.text(max_size=12), st.text(max_size=12), _text(12)), doc_id=_ids)
def test_add_stores_exactly_or_refuses(plain: Collection, meta: dict[str, Any], text: str | None, doc_id: object):
    """Any id, text and JSON-like metadata: stored and returned exactly, or InvalidInputError and nothing stored."""
    vec = unit_vectors(1, DIM, plain.manifest["next_seq"] + 1000)
    with contextlib.suppress(InvalidInputError):  # an invalid id: add must refuse it too
        plain.delete(plain.existing_ids([doc_id]))  # an id from an earlier example: not a duplicate here
    before = len(plain)
    try:
        plain.add(vec, ids=[doc_id], texts=[text], metadata=[meta])
    except InvalidInputError:
        assert len(plain) == before
        return
    assert len(plain) == before + 1
    event("stored")
    hit = plain.search(vec[0], k=1, rescore=None)[0][0]
    assert (hit.id, hit.text, hit.metadata) == (doc_id, text, meta)


_good_field = st.sampled_from(["g", "tags", "a.b", "x_y-z"])
_field = st.one_of(_good_field, _good_field, st.sampled_from(["g\n", "$and", "$or", "bad key", "\udfff", "$eq", "1a"]))
_good_ops = st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"])
_ops = st.one_of(_good_ops, st.sampled_from(["$in", "$nin", "$bad", "$and"]))
_edge = st.sampled_from([2**63, -(2**63) - 1, 2**70, "\udfff", "a\ud800b", math.nan, math.inf])
_fscalar = st.one_of(_wild_scalars, _edge)
_fvalue = st.one_of(_fscalar, _fscalar, st.lists(_fscalar, max_size=3), st.just([]), st.just({}))
_good_leaf = st.one_of(
    st.dictionaries(_good_field, _clean_scalars, min_size=1, max_size=2),
    st.dictionaries(_good_field, st.dictionaries(_good_ops, _clean_scalars, min_size=1, max_size=2), min_size=1),
    st.dictionaries(
        _good_field,
        st.dictionaries(st.sampled_from(["$in", "$nin"]), st.lists(_clean_scalars, min_size=1, max_size=4), min_size=1),
        min_size=1,
    ),
)


def _filters(depth: int) -> st.SearchStrategy[Any]:
    """Filters, well-formed or not, nested up to ``depth`` levels (and chains up to 60 deep)."""
    cond = st.one_of(_fvalue, st.dictionaries(_ops, _fvalue, max_size=3))
    edge = st.dictionaries(
        _good_field, st.one_of(_edge, st.dictionaries(_ops, _edge, min_size=1, max_size=1)), min_size=1
    )
    leaf = st.one_of(st.dictionaries(_field, cond, max_size=3), edge, _good_leaf, _good_leaf)
    if depth == 0:
        return leaf
    sub = _filters(depth - 1)
    combine = st.sampled_from(["$and", "$or"])
    return st.one_of(
        leaf,
        st.dictionaries(combine, st.lists(sub, min_size=1, max_size=3), min_size=1, max_size=2),
        st.dictionaries(combine, st.lists(sub, max_size=3) | sub, min_size=1, max_size=2),
        st.tuples(combine, st.integers(1, 60), sub).map(lambda t: _deep_filter(t[1], t[0]) if t[1] > 1 else t[2]),
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flt=st.one_of(_filters(3), _filters(3), _wild_scalars, st.lists(_wild_scalars, max_size=2)))
def test_any_filter_works_or_is_refused(small: Collection, flt: Any):
    """Arbitrary filter-like values: a search answers (hits that all exist) or raises InvalidInputError."""
    for mode, vec in (("dense", ONE), ("keyword", None)):
        try:
            hits = small.search(vec, k=10, mode=mode, query_texts="topic1 topic2" if vec is None else None, filter=flt)
        except InvalidInputError:
            continue
        event(f"{mode} filter answered")
        assert all(h.id in small for h in hits[0])


# ---------------------------------------------------------------- item 5: k hits whenever k match

CONFIGS = {
    "binary": {"precision": "binary"},
    "binary-hamming": {"precision": "binary", "stage1": "hamming"},
    "1.5bit": {"precision": "1.5bit"},
    "2bit": {"precision": "2bit"},
    "int8": {"precision": "int8"},
    "float32": {"precision": "float32"},
    "ivf": {"precision": "binary"},
}


@pytest.fixture(scope="module")
def filtered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Collection]:
    emb = unit_vectors(N, DIM, 3)
    meta = [{"g": i % GROUPS, "h": i % HGROUPS} for i in range(N)]
    texts = [f"item {i} word{i % 7} colour{i % 11}" for i in range(N)]
    cols = {}
    for name, kw in CONFIGS.items():
        col = Collection.create(tmp_path_factory.mktemp(name) / "c", DIM, keep_float32=True, **kw)
        col.add(emb, texts=texts, metadata=meta)
        if name == "ivf":
            col.build_index()  # defaults: nlist ~ 4 sqrt(N), nprobe 32
        cols[name] = col
    return cols


_FULL: dict[tuple[str, str | None], Any] = {}  # (config, rescore) -> exact full rankings of the 4 queries


def _hamming_reference(q: np.ndarray, emb: np.ndarray, rows: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """Brute-force Hamming top-k over ``rows``: plain sign bits, ties to the lower row."""
    dist = ((emb[rows] > 0) != (q > 0)).sum(axis=1)
    order = np.lexsort((rows, dist))[:k]
    return rows[order].tolist(), (1.0 - 2.0 * dist[order] / DIM).tolist()


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("rescore", [None, "int8", "float32"])
@pytest.mark.parametrize(
    "flt, matching, matches",
    [
        ({"g": 7}, lambda r: r % GROUPS == 7, 10),
        ({"h": 13}, lambda r: r % HGROUPS == 13, 25),
        ({"$or": [{"g": 3}, {"h": 5}]}, lambda r: (r % GROUPS == 3) | (r % HGROUPS == 5), 35),
    ],
)
def test_filtered_search_is_the_best_of_the_matches(
    filtered: dict[str, Collection], name: str, rescore: str | None, flt: dict[str, Any], matching: Any, matches: int
):
    """k=10 with a filter matching 10-35 of 5,000 rows: exactly the matches' best, as brute force ranks them."""
    col = filtered[name]
    emb = unit_vectors(N, DIM, 3)
    rows = np.flatnonzero(matching(np.arange(N)))
    assert rows.size == matches
    queries = unit_vectors(4, DIM, 4)
    got = col.search(queries, k=10, rescore=rescore, filter=flt)
    assert [len(r) for r in got] == [10] * len(queries)
    if (name, rescore) not in _FULL:  # every row scored by the same stages (exact=True)
        _FULL[name, rescore] = col.search(queries, k=N, rescore=rescore, exact=True, with_text=False)
    keep = set(rows.tolist())
    for q, hits, full in zip(queries, got, _FULL[name, rescore], strict=True):
        if name == "ivf" and rescore is None:
            ref_ids, ref_scores = _hamming_reference(q, emb, rows, 10)
        else:  # the full ranking restricted to the matches
            ref = [h for h in full if h.id in keep][:10]
            ref_ids, ref_scores = [h.id for h in ref], [h.score for h in ref]
        assert [h.id for h in hits] == ref_ids
        np.testing.assert_allclose([h.score for h in hits], ref_scores, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hybrid_filtered_returns_k_matches(filtered: dict[str, Collection], name: str):
    col = filtered[name]
    got = col.search(unit_vectors(4, DIM, 5), k=10, mode="hybrid", query_texts=["word3 colour2"] * 4, filter={"g": 42})
    for hits in got:
        assert sorted(h.id for h in hits) == [42 + GROUPS * j for j in range(10)]


@pytest.mark.parametrize("rescore", [None, "int8"])
@pytest.mark.parametrize("nprobe", [1, 4])
def test_ivf_tops_up_when_probed_lists_hold_too_few(filtered: dict[str, Collection], rescore: str | None, nprobe: int):
    """A filter too broad for the exact fallback (100 rows) but thin in the few probed lists: still k hits."""
    col = filtered["ivf"]
    flt = {"h": {"$lt": 4}}
    got = col.search(unit_vectors(16, DIM, 6), k=10, rescore=rescore, filter=flt, nprobe=nprobe)
    for hits in got:
        assert len(hits) == 10
        assert all(h.metadata["h"] < 4 for h in hits)


def test_ivf_filter_after_deletes_and_new_rows(tmp_path: Path):
    """Rows deleted from, and added after, the index: a filter matching exactly k live rows returns them."""
    col = Collection.create(tmp_path / "c", DIM)
    emb = unit_vectors(3000, DIM, 11)
    col.add(emb[:2500], metadata=[{"g": i % 100} for i in range(2500)])
    col.build_index(nprobe=2)
    col.add(emb[2500:], ids=list(range(2500, 3000)), metadata=[{"g": i % 100} for i in range(2500, 3000)])
    col.delete([5, 105, 205])  # g == 5: 30 rows, 27 live
    for rescore in (None, "int8"):
        got = col.search(unit_vectors(5, DIM, 12), k=27, rescore=rescore, filter={"g": 5})
        for hits in got:
            assert sorted(h.id for h in hits) == [5 + 100 * j for j in range(3, 30)]


def test_a_filter_on_a_field_no_document_has_says_so(tmp_path: Path) -> None:
    """The README's `{"year": {"$gte": 2010}}` on a collection without `year` used to answer nothing, silently."""
    rng = np.random.default_rng(7)
    col = Collection.create(tmp_path / "w", 32)
    col.add(
        rng.standard_normal((30, 32)).astype(np.float32),
        ids=[f"d{i}" for i in range(30)],
        metadata=[{"lang": "en", "info": {"pages": i}} for i in range(30)],
    )
    q = rng.standard_normal(32).astype(np.float32)
    res = col.search(q, k=5, filter={"year": {"$gte": 2010}})
    assert res[0] == []
    assert res.warnings == ["no stored document has the metadata field 'year' that the filter names"]
    res = col.search(q, k=5, filter={"$or": [{"lang": "de"}, {"info.pages": {"$gt": 100}}, {"info.chapter": 1}]})
    assert res[0] == [] and res.warnings == [
        "no stored document has the metadata field 'info.chapter' that the filter names"
    ]
    full = col.search(q, k=5, filter={"lang": "en"})
    assert len(full[0]) == 5 and full.warnings == []
    assert col.search(q, k=5).warnings == []


def test_unnormalized_query_on_a_normalizing_model_warns_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    emb = rng.standard_normal((30, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    col = Collection.create(tmp_path / "n", 16, model={"name": "m", "normalize": True}, calibration_embeddings=emb)
    col.add(emb)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        col.search(emb[0], k=3)  # unit length: nothing to say
        assert not caught
        hits = col.search(emb[0] * 2.73, k=3, rescore="int8")[0]
        col.search(emb[1] * 5, k=3)
    assert [str(w.message).split(",")[0] for w in caught] == ["query 0 has norm 2.73"]
    assert hits[0].score == pytest.approx(2.73, rel=0.02)
    plain = Collection.create(tmp_path / "p", 16, calibration_embeddings=emb)  # no model recorded: no warning
    plain.add(emb)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain.search(emb[0] * 3, k=3)
