"""Evaluation: what each precision costs, measured on real benchmarks.

Loads BEIR-format datasets, caches their embeddings on disk, runs a grid of search configurations
through the real `Collection` search path, scores them with ranx (NDCG@10, Recall@100, MRR@10) and
reports quality next to memory, disk, build time and latency (markdown, JSON, PNG plots).

Configuration names (`parse_config`):

- dense: `precision[-hamming|-asym][-center][-rot][+rescore...][@multiplier][/dDIM]`, e.g. `float32`,
  `binary+int8@4/d128`: `Collection.search(mode="dense")` over vectors only (no texts stored);
- `keyword`: BM25 alone (SQLite FTS5, `mode="keyword"` with the query strings); the collection
  stores the dataset's texts (empty ones as None) next to the cheapest codes (binary, no rows kept),
  which a collection needs but this mode never reads;
- `hybrid:<dense name>`, e.g. `hybrid:float32`, `hybrid:binary+int8@4`: that dense configuration
  fused with BM25 by reciprocal rank fusion (`mode="hybrid"`, `rrf_k=60`, equal weights; each
  ranking is max(k, 100) deep before fusion).

Bytes per document count the vector codes (`Collection.stats()["stages"]`) for dense; keyword counts
nothing in RAM and only `docs.sqlite` (ids, texts and the FTS5 index, `stats()["docs_disk_bytes"]`)
on disk; hybrid counts its dense codes plus `docs.sqlite` on disk.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

__all__ = [
    "CACHE_ENV",
    "Config",
    "ConfigResult",
    "Dataset",
    "Report",
    "cache_dir",
    "compute_metrics",
    "default_grid",
    "doc_text",
    "embed_dataset",
    "evaluate",
    "load_dataset",
    "parse_config",
    "write_report",
]

CACHE_ENV = "BITSEARCH_CACHE"
_CACHE_FORMAT = 1


# --------------------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Dataset:
    """A BEIR dataset restricted to the queries that have relevance judgments."""

    name: str
    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]
    path: str = ""

    def __len__(self) -> int:
        return len(self.doc_ids)

    def subset(self, n_docs: int, n_queries: int | None = None) -> Dataset:
        """First `n_docs` documents and the first `n_queries` queries judged on one of them (tests)."""
        doc_ids = self.doc_ids[:n_docs]
        keep = set(doc_ids)
        qrels: dict[str, dict[str, int]] = {}
        for qid in self.query_ids:
            judged = {d: r for d, r in self.qrels[qid].items() if d in keep}
            if any(r > 0 for r in judged.values()):
                qrels[qid] = judged
            if n_queries is not None and len(qrels) >= n_queries:
                break
        qtext = dict(zip(self.query_ids, self.query_texts, strict=True))
        return Dataset(
            name=f"{self.name}[:{n_docs}]",
            doc_ids=doc_ids,
            doc_texts=self.doc_texts[:n_docs],
            query_ids=list(qrels),
            query_texts=[qtext[q] for q in qrels],
            qrels=qrels,
            path=self.path,
        )


def doc_text(title: str | None, text: str | None) -> str:
    """The text encoded for a BEIR document: MTEB's `(title + " " + text).strip()`.

    MTEB (and BEIR's SentenceBERT wrapper) join title and body with one space; an empty title leaves
    the body alone. For WordPiece models such as all-MiniLM-L6-v2 a space and a newline tokenize
    identically, so this also equals `title + "\\n" + text`.
    """
    return (f"{title or ''} {text or ''}").strip()


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder}: neither {name} nor {name}.gz")


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with _open_text(path) as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with _open_text(path) as fh:
        for n, line in enumerate(fh):
            parts = line.split()
            if not parts:
                continue
            if len(parts) == 4:  # TREC layout: qid iteration docid rel
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise ValueError(f"{path}:{n + 1}: expected 'query-id corpus-id score'")
            qid, did, score = parts
            try:
                rel = int(float(score))
            except ValueError:
                if n == 0:  # header line
                    continue
                raise
            qrels.setdefault(qid, {})[did] = rel
    return qrels


def load_dataset(path: str | os.PathLike[str], split: str = "test") -> Dataset:
    """Read a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv; each may be .gz).

    Only queries with at least one positive judgment are kept, in queries.jsonl order; judged queries
    missing there are looked up in queries_all.jsonl (where the shared datasets keep every query).
    """
    folder = Path(path)
    doc_ids: list[str] = []
    doc_texts: list[str] = []
    for row in _read_jsonl(_find(folder, "corpus.jsonl")):
        doc_ids.append(str(row["_id"]))
        doc_texts.append(doc_text(row.get("title"), row.get("text")))
    qrels = _read_qrels(_find(folder / "qrels", f"{split}.tsv"))
    query_ids: list[str] = []
    query_texts: list[str] = []
    seen: set[str] = set()
    for name in ("queries.jsonl", "queries_all.jsonl"):
        try:
            qpath = _find(folder, name)
        except FileNotFoundError:
            continue
        for row in _read_jsonl(qpath):
            qid = str(row["_id"])
            if qid in seen or not any(r > 0 for r in qrels.get(qid, {}).values()):
                continue
            seen.add(qid)
            query_ids.append(qid)
            query_texts.append(str(row.get("text") or ""))
    if not query_ids:
        raise ValueError(f"{folder}: no query has a positive judgment in qrels/{split}.tsv")
    return Dataset(
        name=folder.resolve().name,
        doc_ids=doc_ids,
        doc_texts=doc_texts,
        query_ids=query_ids,
        query_texts=query_texts,
        qrels={q: qrels[q] for q in query_ids},
        path=str(folder),
    )


# ------------------------------------------------------------------------------ embedding cache


class EncoderLike(Protocol):
    """What the evaluation needs from `bitsearch.encode.Encoder`."""

    name: str

    def encode_documents(self, texts: Sequence[str], show_progress: bool = False) -> np.ndarray: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...


def cache_dir() -> Path:
    """The embedding cache folder: $BITSEARCH_CACHE, else ~/.cache/bitsearch/embeddings."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path("~/.cache/bitsearch/embeddings").expanduser()


def _encoder_key(encoder: EncoderLike, role: str) -> dict[str, Any]:
    """Everything about the encoder that changes the vectors of `role` (not device or batch size)."""
    prompt = "document_prompt" if role == "documents" else "query_prompt"
    return {
        "model": str(getattr(encoder, "name", type(encoder).__name__)),
        "truncate_dim": getattr(encoder, "truncate_dim", None),
        "normalize": bool(getattr(encoder, "normalize", True)),
        prompt: getattr(encoder, prompt, None),
    }


def _texts_hash(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "model"


def _atomic_write(path: Path, write: Any, mode: str = "wb") -> None:
    """Write through `write(fh)` into a temporary file in the same folder, then rename into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; cached vectors are shared like any cache file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_embeddings(
    texts: Sequence[str],
    role: str,
    encoder: EncoderLike,
    *,
    cache: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Embeddings of `texts` as documents or queries (`role`), encoded once then read from disk.

    Key: the model name, truncation, prompts and normalization, the role, and a hash of the exact
    texts. Stored as `<key>.npy` (no pickle) next to `<key>.json`, each written atomically.
    """
    if role not in ("documents", "queries"):
        raise ValueError(f"role must be 'documents' or 'queries', not {role!r}")
    meta = {"format": _CACHE_FORMAT, "role": role, **_encoder_key(encoder, role)}
    meta["texts_sha256"] = _texts_hash(texts)
    meta["count"] = len(texts)
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:24]
    folder = Path(cache) if cache is not None else cache_dir()
    folder = folder / _slug(str(meta["model"]))
    npy, info = folder / f"{role}-{key}.npy", folder / f"{role}-{key}.json"
    if npy.is_file() and info.is_file():
        try:
            stored = json.loads(info.read_text())
            emb = np.load(npy, allow_pickle=False)
            if stored.get("key") == key and emb.shape[0] == len(texts):
                return emb
        except (OSError, ValueError):
            pass  # unreadable entry: encode again and overwrite it
    # Empty texts (two Cranfield documents have neither title nor body) get zero vectors: they
    # match nothing, and the encoder is never asked to embed an empty string.
    full = [i for i, t in enumerate(texts) if t.strip()]
    batch = [texts[i] for i in full]
    if role == "documents":
        got = encoder.encode_documents(batch, show_progress=show_progress)
    else:
        got = encoder.encode_queries(batch)
    got = np.asarray(got, dtype=np.float32)
    if got.ndim != 2 or got.shape[0] != len(batch):
        raise ValueError(f"encoder returned shape {got.shape} for {len(batch)} texts")
    emb = np.zeros((len(texts), got.shape[1]), dtype=np.float32)
    emb[full] = got
    meta["empty_texts"] = len(texts) - len(full)
    _atomic_write(npy, lambda fh: np.save(fh, emb, allow_pickle=False))
    record = {**meta, "key": key, "shape": list(emb.shape), "dtype": str(emb.dtype)}
    _atomic_write(info, lambda fh: fh.write(json.dumps(record, indent=1)), mode="w")
    return emb


def collection_embeddings(dataset: Dataset, path: str | os.PathLike[str], model: str | None = None) -> np.ndarray:
    """The dataset's document embeddings read from a collection that holds them (built by ``bitsearch index``
    on the same corpus with ``--keep-float32``), instead of embedding the corpus again.

    The collection must hold every document of the dataset by id, with float32 rows, and record the model
    ``model`` names (when given). Its texts were embedded as title + newline + text where the evaluation
    embeds title + space + text: the same tokens for WordPiece models such as all-MiniLM-L6-v2.
    """
    from bitsearch.collection import Collection

    col = Collection.open(path)
    recorded = (col.manifest.get("model") or {}).get("name")
    if model is not None and recorded != model:
        raise ValueError(f"collection {path} was embedded with model {recorded!r}, not {model!r}")
    if not col.manifest["keep_float32"]:
        raise ValueError(
            f"collection {path} keeps no float32 rows to evaluate from: build it with `bitsearch index --keep-float32`"
        )
    docs = col.get(dataset.doc_ids, with_vectors=True)
    missing = [i for i, d in zip(dataset.doc_ids, docs, strict=True) if d is None]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3])
        raise ValueError(
            f"collection {path} lacks {len(missing):,} of the {len(docs):,} documents of {dataset.name} ({shown}...)"
        )
    col.close()
    return np.stack([d.vector for d in docs]).astype(np.float32, copy=False)  # type: ignore[union-attr]


def embed_dataset(
    dataset: Dataset,
    encoder: EncoderLike,
    *,
    cache: str | os.PathLike[str] | None = None,
    show_progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(document embeddings, query embeddings) of `dataset`, from the cache when present."""
    docs = cached_embeddings(dataset.doc_texts, "documents", encoder, cache=cache, show_progress=show_progress)
    queries = cached_embeddings(dataset.query_texts, "queries", encoder, cache=cache)
    return docs, queries


# -------------------------------------------------------------------------------- configurations

_PRECISIONS = ("float32", "int8", "2bit", "1.5bit", "binary")
_LOW_BIT = ("binary", "1.5bit", "2bit")
_NAME_RE = re.compile(
    r"^(?P<stage1>float32|int8|2bit|1\.5bit|binary)(?P<mods>(?:-(?:hamming|asym|center|rot|q[1-8]))*)"
    r"(?P<rescore>(?:\+(?:float32|int8|binary))*)(?:@(?P<mult>\d+))?(?:/d(?P<dim>\d+))?$"
)
DEFAULT_MULTIPLIER = 4
SEARCH_MODES = ("dense", "keyword", "hybrid")
HYBRID_PREFIX = "hybrid:"
# the codes a keyword collection is built with (a collection needs vectors; keyword never reads them)
_KEYWORD_DENSE = ("binary", (), DEFAULT_MULTIPLIER, None, "auto")
MULTIPLIERS = (1, 2, 4, 8, 16)
TRUNCATE_DIMS = (384, 256, 128, 64)


@dataclass(frozen=True)
class Config:
    """One search configuration: stage-1 codes and scoring, rescoring stages, multiplier, truncation.

    `stage1` is the binary scoring mode of `Collection.create` ("auto": asymmetric when nothing
    rescores, Hamming when something does); `centering`/`rotation` transform low-bit codes;
    `query_bits` rounds the query for asymmetric scoring of binary codes (popcounts per bit plane).
    `mode` is the search mode: "dense", "keyword" (BM25 only; the codes are built but unused) or
    "hybrid" (these dense settings fused with BM25).
    """

    precision: str
    rescore: tuple[str, ...] = ()
    multiplier: int = DEFAULT_MULTIPLIER
    truncate_dim: int | None = None
    stage1: str = "auto"
    centering: bool = False
    rotation: bool = False
    mode: str = "dense"
    query_bits: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in SEARCH_MODES:
            raise ValueError(f"search mode must be one of {', '.join(SEARCH_MODES)}, not {self.mode!r}")
        dense = (self.precision, self.rescore, self.multiplier, self.truncate_dim, self.stage1)
        extra = (self.centering, self.rotation, self.query_bits)
        if self.mode == "keyword" and (dense, *extra) != (_KEYWORD_DENSE, False, False, None):
            raise ValueError("a keyword configuration has no dense settings: use parse_config('keyword')")

    @property
    def name(self) -> str:
        """Stable short name, e.g. `binary+int8@4/d128`, `binary-hamming`, `keyword`, `hybrid:float32`."""
        if self.mode == "keyword":
            return "keyword"
        return (HYBRID_PREFIX if self.mode == "hybrid" else "") + self.dense_name

    @property
    def dense_name(self) -> str:
        """The dense part of the name (`@m` only when rescoring)."""
        name = self.precision
        name += {"auto": "", "hamming": "-hamming", "asymmetric": "-asym"}[self.stage1]
        name += "-center" if self.centering else ""
        name += "-rot" if self.rotation else ""
        name += f"-q{self.query_bits}" if self.query_bits else ""
        name = "+".join((name, *self.rescore))
        if self.rescore:
            name += f"@{self.multiplier}"
        if self.truncate_dim is not None:
            name += f"/d{self.truncate_dim}"
        return name

    @property
    def needs_texts(self) -> bool:
        """Whether the collection must store the dataset's texts (keyword and hybrid modes)."""
        return self.mode != "dense"

    @property
    def keep_int8(self) -> bool:
        return "int8" in self.rescore

    @property
    def keep_float32(self) -> bool:
        return "float32" in self.rescore

    def create_options(self) -> dict[str, Any]:
        """Keyword arguments of `Collection.create` beyond the defaults (older cores accept them all)."""
        opts: dict[str, Any] = {}
        if self.stage1 != "auto":
            opts["stage1"] = self.stage1
        if self.centering:
            opts["centering"] = True
        if self.rotation:
            opts["rotation"] = True
        if self.query_bits:
            opts["query_bits"] = self.query_bits
        return opts


KEYWORD = Config("binary", mode="keyword")


def parse_config(name: str) -> Config:
    """Parse `precision[-hamming|-asym][-center][-rot][-qB][+rescore...][@multiplier][/dDIM]`,
    `keyword` or `hybrid:<dense name>` (`-qB`: binary scored against a B-bit query, B in 1..8).

    `@` defaults to 4 (`int8+float32` is `int8+float32@4`); precisions float32, int8, 2bit, 1.5bit,
    binary; rescore stages binary, int8, float32.
    """
    name = name.strip()
    if name == "keyword":
        return KEYWORD
    if name.startswith(HYBRID_PREFIX):
        dense = name[len(HYBRID_PREFIX) :]
        if dense.startswith(HYBRID_PREFIX) or dense == "keyword":
            raise ValueError(f"{name!r}: hybrid: takes a dense configuration, e.g. hybrid:binary+int8@4")
        return replace(parse_config(dense), mode="hybrid")
    m = _NAME_RE.match(name)
    if m is None:
        raise ValueError(
            f"bad configuration name {name!r}: expected precision[-hamming|-asym][-center][-rot][-q4]"
            "[+rescore...][@multiplier][/dDIM] with precisions float32|int8|2bit|1.5bit|binary and "
            "rescore stages binary|int8|float32, e.g. binary+int8@4/d128; or keyword; or "
            "hybrid:<that>, e.g. hybrid:binary+int8@4"
        )
    precision = m["stage1"]
    mods = [x for x in m["mods"].split("-") if x]
    qbits = [int(x[1:]) for x in mods if x.startswith("q")]
    if len(set(mods)) != len(mods) or ("hamming" in mods and "asym" in mods) or len(qbits) > 1:
        raise ValueError(f"{name!r}: repeated or conflicting modifiers")
    if qbits and (precision != "binary" or "hamming" in mods):
        raise ValueError(f"{name!r}: -qB scores binary codes asymmetrically against a B-bit query")
    if precision != "binary" and ({"hamming", "asym"} & set(mods)):
        raise ValueError(f"{name!r}: -hamming/-asym choose how binary codes are scored")
    if precision not in _LOW_BIT and ({"center", "rot"} & set(mods)):
        raise ValueError(f"{name!r}: -center/-rot apply to binary, 1.5bit and 2bit codes")
    stage1 = "hamming" if "hamming" in mods else "asymmetric" if "asym" in mods else "auto"
    rescore = tuple(s for s in m["rescore"].split("+") if s)
    mult = int(m["mult"]) if m["mult"] else DEFAULT_MULTIPLIER
    if mult < 1:
        raise ValueError(f"{name!r}: rescore multiplier must be >= 1")
    dim = int(m["dim"]) if m["dim"] else None
    if dim is not None and dim < 1:
        raise ValueError(f"{name!r}: truncation dimension must be >= 1")
    return Config(
        precision,
        rescore,
        mult if rescore else DEFAULT_MULTIPLIER,
        dim,
        stage1=stage1,
        centering="center" in mods,
        rotation="rot" in mods,
        query_bits=qbits[0] if qbits else None,
    )


def default_grid(dim: int = 384) -> list[Config]:
    """The full grid: every precision, int8 rescoring at 1..16x, 3-stage, Matryoshka x precision,
    then BM25 (`keyword`) and two hybrids (`hybrid:float32`, `hybrid:binary+int8@4`).

    `binary-hamming` is plain sign bits ranked by Hamming distance (the classic); `binary` is the
    library default, which scores the bits asymmetrically when nothing rescores. Truncated variants
    use the dims in TRUNCATE_DIMS below `dim` (the full dim is the base grid).
    """
    grid = [
        Config("float32"),
        Config("int8"),
        Config("int8", ("float32",)),
        Config("binary", stage1="hamming"),
        Config("binary"),
        Config("1.5bit"),
        Config("2bit"),
        *(Config("binary", ("int8",), m) for m in MULTIPLIERS),
        Config("binary", ("binary",)),
        Config("binary", ("int8", "float32")),
    ]
    for d in TRUNCATE_DIMS:
        if d >= dim:
            continue
        grid += [
            Config("float32", truncate_dim=d),
            Config("int8", truncate_dim=d),
            Config("binary", truncate_dim=d),
            Config("binary", ("int8",), truncate_dim=d),
        ]
    grid += [KEYWORD, Config("float32", mode="hybrid"), Config("binary", ("int8",), mode="hybrid")]
    return grid


def select_configs(spec: str | Sequence[str] | None, dim: int = 384) -> list[Config]:
    """Configurations named by `spec` (comma-separated names or globs over the default grid).

    None or "all" -> the default grid. `float32` is always included: it is the reference.
    """
    from fnmatch import fnmatchcase

    grid = default_grid(dim)
    if spec is None:
        chosen = grid
    else:
        items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
        chosen = []
        for item in filter(None, items):
            if item == "all":
                matches = grid
            elif any(c in item for c in "*?["):
                matches = [c for c in grid if fnmatchcase(c.name, item)]
                if not matches:
                    raise ValueError(f"no configuration in the grid matches {item!r}")
            else:
                matches = [parse_config(item)]
            chosen += [c for c in matches if c not in chosen]
    for c in chosen:
        if c.truncate_dim is not None and c.truncate_dim > dim:
            raise ValueError(f"{c.name}: cannot truncate {dim}-dim embeddings to {c.truncate_dim}")
    base = Config("float32")
    return [base, *(c for c in chosen if c != base)]


# ----------------------------------------------------------------------------------------- metrics

METRICS = ("ndcg@{k}", "recall@{recall_k}", "mrr@{k}")


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
    with warnings.catch_warnings():  # ranx's ndcg kernel casts uint64 -> int64: a warning per call, harmless
        warnings.filterwarnings("ignore", message="unsafe cast from uint64 to int64")
        scores = ranx_evaluate(Qrels(judged), Run(full_run), list(metrics), make_comparable=False)
    if isinstance(scores, float | np.floating):
        scores = {metrics[0]: scores}
    return {m: float(scores[m]) for m in metrics}


# ------------------------------------------------------------------------------------ the grid run


@dataclass
class ConfigResult:
    """Quality, memory and speed of one configuration on one dataset."""

    name: str
    precision: str
    rescore: list[str]
    multiplier: int
    dim: int
    truncate_dim: int | None
    metrics: dict[str, float]
    kept: dict[str, float] = field(default_factory=dict)  # % of the float32 reference
    ram_bytes_per_doc: float = 0.0
    disk_bytes_per_doc: float = 0.0
    build_s: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    batch_qps: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)
    mode: str = "dense"  # "dense", "keyword" or "hybrid"


@dataclass
class Report:
    """Everything one evaluation measured, plus how it was produced."""

    dataset: str
    documents: int
    queries: int
    model: str
    k: int
    recall_k: int
    metrics: list[str]
    results: list[ConfigResult]
    environment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def result(self, name: str) -> ConfigResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)


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


def _bytes_per_doc(stats: dict[str, Any]) -> tuple[float, float]:
    """(RAM bytes, disk bytes) of the vector codes per document, from `Collection.stats()["stages"]`.

    Only the stages' codes count (what changes between configurations); the id/text store and the
    per-row bookkeeping, the same for every configuration, stay in the stats kept in the JSON.
    """
    n = max(int(stats.get("rows") or stats.get("documents") or 0), 1)
    stages = stats.get("stages") or {}
    ram = sum(float(v.get("ram_bytes", 0)) for v in stages.values())
    disk = sum(float(v.get("disk_bytes", 0)) for v in stages.values())
    return ram / n, disk / n


def _run_dict(results: Any, query_ids: Sequence[str]) -> dict[str, dict[str, float]]:
    return {qid: {str(hit.id): float(hit.score) for hit in hits} for qid, hits in zip(query_ids, results, strict=True)}


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
    from bitsearch import Collection
    from bitsearch.quantize import truncate_embeddings

    if config.truncate_dim is not None:
        doc_emb = truncate_embeddings(doc_emb, config.truncate_dim)
        query_emb = truncate_embeddings(query_emb, config.truncate_dim)
    dim = int(doc_emb.shape[1])
    rescore: Any = list(config.rescore) if config.rescore else None
    if rescore is not None and len(rescore) == 1:
        rescore = rescore[0]
    with tempfile.TemporaryDirectory(prefix="bitsearch-eval-", dir=workdir) as tmp:
        t0 = time.perf_counter()
        col = Collection.create(
            Path(tmp) / "col",
            dim,
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
        build_s = time.perf_counter() - t0
        stats = _jsonable(col.stats())
        qtexts = list(dataset.query_texts)

        def search(rows: slice | int, depth: int) -> Any:
            texts = qtexts[rows] if config.needs_texts else None
            if config.mode == "keyword":
                return col.search(None, k=depth, mode="keyword", query_texts=texts)
            return col.search(
                query_emb[rows],
                k=depth,
                rescore_multiplier=config.multiplier,
                rescore=rescore,
                **({"mode": config.mode, "query_texts": texts} if config.needs_texts else {}),
            )

        search(slice(0, min(8, len(query_emb))), k)  # warm-up: compile kernels, fill caches
        batch_times = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            results = search(slice(None), k)
            batch_times.append(time.perf_counter() - t0)
        deep = search(slice(None), recall_k)
        # one query at a time, `repeats` passes; each query keeps its fastest pass (as timeit does),
        # which filters out other processes taking the CPU on a shared machine
        lat = np.empty((max(1, repeats), len(query_emb)))
        for rep in range(lat.shape[0]):
            for i in range(len(query_emb)):
                t0 = time.perf_counter()
                search(i, k)
                lat[rep, i] = time.perf_counter() - t0
        lat = lat.min(axis=0)
        close = getattr(col, "close", None)
        if callable(close):
            close()
    run = _run_dict(results, dataset.query_ids)
    deep_run = _run_dict(deep, dataset.query_ids)
    metrics = compute_metrics(dataset.qrels, run, (f"ndcg@{k}", f"mrr@{k}"))
    metrics.update(compute_metrics(dataset.qrels, deep_run, (f"recall@{recall_k}",)))
    ram, disk = _bytes_per_doc(stats)
    if config.needs_texts:
        docs_disk = float(stats.get("docs_disk_bytes", 0)) / max(len(dataset.doc_ids), 1)
        ram, disk = (0.0, docs_disk) if config.mode == "keyword" else (ram, disk + docs_disk)
    return ConfigResult(
        name=config.name,
        precision=config.precision,
        rescore=list(config.rescore),
        multiplier=config.multiplier,
        dim=dim,
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

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if hasattr(os, "getloadavg"):  # other jobs on the machine make latencies noisy: record them
        env["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    from importlib.metadata import PackageNotFoundError, version

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
    if embeddings is None:
        if encoder is None:
            from bitsearch.encode import Encoder

            encoder = Encoder(model)
        doc_emb, query_emb = embed_dataset(ds, encoder, cache=cache, show_progress=progress)
    else:
        doc_emb, query_emb = (np.asarray(e, dtype=np.float32) for e in embeddings)
    if doc_emb.shape[0] != len(ds.doc_ids) or query_emb.shape[0] != len(ds.query_ids):
        raise ValueError("embeddings do not match the dataset's documents and queries")
    dim = int(doc_emb.shape[1])
    if configs is not None and not isinstance(configs, str) and all(isinstance(c, Config) for c in configs):
        base = Config("float32")
        chosen = [base, *(c for c in configs if c != base)]  # type: ignore[misc]
    else:
        chosen = select_configs(configs, dim)  # type: ignore[arg-type]
    info: dict[str, Any] | None = None
    if encoder is not None:
        info = encoder.manifest_info() if hasattr(encoder, "manifest_info") else {"name": encoder.name}
    environment = _environment()
    results = []
    environment["threads"] = threads
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


# ------------------------------------------------------------------------------------------ report


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


SUMMARY_CONFIGS = ("int8", "binary", "binary+binary@4", "binary+int8@4", "binary+int8+float32@4", "binary+int8@4/d128")


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


def _pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (fewer or equal bytes and higher quality)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


_COLORS = {
    "float32": "tab:blue",
    "int8": "tab:orange",
    "2bit": "tab:red",
    "1.5bit": "tab:purple",
    "binary": "tab:green",
}


_MODE_COLORS = {"keyword": "tab:brown", "hybrid": "tab:gray"}


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


def plot_report(report: Report, out_dir: str | os.PathLike[str], prefix: str | None = None) -> list[Path]:
    """Three PNGs: quality kept vs RAM bytes/doc (Pareto front), quality vs multiplier, latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = prefix or _slug(report.dataset)
    ndcg = report.metrics[0]
    title = f"{report.dataset} ({report.documents:,} docs, {report.queries} queries), {report.model}"
    paths: list[Path] = []

    # 1. quality kept vs bytes per document, Pareto front marked
    # the multiplier sweep has its own plot: keep only its x4 point here, and no unmeasured bytes;
    # dense configurations only (keyword holds nothing in RAM, hybrid needs the texts on disk)
    rs = [
        r
        for r in report.results
        if r.mode == "dense"
        and not np.isnan(r.ram_bytes_per_doc)
        and not (r.rescore and r.multiplier != DEFAULT_MULTIPLIER and r.truncate_dim is None)
    ]
    pts = [(r.ram_bytes_per_doc, r.kept[ndcg]) for r in rs]
    front = _pareto(pts)
    fig, ax = plt.subplots(figsize=(9, 6))
    colors = _COLORS
    for i, (r, (x, y)) in enumerate(zip(rs, pts, strict=True)):
        marker = "o" if r.truncate_dim is None else "s"
        ax.scatter(
            x,
            y,
            c=colors.get(r.precision, "tab:gray"),
            marker=marker,
            s=60 if i in front else 25,
            edgecolors="black" if i in front else "none",
            zorder=5,  # above the labels' white boxes
        )
    label_points(ax, [r.name for r in rs], pts)
    fx = [pts[i][0] for i in front]
    fy = [pts[i][1] for i in front]
    ax.step(fx, fy, where="post", color="black", lw=1, ls="--", label="Pareto front", zorder=2)
    for p, c in colors.items():
        ax.scatter([], [], c=c, label=f"stage 1: {p}")
    ax.scatter([], [], c="gray", marker="s", label="Matryoshka-truncated")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("bytes per document held in RAM (log scale)")
    ax.set_ylabel(f"{ndcg} kept, % of float32")
    ax.set_title(f"Quality vs memory (rescore multiplier 4): {title}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    paths.append(out / f"{prefix}-pareto.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    # 2. quality vs rescore multiplier (full-dimension binary + int8 rescoring)
    mult = sorted(
        (
            r
            for r in report.results
            if r.mode == "dense" and r.precision == "binary" and r.rescore == ["int8"] and r.truncate_dim is None
        ),
        key=lambda r: r.multiplier,
    )
    if mult:
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
        ax.set_title(f"binary + int8 rescoring: {title}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / f"{prefix}-rescore.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)

    # 3. latency per configuration (one query at a time), with batch throughput
    rs = report.results
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rs) + 1.5))
    y = np.arange(len(rs))
    p50 = [r.latency_p50_ms for r in rs]
    p95 = [r.latency_p95_ms for r in rs]
    bar_colors = [_MODE_COLORS.get(r.mode) or colors.get(r.precision, "tab:gray") for r in rs]
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
    ax.set_title(f"Latency: {title}", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    paths.append(out / f"{prefix}-latency.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


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
    prefix = _slug(report.dataset)
    data = report.to_dict()
    if command:
        data["command"] = command
    paths: dict[str, Path] = {"json": out / f"{prefix}.json", "markdown": out / f"{prefix}.md"}
    _atomic_write(paths["json"], lambda fh: fh.write(json.dumps(data, indent=1)), mode="w")
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
    _atomic_write(paths["markdown"], lambda fh: fh.write("\n".join(md)), mode="w")
    return paths
