"""The HTTP API and search page of ``bitsearch serve``: a thin FastAPI layer over ``Collection`` (or a
``ShardedCollection``, whose shard actors the same endpoints call).

Reads run in a bounded thread pool against the collection's immutable state snapshot; writes go
through the collection's own write lock. Requests are checked (Host, auth, size, shape, Unicode)
before any work, and a client that disconnects while its request waits is dropped before it costs
anything. Connections are bounded too (``run_server``): request headers must arrive within a
timeout, bodies within another, and past a connection cap the oldest connection not being served
makes room, so clients that open connections and stall cannot lock others out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import anyio
import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator, model_validator

from bitsearch import __version__
from bitsearch.collection import Collection
from bitsearch.distributed import MANIFEST as SHARDED_MANIFEST
from bitsearch.distributed import ShardedCollection
from bitsearch.encode import BACKENDS
from bitsearch.errors import (
    BitsearchError,
    CollectionError,
    DiskFullError,
    DuplicateIdError,
    InvalidInputError,
    ModelLoadError,
    NoModelError,
    PartialWriteError,
    ReadOnlyCollectionError,
    ShardUnavailableError,
    UnknownIdError,
)
from bitsearch.results import Hit

__all__ = [
    "DEFAULT_BATCH_WINDOW_MS",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONNECTIONS",
    "MAX_BATCH_QUERIES",
    "MAX_K",
    "SearchBatcher",
    "ServerState",
    "answer_search",
    "create_app",
    "error_response",
    "model_info",
    "open_served",
    "plain_search_request",
    "guarded_protocol",
    "run_server",
    "server_config",
]

log = logging.getLogger("bitsearch.server")

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_K = 1000
MAX_QUERIES = 256  # queries per /search request
MAX_RESCORE_MULTIPLIER = 100
MAX_ENCODE_BATCH = 256  # query texts per model call
MAX_JSON_DEPTH = 32  # nesting of a filter or of a document's metadata
MAX_FILTER_VALUES = 10_000  # values in one filter (SQLite binds each as a parameter)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what SQLite compares as an integer
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds from connecting (or from the last response) to complete request headers
DEFAULT_BODY_TIMEOUT = 30.0  # seconds to receive a whole request body
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
# micro-batching: concurrent /search requests share one encoder call and, with equal arguments, one
# Collection.search; a batch forms from what is queued when a worker is free, plus what arrives within the window
DEFAULT_BATCH_WINDOW_MS = 1.0
MAX_BATCH_QUERIES = 64  # queries per batch (the encoder's call); a request with more is served alone
# queries per shared Collection.search: up to 16 the exact scans run in numba, per query as for one query
# (beyond, BLAS products could round scores differently from a lone request's)
MAX_SEARCH_GROUP = 16
STATIC_DIR = Path(__file__).resolve().parent / "static"
# paths that need no API key: the liveness probe, the search page's own files (the page asks for the key) and the
# API's documentation (a browser cannot send the key header when it opens /docs; the schema holds no data)
PUBLIC_PATHS = frozenset({"/health", "/", "/favicon.ico", "/docs", "/redoc", "/docs/oauth2-redirect", "/openapi.json"})
PUBLIC_PREFIXES = ("/static/",)
# Host names a server without an API key answers (any port): a browser page cannot make its requests carry
# these names unless it is served from this machine, which defeats DNS rebinding
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
_PAGE_CSP = b"default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
# FastAPI's /docs (Swagger UI) and /redoc load their scripts, styles and fonts from CDNs and start with an inline script
_DOCS_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    b"font-src 'self' https://fonts.gstatic.com; "
    b"img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    b"worker-src 'self' blob:; base-uri 'none'; frame-ancestors 'none'"
)
_DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
_COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
PAGE_SECURITY_HEADERS = [(b"content-security-policy", _PAGE_CSP), *_COMMON_HEADERS]
DOCS_SECURITY_HEADERS = [(b"content-security-policy", _DOCS_CSP), *_COMMON_HEADERS]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
T = TypeVar("T")

DocIdIn = StrictStr | StrictInt
RESCORE_NAMES = ("int8", "binary", "float32", "none")
# pydantic names the member of a union that failed in an error's location; these are not field names
_UNION_TAG = re.compile(r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\]|literal\[.*\]|function-.*)$")


# ----------------------------------------------------------------------------- request / response models


class SearchRequest(BaseModel):
    """One query or a batch: text (embedded with the collection's model) or vectors of the collection's dim."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"query": "how do I parse JSON?", "k": 10},
                {"query": ["first question", "second question"], "k": 5, "rescore": "int8", "rescore_multiplier": 4},
                {"vector": [0.12, -0.03, 0.08], "k": 10, "rescore": "none"},
            ]
        },
    )

    query: str | list[str] | None = Field(None, description="Query text, or a list of them (a batch).")
    vector: list[float] | list[list[float]] | None = Field(
        None, description="A query embedding, or a list of them (a batch). Give `query` or `vector`, not both."
    )
    k: int = Field(10, ge=1, le=MAX_K, description="Results per query.")
    rescore: str | list[str] | None = Field(
        "int8", description='Rows that rescore stage-1 candidates: "int8", "binary", "float32", "none" or a chain.'
    )
    rescore_multiplier: int = Field(4, ge=1, le=MAX_RESCORE_MULTIPLIER, description="Stage 1 keeps k x this many.")
    mode: str | None = Field(None, description='"dense", "keyword" or "hybrid" where the collection supports it.')
    filter: dict[str, Any] | None = Field(None, description="Metadata filter, where the collection supports it.")
    with_text: bool = Field(True, description="Return each hit's text and metadata.")
    allow_partial: bool = Field(
        False,
        description="Sharded collections: answer from the shards that answer (`partial` says so) instead of 503.",
    )

    @field_validator("rescore")
    @classmethod
    def _known_rescore(cls, value: str | list[str] | None) -> str | list[str] | None:
        for name in [value] if isinstance(value, str) else value or []:
            if name not in RESCORE_NAMES:
                raise ValueError(f"unknown rescore {name!r}: expected one of {', '.join(RESCORE_NAMES)}, or a list")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> SearchRequest:
        if (self.query is None) == (self.vector is None):
            raise ValueError("give exactly one of `query` (text) or `vector` (an embedding)")
        return self


class DocumentIn(BaseModel):
    """One document of the list form of ``POST /documents``."""

    model_config = ConfigDict(extra="forbid")

    id: DocIdIn | None = Field(None, description="Unique str or int id; default: the next integer.")
    text: str | None = Field(None, description="The text (stored, and embedded when there is no vector).")
    vector: list[float] | None = Field(None, description="The embedding, of the collection's dim.")
    metadata: dict[str, Any] | None = Field(None, description="A JSON object.")


class AddRequest(BaseModel):
    """Documents to add: vectors and/or texts (texts alone are embedded with the collection's model), as
    parallel lists, or as a list of ``documents`` ({id, text, vector, metadata} each)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "texts": ["A first document.", "A second one."],
                    "ids": ["doc-1", "doc-2"],
                    "metadata": [{"lang": "en"}, None],
                },
                {"documents": [{"id": "doc-1", "text": "A first document.", "metadata": {"lang": "en"}}]},
            ]
        },
    )

    ids: list[DocIdIn] | None = Field(None, description="Unique str or int ids; default: the next integers.")
    texts: list[str] | None = Field(None, description="Document texts (stored, and embedded when no vectors).")
    vectors: list[list[float]] | None = Field(None, description="Document embeddings of the collection's dim.")
    metadata: list[dict[str, Any] | None] | None = Field(None, description="One JSON object (or null) per document.")
    documents: list[DocumentIn] | None = Field(
        None, description="The same as a list of {id, text, vector, metadata} objects, instead of the lists above."
    )

    @model_validator(mode="after")
    def _has_documents(self) -> AddRequest:
        if self.documents is not None:
            if any(v is not None for v in (self.ids, self.texts, self.vectors, self.metadata)):
                raise ValueError("give `documents`, or the lists `ids`/`texts`/`vectors`/`metadata`, not both")
            docs = self.documents
            for name in ("id", "text", "vector"):
                given = [getattr(d, name) is not None for d in docs]
                if any(given) and not all(given):
                    missing = given.index(False)
                    raise ValueError(f"documents[{missing}] has no `{name}` while others have one: all or none")
            self.ids = [d.id for d in docs] if docs and docs[0].id is not None else None  # type: ignore[misc]
            self.texts = [d.text for d in docs] if docs and docs[0].text is not None else None  # type: ignore[misc]
            self.vectors = [d.vector for d in docs] if docs and docs[0].vector is not None else None  # type: ignore[misc]
            self.metadata = [d.metadata for d in docs] if any(d.metadata is not None for d in docs) else None
            if not docs:
                self.vectors = []
        if self.texts is None and self.vectors is None:
            raise ValueError("give `texts` and/or `vectors` (or `documents`)")
        return self


class HitOut(BaseModel):
    """One hit."""

    id: str | int
    score: float
    text: str | None = None
    metadata: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    """Hits per query (a list even for one query), the stages run, and seconds per stage."""

    results: list[list[HitOut]]
    stages: list[str]
    timings: dict[str, float]
    k: int
    warnings: list[str] = Field(default_factory=list, description="What may explain a short answer.")
    partial: bool = Field(False, description="Sharded collections: some shard did not answer (allow_partial).")
    shards_answered: list[str] | None = Field(None, description="Sharded collections: the shards that answered.")


class AddResponse(BaseModel):
    """The ids added and the collection's size afterwards."""

    ids: list[str | int]
    added: int
    documents: int


class DeleteResponse(BaseModel):
    """The id deleted and the collection's size afterwards."""

    deleted: str | int
    documents: int


class ErrorResponse(BaseModel):
    """Every error: a readable ``detail`` (validation errors also list ``errors``)."""

    detail: str
    errors: list[dict[str, Any]] | None = None


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 408, 409, 413, 415, 421, 422, 503)
}

Served = Collection | ShardedCollection


def open_served(path: str | os.PathLike[str], *, shard_timeout: float | None = 60.0) -> Served:
    """The collection at ``path``: a ShardedCollection when its sharded manifest is there (its shard actors
    started on the running Ray, else a local one), else a Collection. ``shard_timeout`` bounds each wait for
    a shard (seconds), so a hung shard answers 503 instead of holding the request."""
    if (Path(path) / SHARDED_MANIFEST).is_file():
        return ShardedCollection.open(path, timeout=shard_timeout)
    return Collection.open(path)


def model_info(col: Served) -> dict[str, Any] | None:
    """The embedding model a collection records (a sharded one in its collection options), or None."""
    m = col.manifest
    info = m.get("options", {}).get("model") if isinstance(col, ShardedCollection) else m.get("model")
    return info if isinstance(info, dict) and info.get("name") else None


# ----------------------------------------------------------------------------- shared state


class ServerState:
    """What the endpoints share: the collection, the lazily loaded encoder, and the thread limiter."""

    def __init__(
        self, collection: Served, *, threads: int, encoder: Any | None = None, encoder_backend: str | None = None
    ) -> None:
        self.collection = collection
        self.encoder_backend = encoder_backend
        self.sharded = isinstance(collection, ShardedCollection)
        self.limiter = anyio.CapacityLimiter(threads)
        self._encoder = encoder
        self._encoder_error: ModelLoadError | None = None
        self._encoder_lock = threading.Lock()  # one load, shared by every request
        self.search_lock: threading.Lock | None = None  # set when numba's threading layer is not thread-safe
        self._model_queue: queue.Queue[tuple[list[str], bool, Future[np.ndarray]] | None] = queue.Queue()
        self._model_thread: threading.Thread | None = None
        self._pending_lock = threading.Lock()
        self._local = threading.local()
        self.batcher: SearchBatcher | None = None  # set by create_app when micro-batching is on
        self.has_index = False  # whether the collection has an ANN index (checked when it is refreshed)
        self.check_index()

    def check_index(self) -> None:
        """Note whether the collection has an ANN index (Collection.manifest is a deep copy: not per request;
        a sharded collection asks its shards)."""
        if isinstance(self.collection, ShardedCollection):
            self.has_index = "ivf" in self.collection.stats().get("stages", {})
        else:
            self.has_index = bool(self.collection.manifest.get("ann"))

    @property
    def encoder_loaded(self) -> bool:
        return self._encoder is not None

    def encoder(self) -> Any:
        """The encoder the collection was built with, loaded once (double-checked under a lock)."""
        if self._encoder is not None:
            return self._encoder
        with self._encoder_lock:
            if self._encoder is None:
                if self._encoder_error is not None:
                    raise self._encoder_error
                info = model_info(self.collection)
                if info is None:
                    raise NoModelError(
                        "this collection records no embedding model, so the server cannot embed text: "
                        "send `vector` embeddings instead of `query` text"
                    )
                try:
                    from bitsearch.encode import Encoder

                    enc = Encoder.from_manifest_info(info, backend=self.encoder_backend)
                except ModelLoadError as exc:
                    self._encoder_error = exc
                    raise
                except ImportError as exc:
                    self._encoder_error = ModelLoadError(f"cannot embed text: {exc} (pip install 'bitsearch[embed]')")
                    raise self._encoder_error from None
                if enc.dim != self.collection.dim:
                    self._encoder_error = ModelLoadError(
                        f"model {enc.name!r} gives {enc.dim}-dim embeddings, the collection {self.collection.dim}"
                    )
                    raise self._encoder_error
                self._encoder = enc
        return self._encoder

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        """Embed texts on the one model thread; queries waiting together share one forward pass.

        One thread, because torch (like numba) slows down badly when many threads each start its
        OpenMP parallel regions, and fast tokenizers are not safe under concurrent calls.
        """
        self.encoder()  # load errors surface here, in the caller's thread
        fut: Future[np.ndarray] = Future()
        with self._pending_lock:
            if self._model_thread is None:
                self._model_thread = threading.Thread(target=self._model_loop, daemon=True, name="bitsearch-model")
                self._model_thread.start()
        self._model_queue.put((texts, queries, fut))
        return fut.result()

    def _model_loop(self) -> None:
        """The model thread: take every waiting request, embed queries in one call and documents per request."""
        enc = self._encoder  # loaded by encode() before this thread starts
        while True:
            first = self._model_queue.get()
            if first is None:
                return
            batch = [first]
            size = len(first[0])
            while size < MAX_ENCODE_BATCH:
                try:
                    item = self._model_queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._model_queue.put(None)  # stop after this batch
                    break
                batch.append(item)
                size += len(item[0])
            live = [b for b in batch if b[2].set_running_or_notify_cancel()]
            for texts, _, fut in [b for b in live if not b[1]]:  # documents: one call each
                try:
                    fut.set_result(enc.encode_documents(texts))
                except BaseException as exc:
                    fut.set_exception(exc)
            group = [b for b in live if b[1]]
            if not group:
                continue
            try:
                emb = enc.encode_queries([t for texts, _, _ in group for t in texts])
            except BaseException:
                for texts, _, fut in group:  # again one by one: only the request at fault fails
                    try:
                        fut.set_result(enc.encode_queries(texts))
                    except BaseException as exc:
                        fut.set_exception(exc)
                continue
            pos = 0
            for texts, _, fut in group:
                fut.set_result(emb[pos : pos + len(texts)])
                pos += len(texts)

    def close(self) -> None:
        """Stop the search workers and the model thread (if started)."""
        if self.batcher is not None:
            self.batcher.close()
        if self._model_thread is not None:
            self._model_queue.put(None)
            self._model_thread.join(10)
            self._model_thread = None

    def search(self, vectors: np.ndarray | None, **kw: Any) -> Any:
        """Collection.search, retried when a concurrent delete purged a hit's row between its stages."""
        if not getattr(self._local, "single", False):
            # numba's parallel kernels from several threads at once (each with its own OpenMP team)
            # slow every search down many times over; one kernel thread per request, requests in parallel
            with contextlib.suppress(Exception):
                import numba

                numba.set_num_threads(1)  # thread-local: this worker thread only
            self._local.single = True
        lock = self.search_lock or contextlib.nullcontext()
        for attempt in range(3):
            try:
                with lock:
                    return self.collection.search(vectors, **kw)
            except UnknownIdError:
                raise
            except KeyError:  # the snapshot named a row that a delete committed after: the new state has it gone
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover


def _warm_up(state: ServerState) -> None:
    """Load the compiled kernels once, and serialize searches if numba's threading layer is not thread-safe."""
    try:
        import numba

        from bitsearch.kernels import as_words, hamming_topk

        words = as_words(np.zeros((64, 8), dtype=np.uint8))
        hamming_topk(np.zeros((1, 8), dtype=np.uint8), words, 4)
        layer = numba.threading_layer()
    except Exception as exc:  # warm-up is an optimization; searching reports real errors itself
        log.debug("warm-up skipped: %s", exc)
        return
    if layer == "workqueue":  # numba's workqueue layer aborts on concurrent parallel calls
        log.warning("numba threading layer is 'workqueue' (not thread-safe): searches run one at a time")
        state.search_lock = threading.Lock()


# ----------------------------------------------------------------------------- ASGI middleware


def _json_message(status: int, detail: str, headers: dict[str, str] | None = None) -> tuple[Message, Message]:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return (
        {"type": "http.response.start", "status": status, "headers": raw},
        {"type": "http.response.body", "body": body},
    )


def normalize_host(name: str) -> str:
    """An --allowed-host name as host_name() gives it: lower case, IPv6 literals in brackets."""
    name = name.strip().lower()
    return f"[{name}]" if name.count(":") > 1 and not name.startswith("[") else host_name(name)


def host_name(value: str) -> str:
    """The name part of a Host header, lower case, without the port (IPv6 literals keep their brackets)."""
    host = value.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] or host
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() else host


class GuardMiddleware:
    """Every request's gate, as plain ASGI (cheap): Host check (without an API key), API key, body size, body
    time limit; security headers on every response; an unexpected error becomes a JSON 500 that leaves the
    connection usable (Starlette's error middleware would re-raise it, and uvicorn then drops the connection).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        max_body_bytes: int,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        allowed_hosts: frozenset[str] | None = None,
    ) -> None:
        self.app = app
        self.key = hashlib.sha256(api_key.encode()).digest() if api_key else None
        self.max_body = max_body_bytes
        self.body_timeout = body_timeout
        # with a key any Host is fine (the key is what a rebinding page lacks); "*" turns the check off
        hosts = LOOPBACK_HOSTS | (allowed_hosts or frozenset())
        self.hosts = None if api_key or "*" in hosts else hosts

    def _authorized(self, scope: Scope) -> bool:
        if self.key is None:
            return True
        path = scope.get("path", "")
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return True
        given: list[bytes] = []
        for name, value in scope.get("headers", []):
            if name == b"x-api-key":
                given.append(value.strip())
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                given.append(value[7:].strip())
        ok = False
        for candidate in given:  # digests of equal length, compared in constant time: nothing leaks, not even length
            ok |= hmac.compare_digest(hashlib.sha256(candidate).digest(), self.key)
        return ok

    def _host_refused(self, scope: Scope) -> str | None:
        """Why the Host header is refused, or None when it is served."""
        if self.hosts is None or scope.get("path") == "/health":  # the liveness probe tells nothing: any Host
            return None
        given = [v for k, v in scope.get("headers", []) if k == b"host"]
        if len(given) != 1:
            return "send exactly one Host header"
        if host_name(given[0].decode("latin-1")) in self.hosts:
            return None
        shown = given[0].decode("latin-1")[:100]
        return (
            f"Host {shown!r} is not served: without an API key this server answers only "
            f"{', '.join(sorted(self.hosts))} (start it with --allowed-host NAME or --api-key)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = DOCS_SECURITY_HEADERS if scope.get("path") in _DOCS_PATHS else PAGE_SECURITY_HEADERS
        started = False

        async def secured(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            await self._guard(scope, receive, secured)
        except Exception as exc:
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if not started:  # otherwise the response is cut short: uvicorn closes the connection
                for message in _json_message(500, f"internal error ({type(exc).__name__}); see the server log"):
                    await secured(message)

    async def _guard(self, scope: Scope, receive: Receive, send: Send) -> None:
        refused = self._host_refused(scope)
        if refused is not None:
            for message in _json_message(421, refused):
                await send(message)
            return
        if not self._authorized(scope):
            for message in _json_message(
                401,
                "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                {"www-authenticate": "Bearer"},
            ):
                await send(message)
            return
        length = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
        if length is not None and (length < 0 or length > self.max_body):
            too_big = f"request body of {length} bytes is over the {self.max_body}-byte limit"
            detail = "invalid Content-Length" if length < 0 else too_big
            for message in _json_message(400 if length < 0 else 413, detail, {"connection": "close"}):
                await send(message)
            return
        chunked = any(k == b"transfer-encoding" for k, _ in scope.get("headers", []))
        if scope.get("method") in ("GET", "HEAD", "OPTIONS") or length == 0 or (length is None and not chunked):
            await self.app(scope, receive, send)  # no body to check
            return
        ctype = next((v for k, v in scope.get("headers", []) if k == b"content-type"), b"").split(b";")[0].strip()
        if ctype != b"application/json" and not ctype.endswith(b"+json"):
            shown = ctype.decode("latin-1") or "none"
            for message in _json_message(
                415,
                f"send the body as JSON with 'Content-Type: application/json' (got {shown})",
                {"connection": "close"},
            ):
                await send(message)
            return
        # read the body here (at most max_body bytes, within body_timeout), so an oversized chunked body is cut
        # off early and a client that sends its body slowly holds a connection for a bounded time only
        chunks: list[bytes] = []
        size = 0
        complete = False
        # asyncio's own timeout: cheaper than anyio's cancel scope, on every request with a body
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client left before sending its request: nothing to do
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        for reply in _json_message(
                            413, f"request body is over the {self.max_body}-byte limit", {"connection": "close"}
                        ):
                            await send(reply)
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        complete = True
                        break
        if not complete:
            timeout = f"request body not received within {self.body_timeout:g} s"
            for reply in _json_message(408, timeout, {"connection": "close"}):
                await send(reply)
            return
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, replay_first(body, receive), send)


# ----------------------------------------------------------------------------- helpers


async def _offload(receive: Receive, state: ServerState, fn: Callable[[], T]) -> T | None:
    """Run ``fn`` in the worker pool; None if the client disconnected while it waited (no work done)."""
    outcome: list[Any] = []

    async def run() -> None:
        try:
            # waiting for a worker is cancellable; once fn runs it finishes (its result is then discarded)
            outcome.append((True, await anyio.to_thread.run_sync(fn, limiter=state.limiter)))
        except Exception as exc:  # re-raised below, outside the task group (not as an ExceptionGroup)
            outcome.append((False, exc))

    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch)
        await run()
        tg.cancel_scope.cancel()
    if not outcome:
        return None
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


class SafeJSONResponse(JSONResponse):
    """JSON as UTF-8, with a lone surrogate (from data stored before the checks, or echoed) sent as its JSON escape.

    ``json.dumps`` has already escaped every backslash, so the only ones ``backslashreplace`` adds spell
    ``\\udXXX`` escapes inside string literals: the body stays valid JSON instead of failing with a 500.
    """

    def render(self, content: Any) -> bytes:
        return self.dump(content)

    @staticmethod
    def dump(content: Any) -> bytes:
        """``content`` (Hits as dicts) as JSON bytes, lone surrogates escaped."""
        text = json.dumps(
            content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"), default=_hit_dict
        )
        return text.encode("utf-8", "backslashreplace")


def _hit_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, Hit):
        return value.to_dict()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def replay_first(message: Message, receive: Receive) -> Receive:
    """A receive callable that hands the app ``message`` (a body already read here) first, then reads on."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return message
        return await receive()

    return replay


def _error(status: int, detail: str, **extra: Any) -> JSONResponse:
    return SafeJSONResponse({"detail": detail, **extra}, status_code=status)


def _on_store(exc: sqlite3.OperationalError) -> JSONResponse:
    log.error("document store: %s", exc)
    if any(w in str(exc) for w in ("readonly", "read-only", "locked", "disk", "unable to open")):
        return _error(503, f"the collection's document store is not writable here: {exc}")
    return _error(500, f"document store error: {exc}")


def _on_collection(exc: CollectionError) -> JSONResponse:
    log.error("collection error: %s", exc)
    return _error(500, f"collection error: {exc}")


def _on_os(exc: OSError) -> JSONResponse:
    # the collection's files cannot be read or written here (read-only file system, permissions, disk full)
    log.error("collection files: %s", exc)
    return _error(503, f"the collection's files are not accessible: {exc.strerror or exc}")


# the JSON error of each expected exception, by the first class of its MRO listed (as Starlette looks them up)
def _on_shard(exc: ShardUnavailableError) -> JSONResponse:
    log.error("shard unavailable: %s", exc)
    return _error(503, str(exc), shards=exc.shards)


def _on_partial_write(exc: PartialWriteError) -> JSONResponse:
    log.error("partial write: %s", exc)
    return _error(503, str(exc), shards=exc.shards, stored_ids=exc.stored_ids, failed_ids=exc.failed_ids)


ERROR_STATUS: dict[type[BaseException], Callable[[Any], JSONResponse]] = {
    ShardUnavailableError: _on_shard,
    NoModelError: lambda exc: _error(400, str(exc)),
    PartialWriteError: _on_partial_write,
    DuplicateIdError: lambda exc: _error(409, str(exc)),
    UnknownIdError: lambda exc: _error(404, str(exc)),
    InvalidInputError: lambda exc: _error(422, str(exc)),
    ModelLoadError: lambda exc: _error(503, f"cannot embed text: {exc}"),
    ReadOnlyCollectionError: lambda exc: _error(503, str(exc)),
    DiskFullError: lambda exc: _error(503, str(exc)),
    CollectionError: _on_collection,
    BitsearchError: lambda exc: _error(400, str(exc)),
    ValueError: lambda exc: _error(422, str(exc) or "invalid value"),
    RecursionError: lambda exc: _error(422, "the request is nested too deeply"),
    OSError: _on_os,
    sqlite3.OperationalError: _on_store,
}


def error_response(exc: BaseException) -> JSONResponse | None:
    """The JSON error answered for ``exc``; None for an unexpected one (GuardMiddleware's 500)."""
    for cls in type(exc).__mro__:
        handler = ERROR_STATUS.get(cls)
        if handler is not None:
            return handler(exc)
    return None


async def _on_error(request: Request, exc: Exception) -> JSONResponse:
    response = error_response(exc)
    assert response is not None  # registered for ERROR_STATUS's classes only
    return response


def _check_text(value: str, where: str) -> None:
    """Reject a string with a lone surrogate (JSON ``"\\udfff"``): it has no UTF-8 form to store or send back."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        raise InvalidInputError(
            f"`{where}` has a lone surrogate (\\u{code:04x}) at character {exc.start}: send valid Unicode text"
        ) from None


def _check_json(value: Any, where: str, *, filter_values: bool = False) -> None:
    """Check free-form JSON (metadata, a filter): valid Unicode, at most MAX_JSON_DEPTH levels deep;
    in a filter also at most MAX_FILTER_VALUES values and integers SQLite can bind (64-bit)."""
    count = 0
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:  # iterative: the nesting is what is being checked
        item, at, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, at)
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise InvalidInputError(f"`{where}` is nested more than {MAX_JSON_DEPTH} levels deep (at `{at}`)")
            if isinstance(item, dict):
                for key, sub in item.items():
                    _check_text(key, f"{at} key {key!r}")
                    stack.append((sub, f"{at}.{key}", depth + 1))
            else:
                stack.extend((sub, f"{at}[{i}]", depth + 1) for i, sub in enumerate(item))
        elif filter_values and isinstance(item, int) and not INT64_MIN <= item <= INT64_MAX:
            raise InvalidInputError(f"`{at}` is {item}: filters compare integers of at most 64 bits")
        count += 1
        if filter_values and count > MAX_FILTER_VALUES:
            raise InvalidInputError(f"`{where}` has more than {MAX_FILTER_VALUES} values")


def _vectors(value: list[float] | list[list[float]], dim: int, name: str) -> tuple[np.ndarray, bool]:
    """A JSON vector or list of vectors as float32 (n, dim), and whether it was a batch."""
    batch = bool(value) and isinstance(value[0], list)
    rows: list[Any] = value if batch else [value]
    if not rows or not rows[0]:
        raise InvalidInputError(f"`{name}` is empty")
    for i, row in enumerate(rows):
        if len(row) != dim:
            where = f"{name}[{i}]" if batch else name
            raise InvalidInputError(f"`{where}` has {len(row)} dimensions; this collection holds {dim}")
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, reported below
        arr = np.asarray(rows, dtype=np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = (int(x) for x in np.argwhere(bad)[0])
        where = f"{name}[{i}]" if batch else name
        raise InvalidInputError(
            f"`{where}[{j}]` is {rows[i][j]!r}: embeddings must be finite (no NaN or infinity) float32 values, "
            "|x| <= 3.4e38"
        )
    return arr, batch


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = list(exc.errors())
    for err in errors:
        if err.get("type") == "json_invalid":
            cause = (err.get("ctx") or {}).get("error", "")
            return _error(400, f"request body is not valid JSON: {cause}".rstrip(": "))
    for err in errors:
        if tuple(err.get("loc", ())) == ("body",):  # the body as a whole: missing, or not an object
            if err.get("type") == "missing":
                return _error(422, "request body is empty: send a JSON object")
            if err.get("type") in ("model_attributes_type", "model_type", "dict_type"):
                return _error(422, "the body must be a JSON object")
    grouped: dict[tuple[str, ...], list[str]] = {}
    for err in errors:
        loc = tuple(str(p) for p in err.get("loc", ()) if p != "body" and not _UNION_TAG.match(str(p)))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if msg not in grouped.setdefault(loc, []):
            grouped[loc].append(msg)
    cleaned = [{"loc": list(loc), "msg": " or ".join(msgs)} for loc, msgs in grouped.items()]
    first = cleaned[0] if cleaned else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"])
    detail = f"{where}: {first['msg']}" if where else first["msg"]
    if len(cleaned) > 1:
        detail += f" (and {len(cleaned) - 1} more problem{'s' if len(cleaned) > 2 else ''})"
    return _error(422, detail, errors=cleaned[:20])


def _resolve_id(col: Served, raw: str) -> str | int:
    """A path id as stored: the string itself, else its integer form when that exists."""
    try:
        as_int = int(raw)
    except ValueError:
        return raw
    if str(as_int) != raw.strip():
        return raw
    present = col.existing_ids([raw, as_int])
    return raw if raw in present or as_int not in present else as_int


# ----------------------------------------------------------------------------- the /search path

_SEARCH_DEFAULTS: dict[str, Any] = {name: f.default for name, f in SearchRequest.model_fields.items()}
_NUMBER_TYPES = frozenset({float, int})


def plain_search_request(body: bytes) -> SearchRequest | None:
    """The /search body as a SearchRequest when it is plain (orjson parses it; every field present has its
    canonical JSON type and range), else None: FastAPI's stdlib parse and pydantic validation then take it,
    with their coercions and error messages. This checks in microseconds what pydantic checks in a tenth of a
    millisecond for a 384-float vector."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:  # also NaN, lone surrogates, 64-bit overflows: the full path names them
        return None
    if type(data) is not dict or not data.keys() <= _SEARCH_DEFAULTS.keys():
        return None
    query, vector = data.get("query"), data.get("vector")
    if (query is None) == (vector is None):
        return None
    if query is not None:
        if type(query) is list:
            if not all(type(t) is str for t in query):
                return None
        elif type(query) is not str:
            return None
    else:
        if type(vector) is not list:
            return None
        for row in vector if vector and type(vector[0]) is list else [vector]:
            if type(row) is not list or not set(map(type, row)) <= _NUMBER_TYPES:
                return None
    k = data.get("k", 10)
    multiplier = data.get("rescore_multiplier", 4)
    if type(k) is not int or not 1 <= k <= MAX_K or type(multiplier) is not int:
        return None
    if not 1 <= multiplier <= MAX_RESCORE_MULTIPLIER:
        return None
    rescore = data.get("rescore", "int8")
    names = [rescore] if type(rescore) is str else rescore if type(rescore) is list else [] if rescore is None else [0]
    if not all(type(n) is str and n in RESCORE_NAMES for n in names):
        return None
    mode, filter_ = data.get("mode"), data.get("filter")
    if (mode is not None and type(mode) is not str) or (filter_ is not None and type(filter_) is not dict):
        return None
    if filter_ and _integral_beyond_64_bits(filter_):
        return None  # orjson reads integers beyond 64 bits as floats, json as ints (which a filter refuses)
    if type(data.get("with_text", True)) is not bool or type(data.get("allow_partial", False)) is not bool:
        return None
    return SearchRequest.model_construct(**{**_SEARCH_DEFAULTS, **data})


def _integral_beyond_64_bits(value: Any) -> bool:
    """Whether parsed JSON holds a float that may have been an integer beyond 64 bits."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is float:
            if abs(item) >= 2.0**63 and item.is_integer():
                return True
        elif type(item) is dict:
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return False


class SearchJob:
    """One /search request, checked and ready to run: alone, or in a batch of concurrent ones."""

    __slots__ = ("count", "done", "encode", "key", "kwargs", "loop", "texts", "vectors", "waiter")

    def __init__(self, req: SearchRequest, state: ServerState) -> None:
        """Check the request (every 422 a lone request gets before any work); raise InvalidInputError."""
        texts: list[str] | None = None
        if req.query is not None:
            single = isinstance(req.query, str)
            texts = [req.query] if single else list(req.query)
            if not texts:
                raise InvalidInputError("`query` is an empty list")
            blank = [i for i, t in enumerate(texts) if not t.strip()]
            if blank:
                raise InvalidInputError(f"`{'query' if single else f'query[{blank[0]}]'}` is empty")
            count = len(texts)
        else:
            assert req.vector is not None
            count = len(req.vector) if req.vector and isinstance(req.vector[0], list) else 1
        if count > MAX_QUERIES:
            raise InvalidInputError(f"{count} queries in one request; at most {MAX_QUERIES}")
        # strings that cannot be UTF-8, filters SQLite cannot bind or too deep to translate: 422 before any work
        for i, text in enumerate(texts or []):
            _check_text(text, "query" if isinstance(req.query, str) else f"query[{i}]")
        if req.mode is not None:
            _check_text(req.mode, "mode")
        if req.filter is not None:
            _check_json(req.filter, "filter", filter_values=True)
        self.vectors: np.ndarray | None = None
        if texts is None:
            assert req.vector is not None
            self.vectors, _ = _vectors(req.vector, state.collection.dim, "vector")
        self.texts = texts
        self.count = count
        self.encode = texts is not None and req.mode != "keyword"  # BM25 alone needs no embedding
        rescore: Any = None if req.rescore in (None, "none") else req.rescore
        kw: dict[str, Any] = {
            "k": req.k, "rescore_multiplier": req.rescore_multiplier, "rescore": rescore, "with_text": req.with_text
        }  # fmt: skip
        if req.allow_partial and state.sharded:  # a single collection always answers whole
            kw["allow_partial"] = True
        self.key: tuple[Any, ...] | None = None
        if req.mode in (None, "dense") and not state.has_index:
            # dense searches with equal arguments can share one Collection.search: each query's hits are what it
            # gets alone (exact scans per query; an ANN index may cut every query of a call to the shortest list)
            filter_key = None if req.filter is None else orjson.dumps(req.filter)
            rescore_key = tuple(rescore) if isinstance(rescore, list) else rescore
            self.key = (req.k, req.rescore_multiplier, rescore_key, req.with_text, filter_key, "allow_partial" in kw)
        if req.mode is not None:
            kw["mode"] = req.mode
        if req.filter is not None:
            kw["filter"] = req.filter
        if texts is not None:
            kw["query_texts"] = texts  # keyword and hybrid modes rank the text itself too
        self.kwargs = kw
        self.done = False  # set once answered (or abandoned): a batch skips it
        self.loop: asyncio.AbstractEventLoop | None = None
        self.waiter: asyncio.Future[tuple[bool, Any]] | None = None

    def run_alone(self, state: ServerState) -> dict[str, Any]:
        """What a lone request gets: embed (on the model thread), search, the response payload."""
        timings: dict[str, float] = {}
        vectors = self.vectors
        if self.encode:
            assert self.texts is not None
            t0 = time.perf_counter()
            vectors = state.encode(self.texts, queries=True)
            timings["encode"] = time.perf_counter() - t0
        return search_payload(state.search(vectors, **self.kwargs), timings, self.kwargs["k"])

    def finish(self, ok: bool, value: Any) -> None:
        """Hand the outcome to the waiting request (from any thread)."""
        self.done = True
        if self.loop is not None and self.waiter is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                self.loop.call_soon_threadsafe(_deliver, self.waiter, (ok, value))


def _deliver(waiter: asyncio.Future[tuple[bool, Any]], outcome: tuple[bool, Any]) -> None:
    if not waiter.done():
        waiter.set_result(outcome)


def search_payload(results: Any, timings: dict[str, float], k: int) -> dict[str, Any]:
    """The /search response: hits per query (Hit dataclasses, rendered by render_json), stages, timings."""
    timings.update({name: float(v) for name, v in results.timings.items() if name != "total"})
    timings["total"] = sum(timings.values())
    payload = {
        "results": list(results),
        "stages": list(results.stages),
        "timings": timings,
        "k": k,
        "warnings": list(results.warnings),
    }
    answered = getattr(results, "shards_answered", None)  # a sharded collection's results say which shards answered
    if answered is not None:
        payload["partial"] = bool(getattr(results, "partial", False))
        payload["shards_answered"] = list(answered)
    return payload


def render_json(content: Any) -> bytes:
    """JSON bytes by orjson; what it refuses (a lone surrogate stored before the checks, integers over 64 bits)
    by SafeJSONResponse's rendering, which escapes surrogates."""
    try:
        return orjson.dumps(content)
    except TypeError:  # orjson.JSONEncodeError
        return SafeJSONResponse.dump(content)


class SearchBatcher:
    """Worker threads that answer queued /search jobs in batches.

    A free worker takes every queued job (up to MAX_BATCH_QUERIES queries) and, while more requests are in
    flight than are queued or being worked on, waits up to ``window`` seconds for them. The batch's texts go
    through the encoder in one call; jobs with equal search arguments share one Collection.search (at most
    MAX_SEARCH_GROUP queries); the rest are searched one by one. Whatever fails in a shared call is redone per
    job, so one job's error (or a shorter result that may have cut others) never changes another's answer.
    One worker gathers at a time, so jobs queued while the others work form the next batch.
    """

    def __init__(self, state: ServerState, window: float, workers: int) -> None:
        self.state = state
        self.window = window
        self.workers = workers
        self.cond = threading.Condition()
        self.queue: list[SearchJob] = []
        self.inflight = 0  # jobs submitted and not finished
        self.arriving = 0  # vector jobs deciding (in the event loop) whether to run at once
        self.busy = 0  # jobs taken by workers and not finished
        self.gather_lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.stopping = False
        self.counts = {
            "inline": 0, "batches": 0, "batched_requests": 0, "shared_searches": 0, "shared_search_requests": 0
        }  # fmt: skip

    def submit(self, job: SearchJob) -> None:
        """Queue a job (its waiter set); the workers start with the first one."""
        with self.cond:
            if not self.threads:
                for i in range(self.workers):
                    t = threading.Thread(target=self._work, daemon=True, name=f"bitsearch-search-{i}")
                    t.start()
                    self.threads.append(t)
            self.queue.append(job)
            self.inflight += 1
            self.cond.notify()

    def stats(self) -> dict[str, Any]:
        """The window (ms) and counts so far: batches, jobs in them, shared Collection.search calls and their jobs."""
        return {"window_ms": self.window * 1000, **self.counts}

    def close(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        for t in self.threads:
            t.join(10)
        self.threads = []

    def _gather(self) -> list[SearchJob] | None:
        with self.cond:
            while not self.queue:
                if self.stopping:
                    return None
                self.cond.wait()
            deadline = time.monotonic() + self.window
            while True:
                size = sum(j.count for j in self.queue)
                more = self.inflight > len(self.queue) + self.busy  # requests on their way to the queue
                left = deadline - time.monotonic()
                if size >= MAX_BATCH_QUERIES or not more or left <= 0 or self.stopping:
                    break
                self.cond.wait(left)
            batch, size = [], 0
            while self.queue and (not batch or size + self.queue[0].count <= MAX_BATCH_QUERIES):
                job = self.queue.pop(0)
                batch.append(job)
                size += job.count
            self.busy += len(batch)
            self.counts["batches"] += 1
            self.counts["batched_requests"] += len(batch)
            return batch

    def _work(self) -> None:
        with contextlib.suppress(Exception):
            import numba

            numba.set_num_threads(1)  # one kernel thread per worker (see ServerState.search)
        while True:
            with self.gather_lock:
                batch = self._gather()
            if batch is None:
                return
            try:
                self._run(batch)
            except BaseException as exc:  # pragma: no cover - _run answers every job itself
                for job in batch:
                    if not job.done:
                        job.finish(False, exc)
            finally:
                with self.cond:
                    self.busy -= len(batch)
                    self.inflight -= len(batch)

    def _run(self, batch: list[SearchJob]) -> None:
        jobs = [j for j in batch if not j.done]  # done: the client left while it waited
        timings: dict[int, dict[str, float]] = {id(j): {} for j in jobs}
        embed = [j for j in jobs if j.encode]
        if len(embed) > 1:
            t0 = time.perf_counter()
            try:
                emb = self.state.encode([t for j in embed for t in j.texts or []], queries=True)
            except Exception:
                pass  # each is embedded alone below, so only the job at fault fails
            else:
                took = time.perf_counter() - t0
                pos = 0
                for j in embed:
                    j.vectors, j.encode = emb[pos : pos + j.count], False
                    timings[id(j)]["encode"] = took
                    pos += j.count
        groups: dict[tuple[Any, ...], list[SearchJob]] = {}
        alone: list[SearchJob] = []
        for j in jobs:
            if j.key is None or j.count > MAX_SEARCH_GROUP or j.encode:
                alone.append(j)
            else:
                groups.setdefault(j.key, []).append(j)
        for members in groups.values():
            chunk: list[SearchJob] = []
            for j in [*members, None]:
                if j is not None and sum(c.count for c in chunk) + j.count <= MAX_SEARCH_GROUP:
                    chunk.append(j)
                    continue
                if len(chunk) == 1:
                    alone.append(chunk[0])
                elif chunk:
                    alone += self._search_together(chunk, timings)
                chunk = [j] if j is not None else []
        for j in alone:
            try:
                if j.encode:
                    j.finish(True, j.run_alone(self.state))
                else:  # embedded with the batch, or given as vectors, or keyword (texts only)
                    payload = search_payload(self.state.search(j.vectors, **j.kwargs), timings[id(j)], j.kwargs["k"])
                    j.finish(True, payload)
            except Exception as exc:
                j.finish(False, exc)

    def _search_together(self, chunk: list[SearchJob], timings: dict[int, dict[str, float]]) -> list[SearchJob]:
        """One Collection.search for jobs with equal arguments; the jobs to redo alone (all, when it failed or
        any query got fewer than k hits: a shared call may have cut it to another query's count)."""
        k = chunk[0].kwargs["k"]
        kw = {name: v for name, v in chunk[0].kwargs.items() if name != "query_texts"}  # dense: texts unused
        try:
            results = self.state.search(np.concatenate([j.vectors for j in chunk if j.vectors is not None]), **kw)
        except Exception:
            return chunk
        if any(len(hits) < k for hits in results):
            return chunk
        with self.cond:
            self.counts["shared_searches"] += 1
            self.counts["shared_search_requests"] += len(chunk)
        pos = 0
        for j in chunk:
            part = type(results)(results[pos : pos + j.count], results.timings, results.stages)
            for name in ("partial", "shards_answered"):  # a sharded collection's, shared by the whole call
                if hasattr(results, name):
                    setattr(part, name, getattr(results, name))
            j.finish(True, search_payload(part, timings[id(j)], k))
            pos += j.count
        return []


async def _disconnected(receive: Receive) -> None:
    """Return when the client has gone away."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _batched(receive: Receive, batcher: SearchBatcher, job: SearchJob) -> dict[str, Any] | None:
    """Queue ``job`` for a batch and wait for its payload; None if the client left first (it is then skipped).

    A vector search without a filter (which queries SQLite) and with nothing else in flight runs at once in the
    event loop instead: a fraction of a millisecond, without the two thread handoffs (and their CPU) that a lone
    request would otherwise pay for.
    """
    if job.key is not None and not job.encode and job.count <= MAX_SEARCH_GROUP and "filter" not in job.kwargs:
        batcher.arriving += 1
        try:
            await asyncio.sleep(0)  # let requests that arrived together reach this point too
            if batcher.arriving == 1 and batcher.inflight == 0:
                batcher.counts["inline"] += 1
                return job.run_alone(batcher.state)
        finally:
            batcher.arriving -= 1
    loop = asyncio.get_running_loop()
    job.loop, job.waiter = loop, loop.create_future()
    batcher.submit(job)
    waiter = job.waiter
    watch = None
    if job.encode or job.key is None:  # worth dropping when its client leaves (vector searches are cheap)
        watch = loop.create_task(_disconnected(receive))
        watch.add_done_callback(lambda _: _deliver(waiter, (True, None)))
    try:
        ok, value = await waiter
    finally:
        if watch is not None:
            watch.cancel()
    if not ok:
        raise value
    if value is None:
        job.done = True  # abandoned: a worker that has not taken it yet skips it
    return value


async def answer_search(state: ServerState, req: SearchRequest | SearchJob, receive: Receive) -> Response:
    """POST /search for a validated request: checks, then the batcher (or a worker thread), then JSON bytes."""
    try:
        job = req if isinstance(req, SearchJob) else SearchJob(req, state)
        if state.batcher is not None:
            payload = await _batched(receive, state.batcher, job)
        else:
            payload = await _offload(receive, state, lambda: job.run_alone(state))
    except Exception as exc:
        response = error_response(exc)
        if response is None:
            raise  # GuardMiddleware answers a JSON 500
        return response
    if payload is None:
        return _error(499, "client closed the request")
    return Response(render_json(payload), media_type="application/json")


class FastSearch:
    """POST /search without FastAPI's routing and pydantic validation when the body is plain JSON
    (plain_search_request); any other body goes on to the FastAPI route, which answers it as before."""

    def __init__(self, app: ASGIApp, *, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/search" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        message = await receive()  # GuardMiddleware hands over the whole body in one message
        if message["type"] == "http.request" and not message.get("more_body", False):
            req = plain_search_request(message.get("body", b""))
            job = None
            if req is not None:
                # a request the checks refuse goes the full way, which names the problem as it always has
                with contextlib.suppress(Exception):
                    job = SearchJob(req, self.state)
            if job is not None:
                response = await answer_search(self.state, job, receive)
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": response.raw_headers,
                    }
                )
                await send({"type": "http.response.body", "body": response.body})
                return
        await self.app(scope, replay_first(message, receive), send)


# ----------------------------------------------------------------------------- the app


def create_app(
    path_or_collection: str | os.PathLike[str] | Collection | ShardedCollection,
    api_key: str | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    threads: int | None = None,
    encoder: Any | None = None,
    preload_model: bool = False,
    refresh_seconds: float | None = 2.0,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    allowed_hosts: Iterable[str] = (),
    batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS,
    encoder_backend: str | None = None,
) -> FastAPI:
    """Build the FastAPI app serving one collection (opened here when given a path: ``open_served``, so a
    sharded collection's directory serves its ShardedCollection, closed again when the app stops).

    ``api_key`` guards every route but /health and the page; ``threads`` bounds concurrent work;
    ``encoder`` replaces the model recorded in the manifest, ``encoder_backend`` only its runtime ("onnx-int8":
    int8 query embeddings against the collection's documents); ``preload_model`` loads it at startup;
    every ``refresh_seconds`` the collection picks up what other processes (``bitsearch index``) wrote;
    a request body must arrive within ``body_timeout`` seconds. Without ``api_key`` only requests whose
    Host is a loopback name or one of ``allowed_hosts`` ("*": any) are served (DNS rebinding).
    ``batch_window_ms`` > 0 turns on micro-batching of concurrent /search requests (SearchBatcher): a free
    worker waits at most this long for requests on their way; 0 answers each request on its own.
    """
    owned = not isinstance(path_or_collection, (Collection, ShardedCollection))
    col = open_served(path_or_collection) if owned else path_or_collection
    if max_body_bytes < 1024:
        raise ValueError(f"max_body_bytes must be at least 1024, got {max_body_bytes}")
    if not body_timeout > 0:
        raise ValueError(f"body_timeout must be positive, got {body_timeout}")
    hosts = frozenset(normalize_host(h) for h in allowed_hosts)
    n_threads = threads or max(8, 4 * (os.cpu_count() or 1))
    if encoder is not None and getattr(encoder, "dim", col.dim) != col.dim:
        raise ValueError(f"encoder gives {encoder.dim}-dim embeddings; the collection holds {col.dim}")
    if not 0 <= batch_window_ms <= 100:
        raise ValueError(f"batch_window_ms must be in [0, 100], got {batch_window_ms}")
    if encoder_backend is not None and encoder_backend not in BACKENDS:
        raise ValueError(f"encoder_backend must be one of {BACKENDS}, got {encoder_backend!r}")
    state = ServerState(col, threads=n_threads, encoder=encoder, encoder_backend=encoder_backend)
    if batch_window_ms > 0:
        # a worker per core (numba runs one kernel thread per worker): batches, not threads, absorb concurrency
        workers = min(n_threads, max(2, os.cpu_count() or 1))
        state.batcher = SearchBatcher(state, batch_window_ms / 1000, workers)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(_warm_up, state)
        if preload_model and model_info(col):
            # in the background: /health answers at once, and the first text query waits on the same lock
            threading.Thread(target=_preload, args=(state,), daemon=True, name="bitsearch-model-load").start()
        stop = threading.Event()
        if refresh_seconds:
            threading.Thread(
                target=_refresh_loop, args=(state, refresh_seconds, stop), daemon=True, name="bitsearch-refresh"
            ).start()
        yield
        stop.set()
        state.close()
        if owned and isinstance(col, ShardedCollection):
            col.close()  # its shard actors

    auth_note = "Every route but /health and the page needs `Authorization: Bearer KEY` or `X-API-Key: KEY`."
    app = FastAPI(
        title="bitsearch",
        version=__version__,
        description=(
            "Search a bitsearch collection: binary codes in RAM, rescored with int8/float32 rows from disk. "
            + (auth_note if api_key else "")
        ),
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    app.state.bitsearch = state
    app.add_middleware(FastSearch, state=state)  # inside GuardMiddleware (added next, so outermost)
    app.add_middleware(
        GuardMiddleware,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        body_timeout=body_timeout,
        allowed_hosts=hosts,
    )
    if api_key:
        _document_security(app)

    # -------------------------------------------------------------- errors

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc)

    for exc_class in ERROR_STATUS:
        app.add_exception_handler(exc_class, _on_error)

    # anything else: GuardMiddleware answers a JSON 500 and keeps the connection

    # -------------------------------------------------------------- routes

    @app.get("/health", tags=["service"])
    async def health() -> dict[str, str]:
        """Liveness probe (no API key needed)."""
        return {"status": "ok"}

    @app.get("/info", tags=["service"])
    def info() -> dict[str, Any]:
        """The collection's stats: documents, dim, precision, model, bytes in RAM / on disk per stage."""
        stats = dict(col.stats())
        stats["path"] = str(col.path)
        stats["server"] = {
            "version": __version__,
            "max_k": MAX_K,
            "max_queries": MAX_QUERIES,
            "max_body_bytes": max_body_bytes,
            "model_loaded": state.encoder_loaded,
            "search_options": ["filter", "mode", *(["allow_partial"] if state.sharded else [])],
            "batching": None if state.batcher is None else state.batcher.stats(),
        }
        return stats

    @app.post("/search", tags=["search"], response_model=SearchResponse, responses=_ERRORS)
    async def search(req: SearchRequest, request: Request) -> Any:
        """Search with text (embedded with the collection's model) or vectors; one query or a batch."""
        return await answer_search(state, req, request.receive)

    @app.post("/documents", tags=["documents"], status_code=201, response_model=AddResponse, responses=_ERRORS)
    async def add_documents(req: AddRequest, request: Request) -> Any:
        """Add documents (atomic: all or none); texts without vectors are embedded with the collection's model."""
        n = len(req.vectors) if req.vectors is not None else len(req.texts or [])
        if n == 0:
            return _error(422, "no documents given")
        for name, values in (("texts", req.texts), ("ids", req.ids), ("metadata", req.metadata)):
            if values is not None and len(values) != n:
                return _error(422, f"got {len(values)} {name} for {n} documents")

        def work() -> dict[str, Any]:
            # a lone surrogate would fail (or be stored and then break every response that returns it)
            for i, doc_id in enumerate(req.ids or []):
                if isinstance(doc_id, str):
                    _check_text(doc_id, f"ids[{i}]")
            for i, text in enumerate(req.texts or []):
                _check_text(text, f"texts[{i}]")
            for i, meta in enumerate(req.metadata or []):
                if meta is not None:
                    _check_json(meta, f"metadata[{i}]")
            if req.vectors is not None:
                vectors, _ = _vectors(req.vectors, col.dim, "vectors")
            else:
                assert req.texts is not None
                vectors = state.encode(list(req.texts), queries=False)
            ids = col.add(vectors, ids=req.ids, texts=req.texts, metadata=req.metadata)
            return {"ids": ids, "added": len(ids), "documents": len(col)}

        payload = await _offload(request.receive, state, work)
        if payload is None:
            return _error(499, "client closed the request")
        return SafeJSONResponse(payload, status_code=201)

    @app.delete("/documents/{doc_id:path}", tags=["documents"], response_model=DeleteResponse, responses=_ERRORS)
    async def delete_document(doc_id: str, request: Request) -> Any:
        """Delete one document by id (an all-digit id matches the integer id when no such string id exists)."""

        def work() -> dict[str, Any]:
            target = _resolve_id(col, doc_id)
            col.delete([target])
            return {"deleted": target, "documents": len(col)}

        payload = await _offload(request.receive, state, work)
        if payload is None:
            return _error(499, "client closed the request")
        return SafeJSONResponse(payload)

    # -------------------------------------------------------------- the page

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

        @app.get("/", include_in_schema=False)
        def page() -> FileResponse:
            return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

    return app


def _refresh_loop(state: ServerState, every: float, stop: threading.Event) -> None:
    """Reload the collection when another process has committed to it (checked every ``every`` seconds).

    Under the collection's write lock, so a reload never races a write of this process; searches keep
    the snapshot they started with.
    """
    col = state.collection
    while not stop.wait(every):
        try:
            if isinstance(col, Collection):  # a sharded collection's shards refresh on every call
                col.refresh()  # under the collection's write lock (Store.refresh takes it)
            state.check_index()
        except Exception as exc:  # a half-written or broken collection: keep serving the last good state
            log.warning("could not refresh the collection: %s", exc)


def _preload(state: ServerState) -> None:
    try:
        for _ in range(2):  # torch's first forward passes are many times slower than the rest
            state.encode(["warm up"], queries=True)
        log.info("model loaded")
    except BitsearchError as exc:
        log.warning("model not loaded: %s", exc)


def _document_security(app: FastAPI) -> None:
    """Declare both API key forms in the OpenAPI schema, so /docs offers an Authorize button."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
            schema["security"] = [{"bearer": []}, {"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# ----------------------------------------------------------------------------- connections


def guarded_protocol(
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    http: str = "auto",
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol (httptools, else h11) with the connection limits uvicorn lacks.

    - Request headers must be complete within ``header_timeout`` seconds of connecting or of the
      previous response; otherwise the connection is closed (uvicorn waits forever for a first request,
      and data trickling in keeps resetting its keep-alive timer).
    - Past ``max_connections`` a new connection closes the oldest one that is not being served (waiting
      for headers, or still receiving its body); with none, the new one is closed. uvicorn's
      ``limit_concurrency`` instead answers 503 to everyone while stalled connections fill it.
    - Incomplete request headers over ``max_header_bytes`` get 431 (httptools buffers them without limit;
      h11 answers 400 at the same limit).

    ``http``: "auto" (httptools where installed, else h11), "httptools" or "h11".
    """
    from uvicorn.protocols.http.h11_impl import H11Protocol

    if http not in ("auto", "httptools", "h11"):
        raise ValueError(f"http must be 'auto', 'httptools' or 'h11', got {http!r}")

    base: type[Any]
    if http == "h11":
        base = H11Protocol
    else:
        try:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        except ImportError:  # no httptools
            if http == "httptools":
                raise
            base = H11Protocol
        else:
            base = HttpToolsProtocol

    warned = [-math.inf]

    class GuardedProtocol(base):  # type: ignore[misc, valid-type]
        """One connection, with a header deadline and a place in the connection cap."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self.opened_at = self.loop.time()
            self.header_bytes = 0
            self.awaiting_headers = True
            self._arm_header_timer()
            if len(self.connections) > max_connections:
                self._make_room()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self.awaiting_headers = True
                self.header_bytes = 0
                self._arm_header_timer()

        def idle(self) -> bool:
            """Not serving a request: waiting for its headers, or for the rest of its body."""
            cycle = self.cycle
            return cycle is None or cycle.response_complete or (cycle.more_body and not cycle.response_started)

        def _make_room(self) -> None:
            open_ = [c for c in self.connections if not c.transport.is_closing()]
            if len(open_) <= max_connections:
                return  # the ones closed before have not been reported lost yet
            idle = [c for c in open_ if c is not self and getattr(c, "idle", lambda: False)()]
            victim = min(idle, key=lambda c: c.opened_at) if idle else self
            now = self.loop.time()
            if now - warned[0] > 10:  # once per 10 s: a flood of connections must not flood the log too
                warned[0] = now
                log.warning("over %d connections: closing the oldest idle ones (or new ones)", max_connections)
            victim.transport.close()

        # -- the header deadline: armed when a request may start, checked when it fires
        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self.header_timer = self.loop.call_later(header_timeout, self._header_deadline, self.cycle)

        def _cancel_header_timer(self) -> None:
            timer = getattr(self, "header_timer", None)
            if timer is not None:
                timer.cancel()
                self.header_timer = None

        def _header_deadline(self, cycle_then: Any) -> None:
            self.header_timer = None
            # a new request's headers replace self.cycle: the same, finished cycle means none arrived in time
            # (a pipelined request started by the previous response has its own, unfinished cycle)
            done = cycle_then is None or cycle_then.response_complete
            if self.cycle is cycle_then and done and not self.transport.is_closing():
                self.transport.close()

        # -- httptools only (h11 bounds incomplete headers itself): count header bytes until they are complete
        def on_headers_complete(self) -> None:
            self.awaiting_headers = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.awaiting_headers and base is not H11Protocol:
                self.header_bytes += len(data)
                if self.header_bytes > max_header_bytes and not self.transport.is_closing():
                    msg = b"request headers too large"
                    self.transport.write(
                        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
                        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(msg), msg)
                    )
                    self.transport.close()

    GuardedProtocol.__name__ = GuardedProtocol.__qualname__ = f"Guarded{base.__name__}"
    return GuardedProtocol


def server_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    http: str = "auto",
    **uvicorn_options: Any,
) -> Any:
    """The uvicorn.Config that ``bitsearch serve`` runs: guarded connections (see guarded_protocol)."""
    import uvicorn

    if not header_timeout > 0:
        raise ValueError(f"header_timeout must be positive, got {header_timeout}")
    if max_connections < 1:
        raise ValueError(f"max_connections must be at least 1, got {max_connections}")
    protocol = guarded_protocol(
        header_timeout=header_timeout, max_connections=max_connections, max_header_bytes=max_header_bytes, http=http
    )
    options: dict[str, Any] = {"timeout_keep_alive": 5, "timeout_graceful_shutdown": 5}
    options.update(uvicorn_options)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=protocol,
        h11_max_incomplete_event_size=max_header_bytes,
        **options,
    )


def run_server(app: Any, **options: Any) -> None:
    """Serve ``app`` with server_config(app, **options) until interrupted.

    Raises the soft open-files limit as far as the hard one allows, so max_connections sockets fit.
    """
    import uvicorn

    config = server_config(app, **options)
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = options.get("max_connections", DEFAULT_MAX_CONNECTIONS) + 256  # the collection's files, the pool
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            if new < want:
                log.warning("open-files limit %d: fewer than max_connections sockets may fit", new)
    uvicorn.Server(config).run()
