"""The report stage with kdel's output rule: `write_report` re-renders report.html and its plots from audits.

The rule (kdel.outputs): the HTML file replaces only a report kdel wrote (or any file with `force`), the plot
folder is missing, empty or holds only PNG files, and neither may be or sit inside an audit's own files (nor
be the risk model given with `risk_model`).

With `risk` (or a `risk_model`), each audit gets a "predicted vs measured" section (kdel.risk.report): the
learned predictions of `risk_model`, else the first-order κ ones, which exist only when every case's method
is rank-one (otherwise one warning says why the section is left out). It loads the audited model and
recomputes the features, so it is off by default; every input is checked before anything is written.
"""

from __future__ import annotations

from pathlib import Path


def _audit_dirs(audit_dirs) -> list[Path]:
    from kdel.report.data import discover_audits

    if isinstance(audit_dirs, (str, Path)):
        return [d for _, d in discover_audits(Path(audit_dirs))]
    if isinstance(audit_dirs, dict):
        return [Path(d) for d in audit_dirs.values()]
    out = []
    for item in audit_dirs:
        out += [Path(item[1])] if isinstance(item, tuple) else [d for _, d in discover_audits(Path(item))]
    return out


def check_report_outputs(audit_dirs, out_html, plots_dir, force: bool = False, other_inputs=()) -> None:
    """Refuse (UserError) a report file or plot folder that would overwrite data; see the module docstring.
    `other_inputs`: more files the report reads (the risk model)."""
    from kdel.outputs import check_out_dir, check_out_file, is_kdel_report

    inputs = [d / name for d in _audit_dirs(audit_dirs)
              for name in ("cases", "audit_config.json", "summary.json", "plan.json")] + list(other_inputs)
    check_out_file(out_html, inputs=inputs, force=force, recognise=is_kdel_report, what="--out")
    check_out_dir(plots_dir, "plots", inputs=inputs, what="--plots")


def _plot_name(label: str, n_audits: int) -> str:
    import re

    return "predicted_vs_measured" + ("" if n_audits == 1 else "_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", label))


def risk_sections(audits, plots_dir: Path, risk_model=None, cache_dir=None, device: str = "cpu", warn=None):
    """The "predicted vs measured" section (id, title, body) for `audits` (AuditData), or None when no audit
    has one, and the figures to write under `plots_dir` as (Plot, PNG bytes); `warn` gets one line per audit
    left out. `risk_model`: a loaded RiskModel or None (first-order κ)."""
    from kdel.report.data import _stderr_warning
    from kdel.report.fmt import esc
    from kdel.report.plots import Plot
    from kdel.risk.report import section_parts

    warn = warn or _stderr_warning
    parts, figs = [], []
    for a in audits:
        sp = section_parts(a.audit_dir, risk_model, cache_dir=cache_dir, device=device)
        if sp.body is None:
            warn(f"{a.label}: the predicted vs measured section is left out: {sp.reason}")
            continue
        name = _plot_name(a.label, len(audits))
        plot = Plot(name, Path(plots_dir) / f"{name}.png", f"Predicted vs measured ({a.label})",
                    "per case and probe group, the predicted against the measured mean p drop")
        figs.append((plot, sp.png))
        head = f"<h3>{esc(a.label)}</h3>" if len(audits) > 1 else ""
        parts.append(f"{head}{sp.body}<p class=file>plots/{esc(plot.path.name)}</p>")
    if not parts:
        return None, []
    return ("predicted-vs-measured", "Predicted vs measured", "".join(parts)), figs


def write_report(audit_dirs, out_html, plots_dir=None, force: bool = False, strict: bool = False,
                 title: str = "kdel deletion audit", risk: bool = False, risk_model=None, cache_dir=None,
                 device: str = "cpu", warn=None):
    """Write `out_html` (self-contained) and the plots (default: plots/ beside it) for `audit_dirs` (an audit,
    a pipeline run, a list, or {label: audit dir}); returns render_report's ReportResult.

    `risk` / `risk_model` (a `kdel risk fit` file or a loaded RiskModel; implies `risk`): the predicted vs
    measured section, with the key-statistics `cache_dir` (default: kdel delete's) and `device` for the feature
    pass. `warn`: where one-line warnings go (default stderr)."""
    from kdel.io import atomic_write_bytes
    from kdel.report.html import load_audits, render_report

    out_html = Path(out_html)
    plots_dir = Path(plots_dir) if plots_dir is not None else out_html.parent / "plots"
    model_file = isinstance(risk_model, (str, Path))
    check_report_outputs(audit_dirs, out_html, plots_dir, force, other_inputs=[risk_model] if model_file else [])
    rm = risk_model
    if model_file:
        from kdel.risk.model import load_risk_model

        rm = load_risk_model(risk_model)
    audits = load_audits(audit_dirs, strict=strict, warn=warn)
    extra, figs = None, []
    if risk or rm is not None:
        extra, figs = risk_sections(audits, plots_dir, rm, cache_dir=cache_dir, device=device, warn=warn)
    for plot, png in figs:
        plots_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(plot.path, png)
    res = render_report(audit_dirs, out_html, plots_dir=plots_dir, strict=strict, title=title, warn=warn,
                        audits=audits, extra_sections=[extra] if extra else [])
    res.plots += [plot for plot, _ in figs]
    return res
