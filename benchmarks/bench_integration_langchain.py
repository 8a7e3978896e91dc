"""The LangChain adapter against the Collection it wraps, on a shared BEIR dataset: same NDCG@10?

bitsearch's own encoder (the packaged all-MiniLM-L6-v2 through ONNX Runtime) is wrapped as a LangChain
``Embeddings``: the adapter embeds each query itself through it, and the corpus through
``bitsearch.evaluate.cached_embeddings`` (the evaluation's cache of the same encoder's output). The
Collection side gets the same embeddings and the same configuration (binary codes, float32 rows, float32
rescoring, k x 4 candidates) directly. Dense and hybrid rankings are compared query by query.

    python benchmarks/bench_integration_langchain.py [scifact | path/to/beir/folder]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from langchain_core.embeddings import Embeddings

from bitsearch import Collection
from bitsearch.encode import Encoder
from bitsearch.evaluate import cached_embeddings, compute_metrics, load_dataset
from bitsearch.integrations.langchain import BitsearchVectorStore

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class BitsearchEmbeddings(Embeddings):
    """bitsearch's encoder as a LangChain embedding model (documents from the evaluation's cache)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return cached_embeddings(texts, "documents", self.encoder).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encoder.encode_queries([text])[0].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="scifact")
    args = parser.parse_args()
    ds = load_dataset(args.dataset if Path(args.dataset).is_dir() else DATA / args.dataset)
    encoder = Encoder()
    embeddings = BitsearchEmbeddings(encoder)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = BitsearchVectorStore(embeddings, Path(tmp) / "lc")
        store.add_texts(ds.doc_texts, ids=list(ds.doc_ids))
        build = time.perf_counter() - t0
        col = Collection.create(Path(tmp) / "col", encoder.dim, keep_int8=False, keep_float32=True)
        col.add(cached_embeddings(ds.doc_texts, "documents", encoder), ids=list(ds.doc_ids), texts=ds.doc_texts)
        queries = encoder.encode_queries(ds.query_texts)
        print(f"{ds.name}: {len(ds.doc_ids)} documents, {len(ds.query_ids)} queries; adapter build {build:.1f} s")
        for mode in ("dense", "hybrid"):
            t0 = time.perf_counter()
            lc = [store.similarity_search_with_score(q, k=10, mode=mode) for q in ds.query_texts]
            lc_s = time.perf_counter() - t0
            texts = list(ds.query_texts) if mode == "hybrid" else None
            direct = col.search(queries, k=10, rescore="float32", mode=mode, query_texts=texts)
            lc_run = {q: {d.id: s for d, s in hits} for q, hits in zip(ds.query_ids, lc, strict=True)}
            col_run = {q: {str(h.id): h.score for h in hits} for q, hits in zip(ds.query_ids, direct, strict=True)}
            same = sum([d.id for d, _ in a] == [str(h.id) for h in b] for a, b in zip(lc, direct, strict=True))
            gap = max(
                (abs(s - h.score) for a, b in zip(lc, direct, strict=True) for (_, s), h in zip(a, b, strict=False)),
                default=0.0,
            )
            print(
                f"  {mode:6s} NDCG@10 adapter {compute_metrics(ds.qrels, lc_run, ('ndcg@10',))['ndcg@10']:.4f} "
                f"collection {compute_metrics(ds.qrels, col_run, ('ndcg@10',))['ndcg@10']:.4f}; "
                f"identical top-10 for {same}/{len(lc)} queries, largest score difference {gap:.2e}; "
                f"adapter {1000 * lc_s / len(lc):.1f} ms per query (embedding included)"
            )
        store.close()
        col.close()


if __name__ == "__main__":
    main()
