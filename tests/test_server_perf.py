"""`bitsearch serve`'s fast /search path: micro-batching gives each request exactly its lone answer, one bad
request does not fail its batch, and the lean JSON checks answer bad bodies as the full validation does.

A small collection of random vectors, and a stub encoder (hash-seeded vectors, a little slow so that
concurrent requests queue up and batch), served by uvicorn in a thread: no model needed.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving import ServerThread

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from bitsearch import Collection  # noqa: E402
from bitsearch.errors import InvalidInputError  # noqa: E402
from bitsearch.server import create_app  # noqa: E402

DIM = 32
N = 400


def unit_vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class HashEncoder:
    """Deterministic stand-in model: each text's vector is seeded by its sha256; 20 ms per call, so that
    requests arriving while it runs queue up; texts containing "boom" cannot be embedded."""

    dim = DIM

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            self.calls.append(len(texts))
        time.sleep(0.02)
        if any("boom" in t for t in texts):
            raise InvalidInputError("the stub model cannot embed 'boom'")
        rows = [unit_vectors(1, int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little"))[0] for t in texts]
        return np.stack(rows)

    encode_documents = encode_queries


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Collection:
    path = Path(tmp_path_factory.mktemp("perf")) / "col"
    vecs = unit_vectors(N, seed=1)
    col = Collection.create(path, DIM, calibration_embeddings=vecs)
    col.add(
        vecs,
        ids=[f"d{i}" for i in range(N)],
        texts=[f"document {i} about {'cats' if i % 3 else 'dogs'}" for i in range(N)],
        metadata=[{"group": "odd" if i % 2 else "even", "n": i} for i in range(N)],
    )
    return col


@pytest.fixture(scope="module")
def servers(collection: Collection) -> Iterator[dict[str, Any]]:
    """The same collection served with micro-batching (a 5 ms window) and without."""
    batched_enc, lone_enc = HashEncoder(), HashEncoder()
    batched = create_app(collection, encoder=batched_enc, refresh_seconds=None, batch_window_ms=5)
    lone = create_app(collection, encoder=lone_enc, refresh_seconds=None, batch_window_ms=0)
    with ServerThread(batched) as b, ServerThread(lone) as lo:
        yield {"batched": b.url, "lone": lo.url, "app": batched, "lone_app": lone, "encoder": batched_enc}


def mixed_bodies() -> list[dict[str, Any]]:
    """Requests with every kind of argument: vectors and texts, batches, k, rescore, filter, mode, with_text."""
    qs = unit_vectors(24, seed=9)
    bodies: list[dict[str, Any]] = []
    for i in range(24):
        v = qs[i].tolist()
        kind = i % 8
        if kind == 0:
            bodies.append({"vector": v, "k": 10})
        elif kind == 1:
            bodies.append({"vector": v, "k": 5, "rescore": "none"})
        elif kind == 2:
            bodies.append({"vector": [v, qs[(i + 1) % 24].tolist()], "k": 10})
        elif kind == 3:
            bodies.append({"vector": v, "k": 10, "filter": {"group": "odd"}, "with_text": False})
        elif kind == 4:
            bodies.append({"query": f"question {i} about cats", "k": 10})
        elif kind == 5:
            bodies.append({"query": [f"dogs {i}", f"cats {i}"], "k": 7, "rescore_multiplier": 2})
        elif kind == 6:
            bodies.append({"query": f"document {i}", "k": 5, "mode": "hybrid"})
        else:
            bodies.append({"query": f"about dogs {i}", "k": 3, "mode": "keyword", "filter": {"group": "even"}})
    return bodies


def post_all(url: str, bodies: list[dict[str, Any]], workers: int) -> list[httpx.Response]:
    with httpx.Client(base_url=url, timeout=60) as client:
        if workers == 1:
            return [client.post("/search", json=b) for b in bodies]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda b: client.post("/search", json=b), bodies))


def test_batched_requests_get_what_lone_requests_get(servers: dict[str, Any]) -> None:
    state = servers["app"].state.bitsearch
    assert state.batcher is not None and servers["lone_app"].state.bitsearch.batcher is None
    shared: list[int] = []
    search = state.search

    def spy(vectors: Any, **kw: Any) -> Any:
        shared.append(0 if vectors is None else len(vectors))
        return search(vectors, **kw)

    state.search = spy
    enc: HashEncoder = servers["encoder"]
    enc.calls.clear()
    bodies = mixed_bodies() * 2
    try:
        alone = post_all(servers["lone"], bodies, 1)
        together = post_all(servers["batched"], bodies, 16)
    finally:
        del state.search
    for body, a, t in zip(bodies, alone, together, strict=True):
        assert a.status_code == 200, (body, a.text)
        assert t.status_code == 200, (body, t.text)
        assert t.json()["results"] == a.json()["results"], body
        assert t.json()["stages"] == a.json()["stages"] and t.json()["k"] == a.json()["k"]
    texts = sum(1 for b in bodies if "query" in b and b.get("mode") != "keyword")
    assert len(enc.calls) < texts, enc.calls  # texts that waited together shared an encoder call
    assert max(shared) > 2, shared  # and requests with equal arguments one Collection.search


def test_one_bad_request_does_not_fail_its_batch(servers: dict[str, Any]) -> None:
    good = mixed_bodies()[:8]
    bad = [
        {"query": "boom goes the model", "k": 5},  # the encoder fails on this text only
        {"vector": unit_vectors(1, seed=3)[0].tolist(), "filter": {}},  # Collection.search rejects the filter
        {"query": "fine", "mode": "sideways"},
    ]
    bodies = [x for pair in zip(good, bad * 3, strict=False) for x in pair] + good[len(bad) * 3 :]
    alone = post_all(servers["lone"], bodies, 1)
    together = post_all(servers["batched"], bodies, len(bodies))
    for body, a, t in zip(bodies, alone, together, strict=True):
        assert t.status_code == a.status_code, (body, a.text, t.text)
        assert t.json().get("results") == a.json().get("results"), body
        if body in bad:
            assert t.status_code == 422 and t.json()["detail"] == a.json()["detail"], t.text
        else:
            assert t.status_code == 200, t.text


@pytest.mark.parametrize("which", ["batched", "lone"])
def test_lean_json_path_rejects_what_validation_rejects(servers: dict[str, Any], which: str) -> None:
    url = servers[which]
    v = ", ".join(["0.1"] * DIM)

    def raw(body: str) -> httpx.Response:
        return httpx.post(url + "/search", content=body, headers={"content-type": "application/json"}, timeout=30)

    cases = [
        ('{"vector": [NaN, ' + v[5:] + "]}", 422, "NaN"),
        ('{"vector": [Infinity, ' + v[5:] + "]}", 422, "finite"),
        ('{"vector": [1e39, ' + v[5:] + "]}", 422, "float32"),
        ('{"vector": [[' + v + "], [-1e39, " + v[5:] + "]]}", 422, "vector[1][0]"),
        ('{"query": "\\udfff"}', 422, "surrogate"),
        ('{"query": "fine", "filter": {"\\ud800": 1}}', 422, "surrogate"),
        ('{"vector": [' + v + '], "bogus": 1}', 422, "bogus"),
        ('{"vector": [' + v + '], "k": 0}', 422, "k"),
        ('{"vector": [' + v + '], "rescore": "gold"}', 422, "gold"),
        ('{"vector": [' + v + '], "filter": {"n": 99999999999999999999}}', 422, "64 bits"),
        ('{"vector": [' + v + "]", 400, "not valid JSON"),
        ('{"vector": [0.1]}', 422, "dimensions"),
        ('{"query": "a", "vector": [' + v + "]}", 422, "exactly one"),
        ("[1, 2]", 422, "JSON object"),
    ]
    for body, status, needle in cases:
        r = raw(body)
        assert r.status_code == status, (body[:60], r.text)
        assert needle in r.text, (body[:60], r.text)
    # what pydantic coerces (a numeric string for k) still works, through the full validation
    r = raw('{"vector": [' + v + '], "k": "3"}')
    assert r.status_code == 200 and len(r.json()["results"][0]) == 3, r.text


def test_batch_window_is_checked(collection: Collection) -> None:
    with pytest.raises(ValueError, match="batch_window_ms"):
        create_app(collection, batch_window_ms=-1)
