"""The HTTP layer under hostile clients: bad input gets a 4xx and keeps the connection, stalled or slow
connections are dropped in seconds without locking others out, DNS rebinding is refused, and every
response carries security headers.

Real servers listen on 127.0.0.1 only; every loop is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import re
import selectors
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving import ServerThread

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from bitsearch import Collection  # noqa: E402
from bitsearch.server import create_app, server_config  # noqa: E402

DIM = 32
N = 40
KEY = "hardening-key-0123"
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
SLACK = 4.0  # seconds beyond a timeout that two busy cores may need


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_collection(path: Path) -> Collection:
    vecs = unit_vectors(N)
    col = Collection.create(path, DIM, calibration_embeddings=vecs)
    col.add(vecs, ids=[f"d{i}" for i in range(N)], texts=[f"text {i}" for i in range(N)], metadata=[{"n": 1}] * N)
    return col


class Served(ServerThread):
    """A real uvicorn server, guarded as `bitsearch serve` runs it, on a free loopback port, in a thread."""

    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(app, server_config(app, log_level="error", timeout_graceful_shutdown=1, **options))


def call(
    conn: http.client.HTTPConnection, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], http.client.HTTPResponse]:
    """One request; the body may be a str (sent as is) or JSON-able."""
    data = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    raw = resp.read()
    return resp.status, (json.loads(raw) if raw else {}), resp


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Collection]]:
    col = make_collection(tmp_path_factory.mktemp("hard") / "col")
    app = create_app(col, body_timeout=BODY_TIMEOUT, refresh_seconds=None)
    with Served(app, header_timeout=HEADER_TIMEOUT, max_connections=100) as srv:
        yield srv, col


# ----------------------------------------------------------------------------- errors are 4xx, connections survive


def test_every_error_keeps_the_keep_alive_connection(
    served: tuple[Served, Collection], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, _ = served
    state = srv.server.config.app.state.bitsearch  # type: ignore[union-attr]
    good = {"vector": unit_vectors(1, seed=5)[0].tolist(), "k": 3}
    original = state.search

    def search(vectors: Any, **kw: Any) -> Any:
        if kw.get("k") == 7:
            raise RuntimeError("a bug")
        return original(vectors, **kw)

    monkeypatch.setattr(state, "search", search)
    conn = srv.conn()
    bad: list[tuple[str, str, Any, int]] = [
        ("POST", "/search", {**good, "k": 7}, 500),  # an unexpected error
        ("POST", "/search", '{"vector": [1, 2', 400),  # broken JSON
        ("POST", "/search", {"vector": [0.1] * (DIM + 1)}, 422),
        ("POST", "/search", {**good, "filter": {"n": {"$gt": 2**70}}}, 422),
        ("POST", "/documents", {"vectors": [good["vector"]], "ids": ["d1"]}, 409),
        ("DELETE", "/documents/no-such-doc", None, 404),
        ("POST", "/documents", '{"vectors": [[0.5]], "texts": ["\\udfff"]}', 422),
        ("POST", "/search", {**good, "mode": "nonsense"}, 422),
    ]
    conn.connect()
    local = conn.sock.getsockname()
    for method, path, body, status in bad:
        got, data, resp = call(conn, method, path, body)
        assert got == status, (path, body, got, data)
        assert isinstance(data["detail"], str) and data["detail"] and "Traceback" not in data["detail"]
        assert not resp.will_close, (path, resp.getheaders())
        # the next request on the same connection is answered
        got, data, _ = call(conn, "POST", "/search", good)
        assert got == 200 and len(data["results"][0]) == 3, data
        assert conn.sock is not None and conn.sock.getsockname() == local, "the connection was reopened"
    conn.close()


def test_lone_surrogates_rejected_before_anything_is_written(served: tuple[Served, Collection]) -> None:
    srv, col = served
    before = len(col)
    vec = unit_vectors(1, seed=9)[0].tolist()
    # json.dumps escapes a lone surrogate as "\\udfff", as a client would send it
    bodies: list[tuple[str, dict[str, Any], str]] = [
        ("/documents", {"vectors": [vec], "ids": ["a\udfff"]}, "ids[0]"),
        ("/documents", {"vectors": [vec], "texts": ["x\ud800y"]}, "texts[0]"),
        ("/documents", {"vectors": [vec], "metadata": [{"k\udfff": 1}]}, "metadata[0]"),
        ("/documents", {"vectors": [vec], "metadata": [{"k": ["ok", {"v": "\udc00"}]}]}, "metadata[0]"),
        ("/search", {"vector": vec, "filter": {"n": "\udfff"}}, "filter"),
        ("/search", {"query": ["fine", "\udfff"]}, "query[1]"),
    ]
    conn = srv.conn()
    for path, body, where in bodies:
        status, data, _ = call(conn, "POST", path, body)
        assert status == 422, (body, status, data)
        assert "surrogate" in data["detail"] and where in data["detail"], data
    conn.close()
    assert len(col) == before


def test_deep_nesting_and_out_of_range_values_are_4xx(served: tuple[Served, Collection]) -> None:
    srv, col = served
    before = len(col)
    vec = unit_vectors(1, seed=2)[0].tolist()
    deep: Any = {"n": 1}
    for _ in range(200):
        deep = {"$and": [deep]}
    nested: Any = 1
    for _ in range(200):
        nested = [nested]
    cases: list[tuple[str, Any, int, str]] = [
        ("/search", {"vector": vec, "filter": deep}, 422, "nested"),
        ("/search", {"vector": vec, "filter": {"n": {"$lt": -(2**64)}}}, 422, "64 bits"),
        ("/search", {"vector": vec, "filter": {"n": {"$in": [1, 2**63]}}}, 422, "64 bits"),
        ("/documents", {"vectors": [vec], "metadata": [{"deep": nested}]}, 422, "nested"),
        ("/search", "[" * 50_000 + "]" * 50_000, 400, "pars"),  # too deep for the JSON parser itself
        ("/search", {"vector": [1e39] * DIM, "rescore": "none"}, 422, "vector[0]"),  # inf as float32
        ("/search", '{"vector": [NaN' + ", 0" * (DIM - 1) + "]}", 422, "finite"),
        ("/documents", {"vectors": [[0.0] * (DIM - 1) + [-1e39]]}, 422, "vectors[0]"),
    ]
    conn = srv.conn()
    for path, body, status, needle in cases:
        got, data, _ = call(conn, "POST", path, body)
        assert got == status, (path, str(body)[:80], got, data)
        assert needle in data["detail"], data
    conn.close()
    assert len(col) == before


def test_unwritable_collection_is_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    col = make_collection(tmp_path / "col")
    vec = unit_vectors(1, seed=4)[0].tolist()
    with TestClient(create_app(col, refresh_seconds=None), base_url="http://localhost") as client:
        for exc in (sqlite3.OperationalError("attempt to write a readonly database"), PermissionError(13, "denied")):

            def add(*args: Any, exc: Exception = exc, **kw: Any) -> Any:
                raise exc

            monkeypatch.setattr(col, "add", add)
            resp = client.post("/documents", json={"vectors": [vec]})
            assert resp.status_code == 503, resp.text
            assert "collection" in resp.json()["detail"]


def test_huge_finite_vector_leaves_the_server_up(tmp_path: Path) -> None:
    """3e38 is finite in float32 but its squared norm is not: the request must not take `bitsearch serve` down.

    Also runs `serve`'s hardening options end to end (Host names, timeouts, connection cap).
    """
    col = make_collection(tmp_path / "col")
    col.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "bitsearch.cli", "serve", str(tmp_path / "col"), "--port", str(port)]
    cmd += ["--log-level", "warning", "--allowed-host", "search.lan", "--header-timeout", "2", "--body-timeout", "5"]
    cmd += ["--max-connections", "50"]
    env = {k: v for k, v in os.environ.items() if k != "BITSEARCH_API_KEY"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                if call(conn, "GET", "/health")[0] == 200:
                    break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "bitsearch serve did not start"
            time.sleep(0.2)
        assert call(conn, "GET", "/info", headers={"Host": "search.lan:8000"})[0] == 200
        assert call(conn, "GET", "/info", headers={"Host": "evil.example"})[0] == 421
        alternating = [3e38 if i % 2 else -3e38 for i in range(DIM)]
        for vector, rescore in itertools.product(([3e38] * DIM, [-3e38] * DIM, alternating), ("none", "int8")):
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status, _, _ = call(conn, "POST", "/search", {"vector": vector, "rescore": rescore})
                assert status in (200, 422), status
            try:
                status = call(http.client.HTTPConnection("127.0.0.1", port, timeout=10), "GET", "/health")[0]
            except OSError as exc:
                pytest.fail(f"bitsearch serve died on a vector of +-3e38 (rescore={rescore}): {exc}")
            assert status == 200
    finally:
        proc.terminate()
        proc.wait(15)


# ----------------------------------------------------------------------------- slow and stalled connections


def _readable(socks: set[socket.socket] | list[socket.socket], timeout: float) -> list[socket.socket]:
    """The sockets with data or EOF waiting (epoll where there is one: no 1024-descriptor ceiling)."""
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        return [key.fileobj for key, _ in sel.select(timeout)]  # type: ignore[misc]


def _closed_by_server(socks: list[socket.socket], within: float) -> int:
    """How many of socks the server closes (EOF or reset) within ``within`` seconds."""
    pending = set(socks)
    closed = 0
    deadline = time.monotonic() + within
    while pending and time.monotonic() < deadline:
        ready = _readable(pending, 0.2)
        for s in ready:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                closed += 1
                pending.discard(s)
    return closed


def test_stalled_headers_are_dropped_and_never_lock_others_out(served: tuple[Served, Collection]) -> None:
    srv, _ = served  # header timeout 1 s, at most 100 connections
    socks: list[socket.socket] = []
    try:
        for i in range(250):  # 2.5x the cap, each stalled mid-headers
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-%d: " % i)
            socks.append(s)
        # a fresh client is answered at once, while they are all open (the oldest stalled ones made room)
        t0 = time.monotonic()
        status, data, _ = call(srv.conn(timeout=5), "GET", "/health")
        assert status == 200 and data == {"status": "ok"}
        assert time.monotonic() - t0 < 2.0
        # a client trickling its headers does not push its deadline back
        trickler = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        start = time.monotonic()
        for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n":
            try:
                trickler.sendall(bytes([byte]))
            except OSError:
                break
            if time.monotonic() - start > HEADER_TIMEOUT + SLACK or _readable([trickler], 0.1):
                break
        # every stalled connection is closed by the server within the header timeout (+ slack)
        assert _closed_by_server([*socks, trickler], HEADER_TIMEOUT + SLACK) == len(socks) + 1
        assert time.monotonic() - start < HEADER_TIMEOUT + SLACK + 1
        socks.append(trickler)
        assert call(srv.conn(timeout=5), "GET", "/health")[0] == 200
    finally:
        for s in socks:
            s.close()


def test_slow_requests_are_not_cut_by_the_header_deadline(
    served: tuple[Served, Collection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Work that outlasts the header timeout, alone or pipelined behind another request, is answered."""
    srv, _ = served
    state = srv.server.config.app.state.bitsearch  # type: ignore[union-attr]
    original = state.search

    def search(vectors: Any, **kw: Any) -> Any:
        if kw.get("k") == 9:
            time.sleep(HEADER_TIMEOUT * 1.5)
        return original(vectors, **kw)

    monkeypatch.setattr(state, "search", search)
    vec = unit_vectors(1, seed=6)[0].tolist()
    requests = b""
    for k in (3, 9):
        body = json.dumps({"vector": vec, "k": k}).encode()
        requests += (
            b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(requests)  # pipelined: the second starts when the first is answered
        reply = b""
        deadline = time.monotonic() + HEADER_TIMEOUT * 1.5 + SLACK
        while reply.count(b"HTTP/1.1 200") < 2 and time.monotonic() < deadline:
            if not _readable([s], 0.2):
                continue
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.count(b"HTTP/1.1 200") == 2, reply[:300]


def test_idle_connection_without_a_request_is_dropped(served: tuple[Served, Collection]) -> None:
    srv, _ = served
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(20)]
    try:
        t0 = time.monotonic()
        assert _closed_by_server(socks, HEADER_TIMEOUT + SLACK) == len(socks)
        assert time.monotonic() - t0 >= HEADER_TIMEOUT * 0.8  # not before its time
    finally:
        for s in socks:
            s.close()


def test_slow_body_gets_408_and_is_dropped(served: tuple[Served, Collection]) -> None:
    srv, _ = served  # body timeout 1.5 s
    socks: list[socket.socket] = []
    try:
        for _ in range(30):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(
                b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"vector": ['
            )
            socks.append(s)
        t0 = time.monotonic()
        replies = {s: b"" for s in socks}
        open_ = set(socks)
        while open_ and time.monotonic() - t0 < BODY_TIMEOUT + SLACK:
            for s in list(open_):
                with contextlib.suppress(OSError):
                    s.sendall(b"0,")  # a trickle, never the whole body
            ready = _readable(open_, 0.2)
            for s in ready:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                replies[s] += data
                if not data:
                    open_.discard(s)
        assert not open_, f"{len(open_)} slow bodies still open after {BODY_TIMEOUT + SLACK} s"
        assert all(r.startswith(b"HTTP/1.1 408") for r in replies.values()), {r[:40] for r in replies.values()}
        assert b"not received within" in next(iter(replies.values()))
        assert call(srv.conn(timeout=5), "GET", "/health")[0] == 200
    finally:
        for s in socks:
            s.close()


def test_oversized_headers_are_refused(served: tuple[Served, Collection]) -> None:
    srv, _ = served
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        with contextlib.suppress(OSError):  # the server may close while we still send
            for i in range(200):  # 200 x 1 KiB: past the 64 KiB limit
                s.sendall(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) if i else head)
        reply = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(4096):
                reply += chunk
        assert reply.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), reply[:80]


# ----------------------------------------------------------------------------- Host check and security headers


@pytest.fixture(scope="module")
def small_col(tmp_path_factory: pytest.TempPathFactory) -> Collection:
    return make_collection(tmp_path_factory.mktemp("hosts") / "col")


def test_host_check_without_a_key(small_col: Collection) -> None:
    vec = unit_vectors(1, seed=11)[0].tolist()
    app = create_app(small_col, refresh_seconds=None, allowed_hosts=["Search.LAN", "::2"])
    client = TestClient(app)
    for host in ("attacker.example", "attacker.example:8000", "localhost.attacker.example", "127.0.0.2", "[::3]"):
        for method, path, body in (("POST", "/documents", {"vectors": [vec]}), ("DELETE", "/documents/d1", None)):
            resp = client.request(method, f"http://{host}{path}", json=body)
            assert resp.status_code == 421, (host, path, resp.status_code)
            assert "--allowed-host" in resp.json()["detail"]
    assert len(small_col) == N and "d1" in small_col
    assert client.get("http://attacker.example/health").status_code == 200  # the liveness probe: any Host
    for host in ("localhost", "localhost:8000", "127.0.0.1:1", "[::1]:8000", "search.lan", "[::2]:80"):
        assert client.get(f"http://{host}/info").status_code == 200, host
    resp = client.get("/info", headers={"host": "attacker.example"})
    assert resp.status_code == 421
    # with a key any Host is served: the key is what a rebinding page lacks
    client = TestClient(create_app(small_col, api_key=KEY, refresh_seconds=None))
    assert client.get("http://attacker.example/info").status_code == 401
    assert client.get("http://attacker.example/info", headers={"X-API-Key": KEY}).status_code == 200


def test_security_headers_on_every_response(small_col: Collection) -> None:
    client = TestClient(create_app(small_col, refresh_seconds=None), base_url="http://localhost")
    responses = [
        client.get("/"),
        client.get("/static/app.js"),
        client.get("/health"),
        client.get("/info"),
        client.get("/no-such-page"),
        client.post("/search", json={"vector": [1.0]}),
        client.get("http://evil.example/info"),
        client.get("/docs"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 404, 422, 421, 200]
    for resp in responses:
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["x-frame-options"] == "DENY"
        assert resp.headers["referrer-policy"] == "no-referrer"
        csp = resp.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    page_csp = responses[0].headers["content-security-policy"]
    assert "unsafe-inline" not in page_csp and "http" not in page_csp
    assert "cdn.jsdelivr.net" in responses[-1].headers["content-security-policy"]  # Swagger UI's own files
    # the page loads only same-origin files, and nothing inline that its policy would block
    html = responses[0].text
    assert "<style" not in html and not re.search(r"\s(style|on[a-z]+)=", html)
    assert '<script src="/static/app.js">' in html and html.count("<script") == 1


def test_h11_protocol_is_guarded_too(small_col: Collection) -> None:
    """Without httptools uvicorn runs h11: the same deadline, connection cap and header limit."""
    app = create_app(small_col, refresh_seconds=None)
    with Served(app, header_timeout=HEADER_TIMEOUT, max_connections=20, http="h11") as srv:
        assert srv.server.config.http_protocol_class.__name__ == "GuardedH11Protocol"
        socks: list[socket.socket] = []
        try:
            for _ in range(40):
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                socks.append(s)
            assert call(srv.conn(timeout=5), "GET", "/health")[0] == 200
            assert _closed_by_server(socks, HEADER_TIMEOUT + SLACK) == len(socks)
        finally:
            for s in socks:
                s.close()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
            with contextlib.suppress(OSError):
                s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 100_000)  # never ends
            assert s.recv(100).startswith((b"HTTP/1.1 431", b"HTTP/1.1 400"))


def test_api_docs_open_without_the_key_and_data_does_not(tmp_path: Path) -> None:
    """A browser cannot send the key header when it follows the page's "API docs" link: /docs and the schema
    are public (they hold no data); everything else still needs the key, and the Host check still applies."""
    col = make_collection(tmp_path / "col")
    with TestClient(create_app(col, api_key=KEY, refresh_seconds=None), base_url="http://localhost") as client:
        for path in ("/docs", "/openapi.json", "/redoc"):
            assert client.get(path).status_code == 200, path
        assert "/search" in client.get("/openapi.json").json()["paths"]
        assert client.get("/info").status_code == 401
        assert client.post("/search", json={"vector": unit_vectors(1)[0].tolist()}).status_code == 401
    with TestClient(create_app(col, refresh_seconds=None), base_url="http://attacker.example") as client:
        assert client.get("/openapi.json").status_code == 421


def test_filter_on_a_field_no_document_has_is_reported(tmp_path: Path) -> None:
    col = make_collection(tmp_path / "col")
    vec = unit_vectors(1, seed=3)[0].tolist()
    with TestClient(create_app(col, refresh_seconds=None), base_url="http://localhost") as client:
        body: dict[str, Any] = {"vector": vec, "k": 3, "filter": {"year": {"$gte": 2010}}}
        data = client.post("/search", json=body).json()
        assert data["results"] == [[]]
        assert data["warnings"] == ["no stored document has the metadata field 'year' that the filter names"]
        ok = client.post("/search", json={"vector": vec, "k": 3, "filter": {"n": 1}}).json()
        assert len(ok["results"][0]) == 3 and ok["warnings"] == []


def test_read_only_and_full_disk_are_503(tmp_path: Path) -> None:
    from bitsearch.errors import DiskFullError, ReadOnlyCollectionError

    col = make_collection(tmp_path / "col")
    vec = unit_vectors(1, seed=4)[0].tolist()
    with TestClient(create_app(col, refresh_seconds=None), base_url="http://localhost") as client:
        for exc in (ReadOnlyCollectionError("the collection is read-only"), DiskFullError("no space left on device")):

            def add(*args: Any, exc: Exception = exc, **kw: Any) -> Any:
                raise exc

            col.add = add  # type: ignore[method-assign]
            resp = client.post("/documents", json={"vectors": [vec]})
            assert resp.status_code == 503 and str(exc) in resp.json()["detail"], resp.text


def test_documents_as_a_list_of_objects(tmp_path: Path) -> None:
    """The shape newcomers guess ({"documents": [{"id", "text", ...}]}) is accepted; mixed shapes are a 422."""
    col = make_collection(tmp_path / "col")
    v = unit_vectors(3, seed=9)
    docs = [
        {"id": "new-a", "text": "first", "vector": v[0].tolist(), "metadata": {"lang": "en"}},
        {"id": "new-b", "text": "second", "vector": v[1].tolist()},
    ]
    with TestClient(create_app(col, refresh_seconds=None), base_url="http://localhost") as client:
        r = client.post("/documents", json={"documents": docs})
        assert r.status_code == 201, r.text
        assert r.json()["ids"] == ["new-a", "new-b"] and r.json()["documents"] == N + 2
        hit = client.post("/search", json={"vector": v[0].tolist(), "k": 1}).json()["results"][0][0]
        assert hit["id"] == "new-a" and hit["text"] == "first" and hit["metadata"] == {"lang": "en"}
        for bad in (
            {"documents": docs, "ids": ["x", "y"]},
            {"documents": [docs[0], {"text": "no id or vector"}]},
            {"documents": [{"id": "z", "vector": v[2].tolist(), "title": "unknown field"}]},
        ):
            r = client.post("/documents", json=bad)
            assert r.status_code == 422, (bad, r.text)
        assert len(col) == N + 2
