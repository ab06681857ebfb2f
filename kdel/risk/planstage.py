"""The plan stage (`kdel plan`): score every candidate before editing, confirm the best-ranked few by trial edits
(kdel.risk.trial; `trials=0`: prediction only), choose one, and with `apply` carry it out and verify it with a
full audit case.

Applying runs the chosen deletion as one audit case (kdel.audit.execute.CaseExecutor: the edit, one batched
evaluation of every probe, the revert check) and saves the edited weights while the edit is applied, so the
written model is exactly the audited edit. OUT (kdel's output rule: missing, empty or an edited-model
directory, never an input) receives, in one rename:
  the edited model files, kdel_model.json (copied), edit.json (kdel-edit/1),
  plan.json (kdel-plan/1: the candidates, the choice, predicted vs measured), case.json (the audit case).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kdel.audit.execute import CaseExecutor
from kdel.errors import UserError

PLAN_FORMAT = "kdel-plan/1"


def facts_for(table, fact_ids, subject: str | None) -> list[int]:
    if (not fact_ids) == (subject is None):
        raise UserError("give --fact ID (repeatable) or --subject NAME, not both")
    if subject is not None:
        ids = [f.id for f in table.facts if f.subject == subject]
        if not ids:
            raise UserError(f"no fact has the subject {subject!r}")
        return ids
    if len(set(fact_ids)) != len(fact_ids):
        raise UserError("the same --fact id is given twice")
    for fid in fact_ids:
        table.fact(fid)
    return list(fact_ids)


def run_plan(model, *, kg=None, facts=None, corpus=None, fact_ids=(), subject: str | None = None,
             methods=None, sites=("subject_last", "last"), layers=None, risk_model=None, hparams=None,
             apply: bool = False, out=None, min_success: float | None = None, cache_dir=None, device: str = "cpu", seed: int = 0,
             objective: str | None = None, trials: int | None = None, progress: bool = False) -> dict:
    from kdel.delete.stage import default_cache_dir
    from kdel.facts import load_fact_table
    from kdel.models.loading import check_model_dir, load_model_for_table
    from kdel.outputs import check_out_dir
    from kdel.risk.context import FeatureContext
    from kdel.risk.model import load_risk_model
    from kdel.risk.plan import DEFAULT_METHODS, DEFAULT_OBJECTIVE, MIN_SUCCESS, check_objective, make_plan
    from kdel.risk.stage import check_method_site, resolve_hparams
    from kdel.runtime import resolve_device

    if risk_model is None:
        raise UserError("kdel plan needs a fitted --risk-model (kdel risk fit): efficacy is predicted by it")
    if apply and out is None:
        raise UserError("--apply needs --out EDITED (the directory for the edited model)")
    if out is not None and not apply:
        raise UserError("--out goes with --apply")
    objective = check_objective(objective or DEFAULT_OBJECTIVE)
    from kdel.risk.trial import DEFAULT_TRIALS, PlanCases, run_trials

    trials = DEFAULT_TRIALS if trials is None else int(trials)
    if trials < 0:
        raise UserError(f"--trials must be >= 0, got {trials}")
    rm = load_risk_model(risk_model)
    methods = list(methods or DEFAULT_METHODS)
    for m in methods:
        for s in sites:
            check_method_site(m, s, rm)
    hparams = dict(hparams or {})
    extra = sorted(set(hparams) - set(methods))
    if extra:
        raise UserError(f"--hparams for {', '.join(extra)}, which is not a candidate method ({', '.join(methods)})")
    hp_of = {m: resolve_hparams(m, hparams.get(m)) for m in methods}
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if out is not None:
        check_out_dir(out, "edit", inputs=[model, kg, facts, corpus, risk_model, cache, *hparams.values()])
    check_model_dir(model)
    table = load_fact_table(kg=kg, facts=facts, corpus=corpus)
    ids = facts_for(table, list(fact_ids or []), subject)
    dev = resolve_device(device)
    lm, tok = load_model_for_table(model, table, dev)
    from kdel.models.adapter import ModelAdapter

    n_layers = ModelAdapter(lm, tok).n_layers
    layers = list(range(n_layers)) if layers is None else sorted(set(int(x) for x in layers))
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise UserError(f"--layers: layer {layer} is out of range: this model has layers 0..{n_layers - 1}")
    ctx = FeatureContext(lm, tok, table, cache_dir=cache, layers=layers, trace_seed=seed)
    plan = make_plan(ctx, rm, ids, methods, sites, layers, hp_of, seed,
                     MIN_SUCCESS if min_success is None else min_success, objective=objective)
    plan.update({"format": PLAN_FORMAT, "model": str(Path(model).resolve()), "risk_model": str(Path(risk_model).resolve()),
                 "methods": methods, "sites": list(sites), "layers": layers, "seed": seed, "hparams": hp_of,
                 "trials_requested": trials})
    cases = PlanCases(lm, tok, table, plan, hp_of, seed, cache, dev) if (trials or apply) else None
    plan = run_trials(cases, plan, trials, progress=progress)
    if apply:
        plan["measured"] = apply_plan(cases, plan, Path(model), Path(out))
    return plan


def apply_plan(cases, plan: dict, model_dir: Path, out: Path) -> dict:
    """Apply the chosen candidate as one audit case (kdel.risk.trial.PlanCases), write OUT, return the measured
    numbers."""
    from kdel.delete.stage import EDIT_FORMAT
    from kdel.io import atomic_write_json, staged_dir
    from kdel.models.loading import MODEL_META, save_model
    from kdel.models.scoring import score_targets

    lm, tok, table, seed = cases.lm, cases.tok, cases.table, cases.seed
    ch = plan["chosen"]
    ids = plan["fact_ids"]
    spec = cases.spec(ch)
    hp = spec.hparams
    after: dict = {}
    with staged_dir(out) as staging:

        def on_applied(_applied):
            s = score_targets(lm, tok, [table.fact(i).prompt for i in ids], [table.fact(i).target for i in ids])
            after["recalled"] = [bool(x) for x in s.recalled]
            after["p"] = [float(x) for x in s.prob]
            save_model(lm, tok, staging)

        ex = SavingExecutor(lm, tok, table, cases.config, cases.base, cases.cache, on_applied, cases.device)
        rec = ex.run(spec)
        if rec.status != "ok":
            raise UserError(f"the chosen deletion failed: {rec.error}")
        measured = measured_numbers(rec, ids, after)
        plan_json = {**plan, "measured": measured}
        if (model_dir / MODEL_META).exists():
            shutil.copyfile(model_dir / MODEL_META, staging / MODEL_META)
        atomic_write_json(staging / "edit.json", {
            "format": EDIT_FORMAT, "source_model": str(model_dir.resolve()), "facts_source": table.source,
            "facts_source_hash": table.source_hash, "method": ch["method"], "objective": "erase", "site": ch["site"],
            "layer": ch["layer"], "layers": rec.edit.layers, "sequential": False, "seed": seed, "hparams": hp,
            "efficacy": sum(measured["erased"]) / len(ids), "planned": True,
            "facts": [{"fact_id": i, "subject": table.fact(i).subject, "target": table.fact(i).target,
                       "recalled_after": r, "p_after": p, "success": not r}
                      for i, r, p in zip(ids, after["recalled"], after["p"])],
            "total_delta_norm": rec.delta_norm, "records": [rec.edit.to_json()],
            "provenance": rec.provenance.to_json() if rec.provenance is not None else None})
        atomic_write_json(staging / "plan.json", plan_json)
        atomic_write_json(staging / "case.json", rec.to_json())
    return measured


def measured_numbers(rec, ids, after) -> dict:
    g = rec.global_
    unrel = rec.groups.get("unrelated")
    return {
        "erased": [not r for r in after["recalled"]],
        "flips": int(g.n_flipped_excluding_target),
        "global_accuracy_drop": g.acc_drop,
        "mean_p_drop": g.mean_p_drop_excluding_target,
        "unrelated_accuracy_after": unrel.acc_after_recalled if unrel is not None else None,
        "wrecked": bool(rec.wrecked),
        "case_id": rec.case_id,
    }


class SavingExecutor(CaseExecutor):
    """An audit CaseExecutor that hands the edited model to `on_applied` just before reverting it (after the
    case's evaluation pass: CaseExecutor.run applies, evaluates, then reverts)."""

    def __init__(self, model, tok, table, config, base, cache_dir, on_applied, device):
        super().__init__(model, tok, table, config, base, cache_dir=cache_dir, device=str(device))
        self.on_applied = on_applied

    def revert(self, a):
        self.on_applied(a)
        return super().revert(a)
