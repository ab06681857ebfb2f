"""Scores of the learned predictor and the baselines on held-out audits, and their metrics.

Three questions, each with the learned predictor, the first-order predictor and three baselines:
  flipped     per probe fact (recalled before): is it no longer recalled after the edit?
  top decile  per case: is its collateral (mean p drop of the other facts recalled before) in the top 10% of
              its audit (one KG/model)?
  wrecked     per case: the audit's flag (unrelated accuracy after < 0.9).
Baselines: the deleted fact's subject degree alone; same-subject membership alone (per case: the number of
same-subject facts); |κ| alone (per case: the mean |κ| of its probes). AUROC CIs and the differences
learned − baseline come from one cluster bootstrap over the deleted facts' subjects (kdel.risk.metrics).
"""

from __future__ import annotations

import numpy as np

from kdel.risk.metrics import auprc, auroc_with_ci, binary_metrics
from kdel.risk.names import FEATURES

PROBE_SCORES = ("learned", "first_order", "subject_degree", "same_subject", "kappa")


def col(X: np.ndarray, name: str) -> np.ndarray:
    return X[:, FEATURES.index(name)]


def probe_scores(rows, model) -> dict[str, np.ndarray]:
    X = rows.X
    return {
        "learned": model.flip_probability(X),
        "first_order": -col(X, "fo_margin_after"),
        "subject_degree": col(X, "target_log_subject_degree"),
        "same_subject": col(X, "shared_subject"),
        "kappa": np.abs(col(X, "kappa_site")),
    }


def case_scores(rows, model, probe: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Per case: a collateral score (top decile) and an unrelated-damage score (wrecked) of each predictor."""
    n = rows.n_cases
    drop_learned = model.p_drop(rows.X)
    fo_drop = np.exp(col(rows.X, "logp")) * (1 - np.exp(np.minimum(col(rows.X, "fo_dlogp"), 50)))

    def per_case(v, mask=None):
        m = np.ones(len(v), bool) if mask is None else mask
        s = np.bincount(rows.case[m], weights=v[m], minlength=n)
        c = np.bincount(rows.case[m], minlength=n)
        return np.where(c > 0, s / np.maximum(c, 1), 0.0)

    shared = {
        "subject_degree": per_case(probe["subject_degree"]),
        "same_subject": np.bincount(rows.case, weights=probe["same_subject"], minlength=n),
        "kappa": per_case(probe["kappa"]),
    }
    return {
        "top_decile": {"learned": per_case(drop_learned), "first_order": per_case(fo_drop), **shared},
        "wrecked": {"learned": per_case(probe["learned"], rows.unrelated),
                    "first_order": per_case((probe["first_order"] > 0).astype(float), rows.unrelated), **shared},
    }


MIN_POSITIVES = 5  # cases of each class a case-level AUROC needs


def top_decile(rows) -> np.ndarray:
    """Per case: collateral in the top 10% of its own audit."""
    audits = np.array([m["audit"] for m in rows.meta])
    coll = np.asarray(rows.collateral)
    out = np.zeros(rows.n_cases, bool)
    for a in sorted(set(audits.tolist())):
        m = audits == a
        out[m] = coll[m] >= np.quantile(coll[m], 0.9)
    return out


def evaluate(rows, model, n_boot: int = 1000, seed: int = 0) -> dict:
    probe = probe_scores(rows, model)
    y = rows.flipped.astype(bool)
    clusters_probe = np.asarray(rows.group, dtype=object)[rows.case]
    out = {"n_rows": int(len(y)), "n_flipped": int(y.sum()), "n_cases": rows.n_cases,
           "n_subjects": len(set(rows.group))}
    out["flipped"] = auroc_with_ci(y, probe, clusters_probe, n_boot, seed, reference="learned")
    for name, s in probe.items():
        out["flipped"][name]["auprc"] = auprc(y, s)
    out["flipped_calibration"] = binary_metrics(y, probe["learned"])
    cases = case_scores(rows, model, probe)
    clusters_case = np.asarray(rows.group, dtype=object)
    for label, yc in (("top_decile", top_decile(rows)), ("wrecked", np.asarray(rows.wrecked, bool))):
        n_pos = int(yc.sum())
        if min(n_pos, len(yc) - n_pos) < MIN_POSITIVES:  # an AUROC from one or two positives says nothing
            out[label] = {"undefined": f"{n_pos} of {len(yc)} cases are positive (an AUROC needs at least "
                                       f"{MIN_POSITIVES} of each class)"}
            continue
        out[label] = auroc_with_ci(yc, cases[label], clusters_case, n_boot, seed, reference="learned")
        out[label]["_positives"] = int(yc.sum())
    succ = np.asarray(rows.success, bool)
    p_succ = model.success_probability(np.asarray(rows.case_x))
    out["success"] = binary_metrics(succ, p_succ)
    return out


def adjust_differences(results: dict) -> int:
    """Holm-adjust, in place, the one-sided p of every "learned better than baseline" comparison in `results`
    (every slice × label × baseline: one family); returns the family's size."""
    from kdel.stats.multiple import holm

    diffs = [block[name]["difference"] for sl in results.values() for label in ("flipped", "top_decile", "wrecked")
             if isinstance(block := sl.get(label), dict) and "undefined" not in block
             for name in block if isinstance(block[name], dict) and "difference" in block[name]]
    for d, p in zip(diffs, holm([d.get("p_one_sided") for d in diffs])):
        d["p_holm"] = p
    return sum(d.get("p_one_sided") is not None for d in diffs)
