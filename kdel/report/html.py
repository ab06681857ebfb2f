"""`render_report`: one self-contained report.html (inline CSS, PNGs as base64 data URIs, no script, no network).

Order: the answer to the primary hypothesis beside the main figure (first screen) → collapsible sections:
any extra ones (`extra_sections`, e.g. `kdel report --risk`'s predicted vs measured) → setup → headline
numbers → side effects per probe group → the confound panel (‖ΔW‖, group sizes, per-fact vs per-edit rates,
correlations with CIs and corrections) → Hase et al.'s regressions → figures →
glossary → skipped files and errors.
"""

from __future__ import annotations

import base64
import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

from kdel.errors import UserError
from kdel.io import atomic_write_text
from kdel.report.answer import compare_audits, first_screen
from kdel.report.data import AuditData, SkippedFile, discover_audits, load_audit
from kdel.report.fmt import esc
from kdel.report.figures import write_all_plots
from kdel.report.plots import Plot
from kdel.report.sections import _groups, _headline, _setup, section
from kdel.report.tables import _confounds, _problems, _regressions

DEFAULT_TITLE = "kdel deletion audit"


@dataclass
class ReportResult:
    html_path: Path
    plots: list[Plot]
    audits: list[AuditData]
    skipped: list[SkippedFile] = field(default_factory=list)
    comparisons: list[dict] = field(default_factory=list)


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _figures(plots: list[Plot]) -> str:
    parts = []
    main = [p for p in plots if p.name != "primary" and (not p.name.startswith("trace_")
                                                         or p.name == "trace_layer_profiles")]
    examples = [p for p in plots if p.name.startswith("trace_") and p.name != "trace_layer_profiles"]
    for p in main:
        parts.append(f"<figure id='fig-{esc(p.name)}'><figcaption><b>{esc(p.title)}.</b> {esc(p.caption)} "
                     f"<span class=file>plots/{esc(p.path.name)}</span></figcaption>"
                     f"<img alt='{esc(p.title)}' src='{_img(p.path)}'></figure>")
    if examples:
        parts.append("<h3>Example causal-tracing heatmaps (most and least popular traced subject per graph)</h3>"
                     "<div class=grid>")
        for p in examples:
            parts.append(f"<figure class=small id='fig-{esc(p.name)}'><img alt='{esc(p.title)}' src='{_img(p.path)}'>"
                         f"<figcaption><b>{esc(p.title)}</b>: {esc(p.caption)}</figcaption></figure>")
        parts.append("</div>")
    return section("figures", "6. Figures", "".join(parts), open_=True)


def _glossary(audits: list[AuditData]) -> str:
    kg = all(a.source == "kg" for a in audits)
    items = [
        ("target / paraphrase", "the deleted fact with its training templates / held-out templates"),
        ("same_subject, same_object, subject_as_object", "other facts sharing the subject, sharing the object, "
         "or whose object is the deleted fact's subject"),
        ("neighbors_1hop / neighbors_2hop", "facts whose subject is 1 / 2 steps from the subject"
         + (" (in the KG)" if kg else " (entities linked by a fact)")),
        ("same_relation", "the same relation with other subjects; unrelated: a fixed random sample at distance ≥ 3"),
        ("flip rate", "share of the group's facts recalled before the edit and not after (per fact)"),
        ("any broke", "1 if at least one fact of the group flipped (per edit; grows with group size)"),
        ("mean p drop", "mean over recalled facts of p(true object) before minus after (continuous; ties-free)"),
        ("‖ΔW‖", "Frobenius norm of the weight change, all touched matrices (huge values flag ROME's "
         "“disabling edits”; compare rome with r-rome)"),
        ("popularity", ("subject degree in the KG (triples mentioning the entity)" if kg else
                        "the facts file's popularity field, else the number of its lines mentioning the subject")
         + "; bins are rank quantiles"),
        ("ρ, CI, p", "Spearman correlation over deleted facts (each fact once); 95% CI and p by a cluster "
         "bootstrap that resamples subjects; Holm p and BH q adjust for every test of the summary"),
        ("hubs − rest", "mean of a side effect over facts whose subject is in the top decile of popularity, "
         "minus the other facts' mean: the effect in the metric's own units"),
    ]
    return section("glossary", "7. Glossary",
                   "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items) + "</dl>")


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
details.section{margin-top:18px}details.section>summary{cursor:pointer;list-style-position:outside}
details.section>summary h2{display:inline-block;margin:18px 0 6px}
.answer{display:flex;gap:18px;align-items:flex-start;flex-wrap:wrap;margin-top:8px}
.answer-text{flex:1 1 380px;min-width:340px}.answer h2{margin-top:6px}
.answer figure.main{flex:1 1 600px;margin:0}.hyp{font-size:12.5px;color:#444}
.verdict{border-left:5px solid #9aa3ad;background:#f6f7f9;padding:8px 12px;margin:10px 0;font-size:14.5px}
.verdict.yes{border-left-color:#1a7f37;background:#eef8f0}
ul.facts{margin:6px 0 0 0;padding-left:18px;font-size:12.5px;color:#333}.hi{color:#b00020;font-weight:bold}
"""


def _cards(audits: list[AuditData]) -> str:
    out = []
    for a in audits:
        s = a.summary or {}
        n_ok = s.get("n_ok", 0)
        out.append(f"<div class=card>{esc(a.label)}<b>{s.get('n_success', 0)} / {n_ok}</b>deletions succeeded"
                   f"<br>{s.get('n_wrecked', 0)} wrecked the model, {s.get('n_error', 0)} errors</div>")
    return "<div class=cards>" + "".join(out) + "</div>"


def report_title(audits: list[AuditData], title: str | None = None) -> str:
    """The explicit title, else the audit config's `title`, else one naming the model and facts file (a
    facts-file audit), else the default."""
    if title:
        return title
    for a in audits:
        if a.title:
            return a.title
    a = audits[0]
    if a.source == "facts":
        model = Path(str((a.model or {}).get("path") or (a.config or {}).get("model_dir") or "model")).name
        facts = Path(str((a.facts or {}).get("path") or "facts")).name
        return f"Deletion audit: {model} on {facts}"
    return DEFAULT_TITLE


def _intro(audits: list[AuditData]) -> str:
    sources = {a.source for a in audits}
    if sources == {"kg"}:
        return ("Knowledge was deleted from language models trained on synthetic knowledge graphs; this report "
                "answers the audit's primary question first, then says what was deleted, how, what else broke, "
                "and whether the subject's popularity or the edited layer mattered.")
    if sources == {"facts"}:
        return ("Facts from a facts file were deleted from a language model one at a time; this report answers "
                "the audit's primary question first, then says what was deleted, how, what else broke, and "
                "whether the subject's popularity or the edited layer mattered.")
    return ("Facts were deleted from language models one at a time; this report answers the audit's primary "
            "question first, then says what was deleted, how, what else broke, and whether the subject's "
            "popularity or the edited layer mattered.")


def build_html(audits: list[AuditData], plots: list[Plot], title: str | None = None,
               comparisons: list[dict] | None = None, extra_sections: list[tuple[str, str, str]] = ()) -> str:
    """The page; `extra_sections`: (id, title, body HTML) of open collapsible sections after the answer."""
    title = report_title(audits, title)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sources = ", ".join(f"{esc(a.label)}: <code>{esc(a.audit_dir)}</code>" for a in audits)
    toc = "".join(f"<a href='#{i}'>{t}</a>" for i, t in (
        ("answer", "Answer"), *((i, t) for i, t, _ in extra_sections), ("setup", "Setup"), ("headline", "Headline"),
        ("groups", "Probe groups"), ("confounds", "Confounds"), ("hase", "Hase regressions"), ("figures", "Figures"),
        ("glossary", "Glossary"), ("problems", "Errors")))
    main = next((p for p in plots if p.name == "primary"), None)
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset='utf-8'><meta name=generator content=kdel>"
        f"<meta name=viewport content='width=device-width, initial-scale=1'><title>{esc(title)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1><p class=note>{_intro(audits)} Generated {now} from the case files of {sources}.</p>"
        + first_screen(audits, comparisons or [], main)
        + f"<p class=toc>{toc}</p>{_cards(audits)}"
        + "".join(section(i, esc(t), body, open_=True) for i, t, body in extra_sections)
        + _setup(audits) + _headline(audits) + _groups(audits) + _confounds(audits) + _regressions(audits)
        + _figures(plots) + _glossary(audits) + _problems(audits) + "</body></html>\n"
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


def render_report(audit_dirs, out_html, plots_dir=None, strict: bool = False, title: str | None = None,
                  warn=None, audits: list[AuditData] | None = None, n_boot: int = 1000,
                  extra_sections: list[tuple[str, str, str]] = ()) -> ReportResult:
    """Re-compute the summaries from the case files, draw the plots, write one self-contained report.html.

    `audit_dirs`: an audit directory, a pipeline run directory (its */audit), a list of them, or a mapping
    {label: audit dir}. A bad case file is named in a one-line warning and skipped (`strict`: UserError).
    `title`: None takes the audit config's `title` (else a default naming a facts-file audit's model and
    file). With two or more audits the first screen compares them (kdel.audit.compare.compare_graphs).
    `extra_sections`: see build_html.
    """
    out_html = Path(out_html)
    if audits is None:
        audits = load_audits(audit_dirs, strict=strict, warn=warn, n_boot=n_boot)
    comparisons = compare_audits(audits, n_boot=n_boot)
    plots_dir = Path(plots_dir) if plots_dir is not None else out_html.parent / "plots"
    plots = write_all_plots(audits, plots_dir, comparisons)
    atomic_write_text(out_html, build_html(audits, plots, title, comparisons, extra_sections))
    return ReportResult(out_html, plots, audits, [s for a in audits for s in a.skipped], comparisons)
