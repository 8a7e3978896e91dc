"""Loading the embedding model for a command: a named one, or the one a collection records (started early,
in a thread, so the model loads while the collection opens). The encoder module is imported only here,
and only when a command embeds text: `bitsearch info` and keyword searches never load torch."""

from __future__ import annotations

import contextlib
import json
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bitsearch import Collection
from bitsearch.cli.common import MANIFEST, CliError

if TYPE_CHECKING:
    from bitsearch.encode import Encoder

__all__ = ["early_encoder", "encoder_for", "load_encoder"]


def load_encoder(model: str | None, **kw: Any) -> Encoder:
    """The encoder of ``model`` (None: the packaged default)."""
    from bitsearch.encode import Encoder

    return Encoder(model, **kw)


def early_encoder(path: Path, **kw: Any) -> Future[tuple[Any, Encoder]] | None:
    """Start loading the encoder that ``path``'s manifest names, in a thread, before the collection is
    opened and validated; ``encoder_for`` uses it only if the validated manifest names the same model."""
    try:
        info = json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("model")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(info, dict) or not info.get("name"):
        return None

    def load() -> tuple[Any, Encoder]:
        from bitsearch.encode import Encoder

        return info, Encoder.for_manifest(info, **kw)

    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder").submit(load)


def encoder_for(col: Collection, early: Future[tuple[Any, Encoder]] | None = None, **kw: Any) -> Encoder:
    """The encoder a collection was built with (from its manifest), for queries or more documents;
    ``early`` is one ``early_encoder`` started loading, used when it loaded the same model."""
    from bitsearch.encode import Encoder

    info = col.manifest.get("model")
    if not isinstance(info, dict) or not info.get("name"):
        raise CliError(
            f"collection {col.path} records no embedding model (its documents came as vectors), so text cannot "
            "be embedded for it: search it with --vector-file FILE (.npy or JSON), add documents with --vector-field, "
            "or index into a new collection with --model NAME to record a model for text queries"
        )
    encoder = None
    if early is not None:
        with contextlib.suppress(Exception):  # any failure: load again here, where errors are reported
            loaded_info, loaded = early.result()
            encoder = loaded if loaded_info == info else None
    if encoder is None:
        encoder = Encoder.for_manifest(info, **kw)
    if encoder.dim != col.dim:
        raise CliError(f"model {encoder.name!r} gives {encoder.dim}-dim embeddings but {col.path} holds {col.dim}")
    return encoder
