"""`kdel audit --backend ray` against the local backend, an actor killed mid-run (replaced, its case retried),
and what audit_config.json records for `kdel report`: absolute model/KG paths; a bad --layers fails early.

Where Ray is not installed the Ray tests skip, except with KDEL_REQUIRE_RAY=1 (CI sets it): then they fail."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tests.unit.test_audit_support  # noqa: F401  (registers "toy-ablate" and "toy-slow" in this process)
from kdel.audit import AuditConfig, result_view, run_audit
from kdel.cli.main import main
from kdel.facts import FactTable

REPO = Path(__file__).resolve().parents[2]


def require_ray():
    try:
        import ray
    except ImportError:
        if os.environ.get("KDEL_REQUIRE_RAY") == "1":
            pytest.fail("Ray is not installed, and KDEL_REQUIRE_RAY=1 requires the Ray tests to run: "
                        "pip install 'kdel[ray]'")
        pytest.skip("Ray is not installed (pip install 'kdel[ray]'; KDEL_REQUIRE_RAY=1 makes this a failure)")
    return ray


def _args(model, kg, out, *extra):
    return ["audit", "--model", str(model), "--kg", str(kg), "--out", str(out), "--unrelated", "40", "--quiet",
            "--no-tracing-effect", *extra]


def _cases(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "cases").glob("*.json")}


def _strip(summary: dict) -> dict:
    return {k: v for k, v in json.loads(json.dumps(summary)).items() if k != "timing"}


@pytest.mark.slow
def test_ray_backend_gives_the_local_results(trained_model_dir, tiny_kg_dir, tiny_kg, tmp_path, capsys):
    ray = require_ray()
    # ROME on two actors: each computes its own key statistics, the local run reuses them from memory,
    # so this also checks that the cache state stays out of the results.
    rc = main(_args(trained_model_dir, tiny_kg_dir, tmp_path / "ray", "--methods", "rome", "--layers", "2",
                    "--sites", "last", "--per-bin", "1", "--bins", "2", "--backend", "ray", "--workers", "2"))
    assert rc == 0, capsys.readouterr().err
    assert not ray.is_initialized()  # the local cluster it started is shut down
    config = AuditConfig(methods=("rome",), sites=("last",), layers=(2,), per_bin=1, n_bins=2, unrelated_size=40,
                         tracing_effect=False)
    local = run_audit(trained_model_dir, FactTable.from_kg(tiny_kg), tmp_path / "local", config, progress=False)
    by_ray, by_local = _cases(tmp_path / "ray"), _cases(tmp_path / "local")
    assert by_ray.keys() == by_local.keys() and len(by_ray) == 2
    for k in by_ray:
        assert result_view(by_ray[k]) == result_view(by_local[k])
    workers = [c["worker"] for c in by_ray.values()]
    assert {w["backend"] for w in workers} == {"ray"} and {w["index"] for w in workers} == {0, 1}
    assert os.getpid() not in {w["pid"] for w in workers}
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["timing"]["backend"] == "ray"
    assert _strip(summary) == _strip(local)


@pytest.mark.slow
def test_a_killed_actor_is_replaced_and_its_case_retried(trained_model_dir, tiny_kg_dir, tiny_kg, tmp_path):
    require_ray()
    hp = tmp_path / "hp.yaml"
    hp.write_text("sleep_s: 1.0\n")
    out = tmp_path / "ray"
    args = _args(trained_model_dir, tiny_kg_dir, out, "--methods", "toy-slow", "--hparams", str(hp), "--layers",
                 "0,1", "--sites", "last", "--per-bin", "2", "--bins", "2", "--backend", "ray", "--workers", "2")
    code = ("import sys, tests.unit.test_audit_support; from kdel.cli.main import main; "
            f"sys.exit(main({args!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900  # Ray starts slowly on a loaded 2-core machine (its workers run niced)
    first = None
    while time.time() < deadline and proc.poll() is None and first is None:
        found = sorted((out / "cases").glob("*.json")) if (out / "cases").is_dir() else []
        first = json.loads(found[0].read_text()) if found else None
        time.sleep(0.05)
    assert first is not None, f"no case finished: {proc.communicate()[1][-2000:]}"
    victim = first["worker"]["pid"]  # the pid the actor reported in its case
    assert victim != proc.pid and first["worker"]["backend"] == "ray"
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "died" in err and "retried on a new actor (attempt 2 of 3)" in err

    by_ray = _cases(out)
    planned = json.loads((out / "audit_config.json").read_text())["case_ids"]
    assert sorted(by_ray) == sorted(planned) and len(planned) == 8  # every case once, nothing lost
    assert not [p for p in (out / "cases").iterdir() if not p.name.endswith(".json")]  # no partial writes
    retried = [c for c in by_ray.values() if c["worker"]["attempt"] == 2]
    assert len(retried) == 1 and retried[0]["worker"]["index"] >= 2  # on a replacement actor
    assert victim not in {c["worker"]["pid"] for c in retried}

    config = AuditConfig(methods=("toy-slow",), sites=("last",), layers=(0, 1), per_bin=2, n_bins=2,
                         unrelated_size=40, tracing_effect=False, hparams={"toy-slow": {"sleep_s": 1.0}})
    local = run_audit(trained_model_dir, FactTable.from_kg(tiny_kg), tmp_path / "local", config, progress=False)
    by_local = _cases(tmp_path / "local")
    assert by_local.keys() == by_ray.keys()
    for k in by_ray:
        assert result_view(by_ray[k]) == result_view(by_local[k])
    assert _strip(json.loads((out / "summary.json").read_text())) == _strip(local)


def test_audit_config_records_absolute_paths_for_the_report(trained_model_dir, tiny_kg_dir, tmp_path, monkeypatch,
                                                            capsys):
    from kdel.report.data import load_audit

    monkeypatch.chdir(tiny_kg_dir.parent)
    out = tmp_path / "standalone" / "audit"  # no sibling kg/ or model/: only audit_config.json can say where
    rc = main(_args(os.path.relpath(trained_model_dir), tiny_kg_dir.name, out, "--methods", "toy-ablate",
                    "--layers", "2", "--per-bin", "1", "--bins", "1"))
    assert rc == 0, capsys.readouterr().err
    cfg = json.loads((out / "audit_config.json").read_text())
    assert cfg["kg_dir"] == str(tiny_kg_dir.resolve()) and cfg["model_dir"] == str(trained_model_dir.resolve())
    assert cfg["facts"] is None and cfg["corpus"] is None
    data = load_audit(out, n_boot=10)
    assert data.kg is not None and data.kg["path"] == cfg["kg_dir"] and data.kg["entities"] == 30
    assert data.model is not None and data.model["path"] == cfg["model_dir"]


def test_layer_out_of_range_fails_before_the_model_loads(trained_model_dir, tiny_kg_dir, tmp_path, monkeypatch,
                                                         capsys):
    import kdel.models.loading as loading

    def refuse(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(loading, "load_model_for_table", refuse)
    rc = main(_args(trained_model_dir, tiny_kg_dir, tmp_path / "a", "--methods", "toy-ablate", "--layers", "1,4"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "layer 4 is out of range" in err and "0..3" in err
    assert not (tmp_path / "a").exists()
