"""The framework adapters against the Collection they wrap, on a shared BEIR dataset: same NDCG@10?

Each adapter (LangChain ``BitsearchVectorStore``, LlamaIndex ``BitsearchVectorStore`` through
``VectorStoreIndex.as_retriever``, Haystack ``BitsearchDocumentStore`` through its retriever components)
stores the corpus and answers every query through the framework's own API; a ``Collection`` with the same
configuration (binary codes, float32 rows, float32 rescoring of k x 4 candidates) answers them directly.
Embeddings are bitsearch's own encoder (the packaged all-MiniLM-L6-v2 through ONNX Runtime), read from
``bitsearch.evaluate.cached_embeddings`` (the evaluation's cache of that encoder's output) for the corpus
and the queries, and handed to each framework as its embedding model, so every side ranks the same vectors.

Modes: dense, hybrid (dense and BM25 fused by reciprocal rank fusion) and keyword (BM25). Haystack has no
hybrid retriever of its own: its hybrid is the two retrievers (top_k = 100, the depth ``Collection`` fuses)
joined by ``DocumentJoiner(join_mode="reciprocal_rank_fusion")``.

    python benchmarks/bench_integrations.py [scifact | path/to/beir/folder] [--no-write]

(a name is looked up in ../shared/data beside the checkout)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from haystack import Document as HaystackDocument
from haystack import Pipeline
from haystack.components.joiners import DocumentJoiner
from langchain_core.embeddings import Embeddings
from llama_index.core import VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import TextNode

from bitsearch import Collection
from bitsearch.encode import Encoder
from bitsearch.evaluate import cached_embeddings, compute_metrics, load_dataset
from bitsearch.integrations import haystack as hs
from bitsearch.integrations import langchain as lc
from bitsearch.integrations import llama_index as li
from bitsearch.search import HYBRID_DEPTH

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
K = 10
MODES = ("dense", "hybrid", "keyword")
Run = list[list[tuple[str, float]]]  # per query: (document id, score), best first


class CachedVectors:
    """The corpus's and the queries' embeddings by text, as the evaluation cached them."""

    def __init__(self, encoder: Encoder, doc_texts: list[str], query_texts: list[str]) -> None:
        self.encoder = encoder
        docs = cached_embeddings(doc_texts, "documents", encoder)
        queries = cached_embeddings(query_texts, "queries", encoder)
        self.documents = dict(zip(doc_texts, docs, strict=True))
        self.queries = dict(zip(query_texts, queries, strict=True))

    def document(self, text: str) -> list[float]:
        return self.documents[text].tolist()

    def query(self, text: str) -> list[float]:
        found = self.queries.get(text)
        return (found if found is not None else self.encoder.encode_queries([text])[0]).tolist()


class LangChainEmbeddings(Embeddings):
    """The cached vectors as a LangChain embedding model."""

    def __init__(self, vectors: CachedVectors) -> None:
        self.vectors = vectors

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.vectors.document(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.vectors.query(text)


class LlamaIndexEmbedding(BaseEmbedding):
    """The cached vectors as a LlamaIndex embedding model (queries only: nodes arrive embedded)."""

    vectors: Any = None

    def _get_query_embedding(self, query: str) -> list[float]:
        return self.vectors.query(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self.vectors.query(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self.vectors.document(text)


def each(fn: Callable[[str], list[tuple[str, float]]], queries: list[str]) -> Run:
    """``fn`` on every query, one at a time."""
    return [fn(q) for q in queries]


def collection_runs(col: Collection, vectors: CachedVectors, queries: list[str]) -> dict[str, Run]:
    def search(q: str, mode: str) -> list[tuple[str, float]]:
        if mode == "keyword":
            hits = col.search([q], k=K, mode=mode)[0]
        else:
            texts = [q] if mode == "hybrid" else None
            hits = col.search(vectors.queries[q], k=K, rescore="float32", mode=mode, query_texts=texts)[0]
        return [(str(h.id), float(h.score)) for h in hits]

    return {mode: each(lambda q, m=mode: search(q, m), queries) for mode in MODES}


def langchain_runs(folder: Path, vectors: CachedVectors, ds: Any) -> dict[str, Run]:
    store = lc.BitsearchVectorStore(LangChainEmbeddings(vectors), folder)
    store.add_texts(ds.doc_texts, ids=list(ds.doc_ids))
    out = {}
    for mode in MODES:
        out[mode] = each(
            lambda q, m=mode: [(d.id, s) for d, s in store.similarity_search_with_score(q, k=K, mode=m)],
            list(ds.query_texts),
        )
    store.close()
    return out


def llama_index_runs(folder: Path, vectors: CachedVectors, ds: Any) -> dict[str, Run]:
    store = li.BitsearchVectorStore(folder)
    nodes = [
        TextNode(id_=i, text=t, embedding=vectors.document(t)) for i, t in zip(ds.doc_ids, ds.doc_texts, strict=True)
    ]
    store.add(nodes)
    index = VectorStoreIndex.from_vector_store(store, embed_model=LlamaIndexEmbedding(vectors=vectors))
    names = {"dense": "default", "hybrid": "hybrid", "keyword": "text_search"}
    out = {}
    for mode in MODES:
        retriever = index.as_retriever(similarity_top_k=K, vector_store_query_mode=names[mode])
        out[mode] = each(lambda q, r=retriever: [(n.node.node_id, n.score) for n in r.retrieve(q)], ds.query_texts)
    store.close()
    return out


def haystack_runs(folder: Path, vectors: CachedVectors, ds: Any) -> dict[str, Run]:
    store = hs.BitsearchDocumentStore(str(folder))
    store.write_documents(
        [
            HaystackDocument(id=i, content=t, embedding=vectors.document(t))
            for i, t in zip(ds.doc_ids, ds.doc_texts, strict=True)
        ]
    )
    dense = hs.BitsearchEmbeddingRetriever(store, top_k=K)
    keyword = hs.BitsearchBM25Retriever(store, top_k=K)
    hybrid = Pipeline()
    hybrid.add_component("dense", hs.BitsearchEmbeddingRetriever(store, top_k=HYBRID_DEPTH))
    hybrid.add_component("keyword", hs.BitsearchBM25Retriever(store, top_k=HYBRID_DEPTH))
    hybrid.add_component("join", DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=K))
    hybrid.connect("dense", "join")
    hybrid.connect("keyword", "join")

    def pairs(docs: list[HaystackDocument]) -> list[tuple[str, float]]:
        return [(d.id, float(d.score or 0.0)) for d in docs]

    runs = {
        "dense": lambda q: pairs(dense.run(query_embedding=vectors.query(q))["documents"]),
        "keyword": lambda q: pairs(keyword.run(query=q)["documents"]),
        "hybrid": lambda q: pairs(
            hybrid.run({"dense": {"query_embedding": vectors.query(q)}, "keyword": {"query": q}})["join"]["documents"]
        ),
    }
    out = {mode: each(runs[mode], list(ds.query_texts)) for mode in MODES}
    store.close()
    return out


def ndcg(ds: Any, run: Run) -> float:
    as_dict = {q: dict(hits) for q, hits in zip(ds.query_ids, run, strict=True)}
    return compute_metrics(ds.qrels, as_dict, ("ndcg@10",))["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="scifact")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/benchmarks.md alone")
    args = parser.parse_args()
    ds = load_dataset(args.dataset if Path(args.dataset).is_dir() else DATA / args.dataset)
    encoder = Encoder()
    vectors = CachedVectors(encoder, list(ds.doc_texts), list(ds.query_texts))
    results: dict[str, dict[str, Run]] = {}
    builds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        col = Collection.create(Path(tmp) / "col", encoder.dim, keep_int8=False, keep_float32=True)
        col.add(
            np.asarray([vectors.documents[t] for t in ds.doc_texts]), ids=list(ds.doc_ids), texts=list(ds.doc_texts)
        )
        builds["Collection"] = time.perf_counter() - t0
        results["Collection"] = collection_runs(col, vectors, list(ds.query_texts))
        col.close()
        for name, fn in (
            ("LangChain", langchain_runs),
            ("LlamaIndex", llama_index_runs),
            ("Haystack", haystack_runs),
        ):
            t0 = time.perf_counter()
            results[name] = fn(Path(tmp) / name, vectors, ds)
            builds[name] = time.perf_counter() - t0
            print(f"{name} done in {builds[name]:.1f} s", flush=True)

    base = results["Collection"]
    how = {
        "Collection": "`Collection.search` (mode dense / hybrid / keyword)",
        "LangChain": "`BitsearchVectorStore.similarity_search_with_score(mode=...)`",
        "LlamaIndex": "`VectorStoreIndex.as_retriever(vector_store_query_mode=default / hybrid / text_search)`",
        "Haystack": "`BitsearchEmbeddingRetriever`, both retrievers (top_k 100) + `DocumentJoiner` RRF, "
        "`BitsearchBM25Retriever`",
    }
    lines = [
        f"## The framework adapters on {ds.name} (LangChain, Haystack, LlamaIndex)",
        "",
        f"`python benchmarks/bench_integrations.py ../shared/data/{ds.name}`: {len(ds.doc_ids)} documents, "
        f"{len(ds.query_ids)} queries, all-MiniLM-L6-v2 (ONNX) embeddings from the evaluation cache handed to "
        "each framework as its embedding model; every side keeps binary codes and float32 rows and rescores "
        f"k x 4 candidates with the float32 rows (k = {K}). Same top-10: queries whose ranked ids equal "
        "`Collection`'s. No timings: on this machine, shared with "
        "other jobs, they varied more between runs than between the adapters.",
        "",
        "| through | how | dense NDCG@10 | hybrid NDCG@10 | keyword NDCG@10 | same top-10 (dense / hybrid / keyword) |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        same = [
            sum([i for i, _ in a] == [i for i, _ in b] for a, b in zip(runs[m], base[m], strict=True)) for m in MODES
        ]
        lines.append(
            f"| {name} | {how[name]} | "
            + " | ".join(f"{ndcg(ds, runs[m]):.4f}" for m in MODES)
            + f" | {' / '.join(f'{s}/{len(ds.query_ids)}' for s in same)} |"
        )
    lines += [
        "",
        "Haystack's hybrid is its own `DocumentJoiner` fusing the two retrievers' lists (RRF with k = 61 over "
        "0-based ranks, the same formula as bitsearch's rrf_k = 60 over 1-based ranks); `Collection`'s hybrid "
        "fuses the same depth-100 rankings in one call, so any difference there would come from ties or from "
        "the two retrievers reading the collection separately.",
        "",
        f"Machine: {machine()}.",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        write_section(f"integrations-{ds.name}", text)


if __name__ == "__main__":
    main()
