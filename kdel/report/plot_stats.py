"""Statistics drawn on the report's figures, computed as the summary computes them: binned means with
cluster-bootstrap CIs over subjects, and ρ over facts (each fact once) with its CI."""

from __future__ import annotations

import numpy as np

from kdel.audit.metrics import case_metrics, subject_key
from kdel.report.data import AuditData
from kdel.stats.estimate import mean_estimate, spearman_estimate


def _values(cases: list[dict], metric: str) -> np.ndarray:
    out = []
    for c in cases:
        v = case_metrics(c).get(metric)
        out.append(np.nan if v is None else float(v))
    return np.asarray(out, dtype=np.float64)


def cluster_ci(values, cases: list[dict], seed: int = 0) -> dict:
    """Mean with a 95% cluster-bootstrap CI over the cases' subjects: {mean, lo, hi} (a case's repeated
    edits of one fact and a hub's several facts stay together)."""
    e = mean_estimate(list(values), [subject_key(c) for c in cases], n_boot=1000, seed=seed)
    return {"mean": e.estimate, "lo": e.lo, "hi": e.hi}


def _binned(cases: list[dict], metric: str, seed: int = 0) -> list[tuple[float, dict]]:
    """(median subject degree of the bin, cluster-bootstrap mean/CI of `metric`) per subject popularity bin."""
    bins: dict[int, list[dict]] = {}
    for c in cases:
        bins.setdefault(int(c["fact"]["subject_bin"]), []).append(c)
    out = []
    for b in sorted(bins):
        cs = bins[b]
        ci = cluster_ci(_values(cs, metric), cs, seed=seed)
        if ci["mean"] is not None:
            out.append((float(np.median([c["fact"]["subject_degree"] for c in cs])), ci))
    return out


def _rho_note(k: str, rho, lo, hi, n) -> str | None:
    if rho is None:
        return None
    ci = f" [{lo:+.2f}, {hi:+.2f}]" if lo is not None else ""
    return f"{k}: ρ={rho:+.2f}{ci}, {n} facts"


def summary_rho(a: AuditData, spec: dict, metric: str) -> str | None:
    """The per-fact ρ of `metric` with subject degree over successful deletions, from the audit's summary."""
    for r in (a.summary or {}).get("correlations", []):
        if (r["method"], r["site"], r["layer"], r["outcome"], r["vs"], r["metric"]) == \
                (spec["method"], spec["site"], "per_fact", "success", "subject_degree", metric):
            return r
    return None


def fact_rho(cases: list[dict], metric: str) -> tuple:
    """(ρ, lo, hi, n facts) of `metric` (a case metric) with subject degree, each fact once (mean over its
    layers), CI by cluster bootstrap over subjects; all outcomes."""
    from kdel.audit.inference import PER_FACT, stratum

    spec = cases[0]["spec"]
    t = stratum(cases, [case_metrics(c) for c in cases], [], spec["method"], spec["site"], PER_FACT, "all", [metric])
    e = spearman_estimate(t.columns["subject_degree"], t.columns[metric], t.subjects, n_boot=1000, seed=0)
    return e.estimate, e.lo, e.hi, e.n_facts
