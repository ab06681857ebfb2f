"""Two graphs (two audits) compared on the primary hypothesis: topology × popularity as an interaction.

`compare_graphs(cases_a, cases_b, primary)` answers "is the correlation larger on graph A than on B?":
- `difference`: ρ_A − ρ_B on the primary's facts, CI from independent cluster bootstraps within each graph
  (percentile of the paired replicate differences), p from Fisher z: (z_A − z_B) / sqrt(SE_A² + SE_B²),
  in the primary's direction (greater: A > B). This is the interaction of a rank regression of the
  outcome on the predictor × graph with both variables rank-standardised within each graph.
- `matched`: A restricted to B's range of the predictor (facts of A whose degree lies within [min_B, max_B]),
  its ρ, and its difference from ρ_B: does A show the effect where the two graphs overlap, or only among
  the hubs B does not have? Give the heavy-tailed graph (BA) as A.
Used by the report when it covers two audits, and by `kdel sweep` per seed.
"""

from __future__ import annotations

import numpy as np

from kdel.audit.primary import (PREDICTOR_WORDS, PrimarySpec, metric_words, p_text, parse_primary, primary_table,
                                resolve, where)
from kdel.stats.estimate import Estimate, difference, spearman_estimate, spearman_replicates


def _pair(t, spec: PrimarySpec, keep=None):
    x, y = t.columns[spec.predictor], t.columns[spec.metric]
    subj = np.asarray(t.subjects, dtype=object)
    if keep is not None:
        x, y, subj = x[keep], y[keep], subj[keep]
    return x, y, list(subj)


def _fmt(v, d: int = 2) -> str:
    return "–" if v is None else f"{v:.{d}f}"


def compare_graphs(cases_a: list[dict], cases_b: list[dict], primary=None, labels: tuple[str, str] = ("A", "B"),
                   seed: int = 0, n_boot: int = 1000, level: float = 0.95) -> dict:
    """ρ on each graph, their difference (the interaction) and the degree-range-matched comparison, with CIs,
    p-values, n of facts and subjects, and verdict sentences. `primary`: a PrimarySpec, its dict or one-line
    form, or None (the default spec)."""
    spec = primary if isinstance(primary, PrimarySpec) else parse_primary(primary)
    spec = resolve(spec, list(cases_a) + list(cases_b))
    la, lb = labels
    out: dict = {"spec": spec.to_dict(), "hypothesis": spec.describe(), "labels": [la, lb], "level": level}
    ta, tb = primary_table(cases_a, spec), primary_table(cases_b, spec)
    empty = Estimate("spearman", None, null_reason=f"no completed case of {spec.method} @ {spec.site}")
    if ta is None or tb is None:
        for key, t in (("a", ta), ("b", tb)):
            out[key] = empty.to_dict() if t is None else None
        out["difference"] = Estimate("difference_of_spearman", None, null_reason=empty.null_reason).to_dict()
        out["matched"] = None
        out["verdict"] = f"The graphs could not be compared: {empty.null_reason}."
        out["matched_verdict"] = None
        return out
    d = spec.direction
    xa, ya, sa = _pair(ta, spec)
    xb, yb, sb = _pair(tb, spec)
    est_a = spearman_estimate(xa, ya, sa, n_boot, seed, level, d)
    est_b = spearman_estimate(xb, yb, sb, n_boot, seed + 1, level, d)
    reps_a = spearman_replicates(xa, ya, sa, n_boot, seed)
    reps_b = spearman_replicates(xb, yb, sb, n_boot, seed + 1)
    diff = difference(est_a, est_b, reps_a, reps_b, d, level)
    out.update(a=est_a.to_dict(), b=est_b.to_dict(), difference=diff.to_dict())
    out["verdict"] = _verdict(spec, la, lb, est_a, est_b, diff)
    fb = np.isfinite(xb) & np.isfinite(yb)
    if not fb.any():
        out["matched"], out["matched_verdict"] = None, None
        return out
    lo, hi = float(xb[fb].min()), float(xb[fb].max())
    keep = np.isfinite(ya) & (xa >= lo) & (xa <= hi)
    xm, ym, sm = _pair(ta, spec, keep)
    est_m = spearman_estimate(xm, ym, sm, n_boot, seed, level, d)
    diff_m = difference(est_m, est_b, spearman_replicates(xm, ym, sm, n_boot, seed), reps_b, d, level)
    out["matched"] = {"range": [lo, hi], "n_facts_kept": int(keep.sum()), "n_facts_a": int(np.isfinite(ya).sum()),
                      "a": est_m.to_dict(), "difference": diff_m.to_dict()}
    pred = PREDICTOR_WORDS[spec.predictor].split(" (")[0]
    out["matched_verdict"] = (
        f"{la} restricted to {lb}'s range of {pred} ({lo:g}–{hi:g}; {int(keep.sum())} of "
        f"{int(np.isfinite(ya).sum())} facts): ρ = {_fmt(est_m.estimate)}"
        + (f" [{_fmt(est_m.lo)}, {_fmt(est_m.hi)}], {p_text('p', est_m.p)}" if est_m.lo is not None else
           f" ({est_m.null_reason})" if est_m.null_reason else "")
        + (f"; minus {lb}'s ρ: {_fmt(diff_m.estimate)} [{_fmt(diff_m.lo)}, {_fmt(diff_m.hi)}], "
           f"{p_text('p', diff_m.p)}"
           if diff_m.lo is not None else "") + ".")
    return out


def _verdict(spec: PrimarySpec, la: str, lb: str, a: Estimate, b: Estimate, diff: Estimate) -> str:
    rel = {"greater": f"larger on {la} than on {lb}", "less": f"smaller on {la} than on {lb}",
           "two-sided": f"different on {la} and {lb}"}[spec.direction]
    s = spec.to_dict()
    what = (f"the rank correlation of the {metric_words(spec.metric)} with "
            f"{PREDICTOR_WORDS[spec.predictor]} is {rel} ({where(s)})")
    if diff.estimate is None or diff.p is None:
        return f"Whether {what} could not be tested: {diff.null_reason}."
    sig = diff.p < spec.alpha
    kind = "p" if spec.direction == "two-sided" else "one-sided p"
    lvl = round(100 * diff.level)
    return (f"{'Evidence' if sig else 'No evidence'} that {what}: Δρ = {_fmt(diff.estimate)}, {lvl}% CI "
            f"[{_fmt(diff.lo)}, {_fmt(diff.hi)}], {p_text(kind, diff.p)} ({la}: ρ = {_fmt(a.estimate)}, "
            f"{a.n_facts} facts of {a.n_subjects} subjects; {lb}: ρ = {_fmt(b.estimate)}, {b.n_facts} facts of "
            f"{b.n_subjects} subjects).")


__all__ = ["compare_graphs"]
