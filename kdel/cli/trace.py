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
    import warnings

    from kdel.errors import UserError
    from kdel.facts import load_fact_table
    from kdel.io import atomic_write_json, replace_directory, staging_dir_for
    from kdel.models.loading import load_model_for_table
    from kdel.runtime import resolve_device, seed_everything, set_threads
    from kdel.trace import TraceConfig, save_traces, trace_facts
    from kdel.trace.metrics import METRICS
    from kdel.trace.patch import COMPONENTS

    set_threads(threads)
    seed_everything(seed)
    dev = resolve_device(device)
    comps = tuple(component or ["all"])
    comps = COMPONENTS if "all" in comps else tuple(dict.fromkeys(comps))
    config = TraceConfig(
        corruption=corruption, direction=direction, components=comps,
        metrics=tuple(dict.fromkeys(metric)) if metric else METRICS, window=window, noise_samples=noise_samples,
        noise_scale=noise_scale, seed=seed, batched=not loop, fallback_to_gn=fallback_gn, method=method,
        positions=tuple(dict.fromkeys(positions or ())),
    )
    config.validate()
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
    table = load_fact_table(kg=kg, facts=facts)
    chosen = [table.fact(i) for i in dict.fromkeys(fact)] if fact else list(table.facts)
    if limit is not None:
        chosen = chosen[:limit]
    m, tok = load_model_for_table(model, table, dev)
    skipped: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported below, in one line
        traces = trace_facts(m, tok, chosen, table, config, progress=True, strict=strict, skipped=skipped)
    if skipped:
        typer.echo(f"kdel: warning: skipped {len(skipped)} facts the model does not recall "
                   f"(ids {skipped[:10]}{' ...' if len(skipped) > 10 else ''})", err=True)
    if not traces:
        raise UserError("no fact left to trace: the model recalls none of the chosen facts")
    staging = staging_dir_for(out)
    save_traces(traces, staging, plots=plots)
    summary = {
        "format": "kdel-trace-summary/1",
        "model": str(model),
        "source": table.source,
        "source_hash": table.source_hash,
        "config": config.to_json(),
        "n_traced": len(traces),
        "skipped_unknown": skipped,
        "fallbacks_to_gn": [t.fact_id for t in traces if t.notes],
        "method": config.method,
        "approximate": config.approximate,
    }
    atomic_write_json(staging / "summary.json", summary)
    replace_directory(staging, Path(out))
    typer.echo(f"traced {len(traces)} facts -> {out}" + (" (attribution patching: approximate)" if config.approximate else ""))
