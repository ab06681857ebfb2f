"""The cluster bootstrap as weights, vectorised over replicates.

Resampling K clusters (subjects) with replacement is the same as giving every observation the number of
times its cluster was drawn as a frequency weight. A replicate is then one row of a weight matrix W
(n_boot × n), and every statistic below is computed for all replicates at once from W: the weighted mean,
Spearman's ρ of the expanded sample (average ranks with ties), and the partial Spearman ρ (weighted
least-squares residuals of the ranks). Each equals the statistic computed on the explicitly resampled data
(tests check this against scipy on expanded samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np


def cluster_index(clusters: Sequence) -> tuple[np.ndarray, int]:
    """(index of each observation's cluster in sorted order of the cluster labels, number of clusters)."""
    labels = sorted({str(c) for c in clusters})
    pos = {c: i for i, c in enumerate(labels)}
    return np.asarray([pos[str(c)] for c in clusters], dtype=np.int64), len(labels)


def _counts(rng: np.random.Generator, k: int, n_boot: int) -> np.ndarray:
    """(n_boot, k) draw counts: each replicate draws k of k units with replacement."""
    draws = rng.integers(0, k, size=(n_boot, k)) + (np.arange(n_boot) * k)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * k).reshape(n_boot, k).astype(np.float64)


def cluster_weights(clusters: Sequence, n_boot: int, seed: int) -> np.ndarray:
    """W[b, i] = how many times observation i's cluster is drawn in replicate b (K draws of K clusters).

    Deterministic for (seed, set of cluster labels, n_boot): the draws are over the sorted labels. The
    returned array is read-only (cached: many statistics of one set of facts share it).
    """
    return _cached_weights(tuple(str(c) for c in clusters), int(n_boot), int(seed))


@lru_cache(maxsize=64)
def _cached_weights(clusters: tuple, n_boot: int, seed: int) -> np.ndarray:
    idx, k = cluster_index(clusters)
    W = _counts(np.random.default_rng(seed), k, n_boot)[:, idx]
    W.setflags(write=False)
    return W


def iid_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """The ordinary (observation-level) bootstrap as weights: each observation its own cluster."""
    return _counts(np.random.default_rng(seed), n, n_boot)


def weighted_mean(W: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean of y in every replicate (nan where a replicate has zero total weight)."""
    sw = W.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sw > 0, (W @ y) / np.where(sw > 0, sw, 1.0), np.nan)


def weighted_ranks(v: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties averaged) of v in each replicate's expanded sample, shape (n_boot, n).

    An observation of weight 0 gets the rank it would have if inserted; its weight keeps it out of every
    statistic, so the value does not matter.
    """
    v = np.asarray(v, dtype=np.float64)
    uniq, inv = np.unique(v, return_inverse=True)
    onehot = np.zeros((len(v), len(uniq)))
    onehot[np.arange(len(v)), inv] = 1.0
    g = W @ onehot  # weight of each distinct value, per replicate
    cum = np.cumsum(g, axis=1)
    rank_u = cum - g + (g + 1.0) / 2.0  # a block of g tied values holds ranks cum-g+1 .. cum
    return rank_u[:, inv]


def weighted_corr(W: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of a and b (each (n_boot, n) or (n,)) under the weights of each replicate."""
    sw = W.sum(axis=1, keepdims=True)
    sw = np.where(sw > 0, sw, np.nan)
    ma = (W * a).sum(axis=1, keepdims=True) / sw
    mb = (W * b).sum(axis=1, keepdims=True) / sw
    da, db = a - ma, b - mb
    cov = (W * da * db).sum(axis=1)
    va = (W * da * da).sum(axis=1)
    vb = (W * db * db).sum(axis=1)
    scale_a = (W * a * a).sum(axis=1)
    scale_b = (W * b * b).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(va * vb)
    r[~np.isfinite(r) | (va <= 1e-12 * scale_a) | (vb <= 1e-12 * scale_b)] = np.nan  # constant in the replicate
    return np.clip(r, -1.0, 1.0)


def weighted_spearman(W: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ of (x, y) in every replicate (nan where x or y is constant in the replicate)."""
    return weighted_corr(W, weighted_ranks(x, W), weighted_ranks(y, W))


class Residualizer:
    """Weighted least-squares residuals on fixed covariates (their ranks + an intercept), per replicate:
    built once per (weights, covariates), applied to any number of rank vectors."""

    def __init__(self, W: np.ndarray, covariates: list[np.ndarray]):
        self.W = W
        Z = np.stack([np.ones(W.shape)] + [weighted_ranks(c, W) for c in covariates], axis=2)  # (B, n, p)
        ZW = Z * W[:, :, None]
        self.Z = Z
        A = np.einsum("bnp,bnq->bpq", ZW, Z)
        # a tiny ridge keeps A invertible when a covariate is constant within a replicate
        ridge = 1e-10 * np.trace(A, axis1=1, axis2=2)[:, None, None] * np.eye(A.shape[1])
        self.P = np.linalg.solve(A + ridge, ZW.transpose(0, 2, 1))  # (B, p, n)

    def __call__(self, r: np.ndarray) -> np.ndarray:
        e = r - np.einsum("bnp,bp->bn", self.Z, np.einsum("bpn,bn->bp", self.P, r))
        m = (self.W * r).sum(axis=1, keepdims=True) / np.maximum(self.W.sum(axis=1, keepdims=True), 1e-300)
        tot = (self.W * (r - m) ** 2).sum(axis=1)
        e[(self.W * e * e).sum(axis=1) <= 1e-10 * tot] = 0.0  # fully explained: residuals are rounding noise
        return e


def weighted_partial_spearman(W: np.ndarray, x: np.ndarray, y: np.ndarray, covariates: list[np.ndarray]) -> np.ndarray:
    """Partial Spearman ρ of (x, y) given covariates in every replicate: the ranks of x and y are regressed
    on the covariates' ranks (with intercept) by weighted least squares, and the residuals correlated."""
    rx, ry = weighted_ranks(x, W), weighted_ranks(y, W)
    if not covariates:
        return weighted_corr(W, rx, ry)
    res = Residualizer(W, covariates)
    return weighted_corr(W, res(rx), res(ry))


def column_quantiles(reps: np.ndarray, qs: Sequence[float], min_finite: int = 10) -> np.ndarray:
    """Quantiles (numpy's default, linear) of each column's finite values, shape (len(qs), columns); nan for a
    column with fewer than `min_finite` finite values. Vectorised (np.nanquantile loops over columns)."""
    reps = np.asarray(reps, dtype=np.float64)
    if reps.ndim == 1:
        reps = reps[:, None]
    k = np.isfinite(reps).sum(axis=0)
    srt = np.sort(np.where(np.isfinite(reps), reps, np.inf), axis=0)
    out = np.full((len(qs), reps.shape[1]), np.nan)
    cols = np.arange(reps.shape[1])
    ok = k >= max(1, min_finite)
    for i, q in enumerate(qs):
        pos = q * (np.maximum(k, 1) - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(k - 1, 0))
        frac = pos - lo
        with np.errstate(invalid="ignore"):
            v = srt[lo, cols] + (srt[hi, cols] - srt[lo, cols]) * frac
        v = np.where(frac == 0, srt[lo, cols], v)
        out[i] = np.where(ok, v, np.nan)
    return out


def percentile_ci(reps: np.ndarray, level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile interval of the finite replicates (None, None when fewer than 10 are finite)."""
    r = np.sort(np.asarray(reps, dtype=np.float64).ravel())
    r = r[np.isfinite(r)]
    k = len(r)
    if k < 10:
        return None, None
    a = (1.0 - level) / 2.0
    out = []
    for q in (a, 1.0 - a):  # numpy's default (linear) quantile
        pos = q * (k - 1)
        i = int(np.floor(pos))
        j = min(i + 1, k - 1)
        out.append(float(r[i] + (r[j] - r[i]) * (pos - i)))
    return out[0], out[1]
