"""The staged searcher: stage 1 over the codes in RAM (asked of the collection's codec), then
rescoring stages over rows on disk, keyword ranking and fusion, over one snapshot of a store.

binary collections: Hamming top (k x rescore_multiplier) over sign bits, then the float32 query
against dequantized int8 rows, unpacked bits or float32 rows. int8 and float32 collections scan their
rows exactly (for like-for-like comparisons) and may rescore with float32.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .codecs import Stage1Plan
from .errors import CollectionError, InvalidInputError, NoModelError
from .hybrid import reciprocal_rank_fusion
from .kernels import rescore_bits, rescore_float32, rescore_int8, topk_by_row
from .options import RESCORE_STAGES, SearchOptions
from .quantize import check_queries
from .results import SearchResults
from .storage.state import State
from .storage.store import Store
from .store import check_unicode, filter_fields, filter_sql

__all__ = ["HYBRID_DEPTH", "Plan", "Searcher", "StaleSnapshot", "split_queries"]

# each ranking's depth before reciprocal rank fusion (at least k)
HYBRID_DEPTH = 100
# how precise each rescoring stage's rows are; each must be more precise than what ranked before it
_RANK = {"binary": 1, "int8": 2, "float32": 3}
_SEARCH_ATTEMPTS = 5  # tries against fresh snapshots when concurrent writers remove rows or files

Ranking = list[list[tuple[int, float]]]  # per query, (seq, score) best first
_Columns = tuple[list[list[Any]], list[np.ndarray], list[list[Any]], list[list[Any]]]


@dataclass
class Plan:
    """A dense search's stages: stage 1 (the codec's plan) and the rescoring stages after it."""

    stage1: Stage1Plan
    rescore: list[str] = field(default_factory=list)


class StaleSnapshot(Exception):
    """The state a search started from lost rows to a concurrent writer: search again."""


@dataclass
class _Query:
    """One search call's queries and options, and the timings gathered so far."""

    vectors: np.ndarray | None
    texts: list[str] | None
    opts: SearchOptions
    timings: dict[str, float] = field(default_factory=dict)


class Searcher:
    """Plans and runs searches over the store's current snapshot; embeds query strings with the
    encoder of the model the manifest records."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.encoder_value: Any = None
        self._encoder_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._warned_norm = False

    # -------------------------------------------------------------- entry

    def search(self, queries: Any, query_texts: Any, opts: SearchOptions) -> SearchResults:
        """Search (see ``Collection.search``), again against a fresh snapshot if a writer removed rows."""
        for attempt in range(_SEARCH_ATTEMPTS):
            try:
                return self._search(self.store.state, queries, query_texts, opts, strict=attempt < _SEARCH_ATTEMPTS - 1)
            except StaleSnapshot:
                # a concurrent delete or compaction removed rows this snapshot still pointed at: the
                # writer has installed a newer state (or another process has: reload it); go again
                self.store.refresh()
        raise CollectionError(
            f"the collection changed under this search {_SEARCH_ATTEMPTS} times in a row (compactions "
            "racing it); search again"
        )

    def _queries(self, state: State, queries: Any, query_texts: Any, opts: SearchOptions) -> _Query:
        """The query vectors (embedded from strings when needed, checked) and strings of a search."""
        vectors, texts = split_queries(queries, query_texts)
        query = _Query(None, texts, opts)
        if opts.mode != "keyword" and vectors is None:
            if texts is None:
                raise InvalidInputError("no queries given: pass vectors or query strings")
            t0 = time.perf_counter()
            encoder = self.encoder
            with self._encode_lock:  # tokenizers are not safe to call from several threads at once
                vectors = encoder.encode_queries(texts)
            query.timings["embed"] = time.perf_counter() - t0
        if opts.mode != "dense" and texts is None:
            raise InvalidInputError(f'mode="{opts.mode}" needs query strings: pass them as queries or query_texts')
        if vectors is not None:
            query.vectors = check_queries(vectors, state.manifest.dim)  # NaN/inf rejected, extremes rescaled
            if "embed" not in query.timings and not self._warned_norm:
                self._check_norms(state, query.vectors)
            if texts is not None and len(texts) != query.vectors.shape[0]:
                raise InvalidInputError(f"got {len(texts)} query texts for {query.vectors.shape[0]} query vectors")
        return query

    def _search(
        self, state: State, queries: Any, query_texts: Any, opts: SearchOptions, *, strict: bool
    ) -> SearchResults:
        """One search against one state snapshot."""
        query = self._queries(state, queries, query_texts, opts)
        timings = query.timings
        plan = self.plan(state, opts) if opts.mode != "keyword" else None
        where = filter_sql(opts.filter) if opts.filter is not None else None
        depth = max(opts.k, HYBRID_DEPTH) if opts.mode == "hybrid" else opts.k
        dense: Ranking = []
        if plan is not None:
            assert query.vectors is not None
            exclude = state.deleted if state.tombstones.size else None
            if where is not None:
                t0 = time.perf_counter()
                exclude = self._filter_mask(state, where)
                timings["filter"] = time.perf_counter() - t0
            dense = self._dense(state, query.vectors, depth, opts.rescore_multiplier, plan, exclude, timings)
        keyword: Ranking = []
        if opts.mode != "dense":
            assert query.texts is not None
            t0 = time.perf_counter()
            keyword = [self._keyword(state, t, depth, where) for t in query.texts]
            timings["keyword"] = time.perf_counter() - t0
        ranked = self._fuse(dense, keyword, opts, timings)
        nq = query.vectors.shape[0] if query.vectors is not None else len(query.texts or [])
        t0 = time.perf_counter()
        cols = self._hits([r[: opts.k] for r in ranked] if ranked else [[] for _ in range(nq)], opts.with_text, strict)
        timings["fetch"] = time.perf_counter() - t0
        timings["total"] = sum(timings.values())
        stages = [plan.stage1.name, *plan.rescore] if plan is not None else []
        if opts.mode != "dense":
            stages.append("keyword")
        notes: list[str] = []
        if opts.filter is not None and any(len(h) < opts.k for h in cols[0]):  # a short answer: is the filter why?
            notes = self._missing_fields(state, opts.filter)
        return SearchResults.from_columns(*cols, timings, stages, notes)

    @staticmethod
    def _fuse(dense: Ranking, keyword: Ranking, opts: SearchOptions, timings: dict[str, float]) -> Ranking:
        """The ranking the mode returns: dense, keyword, or both fused by reciprocal rank fusion."""
        if opts.mode == "dense":
            return dense
        if opts.mode == "keyword":
            return keyword
        t0 = time.perf_counter()
        ranked: Ranking = []
        for d, kw in zip(dense, keyword, strict=True):
            fused = reciprocal_rank_fusion(
                [[s for s, _ in d], [s for s, _ in kw]], opts.k, rrf_k=opts.rrf_k, weights=opts.weights
            )
            ranked.append([(int(seq), score) for seq, score in fused])  # type: ignore[call-overload]
        timings["fusion"] = time.perf_counter() - t0
        return ranked

    # -------------------------------------------------------------- query checks and notes

    def _check_norms(self, state: State, q: np.ndarray) -> None:
        """Warn once per collection object when query vectors are not unit length although the recorded
        model normalizes its embeddings: every score is then scaled by the query's norm (the ranking is
        not), so scores are no longer cosine similarities."""
        info = state.manifest.model
        if not isinstance(info, dict) or not info.get("normalize"):
            return
        norms = np.linalg.norm(q.astype(np.float64), axis=1)
        off = np.abs(norms - 1.0) > 1e-2
        if off.any():
            self._warned_norm = True
            i = int(np.argmax(off))
            warnings.warn(
                f"query {i} has norm {norms[i]:.4g}, but this collection's model ({info.get('name')}) normalizes "
                "its embeddings: scores are scaled by the query's norm (rankings are unchanged); normalize "
                "queries for cosine scores",
                UserWarning,
                stacklevel=6,
            )

    def _missing_fields(self, state: State, flt: dict[str, Any]) -> list[str]:
        """Warnings for the filter's fields that no stored document has (remembered per snapshot)."""
        known = state.known_fields
        notes = []
        for name in filter_fields(flt):
            if name not in known:
                known[name] = self.store.docs.has_field(name, state.manifest.next_seq)
            if not known[name]:
                notes.append(f"no stored document has the metadata field {name!r} that the filter names")
        return notes

    @property
    def encoder(self) -> Any:
        """The query encoder of the model recorded in the manifest, loaded on first use."""
        with self._encoder_lock:
            if self.encoder_value is None:
                info = self.store.state.manifest.model
                if not info:
                    raise NoModelError(
                        "this collection records no embedding model: search it with vectors, or set collection.encoder"
                    )
                from .encode import Encoder

                self.encoder_value = Encoder.for_manifest(info)
            return self.encoder_value

    def set_encoder(self, encoder: Any) -> None:
        """Use ``encoder`` for query strings (its ``dim`` must match the collection's)."""
        own = self.store.state.manifest.dim
        dim = getattr(encoder, "dim", own)
        if own is not None and dim != own:
            raise InvalidInputError(f"encoder produces {dim}-dim vectors; this collection holds {own}")
        with self._encoder_lock:
            self.encoder_value = encoder

    # -------------------------------------------------------------- planning

    def plan(self, state: State, opts: SearchOptions) -> Plan:
        """Stage 1 as the codec plans it, and the rescoring stages asked for that add precision."""
        codec = state.codec
        m = state.manifest
        rescore: list[str] = []
        level = codec.base_rank
        available = {"binary": codec.offers_bits, "int8": m.keep_int8, "float32": m.keep_float32}
        for stage in opts.rescore:
            if stage not in RESCORE_STAGES:
                raise InvalidInputError(
                    f"unknown rescore stage {stage!r}; expected one of {', '.join(RESCORE_STAGES)} or None"
                )
            if _RANK[stage] <= level:
                if _RANK[stage] < level and rescore:
                    raise InvalidInputError(f"rescore stages must grow more precise: {stage!r} after {rescore[-1]!r}")
                continue  # no more precise than what ranked already: nothing to gain
            if not available[stage]:
                hint = {"int8": "keep_int8=True", "float32": "keep_float32=True", "binary": 'precision="binary"'}[stage]
                raise InvalidInputError(
                    f"this collection keeps no {stage} rows to rescore with (create it with {hint}), "
                    f"or search with rescore=None"
                )
            rescore.append(stage)
            level = _RANK[stage]
        indexed = state.ann is not None
        stage1 = codec.plan(
            rescoring=bool(rescore), indexed=indexed, exact=opts.exact, nprobe=opts.nprobe, preselect=opts.preselect
        )
        return Plan(stage1, rescore)

    # -------------------------------------------------------------- stages

    def _dense(
        self, state: State, q: np.ndarray, k: int, rescore_multiplier: int, plan: Plan,
        exclude: np.ndarray | None, timings: dict[str, float],
    ) -> Ranking:  # fmt: skip
        """Staged vector search: stage 1, the rescoring stages, then row numbers -> sequence numbers."""
        live = state.rows if exclude is None else int(state.rows - exclude.sum())  # rows: documents with vectors
        if live == 0:
            return [[] for _ in range(q.shape[0])]
        n_cand = min(live, k * (rescore_multiplier if plan.rescore else 1))
        try:
            t0 = time.perf_counter()
            rows, scores = state.codec.stage1(state, q, n_cand, exclude, plan.stage1)
            timings["stage1"] = time.perf_counter() - t0
            for i, stage in enumerate(plan.rescore):
                t0 = time.perf_counter()
                last = i == len(plan.rescore) - 1
                keep = k if last else min(n_cand, k * max(1, rescore_multiplier // 2))
                rows, scores = self._rescore(state, q, rows, stage, keep)
                timings[stage] = time.perf_counter() - t0
            t0 = time.perf_counter()
            seqs = state.gather("seqs", rows.reshape(-1)).reshape(rows.shape)
        except FileNotFoundError:  # a compaction removed the segments of this snapshot
            raise StaleSnapshot from None
        out = [
            list(zip(q_seqs, q_scores, strict=True))
            for q_seqs, q_scores in zip(seqs.tolist(), scores.tolist(), strict=True)
        ]
        timings["ids"] = time.perf_counter() - t0
        return out

    def _rescore(
        self, state: State, q: np.ndarray, rows: np.ndarray, stage: str, keep: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score each query's candidate rows with the stage's rows; the best ``keep`` per query."""
        if rows.shape[0] == 1:  # one query: read its rows as they are (no dedup across queries)
            flat, pos = rows[0], None
        else:
            flat = np.unique(rows)
            pos = np.searchsorted(flat, rows)
        score: Callable[[np.ndarray, np.ndarray], np.ndarray]
        if stage == "binary":
            assert state.words is not None
            dim = int(state.manifest.dim or 0)
            block = state.words[flat].view(np.uint8)[:, : -(-dim // 8)]

            def score(query: np.ndarray, cand: np.ndarray) -> np.ndarray:
                return rescore_bits(query, cand, dim)
        elif stage == "int8":
            block = state.gather(stage, flat)
            ranges, steps = state.int8_scale

            def score(query: np.ndarray, cand: np.ndarray) -> np.ndarray:
                return rescore_int8(query, cand, ranges, steps)
        else:
            block = state.gather(stage, flat)
            score = rescore_float32
        if pos is None:
            return topk_by_row(score(q[0], block).astype(np.float32, copy=False)[None], rows, keep)
        scores = np.empty(rows.shape, dtype=np.float32)
        for i in range(rows.shape[0]):
            scores[i] = score(q[i], block[pos[i]])
        return topk_by_row(scores, rows, keep)

    def _keyword(self, state: State, text: str, k: int, where: tuple[str, list[Any]] | None) -> list[tuple[int, float]]:
        """BM25 ranking of one query string: up to k (seq, score), deleted documents left out."""
        limit = k
        tomb = state.tombstones
        while True:
            got = self.store.docs.keyword_search(
                text, limit + int(tomb.size > 0) * limit, where, state.manifest.next_seq
            )
            if tomb.size:
                dead = np.isin(np.fromiter((s for s, _ in got), np.int64, len(got)), tomb)
                hits = [g for g, d in zip(got, dead, strict=True) if not d]
            else:
                hits = got
            if len(hits) >= k or len(got) < 2 * limit or not tomb.size:
                return hits[:k]
            limit *= 2

    def _filter_mask(self, state: State, where: tuple[str, list[Any]]) -> np.ndarray:
        """Rows to exclude: deleted ones and those whose metadata fail the filter."""
        allowed = np.asarray(self.store.docs.filter_seqs(where, state.manifest.next_seq), dtype=np.int64)
        all_seqs = state.all_seqs
        pos = np.minimum(np.searchsorted(all_seqs, allowed), max(all_seqs.size - 1, 0))
        pos = pos[all_seqs[pos] == allowed] if all_seqs.size else pos[:0]
        exclude = np.ones(state.rows, dtype=np.bool_)
        exclude[pos] = False
        return exclude | state.deleted

    def _hits(self, ranked: Ranking, with_text: bool, strict: bool) -> _Columns:
        """(ids, scores, texts, metadata) per query for (seq, score) rankings, from the document store."""
        docs = self.store.docs.fetch([seq for r in ranked for seq, _ in r], with_text)
        cols: _Columns = ([], [], [], [])
        for r in ranked:
            ids, scores, texts, metas = [], [], [], []
            for seq, score in r:
                doc = docs.get(seq)
                if doc is None:  # purged by a delete that committed after our snapshot was taken
                    if strict:
                        raise StaleSnapshot
                    continue
                ids.append(doc[0])
                scores.append(score)
                texts.append(doc[1])
                metas.append(doc[2])
            cols[0].append(ids)
            cols[1].append(np.array(scores, dtype=np.float64))
            cols[2].append(texts)
            cols[3].append(metas)
        return cols


def split_queries(
    queries: np.ndarray | str | Sequence[str] | None, query_texts: str | Sequence[str] | None
) -> tuple[np.ndarray | None, list[str] | None]:
    """Separate query vectors from query strings; every string must be non-empty."""
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
        if not isinstance(query_texts, (str, list, tuple)):
            raise InvalidInputError(f"query_texts must be a str or a list of str, got {type(query_texts).__name__}")
        texts = [query_texts] if isinstance(query_texts, str) else list(query_texts)
    if texts is not None:
        if not texts:
            raise InvalidInputError("no query strings given")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise InvalidInputError(f"query text {i} must be a str, got {type(t).__name__}")
            if not t.strip():
                raise InvalidInputError(f"query text {i} is empty")
            check_unicode(t, f"query text {i}")
    return vectors, texts
