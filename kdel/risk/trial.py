"""Confirm a plan by trial (`kdel plan --trials K`): the K best-ranked candidates are applied one at a time, each
as one audit case (the edit, one batched evaluation of every fact, the revert and its check), and the plan
takes the least *measured* collateral among those that erased without wrecking the model.

Why: the predictor ranks one fact's candidates well but often not the best one first (close candidates, e.g.
the last token at layers 2 and 3 of the toy model); a trial settles those near-ties exactly. The collateral
is measured as the audit measures it (every other fact recalled before the edit), ordered by the plan's
objective: p_drop (the default) by mean p drop, then flips; flips the other way round. When no trial erases,
the plan keeps the predicted choice and says so. Nothing is kept: every trial edit is reverted, and the
revert is verified, before the next one. K = 3 was chosen on the risk validation's fit seed (docs/risk.md).
"""

from __future__ import annotations

import time

from kdel.errors import UserError

DEFAULT_TRIALS = 3

MEASURED_ORDER = {  # sort key of a trial's measured numbers; first_order_* objectives order as their base
    "p_drop": lambda m: (m["mean_p_drop"], m["flips"]),
    "flips": lambda m: (m["flips"], m["mean_p_drop"]),
}


def best_trial(trials: list[dict], objective: str) -> dict | None:
    """The eligible trial (erased, did not wreck) with the least measured collateral by `objective`, or None."""
    eligible = [t for t in trials if t["eligible"]]
    return min(eligible, key=MEASURED_ORDER[objective.removeprefix("first_order_")]) if eligible else None


class PlanCases:
    """Audit cases of a plan's candidates on one loaded model: one audit configuration and one pass of the
    unedited model's scores, shared by the trials and by `--apply`."""

    def __init__(self, lm, tok, table, plan: dict, hp_of: dict, seed: int, cache, device):
        """`plan`: make_plan's output with the candidate `methods`, `sites` and `layers` added (as run_plan does)."""
        from kdel.audit.cases import AuditConfig, popularity_bins
        from kdel.audit.evaluate import BaseScores

        self.lm, self.tok, self.table, self.hp_of, self.seed, self.cache = lm, tok, table, hp_of, seed, cache
        self.device = str(device)
        self.ids = list(plan["fact_ids"])
        self.config = AuditConfig(methods=tuple(plan["methods"]), sites=tuple(plan["sites"]),
                                  layers=tuple(plan["layers"]), seed=seed)
        pool = table.unrelated_sample(self.config.unrelated_size, self.config.seed)
        self.base = BaseScores.compute(lm, tok, table, pool)
        self.bins = popularity_bins(table, self.config.n_bins)
        self._executor = None

    def spec(self, cand: dict):
        from kdel.audit.cases import CaseSpec, case_id_for

        hp = self.hp_of[cand["method"]]
        sbins, obins = self.bins
        ids = self.ids
        return CaseSpec(case_id=case_id_for(ids, cand["method"], "erase", cand["layer"], cand["site"], hp, self.seed),
                        fact_ids=ids, method=cand["method"], objective="erase", layer=cand["layer"],
                        site=cand["site"], hparams=hp, seed=self.seed, tracing_effect=cand["tracing_effect"][0],
                        subject_bin=int(sbins[ids[0]]), object_bin=int(obins[ids[0]]))

    def executor(self):
        from kdel.audit.execute import CaseExecutor

        if self._executor is None:
            self._executor = CaseExecutor(self.lm, self.tok, self.table, self.config, self.base,
                                          cache_dir=self.cache, device=self.device)
        return self._executor


def trial_numbers(rec) -> dict:
    """A trial case's measured outcome (the audit's own numbers)."""
    if rec.status != "ok":
        return {"status": rec.status, "error": rec.error, "eligible": False}
    g = rec.global_
    return {"status": "ok", "success": bool(rec.success), "wrecked": bool(rec.wrecked),
            "flips": int(g.n_flipped_excluding_target), "mean_p_drop": float(g.mean_p_drop_excluding_target or 0.0),
            "global_accuracy_drop": float(g.acc_drop), "eligible": bool(rec.success) and not bool(rec.wrecked)}


def run_trials(cases: PlanCases, plan: dict, k: int, progress: bool = False) -> dict:
    """Try the first `k` candidates of the plan's order; return the plan with `trials` and the new choice."""
    if k <= 0:
        return {**plan, "trials": [], "chosen_by": "prediction"}
    ex = cases.executor()
    trials = []
    for cand in plan["candidates"][:k]:
        t0 = time.perf_counter()
        rec = ex.run(cases.spec(cand))
        if rec.status == "ok" and rec.revert_verified is False:
            raise UserError(f"trial of {cand['key']}: the edit could not be reverted exactly; nothing was written")
        trials.append({"key": cand["key"], **trial_numbers(rec), "seconds": time.perf_counter() - t0})
        if progress:
            t = trials[-1]
            print(f"trial {len(trials)}/{k} {cand['key']}: " + (
                f"erased {'yes' if t.get('success') else 'no'}, flips {t['flips']}, mean p drop {t['mean_p_drop']:.4f}"
                if t["status"] == "ok" else f"failed ({t['error']})"), flush=True)
    best = best_trial(trials, plan["objective"])
    out = {**plan, "trials": trials, "predicted_choice": plan["chosen"]["key"] if plan["chosen"] else None}
    if best is None:
        out["chosen_by"] = "prediction (no trial erased without wrecking the model)"
        return out
    out["chosen"] = next(c for c in plan["candidates"] if c["key"] == best["key"])
    out["chosen_by"] = f"trial (least measured {plan['objective'].removeprefix('first_order_')} of {len(trials)})"
    return out
