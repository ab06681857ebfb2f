"""`run_sweep`: expand the grid, run the unfinished stage jobs, aggregate across seeds, write the results.

DIR layout:
  DIR/sweep.json               format kdel-sweep/1: the config, the cells, every invocation's wall time
  DIR/kgs/<key>/               KG bundles        } each with sweep_stage.json (inputs, time, code version)
  DIR/models/<key>/            trained models    }
  DIR/audits/<key>/            audits (cases/)   }
  DIR/results.json, DIR/cases.csv, DIR/figures/*.png, DIR/RESULTS.md   (rewritten by every run)
One writer per directory (DirLock). A killed run leaves finished jobs and finished audit cases in place;
the rerun skips them (a job is finished when its record matches its inputs, see stages.py).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kdel.errors import UserError
from kdel.io import atomic_write_json, read_json_object
from kdel.sweep.grid import Plan, expand

SWEEP_FORMAT = "kdel-sweep/1"
PRIORITY = {"audit": 0, "model": 1, "kg": 2}  # finish cells first: a killed run loses the least


@dataclass
class SweepOptions:
    workers: int = 1
    backend: str = "local"
    device: str | None = None  # None = the config's
    threads: int = 1
    progress: bool = True
    results_md: Path | None = None  # None = the config's results_md (if any)
    command: str | None = None  # the command line, as RESULTS.md should show it


@dataclass
class SweepResult:
    out: Path
    results: Path
    results_md: Path
    copied_to: Path | None
    jobs_run: int
    jobs_skipped: int
    failures: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0


def _say(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)


def describe_plan(config, plan: Plan, out: Path | None) -> str:
    """A few lines: conditions, seeds, cells and jobs (and how many are finished when `out` exists)."""
    from kdel.sweep.stages import job_done

    lines = [f"sweep {config.name}: {len(config.conditions)} conditions, {len(plan.cells)} cells"]
    for c in config.conditions:
        lines.append(f"  {c.name}: {c.topology}, {c.entities} entities, {c.format}, {c.model}, "
                     f"{'+'.join(c.methods)} {c.objective} @ {'+'.join(c.sites)}, layers {c.layers}, "
                     f"seeds {','.join(map(str, c.seeds))}")
    counts = plan.counts()
    finished = {k: 0 for k in counts}
    if out is not None and out.is_dir():
        for j in plan.jobs.values():
            finished[j.kind] += job_done(j, out)
    lines.append("jobs: " + ", ".join(f"{counts[k]} {k}{'s' if counts[k] != 1 else ''} ({finished[k]} finished)"
                                     for k in counts))
    return "\n".join(lines)


def _job_labels(plan: Plan) -> dict[str, str]:
    labels: dict[str, str] = {}
    for cell in plan.cells:
        for kind in ("kg", "model", "audit"):
            labels.setdefault(f"{kind}:{getattr(cell, kind)}", cell.id)
    return labels


def schedule(plan: Plan, out: Path, executor, progress: bool, on_finish=None) -> tuple[int, int, dict[str, str], bool]:
    """Run every unfinished job once its inputs exist. Returns (run, skipped, failures {job id: message},
    whether any failure was a user error)."""
    from kdel.sweep.stages import job_done

    labels = _job_labels(plan)
    done = {jid for jid, j in plan.jobs.items() if job_done(j, out)}
    pending = [j for j in plan.jobs.values() if j.id not in done]
    skipped = len(done)
    total = len(plan.jobs)
    failures: dict[str, str] = {}
    user_error = False
    running: dict = {}
    n_run = 0
    _say(progress, f"{skipped} of {total} jobs finished already; {len(pending)} to run "
                   f"({executor.slots} at a time)")
    while pending or running:
        ready = sorted((j for j in pending if all(d in done for d in j.deps)), key=lambda j: PRIORITY[j.kind])
        for j in [j for j in pending if any(d in failures for d in j.deps)]:
            pending.remove(j)
            failures[j.id] = "skipped: " + next(f"its input {d} failed" for d in j.deps if d in failures)
        for j in ready:
            if len(running) >= executor.slots:
                break
            pending.remove(j)
            _say(progress, f"  start {j.kind} {j.key} ({labels.get(j.id, '')})")
            running[executor.submit(j)] = j
        if not running:
            break
        for handle, rec, err in executor.wait(list(running)):
            j = running.pop(handle)
            n_run += 1
            if err is None:
                done.add(j.id)
                _say(progress, f"  [{len(done)}/{total}] {j.kind} {j.key} ({labels.get(j.id, '')}) "
                               f"done in {rec.get('seconds', 0):.1f} s")
            else:
                failures[j.id] = err[0]
                user_error |= err[1]
                _say(progress, f"  {j.kind} {j.key} ({labels.get(j.id, '')}) FAILED: {err[0]}")
            if on_finish is not None:
                on_finish(n_run)
    for j in pending:  # left only when a dependency never finished
        failures.setdefault(j.id, "skipped: an input did not finish")
    return n_run, skipped, failures, user_error


def _check_results_md(dest: Path, config, out: Path) -> Path:
    from kdel.sweep.results_md import check_destination

    return check_destination(dest, inputs=[config.source, out])


def _command(config_path, out, opts: SweepOptions) -> str:
    parts = ["kdel sweep", str(config_path), "--out", str(out)]
    if opts.workers != 1:
        parts += ["--workers", str(opts.workers)]
    if opts.backend != "local":
        parts += ["--backend", opts.backend]
    if opts.device:
        parts += ["--device", opts.device]
    if opts.threads != 1:
        parts += ["--threads", str(opts.threads)]
    return " ".join(parts)


def run_sweep(config_path, out, opts: SweepOptions | None = None) -> SweepResult:
    """Run (or resume) the sweep of `config_path` into `out`; returns where the results are."""
    from kdel.outputs import DirLock, check_out_dir
    from kdel.runtime import resolve_device, set_threads
    from kdel.sweep.backends import make_executor
    from kdel.sweep.config import load_config
    from kdel.sweep.stages import clean_stale

    opts = opts or SweepOptions()
    t_start = time.perf_counter()
    config = load_config(config_path)
    if opts.workers < 1:
        raise UserError(f"--workers must be >= 1, got {opts.workers}")
    device = resolve_device(opts.device or config.device)
    set_threads(opts.threads)
    out = check_out_dir(Path(out), "sweep", inputs=[config.source])
    dest = opts.results_md or config.results_md
    if dest is not None:
        dest = _check_results_md(Path(dest), config, out)
    plan = expand(config)
    with DirLock(out, "sweep"):
        check_out_dir(out, "sweep", inputs=[config.source])  # again, now that this process is the only writer
        clean_stale(out)
        state = read_json_object(out / "sweep.json") or {}
        invocations = list(state.get("invocations", []))
        me = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_s": 0.0, "jobs_run": 0,
              "workers": opts.workers, "backend": opts.backend, "device": device, "threads": opts.threads,
              "finished": False}
        invocations.append(me)

        def save_state(n_run: int = 0) -> None:
            me["wall_s"] = time.perf_counter() - t_start
            me["jobs_run"] = n_run
            atomic_write_json(out / "sweep.json", {
                "format": SWEEP_FORMAT, "name": config.name, "config": config.to_json(),
                "config_file": str(config.source), "cells": [c.to_json() for c in plan.cells],
                "jobs": plan.counts(), "invocations": invocations})

        save_state()
        _say(opts.progress, describe_plan(config, plan, out))
        executor = make_executor(opts.backend, opts.workers, out, device, opts.threads)
        try:
            n_run, skipped, failures, user_error = schedule(plan, out, executor, opts.progress, save_state)
        finally:
            executor.close()
        me["finished"] = not failures
        save_state(n_run)
        _say(opts.progress, "aggregating across seeds ...")
        from kdel.sweep.report import write_outputs

        paths = write_outputs(config, plan, out, state={"invocations": invocations, "failures": failures,
                                                        "wall_s_this_run": time.perf_counter() - t_start,
                                                        "command": opts.command or _command(config_path, out, opts),
                                                        "workers": opts.workers, "backend": opts.backend,
                                                        "device": device, "threads": opts.threads})
        copied = None
        if dest is not None:
            from kdel.sweep.results_md import copy_results_md

            copied = copy_results_md(out, dest)
        save_state(n_run)
    result = SweepResult(out, paths["results"], paths["results_md"], copied, n_run, skipped, failures,
                         time.perf_counter() - t_start)
    if failures:
        first = next(iter(failures.items()))
        msg = (f"{len(failures)} of {len(plan.jobs)} jobs failed (first: {first[0]}: {first[1]}); the results "
               f"cover the finished cells only; fix the cause and rerun to resume")
        if user_error:
            raise UserError(msg)
        raise RuntimeError(msg)
    return result
