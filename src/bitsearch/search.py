"""The staged searcher: stage 1 over the codes in RAM, then rescoring stages over rows on disk.

binary collections: Hamming top (k x rescore_multiplier) over sign bits, then the float32 query
against dequantized int8 rows, unpacked bits or float32 rows. int8 and float32 collections scan their
rows exactly (for like-for-like comparisons) and may rescore with float32.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .collection import CollectionFiles, State, _codebook
from .errors import CollectionError, InvalidInputError, NoModelError
from .hybrid import check_fusion_args, reciprocal_rank_fusion
from .kernels import (
    as_words,
    bitplane_topk,
    dot_topk,
    hamming_topk,
    int8_block_scores,
    int8_query_weights,
    ivf_topk,
    lut_planes_topk,
    lut_topk,
    preselected_topk,
    rescore_bits,
    rescore_float32,
    rescore_int8,
    topk_by_row,
)
from .quantize import CodeBook, check_queries, int8_steps
from .store import DocId, DocStore, check_unicode, filter_fields, filter_sql

__all__ = ["MAX_SEARCH_INT", "MODES", "RESCORE_STAGES", "Collection", "Hit", "SearchResults"]

MODES = ("dense", "keyword", "hybrid")
# each ranking's depth before reciprocal rank fusion (at least k)
HYBRID_DEPTH = 100

RESCORE_STAGES = ("binary", "int8", "float32")
# how precise each representation is; a rescoring stage must be more precise than the one before it
_RANK = {"ivf": 0, "hamming": 0, "binary": 1, "asymmetric": 1, "1.5bit": 1.3, "2bit": 1.5, "int8": 2, "float32": 3}
_EXACT_CHUNK = 65536  # rows per block in exact int8/float32 scans
_SEARCH_ATTEMPTS = 5  # tries against fresh snapshots when concurrent writers remove rows or files
ASYMMETRIC_PRESELECT = 16  # stage1="auto": asymmetric scoring of the Hamming top 16 x k
_NUMBA_SCAN_MAX_QUERIES = 16  # up to this many queries, exact scans run in numba; more go to BLAS
_NO_SCORES = np.zeros((0, 0), dtype=np.float32)  # stage-1 scores not computed: a rescoring stage follows
# k, rescore_multiplier and nprobe are at most this: their products stay far inside int64
MAX_SEARCH_INT = 2**31 - 1


@dataclass
class Hit:
    """One search result: the document id, its score, and its text and metadata where stored."""

    id: DocId
    score: float
    text: str | None = None
    metadata: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "text": self.text, "metadata": self.metadata}


class SearchResults(list):  # type: ignore[type-arg]
    """A list with one list of ``Hit`` per query, plus ``timings``: seconds spent in each stage, and
    ``warnings``: what may explain a short answer (a filter field that no stored document has)."""

    def __init__(
        self,
        hits: list[list[Hit]],
        timings: dict[str, float],
        stages: list[str],
        warnings: list[str] | None = None,
    ) -> None:
        super().__init__(hits)
        self.timings = timings
        self.stages = stages
        self.warnings = list(warnings or [])


@dataclass
class _Plan:
    stage1: str
    rescore: list[str] = field(default_factory=list)
    nprobe: int | None = None
    preselect: bool = False


class _StaleSnapshot(Exception):
    """The state a search started from lost rows to a concurrent writer: search again."""


class Collection(CollectionFiles):
    """A bitsearch collection: quantized codes on disk and in RAM, searched in stages.

    Create with ``Collection.create(path, dim, precision="binary")`` or open with
    ``Collection.open(path)``; see ``add``, ``delete``, ``compact``, ``search`` and ``stats``.
    """

    def __init__(self, path: Path, state: State, docs: DocStore) -> None:
        super().__init__(path, state, docs)
        self._encoder: Any = None
        self._encoder_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._warned_norm = False

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
    ) -> SearchResults:
        """Find the ``k`` best documents for each query.

        ``queries`` are float32 vectors ((dim,) or (n, dim)) or query strings, embedded with the model
        recorded in the manifest. ``mode``: "dense" (staged vector search), "keyword" (BM25 over the
        stored texts) or "hybrid" (both, fused by reciprocal rank fusion with ``rrf_k`` and per-ranking
        ``weights`` (dense, keyword)); with vectors, keyword and hybrid take the strings as
        ``query_texts``. ``filter`` restricts every mode to documents whose metadata match (see
        ``bitsearch.store.filter_sql``), still returning k hits when k match.

        Dense: stage 1 takes ``k * rescore_multiplier`` candidates when a rescoring stage follows;
        ``rescore`` names the rows that rescore them ("int8", "binary", "float32", None, or a sequence
        such as ("int8", "float32"), where earlier stages keep ``k * max(1, rescore_multiplier // 2)``).
        Stages no more precise than stage 1 are skipped. Scores are dot products with the last stage's
        rows (binary without rescoring: ``1 - 2 * hamming / dim``); keyword scores are BM25; hybrid
        scores are fused RRF scores.

        With an approximate index (``build_index``), Hamming stage 1 scans the ``nprobe`` nearest
        lists (default: the index's setting), and an exact scan of the filter's rows replaces or tops
        it up when a filter leaves few rows; ``exact=True`` scans every row instead.

        ``k``, ``rescore_multiplier`` and ``nprobe`` are ints from 1 to ``MAX_SEARCH_INT`` (2**31 - 1);
        ``rrf_k`` a finite number >= 0; ``weights`` two finite numbers >= 0; ``exact`` and ``with_text``
        bools. Bad arguments raise InvalidInputError before any work.

        Query vectors with NaN or inf raise ``InvalidInputError``; one whose largest |component| is
        outside 2**-60..2**60 is divided by it first (same ranking; scores are the rescaled query's).
        """
        _check_args(
            k=k, rescore_multiplier=rescore_multiplier, rescore=rescore, mode=mode, rrf_k=rrf_k, weights=weights,
            nprobe=nprobe, exact=exact, with_text=with_text,
        )  # fmt: skip
        args = dict(
            queries=queries, k=k, rescore_multiplier=rescore_multiplier, rescore=rescore, mode=mode,
            query_texts=query_texts, filter=filter, rrf_k=rrf_k, weights=weights, nprobe=nprobe, exact=exact,
            with_text=with_text,
        )  # fmt: skip
        for attempt in range(_SEARCH_ATTEMPTS):
            try:
                return self._search(self._state, strict=attempt < _SEARCH_ATTEMPTS - 1, **args)
            except _StaleSnapshot:
                # a concurrent delete or compaction removed rows this snapshot still pointed at: the
                # writer has installed a newer state (or another process has: reload it); go again
                self.refresh()
        raise CollectionError(
            f"the collection changed under this search {_SEARCH_ATTEMPTS} times in a row (compactions "
            "racing it); search again"
        )

    def _search(
        self,
        state: State,
        *,
        strict: bool,
        queries: Any,
        k: int,
        rescore_multiplier: int,
        rescore: Any,
        mode: str,
        query_texts: Any,
        filter: dict[str, Any] | None,
        rrf_k: float,
        weights: Sequence[float] | None,
        nprobe: int | None,
        exact: bool,
        with_text: bool,
    ) -> SearchResults:
        """One search against one state snapshot (see ``search``)."""
        if mode not in MODES:
            raise InvalidInputError(f"unknown search mode {mode!r}; expected one of {', '.join(MODES)}")
        _check_positive("k", k)
        _check_positive("rescore_multiplier", rescore_multiplier)
        vectors, texts = _split_queries(queries, query_texts)
        timings: dict[str, float] = {}
        if mode != "keyword" and vectors is None:
            if texts is None:
                raise InvalidInputError("no queries given: pass vectors or query strings")
            t0 = time.perf_counter()
            encoder = self.encoder
            with self._encode_lock:  # tokenizers are not safe to call from several threads at once
                vectors = encoder.encode_queries(texts)
            timings["embed"] = time.perf_counter() - t0
        if mode != "dense" and texts is None:
            raise InvalidInputError(f'mode="{mode}" needs query strings: pass them as queries or query_texts')
        q = None
        if vectors is not None:
            q = check_queries(vectors, self.dim)  # NaN/inf rejected, huge or tiny queries rescaled
            if "embed" not in timings and not self._warned_norm:
                self._check_norms(state, q)
        nq = q.shape[0] if q is not None else len(texts or [])
        if q is not None and texts is not None and len(texts) != q.shape[0]:
            raise InvalidInputError(f"got {len(texts)} query texts for {q.shape[0]} query vectors")
        plan = self._plan(state, rescore) if mode != "keyword" else _Plan("keyword")
        where = filter_sql(filter) if filter is not None else None

        exclude = None
        if where is not None and mode != "keyword":
            t0 = time.perf_counter()
            exclude = self._filter_mask(state, where)
            timings["filter"] = time.perf_counter() - t0
        elif state.tombstones.size:
            exclude = state.deleted

        depth = max(int(k), HYBRID_DEPTH) if mode == "hybrid" else int(k)
        dense: list[list[tuple[int, float]]] = []
        if mode != "keyword":
            assert q is not None
            if nprobe is not None:
                _check_positive("nprobe", nprobe)
            auto = state.manifest.get("stage1") == "auto"
            if (
                state.extra.get("ann") is not None
                and not exact
                and (plan.stage1 == "hamming" or (plan.stage1 == "asymmetric" and auto))
            ):
                plan.stage1 = "ivf"  # the index is for scale: "auto" trades asymmetric scoring for it
            plan.nprobe = nprobe
            if exact:
                plan.preselect = False
            dense = self._dense(state, q, depth, int(rescore_multiplier), plan, exclude, timings)
        keyword: list[list[tuple[int, float]]] = []
        if mode != "dense":
            assert texts is not None
            t0 = time.perf_counter()
            max_seq = int(state.manifest["next_seq"])
            keyword = [self._keyword(state, t, depth, where, max_seq) for t in texts]
            timings["keyword"] = time.perf_counter() - t0

        if mode == "dense":
            ranked = dense
        elif mode == "keyword":
            ranked = keyword
        else:
            t0 = time.perf_counter()
            ranked = []
            for d, kw in zip(dense, keyword, strict=True):
                fused = reciprocal_rank_fusion(
                    [[s for s, _ in d], [s for s, _ in kw]], int(k), rrf_k=rrf_k, weights=weights
                )
                ranked.append([(int(seq), score) for seq, score in fused])  # type: ignore[call-overload]
            timings["fusion"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        hits = self._hits([r[: int(k)] for r in ranked] if ranked else [[] for _ in range(nq)], with_text, strict)
        timings["fetch"] = time.perf_counter() - t0
        timings["total"] = sum(timings.values())
        stages = [plan.stage1, *plan.rescore] if mode != "keyword" else []
        if mode != "dense":
            stages.append("keyword")
        notes: list[str] = []
        if filter is not None and any(len(h) < int(k) for h in hits):  # a short answer: say if the filter is why
            notes = self._missing_fields(state, filter)
        return SearchResults(hits, timings, stages, notes)

    def _check_norms(self, state: State, q: np.ndarray) -> None:
        """Warn once per collection object when query vectors are not unit length although the recorded
        model normalizes its embeddings: every score is then scaled by the query's norm (the ranking is
        not), so scores are no longer cosine similarities."""
        info = state.manifest.get("model")
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
                stacklevel=4,
            )

    def _missing_fields(self, state: State, flt: dict[str, Any]) -> list[str]:
        """Warnings for the filter's fields that no stored document has (remembered per snapshot)."""
        known: dict[str, bool] = state.extra.setdefault("has_field", {})
        notes = []
        for name in filter_fields(flt):
            if name not in known:
                known[name] = self._docs.has_field(name, int(state.manifest["next_seq"]))
            if not known[name]:
                notes.append(f"no stored document has the metadata field {name!r} that the filter names")
        return notes

    @property
    def encoder(self) -> Any:
        """The query encoder of the model recorded in the manifest, loaded on first use."""
        with self._encoder_lock:
            if self._encoder is None:
                info = self._state.manifest.get("model")
                if not info:
                    raise NoModelError(
                        "this collection records no embedding model: search it with vectors, or set collection.encoder"
                    )
                from .encode import Encoder

                self._encoder = Encoder.for_manifest(info)
            return self._encoder

    @encoder.setter
    def encoder(self, encoder: Any) -> None:
        dim = getattr(encoder, "dim", self.dim)
        if self.dim is not None and dim != self.dim:
            raise InvalidInputError(f"encoder produces {dim}-dim vectors; this collection holds {self.dim}")
        with self._encoder_lock:
            self._encoder = encoder

    def _dense(
        self,
        state: State,
        q: np.ndarray,
        k: int,
        rescore_multiplier: int,
        plan: _Plan,
        exclude: np.ndarray | None,
        timings: dict[str, float],
    ) -> list[list[tuple[int, float]]]:
        """Staged vector search: per query, up to k (seq, score) pairs, best first."""
        live = state.rows if exclude is None else int(state.rows - exclude.sum())  # rows: documents with vectors
        if live == 0:
            return [[] for _ in range(q.shape[0])]
        n_cand = min(live, k * (rescore_multiplier if plan.rescore else 1))
        try:
            return self._stages(state, q, k, rescore_multiplier, plan, exclude, timings, n_cand)
        except FileNotFoundError:  # a compaction removed the segments of this snapshot
            raise _StaleSnapshot from None

    def _stages(
        self, state: State, q: np.ndarray, k: int, rescore_multiplier: int, plan: _Plan,
        exclude: np.ndarray | None, timings: dict[str, float], n_cand: int,
    ) -> list[list[tuple[int, float]]]:  # fmt: skip
        """Stage 1, the rescoring stages, then row numbers -> sequence numbers."""
        t0 = time.perf_counter()
        rows, scores = self._stage1(
            state, q, n_cand, plan.stage1, exclude, plan.nprobe, plan.preselect, scored=not plan.rescore
        )
        timings["stage1"] = time.perf_counter() - t0
        for i, stage in enumerate(plan.rescore):
            t0 = time.perf_counter()
            last = i == len(plan.rescore) - 1
            keep = k if last else min(n_cand, k * max(1, rescore_multiplier // 2))
            rows, scores = self._rescore(state, q, rows, stage, keep)
            timings[stage] = time.perf_counter() - t0
        t0 = time.perf_counter()
        seqs = state.gather("seqs", rows.reshape(-1)).reshape(rows.shape)
        out = [
            list(zip(q_seqs, q_scores, strict=True))
            for q_seqs, q_scores in zip(seqs.tolist(), scores.tolist(), strict=True)
        ]
        timings["ids"] = time.perf_counter() - t0
        return out

    def _keyword(
        self, state: State, text: str, k: int, where: tuple[str, list[Any]] | None, max_seq: int
    ) -> list[tuple[int, float]]:
        """BM25 ranking of one query string: up to k (seq, score), deleted documents left out."""
        limit = k
        while True:
            got = self._docs.keyword_search(text, limit + int(state.tombstones.size > 0) * limit, where, max_seq)
            if state.tombstones.size:
                dead = np.isin(np.fromiter((s for s, _ in got), np.int64, len(got)), state.tombstones)
                hits = [g for g, d in zip(got, dead, strict=True) if not d]
            else:
                hits = got
            if len(hits) >= k or len(got) < 2 * limit or not state.tombstones.size:
                return hits[:k]
            limit *= 2

    def _filter_mask(self, state: State, where: tuple[str, list[Any]]) -> np.ndarray:
        """Rows to exclude: deleted ones and those whose metadata fail the filter."""
        allowed = np.asarray(self._docs.filter_seqs(where, int(state.manifest["next_seq"])), dtype=np.int64)
        all_seqs = state.extra.get("seqs")
        if all_seqs is None:
            # through the snapshot's descriptors (or arithmetic): its files may be gone since it loaded
            all_seqs = state.gather("seqs", np.arange(state.rows, dtype=np.int64))
            state.extra["seqs"] = all_seqs  # cached per state: seqs only change with a new state
        pos = np.minimum(np.searchsorted(all_seqs, allowed), max(all_seqs.size - 1, 0))
        pos = pos[all_seqs[pos] == allowed] if all_seqs.size else pos[:0]
        exclude = np.ones(state.rows, dtype=np.bool_)
        exclude[pos] = False
        return exclude | state.deleted

    # -------------------------------------------------------------- planning

    def _plan(self, state: State, rescore: str | Sequence[str] | None) -> _Plan:
        m = state.manifest
        stage1 = "hamming" if m["precision"] == "binary" else m["precision"]
        mode = m.get("stage1") or "hamming"  # collections from format 1 always used Hamming
        if m["precision"] == "binary" and mode == "asymmetric":
            stage1 = "asymmetric"
        wanted = _rescore_stages(rescore)
        plan = _Plan(stage1)
        level = _RANK[stage1]
        for stage in wanted:
            if stage not in RESCORE_STAGES:
                raise InvalidInputError(
                    f"unknown rescore stage {stage!r}; expected one of {', '.join(RESCORE_STAGES)} or None"
                )
            if _RANK[stage] <= level:
                if _RANK[stage] < level and plan.rescore:
                    raise InvalidInputError(
                        f"rescore stages must grow more precise: {stage!r} after {plan.rescore[-1]!r}"
                    )
                continue  # no more precise than what ranked already: nothing to gain
            available = {"binary": m["precision"] == "binary", "int8": m["keep_int8"], "float32": m["keep_float32"]}
            if not available[stage]:
                hint = {"int8": "keep_int8=True", "float32": "keep_float32=True", "binary": 'precision="binary"'}[stage]
                raise InvalidInputError(
                    f"this collection keeps no {stage} rows to rescore with (create it with {hint}), "
                    f"or search with rescore=None"
                )
            plan.rescore.append(stage)
            level = _RANK[stage]
        if m["precision"] == "binary" and mode == "auto" and not plan.rescore:
            plan.stage1 = "asymmetric"  # nothing rescores: spend the work on a better stage 1
            plan.preselect = True
        if m["precision"] in ("1.5bit", "2bit"):
            plan.preselect = True  # the format-2 packed 1.5bit has no sign-like plane: it scans in full
        return plan

    # -------------------------------------------------------------- stages

    def _stage1(
        self,
        state: State,
        q: np.ndarray,
        n: int,
        stage: str,
        exclude: np.ndarray | None,
        nprobe: int | None = None,
        preselect: bool = False,
        scored: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1: (rows, scores) of the best ``n`` rows per query. Hamming scores are left empty
        unless ``scored`` (a rescoring stage replaces them)."""
        book = self._codebook(state)
        if stage in ("hamming", "ivf"):
            plain = state.extra.get("plain_bits")
            if plain is None:
                plain = book is None or (book.offset is None and book.rotation is None and not book.thresholds.any())
                state.extra["plain_bits"] = plain
            qcodes = np.packbits(q > 0, axis=-1) if plain else book.encode(q)  # plain sign bits: skip the codebook
            assert state.words is not None
            if stage == "ivf":
                ann = state.manifest["ann"]
                rows, dist = ivf_topk(
                    state.extra["ann"], state.words, int(ann["rows"]), as_words(qcodes), n, exclude,
                    int(nprobe or ann["nprobe"]),
                )  # fmt: skip
            else:
                rows, dist = hamming_topk(qcodes, state.words, n, exclude=exclude)
            if not scored:
                return rows, _NO_SCORES
            return rows, 1.0 - 2.0 * dist.astype(np.float32) / self.dim
        if stage in ("1.5bit", "2bit") and book is not None and book.planes:  # bit planes
            assert state.words is not None and state.ram_rows is not None
            hi = state.words.view(np.uint8)[:, : book.plane_bytes]
            luts = book.lut_planes(q)
            lo, pairs = state.ram_rows, book.pairs
            if preselect and state.rows > n * ASYMMETRIC_PRESELECT:
                hq = np.packbits(book.levels_of(q) >= 2, axis=-1)  # the median split, like sign bits
                return preselected_topk(
                    hq, state.words, n, exclude,
                    lambda i, c: lut_planes_topk(luts[i : i + 1], hi[c], lo[c], n, pairs=pairs), ASYMMETRIC_PRESELECT,
                )  # fmt: skip
            return lut_planes_topk(luts, hi, lo, n, exclude=exclude, pairs=pairs)
        if stage in ("asymmetric", "1.5bit"):
            if book is None:  # plain sign bits without calibrated levels: +-1 per dimension
                book = CodeBook("binary", np.zeros((1, self.dim)), np.stack([-np.ones(self.dim), np.ones(self.dim)]))
            if stage == "asymmetric":
                assert state.words is not None
                codes = state.words.view(np.uint8)[:, : book.groups]
            else:
                assert state.ram_rows is not None
                codes = state.ram_rows
            qbits = (state.manifest.get("codes") or {}).get("query_bits") if stage == "asymmetric" else None
            if qbits:  # the query rounded to qbits-bit weights, scored by popcounts per bit plane
                assert state.words is not None
                words = state.words
                qp, step, low, base = book.query_planes(q, int(qbits))

                def score(i: int, c: Any) -> tuple[np.ndarray, np.ndarray]:
                    sl = slice(i, i + 1)
                    return bitplane_topk(qp[sl], step[sl], low[sl], base[sl], words[c], n)

            else:  # the float query against each bit's level, by table lookup
                luts = book.lut(q)

                def score(i: int, c: Any) -> tuple[np.ndarray, np.ndarray]:
                    return lut_topk(luts[i : i + 1], np.ascontiguousarray(codes[c]), n)

            if preselect and stage == "asymmetric" and state.rows > n * ASYMMETRIC_PRESELECT:
                return preselected_topk(book.encode(q), state.words, n, exclude, score, ASYMMETRIC_PRESELECT)
            if qbits:
                return bitplane_topk(qp, step, low, base, state.words, n, exclude=exclude)
            return lut_topk(luts, codes, n, exclude=exclude)
        # exact scans over the int8 / float32 rows held in RAM
        assert state.ram_rows is not None
        data = state.ram_rows
        nq, total = q.shape[0], data.shape[0]
        if nq <= _NUMBA_SCAN_MAX_QUERIES:  # a few queries: numba (BLAS threads thrash on a busy box)
            if stage == "int8":
                assert self.ranges is not None
                w, const = int8_query_weights(q, self.ranges)
                return dot_topk(w, data, n, exclude, const)
            return dot_topk(q, data, n, exclude)
        # many queries: BLAS matrix products in blocks of rows, merged
        best_rows = np.empty((nq, 0), dtype=np.int64)
        best_scores = np.empty((nq, 0), dtype=np.float32)
        for start in range(0, total, _EXACT_CHUNK):
            block = data[start : start + _EXACT_CHUNK]
            s = int8_block_scores(q, block, self.ranges) if stage == "int8" else q @ block.T
            if exclude is not None:
                s = np.where(exclude[start : start + block.shape[0]], -np.inf, s)
            cand_rows = np.concatenate(
                [best_rows, np.broadcast_to(np.arange(start, start + block.shape[0]), (nq, block.shape[0]))], axis=1
            )
            cand_scores = np.concatenate([best_scores, s.astype(np.float32)], axis=1)
            # merge: order by (-score, row); row numbers ascend within and across blocks
            idx, top = topk_by_row(cand_scores, cand_rows, n)
            best_rows, best_scores = idx, top
        return best_rows, best_scores

    def _codebook(self, state: State) -> CodeBook | None:
        """The collection's codebook, loaded once per state."""
        if "codebook" not in state.extra:
            state.extra["codebook"] = _codebook(self.path, state.manifest)
        return state.extra["codebook"]

    def _int8_scale(self, state: State) -> tuple[np.ndarray, np.ndarray]:
        """The int8 ranges and their bucket widths, computed once per state."""
        scale = state.extra.get("int8_scale")
        if scale is None:
            ranges = state.manifest["ranges"]
            if ranges is None:
                raise CollectionError("this collection has no int8 ranges yet")
            r = np.asarray(ranges, dtype=np.float32)
            scale = state.extra["int8_scale"] = (r, int8_steps(r))
        return scale

    def _rescore(
        self, state: State, q: np.ndarray, rows: np.ndarray, stage: str, keep: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score each query's candidate rows with the stage's rows; the best ``keep`` per query."""
        if rows.shape[0] == 1:  # one query: read its rows as they are (no dedup across queries)
            flat, pos = rows[0], None
        else:
            flat = np.unique(rows)
            pos = np.searchsorted(flat, rows)
        if stage == "binary":
            assert state.words is not None
            nbytes = -(-self.dim // 8)
            block = state.words[flat].view(np.uint8)[:, :nbytes]
        else:
            block = state.gather(stage, flat)
        if stage == "int8":
            ranges, steps = self._int8_scale(state)

            def score(query: np.ndarray, cand: np.ndarray) -> np.ndarray:
                return rescore_int8(query, cand, ranges, steps)
        elif stage == "binary":
            dim = self.dim

            def score(query: np.ndarray, cand: np.ndarray) -> np.ndarray:
                return rescore_bits(query, cand, dim)
        else:
            score = rescore_float32
        if pos is None:
            return topk_by_row(score(q[0], block).astype(np.float32, copy=False)[None], rows, keep)
        scores = np.empty(rows.shape, dtype=np.float32)
        for i in range(rows.shape[0]):
            scores[i] = score(q[i], block[pos[i]])
        return topk_by_row(scores, rows, keep)

    def _hits(self, ranked: list[list[tuple[int, float]]], with_text: bool, strict: bool) -> list[list[Hit]]:
        """Turn (seq, score) rankings into Hits with ids, texts and metadata from the document store."""
        docs = self._docs.fetch([seq for r in ranked for seq, _ in r], with_text)
        out: list[list[Hit]] = []
        for r in ranked:
            hits = []
            for seq, score in r:
                doc = docs.get(seq)
                if doc is None:  # purged by a delete that committed after our snapshot was taken
                    if strict:
                        raise _StaleSnapshot
                    continue
                hits.append(Hit(doc[0], float(score), doc[1], doc[2]))
            out.append(hits)
        return out


def _check_positive(name: str, value: object) -> None:
    """``value`` must be an int (not a bool) from 1 to ``MAX_SEARCH_INT``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_SEARCH_INT:
        raise InvalidInputError(f"{name} must be an integer from 1 to {MAX_SEARCH_INT}, got {value!r}")


def _check_args(
    *, k: object, rescore_multiplier: object, rescore: object, mode: object,
    rrf_k: object, weights: object, nprobe: object, exact: object, with_text: object,
) -> None:  # fmt: skip
    """The types and ranges of ``search``'s arguments (queries and filter are checked as they are used)."""
    if not isinstance(mode, str) or mode not in MODES:
        raise InvalidInputError(f"unknown search mode {mode!r}; expected one of {', '.join(MODES)}")
    _check_positive("k", k)
    _check_positive("rescore_multiplier", rescore_multiplier)
    if nprobe is not None:
        _check_positive("nprobe", nprobe)
    _rescore_stages(rescore)
    check_fusion_args(rrf_k, weights, 2)
    for name, flag in (("exact", exact), ("with_text", with_text)):
        if not isinstance(flag, (bool, np.bool_)):
            raise InvalidInputError(f"{name} must be True or False, got {flag!r}")


def _rescore_stages(rescore: object) -> list[str]:
    """The rescoring stages asked for: ``rescore`` is None, "none", a stage name, or a list/tuple of them."""
    if rescore is None:
        return []
    if isinstance(rescore, str):
        return [] if rescore == "none" else [rescore]
    if not isinstance(rescore, (list, tuple)) or not all(isinstance(s, str) for s in rescore):
        raise InvalidInputError(
            f"rescore must be None, one of {', '.join(RESCORE_STAGES)}, or a list/tuple of them, got {rescore!r}"
        )
    return list(rescore)


def _split_queries(
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
