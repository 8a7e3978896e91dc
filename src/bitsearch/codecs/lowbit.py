"""Low-bit codes: 2bit and 1.5bit per dimension, scored asymmetrically by table lookup.

Stored as two bit planes (``codes.npy``): a sign-like plane (the median split, which Hamming
distance pre-selects on) and a second plane (2bit's low bits; 1.5bit's one bit per pair of
dimensions). 1.5bit collections of format 2 hold packed ternary codes instead, scanned in full.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..checks import ManifestCheck
from ..kernels import lut_planes_topk, lut_topk, preselected_topk
from .base import CodebookCodec, CodecState, Stage1Plan, words_of

__all__ = ["OneAndHalfBitCodec", "TwoBitCodec"]


class LowBitCodec(CodebookCodec):
    """The shared part of 2bit and 1.5bit: bit planes in RAM as sign-plane words + second-plane bytes."""

    codes_file = "codes.npy"

    @property
    def planes(self) -> bool:
        """Whether the codes are bit planes (all but format 2's packed ternary 1.5bit)."""
        return True

    @property
    def plane_bytes(self) -> int:
        return -(-self.dim // 8)

    def second_plane_bytes(self) -> int:
        return self.plane_bytes

    def width(self) -> int:
        """Bytes per row of codes.npy (bit planes: the sign-like plane, then the second)."""
        if self.planes:
            return self.plane_bytes + self.second_plane_bytes()
        return -(-self.dim // 5)  # packed ternary: five dimensions per byte

    def encode(self, emb: np.ndarray, ranges: np.ndarray | None) -> np.ndarray:
        book = self.codebook
        assert book is not None
        return book.encode_planes(emb) if book.planes else book.encode(emb)

    def _split(self, part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bit-plane rows -> (the sign-like plane as uint64 words, the second plane's bytes)."""
        return words_of(part, self.plane_bytes), np.ascontiguousarray(part[:, self.plane_bytes :])

    def load(self, parts: list[np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.manifest.dim is None:  # no vectors yet, and no width to give the empty arrays
            return np.zeros((0, 0), np.uint64), np.zeros((0, 0), np.uint8)
        if not self.planes:
            if not parts:
                return None, np.zeros((0, self.width()), dtype=np.uint8)
            return None, parts[0] if len(parts) == 1 else np.concatenate(parts)
        splits = [self._split(p) for p in parts] or [self._split(np.zeros((0, self.width()), np.uint8))]
        return np.concatenate([w for w, _ in splits]), np.concatenate([lo for _, lo in splits])

    def compact(self, state: CodecState, keep: np.ndarray) -> np.ndarray:
        assert state.ram_rows is not None
        if not self.planes:
            return state.ram_rows[keep]
        assert state.words is not None
        hi = state.words[keep].view(np.uint8)[:, : self.plane_bytes]
        return np.concatenate([hi, state.ram_rows[keep]], axis=1)

    def plan(
        self, *, rescoring: bool, indexed: bool, exact: bool, nprobe: int | None, preselect: int | None = None
    ) -> Stage1Plan:
        # pre-selection by the sign-like plane (format 2's packed 1.5bit has none: it scans in full)
        depth = 0 if exact else preselect or self.preselect_depth
        return Stage1Plan(self.name, preselect=depth, nprobe=nprobe, scored=not rescoring)

    def stage1(
        self, state: CodecState, q: np.ndarray, k: int, exclude: np.ndarray | None, plan: Stage1Plan
    ) -> tuple[np.ndarray, np.ndarray]:
        book = self.codebook
        assert book is not None and state.ram_rows is not None
        if not book.planes:  # format 2's packed ternary: a full table-lookup scan
            return lut_topk(book.lut(q), state.ram_rows, k, exclude=exclude)
        assert state.words is not None
        hi = state.words.view(np.uint8)[:, : book.plane_bytes]
        luts = book.lut_planes(q)
        lo, pairs = state.ram_rows, book.pairs
        factor = plan.preselect
        if factor and state.rows > k * factor:
            hq = np.packbits(book.levels_of(q) >= 2, axis=-1)  # the median split, like sign bits

            def score(i: int, c: Any) -> tuple[np.ndarray, np.ndarray]:
                return lut_planes_topk(luts[i : i + 1], hi[c], lo[c], k, pairs=pairs)

            return preselected_topk(hq, state.words, k, exclude, score, factor)
        return lut_planes_topk(luts, hi, lo, k, exclude=exclude, pairs=pairs)


class TwoBitCodec(LowBitCodec):
    """Four levels per dimension (Lloyd-Max quartiles), rotated by default."""

    name = "2bit"
    rank = 1.5
    default_rotation = True
    preselect_depth = 32


class OneAndHalfBitCodec(LowBitCodec):
    """A sign plane at the median and one "large" bit per pair of dimensions (format 3), or format 2's
    packed ternary."""

    name = "1.5bit"
    rank = 1.3
    create_version = 3
    # rotated, top 32 x k: by the worst (model, set) pair over both measured models with int8 rescoring
    # (docs/results.md, "over both models"); not rotated lost 1.2 points on all-mpnet-base-v2's lisa
    default_rotation = True
    preselect_depth = 32

    @property
    def planes(self) -> bool:
        book = self.manifest.codebook
        return book is None or "pair_thresholds" in book

    def second_plane_bytes(self) -> int:
        return -(-self.plane_bytes // 2)

    def min_version(self) -> int:
        # an empty format-2 1.5bit collection gets pair planes with its first codebook
        return 3 if "pair_thresholds" in (self.manifest.codebook or {}) else 2

    @classmethod
    def validate_layout(cls, c: ManifestCheck, book: dict[str, Any], dim: int) -> int:
        if not ("pair_thresholds" in book or "pair_scale" in book):
            return super().validate_layout(c, book, dim)
        c.floats(book.get("pair_scale"), "codebook.pair_scale", (dim,))
        c.floats(book.get("pair_thresholds"), "codebook.pair_thresholds", (-(-dim // 2),))
        if book.get("layout", "sign+pairs") != "sign+pairs":
            c.fail(f"unknown codebook layout {book['layout']!r}")
        c.floats(book["thresholds"], "codebook.thresholds", (1, dim))
        return 4
