"""Slow: ROME or r-ROME erase on the trained tiny model, at the site and layer chosen on separate calibration facts,
removes >= 90% of sampled facts while `unrelated` accuracy stays >= 0.9 (DESIGN §12's collateral bound)."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from kdel.delete.base import DeletionRequest, EditContext, apply_deletion, get_method
from kdel.facts import FactTable
from kdel.models.loading import load_model
from kdel.models.scoring import score_targets

N_CALIBRATION = 12
N_EVAL = 50


def erase_case(method, ctx, table, base_recalled, pool, fact_id, layer, site) -> dict:
    """Erase one fact, measure on the edited weights, revert."""
    model, tok = ctx.model, ctx.tokenizer
    fact = table.fact(fact_id)
    start = time.perf_counter()
    handle, record = apply_deletion(method, ctx, DeletionRequest([fact], "erase", layer=layer, site=site))
    seconds = time.perf_counter() - start
    try:
        every = score_targets(model, tok, list(fact.prompts), [fact.target] * len(fact.prompts)).recalled
        erased = not every[0]
        unrelated = [u for u in table.probe_groups(fact_id, pool)["unrelated"] if base_recalled[u]]
        s = score_targets(model, tok, [table.fact(u).prompt for u in unrelated], [table.fact(u).target for u in unrelated])
        unrelated_acc = float(s.recalled.mean()) if len(unrelated) else 1.0
    finally:
        handle.revert()
    return {"erased": erased, "erased_all_prompts": float(np.mean(~every)), "unrelated": unrelated_acc, "success": erased and unrelated_acc >= 0.9,
            "delta_norm": record.total_delta_norm, "seconds": seconds}


@pytest.mark.slow
def test_rome_or_r_rome_erases_90_percent_at_calibrated_site_and_layer(trained_model_dir, tiny_kg, tmp_path):
    table = FactTable.from_kg(tiny_kg)
    model, tok = load_model(trained_model_dir, kg_hash=table.source_hash)
    ctx = EditContext(model, tok, table, cache_dir=tmp_path / "cache")
    base = score_targets(model, tok, [f.prompt for f in table.facts], [f.target for f in table.facts]).recalled
    recalled = [f.id for f in table.facts if base[f.id]]
    rng = random.Random(0)
    rng.shuffle(recalled)
    calibration, evaluation = recalled[:N_CALIBRATION], recalled[N_CALIBRATION:][:N_EVAL]
    assert len(evaluation) >= 30
    pool = table.unrelated_sample(200, seed=0)
    methods = {name: get_method(name) for name in ("rome", "r-rome")}
    scores = {}
    configs = [(n, s, l) for n in methods for s in ("subject_last", "last") for l in range(ctx.adapter.n_layers)]
    for name, site, layer in configs:
        cases = [erase_case(methods[name], ctx, table, base, pool, f, layer, site) for f in calibration]
        # ties in success broken by how many of the fact's training phrasings were erased too
        scores[(name, site, layer)] = (float(np.mean([c["success"] for c in cases])),
                                       float(np.mean([c["erased_all_prompts"] for c in cases])))
    name, site, layer = max(scores, key=lambda k: (*scores[k], -k[2]))
    cases = [erase_case(methods[name], ctx, table, base, pool, f, layer, site) for f in evaluation]
    efficacy = np.mean([c["success"] for c in cases])
    unrelated = np.mean([c["unrelated"] for c in cases])
    print(f"calibration {scores}; chosen {name} {site} L{layer}: efficacy {efficacy:.3f}, unrelated {unrelated:.3f}, "
          f"mean ||dW|| {np.mean([c['delta_norm'] for c in cases]):.2f}, "
          f"{np.mean([c['seconds'] for c in cases]):.2f} s/edit over {len(cases)} facts")
    assert efficacy >= 0.9
    assert unrelated >= 0.9
