"""The document store: a SQLite file mapping each row sequence number to the user's id, text and metadata.

It also holds the keyword index (SQLite FTS5, Porter stemming, BM25 ranking), kept in step with the
documents by triggers inside the same transactions, and translates metadata filters to SQL.

The collection's manifest is the source of truth: rows here whose sequence number the manifest has not
committed (an interrupted ``add``) or has tombstoned are garbage, removed by ``purge_*`` before writes.

- ``values``: ids, text and metadata checks;
- ``filters``: the metadata filter language, as SQL;
- ``keywords``: keyword queries and FTS5's statistics;
- ``docstore``: ``DocStore``, the SQLite file.
"""

from __future__ import annotations

from .docstore import DocStore
from .filters import MAX_FILTER_CONDITIONS, MAX_FILTER_DEPTH, field_path, filter_fields, filter_sql
from .keywords import keyword_query
from .values import INT64_MAX, INT64_MIN, MAX_METADATA_DEPTH, DocId, check_metadata, check_unicode, normalize_id

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "MAX_FILTER_CONDITIONS",
    "MAX_FILTER_DEPTH",
    "MAX_METADATA_DEPTH",
    "DocId",
    "DocStore",
    "check_metadata",
    "check_unicode",
    "field_path",
    "filter_fields",
    "filter_sql",
    "keyword_query",
    "normalize_id",
]
