"""Resident memory of an open collection: 1,000,000 x 384-dim, binary codes in RAM, int8 rows on disk.

Builds the collection once (vectors drawn from a Gaussian fitted to real MiniLM embeddings of SciFact
when the embedding cache has them, else isotropic), then in a fresh process measures RSS before
opening, after opening and after 200 searches with int8 rescoring. Target: growth <= 1.3 x the binary
codes' size + 100 MB.

    python benchmarks/bench_memory.py [--n 1000000] [--dim 384] [--dir /tmp/bitsearch-bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section
from _synthetic import synthetic_embeddings

MEASURE = textwrap.dedent(
    """
    import json, sys, time, numpy as np, psutil
    from bitsearch import Collection
    proc = psutil.Process()
    # warm the kernels up on a tiny collection so JIT memory is not charged to the collection
    import tempfile
    tiny = Collection.create(tempfile.mkdtemp() + "/t", {dim}, calibration_embeddings=np.eye(4, {dim}))
    tiny.add(np.random.default_rng(0).normal(size=(100, {dim})).astype(np.float32))
    tiny.search(np.ones({dim}, np.float32), k=10)
    tiny.search(np.ones((3, {dim}), np.float32), k=10)
    base = proc.memory_info().rss
    t0 = time.perf_counter()
    col = Collection.open(sys.argv[1])
    t_open = time.perf_counter() - t0
    opened = proc.memory_info().rss
    rng = np.random.default_rng(1)
    q = rng.normal(size=(200, {dim})).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    lat = []
    for i in range(200):
        t0 = time.perf_counter()
        col.search(q[i], k=10, rescore_multiplier=4, rescore="int8")
        lat.append(time.perf_counter() - t0)
    searched = proc.memory_info().rss
    st = col.stats()
    print(json.dumps({{"base": base, "opened": opened, "searched": searched, "open_s": t_open,
                      "p50_ms": 1e3 * float(np.median(lat)), "stats": st}}))
    """
)


def build(path: Path, n: int, dim: int) -> tuple[float, str]:
    from bitsearch import Collection

    gen, source = synthetic_embeddings(dim, seed=0)
    t0 = time.perf_counter()
    col = Collection.create(path, dim, calibration_embeddings=gen(20_000))
    chunk = 100_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        col.add(gen(m), ids=list(range(start, start + m)))
    return time.perf_counter() - t0, source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/bitsearch-bench"))
    ap.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = ap.parse_args()
    path = args.dir / f"mem-{args.n}x{args.dim}"
    build_s = None
    if not (path / "manifest.json").exists():
        build_s, source = build(path, args.n, args.dim)
        (args.dir / f"{path.name}.source.txt").write_text(source)
        print(f"built {args.n} x {args.dim} in {build_s:.1f} s ({source})")
    source_file = args.dir / f"{path.name}.source.txt"
    source = source_file.read_text() if source_file.exists() else "an existing collection"
    out = subprocess.run(
        [sys.executable, "-c", MEASURE.format(dim=args.dim), str(path)], capture_output=True, text=True, check=True
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    codes = r["stats"]["stages"]["binary"]["ram_bytes"]
    growth = r["searched"] - r["base"]
    limit = 1.3 * codes + 100 * 2**20
    mib = 2**20
    disk = sum(v["disk_bytes"] for v in r["stats"]["stages"].values())
    lines = [
        "## Resident memory of an open collection (issue 2)",
        "",
        f"Command: `python benchmarks/bench_memory.py --n {args.n} --dim {args.dim}`  ",
        f"Machine: {machine()}  ",
        f"Vectors: {source}.",
        "",
        "| what | value |",
        "|---|---|",
        f"| documents x dim | {args.n:,} x {args.dim} |",
        f"| binary codes (in RAM) | {codes / mib:.1f} MiB |",
        f"| int8 rows + ids on disk (read on demand with pread) | {disk / mib:.1f} MiB |",
        f"| RSS growth after open | {(r['opened'] - r['base']) / mib:.1f} MiB |",
        f"| RSS growth after 200 searches (binary + int8 rescore, k=10, x4) | {growth / mib:.1f} MiB |",
        f"| limit: 1.3 x codes + 100 MB | {limit / mib:.1f} MiB |",
        f"| within limit | {'yes' if growth <= limit else 'NO'} |",
        f"| open time | {r['open_s']:.2f} s |",
        f"| single-query latency p50 | {r['p50_ms']:.2f} ms |",
    ]
    if build_s is not None:
        lines.append(f"| build time (quantize + write) | {build_s:.1f} s |")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("memory", body)
    if growth > limit:
        sys.exit(1)


if __name__ == "__main__":
    main()
