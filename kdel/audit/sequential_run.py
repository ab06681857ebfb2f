"""`run_sequential_audit`: plan the trials, run the unfinished ones, write the mean curves and the figure.

Files (inside the audit directory OUT, one writer at a time: the audit's lock on OUT/.kdel.lock):
  OUT/sequential/config.json                 kdel-sequential-config/1: config, fingerprint inputs, trial ids
  OUT/sequential/trials/<id>.json            kdel-sequential-trial/1: one trial (spec, order, steps, checkpoints)
  OUT/sequential/superseded/                 trial files a resume could not reuse (moved, never deleted)
  OUT/sequential/summary.json                kdel-sequential-summary/1: mean curves with 95% bands per condition
  OUT/sequential/accuracy_vs_deletions.png   retained accuracy vs number of deletions, one line per order
A trial file is written atomically when the trial ends; a rerun reuses every trial whose fingerprint is
unchanged, so a killed run recomputes only the trial it was in.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from kdel.audit.sequential import TRIAL_FORMAT, SequentialConfig, TrialRunner, plan_trials

SEQ_DIR = "sequential"
CONFIG_FORMAT = "kdel-sequential-config/1"
SUMMARY_FORMAT = "kdel-sequential-summary/1"
FIGURE = "accuracy_vs_deletions.png"


def run_inputs(model_dir, table, config: SequentialConfig, corpus=None) -> dict:
    """Fingerprint inputs shared by every trial of a run (the trial's spec is added per trial)."""
    from kdel import __version__
    from kdel.audit import store

    return {"trial_format": TRIAL_FORMAT, "kdel_version": __version__, "model": store.model_identity(model_dir),
            "facts": f"{table.source}:{table.source_hash}", "corpus": store.corpus_identity(table, corpus),
            "probe": {"unrelated_size": config.unrelated_size, "unrelated_seed": config.seed},
            "key_statistics": "unedited model, pinned for every step"}  # trials before this rule recomputed C


def run_sequential_audit(model_dir, table, out_dir, config: SequentialConfig, progress: bool = True,
                         device: str = "cpu", kg_dir=None, corpus=None, recompute: bool = True, inputs=()) -> dict:
    """Run (or resume) the sequential-deletion trials; returns the summary (also OUT/sequential/summary.json)."""
    from kdel.audit.store import run_locked

    return run_locked(_run_locked, model_dir, table, out_dir, config, kg_dir=kg_dir, corpus=corpus, inputs=inputs,
                      progress=progress, device=device, recompute=recompute)


def _run_locked(model_dir, table, out: Path, config, *, progress, device, corpus, recompute) -> dict:
    from kdel.audit.evaluate import BaseScores
    from kdel.audit.resume import fingerprint, scan_units, settle, write_unit
    from kdel.io import atomic_write_json
    from kdel.models.loading import load_model_for_table
    from kdel.provenance import provenance

    seq = out / SEQ_DIR
    specs = plan_trials(config)
    shared = run_inputs(model_dir, table, config, corpus)
    fps = {s["id"]: fingerprint({**shared, "spec": {k: v for k, v in s.items() if k != "id"}}) for s in specs}
    scan = scan_units(seq / "trials", fps, TRIAL_FORMAT)
    settle(scan, seq / "superseded", recompute, "sequential trial file")
    prov = provenance(device)
    atomic_write_json(seq / "config.json", {
        "format": CONFIG_FORMAT, "config": config.to_json(), "inputs": shared, "provenance": prov,
        "model_dir": str(Path(model_dir).resolve()), "trial_ids": [s["id"] for s in specs],
        "layer_source": "method default (the middle layer)" if None in config.layers else "list",
    })
    todo = [s for s in specs if s["id"] in set(scan.todo)]
    t0 = time.perf_counter()
    if todo:
        model, tok = load_model_for_table(model_dir, table, device)
        pool = table.unrelated_sample(config.unrelated_size, config.seed)
        base = BaseScores.compute(model, tok, table, pool)
        runner = TrialRunner(model, tok, table, base)
        for k, spec in enumerate(todo):
            if progress:
                print(f"sequential trial {k + 1}/{len(todo)}: {spec['method']} {spec['order']} trial "
                      f"{spec['trial']} ({spec['n_steps']} deletions)", file=sys.stderr, flush=True)
            result = runner.run(spec)
            write_unit(seq / "trials", {"format": TRIAL_FORMAT, "id": spec["id"], "spec": spec, **result,
                                        "fingerprint": fps[spec["id"]], "provenance": prov})
    wall = time.perf_counter() - t0
    return write_summary(out, specs, prov, {"run_wall_s": wall, "trials_run": len(todo)})


def read_trials(out, ids=None) -> list[dict]:
    """The trial records of OUT/sequential/trials (those in `ids` when given), sorted by id."""
    from kdel.audit.resume import read_unit

    d = Path(out) / SEQ_DIR / "trials"
    paths = sorted(d.glob("*.json")) if d.is_dir() else []
    out_list = []
    for p in paths:
        if ids is not None and p.stem not in ids:
            continue
        out_list.append(read_unit(p, TRIAL_FORMAT))
    return out_list


def write_summary(out, specs: list[dict], prov: dict, timing: dict) -> dict:
    from kdel.audit.sequential_curves import condition_curves, plot_curves
    from kdel.io import atomic_write_json

    trials = read_trials(out, {s["id"] for s in specs})
    if len(trials) != len(specs):
        raise RuntimeError(f"{len(specs) - len(trials)} planned trials have no file after the run")
    curves = condition_curves(trials)
    summary = {"format": SUMMARY_FORMAT, "n_trials": len(trials), "curves": curves, "figure": FIGURE,
               "timing": timing, "provenance": prov}
    atomic_write_json(Path(out) / SEQ_DIR / "summary.json", summary)
    facet = ("method",) + (("site",) if len({c["site"] for c in curves}) > 1 else ()) \
        + (("layer",) if len({c["layer"] for c in curves}) > 1 else ())
    plot_curves(curves, Path(out) / SEQ_DIR / FIGURE, facet=facet)
    return summary
