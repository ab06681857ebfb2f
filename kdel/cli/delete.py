"""`kdel delete`: delete (or rewrite) facts in a model and write the edited model (DESIGN §6, §8, §12, §13).

The stage itself is `kdel.delete.stage.run_delete`; this module parses the flags and prints one line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperCommand

from kdel.cli.args import parse_layer_list

# Placeholders in option help, filled from the registry when help is shown (RegistryHelpCommand).
METHODS, OBJECTIVES, ERASE_ONLY = "{methods}", "{objectives}", "{erase_only}"


def registry_names() -> dict[str, str]:
    """The text of each placeholder: every registered method, every objective, and the methods that support
    only erase (kdel.delete's registry and OBJECTIVES, so the help cannot fall behind them)."""
    from kdel.delete import OBJECTIVES as objectives
    from kdel.delete import get_method, list_methods

    methods = list_methods()
    erase_only = [m for m in methods if tuple(get_method(m).objectives) == ("erase",)]
    return {METHODS: " | ".join(methods), OBJECTIVES: " | ".join(objectives), ERASE_ONLY: ", ".join(erase_only)}


def fill_help(command, names) -> None:
    """Replace the placeholders (the keys of `names()`) in the option help of `command` (a click command)."""
    filled = None
    for param in command.params:
        text = getattr(param, "help", None)
        if text and "{" in text:
            filled = filled or names()
            for key, value in filled.items():
                text = text.replace(key, value)
            param.help = text


class RegistryHelpCommand(TyperCommand):
    """A command whose `--help` names the registered methods and objectives. They are filled in when the help is
    shown, not when the CLI starts: the registry imports every method (and torch), which `kdel kg ...` and
    every other command's start-up should not pay for."""

    def help_names(self) -> dict[str, str]:
        return registry_names()

    def format_help(self, ctx, formatter) -> None:
        fill_help(self, self.help_names)
        return super().format_help(ctx, formatter)


def parse_exclude_layers(value: str | None) -> tuple[int, ...]:
    """--exclude-layers '0,1' -> (0, 1), sorted and distinct; None or '' -> ()."""
    if value is None or not value.strip():
        return ()
    return tuple(sorted(set(parse_layer_list(value, "--exclude-layers"))))


def delete_command(
    model: Path = typer.Option(..., "--model", help="Model directory (Hugging Face, safetensors)."),
    kg: Optional[Path] = typer.Option(None, "--kg", help="KG bundle directory (or use --facts)."),
    facts: Optional[Path] = typer.Option(None, "--facts", help="Facts file (JSONL) instead of --kg."),
    corpus: Optional[str] = typer.Option(
        None, "--corpus", help="Text for the key statistics: a text file, or self:N (N tokens sampled from the "
        "model, seeded). Default: the KG's corpus; with --facts, the facts' own prompts (thin: warned)."),
    fact: list[int] = typer.Option(..., "--fact", help="Fact id (triple id; line number in a facts file). Repeat for a batch."),
    method: str = typer.Option("rome", "--method", help=f"{METHODS} (erase only: {ERASE_ONLY}); see docs/methods.md."),
    objective: str = typer.Option("erase", "--objective", help=f"{OBJECTIVES} (docs/methods.md)."),
    layer: str = typer.Option(
        "auto", "--layer", help="Layer to edit (MEMIT: centre of its window), or auto: chosen from a windowed trace "
        "of the fact (largest MLP effect at the site, embedding-like layers excluded; a per-family default when "
        "no layer reaches the minimum effect, with a warning)."),
    site: str = typer.Option("auto", "--site", help="Edit site: auto (from the same trace), subject_last (ROME's) "
                             "or last (the prompt's last token). Gradient methods ignore it."),
    trace_window: Optional[int] = typer.Option(
        None, "--trace-window", help="auto: layers restored together in the choice's trace (default 1 for <= 8 "
        "layers, else about a sixth of the layers)."),
    exclude_layers: Optional[str] = typer.Option(None, "--exclude-layers", help="auto: layers never chosen, e.g. 0,1."),
    target: Optional[str] = typer.Option(None, "--target", help="replace: the new object, an entity id (KG) or name "
                                         "(default: an object of the same relation, seeded)."),
    hparams: Optional[Path] = typer.Option(None, "--hparams", help="YAML file of hyperparameter overrides."),
    sequential: bool = typer.Option(False, "--sequential", help="Apply the facts one after another instead of as one batch."),
    out: Path = typer.Option(..., "--out", help="Directory for the edited model + edit.json (replaced atomically)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Key-statistics cache (default $KDEL_CACHE_DIR or ~/.cache/kdel)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Seed (traces, context prefixes, replace targets, self:N)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads (default 1)."),
) -> None:
    """Delete facts from a model with a locate-then-edit or unlearning method; write the edited model."""
    from kdel.delete.stage import run_delete
    from kdel.runtime import set_threads

    set_threads(threads)
    res = run_delete(model, out, fact_ids=fact, kg=kg, facts=facts, corpus=corpus, method=method,
                     objective=objective, layer=layer, site=site, target=target, hparams=hparams,
                     sequential=sequential, cache_dir=cache_dir, device=device, seed=seed, trace_window=trace_window,
                     exclude_layers=parse_exclude_layers(exclude_layers))
    r = res.record
    where = r["site"] or ("per fact" if any(a["site"] for a in r["applied"]) else "no site")
    chosen = " (auto)" if r["layer_choice"] else ""
    typer.echo(
        f"{r['method']} {objective} at layer(s) {','.join(map(str, r['layers']))} ({where}){chosen}: "
        f"{res.n_succeeded}/{len(r['facts'])} facts succeeded, ||dW|| = {r['total_delta_norm']:.3g} -> {out}"
    )


def register(app: typer.Typer) -> None:
    app.command("delete", cls=RegistryHelpCommand)(delete_command)
