"""Predictions for one deletion case, and which predictor each came from.

* `first_order` (rank-one methods only: ROME, r-ROME): κ(p) and the first-order change of log p(o_p) it causes
  (kdel.risk.features); a probe is predicted to flip when its margin plus that change is below 0, and its
  predicted p drop is p·(1 − exp(Δlog p)). No fitted parameters.
* `learned` (any method, given a risk model fitted with `kdel risk fit`): the calibrated probability that the
  probe flips, its predicted p drop, and the probability that the deletion succeeds.

Per case: the expected number of flipped facts (Σ of the flip probabilities; the count of first-order flips),
the predicted global accuracy drop over all facts (flips, plus the target itself weighted by the predicted
success), the predicted mean p drop of the other facts recalled before, and the predicted flip rate of the
`unrelated` sample (the audit's `wrecked` flag fires when that sample's accuracy falls below 0.9).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdel.risk.features import CaseFeatures
from kdel.risk.names import FEATURES, RANK_ONE


@dataclass
class CasePrediction:
    fact_ids: np.ndarray  # probes (every fact but the target)
    recalled: np.ndarray  # recalled before the edit
    p_before: np.ndarray
    kappa: np.ndarray
    fo_dlogp: np.ndarray
    fo_margin_after: np.ndarray
    first_order: bool  # the method is rank-one: first-order predictions are made
    p_flip: np.ndarray | None  # learned, calibrated (None without a model)
    p_drop: np.ndarray | None
    p_success: float | None
    n_facts: int
    target_recalled: bool

    @property
    def fo_flip(self) -> np.ndarray:
        return self.recalled & (self.fo_margin_after < 0)

    @property
    def fo_p_drop(self) -> np.ndarray:
        return self.p_before * (1.0 - np.exp(np.minimum(self.fo_dlogp, 50.0)))

    def summary(self, unrelated: np.ndarray | None = None) -> dict:
        """Case-level predictions by predictor (`unrelated`: mask of probes in the unrelated sample)."""
        rec = self.recalled
        out: dict = {}
        if self.first_order:
            flips = int(self.fo_flip.sum())
            out["first_order"] = {
                "expected_flips": flips,
                "global_accuracy_drop": flips / self.n_facts,
                "mean_p_drop": _mean(self.fo_p_drop[rec]),
                "unrelated_flip_rate": _mean(self.fo_flip[rec & unrelated]) if unrelated is not None else None,
            }
        if self.p_flip is not None:
            pf = np.where(rec, self.p_flip, 0.0)
            exp = float(pf.sum())
            succ = self.p_success if self.p_success is not None else 1.0
            out["learned"] = {
                "expected_flips": exp,
                "p_success": self.p_success,
                "global_accuracy_drop": (exp + (succ if self.target_recalled else 0.0)) / self.n_facts,
                "mean_p_drop": _mean(self.p_drop[rec]),
                "unrelated_flip_rate": _mean(pf[rec & unrelated]) if unrelated is not None else None,
            }
        return out


def _mean(x) -> float | None:
    x = np.asarray(x, dtype=float)
    return float(x.mean()) if x.size else None


def predict_case(base, cf: CaseFeatures, target_id: int, method: str, risk_model=None) -> CasePrediction:
    col = {n: i for i, n in enumerate(FEATURES)}
    ids = cf.fact_ids
    p_flip = p_drop = p_success = None
    if risk_model is not None:
        p_flip = risk_model.flip_probability(cf.X)
        p_drop = risk_model.p_drop(cf.X)
        p_success = float(risk_model.success_probability(cf.case_x)[0])
    return CasePrediction(
        fact_ids=ids, recalled=base.recalled[ids], p_before=np.exp(base.logp[ids]),
        kappa=cf.X[:, col["kappa_site"]], fo_dlogp=cf.X[:, col["fo_dlogp"]],
        fo_margin_after=cf.X[:, col["fo_margin_after"]], first_order=method in RANK_ONE,
        p_flip=p_flip, p_drop=p_drop, p_success=p_success, n_facts=len(base.recalled),
        target_recalled=bool(base.recalled[target_id]),
    )


def risk_score(pred: CasePrediction, kind: str) -> np.ndarray:
    """Per probe, a score ranking flip risk: 'learned' (flip probability) or 'first_order' (−margin after)."""
    if kind == "learned":
        return pred.p_flip
    return -pred.fo_margin_after
