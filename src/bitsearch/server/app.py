"""The FastAPI app of ``bitsearch serve``: ``create_app`` wires the collection's ``ServerState``, the
middleware, the error table and the routes (/health, /info, /search, /documents, the search page).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from bitsearch import __version__
from bitsearch.collection import Collection
from bitsearch.distributed import ShardedCollection
from bitsearch.encode import BACKENDS

from .batcher import DEFAULT_BATCH_WINDOW_MS, SearchBatcher, answer_search, offload
from .errors import CLIENT_CLOSED, ERROR_TABLE, SafeJSONResponse, error_reply, on_error
from .middleware import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_BYTES, FastSearch, GuardMiddleware, normalize_host
from .schemas import (
    MAX_K,
    MAX_QUERIES,
    OPENAPI_ERRORS,
    AddRequest,
    AddResponse,
    DeleteResponse,
    SearchRequest,
    SearchResponse,
    as_vectors,
    check_json,
    check_text,
)
from .worker import Served, ServerState, model_info, open_served, preload, refresh_loop, warm_up

__all__ = ["STATIC_DIR", "create_app", "router"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.bitsearch
    return state


@router.get("/health", tags=["service"])
async def health() -> dict[str, str]:
    """Liveness probe (no API key needed)."""
    return {"status": "ok"}


@router.get("/info", tags=["service"])
def info(request: Request) -> dict[str, Any]:
    """The collection's stats: documents, dim, precision, model, bytes in RAM / on disk per stage."""
    state = _state(request)
    col = state.collection
    stats = dict(col.stats())
    stats["path"] = str(col.path)
    stats["server"] = {
        "version": __version__,
        "max_k": MAX_K,
        "max_queries": MAX_QUERIES,
        "max_body_bytes": state.max_body_bytes,
        "model_loaded": state.encoder_loaded,
        "search_options": ["filter", "mode", *(["allow_partial"] if state.sharded else [])],
        "batching": None if state.batcher is None else state.batcher.stats(),
    }
    return stats


@router.post("/search", tags=["search"], response_model=SearchResponse, responses=OPENAPI_ERRORS)
async def search(req: SearchRequest, request: Request) -> Any:
    """Search with text (embedded with the collection's model) or vectors; one query or a batch."""
    return await answer_search(_state(request), req, request.receive)


def _add(state: ServerState, req: AddRequest) -> dict[str, Any]:
    """POST /documents' work, in a worker thread: checks, embedding (texts without vectors), the write."""
    # a lone surrogate would fail (or be stored and then break every response that returns it)
    for i, doc_id in enumerate(req.ids or []):
        if isinstance(doc_id, str):
            check_text(doc_id, f"ids[{i}]")
    for i, text in enumerate(req.texts or []):
        check_text(text, f"texts[{i}]")
    for i, meta in enumerate(req.metadata or []):
        if meta is not None:
            check_json(meta, f"metadata[{i}]")
    col = state.collection
    if req.vectors is not None:
        vectors, _ = as_vectors(req.vectors, col.dim, "vectors")
    else:
        assert req.texts is not None
        vectors = state.encode(list(req.texts), queries=False)
    ids = col.add(vectors, ids=req.ids, texts=req.texts, metadata=req.metadata)
    return {"ids": ids, "added": len(ids), "documents": len(col)}


@router.post("/documents", tags=["documents"], status_code=201, response_model=AddResponse, responses=OPENAPI_ERRORS)
async def add_documents(req: AddRequest, request: Request) -> Any:
    """Add documents (atomic: all or none); texts without vectors are embedded with the collection's model."""
    n = len(req.vectors) if req.vectors is not None else len(req.texts or [])
    if n == 0:
        return error_reply(422, "no documents given")
    for name, values in (("texts", req.texts), ("ids", req.ids), ("metadata", req.metadata)):
        if values is not None and len(values) != n:
            return error_reply(422, f"got {len(values)} {name} for {n} documents")
    state = _state(request)
    payload = await offload(request.receive, state, lambda: _add(state, req))
    if payload is None:
        return error_reply(CLIENT_CLOSED, "client closed the request")
    return SafeJSONResponse(payload, status_code=201)


def resolve_id(col: Served, raw: str) -> str | int:
    """A path id as stored: the string itself, else its integer form when that exists."""
    try:
        as_int = int(raw)
    except ValueError:
        return raw
    if str(as_int) != raw.strip():
        return raw
    present = col.existing_ids([raw, as_int])
    return raw if raw in present or as_int not in present else as_int


@router.delete("/documents/{doc_id:path}", tags=["documents"], response_model=DeleteResponse, responses=OPENAPI_ERRORS)
async def delete_document(doc_id: str, request: Request) -> Any:
    """Delete one document by id (an all-digit id matches the integer id when no such string id exists)."""
    col = _state(request).collection

    def work() -> dict[str, Any]:
        target = resolve_id(col, doc_id)
        col.delete([target])
        return {"deleted": target, "documents": len(col)}

    payload = await offload(request.receive, _state(request), work)
    if payload is None:
        return error_reply(CLIENT_CLOSED, "client closed the request")
    return SafeJSONResponse(payload)


def _page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})


# ----------------------------------------------------------------------------- the app


def _check_options(
    col: Served,
    *,
    max_body_bytes: int,
    body_timeout: float,
    encoder: Any | None,
    batch_window_ms: float,
    encoder_backend: str | None,
) -> None:
    """Raise ValueError for a setting out of its range."""
    if max_body_bytes < 1024:
        raise ValueError(f"max_body_bytes must be at least 1024, got {max_body_bytes}")
    if not body_timeout > 0:
        raise ValueError(f"body_timeout must be positive, got {body_timeout}")
    if encoder is not None and getattr(encoder, "dim", col.dim) != col.dim:
        raise ValueError(f"encoder gives {encoder.dim}-dim embeddings; the collection holds {col.dim}")
    if not 0 <= batch_window_ms <= 100:
        raise ValueError(f"batch_window_ms must be in [0, 100], got {batch_window_ms}")
    if encoder_backend is not None and encoder_backend not in BACKENDS:
        raise ValueError(f"encoder_backend must be one of {BACKENDS}, got {encoder_backend!r}")


def _lifespan(
    state: ServerState, *, preload_model: bool, refresh_seconds: float | None, owned: bool
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Startup (kernels warmed up, the model loading in the background, the refresh loop) and shutdown (the
    threads stopped; a sharded collection opened here closed, with its shard actors)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(warm_up, state)
        if preload_model and model_info(state.collection):
            # in the background: /health answers at once, and the first text query waits on the same lock
            threading.Thread(target=preload, args=(state,), daemon=True, name="bitsearch-model-load").start()
        stop = threading.Event()
        if refresh_seconds:
            threading.Thread(
                target=refresh_loop, args=(state, refresh_seconds, stop), daemon=True, name="bitsearch-refresh"
            ).start()
        yield
        stop.set()
        state.close()
        if owned and isinstance(state.collection, ShardedCollection):
            state.collection.close()  # its shard actors

    return lifespan


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
    _check_options(
        col,
        max_body_bytes=max_body_bytes,
        body_timeout=body_timeout,
        encoder=encoder,
        batch_window_ms=batch_window_ms,
        encoder_backend=encoder_backend,
    )
    n_threads = threads or max(8, 4 * (os.cpu_count() or 1))
    state = ServerState(
        col, threads=n_threads, encoder=encoder, encoder_backend=encoder_backend, max_body_bytes=max_body_bytes
    )
    if batch_window_ms > 0:
        # a worker per core (numba runs one kernel thread per worker): batches, not threads, absorb concurrency
        workers = min(n_threads, max(2, os.cpu_count() or 1))
        state.batcher = SearchBatcher(state, batch_window_ms / 1000, workers)

    auth_note = "Every route but /health and the page needs `Authorization: Bearer KEY` or `X-API-Key: KEY`."
    app = FastAPI(
        title="bitsearch",
        version=__version__,
        description=(
            "Search a bitsearch collection: binary codes in RAM, rescored with int8/float32 rows from disk. "
            + (auth_note if api_key else "")
        ),
        lifespan=_lifespan(state, preload_model=preload_model, refresh_seconds=refresh_seconds, owned=owned),
        default_response_class=SafeJSONResponse,
    )
    app.state.bitsearch = state
    app.add_middleware(FastSearch, state=state)  # inside GuardMiddleware (added next, so outermost)
    app.add_middleware(
        GuardMiddleware,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        body_timeout=body_timeout,
        allowed_hosts=frozenset(normalize_host(h) for h in allowed_hosts),
    )
    if api_key:
        _document_security(app)
    for exc_class in ERROR_TABLE:  # anything else: GuardMiddleware answers a JSON 500 and keeps the connection
        app.add_exception_handler(exc_class, on_error)
    app.include_router(router)
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
        app.add_api_route("/", _page, methods=["GET"], include_in_schema=False)
    return app


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
