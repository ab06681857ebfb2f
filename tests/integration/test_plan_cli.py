"""`kdel plan`: candidates scored before editing; `--apply` writes the edit whose audit it prints."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from kdel.cli.main import main


def _run(capsys, args):
    code = main([*map(str, args)])
    return code, capsys.readouterr()


@pytest.mark.slow
def test_plan_apply_writes_the_edit_whose_audit_it_prints(trained_model_dir, tiny_kg_dir, tiny_kg, tmp_path, capsys):
    """Every candidate is tried (--trials 4); the choice is the least measured p drop among the trials that erased;
    the printed measured numbers equal that trial's and are re-measured on the written model, independently of
    the audit code."""
    from kdel.facts import FactTable
    from kdel.models.loading import load_model, load_model_for_table
    from kdel.models.scoring import score_targets
    from tests.unit.test_risk_model import planted_model

    model = planted_model(tmp_path / "risk_model.json")
    out = tmp_path / "edited"
    fid = 5
    code, cap = _run(capsys, ["plan", "--model", trained_model_dir, "--kg", tiny_kg_dir, "--fact", fid,
                              "--methods", "rome", "--sites", "last,subject_last", "--layers", "1,2",
                              "--risk-model", model, "--min-success", 0.0, "--apply", "--out", out, "--trials", 4,
                              "--cache-dir", tmp_path / "cache", "--json", tmp_path / "plan.json"])
    assert code == 0, cap.err
    plan = json.loads((out / "plan.json").read_text())
    assert plan["format"] == "kdel-plan/1" and len(plan["candidates"]) == 4
    assert plan == json.loads((tmp_path / "plan.json").read_text())
    ch = plan["chosen"]
    assert f"chosen: {ch['key']} by " in cap.out
    trials = {t["key"]: t for t in plan["trials"]}
    assert set(trials) == {c["key"] for c in plan["candidates"]}
    eligible = [t for t in trials.values() if t["eligible"]]
    assert eligible, "no candidate erased fact 5: the test needs one that does"
    assert ch["key"] == min(eligible, key=lambda t: (t["mean_p_drop"], t["flips"]))["key"]
    assert plan["chosen_by"].startswith("trial") and plan["predicted_choice"] == plan["candidates"][0]["key"]
    m = re.search(r"measured:\s+erased (\d+)/1, flips (\d+), mean p drop (-?[\d.]+), global accuracy drop (-?[\d.]+)",
                  cap.out)
    assert m, cap.out
    erased, flips, p_drop, acc_drop = int(m[1]), int(m[2]), float(m[3]), float(m[4])

    table = FactTable.from_kg(tiny_kg)
    prompts, targets = [f.prompt for f in table.facts], [f.target for f in table.facts]
    orig, tok = load_model_for_table(trained_model_dir, table, "cpu")
    edited, _ = load_model(out)
    before = score_targets(orig, tok, prompts, targets)
    after = score_targets(edited, tok, prompts, targets)
    others = np.array([i != fid for i in range(len(prompts))]) & before.recalled
    assert erased == int(not after.recalled[fid])
    assert flips == int((others & ~after.recalled).sum())
    assert p_drop == pytest.approx(float((before.prob - after.prob)[others].mean()), abs=6e-4)
    assert acc_drop == pytest.approx(float(before.recalled.mean() - after.recalled.mean()), abs=6e-4)
    t = trials[ch["key"]]  # the trial measured the same edit as the applied one
    assert (flips, erased) == (t["flips"], int(t["success"]))
    assert p_drop == pytest.approx(t["mean_p_drop"], abs=6e-5)
    edit = json.loads((out / "edit.json").read_text())
    assert edit["format"] == "kdel-edit/1" and edit["layer"] == ch["layer"] and edit["site"] == ch["site"]
    case = json.loads((out / "case.json").read_text())
    assert len(edit["provenance"]["git_commit"] or "") in (0, 40) and edit["provenance"] == case["provenance"]
    assert case["global"]["n_flipped_excluding_target"] == flips and case["revert_verified"] is True


def test_plan_bad_inputs_exit_2_with_one_line(trained_model_dir, tiny_kg_dir, tmp_path, capsys):
    base = ["plan", "--model", trained_model_dir, "--kg", tiny_kg_dir]
    for args, needle in ((["--fact", 1], "needs a fitted --risk-model"),
                         (["--fact", 1, "--risk-model", tmp_path / "none.json"], "does not exist"),
                         (["--fact", 1, "--subject", "x", "--risk-model", tmp_path / "m.json"], "not both"),
                         (["--fact", 1, "--apply", "--risk-model", tmp_path / "m.json"], "--apply needs --out"),
                         (["--fact", 1, "--trials", -1, "--risk-model", tmp_path / "m.json"], "--trials must be >= 0")):
        if "m.json" in str(args[-1]) and not (tmp_path / "m.json").exists():
            from tests.unit.test_risk_model import planted_model

            planted_model(tmp_path / "m.json")
        code, cap = _run(capsys, [*base, *args])
        assert code == 2, (args, cap.err)
        errors = [ln for ln in cap.err.splitlines() if ln.startswith("kdel: error:")]
        assert len(errors) == 1 and needle in errors[0], (args, cap.err)
    code, cap = _run(capsys, [*base, "--fact", 4242, "--risk-model", tmp_path / "m.json"])
    assert code == 2 and "fact 4242 does not exist" in cap.err


def test_plan_hparams_reach_the_candidates_and_bad_forms_exit_2(trained_model_dir, tiny_kg_dir, tmp_path, capsys):
    from tests.unit.test_risk_model import planted_model

    model = planted_model(tmp_path / "m.json")
    (tmp_path / "rome.yaml").write_text("n_prefixes: 1\nclamp_factor: 2.5\n")
    base = ["plan", "--model", trained_model_dir, "--kg", tiny_kg_dir, "--fact", 3, "--methods", "rome",
            "--sites", "last", "--layers", "1", "--risk-model", model, "--cache-dir", tmp_path / "cache"]
    runs = {}
    for name, extra in (("default", []), ("file", ["--hparams", f"rome={tmp_path / 'rome.yaml'}"])):
        code, cap = _run(capsys, [*base, *extra, "--json", tmp_path / f"{name}.json"])
        assert code == 0, cap.err
        runs[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert runs["file"]["hparams"]["rome"]["n_prefixes"] == 1
    assert runs["file"]["hparams"]["rome"]["clamp_factor"] == 2.5
    assert runs["default"]["hparams"]["rome"]["n_prefixes"] == 5
    # fewer prefixes make another key, so the first-order transfer onto the probes changes
    cand = {n: r["candidates"][0] for n, r in runs.items()}
    assert (cand["file"]["expected_flips"], cand["file"]["mean_p_drop"]) != \
        (cand["default"]["expected_flips"], cand["default"]["mean_p_drop"])
    (tmp_path / "bad.yaml").write_text("no_such_knob: 1\n")
    for value, needle in (("rome", "METHOD=FILE"), (f"memit={tmp_path / 'rome.yaml'}", "not a candidate method"),
                          (f"rome={tmp_path / 'bad.yaml'}", "unknown hyperparameter")):
        code, cap = _run(capsys, [*base, "--hparams", value])
        errors = [ln for ln in cap.err.splitlines() if ln.startswith("kdel: error:")]
        assert code == 2 and len(errors) == 1 and needle in errors[0], (value, cap.err)


def test_plan_objective_orders_the_candidates_by_its_collateral(trained_model_dir, tiny_kg_dir, tmp_path, capsys):
    """`--objective flips` and `p_drop` score the same candidates and sort those predicted to erase by their
    own predicted collateral; the plan records which; an unknown objective exits 2 with one line."""
    from tests.unit.test_risk_model import planted_model

    model = planted_model(tmp_path / "m.json")
    base = ["plan", "--model", trained_model_dir, "--kg", tiny_kg_dir, "--fact", 3, "--methods", "rome",
            "--sites", "last,subject_last", "--layers", "0,1,2", "--risk-model", model, "--min-success", 0.0,
            "--cache-dir", tmp_path / "cache", "--trials", 0]
    plans = {}
    for obj in ("flips", "p_drop"):
        code, cap = _run(capsys, [*base, "--objective", obj, "--json", tmp_path / f"{obj}.json"])
        assert code == 0, cap.err
        plans[obj] = json.loads((tmp_path / f"{obj}.json").read_text())
        assert plans[obj]["objective"] == obj and f"chosen: {plans[obj]['chosen']['key']} by prediction" in cap.out
        assert plans[obj]["trials"] == [] and plans[obj]["chosen"] == plans[obj]["candidates"][0]
    by_key = {c["key"]: c for c in plans["flips"]["candidates"]}
    assert {c["key"]: c for c in plans["p_drop"]["candidates"]} == by_key  # the same scores, reordered
    flips = [(c["expected_flips"], c["mean_p_drop"]) for c in plans["flips"]["candidates"]]
    drops = [(c["mean_p_drop"], c["expected_flips"]) for c in plans["p_drop"]["candidates"]]
    assert flips == sorted(flips) and drops == sorted(drops) and len(flips) == 6
    assert plans["p_drop"]["chosen"]["mean_p_drop"] == min(c["mean_p_drop"] for c in by_key.values())
    # rank-one candidates carry first-order predictions; that objective sorts by them
    code, cap = _run(capsys, [*base, "--objective", "first_order_p_drop", "--json", tmp_path / "fo.json"])
    assert code == 0, cap.err
    fo = [(c["first_order_mean_p_drop"], c["first_order_flips"])
          for c in json.loads((tmp_path / "fo.json").read_text())["candidates"]]
    assert fo == sorted(fo) and all(v[0] is not None and v[1] is not None for v in fo) and len(set(fo)) > 1
    code, cap = _run(capsys, [*base, "--objective", "fewest"])
    errors = [ln for ln in cap.err.splitlines() if ln.startswith("kdel: error:")]
    assert code == 2 and len(errors) == 1 and "unknown --objective 'fewest'" in errors[0], cap.err


@pytest.mark.slow
def test_plan_with_trials_on_a_model_kdel_did_not_train(tmp_path, monkeypatch, capsys):
    """A Llama-family model from a directory with a facts file and a corpus: the trials run as audit cases on it
    (each revert is checked by the audit executor, tests/unit/test_plan_trials.py), the choice follows the rule,
    and the model directory is left untouched."""
    from pathlib import Path

    from tests import fixtures_real as fr
    from tests.unit.test_risk_model import planted_model

    cache = Path(__file__).resolve().parents[2] / ".pytest_cache" / "kdel-real-models"
    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("KDEL_CACHE_DIR", str(tmp_path / "cache"))
    model = fr.cached_real_model("llama", cache).path
    before = {p.name: p.read_bytes() for p in Path(model).iterdir() if p.is_file()}
    facts = fr.write_facts(tmp_path / "facts.jsonl", fr.fact_rows())
    corpus = fr.write_corpus(tmp_path / "corpus.txt")
    code, cap = _run(capsys, ["plan", "--model", model, "--facts", facts, "--corpus", corpus, "--subject", "Maria Lopez",
                              "--methods", "rome", "--sites", "last,subject_last", "--layers", "1,2",
                              "--risk-model", planted_model(tmp_path / "m.json"), "--min-success", 0.0,
                              "--trials", 2, "--json", tmp_path / "plan.json"])
    assert code == 0, cap.err
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert len(plan["fact_ids"]) == 2 and len(plan["trials"]) == 2
    assert [t["key"] for t in plan["trials"]] == [c["key"] for c in plan["candidates"][:2]]
    assert all(t["status"] == "ok" for t in plan["trials"]), plan["trials"]
    eligible = [t for t in plan["trials"] if t["eligible"]]
    if eligible:
        assert plan["chosen"]["key"] == min(eligible, key=lambda t: (t["mean_p_drop"], t["flips"]))["key"]
    else:
        assert plan["chosen"]["key"] == plan["candidates"][0]["key"] and plan["chosen_by"].startswith("prediction")
    assert {p.name: p.read_bytes() for p in Path(model).iterdir() if p.is_file()} == before
