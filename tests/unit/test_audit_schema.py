"""The typed case schema, case-file reads, fingerprint descriptions, provenance and the Ray dispatcher's
arithmetic: no model needed."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

import pytest

from kdel.audit.schema import CaseRecord, CaseSchemaError, ProvenanceRecord, result_view, validate_case
from kdel.audit.schema.typed import from_json, opt, to_json
from kdel.errors import UserError


@dataclass
class Inner:
    x: float
    tags: list[str]


@dataclass
class Outer:
    name: str
    inner: dict[str, Inner]
    count: int | None
    flag: bool = False
    note: str | None = opt()


def test_typed_conversion_checks_types_and_required_keys_and_round_trips():
    d = {"name": "a", "inner": {"k": {"x": 1, "tags": ["t"]}}, "count": None, "flag": True, "extra": [1, 2]}
    obj = from_json(Outer, d)
    assert obj.inner["k"].x == 1 and isinstance(obj.inner["k"].x, int)  # an int in a float field stays an int
    assert obj.note is None and to_json(obj) == d  # undeclared keys kept, omitted None left out
    for bad, message in (
        ({**d, "count": True}, "count must be an integer"),  # bool is not an int
        ({**d, "inner": {"k": {"x": "1", "tags": []}}}, "inner.k.x must be a number"),
        ({**d, "inner": {"k": {"x": 1}}}, "missing key 'inner.k.tags'"),
        ({k: v for k, v in d.items() if k != "name"}, "missing key 'name'"),
        ({**d, "inner": {"k": {"x": 1, "tags": [3]}}}, r"inner.k.tags\[0\] must be a string"),
        ({**d, "note": 5}, "note must be a string"),
    ):
        with pytest.raises(CaseSchemaError, match=message):
            from_json(Outer, bad)
    assert to_json(from_json(Outer, {**d, "note": "n"}))["note"] == "n"


def _case() -> dict:
    from tests.synthetic_cases import synthetic_cases

    return synthetic_cases(n_facts=2, methods=("rome",), layers=(0,))[0]


def test_case_record_validation():
    d = _case()
    rec = validate_case(d, d["case_id"])
    assert isinstance(rec, CaseRecord) and rec.global_.n == d["global"]["n"]
    assert rec.to_json()["global"] == d["global"] and rec.groups["target"].n == d["groups"]["target"]["n"]
    for damage, message in (
        (lambda c: c.update(format="kdel-case/0"), "format"),
        (lambda c: c.update(status="maybe"), "status"),
        (lambda c: c.pop("groups"), "missing key 'groups'"),
        (lambda c: c["groups"]["same_subject"].pop("mean_p_drop"), "groups.same_subject.mean_p_drop"),
        (lambda c: c["efficacy"].update(success=1), "efficacy.success must be a boolean"),
        (lambda c: c["fact"].update(subject_bin="0"), "fact.subject_bin"),
        (lambda c: c.update(status="error"), "an error case needs an 'error' message"),
        (lambda c: c.update(fingerprint={"hash": 3, "inputs": {}}), "fingerprint.hash"),
    ):
        bad = copy.deepcopy(d)
        damage(bad)
        with pytest.raises(CaseSchemaError, match=message):
            validate_case(bad)
    with pytest.raises(CaseSchemaError, match="file name"):
        validate_case(d, "0" * 16)
    with pytest.raises(CaseSchemaError, match="JSON object"):
        validate_case([d])
    err = {k: v for k, v in d.items() if k in ("format", "case_id", "spec", "fact", "trace", "timing", "worker")}
    validate_case({**err, "status": "error", "error": "RuntimeError: boom"})  # error cases carry no results


def test_result_view_ignores_run_dependent_keys_and_the_input_fingerprint():
    d = _case()
    other = {**copy.deepcopy(d), "timing": {"total_s": 9.0}, "worker": {"index": 3, "pid": 1, "host": "h",
                                                                         "backend": "ray", "attempt": 2},
             "provenance": {"kdel_version": "x"}, "fingerprint": {"hash": "f" * 64, "inputs": {}}}
    assert result_view(other) == result_view(d)
    other["groups"]["target"]["n"] += 1
    assert result_view(other) != result_view(d)


def test_read_case_reports_damage(tmp_path):
    from kdel.audit.store import read_case

    assert read_case(tmp_path / "none.json") is None
    for text, message in (("", "empty"), ("{", "not valid JSON"), ("[]", "JSON object")):
        (tmp_path / "a.json").write_text(text)
        with pytest.raises(CaseSchemaError, match=message):
            read_case(tmp_path / "a.json")
    d = _case()
    (tmp_path / f"{d['case_id']}.json").write_text(json.dumps(d))
    assert read_case(tmp_path / f"{d['case_id']}.json") == d


def test_describe_changes_names_what_differs():
    from kdel.audit.store import describe_changes

    old = {"model": "a" * 64, "facts": "kg:" + "b" * 64, "probe": {"unrelated_size": 0, "n_bins": 5}, "x": 1}
    new = {"model": "c" * 64, "facts": "kg:" + "b" * 64, "probe": {"unrelated_size": 100, "n_bins": 5}, "x": 1}
    assert describe_changes(old, new) == ["model aaaaaaaa -> cccccccc", "probe.unrelated_size 0 -> 100"]
    assert describe_changes(old, old) == []


def test_provenance_records_versions_and_never_fails(monkeypatch):
    import kdel.provenance as prov

    rec = prov.provenance("cpu")
    ProvenanceRecord.from_json(rec)
    assert rec["torch"] and rec["numpy"] and rec["python"] and rec["device"] == "cpu" and rec["gpu"] is None
    assert rec["torch_threads"] >= 1 and len(rec["code_hash"]) == 64
    if rec["git_commit"] is not None:  # run from this checkout
        assert len(rec["git_commit"]) == 40 and isinstance(rec["git_dirty"], bool)
    import synth_kg.provenance as kg_prov

    monkeypatch.setattr(kg_prov, "_git", lambda *a, **k: None)  # no git, or not a checkout (the shared lookup)
    prov.git_state.cache_clear()
    try:
        rec = prov.provenance(None)
        assert rec["git_commit"] is None and rec["git_dirty"] is None and rec["device"] is None
    finally:
        prov.git_state.cache_clear()
    monkeypatch.setattr(prov.metadata, "version", lambda name: (_ for _ in ()).throw(ValueError(name)))
    assert prov.provenance("cpu")["scipy"] is None


def test_ray_actors_fit_with_fractional_gpus():
    from kdel.audit.ray_backend import actors_that_fit

    assert actors_that_fit({"CPU": 8, "GPU": 1}, 4, 1, 0.25) == 4
    assert actors_that_fit({"CPU": 8, "GPU": 1}, 4, 2, 0) == 4
    with pytest.warns(UserWarning, match="fits 3 audit actors, not 4"):
        assert actors_that_fit({"CPU": 8, "GPU": 1}, 4, 1, 0.3) == 3
    with pytest.raises(UserError, match=r"cannot host one audit actor \(1 CPU and 0.5 GPU\)"):
        actors_that_fit({"CPU": 8, "GPU": 0}, 2, 1, 0.5)


@pytest.mark.parametrize("args, message", [
    (("spark", 1, "cpu", None), "unknown backend"),
    (("local", 0, "cpu", None), "--workers must be >= 1"),
    (("local", 1, "cuda", 0.5), "applies to --backend ray"),
    (("ray", 1, "cuda", -1.0), ">= 0"),
    (("ray", 1, "cuda", 1.5), "whole number"),
    (("ray", 1, "cpu", 0.5), "needs --device cuda"),
])
def test_backend_checks(args, message):
    from kdel.audit.plan import check_backend

    with pytest.raises(UserError, match=message):
        check_backend(*args)


def test_methods_built_from_a_spec_equal_the_resolved_hyperparameters():
    from kdel.audit.cases import AuditConfig, method_from_spec, resolve_hparams
    from kdel.delete import list_methods

    for name in list_methods():
        hp, as_json = resolve_hparams(name, None)
        assert method_from_spec(name, json.loads(json.dumps(as_json))).hparams == hp, name
    cfg = AuditConfig(methods=("rome",), hparams={"rome": {"clamp_factor": 3.0}})
    first = cfg.resolved_hparams()
    assert first["rome"]["clamp_factor"] == 3.0 and cfg.resolved_hparams() is first  # resolved once
    cfg.hparams = {"rome": {"clamp_factor": 2.0}}
    assert cfg.resolved_hparams()["rome"]["clamp_factor"] == 2.0
