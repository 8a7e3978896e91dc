"""Top-k selection over candidate rows: merging by score with ties to the lower row, pre-selection by
Hamming distance, and IVF probing with exact top-ups (shared by the codecs and the rescoring stages)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .kernels import hamming_topk, int8_query_weights, top_scored

if TYPE_CHECKING:
    from .storage.state import State

__all__ = ["exact_allowed", "int8_block", "ivf_topk", "preselected", "topk_by_row"]


def preselected(
    qcodes: np.ndarray, state: State, n: int, exclude: np.ndarray | None, score: Any, factor: int
) -> tuple[np.ndarray, np.ndarray]:
    """Score only the Hamming-nearest ``n x factor`` rows with ``score(query, rows)``.

    Hamming distance over sign-like bits (sign bits; the median plane of 2bit and 1.5bit codes) is a
    cheap filter for the asymmetric score: on the four shared datasets the top 16 x k by Hamming hold
    the asymmetric top k (NDCG@10 equal to a full scan), at about the cost of the Hamming scan
    (benchmarks/bench_codes.py).
    """
    assert state.words is not None
    cand, _ = hamming_topk(qcodes, state.words, n * factor, exclude=exclude)
    kk = min(n, cand.shape[1])
    rows = np.empty((qcodes.shape[0], kk), np.int64)
    scores = np.empty((qcodes.shape[0], kk), np.float32)
    for i in range(qcodes.shape[0]):
        c = np.sort(cand[i])  # ascending rows: score ties go to the lower row, as everywhere
        r, s = score(i, c)
        rows[i], scores[i] = c[r[0]], s[0]
    return rows, scores


def ivf_topk(
    state: State, qwords: np.ndarray, n: int, exclude: np.ndarray | None, nprobe: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate Hamming top-n: the IVF over the indexed rows, an exact scan of rows added since.

    The probed lists hold only some of the rows a filter (or deletions) leaves: when those rows are
    no more than the probed lists hold on average, they are scanned exactly instead (as cheap, and
    exact); and a query for which the probed lists held fewer than ``n`` of them is answered by an
    exact scan, so a filtered search still returns n hits whenever n rows match.
    """
    ann = state.ann
    assert ann is not None and state.manifest.ann is not None
    indexed = int(state.manifest.ann["rows"])
    probe = int(nprobe or state.manifest.ann["nprobe"])
    assert state.words is not None
    live = state.rows if exclude is None else state.rows - int(exclude.sum())
    if exclude is not None and live <= max(n, state.rows * min(probe, ann.nlist) // max(ann.nlist, 1)):
        return exact_allowed(qwords, state.words, n, exclude)
    rows, dist = ann.search(qwords, n, nprobe=probe, exclude=exclude)
    if state.rows > indexed:
        ex_tail = None if exclude is None else exclude[indexed:]
        if ex_tail is None or not ex_tail.all():
            r2, d2 = hamming_topk(qwords, state.words[indexed:], n, exclude=ex_tail)
            rows = np.concatenate([rows, r2 + indexed], axis=1)
            dist = np.concatenate([dist, d2], axis=1)
    want = min(n, live)
    out_r = np.empty((rows.shape[0], want), np.int64)
    out_d = np.empty((rows.shape[0], want), np.int32)
    for i in range(rows.shape[0]):
        ok = rows[i] >= 0
        r, d = rows[i][ok], dist[i][ok]
        order = np.lexsort((r, d))[:want]
        if order.size < want:  # the probed lists held too few of the rows left: scan them exactly
            r_ex, d_ex = hamming_topk(qwords[i : i + 1], state.words, want, exclude=exclude)
            out_r[i], out_d[i] = r_ex[0], d_ex[0]
        else:
            out_r[i], out_d[i] = r[order], d[order]
    return out_r, out_d


def exact_allowed(qwords: np.ndarray, words: np.ndarray, n: int, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact Hamming top-n over the rows ``exclude`` leaves, gathered first (a few of many rows)."""
    keep = np.flatnonzero(~exclude)
    if keep.size == 0:
        return np.empty((qwords.shape[0], 0), np.int64), np.empty((qwords.shape[0], 0), np.int32)
    r, d = hamming_topk(qwords, words[keep], n)
    return keep[r], d  # ``keep`` ascends: ties still go to the lower row


def int8_block(q: np.ndarray, block: np.ndarray, ranges: np.ndarray | None) -> np.ndarray:
    """Scores of many queries against a block of int8 rows, dequantized (scale folded into queries)."""
    assert ranges is not None
    w, const = int8_query_weights(q, ranges)
    return w @ block.astype(np.float32).T + const[:, None]


def topk_by_row(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the k highest scores, ties broken by the lower row number (deterministic)."""
    k = min(k, scores.shape[1])
    if scores.shape[0] == 1 and scores.shape[1] <= 4 * k:  # one query, few candidates: one compiled sort
        r, s = top_scored(scores[0], rows[0].astype(np.int64, copy=False), k)
        return r[None], s[None]
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
