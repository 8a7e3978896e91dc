"""Stage-1 kernel against FAISS IndexBinaryFlat and usearch b1, interleaved in one process.

Exact Hamming top-k over N codes of 384 and 1024 bits (sign bits of synthetic vectors, see
_synthetic.py), single queries and batches of 100, 1 and 2 threads. The methods take turns within
every repetition, so a burst of load on the shared machine hits them alike; medians are reported
with the ratio FAISS / bitsearch (> 1: bitsearch faster). Target (issue 5, item 2): >= 1 everywhere.

    python benchmarks/bench_kernels.py [--n 1000000] [--bits 384,1024] [--k 40] [--reps 7]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any OpenMP runtime loads: see bitsearch/__init__.py

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section
from _synthetic import synthetic_embeddings


def main() -> None:
    import faiss
    from usearch.index import MetricKind, ScalarKind
    from usearch.index import search as usearch_search

    from bitsearch import quantize_embeddings
    from bitsearch.kernels import as_words, hamming_topk, set_num_threads

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--bits", default="384,1024")
    ap.add_argument("--k", type=int, default=40)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--no-usearch", action="store_true")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    lines = []
    sources = []
    for bits in (int(b) for b in args.bits.split(",")):
        gen, source = synthetic_embeddings(bits, seed=0)
        sources.append(f"{bits}: {source}")
        codes = np.concatenate([quantize_embeddings(gen(min(250_000, args.n - s)), "ubinary")
                                for s in range(0, args.n, 250_000)])  # fmt: skip
        queries = quantize_embeddings(synthetic_embeddings(bits, seed=7)[0](100), "ubinary")
        words, qwords = as_words(codes), as_words(queries)
        index = faiss.IndexBinaryFlat(bits)
        index.add(codes)
        for threads in (1, 2):
            set_num_threads(threads)
            faiss.omp_set_num_threads(threads)
            for batch in (1, 100):
                methods = {
                    "bitsearch": lambda b=batch, qw=qwords, w=words: hamming_topk(qw[:b], w, args.k),
                    "faiss": lambda b=batch, ix=index, q=queries: ix.search(q[:b], args.k),
                }
                if not args.no_usearch:
                    methods["usearch"] = lambda b=batch, t=threads, c=codes, q=queries: usearch_search(
                        c, q[:b], args.k, MetricKind.Hamming, exact=True, threads=t, dtype=ScalarKind.B1
                    )
                times: dict[str, list[float]] = {m: [] for m in methods}
                for f in methods.values():
                    f()
                for _ in range(args.reps * (3 if batch == 1 else 1)):
                    for name, f in methods.items():
                        s = time.perf_counter()
                        f()
                        times[name].append(time.perf_counter() - s)
                med = {m: statistics.median(v) / batch for m, v in times.items()}
                ratio = med["faiss"] / med["bitsearch"]
                row = (bits, threads, batch, med, ratio)
                lines.append(row)
                print(
                    f"{bits} bits, {threads} thr, batch {batch}: "
                    + "  ".join(f"{m} {1e6 * v:,.0f} us" for m, v in med.items())
                    + f"  faiss/bitsearch {ratio:.2f}x",
                    flush=True,
                )
    set_num_threads(2)
    cmd = " ".join(["python", "benchmarks/bench_kernels.py", *sys.argv[1:]])
    names = list(lines[0][3])
    body = "\n".join(
        [
            f"## Stage-1 kernel vs FAISS IndexBinaryFlat, exact top-{args.k} over {args.n:,} codes (issue 5, item 2)",
            "",
            f"Command: `{cmd}`  ",
            f"Machine: {machine()}; shared with other jobs (noisy): methods interleaved in every repetition.  ",
            "Codes: sign bits of " + "; ".join(sources) + ". Queries: 100 fresh draws.",
            "",
            "| bits | threads | queries per call | " + " | ".join(f"{m} us/query" for m in names)
            + " | FAISS / bitsearch |",
            "|---|---|---|" + "---|" * len(names) + "---|",
            *(
                f"| {b} | {t} | {q} | " + " | ".join(f"{1e6 * med[m]:,.1f}" for m in names) + f" | **{r:.2f}x** |"
                for b, t, q, med, r in lines
            ),
            "",
            "Target >= 1x in every row: " + ("met." if all(r >= 1 for *_, r in lines) else "NOT met in every row."),
        ]
    )  # fmt: skip
    print(body)
    if not args.no_write:
        write_section("kernels", body)


if __name__ == "__main__":
    main()
