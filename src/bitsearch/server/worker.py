"""What the endpoints share, and the threads behind them: the served collection (``ServerState``), the one
model thread that embeds texts (``EncoderThread``), and the background loops (warm-up, refresh, preload).

Reads run in worker threads against the collection's immutable state snapshot; writes go through the
collection's own write lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

import anyio
import numpy as np

from bitsearch.collection import Collection
from bitsearch.distributed import MANIFEST as SHARDED_MANIFEST
from bitsearch.distributed import ShardedCollection
from bitsearch.errors import BitsearchError, ModelLoadError, NoModelError

__all__ = ["MAX_ENCODE_BATCH", "Batcher", "EncoderThread", "Served", "ServerState", "model_info", "open_served"]

log = logging.getLogger("bitsearch.server")

MAX_ENCODE_BATCH = 256  # query texts per model call

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


def one_kernel_thread() -> None:
    """Run numba's parallel kernels on one thread in the calling thread (the setting is thread-local).

    numba's kernels from several threads at once, each with its own OpenMP team, slow every search down
    many times over: the server runs one kernel thread per request and requests in parallel instead.
    """
    with contextlib.suppress(Exception):
        import numba

        numba.set_num_threads(1)


class EncoderThread:
    """The collection's encoder, loaded once on first use, and the one thread that runs it.

    One thread, because torch (like numba) slows down badly when many threads each start its OpenMP
    parallel regions, and fast tokenizers are not safe under concurrent calls. Queries waiting together
    share one forward pass; documents are embedded per request.
    """

    def __init__(self, collection: Served, encoder: Any | None, backend: str | None) -> None:
        self.collection = collection
        self.backend = backend
        self.encoder = encoder
        self._error: ModelLoadError | None = None
        self._load_lock = threading.Lock()  # one load, shared by every request
        self._queue: queue.Queue[tuple[list[str], bool, Future[np.ndarray]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def load(self) -> Any:
        """The encoder the collection was built with, loaded once (double-checked under a lock); a failed
        load is remembered, so every later request gets the same error at once."""
        if self.encoder is not None:
            return self.encoder
        with self._load_lock:
            if self.encoder is None:
                if self._error is not None:
                    raise self._error
                info = model_info(self.collection)
                if info is None:
                    raise NoModelError(
                        "this collection records no embedding model, so the server cannot embed text: "
                        "send `vector` embeddings instead of `query` text"
                    )
                from bitsearch.encode import Encoder

                try:
                    self.encoder = Encoder.for_manifest(info, dim=self.collection.dim, backend=self.backend)
                except ModelLoadError as exc:
                    self._error = exc
                    raise
        return self.encoder

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        """Embed ``texts`` on the model thread (started on first use) and wait for them."""
        self.load()  # load errors surface here, in the caller's thread
        fut: Future[np.ndarray] = Future()
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="bitsearch-model")
                self._thread.start()
        self._queue.put((texts, queries, fut))
        return fut.result()

    def close(self) -> None:
        """Stop the model thread (if started)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)
            self._thread = None

    def _take(self) -> list[tuple[list[str], bool, Future[np.ndarray]]] | None:
        """Every waiting request, up to MAX_ENCODE_BATCH texts (blocking for the first); None: stop."""
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        size = len(first[0])
        while size < MAX_ENCODE_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(item)
            size += len(item[0])
        return batch

    def _loop(self) -> None:
        """The model thread: embed queries of a batch in one call and documents per request."""
        enc = self.encoder  # loaded by encode() before this thread starts
        while (batch := self._take()) is not None:
            live = [b for b in batch if b[2].set_running_or_notify_cancel()]
            for texts, _, fut in [b for b in live if not b[1]]:  # documents: one call each
                _settle(fut, enc.encode_documents, texts)
            group = [b for b in live if b[1]]
            if not group:
                continue
            try:
                emb = enc.encode_queries([t for texts, _, _ in group for t in texts])
            except BaseException:
                for texts, _, fut in group:  # again one by one: only the request at fault fails
                    _settle(fut, enc.encode_queries, texts)
                continue
            pos = 0
            for texts, _, fut in group:
                fut.set_result(emb[pos : pos + len(texts)])
                pos += len(texts)


def _settle(fut: Future[np.ndarray], fn: Any, texts: list[str]) -> None:
    """``fut`` gets ``fn(texts)`` or what it raised."""
    try:
        fut.set_result(fn(texts))
    except BaseException as exc:
        fut.set_exception(exc)


class Batcher(Protocol):
    """What the state needs of its micro-batcher (``batcher.SearchBatcher``, which sits above this module)."""

    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class ServerState:
    """What the endpoints share: the collection, its encoder thread, the thread limiter, the batcher."""

    def __init__(
        self,
        collection: Served,
        *,
        threads: int,
        encoder: Any | None = None,
        encoder_backend: str | None = None,
        max_body_bytes: int = 0,
    ) -> None:
        self.collection = collection
        self.sharded = isinstance(collection, ShardedCollection)
        self.limiter = anyio.CapacityLimiter(threads)
        self.model = EncoderThread(collection, encoder, encoder_backend)
        self.max_body_bytes = max_body_bytes  # what /info reports
        self.search_lock: threading.Lock | None = None  # set when numba's threading layer is not thread-safe
        self._local = threading.local()
        self.batcher: Batcher | None = None  # set by create_app when micro-batching is on
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
        return self.model.encoder is not None

    def encoder(self) -> Any:
        """The encoder the collection was built with (or the one given), loaded once."""
        return self.model.load()

    def encode(self, texts: list[str], *, queries: bool) -> np.ndarray:
        """Embed texts on the one model thread; queries waiting together share one forward pass."""
        return self.model.encode(texts, queries=queries)

    def search(self, vectors: np.ndarray | None, **kw: Any) -> Any:
        """Collection.search on one kernel thread (see one_kernel_thread), one at a time where numba needs it."""
        if not getattr(self._local, "single", False):
            one_kernel_thread()
            self._local.single = True
        with self.search_lock or contextlib.nullcontext():
            return self.collection.search(vectors, **kw)

    def close(self) -> None:
        """Stop the search workers and the model thread (if started)."""
        if self.batcher is not None:
            self.batcher.close()
        self.model.close()


# ----------------------------------------------------------------------------- background work


def warm_up(state: ServerState) -> None:
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


def refresh_loop(state: ServerState, every: float, stop: threading.Event) -> None:
    """Reload the collection when another process has committed to it (checked every ``every`` seconds).

    Collection.refresh takes the collection's write lock, so a reload never races a write of this process;
    searches keep the snapshot they started with.
    """
    col = state.collection
    while not stop.wait(every):
        try:
            if isinstance(col, Collection):  # a sharded collection's shards refresh on every call
                col.refresh()
            state.check_index()
        except Exception as exc:  # a half-written or broken collection: keep serving the last good state
            log.warning("could not refresh the collection: %s", exc)


def preload(state: ServerState) -> None:
    """Load the model and run it twice: torch's first forward passes are many times slower than the rest."""
    try:
        for _ in range(2):
            state.encode(["warm up"], queries=True)
        log.info("model loaded")
    except BitsearchError as exc:
        log.warning("model not loaded: %s", exc)
