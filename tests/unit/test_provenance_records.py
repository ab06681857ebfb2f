"""Reproducibility records (issue 13 point 6): kg_provenance.json, train_report.json, edit.json and forget.json
carry the code version (package version, git commit, dirty flag) and the environment; the commit is a 40-hex
string in a git checkout and null, without an error, outside one; the KG's bytes and content hash do not depend
on it. And `kdel delete --help` / `kdel forget --help` name every registered method and objective.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from kdel.cli.main import main

HEX40 = re.compile(r"[0-9a-f]{40}")
KG_FILES = ("kg.json", "corpus.txt", "graph.graphml")
ENV_KEYS = ("python", "torch", "transformers", "numpy", "networkx", "faker", "platform", "cpu", "torch_threads",
            "device")


def _in_checkout(package: str) -> bool:
    """Whether `package` (kdel or synth_kg) is imported from the git checkout this test runs in."""
    root = Path(__file__).resolve().parents[2]
    try:
        r = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root / package, capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and Path(r.stdout.strip()).resolve() == root


def _check_code_version(rec: dict, version_key: str, package: str) -> None:
    assert rec[version_key] and {"git_commit", "git_dirty", "code_hash"} <= set(rec)
    assert len(rec["code_hash"]) == 64
    if _in_checkout(package):
        assert HEX40.fullmatch(rec["git_commit"]) and isinstance(rec["git_dirty"], bool), rec
    else:  # an installed copy: unknown, never an error
        assert rec["git_commit"] is None and rec["git_dirty"] is None


def _check_kdel_record(rec: dict) -> None:
    _check_code_version(rec, "kdel_version", "kdel")
    missing = [k for k in ENV_KEYS if k not in rec]
    assert not missing, missing
    assert rec["torch"] and rec["numpy"] and rec["networkx"] and rec["faker"] and rec["device"] == "cpu"
    assert rec["torch_threads"] >= 1


# -- synth_kg: kg_provenance.json ---------------------------------------------------------------------------
def _small_kg(seed: int = 0):
    from synth_kg import KGConfig, generate

    return generate(KGConfig(entities=40, relations=8, seed=seed))


def test_bundle_records_synth_kgs_code_version_beside_kg_json(tmp_path):
    import kdel
    import synth_kg
    from synth_kg.bundle import read_provenance

    kg = _small_kg()
    kg.save(tmp_path / "kg")
    rec = json.loads((tmp_path / "kg" / "kg_provenance.json").read_text())
    assert rec == read_provenance(tmp_path / "kg")
    assert rec["format"] == "kdel-kg-provenance/1" and rec["kg_hash"] == kg.content_hash() and rec["seed"] == 0
    _check_code_version(rec, "synth_kg_version", "synth_kg")
    assert rec["python"] and rec["networkx"] and rec["faker"] and rec["platform"]
    assert synth_kg.__version__ == rec["synth_kg_version"] == kdel.__version__  # one distribution ships both
    kg_json = json.loads((tmp_path / "kg" / "kg.json").read_text())
    assert "git_commit" not in json.dumps(kg_json)  # the provenance never enters kg.json (nor the content hash)
    assert read_provenance(tmp_path) is None  # a directory without the record: None, no error


def test_kg_bytes_and_hash_do_not_depend_on_the_commit(tmp_path, monkeypatch):
    import synth_kg.provenance as prov

    kg = _small_kg(seed=3)
    kg.save(tmp_path / "a")
    monkeypatch.setattr(prov, "git_state", lambda: ("f" * 40, True))
    monkeypatch.setattr(prov, "code_hash", lambda: "0" * 64)
    again = _small_kg(seed=3)
    again.save(tmp_path / "b")
    for f in KG_FILES:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert again.content_hash() == kg.content_hash()
    a, b = (json.loads((tmp_path / d / "kg_provenance.json").read_text()) for d in "ab")
    assert b["git_commit"] == "f" * 40 and b["git_dirty"] is True and a["kg_hash"] == b["kg_hash"]


@pytest.mark.parametrize("module, package", [("synth_kg.provenance", "synth_kg"), ("kdel.provenance", "kdel")])
def test_no_checkout_gives_null_commit_without_error(module, package, tmp_path, monkeypatch):
    """Outside a git checkout (a copy of the package in a plain directory), inside another project's checkout,
    and without git at all, the commit and dirty flag are None and provenance does not fail."""
    import importlib

    prov = importlib.import_module(module)
    call = (lambda: prov.provenance()) if package == "synth_kg" else (lambda: prov.provenance("cpu"))
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    prov.git_state.cache_clear()
    try:
        plain = tmp_path / "site-packages" / package  # not a git checkout
        plain.mkdir(parents=True)
        monkeypatch.setattr(prov, "_PACKAGE", plain)
        assert prov.git_state() == (None, None)
        rec = call()
        assert rec["git_commit"] is None and rec["git_dirty"] is None

        other = tmp_path / "other"  # a checkout of another project that holds a copy at another path
        (other / "vendor" / package).mkdir(parents=True)
        if subprocess.run(["git", "init", "-q", str(other)], capture_output=True).returncode == 0:
            monkeypatch.setattr(prov, "_PACKAGE", other / "vendor" / package)
            prov.git_state.cache_clear()
            assert prov.git_state() == (None, None)

        monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))  # no git executable at all
        prov.git_state.cache_clear()
        rec = call()
        assert rec["git_commit"] is None and rec["git_dirty"] is None
    finally:
        prov.git_state.cache_clear()


def test_kdel_provenance_records_the_environment():
    from kdel.provenance import provenance

    _check_kdel_record(provenance("cpu"))


# -- kdel train / delete / forget ---------------------------------------------------------------------------
def test_train_report_records_provenance(trained_model_dir):
    from kdel.models.loading import MODEL_META

    report = json.loads((trained_model_dir / "train_report.json").read_text())
    _check_kdel_record(report["provenance"])
    assert report["provenance"]["torch_threads"] == report["threads"]
    meta = json.loads((trained_model_dir / MODEL_META).read_text())
    assert "provenance" not in meta  # the model's identity (copied into edited models) stays commit-free


def test_edit_json_records_provenance(trained_model_dir, tiny_kg_dir, tmp_path):
    from kdel.delete.stage import run_delete

    run = run_delete(trained_model_dir, tmp_path / "edited", fact_ids=[0], kg=tiny_kg_dir, method="ft", layer=1,
                     hparams={"steps": 2}, cache_dir=tmp_path / "cache")
    record = json.loads((tmp_path / "edited" / "edit.json").read_text())
    assert record == json.loads(json.dumps(run.record))
    _check_kdel_record(record["provenance"])


def test_forget_json_records_provenance(trained_model_dir, tiny_kg_dir, tiny_kg, tmp_path):
    from kdel.forget.stage import ForgetSettings, run_forget

    entity = min((e for e in tiny_kg.entities if e.out_degree), key=lambda e: (e.out_degree, e.id))
    settings = ForgetSettings(method="ft", unrelated=5, candidates=0, fluency="off")
    run_forget(trained_model_dir, tmp_path / "forgot", entity_id=entity.id, kg=tiny_kg_dir, settings=settings,
               hparams={"steps": 2}, cache_dir=tmp_path / "cache")
    record = json.loads((tmp_path / "forgot" / "forget.json").read_text())
    _check_kdel_record(record["provenance"])


# -- help that cannot go stale ------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["delete", "forget"])
def test_help_names_every_registered_method_and_objective(command, capsys):
    from kdel.delete import OBJECTIVES, list_methods

    try:
        code = main([command, "--help"])
    except SystemExit as e:  # click's help exits
        code = e.code
    text = capsys.readouterr().out
    assert code in (0, None), text
    words = set(re.findall(r"[A-Za-z0-9_-]+", text))
    missing = [name for name in (*list_methods(), *OBJECTIVES) if name not in words]
    assert not missing, f"{command} --help does not name {missing}:\n{text}"
    assert "{" not in text, text  # every placeholder filled
    assert {"alphaedit", "simnpo", "rmu", "tracing_reversal", "fact_forcing"} <= words
