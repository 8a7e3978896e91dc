"""The options of ``Collection.create`` and ``Collection.search`` as small frozen values, checked and
normalized once at the boundary (one spelling per option: ``rescore=None`` and ``"none"`` alike
become no rescoring stages; ``rotation`` None becomes the code family's default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .codecs import STAGE1_MODES, STAGE1_PRECISIONS, codec_class
from .errors import InvalidInputError
from .hybrid import check_fusion_args

__all__ = ["MAX_SEARCH_INT", "MODES", "RESCORE_STAGES", "CodesConfig", "SearchOptions", "rescore_stages"]

MODES = ("dense", "keyword", "hybrid")
RESCORE_STAGES = ("binary", "int8", "float32")
# k, rescore_multiplier and nprobe are at most this: their products stay far inside int64
MAX_SEARCH_INT = 2**31 - 1


@dataclass(frozen=True)
class CodesConfig:
    """How a new collection codes its vectors (see ``Collection.create`` for each option)."""

    precision: str = "binary"
    keep_int8: bool = True
    keep_float32: bool = False
    stage1: str = "auto"
    centering: bool = False
    rotation: bool | int | None = None  # None: the family's default; an int is a seed
    query_bits: int | None = None

    def checked(self) -> CodesConfig:
        """The config checked, with defaults resolved and the rows a family always keeps turned on."""
        if self.precision not in STAGE1_PRECISIONS:
            raise InvalidInputError(
                f"unknown collection precision {self.precision!r}; expected one of {', '.join(STAGE1_PRECISIONS)}"
            )
        codec = codec_class(self.precision)
        if self.query_bits is not None:
            if not codec.takes_query_bits or self.stage1 == "hamming":
                raise InvalidInputError("query_bits applies to asymmetric scoring of binary and rabitq codes only")
            qb, choices = self.query_bits, codec.query_bits_choices
            if isinstance(qb, bool) or not isinstance(qb, int) or qb not in choices:
                allowed = f"from {choices[0]} to {choices[-1]}" if len(choices) > 1 else str(choices[0])
                raise InvalidInputError(f"query_bits of {self.precision} codes must be {allowed}, got {qb!r}")
        if self.stage1 not in STAGE1_MODES:
            raise InvalidInputError(f"unknown stage1 {self.stage1!r}; expected one of {', '.join(STAGE1_MODES)}")
        rotation = codec.default_rotation if self.rotation is None else self.rotation
        return CodesConfig(
            precision=self.precision,
            keep_int8=bool(self.keep_int8) or codec.keeps == "int8",
            keep_float32=bool(self.keep_float32) or codec.keeps == "float32",
            stage1=self.stage1,
            centering=bool(self.centering) or codec.always_centres,
            rotation=rotation if isinstance(rotation, int) and not isinstance(rotation, bool) else bool(rotation),
            query_bits=self.query_bits,
        )

    def manifest_fields(self) -> dict[str, Any]:
        """The manifest's fields for these options (after ``checked``)."""
        codec = codec_class(self.precision)
        codes = None
        if codec.uses_codebook:
            codes = {"centering": self.centering, "rotation": self.rotation}
            if self.query_bits:
                codes["query_bits"] = self.query_bits
        return {
            "precision": self.precision,
            "keep_int8": self.keep_int8,
            "keep_float32": self.keep_float32,
            "stage1": self.stage1 if codec.stage1_modes else None,
            "codes": codes,
        }


@dataclass(frozen=True)
class SearchOptions:
    """One search's options, checked (see ``Collection.search``)."""

    k: int = 10
    rescore_multiplier: int = 4
    rescore: tuple[str, ...] = ("int8",)
    mode: str = "dense"
    filter: dict[str, Any] | None = None
    rrf_k: float = 60.0
    weights: tuple[float, ...] | None = None
    nprobe: int | None = None
    exact: bool = False
    with_text: bool = True
    preselect: int | None = None  # the Hamming top preselect x k rows scored (None: the codec's depth)

    @classmethod
    def from_args(
        cls, *, k: object, rescore_multiplier: object, rescore: object, mode: object, filter: Any,
        rrf_k: object, weights: object, nprobe: object, exact: object, with_text: object,
        preselect: object = None,
    ) -> SearchOptions:  # fmt: skip
        """Check ``search``'s arguments (types and ranges; queries and filter are checked as they are
        used) and normalize them: InvalidInputError before any work."""
        if not isinstance(mode, str) or mode not in MODES:
            raise InvalidInputError(f"unknown search mode {mode!r}; expected one of {', '.join(MODES)}")
        check_positive("k", k)
        check_positive("rescore_multiplier", rescore_multiplier)
        for name, value in (("nprobe", nprobe), ("preselect", preselect)):
            if value is not None:
                check_positive(name, value)
        stages = rescore_stages(rescore)
        check_fusion_args(rrf_k, weights, 2)
        for name, flag in (("exact", exact), ("with_text", with_text)):
            if not isinstance(flag, (bool, np.bool_)):
                raise InvalidInputError(f"{name} must be True or False, got {flag!r}")
        return cls(
            k=int(k),  # type: ignore[call-overload]
            rescore_multiplier=int(rescore_multiplier),  # type: ignore[call-overload]
            rescore=tuple(stages),
            mode=mode,
            filter=filter,
            rrf_k=rrf_k,  # type: ignore[arg-type]
            weights=None if weights is None else tuple(weights),  # type: ignore[call-overload]
            nprobe=None if nprobe is None else int(nprobe),  # type: ignore[call-overload]
            exact=bool(exact),
            with_text=bool(with_text),
            preselect=None if preselect is None else int(preselect),  # type: ignore[call-overload]
        )


def check_positive(name: str, value: object) -> None:
    """``value`` must be an int (not a bool) from 1 to ``MAX_SEARCH_INT``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_SEARCH_INT:
        raise InvalidInputError(f"{name} must be an integer from 1 to {MAX_SEARCH_INT}, got {value!r}")


def rescore_stages(rescore: object) -> list[str]:
    """The rescoring stages asked for: ``rescore`` is None, "none", a stage name, or a list/tuple of them."""
    if rescore is None:
        return []
    if isinstance(rescore, str):
        return [] if rescore == "none" else [rescore]
    if not isinstance(rescore, (list, tuple)) or not all(isinstance(s, str) for s in rescore):
        raise InvalidInputError(
            f"rescore must be None, one of {', '.join(RESCORE_STAGES)}, or a list/tuple of them, got {rescore!r}"
        )
    return list(rescore)
