"""Deletion efficacy benchmark: every registered method erases 50 facts of the trained `tiny` model on the
default KG (200 entities), one at a time, at a setting calibrated on separate facts.

    python experiments/bench/deletion.py [--run-dir runs/bench-deletion] [--n 50] [--calib 20] [--sequential 20]
                                         [--methods alphaedit rmu simnpo memit] [--topology ba|er] [--resume]

Generates and trains the model on first use (cached under the run directory, which is gitignored; `--topology
er` builds the Erdős–Rényi KG of the same size instead of the default BA one). For each
method: the first setting of its grid (ordered from least to most invasive) that reaches >= 90% efficacy
under the collateral bound on the calibration facts, else the best one; then efficacy, `unrelated`
accuracy after, mean ||ΔW|| and seconds per edit on the evaluation facts; then sequential deletion of
`--sequential` facts for the gradient methods. Prints markdown tables and writes results.json (with the
command and kdel.provenance) after every method, so `--resume` continues an interrupted run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from kdel.models.positions import SITES  # the one definition of the edit sites

# Settings tried in order on the calibration facts (least invasive first); {} = the method's defaults.
# `site` and `layer` keys go to the deletion request, the others to the method's hyperparameters.
LAYER_GRID = [{"site": s, "layer": l} for s in SITES for l in range(4)]
# Locate-then-edit methods: every site x layer is measured (the full table is reported); among the settings
# reaching >= 90% efficacy the one kept has the highest efficacy, then unrelated accuracy (2 decimals), then the
# smallest ||ΔW|| (the least invasive edit).
FULL_GRID_METHODS = ("rome", "r-rome", "memit", "alphaedit")
GRIDS: dict[str, list[dict]] = {
    "rome": LAYER_GRID,
    "r-rome": LAYER_GRID,
    "memit": LAYER_GRID,
    "alphaedit": LAYER_GRID,
    "ft": [{}, {"linf_bound": 3e-2}, {"window": 3}, {"window": 3, "linf_bound": 3e-2}],
    "ga": [{"lr": 1e-4, "steps": 100}, {}, {"lr": 3e-4, "steps": 100}],
    "npo": [{"lr": 1e-4, "steps": 100}, {}, {"lr": 3e-4, "steps": 100}],
    "simnpo": [{"lr": 1e-4, "steps": 100}, {}, {"lr": 3e-4, "steps": 100}],
    "rmu": [{}, {"steering_scale": 4.0}, {"lr": 3e-3}],
}
REQUEST_KEYS = ("site", "layer")


def split_setting(setting: dict) -> tuple[dict, dict]:
    """(request keyword arguments, hyperparameter overrides) of a grid entry."""
    req = {k: v for k, v in setting.items() if k in REQUEST_KEYS}
    return req, {k: v for k, v in setting.items() if k not in REQUEST_KEYS}


def ensure_model(run_dir: Path, topology: str = "ba") -> tuple[Path, Path]:
    """The default KG (or its ER twin) and a `tiny` model trained on it, generated once under run_dir."""
    kg_dir, model_dir = run_dir / "kg", run_dir / "model"
    if not (kg_dir / "kg.json").exists():
        from synth_kg import KGConfig, generate

        generate(KGConfig(topology=topology)).save(kg_dir)
    if not (model_dir / "config.json").exists():
        from kdel.train import TrainConfig, train_model

        train_model(kg_dir, model_dir, TrainConfig(preset="tiny", seed=0))
    return kg_dir, model_dir


def load_context(kg_dir: Path, model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kdel.delete import EditContext
    from kdel.facts import FactTable
    from synth_kg import KnowledgeGraph

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    return EditContext(model, tok, FactTable.from_kg(KnowledgeGraph.load(kg_dir)))


def split_facts(ctx, n_eval: int, n_calib: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Disjoint seeded samples of facts recalled before: (calibration ids, evaluation ids)."""
    from kdel.delete.degradation import recall_all

    recalled = [i for i, r in enumerate(recall_all(ctx)) if r]
    picked = random.Random(seed).sample(recalled, min(len(recalled), n_eval + n_calib))
    return sorted(picked[:n_calib]), sorted(picked[n_calib:])


def make_method(name: str, setting: dict):
    from kdel.delete import get_method

    overrides = split_setting(setting)[1]
    method = get_method(name)
    if not overrides:
        return method
    try:
        from kdel.delete.hparams import load_hparams

        hp = load_hparams(method.hparams_class, overrides=overrides)
    except ImportError:
        hp = method.hparams_class(**overrides)
    return get_method(name, hp)


def run_setting(name: str, setting: dict, ctx, fact_ids, pool):
    from kdel.delete.degradation import evaluate_erasures, summarize

    req = split_setting(setting)[0]
    return summarize(name, evaluate_erasures(make_method(name, setting), ctx, fact_ids, pool, **req))


def calibrate(name: str, ctx, calib_ids, pool, log=print, reuse: dict | None = None,
              full: bool | None = None) -> tuple[dict, object, list]:
    """(chosen setting, its calibration summary, [(setting, summary)] for every setting tried).

    `reuse`: {json of a setting: stored summary dict} from an earlier results file on the same facts.
    `full`: measure every setting (default: for the locate-then-edit methods), else stop at the first >= 0.9."""
    from kdel.delete.degradation import EfficacySummary

    full = name in FULL_GRID_METHODS if full is None else full
    tried = []
    for setting in GRIDS.get(name, [{}]):
        key = json.dumps(setting, sort_keys=True)
        if reuse and key in reuse:
            summary = EfficacySummary(**reuse[key])
        else:
            summary = run_setting(name, setting, ctx, calib_ids, pool)
        tried.append((setting, summary))
        log(f"  calib {name} {setting or 'defaults'}: efficacy {summary.efficacy:.2f} (raw {summary.raw_efficacy:.2f}), "
            f"unrelated {summary.mean_unrelated_acc:.3f}, collateral min {summary.min_collateral_acc:.3f}, "
            f"dW {summary.mean_delta_norm:.2f}, {summary.mean_seconds:.2f} s", flush=True)
        if not full and summary.efficacy >= 0.9:
            break
    ok = [t for t in tried if t[1].efficacy >= 0.9]
    if full and ok:
        # unrelated accuracy compared to 2 decimals: differences of one fact in a few hundred are noise
        best = max(ok, key=lambda t: (t[1].efficacy, round(t[1].mean_unrelated_acc, 2), -t[1].mean_delta_norm))
    else:
        best = max(tried, key=lambda t: (t[1].efficacy, t[1].raw_efficacy, t[1].mean_unrelated_acc))
    return best[0], best[1], tried


def finished_methods(old: dict, new: dict, methods: list[str]) -> dict:
    """The finished (not failed) method entries of an earlier results file of the same command, facts and commit."""
    same = (old.get("command") == new["command"] and old.get("calibration_ids") == new["calibration_ids"]
            and old.get("evaluation_ids") == new["evaluation_ids"]
            and (old.get("provenance") or {}).get("git_commit") == new["provenance"].get("git_commit")
            and not (old.get("provenance") or {}).get("git_dirty", True) and not new["provenance"].get("git_dirty", True))
    if not same:
        print("--resume: the results file is from another command, facts or commit (or a dirty tree): starting over",
              file=sys.stderr)
        return {}
    return {n: e for n, e in old.get("methods", {}).items() if n in methods and "error" not in e}


def fmt(x: float, digits: int = 3) -> str:
    return "nan" if x != x else f"{x:.{digits}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default="runs/bench-deletion")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--calib", type=int, default=20)
    ap.add_argument("--sequential", type=int, default=20)
    ap.add_argument("--methods", nargs="*", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--topology", choices=("ba", "er"), default="ba",
                    help="KG the model is trained on when the run directory has none (default: ba, the default KG)")
    ap.add_argument("--set", action="append", default=[], metavar="METHOD:KEY=VALUE",
                    help="hyperparameter added to every grid setting of METHOD (value parsed as JSON), repeatable")
    ap.add_argument("--grid", action="append", default=[], metavar="METHOD:JSON",
                    help="replace METHOD's grid by this JSON list of settings (all of them are measured), repeatable; "
                         "with --n 0 only the calibration facts are measured")
    ap.add_argument("--out", default=None, help="results file (default: RUN_DIR/results.json)")
    ap.add_argument("--reuse-calibration", default=None, metavar="RESULTS.json",
                    help="take the calibration summaries of settings already measured there (same facts and seed)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the methods already finished in --out when it was written by the same command on the "
                         "same facts and code commit (an interrupted run continues)")
    ap.add_argument("--only-layers", type=int, nargs="*", default=None,
                    help="restrict the site x layer grid (MEMIT: layers 0 and 1, and 2 and 3, give the same window)")
    args = ap.parse_args(argv)
    full_grid = set(FULL_GRID_METHODS)
    custom = set()
    for item in args.grid:
        method_name, _, value = item.partition(":")
        GRIDS[method_name] = json.loads(value)
        full_grid.add(method_name)
        custom.add(method_name)
    for item in args.set:
        method_name, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        GRIDS[method_name] = [{**g, key: json.loads(value)} for g in GRIDS.get(method_name, [{}])]
    out_path = Path(args.out) if args.out else Path(args.run_dir) / "results.json"
    if args.only_layers is not None:
        for name in set(FULL_GRID_METHODS) - custom:
            GRIDS[name] = [g for g in GRIDS[name] if g.get("layer") in args.only_layers]

    import torch

    from kdel.delete import list_methods
    from kdel.delete.degradation import sequential_deletion

    torch.set_num_threads(1)
    run_dir = Path(args.run_dir)
    ctx = load_context(*ensure_model(run_dir, args.topology))
    pool = ctx.table.unrelated_sample(200, args.seed)
    ctx.unrelated_pool = pool  # the retain sets of ga/npo/ft avoid the facts the benchmark measures damage on
    calib_ids, eval_ids = split_facts(ctx, args.n, args.calib, args.seed)
    from kdel.provenance import provenance

    given = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--resume"]  # the same run, resumed
    command = "python experiments/bench/deletion.py " + " ".join(given)
    results = {"command": command, "provenance": provenance("cpu"), "facts": len(ctx.table),
               "calibration_ids": calib_ids, "evaluation_ids": eval_ids, "methods": {}}
    methods = args.methods or list_methods()
    if args.resume and out_path.is_file():
        results["methods"] = finished_methods(json.loads(out_path.read_text()), results, methods)
    reuse_all = {}
    if args.reuse_calibration:
        old = json.loads(Path(args.reuse_calibration).read_text())
        if old.get("calibration_ids") == calib_ids:
            for n, e in old.get("methods", {}).items():
                reuse_all[n] = {json.dumps(g["setting"], sort_keys=True): g["summary"] for g in e.get("grid", [])}
        else:
            print("--reuse-calibration: other calibration facts, ignored", file=sys.stderr)
    for name in methods:
        if name in results["methods"]:
            print(f"{name}: finished in {out_path}, kept", file=sys.stderr, flush=True)
            continue
        t0 = time.perf_counter()
        try:
            overrides, calib, tried = calibrate(name, ctx, calib_ids, pool, reuse=reuse_all.get(name),
                                                full=name in full_grid)
            summary = run_setting(name, overrides, ctx, eval_ids, pool) if eval_ids else calib
        except Exception as e:  # a method that cannot run here is reported, not fatal
            print(f"{name}: failed: {e}", file=sys.stderr)
            results["methods"][name] = {"error": str(e)}
            continue
        entry = {"setting": overrides, "calibration": calib.to_json(), "evaluation": summary.to_json(),
                 "grid": [{"setting": st, "summary": sm.to_json()} for st, sm in tried]}
        if args.sequential and eval_ids:
            seq_ids = eval_ids[: args.sequential]
            steps = sequential_deletion(make_method(name, overrides), ctx, seq_ids, **split_setting(overrides)[0])
            entry["sequential"] = [s.to_json() for s in steps]
        entry["bench_seconds"] = time.perf_counter() - t0
        results["methods"][name] = entry
        print(f"{name}: done in {entry['bench_seconds']:.0f} s", file=sys.stderr, flush=True)
        out_path.write_text(json.dumps(results, indent=1))  # partial results survive an interrupted run

    lines = [
        f"Erase, {len(eval_ids)} facts of the `tiny` model on the {str(ctx.table.kg.config.get('topology', 'ba')).upper()} KG "
        f"({len(ctx.table)} facts); "
        f"setting chosen on {len(calib_ids)} separate calibration facts.",
        "",
        "| method | setting | efficacy (collateral ≥ 0.9) | erased (raw) | erased on all training prompts | "
        "unrelated acc after | min collateral acc | mean ‖ΔW‖ | s / edit | steps |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in results["methods"].items():
        if "error" in e:
            lines.append(f"| {name} | failed: {e['error']} | | | | | | | | |")
            continue
        s = e["evaluation"]
        setting = ", ".join(f"{k}={v}" for k, v in e["setting"].items()) or "defaults"
        lines.append(
            f"| {name} | {setting} | {fmt(s['efficacy'], 2)} | {fmt(s['raw_efficacy'], 2)} | "
            f"{fmt(s['erased_all_prompts'], 2)} | {fmt(s['mean_unrelated_acc'])} | {fmt(s['min_collateral_acc'])} | "
            f"{fmt(s['mean_delta_norm'])} | {fmt(s['mean_seconds'])} | {fmt(s['mean_steps'], 1)} |"
        )
    grids = {n: e["grid"] for n, e in results["methods"].items()
             if n in FULL_GRID_METHODS and n not in custom and "grid" in e}
    if grids:
        lines += ["", f"Calibration sweep ({len(calib_ids)} facts): efficacy (collateral ≥ 0.9) / unrelated acc after / "
                  "mean ‖ΔW‖ / s per edit.", "",
                  "| method | site | layer 0 | layer 1 | layer 2 | layer 3 |", "|---|---|---|---|---|---|"]
        for n, grid in grids.items():
            for site in SITES:
                by_layer = {g["setting"].get("layer"): g["summary"] for g in grid if g["setting"].get("site") == site}
                cells = [by_layer.get(layer) for layer in range(4)]
                lines.append(f"| {n} | {site} | " + " | ".join(
                    "not run" if c is None else
                    f"{fmt(c['efficacy'], 2)} / {fmt(c['mean_unrelated_acc'])} / {fmt(c['mean_delta_norm'], 1)} / "
                    f"{fmt(c['mean_seconds'], 2)}" for c in cells) + " |")
    seq = {n: e["sequential"] for n, e in results["methods"].items() if e.get("sequential")}
    if seq:
        lines += ["", "Sequential erasure (no revert between edits): efficacy over the facts deleted so far / "
                  "global accuracy over the facts never deleted.", "",
                  "| step | " + " | ".join(seq) + " |", "|---|" + "---|" * len(seq)]
        n_steps = max(len(v) for v in seq.values())
        for k in range(n_steps):
            cells = [f"{fmt(v[k]['efficacy'], 2)} / {fmt(v[k]['global_acc'])}" if k < len(v) else "" for v in seq.values()]
            if k in (0, 4, 9, 14, 19) or k == n_steps - 1:
                lines.append(f"| {k + 1} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    results["markdown"] = table
    out_path.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
