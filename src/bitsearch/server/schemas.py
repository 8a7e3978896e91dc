"""The server's request and response bodies (pydantic models) and the checks every request body gets
before any work: limits, valid Unicode, JSON depth, finite vectors of the collection's dim.

``plain_search_request`` is the fast path's parser: it accepts only a /search body whose fields already
have their canonical JSON types, and leaves every other body to pydantic (and its error messages).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator, model_validator

from bitsearch.errors import InvalidInputError

__all__ = [
    "MAX_K",
    "MAX_QUERIES",
    "OPENAPI_ERRORS",
    "RESCORE_NAMES",
    "AddRequest",
    "AddResponse",
    "DeleteResponse",
    "DocumentIn",
    "ErrorResponse",
    "HitOut",
    "SearchRequest",
    "SearchResponse",
    "as_vectors",
    "check_json",
    "check_text",
    "plain_search_request",
]

MAX_K = 1000
MAX_QUERIES = 256  # queries per /search request
MAX_RESCORE_MULTIPLIER = 100
MAX_JSON_DEPTH = 32  # nesting of a filter or of a document's metadata
MAX_FILTER_VALUES = 10_000  # values in one filter (SQLite binds each as a parameter)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what SQLite compares as an integer

DocIdIn = StrictStr | StrictInt
RESCORE_NAMES = ("int8", "binary", "float32", "none")
# pydantic names the member of a union that failed in an error's location; these are not field names
UNION_TAG = re.compile(r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\]|literal\[.*\]|function-.*)$")


# ----------------------------------------------------------------------------- request / response models


class SearchRequest(BaseModel):
    """One query or a batch: text (embedded with the collection's model) or vectors of the collection's dim."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"query": "how do I parse JSON?", "k": 10},
                {"query": ["first question", "second question"], "k": 5, "rescore": "int8", "rescore_multiplier": 4},
                {"vector": [0.12, -0.03, 0.08], "k": 10, "rescore": "none"},
            ]
        },
    )

    query: str | list[str] | None = Field(None, description="Query text, or a list of them (a batch).")
    vector: list[float] | list[list[float]] | None = Field(
        None, description="A query embedding, or a list of them (a batch). Give `query` or `vector`, not both."
    )
    k: int = Field(10, ge=1, le=MAX_K, description="Results per query.")
    rescore: str | list[str] | None = Field(
        "int8", description='Rows that rescore stage-1 candidates: "int8", "binary", "float32", "none" or a chain.'
    )
    rescore_multiplier: int = Field(4, ge=1, le=MAX_RESCORE_MULTIPLIER, description="Stage 1 keeps k x this many.")
    mode: str | None = Field(None, description='"dense", "keyword" or "hybrid" where the collection supports it.')
    filter: dict[str, Any] | None = Field(None, description="Metadata filter, where the collection supports it.")
    with_text: bool = Field(True, description="Return each hit's text and metadata.")
    allow_partial: bool = Field(
        False,
        description="Sharded collections: answer from the shards that answer (`partial` says so) instead of 503.",
    )

    @field_validator("rescore")
    @classmethod
    def _known_rescore(cls, value: str | list[str] | None) -> str | list[str] | None:
        for name in [value] if isinstance(value, str) else value or []:
            if name not in RESCORE_NAMES:
                raise ValueError(f"unknown rescore {name!r}: expected one of {', '.join(RESCORE_NAMES)}, or a list")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> SearchRequest:
        if (self.query is None) == (self.vector is None):
            raise ValueError("give exactly one of `query` (text) or `vector` (an embedding)")
        return self


class DocumentIn(BaseModel):
    """One document of the list form of ``POST /documents``."""

    model_config = ConfigDict(extra="forbid")

    id: DocIdIn | None = Field(None, description="Unique str or int id; default: the next integer.")
    text: str | None = Field(None, description="The text (stored, and embedded when there is no vector).")
    vector: list[float] | None = Field(None, description="The embedding, of the collection's dim.")
    metadata: dict[str, Any] | None = Field(None, description="A JSON object.")


class AddRequest(BaseModel):
    """Documents to add: vectors and/or texts (texts alone are embedded with the collection's model), as
    parallel lists, or as a list of ``documents`` ({id, text, vector, metadata} each)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "texts": ["A first document.", "A second one."],
                    "ids": ["doc-1", "doc-2"],
                    "metadata": [{"lang": "en"}, None],
                },
                {"documents": [{"id": "doc-1", "text": "A first document.", "metadata": {"lang": "en"}}]},
            ]
        },
    )

    ids: list[DocIdIn] | None = Field(None, description="Unique str or int ids; default: the next integers.")
    texts: list[str] | None = Field(None, description="Document texts (stored, and embedded when no vectors).")
    vectors: list[list[float]] | None = Field(None, description="Document embeddings of the collection's dim.")
    metadata: list[dict[str, Any] | None] | None = Field(None, description="One JSON object (or null) per document.")
    documents: list[DocumentIn] | None = Field(
        None, description="The same as a list of {id, text, vector, metadata} objects, instead of the lists above."
    )

    @model_validator(mode="after")
    def _has_documents(self) -> AddRequest:
        if self.documents is not None:
            if any(v is not None for v in (self.ids, self.texts, self.vectors, self.metadata)):
                raise ValueError("give `documents`, or the lists `ids`/`texts`/`vectors`/`metadata`, not both")
            docs = self.documents
            for name in ("id", "text", "vector"):
                given = [getattr(d, name) is not None for d in docs]
                if any(given) and not all(given):
                    missing = given.index(False)
                    raise ValueError(f"documents[{missing}] has no `{name}` while others have one: all or none")
            self.ids = [d.id for d in docs] if docs and docs[0].id is not None else None  # type: ignore[misc]
            self.texts = [d.text for d in docs] if docs and docs[0].text is not None else None  # type: ignore[misc]
            self.vectors = [d.vector for d in docs] if docs and docs[0].vector is not None else None  # type: ignore[misc]
            self.metadata = [d.metadata for d in docs] if any(d.metadata is not None for d in docs) else None
            if not docs:
                self.vectors = []
        if self.texts is None and self.vectors is None:
            raise ValueError("give `texts` and/or `vectors` (or `documents`)")
        return self


class HitOut(BaseModel):
    """One hit."""

    id: str | int
    score: float
    text: str | None = None
    metadata: dict[str, Any] | None = None


class SearchResponse(BaseModel):
    """Hits per query (a list even for one query), the stages run, and seconds per stage."""

    results: list[list[HitOut]]
    stages: list[str]
    timings: dict[str, float]
    k: int
    warnings: list[str] = Field(default_factory=list, description="What may explain a short answer.")
    partial: bool = Field(False, description="Sharded collections: some shard did not answer (allow_partial).")
    shards_answered: list[str] | None = Field(None, description="Sharded collections: the shards that answered.")


class AddResponse(BaseModel):
    """The ids added and the collection's size afterwards."""

    ids: list[str | int]
    added: int
    documents: int


class DeleteResponse(BaseModel):
    """The id deleted and the collection's size afterwards."""

    deleted: str | int
    documents: int


class ErrorResponse(BaseModel):
    """Every error: a readable ``detail`` (validation errors also list ``errors``)."""

    detail: str
    errors: list[dict[str, Any]] | None = None


OPENAPI_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 408, 409, 413, 415, 421, 422, 503)
}


# ----------------------------------------------------------------------------- checks of free-form values


def check_text(value: str, where: str) -> None:
    """Reject a string with a lone surrogate (JSON ``"\\udfff"``): it has no UTF-8 form to store or send back."""
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(value[exc.start])
        raise InvalidInputError(
            f"`{where}` has a lone surrogate (\\u{code:04x}) at character {exc.start}: send valid Unicode text"
        ) from None


def check_json(value: Any, where: str, *, filter_values: bool = False) -> None:
    """Check free-form JSON (metadata, a filter): valid Unicode, at most MAX_JSON_DEPTH levels deep;
    in a filter also at most MAX_FILTER_VALUES values and integers SQLite can bind (64-bit)."""
    count = 0
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:  # iterative: the nesting is what is being checked
        item, at, depth = stack.pop()
        if isinstance(item, str):
            check_text(item, at)
        elif isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise InvalidInputError(f"`{where}` is nested more than {MAX_JSON_DEPTH} levels deep (at `{at}`)")
            if isinstance(item, dict):
                for key, sub in item.items():
                    check_text(key, f"{at} key {key!r}")
                    stack.append((sub, f"{at}.{key}", depth + 1))
            else:
                stack.extend((sub, f"{at}[{i}]", depth + 1) for i, sub in enumerate(item))
        elif filter_values and isinstance(item, int) and not INT64_MIN <= item <= INT64_MAX:
            raise InvalidInputError(f"`{at}` is {item}: filters compare integers of at most 64 bits")
        count += 1
        if filter_values and count > MAX_FILTER_VALUES:
            raise InvalidInputError(f"`{where}` has more than {MAX_FILTER_VALUES} values")


def as_vectors(value: list[float] | list[list[float]], dim: int, name: str) -> tuple[np.ndarray, bool]:
    """A JSON vector or list of vectors as float32 (n, dim), and whether it was a batch."""
    batch = bool(value) and isinstance(value[0], list)
    rows: list[Any] = value if batch else [value]
    if not rows or not rows[0]:
        raise InvalidInputError(f"`{name}` is empty")
    for i, row in enumerate(rows):
        if len(row) != dim:
            where = f"{name}[{i}]" if batch else name
            raise InvalidInputError(f"`{where}` has {len(row)} dimensions; this collection holds {dim}")
    with np.errstate(over="ignore"):  # beyond float32's range becomes inf, reported below
        arr = np.asarray(rows, dtype=np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = (int(x) for x in np.argwhere(bad)[0])
        where = f"{name}[{i}]" if batch else name
        raise InvalidInputError(
            f"`{where}[{j}]` is {rows[i][j]!r}: embeddings must be finite (no NaN or infinity) float32 values, "
            "|x| <= 3.4e38"
        )
    return arr, batch


# ----------------------------------------------------------------------------- the fast path

SEARCH_DEFAULTS: dict[str, Any] = {name: f.default for name, f in SearchRequest.model_fields.items()}
_NUMBER_TYPES = frozenset({float, int})


def plain_search_request(body: bytes) -> SearchRequest | None:
    """The /search body as a SearchRequest when it is plain (orjson parses it; every field present has its
    canonical JSON type and range), else None: FastAPI's stdlib parse and pydantic validation then take it,
    with their coercions and error messages. This checks in microseconds what pydantic checks in a tenth of a
    millisecond for a 384-float vector."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:  # also NaN, lone surrogates, 64-bit overflows: the full path names them
        return None
    if type(data) is not dict or not data.keys() <= SEARCH_DEFAULTS.keys():
        return None
    if not _plain_query(data.get("query"), data.get("vector")) or not _plain_options(data):
        return None
    return SearchRequest.model_construct(**{**SEARCH_DEFAULTS, **data})


def _plain_query(query: Any, vector: Any) -> bool:
    """Exactly one of a string or a list of strings (``query``) and a list of numbers or of lists of numbers."""
    if (query is None) == (vector is None):
        return False
    if query is not None:
        return type(query) is str or (type(query) is list and all(type(t) is str for t in query))
    if type(vector) is not list:
        return False
    rows = vector if vector and type(vector[0]) is list else [vector]
    return all(type(row) is list and set(map(type, row)) <= _NUMBER_TYPES for row in rows)


def _plain_options(data: dict[str, Any]) -> bool:
    """Every option present of its canonical JSON type, in range."""
    k = data.get("k", 10)
    multiplier = data.get("rescore_multiplier", 4)
    if type(k) is not int or not 1 <= k <= MAX_K or type(multiplier) is not int:
        return False
    if not 1 <= multiplier <= MAX_RESCORE_MULTIPLIER:
        return False
    rescore = data.get("rescore", "int8")
    names = [rescore] if type(rescore) is str else rescore if type(rescore) is list else [] if rescore is None else [0]
    if not all(type(n) is str and n in RESCORE_NAMES for n in names):
        return False
    mode, filter_ = data.get("mode"), data.get("filter")
    if (mode is not None and type(mode) is not str) or (filter_ is not None and type(filter_) is not dict):
        return False
    if filter_ and _integral_beyond_64_bits(filter_):
        return False  # orjson reads integers beyond 64 bits as floats, json as ints (which a filter refuses)
    return type(data.get("with_text", True)) is bool and type(data.get("allow_partial", False)) is bool


def _integral_beyond_64_bits(value: Any) -> bool:
    """Whether parsed JSON holds a float that may have been an integer beyond 64 bits."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is float:
            if abs(item) >= 2.0**63 and item.is_integer():
                return True
        elif type(item) is dict:
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return False
