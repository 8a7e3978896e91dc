"""Helpers the test modules import (pytest puts this folder on sys.path): where the shared datasets are, and
deterministic unit vectors. Fixtures live in conftest.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# the shared folder sits next to the checkout (/work/shared next to /work/main); worktrees elsewhere use it there
SHARED_DATA_ROOTS = (REPO.parent / "shared" / "data", Path("/work/shared/data"))


def shared_data(name: str) -> Path:
    """``shared/data/<name>`` (a dataset folder or a file in one) in the first root that has it, else the
    path in the last root; callers skip when it does not exist. The data is read there, never copied in."""
    for root in SHARED_DATA_ROOTS:
        if (root / name).exists():
            return root / name
    return SHARED_DATA_ROOTS[-1] / name


def unit_vectors(n: int, dim: int, seed: int = 0, *, shift: bool = False) -> np.ndarray:
    """``n`` float32 rows of Gaussian noise from ``default_rng(seed)``, scaled to unit length.

    ``shift`` adds one Gaussian offset (drawn after the rows) to every row before normalizing: anisotropic
    data, like real embeddings, whose mean is far from zero.
    """
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, dim))
    if shift:
        e = e + rng.normal(size=dim)
    e = e.astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)
