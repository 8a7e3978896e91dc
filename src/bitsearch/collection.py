"""``Collection``: the public face of a bitsearch collection, a ``Store`` (the folder: manifest,
segments, snapshots, document store, writes) and a ``Searcher`` (planning and stages) composed.

Create with ``Collection.create(path, dim, precision="binary")`` or open with ``Collection.open(path)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInputError
from .options import CodesConfig, SearchOptions
from .results import SearchResults
from .search import Searcher
from .storage import writes
from .storage.create import create_store
from .storage.inputs import as_list
from .storage.state import State
from .storage.store import Document, Store
from .store import DocId, normalize_id

__all__ = ["Collection", "Document"]


class Collection:
    """A bitsearch collection: quantized codes on disk and in RAM, searched in stages.

    Create with ``Collection.create(path, dim, precision="binary")`` or open with
    ``Collection.open(path)``; see ``add``, ``upsert``, ``delete``, ``compact``, ``search``, ``get``,
    ``ids`` and ``stats``.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._searcher = Searcher(store)

    # -------------------------------------------------------------- create / open

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        dim: int | None = None,
        *,
        precision: str = "binary",
        keep_int8: bool = True,
        keep_float32: bool = False,
        ranges: np.ndarray | None = None,
        calibration_embeddings: np.ndarray | None = None,
        model: dict[str, Any] | None = None,
        truncate_dim: int | None = None,
        keyword_index: bool = True,
        stage1: str = "auto",
        centering: bool = False,
        rotation: bool | int | None = None,
        query_bits: int | None = None,
        exist_ok: bool = False,
    ) -> Collection:
        """Create an empty collection directory at ``path`` and open it.

        ``precision`` is the stage-1 code kept in RAM: "binary" (1 bit per dimension), "1.5bit" (a
        median bit per dimension and a "large" bit per pair), "2bit", "rabitq" (1 bit per dimension of
        the centred, rotated vector plus 8 bytes of RaBitQ factors per vector, scored by RaBitQ's
        unbiased estimator; see ``bitsearch.codecs.rabitq``), "int8" or "float32";
        ``keep_int8`` / ``keep_float32`` keep those rows on disk for rescoring.
        For binary, ``stage1`` picks Hamming distance or "asymmetric" scoring (the float query against
        the bits' bucket means: better ranking, more work); "auto" uses asymmetric scoring when no
        rescoring stage follows and Hamming when one does. ``centering`` (subtract the corpus mean) and
        ``rotation`` (a seeded random orthogonal rotation; an int is the seed) apply before the codes of
        binary, 1.5bit, 2bit and rabitq collections; both are measured options (benchmarks/bench_defaults.py):
        centering is off (rabitq always centres), rotation (None) is on for 1.5bit and 2bit, chosen by the
        worst (model, dataset) pair over the shared datasets and two models (docs/results.md).
        ``query_bits`` (1 to 8 for binary; 4 for rabitq) makes asymmetric scoring round the query to that many bits
        and score by popcounts per query bit plane, as Qdrant and BBQ do, instead of the float query
        (the default: better ranking, and no slower after the Hamming pre-selection).
        int8 ranges come from ``ranges``,
        ``calibration_embeddings``, or else the first ``add``. With ``exist_ok`` an existing collection
        is opened instead (its settings must match).

        ``dim=None`` leaves the dimension to the first write of vectors (or to ``ranges``,
        ``calibration_embeddings`` or ``truncate_dim`` when given): it is then recorded in the manifest,
        and later writes of another dimension raise DimensionMismatchError. int8 ranges and codebooks
        not given are calibrated on that first write; later values outside the ranges are clipped,
        counted (``stats()["int8_clipped_fraction"]``, a warning above 1% of a write), and with
        ``keep_float32`` a ``compact()`` after more than 1% of them were clipped recalibrates the ranges
        (unless given here as ``ranges``) and re-encodes the int8 rows. ``keyword_index`` keeps a BM25
        (SQLite FTS5) index of the texts for keyword and hybrid search.
        """
        config = CodesConfig(
            precision=precision, keep_int8=keep_int8, keep_float32=keep_float32, stage1=stage1,
            centering=centering, rotation=rotation, query_bits=query_bits,
        )  # fmt: skip
        store = create_store(
            Path(path), dim, config, ranges=ranges, calibration_embeddings=calibration_embeddings, model=model,
            truncate_dim=truncate_dim, keyword_index=keyword_index, exist_ok=exist_ok,
        )  # fmt: skip
        return cls(store)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, verify: bool = False) -> Collection:
        """Open the collection at ``path``: binary codes into RAM, int8 and float32 rows left on disk.

        File sizes are always checked against the manifest; ``verify=True`` also checks every file's
        sha256 (reads everything once). The manifest is validated (``validate_manifest``) and its
        counts checked against the document store. A collection whose folder or document store this
        process cannot write is opened read-only: searches work, writes raise CollectionError.
        """
        return cls(Store.open(path, verify=verify))

    def refresh(self) -> None:
        """Reload the manifest if another process has written to the collection since it was opened."""
        self._store.refresh()

    def verify(self) -> None:
        """Check every file of the collection against its sha256 in the manifest."""
        self._store.verify()

    def close(self) -> None:
        """Release the document store connection (the memory maps go with the object)."""
        self._store.close()

    # -------------------------------------------------------------- properties

    @property
    def path(self) -> Path:
        return self._store.path

    @property
    def read_only(self) -> bool:
        """Whether this process can only read the collection (writes raise ReadOnlyCollectionError)."""
        return self._store.read_only

    @property
    def _state(self) -> State:
        """The current snapshot (for tests and tools that inspect it)."""
        return self._store.state

    @property
    def _docs(self) -> Any:
        return self._store.docs

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the manifest (model, dim, precision, ranges, segments, ...) as a dict."""
        return self._store.state.manifest.copy_dict()

    @property
    def dim(self) -> int | None:
        """The vectors' dimension; None until the first write of vectors to a collection created without one."""
        return self._store.state.manifest.dim

    @property
    def precision(self) -> str:
        return self._store.state.manifest.precision

    @property
    def ranges(self) -> np.ndarray | None:
        """The int8 ranges (2, dim), parsed once per state."""
        return self._store.state.ranges

    def __len__(self) -> int:
        return self._store.state.live

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({str(self.path)!r}, documents={len(self)}, dim={self.dim}, precision={self.precision!r})"

    def __contains__(self, doc_id: object) -> bool:
        return bool(self.existing_ids([doc_id]))

    def existing_ids(self, ids: Sequence[object]) -> list[DocId]:
        """The subset of ``ids`` that are live documents of this collection (for resumable indexing)."""
        return self._store.existing_ids(ids)

    def ids(self, filter: dict[str, Any] | None = None) -> list[DocId]:
        """The ids of the live documents in the order they were stored (an overwritten one counts as
        stored anew); with ``filter`` (see ``bitsearch.store.filter_sql``) those whose metadata match.
        For frameworks' filter-only listing, deletion and counting; ``get`` fetches the documents."""
        return self._store.ids(filter)

    def get(self, ids: Sequence[object], *, with_vectors: bool = False) -> list[Document | None]:
        """The stored documents for ``ids``, in order: id, text, metadata and, with ``with_vectors``, the
        float32 vector (needs ``keep_float32=True``: int8 rows would only approximate it). An id that is
        not a live document gives None in its place (frameworks' get-by-ids skips those)."""
        norm = [normalize_id(i) for i in as_list(ids, "ids", "one id per document")]
        if with_vectors and not self._store.state.manifest.keep_float32:
            raise InvalidInputError(
                "this collection keeps no float32 rows to return vectors from: create it with keep_float32=True"
            )
        return self._store.get(norm, with_vectors)

    # -------------------------------------------------------------- writes

    def add(
        self,
        embeddings: np.ndarray | Sequence[Any] | None,
        ids: Sequence[object] | None = None,
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[DocId]:
        """Add documents; returns their ids. Atomic: all are added or (on any error) none.

        ``ids`` are unique str or int (default: consecutive ints from the collection's row counter);
        a duplicate, in the call or already stored, is a DuplicateIdError (``upsert`` replaces stored
        documents instead). ``texts`` and ``metadata`` (JSON objects) are stored with the vectors and
        returned by search.

        Documents without vectors: ``embeddings=None`` stores every document of the call without one
        (their number comes from ``ids``, else ``texts``, else ``metadata``), and a list whose entries
        are vectors or None stores the None ones without. Such documents are counted, filtered, found
        by keyword search, returned by ``get`` (vector None) and deleted like the others, and never
        returned by dense search (nor by hybrid search's dense ranking).

        Limits (InvalidInputError, checked before anything is written): int ids fit SQLite's signed
        64 bits; ids, texts and metadata keys and strings are valid Unicode (no lone surrogates);
        metadata nests at most ``bitsearch.store.MAX_METADATA_DEPTH`` (64) levels, has str keys and
        finite floats.
        """
        return writes.write_documents(self._store, embeddings, ids, texts, metadata, replace=False)

    def upsert(
        self,
        embeddings: np.ndarray | Sequence[Any] | None,
        ids: Sequence[object],
        texts: Sequence[str | None] | None = None,
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> list[DocId]:
        """Store documents, replacing those whose id is already stored; returns the ids.

        One commit: the replaced documents' old rows are tombstoned and the new rows appended by the
        same manifest write, so a reader (or a crash at any point) sees every document's old version or
        every document's new version, never both or neither. ``ids`` are required and unique within
        the call (DuplicateIdError); the other arguments and limits are ``add``'s.
        """
        if ids is None:
            raise InvalidInputError("upsert needs the documents' ids")
        return writes.write_documents(self._store, embeddings, ids, texts, metadata, replace=True)

    def delete(self, ids: Sequence[object]) -> int:
        """Delete documents by id (tombstones until ``compact``); returns how many were deleted.

        ``ids``: one id, or a list/tuple/1-d array of them. An unknown or already deleted id is an
        error and nothing is deleted.
        """
        return writes.delete(self._store, ids)

    def compact(self) -> None:
        """Rewrite all segments into one without deleted rows, and drop the tombstones."""
        writes.compact(self._store)

    def build_index(self, nlist: int | None = None, nprobe: int = 32, seed: int = 0) -> None:
        """Build an approximate stage 1 (an IVF over the binary codes) for very large collections.

        ``nlist`` lists (default ~4 x sqrt(rows)); searches scan the ``nprobe`` nearest lists (see
        ``search(nprobe=...)``). Rows added later are scanned exactly until the next build;
        ``compact`` rebuilds it. ``drop_index`` goes back to exact search.
        """
        writes.build_index(self._store, nlist, nprobe, seed)

    def drop_index(self) -> None:
        """Remove the approximate index: stage 1 is an exact scan again."""
        writes.drop_index(self._store)

    def stats(self) -> dict[str, Any]:
        """Counts and the bytes each stage holds in RAM and on disk, with compression against float32."""
        return self._store.stats()

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

        Codes whose estimator is slower than Hamming (1.5bit, 2bit, and binary's asymmetric stage 1 when
        nothing rescores) score only the Hamming top ``preselect x k`` rows; ``None`` takes the family's
        depth (binary 16, 1.5bit, 2bit and rabitq 32: the shallowest that cost at most 0.1 point of NDCG@10
        against every row on the worst (model, dataset) pair, docs/results.md); ``exact=True`` scores every row.

        ``k``, ``rescore_multiplier``, ``nprobe`` and ``preselect`` are ints from 1 to ``MAX_SEARCH_INT``
        (2**31 - 1); ``rrf_k`` a finite number >= 0; ``weights`` two finite numbers >= 0; ``exact`` and ``with_text``
        bools. Bad arguments raise InvalidInputError before any work.

        Query vectors with NaN or inf raise ``InvalidInputError``; one whose largest |component| is
        outside 2**-60..2**60 is divided by it first (same ranking; scores are the rescaled query's).
        """
        opts = SearchOptions.from_args(
            k=k, rescore_multiplier=rescore_multiplier, rescore=rescore, mode=mode, filter=filter, rrf_k=rrf_k,
            weights=weights, nprobe=nprobe, exact=exact, with_text=with_text, preselect=preselect,
        )  # fmt: skip
        return self._searcher.search(queries, query_texts, opts)

    @property
    def encoder(self) -> Any:
        """The query encoder of the model recorded in the manifest, loaded on first use."""
        return self._searcher.encoder

    @encoder.setter
    def encoder(self, encoder: Any) -> None:
        self._searcher.set_encoder(encoder)
