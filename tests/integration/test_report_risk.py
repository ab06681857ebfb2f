"""`kdel report --risk` / `--risk-model`: the "predicted vs measured" section, its absence, and bad inputs."""

from __future__ import annotations

import base64
import json
import re

import pytest

from kdel.cli.main import main

HEADING = "<summary><h2>Predicted vs measured</h2></summary>"


def _run(capsys, args):
    code = main([*map(str, args)])
    return code, capsys.readouterr()


def _audit(model, kg, out, method: str, *extra) -> None:
    """A small audit: `method` at layer 2, `last` site, one fact per popularity bin, no tracing."""
    rc = main(["audit", "--model", str(model), "--kg", str(kg), "--out", str(out), "--methods", method,
               "--sites", "last", "--layers", "2", "--per-bin", "1", "--unrelated", "20", "--no-tracing-effect",
               "--quiet", *map(str, extra)])
    assert rc == 0


@pytest.fixture(scope="module")
def rome_audit(trained_model_dir, tiny_kg_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("risk_report") / "audit"
    _audit(trained_model_dir, tiny_kg_dir, out, "rome", "--bins", 2)
    return out


def _section(html: str) -> str:
    i = html.index("<details class=section id=predicted-vs-measured")
    return html[i: html.index("</details>", i)]


@pytest.mark.integration
def test_risk_adds_the_section_and_its_absence_without(rome_audit, tmp_path, capsys):
    out = tmp_path / "with" / "report.html"
    code, cap = _run(capsys, ["report", rome_audit, "--out", out, "--risk", "--cache-dir", rome_audit / "cache"])
    assert code == 0, cap.err
    html = out.read_text(encoding="utf-8")
    assert html.count(HEADING) == 1
    # after the primary answer, before the detailed sections
    assert html.index("<section class=answer>") < html.index(HEADING) < html.index("<details class=section id=setup")
    sec = _section(html)
    m = re.search(r"<img alt='predicted vs measured p drop' src='data:image/png;base64,([A-Za-z0-9+/=]+)'>", sec)
    assert m and base64.b64decode(m[1]).startswith(b"\x89PNG")
    assert "first-order κ" in sec and "<th>flip AUROC</th>" in sec
    assert re.search(r"AUROC of the flip prediction over all probe facts: (\d\.\d{3}|n/a)", sec)
    rows = re.findall(r"<tr><td>([a-z_0-9]+)</td>(?:<td>[^<]*</td>){4}<td>(\d\.\d{3}|n/a)</td></tr>", sec)
    assert rows and {g for g, _ in rows} <= {"same_subject", "same_object", "subject_as_object", "neighbors_1hop",
                                             "neighbors_2hop", "same_relation", "unrelated", "other"}
    png = out.parent / "plots" / "predicted_vs_measured.png"
    assert png.read_bytes() == base64.b64decode(m[1])  # the same figure, also under plots/
    assert html.count("src='data:image/png;base64,") == int(re.search(r"(\d+) plots ->", cap.out)[1])

    plain = tmp_path / "without" / "report.html"
    code, cap = _run(capsys, ["report", rome_audit, "--out", plain])
    assert code == 0, cap.err
    html = plain.read_text(encoding="utf-8")
    assert "Predicted vs measured" not in html and "predicted-vs-measured" not in html and "AUROC" not in html
    assert not (plain.parent / "plots" / "predicted_vs_measured.png").exists()


@pytest.mark.integration
def test_risk_model_gives_the_learned_predictions(rome_audit, tmp_path, capsys):
    from tests.unit.test_risk_model import planted_model

    model = planted_model(tmp_path / "risk_model.json")
    out = tmp_path / "report.html"
    code, cap = _run(capsys, ["report", rome_audit, "--out", out, "--risk-model", model,  # implies --risk
                              "--cache-dir", rome_audit / "cache"])
    assert code == 0, cap.err
    sec = _section(out.read_text(encoding="utf-8"))
    assert "What the learned risk predictor says" in sec and "<th>flip AUROC</th>" in sec
    # the risk model is an input: never the report
    code, cap = _run(capsys, ["report", rome_audit, "--out", model, "--risk-model", model, "--force"])
    assert code == 2
    _one_line_error(cap, "refusing to write --out")
    assert json.loads(model.read_text())["format"] == "kdel-risk-model/1"


def _one_line_error(cap, needle: str) -> None:
    lines = [ln for ln in cap.err.splitlines() if ln.startswith("kdel: error:")]
    assert len(lines) == 1 and len(cap.err.strip().splitlines()) == 1, cap.err
    assert needle in lines[0], lines[0]


@pytest.mark.integration
def test_bad_risk_model_exits_2_and_writes_nothing(rome_audit, tmp_path, capsys):
    out = tmp_path / "r" / "report.html"
    code, cap = _run(capsys, ["report", rome_audit, "--out", out, "--risk-model", tmp_path / "missing.json"])
    assert code == 2
    _one_line_error(cap, "does not exist")
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": "kdel-risk-model/1", "feature_version": 0, "features": [],
                               "case_features": [], "heads": {}}))
    code, cap = _run(capsys, ["report", rome_audit, "--out", out, "--risk", "--risk-model", old])
    assert code == 2
    _one_line_error(cap, "feature version 0")
    assert not (tmp_path / "r").exists()  # neither the report nor its plots


@pytest.mark.integration
def test_non_rank_one_method_without_a_model_warns_and_leaves_the_section_out(trained_model_dir, tiny_kg_dir,
                                                                               tmp_path, capsys):
    hp = tmp_path / "hp.yaml"
    hp.write_text("ft:\n  steps: 2\n")
    audit = tmp_path / "ft_audit"
    _audit(trained_model_dir, tiny_kg_dir, audit, "ft", "--bins", 1, "--hparams", hp)
    capsys.readouterr()
    out = tmp_path / "report.html"
    code, cap = _run(capsys, ["report", audit, "--out", out, "--risk"])
    assert code == 0, cap.err
    warn = [ln for ln in cap.err.splitlines() if ln.startswith("kdel: warning:")]
    assert len(warn) == 1 and "not every case's method is rank-one (ft)" in warn[0], cap.err
    html = out.read_text(encoding="utf-8")
    assert "Predicted vs measured" not in html and "AUROC" not in html
