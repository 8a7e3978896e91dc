"""Synthetic embeddings for large-scale benchmarks, drawn to match real ones.

A multivariate Gaussian fitted (mean and full covariance) to cached all-MiniLM-L6-v2 embeddings of a
shared dataset, then L2-normalized like the model's output. Falls back to an isotropic Gaussian (and
says so) when no cached embeddings of the right dimension exist.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _cached_real(dim: int) -> tuple[np.ndarray, str] | None:
    """The largest cached document-embedding matrix of dimension ``dim``, with a description."""
    from bitsearch.evaluate import cache_dir

    best: tuple[np.ndarray, str] | None = None
    root = Path(cache_dir())
    if not root.is_dir():
        return None
    for info in root.rglob("documents-*.json"):
        try:
            meta = json.loads(info.read_text())
            if meta.get("shape", [0, 0])[1] != dim:
                continue
            arr = np.load(info.with_suffix(".npy"), allow_pickle=False)
        except (OSError, ValueError):
            continue
        if best is None or arr.shape[0] > best[0].shape[0]:
            best = (arr, f"{meta.get('model')} embeddings of {arr.shape[0]:,} documents")
    return best


def synthetic_embeddings(dim: int, seed: int = 0) -> tuple[Callable[[int], np.ndarray], str]:
    """A generator ``gen(n) -> (n, dim) float32`` of normalized vectors, and where its fit came from."""
    rng = np.random.default_rng(seed)
    real = _cached_real(dim)
    if real is not None:
        emb, what = real
        mean = emb.mean(axis=0)
        cov = np.cov(emb, rowvar=False) + 1e-6 * np.eye(dim)
        chol = np.linalg.cholesky(cov).astype(np.float32)
        source = f"Gaussian (mean + full covariance) fitted to {what}, normalized"
    else:
        mean = np.zeros(dim)
        chol = np.eye(dim, dtype=np.float32)
        source = "isotropic Gaussian, normalized (no cached real embeddings to fit)"
    mean = mean.astype(np.float32)

    def gen(n: int) -> np.ndarray:
        z = rng.standard_normal((n, dim), dtype=np.float32)
        x = z @ chol.T + mean
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    return gen, source
