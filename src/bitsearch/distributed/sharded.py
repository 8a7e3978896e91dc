"""``ShardedCollection``: ``Collection``'s surface over shards held by Ray actors (see ``bitsearch.distributed``)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from ..errors import (
    BitsearchError,
    CorruptCollectionError,
    DuplicateIdError,
    InvalidInputError,
    NoModelError,
    PartialWriteError,
    ShardUnavailableError,
    UnknownIdError,
)
from ..files import write_atomic
from ..options import MODES
from ..quantize import check_documents, check_queries
from ..results import Hit, SearchResults
from ..search import HYBRID_DEPTH, split_queries
from ..storage.inputs import check_ids, check_meta, check_payload, check_text
from ..store import DocId, filter_sql, normalize_id
from .layout import MANIFEST, create_layout, create_shards, locked, read_manifest, shard_of
from .merge import fuse_ranked, merge_ranked, sum_statistics
from .shard import DEFAULT_ACTOR_OPTIONS, Shard, ensure_ray

INLINE_BYTES = 64 * 1024  # stage-1 codes calibrated on embeddings


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
        self._ray = ensure_ray(num_cpus)
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
        manifest = create_layout(p, dim, shards, ranges, calibration_embeddings, collection_options)
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
        m = read_manifest(p)
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
        emb, doc_ids, texts_l, meta_l = self._checked_write(embeddings, ids, texts, metadata)
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
                calls[s] = _part(rows, emb, doc_ids, texts_l, meta_l)
        done, errors = self._call("add", calls)
        if errors:
            self._raise_partial_write(
                "add", calls, done, errors, doc_ids, "add with the same ids and skip_existing=True"
            )
        return doc_ids

    def _checked_write(
        self, embeddings: np.ndarray, ids: Sequence[object] | None, texts: Any, metadata: Any
    ) -> tuple[np.ndarray, list[DocId], list[Any] | None, list[Any] | None]:
        """A write's inputs checked as ``Collection`` checks them (ids reserved when none are given), and
        the shards created on the first write."""
        emb = check_documents(embeddings, self.dim)
        n = emb.shape[0]
        texts_l = check_payload(texts, n, "texts", check_text)
        meta_l = check_payload(metadata, n, "metadata", check_meta)
        doc_ids = self._reserve_ids(n) if ids is None else check_ids(ids, n)
        if not self._manifest["created"]:
            self._create_on_first_add(emb)
        return emb, doc_ids, texts_l, meta_l

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
        emb, doc_ids, texts_l, meta_l = self._checked_write(embeddings, ids, texts, metadata)
        calls = {s: _part(rows, emb, doc_ids, texts_l, meta_l) for s, rows in self._route(doc_ids).items()}
        done, errors = self._call("upsert", calls)
        if errors:
            self._raise_partial_write("upsert", calls, done, errors, doc_ids, "the same upsert")
        return doc_ids

    def _raise_partial_write(
        self,
        verb: str,
        calls: dict[int, tuple[Any, ...]],
        done: dict[int, Any],
        errors: dict[int, BaseException],
        doc_ids: list[DocId],
        rerun: str,
    ) -> NoReturn:
        """A write that failed on some shards: the shard's own error when nothing was written, else a
        PartialWriteError naming the ids stored and the ids on the failed shards."""
        ok = {d for s in done for d in calls[s][1]}
        failed = [d for s in errors for d in calls[s][1]]
        if not ok and len(errors) == 1 and isinstance(next(iter(errors.values())), BitsearchError):
            raise next(iter(errors.values()))  # nothing was written: the shard's own error
        names = [self.shard_names[s] for s in sorted(errors)]
        first = errors[min(errors)]
        raise PartialWriteError(
            f"{verb} stored {len(ok)} of {len(doc_ids)} documents; shard(s) {', '.join(names)} failed "
            f"({type(first).__name__}: {str(first)[:200]}); re-run {rerun}",
            [d for d in doc_ids if d in ok],
            failed,
            names,
        )

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
        preselect: int | None = None,
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
        vectors, texts = split_queries(queries, query_texts)
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
                nprobe=nprobe, exact=exact, with_text=with_text, preselect=preselect,
            )  # fmt: skip
            t0 = time.perf_counter()
            # a large batch goes to the object store once for every shard; a small one inline (a put costs ~1 ms)
            q_ref = self._ray.put(q) if q.nbytes > INLINE_BYTES and len(answered) > 1 else q
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
            totals = [sum_statistics([stats[i][j] for i in sorted(stats)]) for j in range(nq)]
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
            ranked = fuse_ranked(dense, keyword, int(k), rrf_k, weights)
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
            from ..encode import Encoder

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
        with locked(self.path):
            m = read_manifest(self.path)
            first = int(m["next_id"])
            m["next_id"] = first + n
            m["generation"] = int(m["generation"]) + 1
            write_atomic(self.path / MANIFEST, json.dumps(m, indent=1).encode())
            self._manifest = m
        return list(range(first, first + n))

    def _create_on_first_add(self, emb: np.ndarray) -> None:
        """Create the shards, calibrated on the first add's embeddings, and start their actors."""
        with locked(self.path):
            m = read_manifest(self.path)
            if not m["created"]:
                ranges = None if m["ranges"] is None else np.asarray(m["ranges"], dtype=np.float32)
                create_shards(self.path, m, ranges, emb)
                m["generation"] = int(m["generation"]) + 1
                write_atomic(self.path / MANIFEST, json.dumps(m, indent=1).encode())
            self._manifest = m
        self._start_actors()


def _part(
    rows: list[int],
    emb: np.ndarray,
    doc_ids: list[DocId],
    texts: list[str | None] | None,
    metadata: list[dict[str, Any] | None] | None,
) -> tuple[np.ndarray, list[DocId], list[str | None] | None, list[dict[str, Any] | None] | None]:
    """The rows of one write that go to one shard: (embeddings, ids, texts, metadata)."""
    return (
        emb[rows],
        [doc_ids[j] for j in rows],
        None if texts is None else [texts[j] for j in rows],
        None if metadata is None else [metadata[j] for j in rows],
    )
