"""`kdel sweep` end to end on a tiny grid (2 seeds × BA/ER × ROME × one site, 30 entities): results with
per-seed and pooled estimates and q-values, RESULTS.md, cases.csv; killed with SIGKILL and resumed without
recomputing finished jobs or cases."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TINY = """
name: tiny sweep
description: Two seeds of BA vs ER, ROME erase at the last token, 30 entities.
seeds: 2
results_md: copy/RESULTS.md
n_boot: 200
defaults:
  entities: 30
  relations: auto
  methods: [rome]
  sites: [last]
  per_bin: 4
  bins: 3
  unrelated: 30
  noise_samples: 4
  tracing_effect: false
conditions:
  - name: rome
    vary: {topology: [ba, er]}
primary:
  a: rome-ba
  b: rome-er
  statement: Same-subject damage rises more steeply with subject degree on BA than on ER.
  metric: same_subject.mean_p_drop
  predictor: subject_degree
  method: rome
  site: last
  outcome: all
  direction: greater
analyses:
  popularity: {metrics: [same_subject.mean_p_drop, unrelated.mean_p_drop], outcomes: [all]}
  compare: {metrics: [same_subject.mean_p_drop]}
  hase: false
"""


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["KDEL_THREADS"] = "1"
    return env


def _records(out: Path) -> dict[Path, tuple[int, str]]:
    return {p: (p.stat().st_mtime_ns, p.read_text()) for p in out.glob("*/*/sweep_stage.json")}


def _case_files(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.glob("audits/*/cases/*.json")}


@pytest.mark.slow
def test_sweep_end_to_end_kill_and_resume(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY, encoding="utf-8")
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "kdel.cli.main", "sweep", str(cfg), "--out", str(out), "--quiet"]

    # 1. start, wait for the first finished cell (an audit record), kill -9 in the middle of the next job
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 900
    while time.time() < deadline and not list(out.glob("audits/*/sweep_stage.json")):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()
    before = _records(out)
    cases_before = _case_files(out)
    assert any("audits" in str(p) for p in before) and len(before) < 12  # 4 KGs, 4 models, 4 audits in all

    # 2. rerun: finished jobs and cases are not recomputed (records and case files untouched)
    done = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr
    after = _records(out)
    assert len(after) == 12
    for p, (mtime, text) in before.items():
        assert after[p] == (mtime, text), f"{p} was recomputed"
    for p, mtime in cases_before.items():
        assert p.stat().st_mtime_ns == mtime, f"case {p} was rewritten"
    state = json.loads((out / "sweep.json").read_text())
    assert state["format"] == "kdel-sweep/1" and len(state["invocations"]) == 2
    assert state["invocations"][1]["jobs_run"] == 12 - len(before)
    assert not [p for p in out.glob("*/.*") if p.is_dir()]  # no staging directory left behind

    # 3. results.json: per-seed and pooled estimates, q-values, the primary apart
    res = json.loads((out / "results.json").read_text())
    assert res["format"] == "kdel-sweep-results/1" and res["n_cells_finished"] == res["n_cells"] == 4
    prim = res["primary"]
    assert [s["seed"] for s in prim["per_seed"]] == [0, 1]
    for s in prim["per_seed"]:
        assert {"a", "b", "difference", "matched"} <= set(s)
        assert s["a"]["n_facts"] >= 3 and s["a"]["n_subjects"] >= 2
    assert set(prim["pooled"]) >= {"a", "b", "difference", "matched_a", "matched_difference"}
    assert prim["pooled"]["difference"]["k"] + len(prim["pooled"]["difference"]["dropped"]) == 2
    assert prim["verdict"].startswith(("Evidence", "No evidence", "Whether"))
    pop = res["popularity"]
    assert {r["condition"] for r in pop} == {"rome-ba", "rome-er"}
    for r in pop:
        assert [s["seed"] for s in r["per_seed"]] == [0, 1]
        assert "p_holm" in r and "q_bh" in r and "estimate" in r["pooled"]
    assert any(r["q_bh"] is not None for r in pop)
    assert len(res["comparisons"]) == 1 and res["comparisons"][0]["a"] == "rome-ba"
    assert res["provenance"]["git_commit"] and res["provenance"]["kdel_version"]
    assert res["run"]["invocations"] == 2 and res["run"]["stage_seconds_total"] > 0

    # 4. RESULTS.md (also copied with its figures), cases.csv loadable as a table
    md = (out / "RESULTS.md").read_text(encoding="utf-8")
    assert md.splitlines()[0].startswith("<!-- kdel-sweep-results")
    head = md[: md.index("## Graph comparisons")] if "## Graph comparisons" in md else md
    assert "**Verdict:**" in head and prim["verdict"] in head
    assert "git commit" in md and "Wall time" in md
    assert (tmp_path / "copy" / "RESULTS.md").read_text(encoding="utf-8") == md
    assert {p.name for p in (tmp_path / "copy" / "figures").glob("*.png")} == {Path(f).name for f in res["figures"]}
    assert "figures/primary_per_seed.png" in res["figures"]
    with open(out / "cases.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    n_cases = sum(c["n_cases"] for c in res["cells"])
    # case ids hash the deletion, not the KG: unique within a cell, so count (cell, case) pairs
    assert len({(r["condition"], r["seed"], r["case_id"]) for r in rows}) == n_cases
    assert len(rows) == res["n_case_rows_csv"]
    assert {r["group"] for r in rows} >= {"target", "same_subject", "unrelated"}
    assert {r["condition"] for r in rows} == {"rome-ba", "rome-er"}

    # 5. a third run changes nothing but the aggregate; a second writer is refused while one holds the lock
    from kdel.outputs import DirLock

    with DirLock(out):
        busy = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert busy.returncode == 2 and "in use by another kdel process" in busy.stderr
    assert _records(out) == after


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", "ray"])
def test_executors_run_jobs_in_other_processes(tmp_path, backend):
    """N local worker processes and Ray tasks run the same job function and write the same records."""
    if backend == "ray":
        pytest.importorskip("ray")
    from kdel.sweep.backends import make_executor
    from kdel.sweep.grid import Job, inputs_key
    from kdel.sweep.stages import job_done, stage_record

    jobs = []
    for seed in (0, 1, 2):
        inputs = {"kind": "kg", "kg": {"topology": "er", "entities": 12, "relations": "auto", "seed": seed}}
        jobs.append(Job("kg", inputs_key(inputs), inputs))
    ex = make_executor(backend, 2, tmp_path, "cpu", 1)
    try:
        assert ex.slots == 2
        handles = [ex.submit(j) for j in jobs]
        done = []
        while handles:
            for h, rec, err in ex.wait(handles):
                handles.remove(h)
                assert err is None, err
                done.append(rec)
    finally:
        ex.close()
    assert all(job_done(j, tmp_path) for j in jobs)
    pids = {stage_record(j.dir(tmp_path))["pid"] for j in jobs}
    assert os.getpid() not in pids and {r["key"] for r in done} == {j.key for j in jobs}
