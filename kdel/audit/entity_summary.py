"""Summary of an entity audit: the side effects of forgetting an entity vs its degree.

Per method (and site/layer when several): how many entities, how well their facts were removed, and per
probe group (kdel.forget.entity) and side-effect measure:
  * the mean over entities with a cluster-bootstrap 95% CI (kdel.stats.mean_estimate);
  * Spearman's ρ with the entity's degree, CI and p from the cluster bootstrap (kdel.stats.spearman_estimate);
  * the family of those p-values adjusted by Holm and by Benjamini–Hochberg (kdel.stats.holm/benjamini_hochberg);
  * means per degree bin.
Clusters are subjects, as in the single-fact audit: here each case deletes one subject's facts, so every
entity is its own cluster and the bootstrap resamples entities. Only successful cases (status ok) enter; a
case whose entity facts were not all removed still counts (its `removed_rate` is a measure), wrecked ones are
counted separately.
"""

from __future__ import annotations

from kdel.audit.evaluate import _mean

SUMMARY_FORMAT = "kdel-entity-summary/1"
SIDE_GROUPS = ("knowledge_holes", "neighbors_1hop", "neighbors_2hop", "same_relation", "unrelated")
MEASURES = ("flip_rate", "mean_p_drop")


def case_measures(c: dict) -> dict[str, float | None]:
    """The numbers of one entity case that the summary relates to degree."""
    se = c["side_effects"]
    out = {
        "removed_rate": c["efficacy"]["removed_rate"],
        "heldout_recall_after": c["efficacy"]["heldout_recall_after"],
        "extractable_rate": c["extraction"]["n_extractable"] / max(1, c["extraction"]["n_facts"]),
        "global.flip_rate": se["global"]["flip_rate_excluding_target"],
        "global.mean_p_drop": se["global"]["mean_p_drop_excluding_target"],
        "kl.mean": se["kl"]["mean"],
        "delta_norm": c["delta_norm_total"],
    }
    for g in SIDE_GROUPS:
        sec = se["groups"].get(g, {})
        for m in MEASURES:
            out[f"{g}.{m}"] = sec.get(m)
    return out


def _condition(c: dict) -> tuple:
    s = c["spec"]
    return s["method"], s["site"], s["layer"]


def summarize_entities(cases: list[dict], seed: int = 0, n_boot: int = 1000) -> dict:
    from kdel.stats import benjamini_hochberg, holm, mean_estimate, spearman_estimate

    ok = [c for c in cases if c.get("status") == "ok"]
    conditions = []
    for cond in sorted({_condition(c) for c in ok}, key=lambda t: tuple(str(x) for x in t)):
        group = sorted([c for c in ok if _condition(c) == cond], key=lambda c: c["id"])
        names = [c["spec"]["entity"] for c in group]
        degree = [c["spec"]["entity_degree"] for c in group]
        per = [case_measures(c) for c in group]
        keys = list(per[0]) if per else []
        means, corr = {}, {}
        for k in keys:
            y = [p[k] for p in per]
            means[k] = mean_estimate(y, names, n_boot, seed).to_dict()
            corr[k] = spearman_estimate(degree, y, names, n_boot, seed).to_dict()
        tested = [k for k in keys if corr[k]["p"] is not None]
        for adj, fn in (("p_holm", holm), ("p_bh", benjamini_hochberg)):
            vals = fn([corr[k]["p"] for k in tested])
            for k in keys:
                corr[k][adj] = None
            for k, v in zip(tested, vals):
                corr[k][adj] = v
        n_bins = max((c["spec"]["n_bins"] for c in group), default=0)
        bins = []
        for b in range(n_bins):
            members = [p for c, p in zip(group, per) if c["spec"]["bin"] == b]
            bins.append({"bin": b, "n": len(members),
                         "degree_mean": _mean([c["spec"]["entity_degree"] for c in group if c["spec"]["bin"] == b]),
                         **{k: _mean([p[k] for p in members if p[k] is not None]) for k in keys}})
        conditions.append({
            "method": cond[0], "site": cond[1], "layer": cond[2], "n_entities": len(group),
            "n_all_removed": sum(c["efficacy"]["all_removed"] for c in group),
            "n_wrecked": sum(bool(c["side_effects"]["wrecked"]) for c in group),
            "mean": means, "spearman_vs_degree": corr, "by_bin": bins,
            "family": {"tests": tested, "adjustments": ["holm", "bh"]},
        })
    return {"format": SUMMARY_FORMAT, "n_cases": len(cases), "n_ok": len(ok),
            "n_error": sum(c.get("status") == "error" for c in cases), "conditions": conditions,
            "cluster": "subject (each entity case deletes one subject's facts: one cluster per entity)"}
