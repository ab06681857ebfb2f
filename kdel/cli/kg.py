"""`kdel kg ...`: generate, inspect and export synthetic knowledge graphs (see synth_kg)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdel.errors import UserError

kg_app = typer.Typer(help="Generate, inspect and export synthetic knowledge graphs.", no_args_is_help=True)


def _common(device: Optional[str], threads: Optional[int], seed: int) -> None:
    from kdel.runtime import resolve_device, set_threads

    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    set_threads(threads)
    resolve_device(device)


def _relations(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise UserError(f"--relations must be an integer or 'auto', got {value!r}") from None


@kg_app.command("generate")
def generate_cmd(
    out: Path = typer.Option(..., "--out", help="Bundle directory to write (kg.json, corpus.txt, graph.graphml)."),
    topology: str = typer.Option("ba", "--topology", help="ba | er | powerlaw"),
    entities: int = typer.Option(200, "--entities", help="Number of graph nodes (entities)."),
    relations: str = typer.Option("50", "--relations", help="Number of relations, or 'auto' (the largest degree)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (>= 0); same seed, same bytes."),
    ba_m: int = typer.Option(3, "--ba-m", help="BA: edges per new node; also sets the default --edges."),
    edges: Optional[int] = typer.Option(None, "--edges", help="er/powerlaw: number of edges (default: BA's count)."),
    exponent: float = typer.Option(2.5, "--exponent", help="powerlaw: degree exponent (> 1; smaller = more skew)."),
    templates: int = typer.Option(3, "--templates", help="Training templates per relation (>= 3)."),
    heldout: int = typer.Option(1, "--heldout", help="Held-out (paraphrase) templates per relation (>= 1)."),
    attribute_relations: int = typer.Option(0, "--attribute-relations", help="Attribute relations (objects from a shared pool)."),
    attribute_pool: int = typer.Option(10, "--attribute-pool", help="Size of the shared pool of attribute values."),
    exposure: str = typer.Option("uniform", "--exposure", help="uniform | popularity (facts of popular subjects repeated more)."),
    repeats: int = typer.Option(1, "--repeats", help="Times each fact is written out (the mean, for popularity)."),
    singletons: str = typer.Option("reattach", "--singletons", help="Nodes outside the giant component: reattach | drop."),
    text_format: str = typer.Option(
        "natural", "--format",
        help="natural (English templates + held-out paraphrases) | sro (one token per entity and relation, a "
             "fact is 's r o'; --templates/--heldout are ignored)."),
    device: Optional[str] = typer.Option(None, "--device", help="Unused here (accepted for uniformity)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads."),
) -> None:
    """Generate a synthetic KG bundle (written atomically; an existing bundle is replaced whole)."""
    from synth_kg import KGConfig, generate

    _common(device, threads, seed)
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a directory")
    cfg = KGConfig(topology=topology, entities=entities, relations=_relations(relations), seed=seed, ba_m=ba_m,
                   edges=edges, exponent=exponent, templates_per_relation=templates, heldout_per_relation=heldout,
                   attribute_relations=attribute_relations, attribute_pool=attribute_pool, exposure=exposure,
                   repeats=repeats, singletons=singletons, text_format=text_format)
    kg = generate(cfg)
    kg.save(out)
    typer.echo(
        f"wrote {out} ({kg.text_format}): {len(kg.entities)} entities, {len(kg.relations)} relations, {len(kg.triples)} triples, "
        f"{len(kg.dropped)} dropped, hash {kg.content_hash()[:12]}", err=True)


@kg_app.command("stats")
def stats_cmd(
    directory: Path = typer.Argument(..., help="A KG bundle directory."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a log-log degree histogram to this PNG file."),
    top: int = typer.Option(10, "--top", help="How many hubs to list."),
    seed: int = typer.Option(0, "--seed", help="Unused here (accepted for uniformity)."),
    device: Optional[str] = typer.Option(None, "--device", help="Unused here (accepted for uniformity)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads."),
) -> None:
    """Counts, degree quantiles, top hubs (rich tables) and optionally a degree histogram."""
    from rich.console import Console

    from synth_kg import KnowledgeGraph
    from synth_kg.stats import degree_plot_png, stats_tables

    _common(device, threads, seed)
    if plot is not None and plot.suffix.lower() != ".png":
        raise UserError(f"--plot must name a .png file, got {plot}")
    if top < 0:
        raise UserError(f"--top must be >= 0, got {top}")
    kg = KnowledgeGraph.load(directory)
    console = Console()
    for table in stats_tables(kg, top):
        console.print(table)
    if plot is not None:
        from kdel.io import atomic_write_bytes

        if plot.exists() and plot.is_dir():
            raise UserError(f"--plot {plot} is a directory")
        atomic_write_bytes(plot, degree_plot_png(kg))
        console.print(f"wrote {plot}")


@kg_app.command("export-facts")
def export_facts_cmd(
    directory: Path = typer.Argument(..., help="A KG bundle directory."),
    out: Path = typer.Argument(..., help="The facts file to write (JSON lines)."),
    seed: int = typer.Option(0, "--seed", help="Unused here (accepted for uniformity)."),
    device: Optional[str] = typer.Option(None, "--device", help="Unused here (accepted for uniformity)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads."),
) -> None:
    """Export the KG's facts as a facts file (`--facts` format of DESIGN §8)."""
    from synth_kg import KnowledgeGraph

    _common(device, threads, seed)
    if out.exists() and out.is_dir():
        raise UserError(f"output path {out} is a directory")
    kg = KnowledgeGraph.load(directory)
    try:
        from kdel.facts import export_kg_facts
    except ImportError as e:
        raise UserError(f"export-facts is not available in this build ({e})") from None
    export_kg_facts(kg, out)


def register(app: typer.Typer) -> None:
    app.add_typer(kg_app, name="kg")
