"""Aggregation across seeds on planted case dicts (no model): pooled contrasts against the random-effects
formulas, Holm/BH over the family, the mean over seeds, and results.json + RESULTS.md + figures written by code."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tests.unit.test_sweep_synthetic import planted_cases

CONFIG = """
name: planted
seeds: 3
n_boot: 200
defaults: {entities: 30, sites: [last], layers: [0, 1, 2], tracing_effect: true}
conditions:
  - name: rome
    vary: {topology: [ba, er]}
primary:
  a: rome-ba
  b: rome-er
  statement: BA steeper than ER.
  metric: same_subject.mean_p_drop
  predictor: subject_degree
  method: rome
  site: last
  direction: greater
analyses:
  popularity: {metrics: [same_subject.mean_p_drop]}
  compare: {metrics: [same_subject.mean_p_drop]}
  hase: {y: [hase.efficacy_score]}
"""


def _dl_hksj(d: np.ndarray, v: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """DerSimonian-Laird pooled mean with the modified Hartung-Knapp CI, written out for the test."""
    w = 1 / v
    mu_f = (w * d).sum() / w.sum()
    q = (w * (d - mu_f) ** 2).sum()
    k = len(d)
    tau2 = max(0.0, (q - (k - 1)) / (w.sum() - (w ** 2).sum() / w.sum()))
    ws = 1 / (v + tau2)
    mu = (ws * d).sum() / ws.sum()
    se = max(math.sqrt((ws * (d - mu) ** 2).sum() / ((k - 1) * ws.sum())), math.sqrt(1 / ws.sum()))
    t = stats.t.ppf(0.5 + level / 2, k - 1)
    return mu, mu - t * se, mu + t * se


@pytest.fixture(scope="module")
def planted():
    """BA: same-subject damage rises with degree; ER: it does not. Three seeds each, three layers."""
    by_cell = {}
    for seed in range(3):
        by_cell[("rome-ba", seed)] = planted_cases(n_facts=40, slope=0.02, seed=seed, layers=(0, 1, 2))
        by_cell[("rome-er", seed)] = planted_cases(n_facts=40, slope=0.0, seed=10 + seed, layers=(0, 1, 2))
    return by_cell


def test_pool_contrast_is_the_random_effects_model_on_fisher_z(planted):
    from kdel.sweep.aggregate import pool_contrast
    from kdel.sweep.contrast import contrast_across_seeds
    from kdel.audit.primary import parse_primary

    spec = parse_primary({"metric": "same_subject.mean_p_drop", "predictor": "subject_degree", "method": "rome",
                          "site": "last", "direction": "greater"})
    res = contrast_across_seeds(planted, "rome-ba", "rome-er", spec, n_boot=300, level=0.95)
    assert res["seeds"] == [0, 1, 2] and len(res["per_seed"]) == 3
    d = np.array([math.atanh(r["a"]["estimate"]) - math.atanh(r["b"]["estimate"]) for r in res["per_seed"]])
    v = np.array([r["difference"]["se"] ** 2 for r in res["per_seed"]])
    mu, lo, hi = _dl_hksj(d, v)
    pooled = res["pooled"]["difference"]
    assert pooled["k"] == 3 and pooled["d"] == pytest.approx(mu, abs=1e-9)
    assert (pooled["d_lo"], pooled["d_hi"]) == (pytest.approx(lo, abs=1e-6), pytest.approx(hi, abs=1e-6))
    assert pooled["d"] > 0 and pooled["p"] < 0.05  # the planted BA-only slope is found
    assert res["pooled"]["a"]["estimate"] > 0.5 and abs(res["pooled"]["b"]["estimate"]) < 0.4
    # a seed without a contrast is dropped with its reason, not pooled as zero
    broken = [dict(res["per_seed"][0], difference={"null_reason": "planted"})] + res["per_seed"][1:]
    p2 = pool_contrast(broken, 0.95, "greater")
    assert p2["k"] == 2 and any("planted" in s for s in p2["dropped"])


def test_common_effect_is_not_a_contrast():
    from kdel.audit.primary import parse_primary
    from kdel.sweep.contrast import contrast_across_seeds

    by_cell = {}
    for seed in range(3):
        by_cell[("a", seed)] = planted_cases(n_facts=40, slope=0.02, seed=seed)
        by_cell[("b", seed)] = planted_cases(n_facts=40, slope=0.02, seed=20 + seed)
    spec = parse_primary({"metric": "same_subject.mean_p_drop", "predictor": "subject_degree", "method": "rome",
                          "site": "last", "direction": "two-sided"})
    res = contrast_across_seeds(by_cell, "a", "b", spec, n_boot=300, level=0.95)
    assert res["pooled"]["a"]["estimate"] > 0.5 and res["pooled"]["b"]["estimate"] > 0.5
    assert res["pooled"]["difference"]["p"] > 0.05


def test_family_adjustment_and_mean_over_seeds():
    from kdel.sweep.aggregate import adjust, mean_over_seeds

    rows = [{"pooled": {"p": p}} for p in (0.01, 0.04, None, 0.03)]
    adjust(rows)
    assert [r["p_holm"] for r in rows] == [pytest.approx(0.03), pytest.approx(0.06), None, pytest.approx(0.06)]
    assert [r["q_bh"] for r in rows] == [pytest.approx(0.03), pytest.approx(0.04), None, pytest.approx(0.04)]
    m = mean_over_seeds([0.2, 0.4, None, 0.9], 0.95)
    half = stats.t.ppf(0.975, 2) * np.std([0.2, 0.4, 0.9], ddof=1) / math.sqrt(3)
    assert m["k"] == 3 and m["mean"] == pytest.approx(0.5) and m["lo"] == pytest.approx(0.5 - half)
    assert mean_over_seeds([0.3], 0.95)["null_reason"].startswith("one seed")


def test_results_json_and_results_md_from_planted_cells(tmp_path, planted):
    from kdel.sweep.config import load_config
    from kdel.sweep.grid import expand
    from kdel.sweep.report import compute_results
    from kdel.sweep.results_md import MARKER, render

    p = tmp_path / "c.yaml"
    p.write_text(CONFIG, encoding="utf-8")
    cfg = load_config(p)
    plan = expand(cfg)
    res = compute_results(cfg, plan, tmp_path / "sweep", planted, {"device": "cpu", "workers": 1})
    assert res["n_cells_finished"] == 6 and res["primary"]["significant"]
    assert res["primary"]["verdict"].startswith("Evidence that")
    pop = {(r["condition"], r["metric"], r["layer"]): r for r in res["popularity"]}
    row = pop[("rome-ba", "same_subject.mean_p_drop", "per_fact")]
    assert [s["seed"] for s in row["per_seed"]] == [0, 1, 2] and row["pooled"]["estimate"] > 0.5
    assert row["q_bh"] is not None and row["p_holm"] >= row["pooled"]["p"]
    assert pop[("rome-er", "same_subject.mean_p_drop", "per_fact")]["pooled"]["p"] > 0.01
    assert len(res["comparisons"]) == 1 and res["comparisons"][0]["pooled"]["difference"]["d"] > 0
    hase = res["hase"][0]
    # success depends on layer only: R² of layer is large, of tracing (random) small
    assert hase["pooled"]["r2_layer"]["mean"] > 0.8 and hase["pooled"]["r2_tracing"]["mean"] < 0.2
    assert hase["pooled"]["r2_layer"]["k"] == 3
    res["figures"] = ["figures/primary_per_seed.png", "figures/hase_r2.png"]  # drawn by the slow end-to-end test
    md = render(res)
    first_screen = md[: md.index("## Graph comparisons")]
    assert md.startswith(MARKER) and res["primary"]["verdict"] in first_screen
    assert "figures/primary_per_seed.png" in first_screen and "side_effect_vs_degree.png" not in md
    pd = res["primary"]["pooled"]["difference"]
    assert f"Δz {pd['d']:.2f} [{pd['d_lo']:.2f}, {pd['d_hi']:.2f}]" in first_screen
    assert "0.947" in md and "<details>" in md
