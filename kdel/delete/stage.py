"""The delete stage: delete (or rewrite) facts in a model and write the edited model with its edit record.

One function for the CLI (`kdel delete`) and Python. Writes, in one rename (kdel.outputs rule: the output is
missing, empty or an edited-model directory, never an input):
  OUT/model.safetensors, config.json, tokenizer files   the edited model (loadable like any model)
  OUT/kdel_model.json                                   copied from the source model when it has one
  OUT/edit.json                                         kdel-edit/1: what was edited, how, and efficacy per fact

Efficacy (DESIGN §12) is measured here on the edited model: erase succeeds when o is no longer recalled,
replace/unknown when the new target is (kdel.delete.objectives.succeeded). If kdel/delete/efficacy.py lands
with a shared efficacy function, `efficacy_rows` should call it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from kdel.errors import UserError

EDIT_FORMAT = "kdel-edit/1"


@dataclass
class DeleteRun:
    out: Path
    record: dict  # the content of OUT/edit.json

    @property
    def n_succeeded(self) -> int:
        return sum(r["success"] for r in self.record["facts"])


def default_cache_dir() -> Path:
    """$KDEL_CACHE_DIR, else $XDG_CACHE_HOME/kdel, else ~/.cache/kdel (entries are keyed by weights hash)."""
    if os.environ.get("KDEL_CACHE_DIR"):
        return Path(os.environ["KDEL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kdel"


def resolve_target(table, target: str | None) -> str | None:
    """A replace target given as an entity id (KG bundles) or an entity name; None when not given."""
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


def run_delete(model, out, *, fact_ids, kg=None, facts=None, corpus=None, method: str = "rome",
               objective: str = "erase", layer: int | None = None, site: str = "subject_last",
               target: str | None = None, hparams=None, sequential: bool = False, cache_dir=None,
               device: str = "cpu", seed: int = 0) -> DeleteRun:
    """Delete the facts `fact_ids` of `kg` (bundle directory) or `facts` (facts file) from the model directory
    `model` with `method`/`objective` and write the edited model to `out`.

    `hparams`: a YAML file of overrides, or a dict of them. `sequential`: one edit per fact, one after
    another, instead of one batch. `corpus` (with `facts`): text for the key statistics."""
    from kdel.delete.base import DeletionRequest, EditContext, apply_deletion, get_method
    from kdel.delete.hparams import load_hparams
    from kdel.delete.objectives import check_objective, new_targets_for
    from kdel.delete.sequential import apply_sequential, split_request
    from kdel.facts import load_fact_table
    from kdel.io import atomic_write_json, staged_dir
    from kdel.models.loading import MODEL_META, check_model_dir, load_model_for_table, save_model
    from kdel.models.scoring import unencodable_reason
    from kdel.outputs import check_out_dir
    from kdel.runtime import resolve_device, seed_everything

    fact_ids = list(fact_ids or [])
    if not fact_ids:
        raise UserError("give at least one --fact to delete")
    if len(set(fact_ids)) != len(fact_ids):
        raise UserError("the same --fact id is given twice")
    if corpus is not None and facts is None:
        raise UserError("--corpus goes with --facts (a KG bundle has its own corpus)")
    hp_file = hparams if isinstance(hparams, (str, Path)) else None
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = check_out_dir(out, "edit", inputs=[model, kg, facts, corpus, hp_file, cache])
    dev = resolve_device(device)
    seed_everything(seed)
    check_objective(objective)
    meth = get_method(method)
    if objective not in meth.objectives:
        raise UserError(f"method {method!r} does not support objective {objective!r} "
                        f"(it supports {', '.join(meth.objectives)})")
    meth.hparams = load_hparams(meth.hparams_class, hp_file, hparams if isinstance(hparams, dict) else None)
    check_model_dir(model)
    table = load_fact_table(kg=kg, facts=facts, corpus=corpus)
    chosen = [table.fact(i) for i in fact_ids]
    given = resolve_target(table, target)
    if given is not None and not given.strip():
        raise UserError(f"--target {given!r} cannot be used: it is empty")
    new_targets = new_targets_for(objective, chosen, table, [given] if given else None, seed)

    lm, tok = load_model_for_table(model, table, dev)
    if given is not None:
        why = unencodable_reason(tok, given)
        if why:
            raise UserError(f"--target {given!r} cannot be encoded by the model's tokenizer: {why}")
    ctx = EditContext(lm, tok, table, cache_dir=cache)
    if layer is not None:
        ctx.adapter._check_layer(layer)
    request = DeletionRequest(chosen, objective, new_targets, layer, site, seed)
    if sequential:
        handle, records = apply_sequential(meth, ctx, split_request(request))
    else:
        handle, single = apply_deletion(meth, ctx, request)
        records = [single]
    rows = efficacy_rows(lm, tok, request, records)
    layers = records[0].layers if records else []
    record = {
        "format": EDIT_FORMAT,
        "source_model": str(Path(model).resolve()),
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
    try:
        with staged_dir(out) as staging:
            save_model(lm, tok, staging)
            if (Path(model) / MODEL_META).exists():
                shutil.copyfile(Path(model) / MODEL_META, staging / MODEL_META)
            atomic_write_json(staging / "edit.json", record)
    finally:
        handle.revert()
    return DeleteRun(Path(out), record)
