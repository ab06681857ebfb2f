"""`kdel risk` and `kdel risk fit`: predictions before editing, and bad input as one line with exit 2."""

from __future__ import annotations

import json

import pytest

from kdel.cli.main import main


def _run(capsys, args):
    code = main([*map(str, args)])
    return code, capsys.readouterr()


def _one_line_error(cap, needle: str) -> None:
    lines = [ln for ln in cap.err.splitlines() if ln.startswith("kdel: error:")]
    assert len(lines) == 1, cap.err
    assert needle in lines[0], lines[0]


@pytest.mark.slow
def test_risk_writes_predictions_for_every_probe(trained_model_dir, tiny_kg_dir, tmp_path, capsys):
    out = tmp_path / "risk.json"
    code, cap = _run(capsys, ["risk", "--model", trained_model_dir, "--kg", tiny_kg_dir, "--fact", 5, "--site", "last",
                              "--layer", 2, "--out", out, "--cache-dir", tmp_path / "cache"])
    assert code == 0, cap.err
    res = json.loads(out.read_text())
    assert res["format"] == "kdel-risk/1" and res["predictors"] == ["first_order"]
    case = res["cases"][0]
    assert case["fact"]["id"] == 5
    probes = case["probes"]
    n_facts = len(json.loads((tiny_kg_dir / "kg.json").read_text())["triples"])
    assert len(probes) == n_facts - 1 and all(p["fact_id"] != 5 for p in probes)
    assert {p["group"] for p in probes} >= {"same_subject", "neighbors_1hop"}
    fo = [p["first_order"] for p in probes if p["recalled_before"]]
    assert case["summary"]["first_order"]["expected_flips"] == sum(f["flip"] for f in fo)
    assert "first_order" in cap.out and "κ" in cap.out
    # rerunning into the same file is allowed (kdel wrote it); a foreign file is not
    other = tmp_path / "notes.json"
    other.write_text("{}")
    code, cap = _run(capsys, ["risk", "--model", trained_model_dir, "--kg", tiny_kg_dir, "--fact", 5,
                              "--out", other])
    assert code == 2
    _one_line_error(cap, "refusing to overwrite")


def test_risk_bad_inputs_exit_2_with_one_line(trained_model_dir, tiny_kg_dir, tmp_path, capsys):
    from tests.unit.test_risk_model import planted_model

    base = ["risk", "--model", trained_model_dir, "--kg", tiny_kg_dir]
    code, cap = _run(capsys, [*base, "--fact", 9999])
    assert code == 2
    _one_line_error(cap, "fact 9999 does not exist")

    code, cap = _run(capsys, [*base, "--fact", 1, "--method", "ft"])
    assert code == 2
    _one_line_error(cap, "no first-order predictor")

    model = planted_model(tmp_path / "m.json")
    d = json.loads(model.read_text())
    d["feature_version"] = 0
    old = tmp_path / "old.json"
    old.write_text(json.dumps(d))
    code, cap = _run(capsys, [*base, "--fact", 1, "--risk-model", old])
    assert code == 2
    _one_line_error(cap, "feature version 0")


def test_risk_fit_refuses_audits_without_cases(tmp_path, capsys):
    empty = tmp_path / "audit"
    (empty / "cases").mkdir(parents=True)
    (empty / "audit_config.json").write_text(json.dumps({"format": "kdel-audit-config/1"}))
    code, cap = _run(capsys, ["risk", "fit", empty, "--out", tmp_path / "m.json"])
    assert code == 2
    _one_line_error(cap, "has no cases")
    assert not (tmp_path / "m.json").exists()

    code, cap = _run(capsys, ["risk", "fit", tmp_path / "nowhere", "--out", tmp_path / "m.json"])
    assert code == 2
    _one_line_error(cap, "does not exist")

    notaudit = tmp_path / "plain"
    notaudit.mkdir()
    code, cap = _run(capsys, ["risk", "fit", notaudit, "--out", tmp_path / "m.json"])
    assert code == 2
    _one_line_error(cap, "not an audit directory")


def test_risk_fit_refuses_cases_without_per_fact_outcomes(tmp_path, capsys):
    """An audit written before kdel recorded per-fact outcomes: told to audit again, in one line."""
    from tests.synthetic_cases import synthetic_cases

    audit = tmp_path / "audit"
    (audit / "cases").mkdir(parents=True)
    (audit / "audit_config.json").write_text(json.dumps({"format": "kdel-audit-config/1"}))
    case = synthetic_cases(n_facts=2, methods=("rome",), layers=(0,))[0]
    case.pop("probes", None)
    (audit / "cases" / f"{case['case_id']}.json").write_text(json.dumps(case))
    code, cap = _run(capsys, ["risk", "fit", audit, "--out", tmp_path / "m.json"])
    assert code == 2
    _one_line_error(cap, "no per-fact outcomes")


@pytest.mark.parametrize("args,needle", [(["--fact", 1, "--site", "middle"], "unknown edit site"),
                                         (["--fact", 1, "--method", "nope"], "unknown method"),
                                         (["--fact", 1, "--layer", 99], "out of range")])
def test_risk_flag_errors(trained_model_dir, tiny_kg_dir, capsys, args, needle):
    code, cap = _run(capsys, ["risk", "--model", trained_model_dir, "--kg", tiny_kg_dir, *args])
    assert code == 2
    _one_line_error(cap, needle)
