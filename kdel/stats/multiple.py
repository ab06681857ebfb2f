"""Multiple-testing adjustments over a family of p-values: Holm (family-wise error) and Benjamini–Hochberg
(false discovery rate). None entries (tests that could not be run) are not part of the family and stay None.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _family(p: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    idx = np.asarray([i for i, v in enumerate(p) if v is not None], dtype=np.int64)
    vals = np.asarray([float(p[i]) for i in idx], dtype=np.float64)
    if np.any((vals < 0) | (vals > 1) | ~np.isfinite(vals)):
        raise ValueError("p-values must lie in [0, 1]")
    return idx, vals


def _adjust(p: Sequence[float | None], sorted_adjust) -> list[float | None]:
    """Apply `sorted_adjust(p ascending, m)` to the family and put the results back in the input's order."""
    idx, vals = _family(p)
    out: list[float | None] = [None] * len(p)
    m = len(vals)
    if m == 0:
        return out
    order = np.argsort(vals, kind="stable")
    adj = sorted_adjust(vals[order], m)
    for k, i in enumerate(order):
        out[int(idx[i])] = float(adj[k])
    return out


def holm(p: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p: sorted ascending, p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j))."""
    return _adjust(p, lambda ps, m: np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * ps)))


def benjamini_hochberg(p: Sequence[float | None]) -> list[float | None]:
    """Benjamini–Hochberg q: sorted ascending, q_(i) = min_{j ≥ i} min(1, m p_(j) / j)."""
    return _adjust(p, lambda ps, m: np.minimum(1.0, np.minimum.accumulate((m * ps / np.arange(1, m + 1))[::-1])[::-1]))
