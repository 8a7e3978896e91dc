"""Exact stage 1: int8 or float32 rows in RAM, scanned in full (for like-for-like comparisons)."""

from __future__ import annotations

import numpy as np

from ..kernels import dot_topk, int8_block_scores, int8_query_weights, topk_by_row
from .base import Codec, CodecState, Stage1Plan

__all__ = ["Float32Codec", "Int8Codec"]

EXACT_CHUNK = 65536  # rows per block in BLAS scans
NUMBA_SCAN_MAX_QUERIES = 16  # up to this many queries, exact scans run in numba; more go to BLAS


class ExactCodec(Codec):
    """The kept int8 or float32 rows are the codes: loaded into RAM, scanned exactly."""

    codes_file = None

    def encode(self, emb: np.ndarray, ranges: np.ndarray | None) -> None:
        return None  # the segment's kept rows are the codes

    def load(self, parts: list[np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
        dtype = self.codes_dtype
        if self.manifest.dim is None or not parts:
            return None, np.zeros((0, self.dim), dtype=dtype)
        return None, parts[0] if len(parts) == 1 else np.concatenate(parts)

    def compact(self, state: CodecState, keep: np.ndarray) -> None:
        return None  # compaction writes the kept rows

    def plan(
        self, *, rescoring: bool, indexed: bool, exact: bool, nprobe: int | None, preselect: int | None = None
    ) -> Stage1Plan:
        return Stage1Plan(self.name, nprobe=nprobe, scored=not rescoring)

    def scores_block(self, state: CodecState, q: np.ndarray, block: np.ndarray) -> np.ndarray:
        """Scores (nq, rows) of many queries against a block of rows (BLAS)."""
        return q @ block.T

    def numba_topk(
        self, state: CodecState, q: np.ndarray, k: int, exclude: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        assert state.ram_rows is not None
        return dot_topk(q, state.ram_rows, k, exclude)

    def stage1(
        self, state: CodecState, q: np.ndarray, k: int, exclude: np.ndarray | None, plan: Stage1Plan
    ) -> tuple[np.ndarray, np.ndarray]:
        data = state.ram_rows
        assert data is not None
        nq, total = q.shape[0], data.shape[0]
        if nq <= NUMBA_SCAN_MAX_QUERIES:  # a few queries: numba (BLAS threads thrash on a busy box)
            return self.numba_topk(state, q, k, exclude)
        # many queries: BLAS matrix products in blocks of rows, merged
        best_rows = np.empty((nq, 0), dtype=np.int64)
        best_scores = np.empty((nq, 0), dtype=np.float32)
        for start in range(0, total, EXACT_CHUNK):
            block = data[start : start + EXACT_CHUNK]
            s = self.scores_block(state, q, block)
            if exclude is not None:
                s = np.where(exclude[start : start + block.shape[0]], -np.inf, s)
            cand_rows = np.concatenate(
                [best_rows, np.broadcast_to(np.arange(start, start + block.shape[0]), (nq, block.shape[0]))], axis=1
            )
            cand_scores = np.concatenate([best_scores, s.astype(np.float32)], axis=1)
            # merge: order by (-score, row); row numbers ascend within and across blocks
            best_rows, best_scores = topk_by_row(cand_scores, cand_rows, k)
        return best_rows, best_scores


class Int8Codec(ExactCodec):
    """int8 rows with the collection's per-dimension ranges; scores are dequantized dot products."""

    name = "int8"
    rank = 2
    codes_dtype = np.int8
    keeps = "int8"

    def scores_block(self, state: CodecState, q: np.ndarray, block: np.ndarray) -> np.ndarray:
        assert state.ranges is not None
        return int8_block_scores(q, block, state.ranges)

    def numba_topk(
        self, state: CodecState, q: np.ndarray, k: int, exclude: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        assert state.ram_rows is not None and state.ranges is not None
        w, const = int8_query_weights(q, state.ranges)
        return dot_topk(w, state.ram_rows, k, exclude, const)


class Float32Codec(ExactCodec):
    """float32 rows: exact dot products."""

    name = "float32"
    rank = 3
    codes_dtype = np.float32
    keeps = "float32"
