"""`kdel sweep CONFIG.yaml --out DIR`: conditions × seeds (a new KG and model per seed), aggregated across seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def sweep_command(
    config: Path = typer.Argument(..., help="Sweep config (YAML): conditions, seeds, primary hypothesis, analyses."),
    out: Path = typer.Option(..., "--out", help="Sweep directory (stages, results.json, RESULTS.md); a rerun resumes it."),
    workers: int = typer.Option(1, "--workers", help="Stage jobs run at once (local processes or Ray tasks)."),
    backend: str = typer.Option("local", "--backend", help="local | ray (optional extra)."),
    results_md: Optional[Path] = typer.Option(
        None, "--results-md", help="Also copy RESULTS.md (and its figures/) here (default: the config's results_md)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: the config's, else cpu)."),
    threads: int = typer.Option(1, "--threads", help="Torch CPU threads per job."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the conditions, cells and jobs; run nothing."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress lines."),
) -> None:
    """Run a grid of conditions × seeds and aggregate across seeds (per-seed and pooled estimates)."""
    from kdel.sweep.config import load_config
    from kdel.sweep.grid import expand
    from kdel.sweep.run import SweepOptions, describe_plan, run_sweep

    if dry_run:
        cfg = load_config(config)
        typer.echo(describe_plan(cfg, expand(cfg), out))
        return
    res = run_sweep(config, out, SweepOptions(workers=workers, backend=backend, device=device, threads=threads,
                                              progress=not quiet, results_md=results_md))
    typer.echo(f"{res.jobs_run} jobs run, {res.jobs_skipped} finished already; {res.wall_s:.1f} s -> "
               f"{res.results}, {res.results_md}" + (f" (copied to {res.copied_to})" if res.copied_to else ""))


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)
