"""`kdel pipeline --out RUN`: generate → train → trace → audit → report for a BA and an ER graph (resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def pipeline_command(
    out: Path = typer.Option(..., "--out", help="Run directory; rerunning the same command resumes it."),
    preset: str = typer.Option("quick", "--preset", help="quick (minutes on a laptop CPU) or paper (200 entities, "
                               "50 relations)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a preset field, KEY=VALUE (repeatable), "
                                             "e.g. --set entities=100 --set methods=rome,ft."),
    seed: int = typer.Option(0, "--seed", help="Seed of every stage (graph, training, sampling)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int = typer.Option(1, "--threads", help="Torch CPU threads per process (1 is fastest for toy models)."),
    workers: int = typer.Option(1, "--workers", help="Audit worker processes."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display."),
) -> None:
    """Run the whole chain and write RUN/report.html, RUN/summary.json, RUN/plots/, RUN/cases/."""
    from kdel.errors import UserError
    from kdel.pipeline import PipelineOptions, get_preset, run_pipeline

    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    overrides = {}
    for item in set_ or []:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        overrides[k.strip()] = v.strip()
    p = get_preset(preset).with_overrides(overrides)
    res = run_pipeline(out, p, PipelineOptions(seed=seed, device=device, threads=threads, workers=workers,
                                               progress=not quiet))
    typer.echo(f"pipeline done in {res.wall_s:.0f} s -> {res.report} (summary: {res.summary})")


def register(app: typer.Typer) -> None:
    app.command("pipeline")(pipeline_command)
