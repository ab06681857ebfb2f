"""The report's correlation tables (panel 4c): one deleted fact per observation, cluster-bootstrap CIs, Holm
and BH adjustments, partial ρ with the collinearity of the predictor with each control, and the effect in
natural units (hubs minus the rest)."""

from __future__ import annotations

from kdel.audit.inference import PER_FACT
from kdel.audit.primary import dropped_text
from kdel.report.data import AuditData
from kdel.report.fmt import esc, est_ci, pop_word, pval, sname, table

CORRELATED = (
    ("global.mean_p_drop_excluding_target", "mean p drop, all other facts"),
    ("global.flip_rate_excluding_target", "flip rate, all other facts"),
    ("same_subject.mean_p_drop", "same_subject mean p drop"),
    ("same_subject.flip_rate", "same_subject flip rate (per fact)"),
    ("same_subject.any_broke", "same_subject any broke (per edit)"),
    ("neighbors_1hop.mean_p_drop", "neighbors_1hop mean p drop"),
    ("unrelated.mean_p_drop", "unrelated mean p drop"),
    ("kl.mean", "KL on unrelated prompts"),
)
HIGH_COLLINEARITY = 0.8
NICE_CONTROL = {"delta_norm": "‖ΔW‖"}


def _collinearity(r: dict) -> str:
    out = []
    for c, v in (r.get("collinearity") or {}).items():
        name = NICE_CONTROL.get(c, c.replace(".size", " size"))
        if v is None:
            out.append(f"{esc(name)} –")
        else:
            cls = " class=hi" if abs(v) >= HIGH_COLLINEARITY else ""
            out.append(f"{esc(name)} <span{cls}>{v:+.2f}</span>")
    return "; ".join(out)


def _dropped(r: dict) -> str:
    return esc(dropped_text(r.get("dropped") or {}))


def _row(a: AuditData, r: dict, label: str) -> list[str]:
    sig = " class=sig" if r.get("p_holm") is not None and r["p_holm"] < 0.05 else ""
    h = r.get("hubs_minus_rest") or {}
    rho = est_ci(r["rho"], r.get("ci_lo"), r.get("ci_hi"), 2, signed=True)
    if r["rho"] is None and r.get("null_reason"):
        rho = f"– <span class=ci>({esc(r['null_reason'])})</span>"
    return [esc(a.label), sname(r["method"], r["site"]), esc(label), f"{r['n_facts']} ({r['n_subjects']})",
            f"<span{sig}>{rho}</span>", pval(r.get("p")), f"<span{sig}>{pval(r.get('p_holm'))}</span>",
            pval(r.get("q_bh")),
            est_ci(r.get("partial_rho"), r.get("partial_ci_lo"), r.get("partial_ci_hi"), 2, signed=True),
            pval(r.get("partial_p")), _collinearity(r),
            est_ci(h.get("estimate"), h.get("lo"), h.get("hi"), 3, signed=True), _dropped(r)]


def _table_for(audits: list[AuditData], outcome: str, layer) -> str:
    rows = []
    labels = dict(CORRELATED)
    for a in audits:
        for r in (a.summary or {}).get("correlations", []):
            if r["vs"] != "subject_degree" or r["outcome"] != outcome or r.get("layer", PER_FACT) != layer:
                continue
            if r["metric"] in labels:
                rows.append(_row(a, r, labels[r["metric"]]))
    if not rows:
        return "<p>No such deletions.</p>"
    return table(["", "method @ site", "side effect", "facts (subjects)", "ρ [95% CI]", "p", "Holm p", "BH q",
                  "partial ρ [95% CI]", "partial p", "collinearity: ρ(degree, control)",
                  "hubs − rest [95% CI]", "dropped cases"], rows, "num")


def correlation_tables(audits: list[AuditData]) -> str:
    n_tests = {a.label: (a.summary or {}).get("inference", {}).get("n_tests") for a in audits}
    fam = "; ".join(f"{esc(k)}: {v}" for k, v in n_tests.items())
    layers = sorted({r["layer"] for a in audits for r in (a.summary or {}).get("correlations", [])
                     if r.get("layer", PER_FACT) != PER_FACT}, key=str)
    per_layer = "".join(f"<h4>Layer {esc(lay)} (successful deletions, one case per fact)</h4>"
                        + _table_for(audits, "success", lay) for lay in layers)
    word = pop_word(audits)
    return (
        f"<h3>4c. Spearman correlation of side effects with subject {word}, one deleted fact per observation</h3>"
        "<p class=note>Each fact counts once: a fact edited at several layers contributes its mean over them. "
        "CIs and p resample subjects (a cluster bootstrap: hubs contribute many facts, which are not "
        "independent); p is a Wald test of Fisher's z with the bootstrap's standard error. <b>Holm p</b> and "
        f"<b>BH q</b> adjust for every ρ test of the summary (tests per audit: {fam}); highlighted: Holm p "
        "&lt; 0.05. The partial ρ controls for ‖ΔW‖ and, for group metrics, the group's size; "
        f"<b>collinearity</b> is ρ of {word} with each control: where it is high (≥ {HIGH_COLLINEARITY}, "
        "marked) the control absorbs the predictor and the partial ρ has little power. <b>Hubs − rest</b>: "
        f"the side effect's mean over facts whose subject is in the top decile of {word}, minus the other "
        "facts', in the metric's own units. Numbers in brackets under “facts”: subjects. Every metric, "
        "object degree and per-layer rows are in summary.json.</p>"
        f"<h4>Successful deletions</h4>{_table_for(audits, 'success', PER_FACT)}"
        "<details><summary>Failed deletions (not deletions: their side effects are listed apart)</summary>"
        f"{_table_for(audits, 'failed', PER_FACT)}</details>"
        + (f"<details><summary>Per layer</summary>{per_layer}</details>" if layers else ""))
