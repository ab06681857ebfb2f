"""Choose where and how to delete: every candidate (method × site × layer) scored by the risk predictor before
any edit, and the one with the least predicted collateral among those predicted to erase.

Per candidate and fact: the learned predictor's P(success) and per-probe flip probabilities and p drops
(kdel.risk.predict; plus the first-order flip count for rank-one methods, for information). With several
facts (deleted together), a probe's flip probability is 1 − Π(1 − P_i) over the facts (independence), the
expected flips are their sum over every fact not deleted, and the candidate's efficacy is the mean P(success).

Rule: among candidates with efficacy >= `min_success` (default 0.5: more likely to erase than not), the
least predicted collateral by `objective`: "p_drop" (default) = the least predicted mean p drop, ties broken by
expected flips; "flips" = the least expected flips, ties broken by the predicted mean p drop;
"first_order_flips" / "first_order_p_drop" = the same from the first-order (κ) predictions of rank-one
candidates (the learned ones for other methods; efficacy is always the learned model's); then higher
efficacy. The default was chosen on the risk validation's fit seed only (docs/risk.md, "Plan benchmark").
When no candidate reaches the threshold, the one with the highest efficacy is chosen and the plan says so.
`kdel plan` then tries the first candidates of this order by default (kdel.risk.trial).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdel.errors import UserError
from kdel.risk.names import RANK_ONE

DEFAULT_METHODS = ("rome", "r-rome")
MIN_SUCCESS = 0.5


def _fo(c: dict, key: str, learned: str) -> float:
    """The first-order prediction where the candidate is rank-one, else the learned one."""
    v = c.get(key)
    return c[learned] if v is None else v


OBJECTIVES = {  # sort key of the candidates predicted to erase
    "flips": lambda c: (c["expected_flips"], c["mean_p_drop"], -c["p_success"]),
    "p_drop": lambda c: (c["mean_p_drop"], c["expected_flips"], -c["p_success"]),
    "first_order_flips": lambda c: (_fo(c, "first_order_flips", "expected_flips"),
                                    _fo(c, "first_order_mean_p_drop", "mean_p_drop"), -c["p_success"]),
    "first_order_p_drop": lambda c: (_fo(c, "first_order_mean_p_drop", "mean_p_drop"),
                                     _fo(c, "first_order_flips", "expected_flips"), -c["p_success"]),
}
DEFAULT_OBJECTIVE = "p_drop"  # chosen on seed 0 of the risk validation (docs/risk.md)


@dataclass
class Candidate:
    method: str
    site: str
    layer: int

    @property
    def key(self) -> str:
        return f"{self.method}/{self.site}/{self.layer}"


def candidates(methods, sites, layers) -> list[Candidate]:
    return [Candidate(m, s, int(layer)) for m in methods for s in sites for layer in layers]


def score_candidate(ctx, rm, fact_ids: list[int], cand: Candidate, hparams: dict, seed: int,
                    pool: list[int]) -> dict:
    """Predicted efficacy and collateral of deleting `fact_ids` with one candidate."""
    from kdel.risk.context import Case
    from kdel.risk.predict import predict_case

    n = len(ctx.table.facts)
    survive = np.ones(n)
    drop = np.zeros(n)
    succ, fo_flips, fo_drop = [], 0, np.zeros(n)
    for fid in fact_ids:
        groups = ctx.table.probe_groups(fid, pool)
        cf = ctx.case_features(Case(fact_id=fid, method=cand.method, site=cand.site, layer=cand.layer,
                                    hparams=hparams, seed=seed), groups)
        pred = predict_case(ctx.base, cf, fid, cand.method, rm)
        pf = np.where(pred.recalled, pred.p_flip, 0.0)
        survive[pred.fact_ids] *= 1.0 - pf
        drop[pred.fact_ids] += pred.p_drop
        succ.append(pred.p_success)
        if pred.first_order:
            fo_flips += int(pred.fo_flip.sum())
            fo_drop[pred.fact_ids] += pred.fo_p_drop
    others = np.array([i for i in range(n) if i not in set(fact_ids)], dtype=np.int64)
    rank_one = cand.method in RANK_ONE
    rec = others[ctx.base.recalled[others]]
    return {
        "key": cand.key, "method": cand.method, "site": cand.site, "layer": cand.layer,
        "p_success": float(np.mean(succ)),
        "p_success_each": [float(s) for s in succ],
        "expected_flips": float((1.0 - survive[others]).sum()),
        "mean_p_drop": float(drop[rec].mean()) if len(rec) else 0.0,
        "first_order_flips": fo_flips if rank_one else None,
        "first_order_mean_p_drop": (float(fo_drop[rec].mean()) if len(rec) else 0.0) if rank_one else None,
        "tracing_effect": [float(ctx.tracing_effects(f)[cand.layer]) for f in fact_ids],
    }


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise UserError(f"unknown --objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    return objective


def rank(scored: list[dict], min_success: float, objective: str = DEFAULT_OBJECTIVE
         ) -> tuple[list[dict], dict | None, bool]:
    """(candidates in the rule's order, the chosen one, whether it is predicted to erase)."""
    ok = [c for c in scored if c["p_success"] >= min_success]
    rest = [c for c in scored if c["p_success"] < min_success]
    ok.sort(key=OBJECTIVES[check_objective(objective)])
    rest.sort(key=lambda c: (-c["p_success"], c["expected_flips"]))
    ordered = ok + rest
    if not ordered:
        return ordered, None, False
    return ordered, ordered[0], bool(ok)


def make_plan(ctx, rm, fact_ids: list[int], methods, sites, layers, hparams_of: dict[str, dict], seed: int = 0,
              min_success: float = MIN_SUCCESS, unrelated: int = 100, objective: str = DEFAULT_OBJECTIVE) -> dict:
    """The scored candidates, the choice and the rule's threshold (see the module docstring)."""
    if rm is None:
        raise UserError("kdel plan needs a fitted --risk-model (kdel risk fit): efficacy is predicted by it")
    if not 0.0 <= min_success <= 1.0:
        raise UserError(f"--min-success must be in [0, 1], got {min_success}")
    check_objective(objective)
    pool = ctx.table.unrelated_sample(unrelated, seed)
    scored = [score_candidate(ctx, rm, fact_ids, c, hparams_of[c.method], seed, pool)
              for c in candidates(methods, sites, layers)]
    ordered, chosen, erases = rank(scored, min_success, objective)
    return {"fact_ids": list(fact_ids), "efficacy_threshold": min_success, "objective": objective,
            "candidates": ordered, "chosen": chosen,
            "chosen_predicted_to_erase": erases}
