"""``Encoder``: an embedding model plus the settings (prompts, truncation, backend) a collection must reuse,
and the choice of backend for bulk indexing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bitsearch.errors import InvalidInputError, ModelLoadError
from bitsearch.quantize import truncate_embeddings

from .models import BACKENDS, DEFAULT_MODEL, TORCH_INDEXING_BREAK_EVEN, canonical_model_name, check_texts, known_prompts
from .onnx_model import OnnxModel, torch_model

# ----------------------------------------------------------------------------- the encoder


def indexing_backend(documents: int | None) -> str:
    """The faster backend to embed `documents` texts in bulk: torch for large inputs when installed, else "auto".

    Both give the same embeddings (cosine >= 0.9999), so a collection indexed with either is queried with ONNX.
    """
    import importlib.util

    if documents is not None and documents < TORCH_INDEXING_BREAK_EVEN:
        return "auto"
    if importlib.util.find_spec("torch") and importlib.util.find_spec("sentence_transformers"):
        return "torch"
    return "auto"


class Encoder:
    """An embedding model plus the settings (prompts, truncation, backend) a collection must reuse."""

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
        backend: str = "auto",
    ) -> None:
        """Load `model` (default: the packaged all-MiniLM-L6-v2); prompts None -> known family prompts, "" -> none.

        backend: "auto" (ONNX Runtime on CPU when possible, else torch), "onnx", "onnx-int8" or "torch".
        """
        name = str(model) if model is not None else DEFAULT_MODEL
        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        if backend not in BACKENDS:
            raise InvalidInputError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        name = canonical_model_name(name)
        self.name: str = name
        self.device = device
        self.batch_size = batch_size
        self.normalize = normalize
        self._onnx: OnnxModel | None = None
        self._model: Any = None
        self.backend: str = self._load(name, device, backend)
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

    def _load(self, name: str, device: str, backend: str) -> str:
        """Load the requested backend; "auto" falls back to torch when ONNX cannot serve this model here."""
        if backend == "torch" or (backend == "auto" and device != "cpu"):
            self._model = torch_model(name, device)
            return "torch"
        if backend != "auto" and device != "cpu":
            raise InvalidInputError(f"the {backend} backend runs on the CPU only, not on device {device!r}")
        try:
            self._onnx = OnnxModel.load(name, int8=backend == "onnx-int8")
            return backend if backend != "auto" else "onnx"
        except ModelLoadError as onnx_error:
            if backend != "auto":
                raise
            try:
                self._model = torch_model(name, device)
            except ModelLoadError as torch_error:
                if isinstance(torch_error.__cause__, ImportError) and "torch is not installed" in str(onnx_error):
                    raise onnx_error from None  # the more useful of the two: how to get an export
                raise
            return "torch"

    @property
    def onnx_model(self) -> OnnxModel | None:
        """The ONNX Runtime model when the backend is "onnx" or "onnx-int8"; None for torch."""
        return self._onnx

    @property
    def sentence_transformer(self) -> Any:
        """The SentenceTransformer when the backend is "torch"; None otherwise."""
        return self._model

    def _full_dim(self) -> int:
        if self._onnx is not None:
            return self._onnx.spec.dim
        model = self._model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = getter()
        if dim is None:  # some models only reveal it by encoding
            dim = int(model.encode(["dimension probe"], convert_to_numpy=True).shape[1])
        return int(dim)

    def _default_prompts(self) -> tuple[str | None, str | None]:
        """Prompts from the model's own config ("query"/"document"|"passage"), else the known-family table."""
        own = dict(self._onnx.spec.prompts) if self._onnx is not None else getattr(self._model, "prompts", None) or {}
        query = own.get("query") or None
        document = own.get("document") or own.get("passage") or None
        if query is None and document is None:
            return known_prompts(self.name)
        return query, document

    def _encode(self, texts: Sequence[str], prompt: str | None, show_progress: bool) -> np.ndarray:
        checked = check_texts(texts)
        if not checked:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is not None:
            embeddings = self._onnx.embed(checked, prompt, batch_size=self.batch_size, normalize=self.normalize)
        else:
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
            "encoder": self.backend,
        }

    @classmethod
    def for_manifest(cls, info: dict[str, Any] | None, *, dim: int | None = None, **kw: Any) -> Encoder:
        """The encoder a collection was built with, from the model info its manifest records (``"model"``);
        extra keywords (device, batch_size, backend) pass through. The one place every caller (the
        collection, the CLI, the server) loads it, so each reports the same errors.

        "onnx" and "torch" give the same embeddings (cosine >= 0.9999), so either recorded (or none, in
        manifests older than the field) loads "auto"; "onnx-int8" loads the int8 model its documents used.
        Raises ModelLoadError when the info names no model or an unknown runtime, when the runtime is not
        installed, or when the model's embeddings are not of the recorded ``dim`` (or of ``dim``, given:
        the collection's).
        """
        if not isinstance(info, dict) or not info.get("name"):
            raise ModelLoadError(f"collection manifest has no model name (model info: {info!r})")
        recorded = info.get("encoder")
        if recorded is not None and recorded not in BACKENDS:
            raise ModelLoadError(f"collection manifest names an unknown encoder {recorded!r} (known: {BACKENDS})")
        if kw.get("backend") is None:
            kw["backend"] = "onnx-int8" if recorded == "onnx-int8" else "auto"
        try:
            encoder = cls(
                info["name"],
                normalize=bool(info.get("normalize", True)),
                truncate_dim=info.get("truncate_dim"),
                query_prompt=info.get("query_prompt") or "",
                document_prompt=info.get("document_prompt") or "",
                **kw,
            )
        except ImportError as exc:
            raise ModelLoadError(f"{exc} (pip install 'bitsearch[embed]')") from None
        for expected, what in ((info.get("dim"), "the collection expects"), (dim, "the collection holds")):
            if expected is not None and int(expected) != encoder.dim:
                raise ModelLoadError(f"model {encoder.name!r} gives {encoder.dim}-dim embeddings but {what} {expected}")
        return encoder

    def __repr__(self) -> str:
        return f"Encoder({self.name!r}, dim={self.dim}, backend={self.backend!r}, device={self.device!r})"
