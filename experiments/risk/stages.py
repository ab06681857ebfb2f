"""The validation experiment's data: KGs, models and audits for topologies × seeds (resumable).

Each (topology, seed) cell: a KG generated with that seed, a `tiny` model trained on it with that seed, and an
audit of it (targets sampled with that seed, every candidate method × site × layer), under DIR/kgs, DIR/models,
DIR/audits. A finished stage is skipped on a rerun (the KG's kg.json, the model's train_report.json, the
audit's summary.json); a killed audit resumes its finished cases (kdel.audit.run_audit).
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Settings:
    topologies: tuple[str, ...] = ("ba", "er")
    seeds: tuple[int, ...] = (0, 1, 2)
    train_seeds: tuple[int, ...] = (0,)
    entities: int = 100
    relations: int = 25
    methods: tuple[str, ...] = ("rome",)
    sites: tuple[str, ...] = ("subject_last", "last")
    per_bin: int = 2
    preset: str = "tiny"
    jobs: int = 2  # parallel training processes / audit workers
    timings: dict = field(default_factory=dict)


def cell_name(topology: str, seed: int) -> str:
    return f"{topology}-{seed}"


def _kg_and_model(out: str, topology: str, seed: int, s: Settings) -> dict:
    """Generate the KG and train the model of one cell (in a worker process); returns wall seconds."""
    from kdel.runtime import set_threads

    set_threads(1)
    out = Path(out)
    name = cell_name(topology, seed)
    kg_dir, model_dir = out / "kgs" / name, out / "models" / name
    t = {}
    if not (kg_dir / "kg.json").is_file():
        from synth_kg import KGConfig

        from kdel.kg import generate_kg

        t0 = time.perf_counter()
        generate_kg(kg_dir, KGConfig(topology=topology, entities=s.entities, relations=s.relations, seed=seed))
        t["kg_s"] = time.perf_counter() - t0
    if not (model_dir / "train_report.json").is_file():
        from kdel.train import TrainConfig, train_model

        t0 = time.perf_counter()
        train_model(kg_dir, model_dir, TrainConfig(preset=s.preset, seed=seed), progress=False)
        t["train_s"] = time.perf_counter() - t0
    return {name: t}


def build_models(out: Path, s: Settings) -> None:
    cells = [(t, seed) for seed in s.seeds for t in s.topologies]
    if s.jobs <= 1:
        for t, seed in cells:
            s.timings.update(_kg_and_model(str(out), t, seed, s))
        return
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=s.jobs, mp_context=mp.get_context("spawn")) as ex:
        for res in ex.map(_kg_and_model, [str(out)] * len(cells), [c[0] for c in cells], [c[1] for c in cells],
                          [s] * len(cells)):
            s.timings.update(res)


def recorded_timings(out: Path, s: Settings) -> dict:
    """Per cell, the times its artifacts recorded when they were made, whichever invocation made them (a resumed
    run skips finished stages, so this invocation's own timings miss them): training seconds
    (train_report.json), the audit's wall time (summary.json; of the invocation that finished it) and the sum of
    its cases' times (every case records its own, across invocations)."""
    import json

    out_ = {}
    for seed in s.seeds:
        for t in s.topologies:
            name = cell_name(t, seed)
            rec = {}
            try:
                rec["train_s"] = float(json.loads((out / "models" / name / "train_report.json").read_text())["seconds"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
            try:
                timing = json.loads((out / "audits" / name / "summary.json").read_text())["timing"]
                rec["audit_wall_s"] = float(timing["run_wall_s"])
                rec["audit_cases_s"] = float(timing["total_case_s"])
            except (OSError, ValueError, KeyError, TypeError):
                pass
            out_[name] = rec
    return out_


def run_audits(out: Path, s: Settings) -> None:
    from kdel.audit import AuditConfig, run_audit
    from kdel.facts import load_fact_table

    for seed in s.seeds:
        for t in s.topologies:
            name = cell_name(t, seed)
            audit = out / "audits" / name
            if (audit / "summary.json").is_file():
                continue
            table = load_fact_table(kg=out / "kgs" / name)
            config = AuditConfig(methods=tuple(s.methods), sites=tuple(s.sites), layers="all", per_bin=s.per_bin,
                                 seed=seed)
            t0 = time.perf_counter()
            run_audit(out / "models" / name, table, audit, config, workers=s.jobs, progress=True,
                      kg_dir=out / "kgs" / name)
            s.timings.setdefault(name, {})["audit_s"] = time.perf_counter() - t0
