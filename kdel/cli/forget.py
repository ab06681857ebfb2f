"""`kdel forget`: delete every fact of one entity and write the edited model with forget.json (docs/forget.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdel.cli.delete import ERASE_ONLY, METHODS, OBJECTIVES, RegistryHelpCommand, registry_names

SEQUENTIAL = "{sequential}"


class ForgetHelpCommand(RegistryHelpCommand):
    """`kdel forget --help`: the registry's names, and which methods --mode auto runs one fact after another."""

    def help_names(self) -> dict[str, str]:
        from kdel.forget.apply import SEQUENTIAL_METHODS

        return {**registry_names(), SEQUENTIAL: " and ".join(SEQUENTIAL_METHODS)}


def forget_command(
    model: Path = typer.Option(..., "--model", help="Model directory (trained by kdel, or any local HF causal LM)."),
    out: Path = typer.Option(..., "--out", help="Directory for the edited model + forget.json."),
    subject: Optional[str] = typer.Option(None, "--subject", help="The entity to forget, by name."),
    entity: Optional[int] = typer.Option(None, "--entity", help="The entity to forget, by KG entity id (--kg only)."),
    kg: Optional[Path] = typer.Option(None, "--kg", help="KG bundle directory (exclusive with --facts)."),
    facts: Optional[Path] = typer.Option(None, "--facts", help="Facts file, JSON lines (exclusive with --kg)."),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="With --facts: text for key statistics."),
    method: str = typer.Option("rome", "--method", help=f"{METHODS} (erase only: {ERASE_ONLY}). --mode auto: "
                               f"{SEQUENTIAL} one fact after another, the others all facts at once."),
    objective: str = typer.Option("erase", "--objective", help=f"{OBJECTIVES} (docs/methods.md)."),
    as_object: bool = typer.Option(False, "--as-object", help="Also delete the facts whose object is the entity."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Layer to edit (default: the method's, the middle one)."),
    site: str = typer.Option("last", "--site", help="Edit site of locate-then-edit methods: last | subject_last."),
    mode: str = typer.Option("auto", "--mode", help="auto (the method's choice) | batch | sequential."),
    hparams: Optional[Path] = typer.Option(None, "--hparams", help="YAML file of hyperparameter overrides."),
    unrelated: int = typer.Option(100, "--unrelated", help="Size of the fixed unrelated sample."),
    candidates: int = typer.Option(20, "--candidates", help="Extraction check: other objects ranked against each "
                                   "object (0: none)."),
    fluency: str = typer.Option("auto", "--fluency", help="Fluency/perplexity check: auto (real models) | on | off."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Key-statistics cache (default "
                                             "$KDEL_CACHE_DIR or ~/.cache/kdel)."),
    seed: int = typer.Option(0, "--seed", help="Seed (context prefixes, unrelated sample, candidates)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int = typer.Option(1, "--threads", help="Torch CPU threads."),
) -> None:
    """Forget an entity: delete every fact whose subject it is (--as-object: also whose object it is)."""
    from kdel.errors import UserError
    from kdel.forget.stage import ForgetSettings, run_forget
    from kdel.runtime import set_threads

    set_threads(threads)
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    settings = ForgetSettings(method=method, objective=objective, layer=layer, site=site, as_object=as_object,
                              mode=mode, seed=seed, unrelated=unrelated, candidates=candidates, fluency=fluency)
    run = run_forget(model, out, subject=subject, entity_id=entity, kg=kg, facts=facts, corpus=corpus,
                     settings=settings, hparams=hparams, cache_dir=cache_dir, device=device)
    r = run.record
    eff, ex, se = r["efficacy"], r["extraction"], r["side_effects"]
    unrel = se["groups"]["unrelated"]["acc_after_recalled"]
    typer.echo(
        f"{r['entity']['name']}: {eff['n_removed']}/{eff['n_facts']} facts removed on every training prompt "
        f"({r['method']}, {r['mode']}); extractable by some template: {ex['n_extractable']}; "
        f"unrelated accuracy {'n/a' if unrel is None else f'{unrel:.3f}'}; "
        f"||ΣΔW|| = {r['delta_norm_total']:.3g} -> {run.out}"
    )


def register(app: typer.Typer) -> None:
    app.command("forget", cls=ForgetHelpCommand)(forget_command)
