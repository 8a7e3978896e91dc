"""Sign bits: one bit per dimension, searched by Hamming distance (optionally through an IVF) or by
asymmetric scoring of the float query against each bit's bucket mean."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from ..kernels import as_words, bitplane_topk, hamming_topk, ivf_topk, lut_topk, preselected_topk
from ..quantize import CodeBook, quantize_embeddings
from .base import NO_SCORES, CodebookCodec, CodecState, Stage1Plan

__all__ = ["STAGE1_MODES", "BinaryCodec"]

STAGE1_MODES = ("auto", "hamming", "asymmetric")  # a binary collection's stage1 setting


class BinaryCodec(CodebookCodec):
    """Packed sign bits (``binary.npy``), held in RAM as uint64 words."""

    name = "binary"
    rank = 0  # Hamming ranking; asymmetric scoring ranks as 1 (see ``base_rank``)
    codes_file = "binary.npy"
    stage1_modes = True
    takes_query_bits = True
    supports_index = True
    offers_bits = True

    @classmethod
    def needs_codebook(cls) -> bool:
        return False  # plain sign bits need no calibration

    @property
    def mode(self) -> str:
        """The collection's stage-1 setting; collections from format 1 always used Hamming."""
        return self.manifest.stage1 or "hamming"

    @property
    def base_rank(self) -> float:
        return 1 if self.mode == "asymmetric" else 0

    def width(self) -> int:
        return -(-self.dim // 8)

    @cached_property
    def plain(self) -> bool:
        """Plain sign bits: no codebook, or one that neither centres, rotates nor moves the threshold."""
        book = self.codebook
        return book is None or (book.offset is None and book.rotation is None and not book.thresholds.any())

    @cached_property
    def levels(self) -> CodeBook:
        """The codebook for asymmetric scoring: without calibrated levels, +-1 per dimension."""
        if self.codebook is not None:
            return self.codebook
        return CodeBook("binary", np.zeros((1, self.dim)), np.stack([-np.ones(self.dim), np.ones(self.dim)]))

    def encode(self, emb: np.ndarray, ranges: np.ndarray | None) -> np.ndarray:
        return quantize_embeddings(emb, "ubinary") if self.codebook is None else self.codebook.encode(emb)

    def encode_queries(self, q: np.ndarray) -> np.ndarray:
        """The queries' sign bits (plain sign bits skip the codebook)."""
        return np.packbits(q > 0, axis=-1) if self.plain else self.levels.encode(q)

    def load(self, parts: list[np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.manifest.dim is None:  # no vectors yet, and no width to give the empty arrays
            return np.zeros((0, 0), np.uint64), None
        nbytes = self.width()
        words = np.zeros((sum(p.shape[0] for p in parts), -(-nbytes // 8)), dtype=np.uint64)
        pos = 0
        for part in parts:
            words.view(np.uint8)[pos : pos + part.shape[0], :nbytes] = part
            pos += part.shape[0]
        return words, None

    def append(
        self, words: np.ndarray | None, rows: np.ndarray | None, part: np.ndarray
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        new_words = as_words(part)
        return (new_words if words is None or words.shape[0] == 0 else np.concatenate([words, new_words])), rows

    def compact(self, state: CodecState, keep: np.ndarray) -> np.ndarray:
        assert state.words is not None
        return state.words[keep].view(np.uint8)[:, : self.width()]

    def plan(
        self, *, rescoring: bool, indexed: bool, exact: bool, nprobe: int | None, preselect: int | None = None
    ) -> Stage1Plan:
        name, depth = ("asymmetric" if self.mode == "asymmetric" else "hamming"), 0
        if self.mode == "auto" and not rescoring:
            name = "asymmetric"  # nothing rescores: spend the work on a better stage 1
            depth = 0 if exact else preselect or self.preselect_depth
        if indexed and not exact and (name == "hamming" or self.mode == "auto"):
            name = "ivf"  # the index is for scale: "auto" trades asymmetric scoring for it
        return Stage1Plan(name, depth, nprobe, scored=not rescoring)

    def stage1(
        self, state: CodecState, q: np.ndarray, k: int, exclude: np.ndarray | None, plan: Stage1Plan
    ) -> tuple[np.ndarray, np.ndarray]:
        if plan.name == "asymmetric":
            return self._asymmetric(state, q, k, exclude, plan.preselect)
        qcodes = self.encode_queries(q)
        assert state.words is not None
        if plan.name == "ivf":
            ann = self.manifest.ann
            assert ann is not None
            probe = int(plan.nprobe or ann["nprobe"])
            rows, dist = ivf_topk(state.ann, state.words, int(ann["rows"]), as_words(qcodes), k, exclude, probe)
        else:
            rows, dist = hamming_topk(qcodes, state.words, k, exclude=exclude)
        if not plan.scored:
            return rows, NO_SCORES
        return rows, 1.0 - 2.0 * dist.astype(np.float32) / self.dim

    def _asymmetric(
        self, state: CodecState, q: np.ndarray, n: int, exclude: np.ndarray | None, preselect: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The float query (or, with ``query_bits``, its bit planes) against each bit's level."""
        book = self.levels
        words = state.words
        assert words is not None
        qbits = (self.manifest.codes or {}).get("query_bits")
        if qbits:  # the query rounded to qbits-bit weights, scored by popcounts per bit plane
            qp, step, low, base_score = book.query_planes(q, int(qbits))

            def score(i: int, c: Any) -> tuple[np.ndarray, np.ndarray]:
                sl = slice(i, i + 1)
                return bitplane_topk(qp[sl], step[sl], low[sl], base_score[sl], words[c], n)

        else:  # the float query against each bit's level, by table lookup
            luts = book.lut(q)
            codes = words.view(np.uint8)[:, : book.groups]

            def score(i: int, c: Any) -> tuple[np.ndarray, np.ndarray]:
                return lut_topk(luts[i : i + 1], np.ascontiguousarray(codes[c]), n)

        if preselect and state.rows > n * preselect:
            return preselected_topk(book.encode(q), words, n, exclude, score, preselect)
        if qbits:
            return bitplane_topk(qp, step, low, base_score, words, n, exclude=exclude)
        return lut_topk(luts, codes, n, exclude=exclude)
