"""`bitsearch serve` over a ShardedCollection: the same HTTP API, answers equal to ShardedCollection.search,
shard faults mapped to 503 (or partial answers when allowed). One local Ray for the module."""

from __future__ import annotations

import hashlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving import ServerThread

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
ray = pytest.importorskip("ray")

from bitsearch.distributed import Shard, ShardedCollection  # noqa: E402
from bitsearch.errors import CollectionError  # noqa: E402
from bitsearch.server import create_app, open_served  # noqa: E402

DIM = 32
N = 600
WORDS = ["wing", "flow", "shock", "heat", "boundary", "layer", "pressure", "drag", "lift", "nozzle", "plate", "wave"]


class Down(Shard):
    """A shard that cannot open while a ``down-<name>`` file exists next to its directory."""

    def __init__(self, path: str) -> None:
        p = Path(path)
        if (p.parent / f"down-{p.name}").exists():
            raise CollectionError(f"shard {p.name} is down")
        super().__init__(path)


class HashEncoder:
    """A deterministic stand-in for the model: each text's vector from its sha256 (no model load)."""

    name = "hash-encoder"
    dim = DIM

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "big")
            rows.append(np.random.default_rng(seed).standard_normal(DIM))
        v = np.asarray(rows, dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    encode_documents = encode_queries


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this module
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sharded(ray_cluster: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShardedCollection]:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((N, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    texts = [" ".join(rng.choice(WORDS, 12)) for _ in range(N)]
    meta = [{"group": i % 3} for i in range(N)]
    path = tmp_path_factory.mktemp("srv-sharded") / "col"
    sc = ShardedCollection.create(path, DIM, shards=2, calibration_embeddings=emb, shard_class=Down, timeout=30)
    sc.add(emb, ids=[f"d{i}" for i in range(N)], texts=texts, metadata=meta)
    yield sc
    sc.close()


@pytest.fixture(scope="module")
def server(sharded: ShardedCollection) -> Iterator[str]:
    with ServerThread(create_app(sharded, encoder=HashEncoder(), refresh_seconds=None)) as srv:
        yield srv.url


def queries(n: int, seed: int = 5) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def pairs(results: Any) -> list[list[tuple[Any, float]]]:
    """(id, score) per query, from a SearchResults or a /search response body."""
    if isinstance(results, dict):
        return [[(h["id"], round(h["score"], 5)) for h in hits] for hits in results["results"]]
    return [[(h.id, round(h.score, 5)) for h in hits] for hits in results]


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + "/search", json=body, timeout=60)


def test_vector_queries_answer_as_the_sharded_collection_does(server: str, sharded: ShardedCollection) -> None:
    q = queries(6)
    want = sharded.search(q, k=7)
    got = post(server, {"vector": q.tolist(), "k": 7})
    assert got.status_code == 200, got.text
    body = got.json()
    assert pairs(body) == pairs(want) and all(len(r) == 7 for r in body["results"])
    assert body["partial"] is False and body["shards_answered"] == sharded.shard_names
    assert body["results"][0][0]["text"] and "group" in body["results"][0][0]["metadata"]
    one = post(server, {"vector": q[0].tolist(), "k": 3, "rescore": "none", "filter": {"group": 1}}).json()
    assert pairs(one) == pairs(sharded.search(q[:1], k=3, rescore=None, filter={"group": 1}))
    assert all(h["metadata"]["group"] == 1 for h in one["results"][0])


def test_concurrent_requests_share_fan_outs_and_each_gets_its_own_answer(
    server: str, sharded: ShardedCollection
) -> None:
    q = queries(24, seed=9)
    want = pairs(sharded.search(q, k=5))
    got: dict[int, Any] = {}

    def ask(i: int) -> None:
        got[i] = post(server, {"vector": q[i].tolist(), "k": 5}).json()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(q))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [pairs(got[i])[0] for i in range(len(q))] == want


def test_text_keyword_and_hybrid_queries_match_the_library(server: str, sharded: ShardedCollection) -> None:
    texts = ["shock wave drag", "boundary layer heat"]
    enc = HashEncoder()
    dense = post(server, {"query": texts, "k": 5}).json()
    assert pairs(dense) == pairs(sharded.search(enc.encode_queries(texts), k=5))
    kw = post(server, {"query": texts, "k": 5, "mode": "keyword"}).json()
    want_kw = sharded.search(mode="keyword", query_texts=texts, k=5)
    assert pairs(kw) == pairs(want_kw) and all(len(r) == 5 for r in kw["results"])
    hy = post(server, {"query": texts[0], "k": 5, "mode": "hybrid"}).json()
    want_hy = sharded.search(enc.encode_queries(texts[:1]), mode="hybrid", query_texts=texts[:1], k=5)
    assert pairs(hy) == pairs(want_hy)


def test_info_page_add_and_delete(server: str, sharded: ShardedCollection) -> None:
    info = httpx.get(server + "/info", timeout=30).json()
    assert info["documents"] == len(sharded) and info["dim"] == DIM
    assert [s["name"] for s in info["shards"]] == sharded.shard_names
    assert info["stages"]["binary"]["ram_bytes"] > 0 and info["compression_vs_float32"] > 1
    assert "allow_partial" in info["server"]["search_options"]
    assert httpx.get(server + "/", timeout=10).status_code == 200
    v = queries(1, seed=77)
    added = httpx.post(server + "/documents", json={"vectors": v.tolist(), "ids": [123456], "texts": ["new"]})
    assert added.status_code == 201, added.text
    assert added.json()["documents"] == info["documents"] + 1
    top = post(server, {"vector": v[0].tolist(), "k": 1}).json()["results"][0][0]
    assert top["id"] == 123456 and top["text"] == "new"
    gone = httpx.delete(server + "/documents/123456", timeout=30)  # the all-digit path id names the int id
    assert gone.status_code == 200 and gone.json() == {"deleted": 123456, "documents": info["documents"]}
    missing = httpx.delete(server + "/documents/123456", timeout=30)
    assert missing.status_code == 404 and "123456" in missing.json()["detail"]


def test_a_shard_down_is_503_naming_it_or_a_flagged_partial_answer(server: str, sharded: ShardedCollection) -> None:
    q = queries(2, seed=3)
    name = sharded.shard_names[1]
    down = sharded.path / f"down-{name}"
    down.touch()
    try:
        ray.kill(sharded.actors[1], no_restart=True)
        resp = post(server, {"vector": q.tolist(), "k": 5})
        assert resp.status_code == 503, resp.text
        assert name in resp.json()["detail"] and resp.json()["shards"] == [name]
        part = post(server, {"vector": q.tolist(), "k": 5, "allow_partial": True})
        assert part.status_code == 200, part.text
        body = part.json()
        assert body["partial"] is True and body["shards_answered"] == [sharded.shard_names[0]]
        assert all(len(r) == 5 for r in body["results"])
        add = httpx.post(server + "/documents", json={"vectors": q.tolist(), "ids": ["a", "b"]}, timeout=60)
        assert add.status_code == 503 and name in add.json()["detail"]
    finally:
        down.unlink()
    back = post(server, {"vector": q.tolist(), "k": 5}).json()  # a fresh actor opens the shard again
    assert back["partial"] is False and pairs(back) == pairs(sharded.search(q, k=5))


def test_a_sharded_directory_is_detected_and_served(sharded: ShardedCollection) -> None:
    opened = open_served(sharded.path)
    assert isinstance(opened, ShardedCollection)
    opened.close()
    with ServerThread(create_app(sharded.path, refresh_seconds=None)) as srv:
        q = queries(1, seed=11)
        body = post(srv.url, {"vector": q[0].tolist(), "k": 4}).json()
        assert pairs(body) == pairs(sharded.search(q, k=4))
        text = post(srv.url, {"query": "wing lift", "k": 4})  # no model recorded, no encoder given
        assert text.status_code in (400, 422) and "vector" in text.json()["detail"]
