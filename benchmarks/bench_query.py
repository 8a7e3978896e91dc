"""The query a user feels: command-line wall time, in-process text queries, and encoding throughput per encoder.

Encoders compared in one run: sentence-transformers on torch (the reference), ONNX Runtime fp32 and
ONNX Runtime int8 (dynamically quantized weights), all on the packaged all-MiniLM-L6-v2. Sections:

- equivalence: cosine of ONNX vs torch embeddings on 1,000 texts of the shared datasets (queries and documents);
- quality: NDCG@10 of exact float32 search on the shared retrieval sets, per encoder (``--quality``, slow);
- command line: ``bitsearch search`` and ``bitsearch info`` wall time, median of ``--repeat`` runs,
  ``--encoder torch`` (before) against the default ONNX encoder (after);
- in process: one text query (encode + search) p50/p99 per encoder, on a collection of SciFact;
- indexing: documents per second when encoding SciFact documents, per encoder and batch size;
- fastembed (Qdrant's ONNX embedding library) on the same texts, when it can load the local model offline.

Each section is a function returning markdown lines; `main` runs them in order, so another section (a
server's) is one more function in SECTIONS.

    python benchmarks/bench_query.py --collection /tmp/scifact.bits [--quality] [--datasets scifact cisi ...]

The collection is built once with ``bitsearch index /work/shared/data/scifact/corpus.jsonl --out PATH``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section

DATA = Path(os.environ.get("BITSEARCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
ENCODERS = ("torch", "onnx", "onnx-int8")
QUERY = "vitamin D deficiency and the risk of tuberculosis"


def _encoders() -> dict[str, object]:
    from bitsearch.encode import Encoder

    return {b: Encoder(backend=b) for b in ENCODERS}


def _texts(datasets: list[str], n: int) -> list[str]:
    """n texts, half queries and half documents, spread over the datasets (first of each, deterministic)."""
    from bitsearch.evaluate import load_dataset

    per = max(1, n // (2 * len(datasets)))
    out: list[str] = []
    for name in datasets:
        ds = load_dataset(DATA / name)
        out += [t for t in ds.query_texts if t.strip()][:per]
        out += [t for t in ds.doc_texts if t.strip()][:per]
    return out[:n]


def equivalence(args: argparse.Namespace, enc: dict) -> list[str]:
    if args.quality:  # the quality section measures the cosines on every text it encodes
        return []
    texts = _texts(args.datasets, 1000)
    half = len(texts) // 2
    lines = [
        f"### Equivalence: cosine to sentence-transformers (torch) on {len(texts):,} texts "
        f"({', '.join(args.datasets)}: queries and documents)",
        "",
        "| encoder | min cosine | mean cosine |",
        "|---|---|---|",
    ]
    queries, docs = texts[:half], texts[half:]
    ref = np.concatenate([enc["torch"].encode_queries(queries), enc["torch"].encode_documents(docs)])
    for name in ("onnx", "onnx-int8"):
        got = np.concatenate([enc[name].encode_queries(queries), enc[name].encode_documents(docs)])
        cos = np.sum(got * ref, axis=1)
        lines.append(f"| {name} | {cos.min():.6f} | {cos.mean():.6f} |")
    return lines


def quality(args: argparse.Namespace, enc: dict) -> list[str]:
    if not args.quality:
        return []
    from bitsearch.evaluate import load_dataset

    lines = [
        "### Quality: NDCG@10 of exact float32 search per encoder, and the cosine of every embedding to torch's",
        "",
        "| dataset | texts | torch | onnx | Δ onnx | min cos onnx | onnx-int8 | Δ int8 (% of torch) | min cos int8 "
        "| int8 queries, onnx documents (% of torch) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in args.datasets:
        ds = load_dataset(DATA / name)
        keep = [i for i, t in enumerate(ds.doc_texts) if t.strip()]
        ids = [ds.doc_ids[i] for i in keep]
        scores, vectors, embedded = {}, {}, {}
        for backend in ENCODERS:
            docs = enc[backend].encode_documents([ds.doc_texts[i] for i in keep])
            queries = enc[backend].encode_queries(list(ds.query_texts))
            vectors[backend] = np.concatenate([docs, queries])
            embedded[backend] = (docs, queries)
            scores[backend] = _exact_ndcg(ds, ids, queries, docs)
            print(f"{name} {backend} ndcg@10 {scores[backend]:.4f}", file=sys.stderr, flush=True)
        mixed = _exact_ndcg(ds, ids, embedded["onnx-int8"][1], embedded["onnx"][0])
        cos = {b: float(np.min(np.sum(vectors[b] * vectors["torch"], axis=1))) for b in ("onnx", "onnx-int8")}
        t, o, q = scores["torch"], scores["onnx"], scores["onnx-int8"]
        int8 = f"{q:.4f} | {q - t:+.4f} ({100 * q / t:.1f}%) | {cos['onnx-int8']:.4f}"
        int8 += f" | {mixed:.4f} ({100 * mixed / t:.2f}%)"
        n = len(vectors["torch"])
        lines.append(f"| {name} | {n:,} | {t:.4f} | {o:.4f} | {o - t:+.4f} | {cos['onnx']:.6f} | {int8} |")
    return lines


def _exact_ndcg(ds: object, ids: list[str], queries: np.ndarray, docs: np.ndarray) -> float:
    """NDCG@10 of exact inner-product search of `queries` over `docs`."""
    from bitsearch.evaluate import compute_metrics

    sims = queries @ docs.T
    top = np.argsort(-sims, axis=1)[:, :10]
    run = {q: {ids[j]: float(sims[r, j]) for j in top[r]} for r, q in enumerate(ds.query_ids)}
    return compute_metrics(ds.qrels, run, ("ndcg@10",))["ndcg@10"]


def _cli_median(argv: list[str], repeat: int) -> float:
    """Median wall seconds of `python -m bitsearch ARGV` in fresh processes, after one warm-up."""
    times = []
    for i in range(repeat + 1):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bitsearch", *argv], check=True, capture_output=True)
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def command_line(args: argparse.Namespace, enc: dict) -> list[str]:
    col = str(args.collection)
    rows = [
        ("search (torch)", ["search", col, QUERY, "--encoder", "torch"]),
        ("search (onnx)", ["search", col, QUERY, "--encoder", "onnx"]),
        ("search (onnx-int8)", ["search", col, QUERY, "--encoder", "onnx-int8"]),
        ("info", ["info", col]),
    ]
    lines = [
        f"### Command line: wall time of a fresh process, median of {args.repeat} (after one warm-up)",
        "",
        "| command | seconds |",
        "|---|---|",
    ]
    for label, argv in rows:
        lines.append(
            f"| `bitsearch {' '.join(argv[:1] + argv[2:] if argv[0] == 'search' else argv[:1])}` "
            f"— {label} | {_cli_median(argv, args.repeat):.2f} |"
        )
    return lines


def in_process(args: argparse.Namespace, enc: dict) -> list[str]:
    from bitsearch import Collection
    from bitsearch.evaluate import load_dataset

    col = Collection.open(args.collection)
    queries = [t for t in load_dataset(DATA / "scifact").query_texts if t.strip()][: args.queries]
    lines = [
        f"### In process: one text query (encode + binary stage 1 + int8 rescoring, k=10) on {len(col):,} "
        f"SciFact documents, {len(queries)} queries one at a time",
        "",
        "| encoder | encode p50 ms | encode p99 ms | query p50 ms | query p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name in ENCODERS:
        col.encoder = enc[name]
        col.search(queries[:1], k=10)  # first-call costs (compiled kernels, first forward pass) stay out
        encode, total = [], []
        for q in queries:
            t0 = time.perf_counter()
            vec = enc[name].encode_queries([q])
            t1 = time.perf_counter()
            col.search(vec, k=10)
            t2 = time.perf_counter()
            encode.append(t1 - t0)
            total.append(t2 - t0)
        p = lambda xs, q: 1000 * float(np.percentile(xs, q))  # noqa: E731
        lines.append(
            f"| {name} | {p(encode, 50):.2f} | {p(encode, 99):.2f} | {p(total, 50):.2f} | {p(total, 99):.2f} |"
        )
    col.close()
    return lines


def indexing(args: argparse.Namespace, enc: dict) -> list[str]:
    from bitsearch.encode import Encoder
    from bitsearch.evaluate import load_dataset

    docs = [t for t in load_dataset(DATA / "scifact").doc_texts if t.strip()][: args.docs]
    lines = [
        f"### Indexing: documents per second encoding {len(docs)} SciFact documents (shortest first, as "
        "`bitsearch index` does)",
        "",
        "| encoder | " + " | ".join(f"batch {b}" for b in args.batch_sizes) + " |",
        "|---|" + "---|" * len(args.batch_sizes),
    ]
    ordered = sorted(docs, key=len)
    for name in ENCODERS:
        cells = []
        for b in args.batch_sizes:
            e = Encoder(backend=name, batch_size=b)
            e.encode_documents(ordered[:b])
            t0 = time.perf_counter()
            for i in range(0, len(ordered), b * 8):
                e.encode_documents(ordered[i : i + b * 8])
            cells.append(f"{len(ordered) / (time.perf_counter() - t0):,.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def fastembed(args: argparse.Namespace, enc: dict) -> list[str]:
    """fastembed on the same texts: by name (its own download) if it can, else on bitsearch's ONNX export."""
    import shutil
    import tempfile

    from bitsearch.encode import DEFAULT_MODEL, cache_dir, content_key, model_folder

    lines = ["### fastembed (Qdrant's ONNX embedding library)", ""]
    try:
        import fastembed as fe
        from fastembed import TextEmbedding
    except ImportError as exc:
        return [*lines, f"Not measured: fastembed is not installed here ({exc})."]
    name = "sentence-transformers/all-MiniLM-L6-v2"
    try:
        model = TextEmbedding(name, local_files_only=True)
        how = "its own model files"
    except Exception as exc:  # it downloads its own ONNX export of the model (Qdrant's); offline it cannot
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        folder = model_folder(DEFAULT_MODEL)
        entry = cache_dir() / "onnx" / content_key(folder)
        tmp = Path(tempfile.mkdtemp())
        shutil.copy(entry / "model.onnx", tmp / "model.onnx")
        for f in ("tokenizer.json", "config.json", "special_tokens_map.json", "tokenizer_config.json"):
            shutil.copy(folder / f, tmp / f)
        model = TextEmbedding(name, specific_model_path=str(tmp))
        how = f"bitsearch's ONNX export of the packaged model (by name it cannot load offline: {first})"
    texts = _texts(["scifact"], 200)
    got = np.array(list(model.embed(texts)))
    ref = np.concatenate([enc["torch"].encode_queries(texts[:100]), enc["torch"].encode_documents(texts[100:])])
    cos = np.sum(got * ref, axis=1)
    rows = []
    for label, fn in (
        ("fastembed", lambda q: list(model.embed([q]))),
        ("bitsearch onnx", lambda q: enc["onnx"].encode_queries([q])),
    ):
        fn(texts[0])
        times = []
        for q in texts[:100]:
            t0 = time.perf_counter()
            fn(q)
            times.append(time.perf_counter() - t0)
        rows.append(
            f"| {label} | {1000 * float(np.median(times)):.2f} | {1000 * float(np.percentile(times, 99)):.2f} |"
        )
    return [
        *lines,
        f"fastembed {fe.__version__}, loaded from {how}; min cosine to torch on {len(texts)} SciFact texts: "
        f"{cos.min():.6f}.",
        "",
        "| one text (SciFact queries and abstracts, 100) | p50 ms | p99 ms |",
        "|---|---|---|",
        *rows,
    ]


SECTIONS: list[Callable[[argparse.Namespace, dict], list[str]]] = [
    equivalence,
    quality,
    command_line,
    in_process,
    indexing,
    fastembed,
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", type=Path, required=True, help="a collection of SciFact built by the CLI")
    parser.add_argument("--datasets", nargs="+", default=["scifact", "cisi", "cranfield", "npl"])
    parser.add_argument("--quality", action="store_true", help="also NDCG@10 per encoder (encodes every corpus)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--sections", nargs="+", default=[s.__name__ for s in SECTIONS])
    parser.add_argument("--no-write", action="store_true", help="print instead of writing docs/benchmarks.md")
    args = parser.parse_args()
    enc = _encoders()
    body = [
        "## The query a user feels: encoders and command-line start-up",
        "",
        f"`python benchmarks/bench_query.py {' '.join(sys.argv[1:])}`",
        "",
        f"Machine: {machine()}; ONNX Runtime threads: {os.environ.get('BITSEARCH_ONNX_THREADS') or 'default'}.",
        "",
    ]
    for section in SECTIONS:
        if section.__name__ in args.sections:
            t0 = time.perf_counter()
            part = section(args, enc)
            print(f"{section.__name__}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            if part:
                body += [*part, ""]
                print("\n".join(part), flush=True)
    if not args.no_write:
        write_section("query", "\n".join(body))


if __name__ == "__main__":
    main()
