"""`render_report`: one self-contained report.html (inline CSS, PNGs as base64 data URIs, no script, no network).

Order: what was done (setup) → headline numbers with CIs → side effects per probe group → the confound
panel (‖ΔW‖, group sizes, per-fact vs per-edit rates, success vs failure, Spearman / partial Spearman) →
Hase et al.'s regressions → figures → glossary, skipped files and errors.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

from kdel.audit.summary import SIDE_GROUPS
from kdel.errors import UserError
from kdel.io import atomic_write_text
from kdel.report.data import AuditData, SkippedFile, discover_audits, load_audit
from kdel.report.plots import Plot, write_all_plots

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


@dataclass
class ReportResult:
    html_path: Path
    plots: list[Plot]
    audits: list[AuditData]
    skipped: list[SkippedFile] = field(default_factory=list)


# -- small formatting helpers ----------------------------------------------------------------------------
def _e(x) -> str:
    return html.escape(str(x))


def num(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if v != 0 and abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.{digits}f}"


def pval(p) -> str:
    if p is None:
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def ci(m: dict | None, digits: int = 2, pct: bool = False) -> str:
    """'mean [lo, hi]' from a bootstrap dict (n = 0: '–')."""
    if not m or m.get("mean") is None:
        return "–"
    f = (lambda v: f"{100 * v:.0f}%") if pct else (lambda v: num(v, digits))
    if m.get("lo") is None or m["lo"] == m["hi"]:
        return f"{f(m['mean'])}"
    return f"{f(m['mean'])} <span class=ci>[{f(m['lo'])}, {f(m['hi'])}]</span>"


def _table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def series_of(a: AuditData) -> list[tuple[str, str]]:
    return sorted({(c["spec"]["method"], c["spec"]["site"]) for c in a.cases})


def cell(a: AuditData, method: str, site: str, outcome: str = "all", layer="all", bin_by: str = "subject",
         b="all") -> dict | None:
    for c in (a.summary or {}).get("cells", []):
        if (c["method"], c["site"], c["layer"], c["bin_by"], c["bin"], c["outcome"]) == \
                (method, site, layer, bin_by, b, outcome):
            return c
    return None


def _metric(c: dict | None, key: str) -> dict | None:
    return None if c is None else c["metrics"].get(key)


def _sname(method: str, site: str) -> str:
    return f"{_e(method)} <span class=site>@ {_e(site)}</span>"


# -- sections ------------------------------------------------------------------------------------------------
def _setup(audits: list[AuditData]) -> str:
    rows = []
    for a in audits:
        cfg = (a.config or {}).get("config") or {}
        kg, m = a.kg or {}, a.model or {}
        layers_used = sorted({c["spec"]["layer"] for c in a.cases})
        kg_txt = (f"{_e(kg.get('topology', '?')).upper()}: {kg.get('entities')} entities, {kg.get('relations')} "
                  f"relations, {kg.get('triples')} facts; degree mean {num(kg.get('mean_degree'), 1)}, max "
                  f"{kg.get('max_degree')}") if kg else "(KG bundle not found beside the audit)"
        if m:
            params = m.get("train_n_params")
            model_txt = (f"{_e(m.get('model_type'))}, {m.get('n_layer')} layers, width {m.get('n_embd')}, "
                         f"{m.get('n_head')} heads" + (f", {params / 1e6:.2f} M params" if params else "")
                         + (f"; trained {m['train_steps']} steps" if m.get("train_steps") else ""))
        else:
            model_txt = "(model directory not found)"
        present = len(a.cases) + len(a.skipped)
        planned = a.n_planned
        rows.append([
            f"<b>{_e(a.label)}</b>", kg_txt, model_txt,
            ", ".join(_e(x) for x in sorted({c["spec"]["method"] for c in a.cases})),
            ", ".join(_e(x) for x in sorted({c["spec"]["objective"] for c in a.cases})),
            ", ".join(_e(x) for x in sorted({c["spec"]["site"] for c in a.cases})),
            f"{_e(cfg.get('layers', '?'))} → used {', '.join(map(str, layers_used))}",
            f"{len(a.cases)}" + (f" of {planned} planned" if planned is not None and planned != present else "")
            + (f", {len(a.skipped)} file(s) skipped" if a.skipped else ""),
            f"{cfg.get('per_bin', '?')} per bin × {cfg.get('n_bins', '?')} {_e(cfg.get('stratify', 'subject'))} "
            f"popularity bins (rank quantiles of degree)",
        ])
    headers = ["graph", "knowledge graph", "model", "methods", "objective", "edit sites", "layers", "cases",
               "sampling"]
    t = _table(headers, rows)
    hp_rows = []
    for a in audits:
        for method, v in sorted({c["spec"]["method"]: c["spec"]["hparams"] for c in a.cases}.items()):
            hp_rows.append([_e(a.label), _e(method), f"<code>{_e(_short_hparams(v, 400))}</code>"])
    return (f"<h2 id=setup>1. Setup: what was deleted, and how</h2>{t}"
            "<p class=note>Each case deletes one fact (subject, relation, object) from the model with one method at one "
            "layer and edit site, measures every probe group in one batched pass, and reverts the weights "
            "(checked bit for bit). <i>auto</i> layers are the traced MLP peak at the edit site.</p>"
            f"<details><summary>Hyperparameters</summary>{_table(['graph', 'method', 'hyperparameters'], hp_rows)}"
            "</details>")


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
                _e(a.label), _sname(method, site), str(allc["n"] if allc else 0) + (f" (+{n_err} errors)" if n_err else ""),
                ci(_metric(allc, "efficacy.success"), pct=True),
                ci(_metric(allc, "efficacy.target_recall_after")),
                ci(_metric(allc, "efficacy.paraphrase_recall_after")),
                ci(_metric(allc, "global.acc_drop"), 3),
                ci(_metric(allc, "unrelated.acc_after_recalled"), 3),
                ci(_metric(allc, "kl.mean"), 3),
                f"{n_wreck}",
            ])
    headers = ["graph", "method @ site", "cases", "deletion success", "target recall after (0 best)",
               "paraphrase recall after", "global accuracy drop", "unrelated accuracy after", "KL (unrelated)",
               "wrecked"]
    return (f"<h2 id=headline>2. Headline numbers</h2>{_table(headers, rows, 'num')}"
            "<p class=note>Means over all cases with 95% bootstrap CIs in brackets. <i>Deletion success</i>: the object "
            "is no longer recalled (whole-object top-1) from the canonical prompt. <i>Global accuracy drop</i>: "
            "recall over every fact of the KG, before minus after. <i>Wrecked</i>: cases whose unrelated-sample "
            "accuracy fell below 0.9 (they do not count as successful deletions in benchmarks).</p>")


def _groups(audits: list[AuditData]) -> str:
    parts = ["<h2 id=groups>3. What broke: side effects per probe group</h2>"
             "<p class=note>Successful deletions only (a failed edit's side effects are not those of a deletion; "
             "failed ones are in the confound panel). Per group: mean number of its facts recalled before the "
             "edit (the denominator), per-fact flip rate (correct → wrong), per-edit rate that <i>any</i> fact of "
             "the group broke, and the mean drop of p(true object).</p>"]
    for a in audits:
        for method, site in series_of(a):
            c = cell(a, method, site, "success")
            if c is None:
                parts.append(f"<div class=gbox><h3>{_e(a.label)} — {_sname(method, site)}</h3>"
                             "<p>No successful deletion.</p></div>")
                continue
            rows = []
            for g in ("target", "paraphrase") + SIDE_GROUPS:
                rows.append([g, ci(_metric(c, f"{g}.size"), 1), ci(_metric(c, f"{g}.flip_rate"), pct=True),
                             ci(_metric(c, f"{g}.any_broke"), pct=True), ci(_metric(c, f"{g}.mean_p_drop"), 3)])
            parts.append(f"<div class=gbox><h3>{_e(a.label)} — {_sname(method, site)} <span class=n>(n = {c['n']} "
                         f"successful deletions)</span></h3>"
                         + _table(["probe group", "facts per case", "flip rate (per fact)", "any broke (per edit)",
                                   "mean p drop"], rows, "num") + "</div>")
    return parts[0] + "<div class=grid>" + "".join(parts[1:]) + "</div>"


def _confounds(audits: list[AuditData]) -> str:
    parts = ["<h2 id=confounds>4. Confound panel: is it popularity, or something that comes with it?</h2>"]
    # 4a: delta norm, success vs failure
    rows = []
    for a in audits:
        for method, site in series_of(a):
            row = [_e(a.label), _sname(method, site)]
            for outcome in ("success", "failed"):
                c = cell(a, method, site, outcome)
                row += [str(c["n"]) if c else "0", ci(_metric(c, "delta_norm"), 3),
                        ci(_metric(c, "global.mean_p_drop_excluding_target"), 3),
                        ci(_metric(c, "global.flip_rate_excluding_target"), pct=True)]
            rows.append(row)
    parts.append("<h3>4a. Edit size ‖ΔW‖ and side effects, successful vs failed deletions</h3>" + _table(
        ["graph", "method @ site", "n success", "‖ΔW‖", "mean p drop (others)", "flip rate (others)",
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
                rows.append([_e(a.label), _sname(method, site), str(b),
                             num(_median_degree(a, method, site, b), 1), str(call["n"]), str(c["n"] if c else 0),
                             ci(_metric(call, "same_subject.size"), 1), ci(_metric(call, "neighbors_1hop.size"), 1),
                             ci(_metric(c, "same_subject.flip_rate"), pct=True),
                             ci(_metric(c, "same_subject.any_broke"), pct=True),
                             ci(_metric(c, "neighbors_1hop.flip_rate"), pct=True),
                             ci(_metric(c, "neighbors_1hop.any_broke"), pct=True),
                             ci(_metric(call, "delta_norm"), 3)])
    parts.append(
        "<h3>4b. Group sizes and per-fact vs per-edit rates by subject popularity bin</h3>"
        "<p class=note>Hubs have many more same-subject and neighbouring facts, so the per-edit rate “any fact of "
        "the group broke” rises with degree even when the per-fact flip rate is flat. Sizes and ‖ΔW‖ over all "
        "cases; rates over successful deletions.</p>"
        + _table(["graph", "method @ site", "bin", "median degree", "cases", "successful", "same_subject size",
                  "neighbors_1hop size", "same_subject flip (per fact)", "same_subject any broke (per edit)",
                  "1-hop flip (per fact)", "1-hop any broke (per edit)", "‖ΔW‖"], rows, "num"))
    # 4c: correlations, successful and failed deletions in separate tables
    tables = {}
    for outcome in ("success", "failed"):
        rows = []
        for a in audits:
            for r in (a.summary or {}).get("correlations", []):
                if r["vs"] != "subject_degree" or r["outcome"] != outcome:
                    continue
                label = dict(CORRELATED).get(r["metric"])
                if label is None:
                    continue
                sig = " class=sig" if r["partial_p"] is not None and r["partial_p"] < 0.05 else ""
                rows.append([_e(a.label), _sname(r["method"], r["site"]), _e(label), str(r["n"]),
                             num(r["rho"], 2), pval(r["p"]), f"<span{sig}>{num(r['partial_rho'], 2)}</span>",
                             pval(r["partial_p"]), _e(", ".join(r["controls"]))])
        tables[outcome] = _table(["graph", "method @ site", "side effect", "n", "ρ", "p", "partial ρ", "partial p",
                                  "controls"], rows, "num") if rows else "<p>No such deletions.</p>"
    parts.append(
        "<h3>4c. Spearman correlation of side effects with subject degree</h3>"
        "<p class=note>The partial Spearman correlation (rank residuals, t-test) controls for ‖ΔW‖ and, for group "
        "metrics, for the group's size; a correlation that survives both is not explained by bigger edits or "
        "bigger groups. Highlighted: partial p &lt; 0.05. ρ is undefined (–) where a variable is constant (e.g. no "
        "flip at all). Object-degree correlations are in summary.json.</p>"
        f"<h4>Successful deletions</h4>{tables['success']}"
        f"<details><summary>Failed deletions (not deletions: their side effects are listed apart)</summary>"
        f"{tables['failed']}</details>")
    return "".join(parts)


def _bins(a: AuditData) -> list[int]:
    return sorted({int(c["fact"]["subject_bin"]) for c in a.ok_cases})


def _median_degree(a: AuditData, method: str, site: str, b: int) -> float | None:
    import statistics

    d = [c["fact"]["subject_degree"] for c in a.ok_cases
         if (c["spec"]["method"], c["spec"]["site"]) == (method, site) and int(c["fact"]["subject_bin"]) == b]
    return float(statistics.median(d)) if d else None


def _regressions(audits: list[AuditData]) -> str:
    rows = []
    for a in audits:
        for r in (a.summary or {}).get("regressions", []):
            f = r.get("f_test") or {}
            rows.append([_e(a.label), _sname(r["method"], r["site"]), _e(r["objective"]), _e(r["y"]), str(r["n"]),
                         str(r.get("n_layers")), num(r["r2_layer"]), num(r["r2_tracing"]),
                         num(r["r2_layer_x_tracing"]), num(r["delta_r2_tracing_over_layer"]),
                         (num(f.get("F"), 2) + f" ({f.get('df_num')}, {f.get('df_den')})") if f.get("F") is not None
                         else "–", pval(f.get("p"))])
    return ("<h2 id=hase>5. Does localization inform editing? (Hase et al.'s regressions)</h2>"
            "<p class=note>Three least-squares fits of edit success on the edited layer (one-hot), on the causal "
            "tracing effect at that layer (MLP, window 5, max over tokens), and on layer × tracing effect. ΔR² is "
            "what tracing adds to layer alone; F and p test that nested comparison. With <i>auto</i> layers a "
            "single fact has one layer, so layer and tracing are confounded: run <code>--layers all</code> for "
            "the sweep Hase et al. used.</p>"
            + _table(["graph", "method @ site", "objective", "success measure", "n", "layers", "R² layer",
                      "R² tracing", "R² layer×tracing", "ΔR² (tracing over layer)", "F (df)", "p"], rows, "num"))


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _figures(plots: list[Plot]) -> str:
    parts = ["<h2 id=figures>6. Figures</h2>"]
    main = [p for p in plots if not p.name.startswith("trace_") or p.name == "trace_layer_profiles"]
    examples = [p for p in plots if p.name.startswith("trace_") and p.name != "trace_layer_profiles"]
    for p in main:
        parts.append(f"<figure id='fig-{_e(p.name)}'><figcaption><b>{_e(p.title)}.</b> {_e(p.caption)} "
                     f"<span class=file>plots/{_e(p.path.name)}</span></figcaption>"
                     f"<img alt='{_e(p.title)}' src='{_img(p.path)}'></figure>")
    if examples:
        parts.append("<h3>Example causal-tracing heatmaps (most and least popular traced subject per graph)</h3>"
                     "<div class=grid>")
        for p in examples:
            parts.append(f"<figure class=small id='fig-{_e(p.name)}'><img alt='{_e(p.title)}' src='{_img(p.path)}'>"
                         f"<figcaption><b>{_e(p.title)}</b>: {_e(p.caption)}</figcaption></figure>")
        parts.append("</div>")
    return "".join(parts)


def _glossary() -> str:
    items = [
        ("target / paraphrase", "the deleted fact with its training templates / held-out templates"),
        ("same_subject, same_object, subject_as_object", "other facts sharing the subject, sharing the object, "
         "or whose object is the deleted fact's subject"),
        ("neighbors_1hop / neighbors_2hop", "facts whose subject is 1 / 2 steps from the subject in the KG"),
        ("same_relation", "the same relation with other subjects; unrelated: a fixed random sample at distance ≥ 3"),
        ("flip rate", "share of the group's facts recalled before the edit and not after (per fact)"),
        ("any broke", "1 if at least one fact of the group flipped (per edit; grows with group size)"),
        ("mean p drop", "mean over recalled facts of p(true object) before minus after (continuous; ties-free)"),
        ("‖ΔW‖", "Frobenius norm of the weight change, all touched matrices (huge values flag ROME's "
         "“disabling edits”; compare rome with r-rome)"),
        ("popularity", "subject degree in the KG (triples mentioning the entity); bins are rank quantiles"),
    ]
    return ("<h2 id=glossary>7. Glossary</h2><dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
            + "</dl>")


def _problems(audits: list[AuditData]) -> str:
    rows = []
    for a in audits:
        for s in a.skipped:
            rows.append([_e(a.label), "skipped file", f"<code>{_e(s.path)}</code>", _e(s.reason)])
        for c in a.cases:
            if c["status"] != "ok":
                rows.append([_e(a.label), "case error", f"<code>{_e(c['case_id'])}</code> "
                             f"({_e(c['spec']['method'])}, fact {c['fact']['id']})", _e(c.get("error", ""))])
    if not rows:
        return "<h2 id=problems>8. Skipped files and errors</h2><p>None: every case file was valid and every case ran.</p>"
    return ("<h2 id=problems>8. Skipped files and errors</h2><p class=warn>These are not in any number above.</p>"
            + _table(["graph", "kind", "what", "why"], rows))


CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;max-width:1220px;color:#222;
line-height:1.4;padding:0 16px;background:#fff}
h1{font-size:26px;margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:34px}
h3{margin-bottom:6px;font-size:15px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:12.5px}
th,td{border:1px solid #d5d5d5;padding:3px 7px;vertical-align:top}
th{background:#f3f4f6;text-align:left}table.num td{text-align:right}table.num td:first-child,
table.num td:nth-child(2){text-align:left}
tr:nth-child(even) td{background:#fafafa}
.ci{color:#777;font-size:11px}.site{color:#777}.n{color:#777;font-weight:normal;font-size:13px}
.sig{font-weight:bold;color:#b00020}.note{color:#444;font-size:13px;max-width:1100px}
.warn{color:#b00020;font-weight:bold}.file{color:#888;font-size:11px}
figure{margin:18px 0;border:1px solid #e3e3e3;padding:10px;border-radius:4px}
figure img{max-width:100%;height:auto;display:block;margin-top:6px}
figcaption{font-size:13px;color:#333}
.grid{display:flex;flex-wrap:wrap;gap:10px 22px}.gbox{flex:0 1 590px}.grid figure.small{flex:1 1 340px;margin:0}
.toc a{margin-right:14px}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 12px;background:#f8fafc;min-width:200px}
.card b{font-size:20px;display:block}code{font-size:11.5px}dt{font-weight:bold;margin-top:6px}dd{margin-left:18px}
"""


def _cards(audits: list[AuditData]) -> str:
    out = []
    for a in audits:
        s = a.summary or {}
        n_ok = s.get("n_ok", 0)
        out.append(f"<div class=card>{_e(a.label)}<b>{s.get('n_success', 0)} / {n_ok}</b>deletions succeeded"
                   f"<br>{s.get('n_wrecked', 0)} wrecked the model, {s.get('n_error', 0)} errors</div>")
    return "<div class=cards>" + "".join(out) + "</div>"


def build_html(audits: list[AuditData], plots: list[Plot], title: str = "kdel deletion audit") -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sources = ", ".join(f"{_e(a.label)}: <code>{_e(a.audit_dir)}</code>" for a in audits)
    toc = "".join(f"<a href='#{i}'>{t}</a>" for i, t in (
        ("setup", "Setup"), ("headline", "Headline"), ("groups", "Probe groups"), ("confounds", "Confounds"),
        ("hase", "Hase regressions"), ("figures", "Figures"), ("glossary", "Glossary"), ("problems", "Errors")))
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset='utf-8'>"
        f"<meta name=viewport content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1><p class=note>Generated {now} from the case files of {sources}. Knowledge was "
        "deleted from language models trained on synthetic knowledge graphs; this report says what was deleted, "
        "how, what else broke, and whether the subject's popularity or the edited layer mattered.</p>"
        f"<p class=toc>{toc}</p>{_cards(audits)}"
        + _setup(audits) + _headline(audits) + _groups(audits) + _confounds(audits) + _regressions(audits)
        + _figures(plots) + _glossary() + _problems(audits) + "</body></html>\n"
    )


def _normalize_sources(audit_dirs) -> list[tuple[str | None, Path]]:
    if isinstance(audit_dirs, (str, Path)):
        return [(label, p) for label, p in discover_audits(Path(audit_dirs))]
    if isinstance(audit_dirs, dict):
        return [(str(k), Path(v)) for k, v in audit_dirs.items()]
    out: list[tuple[str | None, Path]] = []
    for item in audit_dirs:
        if isinstance(item, tuple):
            out.append((item[0], Path(item[1])))
        else:
            out += discover_audits(Path(item))
    return out


def load_audits(audit_dirs, strict: bool = False, warn=None, n_boot: int = 1000) -> list[AuditData]:
    """AuditData for a path (an audit or a pipeline run), a list of paths, or a {label: audit dir} mapping."""
    sources = _normalize_sources(audit_dirs)
    if not sources:
        raise UserError("no audit directory given")
    audits = [load_audit(p, label=label, strict=strict, warn=warn, n_boot=n_boot) for label, p in sources]
    labels = [a.label for a in audits]
    if len(set(labels)) != len(labels):
        for i, a in enumerate(audits):
            a.label = f"{a.label}-{i + 1}"
    return audits


def render_report(audit_dirs, out_html, plots_dir=None, strict: bool = False, title: str = "kdel deletion audit",
                  warn=None, audits: list[AuditData] | None = None) -> ReportResult:
    """Re-compute the summaries from the case files, draw the plots, write one self-contained report.html.

    `audit_dirs`: an audit directory, a pipeline run directory (its */audit), a list of them, or a mapping
    {label: audit dir}. A bad case file is named in a one-line warning and skipped (`strict`: UserError).
    """
    out_html = Path(out_html)
    if audits is None:
        audits = load_audits(audit_dirs, strict=strict, warn=warn)
    plots_dir = Path(plots_dir) if plots_dir is not None else out_html.parent / "plots"
    plots = write_all_plots(audits, plots_dir)
    atomic_write_text(out_html, build_html(audits, plots, title))
    return ReportResult(out_html, plots, audits, [s for a in audits for s in a.skipped])
