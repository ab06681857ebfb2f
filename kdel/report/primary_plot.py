"""The report's main figure: the primary hypothesis, one panel per graph (audit).

Each point is one deleted fact (its metric averaged over the layers it was edited at, as the primary
test uses it) against the predictor; lines are means per popularity bin with cluster-bootstrap CIs; the
panel title carries ρ with its CI. When two graphs are compared, the first graph's panel shades the second
graph's range of the predictor (the degree-range-matched comparison).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdel.audit.primary import OUTCOME_WORDS, PREDICTOR_WORDS, PrimarySpec, metric_words, primary_table
from kdel.report.data import AuditData, popularity_label
from kdel.report.plots import PALETTE, Plot, _empty, _jitter, _plt, _save
from kdel.stats.estimate import mean_estimate


def _bins(x: np.ndarray, n_bins: int = 5) -> np.ndarray:
    """Rank-quantile bins of x (ties share a bin)."""
    order = np.argsort(np.argsort(x, kind="stable"), kind="stable")
    b = (order * n_bins // max(len(x), 1)).astype(int)
    for v in np.unique(x):  # ties: the bin of their first member
        b[x == v] = b[x == v].min()
    return b


def plot_primary(audits: list[AuditData], path: Path, comparisons: list[dict] | None = None) -> Plot:
    plt = _plt()
    n = len(audits)
    fig, axes = plt.subplots(1, n, figsize=(4.3 * n + 0.5, 3.5), squeeze=False, sharey=True)
    spec0 = None
    shade = {}
    for comp in comparisons or []:
        m = comp.get("matched")
        if m:
            shade[comp["labels"][0]] = (m["range"], comp["labels"][1])
    for j, a in enumerate(audits):
        ax = axes[0][j]
        res = (a.summary or {}).get("primary") or {}
        spec = PrimarySpec(**res["spec"]) if res.get("spec") else None
        spec0 = spec0 or spec
        t = primary_table(a.cases, spec) if spec else None
        if t is None:
            _empty(ax, "no case of the primary\nmethod and site")
            ax.set_title(a.label, fontsize=10, fontweight="bold")
            continue
        x, y = t.columns[spec.predictor], t.columns[spec.metric]
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        subj = [s for s, k in zip(t.subjects, ok) if k]
        col = PALETTE[j % len(PALETTE)]
        if len(x) == 0:
            _empty(ax, "no fact with a value")
        else:
            ax.scatter(x * np.exp(_jitter(len(x), 0.04, j)), y, s=14, color=col, alpha=0.5, linewidths=0)
            b = _bins(x)
            xs, ms, lo, hi = [], [], [], []
            for k in sorted(set(b.tolist())):
                sel = b == k
                e = mean_estimate(y[sel], [s for s, m in zip(subj, sel) if m], n_boot=1000, seed=0)
                if e.estimate is None:
                    continue
                xs.append(float(np.median(x[sel])))
                ms.append(e.estimate)
                lo.append(e.estimate - (e.lo if e.lo is not None else e.estimate))
                hi.append((e.hi if e.hi is not None else e.estimate) - e.estimate)
            ax.errorbar(xs, ms, yerr=[lo, hi], color="black", lw=1.5, capsize=3, marker="o", ms=4, zorder=3)
            if x.min() > 0 and x.max() / x.min() >= 10:
                ax.set_xscale("log")
        if a.label in shade:
            (lo_r, hi_r), other = shade[a.label]
            ax.axvspan(lo_r, hi_r, color="#999", alpha=0.15, lw=0)
            ax.text(0.98, 0.03, f"{other}'s range", transform=ax.transAxes, ha="right", fontsize=7, color="#555")
        rho = res.get("rho")
        txt = "ρ undefined" if rho is None else f"ρ = {rho:+.2f}" + (
            f" [{res['ci_lo']:+.2f}, {res['ci_hi']:+.2f}]" if res.get("ci_lo") is not None else "")
        ax.set_title(f"{a.label}: {txt}", fontsize=10, fontweight="bold")
        ax.set_xlabel(popularity_label([a], "subject" if spec.predictor == "subject_degree" else "object"),
                      fontsize=8)
        ax.grid(alpha=0.25)
    if spec0 is not None:
        axes[0][0].set_ylabel(metric_words(spec0.metric).replace(" of ", "\nof "), fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    what = "" if spec0 is None else (f"{metric_words(spec0.metric)} against {PREDICTOR_WORDS[spec0.predictor]}, "
                                     f"{spec0.method} @ {spec0.site}, {OUTCOME_WORDS[spec0.outcome]}")
    return Plot("primary", path, "The primary hypothesis",
                f"{what}. Points: one deleted fact each (averaged over the layers it was edited at). Black: mean "
                "per popularity bin (rank quintiles) with 95% cluster-bootstrap CIs over subjects. ρ: Spearman "
                "over facts, 95% cluster-bootstrap CI." + (" Shaded: the other graph's range (the matched "
                                                           "comparison)." if shade else ""))
