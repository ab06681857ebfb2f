"""Statistics of the audit: bootstrap CIs, Spearman and partial Spearman, Hase et al.'s regressions.

All functions take plain sequences, drop non-finite entries pairwise, and return None for what cannot be
estimated (too few points, constant input) rather than NaN, so summaries serialise as clean JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np


def _finite(*cols) -> list[np.ndarray]:
    arrs = [np.asarray([np.nan if v is None else v for v in c], dtype=np.float64) for c in cols]
    ok = np.ones(len(arrs[0]), dtype=bool)
    for a in arrs:
        ok &= np.isfinite(a)
    return [a[ok] for a in arrs]


def _none(x) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean with a percentile bootstrap CI (seeded): {mean, lo, hi, n}."""
    (x,) = _finite(values)
    n = len(x)
    if n == 0:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    mean = float(x.mean())
    if n == 1 or np.all(x == x[0]):
        return {"mean": mean, "lo": mean, "hi": mean, "n": n}
    means = x[_resample_index(seed, n, n_boot)].mean(axis=1)
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [a, 1.0 - a])
    return {"mean": mean, "lo": float(lo), "hi": float(hi), "n": n}


@lru_cache(maxsize=256)
def _resample_index(seed: int, n: int, n_boot: int) -> np.ndarray:
    """The bootstrap's resampling indices: depend only on (seed, n, n_boot), so they are shared by metrics."""
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    idx.setflags(write=False)
    return idx


def spearman(x: Sequence[float], y: Sequence[float]) -> dict:
    """Spearman's rho with its two-sided p-value (scipy): {rho, p, n}."""
    from scipy import stats

    x, y = _finite(x, y)
    n = len(x)
    if n < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return {"rho": None, "p": None, "n": n}
    res = stats.spearmanr(x, y)
    return {"rho": _none(res.statistic), "p": _none(res.pvalue), "n": n}


def _ranks(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, method="average")


def partial_spearman(x: Sequence[float], y: Sequence[float], covariates: Sequence[Sequence[float]]) -> dict:
    """Spearman correlation of x and y controlling for covariates (rank-residual method).

    Ranks every variable, regresses the ranks of x and of y on the covariates' ranks (with intercept) by
    least squares, and correlates the residuals (Pearson). p from Student's t with n - 2 - k degrees of
    freedom (k = covariates kept). Constant covariates are dropped. {rho, p, n, df, covariates_used}.
    """
    from scipy import stats

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
    if abs(r) >= 1.0:
        p = 0.0
    else:
        t = r * math.sqrt(df / (1.0 - r * r))
        p = float(2.0 * stats.t.sf(abs(t), df))
    return {"rho": r, "p": p, "n": n, "df": df, "covariates_used": k}


@dataclass
class OLSFit:
    r2: float | None
    rss: float
    n: int
    n_params: int  # rank of the design matrix (intercept included)


def ols(y: np.ndarray, X: np.ndarray) -> OLSFit:
    """Least squares of y on X (X includes the intercept column): R², RSS, effective parameter count."""
    y = np.asarray(y, dtype=np.float64)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    rss = float(resid @ resid)
    tss = float(((y - y.mean()) ** 2).sum())
    r2 = None if tss <= 0 else 1.0 - rss / tss
    return OLSFit(r2=r2, rss=rss, n=len(y), n_params=int(np.linalg.matrix_rank(X)))


def one_hot(levels: Sequence) -> np.ndarray:
    """Dummy columns of a categorical variable, dropping the first level (the intercept absorbs it)."""
    values = sorted(set(levels))
    return np.column_stack([[1.0 if v == lev else 0.0 for v in levels] for lev in values[1:]]) if len(values) > 1 \
        else np.zeros((len(levels), 0))


def nested_f_test(small: OLSFit, big: OLSFit) -> dict:
    """F-test of a nested comparison (small ⊂ big): {F, p, df_num, df_den}."""
    from scipy import stats

    df_num = big.n_params - small.n_params
    df_den = big.n - big.n_params
    if df_num <= 0 or df_den <= 0:
        return {"F": None, "p": None, "df_num": df_num, "df_den": df_den}
    if big.rss <= 0:
        return {"F": None, "p": None, "df_num": df_num, "df_den": df_den}
    F = ((small.rss - big.rss) / df_num) / (big.rss / df_den)
    return {"F": float(F), "p": float(stats.f.sf(F, df_num, df_den)), "df_num": df_num, "df_den": df_den}


def hase_regressions(success: Sequence[float], layer: Sequence[int], tracing: Sequence[float]) -> dict:
    """Hase et al.'s three fits of edit success: ~ layer (one-hot), ~ tracing effect, ~ layer * tracing.

    Returns each R², the ΔR² that tracing (and its interaction with layer) adds to layer alone, and the
    nested F-test of layer ⊂ layer * tracing.
    """
    y, lay, te = _finite(success, layer, tracing)
    n = len(y)
    out = {"n": n, "r2_layer": None, "r2_tracing": None, "r2_layer_x_tracing": None, "delta_r2_tracing_over_layer": None,
           "f_test": {"F": None, "p": None, "df_num": 0, "df_den": 0}, "n_layers": len(set(lay.tolist()))}
    if n < 3:
        return out
    ones = np.ones((n, 1))
    L = one_hot(lay.tolist())
    X_layer = np.hstack([ones, L])
    X_trace = np.hstack([ones, te[:, None]])
    X_full = np.hstack([ones, L, te[:, None], L * te[:, None]])
    f_layer, f_trace, f_full = ols(y, X_layer), ols(y, X_trace), ols(y, X_full)
    out.update({
        "r2_layer": f_layer.r2,
        "r2_tracing": f_trace.r2,
        "r2_layer_x_tracing": f_full.r2,
        "delta_r2_tracing_over_layer": (None if f_layer.r2 is None or f_full.r2 is None else f_full.r2 - f_layer.r2),
        "f_test": nested_f_test(f_layer, f_full),
    })
    return out


def as_dict(fit: OLSFit) -> dict:
    return asdict(fit)
