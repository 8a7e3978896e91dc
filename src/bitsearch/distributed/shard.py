"""The shard actor (``Shard``, one ordinary collection held by a Ray actor) and Ray itself, imported on
first use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..collection import Collection
from ..errors import (
    BitsearchError,
)
from ..storage.paths import DOCS
from ..store import DocId, DocStore, filter_sql
from .layout import codebook_digest

# shards spread over the cluster's nodes; an actor reserves no CPU (it serves calls, numba threads do the work)
DEFAULT_ACTOR_OPTIONS: dict[str, Any] = {
    "max_restarts": 3,
    "max_task_retries": 3,
    "num_cpus": 0,
    "scheduling_strategy": "SPREAD",
}


# ----------------------------------------------------------------------------- the actor body


class Shard:
    """One shard: an ordinary collection directory opened in a Ray actor (``ray.remote(Shard)``).

    Writes are idempotent by id so that Ray may retry them after an actor restart: ``add`` skips ids
    already stored, ``delete`` ids already gone.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.col = Collection.open(self.path)
        self.docs = DocStore(self.path / DOCS)

    def info(self) -> dict[str, Any]:
        """The shard's shared encoding parameters, for ``ShardedCollection.open`` to compare."""
        m = self.col.manifest
        return {"dim": m["dim"], "precision": m["precision"], "ranges": m["ranges"], "codebook": codebook_digest(m)}

    def existing_ids(self, ids: list[DocId]) -> list[DocId]:
        self.col.refresh()
        return self.col.existing_ids(ids)

    def add(
        self,
        embeddings: np.ndarray,
        ids: list[DocId],
        texts: list[str | None] | None,
        metadata: list[dict[str, Any] | None] | None,
    ) -> list[DocId]:
        """Add the documents whose ids are not stored yet; returns the ids it stored."""
        present = set(self.col.existing_ids(ids))
        keep = [i for i, d in enumerate(ids) if d not in present]
        if keep:
            self.col.add(
                embeddings[keep],
                ids=[ids[i] for i in keep],
                texts=None if texts is None else [texts[i] for i in keep],
                metadata=None if metadata is None else [metadata[i] for i in keep],
            )
        return [ids[i] for i in keep]

    def upsert(
        self,
        embeddings: np.ndarray,
        ids: list[DocId],
        texts: list[str | None] | None,
        metadata: list[dict[str, Any] | None] | None,
    ) -> list[DocId]:
        """Store the documents, replacing stored versions (idempotent: a retry stores the same); returns the ids."""
        return self.col.upsert(embeddings, ids=ids, texts=texts, metadata=metadata)

    def delete(self, ids: list[DocId]) -> list[DocId]:
        """Delete the ids still stored; returns them."""
        present = self.col.existing_ids(ids)
        if present:
            self.col.delete(present)
        return present

    def search(
        self, queries: np.ndarray, options: dict[str, Any]
    ) -> tuple[list[list[tuple[Any, ...]]], dict, list[str]]:
        """Dense search: per query, up to k (id, score, text, metadata), the stage timings and the warnings."""
        self.col.refresh()  # another handle's actors may have written to this directory
        res = self.col.search(queries, mode="dense", **options)
        hits = [[(h.id, h.score, h.text, h.metadata) for h in hits] for hits in res]
        return hits, dict(res.timings), list(res.warnings)

    def keyword_statistics(self, texts: list[str]) -> list[dict[str, Any]]:
        """Per query string, its phrases' document frequencies and this shard's document and token counts."""
        self.col.refresh()
        return [self.docs.keyword_statistics(t) for t in texts]

    def keyword_search(
        self, texts: list[str], k: int, statistics: list[dict[str, Any]], flt: dict[str, Any] | None, with_text: bool
    ) -> list[list[tuple[Any, ...]]]:
        """BM25 with the given (global) statistics: per query, up to k (id, score, text, metadata)."""
        where = filter_sql(flt) if flt is not None else None
        max_seq = int(self.col.manifest["next_seq"])
        out = []
        for text, stats in zip(texts, statistics, strict=True):
            limit = k
            while True:
                ranked = self.docs.keyword_search_global(text, limit, stats, where, max_seq)
                docs = self.docs.fetch([s for s, _ in ranked], with_text)
                found = [(docs[s], score) for s, score in ranked if s in docs]
                live = set(self.col.existing_ids([d[0] for d, _ in found]))  # tombstoned, not yet purged
                hits = [(d[0], score, d[1], d[2]) for d, score in found if d[0] in live]
                if len(hits) >= k or len(ranked) < limit:
                    out.append(hits[:k])
                    break
                limit *= 2
        return out

    def size(self) -> int:
        self.col.refresh()
        return len(self.col)

    def stats(self) -> dict[str, Any]:
        self.col.refresh()
        return self.col.stats()

    def compact(self) -> None:
        self.col.compact()

    def build_index(self, nlist: int | None, nprobe: int, seed: int) -> bool:
        """Build the shard's approximate index; False (nothing built) when the shard is empty."""
        if len(self.col) == 0:
            return False
        self.col.build_index(nlist=nlist, nprobe=nprobe, seed=seed)
        return True


# ----------------------------------------------------------------------------- the driver side


def ray_module() -> Any:
    try:
        import ray
    except ImportError:  # pragma: no cover - depends on the installation
        raise BitsearchError("sharded collections need Ray: pip install 'bitsearch[ray]'") from None
    return ray


def ensure_ray(num_cpus: int | None) -> Any:
    """Ray, initialized: a local instance when none is running."""
    ray = ray_module()
    if not ray.is_initialized():
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    return ray
