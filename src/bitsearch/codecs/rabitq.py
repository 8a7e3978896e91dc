"""RaBitQ codes (``precision="rabitq"``): one bit per dimension of the centred, rotated vector plus
8 bytes of per-vector factors, scored by RaBitQ's unbiased inner-product estimator.

Gao & Long, "RaBitQ: Quantizing High-Dimensional Vectors with a Theoretical Error Bound for
Approximate Nearest Neighbor Search", SIGMOD 2024; the estimator and its kernels are
``bitsearch.rabitq``. Each row of ``rabitq.npy`` is the sign plane (padded to whole 64-bit words)
followed by the two float32 factors (scale, offset) as 8 bytes. In RAM the sign plane is ``words``, so
Hamming pre-selection, the IVF and filters work on it as on sign bits; the factors are ``rows``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import rabitq
from ..checks import ManifestCheck
from ..kernels import as_words, hamming_topk, ivf_topk
from .base import CodebookCodec, CodecState, Stage1Plan

__all__ = ["RabitqCodec"]

FACTOR_BYTES = 8  # scale and offset, float32 each


class RabitqCodec(CodebookCodec):
    """1-bit RaBitQ: sign plane + (scale, offset) per row; the fitted ``RabitqParams`` are its codebook."""

    name = "rabitq"
    rank = 1.2  # better than Hamming and asymmetric sign bits, below int8 rows
    codes_file = "rabitq.npy"
    # not rotated: by the worst of the seven shared sets with int8 rescoring (docs/results.md); rotation
    # (a seeded random one, RaBitQ's guarantee) wins 5 of 7 sets without rescoring but moves by points
    # with the seed on the small ones
    default_rotation = False
    always_centres = True
    takes_query_bits = True
    query_bits_choices = (4,)  # None: the float32 query; 4: RaBitQ's 4-bit query, scored by popcounts
    supports_index = True
    create_version = 5
    preselect_depth = 32

    @property
    def params(self) -> rabitq.RabitqParams:
        book = self.codebook
        assert isinstance(book, rabitq.RabitqParams), "a rabitq collection with rows has fitted parameters"
        return book

    @property
    def plane_bytes(self) -> int:
        return -(-self.dim // rabitq.WORD) * rabitq.WORD // 8

    def width(self) -> int:
        """Bytes per row of rabitq.npy: the padded sign plane, then the factors."""
        return self.plane_bytes + FACTOR_BYTES

    def min_version(self) -> int:
        return 5

    # ---------------------------------------------------------------- the format

    @classmethod
    def validate(cls, c: ManifestCheck, m: dict[str, Any], dim: int, total: int) -> None:
        """The codes options and the fitted parameters (bits, centre, seed, rotation file)."""
        if m.get("format_version", 0) < 5:
            c.fail(f"rabitq codes need format_version 5, got {m.get('format_version')!r}")
        codes = cls.validate_codes(c, m)
        if codes is None:
            c.fail("a rabitq collection without codes options")
        if codes["centering"] is not True:
            c.fail("rabitq codes always centre: codes.centering must be true")
        book = m.get("codebook")
        if book is None:
            if total:
                c.fail("a rabitq collection with rows needs fitted parameters (codebook)")
            return
        c.mapping(book, "codebook", ("kind", "bits", "centre"))
        if book["kind"] != "rabitq":
            c.fail(f"codebook kind {book['kind']!r} differs from the precision 'rabitq'")
        if book["bits"] != 1:
            c.fail(f"codebook.bits must be 1 for rabitq collections, got {book['bits']!r}")
        c.floats(book["centre"], "codebook.centre", (dim,))
        if book.get("seed") is not None:
            c.integer(book["seed"], "codebook.seed")
        if (book.get("rotation") is None) != (codes["rotation"] is False):
            c.fail("codebook.rotation does not match codes.rotation")
        cls.validate_rotation(c, book)

    @classmethod
    def book_from_dict(cls, d: dict[str, Any], rotation: np.ndarray | None) -> rabitq.RabitqParams:  # type: ignore[override]
        return rabitq.RabitqParams.from_dict(d, rotation)

    @classmethod
    def fit(cls, emb: np.ndarray, options: dict[str, Any]) -> rabitq.RabitqParams:  # type: ignore[override]
        """The centre (mean of ``emb``) and the rotation (codes.rotation: True is seed 0, an int a seed)."""
        rot = options["rotation"]
        seed = 0 if rot is True or rot is False else int(rot)
        return rabitq.fit(emb, bits=1, rotation=rot is not False, seed=seed)

    # ---------------------------------------------------------------- codes

    def encode(self, emb: np.ndarray, ranges: np.ndarray | None) -> np.ndarray:
        codes, factors = rabitq.encode(self.params, emb)
        return np.concatenate([codes, factors.view(np.uint8)], axis=1)

    def _split(self, part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of rabitq.npy -> (sign plane as uint64 words, factors (n, 2) float32)."""
        pb = self.plane_bytes
        words = np.ascontiguousarray(part[:, :pb]).view(np.uint64)
        factors = np.ascontiguousarray(part[:, pb:]).view(np.float32)
        return words, factors

    def load(self, parts: list[np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
        if self.manifest.dim is None:  # no vectors yet, and no width to give the empty arrays
            return np.zeros((0, 0), np.uint64), np.zeros((0, 2), np.float32)
        splits = [self._split(p) for p in parts] or [self._split(np.zeros((0, self.width()), np.uint8))]
        return np.concatenate([w for w, _ in splits]), np.concatenate([f for _, f in splits])

    def compact(self, state: CodecState, keep: np.ndarray) -> np.ndarray:
        assert state.words is not None and state.ram_rows is not None
        return np.concatenate([state.words[keep].view(np.uint8), state.ram_rows[keep].view(np.uint8)], axis=1)

    # ---------------------------------------------------------------- search

    def plan(
        self, *, rescoring: bool, indexed: bool, exact: bool, nprobe: int | None, preselect: int | None = None
    ) -> Stage1Plan:
        # the estimator scores the Hamming (or IVF) top depth x k of the sign plane; exact: every row
        depth = 0 if exact else preselect or self.preselect_depth
        name = "ivf" if indexed and not exact else "rabitq"
        return Stage1Plan(name, preselect=depth, nprobe=nprobe, scored=True)

    def stage1(
        self, state: CodecState, q: np.ndarray, k: int, exclude: np.ndarray | None, plan: Stage1Plan
    ) -> tuple[np.ndarray, np.ndarray]:
        params = self.params
        words, factors = state.words, state.ram_rows
        assert words is not None and factors is not None
        codes = words.view(np.uint8)
        qbits = (self.manifest.codes or {}).get("query_bits")
        depth = plan.preselect
        if plan.name != "ivf" and not (depth and state.rows > k * depth):
            scores, rows = rabitq.search(params, codes, factors, q, k, exclude=exclude, query_bits=qbits)
            return rows, scores
        qcodes = params.encode_signs(q)
        if plan.name == "ivf":
            ann = self.manifest.ann
            assert ann is not None
            probe = int(plan.nprobe or ann["nprobe"])
            cand, _ = ivf_topk(state.ann, words, int(ann["rows"]), as_words(qcodes), k * max(depth, 1), exclude, probe)
        else:
            cand, _ = hamming_topk(qcodes, words, k * depth, exclude=exclude)
        kk = min(k, cand.shape[1])
        rows = np.full((q.shape[0], kk), -1, dtype=np.int64)
        scores = np.full((q.shape[0], kk), -np.inf, dtype=np.float32)
        for i in range(q.shape[0]):
            c = np.sort(cand[i][cand[i] >= 0])  # ascending rows: score ties go to the lower row
            if c.size == 0:
                continue
            s, pos = rabitq.search(params, codes[c], factors[c], q[i : i + 1], min(kk, c.size), query_bits=qbits)
            got = pos[0] >= 0
            rows[i, : got.sum()] = c[pos[0][got]]
            scores[i, : got.sum()] = s[0][got]
        return rows, scores

    def describe(self) -> dict[str, Any]:
        book = self.codebook
        return {**super().describe(), **({"rabitq": book.describe()} if isinstance(book, rabitq.RabitqParams) else {})}
