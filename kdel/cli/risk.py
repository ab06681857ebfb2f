"""`kdel risk`: predicted collateral damage of a deletion before editing; `kdel risk fit`: fit the learned
predictor on audits. The stages are kdel.risk.stage.run_risk and kdel.risk.fitstage.run_fit; this module
parses the flags and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdel.errors import UserError

risk_app = typer.Typer(help="Predict a deletion's collateral damage before editing; fit the predictor on audits.",
                       invoke_without_command=True)


@risk_app.callback(invoke_without_command=True)
def risk_command(
    ctx: typer.Context,
    model: Optional[Path] = typer.Option(None, "--model", help="Model directory (Hugging Face, safetensors)."),
    kg: Optional[Path] = typer.Option(None, "--kg", help="KG bundle directory (or use --facts)."),
    facts: Optional[Path] = typer.Option(None, "--facts", help="Facts file (JSONL) instead of --kg."),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="With --facts: text for the key statistics."),
    fact: list[int] = typer.Option([], "--fact", help="Fact id to delete (repeat: each fact predicted alone)."),
    method: str = typer.Option("rome", "--method", help="Deletion method (first-order predictions: rome, r-rome)."),
    site: str = typer.Option("subject_last", "--site", help="Edit site: subject_last or last."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Layer to edit (default: the middle layer, as delete)."),
    hparams: Optional[Path] = typer.Option(None, "--hparams", help="YAML file of the method's hyperparameter overrides."),
    risk_model: Optional[Path] = typer.Option(None, "--risk-model", help="Fitted predictor (kdel risk fit) for learned predictions."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the predictions as JSON (kdel-risk/1)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file kdel did not write."),
    top: int = typer.Option(10, "--top", help="Probe facts shown in the table (highest risk first)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Key-statistics cache (as kdel delete)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Seed (the edit texts' prefixes, the unrelated sample)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads (default 1)."),
) -> None:
    """Before editing: per probe fact, the predicted probability of being flipped and p drop; per deletion, the
    expected number of flips and the predicted global accuracy drop."""
    if ctx.invoked_subcommand is not None:
        return
    if model is None:
        raise UserError("kdel risk needs --model (or the subcommand: kdel risk fit AUDIT_DIR... --out FILE)")
    from kdel.risk.stage import run_risk
    from kdel.runtime import set_threads

    set_threads(threads)
    res = run_risk(model, fact_ids=fact, kg=kg, facts=facts, corpus=corpus, method=method, site=site, layer=layer,
                   hparams=hparams, risk_model=risk_model, out=out, force=force, cache_dir=cache_dir, device=device,
                   seed=seed)
    from kdel.risk.table import print_risk

    print_risk(res, top)
    if out is not None:
        typer.echo(f"-> {out}")


@risk_app.command("fit")
def fit_command(
    audits: list[Path] = typer.Argument(..., help="Audit directories (with per-fact outcomes in their cases)."),
    out: Path = typer.Option(..., "--out", help="The fitted model, JSON (kdel-risk-model/1)."),
    kind: str = typer.Option("gbdt", "--kind", help="gbdt (gradient-boosted trees) or logistic."),
    folds: int = typer.Option(5, "--folds", help="Grouped cross-validation folds (groups: subjects)."),
    max_rows: int = typer.Option(5000, "--max-rows", help="Probe rows used per fit (all flipped rows kept)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file kdel did not write."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Key-statistics cache (as kdel delete)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Seed (row subsampling, tree subsampling)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads (default 1)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Fit the learned risk predictor on audit case files and write it as plain JSON parameters."""
    from kdel.risk.fit import FitSettings
    from kdel.risk.fitstage import run_fit
    from kdel.runtime import set_threads

    set_threads(threads)
    model, report = run_fit(audits, out, FitSettings(kind=kind, folds=folds, max_rows=max_rows, seed=seed),
                            force=force, cache_dir=cache_dir, device=device, progress=not quiet)
    t = model.training

    def f(x):
        return "n/a" if x is None else f"{x:.3f}"

    typer.echo(f"fitted {kind} on {t['n_cases']} cases, {t['n_rows']} probe rows ({t['n_flipped']} flipped), "
               f"{t['n_groups']} subjects; grouped {len(report['folds'])}-fold CV: flip AUROC "
               f"{f(report['flip']['auroc'])}, AUPRC {f(report['flip']['auprc'])}; p drop R² {f(report['p_drop']['r2'])}; "
               f"success AUROC {f(report['success']['auroc'])} -> {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(risk_app, name="risk")
