"""What a stage-1 code family provides: its codes on disk and in RAM, and its stage-1 search.

A ``Codec`` is bound to one collection's manifest (and its fitted codebook, if the family has one).
The store asks it to encode, load, append and compact the codes that stay in RAM; the searcher asks
it for a stage-1 plan and for the stage-1 candidates. Nothing outside ``bitsearch.codecs`` branches
on a collection's precision: a new code family is one module with a ``Codec`` subclass, registered
in ``bitsearch.codecs.CODECS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from ..checks import ManifestCheck
from ..quantize import CODE_KINDS, CodeBook
from ..rabitq import RabitqParams

__all__ = [
    "NO_SCORES", "ROTATION", "CodecManifest", "CodecState", "Codec", "CodebookCodec", "Stage1Plan", "words_of",
]  # fmt: skip

ROTATION = "rotation.npy"  # a codebook's rotation matrix, beside the manifest
NO_SCORES = np.zeros((0, 0), dtype=np.float32)  # stage-1 scores not computed: a rescoring stage follows


@dataclass(frozen=True)
class Stage1Plan:
    """How stage 1 runs for one search: its name (as ``SearchResults.stages`` reports it) and options."""

    name: str
    preselect: int = 0  # > 0: score only the Hamming top preselect x k rows (see Codec.preselect_depth)
    nprobe: int | None = None  # IVF lists to scan (None: the index's setting)
    scored: bool = True  # False: a rescoring stage replaces the scores, which may be left empty


class CodecManifest(Protocol):
    """The manifest fields a codec reads (``bitsearch.storage.Manifest`` provides them).

    Codecs sit below the storage package: they state what they read here instead of importing it.
    """

    @property
    def dim(self) -> int | None: ...
    @property
    def stage1(self) -> str | None: ...
    @property
    def codes(self) -> dict[str, Any] | None: ...
    @property
    def codebook(self) -> dict[str, Any] | None: ...
    @property
    def ann(self) -> dict[str, Any] | None: ...


class CodecState(Protocol):
    """The snapshot fields a codec reads (``bitsearch.storage.State`` provides them)."""

    @property
    def words(self) -> np.ndarray | None: ...
    @property
    def ram_rows(self) -> np.ndarray | None: ...
    @property
    def ann(self) -> Any: ...
    @property
    def rows(self) -> int: ...
    @property
    def ranges(self) -> np.ndarray | None: ...


def words_of(codes: np.ndarray, nbytes: int) -> np.ndarray:
    """Packed bit rows (n, >= nbytes) uint8 -> (n, ceil(nbytes / 8)) uint64 words, zero-padded."""
    words = np.zeros((codes.shape[0], -(-nbytes // 8)), dtype=np.uint64)
    words.view(np.uint8)[:, :nbytes] = codes[:, :nbytes]
    return words


class Codec(ABC):
    """One stage-1 code family bound to a collection (see the module docstring).

    In RAM a collection's stage-1 codes are two arrays (either may be None): ``words``, a sign-like
    bit plane as uint64 words (Hamming scans, IVF, pre-selection, "binary" rescoring), and ``rows``,
    the family's other per-row codes (a second bit plane, packed codes, or exact int8/float32 rows).
    """

    name: ClassVar[str]  # the precision that selects it
    rank: ClassVar[float]  # how precise its ranking is: rescoring stages must be more precise
    codes_file: ClassVar[str | None]  # its segment file; None: the kept int8/float32 rows are the codes
    codes_dtype: ClassVar[type] = np.uint8
    keeps: ClassVar[str | None] = None  # rows its collections always keep on disk ("int8", "float32")
    uses_codebook: ClassVar[bool] = False  # codes options (centering, rotation) and a fitted codebook
    default_rotation: ClassVar[bool] = False
    stage1_modes: ClassVar[bool] = False  # the "stage1" setting (auto, hamming, asymmetric) applies
    takes_query_bits: ClassVar[bool] = False
    query_bits_choices: ClassVar[tuple[int, ...]] = tuple(range(1, 9))  # the query_bits it can take
    always_centres: ClassVar[bool] = False  # its codes centre on the corpus mean whatever ``centering`` says
    supports_index: ClassVar[bool] = False  # an IVF over ``words``
    offers_bits: ClassVar[bool] = False  # ``words`` can rescore ("binary" rescoring stage)
    create_version: ClassVar[int] = 2  # the lowest format version that describes a new collection
    # families whose estimator is slower than Hamming score only the Hamming top preselect_depth x k rows;
    # each depth is the shallowest that costs at most 0.1 point of NDCG@10 against scoring every row on the
    # worst of the seven shared retrieval sets (benchmarks/bench_defaults.py, docs/results.md)
    preselect_depth: ClassVar[int] = 16

    def __init__(self, manifest: CodecManifest, codebook: CodeBook | RabitqParams | None) -> None:
        self.manifest = manifest
        self.dim = 0 if manifest.dim is None else int(manifest.dim)
        self.codebook = codebook

    # ---------------------------------------------------------------- the format

    @classmethod
    def segment_files(cls) -> set[str]:
        """The segment files its codes need (besides seqs.npy and the kept int8/float32 rows)."""
        return {cls.codes_file} if cls.codes_file else {f"{cls.keeps}.npy"}

    @classmethod
    def validate(cls, c: ManifestCheck, m: dict[str, Any], dim: int, total: int) -> None:
        """Check the family's part of a manifest read from disk (codes options, codebook)."""
        if m.get("codes") is not None:
            c.fail(f"codes options apply to binary, 1.5bit and 2bit collections, not {cls.name}")
        if m.get("codebook") is not None:
            c.fail("a codebook without codes options")

    @property
    def base_rank(self) -> float:
        """The rank of its stage 1 as the collection is set up (rescoring stages must rank higher)."""
        return self.rank

    def min_version(self) -> int:
        """The lowest format version that describes the collection as it is now (its codebook fitted)."""
        return 2

    def width(self) -> int:
        """Values per row of the codes file."""
        return self.dim

    # ---------------------------------------------------------------- codes

    @abstractmethod
    def encode(self, emb: np.ndarray, ranges: np.ndarray | None) -> np.ndarray | None:
        """The codes file's rows for ``emb`` (None: the kept rows are the codes)."""

    @abstractmethod
    def load(self, parts: list[np.ndarray]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(words, rows) in RAM from the segments' codes files, in segment order."""

    def append(
        self, words: np.ndarray | None, rows: np.ndarray | None, part: np.ndarray
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(words, rows) after a new segment whose codes file holds ``part``."""
        new_words, new_rows = self.load([part])
        return _concat(words, new_words), _concat(rows, new_rows)

    @abstractmethod
    def compact(self, state: CodecState, keep: np.ndarray) -> np.ndarray | None:
        """The codes file's rows for the kept rows (global row numbers), from RAM."""

    def ram_bytes(self, state: CodecState) -> int:
        """Bytes the stage-1 codes hold in RAM."""
        return sum(int(a.nbytes) for a in (state.words, state.ram_rows) if a is not None)

    # ---------------------------------------------------------------- search

    @abstractmethod
    def plan(
        self, *, rescoring: bool, indexed: bool, exact: bool, nprobe: int | None, preselect: int | None = None
    ) -> Stage1Plan:
        """The stage-1 plan for a search (``indexed``: the collection has an approximate index; ``preselect``
        overrides ``preselect_depth``)."""

    @abstractmethod
    def stage1(
        self, state: CodecState, q: np.ndarray, k: int, exclude: np.ndarray | None, plan: Stage1Plan
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores) of the best ``k`` rows per query, rows ``exclude`` marks left out; ties go
        to the lower row. Scores may be ``NO_SCORES`` when ``plan.scored`` is False."""

    def describe(self) -> dict[str, Any]:
        """The family's settings, for stats and logs."""
        return {"precision": self.name, "codes_file": self.codes_file, "rank": self.rank}


def _concat(old: np.ndarray | None, new: np.ndarray | None) -> np.ndarray | None:
    if new is None:
        return old
    if old is None or old.shape[0] == 0:
        return new
    return np.concatenate([old, new])


class CodebookCodec(Codec):
    """A family whose codes come from a fitted ``CodeBook`` (thresholds, levels, optional centering
    and rotation): sign bits, 1.5bit and 2bit."""

    uses_codebook = True

    @classmethod
    def validate(cls, c: ManifestCheck, m: dict[str, Any], dim: int, total: int) -> None:
        """The code options and the fitted codebook (thresholds, levels, offset, rotation, pairs)."""
        codes = cls.validate_codes(c, m)
        book = m.get("codebook")
        if book is None:
            if cls.needs_codebook() and total:
                c.fail(f"a {cls.name} collection with rows needs a codebook")
            return
        if codes is None:
            c.fail("a codebook without codes options")
        c.mapping(book, "codebook", ("kind", "thresholds", "levels"))
        if book["kind"] != cls.name:
            c.fail(f"codebook kind {book['kind']!r} differs from the precision {cls.name!r}")
        base = cls.validate_layout(c, book, dim)
        c.floats(book["levels"], "codebook.levels", (base, dim))
        if book.get("offset") is not None:
            c.floats(book["offset"], "codebook.offset", (dim,))
        cls.validate_rotation(c, book)

    @classmethod
    def validate_codes(cls, c: ManifestCheck, m: dict[str, Any]) -> dict[str, Any] | None:
        """Check the codes options (centering, rotation, query_bits); returns them."""
        codes = m.get("codes")
        if codes is not None:
            c.mapping(codes, "codes", ("centering", "rotation"))
            c.boolean(codes["centering"], "codes.centering")
            if not isinstance(codes["rotation"], bool):
                c.integer(codes["rotation"], "codes.rotation")
            if "query_bits" in codes:
                qb = c.integer(codes["query_bits"], "codes.query_bits", 1, 8)
                if qb not in cls.query_bits_choices:
                    c.fail(f"codes.query_bits {qb} does not apply to {cls.name} codes")
        return codes

    @staticmethod
    def validate_rotation(c: ManifestCheck, book: dict[str, Any]) -> None:
        """The codebook's rotation record, when it has one: the matrix file beside the manifest."""
        if book.get("rotation") is not None:
            rot = c.file_info(book["rotation"], "codebook.rotation")
            c.mapping(rot, "codebook.rotation", ("file",))
            if rot["file"] != ROTATION:
                c.fail(f"codebook.rotation.file {rot['file']!r} is not {ROTATION!r}")

    @classmethod
    def needs_codebook(cls) -> bool:
        """Whether rows cannot be encoded without a fitted codebook (sign bits can: plain signs)."""
        return True

    @classmethod
    def validate_layout(cls, c: ManifestCheck, book: dict[str, Any], dim: int) -> int:
        """Check the codebook's thresholds (and layout); returns its number of levels."""
        if "pair_thresholds" in book or "pair_scale" in book:
            c.fail("pair thresholds belong to 1.5bit codebooks only")
        base = CODE_KINDS[cls.name][0]
        c.floats(book["thresholds"], "codebook.thresholds", (base - 1, dim))
        return base

    @classmethod
    def book_from_dict(cls, d: dict[str, Any], rotation: np.ndarray | None) -> CodeBook:
        """The fitted codebook from its manifest record (and rotation matrix, read by the store)."""
        return CodeBook.from_dict(d, rotation)

    @classmethod
    def fit(cls, emb: np.ndarray, options: dict[str, Any]) -> CodeBook:
        """Calibrate a codebook on ``emb`` with the collection's codes options."""
        return CodeBook.fit(emb, cls.name, centering=options["centering"], rotation=options["rotation"])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "codes": self.manifest.codes}
