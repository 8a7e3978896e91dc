"""Quality kept by binary search + int8 rescoring against float32, on a real BEIR dataset.

Embeds the dataset with the packaged all-MiniLM-L6-v2 (cached on disk after the first run), builds
each configuration through the real Collection search path and prints NDCG@10 side by side.
Target (issue 2): binary + int8 rescoring with rescore_multiplier=4 keeps >= 97% of float32 NDCG@10.

    python benchmarks/bench_quality.py [../shared/data/scifact]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_section

from bitsearch.encode import Encoder
from bitsearch.evaluate import embed_dataset, load_dataset, parse_config, run_config

CONFIGS = ("float32", "int8", "binary", "binary+binary@4", "binary+int8@4", "binary+int8+float32@4")


def main() -> None:
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", nargs="?", type=Path, default=default)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    ds = load_dataset(args.dataset)
    enc = Encoder()
    doc_emb, query_emb = embed_dataset(ds, enc, show_progress=True)
    rows, base = [], None
    for name in CONFIGS:
        r = run_config(parse_config(name), ds, doc_emb, query_emb, model_info=enc.manifest_info())
        ndcg = r.metrics["ndcg@10"]
        base = ndcg if base is None else base
        rows.append((name, ndcg, ndcg / base, r.ram_bytes_per_doc, r.latency_p50_ms))
        print(f"{name:24s} NDCG@10 {ndcg:.4f}  {100 * ndcg / base:6.2f}% of float32", flush=True)
    kept = dict((n, k) for n, _, k, _, _ in rows)["binary+int8@4"]
    body = "\n".join(
        [
            f"## Quality kept on {args.dataset.name} (issue 2)",
            "",
            f"Command: `python benchmarks/bench_quality.py {args.dataset}`  ",
            f"Machine: {machine()}  ",
            f"Model: {enc.name} ({len(ds.doc_ids):,} documents, {len(ds.query_ids)} queries); "
            "k=10; multiplier 4 = 40 stage-1 candidates.",
            "",
            "| configuration | NDCG@10 | % of float32 | RAM bytes/doc | p50 ms/query |",
            "|---|---|---|---|---|",
            *(f"| {n} | {s:.4f} | {100 * k:.2f}% | {b:.0f} | {lat:.3f} |" for n, s, k, b, lat in rows),
            "",
            f"binary + int8 rescoring (x4) keeps **{100 * kept:.2f}%** of float32 NDCG@10 (target >= 97%).",
        ]
    )
    print(body)
    if not args.no_write:
        write_section(f"quality-{args.dataset.name}", body)
    if kept < 0.97:
        sys.exit(1)


if __name__ == "__main__":
    main()
