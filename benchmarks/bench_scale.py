"""Approximate stage 1 at scale: BinaryIVF over 10M x 384-bit codes, latency/recall curve over nprobe.

Codes are signs of synthetic vectors (Gaussian fitted to real MiniLM embeddings, see _synthetic.py),
cached under --dir. Recall@10 is measured against the exact stage 1 (bitsearch.kernels.hamming_topk)
on the same codes; queries are fresh draws from the same distribution. Reports build time (train +
add), index bytes, peak RSS, and per nprobe the median single-query latency and recall@10.
Optionally the same for FAISS IndexBinaryIVF (--faiss; its add is much slower). Target (issue 5):
< 10 ms per query at recall@10 >= 0.95.

    python benchmarks/bench_scale.py [--n 10000000] [--dim 384] [--nlist 4096] [--queries 200] [--faiss]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, median_time, write_section
from _synthetic import synthetic_embeddings

from bitsearch import quantize_embeddings
from bitsearch.kernels import BinaryIVF, hamming_topk, set_num_threads

NPROBES = (16, 32, 64, 128, 256, 384, 512, 768, 1024)


def synthetic_codes(n: int, dim: int, directory: Path, seed: int = 0) -> tuple[np.ndarray, str]:
    """(n, dim/8) ubinary codes of synthetic vectors, cached as .npy in ``directory``."""
    gen, source = synthetic_embeddings(dim, seed=seed)
    path = directory / f"codes-{n}x{dim}-seed{seed}.npy"
    if path.exists():
        return np.load(path, mmap_mode=None), source
    directory.mkdir(parents=True, exist_ok=True)
    out = np.empty((n, dim // 8), np.uint8)
    for s in range(0, n, 250_000):
        e = min(n, s + 250_000)
        out[s:e] = quantize_embeddings(gen(e - s), "ubinary")
        print(f"  generated {e:,}/{n:,}", end="\r", flush=True)
    print()
    np.save(path.with_suffix(".tmp.npy"), out)
    path.with_suffix(".tmp.npy").replace(path)
    return out, source


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the exact top-k rows found."""
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--nlist", type=int, default=4096)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--faiss", action="store_true", help="also FAISS IndexBinaryIVF (slow add)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/bitsearch-bench"))
    ap.add_argument("--reuse", action="store_true", help="load the IVF a previous run saved in --dir")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    set_num_threads(args.threads)
    proc = psutil.Process()
    t0 = time.perf_counter()
    codes, source = synthetic_codes(args.n, args.dim, args.dir)
    qcodes = quantize_embeddings(synthetic_embeddings(args.dim, seed=12345)[0](args.queries), "ubinary")
    print(f"codes ready in {time.perf_counter() - t0:.0f} s ({codes.nbytes / 1e6:.0f} MB)", flush=True)
    t0 = time.perf_counter()
    truth, truth_dist = hamming_topk(qcodes, codes, args.k)
    t_exact_batch = time.perf_counter() - t0
    t_exact_one = median_time(lambda: hamming_topk(qcodes[:1], codes, args.k), repeat=5)
    rss0 = proc.memory_info().rss
    saved = args.dir / f"ivf-{args.n}x{args.dim}-nlist{args.nlist}"
    if args.reuse and (saved / "build.json").exists():  # latency sweep again without rebuilding
        ivf = BinaryIVF.load(saved)
        t_train, t_add = json.loads((saved / "build.json").read_text())
        print(f"IVF loaded from {saved} (build times from its first run)", flush=True)
    else:
        t0 = time.perf_counter()
        ivf = BinaryIVF.train(codes, args.nlist, seed=0)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        ivf.add(codes)
        t_add = time.perf_counter() - t0
        ivf.save(saved)
        (saved / "build.json").write_text(json.dumps([t_train, t_add]))
    rss1 = proc.memory_info().rss
    print(f"IVF trained in {t_train:.1f} s, added in {t_add:.1f} s, {ivf.nbytes / 1e6:.0f} MB", flush=True)
    sizes = np.diff(ivf.offsets)
    rows = []
    ties = []
    for rank in ("expected", "hamming"):
        for nprobe in NPROBES if rank == "expected" else NPROBES[3:-2]:
            found, dist = ivf.search(qcodes, args.k, nprobe=nprobe, rank=rank)
            r = recall(found, truth)
            # a row at the same Hamming distance as the exact k-th is as good a stage-1 candidate
            ties.append(float(np.mean(dist <= truth_dist[:, -1:])))
            lat = [
                median_time(lambda i=i, p=nprobe, r=rank: ivf.search(qcodes[i], args.k, nprobe=p, rank=r), repeat=3)
                for i in range(50)
            ]
            ms = 1e3 * float(np.median(lat))
            rows.append((f"bitsearch BinaryIVF, lists ranked by {rank} distance", nprobe, r, ms))
            print(f"{rank} nprobe {nprobe:4d}: recall@{args.k} {r:.3f} ({ties[-1]:.3f})  {ms:.2f} ms/query", flush=True)
    faiss_line = "FAISS IndexBinaryIVF: not run (pass --faiss)."
    if args.faiss:
        import faiss

        faiss.omp_set_num_threads(args.threads)
        quant = faiss.IndexBinaryFlat(args.dim)
        fidx = faiss.IndexBinaryIVF(quant, args.dim, args.nlist)
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        fidx.train(codes[np.sort(rng.choice(args.n, min(args.n, 256 * args.nlist), replace=False))])
        f_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        fidx.add(codes)
        f_add = time.perf_counter() - t0
        faiss_line = f"FAISS IndexBinaryIVF (same nlist): train {f_train:.1f} s, add {f_add:.1f} s."
        print(faiss_line, flush=True)
        for nprobe in NPROBES:
            fidx.nprobe = nprobe
            found = fidx.search(qcodes, args.k)[1]
            r = recall(found, truth)
            lat = [median_time(lambda i=i: fidx.search(qcodes[i : i + 1], args.k), repeat=3) for i in range(50)]
            ms = 1e3 * float(np.median(lat))
            rows.append(("FAISS IndexBinaryIVF", nprobe, r, ms))
            ties.append(float("nan"))
            print(f"faiss nprobe {nprobe:4d}: recall@{args.k} {r:.3f}  {ms:.2f} ms/query", flush=True)
    ok = [(p, r, ms) for name, p, r, ms in rows if "expected" in name and r >= 0.95 and ms < 10]
    verdict = (
        f"target met: nprobe {ok[0][0]} gives recall@{args.k} {ok[0][1]:.3f} at {ok[0][2]:.2f} ms/query"
        if ok
        else "target NOT met on this run"
    )
    cmd = " ".join(["python", "benchmarks/bench_scale.py", *sys.argv[1:]])
    body = "\n".join(
        [
            f"## Approximate stage 1 at scale: {args.n:,} x {args.dim}-bit codes (issue 5, item 5)",
            "",
            f"Command: `{cmd}`  ",
            f"Machine: {machine()} (shared with other jobs: timings are noisy)  ",
            f"Vectors: {source}; {args.queries} fresh queries from the same distribution; "
            f"recall@{args.k} against the exact stage 1 on the same codes; threads: {args.threads}.",
            "",
            f"Exact stage 1 for reference: {1e3 * t_exact_one:.1f} ms for one query, "
            f"{1e3 * t_exact_batch / args.queries:.2f} ms/query in a batch of {args.queries}.  ",
            f"BinaryIVF nlist={args.nlist}: train {t_train:.1f} s, add {t_add:.1f} s, index arrays "
            f"{ivf.nbytes / 1e6:.0f} MB (codes reordered {ivf.codes.nbytes / 1e6:.0f} MB + row ids "
            f"{ivf.rows.nbytes / 1e6:.0f} MB), RSS {rss0 / 2**30:.2f} -> {rss1 / 2**30:.2f} GiB "
            f"(peak {peak_rss_gib():.2f} GiB); list sizes min/median/max "
            f"{sizes.min()}/{int(np.median(sizes))}/{sizes.max()}.  ",
            faiss_line,
            "",
            f"| method | nprobe | lists scanned | recall@{args.k} (exact ids) | share of results within the exact "
            f"k-th distance | ms/query (median, one at a time) |",
            "|---|---|---|---|---|---|",
            *(
                f"| {name} | {p} | {100 * p / args.nlist:.1f}% | {r:.3f} | {t:.3f} | {ms:.2f} |"
                for (name, p, r, ms), t in zip(rows, ties, strict=True)
            ),
            "",
            f"Target < 10 ms at recall@{args.k} >= 0.95: {verdict}.",
        ]
    )
    print(body)
    if not args.no_write:
        write_section(f"scale-{args.dim}", body)


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, GiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


if __name__ == "__main__":
    main()
