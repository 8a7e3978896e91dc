"""The ONNX Runtime encoder: same embeddings as sentence-transformers, a verified cache, a torch-free query path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bitsearch.encode import (
    DEFAULT_MODEL,
    Encoder,
    ModelLoadError,
    ModelSpec,
    OnnxModel,
    cache_dir,
    content_key,
    forget_loaded_models,
    model_folder,
    read_export,
    read_model_spec,
)

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sentence_transformers", "sklearn", "transformers")

TEXTS = [
    "a",
    "?",
    "  padded with spaces  ",
    "Cats sleep most of the day.",
    "What is the capital of France?",
    "Ünïcödé àccents, ß and œ ligatures",
    "中文文本检索测试",
    "Emoji 🙂🚀 in a sentence",
    "نص عربي قصير",
    "Кириллица тоже работает",
    "numbers 3.14159 and 2.71828, dates 2024-01-01",
    "UPPER CASE TEXT SHOULD BE LOWERCASED BY THE TOKENIZER",
    "tabs\tand\nnewlines\r\nmixed",
    "x" * 3000,  # one long word
    " ".join(["word"] * 400),  # more tokens than max_seq_length (256)
    " ".join(f"token{i}" for i in range(300)),
    "Microbial communities in the gut modulate host immunity through short-chain fatty acids.",
    "The quick brown fox jumps over the lazy dog. " * 40,
    "<html><b>markup</b> &amp; entities</html>",
    "C++ / C# / F# and e-mail@example.com",
    "naïve café résumé",
    "日本語のテキストも少し",
    "한국어 문장",
    "Ελληνικά γράμματα",
    "\u00a0non-breaking\u00a0space",
    "zero\u200bwidth",
    "a b c d e f g h i j k l m n o p",
    "Vitamin D deficiency is associated with increased risk of tuberculosis.",
    "#hashtag @mention $money 100%",
    "'quoted' \"double\" `backtick`",
    "end.",
    "SARS-CoV-2 spike protein binds ACE2",
]


@pytest.fixture(scope="module", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private ONNX cache for this module (the export happens once, in the first encoder)."""
    root = tmp_path_factory.mktemp("bitsearch-cache")
    previous = os.environ.get("BITSEARCH_CACHE")
    os.environ["BITSEARCH_CACHE"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("BITSEARCH_CACHE", None)
    else:
        os.environ["BITSEARCH_CACHE"] = previous


@pytest.fixture(scope="module")
def onnx_encoder(onnx_cache: Path) -> Encoder:
    return Encoder(backend="onnx")


@pytest.fixture(scope="module")
def torch_encoder() -> Encoder:
    return Encoder(backend="torch")


def _entry() -> Path:
    folder = model_folder(DEFAULT_MODEL)
    assert folder is not None
    return cache_dir() / "onnx" / content_key(folder)


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1)))


def test_onnx_matches_sentence_transformers(onnx_encoder: Encoder, torch_encoder: Encoder) -> None:
    assert onnx_encoder.backend == "onnx" and torch_encoder.backend == "torch"
    assert onnx_encoder.dim == torch_encoder.dim == 384
    for encode in ("encode_documents", "encode_queries"):
        got = getattr(onnx_encoder, encode)(TEXTS)
        want = getattr(torch_encoder, encode)(TEXTS)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert _min_cosine(got, want) >= 0.9999
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    one = onnx_encoder.encode_queries(TEXTS[3:4])  # batching and padding do not change a text's embedding
    np.testing.assert_allclose(one[0], onnx_encoder.encode_queries(TEXTS)[3], atol=1e-5)


def test_tokens_are_the_models_own(onnx_encoder: Encoder, torch_encoder: Encoder) -> None:
    onnx = onnx_encoder.onnx_model
    assert onnx is not None
    st = torch_encoder.sentence_transformer
    want = st.tokenize(TEXTS)
    encodings = onnx.tokenizer.encode_batch(TEXTS)
    got_ids = np.array([e.ids for e in encodings])
    assert got_ids.shape[1] == 256 == want["input_ids"].shape[1]  # truncated at max_seq_length, padded alike
    np.testing.assert_array_equal(got_ids, want["input_ids"].numpy())
    np.testing.assert_array_equal(np.array([e.attention_mask for e in encodings]), want["attention_mask"].numpy())


def test_spec_read_from_the_model_folder() -> None:
    folder = model_folder(DEFAULT_MODEL)
    assert folder is not None
    spec = read_model_spec(folder)
    assert spec.pooling == ("mean",) and spec.normalize and spec.max_seq_length == 256 and spec.dim == 384


@pytest.mark.parametrize("modes", [("mean",), ("cls",), ("max",), ("mean_sqrt_len_tokens",), ("cls", "mean")])
@pytest.mark.parametrize("prompt_length", [0, 3])
def test_numpy_pooling_matches_sentence_transformers(modes: tuple[str, ...], prompt_length: int) -> None:
    import torch
    from sentence_transformers.models import Pooling

    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((4, 9, 8)).astype(np.float32)
    mask = np.zeros((4, 9), dtype=np.int64)
    for row, length in enumerate([9, 5, 4, 7]):
        mask[row, :length] = 1
    spec = ModelSpec(modes, prompt_length == 0, False, 16, 8, (), None)
    model = OnnxModel.__new__(OnnxModel)  # pooling needs only the spec and the padding side
    model.spec, model.left_padded = spec, False
    got = model.pool(tokens, mask, prompt_length)
    pooling = Pooling(8, pooling_mode=modes if len(modes) > 1 else modes[0], include_prompt=prompt_length == 0)
    features = {"token_embeddings": torch.from_numpy(tokens), "attention_mask": torch.from_numpy(mask)}
    if prompt_length:
        features["prompt_length"] = prompt_length
    want = pooling(features)["sentence_embedding"].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_prompts_are_applied_identically(onnx_encoder: Encoder, torch_encoder: Encoder) -> None:
    prompts = {"query_prompt": "query: ", "document_prompt": "passage: "}
    onnx = Encoder(backend="onnx", **prompts)
    torch_ = Encoder(backend="torch", **prompts)
    texts = TEXTS[:8]
    assert _min_cosine(onnx.encode_queries(texts), torch_.encode_queries(texts)) >= 0.9999
    assert _min_cosine(onnx.encode_documents(texts), torch_.encode_documents(texts)) >= 0.9999
    np.testing.assert_allclose(
        onnx.encode_queries(texts), onnx_encoder.encode_documents(["query: " + t for t in texts]), atol=1e-5
    )
    info = onnx.manifest_info()
    assert info["encoder"] == "onnx" and info["query_prompt"] == "query: "
    rebuilt = Encoder.for_manifest(info)
    assert rebuilt.backend == "onnx" and rebuilt.document_prompt == "passage: "


def test_manifest_records_the_encoder_and_old_manifests_load(onnx_encoder: Encoder) -> None:
    old = {k: v for k, v in onnx_encoder.manifest_info().items() if k != "encoder"}
    assert Encoder.for_manifest(old).backend == "onnx"  # manifests from before the field: auto
    assert Encoder.for_manifest({**old, "encoder": "torch"}, backend="onnx").backend == "onnx"
    with pytest.raises(ModelLoadError, match="unknown encoder"):
        Encoder.for_manifest({**old, "encoder": "tensorflow"})


def test_int8_model_is_cached_close_and_recorded(onnx_encoder: Encoder, torch_encoder: Encoder) -> None:
    int8 = Encoder(backend="onnx-int8")
    assert int8.backend == "onnx-int8" and int8.manifest_info()["encoder"] == "onnx-int8"
    assert _min_cosine(int8.encode_documents(TEXTS), torch_encoder.encode_documents(TEXTS)) >= 0.95
    assert (_entry() / "model-int8.onnx.sha256").is_file()
    assert Encoder.for_manifest(int8.manifest_info()).backend == "onnx-int8"


def test_int8_is_for_queries_only(tmp_path: Path, onnx_encoder: Encoder) -> None:
    from typer.testing import CliRunner

    from bitsearch.cli import app
    from bitsearch.server import create_app

    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(TEXTS[:6])))
    refused = CliRunner().invoke(app, ["index", str(source), "--out", str(tmp_path / "c8"), "--encoder", "onnx-int8"])
    assert refused.exit_code != 0 and "queries only" in refused.output
    assert not (tmp_path / "c8").exists()
    done = CliRunner().invoke(app, ["index", str(source), "--out", str(tmp_path / "c"), "--encoder", "onnx", "-q"])
    assert done.exit_code == 0, done.output
    with pytest.raises(ValueError, match="encoder_backend"):
        create_app(tmp_path / "c", encoder_backend="tensorflow")
    state = create_app(tmp_path / "c", encoder_backend="onnx-int8", refresh_seconds=None).state.bitsearch
    got = state.encode(["capital of France"], queries=True)
    assert state.encoder().backend == "onnx-int8"
    want = Encoder(backend="onnx-int8").encode_queries(["capital of France"])
    assert np.array_equal(got, want) and not np.array_equal(got, onnx_encoder.encode_queries(["capital of France"]))


def _reload() -> None:
    forget_loaded_models()


def test_corrupt_cached_model_is_re_exported(onnx_encoder: Encoder, torch_encoder: Encoder, capsys) -> None:
    path = _entry() / "model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    path.write_bytes(bytes(data))
    _reload()
    capsys.readouterr()
    again = Encoder(backend="onnx")
    assert "exporting" in capsys.readouterr().err  # one progress message on stderr
    assert _min_cosine(again.encode_documents(TEXTS), torch_encoder.encode_documents(TEXTS)) >= 0.9999
    checksum = _entry() / "tokenizer.json.sha256"
    recorded = checksum.read_bytes()
    checksum.unlink()  # a missing checksum counts as corrupt too (and is re-exported like the model above)
    assert read_export(_entry(), False) is None
    checksum.write_bytes(recorded)
    assert read_export(_entry(), False) is not None


def test_no_torch_and_no_valid_export_is_a_model_load_error(
    onnx_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _entry() / "model.onnx"
    original = path.read_bytes()
    path.write_bytes(original[: len(original) // 2])  # truncated
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    _reload()
    try:
        with pytest.raises(ModelLoadError, match=r"torch is not installed.*bitsearch\[embed\]"):
            Encoder(backend="onnx")
    finally:
        path.write_bytes(original)
        _reload()
    assert Encoder(backend="onnx").backend == "onnx"  # restored: loads without torch from the cache


def _run(code: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BITSEARCH_CACHE": str(cache), "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_cli_search_and_info_import_no_torch(onnx_encoder: Encoder, onnx_cache: Path, tmp_path: Path) -> None:
    from bitsearch import Collection

    col = Collection.create(tmp_path / "col", onnx_encoder.dim, model=onnx_encoder.manifest_info())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="int8 ranges calibrated on only")
        col.add(onnx_encoder.encode_documents(TEXTS[:16]), ids=[f"d{i}" for i in range(16)], texts=TEXTS[:16])
    col.close()
    for command in (["search", str(tmp_path / "col"), "capital of France", "--json"], ["info", str(tmp_path / "col")]):
        code = (
            "import json, sys\n"
            "from bitsearch.cli import app\n"
            "try:\n"
            f"    app({command!r})\n"
            "except SystemExit as exc:\n"
            "    assert not exc.code, exc.code\n"
            "print('MODULES', json.dumps(sorted(sys.modules)))\n"
        )
        out = _run(code, onnx_cache)
        assert out.returncode == 0, out.stderr
        modules = json.loads(out.stdout.rsplit("MODULES ", 1)[1])
        loaded = {m.split(".")[0] for m in modules}
        assert not loaded & set(HEAVY), (command[0], loaded & set(HEAVY))
        if command[0] == "search":
            hits = json.loads(out.stdout.rsplit("MODULES ", 1)[0])["results"][0]["hits"]
            assert hits[0]["id"] == "d4"  # "What is the capital of France?"
            assert "onnxruntime" in loaded


def test_import_bitsearch_imports_only_numpy(onnx_cache: Path) -> None:
    out = _run(
        "import json, sys, bitsearch\n"
        "names = bitsearch.__all__\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n",
        onnx_cache,
    )
    loaded = set(json.loads(out.stdout))
    assert "numpy" in loaded
    assert not loaded & {"numba", "onnxruntime", "tokenizers", *HEAVY}
    lazy = _run("import bitsearch, sys; from bitsearch import Collection; print(Collection.__name__)", onnx_cache)
    assert lazy.stdout.strip() == "Collection"
