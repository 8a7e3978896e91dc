"""Beyond plain sign bits: quality, bytes and stage-1 speed of each low-bit option (issue 8).

Part 1, quality: every shared retrieval dataset embedded with the packaged all-MiniLM-L6-v2 (cached),
each option built through the real Collection path; NDCG@10 as % of float32, with no rescoring and
with int8 rescoring of 4 x k candidates.
Part 2, speed: a 1M x 384 synthetic collection per option (Gaussian fitted to real MiniLM vectors),
median stage-1 time of one query at a time and of a batch of 100, as a ratio to plain Hamming search
on the same vectors, measured in the same run.

    python benchmarks/bench_codes.py [--datasets scifact npl cisi cranfield] [--n 1000000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, results_ndcg, write_section
from _synthetic import synthetic_embeddings

from bitsearch import Collection
from bitsearch.encode import Encoder
from bitsearch.evaluate import embed_dataset, load_dataset

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# name -> (Collection.create options, bits per dimension in RAM)
OPTIONS: dict[str, tuple[dict, dict, float]] = {
    "binary, Hamming (plain sign)": ({"stage1": "hamming"}, {}, 1),
    "binary, auto (default: Hamming top 16 x k, then asymmetric)": ({}, {}, 1),
    "binary, asymmetric, full scan": ({"stage1": "asymmetric"}, {"exact": True}, 1),
    "binary, centred": ({"centering": True}, {}, 1),
    "binary, rotated": ({"rotation": True}, {}, 1),
    "binary, Hamming, rotated": ({"stage1": "hamming", "rotation": True}, {}, 1),
    "binary, 4-bit query": ({"query_bits": 4}, {}, 1),
    "binary, 8-bit query": ({"query_bits": 8}, {}, 1),
    "binary, 4-bit query, full scan": ({"query_bits": 4}, {"exact": True}, 1),
    "1.5bit (default: median + pair planes, top 16 x k)": ({"precision": "1.5bit"}, {}, 1.5),
    "1.5bit, full scan": ({"precision": "1.5bit"}, {"exact": True}, 1.5),
    "1.5bit, rotated, full scan": ({"precision": "1.5bit", "rotation": True}, {"exact": True}, 1.5),
    "2bit (default: rotated, median-plane top 16 x k)": ({"precision": "2bit"}, {}, 2),
    "2bit, rotated, full scan": ({"precision": "2bit"}, {"exact": True}, 2),
    "2bit, not rotated, full scan": ({"precision": "2bit", "rotation": False}, {"exact": True}, 2),
}


def quality(datasets: list[str]) -> tuple[list[str], dict[str, dict[str, tuple[float, float]]], dict[str, float]]:
    enc = Encoder()
    table: dict[str, dict[str, tuple[float, float]]] = {name: {} for name in OPTIONS}
    base: dict[str, float] = {}
    for ds_name in datasets:
        ds = load_dataset(DATA / ds_name)
        doc, qry = embed_dataset(ds, enc, show_progress=True)

        def ndcg(col: Collection, ds=ds, qry=qry, **kw: object) -> float:
            return results_ndcg(ds, col.search(qry, k=10, **kw))

        with tempfile.TemporaryDirectory() as tmp:
            ref = Collection.create(Path(tmp) / "f", doc.shape[1], precision="float32", keyword_index=False)
            ref.add(doc, ids=list(ds.doc_ids))
            base[ds_name] = ndcg(ref)
            for name, (opts, search_opts, _) in OPTIONS.items():
                col = Collection.create(Path(tmp) / str(abs(hash(name))), doc.shape[1], keyword_index=False, **opts)
                col.add(doc, ids=list(ds.doc_ids))
                table[name][ds_name] = (
                    ndcg(col, rescore=None, **search_opts),
                    ndcg(col, rescore="int8", rescore_multiplier=4, **search_opts),
                )
        print(ds_name, "float32", round(base[ds_name], 4), flush=True)
    return datasets, table, base


def speed(n: int, dim: int = 384, reps: int = 15, batch_reps: int = 3) -> dict[str, tuple[float, float]]:
    gen, _ = synthetic_embeddings(dim, seed=0)
    doc = np.concatenate([gen(min(200_000, n - i)) for i in range(0, n, 200_000)])
    q = gen(100)
    out: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        cols = {}
        for name, (opts, _, _) in OPTIONS.items():
            col = Collection.create(Path(tmp) / str(abs(hash(name))), dim, keyword_index=False, keep_int8=False, **opts)
            col.add(doc)
            cols[name] = col
        single: dict[str, list[float]] = {name: [] for name in OPTIONS}
        batch: dict[str, list[float]] = {name: [] for name in OPTIONS}
        for name, col in cols.items():  # warm up: compile kernels
            col.search(q[:2], k=10, rescore=None, **OPTIONS[name][1])
        for r in range(reps):  # interleaved, so load on the machine hits every option alike
            for name, col in cols.items():
                kw = OPTIONS[name][1]
                single[name].append(col.search(q[r % 100], k=10, rescore=None, **kw).timings["stage1"])
                if r < batch_reps:
                    t0 = time.perf_counter()
                    col.search(q, k=10, rescore=None, **kw)
                    batch[name].append((time.perf_counter() - t0) / len(q))
        for name in OPTIONS:
            out[name] = (statistics.median(single[name]), statistics.median(batch[name]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="*", default=["scifact", "npl", "cisi", "cranfield"])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    names, table, base = quality(args.datasets)
    timing = speed(args.n)
    plain = "binary, Hamming (plain sign)"
    head = "| option | bits/dim | " + " | ".join(f"{d} no rescore | {d} +int8@4" for d in names) + " |"
    sep = "|---|---|" + "---|---|" * len(names)
    lines = [
        "## Beyond plain sign bits (issue 8)",
        "",
        f"Command: `python benchmarks/bench_codes.py --datasets {' '.join(names)} --n {args.n}`  ",
        f"Machine: {machine()}  ",
        "NDCG@10 as % of float32 (all-MiniLM-L6-v2; float32 NDCG@10: "
        + ", ".join(f"{d} {base[d]:.4f}" for d in names)
        + "). 'no rescore': stage 1 alone, nothing but the codes stored; '+int8@4': int8 rows rescore 40 "
        "candidates. Asymmetric = the float query against each code's bucket means (table lookup); B-bit "
        "query = its weights rounded to B bits, scored by popcounts per bit plane. Without 'full scan', "
        "only the Hamming top 16 x k on the sign (median) plane are scored: the default.",
        "",
        head,
        sep,
    ]
    for name, (_, _, bits) in OPTIONS.items():
        cells = " | ".join(
            f"{100 * table[name][d][0] / base[d]:.2f}% | {100 * table[name][d][1] / base[d]:.2f}%" for d in names
        )
        lines.append(f"| {name} | {bits:g} | {cells} |")
    lines += [
        "",
        f"Stage-1 time on {args.n:,} x 384 synthetic vectors (Gaussian fitted to MiniLM), k=10, medians, "
        "ratio to plain Hamming in the same run:",
        "",
        "| option | RAM bytes/doc | one query ms | x Hamming | batch of 100, ms/query | x Hamming |",
        "|---|---|---|---|---|---|",
    ]
    for name, (_, _, bits) in OPTIONS.items():
        s, b = timing[name]
        s0, b0 = timing[plain]
        nbytes = {1: 48, 1.5: 72, 2: 96}[bits]
        lines.append(f"| {name} | {nbytes} | {1e3 * s:.2f} | {s / s0:.2f} | {1e3 * b:.3f} | {b / b0:.2f} |")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("codes", body)


if __name__ == "__main__":
    main()
