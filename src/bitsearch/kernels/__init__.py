"""Hot loops: every compiled scan, selection and rescoring kernel of bitsearch, and nothing else (no
disk I/O, nothing set up at import).

- ``bits``: popcount, packed codes as uint64 words, distances of a block of rows, exclusion masks.
- ``select``: selection in one order everywhere (best first, ties to the lower row): the compiled
  counting-sort and histogram selections, and ``topk_by_row``, the one merge of scored candidates.
- ``hamming``: exact Hamming top-k fused with the selection; Hamming preselection.
- ``lut``: asymmetric scans: table lookups over low-bit codes and bit planes, query bit planes.
- ``rescore``: dot products with int8, float32 and sign-bit rows (rescoring, exact int8/float32 scans).
- ``ivf``: the inverted file over binary codes and the approximate stage 1 built on it.
- ``threads``: the kernels' thread count (``BITSEARCH_NUM_THREADS``, read when the first scan runs).
"""

from __future__ import annotations

from .bits import as_words
from .hamming import hamming_distances, hamming_topk, hamming_topk_allowed, preselected_topk
from .ivf import BinaryIVF, ivf_topk
from .lut import bitplane_topk, lut_planes_topk, lut_topk
from .rescore import dot_topk, int8_block_scores, int8_query_weights, rescore_bits, rescore_float32, rescore_int8
from .select import top_scored, topk_by_row
from .threads import ensure_threads, set_num_threads

__all__ = [
    "BinaryIVF",
    "as_words",
    "bitplane_topk",
    "dot_topk",
    "ensure_threads",
    "hamming_distances",
    "hamming_topk",
    "hamming_topk_allowed",
    "int8_block_scores",
    "int8_query_weights",
    "ivf_topk",
    "lut_planes_topk",
    "lut_topk",
    "preselected_topk",
    "rescore_bits",
    "rescore_float32",
    "rescore_int8",
    "set_num_threads",
    "top_scored",
    "topk_by_row",
]
