"""`kdel delete`: delete (or rewrite) facts in a model and write the edited model (DESIGN §6, §8, §12)."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Optional

import typer

from kdel.errors import UserError

EDIT_FORMAT = "kdel-edit/1"


def default_cache_dir() -> Path:
    """$KDEL_CACHE_DIR, else $XDG_CACHE_HOME/kdel, else ~/.cache/kdel (entries are keyed by weights hash)."""
    if os.environ.get("KDEL_CACHE_DIR"):
        return Path(os.environ["KDEL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kdel"


def resolve_target(table, target: str | None) -> str | None:
    """--target: an entity id (KG bundles) or an entity name; None when not given."""
    if target is None:
        return None
    if table.kg is not None and target.strip().isdigit():
        return table.kg.entity(int(target)).name
    return target


def efficacy_rows(model, tokenizer, request, records) -> list[dict]:
    """Per fact, on the edited model: recall of o (canonical prompt and every training prompt), new target, success."""
    from kdel.delete.objectives import succeeded
    from kdel.models.scoring import score_targets

    rows = []
    for i, fact in enumerate(request.facts):
        prompts = list(fact.prompts)
        true = score_targets(model, tokenizer, prompts, [fact.target] * len(prompts))
        row = {
            "fact_id": fact.id,
            "subject": fact.subject,
            "target": fact.target,
            "recalled_after": bool(true.recalled[0]),
            "p_after": float(true.prob[0]),
            "training_prompts_recalled_after": float(true.recalled.mean()),
        }
        new_recalled = None
        if request.new_targets:
            new = request.new_targets[i]
            s = score_targets(model, tokenizer, [fact.prompt], [new])
            new_recalled = bool(s.recalled[0])
            row.update(new_target=new, new_target_recalled_after=new_recalled, new_target_p_after=float(s.prob[0]))
        p_before = next((r.p_before[r.fact_ids.index(fact.id)] for r in records if fact.id in r.fact_ids), None)
        row["p_before"] = p_before
        row["success"] = succeeded(request.objective, row["recalled_after"], new_recalled, p_before, row["p_after"])
        rows.append(row)
    return rows


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
    from kdel.delete.base import DeletionRequest, EditContext, apply_deletion, get_method
    from kdel.delete.hparams import load_hparams
    from kdel.delete.objectives import check_objective, new_targets_for
    from kdel.delete.sequential import apply_sequential, split_request
    from kdel.facts import load_fact_table
    from kdel.io import atomic_write_json, replace_directory, staging_dir_for
    from kdel.models.loading import MODEL_META, check_model_dir, load_model_for_table, save_model
    from kdel.models.scoring import unencodable_reason
    from kdel.runtime import resolve_device, seed_everything, set_threads

    set_threads(threads)
    dev = resolve_device(device)
    seed_everything(seed)
    check_objective(objective)
    meth = get_method(method)
    if objective not in meth.objectives:
        raise UserError(f"method {method!r} does not support objective {objective!r} (it supports {', '.join(meth.objectives)})")
    meth.hparams = load_hparams(meth.hparams_class, hparams)
    if len(set(fact)) != len(fact):
        raise UserError("the same --fact id is given twice")
    if corpus is not None and facts is None:
        raise UserError("--corpus goes with --facts (a KG bundle has its own corpus)")
    check_model_dir(model)
    if out.resolve() == model.resolve():
        raise UserError("--out must differ from --model (the source model is never overwritten)")
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a directory")
    table = load_fact_table(kg=kg, facts=facts, corpus=corpus)
    chosen = [table.fact(i) for i in fact]
    given = resolve_target(table, target)
    if given is not None:
        why = unencodable_reason_for(given)
        if why:
            raise UserError(f"--target {given!r} cannot be used: {why}")
    new_targets = new_targets_for(objective, chosen, table, [given] if given else None, seed)

    lm, tok = load_model_for_table(model, table, dev)
    if given is not None:
        why = unencodable_reason(tok, given)
        if why:
            raise UserError(f"--target {given!r} cannot be encoded by the model's tokenizer: {why}")
    ctx = EditContext(lm, tok, table, cache_dir=cache_dir or default_cache_dir())
    if layer is not None:
        ctx.adapter._check_layer(layer)
    request = DeletionRequest(chosen, objective, new_targets, layer, site, seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if sequential:
            handle, records = apply_sequential(meth, ctx, split_request(request))
        else:
            handle, single = apply_deletion(meth, ctx, request)
            records = [single]
    for w in caught:
        if issubclass(w.category, UserWarning) and "key statistics" in str(w.message):
            typer.echo(f"kdel: warning: {' '.join(str(w.message).split())}", err=True)
            break
    rows = efficacy_rows(lm, tok, request, records)
    layers = records[0].layers if records else []
    summary = {
        "format": EDIT_FORMAT,
        "source_model": str(model.resolve()),
        "facts_source": table.source,
        "facts_source_hash": table.source_hash,
        "method": meth.name,
        "objective": objective,
        "site": site,
        "layer": layer if layer is not None else (layers[len(layers) // 2] if layers else None),
        "layers": layers,
        "sequential": sequential,
        "seed": seed,
        "hparams": records[0].hparams if records else {},
        "efficacy": sum(r["success"] for r in rows) / len(rows),
        "facts": rows,
        "total_delta_norm": float(sum(r.total_delta_norm**2 for r in records) ** 0.5),
        "records": [r.to_json() for r in records],
    }
    staging = staging_dir_for(out)
    try:
        save_model(lm, tok, staging)
        if (model / MODEL_META).exists():
            shutil.copyfile(model / MODEL_META, staging / MODEL_META)
        atomic_write_json(staging / "edit.json", summary)
        replace_directory(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    handle.revert()
    ok = sum(r["success"] for r in rows)
    typer.echo(
        f"{meth.name} {objective} at layer(s) {','.join(map(str, layers))} ({site}): {ok}/{len(rows)} facts succeeded, "
        f"||dW|| = {summary['total_delta_norm']:.3g} -> {out}"
    )


def unencodable_reason_for(text: str) -> str | None:
    """Checks that need no tokenizer (an empty target)."""
    return "it is empty" if not text.strip() else None


def register(app: typer.Typer) -> None:
    app.command("delete")(delete_command)
