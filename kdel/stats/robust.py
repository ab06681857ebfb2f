"""A Wald test of some regression coefficients that respects clusters (CR1 sandwich covariance).

Hase et al.'s nested F-test treats every case as independent, but an audit edits each fact at every layer and a
hub's facts share a subject: the cases of one subject are correlated, and the plain F-test is then too often
significant. Here the covariance of the least-squares coefficients is the cluster-robust sandwich

    V = c · (XᵀX)⁻¹ (Σ_g X_gᵀ u_g u_gᵀ X_g) (XᵀX)⁻¹,   c = G/(G − 1) · (n − 1)/(n − k)

(G clusters, n cases, k columns; u the residuals), and H0: β_T = 0 for the tested columns T is judged by
F = β_Tᵀ V_TT⁺ β_T / q against F(q, G − 1), q = rank(V_TT) ≤ |T| (the usual small-sample reference for
clustered data; the pseudo-inverse drops directions without cluster-robust variance, and says so). With few
clusters (under ~30) CR1 tests are known to reject somewhat too often: read them as exploratory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def cluster_wald(y: np.ndarray, X: np.ndarray, test_cols: Sequence[int], clusters: Sequence) -> dict:
    """{F, p, df_num, df_den, n_clusters, null_reason} for H0: the coefficients of `test_cols` are all 0.

    Null with the reason when the design is rank deficient, there are fewer than 5 clusters or no more
    clusters than tested coefficients, or no tested direction has cluster-robust variance."""
    from scipy import stats

    y = np.asarray(y, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    n, k = X.shape
    labels = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)[1]
    G = int(labels.max()) + 1 if n else 0
    q = len(test_cols)
    out = {"F": None, "p": None, "df_num": q, "df_den": G - 1, "n_clusters": G, "null_reason": None}
    if q == 0:
        out["null_reason"] = "no coefficient to test"
    elif G < 5:
        out["null_reason"] = f"{G} clusters < 5: no cluster-robust test"
    elif G - 1 < q:
        out["null_reason"] = f"{G} clusters for {q} tested coefficients: too few"
    elif n <= k or np.linalg.matrix_rank(X) < k:
        out["null_reason"] = f"rank-deficient design ({np.linalg.matrix_rank(X)} of {k} columns, n = {n})"
    if out["null_reason"]:
        return out
    bread = np.linalg.inv(X.T @ X)
    beta = bread @ (X.T @ y)
    u = y - X @ beta
    scores = np.zeros((G, k))
    np.add.at(scores, labels, X * u[:, None])  # Σ over each cluster's cases of x_i u_i
    meat = scores.T @ scores
    V = (G / (G - 1)) * ((n - 1) / (n - k)) * bread @ meat @ bread
    T = list(test_cols)
    b, V_TT = beta[T], V[np.ix_(T, T)]
    # A direction the clusters give no variance to (e.g. a layer where every case has the same outcome, so its
    # residuals are all 0) cannot be tested: the Wald form uses the pseudo-inverse, on the rank's directions.
    rank = int(np.linalg.matrix_rank(V_TT, hermitian=True))
    out["df_num"] = rank
    if rank == 0:
        out["null_reason"] = "the tested coefficients have no cluster-robust variance"
        return out
    F = float(b @ np.linalg.pinv(V_TT, hermitian=True) @ b) / rank
    out["F"], out["p"] = F, float(stats.f.sf(F, rank, G - 1))
    if rank < q:
        out["note"] = f"tested on {rank} of {q} directions (the others have no cluster-robust variance)"
    return out


def fisher_combined_p(ps: Sequence[float | None]) -> float | None:
    """Fisher's combination of independent p-values (one per seed): P(χ²(2m) ≥ −2 Σ ln p); None without any."""
    from scipy import stats

    vals = [float(p) for p in ps if p is not None and np.isfinite(p)]
    if not vals:
        return None
    return float(stats.combine_pvalues(vals, method="fisher").pvalue)
