"""Statistics of the audit: the iid bootstrap CI of a mean, rank correlations (re-exported from
kdel.stats.correlation) and Hase et al.'s regressions, with guards.

All functions take plain sequences, drop non-finite entries pairwise, and return None for what cannot be
estimated rather than NaN, so summaries serialise as clean JSON. A regression or F-test that cannot be
trusted (constant y, no residual degrees of freedom, n < k + 3 for k predictors) comes back null with its
reason in `null_reason`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from kdel.stats.correlation import _finite, _none, partial_spearman, spearman  # noqa: F401 (re-exported)


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean with a percentile bootstrap CI over observations (seeded): {mean, lo, hi, n}. Assumes independent
    observations; the summary's cells use the cluster bootstrap (kdel.stats.estimate.mean_estimate)."""
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


@dataclass
class OLSFit:
    r2: float | None  # None when y is constant
    rss: float
    n: int
    n_params: int  # rank of the design matrix (intercept included)
    tss: float = 0.0


def _is_constant(y: np.ndarray) -> bool:
    return len(y) == 0 or float(((y - y.mean()) ** 2).sum()) <= 1e-12 * max(1.0, float((y * y).sum()))


def ols(y: np.ndarray, X: np.ndarray) -> OLSFit:
    """Least squares of y on X (X includes the intercept column): R², RSS, effective parameter count."""
    y = np.asarray(y, dtype=np.float64)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    rss = float(resid @ resid)
    tss = float(((y - y.mean()) ** 2).sum())
    r2 = None if _is_constant(y) else 1.0 - rss / tss
    return OLSFit(r2=r2, rss=rss, n=len(y), n_params=int(np.linalg.matrix_rank(X)), tss=tss)


def fit_guard(fit: OLSFit) -> str | None:
    """Why a fit's R² must not be reported (None: it may): constant y, or n < k + 3 for k predictors."""
    k = fit.n_params - 1
    if fit.r2 is None:
        return "constant y: every case has the same value"
    if fit.n < k + 3:
        return f"n = {fit.n} < k + 3 = {k + 3} (k = {k} predictors)"
    return None


def one_hot(levels: Sequence) -> np.ndarray:
    """Dummy columns of a categorical variable, dropping the first level (the intercept absorbs it)."""
    values = sorted(set(levels))
    return np.column_stack([[1.0 if v == lev else 0.0 for v in levels] for lev in values[1:]]) if len(values) > 1 \
        else np.zeros((len(levels), 0))


def nested_f_test(small: OLSFit, big: OLSFit) -> dict:
    """F-test of a nested comparison (small ⊂ big): {F, p, df_num, df_den, null_reason}.

    Null (with the reason) for a constant y, df_num ≤ 0, df_den ≤ 0, n < k + 3 for the big model's k
    predictors, or a perfect fit (RSS = 0). Rounding that makes RSS_small < RSS_big gives F = 0."""
    from scipy import stats

    df_num = big.n_params - small.n_params
    df_den = big.n - big.n_params
    out = {"F": None, "p": None, "df_num": df_num, "df_den": df_den, "null_reason": None}
    if big.r2 is None:
        out["null_reason"] = "constant y: every case has the same value"
    elif df_num <= 0:
        out["null_reason"] = f"df_num = {df_num} <= 0: the larger model adds no column"
    elif df_den <= 0:
        out["null_reason"] = f"df_den = {df_den} <= 0: no residual degrees of freedom"
    elif big.n < big.n_params - 1 + 3:
        out["null_reason"] = f"n = {big.n} < k + 3 = {big.n_params + 2} (k = {big.n_params - 1} predictors)"
    elif big.rss <= 1e-12 * max(big.tss, 1e-300):
        out["null_reason"] = "perfect fit (RSS = 0): F is undefined"
    if out["null_reason"]:
        return out
    F = max(0.0, ((small.rss - big.rss) / df_num) / (big.rss / df_den))
    out.update(F=float(F), p=float(stats.f.sf(F, df_num, df_den)))
    return out


def _weighted_r2(W: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """R² of the weighted least-squares fit of y on X in every replicate (nan where y is constant)."""
    XW = X[None, :, :] * W[:, :, None]
    beta = np.einsum("bpq,bq->bp", np.linalg.pinv(np.einsum("bnp,nq->bpq", XW, X)), np.einsum("bnp,n->bp", XW, y))
    resid = y[None, :] - beta @ X.T
    sw = W.sum(axis=1, keepdims=True)
    ybar = (W @ y)[:, None] / np.where(sw > 0, sw, np.nan)
    tss = (W * (y[None, :] - ybar) ** 2).sum(axis=1)
    rss = (W * resid ** 2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = 1.0 - rss / tss
    r2[tss <= 1e-12] = np.nan
    return r2


REGRESSION_FITS = ("r2_layer", "r2_tracing", "r2_layer_x_tracing", "delta_r2_tracing_over_layer")


def hase_regressions(success: Sequence[float], layer: Sequence[int], tracing: Sequence[float],
                     clusters: Sequence | None = None, n_boot: int = 0, seed: int = 0, level: float = 0.95) -> dict:
    """Hase et al.'s three fits of edit success: ~ layer (one-hot), ~ tracing effect, ~ layer * tracing.

    Returns each R², the ΔR² that tracing (and its interaction with layer) adds to layer alone, the nested
    F-test of layer ⊂ layer * tracing (cases independent, as Hase et al.), with `clusters` the same comparison
    as a cluster-robust Wald test (`f_test_cluster`, kdel.stats.robust), and `null_reasons` for every fit
    that is not reported. With
    `clusters` (the subject of each case) and n_boot > 0, `ci` holds cluster-bootstrap percentile CIs of
    the R²s and ΔR² (each case is one edit; a fact's edits at several layers stay together).
    """
    from kdel.stats.bootstrap import cluster_weights, percentile_ci

    cols = [np.asarray([np.nan if v is None else v for v in c], dtype=np.float64) for c in (success, layer, tracing)]
    ok = np.isfinite(cols[0]) & np.isfinite(cols[1]) & np.isfinite(cols[2])
    y, lay, te = (c[ok] for c in cols)
    n = len(y)
    cl = [c for c, k in zip(clusters, ok) if k] if clusters is not None else None
    out = {"n": n, "n_subjects": len({str(c) for c in cl}) if cl is not None else None,
           "r2_layer": None, "r2_tracing": None, "r2_layer_x_tracing": None, "delta_r2_tracing_over_layer": None,
           "f_test": {"F": None, "p": None, "df_num": 0, "df_den": 0, "null_reason": None}, "f_test_cluster": None,
           "n_layers": len(set(lay.tolist())), "null_reasons": {}, "ci": {}}
    if n < 3:
        reason = f"n = {n} < 3 cases with a success score and a tracing effect"
        out["null_reasons"] = {k: reason for k in REGRESSION_FITS}
        out["f_test"]["null_reason"] = reason
        return out
    ones = np.ones((n, 1))
    L = one_hot(lay.tolist())
    designs = {"r2_layer": np.hstack([ones, L]), "r2_tracing": np.hstack([ones, te[:, None]]),
               "r2_layer_x_tracing": np.hstack([ones, L, te[:, None], L * te[:, None]])}
    fits = {k: ols(y, X) for k, X in designs.items()}
    for k, f in fits.items():
        reason = fit_guard(f)
        if reason:
            out["null_reasons"][k] = reason
        else:
            out[k] = f.r2
    if out["r2_layer"] is not None and out["r2_layer_x_tracing"] is not None:
        out["delta_r2_tracing_over_layer"] = out["r2_layer_x_tracing"] - out["r2_layer"]
    else:
        out["null_reasons"]["delta_r2_tracing_over_layer"] = (out["null_reasons"].get("r2_layer_x_tracing")
                                                              or out["null_reasons"].get("r2_layer"))
    out["f_test"] = nested_f_test(fits["r2_layer"], fits["r2_layer_x_tracing"])
    if cl is not None:  # the same nested comparison, with subjects as clusters (a fact's edits are not independent)
        from kdel.stats.robust import cluster_wald

        full = designs["r2_layer_x_tracing"]
        out["f_test_cluster"] = cluster_wald(y, full, list(range(1 + L.shape[1], full.shape[1])), cl)
    if cl is not None and n_boot > 0 and out["n_subjects"] >= 5:
        W = cluster_weights(cl, n_boot, seed)
        reps = {k: _weighted_r2(W, X, y) for k, X in designs.items()}
        reps["delta_r2_tracing_over_layer"] = reps["r2_layer_x_tracing"] - reps["r2_layer"]
        out["ci"] = {k: list(percentile_ci(reps[k], level)) for k in REGRESSION_FITS if out[k] is not None}
    return out


def as_dict(fit: OLSFit) -> dict:
    return asdict(fit)
