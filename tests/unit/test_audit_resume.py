"""Honest resumes and one writer: a resume reuses a case file only when its fingerprint (model weights, facts,
corpus, probe settings, the planned case) equals the planned case's; everything else is recomputed with one
warning (the old file is kept in superseded/) or refused with --no-recompute. Tiny audits: 1-2 cases of the
toy ablation method at layer 0, no tracing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

import tests.unit.test_audit_support  # noqa: F401  (registers "toy-ablate")
from kdel.audit import AuditConfig, result_view, run_audit
from kdel.errors import UserError
from kdel.facts import FactTable, export_kg_facts
from kdel.outputs import DirLock


@contextlib.contextmanager
def no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def config(**kw) -> AuditConfig:
    base = dict(methods=("toy-ablate",), sites=("last",), layers=(0,), per_bin=1, n_bins=2, unrelated_size=20,
                tracing_effect=False)
    base.update(kw)
    return AuditConfig(**base)


def stamps(out: Path) -> dict[str, tuple]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "cases").glob("*.json")}


def tree_hash(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def table(tiny_kg):
    return FactTable.from_kg(tiny_kg)


@pytest.fixture(scope="module")
def scaled_model(trained_model_dir, tmp_path_factory) -> Path:
    """A copy of the trained model with one MLP matrix scaled by 1.01."""
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("scaled") / "model"
    shutil.copytree(trained_model_dir, out)
    (path,) = out.glob("*.safetensors")
    tensors = load_file(path)
    name = next(k for k in tensors if k.endswith("h.1.mlp.c_proj.weight"))
    tensors[name] = tensors[name] * 1.01
    save_file(tensors, path, metadata={"format": "pt"})
    return out


def test_changed_unrelated_size_recomputes_every_case_even_without_audit_config(trained_model_dir, table, tmp_path):
    out = tmp_path / "audit"
    first = run_audit(trained_model_dir, table, out, config(), progress=False)
    assert first["timing"]["cases_run"] == first["n_cases"] == 2
    old = {p.stem: json.loads(p.read_text()) for p in (out / "cases").glob("*.json")}
    plan_key = json.loads((out / "plan.json").read_text())["key"]
    (out / "audit_config.json").unlink()  # the fingerprints are in the case files

    before = tree_hash(out)
    with pytest.raises(UserError, match=r"2 case files in .* were computed under other settings "
                                        r"\(probe.unrelated_size 20 -> 30\); --no-recompute"):
        run_audit(trained_model_dir, table, out, config(unrelated_size=30), progress=False, recompute=False)
    assert tree_hash(out) == before  # refused before writing anything

    with pytest.warns(UserWarning, match=r"^2 case files were computed under other settings "
                                         r"\(probe.unrelated_size 20 -> 30\): recomputing them"):
        again = run_audit(trained_model_dir, table, out, config(unrelated_size=30), progress=False)
    assert again["timing"]["cases_run"] == 2
    new = {p.stem: json.loads(p.read_text()) for p in (out / "cases").glob("*.json")}
    assert new.keys() == old.keys()
    for cid in new:
        assert new[cid]["fingerprint"]["inputs"]["probe"]["unrelated_size"] == 30
        kept = json.loads((out / "superseded" / f"{cid}.{old[cid]['fingerprint']['hash'][:12]}.json").read_text())
        assert kept == old[cid]  # the old results are kept, not overwritten
    assert json.loads((out / "plan.json").read_text())["key"] != plan_key  # plan.json is keyed by the settings
    (old_summary,) = (out / "superseded").glob("summary.run-*.json")  # the old summary is kept too
    assert json.loads(old_summary.read_text())["case_ids"] == first["case_ids"]
    assert len(json.loads((out / "audit_config.json").read_text())["unrelated_pool"]) == 30

    # a resume under the same settings reuses them all, without a warning
    same = stamps(out)
    with no_warning():
        third = run_audit(trained_model_dir, table, out, config(unrelated_size=30), progress=False)
    assert third["timing"]["cases_run"] == 0 and stamps(out) == same


def test_one_scaled_weight_recomputes_every_case(trained_model_dir, scaled_model, table, tmp_path):
    out = tmp_path / "audit"
    run_audit(trained_model_dir, table, out, config(), progress=False)
    (out / "audit_config.json").unlink()
    with pytest.raises(UserError, match=r"computed under other settings \(model [0-9a-f]{8} -> [0-9a-f]{8}\)"):
        run_audit(scaled_model, table, out, config(), progress=False, recompute=False)
    with pytest.warns(UserWarning, match=r"2 case files were computed under other settings \(model "):
        s = run_audit(scaled_model, table, out, config(), progress=False)
    assert s["timing"]["cases_run"] == 2
    cfg = json.loads((out / "audit_config.json").read_text())
    assert cfg["model_dir"] == str(scaled_model.resolve())
    # a third run back on the original model: the scaled model's config is kept, not overwritten
    with pytest.warns(UserWarning, match="2 case files were computed under other settings"):
        run_audit(trained_model_dir, table, out, config(), progress=False)
    (kept,) = (out / "superseded").glob("audit_config.run-*.json")
    assert json.loads(kept.read_text())["model_dir"] == str(scaled_model.resolve())


def test_changed_corpus_recomputes_and_a_case_without_fingerprint_alone_is_recomputed(
        trained_model_dir, tiny_kg, tmp_path):
    facts = tmp_path / "facts.jsonl"
    export_kg_facts(tiny_kg, facts)
    lines = tiny_kg.corpus_lines()
    c1, c2 = tmp_path / "c1.txt", tmp_path / "c2.txt"
    c1.write_text("\n".join(lines[:50]) + "\n")
    c2.write_text("\n".join(lines[:60]) + "\n")
    out = tmp_path / "audit"
    run_audit(trained_model_dir, FactTable.from_jsonl(facts, corpus=c1), out, config(), progress=False, corpus=c1)
    with pytest.warns(UserWarning, match=r"2 case files were computed under other settings \(corpus "):
        run_audit(trained_model_dir, FactTable.from_jsonl(facts, corpus=c2), out, config(), progress=False,
                  corpus=c2)

    # exactly the affected case: one file loses its fingerprint (as an older kdel wrote it)
    paths = sorted((out / "cases").glob("*.json"))
    d = json.loads(paths[0].read_text())
    del d["fingerprint"]
    paths[0].write_text(json.dumps(d))
    untouched = (paths[1].stat().st_ino, paths[1].stat().st_mtime_ns)
    with pytest.warns(UserWarning, match=r"^1 case file was computed under other settings \(no fingerprint"):
        s = run_audit(trained_model_dir, FactTable.from_jsonl(facts, corpus=c2), out, config(), progress=False,
                      corpus=c2)
    assert s["timing"]["cases_run"] == 1
    assert (paths[1].stat().st_ino, paths[1].stat().st_mtime_ns) == untouched
    assert result_view(json.loads(paths[0].read_text())) == result_view(d)


def test_unplanned_cases_of_other_settings_are_set_aside(trained_model_dir, table, tmp_path):
    out = tmp_path / "audit"
    first = run_audit(trained_model_dir, table, out, config(), progress=False)
    a, b = first["case_ids"]
    fid = json.loads((out / "cases" / f"{a}.json").read_text())["spec"]["fact_ids"][0]
    with pytest.warns(UserWarning, match="2 case files were computed under other settings"):
        run_audit(trained_model_dir, table, out, config(unrelated_size=25, fact_ids=(fid,)), progress=False)
    assert sorted(p.stem for p in (out / "cases").glob("*.json")) == [a]  # b (not planned now) is set aside
    assert len(list((out / "superseded").glob(f"{b}.*.json"))) == 1
    # the same settings with a smaller plan keep the other planned-before cases
    run_audit(trained_model_dir, table, out, config(unrelated_size=25), progress=False)
    with no_warning():
        run_audit(trained_model_dir, table, out, config(unrelated_size=25, fact_ids=(fid,)), progress=False)
    assert len(list((out / "cases").glob("*.json"))) == 2


def test_one_writer_per_directory(trained_model_dir, table, tmp_path):
    out = tmp_path / "audit"
    lock = DirLock(out).acquire()
    try:
        with pytest.raises(UserError, match=f"in use by another kdel process \\(pid {os.getpid()}\\)"):
            run_audit(trained_model_dir, table, out, config(), progress=False)
    finally:
        lock.release()
    assert os.listdir(out) == [".kdel.lock"]  # the refused run wrote nothing
    run_audit(trained_model_dir, table, out, config(), progress=False)  # the released lock is taken over


def test_output_rule_and_cleanup(trained_model_dir, table, tmp_path, random_model_dir):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("my notes")
    with pytest.raises(UserError, match="not a kdel audit directory"):
        run_audit(trained_model_dir, table, notes, config(), progress=False)
    with pytest.raises(UserError, match="the input"):
        run_audit(trained_model_dir, table, trained_model_dir / "audit", config(), progress=False)
    assert (notes / "todo.txt").read_text() == "my notes" and not (trained_model_dir / "audit").exists()
    fresh = tmp_path / "fresh"
    with pytest.raises(UserError):  # a model of another KG fails after the lock: nothing is left behind
        run_audit(random_model_dir("gpt2"), table, fresh, config(), progress=False)
    assert not fresh.exists()
