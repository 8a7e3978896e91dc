"""Defaults chosen by the worst dataset: rotation and pre-selection depth per code family (issue 17, part 1).

Every retrieval set in shared/data, embedded with the packaged all-MiniLM-L6-v2 or the model --model names
(embeddings cached), is searched through
the real Collection path with each candidate setting: NDCG@10 kept (% of exact float32), stage 1 alone (no
rescoring) and with int8 rescoring of 4 x k. A setting is chosen by its worst set, never its mean, and checked
leave-one-dataset-out: the rule picks a setting on all sets but one, and the held-out set reports it.
FAISS IndexRaBitQ (1 bit, float and 4-bit query) on the same vectors stands beside rabitq when faiss is
installed. Stage-1 time of the chosen defaults at --n synthetic rows (0: not timed), as a ratio to plain
Hamming in the same run.

    python benchmarks/bench_defaults.py [--datasets ...] [--n 1000000] [--model PATH --model-name NAME] [--no-write]
    python benchmarks/bench_defaults.py --combine all-MiniLM-L6-v2 all-mpnet-base-v2   # the rule over both runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import RESULTS, machine, results_ndcg, rows_ndcg, write_section
from _synthetic import synthetic_embeddings

from bitsearch import Collection
from bitsearch.encode import Encoder
from bitsearch.evaluate import embed_dataset, load_dataset
from bitsearch.evaluate.cache import slug

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DEPTHS = (16, 32, 64, 128, 256)  # pre-selection: the Hamming top depth x k are scored by the code's estimator
TOLERANCE = 0.1  # points of NDCG kept a shallower pre-selection may lose to the full scan, on the worst set
# family -> rotation choices (Collection.create options, each rotation explicit: the defaults change)
FAMILIES: dict[str, dict[str, dict]] = {
    "binary": {"not rotated": {"rotation": False}, "rotated": {"rotation": True}},
    "1.5bit": {
        "not rotated": {"precision": "1.5bit", "rotation": False},
        "rotated": {"precision": "1.5bit", "rotation": True},
    },
    "2bit": {
        "rotated": {"precision": "2bit", "rotation": True},
        "not rotated": {"precision": "2bit", "rotation": False},
    },
    "rabitq": {
        "rotated": {"precision": "rabitq", "rotation": True},
        "not rotated": {"precision": "rabitq", "rotation": False},
    },
}
# peers on the same vectors, stage 1 alone: name -> (FAISS IndexRaBitQ bits, query bits)
PEERS = {"FAISS IndexRaBitQ 1-bit, qb=0": (1, 0), "FAISS IndexRaBitQ 1-bit, qb=4": (1, 4)}
DEFAULT_MODEL = "all-MiniLM-L6-v2"


def shared_sets() -> list[str]:
    return sorted(p.name for p in DATA.iterdir() if (p / "corpus.jsonl").is_file() and (p / "qrels").is_dir())


def encoder(model: str | None, model_name: str | None) -> Encoder:
    """The packaged model, or the one at ``model`` named ``model_name`` (the name keys the embedding cache)."""
    if model is None:
        return Encoder()
    enc = Encoder(model)
    enc.name = model_name or Path(model).name
    return enc


def measure(datasets: list[str], enc: Encoder) -> tuple[dict, dict]:
    """kept[(family, rotation, depth or 'full', rescored)][dataset] = NDCG@10 as % of float32; base[dataset].
    Peers (when faiss is installed) under kept[(peer name, None, None, False)]."""
    kept: dict = {}
    base: dict[str, float] = {}
    for name in datasets:
        ds = load_dataset(DATA / name)
        doc, qry = embed_dataset(ds, enc, show_progress=True)

        def ndcg(col: Collection, ds=ds, qry=qry, **kw: object) -> float:
            return results_ndcg(ds, col.search(qry, k=10, **kw))

        with tempfile.TemporaryDirectory() as tmp:
            ref = Collection.create(Path(tmp) / "f", doc.shape[1], precision="float32", keyword_index=False)
            ref.add(doc, ids=list(ds.doc_ids))
            base[name] = ndcg(ref)
            for family, rotations in FAMILIES.items():
                for rot, opts in rotations.items():
                    col = Collection.create(Path(tmp) / f"{family}-{rot}", doc.shape[1], keyword_index=False, **opts)
                    col.add(doc, ids=list(ds.doc_ids))
                    for depth in (*DEPTHS, "full"):
                        search = {"exact": True} if depth == "full" else {"preselect": depth}
                        for rescored, extra in ((False, {"rescore": None}), (True, {"rescore_multiplier": 4})):
                            value = 100 * ndcg(col, **search, **extra) / base[name]
                            kept.setdefault((family, rot, depth, rescored), {})[name] = value
                    col.close()
        for peer, value in faiss_peers(ds, doc, qry).items():
            kept.setdefault((peer, None, None, False), {})[name] = 100 * value / base[name]
        print(name, "float32", round(base[name], 4), flush=True)
    return kept, base


def shipped_defaults() -> dict[str, tuple[str, int]]:
    """Each family's default in the library (``Codec.default_rotation``, ``Codec.preselect_depth``)."""
    from bitsearch.codecs import CODECS

    return {
        f: ("rotated" if CODECS[f].default_rotation else "not rotated", CODECS[f].preselect_depth) for f in FAMILIES
    }


def faiss_peers(ds: object, doc: np.ndarray, qry: np.ndarray) -> dict[str, float]:
    """NDCG@10 of FAISS IndexRaBitQ on the same vectors (empty when faiss is not installed)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return {}
    from bench_rabitq import faiss_index, faiss_search

    out = {}
    for name, (bits, qb) in PEERS.items():
        idx, inner, _ = faiss_index(doc, bits, rotate=False)
        scores, rows = faiss_search(idx, inner, qry, 10, qb)
        out[name] = rows_ndcg(ds, rows, scores)
    return out


def choose(kept: dict, family: str, sets: list[str]) -> tuple[str, int]:
    """The rule: the rotation with the best worst set on the default search path (int8 rescoring of 4 x k), then
    the shallowest depth whose worst loss to the full scan without rescoring on `sets` is at most TOLERANCE."""
    worst = {rot: min(kept[(family, rot, "full", True)][s] for s in sets) for rot in FAMILIES[family]}
    rot = max(worst, key=lambda r: worst[r])
    for depth in DEPTHS:
        loss = max(kept[(family, rot, "full", False)][s] - kept[(family, rot, depth, False)][s] for s in sets)
        if loss <= TOLERANCE:
            return rot, depth
    return rot, DEPTHS[-1]


def stage1_speed(n: int, chosen: dict[str, tuple[str, int]], reps: int = 15) -> dict[str, tuple[float, float]]:
    """Median stage-1 seconds (one query, batch of 100 per query) of plain Hamming, each chosen default, a
    full rabitq scan with the 4-bit query, and FAISS IndexRaBitQ 1-bit (qb=4) on the same rows when installed."""
    gen, _ = synthetic_embeddings(384, seed=0)
    doc = np.concatenate([gen(min(200_000, n - i)) for i in range(0, n, 200_000)])
    q = gen(100)
    setups = {"plain Hamming": ({"stage1": "hamming"}, {})}
    for family, (rot, depth) in chosen.items():
        setups[f"{family} default ({rot}, top {depth} x k)"] = (FAMILIES[family][rot], {"preselect": depth})
    rot = chosen["rabitq"][0]
    setups["rabitq full scan, 4-bit query"] = ({**FAMILIES["rabitq"][rot], "query_bits": 4}, {"exact": True})
    out = {}
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        runs: dict[str, Callable[[np.ndarray], float]] = {}
        for name, (opts, kw) in setups.items():
            col = Collection.create(Path(tmp) / str(len(runs)), 384, keyword_index=False, keep_int8=False, **opts)
            col.add(doc)
            runs[name] = lambda x, col=col, kw=kw: col.search(x, k=10, rescore=None, **kw).timings["stage1"]
        try:
            import faiss
        except ImportError:
            faiss = None
        if faiss is not None:
            from bench_rabitq import faiss_index, faiss_search

            faiss.omp_set_num_threads(numba.get_num_threads())
            idx, inner, _ = faiss_index(doc, 1, rotate=False)

            def peer(x: np.ndarray, idx=idx, inner=inner) -> float:
                t0 = time.perf_counter()
                faiss_search(idx, inner, x, 10, 4)
                return time.perf_counter() - t0

            runs["FAISS IndexRaBitQ 1-bit, qb=4 (flat)"] = peer
        for fn in runs.values():
            fn(q[:2])  # compile, fault pages in
        single: dict[str, list[float]] = {name: [] for name in runs}
        batch: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(reps):  # interleaved: load on the machine hits every setting alike
            for name, fn in runs.items():
                single[name].append(fn(q[r % 100 : r % 100 + 1]))
                if r < 3:
                    t0 = time.perf_counter()
                    fn(q)
                    batch[name].append((time.perf_counter() - t0) / len(q))
        for name in runs:
            out[name] = (statistics.median(single[name]), statistics.median(batch[name]))
    return out


def setting_cells(kept: dict, family: str, rot: str, depth: object, datasets: list[str]) -> tuple[list, list, str]:
    """One setting's NDCG kept per set (no rescoring, int8 rescoring) and its table cells "a / b"."""
    vals = [kept[(family, rot, depth, False)][d] for d in datasets]
    resc = [kept[(family, rot, depth, True)][d] for d in datasets]
    return vals, resc, " | ".join(f"{v:.2f} / {r:.2f}" for v, r in zip(vals, resc, strict=True))


def report(kept: dict, base: dict, datasets: list[str], speed: dict, n: int, model: str, command: str) -> str:
    title = "" if model == DEFAULT_MODEL else f", {model}"
    lines = [
        f"## Defaults chosen by the worst dataset (issue 17){title}",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        f"Model: {model}; float32 NDCG@10: " + ", ".join(f"{d} {base[d]:.4f}" for d in datasets),
        "",
        f"**The rule.** For each code family: the rotation whose *worst* set is best on the default search "
        f"(int8 rescoring of 4 x k; the tables show stage 1 alone too), then the shallowest pre-selection (the "
        f"Hamming top depth x k, scored by the code's estimator) whose worst loss without rescoring "
        f"against the full scan is at most {TOLERANCE} points. The mean never decides.",
        "",
        "### Leave one dataset out: the rule applied to the other sets, judged on the held-out one",
        "",
        "| code family | held out | chosen on the others | held-out NDCG kept, int8 rescoring | no rescoring | "
        "no rescoring, full scan | loss to full scan | best setting on the held-out set (no rescoring) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for family in FAMILIES:
        for held in datasets:
            others = [d for d in datasets if d != held]
            rot, depth = choose(kept, family, others)
            got = kept[(family, rot, depth, False)][held]
            full = kept[(family, rot, "full", False)][held]
            best = max(
                ((r, d) for r in FAMILIES[family] for d in (*DEPTHS, "full")),
                key=lambda rd, held=held: kept[(family, rd[0], rd[1], False)][held],
            )
            best_v = kept[(family, best[0], best[1], False)][held]
            lines.append(
                f"| {family} | {held} | {rot}, top {depth} x k | {kept[(family, rot, depth, True)][held]:.2f}% "
                f"| {got:.2f}% | {full:.2f}% | {full - got:+.2f} | "
                f"{best[0]}, {best[1]}: {best_v:.2f}% |"
            )
    chosen = {family: choose(kept, family, datasets) for family in FAMILIES}
    lines += [
        "",
        "### The defaults, chosen on every set, per set (NDCG@10 kept; no rescoring / int8 rescoring of 4 x k)",
        "",
        "| code family | default | " + " | ".join(datasets) + " | worst | mean |",
        "|---|---|" + "---|" * (len(datasets) + 2),
    ]
    for family, (rot, depth) in chosen.items():
        for label, key in ((f"{rot}, top {depth} x k", depth), (f"{rot}, full scan", "full")):
            vals, resc, cells = setting_cells(kept, family, rot, key, datasets)
            lines.append(
                f"| {family} | {label} | {cells} | {min(vals):.2f} / {min(resc):.2f} | "
                f"{statistics.mean(vals):.2f} / {statistics.mean(resc):.2f} |"
            )
    for peer in PEERS:
        if (peer, None, None, False) in kept:
            vals = [kept[(peer, None, None, False)][d] for d in datasets]
            cells = " | ".join(f"{v:.2f} / -" for v in vals)
            worst, mean = min(vals), statistics.mean(vals)
            lines.append(f"| {peer} | same vectors, flat | {cells} | {worst:.2f} / - | {mean:.2f} / - |")
    if model != DEFAULT_MODEL:
        lines += [
            "",
            f"### The shipped defaults (chosen over both models) on {model}, against this model's own choice",
            "",
            "| code family | shipped default | " + " | ".join(datasets) + " | worst | own choice's worst |",
            "|---|---|" + "---|" * (len(datasets) + 2),
        ]
        for family, (rot, depth) in shipped_defaults().items():
            vals, resc, cells = setting_cells(kept, family, rot, depth, datasets)
            own_rot, own_depth = chosen[family]
            own, own_r, _ = setting_cells(kept, family, own_rot, own_depth, datasets)
            lines.append(
                f"| {family} | {rot}, top {depth} x k | {cells} | {min(vals):.2f} / {min(resc):.2f} | "
                f"{min(own):.2f} / {min(own_r):.2f} ({own_rot}, {own_depth}) |"
            )
    lines += [
        "",
        "### Every setting measured, for the record (no rescoring / int8 rescoring of 4 x k)",
        "",
        "| code family | rotation | depth | " + " | ".join(datasets) + " | worst | mean |",
        "|---|---|---|" + "---|" * (len(datasets) + 2),
    ]
    for family, rotations in FAMILIES.items():
        for rot in rotations:
            for depth in (*DEPTHS, "full"):
                vals, resc, cells = setting_cells(kept, family, rot, depth, datasets)
                lines.append(
                    f"| {family} | {rot} | {depth} | {cells} | {min(vals):.2f} / {min(resc):.2f} | "
                    f"{statistics.mean(vals):.2f} / {statistics.mean(resc):.2f} |"
                )
    if not speed:
        return "\n".join(lines)
    s0, b0 = speed["plain Hamming"]
    lines += [
        "",
        f"### Stage-1 time of the shipped defaults at {n:,} x 384 synthetic rows (Gaussian fitted to MiniLM), k=10, "
        "medians",
        "",
        "bitsearch: the search's stage-1 timing; FAISS: its whole search call, on the same number of threads.",
        "",
        "| setting | one query ms | x plain Hamming | batch of 100, ms/query | x plain Hamming |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {1e3 * s:.2f} | {s / s0:.2f} | {1e3 * b:.3f} | {b / b0:.2f} |"
            for name, (s, b) in speed.items()
        ),
    ]
    return "\n".join(lines)


def saved_path(model: str) -> Path:
    """Where a run keeps its measurements for ``--combine`` (outside the project, beside the embedding cache)."""
    from bitsearch.evaluate import cache_dir

    return cache_dir().parent / "bench" / f"defaults-{slug(model)}.json"


def save(kept: dict, model: str) -> None:
    path = saved_path(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [[list(key), values] for key, values in kept.items()]
    path.write_text(json.dumps({"model": model, "kept": rows}))


def combined(models: list[str]) -> tuple[dict, list[str]]:
    """Every saved model's measurements as one table whose sets are "model: set"."""
    kept: dict = {}
    sets: list[str] = []
    for model in models:
        data = json.loads(saved_path(model).read_text())
        for key, values in data["kept"]:
            depth = key[2] if key[2] in (None, "full") else int(key[2])
            for name, v in values.items():
                kept.setdefault((key[0], key[1], depth, key[3]), {})[f"{model}: {name}"] = v
                if f"{model}: {name}" not in sets:
                    sets.append(f"{model}: {name}")
    return kept, sets


def combined_report(models: list[str]) -> str:
    """The rule applied over every (model, set) pair that the runs saved, beside each model's own choice."""
    kept, sets = combined(models)
    shipped = shipped_defaults()
    lines = [
        "## Defaults chosen by the worst (model, set) pair over both models (issue 17)",
        "",
        f"Command: `python benchmarks/bench_defaults.py --combine {' '.join(models)}` (after one run per model)  ",
        f"The same rule over the {len(sets)} (model, set) pairs: the rotation whose worst pair is best with int8 "
        "rescoring, then the shallowest depth within 0.1 point of the full scan on every pair.",
        "",
        "| code family | chosen over both models | worst pair, int8 rescoring | worst pair, no rescoring | "
        "the other rotation's worst pair, int8 rescoring | shipped default |",
        "|---|---|---|---|---|---|",
    ]
    for family in FAMILIES:
        rot, depth = choose(kept, family, sets)
        other = next(r for r in FAMILIES[family] if r != rot)
        resc = {s: kept[(family, rot, depth, True)][s] for s in sets}
        plain = {s: kept[(family, rot, depth, False)][s] for s in sets}
        oth = {s: kept[(family, other, "full", True)][s] for s in sets}
        w_r, w_p, w_o = (min(d, key=d.get) for d in (resc, plain, oth))
        lines.append(
            f"| {family} | {rot}, top {depth} x k | {resc[w_r]:.2f} ({w_r}) | {plain[w_p]:.2f} ({w_p}) | "
            f"{other}: {oth[w_o]:.2f} ({w_o}) | {shipped[family][0]}, top {shipped[family][1]} x k |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="*", default=None, help="default: every retrieval set in shared/data")
    ap.add_argument("--n", type=int, default=1_000_000, help="rows for the stage-1 timing (0: not timed)")
    ap.add_argument("--model", default=None, help="a sentence-transformers folder (default: the packaged MiniLM)")
    ap.add_argument("--model-name", default=None, help="the model's name (keys the embedding cache and the section)")
    ap.add_argument("--combine", nargs="+", default=None, metavar="MODEL", help="apply the rule over the saved runs")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.combine:
        body = combined_report(args.combine)
        print(body)
        if not args.no_write:
            write_section("defaults-combined", body, doc=RESULTS)
        return
    datasets = args.datasets or shared_sets()
    enc = encoder(args.model, args.model_name)
    kept, base = measure(datasets, enc)
    if not args.no_write:
        save(kept, enc.name)  # for --combine
    chosen = {family: choose(kept, family, datasets) for family in FAMILIES}
    print("chosen:", chosen, flush=True)
    speed = stage1_speed(args.n, shipped_defaults()) if args.n else {}
    command = f"python benchmarks/bench_defaults.py --datasets {' '.join(datasets)} --n {args.n}"
    if args.model:
        command += f" --model <folder of {enc.name}> --model-name {enc.name}"
    body = report(kept, base, datasets, speed, args.n, enc.name, command)
    print(body)
    if not args.no_write:
        section = "defaults" if enc.name == DEFAULT_MODEL else f"defaults-{slug(enc.name)}"
        write_section(section, body, doc=RESULTS)


if __name__ == "__main__":
    main()
