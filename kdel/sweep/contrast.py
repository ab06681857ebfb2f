"""Graph contrasts across seeds: the primary hypothesis and the exploratory BA-vs-ER (power law-vs-ER) rows.

Per seed, `kdel.audit.compare.compare_graphs` tests ρ_A − ρ_B (the topology × degree interaction) and the
degree-range-matched comparison on the two conditions' cells of that seed; `aggregate.pool_contrast` pools
the seeds. The primary hypothesis is decided by its pooled test alone (one pre-declared test, p against
its alpha); the exploratory contrasts form their own family with Holm p and BH q.
"""

from __future__ import annotations

from kdel.sweep.aggregate import adjust, pool_contrast


def _compare(cases_a, cases_b, spec, labels, seed, n_boot, level) -> dict:
    from kdel.audit.compare import compare_graphs

    return {"seed": seed, **compare_graphs(cases_a, cases_b, spec, labels=labels, seed=seed, n_boot=n_boot, level=level)}


def _pool_side(per_seed: list[dict], side: str, level: float, direction: str) -> dict:
    from kdel.stats.meta import pool_seeds

    ests = [r[side] for r in per_seed if r.get(side)]
    p = pool_seeds(ests, level=level, direction=direction).to_dict() if ests else None
    if p is not None:
        p["seeds"] = [r["seed"] for r in per_seed if r.get(side)]
    return p


def contrast_across_seeds(cases_by_cell, cond_a: str, cond_b: str, spec, n_boot: int, level: float) -> dict:
    """compare_graphs per shared seed of the two conditions, and the pooled ρ_A, ρ_B, contrast and matched contrast."""
    seeds = sorted({s for c, s in cases_by_cell if c == cond_a} & {s for c, s in cases_by_cell if c == cond_b})
    per_seed = [_compare(cases_by_cell[(cond_a, s)], cases_by_cell[(cond_b, s)], spec, (cond_a, cond_b), s, n_boot,
                         level) for s in seeds]
    direction = spec.direction
    matched = [{"seed": r["seed"], "a": (r.get("matched") or {}).get("a"), "b": r.get("b"),
                "difference": (r.get("matched") or {}).get("difference") or {}} for r in per_seed if r.get("matched")]
    return {
        "a": cond_a, "b": cond_b, "seeds": seeds, "per_seed": per_seed,
        "pooled": {
            "a": _pool_side(per_seed, "a", level, direction),
            "b": _pool_side(per_seed, "b", level, direction),
            "difference": pool_contrast(per_seed, level, direction),
            "matched_a": _pool_side(matched, "a", level, direction),
            "matched_difference": pool_contrast(matched, level, direction),
        },
    }


def stats_primary(primary):
    """The stats code's PrimarySpec of the config's primary hypothesis (validated there)."""
    from kdel.audit.primary import parse_primary

    return parse_primary(primary.test)


def primary_result(config, cases_by_cell, n_boot: int, level: float) -> dict | None:
    if config.primary is None:
        return None
    p = config.primary
    spec = stats_primary(p)
    res = contrast_across_seeds(cases_by_cell, p.a, p.b, spec, n_boot, level)
    d = res["pooled"]["difference"]
    res.update(spec=spec.to_dict(), hypothesis=spec.describe(), statement=p.statement, alpha=spec.alpha, level=level,
               significant=d.get("p") is not None and d["p"] < spec.alpha)
    res["verdict"] = primary_verdict(res, spec)
    return res


def _f(v, d: int = 2) -> str:
    return "–" if v is None else f"{v:.{d}f}"


def _p(v) -> str:
    return "–" if v is None else ("< 0.001" if v < 0.001 else f"{v:.3f}")


def primary_verdict(res: dict, spec) -> str:
    """One sentence written from the pooled numbers."""
    from kdel.audit.primary import PREDICTOR_WORDS, metric_words, where

    a, b = res["a"], res["b"]
    rel = {"greater": f"larger on {a} than on {b}", "less": f"smaller on {a} than on {b}",
           "two-sided": f"different on {a} and {b}"}[spec.direction]
    what = (f"the rank correlation of the {metric_words(spec.metric)} with {PREDICTOR_WORDS[spec.predictor]} is "
            f"{rel} ({where(spec.to_dict())})")
    d = res["pooled"]["difference"]
    if d.get("d") is None or d.get("p") is None:
        return f"Whether {what} could not be tested across seeds: {d.get('null_reason') or '; '.join(d['dropped'])}."
    pa, pb = res["pooled"]["a"] or {}, res["pooled"]["b"] or {}
    kind = "p" if spec.direction == "two-sided" else "one-sided p"
    lvl = round(100 * res["level"])
    return (f"{'Evidence' if res['significant'] else 'No evidence'} that {what}: pooled over {d['k']} seeds, "
            f"Δz = {_f(d['d'])} [{lvl}% CI {_f(d['d_lo'])}, {_f(d['d_hi'])}], {kind} = {_p(d['p'])} "
            f"(alpha {spec.alpha:g}; I² = {_f(d['i2'])}); pooled ρ on {a} = {_f(pa.get('estimate'))}, "
            f"on {b} = {_f(pb.get('estimate'))}.")


def comparison_rows(config, cases_by_cell, n_boot: int, level: float) -> list[dict]:
    """Every condition against its reference-topology sibling, per method × site × metric (two-sided)."""
    from kdel.audit.primary import PrimarySpec

    from kdel.sweep.analyses import comparison_pairs

    spec_a = config.analyses
    if not spec_a.compare:
        return []
    rows = []
    for ca, cb in comparison_pairs(config.conditions, spec_a.reference):
        for method in ca.methods:
            for site in ca.sites:
                for metric in spec_a.compare_metrics:
                    for vs in spec_a.vs:
                        spec = PrimarySpec(metric=metric, predictor=vs, method=method, site=site,
                                           outcome=spec_a.outcomes[0], direction="two-sided", declared=False)
                        r = contrast_across_seeds(cases_by_cell, ca.name, cb.name, spec, n_boot, level)
                        if not r["seeds"]:
                            continue
                        rows.append({"method": method, "site": site, "metric": metric, "vs": vs,
                                     "outcome": spec_a.outcomes[0], **r})
    adjust(rows, p_of=lambda r: r["pooled"]["difference"]["p"])
    return rows
