"""`kdel delete`: delete (or rewrite) facts in a model and write the edited model (DESIGN §6, §8, §12).

The stage itself is `kdel.delete.stage.run_delete`; this module parses the flags and prints one line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def delete_command(
    model: Path = typer.Option(..., "--model", help="Model directory (Hugging Face, safetensors)."),
    kg: Optional[Path] = typer.Option(None, "--kg", help="KG bundle directory (or use --facts)."),
    facts: Optional[Path] = typer.Option(None, "--facts", help="Facts file (JSONL) instead of --kg."),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="With --facts: text for the key statistics (else thin)."),
    fact: list[int] = typer.Option(..., "--fact", help="Fact id (triple id; line number in a facts file). Repeat for a batch."),
    method: str = typer.Option("rome", "--method", help="rome | r-rome | memit | ft | ga | npo"),
    objective: str = typer.Option("erase", "--objective", help="erase | replace | unknown | error_injection | amplify"),
    layer: Optional[int] = typer.Option(None, "--layer", help="Layer to edit (MEMIT: centre of its window). Default: the middle layer, n_layers // 2."),
    site: str = typer.Option("subject_last", "--site", help="Edit site: subject_last (ROME's) or last (the prompt's last token)."),
    target: Optional[str] = typer.Option(None, "--target", help="replace: the new object, an entity id (KG) or name (default: a random other entity)."),
    hparams: Optional[Path] = typer.Option(None, "--hparams", help="YAML file of hyperparameter overrides."),
    sequential: bool = typer.Option(False, "--sequential", help="Apply the facts one after another instead of as one batch."),
    out: Path = typer.Option(..., "--out", help="Directory for the edited model + edit.json (replaced atomically)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Key-statistics cache (default $KDEL_CACHE_DIR or ~/.cache/kdel)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Seed (context prefixes, random replace targets)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads (default 1)."),
) -> None:
    """Delete facts from a model with a locate-then-edit or unlearning method; write the edited model."""
    from kdel.delete.stage import run_delete
    from kdel.runtime import set_threads

    set_threads(threads)
    res = run_delete(model, out, fact_ids=fact, kg=kg, facts=facts, corpus=corpus, method=method,
                     objective=objective, layer=layer, site=site, target=target, hparams=hparams,
                     sequential=sequential, cache_dir=cache_dir, device=device, seed=seed)
    r = res.record
    typer.echo(
        f"{r['method']} {objective} at layer(s) {','.join(map(str, r['layers']))} ({site}): "
        f"{res.n_succeeded}/{len(r['facts'])} facts succeeded, ||dW|| = {r['total_delta_norm']:.3g} -> {out}"
    )


def register(app: typer.Typer) -> None:
    app.command("delete")(delete_command)
