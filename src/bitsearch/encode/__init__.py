"""Text -> float32 embeddings: ONNX Runtime on the query path, sentence-transformers/torch as reference.

The default backend ("auto") runs the model's transformer with ONNX Runtime and its tokenizer with the
Hugging Face `tokenizers` library, and pools and normalizes with numpy exactly as the model's own
sentence-transformers configuration says (modules.json, 1_Pooling/config.json, sentence_bert_config.json,
config_sentence_transformers.json). The ONNX file is exported once with torch (when installed), checked
against sentence-transformers on probe texts, and cached under `cache_dir()` keyed by the model's content
hash, with a sha256 next to each file; a missing or corrupt file is re-exported, never used. Without
torch, a cached export is enough: queries then import neither torch nor sentence-transformers.
"onnx-int8" is the same export dynamically quantized to int8 weights (measured in docs/benchmarks.md).
"torch" is sentence-transformers itself, the reference and the fallback for models ONNX cannot serve.
"""

from __future__ import annotations

from .encoder import Encoder, indexing_backend
from .models import (
    BACKENDS,
    DEFAULT_MODEL,
    DEFAULT_MODEL_DIM,
    ModelLoadError,
    ModelSpec,
    cache_dir,
    canonical_model_name,
    content_key,
    known_prompts,
    model_folder,
    read_model_spec,
)
from .onnx_model import OnnxModel, forget_loaded_models, read_export

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_DIM",
    "Encoder",
    "ModelLoadError",
    "ModelSpec",
    "OnnxModel",
    "cache_dir",
    "canonical_model_name",
    "content_key",
    "forget_loaded_models",
    "indexing_backend",
    "known_prompts",
    "model_folder",
    "read_export",
    "read_model_spec",
]
