"""`kdel pipeline`: presets and overrides (fast), and the whole chain on the hidden `test` preset (slow)."""

from __future__ import annotations

import json

import pytest


def test_preset_overrides_parse_and_reject_unknown_fields():
    from kdel.errors import UserError
    from kdel.pipeline import get_preset

    p = get_preset("quick").with_overrides({"entities": "40", "methods": "rome,ft", "layers": "0,2",
                                            "tracing_effect": "false", "relations": "auto"})
    assert (p.entities, p.methods, p.layers, p.tracing_effect) == (40, ("rome", "ft"), (0, 2), False)
    with pytest.raises(UserError, match="unknown preset field"):
        get_preset("quick").with_overrides({"nope": "1"})
    with pytest.raises(UserError, match="not a valid value"):
        get_preset("quick").with_overrides({"entities": "many"})
    with pytest.raises(UserError, match="unknown pipeline preset"):
        get_preset("huge")
    paper = get_preset("paper")
    assert (paper.entities, paper.relations, paper.graphs) == (200, 50, ("ba", "er"))


def test_spread_by_popularity_keeps_both_extremes():
    from types import SimpleNamespace

    from kdel.trace.stage import spread_by_popularity

    facts = [SimpleNamespace(id=i, subject_popularity=float((i * 7) % 23)) for i in range(40)]
    got = spread_by_popularity(facts, 5)
    pops = [f.subject_popularity for f in got]
    assert len(got) == 5 and max(pops) == 22.0 and min(pops) == 0.0


def test_cli_pipeline_bad_input(tmp_path, capsys):
    from kdel.cli.main import main

    assert main(["pipeline", "--out", str(tmp_path / "r"), "--preset", "nope"]) == 2
    assert "unknown pipeline preset" in capsys.readouterr().err
    assert main(["pipeline", "--out", str(tmp_path / "r"), "--set", "entities"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    (tmp_path / "f").write_text("x")
    assert main(["pipeline", "--out", str(tmp_path / "f"), "--quiet"]) == 2
    assert "not a directory" in capsys.readouterr().err


@pytest.mark.slow
def test_pipeline_end_to_end_and_resume(tmp_path, capsys):
    """The whole chain on the `test` preset (BA + ER, 30 entities); a rerun skips every stage and case."""
    from kdel.cli.main import main

    run = tmp_path / "run"
    assert main(["pipeline", "--out", str(run), "--preset", "test", "--quiet"]) == 0
    for p in ("report.html", "summary.json", "plots", "cases", "pipeline.json"):
        assert (run / p).exists(), p
    summary = json.loads((run / "summary.json").read_text())
    assert summary["format"] == "kdel-run-summary/1" and set(summary["graphs"]) == {"ba", "er"}
    for g in ("ba", "er"):
        s = summary["graphs"][g]["summary"]
        assert s["n_cases"] >= 3 and s["n_ok"] + s["n_error"] == s["n_cases"]
        cases = sorted((run / "cases" / g).glob("*.json"))
        assert len(cases) == s["n_cases"]
        assert summary["graphs"][g]["kg"]["topology"] == g
    plots = {p.name for p in (run / "plots").glob("*.png")}
    assert {"side_effect_vs_degree.png", "group_damage_by_bin.png", "delta_norm_vs_degree.png",
            "hase_success_vs_tracing_and_layer.png", "trace_layer_profiles.png"} <= plots
    assert any(p.startswith("trace_ba_fact") for p in plots) and any(p.startswith("trace_er_fact") for p in plots)
    html = (run / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == len(plots)

    # resume: every stage is skipped and no case file is rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in run.glob("*/audit/cases/*.json")}
    model_mtime = (run / "ba" / "model" / "model.safetensors").stat().st_mtime_ns
    assert main(["pipeline", "--out", str(run), "--preset", "test", "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in run.glob("*/audit/cases/*.json")} == mtimes
    assert (run / "ba" / "model" / "model.safetensors").stat().st_mtime_ns == model_mtime
    state = json.loads((run / "pipeline.json").read_text())
    assert [s["status"] for s in state["stages"] if s["stage"] != "report"] == ["skipped"] * 8

    # another preset into the same folder is refused
    assert main(["pipeline", "--out", str(run), "--preset", "test", "--set", "entities=40", "--quiet"]) == 2
    assert "other settings" in capsys.readouterr().err

    from tests.integration.test_report_browser import chromium_path, check_report_in_browser

    if chromium_path() is not None:
        check_report_in_browser(run / "report.html", tmp_path)


def test_pipeline_holds_its_lock_for_the_whole_run_and_checks_settings_first(tmp_path, monkeypatch, capsys):
    """While a stage runs, RUN is locked (a second writer is refused, naming this pid); a failing stage leaves
    RUN recognisable as a pipeline run, so the rerun is accepted."""
    import os

    import kdel.pipeline.run as run_mod
    from kdel.cli.main import main
    from kdel.errors import UserError
    from kdel.outputs import DirLock, is_kind

    run = tmp_path / "run"
    seen = {}

    def fake_stage_kg(preset, topology, out, opts):
        try:
            DirLock(run).acquire()
        except UserError as e:
            seen["refused"] = str(e)
        raise UserError("stop here")

    monkeypatch.setattr(run_mod, "stage_kg", fake_stage_kg)
    assert main(["pipeline", "--out", str(run), "--preset", "test", "--quiet"]) == 2
    assert f"pid {os.getpid()}" in seen["refused"]
    assert "stop here" in capsys.readouterr().err
    assert is_kind(run, "pipeline")  # pipeline.json was written before stage 1
    with DirLock(run):  # released at the end of the run
        pass
    # a bad --set fails before stage 1 runs
    seen.clear()
    assert main(["pipeline", "--out", str(tmp_path / "r2"), "--preset", "test", "--set", "methods=foo"]) == 2
    assert "unknown method 'foo'" in capsys.readouterr().err and not seen and not (tmp_path / "r2").exists()
