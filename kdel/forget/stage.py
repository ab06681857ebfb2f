"""The forget stage: delete every fact of one entity and write the edited model with `forget.json`.

One function for the CLI (`kdel forget`) and Python. Writes, in one rename (kdel.outputs rule, kind "forget":
the output is missing, empty or a directory `kdel forget` wrote; never an input):
  OUT/model.safetensors, config.json, tokenizer files   the edited model, plain Hugging Face
  OUT/kdel_model.json                                   copied from the source model when it has one
  OUT/forget.json                                       kdel-forget/1 (docs/forget.md)
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from kdel.errors import UserError

FORGET_FORMAT = "kdel-forget/1"


@dataclass
class ForgetRun:
    out: Path
    record: dict  # the content of OUT/forget.json


@dataclass
class ForgetSettings:
    method: str = "rome"
    objective: str = "erase"
    layer: int | None = None  # None: the method's default (middle layer)
    site: str = "last"
    as_object: bool = False
    mode: str = "auto"  # auto | batch | sequential (kdel.forget.apply.mode_for)
    seed: int = 0
    unrelated: int = 100  # size of the fixed unrelated sample
    candidates: int = 20  # extraction check: other objects ranked against the object (0: none)
    fluency: str = "auto"  # auto (real models only) | on | off


def is_real_model(model_dir) -> bool:
    """A model kdel did not train (no kdel_model.json): fluency checks apply (DESIGN §13)."""
    from kdel.models.loading import MODEL_META

    return not (Path(model_dir) / MODEL_META).exists()


def forget_in_memory(model, tok, table, entity, method, settings: ForgetSettings, base=None, cache_dir=None,
                     fluency=None) -> tuple[object, dict]:
    """Forget `entity` in the loaded `model` (in place). Returns (the edit, the record's measured sections);
    the caller reverts `edit.handle` when done. `base`: the run's BaseScores (computed here if None);
    `fluency`: a kdel.models.fluency.FluencyCheck made on the unedited model, or None."""
    from kdel.audit.evaluate import BaseScores
    from kdel.delete import EditContext
    from kdel.delete.objectives import new_targets_for
    from kdel.forget import measure
    from kdel.forget.apply import apply_forget, mode_for, mode_reason
    from kdel.forget.entity import entity_fact_ids, entity_probe_groups
    from kdel.forget.extraction import extraction_check

    t0 = time.perf_counter()
    deleted = entity_fact_ids(table, entity.name, settings.as_object)
    pool = base.unrelated_pool if base is not None else table.unrelated_sample(settings.unrelated, settings.seed)
    if base is None:
        base = BaseScores.compute(model, tok, table, pool)
    t_base = time.perf_counter()
    facts = [table.fact(i) for i in deleted]
    new_targets = new_targets_for(settings.objective, facts, table, seed=settings.seed)
    ctx = EditContext(model, tok, table, cache_dir=cache_dir, unrelated_pool=list(pool))
    edit = apply_forget(method, ctx, facts, settings.objective, new_targets, settings.layer, settings.site,
                        settings.seed, settings.mode)
    t_edit = time.perf_counter()
    try:
        groups = entity_probe_groups(table, entity.name, deleted, pool)
        cs = measure.score_after(model, base, deleted, groups["unrelated"])
        rows = measure.fact_rows(cs, table, deleted, entity.name)
        effects = measure.side_effects(cs, groups, deleted)
        t_measure = time.perf_counter()
        extraction = extraction_check(model, tok, table, deleted, candidates=settings.candidates,
                                      seed=settings.seed)
        t_extract = time.perf_counter()
        effects["fluency"] = fluency.after(model) if fluency is not None else None
        if effects["fluency"] is not None:
            effects["wrecked"] = bool(effects["wrecked"] or effects["fluency"].get("fluency_wrecked"))
    except BaseException:
        edit.handle.revert()
        raise
    mode = mode_for(method.name, settings.mode)
    steps = edit.steps_json()
    record = {
        "entity": entity.to_json(),
        "as_object": settings.as_object,
        "method": method.name,
        "objective": settings.objective,
        "mode": mode,
        "mode_reason": mode_reason(method.name, mode),
        "site": settings.site,
        "layers": sorted({layer for s in steps for layer in s["layers"]}),
        "seed": settings.seed,
        "hparams": edit.records[0].hparams if edit.records else {},
        "fact_ids": deleted,
        "new_targets": new_targets,
        "efficacy": measure.efficacy_summary(rows),
        "facts": rows,
        "extraction": extraction,
        "steps": steps,
        "delta_norm_total": edit.cumulative.total(),
        "delta_norms_total": edit.cumulative.norms(),
        "side_effects": effects,
        "group_sizes": {k: len(v) for k, v in groups.items()},
        "unrelated_pool": list(pool),
        "timing": {"base_s": t_base - t0, "edit_s": t_edit - t_base, "measure_s": t_measure - t_edit,
                   "extraction_s": t_extract - t_measure, "fluency_s": time.perf_counter() - t_extract},
    }
    return edit, record


def run_forget(model, out, *, subject: str | None = None, entity_id: int | None = None, kg=None, facts=None,
               corpus=None, settings: ForgetSettings | None = None, hparams=None, cache_dir=None,
               device: str = "cpu") -> ForgetRun:
    """Forget one entity (by `subject` name or KG `entity_id`) of `kg` (bundle dir) or `facts` (facts file) in
    the model directory `model`; write the edited model and forget.json to `out`. `hparams`: a YAML file of
    overrides or a dict of them."""
    from kdel import __version__
    from kdel.delete import get_method
    from kdel.delete.hparams import load_hparams
    from kdel.delete.objectives import check_objective
    from kdel.facts import load_fact_table
    from kdel.forget.entity import resolve_entity
    from kdel.io import atomic_write_json, staged_dir
    from kdel.models.loading import MODEL_META, check_model_dir, load_model_for_table, save_model
    from kdel.outputs import check_out_dir
    from kdel.provenance import provenance
    from kdel.runtime import resolve_device, seed_everything

    settings = settings or ForgetSettings()
    t0 = time.perf_counter()
    if corpus is not None and facts is None:
        raise UserError("--corpus goes with --facts (a KG bundle has its own corpus)")
    if settings.unrelated < 1:
        raise UserError(f"--unrelated must be >= 1, got {settings.unrelated}")
    if settings.fluency not in ("auto", "on", "off"):
        raise UserError(f"--fluency must be auto, on or off, got {settings.fluency!r}")
    hp_file = hparams if isinstance(hparams, (str, Path)) else None
    if cache_dir is None:
        from kdel.delete.stage import default_cache_dir

        cache_dir = default_cache_dir()
    out = check_out_dir(out, "forget", inputs=[model, kg, facts, corpus, hp_file, cache_dir])
    dev = resolve_device(device)
    seed_everything(settings.seed)
    check_objective(settings.objective)
    meth = get_method(settings.method)
    if settings.objective not in meth.objectives:
        raise UserError(f"method {settings.method!r} does not support objective {settings.objective!r} "
                        f"(it supports {', '.join(meth.objectives)})")
    meth.hparams = load_hparams(meth.hparams_class, hp_file, hparams if isinstance(hparams, dict) else None)
    check_model_dir(model)
    table = load_fact_table(kg=kg, facts=facts, corpus=corpus)
    entity = resolve_entity(table, subject, entity_id)
    lm, tok = load_model_for_table(model, table, dev)
    if settings.layer is not None:
        from kdel.models.adapter import ModelAdapter

        ModelAdapter(lm, tok)._check_layer(settings.layer)
    real = is_real_model(model)
    check = None
    if settings.fluency == "on" or (settings.fluency == "auto" and real):
        from kdel.delete.corpus import corpus_of
        from kdel.models.fluency import FluencyCheck

        check = FluencyCheck(lm, tok, corpus_of(table).heldout_lines())
    t_load = time.perf_counter()
    edit, measured = forget_in_memory(lm, tok, table, entity, meth, settings, cache_dir=cache_dir, fluency=check)
    record = {
        "format": FORGET_FORMAT,
        "kdel_version": __version__,
        "source_model": str(Path(model).resolve()),
        "real_model": real,
        "facts_source": table.source,
        "facts_source_hash": table.source_hash,
        **measured,
        "provenance": provenance(dev),
    }
    try:
        t_save = time.perf_counter()
        with staged_dir(out) as staging:
            save_model(lm, tok, staging)
            if (Path(model) / MODEL_META).exists():
                shutil.copyfile(Path(model) / MODEL_META, staging / MODEL_META)
            record["timing"].update(load_s=t_load - t0, save_s=time.perf_counter() - t_save,
                                    total_s=time.perf_counter() - t0)
            atomic_write_json(staging / "forget.json", record)
    finally:
        edit.handle.revert()
    return ForgetRun(Path(out), record)
