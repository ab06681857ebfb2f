"""`kdel audit`: sample deletion cases, apply each, measure side effects, revert; resumable (DESIGN §7-§9)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdel.cli.args import parse_layer_list, parse_list
from kdel.cli.delete import parse_exclude_layers
from kdel.errors import UserError


def parse_layers(value: str) -> str | tuple[int, ...]:
    return parse_layer_list(value, "--layers", ("auto", "all"))


def parse_hparams_file(path: Path | None, methods: tuple[str, ...]) -> dict[str, dict]:
    """A YAML file of `method: {name: value}` sections, or one flat mapping when a single method is audited."""
    if path is None:
        return {}
    from kdel.delete.hparams import read_yaml_mapping

    data = read_yaml_mapping(path)
    if data and all(isinstance(v, dict) for v in data.values()):
        for m in data:
            if m not in methods:
                raise UserError(f"{path}: section {m!r} is not one of the audited methods ({', '.join(methods)})")
        return {m: dict(v) for m, v in data.items()}
    if len(methods) != 1:
        raise UserError(f"{path}: with several methods, give one section per method (e.g. 'rome: {{...}}')")
    return {methods[0]: dict(data)}


def audit_command(
    model: Path = typer.Option(..., "--model", help="Model directory (trained by kdel, or any local HF causal LM)."),
    out: Path = typer.Option(..., "--out", help="Audit directory (cases/, summary.json); a rerun resumes it."),
    kg: Optional[Path] = typer.Option(None, "--kg", help="KG bundle directory (exclusive with --facts)."),
    facts: Optional[Path] = typer.Option(None, "--facts", help="Facts file, JSON lines (exclusive with --kg)."),
    corpus: Optional[str] = typer.Option(
        None, "--corpus", help="Text for key statistics and held-out perplexity: a text file, or self:N (N tokens "
        "sampled from the model, seeded, written to OUT/corpus.txt). Default: the KG's corpus; with --facts, the "
        "facts' own prompts (thin: warned)."),
    methods: str = typer.Option("rome", "--methods", help="Comma-separated deletion methods: {methods}."),
    objective: str = typer.Option("erase", "--objective", help="{objectives} ({erase_only}: erase only)."),
    sites: str = typer.Option(
        "subject_last,last", "--sites",
        help="Edit sites, comma-separated: subject_last (ROME's key) and/or last (the prompt's last token; "
        "where small models trained from scratch look facts up), or auto (the site the trace prefers per fact).",
    ),
    layers: str = typer.Option(
        "auto", "--layers", help="auto (per fact and site: the largest MLP effect of a windowed trace, "
        "embedding-like layers excluded; a per-family default when none reaches the minimum effect), all, or L,L,..."),
    trace_window: Optional[int] = typer.Option(
        None, "--trace-window", help="Layers restored together in the auto choice's trace (default 1 for <= 8 "
        "layers, else about a sixth of the layers)."),
    exclude_layers: Optional[str] = typer.Option(
        None, "--exclude-layers", help="Layers auto never chooses and all leaves out, e.g. 0,1."),
    fluency: Optional[bool] = typer.Option(
        None, "--fluency/--no-fluency", help="Generation entropy and held-out perplexity in every case (wrecked "
        "also fires on them). Default: on for models kdel did not train, off for kdel's toy models."),
    per_bin: int = typer.Option(2, "--per-bin", help="Deletion targets per popularity bin."),
    bins: int = typer.Option(5, "--bins", help="Popularity bins (rank quantiles)."),
    stratify: str = typer.Option("subject", "--stratify", help="Bin by the popularity of the subject or object."),
    unrelated: int = typer.Option(100, "--unrelated", help="Size of the run's fixed unrelated sample."),
    traces: Optional[Path] = typer.Option(None, "--traces", help="Reuse a `kdel trace` run for --layers auto."),
    hparams: Optional[Path] = typer.Option(None, "--hparams", help="YAML hyperparameters (sections per method)."),
    no_tracing_effect: bool = typer.Option(False, "--no-tracing-effect", help="Skip Hase's window-5 traces."),
    workers: int = typer.Option(1, "--workers", help="Worker processes (each loads the model once)."),
    backend: str = typer.Option("local", "--backend", help="local | ray (optional extra)."),
    gpus_per_worker: Optional[float] = typer.Option(
        None, "--gpus-per-worker", help="Ray: GPUs per actor, fractions allowed (default 1 with --device cuda)."),
    no_recompute: bool = typer.Option(
        False, "--no-recompute", help="Exit 2 instead of recomputing case files computed under other settings."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling, new targets and methods."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int = typer.Option(1, "--threads", help="Torch CPU threads per process."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    primary: Optional[str] = typer.Option(
        None, "--primary", help="The one pre-declared hypothesis, e.g. 'same_subject.mean_p_drop ~ subject_degree, "
        "rome@last' (docs/statistics.md); default: that one."),
    title: Optional[str] = typer.Option(None, "--title", help="The report's title."),
    sequential: Optional[int] = typer.Option(
        None, "--sequential", help="Sequential curves: N deletions one after another, measured after each "
        "(docs/sequential.md)."),
    order: str = typer.Option("random", "--order", help="--sequential: degree-high, degree-low, random, "
                              "same-subject and/or hop, comma-separated."),
    trials: int = typer.Option(3, "--trials", help="--sequential: trials per order (seeds seed..seed+K-1)."),
    every: int = typer.Option(1, "--every", help="--sequential: measure every S deletions (and after the last)."),
    forget_entities: Optional[int] = typer.Option(
        None, "--forget-entities", help="Entity audit: forget K whole entities spread over --bins degree bins "
        "(docs/forget.md)."),
    as_object: bool = typer.Option(False, "--as-object", help="--forget-entities: also delete the facts whose "
                                   "object is the entity."),
) -> None:
    """Audit deletions: per case apply, measure probe-group damage, revert; then summary statistics."""
    from kdel.audit.cases import AuditConfig
    from kdel.audit.plan import check_backend
    from kdel.runtime import resolve_device, seed_everything, set_threads

    set_threads(threads)
    device = resolve_device(device)
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    if (kg is None) == (facts is None):
        raise UserError("give exactly one of --kg DIR (a kdel KG bundle) or --facts FILE.jsonl")
    if traces is not None and not traces.is_dir():
        raise UserError(f"--traces {traces} is not a directory")
    method_list = parse_list(methods, "--methods")
    config = AuditConfig(
        methods=method_list, objective=objective, sites=parse_list(sites, "--sites"), layers=parse_layers(layers),
        per_bin=per_bin, n_bins=bins, stratify=stratify, unrelated_size=unrelated, seed=seed,
        hparams=parse_hparams_file(hparams, method_list), traces_dir=str(traces) if traces else None,
        tracing_effect=not no_tracing_effect, primary=primary, title=title, trace_window=trace_window,
        exclude_layers=parse_exclude_layers(exclude_layers), fluency=fluency,
    )
    config.validate()
    check_backend(backend, workers, device, gpus_per_worker)
    from kdel.audit.plan import check_layers
    from kdel.audit.runner import run_audit
    from kdel.facts import load_fact_table
    from kdel.models.loading import check_model_dir

    check_model_dir(model)
    check_layers(model, config)  # from config.json: a layer past the model's depth fails before anything loads
    _quiet_transformers()
    table = load_fact_table(kg=kg, facts=facts)
    seed_everything(seed)
    if sequential is not None or forget_entities is not None or as_object:
        from kdel.audit.modes import run_mode

        typer.echo(run_mode(model, table, out, config, sequential=sequential, orders=parse_list(order, "--order"),
                            trials=trials, every=every, forget_entities=forget_entities, as_object=as_object,
                            progress=not quiet, device=device, kg_dir=kg, corpus=corpus,
                            recompute=not no_recompute, inputs=[hparams] if hparams else (), workers=workers,
                            backend=backend))
        return
    summary = run_audit(model, table, out, config, workers=workers, backend=backend, progress=not quiet,
                        device=device, threads=threads, kg_dir=kg, corpus=corpus, recompute=not no_recompute,
                        gpus_per_worker=gpus_per_worker, inputs=[hparams] if hparams else ())
    typer.echo(
        f"{summary['n_cases']} cases ({summary['n_success']} successful, {summary['n_failed']} failed, "
        f"{summary['n_error']} errors, {summary['n_wrecked']} wrecked the model); "
        f"{summary['timing']['cases_run']} run now -> {out / 'summary.json'}"
    )


def _quiet_transformers() -> None:
    """Our progress bar counts cases; transformers' per-load weight bars (one per worker) would drown it."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


def register(app: typer.Typer) -> None:
    from kdel.cli.delete import RegistryHelpCommand

    app.command("audit", cls=RegistryHelpCommand)(audit_command)
