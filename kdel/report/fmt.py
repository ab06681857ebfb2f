"""Formatting helpers shared by the report's HTML sections (escaping, numbers, CIs, tables, cell lookup)."""

from __future__ import annotations

import html
import math

from kdel.report.data import AuditData


def esc(x) -> str:
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


def table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
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


def metric(c: dict | None, key: str) -> dict | None:
    return None if c is None else c["metrics"].get(key)


def sname(method: str, site: str) -> str:
    return f"{esc(method)} <span class=site>@ {esc(site)}</span>"


def est_ci(est: float | None, lo: float | None, hi: float | None, digits: int = 2, signed: bool = False) -> str:
    """'0.28 [0.10, 0.44]' from an estimate and its CI ('–' when undefined)."""
    if est is None:
        return "–"
    f = (lambda v: f"{v:+.{digits}f}") if signed else (lambda v: num(v, digits))
    if lo is None or hi is None:
        return f(est)
    return f"{f(est)} <span class=ci>[{f(lo)}, {f(hi)}]</span>"


def pop_word(audits: list[AuditData]) -> str:
    """'degree' for KG audits, 'popularity' when a facts file is involved."""
    return "popularity" if any(a.source == "facts" for a in audits) else "degree"
