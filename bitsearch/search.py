"""The staged searcher: stage 1 over the codes in RAM, then rescoring stages over rows on disk.

binary collections: Hamming top (k x rescore_multiplier) over sign bits, then the float32 query
against dequantized int8 rows, unpacked bits or float32 rows. int8 and float32 collections scan their
rows exactly (for like-for-like comparisons) and may rescore with float32.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .collection import CollectionFiles, State
from .errors import InvalidInputError
from .kernels import hamming_topk, rescore_bits, rescore_float32, rescore_int8
from .quantize import check_embeddings, quantize_embeddings
from .store import DocId

__all__ = ["RESCORE_STAGES", "Collection", "Hit", "SearchResults"]

RESCORE_STAGES = ("binary", "int8", "float32")
# how precise each representation is; a rescoring stage must be more precise than the one before it
_RANK = {"hamming": 0, "binary": 1, "int8": 2, "float32": 3}
_EXACT_CHUNK = 65536  # rows per block in exact int8/float32 scans


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
    """A list with one list of ``Hit`` per query, plus ``timings``: seconds spent in each stage."""

    def __init__(self, hits: list[list[Hit]], timings: dict[str, float], stages: list[str]) -> None:
        super().__init__(hits)
        self.timings = timings
        self.stages = stages


@dataclass
class _Plan:
    stage1: str
    rescore: list[str] = field(default_factory=list)


class Collection(CollectionFiles):
    """A bitsearch collection: quantized codes on disk and in RAM, searched in stages.

    Create with ``Collection.create(path, dim, precision="binary")`` or open with
    ``Collection.open(path)``; see ``add``, ``delete``, ``compact``, ``search`` and ``stats``.
    """

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        rescore_multiplier: int = 4,
        rescore: str | Sequence[str] | None = "int8",
        *,
        with_text: bool = True,
    ) -> SearchResults:
        """Find the ``k`` nearest documents to each query (float32, (dim,) or (n, dim)).

        Stage 1 takes ``k * rescore_multiplier`` candidates when a rescoring stage follows; ``rescore``
        names the rows that rescore them ("int8", "binary", "float32", None, or a sequence such as
        ("int8", "float32"), where earlier stages keep ``k * max(1, rescore_multiplier // 2)``).
        Stages no more precise than stage 1 are skipped. Scores are dot products with the last
        stage's rows (binary without rescoring: ``1 - 2 * hamming / dim``).
        """
        state = self._state
        q = check_embeddings(queries, self.dim, name="queries").astype(np.float32, copy=False)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        if (
            isinstance(rescore_multiplier, bool)
            or not isinstance(rescore_multiplier, (int, np.integer))
            or rescore_multiplier < 1
        ):
            raise InvalidInputError(f"rescore_multiplier must be a positive integer, got {rescore_multiplier!r}")
        plan = self._plan(state, rescore)
        timings: dict[str, float] = {}
        live = state.live
        if live == 0:
            return SearchResults([[] for _ in range(q.shape[0])], {"stage1": 0.0}, [plan.stage1, *plan.rescore])
        n_cand = min(live, int(k) * (int(rescore_multiplier) if plan.rescore else 1))

        t0 = time.perf_counter()
        rows, scores = self._stage1(state, q, n_cand, plan.stage1)
        timings["stage1"] = time.perf_counter() - t0

        for i, stage in enumerate(plan.rescore):
            t0 = time.perf_counter()
            last = i == len(plan.rescore) - 1
            keep = int(k) if last else min(n_cand, int(k) * max(1, int(rescore_multiplier) // 2))
            rows, scores = self._rescore(state, q, rows, stage, keep)
            timings[stage] = time.perf_counter() - t0

        t0 = time.perf_counter()
        hits = self._hits(state, rows, scores, with_text)
        timings["fetch"] = time.perf_counter() - t0
        timings["total"] = sum(timings.values())
        return SearchResults(hits, timings, [plan.stage1, *plan.rescore])

    # -------------------------------------------------------------- planning

    def _plan(self, state: State, rescore: str | Sequence[str] | None) -> _Plan:
        m = state.manifest
        stage1 = "hamming" if m["precision"] == "binary" else m["precision"]
        if rescore is None or rescore == "none":
            wanted: list[str] = []
        elif isinstance(rescore, str):
            wanted = [rescore]
        else:
            wanted = list(rescore)
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
        return plan

    # -------------------------------------------------------------- stages

    def _stage1(self, state: State, q: np.ndarray, n: int, stage: str) -> tuple[np.ndarray, np.ndarray]:
        exclude = state.deleted if state.tombstones.size else None
        if stage == "hamming":
            qcodes = quantize_embeddings(q, "ubinary")
            assert state.words is not None
            rows, dist = hamming_topk(qcodes, state.words, n, exclude=exclude)
            return rows, 1.0 - 2.0 * dist.astype(np.float32) / self.dim
        # exact scans over the int8 / float32 rows held in RAM, in blocks to bound temporaries
        assert state.ram_rows is not None
        data = state.ram_rows
        nq, total = q.shape[0], data.shape[0]
        best_rows = np.empty((nq, 0), dtype=np.int64)
        best_scores = np.empty((nq, 0), dtype=np.float32)
        for start in range(0, total, _EXACT_CHUNK):
            block = data[start : start + _EXACT_CHUNK]
            s = _int8_block(q, block, self.ranges) if stage == "int8" else q @ block.T
            if exclude is not None:
                s = np.where(exclude[start : start + block.shape[0]], -np.inf, s)
            cand_rows = np.concatenate(
                [best_rows, np.broadcast_to(np.arange(start, start + block.shape[0]), (nq, block.shape[0]))], axis=1
            )
            cand_scores = np.concatenate([best_scores, s.astype(np.float32)], axis=1)
            # merge: order by (-score, row); row numbers ascend within and across blocks
            idx, top = _topk_by_row(cand_scores, cand_rows, n)
            best_rows, best_scores = idx, top
        return best_rows, best_scores

    def _rescore(
        self, state: State, q: np.ndarray, rows: np.ndarray, stage: str, keep: int
    ) -> tuple[np.ndarray, np.ndarray]:
        flat = np.unique(rows)
        if stage == "binary":
            assert state.words is not None
            nbytes = -(-self.dim // 8)
            block = state.words[flat].view(np.uint8)[:, :nbytes]
        else:
            block = state.gather(stage, flat)
        pos = np.searchsorted(flat, rows)
        scores = np.empty(rows.shape, dtype=np.float32)
        for i in range(rows.shape[0]):
            cand = block[pos[i]]
            if stage == "int8":
                scores[i] = rescore_int8(q[i], cand, self.ranges)
            elif stage == "binary":
                scores[i] = rescore_bits(q[i], cand, self.dim)
            else:
                scores[i] = rescore_float32(q[i], cand)
        return _topk_by_row(scores, rows, keep)

    def _hits(self, state: State, rows: np.ndarray, scores: np.ndarray, with_text: bool) -> list[list[Hit]]:
        flat = np.unique(rows)
        seqs = state.gather("seqs", flat) if flat.size else np.zeros(0, np.int64)
        docs = self._docs.fetch(seqs.tolist())
        seq_of = dict(zip(flat.tolist(), seqs.tolist(), strict=True))
        out: list[list[Hit]] = []
        for r_row, s_row in zip(rows, scores, strict=True):
            hits = []
            for r, s in zip(r_row.tolist(), s_row.tolist(), strict=True):
                doc_id, text, meta = docs[seq_of[r]]
                hits.append(Hit(doc_id, float(s), text if with_text else None, meta if with_text else None))
            out.append(hits)
        return out


def _int8_block(q: np.ndarray, block: np.ndarray, ranges: np.ndarray | None) -> np.ndarray:
    """Scores of many queries against a block of int8 rows, dequantized (scale folded into queries)."""
    assert ranges is not None
    steps = (ranges[1] - ranges[0]) / np.float32(255)
    steps = np.where(steps == 0, 1, steps).astype(np.float32)
    w = q * steps
    const = q @ ranges[0] + np.float32(128.5) * w.sum(axis=1)
    return w @ block.astype(np.float32).T + const[:, None]


def _topk_by_row(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the k highest scores, ties broken by the lower row number (deterministic)."""
    k = min(k, scores.shape[1])
    out_rows = np.empty((scores.shape[0], k), dtype=np.int64)
    out_scores = np.empty((scores.shape[0], k), dtype=np.float32)
    for i in range(scores.shape[0]):
        s, r = scores[i], rows[i]
        finite = np.isfinite(s)
        if not finite.all():
            s, r = s[finite], r[finite]
        if s.size > 4 * k:
            part = np.argpartition(-s, k - 1)[:k]
            kth = s[part].min()
            sel = np.flatnonzero(s >= kth)
            s, r = s[sel], r[sel]
        order = np.lexsort((r, -s))[:k]
        kk = order.size
        out_rows[i, :kk] = r[order]
        out_scores[i, :kk] = s[order]
        if kk < k:  # fewer live rows than k (only when deleted rows were masked out)
            out_rows[i, kk:] = -1
            out_scores[i, kk:] = -np.inf
    if (out_rows < 0).any():
        kk = int((out_rows >= 0).sum(axis=1).min())
        out_rows, out_scores = out_rows[:, :kk], out_scores[:, :kk]
    return out_rows, out_scores
