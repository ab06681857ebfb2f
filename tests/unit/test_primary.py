"""The primary hypothesis (spec, test, verdict), the summary's unit of analysis and drop counts, and the
BA–ER interaction test, on planted case data (tests/synthetic_cases.py)."""

from __future__ import annotations

import numpy as np
import pytest

from kdel.audit.compare import compare_graphs
from kdel.audit.primary import PrimarySpec, evaluate_primary, parse_primary
from kdel.audit.summary import summarize
from kdel.errors import UserError
from tests.synthetic_cases import planted_cases

N_BOOT = 300


def ba_degrees(rng, k=50):
    return np.minimum(rng.zipf(2.0, k) + 2, 60)


def test_parse_primary_one_line_and_dict_forms():
    s = parse_primary("same_subject.mean_p_drop ~ subject_degree, rome@last, per-fact, success, greater")
    assert s == PrimarySpec(method="rome", site="last")
    assert parse_primary(s.describe()) == s
    d = parse_primary({"metric": "kl.mean", "predictor": "object_degree", "layers": "layer 2", "direction": "less",
                       "alpha": 0.01})
    assert (d.metric, d.predictor, d.layers, d.direction, d.alpha, d.method) == ("kl.mean", "object_degree", 2,
                                                                                  "less", 0.01, None)
    assert parse_primary(None) is None
    for bad, msg in (("same_subject.nope ~ subject_degree", "unknown metric"), ("kl.mean", "metric ~ predictor"),
                     ("kl.mean ~ size", "predictor"), ("kl.mean ~ subject_degree, upward", "layers"),
                     ({"metric": "kl.mean", "colour": 1}, "unknown key"), ({"direction": "up"}, "direction"),
                     ("kl.mean ~ subject_degree, alpha=2", "alpha")):
        with pytest.raises(UserError, match=msg):
            parse_primary(bad)


def test_declared_primary_detects_a_planted_effect_and_states_it():
    cases = planted_cases(ba_degrees(np.random.default_rng(0)), effect=1.0, seed=0, subject_sd=0.3, layers=(0, 1))
    s = summarize(cases, n_boot=N_BOOT, primary="same_subject.mean_p_drop ~ subject_degree, rome@last")
    p = s["primary"]
    assert p["declared"] and p["significant"] and p["p_decides"] == p["p"] < 0.05
    assert p["n_facts"] == len(cases) // 2 and p["n_subjects"] == 50  # each fact once, not once per layer
    assert p["ci_lo"] > 0 and p["p_holm_in_family"] >= p["p"]
    assert p["verdict"].startswith("Evidence that the mean drop of p(true object) of same-subject facts rises with "
                                   "subject popularity")
    assert f"ρ = {p['rho']:.2f}" in p["verdict"] and f"{p['n_facts']} facts of 50 subjects" in p["verdict"]
    assert p["hubs_minus_rest"]["estimate"] > 0


def test_no_effect_gives_no_evidence_and_an_undeclared_primary_is_corrected():
    cases = planted_cases(ba_degrees(np.random.default_rng(1)), effect=0.0, seed=1)
    p = summarize(cases, n_boot=N_BOOT)["primary"]
    assert not p["declared"] and p["spec"]["method"] == "rome" and p["spec"]["site"] == "last"
    assert p["p_decides"] == p["p_holm_in_family"] and p["family_size"] > 1
    assert p["verdict"].startswith("No evidence that") and "Holm p" in p["verdict"]


def test_primary_that_cannot_be_tested_says_why():
    cases = planted_cases([3, 4, 5, 6, 7, 8], effect=1.0)
    p = evaluate_primary(cases, parse_primary("kl.mean ~ subject_degree, memit@last"), n_boot=N_BOOT)
    assert p["rho"] is None and "memit @ last" in p["null_reason"]
    assert p["verdict"].startswith("Whether") and "could not be tested" in p["verdict"]


def test_repeated_layers_are_one_fact_each_and_do_not_shrink_the_ci():
    degs = ba_degrees(np.random.default_rng(2), k=30)
    one = summarize(planted_cases(degs, 0.5, seed=2, layers=(0,)), n_boot=N_BOOT)
    four = summarize(planted_cases(degs, 0.5, seed=2, layers=(0, 1, 2, 3)), n_boot=N_BOOT)

    def row(s, layer="per_fact"):
        return next(r for r in s["correlations"] if r["metric"] == "same_subject.mean_p_drop" and r["layer"] == layer
                    and r["vs"] == "subject_degree" and r["outcome"] == "success")

    r1, r4 = row(one), row(four)
    assert r4["n_facts"] == r1["n_facts"] and r4["n_cases"] == 4 * r1["n_cases"]
    assert r4["rho"] == pytest.approx(r1["rho"]) and r4["ci_hi"] - r4["ci_lo"] == pytest.approx(r1["ci_hi"] - r1["ci_lo"])
    assert row(four, 2)["n_facts"] == r1["n_facts"]  # per-layer rows exist once layers are crossed
    assert not any(r["layer"] != "per_fact" for r in one["correlations"])
    assert all(r["q_bh"] is None or r["q_bh"] >= r["p"] for r in four["correlations"])
    assert all(r["p_holm"] is None or r["p_holm"] >= r["q_bh"] for r in four["correlations"])


def test_dropped_cases_are_counted_per_reason():
    cases = planted_cases(list(range(2, 22)), effect=0.5, seed=3, facts_per_subject=lambda d: 1)
    cases[0]["success"] = cases[0]["efficacy"]["success"] = False
    cases[1]["wrecked"] = True
    g = cases[2]["groups"]["same_subject"]
    g.update(n=0, n_recalled_before=0, mean_p_drop=None, flip_rate=None, any_broke=None)
    cases[3]["status"], cases[3]["error"] = "error", "RuntimeError: boom"
    s = summarize(cases, n_boot=N_BOOT)
    assert s["dropped"] == {"error": 1, "failed_edit": 1, "wrecked": 1}
    p = s["primary"]
    assert p["dropped"] == {"empty_group": 1, "error": 1, "failed_edit": 1, "wrecked": 1}
    assert p["n_facts"] == 16 and p["n_cases"] == 17
    row = next(r for r in s["correlations"] if r["metric"] == "same_subject.mean_p_drop" and r["outcome"] == "all"
               and r["vs"] == "subject_degree")
    assert row["dropped"] == {"empty_group": 1, "error": 1} and row["n_facts"] == 18
    assert s["primary"]["verdict"]  # a sentence whatever the data


def _rates(effect_a: float, effect_b: float, reps: int = 20) -> list[float]:
    ps = []
    for r in range(reps):
        rng = np.random.default_rng(100 + r)
        a = planted_cases(ba_degrees(rng), effect_a, seed=1000 + r, prefix="A", subject_sd=0.5)
        b = planted_cases(ba_degrees(rng), effect_b, seed=2000 + r, prefix="B", subject_sd=0.5)
        ps.append(compare_graphs(a, b, labels=("BA", "ER"), n_boot=N_BOOT, seed=r)["difference"]["p"])
    return ps


def test_interaction_detects_a_ba_only_effect_and_not_a_common_one():
    only_ba = _rates(1.0, 0.0)
    common = _rates(1.0, 1.0)
    assert np.mean(np.asarray(only_ba) < 0.05) >= 0.8, only_ba
    assert np.mean(np.asarray(common) < 0.05) <= 0.2, common


def test_degree_matched_comparison_restricts_ba_to_er_range():
    rng = np.random.default_rng(7)
    ba = np.concatenate([rng.integers(2, 13, 40), rng.integers(20, 61, 15)])
    er = rng.integers(2, 13, 50)
    hub_only = lambda d: np.log(d) * (d > 12)  # noqa: E731 (damage only beyond ER's largest degree)
    a = planted_cases(ba, 1.5, seed=7, prefix="A", effect_fn=hub_only, subject_sd=0.3)
    b = planted_cases(er, 0.0, seed=8, prefix="B", subject_sd=0.3)
    res = compare_graphs(a, b, labels=("BA", "ER"), n_boot=N_BOOT)
    assert res["a"]["estimate"] > 0.3 and res["a"]["p"] < 0.05
    m = res["matched"]
    assert m["range"] == [float(er.min()), float(er.max())]
    assert m["n_facts_kept"] == sum(1 for c in a if c["fact"]["subject_degree"] <= er.max())
    assert m["a"]["lo"] < 0 < m["a"]["hi"]
    assert res["verdict"].startswith("Evidence that the rank correlation") and "larger on BA than on ER" in res["verdict"]
    assert res["matched_verdict"].startswith("BA restricted to ER's range of subject popularity (2–12;")
