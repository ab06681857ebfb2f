"""Run one stage job (KG, model or audit) through the library stage functions, and tell finished ones.

Each stage writes its output atomically (synth_kg's bundle save, train_model's staging directory, the
audit's per-case files), then a record `sweep_stage.json` holding the job's inputs, its time and the code
version: a job is finished when its record is there, its inputs equal the job's, and the output checks out.
A killed job therefore leaves no record and is redone (an audit resumes its finished cases itself).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from kdel.errors import UserError
from kdel.io import atomic_write_json, read_json_object
from kdel.sweep.grid import FOLDERS, Job

STAGE_FILE = "sweep_stage.json"
STAGE_FORMAT = "kdel-sweep-stage/1"


def stage_record(d: Path) -> dict | None:
    rec = read_json_object(Path(d) / STAGE_FILE)
    return rec if rec is not None and rec.get("format") == STAGE_FORMAT else None


def _output_ok(job: Job, d: Path) -> bool:
    from kdel.pipeline.run import audit_done, kg_done, model_done

    return {"kg": kg_done, "model": model_done, "audit": audit_done}[job.kind](d)


def job_done(job: Job, out: Path) -> bool:
    """Whether `job`'s output exists, whole, for the same inputs. A record of other inputs under the same key
    is refused (someone edited the directory): nothing there is replaced without the user's say."""
    d = job.dir(out)
    rec = stage_record(d)
    if rec is None:
        return False
    if rec.get("inputs") != job.inputs:
        raise UserError(f"{d} records other inputs than its key says (edited by hand?); move it away to recompute it")
    return _output_ok(job, d)


def clean_stale(out: Path) -> list[Path]:
    """Remove staging and set-aside directories that a killed run left in DIR/kgs and DIR/models (the sweep
    holds the directory lock, so nobody else is writing there). Returns what was removed."""
    import shutil

    removed = []
    for folder in FOLDERS.values():
        d = Path(out) / folder
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if p.name.startswith(".") and p.is_dir() and (p.name.endswith(".staging") or ".old-" in p.name):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def run_job(job: Job, out: str, device: str = "cpu", threads: int = 1) -> dict:
    """Run one job (in this process, `threads` torch threads) and write its record; returns the record."""
    from kdel.runtime import seed_everything, set_threads

    from kdel.sweep.environment import provenance

    out = Path(out)
    set_threads(threads)
    d = job.dir(out)
    t0, c0 = time.perf_counter(), time.process_time()
    extra: dict = {}
    if job.kind == "kg":
        _run_kg(job, d)
    elif job.kind == "model":
        seed_everything(job.inputs["train"]["seed"])
        extra = _run_model(job, out, d, device, threads)
    elif job.kind == "audit":
        seed_everything(job.inputs["audit"]["seed"])
        extra = _run_audit(job, out, d, device, threads)
    else:  # pragma: no cover - grid makes only these kinds
        raise ValueError(job.kind)
    rec = {"format": STAGE_FORMAT, "kind": job.kind, "key": job.key, "inputs": job.inputs,
           "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "device": device, "threads": threads, "pid": os.getpid(),
           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "provenance": provenance(device), **extra}
    atomic_write_json(d / STAGE_FILE, rec)
    return rec


def _run_kg(job: Job, d: Path) -> None:
    from synth_kg import KGConfig, generate

    cfg = KGConfig(**job.inputs["kg"])
    cfg.validate()
    generate(cfg).save(d)


def _run_model(job: Job, out: Path, d: Path, device: str, threads: int) -> dict:
    from kdel.train import TrainConfig, train_model

    kg_dir = out / FOLDERS["kg"] / job.inputs["kg"]
    rep = train_model(kg_dir, d, TrainConfig(**job.inputs["train"], device=device, threads=threads), progress=False)
    rec = rep.to_json()
    return {"train": {"steps": rec.get("steps"), "seconds": rec.get("seconds"),
                      "reached_target": rec.get("reached_target"),
                      "recall": (rec.get("recall") or {}).get("recall"),
                      "paraphrase_recall": (rec.get("recall") or {}).get("paraphrase_recall")}}


def _run_audit(job: Job, out: Path, d: Path, device: str, threads: int) -> dict:
    import warnings

    from kdel.audit.cases import AuditConfig
    from kdel.audit.runner import run_audit
    from kdel.facts import load_fact_table

    kg_dir = out / FOLDERS["kg"] / job.inputs["kg"]
    model_dir = out / FOLDERS["model"] / job.inputs["model"]
    config = AuditConfig.from_json(job.inputs["audit"])
    table = load_fact_table(kg=kg_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = run_audit(model_dir, table, d, config, workers=1, backend="local", progress=False, device=device,
                            threads=threads, kg_dir=kg_dir)
    return {"audit": {k: summary.get(k) for k in ("n_cases", "n_ok", "n_error", "n_success", "n_failed", "n_wrecked")}
            | {"cases_run": summary["timing"].get("cases_run")}}
