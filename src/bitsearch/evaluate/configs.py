"""Search configurations: one name per way of building and searching a collection, and the default grid.

Names (`parse_config`):

- dense: `precision[-hamming|-asym][-center][-rot][-qB][+rescore...][@multiplier][/dDIM]`, e.g. `float32`,
  `binary+int8@4/d128`: `Collection.search(mode="dense")` over vectors only (no texts stored);
- `keyword`: BM25 alone (SQLite FTS5, `mode="keyword"` with the query strings); the collection stores the
  dataset's texts next to the cheapest codes (binary), which a collection needs but this mode never reads;
- `hybrid:<dense name>`, e.g. `hybrid:binary+int8@4`: that dense configuration fused with BM25.

Precisions, rescoring stages, scoring modes and search modes are the core's own tuples.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any

from bitsearch.codecs import CODEBOOK_PRECISIONS, STAGE1_MODES, STAGE1_PRECISIONS
from bitsearch.options import MODES, RESCORE_STAGES

__all__ = [
    "DEFAULT_MULTIPLIER",
    "HYBRID_PREFIX",
    "KEYWORD",
    "MULTIPLIERS",
    "SEARCH_MODES",
    "TRUNCATE_DIMS",
    "Config",
    "default_grid",
    "parse_config",
    "select_configs",
]

SEARCH_MODES = MODES
DEFAULT_MULTIPLIER = 4
HYBRID_PREFIX = "hybrid:"
MULTIPLIERS = (1, 2, 4, 8, 16)
TRUNCATE_DIMS = (384, 256, 128, 64)
# codes that -center/-rot transform; -hamming/-asym/-qB choose how binary codes are scored
_TRANSFORMED = CODEBOOK_PRECISIONS
# the name's suffix for each stage-1 scoring mode of `Collection.create`
_STAGE1_SUFFIX = dict(zip(STAGE1_MODES, ("", "-hamming", "-asym"), strict=True))
_SUFFIX_STAGE1 = {suffix[1:]: mode for mode, suffix in _STAGE1_SUFFIX.items() if suffix}


def _alternatives(names: Sequence[str]) -> str:
    return "|".join(re.escape(n) for n in names)


_NAME_RE = re.compile(
    rf"^(?P<stage1>{_alternatives(STAGE1_PRECISIONS)})"
    rf"(?P<mods>(?:-(?:{_alternatives(list(_SUFFIX_STAGE1))}|center|rot|q[1-8]))*)"
    rf"(?P<rescore>(?:\+(?:{_alternatives(RESCORE_STAGES)}))*)(?:@(?P<mult>\d+))?(?:/d(?P<dim>\d+))?$"
)


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
        if self.mode == "keyword" and replace(self, mode="dense") != _KEYWORD_CODES:
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
        name = self.precision + _STAGE1_SUFFIX[self.stage1]
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
        """Keyword arguments of `Collection.create` beyond the defaults."""
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


# the codes a keyword collection is built with (a collection needs vectors; keyword never reads them)
_KEYWORD_CODES = Config("binary")
KEYWORD = Config("binary", mode="keyword")


def _check_modifiers(name: str, precision: str, mods: list[str], qbits: list[int]) -> None:
    """Raise ValueError for modifiers that repeat, conflict, or do not apply to `precision`."""
    scoring = [m for m in mods if m in _SUFFIX_STAGE1]
    if len(set(mods)) != len(mods) or len(scoring) > 1 or len(qbits) > 1:
        raise ValueError(f"{name!r}: repeated or conflicting modifiers")
    if qbits and (precision != "binary" or "hamming" in mods):
        raise ValueError(f"{name!r}: -qB scores binary codes asymmetrically against a B-bit query")
    if precision != "binary" and scoring:
        raise ValueError(f"{name!r}: -hamming/-asym choose how binary codes are scored")
    if precision not in _TRANSFORMED and ({"center", "rot"} & set(mods)):
        raise ValueError(f"{name!r}: -center/-rot apply to binary, 1.5bit and 2bit codes")


def parse_config(name: str) -> Config:
    """Parse `precision[-hamming|-asym][-center][-rot][-qB][+rescore...][@multiplier][/dDIM]`,
    `keyword` or `hybrid:<dense name>` (`-qB`: binary scored against a B-bit query, B in 1..8).

    `@` defaults to 4 (`int8+float32` is `int8+float32@4`); precisions and rescore stages are the core's
    (`STAGE1_PRECISIONS`, `RESCORE_STAGES`).
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
            f"[+rescore...][@multiplier][/dDIM] with precisions {'|'.join(STAGE1_PRECISIONS)} and "
            f"rescore stages {'|'.join(RESCORE_STAGES)}, e.g. binary+int8@4/d128; or keyword; or "
            "hybrid:<that>, e.g. hybrid:binary+int8@4"
        )
    precision = m["stage1"]
    mods = [x for x in m["mods"].split("-") if x]
    qbits = [int(x[1:]) for x in mods if x.startswith("q")]
    _check_modifiers(name, precision, mods, qbits)
    stage1 = next((_SUFFIX_STAGE1[x] for x in mods if x in _SUFFIX_STAGE1), "auto")
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
        Config("rabitq"),
        Config("rabitq", ("int8",)),
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


def _matching(item: str, grid: list[Config]) -> list[Config]:
    """The configurations one item of a selection names: "all", a glob over the grid, or one name."""
    if item == "all":
        return grid
    if any(c in item for c in "*?["):
        matches = [c for c in grid if fnmatchcase(c.name, item)]
        if not matches:
            raise ValueError(f"no configuration in the grid matches {item!r}")
        return matches
    return [parse_config(item)]


def select_configs(spec: str | Sequence[str] | None, dim: int = 384) -> list[Config]:
    """Configurations named by `spec` (comma-separated names or globs over the default grid).

    None or "all" -> the default grid. `float32` is always included: it is the reference.
    """
    grid = default_grid(dim)
    if spec is None:
        chosen = grid
    else:
        items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
        chosen = []
        for item in filter(None, items):
            chosen += [c for c in _matching(item, grid) if c not in chosen]
    for c in chosen:
        if c.truncate_dim is not None and c.truncate_dim > dim:
            raise ValueError(f"{c.name}: cannot truncate {dim}-dim embeddings to {c.truncate_dim}")
    return with_reference(chosen)


def with_reference(configs: Sequence[Config]) -> list[Config]:
    """`configs` with float32 (the 100% reference) first, once."""
    base = Config("float32")
    return [base, *(c for c in configs if c != base)]
