"""retrace_audit: a finished audit's traces recomputed by the installed code and compared with its plan."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

import tests.unit.test_audit_support  # noqa: F401  (registers "toy-ablate")
from kdel.audit import AuditConfig, run_audit
from kdel.audit.retrace import retrace_audit
from kdel.errors import UserError
from kdel.facts import load_fact_table


def _digest(d) -> dict:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def audit_dir(trained_model_dir, tiny_kg_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("retrace") / "audit"
    config = AuditConfig(methods=("toy-ablate",), sites=("subject_last", "last"), layers="auto", per_bin=1,
                         n_bins=3, unrelated_size=40, seed=0, tracing_effect=True, noise_samples=3)
    run_audit(trained_model_dir, load_fact_table(kg=tiny_kg_dir), out, config, kg_dir=tiny_kg_dir, progress=False)
    return out


def test_a_fresh_audit_is_reproduced_and_left_untouched(audit_dir):
    before = _digest(audit_dir)
    r = retrace_audit(audit_dir)
    assert _digest(audit_dir) == before  # nothing written
    plan = json.loads((audit_dir / "plan.json").read_text())
    assert r.cases == len(plan["cases"]) > 0 and r.targets == len(plan["targets"]) > 0
    assert r.reproduced and r.same_cases == r.cases and r.same_choices == r.targets and not r.differences
    assert r.max_tracing_effect_diff is not None and r.max_tracing_effect_diff < 1e-9  # same code, same bits
    assert r.max_choice_effect_diff is not None and r.max_choice_effect_diff <= 1e-6  # recorded rounded to 1e-6


def test_changed_effects_and_choices_are_reported(audit_dir, tmp_path):
    copy = tmp_path / "audit"
    shutil.copytree(audit_dir, copy)
    plan = json.loads((copy / "plan.json").read_text())
    first = plan["cases"][0]
    first["tracing_effect"] += 0.25  # as if an older tracer had measured another effect
    plan["cases"][-1]["tracing_effect"] = None  # as if it had measured none
    fact = first["fact_ids"][0]
    for c in plan["cases"]:
        if c["fact_ids"][0] == fact:
            c["peak_layers"] = {k: (None if v is None else v + 7) for k, v in c["peak_layers"].items()}
    (copy / "plan.json").write_text(json.dumps(plan))
    r = retrace_audit(copy)
    assert not r.reproduced and r.same_cases == r.cases - 1
    assert abs(r.max_tracing_effect_diff - 0.25) < 1e-6
    assert any("tracing effect None ->" in line for line in r.differences)
    assert sum("peak layers" in line for line in r.differences) == 1  # one line per fact, not per site
    assert r.same_choices == r.targets - 1
    assert any(f"fact {fact}: peak layers" in line for line in r.differences)


def test_a_changed_model_or_missing_plan_is_said(audit_dir, tmp_path):
    copy = tmp_path / "audit"
    shutil.copytree(audit_dir, copy)
    cfg = json.loads((copy / "audit_config.json").read_text())
    cfg["identity"]["model_hash"] = "0" * 64
    (copy / "audit_config.json").write_text(json.dumps(cfg))
    r = retrace_audit(copy)
    assert not r.model_identical and not r.reproduced and "hash changed" in r.differences[0]
    (copy / "plan.json").unlink()
    with pytest.raises(UserError, match="not a finished audit"):
        retrace_audit(copy)


def test_the_experiment_script_tables_every_audit(audit_dir, tmp_path, monkeypatch):
    from tests.experiment_modules import load

    script = load("experiments/retrace/run.py", "retrace_run")
    run = tmp_path / "experiment"
    (run / "audits").mkdir(parents=True)
    shutil.copytree(audit_dir, run / "audits" / "a")  # the layout of a sweep's output directory
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    monkeypatch.setattr("sys.argv", ["run.py", "--runs", str(run), "--out", str(out), "--results-md", str(md)])
    script.main()
    rows = json.loads(out.read_text())["audits"]
    assert len(rows) == 1 and rows[0]["reproduced"] and rows[0]["experiment"] == "experiment"
    text = md.read_text()
    assert "| experiment | 1 |" in text and "None: every case and every choice is reproduced." in text
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr("sys.argv", ["run.py", "--runs", str(empty), "--out", str(tmp_path / "e.json")])
    with pytest.raises(SystemExit, match="holds no finished audit"):
        script.main()
    assert not (tmp_path / "e.json").exists()
