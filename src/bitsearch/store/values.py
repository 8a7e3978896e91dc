"""What the document store accepts: ids (str or int64), and text and metadata SQLite and JSON can hold."""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import InvalidInputError

__all__ = ["INT64_MAX", "INT64_MIN", "MAX_METADATA_DEPTH", "DocId", "check_metadata", "check_unicode", "normalize_id"]


DocId = str | int

# Integer ids and filter values are stored and compared as SQLite INTEGERs: signed 64-bit.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Metadata objects/arrays nest at most this deep (json.dumps and json.loads recurse per level).
MAX_METADATA_DEPTH = 64


def normalize_id(value: object) -> DocId:
    """Return a document id as a plain ``str`` or ``int``; anything else is an error.

    Strings must be non-empty valid Unicode (no lone surrogates); integers (Python or numpy) must
    fit SQLite's signed 64 bits, -2**63 to 2**63 - 1.
    """
    if isinstance(value, bool):
        raise InvalidInputError(f"document ids must be str or int, got bool {value!r}")
    if isinstance(value, str):
        if not value:
            raise InvalidInputError("document ids must not be empty strings")
        check_unicode(value, f"document id {value!r}")
        return str(value)
    try:
        import numpy as np

        if isinstance(value, np.integer):
            value = int(value)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidInputError(
                f"integer document id {value} does not fit SQLite's 64-bit integers (-2**63 to 2**63 - 1)"
            )
        return int(value)
    raise InvalidInputError(f"document ids must be str or int, got {type(value).__name__} {value!r}")


def check_unicode(text: str, where: str) -> None:
    """Raise InvalidInputError naming ``where`` if ``text`` cannot be encoded as UTF-8 (a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{where} contains a lone surrogate {text[exc.start]!r} at position {exc.start}: not valid Unicode"
        ) from None


def check_metadata(value: object, where: str = "metadata") -> str:
    """Check one document's metadata and return its JSON text; raise InvalidInputError naming the place.

    A JSON object: str keys, values str / int / finite float / bool / None / list / dict, nested at most
    ``MAX_METADATA_DEPTH`` deep, every string valid Unicode (no lone surrogates, which no JSON reader
    could return). Walked iteratively, so a deep object cannot exhaust the stack before it is refused.
    """
    if not isinstance(value, dict):
        raise InvalidInputError(f"{where} must be a dict or None, got {type(value).__name__}")
    # each entry: (node, depth, path); a path is None (the top) or (parent path, key), named only on error
    stack: list[tuple[object, int, Any]] = [(value, 1, None)]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            if not node.isascii():
                check_unicode(node, _place(where, path))
        elif isinstance(node, dict):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidInputError(f"{where} nests deeper than MAX_METADATA_DEPTH={MAX_METADATA_DEPTH} levels")
            for key, sub in node.items():
                if not isinstance(key, str):
                    kind = type(key).__name__
                    raise InvalidInputError(f"{_place(where, path)} has a key {key!r} of type {kind}: keys must be str")
                if not key.isascii():
                    check_unicode(key, f"{_place(where, path)} key {key!r}")
                stack.append((sub, depth + 1, (path, key)))
        elif isinstance(node, (list, tuple)):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidInputError(f"{where} nests deeper than MAX_METADATA_DEPTH={MAX_METADATA_DEPTH} levels")
            stack.extend((sub, depth + 1, (path, i)) for i, sub in enumerate(node))
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise InvalidInputError(f"{_place(where, path)} is {node}: JSON has no NaN or infinity")
        elif node is not None and not isinstance(node, int):  # bool is an int
            raise InvalidInputError(f"{_place(where, path)} is a {type(node).__name__}: not a JSON value")
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:  # e.g. an int of more than 4,300 digits
        raise InvalidInputError(f"{where} is not JSON-serializable: {exc}") from None


def _place(where: str, path: Any) -> str:
    """``where`` followed by the keys and indices of ``path`` (see ``check_metadata``), e.g. metadata[3]['a'][0]."""
    keys = []
    while path is not None:
        path, key = path
        keys.append(f"[{key!r}]")
    return where + "".join(reversed(keys))
