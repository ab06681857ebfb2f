"""Correlations of side effects with popularity, one deleted fact per observation, subjects as clusters.

A `FactTable` holds one row per deleted fact of a stratum (method × site × layer level × outcome): each
metric is the mean over that fact's cases in the stratum. With `layers=all` a fact is edited at several
layers; the layer level `per_fact` averages over them (one value per fact), and, when the design crosses
facts with layers, each layer is also its own level (one case per fact; successful deletions and subject degree only). Repeated edits are never pooled
as independent observations.

Every correlation row carries Spearman's ρ with a cluster-bootstrap CI and p, the partial ρ (controls:
‖ΔW‖ and the group's size) with the collinearity of the predictor with each control, the metric's mean
and the hubs-minus-rest difference in natural units, n of facts, n of subjects, and the cases dropped per
reason. `adjust_family` adds Holm and Benjamini–Hochberg adjusted p over the rows.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from kdel.audit.metrics import (OUTCOMES, PREDICTORS, fact_key, missing_reason, select, side_effect_metrics,
                                size_metric, subject_key)
from kdel.stats.estimate import Correlator, Estimate, hubs_minus_rest, mean_estimate
from kdel.stats.multiple import benjamini_hochberg, holm

PER_FACT = "per_fact"
CONTROLS = ("delta_norm",)
LAYER_OUTCOMES = ("success",)  # per-layer rows: successful deletions and subject degree only
LAYER_PREDICTORS = ("subject_degree",)


@dataclass
class FactTable:
    """One row per deleted fact: `columns[name][i]` is fact i's mean of `name` over its cases (nan: none)."""

    facts: list
    subjects: list[str]
    columns: dict[str, np.ndarray]
    cases: list[dict] = field(default_factory=list)  # the stratum's cases (for per-metric drop counts)
    case_metrics: list[dict] = field(default_factory=list)  # their flat metrics
    dropped: dict[str, int] = field(default_factory=dict)  # cases left out of the stratum, per reason

    @property
    def n_subjects(self) -> int:
        return len(set(self.subjects))


def _order(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def fact_table(cases: list[dict], metrics: list[dict], names) -> FactTable:
    """Aggregate cases (with their flat metrics) to one row per fact: the mean over the fact's non-None values."""
    keys = [fact_key(c) for c in cases]
    facts = sorted(set(keys), key=_order)
    pos = {f: i for i, f in enumerate(facts)}
    idx = np.asarray([pos[k] for k in keys], dtype=np.int64)
    first: dict = {}
    for c, k in zip(cases, keys):
        first.setdefault(k, c)
    subjects = [subject_key(first[f]) for f in facts]
    cols: dict[str, np.ndarray] = {}
    for p in PREDICTORS:
        vals = [first[f]["fact"].get(p) for f in facts]
        cols[p] = np.asarray([np.nan if v is None else float(v) for v in vals], dtype=np.float64)
    for name in names:
        v = np.asarray([np.nan if m.get(name) is None else m[name] for m in metrics], dtype=np.float64)
        ok = np.isfinite(v)
        total = np.bincount(idx[ok], weights=v[ok], minlength=len(facts))
        count = np.bincount(idx[ok], minlength=len(facts))
        with np.errstate(invalid="ignore", divide="ignore"):
            cols[name] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return FactTable(facts, subjects, cols, cases=list(cases), case_metrics=list(metrics))


def stratum(ok: list[dict], metrics: list[dict], errors: list[dict], method: str, site: str, layer, outcome: str,
            names) -> FactTable:
    """The FactTable of one method × site × layer level (PER_FACT or a layer) × outcome, with drop counts."""
    dropped: Counter = Counter()
    sel_c, sel_m = [], []
    for c, m in zip(ok, metrics):
        s = c["spec"]
        if (s["method"], s["site"]) != (method, site) or (layer != PER_FACT and s["layer"] != layer):
            continue
        reason = select(c, outcome)
        if reason:
            dropped[reason] += 1
        else:
            sel_c.append(c)
            sel_m.append(m)
    dropped["error"] = sum(1 for c in errors if (c["spec"]["method"], c["spec"]["site"]) == (method, site)
                           and (layer == PER_FACT or c["spec"]["layer"] == layer))
    t = fact_table(sel_c, sel_m, names)
    t.dropped = dict(sorted(dropped.items()))
    return t


def layer_levels(ok: list[dict], method: str, site: str) -> list:
    """PER_FACT, then every layer when some fact of this method × site was edited at more than one layer."""
    layers_of: dict = defaultdict(set)
    for c in ok:
        if (c["spec"]["method"], c["spec"]["site"]) == (method, site):
            layers_of[fact_key(c)].add(c["spec"]["layer"])
    crossed = any(len(v) > 1 for v in layers_of.values())
    all_layers = sorted({lay for v in layers_of.values() for lay in v}, key=_order)
    return [PER_FACT] + (all_layers if crossed and len(all_layers) > 1 else [])


def _est(e: Estimate) -> dict:
    return {"estimate": e.estimate, "lo": e.lo, "hi": e.hi, "n_facts": e.n_facts, "n_subjects": e.n_subjects}


def correlation_row(t: FactTable, metric: str, vs: str, seed: int = 0, n_boot: int = 1000, level: float = 0.95,
                    direction: str = "two-sided", correlator: Correlator | None = None) -> dict:
    """ρ(metric, vs) over the facts of `t`, partial ρ, collinearity, natural-unit effects, drops.
    `correlator`: a Correlator of t.columns[vs] to share across the metrics of one stratum."""
    x, y = t.columns[vs], t.columns[metric]
    size = size_metric(metric)
    controls = list(CONTROLS) + ([size] if size else [])
    corr = correlator or Correlator(x, t.subjects, n_boot, seed, level)
    rho = corr.estimate(y, direction=direction)
    part = corr.estimate(y, {c: t.columns[c] for c in controls}, direction=direction)
    has_y = np.isfinite(y)
    collinear = {c: corr.collinearity(y, c, t.columns[c]) for c in controls}
    n_controls = sum(1 for c in controls if len(set(t.columns[c][has_y & np.isfinite(t.columns[c])].tolist())) > 1)
    hubs, info = hubs_minus_rest(x, y, t.subjects, n_boot=n_boot, seed=seed, level=level)
    dropped = dict(t.dropped)
    for c, m in zip(t.cases, t.case_metrics):
        if m.get(metric) is None:
            r = missing_reason(c, metric)
            dropped[r] = dropped.get(r, 0) + 1
    return {
        "vs": vs, "metric": metric, "direction": direction,
        "n": rho.n_facts, "n_facts": rho.n_facts, "n_subjects": rho.n_subjects, "n_cases": len(t.cases),
        "rho": rho.estimate, "ci_lo": rho.lo, "ci_hi": rho.hi, "p": rho.p, "p_iid": rho.p_iid, "se_z": rho.se,
        "null_reason": rho.null_reason,
        "partial_rho": part.estimate, "partial_ci_lo": part.lo, "partial_ci_hi": part.hi, "partial_p": part.p,
        "partial_p_iid": part.p_iid, "partial_df": max(0, part.n_facts - 2 - n_controls),
        "partial_null_reason": part.null_reason, "controls": controls, "collinearity": collinear,
        "mean": _est(mean_estimate(y, t.subjects, n_boot, seed, level)),
        "hubs_minus_rest": {**_est(hubs), **info, "p": hubs.p, "null_reason": hubs.null_reason},
        "dropped": dict(sorted(dropped.items())),
    }


def rho_estimate(row: dict) -> Estimate:
    """The ρ of a correlation row as an Estimate (e.g. for kdel.stats.meta.pool_seeds across seeds)."""
    return Estimate("spearman", row["rho"], row["ci_lo"], row["ci_hi"], row["p"], row["n_facts"], row["n_subjects"],
                    se=row.get("se_z"), p_iid=row.get("p_iid"), direction=row.get("direction", "two-sided"),
                    null_reason=row.get("null_reason"))


def correlation_rows(ok: list[dict], metrics: list[dict], errors: list[dict], seed: int = 0,
                     n_boot: int = 1000) -> list[dict]:
    """The exploratory family: every side-effect metric × predictor × outcome × layer level × method × site."""
    names = sorted({n for n, s in side_effect_metrics()} | {s for _, s in side_effect_metrics() if s} | {"delta_norm"})
    rows = []
    for method, site in sorted({(c["spec"]["method"], c["spec"]["site"]) for c in ok}):
        for layer in layer_levels(ok, method, site):
            for outcome in (OUTCOMES if layer == PER_FACT else LAYER_OUTCOMES):
                t = stratum(ok, metrics, errors, method, site, layer, outcome, names)
                if not t.facts:
                    continue
                for vs in (PREDICTORS if layer == PER_FACT else LAYER_PREDICTORS):
                    corr = Correlator(t.columns[vs], t.subjects, n_boot, seed)
                    for name, _ in side_effect_metrics():
                        if not np.isfinite(t.columns[name]).any():
                            continue
                        rows.append({"method": method, "site": site, "layer": layer, "outcome": outcome,
                                     **correlation_row(t, name, vs, seed, n_boot, correlator=corr)})
    adjust_family(rows)
    return rows


def adjust_family(rows: list[dict]) -> None:
    """Holm and BH over the rows' ρ tests (p_holm, q_bh) and, as a second family, over their partial-ρ tests
    (partial_p_holm, partial_q_bh). Rows without a p are outside the family (None)."""
    for p_key, holm_key, bh_key in (("p", "p_holm", "q_bh"), ("partial_p", "partial_p_holm", "partial_q_bh")):
        ps = [r.get(p_key) for r in rows]
        for r, h, q in zip(rows, holm(ps), benjamini_hochberg(ps)):
            r[holm_key], r[bh_key] = h, q
