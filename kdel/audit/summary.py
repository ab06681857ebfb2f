"""`summarize(cases, primary=...)`: the audit's summary.json (format kdel-summary/1) from kdel-case/1 dicts.

- cells: means with 95% cluster-bootstrap CIs (subjects resampled) of every metric per method × site ×
  layer × popularity bin (+ "all" margins), for successful deletions, failed ones, and all; n of cases,
  facts and subjects beside each;
- correlations: the exploratory family, one deleted fact per observation (kdel.audit.inference): Spearman ρ
  of each side effect with subject and object degree, cluster-bootstrap CI and p, Holm p and BH q, partial ρ
  with the controls' collinearity, effects in natural units, dropped cases per reason;
- primary: the experiment's one declared hypothesis (kdel.audit.primary), with a verdict sentence;
- regressions: Hase et al.'s fits of edit success on layer, tracing effect and both, guarded, with
  cluster-bootstrap CIs of the R²s;
- dropped: cases left out of the successful-deletion inference, per reason;
- timing: under its own key, the only part that differs between identical runs.
Cases are sorted by id first, so the summary does not depend on the order cases finished in.
docs/statistics.md documents every key.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from kdel.audit.inference import PER_FACT, correlation_rows
from kdel.audit.metrics import (GROUP_METRICS, OUTCOMES, SIDE_GROUPS, case_metrics, fact_key,  # noqa: F401
                                outcome_ok, select, side_effect_metrics, subject_key)
from kdel.audit.primary import evaluate_primary, parse_primary, resolve
from kdel.audit.schema import SUMMARY_FORMAT
from kdel.audit.stats import hase_regressions
from kdel.stats.bootstrap import cluster_weights, column_quantiles

LEVEL = 0.95


def cluster_means(X: np.ndarray, clusters: list, seed: int, n_boot: int, level: float = LEVEL) -> list[dict]:
    """Per column of X (cases × metrics, nan = no value): mean, cluster-bootstrap percentile CI, n.

    One set of replicate weights serves every column (the same subjects are drawn for every metric)."""
    mask = np.isfinite(X)
    n = mask.sum(axis=0)
    Xf = np.where(mask, X, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = Xf.sum(axis=0) / n
    k = len(set(clusters))
    lo = hi = np.full(X.shape[1], np.nan)
    if k >= 2:
        W = cluster_weights(clusters, n_boot, seed)
        den = W @ mask
        with np.errstate(invalid="ignore", divide="ignore"):
            reps = np.where(den > 0, (W @ Xf) / np.where(den > 0, den, 1.0), np.nan)
        a = (1.0 - level) / 2.0
        lo, hi = column_quantiles(reps, [a, 1.0 - a])
    out = []
    for j in range(X.shape[1]):
        col = X[mask[:, j], j]
        if n[j] == 0:
            out.append({"mean": None, "lo": None, "hi": None, "n": 0})
            continue
        m = float(means[j])
        if np.all(col == col[0]):
            out.append({"mean": m, "lo": m, "hi": m, "n": int(n[j])})
        else:
            out.append({"mean": m, "lo": None if np.isnan(lo[j]) else float(lo[j]),
                        "hi": None if np.isnan(hi[j]) else float(hi[j]), "n": int(n[j])})
    return out


def _order(key):
    return tuple((0, v) if isinstance(v, int) else (1, str(v)) for v in key)


def _cells(ok: list[dict], metrics: list[dict], seed: int, n_boot: int) -> list[dict]:
    keyed: dict[tuple, list[int]] = defaultdict(list)
    for i, c in enumerate(ok):
        s = c["spec"]
        sb, ob = c["fact"]["subject_bin"], c["fact"]["object_bin"]
        for outcome in OUTCOMES:
            if not outcome_ok(c, outcome):
                continue
            base = (s["method"], s["site"])
            for lay in (s["layer"], "all"):
                for b in (sb, "all"):
                    keyed[base + (lay, "subject", b, outcome)].append(i)
            keyed[base + ("all", "object", ob, outcome)].append(i)
    names = sorted({k for m in metrics for k in m})
    cells = []
    for key in sorted(keyed, key=_order):
        idx = keyed[key]
        method, site, layer, bin_by, b, outcome = key
        X = np.asarray([[np.nan if metrics[i].get(k) is None else metrics[i][k] for k in names] for i in idx],
                       dtype=np.float64)
        clusters = [subject_key(ok[i]) for i in idx]
        stats = cluster_means(X, clusters, seed, n_boot)
        cells.append({
            "method": method, "site": site, "layer": layer, "bin_by": bin_by, "bin": b, "outcome": outcome,
            "n": len(idx), "n_facts": len({fact_key(ok[i]) for i in idx}), "n_subjects": len(set(clusters)),
            "metrics": dict(zip(names, stats)),
        })
    return cells


def _regressions(ok: list[dict], metrics: list[dict], seed: int, n_boot: int) -> list[dict]:
    rows = []
    by_ms: dict[tuple, list[int]] = defaultdict(list)
    for i, c in enumerate(ok):
        by_ms[(c["spec"]["method"], c["spec"]["site"], c["spec"]["objective"])].append(i)
    for (method, site, objective), idx in sorted(by_ms.items()):
        layers = [ok[i]["spec"]["layer"] for i in idx]
        te = [metrics[i].get("hase.tracing_effect") for i in idx]
        clusters = [subject_key(ok[i]) for i in idx]
        for y_name in ("hase.efficacy_score", "efficacy.success"):
            y = [metrics[i].get(y_name) for i in idx]
            rows.append({"method": method, "site": site, "objective": objective, "y": y_name,
                         "n_facts": len({fact_key(ok[i]) for i in idx}),
                         **hase_regressions(y, layers, te, clusters=clusters, n_boot=n_boot, seed=seed)})
    return rows


def _primary(cases: list[dict], primary, rows: list[dict], seed: int, n_boot: int) -> dict:
    spec = resolve(parse_primary(primary), cases)
    same = (spec.method, spec.site, spec.layers, spec.outcome, spec.metric, spec.predictor)
    family = [r["p"] for r in rows
              if (r["method"], r["site"], r["layer"], r["outcome"], r["metric"], r["vs"]) != same]
    return evaluate_primary(cases, spec, seed=seed, n_boot=n_boot, level=LEVEL, family_p=family)


def summarize(cases: list[dict], seed: int = 0, n_boot: int = 1000, primary=None) -> dict:
    """The summary of an audit's cases. `primary`: the config's primary hypothesis (a dict, the one-line
    form, a PrimarySpec, or None for the default, exploratory one)."""
    cases = sorted(cases, key=lambda c: c["case_id"])
    ok = [c for c in cases if c["status"] == "ok"]
    bad = [c for c in cases if c["status"] != "ok"]
    errors = [{"case_id": c["case_id"], "error": c.get("error")} for c in bad]
    metrics = [case_metrics(c) for c in ok]
    timing_cases = [c.get("timing", {}) for c in cases]
    rows = correlation_rows(ok, metrics, bad, seed=seed, n_boot=n_boot)
    dropped = Counter(select(c, "success") for c in ok)
    dropped.pop(None, None)

    def tmean(k):
        v = [t[k] for t in timing_cases if isinstance(t.get(k), (int, float))]
        return sum(v) / len(v) if v else None

    return {
        "format": SUMMARY_FORMAT,
        "n_cases": len(cases),
        "n_ok": len(ok),
        "n_error": len(errors),
        "n_success": sum(1 for c in ok if c["success"]),
        "n_failed": sum(1 for c in ok if not c["success"]),
        "n_wrecked": sum(1 for c in ok if c["wrecked"]),
        "n_facts": len({fact_key(c) for c in ok}),
        "n_subjects": len({subject_key(c) for c in ok}),
        "methods": sorted({c["spec"]["method"] for c in cases}),
        "sites": sorted({c["spec"]["site"] for c in cases}),
        "objectives": sorted({c["spec"]["objective"] for c in cases}),
        "case_ids": [c["case_id"] for c in cases],
        "inference": {
            "unit": "deleted fact", "cluster": "subject", "layer_levels": [PER_FACT, "<each layer, when crossed>"],
            "n_boot": n_boot, "level": LEVEL, "seed": seed,
            "n_tests": sum(1 for r in rows if r["p"] is not None),
            "n_partial_tests": sum(1 for r in rows if r["partial_p"] is not None),
            "adjustments": {"p_holm": "Holm over the rows' rho tests", "q_bh": "Benjamini-Hochberg over the same",
                            "partial_p_holm": "Holm over the partial-rho tests", "partial_q_bh": "BH over the same"},
        },
        "dropped": {"error": len(bad), **dict(sorted(dropped.items()))},
        "primary": _primary(cases, primary, rows, seed, n_boot),
        "cells": _cells(ok, metrics, seed, n_boot),
        "correlations": rows,
        "regressions": _regressions(ok, metrics, seed, n_boot),
        "errors": errors,
        "timing": {
            "mean_case_s": tmean("total_s"),
            "mean_edit_s": tmean("edit_s"),
            "mean_eval_s": tmean("eval_s"),
            "total_case_s": sum(t.get("total_s", 0.0) or 0.0 for t in timing_cases),
        },
    }
