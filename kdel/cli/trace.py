"""`kdel trace`: causal tracing / activation patching of facts (DESIGN §5, §8)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command(name="trace", help="Causal tracing: where does the model look each fact up? (exact, batched)")(trace)


def trace(
    model: Path = typer.Option(..., "--model", help="model directory (kdel-trained or any local HF causal LM)"),
    out: Path = typer.Option(..., "--out", help="output trace directory (traces.jsonl, traces.npz, heatmaps/)"),
    kg: Optional[Path] = typer.Option(None, "--kg", help="KG bundle directory"),
    facts: Optional[Path] = typer.Option(None, "--facts", help="facts file (JSONL) instead of --kg"),
    limit: Optional[int] = typer.Option(None, "--limit", help="trace the first N facts"),
    fact: Optional[list[int]] = typer.Option(None, "--fact", help="fact id (repeatable)"),
    corruption: str = typer.Option("gn", "--corruption", help="gn (Gaussian noise) or str (symmetric token replacement)"),
    direction: str = typer.Option("denoise", "--direction", help="denoise (sufficiency) or noise (necessity)"),
    component: Optional[list[str]] = typer.Option(None, "--component", help="resid, mlp, attn or all (repeatable)"),
    metric: Optional[list[str]] = typer.Option(None, "--metric", help="prob, logprob, logit_diff, kl (repeatable)"),
    window: int = typer.Option(1, "--window", help="layers patched together for mlp/attn (ROME used 10)"),
    noise_samples: int = typer.Option(10, "--noise-samples", help="gn noise draws per fact"),
    noise_scale: float = typer.Option(3.0, "--noise-scale", help="gn noise std in embedding-matrix stds"),
    fallback_gn: bool = typer.Option(False, "--fallback-gn", help="STR without a partner: use gn instead of failing"),
    strict: bool = typer.Option(False, "--strict", help="fail on a fact the model does not recall (default: skip)"),
    loop: bool = typer.Option(False, "--loop", help="use ROME's per-site reference loop (slow; same numbers)"),
    method: str = typer.Option("exact", "--method", help="exact (activation patching) or attribution (gradient "
                               "estimate, approximate: one forward pair and one backward)"),
    positions: Optional[list[str]] = typer.Option(None, "--position", help="trace only these positions: subject, "
                                                  "subject_last, last (repeatable; default all)"),
    plots: bool = typer.Option(False, "--plots", help="write heatmaps/*.png"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads (default 1)"),
) -> None:
    from kdel.runtime import set_threads
    from kdel.trace import TraceConfig
    from kdel.trace.metrics import METRICS
    from kdel.trace.patch import COMPONENTS
    from kdel.trace.stage import run_trace

    set_threads(threads)
    comps = tuple(component or ["all"])
    comps = COMPONENTS if "all" in comps else tuple(dict.fromkeys(comps))
    config = TraceConfig(
        corruption=corruption, direction=direction, components=comps,
        metrics=tuple(dict.fromkeys(metric)) if metric else METRICS, window=window, noise_samples=noise_samples,
        noise_scale=noise_scale, seed=seed, batched=not loop, fallback_to_gn=fallback_gn, method=method,
        positions=tuple(dict.fromkeys(positions or ())),
    )
    res = run_trace(model, out, kg=kg, facts=facts, config=config, fact_ids=fact, limit=limit, strict=strict,
                    plots=plots, device=device, progress=True)
    typer.echo(f"traced {len(res.traces)} facts -> {out}"
               + (" (attribution patching: approximate)" if config.approximate else ""))
