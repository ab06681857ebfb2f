"""`kdel audit` end to end: bad arguments, one writer per --out, kill -9 and resume, two worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tests.unit.test_audit_support  # noqa: F401  (registers "toy-ablate" in this process)
from kdel.audit import AuditConfig, result_view, run_audit
from kdel.cli.main import main
from kdel.facts import FactTable

REPO = Path(__file__).resolve().parents[2]


def _strip_timing(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "timing"}


def _cli_args(model, kg, out, *extra):
    return ["audit", "--model", str(model), "--kg", str(kg), "--out", str(out), "--methods", "toy-ablate",
            "--unrelated", "40", "--quiet", *extra]


def _subprocess(args: list[str]) -> subprocess.Popen:
    code = ("import sys, tests.unit.test_audit_support; from kdel.cli.main import main; "
            f"sys.exit(main({args!r}))")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--methods", "nope"], "unknown method 'nope'"),
        (["--layers", "x,1"], "--layers"),
        (["--layers", "9"], "out of range"),
        (["--per-bin", "0"], "--per-bin"),
        (["--bins", "0"], "--bins"),
        (["--sites", "middle"], "site"),
        (["--stratify", "random"], "--stratify"),
        (["--objective", "forget"], "objective"),
        (["--workers", "0"], "--workers"),
        (["--backend", "spark"], "backend"),
        (["--unrelated", "-1"], "--unrelated"),
        (["--unrelated", "0"], "wrecked-model check"),
        (["--gpus-per-worker", "0.5"], "applies to --backend ray"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(trained_model_dir, tiny_kg_dir, tmp_path, capsys, extra, message):
    rc = main(_cli_args(trained_model_dir, tiny_kg_dir, tmp_path / "a", "--no-tracing-effect", *extra))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and message in err


def test_kg_and_facts_are_exclusive(trained_model_dir, tiny_kg_dir, tmp_path, capsys):
    for args in (["audit", "--model", str(trained_model_dir), "--out", str(tmp_path / "a")],
                 _cli_args(trained_model_dir, tiny_kg_dir, tmp_path / "a", "--facts", str(tmp_path / "f.jsonl"))):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert "exactly one of --kg" in err and len(err.splitlines()) == 1
    assert main(["audit", "--model", str(tmp_path / "none"), "--kg", str(tiny_kg_dir), "--out", str(tmp_path / "a")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_hparams_file_sections(trained_model_dir, tiny_kg_dir, tmp_path, capsys):
    bad = tmp_path / "hp.yaml"
    bad.write_text("rome:\n  steps: 3\n")
    assert main(_cli_args(trained_model_dir, tiny_kg_dir, tmp_path / "a", "--hparams", str(bad))) == 2
    assert "not one of the audited methods" in capsys.readouterr().err
    bad.write_text("k: oops\n")
    assert main(_cli_args(trained_model_dir, tiny_kg_dir, tmp_path / "a", "--hparams", str(bad))) == 2
    assert "'k'" in capsys.readouterr().err


def test_cli_audit_small_run(trained_model_dir, tiny_kg_dir, tmp_path, capsys):
    hp = tmp_path / "hp.yaml"
    hp.write_text("toy-ablate:\n  k: 40\n")
    out = tmp_path / "audit"
    rc = main(_cli_args(trained_model_dir, tiny_kg_dir, out, "--layers", "2", "--per-bin", "1", "--bins", "2",
                        "--sites", "last", "--hparams", str(hp), "--no-tracing-effect"))
    assert rc == 0, capsys.readouterr().err
    cases = [json.loads(p.read_text()) for p in (out / "cases").glob("*.json")]
    assert len(cases) == 2 and all(c["spec"]["hparams"]["k"] == 40 for c in cases)
    assert json.loads((out / "summary.json").read_text())["n_cases"] == 2
    assert "2 cases" in capsys.readouterr().out
    # a declared primary hypothesis and title reach the summary and the config (no case is recomputed)
    rc = main(_cli_args(trained_model_dir, tiny_kg_dir, out, "--layers", "2", "--per-bin", "1", "--bins", "2",
                        "--sites", "last", "--hparams", str(hp), "--no-tracing-effect", "--title", "My audit",
                        "--primary", "global.acc_drop ~ subject_degree, toy-ablate@last"))
    assert rc == 0, capsys.readouterr().err
    prim = json.loads((out / "summary.json").read_text())["primary"]
    assert prim["spec"]["metric"] == "global.acc_drop" and prim["spec"]["declared"] is True, prim["spec"]
    cfg = json.loads((out / "audit_config.json").read_text())["config"]
    assert cfg["title"] == "My audit" and "0 run now" in capsys.readouterr().out
    assert main(_cli_args(trained_model_dir, tiny_kg_dir, tmp_path / "a2", "--primary", "nonsense")) == 2
    assert "metric ~ predictor" in capsys.readouterr().err
    before = {p.name: p.read_bytes() for p in (out / "cases").glob("*.json")}
    rc = main(_cli_args(trained_model_dir, tiny_kg_dir, out, "--layers", "2", "--per-bin", "1", "--bins", "2",
                        "--sites", "last", "--hparams", str(hp), "--no-tracing-effect", "--unrelated", "30",
                        "--no-recompute"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "probe.unrelated_size 40 -> 30" in err, err
    assert {p.name: p.read_bytes() for p in (out / "cases").glob("*.json")} == before


@pytest.mark.slow
def test_one_writer_then_kill_and_resume_gives_the_same_summary(trained_model_dir, tiny_kg_dir, tiny_kg, tmp_path):
    sleep_s = 1.0  # per case: slow enough that a second process can start and be refused on a loaded machine
    hp = tmp_path / "hp.yaml"
    hp.write_text(f"sleep_s: {sleep_s}\n")
    out = tmp_path / "killed"
    args = ["audit", "--model", str(trained_model_dir), "--kg", str(tiny_kg_dir), "--out", str(out), "--methods",
            "toy-slow", "--hparams", str(hp), "--unrelated", "40", "--quiet", "--no-tracing-effect", "--layers",
            "1,3", "--sites", "subject_last,last", "--per-bin", "2", "--bins", "5"]
    proc = _subprocess(args)
    cases_dir = out / "cases"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if cases_dir.is_dir() and len(list(cases_dir.glob("*.json"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"finished before it could be killed: {proc.communicate()[1][-2000:]}"

    # a second writer on the same --out exits 2, naming the holder, while the first keeps running
    second = _subprocess(args)
    _, err2 = second.communicate(timeout=300)
    assert second.returncode == 2, err2[-2000:]
    assert err2.strip().splitlines() == [err2.strip()] and f"(pid {proc.pid})" in err2 and "in use" in err2
    assert proc.poll() is None, "the first run ended before the second was refused: make the cases slower"
    while len(list(cases_dir.glob("*.json"))) < 5 and proc.poll() is None:
        time.sleep(0.05)

    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cases_dir.glob("*.json")}
    n_total = len(json.loads((out / "audit_config.json").read_text())["case_ids"])
    assert 5 <= len(finished) < n_total
    time.sleep(0.05)

    proc = _subprocess(args)  # the kernel released the killed run's lock: this run takes over
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    for name, stamp in finished.items():
        p = cases_dir / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp, f"{name} was rewritten"
    assert len(list(cases_dir.glob("*.json"))) == n_total
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["timing"]["cases_run"] == n_total - len(finished)

    config = AuditConfig(methods=("toy-slow",), sites=("subject_last", "last"), layers=(1, 3), per_bin=2,
                         n_bins=5, unrelated_size=40, hparams={"toy-slow": {"sleep_s": sleep_s}}, tracing_effect=False)
    whole = run_audit(trained_model_dir, FactTable.from_kg(tiny_kg), tmp_path / "whole", config, progress=False)
    assert _strip_timing(json.loads(json.dumps(whole))) == _strip_timing(resumed)


@pytest.mark.slow
def test_two_workers_use_two_processes_and_match_one(trained_model_dir, tiny_kg_dir, tiny_kg, tmp_path, capsys):
    extra = ("--layers", "1,3", "--sites", "subject_last,last", "--per-bin", "1", "--bins", "3")
    assert main(_cli_args(trained_model_dir, tiny_kg_dir, tmp_path / "w2", "--workers", "2", *extra)) == 0, \
        capsys.readouterr().err
    config = AuditConfig(methods=("toy-ablate",), sites=("subject_last", "last"), layers=(1, 3), per_bin=1,
                         n_bins=3, unrelated_size=40)
    one = run_audit(trained_model_dir, FactTable.from_kg(tiny_kg), tmp_path / "w1", config, progress=False)
    c2 = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "w2" / "cases").glob("*.json")}
    c1 = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "w1" / "cases").glob("*.json")}
    pids = {c["worker"]["pid"] for c in c2.values()}
    assert len(pids) == 2 and os.getpid() not in pids
    assert {c["worker"]["index"] for c in c2.values()} == {0, 1}
    assert c1.keys() == c2.keys() and len(c1) == 12
    for k in c1:
        assert result_view(c1[k]) == result_view(c2[k])
    assert _strip_timing(json.loads((tmp_path / "w2" / "summary.json").read_text())) == \
        _strip_timing(json.loads(json.dumps(one)))
