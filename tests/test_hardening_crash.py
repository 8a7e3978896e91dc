"""Crash consistency and full disks.

A writer killed right after any of its commit points (a rename, an SQLite commit, a removal), twice in
a row, leaves exactly one committed state; a full disk fails a write with a clear error, leaves the
collection as it was, and blocks no later write. Killed writers are children forked from a clean
"zygote" process (a fork after numba's OpenMP pool started would abort) that exit abruptly
(``os._exit``, like a kill: no cleanup runs); the test process copies directories and compares.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import json
import multiprocessing
import os
import pickle
import shutil
import signal
import sqlite3
import tempfile
import traceback
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import bitsearch.files
from bitsearch import Collection, CollectionError
from bitsearch.store import DocStore

DIM = 32
KILLED = 97  # the exit status of a child killed at a commit point
BASE_IDS = [f"d{i}" for i in range(20)]
NEW_IDS = [f"n{i}" for i in range(4)]
CLI_IDS = [f"c{i}" for i in range(6)]
UNIVERSE = BASE_IDS + NEW_IDS + CLI_IDS
QUERIES = np.random.default_rng(5).normal(size=(3, DIM)).astype(np.float32)


def _vec(text: str) -> np.ndarray:
    """A deterministic unit vector per text (the fake model of the CLI runs, and the documents' vectors)."""
    v = np.random.default_rng(zlib.crc32(text.encode())).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _text(doc_id: str) -> str:
    """Every text matches the keyword query "text"; half of them "even"."""
    return f"text {doc_id} {'even' if int(doc_id[1:]) % 2 == 0 else 'odd'}"


def _add(col: Collection, ids: list[str]) -> None:
    """Add documents ``ids`` with their texts, vectors and an "even" metadata field."""
    texts = [_text(i) for i in ids]
    meta = [{"even": int(i[1:]) % 2 == 0} for i in ids]
    col.add(np.stack([_vec(t) for t in texts]), ids=ids, texts=texts, metadata=meta)


# ----------------------------------------------------------------------------- forked children


def _fork(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """Run ``fn(*args)`` in a forked child: ("ok", result), ("killed", None) or ("error", traceback)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        signal.alarm(60)  # a hung child dies rather than the test run
        try:
            out = pickle.dumps(("ok", fn(*args)))
        except BaseException as exc:
            out = pickle.dumps(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        with os.fdopen(w, "wb") as f:
            f.write(out)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code == KILLED:
        return "killed", None
    if code != 0 or not data:  # e.g. -15: numba's OpenMP pool had started before the fork
        return "error", f"child died with status {code}"
    return pickle.loads(data)


class _Zygote:
    """A fresh process that starts no thread pool and forks one child per run (see ``_fork``)."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=_zygote_main, args=(theirs,), daemon=True)
        self.proc.start()
        theirs.close()
        assert self.conn.recv() == "ready"

    def run(self, fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
        self.conn.send((fn, args))
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(30)


def _zygote_main(conn: Any) -> None:  # pragma: no cover - runs in the zygote
    with tempfile.TemporaryDirectory() as scratch:  # load every compiled kernel the writes use
        path = Path(scratch) / "c"
        _base(path)
        ops = (_op_add, _op_upsert, _op_upsert_novec, _op_delete, _op_compact, _op_build, _op_drop)
        writes = [(op, path) for op in ops]
        writes.append((_cli(_corpus(Path(scratch) / "corpus.jsonl", CLI_IDS)), Path(scratch) / "cli"))
        for op, where in writes:
            with contextlib.suppress(Exception):  # only the kernels matter here
                op(where)
    # a killed process loses nothing its writes left in the page cache: fsync only costs time here
    os.fsync = lambda fd: None
    conn.send("ready")
    while (msg := conn.recv()) is not None:
        fn, args = msg
        conn.send(_fork(fn, *args))


def _arm(n: int) -> None:
    """In a child: exit abruptly right after the n-th commit point (a step that changes the disk)."""
    count = [0]

    def step() -> None:
        count[0] += 1
        if count[0] == n:
            os._exit(KILLED)

    def always(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*a: Any, **k: Any) -> Any:
            out = fn(*a, **k)
            step()
            return out

        return wrapped

    def if_present(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(p: Any, *a: Any, **k: Any) -> Any:
            present = os.path.lexists(p)
            out = fn(p, *a, **k)
            if present:
                step()
            return out

        return wrapped

    def if_rows(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*a: Any, **k: Any) -> Any:
            out = fn(*a, **k)
            if out:
                step()
            return out

        return wrapped

    os.replace = always(os.replace)
    os.rename = always(os.rename)
    Path.mkdir = always(Path.mkdir)  # type: ignore[method-assign]
    shutil.rmtree = if_present(shutil.rmtree)
    Path.unlink = if_present(Path.unlink)  # type: ignore[method-assign]
    DocStore.insert = always(DocStore.insert)  # type: ignore[method-assign]
    DocStore.allow_repeated_ids = always(DocStore.allow_repeated_ids)  # type: ignore[method-assign]
    DocStore.purge_from = if_rows(DocStore.purge_from)  # type: ignore[method-assign]
    DocStore.purge_seqs = if_rows(DocStore.purge_seqs)  # type: ignore[method-assign]
    real_init = DocStore.__init__

    def init(self: DocStore, *a: Any, **k: Any) -> None:
        real_init(self, *a, **k)
        if k.get("create"):
            step()  # the schema's commit

    DocStore.__init__ = init  # type: ignore[method-assign]


def _ann_settings(ann: dict[str, Any]) -> list[int]:
    """What tells one index from another (its directory name is no part of a state)."""
    return [ann["nlist"], ann["nprobe"], ann["seed"], ann["rows"]]


def _observe(path: Path) -> dict[str, Any]:
    """What a reader sees of the collection at ``path``: ids, texts, vectors' rankings, keyword hits."""
    if not (path / "manifest.json").exists():
        return {"absent": True}
    c = Collection.open(path, verify=True)
    k = len(UNIVERSE) + 5

    def hits(results: Any, scores: bool = True) -> list[list[Any]]:
        return [sorted((h.id, round(h.score, 4) if scores else 0, h.text, h.metadata) for h in r) for r in results]

    seen = {
        "len": len(c),
        "rows": c.stats()["rows"],  # tells a compacted collection from the one before
        "live": sorted(i for i in UNIVERSE if i in c),
        "ann": None if c.manifest.get("ann") is None else _ann_settings(c.manifest["ann"]),
        "int8": hits(c.search(QUERIES, k=k, rescore="int8")),
        "exact": hits(c.search(QUERIES, k=k, rescore=None, exact=True)),
        "filter": hits(c.search(QUERIES[:1], k=k, filter={"even": True})),
        "keyword": hits(c.search(["text", "even"], k=k, mode="keyword"), scores=False),
    }
    c.close()
    return json.loads(json.dumps(seen))  # tuples as lists: comparable with ==


def _killed_write(op: Callable[[Path], None], path: Path, kill_at: int) -> None:
    """In a child: ``op`` on ``path``, exiting abruptly after its ``kill_at``-th commit point."""
    _arm(kill_at)
    op(path)


def _written(op: Callable[[Path], None], path: Path) -> dict[str, Any]:
    """``op`` run to completion on ``path`` (in this process), and what a reader then sees."""
    op(path)
    return _observe(path)


def _probe(path: Path) -> list[str]:
    """Further writes after the crashes: every id not live is added again (none may look taken) and the
    collection compacted; returns the temporary files left (there must be none)."""
    c = Collection.open(path)
    before = len(c)
    missing = [i for i in UNIVERSE if i not in c and i[0] != "c"]
    _add(c, missing)
    c.compact()
    again = Collection.open(path)
    assert len(again) == before + len(missing) == sum(i in again for i in UNIVERSE)
    c.close()
    again.close()
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if ".tmp" in p.name)


# ----------------------------------------------------------------------------- the writes


def _base(path: Path) -> None:
    col = Collection.create(path, DIM, calibration_embeddings=np.stack([_vec(_text(i)) for i in BASE_IDS]))
    _add(col, BASE_IDS[:12])
    _add(col, BASE_IDS[12:])
    col.delete(["d5"])
    col.build_index(nlist=3, nprobe=3)


def _op_add(path: Path) -> None:
    _add(Collection.open(path), NEW_IDS)


def _op_upsert(path: Path) -> None:
    """New versions of d3 and d4 (other texts and vectors, "even" flipped) and one new document, n0."""
    ids = ["d3", "d4", "n0"]
    texts = [f"text {i} upserted" for i in ids]
    meta = [{"even": int(i[1:]) % 2 == 1} for i in ids]
    Collection.open(path).upsert(np.stack([_vec(t) for t in texts]), ids=ids, texts=texts, metadata=meta)


def _op_upsert_novec(path: Path) -> None:
    """d6 replaced by a version without a vector, n1 added without one, d7 given a new vector."""
    ids = ["d6", "n1", "d7"]
    texts = [f"text {i} novec" for i in ids]
    meta = [{"even": True}] * 3
    vectors = [None, None, _vec(texts[2])]
    Collection.open(path).upsert(vectors, ids=ids, texts=texts, metadata=meta)


def _op_delete(path: Path) -> None:
    Collection.open(path).delete(["d0", "d1", "d2"])


def _op_compact(path: Path) -> None:
    Collection.open(path).compact()


def _op_build(path: Path) -> None:
    Collection.open(path).build_index(nlist=4, nprobe=4, seed=1)


def _op_drop(path: Path) -> None:
    Collection.open(path).drop_index()


class _FakeEncoder:
    """Stands in for the model in the CLI runs: deterministic vectors, no torch."""

    dim = DIM
    batch_size = 4
    truncate_dim = None
    name = "fake-encoder"

    def encode_documents(self, texts: Any, **_: Any) -> np.ndarray:
        return np.stack([_vec(t) for t in texts])

    def manifest_info(self) -> dict[str, Any]:
        return {"name": self.name, "dim": DIM}


def _op_cli(corpus: Path, path: Path) -> None:
    """`bitsearch index corpus --out path --chunk-size 4`, with the fake model."""
    from bitsearch.cli import app, models

    real = models.load_encoder, models.encoder_for
    models.load_encoder = models.encoder_for = lambda *a, **k: _FakeEncoder()  # type: ignore[assignment]
    try:
        app(["index", str(corpus), "--out", str(path), "--chunk-size", "4", "--quiet"], standalone_mode=False)
    except SystemExit as exc:
        assert not exc.code, exc.code
    finally:
        models.load_encoder, models.encoder_for = real


def _cli(corpus: Path) -> Callable[[Path], None]:
    return functools.partial(_op_cli, corpus)


def _corpus(path: Path, ids: list[str]) -> Path:
    path.write_text("".join(json.dumps({"_id": i, "title": "", "text": _text(i)}) + "\n" for i in ids))
    return path


# ----------------------------------------------------------------------------- crash at every point


def _copy(src: Path, dst: Path) -> Path:
    if src.exists():
        shutil.copytree(src, dst, copy_function=shutil.copyfile)
    return dst


def _crashes(zygote: _Zygote, src: Path, op: Callable[[Path], None], work: Path) -> tuple[list[tuple[Path, Any]], Any]:
    """Copies of ``src`` with ``op`` killed after its 1st, 2nd, ... commit point (each with what a
    reader sees after the crash), and what the write gives when it completes."""
    crashed = []
    for n in itertools.count(1):
        dst = _copy(src, work / f"n{n}")
        status, value = zygote.run(_killed_write, op, dst, n)
        if status == "ok":
            return crashed, _observe(dst)
        assert status == "killed", value
        crashed.append((dst, _observe(dst)))
    raise AssertionError("unreachable")


# first write, second write (valid on the state before and after the first), both crashed everywhere
PAIRS = {
    "add": (_op_add, _op_delete),
    "upsert": (_op_upsert, _op_delete),
    "upsert_novec": (_op_upsert_novec, _op_compact),
    "delete": (_op_delete, _op_compact),
    "compact": (_op_compact, _op_build),
    "build_index": (_op_build, _op_add),
    "drop_index": (_op_drop, _op_compact),
}


def _check_twice(
    zygote: _Zygote,
    src: Path,
    first: Callable[[Path], None],
    second: Callable[[Path], None],
    states: list[Any],
    work: Path,
) -> None:
    """Crash ``first`` at every point, then ``second`` at every point on each crashed copy.

    ``states``: what a reader may see, in commit order (the state before ``first`` first). After
    each crash a reader sees one of them; ``second`` run to completion on a crashed copy gives what it
    gives on the clean state it recovered to; a last write then finds every id either live or free.
    """

    def state_of(seen: Any, where: str) -> int:
        assert seen in states, f"{where}: a state that was never committed: {seen}"
        return states.index(seen)

    after_second: dict[int, Any] = {}
    crashed, done = _crashes(zygote, src, first, work / "first")
    assert state_of(done, "first write completed") == len(states) - 1
    assert crashed, "the first write has no commit point"
    for n, (path, seen) in enumerate(crashed, 1):
        at = state_of(seen, f"first write killed at point {n}")
        if at not in after_second:  # the second write on the clean committed state
            clean = _copy(src, work / f"clean{at}")
            if at == 1:
                first(clean)
            after_second[at] = _written(second, clean)
        again, done2 = _crashes(zygote, path, second, work / f"second{n}")
        assert done2 == after_second[at], f"the second write after a crash at point {n} differs"
        for m, (path2, seen2) in enumerate(again, 1):
            assert seen2 in (seen, after_second[at]), (
                f"killed at point {n} of the first write and {m} of the second: a state never committed: {seen2}"
            )
            if m == len(again):
                assert _probe(path2) == [], "temporary files outlived a write"
            shutil.rmtree(path2)


@pytest.fixture(scope="module")
def zygote() -> Iterator[_Zygote]:
    z = _Zygote()
    yield z
    z.close()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("base") / "c"
    return path, _written(_base, path)


@pytest.mark.parametrize("first", list(PAIRS))
def test_crash_at_every_commit_point_twice(zygote: _Zygote, base: tuple[Path, Any], first: str, tmp_path: Path) -> None:
    src, before = base
    op1, op2 = PAIRS[first]
    after = _written(op1, _copy(src, tmp_path / "clean"))
    assert after != before
    _check_twice(zygote, src, op1, op2, [before, after], tmp_path)


def test_crash_at_every_commit_point_of_the_index_command(zygote: _Zygote, tmp_path: Path) -> None:
    """`bitsearch index` (two chunks into a new directory), killed anywhere, then re-run and killed
    anywhere: each crash leaves no collection, an empty one, or the chunks committed so far; the re-run
    completes it. The re-run is crashed everywhere after the last crash of the first run that reached
    each state (the one with the most left over)."""
    Collection.create(tmp_path / "empty", DIM).close()  # created, killed before its first chunk
    states: list[Any] = [{"absent": True}, _observe(tmp_path / "empty")]
    for n in (4, len(CLI_IDS)):
        part = _corpus(tmp_path / f"part{n}.jsonl", CLI_IDS[:n])
        states.append(_written(_cli(part), tmp_path / f"ref{n}"))
    corpus = _corpus(tmp_path / "corpus.jsonl", CLI_IDS)
    crashed, done = _crashes(zygote, tmp_path / "none", _cli(corpus), tmp_path / "first")
    assert done == states[-1]
    last = {}
    for n, (_, seen) in enumerate(crashed, 1):
        assert seen in states, f"killed at point {n}: a state never committed: {seen}"
        last[states.index(seen)] = n
    assert {0, 1, 2} <= set(last), "some state was never reached by a crash"
    for at, n in last.items():
        again, done2 = _crashes(zygote, crashed[n - 1][0], _cli(corpus), tmp_path / f"second{n}")
        assert done2 == states[-1], f"the re-run after a crash at {n} did not complete the collection"
        for m, (_, seen2) in enumerate(again, 1):
            assert seen2 in states[at:], f"killed at {n}, then at {m}: a state never committed"


def _killed_after_commit(op: Callable[[Path], None], path: Path) -> None:
    """In a child: ``op`` on ``path``, exiting abruptly right after its manifest's rename."""
    real = os.replace

    def replace(src: Any, dst: Any) -> None:
        real(src, dst)
        if Path(dst).name == "manifest.json":
            os._exit(KILLED)

    os.replace = replace
    op(path)


def test_deleted_documents_stay_deleted_after_two_crashes(
    zygote: _Zygote, base: tuple[Path, Any], tmp_path: Path
) -> None:
    """The issue's sequence: killed right after the commit of a delete, then of the compaction."""
    path = _copy(base[0], tmp_path / "c")
    assert zygote.run(_killed_after_commit, _op_delete, path)[0] == "killed"
    assert zygote.run(_killed_after_commit, _op_compact, path)[0] == "killed"
    seen = _observe(path)
    assert seen["len"] == 16 and not {"d0", "d1", "d2"} & set(seen["live"])
    assert not {"d0", "d1", "d2"} & {h[0] for r in seen["keyword"] for h in r}
    _probe(path)


# ----------------------------------------------------------------------------- a full disk


class _Disk:
    """A disk that fills up: collection files past ``budget`` bytes (those whose name starts with
    ``only``, if given), and SQLite's writes while ``sqlite_full``, fail as on a full disk."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.budget: int | None = None
        self.only: str | None = None
        self.sqlite_full = False
        disk = self

        class File:
            def __init__(self, path: Any) -> None:
                self.name = os.fspath(path)
                self.f = open(path, "wb")  # noqa: SIM115 - closed by __exit__

            def write(self, b: Any) -> int:
                data = memoryview(b).cast("B")
                applies = disk.only is None or os.path.basename(self.name).startswith(disk.only)
                if disk.budget is not None and applies:
                    if len(data) > disk.budget:
                        self.f.write(data[: disk.budget])
                        disk.budget = 0
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    disk.budget -= len(data)
                return self.f.write(data)

            def flush(self) -> None:
                self.f.flush()

            def fileno(self) -> int:
                return self.f.fileno()

            def __enter__(self) -> File:
                return self

            def __exit__(self, *exc: Any) -> None:
                self.f.close()

        def fake_open(path: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
            return File(path) if mode == "wb" else open(path, mode, *a, **k)

        class Connection:
            def __init__(self, con: sqlite3.Connection) -> None:
                self.con = con

            def __getattr__(self, name: str) -> Any:
                return getattr(self.con, name)

            def execute(self, sql: str, *a: Any) -> Any:
                if disk.sqlite_full and sql.split()[0].upper() in ("INSERT", "DELETE", "UPDATE", "BEGIN"):
                    raise sqlite3.OperationalError("database or disk is full")
                return self.con.execute(sql, *a)

            def executemany(self, sql: str, *a: Any) -> Any:
                if disk.sqlite_full:
                    raise sqlite3.OperationalError("database or disk is full")
                return self.con.executemany(sql, *a)

        real_con = DocStore._con
        # bitsearch.files writes every collection file (segments, tombstones, the manifest)
        monkeypatch.setattr(bitsearch.files, "open", fake_open, raising=False)
        monkeypatch.setattr(DocStore, "_con", lambda self: Connection(real_con(self)))

    def fill(self, mode: str) -> None:
        self.budget, self.only, self.sqlite_full = None, None, True
        if mode == "manifest":
            self.budget, self.only = 0, ".manifest.json.tmp"
        elif mode != "sqlite":
            self.budget = int(mode)

    def free(self) -> None:
        self.budget, self.only, self.sqlite_full = None, None, False


def _files(path: Path) -> list[str]:
    skip = {".lock", "docs.sqlite", "docs.sqlite-wal", "docs.sqlite-shm"}
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.name not in skip)


WRITES = {
    "add": lambda c: _add(c, NEW_IDS),
    "delete": lambda c: c.delete(["d0", "d1", "d2"]),
    "compact": lambda c: c.compact(),
    "build_index": lambda c: c.build_index(nlist=4, nprobe=4, seed=1),
}


@pytest.mark.parametrize("write", list(WRITES))
@pytest.mark.parametrize("mode", ["0", "200", "manifest", "sqlite"])
def test_a_full_disk_fails_cleanly_and_blocks_nothing(
    base: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write: str, mode: str
) -> None:
    """The disk fills (at the first file, after 200 bytes, at the manifest, or only for SQLite): the
    write raises a CollectionError saying so and leaves the collection as it was, temporary files
    included; it keeps failing so while the disk is full, and succeeds once there is space again.
    Writes that need SQLite only after their commit (to purge) succeed even while it is full."""
    src, before = base
    path = _copy(src, tmp_path / "c")
    expected = _copy(src, tmp_path / "expected")
    WRITES[write](Collection.open(expected))
    files = _files(path)
    disk = _Disk(monkeypatch)
    col = Collection.open(path)
    if mode == "sqlite" and write != "add":
        disk.fill(mode)
        WRITES[write](col)
    else:
        for _ in range(2):
            disk.fill(mode)
            with pytest.raises(CollectionError, match="no space left on device"):
                WRITES[write](col)
            assert _files(path) == files
        disk.free()
        assert _observe(path) == before
        WRITES[write](col)
    disk.free()
    assert _observe(path) == _observe(expected)
    assert not [f for f in _files(path) if ".tmp" in f]


def test_a_write_after_a_full_disk_removes_what_the_failure_left(
    base: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leftovers of a failed write (an orphan segment, temporary files) go before the next write
    touches SQLite, which needs the space they hold."""
    path = _copy(base[0], tmp_path / "c")
    leftovers = [
        path / "segments" / "000099" / "seqs.npy",
        path / "segments" / ".tmp-000098-1" / "binary.npy",
        path / ".manifest.json.tmp-1-2",
        path / ".tombstones-000009.npy.tmp",
        path / ".rotation.npy.tmp",
        path / ".ann-000097.tmp-1" / "codes.npy",
    ]
    for f in leftovers:
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"x" * 100)
    (path / "docs.sqlite-journal").write_bytes(b"")  # unrelated names stay
    real = DocStore.purge_from

    def purge_from(self: DocStore, seq: int) -> int:  # the space SQLite needs is held by the leftovers
        if any(f.exists() for f in leftovers):
            raise sqlite3.OperationalError("database or disk is full")
        return real(self, seq)

    monkeypatch.setattr(DocStore, "purge_from", purge_from)
    col = Collection.open(path)
    _add(col, NEW_IDS)
    assert not any(f.exists() for f in leftovers)
    assert sorted(p.name for p in (path / "segments").iterdir()) == [s["name"] for s in col.manifest["segments"]]
    assert not list(path.glob(".ann-*")) and len(col) == 23


# ----------------------------------------------------------------------------- directory names, open files


def test_build_index_after_compact(base: tuple[Path, Any], tmp_path: Path) -> None:
    """Compaction's rebuilt index and the next index get directory numbers no other directory uses."""
    path = _copy(base[0], tmp_path / "c")
    col = Collection.open(path)
    col.compact()
    col.build_index(nlist=4, nprobe=4)
    _add(col, NEW_IDS)
    col.compact()
    col.build_index(nlist=2, nprobe=2)
    names = [p.name for p in path.iterdir() if p.name.startswith("ann-")] + [
        p.name for p in (path / "segments").iterdir()
    ]
    m = col.manifest
    assert sorted(names) == sorted([m["ann"]["dir"], *(s["name"] for s in m["segments"])])
    assert len(Collection.open(path, verify=True)) == 23


def test_an_existing_name_is_never_renamed_onto(base: tuple[Path, Any], tmp_path: Path) -> None:
    """A manifest whose counter points at a directory in use (as compaction used to leave it) still
    builds: the new index takes the next free number."""
    path = _copy(base[0], tmp_path / "c")
    m = json.loads((path / "manifest.json").read_text())
    m["next_segment"] = int(m["ann"]["dir"].split("-")[1])
    (path / "manifest.json").write_text(json.dumps(m))
    col = Collection.open(path)
    col.build_index(nlist=4, nprobe=4)
    assert col.manifest["ann"]["dir"] != m["ann"]["dir"]
    assert Collection.open(path).search(QUERIES, k=3)[0]


def test_a_filtered_search_reads_a_snapshot_whose_files_are_gone(base: tuple[Path, Any], tmp_path: Path) -> None:
    """A snapshot keeps its files open: a filtered search after another writer removed them (a
    compaction elsewhere) reads through the descriptors and opens no file by path."""
    path = _copy(base[0], tmp_path / "c")
    col = Collection.open(path)
    col.compact()  # seqs no longer consecutive: the filter reads them from seqs.npy
    _add(col, NEW_IDS)
    reader = Collection.open(path)
    want = reader.search(QUERIES, k=30, filter={"even": True}, rescore="int8")
    reader = Collection.open(path)
    shutil.rmtree(path / "segments")
    real_open = os.open

    def no_open(p: Any, *a: Any, **k: Any) -> int:
        if "segments" in str(p):
            raise FileNotFoundError(errno.ENOENT, "opened by path", str(p))
        return real_open(p, *a, **k)

    os.open = no_open
    try:
        got = reader.search(QUERIES, k=30, filter={"even": True}, rescore="int8")
    finally:
        os.open = real_open
    assert [[(h.id, h.score) for h in r] for r in got] == [[(h.id, h.score) for h in r] for r in want]
    assert all(h.metadata == {"even": True} for r in got for h in r)


def test_compaction_purges_rows_of_no_segment(base: tuple[Path, Any], tmp_path: Path) -> None:
    """A document row whose sequence number no segment holds (what two crashes used to leave) looks
    live until the next compaction removes it; then its id is free again."""
    path = _copy(base[0], tmp_path / "c")
    Collection.open(path).compact()  # d5's row (seq 5) is gone from the segments
    with sqlite3.connect(path / "docs.sqlite") as con:
        con.execute("INSERT INTO docs (seq, id, text) VALUES (5, 'd5', ?)", (_text("d5"),))
    col = Collection.open(path)
    assert "d5" in col  # the damage, as left by older releases
    col.compact()
    assert "d5" not in col and len(col) == 19
    _add(col, ["d5"])
    assert "d5" in Collection.open(path) and len(Collection.open(path)) == 20
