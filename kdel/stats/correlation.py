"""Rank correlations over plain sequences: Spearman's ρ and the partial Spearman ρ (rank residuals).

Non-finite entries are dropped pairwise; what cannot be estimated (too few points, a constant variable)
comes back as None rather than NaN, so summaries serialise as clean JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _finite(*cols) -> list[np.ndarray]:
    arrs = [np.asarray([np.nan if v is None else v for v in c], dtype=np.float64) for c in cols]
    ok = np.ones(len(arrs[0]), dtype=bool)
    for a in arrs:
        ok &= np.isfinite(a)
    return [a[ok] for a in arrs]


def _none(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def t_two_sided(r: float, df: int) -> float:
    """Two-sided p of a correlation r from Student's t with df degrees of freedom (as scipy.stats.spearmanr)."""
    from scipy.special import stdtr

    if abs(r) >= 1.0:
        return 0.0
    t = r * math.sqrt(df / (1.0 - r * r))
    return float(2.0 * stdtr(df, -abs(t)))


def spearman(x: Sequence[float], y: Sequence[float]) -> dict:
    """Spearman's rho with its two-sided p-value (t with n − 2 df, as scipy.stats.spearmanr): {rho, p, n}."""
    x, y = _finite(x, y)
    n = len(x)
    if n < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return {"rho": None, "p": None, "n": n}
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    r = float(np.clip((rx @ ry) / math.sqrt(float(rx @ rx) * float(ry @ ry)), -1.0, 1.0))
    return {"rho": r, "p": t_two_sided(r, n - 2), "n": n}


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties averaged), as scipy.stats.rankdata(method="average")."""
    _, inv, counts = np.unique(a, return_inverse=True, return_counts=True)
    cum = np.cumsum(counts)
    return (cum - (counts - 1) / 2.0)[inv].astype(np.float64)


def partial_spearman(x: Sequence[float], y: Sequence[float], covariates: Sequence[Sequence[float]]) -> dict:
    """Spearman correlation of x and y controlling for covariates (rank-residual method).

    Ranks every variable, regresses the ranks of x and of y on the covariates' ranks (with intercept) by
    least squares, and correlates the residuals (Pearson). p from Student's t with n - 2 - k degrees of
    freedom (k = covariates kept). Constant covariates are dropped. {rho, p, n, df, covariates_used}.
    """
    cols = _finite(x, y, *covariates)
    x, y, covs = cols[0], cols[1], cols[2:]
    n = len(x)
    kept = [c for c in covs if len(c) and not np.all(c == c[0])]
    k = len(kept)
    df = n - 2 - k
    if df < 1 or np.all(x == x[0]) or np.all(y == y[0]):
        return {"rho": None, "p": None, "n": n, "df": max(df, 0), "covariates_used": k}
    Z = np.column_stack([np.ones(n)] + [_ranks(c) for c in kept])
    rx, ry = _ranks(x), _ranks(y)
    ex = rx - Z @ np.linalg.lstsq(Z, rx, rcond=None)[0]
    ey = ry - Z @ np.linalg.lstsq(Z, ry, rcond=None)[0]
    denom = math.sqrt(float(ex @ ex) * float(ey @ ey))
    if denom < 1e-12:
        return {"rho": None, "p": None, "n": n, "df": df, "covariates_used": k}
    r = float(np.clip((ex @ ey) / denom, -1.0, 1.0))
    p = t_two_sided(r, df)
    return {"rho": r, "p": p, "n": n, "df": df, "covariates_used": k}
