"""Popularity bins and skew measures (DESIGN §1, §12)."""

from __future__ import annotations

from collections.abc import Sequence


def rank_quantile_bins(values: Sequence[float], n_bins: int = 5, tiebreak: Sequence | None = None) -> list[int]:
    """Bin 0..n_bins-1 of each value by rank quantile (low values → bin 0).

    Items are ranked by (value, tiebreak); items with the same key share a bin, the one of the first
    rank of their key: bin = floor(n_bins · rank / n). With `tiebreak` = entity ids, entities of equal
    degree are ordered by id (DESIGN §12), and all facts of one subject always land in one bin.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    n = len(values)
    if tiebreak is not None and len(tiebreak) != n:
        raise ValueError("tiebreak must have one entry per value")
    keys = [(values[i], tiebreak[i]) if tiebreak is not None else (values[i],) for i in range(n)]
    order = sorted(range(n), key=lambda i: keys[i])
    bins = [0] * n
    first_rank = 0
    for rank, i in enumerate(order):
        if rank == 0 or keys[i] != keys[order[rank - 1]]:
            first_rank = rank
        bins[i] = min(n_bins - 1, n_bins * first_rank // n)
    return bins


def gini(values: Sequence[float]) -> float:
    """Gini coefficient of non-negative values (0 = all equal, → 1 = one holds everything)."""
    xs = sorted(float(v) for v in values)
    n = len(xs)
    total = sum(xs)
    if n == 0 or total == 0:
        return 0.0
    weighted = sum((i + 1) * x for i, x in enumerate(xs))
    return (2.0 * weighted) / (n * total) - (n + 1.0) / n


def quantiles(values: Sequence[float], qs: Sequence[float]) -> list[float]:
    """Linear-interpolated quantiles (numpy's default method) without needing numpy."""
    xs = sorted(float(v) for v in values)
    if not xs:
        return [float("nan")] * len(qs)
    out = []
    for q in qs:
        pos = q * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        out.append(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))
    return out
