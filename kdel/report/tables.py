"""The report's detailed tables: the confound panel (edit size, group sizes, correlations with their CIs,
corrections, partial ρ and collinearity, effects in natural units), Hase et al.'s regressions, problems."""

from __future__ import annotations

from kdel.report.correlations import correlation_tables
from kdel.report.data import AuditData
from kdel.report.fmt import cell, ci, esc, est_ci, metric, num, pop_word, pval, series_of, sname, table
from kdel.report.sections import section, unit_word


def _confounds(audits: list[AuditData]) -> str:
    parts = []
    # 4a: delta norm, success vs failure
    rows = []
    for a in audits:
        for method, site in series_of(a):
            row = [esc(a.label), sname(method, site)]
            for outcome in ("success", "failed"):
                c = cell(a, method, site, outcome)
                row += [str(c["n"]) if c else "0", ci(metric(c, "delta_norm"), 3),
                        ci(metric(c, "global.mean_p_drop_excluding_target"), 3),
                        ci(metric(c, "global.flip_rate_excluding_target"), pct=True)]
            rows.append(row)
    parts.append("<h3>4a. Edit size ‖ΔW‖ and side effects, successful vs failed deletions</h3>" + table(
        [unit_word(audits), "method @ site", "n success", "‖ΔW‖", "mean p drop (others)", "flip rate (others)",
         "n failed", "‖ΔW‖", "mean p drop (others)", "flip rate (others)"], rows, "num"))
    # 4b: group sizes and per-fact vs per-edit rates per popularity bin
    rows = []
    for a in audits:
        for method, site in series_of(a):
            for b in _bins(a):
                c = cell(a, method, site, "success", layer="all", b=b)
                call = cell(a, method, site, "all", layer="all", b=b)
                if call is None:
                    continue
                rows.append([esc(a.label), sname(method, site), str(b),
                             num(_median_degree(a, method, site, b), 1), str(call["n"]), str(c["n"] if c else 0),
                             ci(metric(call, "same_subject.size"), 1), ci(metric(call, "neighbors_1hop.size"), 1),
                             ci(metric(c, "same_subject.flip_rate"), pct=True),
                             ci(metric(c, "same_subject.any_broke"), pct=True),
                             ci(metric(c, "neighbors_1hop.flip_rate"), pct=True),
                             ci(metric(c, "neighbors_1hop.any_broke"), pct=True),
                             ci(metric(call, "delta_norm"), 3)])
    parts.append(
        "<h3>4b. Group sizes and per-fact vs per-edit rates by subject popularity bin</h3>"
        "<p class=note>Hubs have many more same-subject and neighbouring facts, so the per-edit rate “any fact of "
        "the group broke” rises with degree even when the per-fact flip rate is flat. Sizes and ‖ΔW‖ over all "
        "cases; rates over successful deletions.</p>"
        + table([unit_word(audits), "method @ site", "bin", f"median {pop_word(audits)}", "cases", "successful", "same_subject size",
                  "neighbors_1hop size", "same_subject flip (per fact)", "same_subject any broke (per edit)",
                  "1-hop flip (per fact)", "1-hop any broke (per edit)", "‖ΔW‖"], rows, "num"))
    parts.append(correlation_tables(audits))
    return section("confounds", "4. Confound panel: is it popularity, or something that comes with it?",
                   "".join(parts))


def _bins(a: AuditData) -> list[int]:
    return sorted({int(c["fact"]["subject_bin"]) for c in a.ok_cases})


def _median_degree(a: AuditData, method: str, site: str, b: int) -> float | None:
    import statistics

    d = [c["fact"]["subject_degree"] for c in a.ok_cases
         if (c["spec"]["method"], c["spec"]["site"]) == (method, site) and int(c["fact"]["subject_bin"]) == b]
    return float(statistics.median(d)) if d else None


def _r2(r: dict, key: str) -> str:
    v = r.get(key)
    if v is None:
        reason = (r.get("null_reasons") or {}).get(key)
        return f"– <span class=ci>({esc(reason)})</span>" if reason else "–"
    lo, hi = (r.get("ci") or {}).get(key, [None, None])
    return est_ci(v, lo, hi, 3)


def _regressions(audits: list[AuditData]) -> str:
    rows = []
    for a in audits:
        for r in (a.summary or {}).get("regressions", []):
            f = r.get("f_test") or {}
            ftxt = ((num(f.get("F"), 2) + f" ({f.get('df_num')}, {f.get('df_den')})") if f.get("F") is not None
                    else "–" + (f" <span class=ci>({esc(f['null_reason'])})</span>" if f.get("null_reason") else ""))
            fc = r.get("f_test_cluster") or {}
            ctxt = (pval(fc.get("p")) if fc.get("p") is not None
                    else "–" + (f" <span class=ci>({esc(fc['null_reason'])})</span>" if fc.get("null_reason") else ""))
            rows.append([esc(a.label), sname(r["method"], r["site"]), esc(r["objective"]), esc(r["y"]),
                         f"{r['n']} ({r.get('n_facts', '?')} facts, {r.get('n_subjects') or '?'} subjects)",
                         str(r.get("n_layers")), _r2(r, "r2_layer"), _r2(r, "r2_tracing"),
                         _r2(r, "r2_layer_x_tracing"), _r2(r, "delta_r2_tracing_over_layer"), ftxt, pval(f.get("p")),
                         ctxt])
    return section("hase", "5. Does localization inform editing? (Hase et al.'s regressions)",
                   "<p class=note>Three least-squares fits of edit success on the edited layer (one-hot), on the causal "
                   "tracing effect at that layer (MLP, window 5, max over tokens), and on layer × tracing effect. ΔR² "
                   "is "
                   "what tracing adds to layer alone; F and p test that nested comparison (each edit one observation, "
                   "as Hase et al.), and the cluster-robust p tests it again with subjects as clusters (a Wald test "
                   "with a CR1 sandwich covariance against F(q, G − 1), kdel.stats.robust: use this one, since a "
                   "fact's edits at several layers are not independent; the brackets are 95% cluster-bootstrap CIs "
                   "over subjects). A fit with a constant outcome, no residual "
                   "degrees of freedom or n &lt; k + 3 is not reported (–, with the reason). With <i>auto</i> layers a "
                   "single fact has one layer, so layer and tracing are confounded: run <code>--layers all</code> for "
                   "the sweep Hase et al. used.</p>"
                   + table([unit_word(audits), "method @ site", "objective", "success measure", "n edits",
                            "layers", "R² layer", "R² tracing", "R² layer×tracing", "ΔR² (tracing over layer)",
                            "F (df)", "p", "p (cluster-robust)"], rows, "num"))


def _problems(audits: list[AuditData]) -> str:
    rows = []
    for a in audits:
        for s in a.skipped:
            rows.append([esc(a.label), "skipped file", f"<code>{esc(s.path)}</code>", esc(s.reason)])
        for c in a.cases:
            if c["status"] != "ok":
                rows.append([esc(a.label), "case error", f"<code>{esc(c['case_id'])}</code> "
                             f"({esc(c['spec']['method'])}, fact {c['fact']['id']})", esc(c.get("error", ""))])
    if not rows:
        return section("problems", "8. Skipped files and errors",
                       "<p>None: every case file was valid and every case ran.</p>")
    return section("problems", "8. Skipped files and errors",
                   "<p class=warn>These are not in any number above.</p>"
                   + table([unit_word(audits), "kind", "what", "why"], rows), open_=True)
