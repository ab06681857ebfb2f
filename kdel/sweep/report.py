"""`write_outputs`: results.json, cases.csv, figures/ and RESULTS.md of a sweep, from its finished cells.

Everything here is recomputed from the case files at every run (aggregation is cheap next to the cells),
so the outputs always describe exactly the cells that are finished; results.json says which are missing.
"""

from __future__ import annotations

from pathlib import Path

from kdel.io import atomic_write_json
from kdel.sweep.grid import FOLDERS, Plan

RESULTS_FORMAT = "kdel-sweep-results/1"


def cell_rows(config, plan: Plan, out: Path, cases_by_cell: dict) -> list[dict]:
    from kdel.sweep.stages import stage_record

    rows = []
    for cell in plan.cells:
        cases = cases_by_cell.get((cell.condition, cell.seed))
        model_rec = stage_record(Path(out) / FOLDERS["model"] / cell.model) or {}
        row = {**cell.to_json(), "finished": cases is not None, "train": model_rec.get("train")}
        if cases is not None:
            ok = [c for c in cases if c["status"] == "ok"]
            row.update(n_cases=len(cases), n_ok=len(ok), n_error=len(cases) - len(ok),
                       n_success=sum(1 for c in ok if c["success"]), n_wrecked=sum(1 for c in ok if c["wrecked"]),
                       n_facts=len({c["fact"]["id"] for c in ok}), n_subjects=len({c["fact"]["subject"] for c in ok}))
        rows.append(row)
    return rows


def stage_timing(plan: Plan, out: Path) -> dict:
    """Seconds recorded by the finished stage jobs (summed per kind, over every invocation that ran them),
    and the code versions that produced them."""
    from kdel.sweep.stages import stage_record

    seconds = {k: 0.0 for k in FOLDERS}
    cpu = {k: 0.0 for k in FOLDERS}
    versions = {}
    for j in plan.jobs.values():
        rec = stage_record(j.dir(out))
        if rec is None:
            continue
        seconds[j.kind] += float(rec.get("seconds") or 0.0)
        cpu[j.kind] += float(rec.get("cpu_seconds") or 0.0)
        prov = rec.get("provenance") or {}
        key = f"{prov.get('kdel_version')}+{prov.get('git_commit')}{' (dirty)' if prov.get('git_dirty') else ''}"
        versions[key] = versions.get(key, 0) + 1
    return {"stage_seconds": seconds, "stage_seconds_total": sum(seconds.values()), "stage_cpu_seconds": cpu,
            "stage_code_versions": versions}


def compute_results(config, plan: Plan, out: Path, cases_by_cell: dict, state: dict) -> dict:
    from kdel.sweep.aggregate import adjust, hase_rows, popularity_rows
    from kdel.sweep.analyses import PAPER_HASE
    from kdel.sweep.contrast import comparison_rows, primary_result
    from kdel.sweep.environment import provenance

    n_boot, level = config.n_boot, config.level
    an = config.analyses
    popularity, hase = [], []
    for c in config.conditions:
        by_seed = {s: cases for (name, s), cases in sorted(cases_by_cell.items()) if name == c.name}
        if not by_seed:
            continue
        if an.popularity:
            popularity += popularity_rows(c.name, by_seed, an, n_boot, level)
        if an.hase:
            hase += hase_rows(c.name, by_seed, an.hase_y, n_boot, level)
    adjust(popularity)
    adjust(hase)  # one family: every (condition, method, site, y) row's combined cluster-robust test
    invocations = state.get("invocations", [])
    return {
        "format": RESULTS_FORMAT,
        "name": config.name,
        "description": config.description,
        "config": config.to_json(),
        "config_file": str(config.source) if config.source else None,
        "inference": {
            "unit": "deleted fact (a fact edited at several layers is averaged per fact, or each layer alone)",
            "cluster": "subject (cluster bootstrap)", "n_boot": n_boot, "level": level,
            "pooling": "random-effects meta-analysis of Fisher-z rho over seeds (DerSimonian-Laird, modified HKSJ CI)",
            "contrast_pooling": "random effects on d = atanh(rho_A) - atanh(rho_B) per seed",
            "hase_pooling": "mean over seeds with a t interval (k - 1 df)",
            "family": "Holm p and BH q over the pooled popularity rows; another family over the graph comparisons",
        },
        "cells": cell_rows(config, plan, out, cases_by_cell),
        "n_cells": len(plan.cells),
        "n_cells_finished": sum(1 for c in plan.cells if (c.condition, c.seed) in cases_by_cell),
        "primary": primary_result(config, cases_by_cell, n_boot, level),
        "comparisons": comparison_rows(config, cases_by_cell, n_boot, level),
        "popularity": popularity,
        "hase": hase,
        "hase_paper": PAPER_HASE,
        "failures": state.get("failures", {}),
        "provenance": provenance(state.get("device")),
        "run": {"command": state.get("command"), "workers": state.get("workers"), "backend": state.get("backend"), "device": state.get("device"),
                "threads_per_job": state.get("threads"),
                "wall_s_this_invocation": state.get("wall_s_this_run"),
                "wall_s_all_invocations": sum(float(i.get("wall_s") or 0.0) for i in invocations),
                "invocations": len(invocations), **stage_timing(plan, out)},
    }


def write_outputs(config, plan: Plan, out: Path, state: dict) -> dict[str, Path]:
    from kdel.sweep.collect import collect, write_cases_csv
    from kdel.sweep.figures import write_figures
    from kdel.sweep.results_md import write_results_md

    out = Path(out)
    cases_by_cell = collect(out, plan)
    results = compute_results(config, plan, out, cases_by_cell, state)
    results["n_case_rows_csv"] = write_cases_csv(out / "cases.csv", config, cases_by_cell)
    figures = write_figures(results, cases_by_cell, out / "figures")
    results["figures"] = [str(p.relative_to(out)) for p in figures]
    atomic_write_json(out / "results.json", results)
    write_results_md(out / "RESULTS.md", results)
    return {"results": out / "results.json", "results_md": out / "RESULTS.md", "cases_csv": out / "cases.csv"}
