"""The delete stage: delete (or rewrite) facts in a model and write the edited model with its edit record.

One function for the CLI (`kdel delete`) and Python. Writes, in one rename (kdel.outputs rule: the output is
missing, empty or an edited-model directory, never an input):
  OUT/model.safetensors, config.json, tokenizer files   the edited model (loadable like any model)
  OUT/kdel_model.json                                   copied from the source model when it has one
  OUT/edit.json                                         kdel-edit/1: what was edited, how, and efficacy per fact

Where: `--layer auto --site auto` (the default) choose from a windowed trace of each fact and record the choice
(`layer_choice`: effect size, runner-up, window, excluded layers, fallback) beside what was applied (`applied`).
Which text: the corpus' provenance (`corpus`: spec, seed, hash, token counts). Methods that ignore the edit site
record `site: null`; a rewriting objective's new targets are recorded with where they came from. Which code:
`provenance` (kdel.provenance: package version, git commit and dirty flag, library versions, CPU/GPU, threads).

Efficacy (DESIGN §12) is measured here on the edited model: erase succeeds when o is no longer recalled,
replace/unknown when the new target is (kdel.delete.objectives.succeeded). If kdel/delete/efficacy.py lands
with a shared efficacy function, `efficacy_rows` should call it.
"""

from __future__ import annotations

import os
import shutil
import warnings
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


def plan_requests(meth, ctx, facts, objective: str, new_targets, layer, site: str, seed: int, sequential: bool,
                  trace_window: int | None = None, exclude_layers=()) -> tuple[list, dict | None, bool]:
    """The deletion requests (one batch, or one per fact with `sequential`) with their site and layer, the
    record of the evidence-based choice (None when no `auto` applied), and whether the method uses the site.

    `layer`/`site` = "auto": chosen from a windowed trace of each fact (kdel.delete.layer_auto); a batch is
    edited at the (site, layer) most of its facts chose, a sequential deletion at each fact's own. A method that
    ignores the site (gradient methods) gets no site (recorded as null), one that ignores the layer no layer."""
    from kdel.delete.base import DeletionRequest
    from kdel.delete.layer_auto import AUTO, batch_pick, choose, site_pick, uses_layer, uses_site, warn_fallbacks

    site_used, layer_used = uses_site(meth), uses_layer(meth, ctx, facts)
    want_site, want_layer = site == AUTO and site_used, layer == AUTO and layer_used
    fixed_site = site if site != AUTO else "subject_last"  # a valid site for methods that ignore it
    fixed_layer = layer if isinstance(layer, int) else None
    pairs = [(fixed_site, fixed_layer)] * len(facts)
    record = None
    if want_site or want_layer:
        adapter = ctx.adapter
        choices = choose(ctx.model, ctx.tokenizer, facts, ctx.table, trace_window, exclude_layers, seed=seed)
        picks = [site_pick(c, c.site if want_site else fixed_site, adapter.arch.family, adapter.n_layers)
                 for c in choices]
        if want_layer:
            warn_fallbacks(picks)
        pairs = [(p["site"] if want_site else fixed_site, p["layer"] if want_layer else fixed_layer) for p in picks]
        if not sequential:
            pairs = [batch_pick([{**p, "site": s, "layer": la} for p, (s, la) in zip(picks, pairs)])] * len(facts)
        record = {"layer": layer, "site": site, "window": choices[0].window,
                  "exclude_layers": sorted(set(int(x) for x in exclude_layers)), "min_effect": picks[0]["min_effect"],
                  "facts": [{"fact_id": f.id, "pick": p, "choice": c.to_json()}
                            for f, p, c in zip(facts, picks, choices)]}
    if sequential:
        requests = [DeletionRequest([f], objective, [new_targets[i]] if new_targets else None, pairs[i][1],
                                    pairs[i][0], seed) for i, f in enumerate(facts)]
    else:
        requests = [DeletionRequest(list(facts), objective, new_targets, pairs[0][1], pairs[0][0], seed)]
    return requests, record, site_used


def run_delete(model, out, *, fact_ids, kg=None, facts=None, corpus=None, method: str = "rome",
               objective: str = "erase", layer="auto", site: str = "auto", target: str | None = None,
               hparams=None, sequential: bool = False, cache_dir=None, device: str = "cpu", seed: int = 0,
               trace_window: int | None = None, exclude_layers=()) -> DeleteRun:
    """Delete the facts `fact_ids` of `kg` (bundle directory) or `facts` (facts file) from the model directory
    `model` with `method`/`objective` and write the edited model to `out`.

    `layer`: "auto" (default: chosen from a windowed trace of each fact, see `plan_requests`), a layer index,
    or None (the method's default). `site`: "auto" (default), "subject_last" or "last". `trace_window` and
    `exclude_layers` tune the choice (kdel.trace.localize). `hparams`: a YAML file of overrides, or a dict of
    them. `sequential`: one edit per fact, one after another, instead of one batch. `corpus`: text for the key
    statistics and context prefixes: a text file, "self:N" (N tokens sampled from the model, seeded), or None
    (a KG's own corpus; a facts file's prompts, thin)."""
    from kdel.delete.base import EditContext, get_method
    from kdel.delete.corpus import Corpus
    from kdel.delete.covariance import SmallCorpusWarning, ThinCorpusWarning
    from kdel.delete.hparams import load_hparams
    from kdel.delete.objectives import check_objective, new_targets_for
    from kdel.delete.prepare import (
        attach,
        check_corpus_spec,
        corpus_record,
        key_statistics_layers,
        resolve_layer_arg,
        warm_key_statistics,
    )
    from kdel.facts import load_fact_table
    from kdel.models.loading import check_model_dir, load_model_for_table
    from kdel.models.positions import SITES
    from kdel.models.scoring import unencodable_reason
    from kdel.outputs import check_out_dir
    from kdel.runtime import resolve_device, seed_everything

    fact_ids = list(fact_ids or [])
    if not fact_ids:
        raise UserError("give at least one --fact to delete")
    if len(set(fact_ids)) != len(fact_ids):
        raise UserError("the same --fact id is given twice")
    layer = resolve_layer_arg(layer)
    if site not in ("auto", *SITES):
        raise UserError(f"unknown edit site {site!r}: use auto, {' or '.join(SITES)}")
    if trace_window is not None and trace_window < 1:
        raise UserError(f"--trace-window must be >= 1, got {trace_window}")
    checked = check_corpus_spec(corpus)
    corpus_file = Path(checked.spec) if isinstance(checked, Corpus) else None
    hp_file = hparams if isinstance(hparams, (str, Path)) else None
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = check_out_dir(out, "edit", inputs=[model, kg, facts, corpus_file, hp_file, cache])
    dev = resolve_device(device)
    seed_everything(seed)
    check_objective(objective)
    meth = get_method(method)
    if objective not in meth.objectives:
        raise UserError(f"method {method!r} does not support objective {objective!r} "
                        f"(it supports {', '.join(meth.objectives)})")
    meth.hparams = load_hparams(meth.hparams_class, hp_file, hparams if isinstance(hparams, dict) else None)
    check_model_dir(model)
    table = load_fact_table(kg=kg, facts=facts)
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
    table = attach(table, checked, lm, tok, seed)
    chosen = [table.fact(i) for i in fact_ids]
    ctx = EditContext(lm, tok, table, cache_dir=cache)
    if isinstance(layer, int):
        ctx.adapter._check_layer(layer)
    for x in exclude_layers:
        if not 0 <= int(x) < ctx.adapter.n_layers:
            raise UserError(f"--exclude-layers: layer {x} is out of range: this model has layers "
                            f"0..{ctx.adapter.n_layers - 1}")
    requests, choice, site_used = plan_requests(meth, ctx, chosen, objective, new_targets, layer, site, seed,
                                                sequential, trace_window, exclude_layers)
    warm_key_statistics(ctx.adapter, tok, table, key_statistics_layers(meth, ctx, requests), cache)
    with warnings.catch_warnings():  # the corpus was judged once, by the warm-up: not again per edit
        warnings.simplefilter("ignore", ThinCorpusWarning)
        warnings.simplefilter("ignore", SmallCorpusWarning)
        records, handle = _apply(meth, ctx, requests, sequential)
    try:
        record = _edit_record(model, table, meth, objective, requests, records, site_used, sequential=sequential,
                              seed=seed, choice=choice, corpus=corpus_record(table, tok),
                              target_given=given is not None, lm=lm, tok=tok, device=dev)
        _save(lm, tok, model, out, record)
    finally:
        handle.revert()
    return DeleteRun(Path(out), record)


def _apply(meth, ctx, requests, sequential: bool):
    from kdel.delete.base import apply_deletion
    from kdel.delete.sequential import apply_sequential

    if sequential:
        handle, records = apply_sequential(meth, ctx, requests)
    else:
        handle, single = apply_deletion(meth, ctx, requests[0])
        records = [single]
    return records, handle


def _unique(values):
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else None


def _edit_record(model, table, meth, objective, requests, records, site_used: bool, sequential, seed, choice,
                 corpus, target_given: bool, lm, tok, device: str = "cpu") -> dict:
    """edit.json (kdel-edit/1): what was edited, where and why (the layer choice), from which corpus, with
    efficacy per fact measured on the edited weights, and the code version and environment that made it."""
    from kdel.delete.base import DeletionRequest
    from kdel.provenance import provenance

    batch = DeletionRequest([f for r in requests for f in r.facts], objective,
                            [t for r in requests for t in (r.new_targets or [])] or None, requests[0].layer,
                            requests[0].site, seed)
    rows = efficacy_rows(lm, tok, batch, records)
    applied = [{"fact_ids": [f.id for f in r.facts], "site": r.site if site_used else None,
                "layers": rec.layers} for r, rec in zip(requests, records)]
    layers = sorted({layer for rec in records for layer in rec.layers})
    recs = [rec.to_json() for rec in records]
    if not site_used:
        for rec in recs:
            rec["site"] = None
    given_layer = _unique(r.layer for r in requests)
    return {
        "format": EDIT_FORMAT,
        "source_model": str(Path(model).resolve()),
        "facts_source": table.source,
        "facts_source_hash": table.source_hash,
        "method": meth.name,
        "objective": objective,
        "site": _unique(a["site"] for a in applied),
        "layer": given_layer if given_layer is not None else (layers[len(layers) // 2] if layers else None),
        "layers": layers,
        "applied": applied,
        "layer_choice": choice,
        "sequential": sequential,
        "seed": seed,
        "new_targets": batch.new_targets,
        "new_target_source": None if batch.new_targets is None else ("given" if target_given else "chosen"),
        "corpus": corpus,
        "hparams": records[0].hparams if records else {},
        "efficacy": sum(r["success"] for r in rows) / len(rows),
        "facts": rows,
        "total_delta_norm": float(sum(r.total_delta_norm**2 for r in records) ** 0.5),
        "records": recs,
        "provenance": provenance(device),
    }


def _save(lm, tok, model, out, record) -> None:
    from kdel.io import atomic_write_json, staged_dir
    from kdel.models.loading import MODEL_META, save_model

    with staged_dir(out) as staging:
        save_model(lm, tok, staging)
        if (Path(model) / MODEL_META).exists():
            shutil.copyfile(Path(model) / MODEL_META, staging / MODEL_META)
        atomic_write_json(staging / "edit.json", record)
