"""The report's first screen: the primary hypothesis answered (verdict, estimate, CI, corrected p, effect in
natural units) beside the main figure; with two graphs, their comparison (interaction and matched range)."""

from __future__ import annotations

import base64
from pathlib import Path

from kdel.audit.compare import compare_graphs
from kdel.audit.primary import dropped_text, effect_sentence, p_text
from kdel.report.data import AuditData
from kdel.report.fmt import esc, num
from kdel.report.plots import Plot


def _max_degree(a: AuditData) -> float:
    return max((float(c["fact"].get("subject_degree") or 0) for c in a.ok_cases), default=0.0)


def compare_audits(audits: list[AuditData], n_boot: int = 1000) -> list[dict]:
    """compare_graphs of the heaviest-tailed audit (BA if there is one, else the widest degree range) against
    each other audit, on the first declared primary hypothesis (else the default)."""
    if len(audits) < 2:
        return []
    spec = next((a.primary for a in audits if a.primary is not None), None)
    a = max(audits, key=lambda x: (x.label.upper() == "BA", _max_degree(x)))
    seed = int(((a.config or {}).get("config") or {}).get("seed", 0) or 0)
    return [compare_graphs(a.cases, b.cases, spec, labels=(a.label, b.label), seed=seed, n_boot=n_boot)
            for b in audits if b is not a]


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _details(res: dict) -> str:
    items = []
    eff = effect_sentence(res)
    if eff:
        items.append(esc(eff))
    mean = res.get("mean") or {}
    if mean.get("estimate") is not None:
        items.append(f"Mean over the {res['n_facts']} facts: {num(mean['estimate'], 4)}"
                     + (f" [{num(mean['lo'], 4)}, {num(mean['hi'], 4)}]" if mean.get("lo") is not None else ""))
    if res.get("p") is not None:
        if res["spec"]["declared"]:
            items.append(f"{esc(p_text('p', res['p']))} for the one pre-declared test; had it been one of the "
                         f"{res['family_size']} exploratory tests, {esc(p_text('Holm p', res['p_holm_in_family']))}.")
        else:
            items.append(f"No primary hypothesis is declared in audit_config.json, so this default one is "
                         f"corrected with the {res['family_size']} exploratory tests (uncorrected "
                         f"{esc(p_text('p', res['p']))}).")
    if res.get("partial_rho") is not None:
        col = ", ".join(f"{esc(k.replace('.size', ' size').replace('delta_norm', '‖ΔW‖'))} {v:+.2f}"
                        for k, v in (res.get("collinearity") or {}).items() if v is not None)
        items.append(f"Partial ρ controlling for {esc(', '.join(res['controls']))}: {res['partial_rho']:+.2f}"
                     + (f" [{res['partial_ci_lo']:+.2f}, {res['partial_ci_hi']:+.2f}]"
                        if res.get("partial_ci_lo") is not None else "")
                     + f" (collinearity of the predictor with the controls: {col}; near ±1 the partial ρ has "
                       "little power).")
    if any((res.get("dropped") or {}).values()):
        items.append(f"Cases left out: {esc(dropped_text(res['dropped']))}.")
    return "<ul class=facts>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def first_screen(audits: list[AuditData], comparisons: list[dict], main: Plot | None) -> str:
    parts = ["<h2 id=answer>The answer</h2>"]
    first = next(((a.summary or {}).get("primary") for a in audits if (a.summary or {}).get("primary")), None)
    if first:
        origin = ("declared in the audit config" if first["spec"].get("declared") else
                  "not declared in the audit config: kdel's default, treated as exploratory")
        hyp = first.get("hypothesis", "")
        parts.append(f"<p class=hyp>Primary hypothesis ({origin}): <code>{esc(hyp)}</code></p>")
    for a in audits:
        res = (a.summary or {}).get("primary")
        if not res:
            continue
        cls = "verdict yes" if res.get("significant") else "verdict"
        parts.append(f"<div class='{cls}'><b>{esc(a.label)}.</b> {esc(res['verdict'])}{_details(res)}</div>")
    for comp in comparisons:
        la, lb = comp["labels"]
        d = comp.get("difference") or {}
        cls = "verdict yes" if d.get("p") is not None and d["p"] < comp["spec"]["alpha"] else "verdict"
        matched = f"<ul class=facts><li>{esc(comp['matched_verdict'])}</li></ul>" if comp.get("matched_verdict") else ""
        parts.append(f"<div class='{cls}'><b>{esc(la)} vs {esc(lb)} (topology × popularity).</b> "
                     f"{esc(comp['verdict'])}{matched}</div>")
    text = "<div class=answer-text>" + "".join(parts) + "</div>"
    fig = ""
    if main is not None:
        fig = (f"<figure class=main id='fig-{esc(main.name)}'><img alt='{esc(main.title)}' src='{_img(main.path)}'>"
               f"<figcaption><b>{esc(main.title)}.</b> {esc(main.caption)} "
               f"<span class=file>plots/{esc(main.path.name)}</span></figcaption></figure>")
    return f"<section class=answer>{text}{fig}</section>"
