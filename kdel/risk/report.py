"""The audit report's "predicted vs measured" section: what the risk predictor would have said before each
edit, against what the audit measured.

`predicted_vs_measured_section(audit_dir, risk_model=None)` returns (HTML fragment, PNG bytes), or None when
there is nothing to predict with (no risk model and some case's method is not rank-one) or the cases carry
no per-fact outcomes; `section_parts` returns the fragment's body (for `kdel report --risk`, which wraps it in
a collapsible section) or the one-line reason there is none. With a risk model the predictions are the
learned ones; without one, the first-order κ predictor's (rank-one methods only). The figure: per (case,
probe group), predicted vs measured mean p drop of the group's facts recalled before; the table: per probe
group, the measured and predicted mean p drop and the AUROC of the flip prediction. The PNG is embedded in
the fragment (data URI) and also returned, for a report that writes its plots to files.
"""

from __future__ import annotations

import base64
import html
import io
from typing import NamedTuple

import numpy as np

GROUP_ORDER = ("same_subject", "same_object", "subject_as_object", "neighbors_1hop", "neighbors_2hop",
               "same_relation", "unrelated", "other")


def section_data(rows, risk_model=None) -> dict | None:
    """Per-row predictions (p drop, flip score) and their source."""
    from kdel.risk.names import FEATURES, RANK_ONE

    if risk_model is not None:
        return {"source": "learned", "p_drop": risk_model.p_drop(rows.X), "score": risk_model.flip_probability(rows.X)}
    if not rows.meta or any(m["method"] not in RANK_ONE for m in rows.meta):
        return None
    X = rows.X
    dlogp = X[:, FEATURES.index("fo_dlogp")]
    drop = np.exp(X[:, FEATURES.index("logp")]) * (1 - np.exp(np.minimum(dlogp, 50)))
    return {"source": "first-order κ", "p_drop": drop, "score": -X[:, FEATURES.index("fo_margin_after")]}


def group_table(rows, pred: dict) -> list[dict]:
    from kdel.risk.metrics import auroc

    out = []
    for g in GROUP_ORDER:
        m = rows.probe_group == g
        if not m.any():
            continue
        out.append({"group": g, "n": int(m.sum()), "flipped": int(rows.flipped[m].sum()),
                    "measured_p_drop": float(rows.p_drop[m].mean()), "predicted_p_drop": float(pred["p_drop"][m].mean()),
                    "auroc": auroc(rows.flipped[m], pred["score"][m])})
    return out


def scatter_png(rows, pred: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    cmap = plt.get_cmap("tab10")
    lo, hi = 0.0, 0.0
    for k, g in enumerate(GROUP_ORDER):
        m = rows.probe_group == g
        if not m.any():
            continue
        n = rows.n_cases
        cnt = np.bincount(rows.case[m], minlength=n)
        keep = cnt > 0
        px = (np.bincount(rows.case[m], weights=pred["p_drop"][m], minlength=n)[keep] / cnt[keep])
        my = (np.bincount(rows.case[m], weights=rows.p_drop[m], minlength=n)[keep] / cnt[keep])
        ax.scatter(px, my, s=12, alpha=0.7, color=cmap(k), label=g)
        lo, hi = min(lo, px.min(), my.min()), max(hi, px.max(), my.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(f"predicted mean p drop ({pred['source']})")
    ax.set_ylabel("measured mean p drop")
    ax.set_title("per case and probe group")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


class SectionParts(NamedTuple):
    body: str | None  # the fragment without its heading; None when there is no section
    png: bytes | None
    reason: str | None  # why there is no section (one line)


def render_body(rows, pred: dict) -> tuple[str, bytes]:
    """The section's text, embedded figure and per-group table (no heading), and the figure's PNG."""
    from kdel.risk.metrics import auroc

    png = scatter_png(rows, pred)
    overall = auroc(rows.flipped, pred["score"])
    fmt = lambda x, f=".4f": "n/a" if x is None else format(x, f)  # noqa: E731
    trs = "".join(
        f"<tr><td>{html.escape(r['group'])}</td><td>{r['n']}</td><td>{r['flipped']}</td>"
        f"<td>{fmt(r['measured_p_drop'])}</td><td>{fmt(r['predicted_p_drop'])}</td>"
        f"<td>{fmt(r['auroc'], '.3f')}</td></tr>"
        for r in group_table(rows, pred))
    img = base64.b64encode(png).decode("ascii")
    body = (
        f"<p>What the {html.escape(pred['source'])} risk predictor says before each edit, against the audit's "
        f"measurements: {rows.n_cases} cases, {len(rows.flipped)} probe facts recalled before the edit, "
        f"{int(rows.flipped.sum())} flipped. AUROC of the flip prediction over all probe facts: "
        f"{fmt(overall, '.3f')}.</p>"
        f"<img alt='predicted vs measured p drop' src='data:image/png;base64,{img}'>"
        "<table><thead><tr><th>probe group</th><th>facts</th><th>flipped</th><th>measured mean p drop</th>"
        f"<th>predicted</th><th>flip AUROC</th></tr></thead><tbody>{trs}</tbody></table>")
    return body, png


def _wrap(body: str) -> str:
    return f"<section id='predicted-vs-measured'><h2>Predicted vs measured</h2>{body}</section>"


def render(rows, pred: dict) -> tuple[str, bytes]:
    body, png = render_body(rows, pred)
    return _wrap(body), png


def section_parts(audit_dir, risk_model=None, cache_dir=None, device: str = "cpu") -> SectionParts:
    """The section's body and PNG for the audit in `audit_dir`, or the reason it has none.

    `risk_model`: a path or a loaded RiskModel (a bad file is a UserError). Recomputes the features from the
    audited model and facts (a UserError when they no longer exist)."""
    from pathlib import Path

    from kdel.errors import UserError
    from kdel.risk.data import audit_rows, read_audit
    from kdel.risk.model import load_risk_model
    from kdel.risk.names import RANK_ONE

    rm = load_risk_model(risk_model) if isinstance(risk_model, (str, Path)) else risk_model
    try:
        src = read_audit(audit_dir)
    except UserError as e:  # no cases, or none with per-fact outcomes: the report goes without this section
        return SectionParts(None, None, str(e))
    if rm is None:
        other = sorted({c.spec.method for c in src.cases} - set(RANK_ONE))
        if other:
            return SectionParts(None, None, f"not every case's method is rank-one ({', '.join(other)}): the "
                                f"first-order κ predictor covers {' and '.join(RANK_ONE)} only; a risk model "
                                f"(`kdel risk fit`) gives learned predictions for every method")
    if cache_dir is None:
        from kdel.delete.stage import default_cache_dir

        cache_dir = default_cache_dir()
    rows = audit_rows(src, Path(cache_dir), device)
    pred = section_data(rows, rm)
    if pred is None:
        return SectionParts(None, None, "no case to predict")
    return SectionParts(*render_body(rows, pred), None)


def predicted_vs_measured_section(audit_dir, risk_model=None, cache_dir=None, device: str = "cpu"):
    """(HTML fragment, PNG bytes) for the audit in `audit_dir`, or None (see the module docstring).

    `risk_model`: a path or a loaded RiskModel. Recomputes the features from the audited model and facts."""
    parts = section_parts(audit_dir, risk_model, cache_dir, device)
    if parts.body is None:
        return None
    return _wrap(parts.body), parts.png
