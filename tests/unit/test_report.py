"""Report: plots and HTML from synthetic kdel-case/1 dicts; bad case files named and skipped (or --strict)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from kdel.audit.schema import validate_case
from tests.synthetic_cases import synthetic_cases


N_BOOT = 200


def write_audit(d: Path, cases: list[dict], **extra) -> Path:
    """An audit directory of `cases`; `extra` keys go into audit_config.json (e.g. kg_dir, facts, title, primary)."""
    (d / "cases").mkdir(parents=True)
    for c in cases:
        (d / "cases" / f"{c['case_id']}.json").write_text(json.dumps(c), encoding="utf-8")
    (d / "audit_config.json").write_text(json.dumps({
        "format": "kdel-audit-config/1", "config": {"layers": [0, 1, 2], "per_bin": 4, "n_bins": 5, "seed": 0},
        "model_dir": "model", "case_ids": [c["case_id"] for c in cases], "n_cases": len(cases), **extra}),
        encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def two_audits(tmp_path_factory):
    root = tmp_path_factory.mktemp("audits")
    ba = write_audit(root / "ba" / "audit", synthetic_cases(n_facts=16, degree_effect=0.02, seed=1, n_errors=1))
    er = write_audit(root / "er" / "audit", synthetic_cases(n_facts=16, degree_effect=0.0, seed=2))
    return root, ba, er


@pytest.fixture(scope="module")
def rendered(two_audits, tmp_path_factory):
    from kdel.report.html import render_report

    root, ba, er = two_audits
    out = tmp_path_factory.mktemp("report") / "report.html"
    return render_report({"BA": ba, "ER": er}, out, n_boot=N_BOOT)


def test_synthetic_cases_follow_the_schema():
    cases = synthetic_cases(n_facts=10, n_errors=2)
    for c in cases:
        validate_case(c, c["case_id"])
    assert sum(c["status"] == "error" for c in cases) == 2
    assert len({c["case_id"] for c in cases}) == len(cases)


def test_group_bin_table_shows_the_planted_degree_effect():
    from kdel.audit.summary import SIDE_GROUPS
    from kdel.report.plots import group_bin_table

    cases = [c for c in synthetic_cases(n_facts=40, degree_effect=0.02, seed=3, layers=(0,)) if c["status"] == "ok"]
    bins = sorted({c["fact"]["subject_bin"] for c in cases})
    t = group_bin_table(cases, bins, "mean_p_drop", outcome="all")
    row = t[SIDE_GROUPS.index("same_subject")]
    assert np.isfinite(row[-1]) and np.isfinite(row[0])
    assert row[-1] > row[0] + 0.05  # damage grows with popularity, as planted
    flat = group_bin_table([c for c in synthetic_cases(n_facts=40, degree_effect=0.0, seed=3, layers=(0,))
                            if c["status"] == "ok"], bins, "mean_p_drop", outcome="all")
    assert np.nanmax(np.abs(flat[SIDE_GROUPS.index("same_subject")])) < 0.05


@pytest.mark.integration  # trains or renders: over the unit tier's budget
def test_every_plot_is_a_png_with_content(rendered):
    import matplotlib.image as mpimg

    names = {p.name for p in rendered.plots}
    assert {"side_effect_vs_degree", "group_damage_by_bin", "delta_norm_vs_degree",
            "hase_success_vs_tracing_and_layer"} <= names
    for p in rendered.plots:
        assert p.path.parent.name == "plots" and p.path.suffix == ".png"
        img = mpimg.imread(p.path)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 0.02  # not a blank canvas


def test_html_is_self_contained_and_complete(rendered):
    html = rendered.html_path.read_text(encoding="utf-8")
    assert html.count("src='data:image/png;base64,") == len(rendered.plots)
    assert "<script" not in html.lower()
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", html)  # nothing fetched from the network
    for section in ("The answer", "Setup", "Headline numbers", "side effects per probe group", "Confound panel",
                    "Hase et al.'s regressions", "Spearman", "partial", "R² layer", "ΔR²", "‖ΔW‖", "Holm p",
                    "BH q",
                    "collinearity", "hubs − rest"):
        assert section in html, section
    for label in ("BA", "ER"):
        assert f">{label}<" in html
    assert "r-rome" in html and "rome" in html
    assert "case error" in html  # the planted error case is listed, not aggregated


def test_first_screen_states_the_primary_answer_before_the_tables(rendered):
    html = rendered.html_path.read_text(encoding="utf-8")
    answer = html.index("<section class=answer>")
    assert answer < html.index("<details class=section id=setup")  # the answer comes first
    first = html[answer: html.index("</section>", answer)]
    assert "src='data:image/png;base64," in first and "The primary hypothesis" in first  # beside the main plot
    for a in rendered.audits:
        p = a.summary["primary"]
        assert p["verdict"] in html.replace("&#x27;", "'") and p["verdict"].split(" that ")[0] in ("Evidence",
                                                                                                   "No evidence")
        assert f"ρ = {p['rho']:.2f}" in p["verdict"] and "95% CI [" in p["verdict"] and "Holm p" in p["verdict"]
    comp = rendered.comparisons[0]
    assert comp["labels"] == ["BA", "ER"] and "larger on BA than on ER" in comp["verdict"]
    assert "BA vs ER (topology × popularity)" in first and "restricted to ER" in first
    # the detailed tables follow, collapsible
    assert html.count("<details class=section") >= 7


def test_headline_uses_the_recomputed_summary(rendered):
    from kdel.audit.summary import summarize

    ba = rendered.audits[0]
    s = summarize(ba.cases, n_boot=N_BOOT)
    assert ba.summary["n_ok"] == s["n_ok"] and ba.summary["n_error"] == 1
    assert ba.summary["n_success"] == sum(c["success"] for c in ba.ok_cases)


def _truncate(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: len(text) // 3], encoding="utf-8")


def test_truncated_case_file_is_named_and_skipped(tmp_path):
    from kdel.errors import UserError
    from kdel.report.data import load_cases

    cases = synthetic_cases(n_facts=5, layers=(0,))
    d = write_audit(tmp_path / "audit", cases)
    bad = d / "cases" / f"{cases[2]['case_id']}.json"
    _truncate(bad)
    (d / "cases" / f"{cases[3]['case_id']}.json").write_text(json.dumps({"format": "kdel-case/1"}))
    lines: list[str] = []
    got, skipped = load_cases(d, warn=lines.append)
    assert len(got) == len(cases) - 2
    assert {s.path.name for s in skipped} == {bad.name, f"{cases[3]['case_id']}.json"}
    assert any(bad.name in ln and "not valid JSON" in ln for ln in lines)
    assert all("\n" not in ln for ln in lines)
    with pytest.raises(UserError, match=bad.name):
        load_cases(d, strict=True)


@pytest.mark.integration  # trains or renders: over the unit tier's budget
def test_cli_report_warns_or_fails_strict(tmp_path, capsys):
    from kdel.cli.main import main

    cases = synthetic_cases(n_facts=5, layers=(0, 1))
    d = write_audit(tmp_path / "audit", cases)
    bad = d / "cases" / f"{cases[0]['case_id']}.json"
    _truncate(bad)
    out = tmp_path / "r" / "report.html"
    assert main(["report", str(d), "--out", str(out)]) == 0  # n_boot 1000: keep this audit small
    err = capsys.readouterr().err
    warn = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warn) == 1 and str(bad) in warn[0]
    html = out.read_text(encoding="utf-8")
    assert bad.name in html  # listed under skipped files
    assert (out.parent / "plots" / "side_effect_vs_degree.png").exists()
    assert main(["report", str(d), "--out", str(tmp_path / "s.html"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "error" in err and str(bad) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.html").exists()


def test_cli_report_rejects_a_folder_without_cases(tmp_path, capsys):
    from kdel.cli.main import main

    assert main(["report", str(tmp_path)]) == 2
    assert "no audit" in capsys.readouterr().err


def test_discover_pipeline_run_layout(two_audits):
    from kdel.report.data import discover_audits

    root, ba, er = two_audits
    assert discover_audits(root) == [("BA", ba), ("ER", er)]
    assert discover_audits(ba) == [("BA", ba)]


def test_facts_file_report_has_no_kg_wording_and_takes_its_title_from_the_config(tmp_path):
    from kdel.report.html import build_html, load_audits, render_report

    facts = tmp_path / "facts.jsonl"
    facts.write_text("".join(json.dumps({"subject": f"S{i}", "prompt": f"S{i} lives in", "target": "Paris"}) + "\n"
                             for i in range(7)), encoding="utf-8")
    cases = synthetic_cases(n_facts=8, methods=("rome",), layers=(0,), seed=4)
    d = write_audit(tmp_path / "audit", cases, facts=str(facts), kg_dir=None)
    (tmp_path / "kg").mkdir()  # a KG folder beside the audit must not be taken for the audited one
    res = render_report(d, tmp_path / "r.html", n_boot=N_BOOT)
    html = res.html_path.read_text(encoding="utf-8")
    assert "knowledge graph" not in html.lower() and "KG bundle not found" not in html
    assert "facts file <code>facts.jsonl</code>: 7 facts" in html
    assert "<title>Deletion audit: model on facts.jsonl</title>" in html
    assert res.audits[0].source == "facts"
    d2 = write_audit(tmp_path / "audit2", cases, facts=str(facts), title="Llama facts, erase @ layer 4",
                     primary={"metric": "global.mean_p_drop_excluding_target", "direction": "two-sided"})
    audits = load_audits(d2, n_boot=N_BOOT)
    html = build_html(audits, [])  # (no figures needed to check the words)
    assert "<h1>Llama facts, erase @ layer 4</h1>" in html
    p = audits[0].summary["primary"]
    assert p["declared"] and p["spec"]["metric"] == "global.mean_p_drop_excluding_target"
    assert "declared in the audit config" in html and "all other facts changes with subject popularity" in html
    assert build_html(audits, [], title="explicit").count("<h1>explicit</h1>") == 1


def test_an_invalid_primary_in_the_config_is_a_user_error(tmp_path):
    from kdel.errors import UserError
    from kdel.report.html import load_audits

    d = write_audit(tmp_path / "audit", synthetic_cases(n_facts=5, layers=(0,)), primary="kl.mean ~ size")
    with pytest.raises(UserError, match="audit_config.json: primary: predictor"):
        load_audits(d, n_boot=N_BOOT)
