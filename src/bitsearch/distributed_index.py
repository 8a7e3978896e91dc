"""Distributed indexing on Ray: read a corpus with Ray Data, encode it in a pool of actors, write a ShardedCollection.

The pipeline (``index_distributed``):

1. Calibration, before anything runs in parallel: the driver reads the first chunk of records that holds
   a valid document (what single-machine ``bitsearch index`` calibrates on), encodes it, and creates the
   sharded collection with those embeddings, so every shard gets the same int8 ranges and codebook
   (levels, thresholds, centering, rotation), recorded in the sharded manifest.
2. Ray Data reads the source (``read_text`` for JSON lines, parsed record by record like the
   single-machine reader; ``read_parquet`` for Parquet), a ``map_batches`` pool of ``encoders`` actors
   holds one encoder each (``num_gpus=1`` per actor when the cluster has GPUs) and encodes the documents
   that are not stored yet.
3. The driver takes the encoded batches in source order, applies the single-machine rules (malformed
   records, duplicate ids, record numbers as ids) and adds ``chunk_size`` documents at a time to the
   ShardedCollection, which routes each by the stable id hash (``shard_of``).

Resuming: every add is atomic per shard and idempotent by id (``skip_existing``), and a re-run's
encoders skip ids already stored, so re-running the same command after a kill stores the rest once.
JSON lines are read as text and parsed here rather than with ``ray.data.read_json``: pyarrow's JSON
reader infers one schema per block, so records with differing metadata fields fail or come back
null-filled, and one malformed line fails its whole block instead of being reported.

Ray is imported only here, and this module only by ``bitsearch index --ray``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .distributed import MANIFEST as SHARDED_MANIFEST
from .distributed import ShardedCollection, shard_of
from .errors import ClusterUnavailableError, CollectionError, InvalidInputError
from .indexing import IndexReport, check_settings
from .readers import Bad, Fields, beir_corpus, is_json_array, row_to_doc

__all__ = ["EncodeBatches", "index_distributed", "load_encoder", "connect", "source_files"]

STATE_NEW, STATE_STORED, STATE_BAD = 0, 1, 2
_SHARD_DIR = re.compile(r"^shard-\d+$")
_JSONL = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")
_PARQUET = (".parquet", ".pq")


def load_encoder(
    info: dict[str, Any] | None,
    *,
    model: str | None = None,
    backend: str | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    truncate_dim: int | None = None,
) -> Any:
    """The document encoder: the one a collection records (``info``), else ``model``'s (default: packaged)."""
    from .encode import Encoder

    if info is not None:
        return Encoder.for_manifest(info, backend=backend, device=device, batch_size=batch_size)
    return Encoder(model, backend=backend or "auto", device=device, batch_size=batch_size, truncate_dim=truncate_dim)


# ----------------------------------------------------------------------------- the source


def source_files(source: Path, fmt: str = "auto") -> tuple[str, list[str]]:
    """The reader ("jsonl" or "parquet") and files of SOURCE: a BEIR folder, a JSONL or Parquet file, or a
    folder of Parquet files. Other inputs are refused with the reason."""
    if not source.exists():
        raise InvalidInputError(f"input {source} does not exist")
    corpus = beir_corpus(source) if fmt == "auto" else None
    if corpus is not None:
        return "jsonl", [str(corpus)]
    name = source.name.lower()
    if source.is_dir():
        files = sorted(str(p) for p in source.iterdir() if p.is_file() and p.name.lower().endswith(_PARQUET))
        if fmt in ("auto", "parquet") and files:
            return "parquet", files
        raise InvalidInputError(
            f"{source} is neither a BEIR dataset folder nor a folder of Parquet files; the Ray indexer reads JSONL, "
            "Parquet or a BEIR folder (index CSV or folders of text files without --ray)"
        )
    if fmt == "parquet" or (fmt == "auto" and name.endswith(_PARQUET)):
        return "parquet", [str(source)]
    if fmt == "jsonl" or (fmt == "auto" and name.endswith(_JSONL)):
        if is_json_array(source):
            raise InvalidInputError(
                f"{source} holds one JSON array; the Ray indexer reads JSON lines (one record a line)"
            )
        return "jsonl", [str(source)]
    raise InvalidInputError(
        f"the Ray indexer reads JSONL, Parquet or a BEIR folder, not {source} (format {fmt}); "
        "index CSV or folders of text files without --ray"
    )


def _record(row: object, where: str, fields: Fields) -> tuple[str, str, str, str, str]:
    """(id or "" when the record has no id field, text, metadata JSON or "", why it is malformed or "", where)."""
    has_id = fields.id is not None or (isinstance(row, dict) and ("_id" in row or "id" in row))
    doc = row_to_doc(row, 0, where, fields)
    if isinstance(doc, Bad):
        return "", "", "", doc.reason, doc.where
    meta = "" if doc.metadata is None else json.dumps(doc.metadata, ensure_ascii=False)
    return doc.id if has_id else "", doc.text, meta, "", where


def _columns(records: list[tuple[str, str, str, str, str]]) -> dict[str, np.ndarray]:
    out = {}
    for j, key in enumerate(("id", "text", "meta", "bad", "where")):
        col = np.empty(len(records), dtype=object)
        col[:] = [r[j] for r in records]
        out[key] = col
    return out


def parse_lines(batch: Any, fields: Fields, path: str) -> dict[str, np.ndarray]:
    """A Ray Data batch of JSON lines (a pyarrow table with a ``text`` column) as records."""
    records = []
    for line in batch.column("text").to_pylist():
        line = line.lstrip("\ufeff")
        where = f"{path}, record {line[:60]!r}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            records.append(("", "", "", f"invalid JSON ({exc.msg} at column {exc.colno})", where))
            continue
        records.append(_record(row, where, fields))
    return _columns(records)


def parse_rows(batch: Any, fields: Fields, path: str) -> dict[str, np.ndarray]:
    """A Ray Data batch of Parquet rows (a pyarrow table) as records."""
    return _columns([_record(row, f"{path}, row of {len(batch)}", fields) for row in batch.to_pylist()])


# ----------------------------------------------------------------------------- the encoder actors


class EncodeBatches:
    """The body of the ``map_batches`` actor pool: one encoder per actor, loaded once.

    Each batch comes back with ``state`` (new, already stored, malformed) and ``emb`` (zeros where not new).
    With shard actors given (a resumed run), ids already stored are asked for and not encoded again.
    """

    def __init__(
        self,
        factory: Callable[..., Any],
        info: dict[str, Any],
        options: dict[str, Any],
        shards: list[Any] | None,
    ) -> None:
        self.encoder = factory(info, **options)
        self.shards = shards

    def stored(self, ids: list[str]) -> set[str]:
        import ray

        groups: dict[int, list[str]] = {}
        for d in ids:
            groups.setdefault(shard_of(d, len(self.shards or [])), []).append(d)
        got = ray.get([self.shards[s].existing_ids.remote(part) for s, part in groups.items()])  # type: ignore[index]
        return {d for part in got for d in part}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["id"])
        state = np.where(batch["bad"] != "", STATE_BAD, STATE_NEW).astype(np.int8)
        if self.shards:
            ids = [d for d, s in zip(batch["id"], state, strict=True) if s == STATE_NEW and d]
            stored = self.stored(ids) if ids else set()
            state[[i for i, d in enumerate(batch["id"]) if d in stored]] = STATE_STORED
        rows = np.flatnonzero(state == STATE_NEW)
        emb = np.zeros((n, self.encoder.dim), dtype=np.float32)
        if rows.size:
            emb[rows] = self.encoder.encode_documents([batch["text"][i] for i in rows])
        return {**batch, "state": state, "emb": emb}


# ----------------------------------------------------------------------------- the driver


def connect(address: str | None, num_cpus: int | None = None) -> Any:
    """Ray, connected: the running instance, the cluster at ``address`` (else RAY_ADDRESS), or a new local one.

    A ``host:port`` address is tried with a plain TCP connection first, so that nothing listening there
    is a ClusterUnavailableError at once (Ray itself would keep retrying for minutes). A process already
    connected to Ray keeps that connection.
    """
    import ray
    import ray.data

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address not in ("auto", "local"):
        hostport = address.split("://", 1)[-1]
        host, _, port = hostport.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidInputError(f"a Ray address is host:port (or ray://host:port), got {address!r}")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        except OSError as exc:
            raise ClusterUnavailableError(f"cannot reach a Ray cluster at {address}: {exc}") from None
    if ray.is_initialized():  # this process is connected already (a notebook, a test): use that Ray
        return ray
    try:
        if address and address != "local":
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        raise ClusterUnavailableError(
            f"cannot connect to the Ray cluster at {address or 'a new local Ray'}: {exc}"
        ) from None
    return ray


@dataclass
class _Ledger:
    """The single-machine rules applied in source order: malformed records, duplicate ids, numbers as ids."""

    skip_bad: bool
    report: IndexReport = field(default_factory=IndexReport)
    seen: set[str] = field(default_factory=set)

    def triage(self, batch: dict[str, np.ndarray], state: np.ndarray | None) -> tuple[list[int], list[str]]:
        """Positions of the documents to add and every row's id; counts malformed and already stored rows."""
        keep, ids = [], []
        for i in range(len(batch["id"])):
            number = self.report.records
            self.report.records += 1
            doc_id = str(batch["id"][i]) or str(number)
            ids.append(doc_id)
            reason = str(batch["bad"][i])
            if not reason and doc_id in self.seen:
                reason = f"duplicate id {doc_id!r}"
            if reason:
                if not self.skip_bad:
                    raise InvalidInputError(f"{batch['where'][i]}: {reason} (pass --skip-bad to skip such records)")
                self.report.bad += 1
                continue
            self.seen.add(doc_id)
            if state is not None and state[i] == STATE_STORED:
                self.report.already += 1
                continue
            keep.append(i)
        return keep, ids


def _prepare_out(out: Path) -> bool:
    """Whether ``out`` holds a sharded collection to continue; a create killed midway is cleared, else refused."""
    if (out / SHARDED_MANIFEST).is_file():
        return True
    if (out / "manifest.json").is_file():
        raise CollectionError(
            f"{out} holds a single-machine collection; index it without --ray, or choose another --out"
        )
    if out.exists() and not out.is_dir():
        raise CollectionError(f"{out} exists and is not a directory")
    if out.is_dir():
        entries = list(out.iterdir())
        if entries and not all(p.name == ".lock" or (p.is_dir() and _SHARD_DIR.match(p.name)) for p in entries):
            raise CollectionError(f"{out} exists and is neither a sharded collection nor an empty directory")
        if any(_holds_documents(p) for p in entries):
            raise CollectionError(f"{out} holds shard directories with documents but no {SHARDED_MANIFEST}")
        for p in entries:  # empty shards left by a create that was killed before it wrote its manifest
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    return False


def _holds_documents(shard: Path) -> bool:
    """Whether a shard directory's collection manifest records any row (or cannot be read: kept, to be safe)."""
    path = shard / "manifest.json"
    if not shard.is_dir() or not path.exists():
        return False
    try:
        return int(json.loads(path.read_text(encoding="utf-8")).get("next_seq", 1)) > 0
    except (OSError, ValueError, TypeError, AttributeError):
        return True


def _check_settings(col: ShardedCollection, model: str | None, precision: str | None, truncate_dim: int | None,
                    keep_float32: bool) -> None:  # fmt: skip
    """Refuse to continue a sharded collection with settings it was not built with."""
    opts = col.manifest["options"]
    where = f"the sharded collection at {col.path}"
    if not (opts.get("model") or {}).get("name"):
        raise CollectionError(f"{where} records no embedding model, so text cannot be added to it")
    check_settings(where, opts, col.dim, model=model, precision=precision, truncate_dim=truncate_dim,
                   keep_float32=keep_float32)  # fmt: skip


def block_bytes(files: list[str], encoders: int) -> int:
    """Ray Data's block size for this source: blocks are what the actor pool shares out, so a source gives at
    least ~4 per encoder (Ray's default, 128 MiB, makes one block of a file under that: one busy actor)."""
    total = sum(Path(f).stat().st_size for f in files)
    return int(min(max(total // (4 * encoders), 64 * 1024), 64 * 1024 * 1024))


def _dataset(ray: Any, reader: str, files: list[str], fields: Fields) -> Any:
    """The parsed records, in source order."""
    if reader == "jsonl":
        ds = ray.data.read_text(files, drop_empty_lines=True)
        fn = parse_lines
    else:
        ds = ray.data.read_parquet(files)
        fn = parse_rows
    label = files[0] if len(files) == 1 else str(Path(files[0]).parent)
    return ds.map_batches(fn, batch_format="pyarrow", fn_kwargs={"fields": fields, "path": label})


def _head_batches(reader: str, files: list[str], fields: Fields, chunk_size: int) -> Iterator[dict[str, np.ndarray]]:
    """The source's records in chunks, read here on the driver with the pipeline's parsers (no Ray Data job
    just to look at the first chunk)."""
    import pyarrow as pa

    label = files[0] if len(files) == 1 else str(Path(files[0]).parent)
    for path in files:
        if reader == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size):
                yield parse_rows(pa.Table.from_batches([batch]), fields, label)
            continue
        import gzip

        opener = gzip.open if path.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            lines: list[str] = []
            for line in f:
                if line.strip():
                    lines.append(line.rstrip("\r\n"))
                if len(lines) == chunk_size:
                    yield parse_lines(pa.table({"text": lines}), fields, label)
                    lines = []
            if lines:
                yield parse_lines(pa.table({"text": lines}), fields, label)


def _encode_sample(
    encoder: Any, reader: str, files: list[str], fields: Fields, chunk_size: int, skip_bad: bool
) -> tuple[np.ndarray | None, IndexReport]:
    """The embeddings single-machine ``index`` calibrates on: the first chunk's valid documents (None when
    no record is valid; then the counts say why)."""
    ledger = _Ledger(skip_bad)
    for batch in _head_batches(reader, files, fields, chunk_size):
        keep, _ = ledger.triage(batch, None)
        if keep:
            return encoder.encode_documents([batch["text"][i] for i in keep]), ledger.report
    return None, ledger.report


def index_distributed(
    source: Path,
    out: Path,
    *,
    shards: int | None,
    address: str | None = None,
    encoders: int = 1,
    fmt: str = "auto",
    fields: Fields | None = None,
    model: str | None = None,
    precision: str | None = None,
    truncate_dim: int | None = None,
    keep_float32: bool = False,
    keyword_index: bool = True,
    create_options: dict[str, Any] | None = None,
    batch_size: int = 32,
    chunk_size: int = 1000,
    skip_bad: bool = False,
    backend: str | None = None,
    progress: Any = None,
    encoder_factory: Callable[..., Any] | None = None,
    num_cpus: int | None = None,
    on_commit: Callable[[int], None] | None = None,
) -> tuple[ShardedCollection | None, IndexReport]:
    """Index SOURCE into the sharded collection at ``out`` (created with ``shards`` shards, or continued:
    ``shards`` None takes the existing collection's count).

    ``address``: a Ray cluster (host:port, ray://..., "auto") or None for the running Ray, else a new
    local one. ``encoders``: encoder actors (one GPU each when the cluster has GPUs). The other
    options are ``bitsearch index``'s. ``encoder_factory(info, **options)`` builds each encoder
    (default ``load_encoder``); ``on_commit(chunks)`` is called after each committed add (a test
    hook). Returns the collection (None when no record was valid) and the counts.
    """
    for name, value in (("shards", 1 if shards is None else shards), ("encoders", encoders), ("chunk_size", chunk_size),
                        ("batch_size", batch_size)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    fields = fields or Fields()
    reader, files = source_files(Path(source), fmt)
    out = Path(out)
    resume = _prepare_out(out)
    factory = encoder_factory or load_encoder
    ray = connect(address, num_cpus)

    logging.getLogger("ray.data").setLevel(logging.ERROR)  # Ray Data's per-job INFO lines and notes
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.target_max_block_size)
    ctx.execution_options.preserve_order = True  # source order: the single-machine rules and row order
    ctx.enable_progress_bars = False  # the driver shows one bar over documents
    ctx.target_max_block_size = block_bytes(files, encoders)
    col: ShardedCollection | None = None
    try:
        parsed = _dataset(ray, reader, files, fields)
        if resume:
            col = ShardedCollection.open(out)
            _check_settings(col, model, precision, truncate_dim, keep_float32)
            if shards is not None and len(col.shard_names) != shards:
                raise InvalidInputError(f"{out} has {len(col.shard_names)} shards, not {shards}")
            encoder = factory(col.manifest["options"]["model"], backend=backend, batch_size=batch_size)
        else:
            if shards is None:
                raise InvalidInputError(f"creating a sharded collection at {out} needs a shard count (--shards N)")
            encoder = factory(None, model=model, backend=backend, batch_size=batch_size, truncate_dim=truncate_dim)
            sample, counts = _encode_sample(encoder, reader, files, fields, chunk_size, skip_bad)
            if sample is None:
                return None, counts
            col = ShardedCollection.create(
                out,
                encoder.dim,
                shards=shards,
                calibration_embeddings=sample,
                precision=precision or "binary",
                keep_int8=True,
                keep_float32=keep_float32,
                model=encoder.manifest_info(),
                truncate_dim=encoder.truncate_dim,
                keyword_index=keyword_index,
                **(create_options or {}),
            )
        report = _run(ray, parsed, col, encoder, factory, encoders, batch_size, chunk_size, skip_bad, resume,
                      progress, on_commit)  # fmt: skip
        return col, report
    except BaseException:
        if col is not None:
            col.close()
        raise
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.target_max_block_size = saved


def _run(ray: Any, parsed: Any, col: ShardedCollection, encoder: Any, factory: Callable[..., Any], encoders: int,
         batch_size: int, chunk_size: int, skip_bad: bool, resume: bool, progress: Any,
         on_commit: Callable[[int], None] | None) -> IndexReport:  # fmt: skip
    """The parallel phase: encode in the actor pool, add chunk by chunk in source order."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    use_gpu = gpus > 0 and encoder.backend in ("onnx", "torch")  # onnx-int8 collections keep their CPU model
    options: dict[str, Any] = {"batch_size": batch_size, "backend": encoder.backend}
    pool = encoders
    if use_gpu:
        options.update(device="cuda", backend="torch")  # ONNX Runtime runs on the CPU here
        pool = min(encoders, gpus)
    # leave a CPU for reading and parsing: encoder actors share the rest
    cpus = min(1.0, max(0.1, (float(resources.get("CPU", 1)) - 1) / pool))
    encoded = parsed.map_batches(
        EncodeBatches,
        fn_constructor_kwargs={
            "factory": factory,
            "info": encoder.manifest_info(),
            "options": options,
            "shards": col.actors if resume else None,
        },
        batch_size=max(batch_size * 8, 64),
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=pool),
        num_cpus=cpus,
        num_gpus=1 if use_gpu else 0,
    )
    ledger = _Ledger(skip_bad)
    pending: dict[str, list[Any]] = {"emb": [], "ids": [], "texts": [], "meta": []}
    chunks = 0

    def flush() -> None:
        nonlocal chunks
        if not pending["ids"]:
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="int8 ranges calibrated on only")
            col.add(np.stack(pending["emb"]), ids=pending["ids"], texts=pending["texts"], metadata=pending["meta"],
                    skip_existing=True)  # fmt: skip
        ledger.report.added += len(pending["ids"])
        for v in pending.values():
            v.clear()
        chunks += 1
        if on_commit is not None:
            on_commit(chunks)

    for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
        keep, ids = ledger.triage(batch, batch["state"])
        if resume:  # records without an id field get their number only here: ask the shards
            numbered = [i for i in keep if not batch["id"][i]]
            stored = set(col.existing_ids([ids[i] for i in numbered])) if numbered else set()
            ledger.report.already += sum(ids[i] in stored for i in numbered)
            keep = [i for i in keep if ids[i] not in stored]
        for i in keep:
            pending["emb"].append(batch["emb"][i])
            pending["ids"].append(ids[i])
            pending["texts"].append(str(batch["text"][i]))
            pending["meta"].append(json.loads(batch["meta"][i]) if batch["meta"][i] else None)
            if len(pending["ids"]) >= chunk_size:
                flush()
        if progress is not None:
            if ledger.report.already or ledger.report.bad:
                progress.set_postfix_str(ledger.report.skipped_note(), refresh=False)
            progress.update(len(ids))
    flush()
    return ledger.report
