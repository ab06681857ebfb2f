"""`run_pipeline`: generate → train → trace → audit → report, per graph (BA, ER), resumable.

RUN layout:
  RUN/pipeline.json            the preset, seed and per-stage status/timings (written after every stage)
  RUN/<graph>/kg/              synth_kg bundle           (done when kg.json loads)
  RUN/<graph>/model/           trained tiny GPT-2        (done when config.json, weights, train_report.json exist)
  RUN/<graph>/traces/          causal traces of a few facts, spread over popularity (done when both files exist)
  RUN/<graph>/audit/           the audit (cases/, summary.json); resumes finished cases
  RUN/cases/<graph>/<id>.json  copies of the audit's case files (the per-graph audit stays the source)
  RUN/summary.json             per-graph summaries re-computed from the cases + the run's timings
  RUN/report.html, RUN/plots/  the report over both graphs (BA and ER side by side)
  RUN/.kdel.lock               held (flock) by the one process writing RUN; a second one exits 2 naming it
Every stage writes its output atomically (a staging directory, then a rename), so a killed run leaves
finished stages intact and a rerun skips them. RUN itself follows kdel's output rule: it is missing, empty
or a pipeline run. Every stage's settings are checked before the first stage runs.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from kdel.errors import UserError
from kdel.io import atomic_write_json, read_json_object
from kdel.pipeline.presets import PipelinePreset
from kdel.pipeline.stages import (audit_done, check_settings, kg_done, model_done, stage_audit, stage_kg,
                                  stage_model, stage_traces, traces_done)

RUN_FORMAT = "kdel-run/1"
STAGES = ("kg", "model", "traces", "audit")


@dataclass
class PipelineOptions:
    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    workers: int = 1
    progress: bool = True


@dataclass
class PipelineResult:
    out: Path
    report: Path
    summary: Path
    stages: list[dict] = field(default_factory=list)
    wall_s: float = 0.0


class _Console:
    """Stage headers on stderr (rich when available); each stage shows its own tqdm progress bar."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        try:
            from rich.console import Console

            self._rich = Console(stderr=True, highlight=False)
        except ImportError:  # pragma: no cover - rich is a dependency
            self._rich = None

    def print(self, text: str, plain: str | None = None) -> None:
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.print(text)
        else:
            print(plain or text, file=sys.stderr)




def sync_cases(audit_dir: Path, dest: Path) -> int:
    """Copy the audit's case files to RUN/cases/<graph>/ (only new or changed ones); returns how many."""
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for src in sorted((audit_dir / "cases").glob("*.json")):
        tgt = dest / src.name
        if tgt.exists() and tgt.stat().st_size == src.stat().st_size and tgt.read_bytes() == src.read_bytes():
            continue
        tmp = dest / f".{src.name}.tmp"
        shutil.copyfile(src, tmp)
        tmp.replace(tgt)
        n += 1
    return n


# -- the whole chain ----------------------------------------------------------------------------------
def _check_run_dir(out: Path, identity: dict) -> dict:
    state = read_json_object(out / "pipeline.json")
    if state is not None:
        old = state.get("identity")
        if old is not None and old != identity:
            diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            raise UserError(f"{out} holds a run with other settings ({', '.join(diff)} differ): use a fresh --out "
                            "or the same preset, seed and overrides")
    return state or {}


def run_pipeline(out, preset: PipelinePreset, opts: PipelineOptions | None = None) -> PipelineResult:
    """Run (or resume) the whole chain into `out`; returns where the report and summary are.

    Writes RUN/ as in this module's docstring; holds RUN's lock for the whole run."""
    from kdel.outputs import DirLock, check_out_dir
    from kdel.runtime import resolve_device, seed_everything, set_threads

    opts = opts or PipelineOptions()
    set_threads(opts.threads)
    opts.device = resolve_device(opts.device)
    check_settings(preset, opts)
    out = check_out_dir(out, "pipeline")
    with DirLock(out, purpose="pipeline"):
        seed_everything(opts.seed)
        return _run_locked(out, preset, opts)


def _run_locked(out: Path, preset: PipelinePreset, opts: PipelineOptions) -> PipelineResult:
    identity = {"preset": preset.to_json(), "seed": opts.seed}
    state = _check_run_dir(out, identity)
    con = _Console(opts.progress)
    t_all = time.perf_counter()
    stages: list[dict] = []
    previous = {(s["graph"], s["stage"]): s for s in state.get("stages", [])}

    def save_state(extra: dict | None = None) -> None:
        atomic_write_json(out / "pipeline.json", {"format": RUN_FORMAT, "identity": identity, "stages": stages,
                                                  **(extra or {})})

    if not state:
        save_state()  # RUN is a pipeline run from the start: a rerun after a kill recognises it
    n_total = len(preset.graphs) * len(STAGES) + 1
    step = 0
    for graph in preset.graphs:
        gdir = out / graph
        kg_dir, model_dir, traces_dir, audit_dir = (gdir / "kg", gdir / "model", gdir / "traces", gdir / "audit")
        plan = [
            ("kg", kg_dir, kg_done, lambda: stage_kg(preset, graph, kg_dir, opts)),
            ("model", model_dir, model_done, lambda: stage_model(preset, kg_dir, model_dir, opts)),
            ("traces", traces_dir, traces_done,
             (lambda: stage_traces(preset, kg_dir, model_dir, traces_dir, opts)) if preset.trace_limit else None),
            ("audit", audit_dir, audit_done,
             lambda: stage_audit(preset, kg_dir, model_dir, traces_dir if preset.trace_limit else None, audit_dir,
                                 opts)),
        ]
        for name, path, done, fn in plan:
            step += 1
            head = f"[{step}/{n_total}] {graph.upper()} {name}"
            if fn is None:
                stages.append({"graph": graph, "stage": name, "status": "off", "seconds": 0.0})
                continue
            if done(path):
                prev = previous.get((graph, name), {})
                con.print(f"[bold]{head}[/bold]: [green]done already[/green] ({path})", f"{head}: done already")
                stages.append({"graph": graph, "stage": name, "status": "skipped",
                               "seconds": prev.get("seconds", 0.0)})
                continue
            con.print(f"[bold]{head}[/bold] → {path}", f"{head} -> {path}")
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            con.print(f"    [green]ok[/green] in {dt:.1f} s", f"    ok in {dt:.1f} s")
            stages.append({"graph": graph, "stage": name, "status": "ran", "seconds": dt})
            save_state()
        sync_cases(audit_dir, out / "cases" / graph)

    step += 1
    con.print(f"[bold][{step}/{n_total}] report[/bold] → {out / 'report.html'}", f"[{step}/{n_total}] report")
    t0 = time.perf_counter()
    summary_path = write_report(out, preset)
    dt = time.perf_counter() - t0
    stages.append({"graph": None, "stage": "report", "status": "ran", "seconds": dt})
    wall = time.perf_counter() - t_all
    save_state({"wall_s_last_invocation": wall})
    con.print(f"    [green]ok[/green] in {dt:.1f} s; whole run {wall:.1f} s", f"    ok; whole run {wall:.1f} s")
    return PipelineResult(out, out / "report.html", summary_path, stages, wall)


def write_report(out: Path, preset: PipelinePreset) -> Path:
    """RUN/report.html + RUN/plots/ over every graph, and RUN/summary.json (summaries re-computed from cases)."""
    from kdel.report.stage import write_report as write_html

    sources = {g.upper(): out / g / "audit" for g in preset.graphs}
    res = write_html(sources, out / "report.html", plots_dir=out / "plots",
                     title=f"kdel pipeline ({preset.name} preset): deletion audit, "
                           f"{' vs '.join(g.upper() for g in preset.graphs)}")
    state = read_json_object(out / "pipeline.json") or {}
    summary = {
        "format": "kdel-run-summary/1",
        "preset": preset.to_json(),
        "seed": (state.get("identity") or {}).get("seed"),
        "graphs": {a.label.lower(): {"audit_dir": str(a.audit_dir.relative_to(out)), "kg": a.kg, "model": a.model,
                                     "skipped_files": [str(s.path) for s in a.skipped], "summary": a.summary}
                   for a in res.audits},
        "report": "report.html",
        "plots": [str(p.path.relative_to(out)) for p in res.plots],
        "stages": state.get("stages", []),
    }
    atomic_write_json(out / "summary.json", summary)
    return out / "summary.json"
