"""The grid run: each configuration built into a real `Collection` in a temporary folder, every query searched
through `Collection.search`, scored with ranx (NDCG@k, Recall@recall_k, MRR@k) and timed."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .cache import EncoderLike, embed_dataset
from .configs import Config, select_configs, with_reference
from .datasets import Dataset, load_dataset
from .records import ConfigResult, Report

if TYPE_CHECKING:
    from bitsearch.collection import Collection

__all__ = ["compute_metrics", "evaluate", "run_config"]


def compute_metrics(
    qrels: dict[str, dict[str, int]],
    run: dict[str, dict[str, float]],
    metrics: Sequence[str] = ("ndcg@10", "recall@100", "mrr@10"),
) -> dict[str, float]:
    """Mean ranx metrics of `run` against `qrels` over every judged query (unanswered -> 0)."""
    from ranx import Qrels, Run
    from ranx import evaluate as ranx_evaluate

    judged = {q: {d: int(r) for d, r in docs.items()} for q, docs in qrels.items() if docs}
    full_run: dict[str, dict[str, float]] = {}
    for q in judged:
        hits = run.get(q) or {}
        # ranx needs every judged query in the run; an empty answer is one impossible document.
        full_run[q] = {d: float(s) for d, s in hits.items()} or {"\x00no-hit": 0.0}
    # ranx's ndcg kernel casts uint64 -> int64: a harmless warning when numba compiles it (in colour on a terminal)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(\x1b\[[0-9;]*m)*unsafe cast from uint64 to int64")
        scores = ranx_evaluate(Qrels(judged), Run(full_run), list(metrics), make_comparable=False)
    if isinstance(scores, float | np.floating):
        scores = {metrics[0]: scores}
    return {m: float(scores[m]) for m in metrics}


def _jsonable(value: Any) -> Any:
    """Stats from the collection as plain JSON (numpy scalars and paths become numbers/strings)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _bytes_per_doc(config: Config, stats: dict[str, Any], documents: int) -> tuple[float, float]:
    """(RAM bytes, disk bytes) per document of what the configuration searches.

    Dense: the stages' codes from `Collection.stats()["stages"]` (what changes between configurations;
    the id/text store and per-row bookkeeping, the same for all, stay in the stats kept in the JSON).
    Keyword: nothing in RAM, `docs.sqlite` (ids, texts, FTS5 index) on disk. Hybrid: both.
    """
    n = max(int(stats.get("rows") or stats.get("documents") or 0), 1)
    stages = stats.get("stages") or {}
    ram = sum(float(v.get("ram_bytes", 0)) for v in stages.values()) / n
    disk = sum(float(v.get("disk_bytes", 0)) for v in stages.values()) / n
    if not config.needs_texts:
        return ram, disk
    docs_disk = float(stats.get("docs_disk_bytes", 0)) / max(documents, 1)
    return (0.0, docs_disk) if config.mode == "keyword" else (ram, disk + docs_disk)


def _run_dict(results: Any, query_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    return {qid: {str(hit.id): float(hit.score) for hit in hits} for qid, hits in zip(query_ids, results, strict=True)}


def _build(
    config: Config, dataset: Dataset, doc_emb: np.ndarray, path: Path, model_info: dict[str, Any] | None
) -> Collection:
    """A collection of the dataset's documents built as `config` says (texts stored when its mode needs them)."""
    from bitsearch import Collection

    col = Collection.create(
        path,
        int(doc_emb.shape[1]),
        precision=config.precision,
        keep_int8=config.keep_int8,
        keep_float32=config.keep_float32,
        model=model_info,
        truncate_dim=config.truncate_dim,
        **config.create_options(),
    )
    if config.needs_texts:  # the collection rejects empty texts (two Cranfield documents)
        col.add(doc_emb, ids=list(dataset.doc_ids), texts=[t if t.strip() else None for t in dataset.doc_texts])
    else:
        col.add(doc_emb, ids=list(dataset.doc_ids))
    return col


def _searcher(col: Collection, config: Config, query_emb: np.ndarray, query_texts: list[str]) -> Callable[..., Any]:
    """`search(rows, depth)`: the queries `rows` (a slice or one index) searched as `config` says."""
    rescore: Any = list(config.rescore) if config.rescore else None
    if rescore is not None and len(rescore) == 1:
        rescore = rescore[0]

    def search(rows: slice | int, depth: int) -> Any:
        texts = query_texts[rows] if config.needs_texts else None
        if config.mode == "keyword":
            return col.search(None, k=depth, mode="keyword", query_texts=texts)
        return col.search(
            query_emb[rows],
            k=depth,
            rescore_multiplier=config.multiplier,
            rescore=rescore,
            **({"mode": config.mode, "query_texts": texts} if config.needs_texts else {}),
        )

    return search


def _latencies(search: Callable[..., Any], queries: int, k: int, repeats: int) -> np.ndarray:
    """Seconds per query searched one at a time, the fastest of `repeats` passes for each query (as timeit
    does): that filters out other processes taking the CPU on a shared machine."""
    lat = np.empty((max(1, repeats), queries))
    for rep in range(lat.shape[0]):
        for i in range(queries):
            t0 = time.perf_counter()
            search(i, k)
            lat[rep, i] = time.perf_counter() - t0
    return lat.min(axis=0)


def run_config(
    config: Config,
    dataset: Dataset,
    doc_emb: np.ndarray,
    query_emb: np.ndarray,
    *,
    k: int = 10,
    recall_k: int = 100,
    workdir: str | os.PathLike[str] | None = None,
    model_info: dict[str, Any] | None = None,
    repeats: int = 3,
) -> ConfigResult:
    """Build a collection for `config` in a temporary folder, search every query, measure it all.

    NDCG@k and MRR@k come from a k-deep search, Recall@recall_k from a recall_k-deep one, both with
    the configuration's rescore multiplier (candidates = depth x multiplier), as a user would run them.
    Keyword and hybrid configurations store the dataset's texts (empty ones as None) and search with
    the query strings; their latency includes the SQLite FTS5 query.
    """
    from bitsearch.quantize import truncate_embeddings

    if config.truncate_dim is not None:
        doc_emb = truncate_embeddings(doc_emb, config.truncate_dim)
        query_emb = truncate_embeddings(query_emb, config.truncate_dim)
    with tempfile.TemporaryDirectory(prefix="bitsearch-eval-", dir=workdir) as tmp:
        t0 = time.perf_counter()
        col = _build(config, dataset, doc_emb, Path(tmp) / "col", model_info)
        build_s = time.perf_counter() - t0
        stats = _jsonable(col.stats())
        search = _searcher(col, config, query_emb, list(dataset.query_texts))
        search(slice(0, min(8, len(query_emb))), k)  # warm-up: compile kernels, fill caches
        batch_times = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            results = search(slice(None), k)
            batch_times.append(time.perf_counter() - t0)
        deep = search(slice(None), recall_k)
        lat = _latencies(search, len(query_emb), k, repeats)
        col.close()
    metrics = compute_metrics(dataset.qrels, _run_dict(results, dataset.query_ids), (f"ndcg@{k}", f"mrr@{k}"))
    metrics.update(compute_metrics(dataset.qrels, _run_dict(deep, dataset.query_ids), (f"recall@{recall_k}",)))
    ram, disk = _bytes_per_doc(config, stats, len(dataset.doc_ids))
    return ConfigResult(
        name=config.name,
        precision=config.precision,
        rescore=list(config.rescore),
        multiplier=config.multiplier,
        dim=int(doc_emb.shape[1]),
        truncate_dim=config.truncate_dim,
        metrics={m: metrics[m] for m in (f"ndcg@{k}", f"recall@{recall_k}", f"mrr@{k}")},
        ram_bytes_per_doc=ram,
        disk_bytes_per_doc=disk,
        build_s=build_s,
        latency_p50_ms=float(np.percentile(lat, 50) * 1e3),
        latency_p95_ms=float(np.percentile(lat, 95) * 1e3),
        batch_qps=len(query_emb) / min(batch_times),
        stats=stats,
        mode=config.mode,
    )


def _environment() -> dict[str, Any]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if hasattr(os, "getloadavg"):  # other jobs on the machine make latencies noisy: record them
        env["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    for dist in ("bitsearch", "sentence-transformers", "torch", "ranx"):
        try:
            env[dist] = version(dist)
        except PackageNotFoundError:
            env[dist] = None
    return env


@contextlib.contextmanager
def _thread_limit(threads: int | None) -> Iterator[None]:
    """Cap BLAS (threadpoolctl) and numba (stage-1 kernels) threads inside the block."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    import numba
    from threadpoolctl import threadpool_limits

    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        numba.set_num_threads(before)


def _embeddings(
    ds: Dataset,
    encoder: EncoderLike | None,
    model: str | None,
    embeddings: tuple[np.ndarray, np.ndarray] | None,
    cache: str | os.PathLike[str] | None,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray, EncoderLike | None]:
    """(documents, queries, encoder): `embeddings` when given, else the encoder's (default `Encoder(model)`)
    through the on-disk cache."""
    if embeddings is None:
        if encoder is None:
            from bitsearch.encode import Encoder

            encoder = Encoder(model)
        doc_emb, query_emb = embed_dataset(ds, encoder, cache=cache, show_progress=progress)
    else:
        doc_emb, query_emb = (np.asarray(e, dtype=np.float32) for e in embeddings)
    if doc_emb.shape[0] != len(ds.doc_ids) or query_emb.shape[0] != len(ds.query_ids):
        raise ValueError("embeddings do not match the dataset's documents and queries")
    return doc_emb, query_emb, encoder


def evaluate(
    dataset: Dataset | str | os.PathLike[str],
    encoder: EncoderLike | None = None,
    *,
    model: str | None = None,
    configs: str | Sequence[str] | Sequence[Config] | None = None,
    k: int = 10,
    recall_k: int = 100,
    embeddings: tuple[np.ndarray, np.ndarray] | None = None,
    cache: str | os.PathLike[str] | None = None,
    progress: bool = True,
    repeats: int = 3,
    threads: int | None = None,
) -> Report:
    """Run the configuration grid on `dataset` and return the report (see `write_report`).

    Embeddings come from `embeddings`, else from `encoder` (default: `Encoder(model)`) through
    the on-disk cache. The float32 configuration is always run: it is the 100% reference.
    `threads` caps BLAS and numba threads while searching (None: library defaults): on a small or
    shared machine, multi-threaded BLAS makes one-query-at-a-time latency erratic.
    """
    from tqdm.auto import tqdm

    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset)
    doc_emb, query_emb, encoder = _embeddings(ds, encoder, model, embeddings, cache, progress)
    if configs is not None and not isinstance(configs, str) and all(isinstance(c, Config) for c in configs):
        chosen = with_reference(configs)  # type: ignore[arg-type]
    else:
        chosen = select_configs(configs, int(doc_emb.shape[1]))  # type: ignore[arg-type]
    info: dict[str, Any] | None = None
    if encoder is not None:
        info = encoder.manifest_info() if hasattr(encoder, "manifest_info") else {"name": encoder.name}
    environment = _environment()
    environment["threads"] = threads
    results = []
    bar = tqdm(chosen, desc=f"eval {ds.name}", unit="config", disable=not progress)
    with _thread_limit(threads):
        for cfg in bar:
            bar.set_postfix_str(cfg.name)
            results.append(
                run_config(cfg, ds, doc_emb, query_emb, k=k, recall_k=recall_k, model_info=info, repeats=repeats)
            )
    if hasattr(os, "getloadavg"):
        environment["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    ref = results[0].metrics
    for r in results:
        r.kept = {m: (100.0 * v / ref[m] if ref[m] > 0 else float("nan")) for m, v in r.metrics.items()}
    return Report(
        dataset=ds.name,
        documents=len(ds.doc_ids),
        queries=len(ds.query_ids),
        model=(encoder.name if encoder is not None else "precomputed embeddings"),
        k=k,
        recall_k=recall_k,
        metrics=list(results[0].metrics),
        results=results,
        environment=environment,
    )
