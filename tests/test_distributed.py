"""ShardedCollection on a real local Ray: identical answers to one collection, global BM25, faults."""

from __future__ import annotations

import heapq
import itertools
import json
import math
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import shared_data

from bitsearch import Collection, CollectionError, DuplicateIdError, InvalidInputError, UnknownIdError
from bitsearch.distributed import MANIFEST, Shard, ShardedCollection, merge_ranked, shard_of
from bitsearch.errors import CorruptCollectionError, PartialWriteError, ShardUnavailableError
from bitsearch.evaluate import load_dataset
from bitsearch.store import DocStore

try:
    import ray
except ImportError:  # pragma: no cover - the ray extra is part of CI's install
    ray = None

DIM = 32
DATA = shared_data("cranfield")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module's tests that need it (2 CPUs), shut down at the end."""
    if ray is None:
        pytest.skip("needs ray (pip install 'bitsearch[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # the workers cannot import this test module: ship its classes (Flaky) by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus():
    """Cranfield texts (or synthetic ones where the shared data is absent), random embeddings, metadata."""
    if DATA.is_dir():
        ds = load_dataset(DATA)
        ids, texts = list(ds.doc_ids), [t if t.strip() else None for t in ds.doc_texts]
        queries = list(ds.query_texts)[:60]
        qrels = {q: ds.qrels.get(q, {}) for q in list(ds.query_ids)[:60]}
    else:  # pragma: no cover - the shared data is present in CI
        words = [f"w{i}" for i in range(300)]
        rng = np.random.default_rng(1)
        ids = [str(i) for i in range(1200)]
        texts = [" ".join(rng.choice(words, 40)) for _ in ids]
        queries = [" ".join(rng.choice(words, 5)) for _ in range(60)]
        qrels = {str(i): {ids[int(rng.integers(len(ids)))]: 1} for i in range(60)}
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(ids), DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    meta = [{"group": i % 3, "year": 1950 + i % 20} for i in range(len(ids))]
    qvec = rng.normal(size=(len(queries), DIM)).astype(np.float32)
    return {"ids": ids, "texts": texts, "emb": emb, "meta": meta, "queries": queries, "qvec": qvec, "qrels": qrels}


@pytest.fixture(scope="module")
def pair(ray_cluster, tmp_path_factory, corpus):
    """The same documents in one Collection and in a 3-shard ShardedCollection (same calibration)."""
    root = tmp_path_factory.mktemp("dist")
    opts = dict(precision="binary", keep_int8=True, keep_float32=True)
    c = corpus
    single = Collection.create(root / "single", DIM, calibration_embeddings=c["emb"], **opts)
    single.add(c["emb"], ids=c["ids"], texts=c["texts"], metadata=c["meta"])
    sharded = ShardedCollection.create(root / "sharded", DIM, shards=3, calibration_embeddings=c["emb"], **opts)
    half = len(c["ids"]) // 2  # two adds: the shards' rows interleave as one collection's do
    for sl in (slice(0, half), slice(half, None)):
        sharded.add(c["emb"][sl], ids=c["ids"][sl], texts=c["texts"][sl], metadata=c["meta"][sl])
    yield single, sharded
    sharded.close()


def _pairs(results):
    return [[(h.id, h.score) for h in hits] for hits in results]


EXACT = dict(k=10, rescore="float32", rescore_multiplier=1000)  # every row is a candidate: exact


def test_exact_dense_search_is_identical_to_one_collection(pair, corpus):
    single, sharded = pair
    assert len(sharded) == len(single)
    q = corpus["qvec"][:12]
    assert _pairs(sharded.search(q, **EXACT)) == _pairs(single.search(q, **EXACT))
    one = sharded.search(q[0], **EXACT)
    assert _pairs(one) == _pairs(single.search(q[0], **EXACT))
    assert one.partial is False and one.shards_answered == sharded.shard_names
    # texts and metadata travel with the hits
    h = one[0][0]
    i = corpus["ids"].index(h.id)
    assert h.text == corpus["texts"][i] and h.metadata == corpus["meta"][i]
    # a filter applies inside each shard: still identical, still k hits
    flt = {"group": 1, "year": {"$gte": 1960}}
    got = sharded.search(q, **EXACT, filter=flt)
    assert _pairs(got) == _pairs(single.search(q, **EXACT, filter=flt))
    assert all(len(r) == 10 and all(h.metadata["group"] == 1 for h in r) for r in got)


def test_a_filter_field_no_shard_has_is_reported_like_one_collection(pair, corpus):
    single, sharded = pair
    q = corpus["qvec"][:2]
    flt = {"$or": [{"lang": "en"}, {"group": 7}]}  # no document has lang, none is in group 7
    got, ref = sharded.search(q, k=5, filter=flt), single.search(q, k=5, filter=flt)
    assert _pairs(got) == _pairs(ref) == [[], []]
    assert got.warnings == ref.warnings == ["no stored document has the metadata field 'lang' that the filter names"]
    assert sharded.search(q, k=5, filter={"group": 1}).warnings == []


def test_preselect_reaches_the_shards(pair, corpus):
    """A pre-selection deep enough to keep every row is the full scan, on shards as on one collection;
    a bad depth is refused like Collection's."""
    single, sharded = pair
    q = corpus["qvec"][:5]
    full = dict(k=10, rescore=None, preselect=len(corpus["ids"]))
    assert _pairs(sharded.search(q, **full)) == _pairs(single.search(q, k=10, rescore=None, exact=True))
    with pytest.raises(InvalidInputError, match="preselect"):
        sharded.search(q, k=10, rescore=None, preselect=0)


def test_rescored_search_is_never_worse_than_one_collection(pair, corpus):
    """Each shard rescores its own top k x m, a superset of one collection's global k x m."""
    single, sharded = pair
    q = corpus["qvec"]
    a = sharded.search(q, k=10, rescore="int8", rescore_multiplier=2)
    b = single.search(q, k=10, rescore="int8", rescore_multiplier=2)
    for ra, rb in zip(a, b, strict=True):
        sa, sb = np.array([h.score for h in ra]), np.array([h.score for h in rb])
        assert sa.shape == sb.shape and (sa >= sb).all()


def test_keyword_scores_use_global_statistics(pair, corpus):
    """BM25 over shards equals one collection's: same scores rank by rank, NDCG@10 within 0.005."""
    single, sharded = pair
    texts = corpus["queries"]
    a = sharded.search(texts, k=10, mode="keyword")
    b = single.search(texts, k=10, mode="keyword")
    for ra, rb in zip(a, b, strict=True):  # the same arithmetic as FTS5's bm25(); ids may swap only inside ties
        assert [h.score for h in ra] == [h.score for h in rb]
    assert abs(_ndcg(a, corpus) - _ndcg(b, corpus)) <= 0.005
    # a shard's own bm25() (its own statistics) scores the same documents differently
    local = Collection.open(sharded.path / sharded.shard_names[0])
    glob = {h.id: h.score for r in sharded.search(texts[:10], k=200, mode="keyword") for h in r}
    own = [h for r in local.search(texts[:10], k=10, mode="keyword") for h in r]
    assert own and sum(h.score != pytest.approx(glob[h.id], rel=1e-9) for h in own) > len(own) // 2
    # filters and deletes inside the shards
    flt = {"group": 2}
    a = sharded.search(texts, k=10, mode="keyword", filter=flt)
    b = single.search(texts, k=10, mode="keyword", filter=flt)
    assert [[h.score for h in r] for r in a] == [[h.score for h in r] for r in b]


def test_hybrid_equals_one_collection(pair, corpus):
    single, sharded = pair
    texts, q = corpus["queries"], corpus["qvec"]
    opts = dict(k=10, mode="hybrid", query_texts=texts, rescore="float32", rescore_multiplier=1000)
    a, b = sharded.search(q, **opts), single.search(q, **opts)
    assert abs(_ndcg(a, corpus) - _ndcg(b, corpus)) <= 0.005
    same = sum(ra_ids == rb_ids for ra_ids, rb_ids in zip(_ids(a), _ids(b), strict=True))
    assert same >= 0.8 * len(texts)  # differences only from BM25 ties ordered by row vs by shard


def test_deletes_and_compaction_keep_answers_identical(ray_cluster, tmp_path, corpus):
    c = corpus
    n = 600
    single = Collection.create(tmp_path / "single", DIM, precision="int8", calibration_embeddings=c["emb"][:n])
    single.add(c["emb"][:n], ids=c["ids"][:n], metadata=c["meta"][:n])
    with ShardedCollection.create(
        tmp_path / "sharded", DIM, shards=2, precision="int8", calibration_embeddings=c["emb"][:n]
    ) as sharded:
        sharded.add(c["emb"][:n], ids=c["ids"][:n], metadata=c["meta"][:n])
        q = c["qvec"][:8]
        top = [h.id for h in single.search(q[0], k=5, rescore=None)[0]]
        gone = [*top, *c["ids"][100:150]]
        assert sharded.delete(gone) == single.delete(gone) == len(gone)
        with pytest.raises(UnknownIdError):
            sharded.delete([c["ids"][0], "no-such-id"])
        assert c["ids"][0] in sharded.existing_ids([c["ids"][0]])  # nothing deleted by the failed call
        with pytest.raises(InvalidInputError, match="float32"):  # a shard's own error, as one collection raises it
            sharded.search(q, rescore="float32")
        with pytest.raises(InvalidInputError):
            sharded.search(q, filter={"bad field!": 1})
        assert _pairs(sharded.search(q, k=10, rescore=None)) == _pairs(single.search(q, k=10, rescore=None))
        # upsert: new vectors for stored ids (the best hits of q[1], now the rows of q[2]) and new ids
        top = [h.id for h in single.search(q[1], k=3, rescore=None)[0]]
        up_ids, up_emb = [*top, "new-a", "new-b"], c["emb"][n : n + 5]
        up_meta = c["meta"][n : n + 5]
        assert sharded.upsert(up_emb, ids=up_ids, metadata=up_meta) == single.upsert(
            up_emb, ids=up_ids, metadata=up_meta
        )
        with pytest.raises(DuplicateIdError):
            sharded.upsert(up_emb[:2], ids=["x", "x"])
        assert len(sharded) == len(single)
        assert _pairs(sharded.search(q, k=10, rescore=None)) == _pairs(single.search(q, k=10, rescore=None))
        sharded.compact()
        single.compact()
        assert _pairs(sharded.search(q, k=10, rescore=None)) == _pairs(single.search(q, k=10, rescore=None))
        st = sharded.stats()
        assert st["documents"] == len(single) == len(sharded)
        assert st["disk_bytes"] == sum(s["disk_bytes"] for s in st["shards"]) and len(st["shards"]) == 2
        # reopening: the manifest names the shards and the shared ranges
        again = ShardedCollection.open(tmp_path / "sharded")
        assert _pairs(again.search(q, k=10, rescore=None)) == _pairs(single.search(q, k=10, rescore=None))
        again.close()


class Flaky(Shard):
    """A shard that cannot open while a ``down-<name>`` file exists and fails one add per ``fail-<name>``."""

    def __init__(self, path: str) -> None:
        p = Path(path)
        if (p.parent / f"down-{p.name}").exists():
            raise CollectionError(f"shard {p.name} is down")
        super().__init__(path)

    def add(self, embeddings, ids, texts, metadata):  # type: ignore[no-untyped-def]
        flag = self.path.parent / f"fail-{self.path.name}"
        if flag.exists():
            flag.unlink()
            raise OSError("disk full")
        return super().add(embeddings, ids, texts, metadata)


@pytest.fixture(scope="module")
def flaky(ray_cluster, tmp_path_factory, corpus):
    root = tmp_path_factory.mktemp("flaky")
    emb = corpus["emb"][:400]
    sc = ShardedCollection.create(
        root / "s", DIM, shards=2, precision="float32", keep_int8=False, keyword_index=False, shard_class=Flaky
    )
    yield sc, emb
    sc.close()


def test_a_failed_add_names_the_stored_ids_and_resumes_without_duplicates(flaky):
    sc, emb = flaky
    ids = [f"x{i}" for i in range(200)]
    (sc.path / f"fail-{sc.shard_names[1]}").touch()
    with pytest.raises(PartialWriteError) as info:
        sc.add(emb[:200], ids=ids)
    err = info.value
    stored = set(sc.existing_ids(ids))
    assert set(err.stored_ids) == stored and stored and len(stored) < 200
    assert set(err.failed_ids) == set(ids) - stored and err.shards == [sc.shard_names[1]]
    assert all(shard_of(i, 2) == 0 for i in err.stored_ids)
    with pytest.raises(DuplicateIdError):  # a plain re-run refuses, writing nothing
        sc.add(emb[:200], ids=ids)
    assert sc.add(emb[:200], ids=ids, skip_existing=True) == ids
    assert len(sc) == 200
    got = sc.search(emb[:3], k=1, rescore=None)
    assert [r[0].id for r in got] == ids[:3]


def test_generated_ids_are_unique_across_calls_and_handles(flaky):
    sc, emb = flaky
    a = sc.add(emb[200:210])
    b = ShardedCollection.open(sc.path, shard_class=Flaky)
    c = b.add(emb[210:220])
    b.close()
    assert a == list(range(10)) and c == list(range(10, 20))
    assert sc.existing_ids([5, 15]) == [5, 15] and len(sc) == 220  # the other handle's writes are seen
    with pytest.raises(InvalidInputError):
        sc.add(emb[:2], ids=["y1", "y2"], texts=["fine", ""])  # refused before any shard writes
    assert not sc.existing_ids(["y1", "y2"])
    with pytest.raises(InvalidInputError, match="keyword index"):  # raised in a shard, surfaced as it is
        sc.search("wing", mode="keyword")


def test_a_killed_actor_is_restarted_and_the_search_retried(pair, corpus):
    single, sharded = pair
    q = corpus["qvec"]
    want = _pairs(single.search(q, **EXACT))
    ray.kill(sharded.actors[0], no_restart=False)  # Ray restarts it from its directory
    assert _pairs(sharded.search(q, **EXACT)) == want
    ray.kill(sharded.actors[1], no_restart=True)  # gone for good: a fresh actor replaces it
    assert _pairs(sharded.search(q, **EXACT)) == want
    # killed while a search is in flight
    got: list = []
    big = np.repeat(q, 4, axis=0)
    t = threading.Thread(target=lambda: got.append(sharded.search(big, **EXACT)))
    t.start()
    ray.kill(sharded.actors[2], no_restart=False)
    t.join(timeout=120)
    assert _pairs(got[0]) == _pairs(single.search(big, **EXACT))


def test_an_unreachable_shard_is_an_error_or_a_marked_partial_answer(flaky):
    sc, emb = flaky
    q = emb[:4]
    full = sc.search(q, k=5, rescore=None)
    down = sc.path / f"down-{sc.shard_names[1]}"
    down.touch()
    try:
        ray.kill(sc.actors[1], no_restart=True)
        with pytest.raises(ShardUnavailableError) as info:
            sc.search(q, k=5, rescore=None)
        assert info.value.shards == [sc.shard_names[1]]
        part = sc.search(q, k=5, rescore=None, allow_partial=True)
        assert part.partial is True and part.shards_answered == [sc.shard_names[0]]
        assert all(shard_of(h.id, 2) == 0 for r in part for h in r)
    finally:
        down.unlink()
    back = sc.search(q, k=5, rescore=None)  # the shard is reachable again: a fresh actor opens it
    assert _pairs(back) == _pairs(full) and back.partial is False


def test_shard_routing_is_stable_and_typed():
    assert [shard_of(f"doc-{i}", 4) for i in range(8)] == [shard_of(f"doc-{i}", 4) for i in range(8)]
    counts = np.bincount([shard_of(i, 4) for i in range(4000)], minlength=4)
    assert counts.min() > 900  # spread evenly
    assert shard_of(7, 1000) != shard_of("7", 1000) or shard_of(8, 1000) != shard_of("8", 1000)
    assert shard_of(np.int64(7), 16) == shard_of(7, 16)
    with pytest.raises(InvalidInputError):
        shard_of(1.5, 4)


def test_bad_manifests_and_options_are_named_errors(ray_cluster, tmp_path):
    with pytest.raises(InvalidInputError):
        ShardedCollection.create(tmp_path / "a", DIM, shards=0)
    with pytest.raises(InvalidInputError):
        ShardedCollection.create(tmp_path / "b", DIM, shards=2, no_such_option=1)
    sc = ShardedCollection.create(tmp_path / "c", DIM, shards=2, precision="float32", keep_int8=False)
    assert len(sc) == 0 and sc.search(np.ones(DIM, np.float32), k=3, rescore=None)[0] == []
    sc.close()
    with pytest.raises(CollectionError):
        ShardedCollection.create(tmp_path / "c", DIM, shards=2)
    m = json.loads((tmp_path / "c" / MANIFEST).read_text())
    m["shards"] = ["shard-000", "../escape"]
    (tmp_path / "c" / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(CorruptCollectionError, match="escape"):
        ShardedCollection.open(tmp_path / "c")
    with pytest.raises(CollectionError):
        ShardedCollection.open(tmp_path / "nothing-here")
    m["shards"] = ["shard-000", "shard-404"]
    (tmp_path / "c" / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(CorruptCollectionError, match="shard-404"):
        ShardedCollection.open(tmp_path / "c")


def test_bm25_with_a_stores_own_statistics_equals_fts5(tmp_path, corpus):
    """The BM25 the shards compute (postings, sizes, phrases) is FTS5's bm25(), to the last bit."""
    col = Collection.create(tmp_path / "c", DIM, precision="float32", keep_int8=False)
    col.add(corpus["emb"][:500], ids=corpus["ids"][:500], texts=corpus["texts"][:500])
    store = DocStore(tmp_path / "c" / "docs.sqlite")
    queries = [*corpus["queries"][:30], "wing_slipstream flow", "the of and", "Mach-number: heat!", "zzzz"]
    for text in queries:
        own = store.keyword_statistics(text)
        assert store.keyword_search_global(text, 50, own) == store.keyword_search(text, 50)
    with pytest.raises(InvalidInputError):
        store.keyword_search_global("wing flow", 5, {"df": [1], "rows": 10, "tokens": 100})


def test_shards_on_two_nodes_answer_as_one_collection(tmp_path):
    """A simulated two-node cluster: the shards spread over both nodes, the answers stay exact.

    Last in the module: it stops the module's one-node Ray and starts its own cluster.
    """
    if ray is None:
        pytest.skip("needs ray (pip install 'bitsearch[ray]')")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    # one "slot" per node and one per shard actor: the two shards must land on different nodes
    slot = {"num_cpus": 1, "resources": {"slot": 1}}
    cluster = Cluster(initialize_head=True, head_node_args={**slot, "include_dashboard": False})
    try:
        cluster.add_node(**slot)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        emb = np.random.default_rng(3).normal(size=(1000, 16)).astype(np.float32)
        single = Collection.create(tmp_path / "c", 16, precision="float32", keep_int8=False)
        single.add(emb)
        sc = ShardedCollection.create(
            tmp_path / "s", 16, shards=2, precision="float32", keep_int8=False, actor_options={"resources": {"slot": 1}}
        )
        assert sc.add(emb) == list(range(1000))
        node = lambda self: ray.get_runtime_context().get_node_id()  # noqa: E731 - runs inside each actor
        assert len(set(ray.get([a.__ray_call__.remote(node) for a in sc.actors]))) == 2
        q = emb[:6] + 0.1
        assert _pairs(sc.search(q, k=7, rescore=None)) == _pairs(single.search(q, k=7, rescore=None))
        sc.close()
    finally:
        ray.shutdown()
        cluster.shutdown()


def _ids(results):
    return [[h.id for h in hits] for hits in results]


def _ndcg(results, corpus, k: int = 10) -> float:
    """Mean NDCG@k over the judged queries."""
    qids = list(corpus["qrels"])
    total, n = 0.0, 0
    for qid, hits in zip(qids, results, strict=False):
        rel = corpus["qrels"][qid]
        if not rel:
            continue
        dcg = sum(rel.get(str(h.id), 0) / math.log2(r + 2) for r, h in enumerate(hits[:k]))
        ideal = sorted(rel.values(), reverse=True)[:k]
        idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
        total += dcg / idcg if idcg else 0.0
        n += 1
    return total / max(n, 1)


def test_merge_ranked_orders_by_score_then_shard_then_rank():
    """The shards' rankings merged: score descending; ties by shard, then by each shard's own order."""
    rng = np.random.default_rng(5)
    for trial in range(200):
        nshards, nq, k = int(rng.integers(1, 5)), int(rng.integers(1, 4)), int(rng.integers(1, 12))
        per_shard = []
        for s in range(nshards):
            ranks = []
            for q in range(nq):
                scores = sorted((float(v) for v in rng.integers(-3, 4, int(rng.integers(0, 8))) / 2), reverse=True)
                ranks.append([(f"s{s}q{q}r{i}", v, None, None) for i, v in enumerate(scores)])  # many ties
            per_shard.append(ranks)
        got = merge_ranked(per_shard, k)
        for q in range(nq):
            ref = list(itertools.islice(heapq.merge(*(s[q] for s in per_shard), key=lambda h: -h[1]), k))
            assert got[q] == ref, trial
    assert merge_ranked([], 3) == []


def test_rabitq_shards_share_one_fit(ray_cluster, tmp_path, corpus):
    """rabitq's centre and rotation are fitted once on the calibration sample, so every shard estimates
    exactly as one collection does."""
    c = corpus
    opts = dict(precision="rabitq", keyword_index=False)
    single = Collection.create(tmp_path / "one", DIM, calibration_embeddings=c["emb"], **opts)
    single.add(c["emb"], ids=c["ids"])
    sharded = ShardedCollection.create(tmp_path / "s", DIM, shards=2, calibration_embeddings=c["emb"], **opts)
    try:
        sharded.add(c["emb"], ids=c["ids"])
        kw = dict(k=10, rescore=None, exact=True)
        assert _pairs(sharded.search(c["qvec"][:5], **kw)) == _pairs(single.search(c["qvec"][:5], **kw))
    finally:
        sharded.close()
