"""`kdel report AUDIT`: re-render report.html and plots/ from the case files (DESIGN §7, §8)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdel.errors import UserError


def report_command(
    audit: Path = typer.Argument(..., help="Audit directory (with cases/), or a pipeline run (RUN/<graph>/audit)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Report file (default: AUDIT/report.html); an existing "
                                       "file is replaced only if kdel wrote it, or with --force."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Plot folder (default: plots/ beside the report): "
                                         "missing, empty or holding only PNG files."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file that kdel did not write."),
    strict: bool = typer.Option(False, "--strict", help="A truncated or invalid case file is an error (exit 2)."),
    title: Optional[str] = typer.Option(None, "--title", help="The report's title (default: the audit config's "
                                        "title, else one naming a facts-file audit's model and file)."),
    seed: int = typer.Option(0, "--seed", help="Unused (accepted for uniformity; bootstrap seeds come from the audit)."),
    risk: bool = typer.Option(False, "--risk", help="Add a 'predicted vs measured' section per audit: the "
                              "--risk-model's learned predictions, else the first-order κ ones (only when every "
                              "case's method is rank-one). Loads the audited model and recomputes the features."),
    risk_model: Optional[Path] = typer.Option(None, "--risk-model", help="A `kdel risk fit` model for --risk "
                                              "(implies --risk)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Key-statistics cache for --risk "
                                             "(as kdel delete)."),
    device: str = typer.Option("cpu", "--device", help="Device for --risk's feature pass (else unused)."),
    threads: int = typer.Option(1, "--threads", help="CPU threads."),
) -> None:
    """Re-compute the summary from the case files and write a self-contained report.html with its plots.

    A truncated or corrupted case file is named in a one-line warning and left out of every number
    (listed in the report too); with --strict it is an error (exit 2).

    --risk adds a "predicted vs measured" section per audit (docs/report.md).
    """
    from kdel.report.stage import write_report
    from kdel.runtime import set_threads

    set_threads(threads)
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    if not audit.is_dir():
        raise UserError(f"{audit} is not a directory (expected an audit directory with cases/)")
    out_html = out if out is not None else audit / "report.html"
    if out_html.exists() and out_html.is_dir():
        raise UserError(f"--out {out_html} is a directory: give a file name such as report.html")
    res = write_report(audit, out_html, plots_dir=plots, force=force, strict=strict, title=title, risk=risk,
                       risk_model=risk_model, cache_dir=cache_dir, device=device)
    n = sum(len(a.cases) for a in res.audits)
    skipped = f", {len(res.skipped)} invalid file(s) skipped" if res.skipped else ""
    typer.echo(f"report of {n} cases ({', '.join(a.label for a in res.audits)}{skipped}), "
               f"{len(res.plots)} plots -> {out_html}")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
