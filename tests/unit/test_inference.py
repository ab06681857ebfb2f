"""Inference on planted data: the cluster bootstrap against explicit resampling, its coverage and size, pseudo-
replication, Holm and BH against hand computations, the random-effects meta-analysis against a hand
computation, and guarded regressions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from kdel.audit.stats import hase_regressions, nested_f_test, ols
from kdel.stats.bootstrap import (cluster_weights, iid_weights, percentile_ci, weighted_mean,
                                  weighted_partial_spearman, weighted_spearman)
from kdel.stats.correlation import partial_spearman
from kdel.stats.estimate import Estimate, hubs_minus_rest, mean_estimate, spearman_estimate
from kdel.stats.meta import pool_seeds
from kdel.stats.multiple import benjamini_hochberg, holm


def clustered(rng, k=40, effect=0.0, subject_sd=1.0, noise_sd=0.5):
    """k subjects with a subject-level degree and 1..6 facts each (more for hubs); y = effect · log(degree)
    + a subject effect shared by its facts + noise."""
    deg = np.minimum(rng.zipf(2.0, k) + 1, 60).astype(float)
    m = np.minimum(1 + deg.astype(int) // 4, 6)
    subj = np.repeat(np.arange(k), m)
    u = rng.normal(0, subject_sd, k)
    x = deg[subj]
    y = effect * np.log(x) + u[subj] + rng.normal(0, noise_sd, len(subj))
    return x, y, subj


def test_weighted_statistics_equal_explicit_resampling():
    rng = np.random.default_rng(0)
    n = 30
    x = rng.integers(1, 8, n).astype(float)  # ties
    y = np.round(rng.normal(size=n), 1)
    z = rng.normal(size=n)
    cl = rng.integers(0, 10, n)
    W = cluster_weights(cl, 25, seed=1)
    rho, part, mean = weighted_spearman(W, x, y), weighted_partial_spearman(W, x, y, [z]), weighted_mean(W, y)
    for b in range(25):
        idx = np.repeat(np.arange(n), W[b].astype(int))
        assert mean[b] == pytest.approx(y[idx].mean(), abs=1e-12)
        ref = sps.spearmanr(x[idx], y[idx]).statistic
        assert (np.isnan(rho[b]) and np.isnan(ref)) or rho[b] == pytest.approx(ref, abs=1e-12)
        pref = partial_spearman(x[idx], y[idx], [z[idx]])["rho"]
        assert (np.isnan(part[b]) and pref is None) or part[b] == pytest.approx(pref, abs=1e-10)
    # a replicate draws whole clusters: the facts of one subject get one common weight
    for c in set(cl.tolist()):
        assert np.all(W[:, cl == c] == W[:, cl == c][:, :1])


def test_cluster_weights_draw_k_of_k_subjects_and_are_seeded():
    cl = ["a", "a", "b", "c", "c", "c"]
    W = cluster_weights(cl, 500, seed=3)
    per_cluster = np.stack([W[:, 0], W[:, 2], W[:, 3]], axis=1)
    assert np.all(per_cluster.sum(axis=1) == 3)
    assert np.array_equal(W[:, ::-1], cluster_weights(cl[::-1], 500, seed=3))  # draws follow labels, not order
    assert not np.array_equal(W, cluster_weights(cl, 500, seed=4))
    assert iid_weights(7, 100, 0).sum(axis=1).tolist() == [7.0] * 100


def test_spearman_estimate_matches_scipy_and_reports_n_of_facts_and_subjects():
    rng = np.random.default_rng(1)
    x, y, subj = clustered(rng, effect=3.0, subject_sd=0.5)
    e = spearman_estimate(x, y, subj, n_boot=400, seed=0)
    ref = sps.spearmanr(x, y)
    assert e.estimate == pytest.approx(ref.statistic, abs=1e-12)
    assert e.p_iid == pytest.approx(ref.pvalue, rel=1e-9)
    assert e.n_facts == len(x) and e.n_subjects == 40
    assert e.lo < e.estimate < e.hi and e.p < 0.05
    # one-sided p halves the two-sided one in the estimate's direction
    g = spearman_estimate(x, y, subj, n_boot=400, seed=0, direction="greater")
    assert g.p == pytest.approx(e.p / 2, rel=1e-9)


def coverage(n_sims: int, n_boot: int = 400) -> dict:
    """Share of n_sims planted data sets (40 subjects, correlated facts within a subject) whose 95% cluster-
    bootstrap CI covers the true mean / the true Spearman ρ (the latter from 4 × 20,000 subjects)."""
    truth_mean = 0.3
    big = [clustered(np.random.default_rng(10_000 + i), k=20_000, effect=0.4) for i in range(4)]
    truth_rho = float(np.mean([sps.spearmanr(x, y).statistic for x, y, _ in big]))
    hit_mean = hit_rho = 0
    for i in range(n_sims):
        rng = np.random.default_rng(i)
        x, y, subj = clustered(rng, effect=0.4)
        m = mean_estimate(truth_mean + rng.normal(0, 1.0, 40)[subj] + rng.normal(0, 0.3, len(subj)), subj,
                          n_boot=n_boot, seed=i)
        hit_mean += m.lo <= truth_mean <= m.hi
        r = spearman_estimate(x, y, subj, n_boot=n_boot, seed=i)
        hit_rho += r.lo <= truth_rho <= r.hi
    return {"mean": hit_mean / n_sims, "rho": hit_rho / n_sims, "true_rho": truth_rho}


def size(n_sims: int, n_boot: int = 300) -> dict:
    """Share of n_sims null data sets (30 subjects, strong subject effects) rejected at 0.05 by the cluster p,
    the iid p over facts, and the iid p with every fact edited at 4 layers and pooled (the old summary)."""
    rej_cluster = rej_iid = rej_pooled = 0
    for i in range(n_sims):
        rng = np.random.default_rng(500 + i)
        x, y, subj = clustered(rng, k=30, effect=0.0, subject_sd=1.0, noise_sd=0.3)
        e = spearman_estimate(x, y, subj, n_boot=n_boot, seed=i)
        rej_cluster += e.p < 0.05
        rej_iid += e.p_iid < 0.05
        rej_pooled += sps.spearmanr(np.repeat(x, 4), np.repeat(y, 4)).pvalue < 0.05
    return {"cluster": rej_cluster / n_sims, "iid": rej_iid / n_sims, "pooled_layers": rej_pooled / n_sims}


def test_cluster_bootstrap_cis_cover_the_truth_at_the_nominal_rate():
    """200 planted data sets: the 95% CI of the mean and of Spearman's ρ each cover the truth ≥ 90% of the time."""
    cov = coverage(200)
    assert cov["mean"] >= 0.90 and cov["rho"] >= 0.90, cov


def test_cluster_p_keeps_its_size_where_the_iid_p_does_not():
    """No effect, strong subject effects: the cluster p rejects at about 5%, the iid p (facts as independent)
    far more often, and more still when every fact is edited at 4 layers and pooled (the old summary)."""
    rej = size(200)
    assert rej["cluster"] <= 0.10, rej
    assert rej["iid"] > 1.5 * rej["cluster"] and rej["pooled_layers"] > rej["iid"], rej


def test_pseudo_replicated_inputs_do_not_shrink_the_ci():
    rng = np.random.default_rng(2)
    x, y, subj = clustered(rng, effect=0.5)
    x4, y4, s4 = np.repeat(x, 4), np.repeat(y, 4), np.repeat(subj, 4)
    one, four = spearman_estimate(x, y, subj, 500, 0), spearman_estimate(x4, y4, s4, 500, 0)
    assert four.estimate == pytest.approx(one.estimate, abs=1e-12)
    assert (four.hi - four.lo) == pytest.approx(one.hi - one.lo, rel=1e-9)
    assert four.p == pytest.approx(one.p, rel=1e-9)
    assert four.n_subjects == one.n_subjects and four.n_facts == 4 * one.n_facts
    m1, m4 = mean_estimate(y, subj, 500, 0), mean_estimate(y4, s4, 500, 0)
    assert (m4.hi - m4.lo) == pytest.approx(m1.hi - m1.lo, rel=1e-9)
    # the observation-level bootstrap, by contrast, is fooled: its CI shrinks by about half
    iid1 = percentile_ci(weighted_mean(iid_weights(len(y), 500, 0), y))
    iid4 = percentile_ci(weighted_mean(iid_weights(len(y4), 500, 0), y4))
    assert (iid4[1] - iid4[0]) < 0.7 * (iid1[1] - iid1[0])


def test_degenerate_correlations_are_null_with_a_reason():
    assert spearman_estimate([1, 2, 3, 4, 5], [1, 1, 1, 1, 1], list("abcde")).null_reason == "the outcome is constant"
    assert spearman_estimate([2, 2, 2, 2], [1, 2, 3, 4], list("abcd")).null_reason == "the predictor is constant"
    few = spearman_estimate([1, 2], [2, 1], ["a", "b"])
    assert few.estimate is None and "fewer than" in few.null_reason
    subj = spearman_estimate([1, 2, 3, 4, 5, 6], [1, 3, 2, 5, 4, 6], list("aabbcc"))
    assert subj.estimate is not None and subj.lo is None and "subjects" in subj.null_reason


def test_hubs_minus_rest_in_natural_units():
    x = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 40], dtype=float)
    y = np.array([0.0, 0.1, 0.0, 0.1, 0.0, 0.1, 0.0, 0.1, 0.0, 0.5])
    e, info = hubs_minus_rest(x, y, [f"s{i}" for i in range(10)], n_boot=300)
    assert info["n_hubs"] == 1 and info["threshold"] == pytest.approx(np.quantile(x, 0.9))
    assert e.estimate == pytest.approx(0.5 - 0.4 / 9)  # the 9 others: four 0.1s and five 0s


def test_holm_and_bh_against_hand_computations():
    p = [0.01, 0.04, 0.03, 0.005, None]
    # Holm: sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → running max 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02, None]) and holm(p)[4] is None
    # BH: 4·0.005/1 = 0.02, 4·0.01/2 = 0.02, 4·0.03/3 = 0.04, 4·0.04/4 = 0.04 → running min from the top
    assert benjamini_hochberg(p)[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert benjamini_hochberg([0.02, 0.03, 0.9]) == pytest.approx([0.045, 0.045, 0.9])
    assert holm([]) == [] and benjamini_hochberg([None]) == [None]
    with pytest.raises(ValueError):
        holm([1.5])


def _est(z, v, n=50):
    return Estimate("spearman", math.tanh(z), n_facts=n, n_subjects=n // 2, se=math.sqrt(v))


def test_meta_analysis_against_a_hand_computation():
    # z = 0.1, 0.3, 0.5 with v = 0.01: w = 100, z̄ = 0.3, Q = 100·(0.04 + 0 + 0.04) = 8, C = 300 − 30000/300 = 200,
    # τ² = (8 − 2)/200 = 0.03, w* = 1/0.04 = 25, μ = 0.3, SE = sqrt(1/75), I² = 6/8;
    # HKSJ: q = 25·0.08/2 = 1 → the same SE
    res = pool_seeds([_est(0.1, 0.01), _est(0.3, 0.01), _est(0.5, 0.01)])
    assert res.k == 3 and res.q == pytest.approx(8.0) and res.tau2 == pytest.approx(0.03)
    assert res.i2 == pytest.approx(0.75) and res.z == pytest.approx(0.3)
    assert res.estimate == pytest.approx(math.tanh(0.3))
    se = math.sqrt(1 / 75)
    assert res.se_z == pytest.approx(se)
    t = sps.t.ppf(0.975, 2)
    assert (res.lo, res.hi) == pytest.approx((math.tanh(0.3 - t * se), math.tanh(0.3 + t * se)))
    assert res.p == pytest.approx(2 * sps.t.sf(0.3 / se, 2))
    assert (res.dl_lo, res.dl_hi) == pytest.approx((math.tanh(0.3 - 1.959964 * se), math.tanh(0.3 + 1.959964 * se)))
    # unequal variances: z = 0, 0.5, v = 0.04, 0.01 → w = 25, 100, z̄ = 0.4, Q = 4 + 1 = 5, C = 125 − 10625/125
    # = 40, τ² = 4/40 = 0.1, w* = 1/0.14, 1/0.11, μ = (0.5/0.11)/(1/0.14 + 1/0.11) = 0.28, I² = 0.8
    res = pool_seeds([_est(0.0, 0.04), _est(0.5, 0.01)])
    assert res.tau2 == pytest.approx(0.1) and res.i2 == pytest.approx(0.8) and res.z == pytest.approx(0.28)
    assert res.dl_hi == pytest.approx(math.tanh(0.28 + 1.959964 / math.sqrt(1 / 0.14 + 1 / 0.11)), rel=1e-6)
    # homogeneous seeds: τ² = 0, I² = 0; dicts accepted; a seed without an estimate is dropped with its reason
    res = pool_seeds([_est(0.2, 0.01).to_dict(), _est(0.2, 0.02), Estimate("spearman", None, null_reason="x")])
    assert res.tau2 == 0.0 and res.i2 == 0.0 and res.k == 2 and res.dropped == ["seed 2: x"]
    assert pool_seeds([]).estimate is None


def test_degenerate_regressions_are_null_with_the_reason():
    # constant y (the F = −0.22 / −3.0 of the old summaries)
    r = hase_regressions([1.0] * 12, [0, 1, 2] * 4, np.linspace(0, 1, 12))
    assert r["r2_layer"] is None and "constant y" in r["null_reasons"]["r2_layer"]
    assert r["f_test"]["F"] is None and "constant y" in r["f_test"]["null_reason"]
    # n = 5 with df (2, 1) (the F = 41822, p = 0.003 of the old summaries)
    rng = np.random.default_rng(0)
    r = hase_regressions(rng.uniform(size=5), [0, 0, 1, 1, 1], rng.uniform(size=5))
    assert r["f_test"]["F"] is None and "n = 5 < k + 3" in r["f_test"]["null_reason"]
    assert r["r2_layer_x_tracing"] is None and "k + 3" in r["null_reasons"]["r2_layer_x_tracing"]
    assert r["r2_layer"] is not None  # 1 predictor: n = 5 ≥ 4
    # df_den ≤ 0 and df_num ≤ 0
    fit = ols(np.array([1.0, 2.0, 3.0]), np.column_stack([np.ones(3), [1.0, 2.0, 3.0], [1.0, 4.0, 9.0]]))
    assert "df_den" in nested_f_test(ols(np.array([1.0, 2.0, 3.0]), np.ones((3, 1))), fit)["null_reason"]
    assert "df_num" in nested_f_test(fit, fit)["null_reason"]
    assert hase_regressions([1, 2], [0, 1], [0.1, 0.2])["null_reasons"]["r2_layer"].startswith("n = 2 < 3")


def test_regression_cis_by_cluster_bootstrap():
    rng = np.random.default_rng(3)
    layer = np.repeat([0, 1, 2, 3], 30)
    tracing = rng.uniform(size=120)
    y = np.array([0.2, 0.8, 0.5, 0.1])[layer] + rng.normal(0, 0.1, 120)
    subj = np.tile(np.arange(30), 4)  # each subject's fact edited at all four layers
    r = hase_regressions(y, layer, tracing, clusters=subj, n_boot=300, seed=0)
    lo, hi = r["ci"]["r2_layer"]
    assert lo < r["r2_layer"] < hi and r["n_subjects"] == 30
    assert r["ci"]["delta_r2_tracing_over_layer"][0] >= -1e-9
    # tracing is noise here: the cluster-robust test of its 4 terms (tracing + 3 interactions) has G - 1 df
    fc = r["f_test_cluster"]
    assert fc["df_num"] == 4 and fc["df_den"] == 29 and fc["p"] > 0.01
    assert hase_regressions(y, layer, tracing)["f_test_cluster"] is None  # no clusters given: no robust test


def test_cluster_robust_hase_test_finds_tracing_that_matters():
    rng = np.random.default_rng(4)
    layer = np.repeat([0, 1, 2, 3], 30)
    tracing = rng.uniform(size=120)
    y = np.array([0.2, 0.8, 0.5, 0.1])[layer] + 0.8 * tracing + rng.normal(0, 0.1, 120)
    r = hase_regressions(y, layer, tracing, clusters=np.tile(np.arange(30), 4))
    assert r["f_test_cluster"]["p"] < 1e-4 and r["f_test"]["p"] < 1e-4


def test_pool_differences_and_summary_rows_by_hand():
    from kdel.stats.meta import pool_differences

    def comp(za, zb):
        return {"spec": {"direction": "greater"}, "a": _est(za, 0.01).to_dict(), "b": _est(zb, 0.01).to_dict()}

    # Δz = 0.3, 0.5 with v = 0.01 + 0.01: w = 50, Δz̄ = 0.4, Q = 50·0.02 = 1 = df → τ² = 0; SE = sqrt(1/100)
    res = pool_differences([comp(0.5, 0.2), comp(0.6, 0.1)])
    assert res.z == pytest.approx(0.4) and res.estimate == pytest.approx(0.4) and res.tau2 == pytest.approx(0, abs=1e-12)
    assert res.se_z == pytest.approx(0.1) and res.p == pytest.approx(sps.t.sf(4.0, 1))
    assert res.direction == "greater" and res.n_facts == 200
    # a summary row (rho, ci_lo, se_z, ...) is accepted as a seed's estimate
    row = {"rho": math.tanh(0.3), "ci_lo": 0.1, "ci_hi": 0.5, "se_z": 0.1, "n_facts": 40, "n_subjects": 30,
           "p": 0.01, "direction": "two-sided", "null_reason": None}
    one = pool_seeds([row])
    assert one.estimate == pytest.approx(math.tanh(0.3)) and one.k == 1 and "one seed" in one.null_reason


if __name__ == "__main__":  # the calibration figures quoted in docs/statistics.md
    import json
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(json.dumps({"n_sims": n, "coverage_95": coverage(n), "rejection_rate_at_0.05_under_null": size(n)}))
