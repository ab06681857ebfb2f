"""The report stage with kdel's output rule: `write_report` re-renders report.html and its plots from audits.

The rule (kdel.outputs): the HTML file replaces only a report kdel wrote (or any file with `force`), the plot
folder is missing, empty or holds only PNG files, and neither may be or sit inside an audit's own files.
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


def check_report_outputs(audit_dirs, out_html, plots_dir, force: bool = False) -> None:
    """Refuse (UserError) a report file or plot folder that would overwrite data; see the module docstring."""
    from kdel.outputs import check_out_dir, check_out_file, is_kdel_report

    inputs = [d / name for d in _audit_dirs(audit_dirs)
              for name in ("cases", "audit_config.json", "summary.json", "plan.json")]
    check_out_file(out_html, inputs=inputs, force=force, recognise=is_kdel_report, what="--out")
    check_out_dir(plots_dir, "plots", inputs=inputs, what="--plots")


def write_report(audit_dirs, out_html, plots_dir=None, force: bool = False, strict: bool = False,
                 title: str = "kdel deletion audit"):
    """Write `out_html` (self-contained) and the plots (default: plots/ beside it) for `audit_dirs` (an audit,
    a pipeline run, a list, or {label: audit dir}); returns render_report's ReportResult."""
    from kdel.report.html import render_report

    out_html = Path(out_html)
    plots_dir = Path(plots_dir) if plots_dir is not None else out_html.parent / "plots"
    check_report_outputs(audit_dirs, out_html, plots_dir, force)
    return render_report(audit_dirs, out_html, plots_dir=plots_dir, strict=strict, title=title)
