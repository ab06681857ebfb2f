"""`kdel train`: train a toy GPT-2 on a KG bundle until it memorizes the facts (DESIGN §3, §8)."""

from __future__ import annotations

from pathlib import Path

import typer


def train_command(
    kg: Path = typer.Option(..., "--kg", help="KG bundle directory (from `kdel kg generate`)."),
    out: Path = typer.Option(..., "--out", help="Model directory to write (replaced atomically)."),
    preset: str = typer.Option("tiny", "--preset", help="Model size: tiny, small or base."),
    seed: int = typer.Option(0, "--seed", help="Seed for initialisation and data order."),
    target_recall: float = typer.Option(0.99, "--target-recall", help="Stop once whole-object recall reaches this."),
    max_steps: int = typer.Option(20_000, "--max-steps", help="Step cap."),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate (default: the preset's)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Sentences per step."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threads: int = typer.Option(1, "--threads", help="Torch CPU threads (1 is fastest for toy models)."),
    whole_entities: bool = typer.Option(False, "--whole-entities", help="One token per entity name."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Train a GPT-2 from scratch on the KG's corpus until it recalls the facts."""
    from kdel.runtime import resolve_device, set_threads
    from kdel.train import TrainConfig, get_preset, train_model
    from kdel.train.loop import check_out_path

    set_threads(threads)
    get_preset(preset)
    resolve_device(device)
    check_out_path(out)
    config = TrainConfig(preset=preset, seed=seed, target_recall=target_recall, max_steps=max_steps, lr=lr,
                         batch_size=batch_size, device=device, threads=threads, whole_entities=whole_entities)
    report = train_model(kg, out, config, progress=not quiet)
    r = report.recall
    status = "reached" if report.reached_target else "did NOT reach"
    para = (f"paraphrase {r['paraphrase_recall']:.4f}" if r["paraphrase_recall"] is not None
            else "paraphrase n/a (no held-out prompts)")
    typer.echo(
        f"{status} target {report.target_recall} in {report.steps} steps ({report.epochs} epochs, {report.seconds:.1f} s): "
        f"recall {r['recall']:.4f}, first-token {r['first_token_recall']:.4f}, {para} -> {out}"
    )


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
