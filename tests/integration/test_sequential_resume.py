"""The sequential audit resumes after kill -9 without recomputing finished trials and gives the same curves as
an uninterrupted run (acceptance of issue 16). Subprocesses of the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _cmd(model, kg, out) -> list[str]:
    return [sys.executable, "-m", "kdel.cli.main", "audit", "--model", str(model), "--kg", str(kg), "--out", str(out),
            "--sequential", "3", "--order", "random,degree-high", "--trials", "2", "--sites", "last",
            "--methods", "rome", "--unrelated", "20", "--quiet"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _stamps(out: Path) -> dict[str, tuple]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "sequential" / "trials").glob("*.json")}


def _result(trial: dict) -> dict:
    """A trial without its run-dependent fields (timing, provenance)."""
    steps = [{k: v for k, v in s.items() if k != "edit_s"} for s in trial["steps"]]
    return {"spec": trial["spec"], "order": trial["order"], "steps": steps, "checkpoints": trial["checkpoints"],
            "status": trial["status"], "fingerprint": trial["fingerprint"]}


def _trials(out: Path) -> dict[str, dict]:
    return {p.stem: _result(json.loads(p.read_text())) for p in (out / "sequential" / "trials").glob("*.json")}


def test_kill_9_then_rerun_gives_the_same_curves(trained_model_dir, tiny_kg_dir, tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(trained_model_dir, tiny_kg_dir, killed), env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while time.time() < deadline and proc.poll() is None:
        if list((killed / "sequential" / "trials").glob("*.json")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _stamps(killed)
    assert 1 <= len(before) < 4

    rerun = subprocess.run(_cmd(trained_model_dir, tiny_kg_dir, killed), env=_env(), cwd=ROOT, capture_output=True,
                           text=True, timeout=1800)
    assert rerun.returncode == 0, rerun.stderr
    after = _stamps(killed)
    assert len(after) == 4
    for name, stamp in before.items():
        assert after[name] == stamp, f"finished trial {name} was recomputed"
    summary = json.loads((killed / "sequential" / "summary.json").read_text())
    assert summary["timing"]["trials_run"] == 4 - len(before)
    assert (killed / "sequential" / "accuracy_vs_deletions.png").stat().st_size > 0

    fresh = tmp_path / "fresh"
    done = subprocess.run(_cmd(trained_model_dir, tiny_kg_dir, fresh), env=_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    assert _trials(killed) == _trials(fresh)
    s2 = json.loads((fresh / "sequential" / "summary.json").read_text())
    assert summary["curves"] == s2["curves"]
    assert all(json.loads(p.read_text())["revert_verified"] for p in (fresh / "sequential" / "trials").glob("*.json"))

    # a third run finds everything done: nothing recomputed, nothing rewritten
    again = subprocess.run(_cmd(trained_model_dir, tiny_kg_dir, fresh), env=_env(), cwd=ROOT, capture_output=True,
                           text=True, timeout=1800)
    assert again.returncode == 0 and "(0 run now)" in again.stdout
