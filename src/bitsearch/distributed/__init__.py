"""ShardedCollection: one collection spread over N ordinary collection directories, each held by a Ray actor.

Layout of a sharded collection directory::

    sharded.json      format, format_version, dim, shard names, the collection options, the shared int8
                      ranges and the sha256 of the shared codebook, the id counter
    shard-000/ ...    each an ordinary bitsearch collection (``Collection.open`` reads it)

Documents go to the shard ``blake2b(canonical id) mod shards`` (stable across processes and versions,
unlike ``hash()``). Every shard encodes identically: all are created with the same ``ranges`` and the
same ``calibration_embeddings`` (the ones given to ``create``, else the first ``add``'s embeddings), so
the int8 ranges and the codebook (levels, thresholds, centering, rotation) agree; ``open`` checks it.

Searches fan out (one call per shard for a whole batch of queries) and merge: dense scores are
comparable across shards, so the global top k is the top k of the shards' top k (ties: shard order,
then the shard's own order). Keyword (BM25) scores are not comparable as they stand, because each
shard's FTS5 index knows only its own document count, document frequencies and average length; a
first round gathers those statistics for the query's phrases, a second scores with their sums, which
is what one collection holding every document computes. Hybrid fuses the merged rankings.

Ray is imported on first use; ``create`` and ``open`` start a local Ray when none is running. The
shard directories must be reachable from the nodes that run the actors (one machine, or a shared
file system).
"""

from __future__ import annotations

from .layout import FORMAT_VERSION, MANIFEST, codebook_digest, shard_of
from .merge import merge_ranked
from .shard import DEFAULT_ACTOR_OPTIONS, Shard
from .sharded import ShardedCollection

__all__ = [
    "DEFAULT_ACTOR_OPTIONS", "FORMAT_VERSION", "MANIFEST", "Shard", "ShardedCollection", "codebook_digest",
    "merge_ranked",
    "shard_of",
]  # fmt: skip
