"""The report's first tables: setup (what was deleted, how, from what), headline numbers, probe groups."""

from __future__ import annotations

from kdel.audit.metrics import SIDE_GROUPS
from kdel.report.data import AuditData
from kdel.report.fmt import cell, ci, esc, metric, num, pop_word, series_of, sname, table


def section(id_: str, title: str, body: str, open_: bool = False) -> str:
    """A collapsible section: <details> whose summary is the section's heading."""
    return (f"<details class=section id={id_}{' open' if open_ else ''}><summary><h2>{title}</h2></summary>"
            f"{body}</details>")


def unit_word(audits: list[AuditData]) -> str:
    """'graph' when every audit is of a KG, else 'audit'."""
    return "graph" if all(a.source == "kg" for a in audits) else "audit"


def _source_text(a: AuditData) -> str:
    """What was edited: the KG (topology, size, degrees), the facts file, or that it was not recorded."""
    if a.source == "facts":
        f = a.facts or {}
        n = f.get("n_facts")
        name = str(f.get("path", "?")).rsplit("/", 1)[-1]
        return f"facts file <code>{esc(name)}</code>" + (f": {n} facts" if n is not None else " (not found)")
    kg = a.kg
    if kg:
        return (f"{esc(kg.get('topology', '?')).upper()} knowledge graph: {kg.get('entities')} entities, "
                f"{kg.get('relations')} relations, {kg.get('triples')} facts; degree mean "
                f"{num(kg.get('mean_degree'), 1)}, max {kg.get('max_degree')}")
    if a.source == "kg":
        return f"(KG bundle not found at {esc((a.config or {}).get('kg_dir'))})"
    return "(not recorded: no kg_dir or facts in audit_config.json)"


def _setup(audits: list[AuditData]) -> str:
    rows = []
    for a in audits:
        cfg = (a.config or {}).get("config") or {}
        kg, m = a.kg or {}, a.model or {}
        layers_used = sorted({c["spec"]["layer"] for c in a.cases})
        kg_txt = _source_text(a)
        if m:
            params = m.get("train_n_params")
            model_txt = (f"{esc(m.get('model_type'))}, {m.get('n_layer')} layers, width {m.get('n_embd')}, "
                         f"{m.get('n_head')} heads" + (f", {params / 1e6:.2f} M params" if params else "")
                         + (f"; trained {m['train_steps']} steps" if m.get("train_steps") else ""))
        else:
            model_txt = "(model directory not found)"
        present = len(a.cases) + len(a.skipped)
        planned = a.n_planned
        rows.append([
            f"<b>{esc(a.label)}</b>", kg_txt, model_txt,
            ", ".join(esc(x) for x in sorted({c["spec"]["method"] for c in a.cases})),
            ", ".join(esc(x) for x in sorted({c["spec"]["objective"] for c in a.cases})),
            ", ".join(esc(x) for x in sorted({c["spec"]["site"] for c in a.cases})),
            f"{esc(cfg.get('layers', '?'))} → used {', '.join(map(str, layers_used))}",
            f"{len(a.cases)}" + (f" of {planned} planned" if planned is not None and planned != present else "")
            + (f", {len(a.skipped)} file(s) skipped" if a.skipped else ""),
            f"{cfg.get('per_bin', '?')} per bin × {cfg.get('n_bins', '?')} {esc(cfg.get('stratify', 'subject'))} "
            f"popularity bins (rank quantiles of {pop_word([a])})",
        ])
    headers = [unit_word(audits), "knowledge source", "model", "methods", "objective", "edit sites", "layers", "cases",
               "sampling"]
    t = table(headers, rows)
    hp_rows = []
    for a in audits:
        for method, v in sorted({c["spec"]["method"]: c["spec"]["hparams"] for c in a.cases}.items()):
            hp_rows.append([esc(a.label), esc(method), f"<code>{esc(_short_hparams(v, 400))}</code>"])
    return section("setup", "1. Setup: what was deleted, and how", f"{t}"
            "<p class=note>Each case deletes one fact (subject, relation, object) from the model with one method at one "
            "layer and edit site, measures every probe group in one batched pass, and reverts the weights "
            "(checked bit for bit). <i>auto</i> layers are the traced MLP peak at the edit site.</p>"
            f"<details><summary>Hyperparameters</summary>{table([unit_word(audits), 'method', 'hyperparameters'], hp_rows)}"
            "</details>", open_=True)


def _short_hparams(hp: dict, limit: int = 160) -> str:
    txt = ", ".join(f"{k}={v}" for k, v in sorted(hp.items()))
    return txt if len(txt) <= limit else txt[: limit - 1] + "…"


def _headline(audits: list[AuditData]) -> str:
    rows = []
    for a in audits:
        for method, site in series_of(a):
            allc = cell(a, method, site, "all")
            n_err = sum(1 for c in a.cases if c["status"] != "ok" and (c["spec"]["method"], c["spec"]["site"])
                        == (method, site))
            n_wreck = sum(1 for c in a.ok_cases if c["wrecked"] and (c["spec"]["method"], c["spec"]["site"])
                          == (method, site))
            rows.append([
                esc(a.label), sname(method, site), str(allc["n"] if allc else 0) + (f" (+{n_err} errors)" if n_err else ""),
                ci(metric(allc, "efficacy.success"), pct=True),
                ci(metric(allc, "efficacy.target_recall_after")),
                ci(metric(allc, "efficacy.paraphrase_recall_after")),
                ci(metric(allc, "global.acc_drop"), 3),
                ci(metric(allc, "unrelated.acc_after_recalled"), 3),
                ci(metric(allc, "kl.mean"), 3),
                f"{n_wreck}",
            ])
    headers = [unit_word(audits), "method @ site", "cases", "deletion success", "target recall after (0 best)",
               "paraphrase recall after", "global accuracy drop", "unrelated accuracy after", "KL (unrelated)",
               "wrecked"]
    return section("headline", "2. Headline numbers", f"{table(headers, rows, 'num')}"
            "<p class=note>Means over all cases with 95% cluster-bootstrap CIs in brackets (subjects resampled: a "
            "hub's several facts, and a fact's edits at several layers, are not independent). <i>Deletion success</i>: the object "
            "is no longer recalled (whole-object top-1) from the canonical prompt. <i>Global accuracy drop</i>: "
            "recall over every fact, before minus after. <i>Wrecked</i>: cases whose unrelated-sample "
            "accuracy fell below 0.9 (they do not count as successful deletions in benchmarks).</p>", open_=True)


def _groups(audits: list[AuditData]) -> str:
    parts = ["<p class=note>Successful deletions only (a failed edit's side effects are not those of a deletion; "
             "failed ones are in the confound panel). Per group: mean number of its facts recalled before the "
             "edit (the denominator), per-fact flip rate (correct → wrong), per-edit rate that <i>any</i> fact of "
             "the group broke, and the mean drop of p(true object).</p>"]
    for a in audits:
        for method, site in series_of(a):
            c = cell(a, method, site, "success")
            if c is None:
                parts.append(f"<div class=gbox><h3>{esc(a.label)} — {sname(method, site)}</h3>"
                             "<p>No successful deletion.</p></div>")
                continue
            rows = []
            for g in ("target", "paraphrase") + SIDE_GROUPS:
                rows.append([g, ci(metric(c, f"{g}.size"), 1), ci(metric(c, f"{g}.flip_rate"), pct=True),
                             ci(metric(c, f"{g}.any_broke"), pct=True), ci(metric(c, f"{g}.mean_p_drop"), 3)])
            parts.append(f"<div class=gbox><h3>{esc(a.label)} — {sname(method, site)} <span class=n>(n = {c['n']} "
                         f"successful deletions)</span></h3>"
                         + table(["probe group", "facts per case", "flip rate (per fact)", "any broke (per edit)",
                                   "mean p drop"], rows, "num") + "</div>")
    return section("groups", "3. What broke: side effects per probe group",
                   parts[0] + "<div class=grid>" + "".join(parts[1:]) + "</div>")
