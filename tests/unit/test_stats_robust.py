"""The cluster-robust Wald test on planted data: nominal size where the plain F-test over-rejects, power on a
planted effect, pseudo-replication does not make it more significant, and its null reasons."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from kdel.audit.stats import nested_f_test, ols
from kdel.stats.robust import cluster_wald, fisher_combined_p

pytestmark = pytest.mark.unit


def _design(rng, n_clusters=30, per=8, effect=0.0, cluster_sd=1.0):
    """y = cluster shock + effect * x + noise, where x is constant within a cluster (so the shocks confound
    the naive test)."""
    g = np.repeat(np.arange(n_clusters), per)
    x = rng.normal(size=n_clusters)[g]
    y = rng.normal(scale=cluster_sd, size=n_clusters)[g] + effect * x + rng.normal(scale=0.3, size=len(g))
    X = np.column_stack([np.ones(len(g)), x])
    return y, X, g


def test_size_is_nominal_where_the_plain_f_test_over_rejects():
    rng = np.random.default_rng(0)
    robust, plain = [], []
    for _ in range(300):
        y, X, g = _design(rng)
        robust.append(cluster_wald(y, X, [1], g)["p"] < 0.05)
        plain.append(nested_f_test(ols(y, X[:, :1]), ols(y, X))["p"] < 0.05)
    assert np.mean(plain) > 0.4  # every case counted as independent: far above 5%
    assert np.mean(robust) < 0.09  # clusters respected: near 5% (F(1, G-1) reference)


def test_detects_a_planted_effect_and_equals_the_squared_robust_t_for_one_coefficient():
    rng = np.random.default_rng(1)
    y, X, g = _design(rng, effect=1.5)
    res = cluster_wald(y, X, [1], g)
    assert res["p"] < 1e-3 and res["df_num"] == 1 and res["df_den"] == 29 and res["n_clusters"] == 30
    # by hand for one coefficient: F = (b / se)^2 with the CR1 sandwich se
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    u = y - X @ beta
    bread = np.linalg.inv(X.T @ X)
    S = np.stack([(X[g == c] * u[g == c, None]).sum(0) for c in range(30)])
    n, k, G = len(y), 2, 30
    V = G / (G - 1) * (n - 1) / (n - k) * bread @ (S.T @ S) @ bread
    assert res["F"] == pytest.approx(beta[1] ** 2 / V[1, 1], rel=1e-10)
    assert res["p"] == pytest.approx(sps.f.sf(res["F"], 1, 29), rel=1e-10)


def test_duplicating_every_case_does_not_make_it_more_significant():
    rng = np.random.default_rng(2)
    y, X, g = _design(rng, effect=0.3)
    once = cluster_wald(y, X, [1], g)
    twice = cluster_wald(np.concatenate([y, y]), np.vstack([X, X]), [1], np.concatenate([g, g]))
    assert twice["F"] == pytest.approx(once["F"], rel=0.02)  # only the (n-1)/(n-k) factor moves
    plain1 = nested_f_test(ols(y, X[:, :1]), ols(y, X))["F"]
    plain2 = nested_f_test(ols(np.concatenate([y, y]), np.vstack([X, X])[:, :1]),
                           ols(np.concatenate([y, y]), np.vstack([X, X])))["F"]
    assert plain2 > 1.9 * plain1  # the plain F-test doubles with pseudo-replication


def test_null_reasons():
    rng = np.random.default_rng(3)
    y, X, g = _design(rng, n_clusters=4)
    assert "clusters < 5" in cluster_wald(y, X, [1], g)["null_reason"]
    y, X, g = _design(rng)
    assert "rank-deficient" in cluster_wald(y, np.column_stack([X, X[:, 1]]), [1], g)["null_reason"]
    assert cluster_wald(y, X, [], g)["null_reason"] == "no coefficient to test"


def test_a_direction_without_cluster_variance_is_dropped_and_said():
    """A group whose outcome is the same for every case has residuals 0: its own coefficient has no robust
    variance; the test uses the remaining direction (rank 1 of 2) instead of failing."""
    rng = np.random.default_rng(5)
    y, X, g = _design(rng, effect=1.0)
    grp = (np.arange(len(y)) % 2).astype(float)  # half the cases
    y = np.where(grp == 1, 0.7, y)  # constant outcome there: fitted exactly by its own intercept and slope
    D = np.column_stack([X, grp, grp * X[:, 1]])
    res = cluster_wald(y, D, [1, 3], g)
    assert res["df_num"] == 1 and "1 of 2 directions" in res["note"] and res["p"] < 0.01

def test_fisher_combination():
    assert fisher_combined_p([None]) is None
    assert fisher_combined_p([0.5, None]) == pytest.approx(0.5)
    assert fisher_combined_p([0.01, 0.02, 0.5]) == pytest.approx(sps.chi2.sf(-2 * np.log([0.01, 0.02, 0.5]).sum(), 6))
