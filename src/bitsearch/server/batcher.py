"""The /search path after parsing: a request becomes a checked ``SearchJob``, which runs alone (in a worker
thread, or inline when nothing else is in flight) or in a micro-batch (``SearchBatcher``): concurrent
requests share one encoder call and, with equal arguments, one ``Collection.search``. Every path answers
a request with exactly what it would get alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, TypeVar

import anyio
import numpy as np
import orjson
from fastapi.responses import Response

from bitsearch.errors import InvalidInputError

from .errors import CLIENT_CLOSED, error_reply, error_response, render_json
from .schemas import MAX_QUERIES, SearchRequest, as_vectors, check_json, check_text
from .worker import ServerState, one_kernel_thread

__all__ = [
    "DEFAULT_BATCH_WINDOW_MS",
    "MAX_BATCH_QUERIES",
    "MAX_SEARCH_GROUP",
    "SearchBatcher",
    "SearchJob",
    "answer_search",
    "offload",
    "search_payload",
]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
T = TypeVar("T")

# micro-batching: concurrent /search requests share one encoder call and, with equal arguments, one
# Collection.search; a batch forms from what is queued when a worker is free, plus what arrives within the window
DEFAULT_BATCH_WINDOW_MS = 1.0
MAX_BATCH_QUERIES = 64  # queries per batch (the encoder's call); a request with more is served alone
# queries per shared Collection.search: up to 16 the exact scans run in numba, per query as for one query
# (beyond, BLAS products could round scores differently from a lone request's)
MAX_SEARCH_GROUP = 16


def _query_texts(req: SearchRequest) -> list[str] | None:
    """The request's query texts, checked (not empty, valid Unicode); None for a vector search."""
    if req.query is None:
        return None
    single = isinstance(req.query, str)
    texts = [req.query] if single else list(req.query)
    if not texts:
        raise InvalidInputError("`query` is an empty list")
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:
        raise InvalidInputError(f"`{'query' if single else f'query[{blank[0]}]'}` is empty")
    if len(texts) <= MAX_QUERIES:
        for i, text in enumerate(texts):
            check_text(text, "query" if single else f"query[{i}]")
    return texts


class SearchJob:
    """One /search request, checked and ready to run: alone, or in a batch of concurrent ones."""

    __slots__ = ("count", "done", "encode", "key", "kwargs", "loop", "texts", "vectors", "waiter")

    def __init__(self, req: SearchRequest, state: ServerState) -> None:
        """Check the request (every 422 a lone request gets before any work); raise InvalidInputError."""
        texts = _query_texts(req)
        if texts is not None:
            count = len(texts)
        else:
            assert req.vector is not None
            count = len(req.vector) if req.vector and isinstance(req.vector[0], list) else 1
        if count > MAX_QUERIES:
            raise InvalidInputError(f"{count} queries in one request; at most {MAX_QUERIES}")
        # strings that cannot be UTF-8, filters SQLite cannot bind or too deep to translate: 422 before any work
        if req.mode is not None:
            check_text(req.mode, "mode")
        if req.filter is not None:
            check_json(req.filter, "filter", filter_values=True)
        self.vectors: np.ndarray | None = None
        if texts is None:
            assert req.vector is not None
            self.vectors, _ = as_vectors(req.vector, state.collection.dim, "vector")
        self.texts = texts
        self.count = count
        self.encode = texts is not None and req.mode != "keyword"  # BM25 alone needs no embedding
        self.kwargs, self.key = _search_arguments(req, texts, state)
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
        results = state.search(vectors, **self.kwargs)
        return search_payload(results, results, timings, self.kwargs["k"])

    def finish(self, ok: bool, value: Any) -> None:
        """Hand the outcome to the waiting request (from any thread)."""
        self.done = True
        if self.loop is not None and self.waiter is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                self.loop.call_soon_threadsafe(_deliver, self.waiter, (ok, value))


def _search_arguments(
    req: SearchRequest, texts: list[str] | None, state: ServerState
) -> tuple[dict[str, Any], tuple[Any, ...] | None]:
    """Collection.search's keyword arguments for the request, and the key under which requests can share one
    call (None: this one cannot)."""
    rescore: Any = None if req.rescore in (None, "none") else req.rescore
    kw: dict[str, Any] = {
        "k": req.k, "rescore_multiplier": req.rescore_multiplier, "rescore": rescore, "with_text": req.with_text
    }  # fmt: skip
    if req.allow_partial and state.sharded:  # a single collection always answers whole
        kw["allow_partial"] = True
    key: tuple[Any, ...] | None = None
    if req.mode in (None, "dense") and not state.has_index:
        # dense searches with equal arguments can share one Collection.search: each query's hits are what it
        # gets alone (exact scans per query; an ANN index may cut every query of a call to the shortest list)
        filter_key = None if req.filter is None else orjson.dumps(req.filter)
        rescore_key = tuple(rescore) if isinstance(rescore, list) else rescore
        key = (req.k, req.rescore_multiplier, rescore_key, req.with_text, filter_key, "allow_partial" in kw)
    if req.mode is not None:
        kw["mode"] = req.mode
    if req.filter is not None:
        kw["filter"] = req.filter
    if texts is not None:
        kw["query_texts"] = texts  # keyword and hybrid modes rank the text itself too
    return kw, key


def _deliver(waiter: asyncio.Future[tuple[bool, Any]], outcome: tuple[bool, Any]) -> None:
    if not waiter.done():
        waiter.set_result(outcome)


def search_payload(hits: Sequence[Any], results: Any, timings: dict[str, float], k: int) -> dict[str, Any]:
    """The /search response: ``hits`` (per query: Hit dataclasses, rendered by render_json) with the stages,
    timings and warnings of the ``results`` they come from (all of them, or the part of a shared call)."""
    timings.update({name: float(v) for name, v in results.timings.items() if name != "total"})
    timings["total"] = sum(timings.values())
    payload = {
        "results": list(hits),
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
        one_kernel_thread()
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
        self._embed_together([j for j in jobs if j.encode], timings)
        groups: dict[tuple[Any, ...], list[SearchJob]] = {}
        alone: list[SearchJob] = []
        for j in jobs:
            if j.key is None or j.count > MAX_SEARCH_GROUP or j.encode:
                alone.append(j)
            else:
                groups.setdefault(j.key, []).append(j)
        for members in groups.values():
            for chunk in _chunks(members):
                if len(chunk) == 1:
                    alone.append(chunk[0])
                else:
                    alone += self._search_together(chunk, timings)
        for j in alone:
            try:
                if j.encode:
                    j.finish(True, j.run_alone(self.state))
                else:  # embedded with the batch, or given as vectors, or keyword (texts only)
                    results = self.state.search(j.vectors, **j.kwargs)
                    j.finish(True, search_payload(results, results, timings[id(j)], j.kwargs["k"]))
            except Exception as exc:
                j.finish(False, exc)

    def _embed_together(self, embed: list[SearchJob], timings: dict[int, dict[str, float]]) -> None:
        """One encoder call for the texts of several jobs; on failure each is embedded alone later, so only the
        job at fault fails."""
        if len(embed) < 2:
            return
        t0 = time.perf_counter()
        try:
            emb = self.state.encode([t for j in embed for t in j.texts or []], queries=True)
        except Exception:
            return
        took = time.perf_counter() - t0
        pos = 0
        for j in embed:
            j.vectors, j.encode = emb[pos : pos + j.count], False
            timings[id(j)]["encode"] = took
            pos += j.count

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
            j.finish(True, search_payload(results[pos : pos + j.count], results, timings[id(j)], k))
            pos += j.count
        return []


def _chunks(members: list[SearchJob]) -> list[list[SearchJob]]:
    """Jobs in order, cut into runs of at most MAX_SEARCH_GROUP queries (a job is never split)."""
    chunks: list[list[SearchJob]] = [[]]
    size = 0
    for j in members:
        if chunks[-1] and size + j.count > MAX_SEARCH_GROUP:
            chunks.append([])
            size = 0
        chunks[-1].append(j)
        size += j.count
    return [c for c in chunks if c]


# ----------------------------------------------------------------------------- from the event loop


async def offload(receive: Receive, state: ServerState, fn: Callable[[], T]) -> T | None:
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
        if isinstance(state.batcher, SearchBatcher):
            payload = await _batched(receive, state.batcher, job)
        else:
            payload = await offload(receive, state, lambda: job.run_alone(state))
    except Exception as exc:
        response = error_response(exc)
        if response is None:
            raise  # GuardMiddleware answers a JSON 500
        return response
    if payload is None:
        return error_reply(CLIENT_CLOSED, "client closed the request")
    return Response(render_json(payload), media_type="application/json")
