"""How an evaluation's `Report` is written: a markdown table, a JSON file that `load_report` reads back,
and the plots."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bitsearch.files import write_atomic

from .cache import slug
from .plots import plot_report
from .records import ConfigResult, Report

__all__ = [
    "SUMMARY_CONFIGS",
    "ConfigResult",
    "Report",
    "load_report",
    "markdown_table",
    "summary_table",
    "write_report",
]

SUMMARY_CONFIGS = ("int8", "binary", "binary+binary@4", "binary+int8@4", "binary+int8+float32@4", "binary+int8@4/d128")


def _fmt_bytes(b: float) -> str:
    if np.isnan(b):
        return "?"
    return f"{b:,.0f}" if b >= 10 else f"{b:.1f}"


def markdown_table(report: Report) -> str:
    """The results as a markdown table: absolute scores, % of float32, memory, build, speed."""
    ndcg, recall, mrr = report.metrics
    ref = report.results[0]
    head = (
        f"| configuration | {ndcg} | % f32 | {recall} | % f32 | {mrr} | % f32 "
        "| RAM B/doc | disk B/doc | RAM vs f32 | build s | p50 ms | p95 ms | batch q/s |"
    )
    lines = [head, "|" + "---|" * 14]
    for r in report.results:
        smaller = f"{ref.ram_bytes_per_doc / r.ram_bytes_per_doc:.1f}x" if r.ram_bytes_per_doc > 0 else "-"
        lines.append(
            f"| `{r.name}` | {r.metrics[ndcg]:.4f} | {r.kept[ndcg]:.1f}% "
            f"| {r.metrics[recall]:.4f} | {r.kept[recall]:.1f}% "
            f"| {r.metrics[mrr]:.4f} | {r.kept[mrr]:.1f}% "
            f"| {_fmt_bytes(r.ram_bytes_per_doc)} | {_fmt_bytes(r.disk_bytes_per_doc)} "
            f"| {smaller} | {r.build_s:.2f} | {r.latency_p50_ms:.3f} | {r.latency_p95_ms:.3f} "
            f"| {r.batch_qps:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def load_report(path: str | os.PathLike[str]) -> Report:
    """Read back a report written by `write_report` (its JSON file)."""
    data = json.loads(Path(path).read_text())
    data.pop("command", None)
    data["results"] = [ConfigResult(**r) for r in data["results"]]
    return Report(**data)


def summary_table(reports: Sequence[Report], configs: Sequence[str] = SUMMARY_CONFIGS) -> str:
    """One row per dataset: float32's first metric (NDCG@10), then % of it kept by each configuration."""
    metric = reports[0].metrics[0]
    head = f"| dataset (docs, queries) | float32 {metric} | " + " | ".join(f"`{c}`" for c in configs) + " |"
    lines = [head, "|" + "---|" * (len(configs) + 2)]
    for rep in reports:
        cells = []
        for c in configs:
            r = next((x for x in rep.results if x.name == c), None)
            cells.append(f"{r.kept[metric]:.1f}%" if r is not None else "-")
        ref = rep.results[0].metrics[metric]
        row = f"| {rep.dataset} ({rep.documents:,}, {rep.queries}) | {ref:.4f} | " + " | ".join(cells) + " |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def _environment_line(env: dict[str, Any]) -> str:
    threads = env.get("threads")
    parts = [
        f"{env.get('cpus')} CPUs",
        f"search threads: {'library default' if threads is None else threads}",
        f"numpy {env.get('numpy')}",
        f"python {env.get('python')}",
    ]
    if env.get("loadavg_1_5_15"):
        parts.append(f"load average {env['loadavg_1_5_15'][0]} at start, {env.get('loadavg_end', ['?'])[0]} at end")
    return f"Measured {env.get('date', '')}: " + ", ".join(parts) + ".\n"


def write_report(
    report: Report, out_dir: str | os.PathLike[str], *, plots: bool = True, command: str | None = None
) -> dict[str, Path]:
    """Write `<dataset>.md`, `<dataset>.json` and the PNG plots into `out_dir`; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = slug(report.dataset)
    data = report.to_dict()
    if command:
        data["command"] = command
    paths: dict[str, Path] = {"json": out / f"{prefix}.json", "markdown": out / f"{prefix}.md"}
    write_atomic(paths["json"], json.dumps(data, indent=1).encode())
    md = [
        (f"## {report.dataset}: {report.documents:,} documents, {report.queries} queries, model `{report.model}`\n"),
        *([f"Command: `{command}`\n"] if command else []),
        (
            f"Search depth k={report.k} for {report.metrics[0]} and {report.metrics[2]}, "
            f"k={report.recall_k} for {report.metrics[1]}; rescoring takes k x multiplier candidates.\n"
        ),
        markdown_table(report),
        _environment_line(report.environment),
    ]
    if plots:
        for p in plot_report(report, out, prefix):
            paths[p.stem.rsplit("-", 1)[-1]] = p
            md.append(f"![{p.stem}]({p.name})\n")
    write_atomic(paths["markdown"], "\n".join(md).encode())
    return paths
