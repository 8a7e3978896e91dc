"""ShardedCollection: one collection spread over N ordinary collection directories, each held by a Ray actor.

Layout of a sharded collection directory::

    sharded.json      format, format_version, dim, shard names, the collection options, the shared int8
                      ranges and the sha256 of the shared codebook, the id counter
    shard-000/ ...    each an ordinary bitsearch collection (``Collection.open`` reads it)

Documents go to the shard ``blake2b(canonical id) mod shards`` (stable across processes and versions,
unlike ``hash()``). Every shard encodes identically: all are created with the same ``ranges`` and the
same ``calibration_embeddings`` (the ones given to ``create``, else the first ``add``'s embeddings), so
the int8 ranges and the codebook (levels, thresholds, centering, rotation) agree; ``open`` checks it.

Searches fan out (one call per shard for a whole batch of queries) and merge: dense scores are
comparable across shards, so the global top k is the top k of the shards' top k (ties: shard order,
then the shard's own order). Keyword (BM25) scores are not comparable as they stand, because each
shard's FTS5 index knows only its own document count, document frequencies and average length; a
first round gathers those statistics for the query's phrases, a second scores with their sums, which
is what one collection holding every document computes. Hybrid fuses the merged rankings.

Ray is imported on first use; ``create`` and ``open`` start a local Ray when none is running. The
shard directories must be reachable from the nodes that run the actors (one machine, or a shared
file system).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .collection import Collection
from .errors import (
    BitsearchError,
    CollectionError,
    CorruptCollectionError,
    DuplicateIdError,
    InvalidInputError,
    NoModelError,
    PartialWriteError,
    ShardUnavailableError,
    UnknownIdError,
)
from .files import read_versioned_json, write_atomic
from .hybrid import reciprocal_rank_fusion
from .kernels import topk_by_row
from .options import MODES
from .quantize import check_documents, check_queries
from .results import Hit, SearchResults
from .search import HYBRID_DEPTH
from .storage.inputs import check_meta, check_payload, check_text
from .storage.paths import DOCS
from .store import DocId, DocStore, filter_sql, normalize_id

__all__ = ["FORMAT_VERSION", "MANIFEST", "Shard", "ShardedCollection", "shard_of"]

MANIFEST = "sharded.json"
FORMAT_NAME = "bitsearch-sharded"
FORMAT_VERSION = 1
SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # a plain name inside the directory
# shards spread over the cluster's nodes; an actor reserves no CPU (it serves calls, numba threads do the work)
DEFAULT_ACTOR_OPTIONS: dict[str, Any] = {
    "max_restarts": 3,
    "max_task_retries": 3,
    "num_cpus": 0,
    "scheduling_strategy": "SPREAD",
}
_CREATE_OPTIONS = frozenset(inspect.signature(Collection.create).parameters) - {"cls", "path", "dim", "exist_ok"}
_CODEBOOK_PRECISIONS = ("binary", "1.5bit", "2bit")
_INLINE_BYTES = 64 * 1024  # stage-1 codes calibrated on embeddings


def shard_of(doc_id: object, shards: int) -> int:
    """The shard (0 .. shards-1) that holds ``doc_id``: blake2b of its canonical form, modulo ``shards``.

    The canonical form keeps the id's type (the int 7 and the string "7" are different ids).
    """
    norm = normalize_id(doc_id)
    key = b"i" + str(norm).encode() if isinstance(norm, int) else b"s" + norm.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") % int(shards)


def codebook_digest(manifest: dict[str, Any]) -> str | None:
    """sha256 of a collection manifest's codebook (its JSON, keys sorted; rotation by its checksum)."""
    book = manifest.get("codebook")
    if book is None:
        return None
    return hashlib.sha256(json.dumps(book, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------- the actor body


class Shard:
    """One shard: an ordinary collection directory opened in a Ray actor (``ray.remote(Shard)``).

    Writes are idempotent by id so that Ray may retry them after an actor restart: ``add`` skips ids
    already stored, ``delete`` ids already gone.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.col = Collection.open(self.path)
        self.docs = DocStore(self.path / DOCS)

    def info(self) -> dict[str, Any]:
        """The shard's shared encoding parameters, for ``ShardedCollection.open`` to compare."""
        m = self.col.manifest
        return {"dim": m["dim"], "precision": m["precision"], "ranges": m["ranges"], "codebook": codebook_digest(m)}

    def existing_ids(self, ids: list[DocId]) -> list[DocId]:
        self.col.refresh()
        return self.col.existing_ids(ids)

    def add(
        self,
        embeddings: np.ndarray,
        ids: list[DocId],
        texts: list[str | None] | None,
        metadata: list[dict[str, Any] | None] | None,
    ) -> list[DocId]:
        """Add the documents whose ids are not stored yet; returns the ids it stored."""
        present = set(self.col.existing_ids(ids))
        keep = [i for i, d in enumerate(ids) if d not in present]
        if keep:
            self.col.add(
                embeddings[keep],
                ids=[ids[i] for i in keep],
                texts=None if texts is None else [texts[i] for i in keep],
                metadata=None if metadata is None else [metadata[i] for i in keep],
            )
        return [ids[i] for i in keep]

    def upsert(
        self,
        embeddings: np.ndarray,
        ids: list[DocId],
        texts: list[str | None] | None,
        metadata: list[dict[str, Any] | None] | None,
    ) -> list[DocId]:
        """Store the documents, replacing stored versions (idempotent: a retry stores the same); returns the ids."""
        return self.col.upsert(embeddings, ids=ids, texts=texts, metadata=metadata)

    def delete(self, ids: list[DocId]) -> list[DocId]:
        """Delete the ids still stored; returns them."""
        present = self.col.existing_ids(ids)
        if present:
            self.col.delete(present)
        return present

    def search(
        self, queries: np.ndarray, options: dict[str, Any]
    ) -> tuple[list[list[tuple[Any, ...]]], dict, list[str]]:
        """Dense search: per query, up to k (id, score, text, metadata), the stage timings and the warnings."""
        self.col.refresh()  # another handle's actors may have written to this directory
        res = self.col.search(queries, mode="dense", **options)
        hits = [[(h.id, h.score, h.text, h.metadata) for h in hits] for hits in res]
        return hits, dict(res.timings), list(res.warnings)

    def keyword_statistics(self, texts: list[str]) -> list[dict[str, Any]]:
        """Per query string, its phrases' document frequencies and this shard's document and token counts."""
        self.col.refresh()
        return [self.docs.keyword_statistics(t) for t in texts]

    def keyword_search(
        self, texts: list[str], k: int, statistics: list[dict[str, Any]], flt: dict[str, Any] | None, with_text: bool
    ) -> list[list[tuple[Any, ...]]]:
        """BM25 with the given (global) statistics: per query, up to k (id, score, text, metadata)."""
        where = filter_sql(flt) if flt is not None else None
        max_seq = int(self.col.manifest["next_seq"])
        out = []
        for text, stats in zip(texts, statistics, strict=True):
            limit = k
            while True:
                ranked = self.docs.keyword_search_global(text, limit, stats, where, max_seq)
                docs = self.docs.fetch([s for s, _ in ranked], with_text)
                found = [(docs[s], score) for s, score in ranked if s in docs]
                live = set(self.col.existing_ids([d[0] for d, _ in found]))  # tombstoned, not yet purged
                hits = [(d[0], score, d[1], d[2]) for d, score in found if d[0] in live]
                if len(hits) >= k or len(ranked) < limit:
                    out.append(hits[:k])
                    break
                limit *= 2
        return out

    def size(self) -> int:
        self.col.refresh()
        return len(self.col)

    def stats(self) -> dict[str, Any]:
        self.col.refresh()
        return self.col.stats()

    def compact(self) -> None:
        self.col.compact()

    def build_index(self, nlist: int | None, nprobe: int, seed: int) -> bool:
        """Build the shard's approximate index; False (nothing built) when the shard is empty."""
        if len(self.col) == 0:
            return False
        self.col.build_index(nlist=nlist, nprobe=nprobe, seed=seed)
        return True


# ----------------------------------------------------------------------------- the driver side


def _ray() -> Any:
    try:
        import ray
    except ImportError:  # pragma: no cover - depends on the installation
        raise BitsearchError("sharded collections need Ray: pip install 'bitsearch[ray]'") from None
    return ray


def _ensure_ray(num_cpus: int | None) -> Any:
    """Ray, initialized: a local instance when none is running."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return ray


def _read_manifest(path: Path) -> dict[str, Any]:
    m = read_versioned_json(path, MANIFEST, FORMAT_NAME, FORMAT_VERSION, "sharded collection")
    mpath = path / MANIFEST
    for key in ("dim", "shards", "options", "created", "next_id", "generation"):
        if key not in m:
            raise CorruptCollectionError(f"{mpath} lacks {key}")
    names = m["shards"]
    if not isinstance(names, list) or not names or len(set(map(str, names))) != len(names):
        raise CorruptCollectionError(f"{mpath} names no shards, or one twice")
    for name in names:
        if not isinstance(name, str) or not SHARD_NAME.match(name):
            raise CorruptCollectionError(f"{mpath} names an invalid shard directory {name!r}: a plain name is required")
    return m


@contextlib.contextmanager
def _locked(path: Path) -> Any:
    """The sharded manifest's write lock (across processes)."""
    with open(path / ".lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class ShardedCollection:
    """A collection split over shards held by Ray actors, with ``Collection``'s surface.

    ``create(path, dim, shards=N, **collection_options)`` / ``open(path)``; ``add``, ``delete``,
    ``search`` (same arguments and ``SearchResults``), ``len()``, ``stats()``, ``compact()``,
    ``build_index()``, ``close()``.
    """

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        *,
        actor_options: dict[str, Any] | None = None,
        timeout: float | None = None,
        num_cpus: int | None = None,
        shard_class: type[Shard] = Shard,
    ) -> None:
        self.path = path
        self._shard_class = shard_class
        self._manifest = manifest
        self._actor_options = {**DEFAULT_ACTOR_OPTIONS, **(actor_options or {})}
        self._timeout = timeout
        self._ray = _ensure_ray(num_cpus)
        self._actors: list[Any] = []
        self._encoder: Any = None
        if manifest["created"]:
            self._start_actors()

    # -------------------------------------------------------------- create / open

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        dim: int,
        *,
        shards: int = 2,
        ranges: np.ndarray | None = None,
        calibration_embeddings: np.ndarray | None = None,
        actor_options: dict[str, Any] | None = None,
        timeout: float | None = None,
        num_cpus: int | None = None,
        shard_class: type[Shard] = Shard,
        **collection_options: Any,
    ) -> ShardedCollection:
        """Create an empty sharded collection of ``shards`` collection directories at ``path``.

        ``collection_options`` are ``Collection.create``'s (precision, keep_int8, keep_float32, model,
        keyword_index, stage1, centering, rotation, query_bits, ...), the same for every shard. The
        shards are created now when ``calibration_embeddings`` are given (or nothing needs calibrating:
        int8 ranges given or not kept, and no codebook), else at the first ``add``, calibrated on its
        embeddings, so that every shard encodes with the same ranges and codebook.
        ``actor_options`` go to Ray's ``.options()`` for the shard actors (default:
        ``DEFAULT_ACTOR_OPTIONS``); ``timeout`` (seconds) bounds each wait for a shard; ``num_cpus``
        sizes the local Ray started when none is running; ``shard_class`` is the actor body (a ``Shard``
        subclass, e.g. instrumented).
        """
        p = Path(path)
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise InvalidInputError(f"shards must be a positive integer, got {shards!r}")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
        unknown = sorted(set(collection_options) - _CREATE_OPTIONS)
        if unknown:
            raise InvalidInputError(f"unknown collection option(s) {', '.join(unknown)}")
        if (p / MANIFEST).exists():
            raise CollectionError(f"a sharded collection already exists at {p}")
        if p.exists() and any(p.iterdir()):
            raise CollectionError(f"{p} exists and is not an empty directory")
        try:
            json.dumps(collection_options)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"collection options must be JSON values: {exc}") from None
        precision = collection_options.get("precision", "binary")
        keep_int8 = collection_options.get("keep_int8", True) or precision == "int8"
        if ranges is not None:
            ranges = np.asarray(ranges, dtype=np.float32)
        if calibration_embeddings is not None:
            calibration_embeddings = check_documents(calibration_embeddings, int(dim), name="calibration_embeddings")
        width = len(str(shards - 1))
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "dim": int(dim),
            "shards": [f"shard-{i:0{max(3, width)}d}" for i in range(shards)],
            "options": collection_options,
            "ranges": None if ranges is None else ranges.tolist(),
            "codebook_sha256": None,
            "created": False,
            "next_id": 0,
            "generation": 0,
        }
        p.mkdir(parents=True, exist_ok=True)
        with _locked(p):
            needs_sample = precision in _CODEBOOK_PRECISIONS or (keep_int8 and ranges is None)
            if calibration_embeddings is not None or not needs_sample:
                _create_shards(p, manifest, ranges, calibration_embeddings)
            write_atomic(p / MANIFEST, json.dumps(manifest, indent=1).encode())
        return cls(
            p, manifest, actor_options=actor_options, timeout=timeout, num_cpus=num_cpus, shard_class=shard_class
        )

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        actor_options: dict[str, Any] | None = None,
        timeout: float | None = None,
        num_cpus: int | None = None,
        shard_class: type[Shard] = Shard,
    ) -> ShardedCollection:
        """Open the sharded collection at ``path``: one actor per shard; their encodings are checked."""
        p = Path(path)
        m = _read_manifest(p)
        return cls(p, m, actor_options=actor_options, timeout=timeout, num_cpus=num_cpus, shard_class=shard_class)

    def _start_actors(self) -> None:
        for name in self.shard_names:
            if not (self.path / name).is_dir():
                raise CorruptCollectionError(f"shard directory {self.path / name} named by {MANIFEST} is missing")
        remote = self._ray.remote(self._shard_class)
        self._remote = remote
        self._actors = [self._new_actor(i) for i in range(len(self.shard_names))]
        infos, errors = self._call("info", {i: () for i in range(len(self._actors))})
        if errors:
            self._raise_unavailable(errors, "open")
        m = self._manifest
        for i, info in infos.items():
            name = self.shard_names[i]
            if info["dim"] != m["dim"]:
                raise CorruptCollectionError(
                    f"shard {name} has dim {info['dim']}, the sharded manifest says {m['dim']}"
                )
            if info["ranges"] != m["ranges"] or info["codebook"] != m["codebook_sha256"]:
                raise CorruptCollectionError(
                    f"shard {name} encodes differently from the sharded manifest (int8 ranges or codebook differ)"
                )

    def _new_actor(self, i: int) -> Any:
        return self._remote.options(**self._actor_options).remote(str(self.path / self.shard_names[i]))

    # -------------------------------------------------------------- properties

    @property
    def shard_names(self) -> list[str]:
        return list(self._manifest["shards"])

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the sharded manifest."""
        return json.loads(json.dumps(self._manifest))

    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def actors(self) -> list[Any]:
        """The shard actors' handles, in shard order (for tests and monitoring)."""
        return list(self._actors)

    def __len__(self) -> int:
        if not self._actors:
            return 0
        got, errors = self._call("size", {i: () for i in range(len(self._actors))})
        if errors:
            self._raise_unavailable(errors, "count")
        return int(sum(got.values()))

    def __repr__(self) -> str:
        return f"ShardedCollection({str(self.path)!r}, shards={len(self.shard_names)}, dim={self.dim})"

    def __enter__(self) -> ShardedCollection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the shard actors (the directories stay)."""
        if not self._ray.is_initialized():  # Ray was shut down: the actors went with it
            self._actors = []
            return
        for a in self._actors:
            with contextlib.suppress(Exception):
                self._ray.kill(a, no_restart=True)
        self._actors = []

    # -------------------------------------------------------------- calls with fault handling

    def _call(self, method: str, args: dict[int, tuple[Any, ...]]) -> tuple[dict[int, Any], dict[int, BaseException]]:
        """Call ``method`` on the given shards at once; (answers, errors) by shard index.

        A shard whose actor died (and whose task Ray's own retries could not finish) gets a new actor
        opened from its directory and the call once more; a BitsearchError raised inside a shard is
        returned as it is.
        """
        ray = self._ray
        futures = {i: getattr(self._actors[i], method).remote(*a) for i, a in args.items()}
        out: dict[int, Any] = {}
        errors: dict[int, BaseException] = {}
        try:
            values = ray.get(list(futures.values()), timeout=self._timeout)
            return dict(zip(futures, values, strict=True)), {}
        except Exception:  # sorted out shard by shard below
            pass
        retry = []
        for i, f in futures.items():
            try:
                out[i] = ray.get(f, timeout=self._timeout)
            except ray.exceptions.RayTaskError as exc:
                errors[i] = exc.cause if isinstance(exc.cause, BaseException) else exc
            except ray.exceptions.GetTimeoutError as exc:
                errors[i] = exc
            except ray.exceptions.RayActorError as exc:
                errors[i] = exc
                retry.append(i)
        for i in retry:  # the actor is gone for good: a fresh one from the shard's directory
            with contextlib.suppress(Exception):
                ray.kill(self._actors[i], no_restart=True)
            self._actors[i] = self._new_actor(i)
            try:
                out[i] = ray.get(getattr(self._actors[i], method).remote(*args[i]), timeout=self._timeout)
                del errors[i]
            except ray.exceptions.RayTaskError as exc:
                errors[i] = exc.cause if isinstance(exc.cause, BaseException) else exc
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
                errors[i] = exc
        return out, errors

    def _raise_unavailable(self, errors: dict[int, BaseException], what: str) -> None:
        """Re-raise a bitsearch error from a shard as it is; anything else as ShardUnavailableError."""
        for exc in errors.values():
            if isinstance(exc, BitsearchError):
                raise exc
        names = [self.shard_names[i] for i in sorted(errors)]
        first = errors[min(errors)]
        raise ShardUnavailableError(
            f"{what}: shard(s) {', '.join(names)} did not answer ({type(first).__name__}: {str(first)[:200]})", names
        )

    # -------------------------------------------------------------- writes

    def add(
        self,
        embeddings: np.ndarray,
        ids: Sequence[object] | None = None,
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
        *,
        skip_existing: bool = False,
    ) -> list[DocId]:
        """Add documents to their shards; returns their ids (``Collection.add``'s rules).

        ``ids=None`` takes consecutive ints from the sharded manifest's counter (reserved before any
        shard writes, so never handed out twice). An id already stored is a DuplicateIdError and
        nothing is written, unless ``skip_existing``, which leaves such documents as they are. Each
        shard's part is atomic; when some shards commit and another fails, PartialWriteError names the
        ``stored_ids``: re-run ``add`` with the same ids (``err.stored_ids + err.failed_ids``) and
        ``skip_existing=True`` to store the rest.
        """
        emb = check_documents(embeddings, self.dim)
        n = emb.shape[0]
        texts_l = check_payload(texts, n, "texts", check_text)
        meta_l = check_payload(metadata, n, "metadata", check_meta)
        if ids is None:
            doc_ids: list[DocId] = self._reserve_ids(n)
        else:
            raw = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
            doc_ids = [normalize_id(i) for i in raw]
            if len(doc_ids) != n:
                raise InvalidInputError(f"got {len(doc_ids)} ids for {n} embeddings")
        seen: set[DocId] = set()
        for d in doc_ids:
            if d in seen:
                raise DuplicateIdError(f"document id {d!r} appears more than once in this call")
            seen.add(d)
        if not self._manifest["created"]:
            self._create_on_first_add(emb)
        groups = self._route(doc_ids)
        present, errors = self._call("existing_ids", {s: ([doc_ids[j] for j in rows],) for s, rows in groups.items()})
        if errors:
            self._raise_unavailable(errors, "add")
        stored = {d for got in present.values() for d in got}
        if stored and not skip_existing:
            shown = ", ".join(repr(d) for d in list(stored)[:5])
            raise DuplicateIdError(f"document id(s) already in the collection: {shown}")
        calls = {}
        for s, rows in groups.items():
            rows = [j for j in rows if doc_ids[j] not in stored]
            if rows:
                calls[s] = (
                    emb[rows],
                    [doc_ids[j] for j in rows],
                    None if texts_l is None else [texts_l[j] for j in rows],
                    None if meta_l is None else [meta_l[j] for j in rows],
                )
        done, errors = self._call("add", calls)
        if errors:
            ok = {d for s in done for d in calls[s][1]}
            failed = [d for s in errors for d in calls[s][1]]
            if not ok and len(errors) == 1 and isinstance(next(iter(errors.values())), BitsearchError):
                raise next(iter(errors.values()))  # nothing was written: the shard's own error
            names = [self.shard_names[s] for s in sorted(errors)]
            first = errors[min(errors)]
            raise PartialWriteError(
                f"add stored {len(ok)} of {len(doc_ids)} documents; shard(s) {', '.join(names)} failed "
                f"({type(first).__name__}: {str(first)[:200]}); re-run add with the same ids and skip_existing=True",
                [d for d in doc_ids if d in ok],
                failed,
                names,
            )
        return doc_ids

    def upsert(
        self,
        embeddings: np.ndarray,
        ids: Sequence[object],
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[DocId]:
        """Store documents on their shards (routed by id), replacing stored versions; returns the ids.

        Each shard's part is one ``Collection.upsert`` commit; when some shards commit and another
        fails, PartialWriteError names the ``stored_ids``. Upserting is idempotent: re-run the same call.
        """
        if ids is None:
            raise InvalidInputError("upsert needs the documents' ids")
        emb = check_documents(embeddings, self.dim)
        n = emb.shape[0]
        texts_l = check_payload(texts, n, "texts", check_text)
        meta_l = check_payload(metadata, n, "metadata", check_meta)
        raw = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        doc_ids = [normalize_id(i) for i in raw]
        if len(doc_ids) != n:
            raise InvalidInputError(f"got {len(doc_ids)} ids for {n} embeddings")
        seen: set[DocId] = set()
        for d in doc_ids:
            if d in seen:
                raise DuplicateIdError(f"document id {d!r} appears more than once in this call")
            seen.add(d)
        if not self._manifest["created"]:
            self._create_on_first_add(emb)
        calls = {
            s: (
                emb[rows],
                [doc_ids[j] for j in rows],
                None if texts_l is None else [texts_l[j] for j in rows],
                None if meta_l is None else [meta_l[j] for j in rows],
            )
            for s, rows in self._route(doc_ids).items()
        }
        done, errors = self._call("upsert", calls)
        if errors:
            ok = {d for s in done for d in calls[s][1]}
            failed = [d for s in errors for d in calls[s][1]]
            if not ok and len(errors) == 1 and isinstance(next(iter(errors.values())), BitsearchError):
                raise next(iter(errors.values()))  # nothing was written: the shard's own error
            names = [self.shard_names[s] for s in sorted(errors)]
            first = errors[min(errors)]
            raise PartialWriteError(
                f"upsert stored {len(ok)} of {n} documents; shard(s) {', '.join(names)} failed "
                f"({type(first).__name__}: {str(first)[:200]}); re-run the same upsert",
                [d for d in doc_ids if d in ok],
                failed,
                names,
            )
        return doc_ids

    def delete(self, ids: Sequence[object]) -> int:
        """Delete documents by id; returns how many. An unknown id is an UnknownIdError, nothing deleted."""
        if isinstance(ids, (str, int, np.integer)):
            ids = [ids]
        norm = [normalize_id(i) for i in ids]
        if not norm:
            return 0
        if len(set(norm)) != len(norm):
            raise DuplicateIdError("a document id appears more than once in this call")
        if not self._actors:
            raise UnknownIdError(f"unknown document id(s): {', '.join(repr(i) for i in norm[:5])}")
        groups = self._route(norm)
        calls = {s: ([norm[j] for j in rows],) for s, rows in groups.items()}
        present, errors = self._call("existing_ids", calls)
        if errors:
            self._raise_unavailable(errors, "delete")
        live = {d for got in present.values() for d in got}
        missing = [d for d in norm if d not in live]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5])
            raise UnknownIdError(f"unknown document id(s): {shown}{' ...' if len(missing) > 5 else ''}")
        done, errors = self._call("delete", calls)
        if errors:
            ok = [d for got in done.values() for d in got]
            failed = [d for s in errors for d in calls[s][0]]
            names = [self.shard_names[s] for s in sorted(errors)]
            raise PartialWriteError(
                f"delete applied on some shards only; shard(s) {', '.join(names)} failed", ok, failed, names
            )
        return len(norm)

    def existing_ids(self, ids: Sequence[object]) -> list[DocId]:
        """The subset of ``ids`` stored in the collection (for resumable indexing)."""
        norm = [normalize_id(i) for i in ids]
        if not norm or not self._actors:
            return []
        groups = self._route(norm)
        present, errors = self._call("existing_ids", {s: ([norm[j] for j in rows],) for s, rows in groups.items()})
        if errors:
            self._raise_unavailable(errors, "existing_ids")
        live = {d for got in present.values() for d in got}
        return [d for d in norm if d in live]

    def compact(self) -> None:
        """Compact every shard (``Collection.compact``)."""
        if self._actors:
            _, errors = self._call("compact", {i: () for i in range(len(self._actors))})
            if errors:
                self._raise_unavailable(errors, "compact")

    def build_index(self, nlist: int | None = None, nprobe: int = 32, seed: int = 0) -> None:
        """Build each non-empty shard's approximate index (``nlist`` per shard; default ~4 sqrt(shard rows))."""
        if not self._actors:
            raise InvalidInputError("the collection is empty: add documents before building an index")
        built, errors = self._call("build_index", {i: (nlist, nprobe, seed) for i in range(len(self._actors))})
        if errors:
            self._raise_unavailable(errors, "build_index")
        if not any(built.values()):
            raise InvalidInputError("the collection is empty: add documents before building an index")

    def stats(self) -> dict[str, Any]:
        """Totals over the shards (documents, rows, deleted, bytes in RAM and on disk) and each shard's."""
        per: list[dict[str, Any]] = []
        if self._actors:
            got, errors = self._call("stats", {i: () for i in range(len(self._actors))})
            if errors:
                self._raise_unavailable(errors, "stats")
            per = [got[i] for i in range(len(self._actors))]
        keys = ("documents", "rows", "deleted", "ram_bytes", "disk_bytes", "docs_disk_bytes", "float32_bytes")
        total = {k: int(sum(s[k] for s in per)) for k in keys}
        stages: dict[str, dict[str, int]] = {}  # per stage, summed over the shards (as one collection reports them)
        for s in per:
            for name, st in s.get("stages", {}).items():
                acc = stages.setdefault(name, {"ram_bytes": 0, "disk_bytes": 0})
                acc["ram_bytes"] += int(st["ram_bytes"])
                acc["disk_bytes"] += int(st["disk_bytes"])
        precision = self._manifest["options"].get("precision", "binary")
        stage1_ram = stages.get(precision, {}).get("ram_bytes", 0)
        return {
            **total,
            "dim": self.dim,
            "precision": precision,
            "model": self._manifest["options"].get("model"),
            "stages": stages,
            "compression_vs_float32": total["float32_bytes"] / stage1_ram if stage1_ram else None,
            "shards": [
                {"name": name, **{k: s[k] for k in ("documents", "rows", "deleted", "ram_bytes", "disk_bytes")}}
                for name, s in zip(self.shard_names, per, strict=False)
            ],
        }

    # -------------------------------------------------------------- search

    def search(
        self,
        queries: np.ndarray | str | Sequence[str] | None = None,
        k: int = 10,
        rescore_multiplier: int = 4,
        rescore: str | Sequence[str] | None = "int8",
        *,
        mode: str = "dense",
        query_texts: str | Sequence[str] | None = None,
        filter: dict[str, Any] | None = None,
        rrf_k: float = 60.0,
        weights: Sequence[float] | None = None,
        nprobe: int | None = None,
        exact: bool = False,
        with_text: bool = True,
        allow_partial: bool = False,
    ) -> SearchResults:
        """``Collection.search`` over every shard, merged; the results also say which shards answered.

        Dense: each shard runs its stages and returns its top k; the merge keeps the global top k by
        the last stage's score (ties: lower shard index, then the shard's order). With exact settings
        (rescore=None over int8/float32 codes, or rescoring every row) the answer equals one
        collection holding all the documents, ids and scores. With ``rescore_multiplier``, each shard
        rescores its own top k x m, a superset of the k x m one collection would rescore, so the merged
        top k can only be better by the rescoring stage's score, rank by rank.
        Keyword: BM25 with document frequencies, counts and average lengths summed over the shards (a
        first round gathers them), as one collection scores. Hybrid: RRF of the merged rankings.
        Filters apply inside each shard. A shard that stays unreachable after a restart raises
        ShardUnavailableError, or with ``allow_partial`` leaves ``results.partial = True`` and names
        ``results.shards_answered``.
        """
        if mode not in MODES:
            raise InvalidInputError(f"unknown search mode {mode!r}; expected one of {', '.join(MODES)}")
        for name, value in (("k", k), ("rescore_multiplier", rescore_multiplier)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
        if filter is not None:
            filter_sql(filter)  # a bad filter is an error here, before any shard is asked
        vectors, texts = _split_queries(queries, query_texts)
        timings: dict[str, float] = {}
        if mode != "keyword" and vectors is None:
            if texts is None:
                raise InvalidInputError("no queries given: pass vectors or query strings")
            t0 = time.perf_counter()
            vectors = self.encoder.encode_queries(texts)
            timings["embed"] = time.perf_counter() - t0
        if mode != "dense" and texts is None:
            raise InvalidInputError(f'mode="{mode}" needs query strings: pass them as queries or query_texts')
        q = None
        if vectors is not None:
            q = check_queries(vectors, self.dim)
        nq = q.shape[0] if q is not None else len(texts or [])
        if q is not None and texts is not None and len(texts) != q.shape[0]:
            raise InvalidInputError(f"got {len(texts)} query texts for {q.shape[0]} query vectors")
        depth = max(int(k), HYBRID_DEPTH) if mode == "hybrid" else int(k)
        answered = set(range(len(self._actors)))
        failed: dict[int, BaseException] = {}

        dense: list[list[tuple[Any, ...]]] = [[] for _ in range(nq)]
        warned: list[str] = []
        if mode != "keyword" and self._actors:
            assert q is not None
            options = dict(
                k=depth, rescore_multiplier=int(rescore_multiplier), rescore=rescore, filter=filter,
                nprobe=nprobe, exact=exact, with_text=with_text,
            )  # fmt: skip
            t0 = time.perf_counter()
            # a large batch goes to the object store once for every shard; a small one inline (a put costs ~1 ms)
            q_ref = self._ray.put(q) if q.nbytes > _INLINE_BYTES and len(answered) > 1 else q
            got, errors = self._call("search", {i: (q_ref, options) for i in answered})
            self._check(errors, failed, allow_partial, "search")
            answered -= set(errors)
            timings["shards"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            dense = merge_ranked([got[i][0] for i in sorted(got)], depth)
            timings["merge"] = time.perf_counter() - t0
            # a filter field that no document of any shard has: every answering shard said so
            notes = [set(got[i][2]) for i in sorted(got)]
            warned = [w for w in got[min(got)][2] if all(w in n for n in notes)] if got else []
        keyword: list[list[tuple[Any, ...]]] = [[] for _ in range(nq)]
        if mode != "dense" and self._actors:
            assert texts is not None
            t0 = time.perf_counter()
            stats, errors = self._call("keyword_statistics", {i: (texts,) for i in answered})
            self._check(errors, failed, allow_partial, "keyword search")
            answered -= set(errors)
            totals = [_sum_statistics([stats[i][j] for i in sorted(stats)]) for j in range(nq)]
            got, errors = self._call("keyword_search", {i: (texts, depth, totals, filter, with_text) for i in answered})
            self._check(errors, failed, allow_partial, "keyword search")
            answered -= set(errors)
            keyword = merge_ranked([got[i] for i in sorted(got)], depth)
            timings["keyword"] = time.perf_counter() - t0

        if mode == "dense":
            ranked = dense
        elif mode == "keyword":
            ranked = keyword
        else:
            t0 = time.perf_counter()
            ranked = []
            for d, kw in zip(dense, keyword, strict=True):
                payload = {h[0]: h for h in kw}
                payload.update({h[0]: h for h in d})
                fused = reciprocal_rank_fusion(
                    [[h[0] for h in d], [h[0] for h in kw]], int(k), rrf_k=rrf_k, weights=weights
                )
                ranked.append([(key, score, payload[key][2], payload[key][3]) for key, score in fused])
            timings["fusion"] = time.perf_counter() - t0
        hits = [[Hit(h[0], float(h[1]), h[2], h[3]) for h in r[: int(k)]] for r in ranked]
        timings["total"] = sum(timings.values())
        stages = {"dense": ["shards"], "keyword": ["keyword"], "hybrid": ["shards", "keyword"]}[mode]
        results = SearchResults(hits, timings, stages, warned)
        results.partial = bool(failed)  # type: ignore[attr-defined]
        results.shards_answered = [self.shard_names[i] for i in sorted(answered)]  # type: ignore[attr-defined]
        return results

    def _check(
        self, errors: dict[int, BaseException], failed: dict[int, BaseException], allow_partial: bool, what: str
    ) -> None:
        """Raise a shard's bitsearch error; unreachable shards: an error, or noted when partial answers are allowed."""
        if not errors:
            return
        if not allow_partial or any(isinstance(e, BitsearchError) for e in errors.values()):
            self._raise_unavailable(errors, what)
        failed.update(errors)

    @property
    def encoder(self) -> Any:
        """The query encoder of the model recorded in the options, loaded on first use."""
        if self._encoder is None:
            info = self._manifest["options"].get("model")
            if not info:
                raise NoModelError("this collection records no embedding model: search it with vectors")
            from .encode import Encoder

            self._encoder = Encoder.for_manifest(info)
        return self._encoder

    @encoder.setter
    def encoder(self, encoder: Any) -> None:
        dim = getattr(encoder, "dim", self.dim)
        if dim != self.dim:
            raise InvalidInputError(f"encoder produces {dim}-dim vectors; this collection holds {self.dim}")
        self._encoder = encoder

    # -------------------------------------------------------------- helpers

    def _route(self, ids: Sequence[DocId]) -> dict[int, list[int]]:
        """Positions of ``ids`` grouped by their shard."""
        n = len(self.shard_names)
        groups: dict[int, list[int]] = {}
        for j, d in enumerate(ids):
            groups.setdefault(shard_of(d, n), []).append(j)
        return groups

    def _reserve_ids(self, n: int) -> list[DocId]:
        """n consecutive int ids from the manifest's counter, committed before use."""
        with _locked(self.path):
            m = _read_manifest(self.path)
            first = int(m["next_id"])
            m["next_id"] = first + n
            m["generation"] = int(m["generation"]) + 1
            write_atomic(self.path / MANIFEST, json.dumps(m, indent=1).encode())
            self._manifest = m
        return list(range(first, first + n))

    def _create_on_first_add(self, emb: np.ndarray) -> None:
        """Create the shards, calibrated on the first add's embeddings, and start their actors."""
        with _locked(self.path):
            m = _read_manifest(self.path)
            if not m["created"]:
                ranges = None if m["ranges"] is None else np.asarray(m["ranges"], dtype=np.float32)
                _create_shards(self.path, m, ranges, emb)
                m["generation"] = int(m["generation"]) + 1
                write_atomic(self.path / MANIFEST, json.dumps(m, indent=1).encode())
            self._manifest = m
        self._start_actors()


def _create_shards(path: Path, m: dict[str, Any], ranges: np.ndarray | None, calibration: np.ndarray | None) -> None:
    """Create every shard directory with the same encoding; record the shared parameters in ``m``."""
    infos = []
    for name in m["shards"]:
        shard = path / name
        shutil.rmtree(shard, ignore_errors=True)  # left by an earlier attempt that never committed
        col = Collection.create(shard, m["dim"], ranges=ranges, calibration_embeddings=calibration, **m["options"])
        man = col.manifest
        col.close()
        infos.append((man["ranges"], codebook_digest(man)))
    if any(info != infos[0] for info in infos):
        raise CorruptCollectionError("the shards were created with different encodings")  # pragma: no cover
    m["ranges"], m["codebook_sha256"] = infos[0]
    m["created"] = True


def merge_ranked(per_shard: list[list[list[tuple[Any, ...]]]], k: int) -> list[list[tuple[Any, ...]]]:
    """Per query, the k best (id, score, ...) of every shard's ranking: score descending, then shard
    order, then the shard's own order (a deterministic tie-break): ``kernels.topk_by_row`` over the
    hits laid end to end, their positions as rows."""
    if not per_shard:
        return []
    merged = []
    for q in range(len(per_shard[0])):
        hits = [h for s in per_shard for h in s[q]]
        scores = np.fromiter((h[1] for h in hits), np.float64, len(hits))
        pos, _ = topk_by_row(scores[None], np.arange(len(hits))[None], k)
        merged.append([hits[i] for i in pos[0].tolist()])
    return merged


def _sum_statistics(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """BM25 statistics of the whole collection: the shards' counts summed."""
    if not parts:
        return {"df": [], "rows": 0, "tokens": 0}
    return {
        "df": [int(sum(col)) for col in zip(*(p["df"] for p in parts), strict=True)],
        "rows": int(sum(p["rows"] for p in parts)),
        "tokens": int(sum(p["tokens"] for p in parts)),
    }


def _split_queries(
    queries: np.ndarray | str | Sequence[str] | None, query_texts: str | Sequence[str] | None
) -> tuple[np.ndarray | None, list[str] | None]:
    """Query vectors and query strings, as ``Collection.search`` takes them."""
    vectors: np.ndarray | None = None
    texts: list[str] | None = None
    if isinstance(queries, str):
        texts = [queries]
    elif isinstance(queries, (list, tuple)) and queries and all(isinstance(x, str) for x in queries):
        texts = list(queries)
    elif queries is not None:
        vectors = queries  # type: ignore[assignment]
    if query_texts is not None:
        if texts is not None:
            raise InvalidInputError("query strings given twice: as queries and as query_texts")
        texts = [query_texts] if isinstance(query_texts, str) else list(query_texts)
    if texts is not None:
        if not texts:
            raise InvalidInputError("no query strings given")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise InvalidInputError(f"query text {i} must be a non-empty str, got {t!r}")
    return vectors, texts
