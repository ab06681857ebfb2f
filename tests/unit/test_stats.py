"""Audit statistics on synthetic case data with a planted degree effect (and with none)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from kdel.audit.stats import bootstrap_ci, hase_regressions, nested_f_test, ols, partial_spearman, spearman


def planted(n=200, effect=1.0, seed=0):
    rng = np.random.default_rng(seed)
    degree = rng.integers(1, 40, size=n).astype(float)
    dnorm = rng.lognormal(0, 0.5, size=n) + 0.02 * degree  # ‖ΔW‖ mildly tied to degree (a confound)
    size = degree * 0.5 + rng.normal(0, 1, size=n)  # group size grows with degree
    side = effect * np.log(degree) + 0.3 * dnorm + rng.normal(0, 0.5, size=n)
    return degree, side, dnorm, size


def test_spearman_matches_scipy_and_detects_planted_effect():
    degree, side, *_ = planted(effect=1.0)
    res = spearman(degree, side)
    ref = sps.spearmanr(degree, side)
    assert res["rho"] == pytest.approx(ref.statistic, abs=1e-12)
    assert res["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert res["rho"] > 0.5 and res["p"] < 1e-6
    null = spearman(*planted(effect=0.0, seed=1)[:2])
    assert abs(null["rho"]) < 0.2 and null["p"] > 0.01


def test_spearman_degenerate_inputs_are_none():
    assert spearman([1, 2, 3, 4], [0, 0, 0, 0])["rho"] is None
    assert spearman([1, 2], [1, 2])["rho"] is None
    res = spearman([1, None, 3, 4, 5], [2, 5, float("nan"), 4, 6])
    assert res["n"] == 3


def _closed_form_partial(x, y, z):
    rxy = sps.spearmanr(x, y).statistic
    rxz = sps.spearmanr(x, z).statistic
    ryz = sps.spearmanr(y, z).statistic
    return (rxy - rxz * ryz) / math.sqrt((1 - rxz**2) * (1 - ryz**2))


def test_partial_spearman_matches_closed_form_with_one_covariate():
    degree, side, dnorm, _ = planted()
    res = partial_spearman(degree, side, [dnorm])
    assert res["rho"] == pytest.approx(_closed_form_partial(degree, side, dnorm), abs=1e-10)
    df = len(degree) - 3
    t = res["rho"] * math.sqrt(df / (1 - res["rho"] ** 2))
    assert res["p"] == pytest.approx(2 * sps.t.sf(abs(t), df), rel=1e-9)
    assert res["df"] == df


def test_partial_spearman_two_covariates_matches_recursive_formula():
    degree, side, dnorm, size = planted(seed=3)
    res = partial_spearman(degree, side, [dnorm, size])
    # second-order partial from first-order ones (the textbook recursion), on Spearman correlations
    r_xy_z = _closed_form_partial(degree, side, dnorm)
    r_xw_z = _closed_form_partial(degree, size, dnorm)
    r_yw_z = _closed_form_partial(side, size, dnorm)
    expected = (r_xy_z - r_xw_z * r_yw_z) / math.sqrt((1 - r_xw_z**2) * (1 - r_yw_z**2))
    assert res["rho"] == pytest.approx(expected, abs=1e-10)
    assert res["covariates_used"] == 2


def test_partial_spearman_removes_a_pure_confound():
    # side effect driven only by group size, which grows with degree: raw rho high, partial rho ~ 0
    rng = np.random.default_rng(5)
    degree = rng.permutation(np.arange(1, 301)).astype(float)
    size = degree + rng.normal(0, 3, size=300)
    side = size + rng.normal(0, 3, size=300)
    raw = spearman(degree, side)
    part = partial_spearman(degree, side, [size])
    assert raw["rho"] > 0.9
    assert abs(part["rho"]) < 0.2
    const = partial_spearman(degree, side, [np.ones(300)])  # a constant covariate is dropped
    assert const["covariates_used"] == 0
    assert const["rho"] == pytest.approx(sps.spearmanr(degree, side).statistic, abs=1e-10)


def test_bootstrap_ci_is_seeded_and_covers_the_mean():
    x = np.random.default_rng(0).normal(2.0, 1.0, size=100)
    a = bootstrap_ci(x, seed=7)
    b = bootstrap_ci(list(x), seed=7)
    assert a == b
    assert a["lo"] < a["mean"] < a["hi"]
    assert a["lo"] < 2.0 < a["hi"]
    se = x.std(ddof=1) / 10
    assert a["hi"] - a["lo"] == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert bootstrap_ci([])["mean"] is None
    assert bootstrap_ci([3.0, None]) == {"mean": 3.0, "lo": 3.0, "hi": 3.0, "n": 1}


def test_ols_r2_matches_closed_form():
    rng = np.random.default_rng(1)
    x = rng.normal(size=50)
    y = 2 * x + rng.normal(size=50)
    fit = ols(y, np.column_stack([np.ones(50), x]))
    assert fit.r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, abs=1e-12)
    assert fit.n_params == 2


def test_hase_regressions_on_planted_layer_effect():
    rng = np.random.default_rng(2)
    n_per, layers = 30, [0, 1, 2, 3]
    layer = np.repeat(layers, n_per)
    tracing = rng.uniform(0, 1, size=layer.size)
    # success depends on layer only: tracing adds ~nothing
    success = np.array([0.2, 0.8, 0.5, 0.1])[layer] + rng.normal(0, 0.05, size=layer.size)
    res = hase_regressions(success, layer, tracing)
    # closed form: R² of a one-hot layer fit = between-group SS / total SS
    means = np.array([success[layer == g].mean() for g in layers])
    ss_between = sum(n_per * (m - success.mean()) ** 2 for m in means)
    ss_total = ((success - success.mean()) ** 2).sum()
    assert res["r2_layer"] == pytest.approx(ss_between / ss_total, abs=1e-10)
    assert res["r2_tracing"] == pytest.approx(np.corrcoef(tracing, success)[0, 1] ** 2, abs=1e-10)
    assert 0 <= res["delta_r2_tracing_over_layer"] < 0.02
    assert res["f_test"]["df_num"] == 4 and res["f_test"]["df_den"] == layer.size - 8
    # F by hand from the two RSS
    X_small = np.column_stack([np.ones(layer.size)] + [(layer == g).astype(float) for g in layers[1:]])
    X_big = np.column_stack([X_small, tracing] + [(layer == g) * tracing for g in layers[1:]])
    rss = [float(((success - X @ np.linalg.lstsq(X, success, rcond=None)[0]) ** 2).sum()) for X in (X_small, X_big)]
    F = ((rss[0] - rss[1]) / 4) / (rss[1] / (layer.size - 8))
    assert res["f_test"]["F"] == pytest.approx(F, rel=1e-9)
    assert res["f_test"]["p"] == pytest.approx(sps.f.sf(F, 4, layer.size - 8), rel=1e-9)
    assert res["f_test"]["p"] > 0.01


def test_hase_regressions_detect_a_planted_tracing_effect():
    rng = np.random.default_rng(4)
    layer = np.repeat([0, 1, 2], 40)
    tracing = rng.uniform(0, 1, size=layer.size)
    success = 0.3 * layer + 1.5 * tracing + rng.normal(0, 0.1, size=layer.size)
    res = hase_regressions(success, layer, tracing)
    assert res["delta_r2_tracing_over_layer"] > 0.3
    assert res["f_test"]["p"] < 1e-10


def test_nested_f_test_degenerate():
    fit = ols(np.array([1.0, 2.0, 3.0]), np.column_stack([np.ones(3), [1.0, 2.0, 3.0]]))
    assert nested_f_test(fit, fit)["F"] is None
    assert hase_regressions([1, 2], [0, 1], [0.1, 0.2])["r2_layer"] is None


def _fake_case(i, degree, p_drop, dnorm, size, success=True):
    group = {"flip_rate": 0.0, "any_broke": False, "mean_p_drop": p_drop, "acc_after_recalled": 1.0,
             "n_recalled_before": size}
    return {
        "case_id": f"{i:016x}", "status": "ok", "success": success, "wrecked": False, "delta_norm": dnorm,
        "spec": {"method": "m", "site": "last", "layer": i % 3, "objective": "erase"},
        "fact": {"id": i, "subject": f"S{i // 2}", "subject_degree": degree, "object_degree": 1.0 + (i % 5),
                 "subject_bin": min(4, int(degree) // 8),
                 "object_bin": i % 5},
        "groups": {"same_subject": group},
        "global": {"acc_drop": 0.0}, "kl": {"mean": 0.01},
        "efficacy": {"success": success}, "hase": {"efficacy_score": 0.5 + 0.1 * (i % 3), "tracing_effect": 0.1 * (i % 7)},
        "timing": {"total_s": 1.0 + i},
    }


def test_summarize_reports_the_planted_degree_effect_and_ignores_order():
    from kdel.audit.summary import summarize

    degree, side, dnorm, size = planted(n=60, effect=1.0, seed=9)
    cases = [_fake_case(i, float(degree[i]), float(side[i]), float(dnorm[i]), float(size[i])) for i in range(60)]
    s1 = summarize(cases, seed=0, n_boot=200)
    s2 = summarize(list(reversed(cases)), seed=0, n_boot=200)
    assert {k: v for k, v in s1.items() if k != "timing"} == {k: v for k, v in s2.items() if k != "timing"}
    row = next(r for r in s1["correlations"] if r["metric"] == "same_subject.mean_p_drop"
               and r["vs"] == "subject_degree" and r["outcome"] == "all")
    assert row["rho"] == pytest.approx(sps.spearmanr(degree, side).statistic, abs=1e-12)
    assert row["partial_rho"] == pytest.approx(partial_spearman(degree, side, [dnorm, size])["rho"], abs=1e-12)
    assert row["rho"] > 0.5 and row["p"] < 1e-3 and row["p_holm"] >= row["p"] and row["q_bh"] >= row["p"]
    assert row["n_facts"] == 60 and row["n_subjects"] == 30 and row["layer"] == "per_fact"
    assert row["ci_lo"] < row["rho"] < row["ci_hi"] and set(row["collinearity"]) == {"delta_norm",
                                                                                       "same_subject.size"}
    cell = next(c for c in s1["cells"] if c["layer"] == "all" and c["bin"] == "all" and c["bin_by"] == "subject"
                and c["outcome"] == "all")
    assert cell["n"] == 60 and cell["n_facts"] == 60 and cell["n_subjects"] == 30
    assert cell["metrics"]["same_subject.mean_p_drop"]["mean"] == pytest.approx(side.mean())
    assert not any(c["outcome"] == "failed" for c in s1["cells"])
    assert s1["timing"]["total_case_s"] == pytest.approx(sum(1.0 + i for i in range(60)))
    null = [_fake_case(i, float(d), float(p), 1.0, 3.0) for i, (d, p) in enumerate(
        zip(*planted(n=60, effect=0.0, seed=10)[:2]))]
    row0 = next(r for r in summarize(null, n_boot=50)["correlations"] if r["metric"] == "same_subject.mean_p_drop"
                and r["vs"] == "subject_degree" and r["outcome"] == "all")
    assert abs(row0["rho"]) < 0.35
