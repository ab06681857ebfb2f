"""`kdel plan`: rank method × site × layer by predicted collateral among the candidates predicted to erase,
confirm the best few by trial edits (`--trials K`, reverted; 0: prediction only) and choose the least measured
collateral; `--apply --out EDITED` applies the choice and verifies it with a full audit case. The stage is
kdel.risk.planstage.run_plan; this module parses the flags and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kdel.cli.args import parse_layer_list, parse_list
from kdel.errors import UserError


def _list(value: Optional[str], what: str) -> Optional[list[str]]:
    return None if value is None else list(parse_list(value, what))


def _layers(value: Optional[str]) -> Optional[list[int]]:
    if value is None:
        return None
    layers = parse_layer_list(value, "--layers", ("all",))
    return None if layers == "all" else list(layers)


def _hparams(values: list[str]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for v in values:
        method, sep, path = v.partition("=")
        if not sep or not method.strip() or not path.strip():
            raise UserError(f"--hparams must be METHOD=FILE.yaml, got {v!r}")
        if method.strip() in out:
            raise UserError(f"--hparams: method {method.strip()!r} is given twice")
        out[method.strip()] = Path(path.strip())
    return out


def plan_command(
    model: Path = typer.Option(..., "--model", help="Model directory (Hugging Face, safetensors)."),
    kg: Optional[Path] = typer.Option(None, "--kg", help="KG bundle directory (or use --facts)."),
    facts: Optional[Path] = typer.Option(None, "--facts", help="Facts file (JSONL) instead of --kg."),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="With --facts: text for the key statistics."),
    fact: list[int] = typer.Option([], "--fact", help="Fact id to delete (repeat: deleted together)."),
    subject: Optional[str] = typer.Option(None, "--subject", help="Delete every fact of this subject."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Candidate methods, comma-separated (default rome,r-rome)."),
    sites: str = typer.Option("subject_last,last", "--sites", help="Candidate edit sites."),
    layers: Optional[str] = typer.Option(None, "--layers", help="Candidate layers, comma-separated, or all (default)."),
    risk_model: Optional[Path] = typer.Option(None, "--risk-model", help="Fitted predictor (kdel risk fit)."),
    hparams: list[str] = typer.Option([], "--hparams", help="METHOD=FILE.yaml: that method's hyperparameter "
                                      "overrides (repeat per method; as kdel delete --hparams)."),
    min_success: Optional[float] = typer.Option(None, "--min-success", help="Predicted efficacy a candidate needs (default 0.5)."),
    objective: Optional[str] = typer.Option(None, "--objective", help="Collateral to minimise: p_drop (predicted "
                                            "mean p drop, default), flips (expected flips), first_order_p_drop or "
                                            "first_order_flips (the kappa predictions of rank-one candidates)."),
    trials: Optional[int] = typer.Option(None, "--trials", help="Trial-edit the K best-ranked candidates (each "
                                         "audited, then reverted) and choose the least measured collateral among "
                                         "those that erased (default 3; 0: choose from the predictions alone)."),
    apply: bool = typer.Option(False, "--apply", help="Apply the chosen candidate and verify it with an audit case."),
    out: Optional[Path] = typer.Option(None, "--out", help="With --apply: directory for the edited model."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the plan as JSON (kdel-plan/1)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Key-statistics cache (as kdel delete)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Seed (edit texts, unrelated sample, tracing noise)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch CPU threads (default 1)."),
) -> None:
    """Score every method × site × layer before editing, rank them by predicted collateral among those predicted
    to erase, confirm the best --trials of them by reverted trial edits, and choose the least measured collateral."""
    from kdel.outputs import check_out_file
    from kdel.risk.planstage import PLAN_FORMAT, run_plan
    from kdel.risk.table import print_plan
    from kdel.runtime import set_threads

    set_threads(threads)
    if json_out is not None:
        check_out_file(json_out, inputs=[model, kg, facts, corpus, risk_model],
                       recognise=lambda p: _format(p) == PLAN_FORMAT, what="plan file")
    plan = run_plan(model, kg=kg, facts=facts, corpus=corpus, fact_ids=fact, subject=subject,
                    methods=_list(methods, "--methods"), sites=_list(sites, "--sites"), layers=_layers(layers),
                    risk_model=risk_model, hparams=_hparams(hparams), apply=apply, out=out, min_success=min_success, cache_dir=cache_dir,
                    device=device, seed=seed, objective=objective, trials=trials, progress=True)
    print_plan(plan)
    ch = plan["chosen"]
    note = "" if plan["chosen_predicted_to_erase"] else " (no candidate reaches the efficacy threshold: highest efficacy)"
    typer.echo(f"chosen: {ch['key']} by {plan['chosen_by']}{note}")
    if "measured" in plan:
        m = plan["measured"]
        typer.echo(f"predicted: P(success) {ch['p_success']:.3f}, expected flips {ch['expected_flips']:.2f}, "
                   f"mean p drop {ch['mean_p_drop']:.4f}")
        typer.echo(f"measured:  erased {sum(m['erased'])}/{len(m['erased'])}, flips {m['flips']}, mean p drop "
                   f"{m['mean_p_drop']:.4f}, global accuracy drop {m['global_accuracy_drop']:.4f}, "
                   f"wrecked {'yes' if m['wrecked'] else 'no'} -> {out}")
    if json_out is not None:
        from kdel.io import atomic_write_json

        atomic_write_json(json_out, plan)


def _format(path) -> str | None:
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return None


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)
