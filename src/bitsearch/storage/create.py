"""Creating a collection folder: the first manifest from the code options and what fixes the dimension."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..codecs import codec_class
from ..errors import CollectionError, InvalidInputError
from ..files import fsync_dir
from ..options import CodesConfig
from ..quantize import calibrate_ranges, check_documents
from ..store import DocStore
from .inputs import check_dim, valid_ranges
from .manifest import MANIFEST, Manifest
from .paths import DOCS, interrupted_create, remove_inside
from .store import Store
from .writes import fit_codebook

__all__ = ["create_store"]


def _dim_given(
    dim: int | None, ranges: np.ndarray | None, calibration: np.ndarray | None, truncate_dim: int | None
) -> int | None:
    """The dimension: ``dim``, else what ``ranges``, calibration embeddings or ``truncate_dim`` fix, else None."""
    if dim is None:  # left to the first write, unless something given here fixes it
        if ranges is not None:
            if np.ndim(ranges) != 2:
                raise InvalidInputError(f"ranges must have shape (2, dim), got {np.shape(ranges)}")
            dim = int(np.shape(ranges)[1])
        elif calibration is not None:
            dim = check_documents(calibration, name="calibration_embeddings").shape[1]
        elif truncate_dim is not None:
            dim = truncate_dim
    return None if dim is None else check_dim(dim)


def create_store(
    path: Path,
    dim: int | None,
    config: CodesConfig,
    *,
    ranges: np.ndarray | None,
    calibration_embeddings: np.ndarray | None,
    model: dict[str, Any] | None,
    truncate_dim: int | None,
    keyword_index: bool,
    exist_ok: bool,
) -> Store:
    """Create an empty collection at ``path`` and open it (see ``Collection.create``)."""
    dim = _dim_given(dim, ranges, calibration_embeddings, truncate_dim)
    codec = codec_class(config.precision)
    if (path / MANIFEST).exists():
        if not exist_ok:
            raise CollectionError(f"a collection already exists at {path}")
        store = Store.open(path)
        m = store.state.manifest
        if (dim is not None and m.dim not in (dim, None)) or m.precision != config.precision:
            raise CollectionError(
                f"existing collection at {path} has dim {m.dim} and precision {m.precision!r}, "
                f"not {dim} and {config.precision!r}"
            )
        return store
    if path.exists() and any(path.iterdir()):
        if not interrupted_create(path):
            raise CollectionError(f"{path} exists and is not an empty directory or a collection")
        for f in path.iterdir():  # start again from nothing: the next manifest names none of these
            remove_inside(path, f)
    if truncate_dim is not None and truncate_dim != dim:
        raise InvalidInputError(f"truncate_dim {truncate_dim} differs from the collection dim {dim}")
    config = config.checked()
    ranges_given = ranges is not None
    cal = None
    if calibration_embeddings is not None:
        cal = check_documents(calibration_embeddings, dim, name="calibration_embeddings")
    if ranges is not None:
        assert dim is not None
        ranges = valid_ranges(ranges, dim)
    elif cal is not None:
        ranges = calibrate_ranges(cal)
    manifest = Manifest(
        format_version=max(4, codec.create_version) if dim is None else codec.create_version,
        dim=dim,
        ranges=None if ranges is None else np.asarray(ranges, dtype=np.float32).tolist(),
        ranges_given=ranges_given,
        model=model,
        truncate_dim=truncate_dim,
        keyword_index=bool(keyword_index),
        codebook=None,
        next_seq=0,
        next_segment=0,
        generation=0,
        segments=(),
        tombstones=None,
        **config.manifest_fields(),
    )
    path.mkdir(parents=True, exist_ok=True)
    (path / "segments").mkdir(exist_ok=True)
    DocStore(path / DOCS, create=True, keyword_index=keyword_index).close()
    if cal is not None and manifest.codes is not None:
        manifest = manifest.replace(codebook=fit_codebook(path, manifest, cal))
    manifest.write(path)
    fsync_dir(path)
    return Store.open(path)
