"""experiments/risk: every learned-vs-baseline comparison of the validation is one Holm family."""

from __future__ import annotations

import pytest

from tests.experiment_modules import load

pytestmark = pytest.mark.unit


def _evaluate_module():
    return load("experiments/risk/evaluate.py", "risk_evaluate")


def test_holm_over_every_slice_label_and_baseline():
    def block(p1, p2):
        return {"learned": {"auroc": 0.9}, "subject_degree": {"difference": {"p_one_sided": p1}},
                "kappa": {"difference": {"p_one_sided": p2}}, "_n_boot": 1000}

    results = {"both": {"flipped": block(0.001, 0.04), "top_decile": block(0.01, 0.5),
                        "wrecked": {"undefined": "0 of 9 cases are positive"}},
               "ba": {"flipped": block(0.02, None)}}
    assert _evaluate_module().adjust_differences(results) == 5
    got = [results["both"]["flipped"]["subject_degree"]["difference"]["p_holm"],
           results["both"]["flipped"]["kappa"]["difference"]["p_holm"],
           results["both"]["top_decile"]["subject_degree"]["difference"]["p_holm"],
           results["both"]["top_decile"]["kappa"]["difference"]["p_holm"],
           results["ba"]["flipped"]["subject_degree"]["difference"]["p_holm"]]
    # by hand: sorted 0.001, 0.01, 0.02, 0.04, 0.5 times 5, 4, 3, 2, 1 = 0.005, 0.04, 0.06, 0.08, 0.5 (already
    # increasing), put back in the input order
    assert got == pytest.approx([0.005, 0.08, 0.04, 0.5, 0.06])
    assert results["ba"]["flipped"]["kappa"]["difference"]["p_holm"] is None


def test_recorded_timings_come_from_each_cells_artifacts(tmp_path):
    """A resumed run reports the times its finished stages recorded; a cell without artifacts has none."""
    import json

    from experiments.risk.stages import Settings, recorded_timings

    s = Settings(seeds=(0, 1))
    (tmp_path / "models" / "ba-0").mkdir(parents=True)
    (tmp_path / "models" / "ba-0" / "train_report.json").write_text(json.dumps({"seconds": 12.5}))
    (tmp_path / "audits" / "ba-0").mkdir(parents=True)
    (tmp_path / "audits" / "ba-0" / "summary.json").write_text(
        json.dumps({"timing": {"run_wall_s": 30.0, "total_case_s": 55.0}}))
    (tmp_path / "audits" / "er-0").mkdir(parents=True)
    (tmp_path / "audits" / "er-0" / "summary.json").write_text("{not json")
    got = recorded_timings(tmp_path, s)
    assert got["ba-0"] == {"train_s": 12.5, "audit_wall_s": 30.0, "audit_cases_s": 55.0}
    assert got["er-0"] == {} and got["ba-1"] == {} and set(got) == {"ba-0", "er-0", "ba-1", "er-1"}
