"""The audit engine on the tiny trained model, with a tiny ablation method (tests/unit/test_audit_support.py)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import tests.unit.test_audit_support  # noqa: F401  (registers "toy-ablate")
from kdel.audit import AuditConfig, result_view, run_audit, validate_case
from kdel.audit.cases import build_cases, case_id_for, sample_targets, trace_targets
from kdel.audit.evaluate import (
    BaseScores,
    erasure_score,
    group_metrics,
    neighborhood_score,
    rewrite_score,
)
from kdel.audit.schema import CaseSchemaError
from kdel.errors import UserError
from kdel.facts import FactTable, export_kg_facts
from kdel.models.scoring import TargetScores, next_token_logprobs, score_encoded


def small_config(**kw) -> AuditConfig:
    base = dict(methods=("toy-ablate",), sites=("subject_last", "last"), layers=(1, 2), per_bin=1, n_bins=3,
                unrelated_size=40, seed=0, verify_revert="full")
    base.update(kw)
    return AuditConfig(**base)


@pytest.fixture(scope="module")
def loaded(trained_model_dir, tiny_kg):
    from kdel.models.loading import load_model

    model, tok = load_model(trained_model_dir)
    return model, tok, FactTable.from_kg(tiny_kg)


@pytest.fixture(scope="module")
def audit_run(trained_model_dir, tiny_kg, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "run"
    table = FactTable.from_kg(tiny_kg)
    summary = run_audit(trained_model_dir, table, out, small_config(), progress=False)
    return out, summary, table


def _cases(out) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "cases").glob("*.json"))}


def test_forward_scores_equal_score_encoded_and_next_token(loaded):
    model, tok, table = loaded
    base = BaseScores.compute(model, tok, table, table.unrelated_sample(20, 0))
    ref = score_encoded(model, base.rows.encoded, base.pad_id)
    np.testing.assert_allclose(base.scores.logprob, ref.logprob, atol=1e-5)
    assert (base.scores.recalled == ref.recalled).all()
    assert (base.scores.first_token_rank == ref.first_token_rank).all()
    assert (base.scores.first_token_recalled == ref.first_token_recalled).all()
    prompts = [table.facts[i].prompt for i in base.unrelated_pool]
    nt = next_token_logprobs(model, tok, prompts)
    got = torch.stack([base.dists[base.rows.canonical[i]] for i in base.unrelated_pool])
    torch.testing.assert_close(got, nt, atol=1e-5, rtol=0)
    assert base.canonical_recalled().mean() > 0.9  # the trained model knows its facts


def test_case_list_is_deterministic_and_stratified(loaded):
    model, tok, table = loaded
    base = BaseScores.compute(model, tok, table, [])
    cfg = small_config(per_bin=2, n_bins=3, tracing_effect=False)
    t1 = sample_targets(table, base.canonical_recalled(), cfg)
    t2 = sample_targets(table, base.canonical_recalled(), cfg)
    assert t1 == t2 and len(t1) == 6 and len(set(t1)) == 6
    bins = table.subject_bins(3)
    assert sorted(bins[i] for i in t1) == [0, 0, 1, 1, 2, 2]
    assert all(base.canonical_recalled()[i] for i in t1)
    other = sample_targets(table, base.canonical_recalled(), small_config(per_bin=2, n_bins=3, seed=1))
    assert other != t1
    traces = trace_targets(model, tok, table, t1, cfg, 4, need_peaks=False)
    specs = build_cases(table, t1, traces, cfg, 4)
    assert len(specs) == 6 * 2 * 2 and len({s.case_id for s in specs}) == len(specs)
    s = specs[0]
    assert s.case_id == case_id_for(s.fact_ids, s.method, s.objective, s.layer, s.site, s.hparams, s.seed)
    assert case_id_for(s.fact_ids, s.method, s.objective, s.layer, s.site, {"k": 1}, s.seed) != s.case_id
    with pytest.raises(UserError, match="out of range"):
        build_cases(table, t1, traces, small_config(layers=(9,)), 4)


def test_layers_auto_uses_traced_peak_per_site(loaded):
    model, tok, table = loaded
    cfg = small_config(layers="auto", tracing_effect=True, noise_samples=3)
    traces = trace_targets(model, tok, table, [0, 5], cfg, 4, need_peaks=True)
    specs = build_cases(table, [0, 5], traces, cfg, 4)
    assert len(specs) == 4
    for s in specs:
        assert s.layer == s.peak_layers[s.site] and s.layer_source == "auto"
        assert s.tracing_effect is not None and s.tracing_effect >= 0


def test_group_metrics_and_hase_scores_by_hand():
    def ts(recalled, p):
        p = np.asarray(p, dtype=float)
        n = len(p)
        return TargetScores(np.log(p), np.asarray(recalled), np.log(p), np.asarray(recalled), np.zeros(n, int),
                            np.ones(n, int))

    before = ts([True, True, False, True], [0.9, 0.8, 0.1, 0.6])
    after = ts([False, True, True, True], [0.2, 0.7, 0.5, 0.6])
    g = group_metrics(before, after)
    assert g["n"] == 4 and g["n_recalled_before"] == 3
    assert g["flip_rate"] == pytest.approx(1 / 3) and g["any_broke"] is True and g["n_gained"] == 1
    assert g["mean_p_drop"] == pytest.approx((0.7 + 0.1 + 0.0) / 3)
    assert g["acc_before"] == 0.75 and g["acc_after"] == 0.75 and g["acc_after_recalled"] == pytest.approx(2 / 3)
    assert erasure_score([0.8], [0.2])[0] == pytest.approx(0.75)
    assert erasure_score([0.8], [0.9])[0] == 0.0
    assert rewrite_score([0.2], [0.6])[0] == pytest.approx(0.5)
    assert neighborhood_score(np.array([0.9]), np.array([0.5]))[0] == pytest.approx(1 - 0.4 / 0.9)
    none = group_metrics(ts([False], [0.1]), ts([False], [0.1]))
    assert none["any_broke"] is None and none["flip_rate"] is None


def test_audit_writes_valid_cases_and_summary(audit_run):
    out, summary, table = audit_run
    cases = _cases(out)
    assert len(cases) == summary["n_cases"] == 3 * 2 * 2
    assert (out / "audit_config.json").exists() and (out / "summary.json").exists()
    for cid, c in cases.items():
        validate_case(c, cid)
        assert c["status"] == "ok" and c["revert_verified"]
        f = table.fact(c["fact"]["id"])
        assert c["groups"]["target"]["n"] == len(f.prompts)
        assert c["groups"]["same_subject"]["n"] == len(table.probe_groups(f.id)["same_subject"])
        assert c["delta_norm"] > 0
        assert c["global"]["n"] == len(table)
        assert c["trace"]["tracing_effect"] is not None
        assert c["edit"]["layers"] == [c["spec"]["layer"]]
        assert "seconds" not in c["edit"] and c["timing"]["total_s"] > 0
        assert c["fingerprint"]["inputs"]["probe"]["unrelated_size"] == 40 and len(c["fingerprint"]["hash"]) == 64
        assert c["provenance"]["kdel_version"] and c["provenance"]["torch"] and c["worker"]["attempt"] == 1
    assert summary["n_success"] + summary["n_failed"] == summary["n_ok"] == len(cases)
    assert summary["cells"] and summary["correlations"] and summary["regressions"]
    assert json.loads((out / "summary.json").read_text())["case_ids"] == summary["case_ids"]
    config = json.loads((out / "audit_config.json").read_text())
    assert summary["provenance"] == config["provenance"] and summary["provenance"]["python"]


def test_rerun_skips_finished_cases_and_recomputes_corrupted_ones(audit_run, trained_model_dir):
    out, summary, table = audit_run
    before = _cases(out)
    paths = sorted((out / "cases").glob("*.json"))
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}
    bad = paths[0]
    bad.write_text(bad.read_text()[:200])  # truncated by a crash
    with pytest.warns(UserWarning, match="1 case file is invalid"):
        again = run_audit(trained_model_dir, table, out, small_config(), progress=False)
    assert [p.name for p in (out / "superseded").iterdir()] == [f"{bad.stem}.invalid.json"]  # kept, not lost
    after = _cases(out)
    for p in paths[1:]:
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamps[p.name]
    assert result_view(after[bad.stem]) == result_view(before[bad.stem])
    assert again["timing"]["cases_run"] == 1
    strip = lambda s: {k: v for k, v in s.items() if k != "timing"}  # noqa: E731
    assert strip(again) == strip(summary)


def test_case_file_schema_rejects_damage(audit_run):
    out, _, _ = audit_run
    cid, case = next(iter(_cases(out).items()))
    validate_case(case, cid)
    for damage in (lambda d: d.pop("groups"), lambda d: d.update(format="kdel-case/0"),
                   lambda d: d["groups"]["target"].pop("flip_rate"), lambda d: d.update(success="yes")):
        d = json.loads(json.dumps(case))
        damage(d)
        with pytest.raises(CaseSchemaError):
            validate_case(d, cid)
    with pytest.raises(CaseSchemaError, match="file name"):
        validate_case(case, "0" * 16)


def test_facts_file_gives_the_same_cases_as_the_kg(audit_run, tiny_kg, trained_model_dir, tmp_path):
    out, _, _ = audit_run
    facts = tmp_path / "facts.jsonl"
    export_kg_facts(tiny_kg, facts)
    table = FactTable.from_jsonl(facts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_audit(trained_model_dir, table, tmp_path / "via-facts", small_config(), progress=False)
    kg_cases = {k: result_view(v) for k, v in _cases(out).items()}
    facts_cases = {k: result_view(v) for k, v in _cases(tmp_path / "via-facts").items()}
    assert facts_cases.keys() == kg_cases.keys()
    for k in kg_cases:
        # exact but for float summation order: the tracing effect's float32 batched passes group facts differently
        # (measured up to 1.4e-7 apart), so floats are compared to 1e-5, the tracer's tolerance against the loop
        assert _first_difference(facts_cases[k], kg_cases[k]) is None, k


def _first_difference(a, b, path: str = "", rel: float = 1e-5):
    """The path of the first difference between two JSON values, floats compared to `rel`; None when equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(a.keys() ^ b.keys())}"
        return next((d for k in a if (d := _first_difference(a[k], b[k], f"{path}.{k}", rel))), None)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: lengths {len(a)} != {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := _first_difference(x, y, f"{path}[{i}]", rel))),
                    None)
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        same = (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, rel=rel, abs=1e-9)
        return None if same else f"{path}: {a!r} != {b!r}"
    return None if a == b else f"{path}: {a!r} != {b!r}"


def test_executor_scores_the_target_once_and_uses_the_spec_hparams(loaded, monkeypatch):
    import kdel.audit.execute as execute
    import kdel.delete.base as delete_base
    from kdel.audit.execute import CaseExecutor

    model, tok, table = loaded
    cfg = small_config(sites=("last",), layers=(2,), tracing_effect=False)
    base = BaseScores.compute(model, tok, table, table.unrelated_sample(cfg.unrelated_size, cfg.seed))
    targets = sample_targets(table, base.canonical_recalled(), cfg)[:1]
    spec = build_cases(table, targets, trace_targets(model, tok, table, targets, cfg, 4, False), cfg, 4)[0]
    spec.hparams = {**spec.hparams, "k": 3}  # the spec's resolved hparams decide, not the config's defaults
    ex = CaseExecutor(model, tok, table, cfg, base, cache_dir=None)
    calls = []
    real = execute.forward_scores
    monkeypatch.setattr(execute, "forward_scores", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    monkeypatch.setattr(delete_base.EfficacyProbe, "score", lambda *a, **k: pytest.fail("apply_deletion scored"))
    rec = ex.run(spec)
    assert rec.status == "ok" and len(rec.edit.info["units"]) == 3
    assert calls == [rec.timing.n_rows_after]  # one batched pass after the edit, nothing else
    # the edit record's p(o) comes from the same scores as efficacy, and equals a direct scoring
    assert rec.edit.p_before == [rec.efficacy.target_p_before]
    assert rec.edit.p_after == [rec.efficacy.target_p_after]
    fact = table.fact(spec.fact_ids[0])
    direct = score_encoded(model, [base.rows.encoded[base.rows.canonical[fact.id]]], base.pad_id)
    assert rec.edit.p_before[0] == pytest.approx(float(direct.prob[0]), rel=1e-5)
    assert validate_case(rec.to_json(), spec.case_id).to_json() == rec.to_json()


def test_base_scores_travel_as_arrays(loaded):
    model, tok, table = loaded
    base = BaseScores.compute(model, tok, table, table.unrelated_sample(10, 3))
    arrays = base.to_arrays()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    again = BaseScores.from_arrays(tok, table, arrays)
    assert again.unrelated_pool == base.unrelated_pool and again.pad_id == base.pad_id
    for k in ("logprob", "recalled", "first_token_rank"):
        assert np.array_equal(getattr(again.scores, k), getattr(base.scores, k))
    for r, d in base.dists.items():
        assert torch.equal(again.dists[r], d)
    arrays["rows_digest"] = np.zeros_like(arrays["rows_digest"])
    with pytest.raises(RuntimeError, match="encodes the probe prompts differently"):
        BaseScores.from_arrays(tok, table, arrays)


def test_config_validation_messages():
    for kw, msg in ((dict(methods=("nope",)), "unknown method"), (dict(per_bin=0), "per-bin"),
                    (dict(layers="some"), "--layers"), (dict(sites=("mid",)), "site"),
                    (dict(objective="forget"), "objective"), (dict(hparams={"toy-ablate": {"zz": 1}}), "zz"),
                    (dict(hparams={"rome": {}}), "not in --methods"), (dict(unrelated_size=0), "--unrelated")):
        with pytest.raises(UserError, match=msg):
            small_config(**kw).validate()
