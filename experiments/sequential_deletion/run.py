"""The sequential-deletion experiment in one command.

    PYTHONPATH=. python experiments/sequential_deletion/run.py --out runs/sequential_deletion --workers 2

For every graph × seed (a cell): generate the KG, train the tiny model, run the sequential audit (every method ×
order, one trial whose seed is the cell's seed); then pool the trials over seeds (mean curves with 95% t bands,
the N at which retained accuracy falls below the threshold), draw the figure and write RESULTS.md. Every
stage is resumable: a finished KG, model or trial is reused (trials by fingerprint, kdel.audit.sequential_run),
so a killed run is simply rerun. `--seeds`, `--graphs`, `--n-steps` override the config for a small run.

OUT/experiment.json   the config, the cells with each stage's wall and CPU seconds
OUT/kgs/<graph>-s<seed>, OUT/models/<graph>-s<seed>, OUT/audits/<graph>-s<seed>   the stages' outputs
OUT/results.json      pooled curves; OUT/figures/accuracy_vs_deletions.png; OUT/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

EXPERIMENT_FORMAT = "kdel-seqdel-experiment/1"
KEYS = {"name": str, "description": str, "seeds": list, "graphs": list, "kg": dict, "train": dict, "methods": list,
        "orders": list, "n_steps": int, "every": int, "site": str, "unrelated": int, "threshold": float,
        "hparams": dict}


def load_config(path: Path) -> dict:
    import yaml

    from kdel.errors import UserError

    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"{path}: cannot read the config ({type(e).__name__})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: the config must be a mapping")
    for k, v in cfg.items():
        if k not in KEYS:
            raise UserError(f"{path}: unknown key {k!r}")
        want = (int, float) if KEYS[k] is float else KEYS[k]
        if not isinstance(v, want) or isinstance(v, bool):
            raise UserError(f"{path}: {k} must be a {KEYS[k].__name__}")
    missing = [k for k in KEYS if k not in cfg]
    if missing:
        raise UserError(f"{path}: missing keys {', '.join(missing)}")
    for g in cfg["graphs"]:
        if g not in ("ba", "er", "powerlaw"):
            raise UserError(f"{path}: graphs: unknown topology {g!r}")
    return cfg


def cell_name(graph: str, seed: int) -> str:
    return f"{graph}-s{seed}"


def check_out(out: Path, inputs) -> None:
    from kdel.errors import UserError
    from kdel.outputs import LOCK_FILE, check_not_input

    check_not_input(out, inputs)
    if out.exists():
        if not out.is_dir():
            raise UserError(f"refusing to write into {out}: it is a file")
        entries = [n for n in out.iterdir() if n.name != LOCK_FILE]
        marker = out / "experiment.json"
        if entries and not (marker.is_file() and json.loads(marker.read_text()).get("format") == EXPERIMENT_FORMAT):
            raise UserError(f"refusing to write into {out}: it is not a sequential-deletion experiment directory")


def run_cell(args: tuple) -> dict:
    """One graph × seed: KG, model, sequential audit. Runs in a worker process (one torch thread)."""
    cfg, out, graph, seed = args
    import torch

    from kdel.runtime import install_warning_handler

    install_warning_handler()  # kdel's one-line warnings in the worker too
    torch.set_num_threads(1)
    from synth_kg import KGConfig, KnowledgeGraph, generate

    from kdel.audit.sequential import SequentialConfig
    from kdel.audit.sequential_run import run_sequential_audit
    from kdel.facts import FactTable
    from kdel.io import staged_dir
    from kdel.train import TrainConfig, train_model

    name = cell_name(graph, seed)
    kg_dir, model_dir, audit_dir = out / "kgs" / name, out / "models" / name, out / "audits" / name
    times = {}
    t, c = time.perf_counter(), time.process_time()
    if not (kg_dir / "kg.json").is_file():
        kg = generate(KGConfig(topology=graph, seed=seed, **cfg["kg"]))
        with staged_dir(kg_dir) as staging:
            kg.save(staging)
    kg = KnowledgeGraph.load(kg_dir)
    times["kg"] = (time.perf_counter() - t, time.process_time() - c)
    t, c = time.perf_counter(), time.process_time()
    if not (model_dir / "train_report.json").is_file():
        train_model(kg_dir, model_dir, TrainConfig(seed=seed, **cfg["train"]), progress=False)
    times["train"] = (time.perf_counter() - t, time.process_time() - c)
    t, c = time.perf_counter(), time.process_time()
    scfg = SequentialConfig(n_steps=cfg["n_steps"], orders=tuple(cfg["orders"]), trials=1, every=cfg["every"],
                            methods=tuple(cfg["methods"]), sites=(cfg["site"],), unrelated_size=cfg["unrelated"],
                            seed=seed, hparams=cfg["hparams"])
    summary = run_sequential_audit(model_dir, FactTable.from_kg(kg), audit_dir, scfg, progress=False,
                                   kg_dir=kg_dir)
    times["audit"] = (time.perf_counter() - t, time.process_time() - c)
    report = json.loads((model_dir / "train_report.json").read_text())
    return {"cell": name, "graph": graph, "seed": seed, "times": times,
            "trials_run": summary["timing"]["trials_run"], "train_recall": report["recall"]["recall"]}


def collect(out: Path, cells: list[dict]) -> list[dict]:
    """Every trial of every cell, with the cell's graph and seed in its spec."""
    from kdel.audit.sequential_run import read_trials

    trials = []
    for c in cells:
        for tr in read_trials(out / "audits" / c["cell"]):
            tr["spec"] = {**tr["spec"], "graph": c["graph"], "cell_seed": c["seed"]}
            trials.append(tr)
    return trials


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=HERE / "config.yaml")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--workers", type=int, default=1, help="cells run in parallel processes")
    p.add_argument("--results-md", type=Path, default=None, help="also copy RESULTS.md (+ figure) here")
    p.add_argument("--seeds", type=str, default=None, help="override: comma-separated seeds")
    p.add_argument("--graphs", type=str, default=None, help="override: comma-separated graphs")
    p.add_argument("--n-steps", type=int, default=None, help="override: deletions per trial")
    a = p.parse_args(argv)
    from kdel.errors import UserError

    try:
        return _main(a)
    except UserError as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        return 2


def _main(a) -> int:
    import torch

    from kdel.errors import UserError
    from kdel.io import atomic_write_json
    from kdel.outputs import DirLock
    from kdel.provenance import provenance
    from kdel.runtime import install_warning_handler

    install_warning_handler()
    torch.set_num_threads(1)  # as in the cells (the provenance records it)
    sys.path.insert(0, str(HERE))
    from results_md import write_results

    cfg = load_config(a.config)
    if a.seeds:
        cfg["seeds"] = [int(s) for s in a.seeds.split(",")]
    if a.graphs:
        cfg["graphs"] = [g.strip() for g in a.graphs.split(",")]
    if a.n_steps:
        cfg["n_steps"] = a.n_steps
    if a.workers < 1:
        raise UserError("--workers must be >= 1")
    out = a.out
    check_out(out, [a.config])
    t0 = time.perf_counter()
    with DirLock(out, "experiment"):
        prev = out / "experiment.json"
        history = json.loads(prev.read_text()).get("invocations", []) if prev.is_file() else []
        atomic_write_json(prev, {"format": EXPERIMENT_FORMAT, "config": cfg, "invocations": history})
        jobs = [(cfg, out, g, s) for g in cfg["graphs"] for s in cfg["seeds"]]
        if a.workers == 1:
            cells = [run_cell(j) for j in jobs]
        else:
            with mp.get_context("spawn").Pool(a.workers) as pool:
                cells = pool.map(run_cell, jobs, chunksize=1)
        wall = time.perf_counter() - t0
        history.append({"wall_s": wall, "workers": a.workers, "cells": cells,
                        "argv": sys.argv[1:], "provenance": provenance("cpu")})
        atomic_write_json(prev, {"format": EXPERIMENT_FORMAT, "config": cfg, "invocations": history})
        trials = collect(out, cells)
        path = write_results(out, cfg, trials, history, a.results_md)
    print(f"{len(trials)} trials in {len(cells)} cells, {wall / 60:.1f} min -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
