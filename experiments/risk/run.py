"""Validation of the risk predictor across seeds (one command; RESULTS.md written by this code).

    PYTHONPATH=. python experiments/risk/run.py --out runs/risk [--jobs 2] [--per-bin 2] [--test-seeds 1,2]
        [--results-md experiments/risk/RESULTS.md]

1. For BA and ER × seed 0 and the test seeds: a KG, a `tiny` model and an audit (ROME at both sites and every
   layer, --per-bin targets per popularity bin) — experiments/risk/stages.py; resumable.
2. Fit the learned predictor on seed 0's audits (BA and ER) with `kdel risk fit`'s code (DIR/risk_model.json).
3. Recompute the features of the test seeds (new KGs, new models), predict, and score against the audits'
   measured outcomes (experiments/risk/evaluate.py), with CIs from a cluster bootstrap over subjects.
4. Write DIR/results.json, DIR/figures/*.png and RESULTS.md (with kdel.provenance).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="working directory (KGs, models, audits, results)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel training processes / audit workers")
    ap.add_argument("--per-bin", type=int, default=2, help="targets per popularity bin in each audit")
    ap.add_argument("--test-seeds", default="1,2", help="comma-separated seeds to test on (seed 0 is fitted on)")
    ap.add_argument("--entities", type=int, default=100)
    ap.add_argument("--relations", type=int, default=25)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--results-md", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    args = ap.parse_args(argv)

    import torch

    from kdel.runtime import install_warning_handler

    install_warning_handler()  # kdel's one-line warnings (audit workers install their own)
    torch.set_num_threads(1)
    from experiments.risk.stages import Settings, build_models, recorded_timings, run_audits

    t_start = time.perf_counter()
    out = args.out
    try:
        test_seeds = tuple(int(x) for x in args.test_seeds.split(","))
    except ValueError:
        ap.error(f"--test-seeds must be comma-separated integers, got {args.test_seeds!r}")
    if not test_seeds or 0 in test_seeds or len(set(test_seeds)) != len(test_seeds):
        ap.error("--test-seeds: distinct seeds other than 0 (the training seed)")
    s = Settings(per_bin=args.per_bin, entities=args.entities, relations=args.relations, jobs=args.jobs,
                 seeds=(0, *test_seeds))
    wall = {}
    t0 = time.perf_counter()
    build_models(out, s)
    wall["kgs_and_models_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_audits(out, s)
    wall["audits_s"] = time.perf_counter() - t0

    from kdel.risk.data import Rows, audit_rows, read_audit
    from kdel.risk.fit import FitSettings
    from kdel.risk.fitstage import run_fit
    from kdel.risk.model import load_risk_model

    from experiments.risk.evaluate import adjust_differences, evaluate
    from experiments.risk.figures import write_figures
    from experiments.risk.results_md import write_results

    cache = out / "cache"
    train = [out / "audits" / f"{t}-{seed}" for seed in s.train_seeds for t in s.topologies]
    t0 = time.perf_counter()
    model_path = out / "risk_model.json"
    _, cv = run_fit(train, model_path, FitSettings(), force=True, cache_dir=cache, progress=False)
    wall["fit_s"] = time.perf_counter() - t0
    model = load_risk_model(model_path)

    t0 = time.perf_counter()
    per_topology, all_rows = {}, []
    test_seeds = [seed for seed in s.seeds if seed not in s.train_seeds]
    for t in s.topologies:
        rows = Rows.concat([audit_rows(read_audit(out / "audits" / f"{t}-{seed}"), cache) for seed in test_seeds])
        all_rows.append(rows)
        per_topology[t] = rows
    wall["test_features_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = {"both": evaluate(Rows.concat(all_rows), model, args.n_boot)}
    for t, rows in per_topology.items():
        results[t] = evaluate(rows, model, args.n_boot)
    n_comparisons = adjust_differences(results)
    wall["evaluate_s"] = time.perf_counter() - t0
    figures = write_figures(out / "figures", Rows.concat(all_rows), model, results)
    wall["total_s"] = time.perf_counter() - t_start

    from kdel.provenance import provenance

    record = {
        "command": "PYTHONPATH=. python experiments/risk/run.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "settings": {k: v for k, v in s.__dict__.items() if k != "timings"},
        "stage_timings": s.timings, "recorded_timings": recorded_timings(out, s), "wall": wall, "cv": cv,
        "test": results, "n_comparisons": n_comparisons,
        "train_audits": [str(p) for p in train], "test_seeds": test_seeds,
        "model": model.training, "provenance": provenance("cpu"),
    }
    (out / "results.json").write_text(json.dumps(record, indent=2, sort_keys=True, default=float) + "\n")
    write_results(args.results_md, record, figures)
    print(f"wrote {args.results_md} and {out / 'results.json'} in {wall['total_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
