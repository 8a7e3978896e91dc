"""How the server answers what goes wrong: one table from exception class to HTTP status and JSON body,
used by FastAPI's exception handlers and by the /search fast path alike, and the JSON bodies themselves.

Every error body is ``{"detail": "..."}`` plus, for some, more fields (``errors``, ``shards``, ...).
An exception whose class is not in the table (by its MRO, as Starlette looks handlers up) is
unexpected: GuardMiddleware answers it with a JSON 500 and logs the traceback.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, MutableMapping
from typing import Any, NamedTuple

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from bitsearch.errors import (
    BitsearchError,
    CollectionError,
    DiskFullError,
    DuplicateIdError,
    InvalidInputError,
    ModelLoadError,
    NoModelError,
    PartialWriteError,
    ReadOnlyCollectionError,
    ShardUnavailableError,
    UnknownIdError,
)
from bitsearch.results import Hit

from .schemas import UNION_TAG

__all__ = [
    "CLIENT_CLOSED",
    "ERROR_TABLE",
    "HTTPError",
    "SafeJSONResponse",
    "error_messages",
    "error_response",
    "error_reply",
    "on_error",
    "render_json",
]

log = logging.getLogger("bitsearch.server")

CLIENT_CLOSED = 499  # nginx's status for a client that left before its answer (nobody reads it)


class HTTPError(NamedTuple):
    """The answer to one exception: status, ``detail``, any more body fields, and a log heading (None: not
    logged; the client's own mistakes are not the operator's business)."""

    status: int
    detail: str
    fields: dict[str, Any] | None = None
    log: str | None = None


def _store_error(exc: sqlite3.OperationalError) -> HTTPError:
    if any(w in str(exc) for w in ("readonly", "read-only", "locked", "disk", "unable to open")):
        return HTTPError(503, f"the collection's document store is not writable here: {exc}", log="document store")
    return HTTPError(500, f"document store error: {exc}", log="document store")


def _validation_error(exc: RequestValidationError) -> HTTPError:
    """pydantic's errors as one readable ``detail`` (the first problem) and ``errors`` (each, by location)."""
    errors = list(exc.errors())
    for err in errors:
        if err.get("type") == "json_invalid":
            cause = (err.get("ctx") or {}).get("error", "")
            return HTTPError(400, f"request body is not valid JSON: {cause}".rstrip(": "))
    for err in errors:
        if tuple(err.get("loc", ())) == ("body",):  # the body as a whole: missing, or not an object
            if err.get("type") == "missing":
                return HTTPError(422, "request body is empty: send a JSON object")
            if err.get("type") in ("model_attributes_type", "model_type", "dict_type"):
                return HTTPError(422, "the body must be a JSON object")
    grouped: dict[tuple[str, ...], list[str]] = {}
    for err in errors:
        loc = tuple(str(p) for p in err.get("loc", ()) if p != "body" and not UNION_TAG.match(str(p)))
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if msg not in grouped.setdefault(loc, []):
            grouped[loc].append(msg)
    cleaned = [{"loc": list(loc), "msg": " or ".join(msgs)} for loc, msgs in grouped.items()]
    first = cleaned[0] if cleaned else {"loc": [], "msg": "invalid request"}
    where = ".".join(first["loc"])
    detail = f"{where}: {first['msg']}" if where else first["msg"]
    if len(cleaned) > 1:
        detail += f" (and {len(cleaned) - 1} more problem{'s' if len(cleaned) > 2 else ''})"
    return HTTPError(422, detail, {"errors": cleaned[:20]})


# the answer to each expected exception, by the first class of its MRO listed
ERROR_TABLE: dict[type[BaseException], Callable[[Any], HTTPError]] = {
    RequestValidationError: _validation_error,
    ShardUnavailableError: lambda e: HTTPError(503, str(e), {"shards": e.shards}, log="shard unavailable"),
    PartialWriteError: lambda e: HTTPError(
        503, str(e), {"shards": e.shards, "stored_ids": e.stored_ids, "failed_ids": e.failed_ids}, log="partial write"
    ),
    NoModelError: lambda e: HTTPError(400, str(e)),
    DuplicateIdError: lambda e: HTTPError(409, str(e)),
    UnknownIdError: lambda e: HTTPError(404, str(e)),
    InvalidInputError: lambda e: HTTPError(422, str(e)),
    ModelLoadError: lambda e: HTTPError(503, f"cannot embed text: {e}"),
    ReadOnlyCollectionError: lambda e: HTTPError(503, str(e)),
    DiskFullError: lambda e: HTTPError(503, str(e)),
    CollectionError: lambda e: HTTPError(500, f"collection error: {e}", log="collection error"),
    BitsearchError: lambda e: HTTPError(400, str(e)),
    ValueError: lambda e: HTTPError(422, str(e) or "invalid value"),
    RecursionError: lambda e: HTTPError(422, "the request is nested too deeply"),
    # the collection's files cannot be read or written here (read-only file system, permissions, disk full)
    OSError: lambda e: HTTPError(
        503, f"the collection's files are not accessible: {e.strerror or e}", log="collection files"
    ),
    sqlite3.OperationalError: _store_error,
}


def http_error(exc: BaseException) -> HTTPError | None:
    """The table's answer to ``exc`` (logged when the rule says so); None for an unexpected exception."""
    for cls in type(exc).__mro__:
        rule = ERROR_TABLE.get(cls)
        if rule is not None:
            answer = rule(exc)
            if answer.log is not None:
                log.error("%s: %s", answer.log, exc)
            return answer
    return None


def error_response(exc: BaseException) -> JSONResponse | None:
    """The JSON error answered for ``exc``; None for an unexpected one (GuardMiddleware's 500)."""
    answer = http_error(exc)
    if answer is None:
        return None
    return error_reply(answer.status, answer.detail, **(answer.fields or {}))


async def on_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's handler for every class in ERROR_TABLE."""
    response = error_response(exc)
    assert response is not None  # registered for ERROR_TABLE's classes only
    return response


# ----------------------------------------------------------------------------- JSON bodies


class SafeJSONResponse(JSONResponse):
    """JSON as UTF-8, with a lone surrogate (from data stored before the checks, or echoed) sent as its JSON escape.

    ``json.dumps`` has already escaped every backslash, so the only ones ``backslashreplace`` adds spell
    ``\\udXXX`` escapes inside string literals: the body stays valid JSON instead of failing with a 500.
    """

    def render(self, content: Any) -> bytes:
        return self.dump(content)

    @staticmethod
    def dump(content: Any) -> bytes:
        """``content`` (Hits as dicts) as JSON bytes, lone surrogates escaped."""
        text = json.dumps(
            content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"), default=_hit_dict
        )
        return text.encode("utf-8", "backslashreplace")


def _hit_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, Hit):
        return value.to_dict()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def render_json(content: Any) -> bytes:
    """JSON bytes by orjson; what it refuses (a lone surrogate stored before the checks, integers over 64 bits)
    by SafeJSONResponse's rendering, which escapes surrogates."""
    try:
        return orjson.dumps(content)
    except TypeError:  # orjson.JSONEncodeError
        return SafeJSONResponse.dump(content)


def error_reply(status: int, detail: str, **fields: Any) -> JSONResponse:
    """An error response: ``{"detail": detail, **fields}``."""
    return SafeJSONResponse({"detail": detail, **fields}, status_code=status)


def error_messages(
    status: int, detail: str, headers: dict[str, str] | None = None
) -> tuple[MutableMapping[str, Any], MutableMapping[str, Any]]:
    """The same error body as the two ASGI messages that send it, for middleware that answers by itself."""
    body = SafeJSONResponse.dump({"detail": detail})
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return (
        {"type": "http.response.start", "status": status, "headers": raw},
        {"type": "http.response.body", "body": body},
    )
