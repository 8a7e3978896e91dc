"""The metadata filter language (``{"field": value}``, ``$and``/``$or``/``$not``, comparison operators,
dates) translated to SQL over the documents' JSON metadata."""

from __future__ import annotations

import datetime
import re
from typing import Any

from ..errors import InvalidInputError
from .values import INT64_MAX, INT64_MIN, check_unicode

__all__ = ["MAX_FILTER_CONDITIONS", "MAX_FILTER_DEPTH", "field_path", "filter_fields", "filter_sql"]

# A filter's $and/$or nest at most this deep, and hold at most this many conditions (each field
# comparison and each $in/$nin value counts one): SQLite's parser and expression tree have fixed depths.
MAX_FILTER_DEPTH = 16
MAX_FILTER_CONDITIONS = 512


_FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")
_OPS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def filter_fields(flt: dict[str, Any]) -> list[str]:
    """The metadata fields a filter (one ``filter_sql`` accepts) names, each once, in order."""
    fields: list[str] = []
    todo: list[object] = [flt]
    while todo:
        sub = todo.pop(0)
        if not isinstance(sub, dict):
            continue
        for key, cond in sub.items():
            if key in ("$and", "$or"):
                todo.extend(cond if isinstance(cond, list) else [])
            elif key == "$not":
                todo.append(cond)
            elif isinstance(key, str) and key not in fields:
                fields.append(key)
    return fields


def field_path(field: str) -> str:
    """The SQLite JSON path of a (validated) dotted metadata field."""
    return "$." + ".".join(f'"{seg}"' for seg in field.split("."))


def filter_sql(flt: dict[str, Any]) -> tuple[str, list[Any]]:
    """Translate a metadata filter into an SQL condition on ``docs.metadata`` and its parameters.

    ``{"field": value}`` is equality; ``{"field": {"$gt": 1, "$lte": 5}}`` ranges ($eq $ne $gt $gte
    $lt $lte); ``{"field": {"$in": [...]}}`` / ``$nin`` membership; ``{"$and": [...]}`` / ``{"$or": [...]}``
    combine filters and ``{"$not": filter}`` matches the documents the filter does not (those without
    its fields too). Dotted fields reach into nested objects. Several keys are AND-ed.

    Ranges compare like with like: a number matches stored numbers (and booleans, as 1 and 0), a string
    stored strings (by code point); SQLite alone would order every string after every number.
    ``{"$date": "1972-12-11T19:54:58"}`` in place of a value ($eq $ne $gt $gte $lt $lte) compares
    stored ISO 8601 strings as points in time, to the millisecond: offsets are applied, times without
    one are read as UTC, and stored values that are not ISO dates never match (``$ne``: always do).

    Values are str (valid Unicode), int (within SQLite's 64 bits), finite-or-infinite float, bool or
    None. ``$and``/``$or`` nest at most ``MAX_FILTER_DEPTH`` (16) deep and a filter holds at most
    ``MAX_FILTER_CONDITIONS`` (512) conditions, each comparison and each ``$in``/``$nin`` value
    counting one; anything else raises InvalidInputError before SQLite sees it.
    """
    count = [0]
    return _filter_sql(flt, 1, count)


def _filter_sql(flt: object, depth: int, count: list[int]) -> tuple[str, list[Any]]:
    """``filter_sql`` of one (sub)filter at nesting ``depth``; ``count`` tallies conditions so far."""
    if not isinstance(flt, dict) or not flt:
        raise InvalidInputError(f"a filter must be a non-empty dict, got {_short(flt)}")
    if depth > MAX_FILTER_DEPTH:
        raise InvalidInputError(f"filter nests $and/$or deeper than MAX_FILTER_DEPTH={MAX_FILTER_DEPTH} levels")
    parts: list[str] = []
    params: list[Any] = []

    def tally(n: int) -> None:
        count[0] += n
        if count[0] > MAX_FILTER_CONDITIONS:
            raise InvalidInputError(
                f"filter has more than MAX_FILTER_CONDITIONS={MAX_FILTER_CONDITIONS} conditions "
                "(each comparison and each $in/$nin value counts one)"
            )

    for key, cond in flt.items():
        if key == "$not":
            sql, sub_params = _filter_sql(cond, depth + 1, count)
            parts.append(f"NOT COALESCE(({sql}), 0)")  # a comparison with a missing field is NULL: not a match
            params.extend(sub_params)
            continue
        if key in ("$and", "$or"):
            if not isinstance(cond, list) or not cond:
                raise InvalidInputError(f"{key} takes a non-empty list of filters")
            subs = [_filter_sql(c, depth + 1, count) for c in cond]
            joiner = " AND " if key == "$and" else " OR "
            parts.append("(" + joiner.join(f"({sql})" for sql, _ in subs) + ")")
            for _, p in subs:
                params.extend(p)
            continue
        if not isinstance(key, str) or not _FIELD_RE.fullmatch(key):
            raise InvalidInputError(
                f"invalid filter field {_short(key)}: use letters, digits, _ and - (dots for nesting)"
            )
        path = field_path(key)
        col = "json_extract(docs.metadata, ?)"
        ops = cond if isinstance(cond, dict) and set(cond) != {"$date"} else {"$eq": cond}
        if not ops:
            raise InvalidInputError(f"empty condition for filter field {key!r}")
        for op, value in ops.items():
            if op in _OPS and isinstance(value, dict):
                tally(1)
                when = _date_value(key, value)
                # strftime reads a number as a Julian day and a few words ("now") as times: text shaped
                # like a date only
                date = (
                    f"(json_type(docs.metadata, ?) = 'text' AND {col} GLOB '{_DATE_GLOB}' "
                    f"AND strftime('{_DATE_FORMAT}', {col}) {_OPS['$eq' if op == '$ne' else op]} "
                    f"strftime('{_DATE_FORMAT}', ?))"
                )
                parts.append(f"NOT COALESCE({date}, 0)" if op == "$ne" else date)
                params.extend([path, path, path, when])
            elif op in _OPS:
                tally(1)
                _check_filter_value(key, value)
                if value is None:
                    parts.append(f"{col} IS {'NOT ' if op == '$ne' else ''}NULL")
                    params.append(path)
                elif op == "$ne":  # documents without the field also differ
                    parts.append(f"({col} IS NULL OR {col} != ?)")
                    params.extend([path, path, value])
                elif op == "$eq":
                    parts.append(f"{col} = ?")
                    params.extend([path, value])
                else:  # a range: stored values of the value's kind only
                    kinds = "'text'" if isinstance(value, str) else "'integer', 'real', 'true', 'false'"
                    parts.append(f"(json_type(docs.metadata, ?) IN ({kinds}) AND {col} {_OPS[op]} ?)")
                    params.extend([path, path, value])
            elif op in ("$in", "$nin"):
                if not isinstance(value, (list, tuple)) or not value:
                    raise InvalidInputError(f"{op} for filter field {key!r} takes a non-empty list")
                tally(len(value))
                for v in value:
                    _check_filter_value(key, v)
                marks = ",".join("?" * len(value))
                if op == "$in":
                    parts.append(f"{col} IN ({marks})")
                    params.extend([path, *value])
                else:
                    parts.append(f"({col} IS NULL OR {col} NOT IN ({marks}))")
                    params.extend([path, path, *value])
            else:
                raise InvalidInputError(
                    f"unknown filter operator {_short(op)} for field {key!r}; use $eq $ne $gt $gte $lt $lte $in $nin"
                )
    return " AND ".join(parts), params


_DATE_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%f"


def _date_value(key: str, value: dict[str, Any]) -> str:
    """The ISO 8601 text of a ``{"$date": ...}`` filter value, in UTC when it names an offset."""
    if set(value) != {"$date"} or not isinstance(value["$date"], str):
        raise InvalidInputError(
            f'filter values for {key!r} are scalars or {{"$date": "ISO 8601 string"}}, got {_short(value)}'
        )
    text = value["$date"]
    try:
        when = datetime.datetime.fromisoformat(text) if re.match(r"\d{4}-\d\d-\d\d", text) else None
    except ValueError:
        when = None
    if when is None:
        raise InvalidInputError(f"filter value for {key!r} is not an ISO 8601 date (YYYY-MM-DD...): {_short(text)}")
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return when.isoformat(sep="T", timespec="microseconds")


def _short(value: object, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: error messages about huge filters stay readable."""
    try:
        text = repr(value)
    except RecursionError:  # a self-containing list or dict
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_filter_value(key: str, value: object) -> None:
    if value is not None and not isinstance(value, (str, int, float, bool)):
        raise InvalidInputError(f"filter value for {key!r} must be a str, number, bool or null, got {_short(value)}")
    if isinstance(value, float) and value != value:
        raise InvalidInputError(f"filter value for {key!r} is NaN")
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        raise InvalidInputError(
            f"filter value {value} for {key!r} does not fit SQLite's 64-bit integers (-2**63 to 2**63 - 1)"
        )
    if isinstance(value, str):
        check_unicode(value, f"filter value for {key!r}")
