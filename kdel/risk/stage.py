"""The risk stage: predict a deletion's collateral damage before editing (`kdel risk`).

`run_risk` loads the model and facts, computes the features of every probe fact for each requested fact's
deletion (each fact deleted alone, with the given method, site and layer) and returns (and with `out` writes)
`kdel-risk/1` JSON:
  {"format", "model", "facts_source", "method", "site", "layer", "risk_model": path | null,
   "predictors": ["first_order"?, "learned"?], "features": [...], "cases": [CASE], "provenance"}
  CASE = {"fact": {...}, "summary": {"first_order": {...}, "learned": {...}},
          "probes": [{"fact_id", "subject", "relation", "target", "group", "recalled_before", "p_before",
                      "first_order": {"kappa", "dlogp", "margin_after", "flip", "p_drop"} | null,
                      "learned": {"p_flip", "p_drop"} | null, "features": {name: value}}]}
The output file follows kdel's output rule (never an input; an existing file only when kdel wrote it as a
risk file, or with force).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdel.errors import UserError

RISK_FORMAT = "kdel-risk/1"


def is_risk_file(path) -> bool:
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("format") == RISK_FORMAT
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return False


def resolve_hparams(method: str, hparams) -> dict:
    """The method's resolved hyperparameters as a dict: defaults < YAML file (a path) or dict of overrides."""
    import dataclasses

    from kdel.delete import get_method
    from kdel.delete.hparams import load_hparams

    cls = get_method(method).hparams_class
    if not dataclasses.is_dataclass(cls):
        return {}
    path = hparams if isinstance(hparams, (str, Path)) else None
    hp = load_hparams(cls, path, hparams if isinstance(hparams, dict) else None)
    return dataclasses.asdict(hp)


def check_method_site(method: str, site: str, risk_model) -> None:
    from kdel.delete import get_method
    from kdel.delete.base import SITES
    from kdel.risk.features import RANK_ONE

    get_method(method)  # unknown method: a UserError naming the known ones
    if site not in SITES:
        raise UserError(f"unknown edit site {site!r}: use {' or '.join(SITES)}")
    if method not in RANK_ONE and risk_model is None:
        raise UserError(f"method {method!r} has no first-order predictor (only {', '.join(RANK_ONE)} do): give a "
                        f"fitted --risk-model")


def run_risk(model, *, fact_ids, kg=None, facts=None, corpus=None, method: str = "rome",
             site: str = "subject_last", layer: int | None = None, hparams=None, risk_model=None, out=None,
             force: bool = False, cache_dir=None, device: str = "cpu", seed: int = 0, unrelated: int = 100) -> dict:
    from kdel.delete.stage import default_cache_dir
    from kdel.facts import load_fact_table
    from kdel.io import atomic_write_json
    from kdel.models.loading import check_model_dir, load_model_for_table
    from kdel.outputs import check_out_file
    from kdel.provenance import provenance
    from kdel.risk.context import Case, FeatureContext
    from kdel.risk.model import load_risk_model
    from kdel.risk.predict import predict_case
    from kdel.runtime import resolve_device

    fact_ids = list(fact_ids or [])
    if not fact_ids:
        raise UserError("give at least one --fact")
    if corpus is not None and facts is None:
        raise UserError("--corpus goes with --facts (a KG bundle has its own corpus)")
    rm = load_risk_model(risk_model) if risk_model is not None else None
    check_method_site(method, site, rm)
    hp = resolve_hparams(method, hparams)
    if out is not None:
        check_out_file(out, inputs=[model, kg, facts, corpus, risk_model], force=force, recognise=is_risk_file,
                       what="risk file")
    check_model_dir(model)
    table = load_fact_table(kg=kg, facts=facts, corpus=corpus)
    for fid in fact_ids:
        table.fact(fid)
    dev = resolve_device(device)
    lm, tok = load_model_for_table(model, table, dev)
    from kdel.models.adapter import ModelAdapter

    n_layers = ModelAdapter(lm, tok).n_layers
    layer = n_layers // 2 if layer is None else layer
    if not 0 <= layer < n_layers:
        raise UserError(f"--layer {layer} is out of range: this model has layers 0..{n_layers - 1}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    ctx = FeatureContext(lm, tok, table, cache_dir=cache, layers=[layer], trace_seed=seed)
    pool = table.unrelated_sample(unrelated, seed)
    cases = []
    for fid in fact_ids:
        groups = table.probe_groups(fid, pool)
        cf = ctx.case_features(Case(fact_id=fid, method=method, site=site, layer=layer, hparams=hp, seed=seed), groups)
        pred = predict_case(ctx.base, cf, fid, method, rm)
        cases.append(case_json(table, ctx, fid, groups, cf, pred))
    result = {
        "format": RISK_FORMAT,
        "model": str(Path(model).resolve()),
        "facts_source": table.source,
        "facts_source_hash": table.source_hash,
        "method": method, "site": site, "layer": layer, "seed": seed, "hparams": hp,
        "risk_model": str(Path(risk_model).resolve()) if risk_model is not None else None,
        "predictors": [p for p, on in (("first_order", cases and "first_order" in cases[0]["summary"]),
                                       ("learned", rm is not None)) if on],
        "cases": cases,
        "provenance": provenance(dev),
    }
    if out is not None:
        atomic_write_json(out, result)
    return result


def group_of(groups: dict[str, list[int]]) -> dict[int, str]:
    out = {}
    for name, members in groups.items():
        for i in members:
            out.setdefault(int(i), name)
    return out


def case_json(table, ctx, fid: int, groups, cf, pred) -> dict:
    from kdel.risk.features import FEATURES

    f = table.fact(fid)
    gof = group_of(groups)
    unrel = np.array([gof.get(int(i)) == "unrelated" for i in pred.fact_ids])
    probes = []
    for j, pid in enumerate(pred.fact_ids):
        p = table.fact(int(pid))
        rec = bool(pred.recalled[j])
        row = {"fact_id": int(pid), "subject": p.subject, "relation": p.relation, "target": p.target,
               "group": gof.get(int(pid), "other"), "recalled_before": rec, "p_before": float(pred.p_before[j])}
        row["first_order"] = ({"kappa": float(pred.kappa[j]), "dlogp": float(pred.fo_dlogp[j]),
                               "margin_after": float(pred.fo_margin_after[j]), "flip": bool(pred.fo_flip[j]),
                               "p_drop": float(pred.fo_p_drop[j])} if pred.first_order else None)
        row["learned"] = ({"p_flip": float(pred.p_flip[j]) if rec else None, "p_drop": float(pred.p_drop[j])}
                          if pred.p_flip is not None else None)
        row["features"] = {n: float(v) for n, v in zip(FEATURES, cf.X[j])}
        probes.append(row)
    return {
        "fact": {"id": f.id, "subject": f.subject, "relation": f.relation, "target": f.target, "prompt": f.prompt,
                 "recalled_before": pred.target_recalled},
        "summary": pred.summary(unrel),
        "probes": probes,
    }
