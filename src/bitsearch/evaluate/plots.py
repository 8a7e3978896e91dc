"""The report's PNG plots (matplotlib, imported on first use): quality kept against RAM bytes per document
with its Pareto front, quality against the rescore multiplier, and latency per configuration."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cache import slug
from .configs import DEFAULT_MULTIPLIER
from .records import ConfigResult, Report

__all__ = ["label_groups", "label_points", "pareto_front", "plot_report"]

COLORS = {
    "float32": "tab:blue",
    "int8": "tab:orange",
    "2bit": "tab:red",
    "1.5bit": "tab:purple",
    "binary": "tab:green",
}
MODE_COLORS = {"keyword": "tab:brown", "hybrid": "tab:gray"}


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (bytes, quality) points no other point beats (fewer or equal bytes and higher quality)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def label_groups(xs: Sequence[float], ratio: float = 1.3) -> list[list[int]]:
    """Indices of points grouped by nearness on a log x axis: each group spans less than ``ratio``."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and xs[i] < xs[groups[-1][0]] * ratio:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def label_points(ax: Any, names: list[str], pts: list[tuple[float, float]]) -> None:
    """Label scatter points; labels of points near each other on the log x axis are stacked in one
    column to the right of the group, so that none overlap (e.g. 48 and 54 B/doc)."""
    ys = [y for _, y in pts]
    gap = max(max(ys) - min(ys), 1.0) * 0.028
    for idx in label_groups([x for x, _ in pts]):
        column = max(pts[i][0] for i in idx) * 1.12
        last = np.inf
        for i in sorted(idx, key=lambda i: -pts[i][1]):
            x, y = pts[i]
            ly = min(y, last - gap)
            last = ly
            moved = abs(ly - y) > 1e-9 or column != x * 1.12
            ax.annotate(
                names[i],
                (x, y),
                xytext=(column, ly),
                textcoords="data",
                fontsize=7,
                va="center",
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
                zorder=4,
                arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "gray"} if moved else None,
            )


def _title(report: Report) -> str:
    return f"{report.dataset} ({report.documents:,} docs, {report.queries} queries), {report.model}"


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_pareto(report: Report, path: Path) -> Path:
    """Quality kept vs bytes per document, Pareto front marked.

    The multiplier sweep has its own plot: only its x4 point is kept here, and no unmeasured bytes;
    dense configurations only (keyword holds nothing in RAM, hybrid needs the texts on disk).
    """
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    ndcg = report.metrics[0]
    rs = [
        r
        for r in report.results
        if r.mode == "dense"
        and not np.isnan(r.ram_bytes_per_doc)
        and not (r.rescore and r.multiplier != DEFAULT_MULTIPLIER and r.truncate_dim is None)
    ]
    pts = [(r.ram_bytes_per_doc, r.kept[ndcg]) for r in rs]
    front = pareto_front(pts)
    fig, ax = plt.subplots(figsize=(9, 6))
    for i, (r, (x, y)) in enumerate(zip(rs, pts, strict=True)):
        ax.scatter(
            x,
            y,
            c=COLORS.get(r.precision, "tab:gray"),
            marker="o" if r.truncate_dim is None else "s",
            s=60 if i in front else 25,
            edgecolors="black" if i in front else "none",
            zorder=5,  # above the labels' white boxes
        )
    label_points(ax, [r.name for r in rs], pts)
    fx = [pts[i][0] for i in front]
    fy = [pts[i][1] for i in front]
    ax.step(fx, fy, where="post", color="black", lw=1, ls="--", label="Pareto front", zorder=2)
    for p, c in COLORS.items():
        ax.scatter([], [], c=c, label=f"stage 1: {p}")
    ax.scatter([], [], c="gray", marker="s", label="Matryoshka-truncated")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("bytes per document held in RAM (log scale)")
    ax.set_ylabel(f"{ndcg} kept, % of float32")
    ax.set_title(f"Quality vs memory (rescore multiplier 4): {_title(report)}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def _plot_rescore(report: Report, mult: list[ConfigResult], path: Path) -> Path:
    """Quality vs rescore multiplier (full-dimension binary + int8 rescoring), single stages for reference."""
    import matplotlib.pyplot as plt

    ndcg = report.metrics[0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for metric, style in zip(report.metrics, ("o-", "s-", "^-"), strict=True):
        ax.plot([r.multiplier for r in mult], [r.kept[metric] for r in mult], style, label=metric)
    for name, ls in (("binary-hamming", ":"), ("binary", "-."), ("int8", "--")):
        ref = next((r for r in report.results if r.name == name), None)
        if ref is not None:
            ax.axhline(ref.kept[ndcg], ls=ls, color="gray", lw=1, label=f"{name} alone ({ndcg})")
    ax.axhline(100, color="black", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks([r.multiplier for r in mult], [str(r.multiplier) for r in mult])
    ax.set_xlabel("rescore multiplier (binary candidates = k x multiplier, rescored with int8)")
    ax.set_ylabel("% of float32")
    ax.set_title(f"binary + int8 rescoring: {_title(report)}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _plot_latency(report: Report, path: Path) -> Path:
    """Latency per configuration (one query at a time), with batch throughput."""
    import matplotlib.pyplot as plt

    rs = report.results
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rs) + 1.5))
    y = np.arange(len(rs))
    p50 = [r.latency_p50_ms for r in rs]
    p95 = [r.latency_p95_ms for r in rs]
    bar_colors = [MODE_COLORS.get(r.mode) or COLORS.get(r.precision, "tab:gray") for r in rs]
    ax.barh(y, p50, color=bar_colors, label="p50 (color: stage 1; brown: keyword, gray: hybrid)")
    ax.scatter(p95, y, marker="|", s=120, color="black", label="p95", zorder=3)
    for yi, r in zip(y, rs, strict=True):
        ax.annotate(
            f"{r.batch_qps:,.0f} q/s batch",
            (max(r.latency_p95_ms, r.latency_p50_ms), yi),
            fontsize=6,
            xytext=(4, -2),
            textcoords="offset points",
        )
    ax.set_yticks(y, [r.name for r in rs], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"latency per query, ms (one query at a time, k={report.k})")
    ax.set_title(f"Latency: {_title(report)}", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_report(report: Report, out_dir: str | os.PathLike[str], prefix: str | None = None) -> list[Path]:
    """Three PNGs: quality kept vs RAM bytes/doc (Pareto front), quality vs multiplier (when the report
    has a binary+int8 multiplier sweep), latency."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = prefix or slug(report.dataset)
    paths = [_plot_pareto(report, out / f"{prefix}-pareto.png")]
    mult = sorted(
        (
            r
            for r in report.results
            if r.mode == "dense" and r.precision == "binary" and r.rescore == ["int8"] and r.truncate_dim is None
        ),
        key=lambda r: r.multiplier,
    )
    if mult:
        paths.append(_plot_rescore(report, mult, out / f"{prefix}-rescore.png"))
    paths.append(_plot_latency(report, out / f"{prefix}-latency.png"))
    return paths
