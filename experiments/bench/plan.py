"""Plan benchmark: the measured collateral of `kdel plan`'s choice vs (a) the default method/site/layer and
(b) the best candidate in hindsight (every candidate applied and audited), and the cost of planning.

    PYTHONPATH=. python experiments/bench/plan.py --from runs/risk [--out runs/risk/plan_bench.json] [--trials K]

Reads the risk validation's directory (experiments/risk/run.py): its predictor fitted on seed 0 and its test
audits (seeds 1 and 2, BA and ER), in which every target was deleted with every candidate (method × site ×
layer) and audited, so the measured outcome of any choice is a case file. For each target fact:
  default    `kdel delete`'s default: rome, site subject_last, the middle layer (n_layers // 2);
  planned    kdel.risk.plan's choice, from predictions only (the audit's outcomes are not read), under each
             planning objective (kdel.risk.plan.OBJECTIVES) ranked from the same scored
             candidates, with no trial edit (`kdel plan --trials 0`);
  trials     `kdel plan`'s default: the headline objective's ranking, then its first `--trials` candidates
             applied as trial audit cases (kdel.risk.trial) and the least measured collateral among those that
             erased; the trial measurements are checked against the audit's case files of the same candidates;
  hindsight  the successful, not wrecked candidate with the least measured collateral (the target's fewest
             other facts flipped, then the least mean p drop).
Collateral: other facts flipped by the edit, and their mean p drop (the facts recalled before). Efficacy: the
edit succeeded and did not wreck the model. Cost: planning one fact from scratch (the per-fact pass, the
target's traces and keys, every candidate's predictions; key statistics cached, as for an edit), with and
without the trials, over one ROME edit at the default, timed in the same process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def case_table(src) -> dict:
    """(fact, method, site, layer) -> measured outcome."""
    out = {}
    for c in src.cases:
        out[(c.spec.fact_ids[0], c.spec.method, c.spec.site, c.spec.layer)] = {
            "flips": int(c.global_.n_flipped_excluding_target), "p_drop": float(c.global_.mean_p_drop_excluding_target),
            "ok": bool(c.success) and not bool(c.wrecked)}
    return out


def bench_audit(audit_dir: Path, rm, cache: Path, methods, sites, objective: str, trials: int) -> list[dict]:
    import torch

    from kdel.delete import DeletionRequest, EditContext, apply_deletion, get_method
    from kdel.facts import load_fact_table
    from kdel.models.loading import load_model_for_table
    from kdel.risk.context import FeatureContext
    from kdel.risk.data import read_audit
    from kdel.risk.plan import OBJECTIVES, make_plan, rank
    from kdel.risk.stage import resolve_hparams
    from kdel.risk.trial import PlanCases, run_trials

    src = read_audit(audit_dir)
    table = load_fact_table(kg=src.kg_dir)
    model, tok = load_model_for_table(src.model_dir, table, "cpu")
    measured = case_table(src)
    targets = sorted({k[0] for k in measured})
    n_layers = model.config.n_layer
    layers = list(range(n_layers))
    hp_of = {m: resolve_hparams(m, None) for m in methods}
    default = ("rome", "subject_last", n_layers // 2)
    rows = []
    for fid in targets:
        t0 = time.perf_counter()
        ctx = FeatureContext(model, tok, table, cache_dir=cache, layers=layers)
        plan = make_plan(ctx, rm, [fid], methods, sites, layers, hp_of, seed=src.cases[0].spec.seed,
                         objective=objective)
        plan_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        plan.update({"methods": list(methods), "sites": list(sites), "layers": layers})
        tried = run_trials(PlanCases(model, tok, table, plan, hp_of, src.cases[0].spec.seed, cache, "cpu"),
                           plan, trials)
        trial_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        handle, _ = apply_deletion(get_method("rome"), EditContext(model, tok, table, cache_dir=cache),
                                   DeletionRequest([table.fact(fid)], layer=default[2], site=default[1],
                                                   seed=src.cases[0].spec.seed))
        edit_s = time.perf_counter() - t0
        handle.revert()
        cands = {k[1:]: v for k, v in measured.items() if k[0] == fid}
        ok = [(v["flips"], v["p_drop"], k) for k, v in cands.items() if v["ok"]]
        hind = min(ok)[2] if ok else None
        chosen = {obj: rank(plan["candidates"], plan["efficacy_threshold"], obj)[1] for obj in OBJECTIVES}
        chosen["trials"] = tried["chosen"]
        agree = [(t["key"], t, measured.get((fid, *t["key"].split("/")[:2], int(t["key"].split("/")[2]))))
                 for t in tried["trials"] if t["status"] == "ok"]
        rows.append({
            "audit": audit_dir.name, "fact_id": fid, "subject": table.fact(fid).subject, "plan_s": plan_s,
            "trial_s": trial_s, "edit_s": edit_s,
            "planned": {obj: [c["method"], c["site"], c["layer"]] for obj, c in chosen.items()},
            "trials": tried["trials"], "chosen_by": tried["chosen_by"],
            "trial_vs_audit_max_abs_diff": {
                "flips": max((abs(t["flips"] - a["flips"]) for _, t, a in agree if a), default=None),
                "p_drop": max((abs(t["mean_p_drop"] - a["p_drop"]) for _, t, a in agree if a), default=None)},
            "planned_predicted_to_erase": plan["chosen_predicted_to_erase"],
            "default": list(default), "hindsight": list(hind) if hind else None,
            "candidates": [{k: c.get(k) for k in ("key", "p_success", "expected_flips", "mean_p_drop",
                                                   "first_order_flips", "first_order_mean_p_drop")}
                           for c in plan["candidates"]],
            "measured": {"/".join(map(str, k)): v for k, v in cands.items()},
            "outcome": {"default": cands.get(default), "hindsight": cands.get(hind) if hind else None,
                        **{f"planned:{obj}": cands.get((c["method"], c["site"], c["layer"]))
                           for obj, c in chosen.items()}},
        })
        ch = chosen[objective]
        print(f"{audit_dir.name} fact {fid}: planned {ch['key']} {rows[-1]['outcome']['planned:' + objective]}, "
              f"with trials {chosen['trials']['key']} {rows[-1]['outcome']['planned:trials']}, default "
              f"{rows[-1]['outcome']['default']}, hindsight {hind} ({plan_s:.1f} s plan, {trial_s:.1f} s trials, "
              f"{edit_s:.1f} s edit)", flush=True)
        del ctx
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return rows


def excess_ci(rows: list[dict], n_boot: int = 2000, seed: int = 0) -> list | None:
    """95% CI of mean planned p drop / mean hindsight p drop - 1: cluster bootstrap over (audit, subject), as
    one subject's facts share the model's representation of it."""
    from kdel.stats.bootstrap import cluster_weights, percentile_ci, weighted_mean

    if not rows or "subject" not in rows[0]:
        return None
    W = cluster_weights([f"{r['audit']}/{r['subject']}" for r in rows], n_boot, seed)
    planned = weighted_mean(W, np.array([r["outcome"]["planned"]["p_drop"] for r in rows]))
    hind = weighted_mean(W, np.array([r["outcome"]["hindsight"]["p_drop"] for r in rows]))
    with np.errstate(invalid="ignore", divide="ignore"):
        lo, hi = percentile_ci(np.where(hind > 0, planned / hind - 1, np.nan))
    return None if lo is None else [lo, hi]


def trials_by_k(rows: list[dict], objective: str) -> list[dict]:
    """The trial rule with every K, from the audits' measured outcomes (a trial measures exactly the audit's case
    of the same candidate: checked per run in `trial_vs_audit_max_abs_diff`): mean p drop over hindsight-best
    [95% CI] and efficacy per K, for choosing K on the fit seed."""
    from kdel.risk.plan import rank
    from kdel.risk.trial import best_trial

    out = []
    n_cand = max(len(r["candidates"]) for r in rows)
    both = [r for r in rows if r["outcome"]["hindsight"] is not None]
    for k in range(n_cand + 1):
        sim = []
        for r in both:
            order = rank(r["candidates"], 0.5, objective)[0]  # the bench's planner threshold (kdel plan's default)
            tried = [{"key": c["key"], "eligible": m["ok"], "flips": m["flips"], "mean_p_drop": m["p_drop"]}
                     for c in order[:k] if (m := r["measured"].get(c["key"])) is not None]
            best = best_trial(tried, objective)
            key = best["key"] if best else order[0]["key"]
            sim.append({**r, "outcome": {**r["outcome"], "planned": r["measured"].get(key)}})
        sim = [r for r in sim if r["outcome"]["planned"] is not None]
        pp = float(np.mean([r["outcome"]["planned"]["p_drop"] for r in sim]))
        hp = float(np.mean([r["outcome"]["hindsight"]["p_drop"] for r in sim]))
        out.append({"k": k, "facts": len(sim), "excess_p_drop": pp / hp - 1, "excess_p_drop_ci95": excess_ci(sim),
                    "efficacy": float(np.mean([r["outcome"]["planned"]["ok"] for r in sim]))})
    return out


def summarise(rows: list[dict], objective: str) -> dict:
    """Default, planned (under `objective`) and hindsight outcomes of `rows`."""
    rows = [{**r, "outcome": {**r["outcome"], "planned": r["outcome"][f"planned:{objective}"]}} for r in rows]
    out = {"facts": len(rows), "objective": objective}
    for who in ("default", "planned", "hindsight"):
        got = [r["outcome"][who] for r in rows if r["outcome"][who] is not None]
        out[who] = {"n": len(got), "flips": float(np.mean([g["flips"] for g in got])) if got else None,
                    "p_drop": float(np.mean([g["p_drop"] for g in got])) if got else None,
                    "efficacy": float(np.mean([g["ok"] for g in got])) if got else None}
    both = [r for r in rows if r["outcome"]["hindsight"] is not None and r["outcome"]["planned"] is not None]
    out["facts_with_a_successful_candidate"] = sum(r["outcome"]["hindsight"] is not None for r in rows)
    out["facts_whose_planned_candidate_was_not_audited"] = sum(r["outcome"]["planned"] is None for r in rows)
    d, p = out["default"], out["planned"]
    out["reduction_vs_default_p_drop"] = None if not d["p_drop"] else 1 - p["p_drop"] / d["p_drop"]
    out["reduction_vs_default_flips"] = None if not d["flips"] else 1 - p["flips"] / d["flips"]
    if both:
        hp = float(np.mean([r["outcome"]["hindsight"]["p_drop"] for r in both]))
        pp = float(np.mean([r["outcome"]["planned"]["p_drop"] for r in both]))
        hf = float(np.mean([r["outcome"]["hindsight"]["flips"] for r in both]))
        pf = float(np.mean([r["outcome"]["planned"]["flips"] for r in both]))
        out["vs_hindsight"] = {"planned_p_drop": pp, "hindsight_p_drop": hp, "planned_flips": pf, "hindsight_flips": hf,
                               "planned_efficacy": float(np.mean([r["outcome"]["planned"]["ok"] for r in both])),
                               "excess_p_drop": pp / hp - 1 if hp > 0 else None,
                               "excess_p_drop_ci95": excess_ci(both)}
    cost = [r["plan_s"] + (r.get("trial_s", 0.0) if objective == "trials" else 0.0) for r in rows]
    ratio = [c / r["edit_s"] for c, r in zip(cost, rows)]
    out["plan_s"] = float(np.median(cost))
    out["edit_s"] = float(np.median([r["edit_s"] for r in rows]))
    out["plan_over_edit_median"] = float(np.median(ratio))
    return out


def markdown(summary: dict, objective: str) -> str:
    f = lambda x, s=".3f": "n/a" if x is None else format(x, s)  # noqa: E731
    lines = ["| graph | facts | choice | efficacy | flips per edit | mean p drop | p drop vs default | "
             "p drop vs hindsight-best [95% CI] | plan / edit time |", "|---|---|---|---|---|---|---|---|---|"]
    for key, by_obj in summary.items():
        s = by_obj[objective]
        vh = s.get("vs_hindsight") or {}
        for who in ("default", "planned", "hindsight"):
            w = s[who]
            extra = ["", "", ""]
            if who == "planned":
                red = s["reduction_vs_default_p_drop"]
                extra = ["n/a" if red is None else f"{red:.0%} less" if red >= 0 else f"{-red:.0%} more",
                         "n/a" if vh.get("excess_p_drop") is None else f"{vh['excess_p_drop']:+.0%}" + (
                             "" if not vh.get("excess_p_drop_ci95") else
                             " [{:+.0%}, {:+.0%}]".format(*vh["excess_p_drop_ci95"])),
                         f"{f(s['plan_over_edit_median'], '.1f')}× ({f(s['plan_s'], '.1f')} s / {f(s['edit_s'], '.1f')} s)"]
            label = f"planned ({objective})" if who == "planned" else who
            lines.append(f"| {key} | {s['facts']} | {label} | {f(w['efficacy'], '.2f')} | {f(w['flips'], '.2f')} | "
                         f"{f(w['p_drop'], '.4f')} | {extra[0]} | {extra[1]} | {extra[2]} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="plan benchmark")
    ap.add_argument("--from", dest="src", type=Path, required=True, help="the risk validation directory")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--methods", default="rome")
    ap.add_argument("--sites", default="subject_last,last")
    ap.add_argument("--objective", default=None, help="the planning objective of the trials' ranking (default: "
                    "the planner's); every objective is also measured without trials")
    ap.add_argument("--trials", type=int, default=None, help="trial edits per fact (default: the planner's)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from kdel.risk.model import load_risk_model
    from kdel.risk.plan import DEFAULT_OBJECTIVE, OBJECTIVES, check_objective
    from kdel.risk.trial import DEFAULT_TRIALS

    objective = check_objective(args.objective or DEFAULT_OBJECTIVE)
    trials = DEFAULT_TRIALS if args.trials is None else args.trials

    t_all = time.perf_counter()
    rm = load_risk_model(args.src / "risk_model.json")
    rows = []
    for seed in args.seeds.split(","):
        for topo in ("ba", "er"):
            rows += bench_audit(args.src / "audits" / f"{topo}-{seed}", rm, args.src / "cache",
                                args.methods.split(","), args.sites.split(","), objective, trials)
    parts = {"BA": [r for r in rows if r["audit"].startswith("ba")],
             "ER": [r for r in rows if r["audit"].startswith("er")], "both": rows}
    choices = ["trials", *OBJECTIVES]
    summary = {k: {obj: summarise(rs, obj) for obj in choices} for k, rs in parts.items()}
    by_k = {k: trials_by_k(rs, objective) for k, rs in parts.items()}
    from kdel.provenance import provenance

    out = args.out or args.src / "plan_bench.json"
    rec = {"command": "PYTHONPATH=. python experiments/bench/plan.py " + " ".join(argv or sys.argv[1:]),
           "objective": objective, "trials": trials, "summary": summary, "trials_by_k": by_k, "rows": rows,
           "wall_s": time.perf_counter() - t_all, "provenance": provenance("cpu")}
    out.write_text(json.dumps(rec, indent=2, default=float) + "\n")
    title = {"trials": f"`kdel plan` (objective `{objective}`, {trials} trial edits per fact)",
             **{o: f"Objective `{o}`, prediction only (`--trials 0`)" for o in OBJECTIVES}}
    md = "\n\n".join(f"{title[obj]}:\n\n" + markdown(summary, obj) for obj in choices)
    md += ("\n\nThe trial rule with every K (from the audits' measured outcomes), mean p drop vs hindsight-best "
           "[95% CI], efficacy:\n\n| K | " + " | ".join(by_k) + " |\n|---|" + "---|" * len(by_k) + "\n" + "\n".join(
               f"| {i} | " + " | ".join(
                   f"{v[i]['excess_p_drop']:+.0%}" + ("" if not v[i]["excess_p_drop_ci95"] else
                                                      " [{:+.0%}, {:+.0%}]".format(*v[i]["excess_p_drop_ci95"]))
                   + f", {v[i]['efficacy']:.2f}" for v in by_k.values()) + " |"
               for i in range(len(next(iter(by_k.values()))))))
    (out.with_suffix(".md")).write_text(md + "\n")
    print(md)
    print(f"wall {rec['wall_s'] / 60:.1f} min -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
